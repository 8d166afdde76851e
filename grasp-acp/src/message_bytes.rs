//! A message channel seen as a byte stream: the fabric's pipes under a
//! [`StreamLayer`](crate::stream::StreamLayer), so that TLS runs over the
//! fabric exactly as over TCP (rust-libp2p's `RwStreamSink` over its memory
//! transport). No crate offers this adapter for a `Stream` + `Sink` of
//! `Bytes` with this write-after-close behaviour, hence it is written here.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use grasp_engine::transport::{AcpError, MessageIo};

/// Largest piece a write becomes (a TLS record with its overhead fits).
pub(crate) const MAX_WRITE: usize = 17 * 1024;

/// Each write is one message of at most [`MAX_WRITE`] bytes; reads take the
/// bytes of the messages in order.
pub(crate) struct MessageBytes {
    io: Pin<Box<dyn MessageIo>>,
    rbuf: Bytes,
    done: bool,
    /// The peer has gone: writes are discarded, as a TCP socket accepts
    /// writes after the peer's close (TLS 1.3 servers write session tickets
    /// after the handshake; a one-message client may be gone by then).
    peer_gone: bool,
}

impl MessageBytes {
    pub(crate) fn new(io: Pin<Box<dyn MessageIo>>) -> Self {
        MessageBytes {
            io,
            rbuf: Bytes::new(),
            done: false,
            peer_gone: false,
        }
    }
}

fn io_err(e: AcpError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl tokio::io::AsyncRead for MessageBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.rbuf.is_empty() && !this.done {
            match this.io.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => this.rbuf = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_err(e))),
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.rbuf.len().min(buf.remaining());
        buf.put_slice(&this.rbuf.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for MessageBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let n = buf.len().min(MAX_WRITE);
        if this.peer_gone {
            return Poll::Ready(Ok(n));
        }
        match this.io.as_mut().poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => {
                this.peer_gone = true;
                return Poll::Ready(Ok(n));
            }
            Poll::Pending => return Poll::Pending,
        }
        if this
            .io
            .as_mut()
            .start_send(Bytes::copy_from_slice(&buf[..n]))
            .is_err()
        {
            this.peer_gone = true;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.peer_gone {
            return Poll::Ready(Ok(()));
        }
        match self.io.as_mut().poll_flush(cx) {
            Poll::Ready(Err(_)) => {
                self.peer_gone = true;
                Poll::Ready(Ok(()))
            }
            other => other.map_err(io_err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_close(cx).map_err(io_err)
    }
}
