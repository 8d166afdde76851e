//! An in-memory link fabric: virtual nodes, interfaces and links.
//!
//! For tests, simulations of many nodes, and demos: no root, no sockets.
//! Each node gets a [`Transport`] implementing the engine's
//! `AcpTransport`, exactly as a real backend would. A fabric node is a base
//! like the plain ACP: a security backend stacks on it with
//! [`secure::bind`](crate::secure::bind), and a backend's stream layer
//! (TLS) runs over the fabric's channels as bytes, as it runs over TCP.
//!
//! * A [`Link`] is a broadcast domain. A multicast sent on a node's interface
//!   reaches every other node attached to that link (and the sender too when
//!   it has `listen_self`), subject to the link's loss and delay.
//! * Addresses: node number `n` (from 1, in creation order) has the node
//!   address `fd00:fab::n` (or the one given) and, on its interface to link
//!   number `l`, the link-local address `fe80::l:n`. Interface indices are
//!   per node, from 1, in attachment order.
//! * Unicast channels are reliable and ordered, like TCP: loss does not apply,
//!   delay does (each message arrives `delay` after it was sent). A node
//!   address is reachable from every node (the ACP routes); a link-local
//!   address only through an interface on the same link, named by the scope
//!   id. A link whose loss is 1.0 is down: nothing crosses it.
//!
//! Loss decisions come from one RNG seeded by [`Fabric::new`], and delays use
//! tokio's clock, so runs under `tokio::time::pause` are repeatable.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use futures::StreamExt;
//! use grasp_acp::fabric::{Fabric, LinkConfig};
//! use grasp_engine::transport::{AcpTransport, Inbound};
//!
//! let fabric = Fabric::new(7);
//! let link = fabric.link("link1", LinkConfig::default());
//! let (a, _a_in) = fabric.node("A").attach(&link).bind();
//! let (_b, mut b_in) = fabric.node("B").attach(&link).bind();
//! let ifindex = a.interfaces()[0].index;
//! a.send_multicast(ifindex, bytes::Bytes::from_static(&[0x81, 0x00])).await.unwrap();
//! let Some(Inbound::Datagram(d)) = b_in.next().await else { panic!() };
//! assert_eq!(&d.msg[..], &[0x81, 0x00]);
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Datagram, Inbound, InboundStream, Interface, Security,
    StatsCounters, TransportStats,
};
use grasp_engine::wire::{Limits, Locator, GRASP_DEF_MAX_SIZE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSender;

use tracing::debug;

use crate::inbound_stream;
use crate::message_bytes::{MessageBytes, MAX_WRITE};
use crate::stream::{StreamLayer, Upgrade};

/// Loss and delay of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Probability in `[0, 1]` that a multicast is lost, per receiver.
    /// 1.0 takes the link down for unicast as well.
    pub loss: f64,
    /// One-way delay of every message.
    pub delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: 0.0,
            delay: Duration::ZERO,
        }
    }
}

/// A handle to a link of a [`Fabric`].
#[derive(Clone, Debug)]
pub struct Link {
    id: usize,
    fabric: Fabric,
}

impl Link {
    /// Changes loss and delay (e.g. `loss: 1.0` cuts the link).
    pub fn set(&self, config: LinkConfig) {
        self.fabric.lock().links[self.id].config = config;
    }

    /// The link's name.
    pub fn name(&self) -> String {
        self.fabric.lock().links[self.id].name.clone()
    }
}

#[derive(Debug)]
struct LinkState {
    name: String,
    config: LinkConfig,
}

#[derive(Debug)]
struct Attachment {
    link: usize,
    ifindex: u32,
    link_local: Ipv6Addr,
}

#[derive(Debug)]
struct NodeState {
    name: String,
    address: Ipv6Addr,
    port: u16,
    listen_self: bool,
    ifaces: Vec<Attachment>,
    inbound: mpsc::Sender<Inbound>,
    permits: Arc<Semaphore>,
    stats: Arc<StatsCounters>,
    max_message_size: usize,
    /// The largest piece its channels carry: the message size, or a TLS
    /// record's worth when a layer runs over them as bytes.
    pipe_max: usize,
    channel_capacity: usize,
}

#[derive(Debug)]
struct FabricState {
    links: Vec<LinkState>,
    nodes: Vec<NodeState>,
    rng: StdRng,
}

