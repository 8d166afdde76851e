//! The deterministic harness for sans-IO tests: engines on virtual time,
//! wired by an in-test network that delivers every transmit at once, with
//! seeded fault injection (smoltcp's `FaultInjector` in spirit) and an
//! outside world for replays. Used by the engine's unit tests, the
//! graspy-capture replays and the fault property test; not part of the
//! public API.
//!
//! * Engine `i` (from 0) has link-local `fe80::1:(i+1)` on interface 1 and
//!   node address `fd00:1::(i+1)`, port 7017 (see [`ll`], [`ula`]).
//! * A multicast reaches every other engine. A connect to an engine's
//!   address makes a channel pair; messages and closes cross it.
//! * Transmits for anyone else (the peer of a replayed capture: a connect to
//!   an address no engine has, a send or close on a channel not linked
//!   inside the net) go to [`Net::outside`], with every multicast too, and
//!   the test answers for that peer itself.
//! * [`Faults`] drop, duplicate and delay multicasts (so they also arrive
//!   out of order), and truncate or corrupt unicast messages or reset the
//!   channel mid-session, each with its probability, from one seeded RNG.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::ApiError;
use crate::proto::{
    ChannelEnd, ChannelId, CommandId, Config, Engine, Event, Transmit, TransportInfo,
};
use crate::transport::{Datagram, Interface, Security};
use crate::wire::Locator;

/// The link-local address of engine number `n` (from 1).
pub fn ll(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, n as u16)
}

/// The node address of engine number `n` (from 1).
pub fn ula(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, n as u16)
}

/// What a secured engine on `interfaces` (index, link-local) at `locator`
/// sees of its transport.
pub fn secured(interfaces: &[(u32, Ipv6Addr)], locator: Locator) -> TransportInfo {
    TransportInfo {
        security: Security::Quads,
        interfaces: interfaces
            .iter()
            .map(|&(index, link_local)| Interface {
                index,
                name: format!("eth{index}"),
                link_local,
            })
            .collect(),
        node_locator: locator,
        max_message_size: 2048,
    }
}

/// Probabilities of each fault, per transmit (0 = never).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// A multicast is lost (for each receiver).
    pub drop: f64,
    /// A multicast arrives twice.
    pub duplicate: f64,
    /// A multicast is held up to `max_delay` (and so may be overtaken).
    pub delay: f64,
    /// How long a delayed multicast is held at most.
    pub max_delay: Duration,
    /// A unicast message arrives cut short.
    pub truncate: f64,
    /// A unicast message arrives with one byte changed.
    pub corrupt: f64,
    /// A unicast message is not delivered; its channel is reset instead.
    pub reset: f64,
}

/// An engine's addresses: its node address, and its link-local address by
/// interface.
#[derive(Debug)]
struct Addrs {
    node: Option<Ipv6Addr>,
    link_local: Vec<(u32, Ipv6Addr)>,
}

impl Addrs {
    fn link_local(&self, ifindex: u32) -> Ipv6Addr {
        self.link_local
            .iter()
            .find(|(i, _)| *i == ifindex)
            .or(self.link_local.first())
            .map_or(Ipv6Addr::UNSPECIFIED, |(_, a)| *a)
    }
}

/// A transmit for someone outside the net: which engine sent it, and what.
pub type Outside = (usize, Transmit);

/// Engines on one link, on virtual time.
pub struct Net {
    /// Virtual time now.
    pub now: Instant,
    /// The engines.
    pub engines: Vec<Engine>,
    /// Every event the engines emitted, in order, with the engine's number.
    pub events: Vec<(usize, Event)>,
    /// Transmits for peers outside the net.
    pub outside: VecDeque<Outside>,
    /// Multicasts sent, for assertions.
    pub multicasts: usize,
    /// (engine, channel) -> (engine, channel) of the other end.
    links: HashMap<(usize, ChannelId), (usize, ChannelId)>,
    /// Each engine's addresses.
    addrs: Vec<Addrs>,
    /// Delayed multicasts: when, to whom, what.
    held: Vec<(Instant, usize, Datagram)>,
    faults: Faults,
    rng: StdRng,
    next_cmd: u64,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("engines", &self.engines.len())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// `n` secured engines on one link, each seeded with its number.
    pub fn new(n: usize) -> Self {
        Self::with(n, |_| Config::default())
    }

