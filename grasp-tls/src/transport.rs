//! The TLS [`AcpTransport`]: the plain ACP's sockets with mutual TLS on
//! every TCP connection ([`TlsLayer`]), GRASP channels multiplexed over one
//! TLS connection per peer ([`crate::mux`]), and signed multicasts
//! ([`Multicast`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, Security, TransportStats,
};
use grasp_engine::wire::Locator;
use tracing::{debug, info};

use crate::multicast::{McStats, Multicast};
use crate::mux::{self, MuxConfig, MuxStats, Pool};
use crate::unicast::TlsLayer;
use crate::{CertError, NodeIdentity};

/// Room for the multicast envelope (certificate, signature, header).
pub const MULTICAST_OVERHEAD: usize = 2048;

/// GRASP over mutual TLS (unicast) and signed multicast.
pub struct TlsTransport {
    inner: Arc<dyn AcpTransport>,
    /// The inner transport carries messages, not bytes (the fabric): TLS is
    /// run here, over an adapter, rather than by the inner transport.
    over_messages: bool,
    limits: grasp_engine::wire::Limits,
    layer: Arc<TlsLayer>,
    multicast: Arc<Multicast>,
    pool: Pool,
    server: Server,
    name: std::sync::RwLock<String>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// Errors binding the TLS transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The certificates or key.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The sockets.
    #[error(transparent)]
    Acp(#[from] grasp_acp::Error),
}

/// Binds the plain ACP's sockets with TLS for `identity`, with the
/// default [`MuxConfig`].
pub async fn bind_plain(
    config: grasp_acp::plain::Config,
    identity: &NodeIdentity,
) -> Result<(Arc<TlsTransport>, InboundStream), BindError> {
    bind_plain_with(config, identity, MuxConfig::default()).await
}

/// Binds the plain ACP's sockets with TLS for `identity`.
pub async fn bind_plain_with(
    config: grasp_acp::plain::Config,
    identity: &NodeIdentity,
    mux: MuxConfig,
) -> Result<(Arc<TlsTransport>, InboundStream), BindError> {
    let layer = Arc::new(TlsLayer::new(identity)?);
    let multicast = Arc::new(Multicast::new(identity)?);
    let max_msg = config.max_message_size;
    let max = max_msg + MULTICAST_OVERHEAD;
    let (inner, inbound) = grasp_acp::plain::bind(
        config
            .layer(layer.clone() as Arc<dyn grasp_acp::stream::StreamLayer>)
            .max_message_size(max),
    )
    .await?;
    info!(node = %identity.name, "TLS transport up (mutual TLS 1.3, signed multicast)");
    let pool = Pool::new(mux, max_msg);
    let (serve, accepted) = Server::new(&pool, multicast.clone());
    let inbound = inbound
        .filter_map({
            let serve = serve.clone();
            move |i| futures::future::ready(serve.inbound(i))
        })
        .boxed();
    Ok((
        Arc::new(TlsTransport {
            inner,
            over_messages: false,
            limits: grasp_engine::wire::Limits::default(),
            layer,
            multicast,
            pool,
            server: serve,
            name: std::sync::RwLock::new(identity.name.clone()),
        }),
        futures::stream::select(inbound, accepted).boxed(),
    ))
}

/// Streams peers open, waiting for the engine.
const ACCEPT_QUEUE: usize = 256;

/// The inbound side: verifies multicasts and runs every accepted TLS
/// connection as a multiplexed connection whose streams become inbound
/// channels.
#[derive(Clone)]
struct Server {
    multicast: Arc<Multicast>,
    cfg: MuxConfig,
    max_msg: usize,
    counters: Arc<mux::Counters>,
    accepted: mux::Accepted,
    /// Accepted connections, to send GOAWAY on after a reload. Bounded by
    /// the connection limit: dead entries are pruned as it grows.
    live: Arc<std::sync::Mutex<Live>>,
}

#[derive(Default)]
struct Live {
    conns: Vec<mux::Accepting>,
    prune_at: usize,
}

impl Server {
    fn new(
        pool: &Pool,
        multicast: Arc<Multicast>,
    ) -> (Self, futures::stream::BoxStream<'static, Inbound>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let s = Server {
            multicast,
            cfg: pool.config(),
            max_msg: pool.max_msg(),
            counters: pool.counters.clone(),
            accepted: tx,
            live: Arc::default(),
        };
        (
            s,
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed(),
        )
    }

    /// A datagram verified, or a TLS connection taken over (`None`).
    fn inbound(&self, i: Inbound) -> Option<Inbound> {
        match i {
            Inbound::Datagram(d) => verified(&self.multicast, d),
            Inbound::Channel(ch) => {
                self.connection(ch);
                None
            }
            other => Some(other),
        }
    }

