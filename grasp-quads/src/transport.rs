//! The QUADS backend: its [`Protection`] seals what the engine sends and
//! opens what arrives; [`grasp_acp::secure`] applies it over any base.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream};
use grasp_acp::secure;
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, InboundStream, MessageIo, Security, TransportStats,
};
use tracing::{info, warn};

use crate::seal::{Sealer, Stats, UnicastSession, OVERHEAD};
use crate::{now_ms, Config, DropReason, KeyRing};

/// QUADS's settings: the keys and the tunables. Stack it on a base with
/// [`grasp_acp::secure::bind`] (or over any transport with
/// [`grasp_acp::secure::wrap`]).
#[derive(Debug)]
pub struct Backend {
    ring: KeyRing,
    config: Config,
}

impl Backend {
    /// QUADS under `ring`.
    pub fn new(ring: KeyRing, config: Config) -> Self {
        Backend { ring, config }
    }
}

impl secure::Backend for Backend {
    type Protection = Protection;

    fn overhead(&self) -> usize {
        OVERHEAD
    }

    fn start(self, max_message_size: usize) -> (Protection, Option<InboundStream>) {
        info!(key = %self.ring.current().id(), accepted = ?self.ring.ids(), "QUADS on (AES-256-GCM)");
        let p = Protection {
            sealer: Sealer::new(self.ring, self.config),
            log: Arc::new(LogLimiter::default()),
            max: max_message_size,
        };
        (p, None)
    }
}

/// A QUADS transport: [`Protection`] over a base.
pub type Transport = secure::Transport<Protection>;

/// QUADS running: seals what the engine sends, opens what arrives.
pub struct Protection {
    sealer: Arc<Sealer>,
    log: Arc<LogLimiter>,
    max: usize,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("quads::Protection")
            .field("keys", &self.sealer.ring().ids())
            .finish_non_exhaustive()
    }
}

/// Logs a dropped unicast record at most once per second per reason, with
/// how many were not logged since (multicasts are logged by
/// [`secure::Transport`]).
#[derive(Debug, Default)]
struct LogLimiter {
    last: [AtomicU64; DropReason::COUNT],
    suppressed: [AtomicU64; DropReason::COUNT],
}

impl LogLimiter {
    fn note(&self, reason: DropReason, from: &dyn std::fmt::Display, what: &str) {
        let now = now_ms();
        let i = reason.index();
        let last = self.last[i].load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self.last[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed[i].swap(0, Ordering::Relaxed);
            warn!(%reason, %from, what, suppressed, "QUADS record dropped");
        } else {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Protection {
    /// Replaces the keys while running (a step of a key rotation): new
    /// records are sealed under the new ring's current key and opened under
    /// any of its keys; channels already open finish under their own keys.
    pub fn set_keys(&self, ring: KeyRing) {
        info!(key = %ring.current().id(), accepted = ?ring.ids(), "QUADS keys changed");
        self.sealer.set_ring(ring);
    }

    /// The QUADS counters (sealed, opened, dropped by reason).
    pub fn stats(&self) -> Stats {
        self.sealer.stats()
    }
}

impl secure::Protection for Protection {
    type Drop = DropReason;

    fn security(&self) -> Security {
        Security::Quads
    }

    fn seal_multicast(&self, msg: &[u8]) -> Result<Bytes, AcpError> {
        Ok(Bytes::from(self.sealer.seal_multicast(now_ms(), msg)))
    }

    fn open_multicast(&self, msg: &[u8]) -> Result<Bytes, DropReason> {
        self.sealer.open_multicast(now_ms(), msg).map(Bytes::from)
    }

    fn connect<'a>(
        &'a self,
        base: &'a dyn AcpTransport,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Channel, AcpError>> {
        async move {
            let ch = base.connect(peer).await?;
            Ok(self.channel(ch, self.sealer.initiator()))
        }
        .boxed()
    }

    fn accept(&self, ch: Channel) -> Option<Channel> {
        Some(self.channel(ch, self.sealer.responder()))
    }

    fn fold_stats(&self, s: &mut TransportStats) {
        // Channels closed for a bad record count as malformed streams.
        let q = self.sealer.stats();
        let mc = self.sealer.multicast_dropped();
        s.malformed_streams += q.dropped_total().saturating_sub(mc);
    }
}

/// What a channel does to each message on the way out and in.
pub(crate) trait RecordCodec: Send + 'static {
    /// Plaintext to record.
    fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AcpError>;
    /// Record to plaintext (an error closes the channel).
    fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, AcpError>;
}

/// A channel whose messages pass through a [`RecordCodec`], no larger than
/// `max` either way (the record's own overhead varies by kind, so the
/// base's raised limit alone would let a slightly larger message through).
pub(crate) struct SealedChannel<C> {
    pub(crate) inner: Pin<Box<dyn MessageIo>>,
    pub(crate) codec: C,
    pub(crate) max: usize,
}

impl<C> SealedChannel<C> {
    pub(crate) fn new(inner: Pin<Box<dyn MessageIo>>, codec: C, max: usize) -> Self {
        SealedChannel { inner, codec, max }
    }
}

impl<C: RecordCodec + Unpin> Stream for SealedChannel<C> {
    type Item = Result<Bytes, AcpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(rec))) => Poll::Ready(Some(match this.codec.open(&rec) {
                Ok(m) if m.len() > this.max => Err(AcpError::TooLarge {
                    len: m.len(),
                    max: this.max,
                }),
                other => other.map(Bytes::from),
            })),
            other => other,
        }
    }
}

impl<C: RecordCodec + Unpin> Sink<Bytes> for SealedChannel<C> {
    type Error = AcpError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), AcpError> {
        let this = &mut *self;
        if item.len() > this.max {
            return Err(AcpError::TooLarge {
                len: item.len(),
                max: this.max,
            });
        }
        let sealed = this.codec.seal(&item)?;
        this.inner.as_mut().start_send(Bytes::from(sealed))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_close(cx)
    }
}

/// QUADS on a unicast channel.
struct QuadsCodec {
    session: UnicastSession,
    peer: SocketAddr,
    log: Arc<LogLimiter>,
}

impl RecordCodec for QuadsCodec {
    fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AcpError> {
        let now = if self.session.needs_clock() {
            now_ms()
        } else {
            0
        };
        self.session
            .seal(now, plaintext)
            .map_err(|e| AcpError::Auth(e.to_string()))
    }

    fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, AcpError> {
        let now = if self.session.needs_clock() {
            now_ms()
        } else {
            0
        };
        self.session.open(now, record).map_err(|reason| {
            self.log.note(reason, &self.peer, "unicast");
            AcpError::Auth(format!("QUADS record from {}: {reason}", self.peer))
        })
    }
}

impl Protection {
    fn channel(&self, ch: Channel, session: UnicastSession) -> Channel {
        let codec = QuadsCodec {
            session,
            peer: ch.peer,
            log: self.log.clone(),
        };
        Channel {
            io: Box::pin(SealedChannel::new(ch.io, codec, self.max)),
            ..ch
        }
    }
}