    /// `n` secured engines with the configuration `config(i)` (its seed
    /// set to `i + 1` unless it has one).
    pub fn with(n: usize, config: impl Fn(usize) -> Config) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let mut c = config(i);
                c.seed = c.seed.or(Some(i as u64 + 1));
                (
                    c,
                    secured(&[(1, ll(i + 1))], Locator::tcp6(ula(i + 1), 7017)),
                )
            })
            .collect();
        Self::of(nodes)
    }

    /// A net of engines with the caller's configurations and addresses (a
    /// replay's own).
    pub fn of(nodes: Vec<(Config, TransportInfo)>) -> Self {
        let addrs = nodes
            .iter()
            .map(|(_, info)| Addrs {
                node: match &info.node_locator {
                    Locator::Ipv6 { addr, .. } => Some(*addr),
                    _ => None,
                },
                link_local: info
                    .interfaces
                    .iter()
                    .map(|i| (i.index, i.link_local))
                    .collect(),
            })
            .collect();
        Net {
            now: Instant::now(),
            engines: nodes
                .into_iter()
                .map(|(c, info)| Engine::new(c, info))
                .collect(),
            addrs,
            events: Vec::new(),
            outside: VecDeque::new(),
            multicasts: 0,
            links: HashMap::new(),
            held: Vec::new(),
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(0),
            next_cmd: 1,
        }
    }

    /// Injects `faults` from now on, decided by an RNG seeded with `seed`.
    pub fn faults(mut self, seed: u64, faults: Faults) -> Self {
        self.faults = faults;
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// A fresh command id.
    pub fn command(&mut self) -> CommandId {
        let id = CommandId(self.next_cmd);
        self.next_cmd += 1;
        id
    }

    /// A call that finishes at once, on engine `e`; then the network runs.
    pub fn call<T>(&mut self, e: usize, f: impl FnOnce(&mut Engine, Instant) -> T) -> T {
        let r = f(&mut self.engines[e], self.now);
        self.run();
        r
    }

    /// Starts a waiting call on engine `e`; then the network runs. Its end
    /// is [`ended`](Self::ended). Returns the call's id, or why the engine
    /// refused it (then no event follows).
    pub fn try_start(
        &mut self,
        e: usize,
        f: impl FnOnce(&mut Engine, Instant, CommandId) -> Result<(), ApiError>,
    ) -> Result<CommandId, ApiError> {
        let id = self.command();
        let r = f(&mut self.engines[e], self.now, id);
        self.run();
        r.map(|()| id)
    }

    /// [`try_start`](Self::try_start) for a call that must be accepted.
    pub fn start(
        &mut self,
        e: usize,
        f: impl FnOnce(&mut Engine, Instant, CommandId) -> Result<(), ApiError>,
    ) -> CommandId {
        self.try_start(e, f).expect("the call is accepted")
    }

    /// Takes the event that ended call `id` of engine `e`, if it has ended.
    pub fn ended(&mut self, e: usize, id: CommandId) -> Option<Event> {
        let i = self
            .events
            .iter()
            .position(|(n, ev)| *n == e && ev.ended_call() == Some(id))?;
        Some(self.events.remove(i).1)
    }

    /// Delivers everything until nothing moves.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            for e in 0..self.engines.len() {
                while let Some(t) = self.engines[e].poll_transmit() {
                    moved = true;
                    self.deliver(e, t);
                }
                while let Some(ev) = self.engines[e].poll_event() {
                    moved = true;
                    self.events.push((e, ev));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// The engine whose address `peer` is.
    fn engine_at(&self, peer: &SocketAddr) -> Option<usize> {
        let IpAddr::V6(a) = peer.ip() else {
            return None;
        };
        self.addrs
            .iter()
            .position(|x| x.node == Some(a) || x.link_local.iter().any(|(_, l)| *l == a))
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn deliver(&mut self, from: usize, t: Transmit) {
        let now = self.now;
        match t {
            Transmit::Multicast { ifindex, ref msg } => {
                self.multicasts += 1;
                for to in (0..self.engines.len()).filter(|&to| to != from) {
                    if self.roll(self.faults.drop) {
                        continue;
                    }
                    let d = Datagram {
                        ifindex,
                        src: SocketAddrV6::new(
                            self.addrs[from].link_local(ifindex),
                            7017,
                            0,
                            ifindex,
                        ),
                        msg: msg.clone(),
                    };
                    let copies = if self.roll(self.faults.duplicate) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        if self.roll(self.faults.delay) {
                            let max = self.faults.max_delay.as_micros().max(1) as u64;
                            let by = Duration::from_micros(self.rng.random_range(0..max));
                            self.held.push((now + by, to, d.clone()));
                        } else {
                            self.engines[to].handle_datagram(now, d.clone());
                        }
                    }
                }
                self.outside.push_back((from, t));
            }
            Transmit::Connect { channel, peer } => {
                let Some(to) = self.engine_at(&peer) else {
                    self.outside.push_back((from, t));
                    return;
                };
                let src = SocketAddr::V6(SocketAddrV6::new(
                    self.addrs[from].link_local(1),
                    40000,
                    0,
                    1,
                ));
                match self.engines[to].handle_inbound_channel(now, src, None) {
                    Some(theirs) => {
                        self.links.insert((from, channel), (to, theirs));
                        self.links.insert((to, theirs), (from, channel));
                    }
                    None => {
                        self.engines[from].handle_connect_failed(now, channel, "refused".into())
                    }
                }
            }
            Transmit::Send { channel, ref msg } => {
                // A channel not linked inside the net leads outside (a
                // connect to the capture's peer, or a channel the test
                // opened into the engine itself).
                let Some(&(to, ch)) = self.links.get(&(from, channel)) else {
                    self.outside.push_back((from, t));
                    return;
                };
                if self.roll(self.faults.reset) {
                    self.links.remove(&(from, channel));
                    self.links.remove(&(to, ch));
                    self.engines[to].handle_channel_closed(now, ch, ChannelEnd::Lost);
                    self.engines[from].handle_channel_closed(now, channel, ChannelEnd::Lost);
                    return;
                }
                let msg = self.damage(msg.clone());
                self.engines[to].handle_channel_message(now, ch, msg);
            }
            Transmit::Close { channel, .. } => match self.links.remove(&(from, channel)) {
                Some((to, ch)) => {
                    self.links.remove(&(to, ch));
                    self.engines[to].handle_channel_closed(now, ch, ChannelEnd::Lost);
                }
                None => self.outside.push_back((from, t)),
            },
        }
    }

    /// A unicast message as the faults leave it.
    fn damage(&mut self, msg: Bytes) -> Bytes {
        if !msg.is_empty() && self.roll(self.faults.truncate) {
            let n = self.rng.random_range(0..msg.len());
            return msg.slice(..n);
        }
        if !msg.is_empty() && self.roll(self.faults.corrupt) {
            let mut v = msg.to_vec();
            let i = self.rng.random_range(0..v.len());
            v[i] ^= 1 << self.rng.random_range(0..8);
            return Bytes::from(v);
        }
        msg
    }

    /// When the next thing happens: an engine's timer or a held multicast.
    pub fn next_timeout(&self) -> Option<Instant> {
        let timers = self.engines.iter().filter_map(Engine::poll_timeout);
        let held = self.held.iter().map(|h| h.0);
        timers.chain(held).min()
    }

    /// Advances virtual time to the next timer or held multicast (at most
    /// `max`), fires what is due, and runs the network.
    pub fn advance(&mut self, max: Duration) {
        let limit = self.now + max;
        let next = self.next_timeout().map_or(limit, |t| t.min(limit));
        self.now = next.max(self.now);
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.0 <= now);
        self.held = later;
        for (_, to, d) in due {
            self.engines[to].handle_datagram(now, d);
        }
        for e in &mut self.engines {
            e.handle_timeout(now);
        }
        self.run();
    }
}