/// A set of virtual links and nodes. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Fabric {
    inner: Arc<Mutex<FabricState>>,
}

impl Fabric {
    /// An empty fabric whose loss decisions come from `seed`.
    pub fn new(seed: u64) -> Self {
        Fabric {
            inner: Arc::new(Mutex::new(FabricState {
                links: Vec::new(),
                nodes: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FabricState> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters to a test fabric; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a link.
    pub fn link(&self, name: impl Into<String>, config: LinkConfig) -> Link {
        let mut st = self.lock();
        st.links.push(LinkState {
            name: name.into(),
            config,
        });
        Link {
            id: st.links.len() - 1,
            fabric: self.clone(),
        }
    }

    /// Starts describing a node; finish with [`NodeBuilder::bind`].
    pub fn node(&self, name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            fabric: self.clone(),
            name: name.into(),
            links: Vec::new(),
            address: None,
            port: 7017,
            listen_self: false,
            max_message_size: GRASP_DEF_MAX_SIZE,
            inbound_queue: 1024,
            channel_capacity: 64,
            max_inbound_connections: 1024,
            upgrade: Upgrade::default(),
        }
    }
}

/// Describes a node of a [`Fabric`].
#[derive(Debug)]
#[must_use = "call bind() to create the node"]
pub struct NodeBuilder {
    fabric: Fabric,
    name: String,
    links: Vec<usize>,
    address: Option<Ipv6Addr>,
    port: u16,
    listen_self: bool,
    pub(crate) max_message_size: usize,
    inbound_queue: usize,
    channel_capacity: usize,
    max_inbound_connections: usize,
    upgrade: Upgrade,
}

impl NodeBuilder {
    /// Adds an interface on `link` (indices follow the order of calls).
    pub fn attach(mut self, link: &Link) -> Self {
        self.links.push(link.id);
        self
    }
    /// Sets the node address (default `fd00:fab::n`).
    pub fn address(mut self, a: Ipv6Addr) -> Self {
        self.address = Some(a);
        self
    }
    /// Sets the unicast port (default 7017).
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    /// Delivers the node's own multicasts back to it.
    pub fn listen_self(mut self, on: bool) -> Self {
        self.listen_self = on;
        self
    }
    /// Sets the maximum message size.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }
    /// Sets the inbound queue length (datagrams and new channels).
    pub fn inbound_queue(mut self, n: usize) -> Self {
        self.inbound_queue = n.max(1);
        self
    }
    /// Sets how many messages a channel buffers in each direction.
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n.max(1);
        self
    }
    /// Sets the limit of inbound channels open at once.
    pub fn max_inbound_connections(mut self, n: usize) -> Self {
        self.max_inbound_connections = n;
        self
    }
    /// Runs every channel through a backend's [`Upgrade`]: its layer over
    /// the channel's bytes (its framer is not needed: the fabric keeps
    /// message boundaries). Set by [`secure::bind`](crate::secure::bind).
    pub fn upgrade(mut self, upgrade: Upgrade) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// Creates the node.
    pub fn bind(self) -> (Arc<Transport>, InboundStream) {
        let (tx, rx) = mpsc::channel(self.inbound_queue);
        let layer = self.upgrade.layer.clone();
        let stats = Arc::new(StatsCounters::default());
        let mut st = self.fabric.lock();
        let n = st.nodes.len() + 1;
        let address = self
            .address
            .unwrap_or(Ipv6Addr::new(0xfd00, 0xfab, 0, 0, 0, 0, 0, n as u16));
        let ifaces = self
            .links
            .iter()
            .enumerate()
            .map(|(i, &link)| Attachment {
                link,
                ifindex: i as u32 + 1,
                link_local: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, link as u16 + 1, n as u16),
            })
            .collect();
        st.nodes.push(NodeState {
            name: self.name,
            address,
            port: self.port,
            listen_self: self.listen_self,
            ifaces,
            inbound: tx,
            permits: Arc::new(Semaphore::new(self.max_inbound_connections)),
            stats: stats.clone(),
            max_message_size: self.max_message_size,
            pipe_max: if layer.is_some() {
                MAX_WRITE.max(self.max_message_size)
            } else {
                self.max_message_size
            },
            channel_capacity: self.channel_capacity,
        });
        drop(st);
        let limits = Limits {
            max_message_size: self.max_message_size,
            ..Limits::default()
        };
        let inbound = match layer {
            None => inbound_stream(rx),
            Some(layer) => handshaken(
                inbound_stream(rx),
                layer,
                self.upgrade.clone(),
                limits,
                stats.clone(),
                self.inbound_queue,
            ),
        };
        let t = Transport {
            fabric: self.fabric,
            node: n - 1,
            upgrade: self.upgrade,
            limits,
            stats,
        };
        (Arc::new(t), inbound)
    }
}

/// How long a layer's handshake over a fabric channel may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The inbound stream of a layered node: each channel a peer opens runs the
/// layer's server handshake in a task of its own (bounded by the node's
/// connection limit, whose permit the channel holds, and by
/// [`HANDSHAKE_TIMEOUT`]) and joins the stream when it is done; failures
/// are counted as refused.
fn handshaken(
    raw: InboundStream,
    layer: Arc<dyn StreamLayer>,
    upgrade: Upgrade,
    limits: Limits,
    stats: Arc<StatsCounters>,
    queue: usize,
) -> InboundStream {
    let (tx, rx) = mpsc::channel(queue);
    let direct = raw.filter_map(move |i| {
        let Inbound::Channel(ch) = i else {
            return futures::future::ready(Some(i));
        };
        let (layer, upgrade, stats, tx) =
            (layer.clone(), upgrade.clone(), stats.clone(), tx.clone());
        tokio::spawn(async move {
            let (peer, local) = (ch.peer, ch.local);
            let hs = layer.accept(Box::new(MessageBytes::new(ch.io)), peer);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
                Ok(Ok(l)) => {
                    let ch = Channel {
                        peer,
                        local,
                        io: Box::pin(upgrade.channel(l.io, limits, &stats)),
                        identity: l.identity,
                    };
                    if tx.try_send(Inbound::Channel(ch)).is_err() {
                        StatsCounters::bump(&stats.channels_refused);
                    }
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "inbound handshake failed");
                    StatsCounters::bump(&stats.channels_refused);
                }
                Err(_) => {
                    debug!(%peer, "inbound handshake timed out");
                    StatsCounters::bump(&stats.channels_silent);
                }
            }
        });
        futures::future::ready(None)
    });
    futures::stream::select(direct, inbound_stream(rx)).boxed()
}

