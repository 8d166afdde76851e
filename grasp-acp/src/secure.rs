//! One shape for every security backend, in the manner of rust-libp2p's
//! transport upgrades: a [`Base`] (the plain ACP's sockets or a fabric
//! node) carries connections and multicasts; a [`Backend`] says what it
//! asks of the base (a stream layer such as TLS, a framer for graspy's
//! legacy QUADS, room for its overhead) and starts a [`Protection`], the
//! small surface it really provides: seal and open a multicast, protect an
//! outbound and an inbound channel, add its counters. [`Transport`] applies
//! it, here and only here: it raises the base's message limit by the
//! backend's overhead, checks sizes, counts and logs every multicast the
//! protection drops, and forwards interfaces and the node locator.
//!
//! [`bind`] stacks a backend on a base; [`wrap`] puts one over any
//! transport already bound (when the backend needs nothing of the base's
//! connections: QUADS, a message tap).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), grasp_acp::Error> {
//! use grasp_acp::fabric::{Fabric, LinkConfig};
//! use grasp_acp::secure::{self, Backend, Protection};
//! use grasp_engine::transport::{AcpError, AcpTransport, Channel, InboundStream, Security};
//!
//! /// A backend that protects nothing and says so: the smallest there is.
//! struct Nothing;
//! impl Backend for Nothing {
//!     type Protection = Nothing;
//!     fn overhead(&self) -> usize { 0 }
//!     fn start(self, _max: usize) -> (Nothing, Option<InboundStream>) { (Nothing, None) }
//! }
//! impl Protection for Nothing {
//!     type Drop = &'static str;
//!     fn security(&self) -> Security { Security::None }
//!     fn seal_multicast(&self, msg: &[u8]) -> Result<bytes::Bytes, AcpError> {
//!         Ok(bytes::Bytes::copy_from_slice(msg))
//!     }
//!     fn open_multicast(&self, msg: &[u8]) -> Result<bytes::Bytes, &'static str> {
//!         Ok(bytes::Bytes::copy_from_slice(msg))
//!     }
//!     fn connect<'a>(
//!         &'a self,
//!         base: &'a dyn AcpTransport,
//!         peer: std::net::SocketAddr,
//!     ) -> futures::future::BoxFuture<'a, Result<Channel, AcpError>> {
//!         base.connect(peer)
//!     }
//!     fn accept(&self, channel: Channel) -> Option<Channel> { Some(channel) }
//! }
//!
//! let fabric = Fabric::new(1);
//! let link = fabric.link("l", LinkConfig::default());
//! let (t, _inbound) = secure::bind(fabric.node("A").attach(&link), Nothing).await?;
//! assert_eq!(t.security(), Security::None);
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, Security, TransportStats,
};
use grasp_engine::wire::{Limits, Locator};
use tracing::warn;

use crate::stream::Upgrade;
use crate::{fabric, plain, Error};

/// What a backend stacks on: the plain ACP's sockets, or a fabric node.
/// Give it the limits the engine is to see; [`bind`] raises the base's
/// message limit by the backend's overhead itself.
#[derive(Debug)]
pub enum Base {
    /// The plain ACP's sockets.
    Plain(plain::Config),
    /// A node of an in-memory fabric.
    Fabric(fabric::NodeBuilder),
}

impl From<plain::Config> for Base {
    fn from(c: plain::Config) -> Self {
        Base::Plain(c)
    }
}

impl From<fabric::NodeBuilder> for Base {
    fn from(b: fabric::NodeBuilder) -> Self {
        Base::Fabric(b)
    }
}

impl Base {
    /// The largest message the engine is to send over it.
    pub fn max_message_size(&self) -> usize {
        match self {
            Base::Plain(c) => c.max_message_size,
            Base::Fabric(b) => b.max_message_size,
        }
    }

