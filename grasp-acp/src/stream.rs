//! Whole GRASP messages over a byte stream (TCP, a fabric pipe, or TLS
//! over either), and the [`Upgrade`] a security backend asks of a base.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use grasp_engine::transport::{AcpError, StatsCounters};
use grasp_engine::wire::{DecodeError, Limits, StreamDecoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Bytes read from the socket at a time, at most.
const READ_CHUNK: usize = 4096;
/// Bytes read (onto the stack) when nothing is buffered: most GRASP
/// messages are far smaller, and an idle channel (a session waiting for its
/// peer) holds no read buffer at all. A larger message goes on into a buffer
/// that grows as it arrives.
const FIRST_READ: usize = 256;

/// Splits a byte stream into messages when messages are not CBOR items on
/// the wire (graspy's legacy QUADS ciphertexts). The default is CBOR
/// framing with [`StreamDecoder`].
pub trait Framer: Send + Sync + std::fmt::Debug {
    /// The length of the first whole message at the front of `buf`, or
    /// `None` if more bytes are needed.
    fn split(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError>;
}

/// A byte stream a [`StreamLayer`] returns (a TLS session over TCP).
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncIo for T {}

/// What a [`StreamLayer`] makes of a connection's bytes.
pub struct LayeredIo {
    /// The stream GRASP messages travel over.
    pub io: Box<dyn AsyncIo>,
    /// Who the peer proved to be (a certificate's name), if the layer
    /// authenticates peers.
    pub identity: Option<String>,
}

impl std::fmt::Debug for LayeredIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredIo")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A layer between a connection's bytes and the message framing, such as
/// TLS. Both bases run it: the plain ACP over TCP (`accept` for every
/// admitted inbound connection while it waits for it to speak, bounded by
/// the connection limits and their silence timeout; `connect` after every
/// outgoing TCP connect), and the fabric over its byte pipes.
pub trait StreamLayer: Send + Sync + std::fmt::Debug + 'static {
    /// Wraps an accepted connection (a TLS server handshake).
    fn accept(
        &self,
        io: Box<dyn AsyncIo>,
        peer: std::net::SocketAddr,
    ) -> futures::future::BoxFuture<'static, Result<LayeredIo, grasp_engine::transport::AcpError>>;

    /// Wraps an outgoing connection (a TLS client handshake).
    fn connect(
        &self,
        io: Box<dyn AsyncIo>,
        peer: std::net::SocketAddr,
    ) -> futures::future::BoxFuture<'static, Result<LayeredIo, grasp_engine::transport::AcpError>>;
}

/// What a security backend asks of a base's connections: a layer run on
/// every connection's bytes (TLS), and a framer where its messages are not
/// CBOR items on the wire (graspy's legacy QUADS, the one such case:
/// graspy's ciphertexts are not self-delimiting). The default asks for
/// neither: CBOR framing over the bare connection.
#[derive(Clone, Debug, Default)]
pub struct Upgrade {
    /// Run on every connection before the framing.
    pub layer: Option<Arc<dyn StreamLayer>>,
    /// Splits received bytes into messages instead of as CBOR items.
    pub framer: Option<Arc<dyn Framer>>,
}

impl Upgrade {
    /// Whether it asks for anything.
    pub fn is_empty(&self) -> bool {
        self.layer.is_none() && self.framer.is_none()
    }

    /// An outgoing connection's bytes through the layer's client handshake
    /// (within `timeout`; no layer, no handshake), framed: the channel's
    /// I/O and the peer's proven identity. A handshake that fails or is
    /// late counts as a connect failure.
    pub(crate) async fn connect(
        &self,
        io: Box<dyn AsyncIo>,
        peer: std::net::SocketAddr,
        timeout: std::time::Duration,
        limits: Limits,
        stats: &Arc<StatsCounters>,
    ) -> Result<(StreamChannel<Box<dyn AsyncIo>>, Option<String>), AcpError> {
        let Some(layer) = &self.layer else {
            return Ok((self.channel(io, limits, stats), None));
        };
        let l = match tokio::time::timeout(timeout, layer.connect(io, peer)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                StatsCounters::bump(&stats.connect_failures);
                return Err(e);
            }
            Err(_) => {
                StatsCounters::bump(&stats.connect_failures);
                return Err(AcpError::ConnectTimeout {
                    peer,
                    after: timeout,
                });
            }
        };
        Ok((self.channel(l.io, limits, stats), l.identity))
    }

    /// The message channel over a layered connection's bytes.
    pub(crate) fn channel(
        &self,
        io: Box<dyn AsyncIo>,
        limits: Limits,
        stats: &Arc<StatsCounters>,
    ) -> StreamChannel<Box<dyn AsyncIo>> {
        StreamChannel::new(io, limits)
            .with_framer(self.framer.clone())
            .with_stats(stats.clone())
    }
}

