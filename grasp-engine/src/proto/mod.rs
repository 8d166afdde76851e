//! The deterministic protocol core: no sockets, no tokio, no clock of its
//! own, no global randomness.
//!
//! The driver feeds it what happened (`handle_*`, each with the current
//! time) and then drains what to do (`poll_transmit`), what to tell ASAs
//! (`poll_event`) and when to call back (`poll_timeout`). Randomness (session
//! ids, ASA handles) comes from a ChaCha RNG seeded from the configuration or
//! the OS. The same inputs at the same times give the same outputs, so the
//! core can be tested on virtual time.
//!
//! Wire behaviour follows graspy where RFC 8990 leaves room (see
//! `../shared/spec/GRASP.md` §9.3 and §23): loop counts of negotiation
//! objectives are decremented on receipt of M_NEGOTIATE, not on sending;
//! rapid synchronization puts the objective into M_RESPONSE; discovery
//! response ttl defaults to 600 s. Where graspy is wrong, this core is not:
//! relayed discovery answers go back to the initiator at once (RFC 8990
//! §2.5.4.4), relays are rate limited and duplicate-suppressed, the flood
//! cache is keyed by source, and everything is bounded.

mod budget;
mod cache;
pub mod types;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ApiError, ErrorCode};
use crate::transport::{Datagram, Interface, Security};
use crate::wire::{
    Discovery, End, EndOption, Flood, Invalid, Locator, Message, Objective, ObjectiveFlags,
    Response, ResponseTarget, SessionId, SessionObjective, TaggedObjective, Value, Wait,
};
use budget::{Budgets, Rates, Refused, Source, Work};
use cache::{DiscoveryCache, FloodCache, RecentSessions};
pub use types::*;

/// Largest multicast payload that keeps the IPv6 packet within 1280 bytes
/// (RFC 8990 §2.5.3: no fragmentation).
pub const MAX_MULTICAST_PAYLOAD: usize = 1280 - 40 - 8;

/// What the engine needs to know about its transport.
#[derive(Clone, Debug)]
pub struct TransportInfo {
    /// Security of the substrate.
    pub security: Security,
    /// Interfaces in use.
    pub interfaces: Vec<Interface>,
    /// The node's own locator (address and unicast port).
    pub node_locator: Locator,
    /// Largest message the transport carries.
    pub max_message_size: usize,
}

#[derive(Debug)]
struct Registered {
    owners: Vec<AsaHandle>,
    objective: Objective,
    options: RegisterOptions,
    listen_neg: bool,
    listen_synch: bool,
}

impl Registered {
    fn discoverable(&self) -> bool {
        self.options.discoverable || self.listen_neg || self.listen_synch
    }
}

#[derive(Debug)]
enum Waiter {
    Api {
        cmd: CommandId,
        first_only: bool,
        /// Each new locator as an [`Event::Found`].
        stream: bool,
    },
    Synch {
        cmd: CommandId,
        objective: Objective,
        deadline: Instant,
    },
    Neg {
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        deadline: Instant,
        /// graspy's raw channel ([`Command::RequestRaw`]).
        raw: bool,
    },
}

#[derive(Debug)]
struct Disc {
    name: String,
    deadline: Instant,
    waiters: Vec<Waiter>,
    found: Vec<AsaLocator>,
    /// For a relayed discovery: where to send what we learn.
    relay_to: Option<SocketAddrV6>,
    /// Our own discovery's repeats while nothing is found: what to send,
    /// the next gap, and the session ids used so far after the first.
    repeat: Option<Repeat>,
}

/// Repeats of a discovery within its timeout (RFC 8990 §2.5.4.2: "MAY be
/// repeated, with a newly generated Session ID", with exponential backoff):
/// at a quarter of the timeout, then at three quarters, while nothing has
/// answered. A discovery lost to a full queue or a relay's rate limit on a
/// busy link gets two more chances within the time the ASA gave it.
#[derive(Debug)]
struct Repeat {
    objective: Objective,
    gap: Duration,
    aliases: Vec<SessionId>,
}

/// Repeats of one discovery at most.
const DISCOVERY_REPEATS: usize = 2;

/// The longest ASA name, in bytes (names are for logs and dumps).
const MAX_ASA_NAME: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NegWait {
    /// Waiting for the answer to our M_REQ_NEG.
    First,
    /// Waiting for the answer to our M_NEGOTIATE.
    Step,
}

#[derive(Debug)]
struct Neg {
    sid: SessionId,
    asa: AsaHandle,
    name: String,
    requester: bool,
    pending: Option<(CommandId, NegWait)>,
    /// What the peer sent while it was our turn (e.g. an M_END), handed
    /// to the next call: as a message to a step, as bytes to a raw receive.
    early: VecDeque<Early>,
    /// graspy's raw channel: bare CBOR items instead of messages.
    raw: Option<Raw>,
    peer_closed: bool,
    clash_key: Option<(SessionId, IpAddr)>,
}

/// An item the peer sent during our turn: its bytes, and the message they
/// are if they are one.
#[derive(Debug)]
struct Early {
    raw: Bytes,
    msg: Option<Message>,
}

/// A session in graspy's raw mode (`gsend`/`grecv`).
#[derive(Debug, Default)]
struct Raw {
    /// Items received, not yet asked for (bounded by [`RAW_INBOX`]).
    inbox: VecDeque<Bytes>,
    /// A receive waiting for the next item.
    waiting: Option<CommandId>,
    /// Our request, answered with the session once M_REQ_NEG has had
    /// [`RAW_GAP`] to itself.
    opening: Option<CommandId>,
}

/// How long a raw session of ours keeps the connection to M_REQ_NEG before
/// the ASA may send: graspy reads one message per `recv()`, and an item
/// right behind the request would be read with it and lost (seen by hand
/// against graspy's listen_negotiate/grecv).
const RAW_GAP: Duration = Duration::from_millis(100);

/// Items a raw session keeps for its ASA before it closes the session.
const RAW_INBOX: usize = 16;

#[derive(Debug)]
enum ChanState {
    /// Inbound, waiting for its first message.
    Fresh,
    /// Our M_REQ_SYN is out; waiting for M_SYNCH.
    Synch {
        cmd: CommandId,
        sid: SessionId,
        name: String,
    },
    /// A negotiation session.
    Neg(Neg),
}

#[derive(Debug)]
struct Chan {
    peer: SocketAddr,
    /// The peer's authenticated identity (TLS), if any.
    identity: Option<String>,
    deadline: Option<Instant>,
    state: ChanState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Disc(SessionId, IpAddr),
    /// Repeat our discovery (keyed by its first session id).
    Repeat(SessionId, IpAddr),
    Chan(ChannelId),
}

/// The GRASP protocol engine (sans-IO).
#[derive(Debug)]
pub struct Engine {
    config: Config,
    rng: StdRng,
    security: Security,
    interfaces: Vec<Interface>,
    node_addr: IpAddr,
    node_port: u16,
    relay: bool,
    asas: HashMap<AsaHandle, String>,
    objectives: HashMap<String, Registered>,
    disc_cache: DiscoveryCache,
    flood_cache: FloodCache,
    /// Who watches which objective's floods ([`Command::WatchFlood`]).
    flood_watch: HashMap<String, Vec<AsaHandle>>,
    discoveries: HashMap<(SessionId, IpAddr), Disc>,
    /// The session ids of discovery repeats, to their discovery's first.
    disc_alias: HashMap<(SessionId, IpAddr), (SessionId, IpAddr)>,
    recent: RecentSessions,
    own_sids: HashSet<SessionId>,
    neg_clash: HashSet<(SessionId, IpAddr)>,
    channels: HashMap<ChannelId, Chan>,
    timers: BTreeSet<(Instant, Timer)>,
    budgets: Budgets,
    next_channel: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EngineStats,
}

/// graspy sends every objective with its value slot, `null` when there is
/// no value (and RFC 8990 §2.10.3 requires `null` in M_REQ_NEG): do the same.
fn with_value_slot(mut o: Objective) -> Objective {
    if o.value.is_none() {
        o.value = Some(Value::null());
    }
    o
}

fn err(code: ErrorCode, detail: impl Into<String>) -> ApiError {
    ApiError::new(code, detail)
}