    /// Serves an authenticated TLS connection.
    fn connection(&self, ch: Channel) {
        let c = mux::serve(
            ch,
            self.max_msg,
            self.cfg,
            self.counters.clone(),
            self.accepted.clone(),
        );
        let mut live = self.live();
        if live.conns.len() >= live.prune_at {
            live.conns.retain(mux::Accepting::is_live);
            live.prune_at = (live.conns.len() * 2).max(64);
        }
        live.conns.push(c);
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every peer connected to us to open its next channels on a new
    /// connection (after a reload, so that they see the new certificate).
    fn go_away_all(&self) {
        for c in self.live().conns.drain(..) {
            c.go_away();
        }
    }
}

impl TlsTransport {
    /// This node's name (from its certificate).
    pub fn name(&self) -> String {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses a renewed identity from now on: new TLS handshakes present it
    /// and multicasts are signed with it; open sessions carry on.
    pub fn reload(&self, identity: &NodeIdentity) -> Result<(), CertError> {
        self.layer.reload(identity)?;
        self.multicast.reload(identity)?;
        // Pooled connections were made with the old identity: new channels
        // go over new ones.
        self.pool.retire_all();
        self.server.go_away_all();
        *self.name.write().unwrap_or_else(|e| e.into_inner()) = identity.name.clone();
        info!(node = %identity.name, "TLS identity reloaded");
        Ok(())
    }

    /// Reloads from the files whenever one of them changes (checked every
    /// `every`); a change that does not load is logged and the old identity
    /// kept. A daemon can also call [`reload`](Self::reload) on SIGHUP. The
    /// task ends when the transport is dropped.
    pub fn watch_files(
        self: &Arc<Self>,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        anchors: std::path::PathBuf,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let (cert2, key2, anchors2) = (cert.clone(), key.clone(), anchors.clone());
        let stamp = move || {
            [&cert, &key, &anchors].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        };
        tokio::spawn(async move {
            let mut last = stamp();
            loop {
                tokio::time::sleep(every).await;
                let Some(t) = weak.upgrade() else { return };
                let now = stamp();
                if now == last {
                    continue;
                }
                last = now;
                match NodeIdentity::load(&cert2, &key2, &anchors2) {
                    Ok(id) => {
                        if let Err(e) = t.reload(&id) {
                            tracing::warn!(error = %e, "renewed identity not usable; keeping the old one");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewed identity does not load; keeping the old one")
                    }
                }
            }
        })
    }

    /// The signed-multicast counters.
    pub fn multicast_stats(&self) -> McStats {
        self.multicast.stats()
    }

    /// The multiplexer's counters (TLS connections and the streams in them).
    pub fn mux_stats(&self) -> MuxStats {
        self.pool.counters.snapshot()
    }

    /// TLS connections to peers kept for reuse now.
    pub fn pooled_connections(&self) -> usize {
        self.pool.len()
    }

    /// Makes an authenticated TLS connection to `peer`.
    fn dial(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        if !self.over_messages {
            return self.inner.connect(peer);
        }
        async move {
            let ch = self.inner.connect(peer).await?;
            let l = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                self.layer.connect_io(MessageBytes::new(ch.io), peer),
            )
            .await
            .map_err(|_| AcpError::ConnectTimeout {
                peer,
                after: HANDSHAKE_TIMEOUT,
            })??;
            Ok(Channel {
                peer: ch.peer,
                local: ch.local,
                io: Box::pin(grasp_acp::stream::StreamChannel::new(l.io, self.limits)),
                identity: l.identity,
            })
        }
        .boxed()
    }
}

impl AcpTransport for TlsTransport {
    fn security(&self) -> Security {
        Security::Tls
    }

    fn interfaces(&self) -> Vec<Interface> {
        self.inner.interfaces()
    }

    fn node_locator(&self) -> Locator {
        self.inner.node_locator()
    }