/// A node's transport on a [`Fabric`].
#[derive(Debug)]
pub struct Transport {
    fabric: Fabric,
    node: usize,
    upgrade: Upgrade,
    limits: Limits,
    stats: Arc<StatsCounters>,
}

impl Transport {
    /// The node's name.
    pub fn name(&self) -> String {
        self.fabric.lock().nodes[self.node].name.clone()
    }

    fn multicast(&self, ifindex: u32, msg: Bytes) -> Result<(), AcpError> {
        let mut st = self.fabric.lock();
        let me = &st.nodes[self.node];
        let att = me
            .ifaces
            .iter()
            .find(|a| a.ifindex == ifindex)
            .ok_or(AcpError::NoInterface(ifindex))?;
        if msg.len() > me.max_message_size {
            return Err(AcpError::TooLarge {
                len: msg.len(),
                max: me.max_message_size,
            });
        }
        let (link, src_ll, src_port) = (att.link, att.link_local, me.port);
        let cfg = st.links[link].config;
        StatsCounters::bump(&self.stats.multicast_sent);
        // Collect receivers first, then roll the dice (the RNG is in `st`).
        let mut targets = Vec::new();
        for (i, node) in st.nodes.iter().enumerate() {
            if i == self.node && !node.listen_self {
                continue;
            }
            for a in node.ifaces.iter().filter(|a| a.link == link) {
                targets.push((
                    node.inbound.clone(),
                    node.stats.clone(),
                    node.max_message_size,
                    a.ifindex,
                ));
            }
        }
        let mut deliveries = Vec::with_capacity(targets.len());
        for t in targets {
            if cfg.loss > 0.0 && st.rng.random::<f64>() < cfg.loss {
                continue;
            }
            deliveries.push(t);
        }
        drop(st);
        for (tx, stats, max, rx_ifindex) in deliveries {
            let d = Datagram {
                ifindex: rx_ifindex,
                src: SocketAddrV6::new(src_ll, src_port, 0, rx_ifindex),
                msg: msg.clone(),
            };
            if d.msg.len() > max {
                StatsCounters::bump(&stats.multicast_dropped_oversize);
                continue;
            }
            if cfg.delay.is_zero() {
                deliver(&tx, &stats, d);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(cfg.delay).await;
                    deliver(&tx, &stats, d);
                });
            }
        }
        Ok(())
    }

    fn open(&self, peer: SocketAddr) -> Result<Channel, AcpError> {
        let SocketAddr::V6(p6) = peer else {
            return Err(AcpError::Unreachable(peer));
        };
        let st = self.fabric.lock();
        let me = &st.nodes[self.node];
        // Find the target node and the link delay on the way.
        let (target, delay, local_ip) = if crate::interfaces::is_link_local(p6.ip()) {
            let att = me
                .ifaces
                .iter()
                .find(|a| a.ifindex == p6.scope_id())
                .ok_or(AcpError::Unreachable(peer))?;
            let cfg = st.links[att.link].config;
            if cfg.loss >= 1.0 {
                return Err(AcpError::Unreachable(peer));
            }
            let t = st
                .nodes
                .iter()
                .position(|n| {
                    n.ifaces
                        .iter()
                        .any(|a| a.link == att.link && a.link_local == *p6.ip())
                })
                .ok_or(AcpError::Unreachable(peer))?;
            (t, cfg.delay, att.link_local)
        } else {
            let t = st
                .nodes
                .iter()
                .position(|n| n.address == *p6.ip())
                .ok_or(AcpError::Unreachable(peer))?;
            // Routed: the delay of the first link the nodes share, if any.
            let delay = me
                .ifaces
                .iter()
                .find_map(|a| {
                    st.nodes[t]
                        .ifaces
                        .iter()
                        .any(|b| b.link == a.link)
                        .then(|| st.links[a.link].config.delay)
                })
                .unwrap_or(Duration::ZERO);
            (t, delay, me.address)
        };
        let tn = &st.nodes[target];
        if tn.port != p6.port() {
            StatsCounters::bump(&self.stats.connect_failures);
            return Err(AcpError::Refused(peer));
        }
        let Ok(permit) = tn.permits.clone().try_acquire_owned() else {
            StatsCounters::bump(&tn.stats.channels_refused);
            StatsCounters::bump(&self.stats.connect_failures);
            return Err(AcpError::Refused(peer));
        };
        // Our end's address as the peer sees it: an ephemeral port.
        let local = SocketAddr::V6(SocketAddrV6::new(
            local_ip,
            ephemeral_port(),
            0,
            if crate::interfaces::is_link_local(&local_ip) {
                p6.scope_id()
            } else {
                0
            },
        ));
        let cap = tn.channel_capacity.min(me.channel_capacity);
        let (mine, theirs) = MemChannel::pair(cap, delay, me.pipe_max, tn.pipe_max, permit);
        // Scope id of our link-local address as seen from the target: its
        // interface on the same link.
        let remote_view = match local {
            SocketAddr::V6(l) if crate::interfaces::is_link_local(l.ip()) => {
                let my_link = me
                    .ifaces
                    .iter()
                    .find(|a| a.ifindex == p6.scope_id())
                    .map(|a| a.link);
                let their_if = tn
                    .ifaces
                    .iter()
                    .find(|a| Some(a.link) == my_link)
                    .map_or(0, |a| a.ifindex);
                SocketAddr::V6(SocketAddrV6::new(*l.ip(), l.port(), 0, their_if))
            }
            other => other,
        };
        let inbound = Channel {
            peer: remote_view,
            local: peer,
            io: Box::pin(theirs),
            identity: None,
        };
        match tn.inbound.try_send(Inbound::Channel(inbound)) {
            Ok(()) => StatsCounters::bump(&tn.stats.channels_accepted),
            Err(_) => {
                StatsCounters::bump(&tn.stats.channels_refused);
                StatsCounters::bump(&self.stats.connect_failures);
                return Err(AcpError::Refused(peer));
            }
        }
        StatsCounters::bump(&self.stats.channels_opened);
        Ok(Channel {
            peer,
            local,
            io: Box::pin(mine),
            identity: None,
        })
    }
}

