//! The plain, insecure ACP: UDP link-local multicast and TCP unicast.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Datagram, Inbound, InboundStream, Interface, Security,
    StatsCounters, TransportStats,
};
use grasp_engine::wire::{
    Limits, Locator, ALL_GRASP_NEIGHBORS, GRASP_DEF_MAX_SIZE, GRASP_LISTEN_PORT,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::interfaces::{host_interfaces, preferred_address, select};
use crate::stream::{StreamChannel, StreamLayer, Upgrade};
use crate::Error;

/// Configuration of the plain ACP.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Interfaces to use by name; `None` uses every interface that is up,
    /// multicast-capable, not loopback, and has a link-local address.
    pub interfaces: Option<Vec<String>>,
    /// Port for unicast (TCP listener) and as the source port of our
    /// multicasts; 0 picks a free one. Discovery responses arrive here.
    pub port: u16,
    /// UDP port multicasts are sent to and received on. Always
    /// [`GRASP_LISTEN_PORT`] (7017) except in special labs.
    pub multicast_port: u16,
    /// Receive our own multicasts (for several instances on one host).
    pub listen_self: bool,
    /// Largest message sent or accepted.
    pub max_message_size: usize,
    /// Timeout for outgoing TCP connections.
    pub connect_timeout: Duration,
    /// Limits on inbound TCP connections: in all, per source address, and
    /// how long one may stay silent when the pool fills
    /// ([`Admission`](crate::slots::Admission) says who pays when it is full).
    pub admission: crate::slots::Admission,
    /// Received multicasts queued for the engine, in all; beyond that the
    /// heaviest source's newest is dropped (counted). Sources are served in
    /// turn ([`fair`](crate::fair) explains).
    pub inbound_queue: usize,
    /// Received multicasts queued from one link-local source at most.
    pub inbound_per_source: usize,
    /// Each interface's multicast socket's receive buffer in bytes (`SO_RCVBUFFORCE`
    /// when privileged, else `SO_RCVBUF`, which the kernel caps at
    /// `net.core.rmem_max`). Datagrams the kernel drops when it is full are
    /// counted (`SO_RXQ_OVFL`).
    pub receive_buffer: usize,
    /// Override the node address (otherwise ULA, else global, else
    /// link-local).
    pub node_address: Option<Ipv6Addr>,
    /// What a security backend runs on every TCP connection (TLS) and how
    /// it splits messages (legacy QUADS); the default is neither. Set by
    /// [`secure::bind`](crate::secure::bind), not by hand.
    pub upgrade: Upgrade,
    /// Interfaces that come or go and addresses that change are followed
    /// as the kernel reports them (rtnetlink); where it cannot, they are
    /// looked for this often. `None` never looks again after binding.
    pub rescan_interval: Option<Duration>,
    /// Start even when the interfaces wanted are not there yet (a daemon
    /// started before its links); they are used when they appear. Default
    /// false: a missing or unusable interface is an error at bind (after
    /// waiting up to 3 s for a named one's link-local address to finish
    /// duplicate address detection).
    pub wait_for_interfaces: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interfaces: None,
            port: 0,
            multicast_port: GRASP_LISTEN_PORT,
            listen_self: false,
            max_message_size: GRASP_DEF_MAX_SIZE,
            connect_timeout: Duration::from_secs(5),
            admission: crate::slots::Admission::default(),
            inbound_queue: 1024,
            // A storming source holds at most a sixteenth of the queue.
            inbound_per_source: 64,
            // About 5,000 small datagrams: a few milliseconds of a storm
            // while the engine is busy, a few hundred KiB when idle.
            receive_buffer: 4 << 20,
            node_address: None,
            upgrade: Upgrade::default(),
            rescan_interval: Some(Duration::from_secs(5)),
            wait_for_interfaces: false,
        }
    }
}

impl Config {
    /// Uses exactly these interfaces.
    pub fn interfaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.interfaces = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Runs every TCP connection through a backend's [`Upgrade`].
    pub fn upgrade(mut self, upgrade: Upgrade) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// Starts without the wanted interfaces, waiting for them.
    pub fn wait_for_interfaces(mut self, on: bool) -> Self {
        self.wait_for_interfaces = on;
        self
    }

    /// Sets how often interfaces are rescanned where rtnetlink is not
    /// available (`None`: interfaces are not followed after binding).
    pub fn rescan_interval(mut self, every: Option<Duration>) -> Self {
        self.rescan_interval = every;
        self
    }