    fn max_message_size(&self) -> usize {
        self.inner
            .max_message_size()
            .saturating_sub(MULTICAST_OVERHEAD)
    }

    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        match self.multicast.sign(SystemTime::now(), &msg) {
            Ok(signed) => self.inner.send_multicast(ifindex, Bytes::from(signed)),
            Err(e) => futures::future::ready(Err(AcpError::Auth(format!("signing: {e}")))).boxed(),
        }
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        async move {
            let dial = || self.dial(peer);
            self.pool.channel(peer, &dial).await
        }
        .boxed()
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.inner.stats();
        // Channels are streams; the TLS connections carrying them are
        // counted in `mux_stats`.
        let x = self.mux_stats();
        s.channels_opened = x.streams_opened;
        s.channels_accepted = x.streams_accepted;
        s.channels_refused += x.streams_refused;
        let m = self.multicast.stats();
        let dropped: u64 = m.dropped.iter().sum();
        s.multicast_received = s.multicast_received.saturating_sub(dropped);
        s.multicast_dropped_other += dropped;
        s
    }
}

/// A received multicast with its signature checked and its envelope
/// removed, or `None` (dropped and counted).
fn verified(mc: &Multicast, mut d: grasp_engine::transport::Datagram) -> Option<Inbound> {
    match mc.verify(SystemTime::now(), &d.msg) {
        Ok(m) => {
            d.msg = Bytes::from(m);
            Some(Inbound::Datagram(d))
        }
        Err(reason) => {
            debug!(%reason, src = %d.src, "multicast dropped");
            None
        }
    }
}

/// How long a TLS handshake over a message transport may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// TLS over a transport that carries messages rather than bytes (the
/// in-memory fabric, for tests and labs): the same handshakes, identities,
/// multiplexing and signed multicasts as over the plain ACP. Give the inner
/// nodes a maximum message size of at least [`MULTICAST_OVERHEAD`] + 2048
/// and 17 KiB for TLS records (`max_message_size(20_000)` on a fabric node).
pub fn wrap_messages(
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    identity: &NodeIdentity,
) -> Result<(Arc<TlsTransport>, InboundStream), CertError> {
    wrap_messages_with(inner, inbound, identity, MuxConfig::default())
}

/// [`wrap_messages`] with a [`MuxConfig`].
pub fn wrap_messages_with(
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    identity: &NodeIdentity,
    mux: MuxConfig,
) -> Result<(Arc<TlsTransport>, InboundStream), CertError> {
    let layer = Arc::new(TlsLayer::new(identity)?);
    let multicast = Arc::new(Multicast::new(identity)?);
    let limits = grasp_engine::wire::Limits::default();
    let pool = Pool::new(mux, limits.max_message_size);
    let (serve, accepted) = Server::new(&pool, multicast.clone());
    // The frames of the multiplexer are a little larger than the messages.
    let framing = grasp_engine::wire::Limits {
        max_message_size: limits.max_message_size + mux::FRAME_OVERHEAD,
        ..limits
    };
    let (l2, serve2) = (layer.clone(), serve.clone());
    let direct = inbound.filter_map(move |i| {
        let serve = &serve2;
        let out = match i {
            Inbound::Channel(ch) => {
                let (layer, serve) = (l2.clone(), serve.clone());
                tokio::spawn(async move {
                    let hs = layer.accept_io(MessageBytes::new(ch.io), ch.peer);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
                        Ok(Ok(l)) => serve.connection(Channel {
                            peer: ch.peer,
                            local: ch.local,
                            io: Box::pin(grasp_acp::stream::StreamChannel::new(l.io, framing)),
                            identity: l.identity,
                        }),
                        Ok(Err(e)) => debug!(peer = %ch.peer, error = %e, "inbound TLS refused"),
                        Err(_) => debug!(peer = %ch.peer, "inbound TLS handshake timed out"),
                    }
                });
                None
            }
            other => serve.inbound(other),
        };
        futures::future::ready(out)
    });
    let inbound = futures::stream::select(direct, accepted).boxed();
    Ok((
        Arc::new(TlsTransport {
            inner,
            over_messages: true,
            limits: framing,
            layer,
            multicast,
            pool,
            server: serve,
            name: std::sync::RwLock::new(identity.name.clone()),
        }),
        inbound,
    ))
}

/// A message channel seen as a byte stream, for TLS: each write is one
/// message (at most `MAX_WRITE` bytes), reads take the bytes of the
/// messages in order.
struct MessageBytes {
    io: std::pin::Pin<Box<dyn grasp_engine::transport::MessageIo>>,
    rbuf: Bytes,
    done: bool,
    /// The peer has gone: writes are discarded, as a TCP socket accepts
    /// writes after the peer's close (TLS 1.3 servers write session tickets
    /// after the handshake; a one-message client may be gone by then).
    peer_gone: bool,
}

/// Largest message a write becomes (a TLS record with its overhead fits).
const MAX_WRITE: usize = 17 * 1024;

impl MessageBytes {
    fn new(io: std::pin::Pin<Box<dyn grasp_engine::transport::MessageIo>>) -> Self {
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
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
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
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
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

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.peer_gone {
            return std::task::Poll::Ready(Ok(()));
        }
        match self.io.as_mut().poll_flush(cx) {
            std::task::Poll::Ready(Err(_)) => {
                self.peer_gone = true;
                std::task::Poll::Ready(Ok(()))
            }
            other => other.map_err(io_err),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io.as_mut().poll_close(cx).map_err(io_err)
    }
}