/// A message channel over any byte stream: received bytes are split into
/// whole messages with [`StreamDecoder`]; each sent message is written on its
/// own, never coalesced with the next one (graspy reads one message per
/// `recv`, so two messages in one segment would confuse it).
///
/// Implements the engine's `MessageIo` (a `Stream` of received messages and a
/// `Sink` of messages to send). Reading stops with an error, and the
/// malformed-stream counter goes up, when the peer sends something that is not
/// a message or is larger than the limit.
pub struct StreamChannel<S> {
    io: S,
    decoder: StreamDecoder,
    framer: Option<Arc<dyn Framer>>,
    rbuf: BytesMut,
    /// The message being written, and how much of it is written.
    wbuf: Option<Bytes>,
    read_done: bool,
    max: usize,
    stats: Option<Arc<StatsCounters>>,
    /// An inbound channel's place among the listener's connections, held
    /// while the channel lives; marked when the first message arrives.
    slot: Option<crate::slots::Slot>,
    /// A message read ahead by [`poll_first`](Self::poll_first).
    peeked: Option<Bytes>,
}

impl<S> std::fmt::Debug for StreamChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamChannel")
            .field("buffered", &self.rbuf.len())
            .field("writing", &self.wbuf.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl<S> StreamChannel<S> {
    /// Wraps `io`, enforcing `limits` on what is received and the same
    /// maximum size on what is sent.
    pub fn new(io: S, limits: Limits) -> Self {
        StreamChannel {
            io,
            decoder: StreamDecoder::new(limits),
            framer: None,
            rbuf: BytesMut::new(),
            wbuf: None,
            read_done: false,
            max: limits.max_message_size,
            stats: None,
            slot: None,
            peeked: None,
        }
    }

    /// Counts malformed streams in `stats`.
    pub fn with_stats(mut self, stats: Arc<StatsCounters>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Splits received bytes with `framer` instead of as CBOR items.
    pub fn with_framer(mut self, framer: Option<Arc<dyn Framer>>) -> Self {
        self.framer = framer;
        self
    }

    /// The length of the first whole message at the front of `buf`.
    fn frame(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(f) = &self.framer else {
            return self.decoder.item_len(buf);
        };
        match f.split(buf)? {
            Some(n) if n > 0 && n <= buf.len() => Ok(Some(n)),
            Some(_) => Err(DecodeError::Truncated { offset: 0 }),
            None if buf.len() > self.max => Err(DecodeError::TooLarge {
                len: buf.len(),
                max: self.max,
            }),
            None => Ok(None),
        }
    }

    fn split(&mut self) -> Result<Option<Bytes>, DecodeError> {
        Ok(self
            .frame(&self.rbuf)?
            .map(|n| self.rbuf.split_to(n).freeze()))
    }

    /// Holds `slot` until the channel is dropped (an inbound channel's
    /// place under the listener's connection limits).
    pub fn with_slot(mut self, slot: crate::slots::Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// A whole message, handed on: the channel has spoken.
    fn delivered(&self, msg: Bytes) -> Bytes {
        if let Some(s) = &self.slot {
            s.spoke();
        }
        msg
    }

    fn read_failed(&mut self, e: std::io::Error) -> AcpError {
        self.read_done = true;
        if e.kind() == std::io::ErrorKind::ConnectionReset {
            AcpError::Reset
        } else {
            AcpError::io("reading from the peer", e)
        }
    }

    fn malformed(&mut self, e: DecodeError) -> AcpError {
        self.read_done = true;
        if let Some(s) = &self.stats {
            StatsCounters::bump(&s.malformed_streams);
        }
        match e {
            DecodeError::TooLarge { len, max } => AcpError::TooLarge { len, max },
            e => AcpError::Malformed(e),
        }
    }
}

impl<S: AsyncRead + Unpin> Stream for StreamChannel<S> {
    type Item = Result<Bytes, AcpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(m) = this.peeked.take() {
            return Poll::Ready(Some(Ok(m)));
        }
        if !this.read_done && this.slot.as_ref().is_some_and(|s| s.poll_evicted(cx)) {
            // Closed to make room for another connection (it never spoke).
            this.read_done = true;
            return Poll::Ready(Some(Err(AcpError::Closed)));
        }
        loop {
            if this.read_done {
                return Poll::Ready(None);
            }
            match this.split() {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(this.delivered(msg)))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(this.malformed(e)))),
            }
            if this.rbuf.is_empty() {
                // A read into an empty buffer lands on the stack: a message
                // that arrives whole, as nearly every one does, is copied
                // into one small allocation (`wire::share`), with no read
                // buffer left behind and no shared header that splitting
                // one would allocate.
                let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
                let mut rb = ReadBuf::uninit(&mut first);
                if let Err(e) = ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb)) {
                    return Poll::Ready(Some(Err(this.read_failed(e))));
                }
                let got = rb.filled();
                if got.is_empty() {
                    this.read_done = true;
                    return Poll::Ready(None);
                }
                match this.frame(got) {
                    Ok(Some(n)) if n == got.len() => {
                        let msg = grasp_engine::wire::share(got);
                        return Poll::Ready(Some(Ok(this.delivered(msg))));
                    }
                    Err(e) => return Poll::Ready(Some(Err(this.malformed(e)))),
                    // Part of a message, or more than one.
                    _ => this.rbuf.extend_from_slice(got),
                }
                continue;
            }
            // Never buffer more than one maximum-size message plus a chunk.
            this.rbuf.reserve(READ_CHUNK.min(this.max + 1));
            match ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.rbuf)) {
                Ok(0) => {
                    this.read_done = true;
                    return Poll::Ready(match this.decoder.decode_eof(&this.rbuf) {
                        Ok(()) => None,
                        Err(e) => Some(Err(this.malformed(e))),
                    });
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(this.read_failed(e)))),
            }
        }
    }
}