    /// Sets `listen_self`.
    pub fn listen_self(mut self, on: bool) -> Self {
        self.listen_self = on;
        self
    }

    /// Sets the unicast port (0 = any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the maximum message size.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the inbound connection limits.
    pub fn admission(mut self, a: crate::slots::Admission) -> Self {
        self.admission = a;
        self
    }
}

/// The plain ACP transport. Create it with [`bind`].
#[derive(Debug)]
pub struct Transport {
    /// Interfaces in use, the node locator, and what the receive loop
    /// filters on; the rescan task updates them.
    now: Arc<std::sync::RwLock<Current>>,
    multicast_port: u16,
    send: Arc<UdpSocket>,
    limits: Limits,
    upgrade: Upgrade,
    connect_timeout: Duration,
    stats: Arc<StatsCounters>,
    tasks: Vec<JoinHandle<()>>,
    /// One multicast socket and receive task per interface.
    _receivers: Arc<std::sync::Mutex<Receivers>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long a one-shot node waits for a named interface's link-local
/// address to leave duplicate address detection (it takes about a second).
const DAD_WAIT: Duration = Duration::from_secs(3);

/// Binds the plain ACP: joins `ff02::13` on each interface, listens for TCP,
/// and starts the receive tasks. Must be called inside a tokio runtime.
pub async fn bind(config: Config) -> Result<(Arc<Transport>, InboundStream), Error> {
    let mut all = host_interfaces()?;
    // Kernel changes, when netlink works; else the interfaces are polled.
    let mut changes = match crate::netlink::Changes::open() {
        Ok(c) => Some(c),
        Err(e) => {
            debug!(error = %e, "no rtnetlink: interfaces are rescanned on a timer");
            None
        }
    };
    if !config.wait_for_interfaces {
        // A named interface whose link-local address is still in duplicate
        // address detection is waited for, a little.
        let until = tokio::time::Instant::now() + DAD_WAIT;
        while let Err(Error::UnusableInterface { why, .. }) =
            select(&all, config.interfaces.as_deref())
        {
            if why != crate::interfaces::NO_LINK_LOCAL || tokio::time::Instant::now() >= until {
                break;
            }
            match changes.as_mut() {
                Some(c) => {
                    if tokio::time::timeout_at(until, c.next()).await.is_err() {
                        break;
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            all = host_interfaces()?;
        }
    }
    let interfaces = if config.wait_for_interfaces {
        let present = crate::interfaces::select_present(&all, config.interfaces.as_deref());
        if present.is_empty() {
            warn!(
                wanted = ?config.interfaces,
                "no usable GRASP interface yet; waiting for one to appear"
            );
        }
        present
    } else {
        select(&all, config.interfaces.as_deref())?
    };
    let node_addr = config
        .node_address
        .or_else(|| preferred_address(&all, &interfaces))
        .or(config.wait_for_interfaces.then_some(Ipv6Addr::UNSPECIFIED))
        .ok_or(Error::NoInterfaces)?;

    let (listener, send, port) = bind_unicast_pair(&config)?;

    let stats = Arc::new(StatsCounters::default());
    let limits = Limits {
        max_message_size: config.max_message_size,
        ..Limits::default()
    };
    // Interface changes and channels whose handshake finished.
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let fair = Arc::new(crate::fair::Fair::new(
        config.inbound_queue,
        config.inbound_per_source,
    ));
    let now = Arc::new(std::sync::RwLock::new(Current::new(
        interfaces.clone(),
        Locator::tcp6(node_addr, port),
    )));
    let receivers = Arc::new(std::sync::Mutex::new(Receivers {
        config: ReceiveConfig {
            port: config.multicast_port,
            buffer: config.receive_buffer,
            listen_self: config.listen_self,
            max: config.max_message_size,
        },
        now: now.clone(),
        queue: Arc::downgrade(&fair),
        stats: stats.clone(),
        running: std::collections::HashMap::new(),
    }));
    {
        let mut r = receivers.lock().unwrap_or_else(|e| e.into_inner());
        for i in &interfaces {
            r.start(i)?;
        }
    }
    let mut tasks = Vec::new();
    if let Some(every) = config.rescan_interval {
        tasks.push(tokio::spawn(rescan_loop(
            every,
            changes,
            config.interfaces.clone(),
            config.node_address,
            receivers.clone(),
            now.clone(),
            tx.clone(),
        )));
    }
    // Connections are accepted by the inbound stream itself when the engine
    // polls it (no task and queue between the listener and the engine: one
    // wake-up less per connection, and the kernel's backlog is the queue).
    let inbound = Acceptor {
        listener,
        local: None,
        slots: crate::slots::Slots::new(config.admission),
        limits,
        upgrade: config.upgrade.clone(),
        silence: config.admission.silence,
        waiting: futures::stream::FuturesUnordered::new(),
        stats: stats.clone(),
        datagrams: fair,
        events: rx,
        backoff: None,
        accept_first: true,
    };
    drop(tx);
    info!(
        node = %node_addr,
        port,
        interfaces = ?interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        listen_self = config.listen_self,
        upgraded = !config.upgrade.is_empty(),
        // The security above these sockets (QUADS, TLS, legacy QUADS, or
        // none) is logged by whoever stacks it; this says nothing about it.
        "GRASP sockets bound (UDP multicast and TCP)"
    );
    let transport = Transport {
        now,
        multicast_port: config.multicast_port,
        send: Arc::new(send),
        limits,
        upgrade: config.upgrade,
        connect_timeout: config.connect_timeout,
        stats,
        tasks,
        _receivers: receivers,
    };
    Ok((Arc::new(transport), inbound.boxed()))
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Interface changes and handshaken channels queued for the engine (a few
/// at a time in practice; full means a handshaken channel is refused).
const EVENT_QUEUE: usize = 256;

/// A TCP listener and a UDP sending socket on the same port number: discovery
/// responders connect by TCP to the UDP source port of our multicasts
/// (RFC 8990 §2.5.4.3, and what graspy does).
fn bind_unicast_pair(config: &Config) -> Result<(TcpListener, UdpSocket, u16), Error> {
    let mut last = None;
    for _ in 0..10 {
        let tcp = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))
            .map_err(io_err("creating the TCP listening socket"))?;
        tcp.set_only_v6(true)
            .map_err(io_err("setting IPV6_V6ONLY"))?;
        tcp.set_reuse_address(true)
            .map_err(io_err("setting SO_REUSEADDR"))?;
        tcp.set_nonblocking(true)
            .map_err(io_err("setting O_NONBLOCK"))?;
        let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, config.port, 0, 0);
        if let Err(e) = tcp.bind(&SockAddr::from(addr)) {
            last = Some(io_err(format!("binding TCP port {}", config.port))(e));
            if config.port != 0 {
                break;
            }
            continue;
        }
        tcp.listen(1024)
            .map_err(io_err("listening on the TCP socket"))?;
        let port = tcp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .ok_or_else(|| Error::Io {
                context: "reading the TCP listener's port".into(),
                source: io::Error::other("no socket address"),
            })?;
        let udp = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .map_err(io_err("creating the UDP sending socket"))?;
        udp.set_only_v6(true)
            .map_err(io_err("setting IPV6_V6ONLY"))?;
        udp.set_multicast_hops_v6(1)
            .map_err(io_err("setting IPV6_MULTICAST_HOPS"))?;
        udp.set_multicast_loop_v6(config.listen_self)
            .map_err(io_err("setting IPV6_MULTICAST_LOOP"))?;
        udp.set_nonblocking(true)
            .map_err(io_err("setting O_NONBLOCK"))?;
        match udp.bind(&SockAddr::from(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            port,
            0,
            0,
        ))) {
            Ok(()) => {
                let listener = TcpListener::from_std(tcp.into())
                    .map_err(io_err("registering the TCP listener"))?;
                let udp = UdpSocket::from_std(udp.into())
                    .map_err(io_err("registering the UDP socket"))?;
                return Ok((listener, udp, port));
            }
            Err(e) => {
                debug!(port, error = %e, "UDP port taken, trying another");
                last = Some(io_err(format!("binding UDP port {port}"))(e));
                if config.port != 0 {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or(Error::NoInterfaces))
}

/// The shared multicast receiver: `[::]:7017` with SO_REUSEADDR and
/// SO_REUSEPORT so that every GRASP instance on the host receives every
/// multicast (RFC 8990 §2.3), joined to ff02::13 on each interface by index.
/// How each interface's multicast socket is set up and read.
#[derive(Clone, Copy, Debug)]
struct ReceiveConfig {
    port: u16,
    buffer: usize,
    listen_self: bool,
    max: usize,
}

/// The multicast receivers: one socket per interface, bound to it
/// (SO_BINDTODEVICE), each with its own kernel buffer and task, so a storm
/// on one link fills only that link's buffer and the other links' datagrams
/// still arrive. Dropping it stops every task.
#[derive(Debug)]
struct Receivers {
    config: ReceiveConfig,
    now: Arc<std::sync::RwLock<Current>>,
    queue: std::sync::Weak<crate::fair::Fair>,
    stats: Arc<StatsCounters>,
    running: std::collections::HashMap<u32, JoinHandle<()>>,
}

impl Receivers {
    /// Opens `i`'s socket, joins ff02::13 on it and starts its task.
    fn start(&mut self, i: &Interface) -> Result<(), Error> {
        if self.running.contains_key(&i.index) {
            return Ok(());
        }
        let sock = bind_multicast_receiver(&self.config, i)?;
        let task = tokio::spawn(multicast_receive_loop(
            Arc::new(sock),
            i.index,
            self.now.clone(),
            self.config,
            self.queue.clone(),
            self.stats.clone(),
        ));
        self.running.insert(i.index, task);
        Ok(())
    }

    /// Stops interface `index`'s task and closes its socket.
    fn stop(&mut self, index: u32) {
        if let Some(t) = self.running.remove(&index) {
            t.abort();
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for t in self.running.values() {
            t.abort();
        }
    }
}

fn bind_multicast_receiver(config: &ReceiveConfig, i: &Interface) -> Result<UdpSocket, Error> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err("creating the multicast socket"))?;
    s.set_only_v6(true).map_err(io_err("setting IPV6_V6ONLY"))?;
    s.set_reuse_address(true)
        .map_err(io_err("setting SO_REUSEADDR"))?;
    s.set_reuse_port(true)
        .map_err(io_err("setting SO_REUSEPORT"))?;
    s.set_nonblocking(true)
        .map_err(io_err("setting O_NONBLOCK"))?;
    // This interface's datagrams only. Without it (an old kernel, no
    // privilege) the socket hears every interface's and the receive loop
    // keeps its own: correct, but the links share a fate in a storm.
    if let Err(e) = s.bind_device(Some(i.name.as_bytes())) {
        warn!(interface = %i.name, error = %e, "SO_BINDTODEVICE refused: a multicast storm on one link can crowd out the others");
    }
    set_receive_buffer(&s, config.buffer);
    // Each datagram carries the socket's drop count (SO_RXQ_OVFL), so the
    // kernel's drops in a storm are counted, not invisible.
    if let Err(e) = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RxqOvfl, &1) {
        debug!(error = %e, "SO_RXQ_OVFL unavailable: kernel receive drops are not counted");
    }
    s.bind(&SockAddr::from(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        config.port,
        0,
        0,
    )))
    .map_err(io_err(format!("binding UDP port {}", config.port)))?;
    s.join_multicast_v6(&ALL_GRASP_NEIGHBORS, i.index)
        .map_err(io_err(format!(
            "joining ff02::13 on {} (index {})",
            i.name, i.index
        )))?;
    UdpSocket::from_std(s.into()).map_err(io_err("registering the multicast socket"))
}

/// Sizes a receive buffer: `SO_RCVBUFFORCE` (privileged, not capped by
/// `net.core.rmem_max`), else `SO_RCVBUF`.
fn set_receive_buffer(s: &Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &bytes).is_err() {
        if let Err(e) = s.set_recv_buffer_size(bytes) {
            debug!(error = %e, bytes, "cannot size the multicast receive buffer");
        }
    }
}

/// What the plain ACP uses now: interfaces, node locator, and our own
/// multicast source addresses (to ignore them).
#[derive(Debug)]
struct Current {
    interfaces: Vec<Interface>,
    locator: Locator,
    own: Vec<SocketAddrV6>,
}

impl Current {
    fn new(interfaces: Vec<Interface>, locator: Locator) -> Self {
        let port = match &locator {
            Locator::Ipv6 { port, .. } => *port,
            _ => 0,
        };
        let own = interfaces
            .iter()
            .map(|i| SocketAddrV6::new(i.link_local, port, 0, i.index))
            .collect();
        Current {
            interfaces,
            locator,
            own,
        }
    }
}

fn read(now: &std::sync::RwLock<Current>) -> std::sync::RwLockReadGuard<'_, Current> {
    now.read().unwrap_or_else(|e| e.into_inner())
}