/// A port for the connecting end, from the dynamic range.
fn ephemeral_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    49152 + (n % 16384) as u16
}

fn deliver(tx: &mpsc::Sender<Inbound>, stats: &StatsCounters, d: Datagram) {
    match tx.try_send(Inbound::Datagram(d)) {
        Ok(()) => StatsCounters::bump(&stats.multicast_received),
        Err(mpsc::error::TrySendError::Full(_)) => {
            StatsCounters::bump(&stats.multicast_dropped_queue_full)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

impl AcpTransport for Transport {
    fn security(&self) -> Security {
        Security::None
    }

    fn interfaces(&self) -> Vec<Interface> {
        let st = self.fabric.lock();
        st.nodes[self.node]
            .ifaces
            .iter()
            .map(|a| Interface {
                index: a.ifindex,
                name: format!("{}-{}", st.nodes[self.node].name, st.links[a.link].name),
                link_local: a.link_local,
            })
            .collect()
    }

    fn node_locator(&self) -> Locator {
        let st = self.fabric.lock();
        let n = &st.nodes[self.node];
        Locator::tcp6(n.address, n.port)
    }

    fn max_message_size(&self) -> usize {
        self.fabric.lock().nodes[self.node].max_message_size
    }

    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        futures::future::ready(self.multicast(ifindex, msg)).boxed()
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        if self.upgrade.layer.is_none() {
            return futures::future::ready(self.open(peer)).boxed();
        }
        async move {
            let ch = self.open(peer)?;
            let bytes = Box::new(MessageBytes::new(ch.io));
            let (io, identity) = self
                .upgrade
                .connect(bytes, peer, HANDSHAKE_TIMEOUT, self.limits, &self.stats)
                .await?;
            Ok(Channel {
                peer: ch.peer,
                local: ch.local,
                io: Box::pin(io),
                identity,
            })
        }
        .boxed()
    }

    fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }
}

type Timed = (Instant, Bytes);

/// One end of an in-memory channel: bounded in both directions.
struct MemChannel {
    tx: PollSender<Timed>,
    rx: mpsc::Receiver<Timed>,
    delay: Duration,
    max_send: usize,
    /// A received message waiting for its delivery time.
    held: Option<(Pin<Box<Sleep>>, Bytes)>,
    queue: VecDeque<Bytes>,
    _permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl MemChannel {
    fn pair(
        cap: usize,
        delay: Duration,
        max_a: usize,
        max_b: usize,
        permit: OwnedSemaphorePermit,
    ) -> (MemChannel, MemChannel) {
        let (atx, brx) = mpsc::channel(cap);
        let (btx, arx) = mpsc::channel(cap);
        let permit = Arc::new(permit);
        let mk = |tx, rx, max_send| MemChannel {
            tx: PollSender::new(tx),
            rx,
            delay,
            max_send,
            held: None,
            queue: VecDeque::new(),
            _permit: Some(permit.clone()),
        };
        (
            mk(atx, arx, max_a.min(max_b)),
            mk(btx, brx, max_a.min(max_b)),
        )
    }
}

impl Stream for MemChannel {
    type Item = Result<Bytes, AcpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(m) = this.queue.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        loop {
            if let Some((sleep, _)) = &mut this.held {
                ready!(sleep.as_mut().poll(cx));
                if let Some((_, m)) = this.held.take() {
                    return Poll::Ready(Some(Ok(m)));
                }
            }
            match ready!(this.rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some((at, m)) => {
                    if at <= Instant::now() {
                        return Poll::Ready(Some(Ok(m)));
                    }
                    this.held = Some((Box::pin(tokio::time::sleep_until(at)), m));
                }
            }
        }
    }
}

impl Sink<Bytes> for MemChannel {
    type Error = AcpError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.tx.poll_reserve(cx).map_err(|_| AcpError::Closed)
    }

    fn start_send(mut self: Pin<&mut Self>, msg: Bytes) -> Result<(), AcpError> {
        if msg.len() > self.max_send {
            return Err(AcpError::TooLarge {
                len: msg.len(),
                max: self.max_send,
            });
        }
        let at = Instant::now() + self.delay;
        self.tx.send_item((at, msg)).map_err(|_| AcpError::Closed)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};

    fn m(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    async fn next_datagram(s: &mut InboundStream) -> Datagram {
        match s.next().await {
            Some(Inbound::Datagram(d)) => d,
            other => panic!("expected a datagram, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn multicast_reaches_every_node_on_the_link_only() {
        let f = Fabric::new(1);
        let l1 = f.link("l1", LinkConfig::default());
        let l2 = f.link("l2", LinkConfig::default());
        let (a, mut a_in) = f.node("A").attach(&l1).bind();
        let (b, mut b_in) = f.node("B").attach(&l1).attach(&l2).bind();
        let (_c, mut c_in) = f.node("C").attach(&l2).bind();
        a.send_multicast(1, m(&[0x81, 0x00])).await.unwrap();
        let d = next_datagram(&mut b_in).await;
        assert_eq!(d.ifindex, 1);
        assert_eq!(*d.src.ip(), "fe80::1:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(d.src.port(), 7017);
        // C is on the other link; A does not hear itself.
        b.send_multicast(2, m(&[0x81, 0x00])).await.unwrap();
        let d = next_datagram(&mut c_in).await;
        assert_eq!(d.ifindex, 1);
        assert_eq!(*d.src.ip(), "fe80::2:2".parse::<Ipv6Addr>().unwrap());
        assert!(a_in.next().now_or_never().is_none());
        assert!(matches!(
            a.send_multicast(9, m(&[0x81, 0x00])).await,
            Err(AcpError::NoInterface(9))
        ));
        assert_eq!(a.stats().multicast_sent, 1);
        assert_eq!(b.stats().multicast_received, 1);
    }

    #[tokio::test]
    async fn listen_self_and_loss() {
        async fn run(seed: u64) -> (u64, u64) {
            let f = Fabric::new(seed);
            let l = f.link(
                "l",
                LinkConfig {
                    loss: 0.5,
                    delay: Duration::ZERO,
                },
            );
            let (a, _a_in) = f.node("A").attach(&l).listen_self(true).bind();
            let (b, _b_in) = f.node("B").attach(&l).inbound_queue(1000).bind();
            for _ in 0..400 {
                a.send_multicast(1, m(&[0x81, 0x00])).await.unwrap();
            }
            (a.stats().multicast_received, b.stats().multicast_received)
        }
        let (to_self, to_b) = run(42).await;
        assert!(
            (120..280).contains(&to_b),
            "about half of 400 expected, got {to_b}"
        );
        assert!(
            (120..280).contains(&to_self),
            "listen_self delivers to the sender: {to_self}"
        );
        // Same seed, same losses; another seed, other losses.
        assert_eq!(run(42).await, (to_self, to_b));
        assert_ne!(run(43).await, (to_self, to_b));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_applies_to_multicast_and_unicast() {
        let f = Fabric::new(1);
        let l = f.link(
            "l",
            LinkConfig {
                loss: 0.0,
                delay: Duration::from_millis(10),
            },
        );
        let (a, _a_in) = f.node("A").attach(&l).bind();
        let (b, mut b_in) = f.node("B").attach(&l).bind();
        let t0 = Instant::now();
        a.send_multicast(1, m(&[0x81, 0x00])).await.unwrap();
        next_datagram(&mut b_in).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
        let mut ch = a.connect(b.node_locator_addr()).await.unwrap();
        let Some(Inbound::Channel(mut theirs)) = b_in.next().await else {
            panic!()
        };
        let t1 = Instant::now();
        ch.io.send(m(&[0x81, 0x00])).await.unwrap();
        ch.io.send(m(&[0x83, 0x07, 0x01, 0x02])).await.unwrap();
        assert_eq!(theirs.io.next().await.unwrap().unwrap(), m(&[0x81, 0x00]));
        assert_eq!(t1.elapsed(), Duration::from_millis(10));
        assert_eq!(
            theirs.io.next().await.unwrap().unwrap(),
            m(&[0x83, 0x07, 0x01, 0x02])
        );
    }

    #[tokio::test]
    async fn unicast_by_node_address_and_link_local() {
        let f = Fabric::new(1);
        let l1 = f.link("l1", LinkConfig::default());
        let l2 = f.link("l2", LinkConfig::default());
        let (a, _a_in) = f.node("A").attach(&l1).bind();
        let (b, mut b_in) = f.node("B").attach(&l1).attach(&l2).bind();
        let (c, mut c_in) = f.node("C").attach(&l2).bind();
        // Routed to C's node address across B.
        let mut ch = a.connect(c.node_locator_addr()).await.unwrap();
        let Some(Inbound::Channel(mut theirs)) = c_in.next().await else {
            panic!()
        };
        assert_eq!(
            theirs.peer.ip(),
            "fd00:fab::1".parse::<std::net::IpAddr>().unwrap()
        );
        ch.io.send(m(&[0x81, 0x00])).await.unwrap();
        assert_eq!(theirs.io.next().await.unwrap().unwrap(), m(&[0x81, 0x00]));
        theirs.io.send(m(&[0x81, 0x00])).await.unwrap();
        assert_eq!(ch.io.next().await.unwrap().unwrap(), m(&[0x81, 0x00]));
        drop(theirs);
        assert!(ch.io.next().await.is_none(), "peer closing ends the stream");

        // Link-local: B's address on l1 through A's interface 1.
        let b_ll = b.interfaces()[0].link_local;
        let peer = SocketAddr::V6(SocketAddrV6::new(b_ll, 7017, 0, 1));
        let _ch = a.connect(peer).await.unwrap();
        let Some(Inbound::Channel(theirs)) = b_in.next().await else {
            panic!()
        };
        let SocketAddr::V6(p) = theirs.peer else {
            panic!()
        };
        assert_eq!(p.scope_id(), 1, "B sees A on its interface to l1");
        // C's link-local is not on A's link.
        let c_ll = c.interfaces()[0].link_local;
        let bad = SocketAddr::V6(SocketAddrV6::new(c_ll, 7017, 0, 1));
        assert!(matches!(
            a.connect(bad).await,
            Err(AcpError::Unreachable(_))
        ));
        // Wrong port: refused. Unknown address: unreachable.
        let wrong = SocketAddr::V6(SocketAddrV6::new("fd00:fab::3".parse().unwrap(), 1, 0, 0));
        assert!(matches!(a.connect(wrong).await, Err(AcpError::Refused(_))));
        let nobody = SocketAddr::V6(SocketAddrV6::new(
            "fd00:fab::99".parse().unwrap(),
            7017,
            0,
            0,
        ));
        assert!(matches!(
            a.connect(nobody).await,
            Err(AcpError::Unreachable(_))
        ));
        // A down link carries nothing.
        l1.set(LinkConfig {
            loss: 1.0,
            delay: Duration::ZERO,
        });
        assert!(matches!(
            a.connect(peer).await,
            Err(AcpError::Unreachable(_))
        ));
    }

    #[tokio::test]
    async fn bounds_are_enforced_and_counted() {
        let f = Fabric::new(1);
        let l = f.link("l", LinkConfig::default());
        let (a, _a_in) = f.node("A").attach(&l).max_message_size(8).bind();
        let (b, mut b_in) = f
            .node("B")
            .attach(&l)
            .inbound_queue(1)
            .max_inbound_connections(1)
            .bind();
        assert!(matches!(
            a.send_multicast(1, Bytes::from(vec![0u8; 9])).await,
            Err(AcpError::TooLarge { .. })
        ));
        a.send_multicast(1, m(&[0x81, 0x00])).await.unwrap();
        a.send_multicast(1, m(&[0x81, 0x00])).await.unwrap();
        assert_eq!(b.stats().multicast_dropped_queue_full, 1);
        next_datagram(&mut b_in).await;
        let ch = a.connect(b.node_locator_addr()).await.unwrap();
        assert!(matches!(
            a.connect(b.node_locator_addr()).await,
            Err(AcpError::Refused(_))
        ));
        assert_eq!(b.stats().channels_refused, 1);
        let Some(Inbound::Channel(theirs)) = b_in.next().await else {
            panic!()
        };
        drop(ch);
        drop(theirs);
        // The permit is back once both ends are gone.
        assert!(a.connect(b.node_locator_addr()).await.is_ok());
        let mut ch = a.connect(b.node_locator_addr()).now_or_never();
        assert!(matches!(ch.take(), Some(Err(_))));
    }

    impl Transport {
        fn node_locator_addr(&self) -> SocketAddr {
            match self.node_locator() {
                Locator::Ipv6 { addr, port, .. } => {
                    SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0))
                }
                _ => unreachable!(),
            }
        }
    }
}
