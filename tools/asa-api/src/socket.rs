//! The ASA socket's stream, for both ends: a Unix stream that waits for
//! readability only.
//!
//! tokio's `UnixStream` registers for reading and writing at once. On a Unix
//! stream socket the kernel signals "room to write" every time the peer
//! reads anything, so each request graspd reads woke the idle client for
//! nothing, and each answer the client read woke graspd: two context
//! switches per call, half the cost of a call on a loaded node. Here the
//! socket is registered for readability alone; writes go straight to the
//! socket, and only a write that would block registers (a second handle
//! of the same socket) for writability, until the write goes through.
//! tokio has no way to change a stream's interest, so this is written here.
//!
//! tokio 1.54 deprecates `AsyncFd::with_interest` for the `unsafe`
//! `register_with_interest`, whose contract is that the value owns its
//! descriptor for the registration's whole life. A std `UnixStream` does
//! exactly that, and the workspace forbids unsafe code, so the safe call
//! stays (in [`register`]).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// At most this much of a read buffer is zeroed for one read (the buffer
/// comes uninitialised and this crate has no unsafe code); a frame longer
/// than this takes several reads.
const READ_CHUNK: usize = 16 * 1024;

/// A connected ASA socket (either end): `AsyncRead` + `AsyncWrite`.
#[derive(Debug)]
pub struct Socket {
    io: AsyncFd<StdStream>,
    /// Registered for writability while a write is blocked, else none.
    room: Option<AsyncFd<StdStream>>,
}

impl Socket {
    /// Takes over a connected stream.
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Socket> {
        // into_std leaves the socket non-blocking.
        let std = stream.into_std()?;
        Ok(Socket {
            io: register(std, Interest::READABLE)?,
            room: None,
        })
    }
}

/// Registers `s` (which owns its descriptor) for `interest` with tokio.
#[allow(deprecated)]
fn register(s: StdStream, interest: Interest) -> io::Result<AsyncFd<StdStream>> {
    AsyncFd::with_interest(s, interest)
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let mut ready = ready!(this.io.poll_read_ready(cx))?;
            let room = buf.remaining().min(READ_CHUNK);
            let dst = buf.initialize_unfilled_to(room);
            match ready.try_io(|s| s.get_ref().read(dst)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: readiness is cleared; wait again.
                Err(_) => continue,
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            match this.io.get_ref().write(data) {
                Ok(n) => {
                    // Room again: stop listening for it.
                    this.room = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let room = match this.room.take() {
                Some(room) => room,
                // A registration reports the state it finds, so room that
                // came since the write above is not missed.
                None => register(this.io.get_ref().try_clone()?, Interest::WRITABLE)?,
            };
            let mut ready = ready!(this.room.insert(room).poll_write_ready(cx))?;
            ready.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn carries_bytes_both_ways_and_ends() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Socket::new(a).unwrap(), Socket::new(b).unwrap());
        a.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").await.unwrap();
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        a.shutdown().await.unwrap();
        assert_eq!(
            b.read(&mut got).await.unwrap(),
            0,
            "end of stream after shutdown"
        );
    }

    #[tokio::test]
    async fn a_blocked_write_finishes_once_the_peer_reads() {
        // Far more than a Unix socket buffers: the writer must wait for room.
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Socket::new(a).unwrap(), Socket::new(b).unwrap());
        let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expect = sent.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            assert!(a.room.is_none(), "no write interest left behind");
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes arrive in order, none lost");
    }
}