/// Looks at the host's interfaces whenever the kernel reports a change
/// (`changes`), or every `every` where it cannot: joins ff02::13 on ones
/// that appeared, leaves ones that went, follows address changes, and tells
/// the engine (an [`Inbound::Interfaces`] on the inbound stream).
async fn rescan_loop(
    every: Duration,
    mut changes: Option<crate::netlink::Changes>,
    wanted: Option<Vec<String>>,
    fixed_address: Option<Ipv6Addr>,
    receivers: Arc<std::sync::Mutex<Receivers>>,
    now: Arc<std::sync::RwLock<Current>>,
    tx: mpsc::Sender<Inbound>,
) {
    // A change the engine has not been told of yet (its queue was full).
    let mut untold = false;
    loop {
        match changes.as_mut() {
            Some(c) => {
                // A change the engine still has to hear of is retried on
                // the timer.
                let wait = if untold { Some(every) } else { None };
                let next = async {
                    match wait {
                        Some(w) => tokio::time::timeout(w, c.next()).await.unwrap_or(Ok(())),
                        None => c.next().await,
                    }
                };
                if let Err(e) = next.await {
                    warn!(error = %e, every = ?every, "rtnetlink failed; rescanning interfaces on a timer instead");
                    changes = None;
                }
            }
            None => tokio::time::sleep(every).await,
        }
        if tx.is_closed() {
            return;
        }
        let all = match host_interfaces() {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "cannot list interfaces; keeping the current ones");
                continue;
            }
        };
        let fresh = crate::interfaces::select_present(&all, wanted.as_deref());
        let (old, old_locator) = {
            let c = read(&now);
            (c.interfaces.clone(), c.locator.clone())
        };
        let port = match &old_locator {
            Locator::Ipv6 { port, .. } => *port,
            _ => 0,
        };
        let addr = fixed_address
            .or_else(|| preferred_address(&all, &fresh))
            .or(match &old_locator {
                Locator::Ipv6 { addr, .. } => Some(*addr),
                _ => None,
            });
        let locator = addr.map_or(old_locator.clone(), |a| Locator::tcp6(a, port));
        if fresh != old || locator != old_locator {
            let mut r = receivers.lock().unwrap_or_else(|e| e.into_inner());
            for i in fresh
                .iter()
                .filter(|i| !old.iter().any(|o| o.index == i.index))
            {
                match r.start(i) {
                    Ok(()) => {
                        info!(interface = %i.name, index = i.index, "interface up: joined ff02::13")
                    }
                    Err(e) => warn!(interface = %i.name, error = %e, "cannot join ff02::13"),
                }
            }
            for o in old
                .iter()
                .filter(|o| !fresh.iter().any(|i| i.index == o.index))
            {
                r.stop(o.index);
                info!(interface = %o.name, index = o.index, "interface gone");
            }
            drop(r);
            if locator != old_locator {
                info!(%locator, "node address changed");
            }
            if fresh.is_empty() {
                warn!("no usable GRASP interface at the moment; waiting for one");
            }
            *now.write().unwrap_or_else(|e| e.into_inner()) =
                Current::new(fresh.clone(), locator.clone());
            untold = true;
        }
        if untold {
            let c = read(&now);
            let msg = Inbound::Interfaces {
                interfaces: c.interfaces.clone(),
                node_locator: c.locator.clone(),
            };
            drop(c);
            untold = match tx.try_send(msg) {
                Ok(()) => false,
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            };
        }
    }
}