impl Engine {
    /// A new engine over a transport described by `info`.
    pub fn new(config: Config, info: TransportInfo) -> Self {
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let (node_addr, node_port) = match &info.node_locator {
            Locator::Ipv6 { addr, port, .. } => (IpAddr::V6(*addr), *port),
            Locator::Ipv4 { addr, port, .. } => (IpAddr::V4(*addr), *port),
            _ => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let relay = !config.dull && config.relay.unwrap_or(info.interfaces.len() > 1);
        let mut limits = config.limits;
        limits.max_message_size = limits.max_message_size.min(info.max_message_size);
        Engine {
            disc_cache: DiscoveryCache::new(
                config.discovery_cache_objectives,
                config.discovery_cache_locators,
            ),
            flood_cache: FloodCache::new(config.flood_cache_entries),
            flood_watch: HashMap::new(),
            recent: RecentSessions::new(config.max_recent_sessions),
            config: Config { limits, ..config },
            rng,
            security: info.security,
            interfaces: info.interfaces,
            node_addr,
            node_port,
            relay,
            asas: HashMap::new(),
            objectives: HashMap::new(),
            discoveries: HashMap::new(),
            disc_alias: HashMap::new(),
            own_sids: HashSet::new(),
            neg_clash: HashSet::new(),
            channels: HashMap::new(),
            timers: BTreeSet::new(),
            budgets: Budgets::new(),
            next_channel: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
        }
    }

    /// Whether this instance relays between interfaces.
    pub fn is_relay(&self) -> bool {
        self.relay
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Unicast channels the engine is tracking (sessions in progress).
    pub fn open_channels(&self) -> usize {
        self.channels.len()
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        if let Transmit::Multicast { msg, .. } | Transmit::Send { msg, .. } = &t {
            self.stats.sent.count(msg);
        }
        Some(t)
    }

    /// The transport's interfaces or node address changed (an interface
    /// came or went, an address changed): use the new ones from now on.
    /// Whether to relay is decided again unless the configuration fixed it.
    pub fn set_interfaces(&mut self, interfaces: Vec<Interface>, node_locator: &Locator) {
        if let Locator::Ipv6 { addr, port, .. } = node_locator {
            self.node_addr = IpAddr::V6(*addr);
            self.node_port = *port;
        } else if let Locator::Ipv4 { addr, port, .. } = node_locator {
            self.node_addr = IpAddr::V4(*addr);
            self.node_port = *port;
        }
        self.relay = !self.config.dull && self.config.relay.unwrap_or(interfaces.len() > 1);
        self.interfaces = interfaces;
        self.stats.interface_changes += 1;
    }

    /// The interfaces in use now.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The next thing to tell an ASA.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    // ----- helpers -------------------------------------------------------

    fn reply(&mut self, cmd: CommandId, result: Result<Reply, ApiError>) {
        self.events.push_back(Event::Reply { cmd, result });
    }

    fn new_channel(&mut self) -> ChannelId {
        let id = ChannelId(self.next_channel);
        self.next_channel += 1;
        id
    }

    /// A fresh session id, not in use with our address (RFC 8990 §2.7).
    fn new_sid(&mut self, now: Instant) -> SessionId {
        for _ in 0..16 {
            let sid = SessionId(self.rng.random());
            let key = (sid, self.node_addr);
            if !self.discoveries.contains_key(&key)
                && !self.disc_alias.contains_key(&key)
                && !self.recent.contains(&key, now)
                && !self.own_sids.contains(&sid)
            {
                return sid;
            }
        }
        // 16 clashes in a row among 2^32 values cannot happen with a working
        // RNG and bounded tables; take the last draw anyway.
        SessionId(self.rng.random())
    }

    fn set_deadline(&mut self, id: ChannelId, at: Option<Instant>) {
        if let Some(ch) = self.channels.get_mut(&id) {
            if let Some(old) = ch.deadline.take() {
                self.timers.remove(&(old, Timer::Chan(id)));
            }
            ch.deadline = at;
            if let Some(t) = at {
                self.timers.insert((t, Timer::Chan(id)));
            }
        }
    }

    fn remove_channel(&mut self, id: ChannelId) -> Option<Chan> {
        let ch = self.channels.remove(&id)?;
        if let Some(t) = ch.deadline {
            self.timers.remove(&(t, Timer::Chan(id)));
        }
        match &ch.state {
            ChanState::Synch { sid, .. } => {
                self.own_sids.remove(sid);
            }
            ChanState::Neg(n) => {
                if n.requester {
                    self.own_sids.remove(&n.sid);
                }
                if let Some(k) = n.clash_key {
                    self.neg_clash.remove(&k);
                }
                if let Some(cmd) = n.raw.as_ref().and_then(|r| r.waiting) {
                    self.reply(cmd, Err(err(ErrorCode::NoSession, "the session ended")));
                }
                if let Some(cmd) = n.raw.as_ref().and_then(|r| r.opening) {
                    self.reply(
                        cmd,
                        Err(err(
                            ErrorCode::SockErrNegRq,
                            "the connection to the peer failed",
                        )),
                    );
                }
            }
            ChanState::Fresh => {}
        }
        Some(ch)
    }

    fn close(&mut self, id: ChannelId, linger: bool) {
        self.remove_channel(id);
        self.transmits.push_back(Transmit::Close {
            channel: id,
            linger,
        });
    }

    fn send(&mut self, channel: ChannelId, msg: &Message) {
        self.transmits.push_back(Transmit::Send {
            channel,
            msg: msg.encode(),
        });
    }

    /// Takes a token for `work` on `ifindex` for `sources` (see
    /// [`budget`]), counting a refusal against the pool or the source.
    fn budget(&mut self, now: Instant, ifindex: u32, work: Work, sources: &[Source]) -> bool {
        let c = &self.config;
        let rates = match work {
            Work::Relay => Rates {
                pool: c.relay_rate,
                per_source: c.relay_per_source,
            },
            Work::FloodRelay => Rates {
                pool: c.flood_relay_rate,
                per_source: c.flood_relay_per_source,
            },
            Work::Response => Rates {
                pool: c.response_rate,
                per_source: c.response_per_source,
            },
        };
        let Err(why) = self.budgets.take(now, ifindex, work, rates, sources) else {
            return true;
        };
        let s = &mut self.stats;
        *match (work, why) {
            (Work::Relay, Refused::Pool) => &mut s.relay_rate_limited,
            (Work::Relay, Refused::Source) => &mut s.relay_source_limited,
            (Work::FloodRelay, Refused::Pool) => &mut s.flood_relay_rate_limited,
            (Work::FloodRelay, Refused::Source) => &mut s.flood_relay_source_limited,
            (Work::Response, Refused::Pool) => &mut s.response_rate_limited,
            (Work::Response, Refused::Source) => &mut s.response_source_limited,
        } += 1;
        false
    }

    fn secure_ok(&self) -> bool {
        !self.config.dull && (self.security.is_secure() || self.config.allow_insecure)
    }

    fn check_asa(&self, asa: AsaHandle) -> Result<(), ApiError> {
        if self.asas.contains_key(&asa) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::NoAsa,
                format!("ASA handle {} is not registered", asa.0),
            ))
        }
    }

    fn own_objective(&self, asa: AsaHandle, name: &str) -> Result<&Registered, ApiError> {
        match self.objectives.get(name) {
            Some(r) if r.owners.contains(&asa) => Ok(r),
            Some(_) => Err(err(
                ErrorCode::NotYourObj,
                format!("{name:?} belongs to another ASA"),
            )),
            None => Err(err(
                ErrorCode::NotYourObj,
                format!("{name:?} is not registered"),
            )),
        }
    }

    fn dull_allows(&self, name: &str) -> bool {
        self.config.dull_objectives.iter().any(|n| n == name)
    }

    fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.index == ifindex)
    }

    /// The locator we advertise for a registered objective, answering on `ifindex`.
    fn locators_for(&self, reg: &Registered, ifindex: u32) -> Vec<Locator> {
        if !reg.options.locators.is_empty() {
            return reg.options.locators.clone();
        }
        let node_is_ll = matches!(self.node_addr, IpAddr::V6(a) if is_link_local(&a));
        if reg.options.local || self.config.dull || node_is_ll {
            if let Some(i) = self.interface(ifindex) {
                return vec![Locator::tcp6(i.link_local, self.node_port)];
            }
        }
        match self.node_addr {
            IpAddr::V6(a) => vec![Locator::tcp6(a, self.node_port)],
            IpAddr::V4(a) => vec![Locator::Ipv4 {
                addr: a,
                protocol: crate::wire::Protocol::TCP,
                port: self.node_port,
            }],
        }
    }

    // ----- network input -------------------------------------------------

    /// A link-local multicast arrived.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        self.stats.received.count(&d.msg);
        let msg = match Message::decode_with(&d.msg, &self.config.limits) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        // RFC 8990 §2.5.2 rule 6 for DULL; every GRASP multicast should come
        // from a link-local source anyway.
        if self.config.dull && !is_link_local(d.src.ip()) {
            self.stats.dull_dropped += 1;
            return;
        }
        let src = SocketAddrV6::new(*d.src.ip(), d.src.port(), 0, d.ifindex);
        match msg {
            Message::Discovery(disc) => self.on_discovery(now, d.ifindex, src, disc, &d.msg),
            Message::Flood(f) => self.on_flood(now, d.ifindex, src, f, &d.msg),
            Message::Unknown(_) => self.stats.unknown_multicast += 1,
            _ => {} // M_NOOP and unicast-only types: ignore.
        }
    }

    /// An M_DISCOVERY arrived by multicast (`raw` as received, for relaying).
    fn on_discovery(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: SocketAddrV6,
        disc: Discovery,
        raw: &[u8],
    ) {
        let key = (disc.session_id, disc.initiator);
        if self.discoveries.contains_key(&key)
            || self.disc_alias.contains_key(&key)
            || self.recent.contains(&key, now)
        {
            // Our own (looped back), or one we relayed already.
            self.stats.duplicates += 1;
            return;
        }
        let name = disc.objective.name.clone();
        if self.config.dull && (disc.objective.loop_count != 1 || !self.dull_allows(&name)) {
            self.stats.dull_dropped += 1;
            return;
        }
        if let Some(reg) = self.objectives.get(&name).filter(|r| r.discoverable()) {
            let locs = self.locators_for(reg, ifindex);
            let rapid = (reg.options.rapid && reg.listen_synch).then(|| reg.objective.clone());
            let ttl = reg.options.ttl_ms;
            self.respond(
                now,
                ifindex,
                src,
                &disc,
                ttl,
                ResponseTarget::Locators(locs),
                rapid,
            );
            return;
        }
        if self.config.dull {
            return;
        }
        if let Some((locs, ttl)) = self.disc_cache.divert_for(&name, now, ifindex) {
            self.respond(
                now,
                ifindex,
                src,
                &disc,
                ttl,
                ResponseTarget::Divert(locs),
                None,
            );
            return;
        }
        if self.disc_cache.has(&name, now) {
            // Known only on the link the discovery came from: the responder
            // there answers itself.
            return;
        }
        if self.relay {
            self.relay_discovery(now, ifindex, src, disc, raw);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        ifindex: u32,
        to: SocketAddrV6,
        disc: &Discovery,
        ttl_ms: u32,
        target: ResponseTarget,
        objective: Option<Objective>,
    ) {
        // Keyed by the address we would connect to: a storm of discoveries
        // claiming one sender gets that sender at most its own rate of
        // connections (no reflection at the pool's rate).
        if !self.budget(
            now,
            ifindex,
            Work::Response,
            &[Source::Neighbour(IpAddr::V6(*to.ip()))],
        ) {
            return;
        }
        let msg = Message::Response(Response {
            session_id: disc.session_id,
            initiator: disc.initiator,
            ttl_ms,
            target,
            objective,
            extensions: Vec::new(),
        });
        self.send_oneshot(to, &msg);
        self.stats.responses_sent += 1;
    }

    /// Connect, send one message, close (the responder closes first).
    fn send_oneshot(&mut self, to: SocketAddrV6, msg: &Message) {
        let channel = self.new_channel();
        self.transmits.push_back(Transmit::Connect {
            channel,
            peer: SocketAddr::V6(to),
        });
        self.send(channel, msg);
        self.transmits.push_back(Transmit::Close {
            channel,
            linger: false,
        });
    }

    fn relay_discovery(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: SocketAddrV6,
        disc: Discovery,
        raw: &[u8],
    ) {
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.4.4
        //# it MUST decrement the loop count ... and MUST NOT relay the
        //# M_DISCOVERY if the result is zero
        let lc = disc.objective.loop_count;
        if lc <= 1 {
            return;
        }
        if self.discoveries.len() >= self.config.max_discoveries {
            self.stats.bounded_refusals += 1;
            return;
        }
        let sources = [
            Source::Neighbour(IpAddr::V6(*src.ip())),
            Source::Initiator(disc.initiator),
        ];
        if !self.budget(now, ifindex, Work::Relay, &sources) {
            return;
        }
        let key = (disc.session_id, disc.initiator);
        // Forwarded as received but for the loop count.
        let Ok(bytes) = crate::wire::with_loop_count(raw, lc - 1) else {
            self.stats.malformed += 1;
            return;
        };
        let others: Vec<u32> = self
            .interfaces
            .iter()
            .map(|i| i.index)
            .filter(|&i| i != ifindex)
            .collect();
        for i in others {
            self.transmits.push_back(Transmit::Multicast {
                ifindex: i,
                msg: bytes.clone(),
            });
        }
        let deadline = now + Duration::from_millis(100 * u64::from(lc - 1));
        self.discoveries.insert(
            key,
            Disc {
                name: disc.objective.name,
                deadline,
                waiters: Vec::new(),
                found: Vec::new(),
                relay_to: Some(src),
                repeat: None,
            },
        );
        self.timers.insert((deadline, Timer::Disc(key.0, key.1)));
        self.stats.discoveries_relayed += 1;
    }

    /// Puts a flood in the cache, and tells the ASAs watching its objective.
    fn cache_flood(&mut self, e: FloodEntry) {
        if let Some(w) = self.flood_watch.get(&e.objective.name) {
            for asa in w {
                self.events.push_back(Event::Flood {
                    asa: *asa,
                    entry: e.clone(),
                });
            }
        }
        self.flood_cache.insert(e);
    }

    /// An M_FLOOD arrived (`raw` as received, for relaying).
    fn on_flood(&mut self, now: Instant, ifindex: u32, src: SocketAddrV6, f: Flood, raw: &[u8]) {
        let key = (f.session_id, f.initiator);
        if self.recent.contains(&key, now) {
            self.stats.duplicates += 1;
            return;
        }
        let first_lc = f.tagged[0].objective.loop_count;
        if self.config.dull
            && (first_lc != 1 || !f.tagged.iter().all(|t| self.dull_allows(&t.objective.name)))
        {
            self.stats.dull_dropped += 1;
            return;
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.6.2
        //# a flood with a link-local source address and a loop count other
        //# than 1 is invalid and MUST be discarded
        let ll_tag = f.tagged.iter().any(|t| {
            matches!(&t.locator, Some(Locator::Ipv6 { addr, .. }) if is_link_local(addr))
                && t.objective.loop_count != 1
        });
        if ll_tag || matches!(f.initiator, IpAddr::V6(a) if is_link_local(&a) && first_lc != 1) {
            self.stats.malformed += 1;
            return;
        }
        self.recent.insert(key, now + self.config.flood_memory, now);
        let expires = (f.ttl_ms != 0).then(|| now + Duration::from_millis(u64::from(f.ttl_ms)));
        for t in &f.tagged {
            if !t.objective.flags.contains(ObjectiveFlags::SYNCH) {
                continue;
            }
            self.cache_flood(FloodEntry {
                objective: t.objective.clone(),
                locator: t.locator.clone(),
                initiator: f.initiator,
                expires,
                ifindex,
            });
        }
        if self.relay && first_lc > 1 {
            let sources = [
                Source::Neighbour(IpAddr::V6(*src.ip())),
                Source::Initiator(f.initiator),
            ];
            if !self.budget(now, ifindex, Work::FloodRelay, &sources) {
                return;
            }
            //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.6.2
            //# decrement the loop count of the first objective
            // Everything else is forwarded as received.
            let Ok(bytes) = crate::wire::with_loop_count(raw, first_lc - 1) else {
                self.stats.malformed += 1;
                return;
            };
            let others: Vec<u32> = self
                .interfaces
                .iter()
                .map(|i| i.index)
                .filter(|&i| i != ifindex)
                .collect();
            for i in others {
                self.transmits.push_back(Transmit::Multicast {
                    ifindex: i,
                    msg: bytes.clone(),
                });
            }
            self.stats.floods_relayed += 1;
        }
    }

    /// A peer opened a channel to us.
    pub fn handle_inbound_channel(&mut self, now: Instant, channel: ChannelId, peer: SocketAddr) {
        if self.channels.len() >= self.config.max_channels {
            self.stats.bounded_refusals += 1;
            self.transmits.push_back(Transmit::Close {
                channel,
                linger: false,
            });
            return;
        }
        self.channels.insert(
            channel,
            Chan {
                peer,
                identity: None,
                deadline: None,
                state: ChanState::Fresh,
            },
        );
        self.set_deadline(channel, Some(now + self.config.first_message_timeout));
    }

    /// Records who the peer of `channel` proved to be (the transport
    /// authenticated it); negotiation sessions on it report the identity.
    pub fn set_channel_identity(&mut self, channel: ChannelId, identity: Option<String>) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.identity = identity;
        }
    }

    /// Allocates an id for an inbound channel (the driver's side of
    /// [`handle_inbound_channel`](Self::handle_inbound_channel)).
    pub fn allocate_channel(&mut self) -> ChannelId {
        self.new_channel()
    }

    /// A channel we asked for could not be opened.
    pub fn handle_connect_failed(&mut self, _now: Instant, channel: ChannelId, reason: String) {
        let Some(ch) = self.remove_channel(channel) else {
            return;
        };
        match ch.state {
            ChanState::Synch { cmd, .. } => self.reply(
                cmd,
                Err(err(
                    ErrorCode::SockErrSynRq,
                    format!("connecting to {}: {reason}", ch.peer),
                )),
            ),
            ChanState::Neg(n) => {
                if let Some((cmd, _)) = n.pending {
                    self.reply(
                        cmd,
                        Err(err(
                            ErrorCode::SockErrNegRq,
                            format!("connecting to {}: {reason}", ch.peer),
                        )),
                    );
                }
            }
            ChanState::Fresh => {}
        }
    }

    /// A channel ended: the peer finished sending, or the channel is gone.
    ///
    /// A half-close ([`ChannelEnd::PeerFinished`]) means "done sending", not
    /// "gone": what the engine already queued for the channel is still
    /// delivered (the driver closes after it), and a negotiation whose turn
    /// is ours stays open so that the ASA's M_END still reaches the peer.
    pub fn handle_channel_closed(&mut self, _now: Instant, channel: ChannelId, how: ChannelEnd) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if let ChanState::Neg(Neg { raw: Some(r), .. }) = &mut ch.state {
            // graspy's raw channel: a waiting grecv learns the peer is gone;
            // items already received are still the ASA's.
            if let Some(cmd) = r.waiting.take() {
                self.reply(
                    cmd,
                    Err(err(ErrorCode::NoPeer, "the peer closed the session")),
                );
            } else if !r.inbox.is_empty() {
                if let ChanState::Neg(n) = &mut ch.state {
                    n.peer_closed = true;
                }
                return;
            }
        } else if let ChanState::Neg(n) = &mut ch.state {
            let keep = match how {
                // Our turn: the peer can still read our M_END (or our
                // M_NEGOTIATE, though it cannot answer that).
                ChannelEnd::PeerFinished => n.pending.is_none(),
                // Keep what the peer said last for the ASA's next call.
                ChannelEnd::Lost | ChannelEnd::Reset => n.pending.is_none() && !n.early.is_empty(),
            };
            if keep {
                n.peer_closed = true;
                return;
            }
        }
        let Some(ch) = self.remove_channel(channel) else {
            return;
        };
        if how == ChannelEnd::PeerFinished {
            // Closing our side too; the driver sends what is queued first.
            self.transmits.push_back(Transmit::Close {
                channel,
                linger: false,
            });
        }
        let refused = format!(
            "{} refused the connection (reset) before answering: it is at its connection limit or restarting; try again later",
            ch.peer
        );
        match ch.state {
            ChanState::Synch { cmd, .. } if how == ChannelEnd::Reset => {
                self.reply(cmd, Err(err(ErrorCode::SockErrSynRq, refused)))
            }
            ChanState::Synch { cmd, .. } => self.reply(
                cmd,
                Err(err(
                    ErrorCode::NoListener,
                    format!("{} closed the connection without answering", ch.peer),
                )),
            ),
            ChanState::Neg(n) => match n.pending {
                Some((cmd, NegWait::First)) if how == ChannelEnd::Reset => {
                    self.reply(cmd, Err(err(ErrorCode::SockErrNegRq, refused)))
                }
                Some((cmd, _)) => self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NoPeer,
                        format!("{} closed the connection", ch.peer),
                    )),
                ),
                None => {}
            },
            ChanState::Fresh => {}
        }
    }

    /// A message the engine sent (a [`Transmit::Send`] or
    /// [`Transmit::Multicast`]) could not be written: the channel was gone,
    /// its queue full, or the connect or multicast failed. It is taken out
    /// of the sent counts and counted as unsent.
    pub fn handle_unsent(&mut self, msg: &[u8]) {
        self.stats.sent.uncount(msg);
        self.stats.unsent += 1;
    }

    /// A message arrived on a channel.
    pub fn handle_channel_message(&mut self, now: Instant, channel: ChannelId, raw: Bytes) {
        self.stats.received.count(&raw);
        let decoded = Message::decode_with(&raw, &self.config.limits);
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let peer = ch.peer;
        match &mut ch.state {
            ChanState::Fresh => match decoded {
                Ok(msg) => self.on_first_message(now, channel, peer, msg),
                Err(e) => {
                    self.stats.malformed += 1;
                    // RFC 8990 §2.8.12: M_INVALID for a malformed unicast.
                    let info = Value::from(format!("malformed message: {e}").as_str());
                    self.send(
                        channel,
                        &Message::Invalid(Invalid {
                            session_id: SessionId(0),
                            content: Some(info),
                            extensions: Vec::new(),
                        }),
                    );
                    self.close(channel, false);
                }
            },
            ChanState::Synch { .. } => self.on_synch_reply(channel, peer, decoded),
            ChanState::Neg(_) => self.on_neg_message(now, channel, raw, decoded),
        }
    }

    fn on_first_message(
        &mut self,
        now: Instant,
        channel: ChannelId,
        peer: SocketAddr,
        msg: Message,
    ) {
        match msg {
            Message::Noop => {} // ignored; keep waiting
            Message::Response(r) => {
                self.close(channel, true);
                let learnt_on = match peer {
                    SocketAddr::V6(p) => p.scope_id(),
                    SocketAddr::V4(_) => 0,
                };
                self.on_response(now, learnt_on, r);
            }
            Message::ReqSyn(req) => {
                let reply = self
                    .objectives
                    .get(&req.objective.name)
                    .filter(|r| r.listen_synch)
                    .map(|r| r.objective.clone());
                if let Some(obj) = reply {
                    self.send(
                        channel,
                        &Message::Synch(SessionObjective::new(req.session_id, obj)),
                    );
                }
                // RFC 8990 §2.8.6 rule 5: nobody listening, close at once.
                self.close(channel, false);
            }
            Message::ReqNeg(req) => self.on_neg_request(now, channel, peer, req),
            Message::Invalid(_) => self.close(channel, false),
            Message::Discovery(disc) => {
                // Unicast discovery (§2.8.4 rule 4): answer on this channel.
                if let Some(reg) = self
                    .objectives
                    .get(&disc.objective.name)
                    .filter(|r| r.discoverable())
                {
                    let ifindex = match peer {
                        SocketAddr::V6(p) => p.scope_id(),
                        SocketAddr::V4(_) => 0,
                    };
                    let msg = Message::Response(Response {
                        session_id: disc.session_id,
                        initiator: disc.initiator,
                        ttl_ms: reg.options.ttl_ms,
                        target: ResponseTarget::Locators(self.locators_for(reg, ifindex)),
                        objective: None,
                        extensions: Vec::new(),
                    });
                    self.send(channel, &msg);
                }
                self.close(channel, false);
            }
            other => {
                // Unknown or out-of-place: M_INVALID with the session id.
                let sid = other.session_id().unwrap_or(SessionId(0));
                let info = Value::from(format!("unexpected {}", other.msg_type()).as_str());
                self.send(
                    channel,
                    &Message::Invalid(Invalid {
                        session_id: sid,
                        content: Some(info),
                        extensions: Vec::new(),
                    }),
                );
                self.close(channel, false);
            }
        }
    }

    fn on_response(&mut self, now: Instant, learnt_on: u32, r: Response) {
        let key = (r.session_id, r.initiator);
        let key = self.disc_alias.get(&key).copied().unwrap_or(key);
        let Some(disc) = self.discoveries.get(&key) else {
            return; // unknown or expired session: drop silently (§2.5.4.3)
        };
        let name = disc.name.clone();
        let ttl = if r.ttl_ms == 0 { 600_000 } else { r.ttl_ms };
        let expires = Some(now + Duration::from_millis(u64::from(ttl)));
        let (locs, diverted) = match &r.target {
            ResponseTarget::Locators(l) => (l.clone(), false),
            ResponseTarget::Divert(l) => (l.clone(), true),
        };
        let objective = r.objective.clone().filter(|o| o.name == name);
        let mut new = Vec::new();
        for l in locs {
            let scoped = matches!(&l, Locator::Ipv6 { addr, .. } if is_link_local(addr));
            let loc = AsaLocator {
                locator: l,
                ifindex: if scoped { learnt_on } else { 0 },
                expires,
                diverted,
                objective: objective.clone(),
            };
            self.disc_cache.insert(&name, loc.clone(), learnt_on);
            new.push(loc);
        }
        let Some(disc) = self.discoveries.get_mut(&key) else {
            return;
        };
        // Bounded like the cache: answers beyond it are counted, not kept
        // (anyone who saw the multicast can answer, as often as it likes).
        let cap = self.config.discovery_cache_locators;
        for l in &new {
            if disc.found.iter().any(|f| f.locator == l.locator) {
                continue;
            }
            if disc.found.len() < cap {
                disc.found.push(l.clone());
                for w in &disc.waiters {
                    if let Waiter::Api {
                        cmd, stream: true, ..
                    } = w
                    {
                        self.events.push_back(Event::Found {
                            cmd: *cmd,
                            locator: l.clone(),
                        });
                    }
                }
            } else {
                self.stats.discovery_answers_dropped += 1;
            }
        }
        // Relayed: pass the answer back at once (§2.5.4.4), as a divert to
        // the globally valid locators.
        if let Some(to) = disc.relay_to {
            let fwd: Vec<Locator> = new
                .iter()
                .map(|l| l.locator.clone())
                .filter(|l| !matches!(l, Locator::Ipv6 { addr, .. } if is_link_local(addr)))
                .collect();
            if !fwd.is_empty() {
                let d = Discovery {
                    session_id: r.session_id,
                    initiator: r.initiator,
                    objective: Objective::new(name.clone(), ObjectiveFlags::empty()),
                    extensions: Vec::new(),
                };
                self.respond(
                    now,
                    to.scope_id(),
                    to,
                    &d,
                    ttl,
                    ResponseTarget::Divert(fwd),
                    r.objective,
                );
            }
        }
        self.wake_waiters(now, key, false);
    }

    /// Hands results to waiters: all of them at the end, first-answer ones
    /// as soon as there is something.
    fn wake_waiters(&mut self, now: Instant, key: (SessionId, IpAddr), finished: bool) {
        let Some(disc) = self.discoveries.get_mut(&key) else {
            return;
        };
        if (disc.found.is_empty() && !finished) || disc.waiters.is_empty() {
            return;
        }
        let found = disc.found.clone();
        let waiters: Vec<Waiter> = if finished {
            std::mem::take(&mut disc.waiters)
        } else {
            let (now_ready, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut disc.waiters)
                .into_iter()
                .partition(|w| {
                    !matches!(
                        w,
                        Waiter::Api {
                            first_only: false,
                            ..
                        }
                    )
                });
            disc.waiters = keep;
            now_ready
        };
        for w in waiters {
            self.resolve_waiter(now, w, &found);
        }
    }

    fn resolve_waiter(&mut self, now: Instant, w: Waiter, found: &[AsaLocator]) {
        match w {
            Waiter::Api { cmd, .. } => self.reply(cmd, Ok(Reply::Locators(found.to_vec()))),
            Waiter::Synch {
                cmd,
                objective,
                deadline,
            } => match found.first() {
                Some(l) => self.synch_with(now, cmd, l.clone(), objective, deadline),
                None => self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NotFloodDisc,
                        format!(
                            "{:?} is not in the flood cache and discovery found no peer",
                            objective.name
                        ),
                    )),
                ),
            },
            Waiter::Neg {
                cmd,
                asa,
                objective,
                deadline,
                raw,
            } => match found.iter().find(|l| l.socket_addr().is_some()) {
                Some(l) => {
                    self.start_negotiation(now, cmd, asa, l.clone(), objective, deadline, raw)
                }
                None => self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NoDiscReply,
                        format!("no peer found for {:?}", objective.name),
                    )),
                ),
            },
        }
    }

    // ----- timers --------------------------------------------------------

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, timer)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Disc(sid, init) => self.finish_discovery(now, (sid, init)),
                Timer::Repeat(sid, init) => self.repeat_discovery(now, (sid, init)),
                Timer::Chan(id) => self.channel_timeout(now, id),
            }
        }
    }

    fn finish_discovery(&mut self, now: Instant, key: (SessionId, IpAddr)) {
        self.wake_waiters(now, key, true);
        if let Some(d) = self.discoveries.remove(&key) {
            // Remember it a while so late copies are not relayed again.
            let hold = (d.deadline - now).max(Duration::from_secs(10));
            self.recent.insert(key, now + hold, now);
            for sid in d.repeat.iter().flat_map(|r| &r.aliases) {
                let alias = (*sid, key.1);
                self.disc_alias.remove(&alias);
                self.recent.insert(alias, now + hold, now);
            }
        }
    }

    /// Sends our discovery `key` again under a new session id if nothing
    /// has answered yet, and plans the next repeat.
    fn repeat_discovery(&mut self, now: Instant, key: (SessionId, IpAddr)) {
        let Some(d) = self.discoveries.get(&key) else {
            return;
        };
        let Some(r) = d.repeat.as_ref() else {
            return;
        };
        if !d.found.is_empty() || r.aliases.len() >= DISCOVERY_REPEATS {
            return;
        }
        let (objective, deadline) = (r.objective.clone(), d.deadline);
        let sid = self.new_sid(now);
        let msg = Message::Discovery(Discovery {
            session_id: sid,
            initiator: key.1,
            objective,
            extensions: Vec::new(),
        })
        .encode();
        for i in &self.interfaces {
            self.transmits.push_back(Transmit::Multicast {
                ifindex: i.index,
                msg: msg.clone(),
            });
        }
        self.stats.discoveries_repeated += 1;
        self.disc_alias.insert((sid, key.1), key);
        if let Some(r) = self
            .discoveries
            .get_mut(&key)
            .and_then(|d| d.repeat.as_mut())
        {
            r.aliases.push(sid);
            r.gap *= 2;
            let next = now + r.gap;
            if next < deadline && r.aliases.len() < DISCOVERY_REPEATS {
                self.timers.insert((next, Timer::Repeat(key.0, key.1)));
            }
        }
    }

    fn channel_timeout(&mut self, now: Instant, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        ch.deadline = None;
        let peer = ch.peer;
        match &ch.state {
            ChanState::Fresh => {
                self.stats.idle_channels_closed += 1;
                self.close(id, false);
            }
            ChanState::Synch { cmd, .. } => {
                let cmd = *cmd;
                self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NoSynchReply,
                        format!("{peer} did not answer in time"),
                    )),
                );
                self.close(id, false);
            }
            ChanState::Neg(n) => {
                if let Some(cmd) = n.raw.as_ref().and_then(|r| r.opening) {
                    // Our raw request has had the connection to itself.
                    let session = SessionHandle {
                        channel: id,
                        session_id: n.sid,
                    };
                    if let Some(r) = self.neg_mut(id).and_then(|n| n.raw.as_mut()) {
                        r.opening = None;
                    }
                    self.reply(cmd, Ok(Reply::Session(session)));
                    let idle = now + self.config.session_idle_timeout;
                    self.set_deadline(id, Some(idle));
                    return;
                }
                if let Some(cmd) = n.raw.as_ref().and_then(|r| r.waiting) {
                    // A grecv timed out (graspy's noReply); the session
                    // stays for the next one.
                    if let Some(r) = self.neg_mut(id).and_then(|n| n.raw.as_mut()) {
                        r.waiting = None;
                    }
                    self.reply(
                        cmd,
                        Err(err(
                            ErrorCode::NoReply,
                            format!("{peer} sent nothing in time"),
                        )),
                    );
                    let idle = now + self.config.session_idle_timeout;
                    self.set_deadline(id, Some(idle));
                    return;
                }
                if let Some((cmd, _)) = n.pending {
                    self.reply(
                        cmd,
                        Err(err(
                            ErrorCode::NoNegReply,
                            format!("{peer} did not answer in time"),
                        )),
                    );
                }
                self.close(id, false);
            }
        }
    }

    // ----- synchronization ----------------------------------------------

    /// Starts a unicast session of ours to `loc`: a new channel and session
    /// id, and the connect. On failure replies to `cmd` (with `code` when the
    /// locator cannot be connected to) and returns `None`.
    fn open_session(
        &mut self,
        now: Instant,
        cmd: CommandId,
        loc: &AsaLocator,
        code: ErrorCode,
    ) -> Option<(ChannelId, SessionId, SocketAddr)> {
        let Some(peer) = loc.socket_addr() else {
            let detail = format!("cannot connect to locator {}", loc.locator);
            self.reply(cmd, Err(err(code, detail)));
            return None;
        };
        if self.channels.len() >= self.config.max_channels {
            self.stats.bounded_refusals += 1;
            self.reply(cmd, Err(err(ErrorCode::NoSocket, "too many sessions open")));
            return None;
        }
        let channel = self.new_channel();
        let sid = self.new_sid(now);
        self.own_sids.insert(sid);
        self.transmits
            .push_back(Transmit::Connect { channel, peer });
        Some((channel, sid, peer))
    }

    fn synch_with(
        &mut self,
        now: Instant,
        cmd: CommandId,
        loc: AsaLocator,
        objective: Objective,
        deadline: Instant,
    ) {
        // graspy's rapid mode: the value came with the discovery response.
        if let Some(o) = loc.objective.as_ref().filter(|o| o.name == objective.name) {
            if o.value.is_some() {
                let o = o.clone();
                return self.reply(cmd, Ok(Reply::Synch(o)));
            }
        }
        let Some((channel, sid, peer)) = self.open_session(now, cmd, &loc, ErrorCode::SockErrSynRq)
        else {
            return;
        };
        let name = objective.name.clone();
        self.send(
            channel,
            &Message::ReqSyn(SessionObjective::new(sid, with_value_slot(objective))),
        );
        self.channels.insert(
            channel,
            Chan {
                peer,
                identity: None,
                deadline: None,
                state: ChanState::Synch { cmd, sid, name },
            },
        );
        self.set_deadline(channel, Some(deadline.max(now)));
    }

    fn on_synch_reply(
        &mut self,
        channel: ChannelId,
        peer: SocketAddr,
        decoded: Result<Message, crate::wire::DecodeError>,
    ) {
        let Some(Chan {
            state: ChanState::Synch { cmd, sid, name },
            ..
        }) = self.channels.get(&channel)
        else {
            return;
        };
        let (cmd, sid, name) = (*cmd, *sid, name.clone());
        let result = match decoded {
            Ok(Message::Synch(s)) if s.session_id == sid && s.objective.name == name => {
                Ok(Reply::Synch(s.objective))
            }
            Ok(Message::Invalid(i)) => Err(err(
                ErrorCode::NoValidSynch,
                format!(
                    "{peer} answered M_INVALID {}",
                    i.content.map(|c| c.to_string()).unwrap_or_default()
                ),
            )),
            Ok(other) => Err(err(
                ErrorCode::NoValidSynch,
                format!(
                    "{peer} answered {} instead of M_SYNCH for this session",
                    other.msg_type()
                ),
            )),
            Err(e) => {
                self.stats.malformed += 1;
                Err(err(ErrorCode::CborFail, format!("{peer}: {e}")))
            }
        };
        self.reply(cmd, result);
        // Let the responder close first (TIME_WAIT on its side).
        self.close(channel, true);
    }

    // ----- negotiation ---------------------------------------------------

    fn on_neg_request(
        &mut self,
        now: Instant,
        channel: ChannelId,
        peer: SocketAddr,
        req: SessionObjective,
    ) {
        let listener = self
            .objectives
            .get(&req.objective.name)
            .filter(|r| r.listen_neg)
            .map(|r| r.owners[0]);
        let Some(asa) = listener else {
            // Nobody listening: close at once (§2.8.6 rule 5).
            return self.close(channel, false);
        };
        if !req.objective.flags.contains(ObjectiveFlags::NEG) {
            let m = Message::Invalid(Invalid {
                session_id: req.session_id,
                content: Some(Value::from("M_REQ_NEG objective lacks F_NEG")),
                extensions: Vec::new(),
            });
            self.send(channel, &m);
            return self.close(channel, false);
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.6
        //# if the received session ID is already locally active, the request
        //# MUST be discarded
        let clash = (req.session_id, peer.ip());
        if !self.neg_clash.insert(clash) {
            self.stats.id_clashes += 1;
            return self.close(channel, false);
        }
        let session = SessionHandle {
            channel,
            session_id: req.session_id,
        };
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.state = ChanState::Neg(Neg {
                sid: req.session_id,
                asa,
                name: req.objective.name.clone(),
                requester: false,
                pending: None,
                early: VecDeque::new(),
                raw: None,
                peer_closed: false,
                clash_key: Some(clash),
            });
        }
        self.set_deadline(channel, Some(now + self.config.session_idle_timeout));
        let identity = self.channels.get(&channel).and_then(|c| c.identity.clone());
        self.events.push_back(Event::NegotiationRequest {
            asa,
            session,
            objective: req.objective,
            peer,
            identity,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_negotiation(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        loc: AsaLocator,
        objective: Objective,
        deadline: Instant,
        raw: bool,
    ) {
        let Some((channel, sid, peer)) = self.open_session(now, cmd, &loc, ErrorCode::SockErrNegRq)
        else {
            return;
        };
        let name = objective.name.clone();
        self.send(
            channel,
            &Message::ReqNeg(SessionObjective::new(sid, with_value_slot(objective))),
        );
        self.channels.insert(
            channel,
            Chan {
                peer,
                identity: None,
                deadline: None,
                state: ChanState::Neg(Neg {
                    sid,
                    asa,
                    name,
                    requester: true,
                    pending: (!raw).then_some((cmd, NegWait::First)),
                    early: VecDeque::new(),
                    raw: raw.then(|| Raw {
                        opening: Some(cmd),
                        ..Raw::default()
                    }),
                    peer_closed: false,
                    clash_key: None,
                }),
            },
        );
        // A raw session is the ASA's after RAW_GAP (graspy expects no
        // answer to this M_REQ_NEG); a negotiation waits for the peer.
        let wait = if raw {
            now + RAW_GAP
        } else {
            deadline.max(now)
        };
        self.set_deadline(channel, Some(wait));
    }

    fn on_neg_message(
        &mut self,
        now: Instant,
        channel: ChannelId,
        raw: Bytes,
        decoded: Result<Message, crate::wire::DecodeError>,
    ) {
        let Some(n) = self.neg_mut(channel) else {
            return;
        };
        if let Some(r) = &mut n.raw {
            // graspy's raw channel: whatever comes is the ASA's, as it is.
            match r.waiting.take() {
                Some(cmd) => {
                    let idle = now + self.config.session_idle_timeout;
                    self.reply_raw(cmd, raw);
                    self.set_deadline(channel, Some(idle));
                }
                None if r.inbox.len() < RAW_INBOX => r.inbox.push_back(raw),
                None => {
                    self.stats.bounded_refusals += 1;
                    self.close(channel, false);
                }
            }
            return;
        }
        if n.pending.is_none() && !matches!(decoded, Ok(Message::Noop)) {
            // Our turn, but the peer spoke: keep it for the next call (a
            // step reads it as a message, a raw receive as bytes).
            if n.early.len() >= 4 {
                return self.close(channel, false);
            }
            n.early.push_back(Early {
                raw,
                msg: decoded.ok(),
            });
            return;
        }
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                let pending = self.neg_mut(channel).and_then(|n| n.pending.take());
                if let Some((cmd, _)) = pending {
                    self.reply(cmd, Err(err(ErrorCode::CborFail, e.to_string())));
                }
                return self.close(channel, false);
            }
        };
        if matches!(msg, Message::Noop) {
            return;
        }
        let Some(n) = self.neg_mut(channel) else {
            return;
        };
        if msg.session_id() != Some(n.sid) {
            // Another session's message on this channel: reply M_INVALID.
            let sid = msg.session_id().unwrap_or(SessionId(0));
            if !matches!(msg, Message::Invalid(_)) {
                let m = Message::Invalid(Invalid {
                    session_id: sid,
                    content: Some(Value::from("unknown session on this connection")),
                    extensions: Vec::new(),
                });
                self.send(channel, &m);
            }
            return;
        }
        if let Some((cmd, wait)) = n.pending.take() {
            self.neg_reply(now, channel, cmd, wait, msg);
        }
    }

    /// `request_negotiate`, or with `raw` graspy's raw channel: to `peer`,
    /// or to the first peer discovery finds.
    #[allow(clippy::too_many_arguments)]
    fn request_negotiate(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
        raw: bool,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        if !self.secure_ok() {
            return Err(err(
                ErrorCode::NoSecurity,
                "negotiation needs a secured transport",
            ));
        }
        if !objective.flags.contains(ObjectiveFlags::NEG) {
            return Err(ErrorCode::NotNeg.into());
        }
        let deadline = self.asa_deadline(now, timeout);
        match peer {
            Some(p) => self.start_negotiation(now, cmd, asa, p, objective, deadline, raw),
            None => {
                self.discover_peer(now, cmd, objective, timeout, |cmd, objective| Waiter::Neg {
                    cmd,
                    asa,
                    objective,
                    deadline,
                    raw,
                })?
            }
        }
        Ok(())
    }

    /// Finds the peer for a call that named none: a first-answer discovery
    /// within `timeout` (at most 100 ms × the loop count), then `waiter`.
    fn discover_peer(
        &mut self,
        now: Instant,
        cmd: CommandId,
        objective: Objective,
        timeout: Duration,
        waiter: impl FnOnce(CommandId, Objective) -> Waiter,
    ) -> Result<(), ApiError> {
        let opts = DiscoverOptions {
            first_only: true,
            timeout: Some(timeout.min(Duration::from_millis(
                100 * u64::from(objective.loop_count.max(1)),
            ))),
            ..DiscoverOptions::default()
        };
        self.discover(now, cmd, objective, opts, |cmd, _, objective, _| {
            waiter(cmd, objective)
        })
    }

    /// A raw session ends by closing its connection, as graspy's do (it
    /// has no M_END): true when `channel` was one, now closed.
    fn ends_raw(&mut self, channel: ChannelId) -> bool {
        if self.neg_mut(channel).is_some_and(|n| n.raw.is_some()) {
            self.close(channel, false);
            return true;
        }
        false
    }

    /// Answers a raw receive with `item`, or CBORfail when it is not one
    /// well-formed CBOR item.
    fn reply_raw(&mut self, cmd: CommandId, item: Bytes) {
        let r = Value::from_cbor(item)
            .map(Reply::Raw)
            .map_err(|e| err(ErrorCode::CborFail, format!("the peer sent {e}")));
        self.reply(cmd, r);
    }

    /// Makes session `s` of `asa` raw (graspy's gsend/grecv) if it is not
    /// yet: what the peer said during our turn becomes its first items.
    fn raw_session(&mut self, asa: AsaHandle, s: SessionHandle) -> Result<&mut Raw, ApiError> {
        self.our_turn(asa, s)?;
        let n = self
            .neg_mut(s.channel)
            .ok_or_else(|| err(ErrorCode::NoSession, "no such session"))?;
        if n.raw.is_none() {
            let inbox = n.early.drain(..).map(|e| e.raw).collect();
            n.raw = Some(Raw {
                inbox,
                ..Raw::default()
            });
        }
        n.raw
            .as_mut()
            .ok_or_else(|| err(ErrorCode::NoSession, "no such session"))
    }

    fn neg_mut(&mut self, channel: ChannelId) -> Option<&mut Neg> {
        match self.channels.get_mut(&channel) {
            Some(Chan {
                state: ChanState::Neg(n),
                ..
            }) => Some(n),
            _ => None,
        }
    }

    /// The peer's answer to our request or step.
    fn neg_reply(
        &mut self,
        now: Instant,
        channel: ChannelId,
        cmd: CommandId,
        wait: NegWait,
        msg: Message,
    ) {
        let (sid, name) = match self.neg_mut(channel) {
            Some(n) => (n.sid, n.name.clone()),
            None => return,
        };
        match msg {
            Message::Negotiate(mut m) => {
                if m.objective.name != name || !m.objective.flags.contains(ObjectiveFlags::NEG) {
                    self.reply(
                        cmd,
                        Err(err(
                            ErrorCode::InvalidNeg,
                            format!("M_NEGOTIATE for {:?}", m.objective.name),
                        )),
                    );
                    return self.close(channel, false);
                }
                // graspy decrements on receipt (spec digest §9.3).
                m.objective.loop_count = m.objective.loop_count.saturating_sub(1);
                let session = SessionHandle {
                    channel,
                    session_id: sid,
                };
                let peer = self.channels.get(&channel).map(|c| c.peer);
                let identity = self.channels.get(&channel).and_then(|c| c.identity.clone());
                self.reply(
                    cmd,
                    Ok(Reply::Negotiation(NegotiationOutcome::Step {
                        session,
                        objective: m.objective,
                        peer,
                        identity,
                    })),
                );
                self.set_deadline(channel, Some(now + self.config.session_idle_timeout));
            }
            Message::Wait(w) => {
                //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.9
                //# the recipient ... replaces its timeout with the waiting time
                if let Some(n) = self.neg_mut(channel) {
                    n.pending = Some((cmd, wait));
                }
                // Bounded: a peer's M_WAIT of 49 days would hold the
                // channel, its connection slot and the ASA's call that long.
                let asked = Duration::from_millis(u64::from(w.waiting_time_ms));
                if asked > self.config.max_wait {
                    self.stats.waits_capped += 1;
                }
                self.set_deadline(channel, Some(now + asked.min(self.config.max_wait)));
            }
            Message::End(e) => {
                let out = match e.option {
                    EndOption::Accept => Ok(Reply::Negotiation(NegotiationOutcome::Accepted)),
                    EndOption::Decline { reason } => {
                        Ok(Reply::Negotiation(NegotiationOutcome::Declined { reason }))
                    }
                    EndOption::Unknown(v) => {
                        Err(err(ErrorCode::InvalidEnd, format!("M_END with option {v}")))
                    }
                };
                self.reply(cmd, out);
                self.close(channel, true);
            }
            Message::Invalid(i) => {
                let _ = wait;
                self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NoValidStep,
                        format!(
                            "peer sent M_INVALID {}",
                            i.content.map(|c| c.to_string()).unwrap_or_default()
                        ),
                    )),
                );
                self.close(channel, false);
            }
            other => {
                self.reply(
                    cmd,
                    Err(err(
                        ErrorCode::NoValidStep,
                        format!("unexpected {}", other.msg_type()),
                    )),
                );
                let m = Message::Invalid(Invalid {
                    session_id: sid,
                    content: Some(Value::from(
                        format!("unexpected {}", other.msg_type()).as_str(),
                    )),
                    extensions: Vec::new(),
                });
                self.send(channel, &m);
                self.close(channel, false);
            }
        }
    }

    /// Checks that `session` is a live negotiation of `asa` whose turn it is.
    fn our_turn(&mut self, asa: AsaHandle, session: SessionHandle) -> Result<(), ApiError> {
        match self.neg_mut(session.channel) {
            Some(n) if n.sid == session.session_id && n.asa == asa => {
                if n.pending.is_some() {
                    Err(err(
                        ErrorCode::NoSession,
                        "a step is already waiting for the peer",
                    ))
                } else {
                    Ok(())
                }
            }
            Some(n) if n.sid == session.session_id => Err(err(
                ErrorCode::NoSession,
                "the session belongs to another ASA",
            )),
            _ => Err(err(
                ErrorCode::NoSession,
                "no such negotiation session (ended or timed out)",
            )),
        }
    }

    // ----- commands ------------------------------------------------------

    /// An ASA's call. The reply comes as [`Event::Reply`] with `cmd`.
    pub fn handle_command(&mut self, now: Instant, cmd: CommandId, command: Command) {
        if let Err(e) = self.dispatch(now, cmd, command) {
            self.reply(cmd, Err(e));
        }
    }

    fn dispatch(&mut self, now: Instant, cmd: CommandId, command: Command) -> Result<(), ApiError> {
        self.objectives_fit(&command)?;
        match command {
            Command::Stats => {
                let reply = Reply::Stats {
                    stats: Box::new(self.stats),
                    open_channels: self.open_channels(),
                };
                self.reply(cmd, Ok(reply));
            }
            Command::Dump { asa } => {
                self.check_asa(asa)?;
                let mut d = Dump {
                    asas: self.asas.iter().map(|(h, n)| (*h, n.clone())).collect(),
                    objectives: self
                        .objectives
                        .values()
                        .map(|r| DumpedObjective {
                            objective: r.objective.clone(),
                            owners: r.owners.clone(),
                            options: r.options.clone(),
                            listen_negotiate: r.listen_neg,
                            listen_synchronize: r.listen_synch,
                        })
                        .collect(),
                    discovery_cache: Vec::new(),
                    flood_cache: Vec::new(),
                };
                for name in self.disc_cache.names() {
                    let l = self.disc_cache.get(&name, now);
                    if !l.is_empty() {
                        d.discovery_cache.push((name, l));
                    }
                }
                for name in self.flood_cache.names() {
                    d.flood_cache.extend(self.flood_cache.get(&name, now));
                }
                d.asas.sort_by_key(|(h, _)| h.0);
                d.objectives
                    .sort_by(|a, b| a.objective.name.cmp(&b.objective.name));
                d.discovery_cache.sort_by(|a, b| a.0.cmp(&b.0));
                self.reply(cmd, Ok(Reply::Dump(Box::new(d))));
            }
            Command::RegisterAsa { name } => {
                if name.len() > MAX_ASA_NAME {
                    return Err(err(
                        ErrorCode::Unspec,
                        format!("an ASA name is at most {MAX_ASA_NAME} bytes"),
                    ));
                }
                if self.asas.values().any(|n| *n == name) {
                    return Err(err(
                        ErrorCode::DupAsa,
                        format!("an ASA named {name:?} exists"),
                    ));
                }
                if self.asas.len() >= self.config.max_asas {
                    return Err(ErrorCode::AsaFull.into());
                }
                let handle = loop {
                    let h = AsaHandle(self.rng.random::<u32>().max(1));
                    if !self.asas.contains_key(&h) {
                        break h;
                    }
                };
                self.asas.insert(handle, name);
                self.reply(cmd, Ok(Reply::Asa(handle)));
            }
            Command::DeregisterAsa { asa } => {
                self.check_asa(asa)?;
                self.asas.remove(&asa);
                self.flood_watch.retain(|_, w| {
                    w.retain(|a| *a != asa);
                    !w.is_empty()
                });
                self.objectives.retain(|_, r| {
                    r.owners.retain(|o| *o != asa);
                    !r.owners.is_empty()
                });
                let sessions: Vec<ChannelId> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| matches!(&c.state, ChanState::Neg(n) if n.asa == asa))
                    .map(|(id, _)| *id)
                    .collect();
                for id in sessions {
                    self.close(id, false);
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::RegisterObjective {
                asa,
                objective,
                options,
            } => {
                self.check_asa(asa)?;
                if options.locators.len() > self.config.discovery_cache_locators {
                    return Err(err(
                        ErrorCode::Unspec,
                        format!(
                            "{} locators given; at most {} are announced",
                            options.locators.len(),
                            self.config.discovery_cache_locators
                        ),
                    ));
                }
                let f = objective.flags;
                if f.contains(ObjectiveFlags::NEG) && f.contains(ObjectiveFlags::SYNCH) {
                    return Err(ErrorCode::NotBoth.into());
                }
                if f.contains(ObjectiveFlags::NEG_DRY) && !f.contains(ObjectiveFlags::NEG) {
                    return Err(ErrorCode::NotDry.into());
                }
                if objective.name.is_empty() {
                    return Err(err(ErrorCode::Unspec, "objective name is empty"));
                }
                if self.config.dull && !self.dull_allows(&objective.name) {
                    return Err(err(
                        ErrorCode::NoSecurity,
                        "not an objective this DULL instance allows",
                    ));
                }
                if let Some(r) = self.objectives.get_mut(&objective.name) {
                    if r.options.overlap && options.overlap && !r.owners.contains(&asa) {
                        r.owners.push(asa);
                        self.reply(cmd, Ok(Reply::Done));
                        return Ok(());
                    }
                    return Err(err(
                        ErrorCode::ObjReg,
                        format!("{:?} is registered", objective.name),
                    ));
                }
                if self.objectives.len() >= self.config.max_objectives {
                    return Err(ErrorCode::ObjFull.into());
                }
                self.objectives.insert(
                    objective.name.clone(),
                    Registered {
                        owners: vec![asa],
                        objective,
                        options,
                        listen_neg: false,
                        listen_synch: false,
                    },
                );
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::DeregisterObjective { asa, name } => {
                self.check_asa(asa)?;
                match self.objectives.get_mut(&name) {
                    None => return Err(err(ErrorCode::NotObj, format!("{name:?}"))),
                    Some(r) if !r.owners.contains(&asa) => return Err(ErrorCode::NotYourObj.into()),
                    Some(r) => {
                        r.owners.retain(|o| *o != asa);
                        if r.owners.is_empty() {
                            self.objectives.remove(&name);
                        }
                    }
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::Discover {
                asa,
                objective,
                options,
                stream,
            } => {
                self.check_asa(asa)?;
                self.discover(now, cmd, objective, options, |cmd, first_only, _, _| {
                    Waiter::Api {
                        cmd,
                        first_only,
                        stream,
                    }
                })?;
            }
            Command::Synchronize {
                asa,
                objective,
                peer,
                timeout,
            } => {
                self.check_asa(asa)?;
                if !objective.flags.contains(ObjectiveFlags::SYNCH) {
                    return Err(ErrorCode::NotSynch.into());
                }
                if peer.is_none() {
                    if let Some(e) = self
                        .flood_cache
                        .get(&objective.name, now)
                        .into_iter()
                        .next()
                    {
                        self.reply(cmd, Ok(Reply::Synch(e.objective)));
                        return Ok(());
                    }
                }
                if !self.secure_ok() {
                    return Err(err(
                        ErrorCode::NoSecurity,
                        "synchronization needs a secured transport",
                    ));
                }
                let deadline = self.asa_deadline(now, timeout);
                match peer {
                    Some(p) => self.synch_with(now, cmd, p, objective, deadline),
                    None => {
                        self.discover_peer(now, cmd, objective, timeout, |cmd, objective| {
                            Waiter::Synch {
                                cmd,
                                objective,
                                deadline,
                            }
                        })?
                    }
                }
            }
            Command::ListenSynchronize { asa, objective } => {
                self.check_asa(asa)?;
                if !self.secure_ok() {
                    return Err(err(
                        ErrorCode::NoSecurity,
                        "synchronization needs a secured transport",
                    ));
                }
                self.own_objective(asa, &objective.name)?;
                if !objective.flags.contains(ObjectiveFlags::SYNCH) {
                    return Err(ErrorCode::NotSynch.into());
                }
                if let Some(r) = self.objectives.get_mut(&objective.name) {
                    if !r.objective.flags.contains(ObjectiveFlags::SYNCH) {
                        return Err(ErrorCode::NotSynch.into());
                    }
                    r.objective.value = objective.value;
                    r.objective.loop_count = objective.loop_count;
                    r.listen_synch = true;
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::StopSynchronize { asa, name } => {
                self.check_asa(asa)?;
                self.own_objective(asa, &name)?;
                if let Some(r) = self.objectives.get_mut(&name) {
                    r.listen_synch = false;
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::Flood {
                asa,
                ttl_ms,
                tagged,
            } => {
                self.check_asa(asa)?;
                self.flood(now, cmd, asa, ttl_ms, tagged)?;
            }
            Command::GetFlood { asa, name } => {
                self.check_asa(asa)?;
                let v = self.flood_cache.get(&name, now);
                self.reply(cmd, Ok(Reply::Floods(v)));
            }
            Command::ExpireFlood { asa, entry } => {
                self.check_asa(asa)?;
                if !self.flood_cache.remove(&entry) {
                    return Err(err(ErrorCode::NotObj, "no such flood cache entry"));
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::RequestNegotiate {
                asa,
                objective,
                peer,
                timeout,
            } => self.request_negotiate(now, cmd, asa, objective, peer, timeout, false)?,
            Command::RequestRaw {
                asa,
                objective,
                peer,
                timeout,
            } => self.request_negotiate(now, cmd, asa, objective, peer, timeout, true)?,
            Command::RawSend { asa, session, data } => {
                self.check_asa(asa)?;
                let max = self.config.limits.max_message_size;
                if data.as_cbor().len() > max {
                    return Err(err(
                        ErrorCode::TooLarge,
                        format!(
                            "a {}-byte item; the transport carries {max} at most",
                            data.as_cbor().len()
                        ),
                    ));
                }
                self.raw_session(asa, session)?;
                let idle = now + self.config.session_idle_timeout;
                self.transmits.push_back(Transmit::Send {
                    channel: session.channel,
                    msg: Bytes::copy_from_slice(data.as_cbor()),
                });
                if self.neg_mut(session.channel).is_some_and(|n| n.peer_closed) {
                    self.close(session.channel, false);
                    return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
                }
                self.set_deadline(session.channel, Some(idle));
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::RawRecv {
                asa,
                session,
                timeout,
            } => {
                self.check_asa(asa)?;
                let deadline = self.asa_deadline(now, timeout);
                let closed = self.neg_mut(session.channel).is_some_and(|n| n.peer_closed);
                let r = self.raw_session(asa, session)?;
                if r.waiting.is_some() {
                    return Err(err(ErrorCode::NoSession, "a grecv is already waiting"));
                }
                if let Some(item) = r.inbox.pop_front() {
                    self.reply_raw(cmd, item);
                } else if closed {
                    self.close(session.channel, false);
                    return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
                } else {
                    r.waiting = Some(cmd);
                    self.set_deadline(session.channel, Some(deadline));
                }
            }
            Command::ListenNegotiate { asa, name } => {
                self.check_asa(asa)?;
                if !self.secure_ok() {
                    return Err(err(
                        ErrorCode::NoSecurity,
                        "negotiation needs a secured transport",
                    ));
                }
                let reg = self.own_objective(asa, &name)?;
                if !reg.objective.flags.contains(ObjectiveFlags::NEG) {
                    return Err(ErrorCode::NotNeg.into());
                }
                if let Some(r) = self.objectives.get_mut(&name) {
                    r.listen_neg = true;
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::WatchFlood { asa, name } => {
                self.check_asa(asa)?;
                let watches: usize = self.flood_watch.values().map(Vec::len).sum();
                let w = self.flood_watch.entry(name).or_default();
                if !w.contains(&asa) {
                    if watches >= self.config.max_objectives {
                        return Err(err(ErrorCode::ObjFull, "too many flood watches"));
                    }
                    w.push(asa);
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::StopWatchFlood { asa, name } => {
                self.check_asa(asa)?;
                if let Some(w) = self.flood_watch.get_mut(&name) {
                    w.retain(|a| *a != asa);
                    if w.is_empty() {
                        self.flood_watch.remove(&name);
                    }
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::StopNegotiate { asa, name } => {
                self.check_asa(asa)?;
                self.own_objective(asa, &name)?;
                if let Some(r) = self.objectives.get_mut(&name) {
                    r.listen_neg = false;
                }
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::NegotiateStep {
                asa,
                session,
                objective,
                timeout,
            } => {
                self.check_asa(asa)?;
                self.our_turn(asa, session)?;
                let ch = session.channel;
                // Something the peer already said answers this step.
                if self.neg_mut(ch).is_some_and(|n| n.raw.is_some()) {
                    return Err(err(
                        ErrorCode::NoSession,
                        "a raw session (gsend/grecv) takes no negotiation steps",
                    ));
                }
                while let Some(early) = self.neg_mut(ch).and_then(|n| n.early.pop_front()) {
                    let Some(msg) = early.msg else {
                        self.stats.malformed += 1;
                        self.close(ch, false);
                        return Err(err(ErrorCode::CborFail, "the peer sent what is not GRASP"));
                    };
                    if msg.session_id() == Some(session.session_id) {
                        self.neg_reply(now, ch, cmd, NegWait::Step, msg);
                        return Ok(());
                    }
                    // Another session's message on this channel.
                    if !matches!(msg, Message::Invalid(_)) {
                        let m = Message::Invalid(Invalid {
                            session_id: msg.session_id().unwrap_or(SessionId(0)),
                            content: Some(Value::from("unknown session on this connection")),
                            extensions: Vec::new(),
                        });
                        self.send(ch, &m);
                    }
                }
                if self.neg_mut(ch).is_some_and(|n| n.peer_closed) {
                    self.close(ch, false);
                    return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
                }
                //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.7
                //# if it would reach zero, the message MUST NOT be sent
                if objective.loop_count < 2 {
                    self.close(ch, false);
                    return Err(ErrorCode::LoopExhausted.into());
                }
                if let Some(n) = self.neg_mut(ch) {
                    n.pending = Some((cmd, NegWait::Step));
                }
                self.send(
                    ch,
                    &Message::Negotiate(SessionObjective::new(session.session_id, objective)),
                );
                self.set_deadline(ch, Some(self.asa_deadline(now, timeout)));
            }
            Command::NegotiateWait { asa, session, wait } => {
                self.check_asa(asa)?;
                self.our_turn(asa, session)?;
                if self
                    .neg_mut(session.channel)
                    .is_some_and(|n| n.raw.is_some())
                {
                    return Err(err(
                        ErrorCode::NoSession,
                        "a raw session (gsend/grecv) takes no M_WAIT",
                    ));
                }
                let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
                self.send(
                    session.channel,
                    &Message::Wait(Wait {
                        session_id: session.session_id,
                        waiting_time_ms: ms,
                        extensions: Vec::new(),
                    }),
                );
                // We promised to answer within `wait`; give ourselves that long.
                self.set_deadline(
                    session.channel,
                    Some(self.asa_deadline(now, wait) + self.config.first_message_timeout),
                );
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::EndNegotiate {
                asa,
                session,
                accept,
                reason,
            } => {
                self.check_asa(asa)?;
                self.our_turn(asa, session)?;
                if self.ends_raw(session.channel) {
                    self.reply(cmd, Ok(Reply::Done));
                    return Ok(());
                }
                let option = if accept {
                    EndOption::Accept
                } else {
                    EndOption::Decline { reason }
                };
                self.send(
                    session.channel,
                    &Message::End(End {
                        session_id: session.session_id,
                        option,
                        extensions: Vec::new(),
                    }),
                );
                let requester = self.neg_mut(session.channel).is_some_and(|n| n.requester);
                self.close(session.channel, requester);
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::SendInvalid { asa, session, info } => {
                self.check_asa(asa)?;
                self.our_turn(asa, session)?;
                if self.ends_raw(session.channel) {
                    self.reply(cmd, Ok(Reply::Done));
                    return Ok(());
                }
                self.send(
                    session.channel,
                    &Message::Invalid(Invalid {
                        session_id: session.session_id,
                        content: info,
                        extensions: Vec::new(),
                    }),
                );
                self.close(session.channel, false);
                self.reply(cmd, Ok(Reply::Done));
            }
            Command::AbortSession { session } => {
                if let Some(n) = self.neg_mut(session.channel) {
                    if n.sid == session.session_id {
                        self.close(session.channel, false);
                    }
                }
                self.reply(cmd, Ok(Reply::Done));
            }
        }
        Ok(())
    }

    /// Refuses an objective from an ASA that could not travel in one
    /// message (its name and value alone are over the size limit): it
    /// would be kept, then fail at every send.
    fn fits(&mut self, o: &Objective) -> Result<(), ApiError> {
        // The objective's array head, flags and loop count: a few bytes.
        const OVERHEAD: usize = 16;
        let size = o.name.len() + o.value.as_ref().map_or(0, |v| v.as_cbor().len()) + OVERHEAD;
        let max = self.config.limits.max_message_size;
        if size > max {
            self.stats.asa_oversize += 1;
            return Err(err(
                ErrorCode::Unspec,
                format!(
                    "objective {:?} is about {size} bytes with its value; a message is at most {max} bytes",
                    o.name
                ),
            ));
        }
        Ok(())
    }

    /// Every objective an ASA hands the engine in `c` must fit a message.
    fn objectives_fit(&mut self, c: &Command) -> Result<(), ApiError> {
        match c {
            Command::RegisterObjective { objective, .. }
            | Command::Discover { objective, .. }
            | Command::Synchronize { objective, .. }
            | Command::ListenSynchronize { objective, .. }
            | Command::RequestNegotiate { objective, .. }
            | Command::RequestRaw { objective, .. }
            | Command::NegotiateStep { objective, .. } => self.fits(objective),
            Command::Flood { tagged, .. } => {
                tagged.iter().try_for_each(|t| self.fits(&t.objective))
            }
            _ => Ok(()),
        }
    }

    /// When a wait an ASA asked for ends: never later than
    /// `max_asa_timeout` from now (`Duration::MAX` must not overflow).
    fn asa_deadline(&self, now: Instant, t: Duration) -> Instant {
        now + t.min(self.config.max_asa_timeout)
    }

    /// Common discovery path for `discover`, `synchronize` and
    /// `request_negotiate`: local registrations and the cache first, then the
    /// network. `waiter` builds what to do with the results.
    fn discover(
        &mut self,
        now: Instant,
        cmd: CommandId,
        mut objective: Objective,
        opts: DiscoverOptions,
        waiter: impl FnOnce(CommandId, bool, Objective, ()) -> Waiter,
    ) -> Result<(), ApiError> {
        let name = objective.name.clone();
        if opts.flush {
            self.disc_cache.flush(&name, now, None);
        } else if let Some(min) = opts.min_ttl {
            self.disc_cache.flush(&name, now, Some(min));
        }
        let mut found: Vec<AsaLocator> = Vec::new();
        // ASAs of this node that offer it (ASAs in one process find each other).
        if let Some(reg) = self.objectives.get(&name).filter(|r| r.discoverable()) {
            let ifindex = self.interfaces.first().map_or(0, |i| i.index);
            for l in self.locators_for(reg, ifindex) {
                let mut al = AsaLocator::new(l);
                al.ifindex = ifindex;
                if reg.options.rapid && reg.listen_synch {
                    al.objective = Some(reg.objective.clone());
                }
                found.push(al);
            }
        }
        if !opts.flush {
            for l in self.disc_cache.get(&name, now) {
                if !found.iter().any(|f| f.locator == l.locator) {
                    found.push(l);
                }
            }
        }
        let timeout = opts
            .timeout
            .unwrap_or(Duration::from_millis(
                100 * u64::from(objective.loop_count.max(1)),
            ))
            .min(self.config.max_asa_timeout);
        let w = waiter(cmd, opts.first_only, objective.clone(), ());
        if !found.is_empty() || timeout.is_zero() {
            self.resolve_waiter(now, w, &found);
            return Ok(());
        }
        if self.discoveries.len() >= self.config.max_discoveries {
            self.stats.bounded_refusals += 1;
            return Err(err(ErrorCode::Unspec, "too many discoveries in progress"));
        }
        if self.config.dull {
            objective.loop_count = 1;
        }
        let sid = self.new_sid(now);
        let key = (sid, self.node_addr);
        // The value a synchronization or negotiation will carry is for the
        // peer alone: a multicast is read by every node on the link (and
        // relayed further), so the discovery carries null, as graspy's does.
        objective.value = Some(Value::null());
        let msg = Message::Discovery(Discovery {
            session_id: sid,
            initiator: self.node_addr,
            objective: objective.clone(),
            extensions: Vec::new(),
        })
        .encode();
        if msg.len() > MAX_MULTICAST_PAYLOAD.min(self.config.limits.max_message_size) {
            return Err(err(
                ErrorCode::Unspec,
                "the discovery message would exceed 1232 bytes",
            ));
        }
        for i in &self.interfaces {
            self.transmits.push_back(Transmit::Multicast {
                ifindex: i.index,
                msg: msg.clone(),
            });
        }
        let deadline = now + timeout;
        self.discoveries.insert(
            key,
            Disc {
                name,
                deadline,
                waiters: vec![w],
                found: Vec::new(),
                relay_to: None,
                repeat: Some(Repeat {
                    objective,
                    gap: timeout / 4,
                    aliases: Vec::new(),
                }),
            },
        );
        self.timers.insert((deadline, Timer::Disc(key.0, key.1)));
        self.timers
            .insert((now + timeout / 4, Timer::Repeat(key.0, key.1)));
        Ok(())
    }

    fn flood(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        ttl_ms: u32,
        tagged: Vec<TaggedObjective>,
    ) -> Result<(), ApiError> {
        if !(self.secure_ok() || self.config.dull) {
            return Err(err(
                ErrorCode::NoSecurity,
                "flooding needs a secured transport",
            ));
        }
        if tagged.is_empty() {
            return Err(err(ErrorCode::Unspec, "nothing to flood"));
        }
        for t in &tagged {
            self.own_objective(asa, &t.objective.name)?;
            if !t.objective.flags.contains(ObjectiveFlags::SYNCH) {
                return Err(err(ErrorCode::NotSynch, format!("{:?}", t.objective.name)));
            }
            if let Some(Locator::Ipv6 { port: 0, .. }) = &t.locator {
                return Err(ErrorCode::InvalidLoc.into());
            }
        }
        let sid = self.new_sid(now);
        let interfaces = self.interfaces.clone();
        let expires = (ttl_ms != 0).then(|| now + Duration::from_millis(u64::from(ttl_ms)));
        let here = |t: &TaggedObjective| matches!(&t.locator, Some(Locator::Ipv6 { addr, .. }) if addr.is_unspecified());
        // Our own floods go in our cache too, for our own ASAs; a `::` one
        // as each link has it.
        let mut cached: Vec<FloodEntry> = Vec::new();
        for iface in &interfaces {
            let tagged_here: Vec<TaggedObjective> = tagged
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.objective = with_value_slot(t.objective);
                    if let Some(Locator::Ipv6 { addr, .. }) = &mut t.locator {
                        //= https://www.rfc-editor.org/rfc/rfc8991#section-2.3.6.3
                        //# `::` means this link's link-local address, loop count 1
                        if addr.is_unspecified() {
                            *addr = iface.link_local;
                            t.objective.loop_count = 1;
                        }
                    }
                    if self.config.dull {
                        t.objective.loop_count = 1;
                    }
                    t
                })
                .collect();
            let sent_here: Vec<TaggedObjective> = tagged
                .iter()
                .zip(&tagged_here)
                .filter(|(t, _)| here(t))
                .map(|(_, sent)| sent.clone())
                .collect();
            let msg = Message::Flood(Flood {
                session_id: sid,
                initiator: self.node_addr,
                ttl_ms,
                tagged: tagged_here,
                extensions: Vec::new(),
            })
            .encode();
            if msg.len() > MAX_MULTICAST_PAYLOAD.min(self.config.limits.max_message_size) {
                return Err(err(ErrorCode::Unspec, "the flood would exceed 1232 bytes"));
            }
            self.transmits.push_back(Transmit::Multicast {
                ifindex: iface.index,
                msg,
            });
            cached.extend(sent_here.into_iter().map(|sent| FloodEntry {
                objective: sent.objective,
                locator: sent.locator,
                initiator: self.node_addr,
                expires,
                ifindex: iface.index,
            }));
        }
        for t in tagged {
            if !here(&t) || interfaces.is_empty() {
                cached.push(FloodEntry {
                    objective: t.objective,
                    locator: t.locator,
                    initiator: self.node_addr,
                    expires,
                    ifindex: 0,
                });
            }
        }
        for e in cached {
            self.cache_flood(e);
        }
        self.recent
            .insert((sid, self.node_addr), now + self.config.flood_memory, now);
        self.reply(cmd, Ok(Reply::Done));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