impl<S: AsyncRead + Unpin> StreamChannel<S> {
    /// Reads until the first whole message has arrived and keeps it for
    /// the stream: true once there is one, false if the channel ended (or
    /// failed, or was closed to make room) before.
    pub(crate) fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.peeked.is_some() {
            return Poll::Ready(true);
        }
        match ready!(Pin::new(&mut *self).poll_next(cx)) {
            Some(Ok(m)) => {
                self.peeked = Some(m);
                Poll::Ready(true)
            }
            _ => Poll::Ready(false),
        }
    }
}

impl<S: AsyncWrite + Unpin> StreamChannel<S> {
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        while let Some(buf) = &mut self.wbuf {
            if buf.is_empty() {
                self.wbuf = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))
                .map_err(|e| AcpError::io("writing to the peer", e))?;
            if n == 0 {
                return Poll::Ready(Err(AcpError::Closed));
            }
            buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Sink<Bytes> for StreamChannel<S> {
    type Error = AcpError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        // The previous message goes out completely before the next is taken.
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.io)
            .poll_flush(cx)
            .map_err(|e| AcpError::io("flushing to the peer", e))
    }

    fn start_send(mut self: Pin<&mut Self>, msg: Bytes) -> Result<(), AcpError> {
        if msg.len() > self.max {
            return Err(AcpError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        debug_assert!(self.wbuf.is_none(), "poll_ready not called");
        self.wbuf = Some(msg);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.io)
            .poll_flush(cx)
            .map_err(|e| AcpError::io("flushing to the peer", e))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.io)
            .poll_shutdown(cx)
            .map_err(|e| AcpError::io("closing the connection", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn messages_both_ways_over_a_duplex() {
        let (a, b) = tokio::io::duplex(64);
        let mut a = StreamChannel::new(a, Limits::default());
        let mut b = StreamChannel::new(b, Limits::default());
        let m1 = Bytes::from_static(&[0x83, 0x07, 0x01, 0x19, 0x07, 0xd0]);
        let m2 = Bytes::from_static(&[0x81, 0x00]);
        a.send(m1.clone()).await.unwrap();
        a.send(m2.clone()).await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), m1);
        assert_eq!(b.next().await.unwrap().unwrap(), m2);
        b.send(m2.clone()).await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), m2);
        a.close().await.unwrap();
        assert!(b.next().await.is_none());
    }

    #[tokio::test]
    async fn oversize_and_garbage_are_errors() {
        let limits = Limits {
            max_message_size: 16,
            ..Limits::default()
        };
        let (mut raw, b) = tokio::io::duplex(256);
        let stats = Arc::new(StatsCounters::default());
        let mut b = StreamChannel::new(b, limits).with_stats(stats.clone());
        raw.write_all(&[0x58, 0x40]).await.unwrap(); // bytes(64)
        raw.write_all(&[0u8; 64]).await.unwrap();
        assert!(matches!(
            b.next().await,
            Some(Err(AcpError::TooLarge { .. }))
        ));
        assert!(b.next().await.is_none());
        assert_eq!(stats.snapshot().malformed_streams, 1);

        let (mut raw, b) = tokio::io::duplex(256);
        let mut b = StreamChannel::new(b, limits);
        raw.write_all(&[0xff]).await.unwrap();
        assert!(matches!(b.next().await, Some(Err(AcpError::Malformed(_)))));

        // A truncated message at EOF is reported, not silently dropped.
        let (mut raw, b) = tokio::io::duplex(256);
        let mut b = StreamChannel::new(b, limits);
        raw.write_all(&[0x83, 0x07]).await.unwrap();
        drop(raw);
        assert!(matches!(b.next().await, Some(Err(AcpError::Malformed(_)))));

        let (a, _b) = tokio::io::duplex(256);
        let mut a = StreamChannel::new(a, limits);
        assert!(matches!(
            a.send(Bytes::from(vec![0u8; 17])).await,
            Err(AcpError::TooLarge { len: 17, max: 16 })
        ));
    }
}
