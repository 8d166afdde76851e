//! The TLS backend: mutual TLS on every connection of the base (the
//! plain ACP's TCP or the fabric's pipes, through [`Layer`]), GRASP
//! channels multiplexed over one TLS connection per peer ([`crate::mux`]),
//! and signed multicasts ([`Multicast`]). [`grasp_acp::secure`] applies it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use grasp_acp::secure;
use grasp_acp::stream::{StreamLayer, Upgrade};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, InboundStream, Security, TransportStats,
};
use grasp_engine::wire::Limits;
use tracing::info;

use crate::multicast::{self, Multicast};
use crate::mux::{self, Pool};
use crate::unicast::Layer;
use crate::{CertError, NodeIdentity};

/// Room for the multicast envelope (certificate, signature, header). It
/// also covers the multiplexer's frame header on unicast.
pub const MULTICAST_OVERHEAD: usize = 2048;

/// Tunables of the TLS backend (the identity comes separately).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Config {
    /// The multiplexer's limits and lifetimes.
    pub mux: mux::Config,
}

impl Config {
    /// Sets the multiplexer's limits and lifetimes.
    pub fn mux(mut self, mux: mux::Config) -> Self {
        self.mux = mux;
        self
    }
}

/// TLS's settings: the node's identity, made ready, and the tunables.
/// Stack it on a base with [`grasp_acp::secure::bind`].
#[derive(Debug)]
pub struct Backend {
    layer: Arc<Layer>,
    multicast: Arc<Multicast>,
    config: Config,
    name: String,
}

impl Backend {
    /// TLS for `identity`.
    pub fn new(identity: &NodeIdentity, config: Config) -> Result<Self, CertError> {
        Ok(Backend {
            layer: Arc::new(Layer::new(identity)?),
            multicast: Arc::new(Multicast::new(identity)?),
            config,
            name: identity.name.clone(),
        })
    }
}

impl secure::Backend for Backend {
    type Protection = Protection;

    fn overhead(&self) -> usize {
        MULTICAST_OVERHEAD
    }

    fn upgrade(&self, _limits: Limits) -> Upgrade {
        Upgrade {
            layer: Some(self.layer.clone() as Arc<dyn StreamLayer>),
            framer: None,
        }
    }

    fn start(self, max_message_size: usize) -> (Protection, Option<InboundStream>) {
        info!(node = %self.name, "TLS on (mutual TLS 1.3, signed multicast)");
        let pool = Pool::new(self.config.mux, max_message_size);
        let (server, accepted) = Server::new(&pool);
        let p = Protection {
            layer: self.layer,
            multicast: self.multicast,
            pool,
            server,
            name: std::sync::RwLock::new(self.name),
        };
        (p, Some(accepted))
    }
}

/// A TLS transport: [`Protection`] over a base.
pub type Transport = secure::Transport<Protection>;

/// TLS running: signs and checks multicasts, pools connections, serves the
/// connections peers open.
pub struct Protection {
    layer: Arc<Layer>,
    multicast: Arc<Multicast>,
    pool: Pool,
    server: Server,
    name: std::sync::RwLock<String>,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Protection")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// Streams peers open, waiting for the engine.
const ACCEPT_QUEUE: usize = 256;

/// The inbound side: runs every accepted TLS connection as a multiplexed
/// connection whose streams become inbound channels.
#[derive(Clone)]
struct Server {
    cfg: mux::Config,
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
    fn new(pool: &Pool) -> (Self, InboundStream) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let s = Server {
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

impl Protection {
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
    pub fn multicast_stats(&self) -> multicast::Stats {
        self.multicast.stats()
    }

    /// The multiplexer's counters (TLS connections and the streams in them).
    pub fn mux_stats(&self) -> mux::Stats {
        self.pool.counters.snapshot()
    }

    /// TLS connections to peers kept for reuse now.
    pub fn pooled_connections(&self) -> usize {
        self.pool.len()
    }
}

impl secure::Protection for Protection {
    type Drop = multicast::DropReason;

    fn security(&self) -> Security {
        Security::Tls
    }

    fn seal_multicast(&self, msg: &[u8]) -> Result<Bytes, AcpError> {
        self.multicast
            .sign(SystemTime::now(), msg)
            .map(Bytes::from)
            .map_err(|e| AcpError::Auth(format!("signing a multicast: {e}")))
    }

    fn open_multicast(&self, msg: &[u8]) -> Result<Bytes, multicast::DropReason> {
        self.multicast
            .verify(SystemTime::now(), msg)
            .map(Bytes::from)
    }

    fn connect<'a>(
        &'a self,
        base: &'a dyn AcpTransport,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Channel, AcpError>> {
        async move {
            // The base runs the TLS handshake on every connection it opens.
            let dial = || base.connect(peer);
            self.pool.channel(peer, &dial).await
        }
        .boxed()
    }

    fn accept(&self, ch: Channel) -> Option<Channel> {
        self.server.connection(ch);
        None
    }

    fn fold_stats(&self, s: &mut TransportStats) {
        // Channels are streams; the TLS connections carrying them are
        // counted in `mux_stats`.
        let x = self.mux_stats();
        s.channels_opened = x.streams_opened;
        s.channels_accepted = x.streams_accepted;
        s.channels_refused += x.streams_refused;
    }
}
