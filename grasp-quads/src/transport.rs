//! The QUADS [`AcpTransport`]: seals what the engine sends, opens what
//! arrives, over any inner transport.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, MessageIo, Security,
    TransportStats,
};
use grasp_engine::wire::Locator;
use tracing::{info, warn};

use crate::seal::{QuadsStats, Sealer, UnicastSession, OVERHEAD};
use crate::{now_ms, DropReason, Error, KeyRing, QuadsConfig};

/// A QUADS transport over an inner one.
pub struct QuadsTransport {
    inner: Arc<dyn AcpTransport>,
    sealer: Arc<Sealer>,
    log: Arc<LogLimiter>,
}

impl std::fmt::Debug for QuadsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuadsTransport")
            .field("keys", &self.sealer.ring().ids())
            .finish_non_exhaustive()
    }
}

/// Logs a drop at most once per second per reason, with how many were not
/// logged since.
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

/// Wraps `inner` (and its inbound stream) in QUADS under `ring`.
pub fn wrap(
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    ring: KeyRing,
    config: QuadsConfig,
) -> (Arc<QuadsTransport>, InboundStream) {
    info!(key = %ring.current().id(), accepted = ?ring.ids(), "QUADS on (AES-256-GCM)");
    let sealer = Sealer::new(ring, config);
    let log = Arc::new(LogLimiter::default());
    let t = Arc::new(QuadsTransport {
        inner,
        sealer: sealer.clone(),
        log: log.clone(),
    });
    let inbound = inbound
        .filter_map(move |i| {
            let out = match i {
                Inbound::Datagram(mut d) => match sealer.open_multicast(now_ms(), &d.msg) {
                    Ok(pt) => {
                        d.msg = Bytes::from(pt);
                        Some(Inbound::Datagram(d))
                    }
                    Err(reason) => {
                        log.note(reason, &d.src, "multicast");
                        None
                    }
                },
                Inbound::Channel(ch) => Some(Inbound::Channel(Channel {
                    io: quads_channel(ch.io, sealer.responder(), ch.peer, log.clone()),
                    ..ch
                })),
                other => Some(other),
            };
            futures::future::ready(out)
        })
        .boxed();
    (t, inbound)
}

/// The plain ACP under QUADS: raises the plain ACP's size limit by the
/// record overhead so the engine keeps its full message size.
pub async fn bind_plain(
    config: grasp_acp::plain::Config,
    ring: KeyRing,
    quads: QuadsConfig,
) -> Result<(Arc<QuadsTransport>, InboundStream), Error> {
    let max = config.max_message_size + OVERHEAD;
    let (t, inbound) = grasp_acp::plain::bind(config.max_message_size(max)).await?;
    Ok(wrap(t, inbound, ring, quads))
}

impl QuadsTransport {
    /// Replaces the keys while running (a step of a key rotation): new
    /// records are sealed under the new ring's current key and opened under
    /// any of its keys; channels already open finish under their own keys.
    pub fn set_keys(&self, ring: KeyRing) {
        info!(key = %ring.current().id(), accepted = ?ring.ids(), "QUADS keys changed");
        self.sealer.set_ring(ring);
    }

    /// The QUADS counters (sealed, opened, dropped by reason).
    pub fn quads_stats(&self) -> QuadsStats {
        self.sealer.stats()
    }
}

impl AcpTransport for QuadsTransport {
    fn security(&self) -> Security {
        Security::Quads
    }

    fn interfaces(&self) -> Vec<Interface> {
        self.inner.interfaces()
    }

    fn node_locator(&self) -> Locator {
        self.inner.node_locator()
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size().saturating_sub(OVERHEAD)
    }

    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        let max = self.max_message_size();
        if msg.len() > max {
            return futures::future::ready(Err(AcpError::TooLarge {
                len: msg.len(),
                max,
            }))
            .boxed();
        }
        let sealed = Bytes::from(self.sealer.seal_multicast(now_ms(), &msg));
        self.inner.send_multicast(ifindex, sealed)
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        async move {
            let ch = self.inner.connect(peer).await?;
            Ok(Channel {
                io: quads_channel(ch.io, self.sealer.initiator(), peer, self.log.clone()),
                ..ch
            })
        }
        .boxed()
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.inner.stats();
        let q = self.sealer.stats();
        // Multicasts that failed to open count as dropped, not received;
        // channels closed for a bad record as malformed streams.
        let mc = self.sealer.multicast_dropped();
        s.multicast_received = s.multicast_received.saturating_sub(mc);
        s.multicast_dropped_other += mc;
        s.malformed_streams += q.dropped_total().saturating_sub(mc);
        s
    }
}

/// What a channel does to each message on the way out and in.
pub(crate) trait RecordCodec: Send + 'static {
    /// Plaintext to record.
    fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AcpError>;
    /// Record to plaintext (an error closes the channel).
    fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, AcpError>;
}

/// A channel whose messages pass through a [`RecordCodec`].
pub(crate) struct SealedChannel<C> {
    pub(crate) inner: Pin<Box<dyn MessageIo>>,
    pub(crate) codec: C,
}

impl<C: RecordCodec + Unpin> Stream for SealedChannel<C> {
    type Item = Result<Bytes, AcpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(rec))) => Poll::Ready(Some(this.codec.open(&rec).map(Bytes::from))),
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

fn quads_channel(
    inner: Pin<Box<dyn MessageIo>>,
    session: UnicastSession,
    peer: SocketAddr,
    log: Arc<LogLimiter>,
) -> Pin<Box<dyn MessageIo>> {
    Box::pin(SealedChannel {
        inner,
        codec: QuadsCodec { session, peer, log },
    })
}