/// One datagram from the multicast socket: its length, source, and the
/// socket's count of datagrams the kernel dropped so far (SO_RXQ_OVFL).
fn receive(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<u32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn6};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(u32);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let r = recvmsg::<SockaddrIn6>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    )
    .map_err(io::Error::from)?;
    let mut dropped = None;
    if let Ok(cmsgs) = r.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::RxqOvfl(n) = c {
                dropped = Some(n);
            }
        }
    }
    let src = r.address.map(|a| SocketAddr::V6(SocketAddrV6::from(a)));
    Ok((r.bytes, src, dropped))
}

/// Reads interface `index`'s multicast socket into the fair queue.
async fn multicast_receive_loop(
    sock: Arc<UdpSocket>,
    index: u32,
    now: Arc<std::sync::RwLock<Current>>,
    config: ReceiveConfig,
    queue: std::sync::Weak<crate::fair::Fair>,
    stats: Arc<StatsCounters>,
) {
    let ReceiveConfig {
        listen_self, max, ..
    } = config;
    use std::sync::atomic::Ordering::Relaxed;
    let mut buf = vec![0u8; 65536];
    // The kernel's drop count at the last datagram (it counts from the
    // socket's creation and wraps at 2^32).
    let mut kernel_drops: u32 = 0;
    loop {
        let (n, src) = match sock
            .async_io(tokio::io::Interest::READABLE, || receive(&sock, &mut buf))
            .await
        {
            Ok((n, Some(src), dropped)) => {
                if let Some(d) = dropped {
                    let new = d.wrapping_sub(kernel_drops);
                    kernel_drops = d;
                    stats
                        .multicast_dropped_kernel
                        .fetch_add(u64::from(new), Relaxed);
                }
                (n, src)
            }
            Ok((_, None, _)) => continue,
            Err(e) => {
                warn!(error = %e, "multicast receive error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(queue) = queue.upgrade() else {
            return; // the inbound stream is gone
        };
        let SocketAddr::V6(src) = src else { continue };
        // Link-local sources carry the arrival interface as their scope id.
        let ifindex = src.scope_id();
        if ifindex != index && ifindex != 0 {
            // Another interface's (a socket not bound to its device hears
            // them all): that interface's own socket has it.
            continue;
        }
        let (ours, mine) = {
            let c = read(&now);
            (
                c.interfaces.iter().any(|i| i.index == ifindex),
                c.own.iter().any(|o| {
                    o.ip() == src.ip() && o.port() == src.port() && o.scope_id() == ifindex
                }),
            )
        };
        if !ours {
            debug!(%src, "multicast from an interface GRASP does not use, or a non-link-local source; dropped");
            StatsCounters::bump(&stats.multicast_dropped_other);
            continue;
        }
        // Our own multicasts (if the kernel loops them back anyway): same
        // link-local address, port and interface. Flow info is not compared.
        if !listen_self && mine {
            continue;
        }
        if n > max {
            debug!(%src, len = n, max, "oversize multicast dropped");
            StatsCounters::bump(&stats.multicast_dropped_oversize);
            continue;
        }
        let d = Datagram {
            ifindex,
            src,
            msg: Bytes::copy_from_slice(&buf[..n]),
        };
        match queue.push(d) {
            Ok(()) => StatsCounters::bump(&stats.multicast_received),
            // One datagram dropped: this one (its source holds its share),
            // or the heaviest source's newest to make room for it.
            Err(crate::fair::Dropped::SourceShare) => {
                StatsCounters::bump(&stats.multicast_dropped_queue_full)
            }
            Err(crate::fair::Dropped::Heaviest) => {
                StatsCounters::bump(&stats.multicast_received);
                StatsCounters::bump(&stats.multicast_dropped_queue_full)
            }
        }
    }
}

/// The plain ACP's inbound stream: multicasts from the receive task's queue,
/// and TCP connections accepted right here.
struct Acceptor {
    listener: TcpListener,
    /// Our end of every accepted channel: the listener's address (a
    /// getsockname per connection would cost a syscall for nothing).
    local: Option<SocketAddr>,
    slots: crate::slots::Slots,
    limits: Limits,
    upgrade: Upgrade,
    /// How long an admitted connection may stay silent.
    silence: Duration,
    /// Admitted connections that have not spoken yet.
    waiting: futures::stream::FuturesUnordered<BoxFuture<'static, Option<Channel>>>,
    stats: Arc<StatsCounters>,
    /// Received multicasts, fair among sources.
    datagrams: Arc<crate::fair::Fair>,
    /// Interface changes and channels whose handshake finished.
    events: mpsc::Receiver<Inbound>,
    /// After an accept error (EMFILE and friends): wait instead of spinning.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Alternates which source is polled first, so neither starves.
    accept_first: bool,
}

impl Acceptor {
    /// Accepts what the listener has (admitting or refusing each
    /// connection), then returns a connection of the waiting room that has
    /// spoken, if one has.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        // Those already waiting first: a storm of new connections must not
        // spend the task's budget before the ones that spoke are read.
        if let Poll::Ready(ch) = self.poll_waiting(cx) {
            return Poll::Ready(ch);
        }
        let mut budget = ACCEPTS_PER_POLL;
        loop {
            if budget == 0 {
                // More may be waiting in the backlog: come back soon.
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            if let Some(b) = &mut self.backoff {
                if b.as_mut().poll(cx).is_pending() {
                    break;
                }
                self.backoff = None;
            }
            let (stream, peer) = match self.listener.poll_accept(cx) {
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(e)) => {
                    warn!(error = %e, "accept failed");
                    self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                    continue;
                }
                Poll::Pending => break,
            };
            let slot = match self.slots.admit(peer.ip(), std::time::Instant::now()) {
                Ok((slot, done)) => {
                    if done.evicted > 0 {
                        debug!(%peer, evicted = done.evicted, "closed silent connections to make room");
                        self.stats
                            .channels_evicted
                            .fetch_add(done.evicted as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    slot
                }
                Err(why) => {
                    debug!(%peer, ?why, "inbound connection refused (reset)");
                    StatsCounters::bump(&self.stats.channels_refused);
                    if why == crate::slots::Refusal::SourceFull {
                        StatsCounters::bump(&self.stats.channels_refused_source);
                    }
                    // A reset: nothing lingers, and the client can tell a
                    // refusal from "nobody listens".
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = *self.local.get_or_insert_with(|| {
                self.listener
                    .local_addr()
                    .unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
            });
            if let Some(layer) = self.upgrade.layer.clone() {
                self.waiting.push(
                    handshake(
                        stream,
                        layer,
                        peer,
                        local,
                        slot,
                        self.upgrade.clone(),
                        self.limits,
                        self.stats.clone(),
                        self.silence,
                    )
                    .boxed(),
                );
                continue;
            }
            let mut io = StreamChannel::new(stream, self.limits)
                .with_framer(self.upgrade.framer.clone())
                .with_stats(self.stats.clone())
                .with_slot(slot);
            // Usually the request is here already: then the connection
            // skips the waiting room (its box, its timer).
            match io.poll_first(cx) {
                Poll::Ready(true) => {
                    return Poll::Ready(self.accepted(Channel {
                        peer,
                        local,
                        io: Box::pin(io),
                        identity: None,
                    }));
                }
                // EOF or garbage before a message: nothing to hand on.
                Poll::Ready(false) => {}
                Poll::Pending => self
                    .waiting
                    .push(first_words(io, peer, local, self.stats.clone(), self.silence).boxed()),
            }
        }
        self.poll_waiting(cx)
    }

    /// A connection of the waiting room that has spoken, if one has.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        // An empty waiting room is "nothing yet", not the end.
        while let Poll::Ready(Some(done)) = self.waiting.poll_next_unpin(cx) {
            if let Some(ch) = done {
                return Poll::Ready(self.accepted(ch));
            }
        }
        Poll::Pending
    }

    /// A channel that has spoken, counted and handed on.
    fn accepted(&self, ch: Channel) -> Inbound {
        StatsCounters::bump(&self.stats.channels_accepted);
        Inbound::Channel(ch)
    }
}

/// Connections accepted per poll of the inbound stream at most (the rest
/// wait in the kernel's backlog until the next poll).
const ACCEPTS_PER_POLL: usize = 32;

/// An admitted connection in the waiting room: it becomes a channel for the
/// engine once it has spoken (its first whole message has arrived), and is
/// dropped if it has not within `silence` or is closed to make room (its
/// slot). Until then it costs its socket and a few hundred bytes here, and
/// nothing in the engine.
async fn first_words(
    mut io: StreamChannel<TcpStream>,
    peer: SocketAddr,
    local: SocketAddr,
    stats: Arc<StatsCounters>,
    silence: Duration,
) -> Option<Channel> {
    let speak = std::future::poll_fn(|cx| io.poll_first(cx));
    match tokio::time::timeout(silence, speak).await {
        // Evicted, EOF or garbage before a message: nothing to hand on.
        Ok(false) => None,
        Ok(true) => Some(Channel {
            peer,
            local,
            io: Box::pin(io),
            identity: None,
        }),
        Err(_) => {
            silent(&stats, peer);
            None
        }
    }
}

/// The waiting room of a layered connection: it becomes a channel once its
/// layer's handshake has finished, and is dropped as [`first_words`] says.
#[allow(clippy::too_many_arguments)]
async fn handshake(
    stream: TcpStream,
    layer: Arc<dyn StreamLayer>,
    peer: SocketAddr,
    local: SocketAddr,
    slot: crate::slots::Slot,
    upgrade: Upgrade,
    limits: Limits,
    stats: Arc<StatsCounters>,
    silence: Duration,
) -> Option<Channel> {
    let speak = async {
        let l = tokio::select! {
            l = layer.accept(Box::new(stream), peer) => l,
            () = slot.evicted() => return None,
        };
        match l {
            Ok(l) => {
                // Authenticated: no longer silent.
                slot.spoke();
                let io = upgrade.channel(l.io, limits, &stats).with_slot(slot);
                Some(Channel {
                    peer,
                    local,
                    io: Box::pin(io),
                    identity: l.identity,
                })
            }
            Err(e) => {
                debug!(%peer, error = %e, "inbound handshake failed");
                StatsCounters::bump(&stats.channels_refused);
                None
            }
        }
    };
    match tokio::time::timeout(silence, speak).await {
        Ok(ch) => ch,
        Err(_) => {
            silent(&stats, peer);
            None
        }
    }
}

fn silent(stats: &StatsCounters, peer: SocketAddr) {
    debug!(%peer, "inbound connection silent too long; closed");
    StatsCounters::bump(&stats.channels_silent);
}

impl Acceptor {
    /// The next datagram or queued event (neither ends the stream: unicast
    /// still works without them).
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        if let Poll::Ready(Some(i)) = self.events.poll_recv(cx) {
            return Poll::Ready(i);
        }
        if let Poll::Ready(Some(d)) = self.datagrams.poll_pop(cx) {
            return Poll::Ready(Inbound::Datagram(d));
        }
        Poll::Pending
    }
}

impl Stream for Acceptor {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = &mut *self;
        // Alternate which is polled first, so neither starves.
        this.accept_first = !this.accept_first;
        if this.accept_first {
            if let Poll::Ready(i) = this.poll_accept(cx) {
                return Poll::Ready(Some(i));
            }
            if let Poll::Ready(i) = this.poll_queued(cx) {
                return Poll::Ready(Some(i));
            }
        } else {
            if let Poll::Ready(i) = this.poll_queued(cx) {
                return Poll::Ready(Some(i));
            }
            if let Poll::Ready(i) = this.poll_accept(cx) {
                return Poll::Ready(Some(i));
            }
        }
        Poll::Pending
    }
}

impl Transport {
    /// The port used for unicast and as multicast source port.
    pub fn port(&self) -> u16 {
        match read(&self.now).locator {
            Locator::Ipv6 { port, .. } => port,
            _ => 0,
        }
    }

    async fn do_send_multicast(&self, ifindex: u32, msg: Bytes) -> Result<(), AcpError> {
        if !read(&self.now)
            .interfaces
            .iter()
            .any(|i| i.index == ifindex)
        {
            return Err(AcpError::NoInterface(ifindex));
        }
        if msg.len() > self.limits.max_message_size {
            return Err(AcpError::TooLarge {
                len: msg.len(),
                max: self.limits.max_message_size,
            });
        }
        // The scope id picks the outgoing interface for link-local multicast.
        let dst = SocketAddrV6::new(ALL_GRASP_NEIGHBORS, self.multicast_port, 0, ifindex);
        self.send
            .send_to(&msg, dst)
            .await
            .map_err(|e| AcpError::io(format!("sending multicast on interface {ifindex}"), e))?;
        StatsCounters::bump(&self.stats.multicast_sent);
        Ok(())
    }

    async fn do_connect(&self, peer: SocketAddr) -> Result<Channel, AcpError> {
        let res = tokio::time::timeout(self.connect_timeout, TcpStream::connect(peer)).await;
        let stream = match res {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                StatsCounters::bump(&self.stats.connect_failures);
                return Err(if e.kind() == io::ErrorKind::ConnectionRefused {
                    AcpError::Refused(peer)
                } else {
                    AcpError::io(format!("connecting to {peer}"), e)
                });
            }
            Err(_) => {
                StatsCounters::bump(&self.stats.connect_failures);
                return Err(AcpError::ConnectTimeout {
                    peer,
                    after: self.connect_timeout,
                });
            }
        };
        stream
            .set_nodelay(true)
            .map_err(|e| AcpError::io("setting TCP_NODELAY", e))?;
        let local = stream
            .local_addr()
            .unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        if self.upgrade.layer.is_some() {
            let (io, identity) = self
                .upgrade
                .connect(
                    Box::new(stream),
                    peer,
                    self.connect_timeout,
                    self.limits,
                    &self.stats,
                )
                .await?;
            StatsCounters::bump(&self.stats.channels_opened);
            return Ok(Channel {
                peer,
                local,
                io: Box::pin(io),
                identity,
            });
        }
        StatsCounters::bump(&self.stats.channels_opened);
        Ok(Channel {
            peer,
            local,
            io: Box::pin(
                StreamChannel::new(stream, self.limits)
                    .with_framer(self.upgrade.framer.clone())
                    .with_stats(self.stats.clone()),
            ),
            identity: None,
        })
    }
}

impl AcpTransport for Transport {
    fn security(&self) -> Security {
        Security::None
    }

    fn interfaces(&self) -> Vec<Interface> {
        read(&self.now).interfaces.clone()
    }

    fn node_locator(&self) -> Locator {
        read(&self.now).locator.clone()
    }

    fn max_message_size(&self) -> usize {
        self.limits.max_message_size
    }

    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        self.do_send_multicast(ifindex, msg).boxed()
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        self.do_connect(peer).boxed()
    }

    fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }
}