    /// Binds the base with no backend above it.
    pub async fn bind(self) -> Result<(Arc<dyn AcpTransport>, InboundStream), Error> {
        let max = self.max_message_size();
        self.bind_upgraded(max, Upgrade::default()).await
    }

    async fn bind_upgraded(
        self,
        max: usize,
        upgrade: Upgrade,
    ) -> Result<(Arc<dyn AcpTransport>, InboundStream), Error> {
        Ok(match self {
            Base::Plain(c) => {
                let (t, i) = plain::bind(c.max_message_size(max).upgrade(upgrade)).await?;
                (t, i)
            }
            Base::Fabric(b) => {
                let (t, i) = b.max_message_size(max).upgrade(upgrade).bind();
                (t, i)
            }
        })
    }
}

/// A security backend's settings: what it asks of the base, and how it
/// starts. Consumed by [`bind`] or [`wrap`].
pub trait Backend: Send + 'static {
    /// What runs once it has started.
    type Protection: Protection;

    /// Bytes a protected message takes beyond its plaintext, at most (a
    /// multicast envelope, a record header and tag). The base's message
    /// limit is raised by this much, so the engine keeps its own.
    fn overhead(&self) -> usize;

    /// What the base runs on every connection: a stream layer (TLS), a
    /// framer (legacy QUADS). `limits` are the engine's. Default: nothing.
    fn upgrade(&self, limits: Limits) -> Upgrade {
        let _ = limits;
        Upgrade::default()
    }

    /// Starts the protection for engine messages of up to
    /// `max_message_size` bytes. Also returns the channels the protection
    /// accepts itself, if it does (TLS: the streams peers open inside their
    /// connections), which join the inbound stream.
    fn start(self, max_message_size: usize) -> (Self::Protection, Option<InboundStream>);
}

/// What a backend provides once started: the small surface [`Transport`]
/// applies to everything that crosses it.
pub trait Protection: Send + Sync + 'static {
    /// Why a multicast was dropped (counted and logged by [`Transport`]).
    type Drop: fmt::Display;

    /// The security this gives the engine.
    fn security(&self) -> Security;

    /// An outgoing multicast, protected.
    fn seal_multicast(&self, msg: &[u8]) -> Result<Bytes, AcpError>;

    /// A received multicast's GRASP message, or why it is dropped.
    fn open_multicast(&self, msg: &[u8]) -> Result<Bytes, Self::Drop>;

    /// A protected channel to `peer`, over `base`'s connections.
    fn connect<'a>(
        &'a self,
        base: &'a dyn AcpTransport,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Channel, AcpError>>;

    /// A channel a peer opened through the base, protected; or `None` when
    /// the protection has taken it over (TLS serves it as a multiplexed
    /// connection whose streams arrive through [`Backend::start`]'s stream).
    fn accept(&self, channel: Channel) -> Option<Channel>;

    /// Corrects the base's counters with the protection's own (channels
    /// closed for a bad record, streams counted as channels). The
    /// multicasts dropped by [`open_multicast`](Self::open_multicast) are
    /// already counted.
    fn fold_stats(&self, stats: &mut TransportStats) {
        let _ = stats;
    }
}

/// A backend's protection applied over a base transport.
pub struct Transport<P> {
    base: Arc<dyn AcpTransport>,
    protection: Arc<P>,
    overhead: usize,
    drops: Arc<Drops>,
}

impl<P: fmt::Debug> fmt::Debug for Transport<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("secure::Transport")
            .field("protection", &self.protection)
            .field("overhead", &self.overhead)
            .finish_non_exhaustive()
    }
}

/// A backend stacked on a base: its transport and inbound stream.
pub type Stacked<P> = (Arc<Transport<P>>, InboundStream);

/// Stacks `backend` on `base`: binds the base with what the backend asks
/// of its connections and its limit raised by the backend's overhead, then
/// starts the protection over it.
pub async fn bind<B: Backend>(
    base: impl Into<Base>,
    backend: B,
) -> Result<Stacked<B::Protection>, Error> {
    let base = base.into();
    let max = base.max_message_size();
    let overhead = backend.overhead();
    let upgrade = backend.upgrade(Limits {
        max_message_size: max,
        ..Limits::default()
    });
    let (inner, inbound) = base.bind_upgraded(max + overhead, upgrade).await?;
    let (protection, accepted) = backend.start(max);
    Ok(assemble(inner, inbound, protection, overhead, accepted))
}

/// Puts `backend` over a transport already bound, whose limit must leave
/// room for the backend's overhead. Refused for a backend that asks
/// something of the base's connections (TLS): [`bind`] it instead.
pub fn wrap<B: Backend>(
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    backend: B,
) -> Result<Stacked<B::Protection>, Error> {
    let overhead = backend.overhead();
    let max = inner.max_message_size().saturating_sub(overhead);
    if !backend
        .upgrade(Limits {
            max_message_size: max,
            ..Limits::default()
        })
        .is_empty()
    {
        return Err(Error::NeedsBase);
    }
    let (protection, accepted) = backend.start(max);
    Ok(assemble(inner, inbound, protection, overhead, accepted))
}

fn assemble<P: Protection>(
    base: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    protection: P,
    overhead: usize,
    accepted: Option<InboundStream>,
) -> (Arc<Transport<P>>, InboundStream) {
    let protection = Arc::new(protection);
    let drops = Arc::new(Drops::default());
    let (p, d) = (protection.clone(), drops.clone());
    let inbound = inbound
        .filter_map(move |i| {
            futures::future::ready(match i {
                Inbound::Datagram(mut dg) => match p.open_multicast(&dg.msg) {
                    Ok(msg) => {
                        dg.msg = msg;
                        Some(Inbound::Datagram(dg))
                    }
                    Err(reason) => {
                        d.multicast(&reason, &dg.src);
                        None
                    }
                },
                Inbound::Channel(ch) => p.accept(ch).map(Inbound::Channel),
                other => Some(other),
            })
        })
        .boxed();
    let inbound = match accepted {
        Some(a) => futures::stream::select(inbound, a).boxed(),
        None => inbound,
    };
    let t = Transport {
        base,
        protection,
        overhead,
        drops,
    };
    (Arc::new(t), inbound)
}

impl<P> Transport<P> {
    /// The running protection (a backend's own controls and counters:
    /// QUADS key changes, TLS reloads).
    pub fn protection(&self) -> &Arc<P> {
        &self.protection
    }

    /// Received multicasts the protection dropped.
    pub fn multicast_dropped(&self) -> u64 {
        self.drops.multicast.load(Ordering::Relaxed)
    }
}

impl<P: Protection> AcpTransport for Transport<P> {
    fn security(&self) -> Security {
        self.protection.security()
    }

    fn interfaces(&self) -> Vec<Interface> {
        self.base.interfaces()
    }

    fn node_locator(&self) -> Locator {
        self.base.node_locator()
    }

    fn max_message_size(&self) -> usize {
        self.base.max_message_size().saturating_sub(self.overhead)
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
        match self.protection.seal_multicast(&msg) {
            Ok(sealed) => self.base.send_multicast(ifindex, sealed),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        self.protection.connect(&*self.base, peer)
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.base.stats();
        let dropped = self.multicast_dropped();
        s.multicast_received = s.multicast_received.saturating_sub(dropped);
        s.multicast_dropped_other += dropped;
        self.protection.fold_stats(&mut s);
        s
    }
}

/// Multicasts dropped by the protection: counted, and logged at most once
/// a second with how many were not logged since.
#[derive(Debug, Default)]
struct Drops {
    multicast: AtomicU64,
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Drops {
    fn multicast(&self, reason: &dyn fmt::Display, from: &dyn fmt::Display) {
        self.multicast.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            warn!(%reason, %from, unlogged, "multicast dropped by the security layer");
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
