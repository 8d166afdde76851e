//! The deterministic protocol core: no sockets, no tokio, no clock of its
//! own, no global randomness.
//!
//! The driver feeds it what happened (`handle_*`, each with the current
//! time) and the ASAs' calls (one method per RFC 8991 call), then drains
//! what to do (`poll_transmit`), what to tell ASAs (`poll_event`) and when
//! to call back (`poll_timeout`). Randomness (session
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
mod calls;
mod channels;
mod discoveries;
mod discovery;
mod flood;
mod input;
mod negotiation;
mod raw;
mod registrations;
mod registry;
mod session;
mod synch;
mod tables;
pub mod types;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ApiError, ErrorCode};
use crate::transport::{Datagram, Interface, Security};
use crate::wire::{
    Discovery, Flood, Invalid, Locator, Message, Objective, ObjectiveFlags, Response,
    ResponseTarget, SessionId, SessionObjective, TaggedObjective, Value,
};
use budget::{Budgets, Rates, Refused, Source, Work};
use cache::{DiscoveryCache, FloodCache, RecentSessions};
use session::{Action, Answer, Session, Tally, RAW_GAP};
use tables::*;
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
    /// ASAs, their objectives and flood watches.
    registry: registrations::Registrations,
    disc_cache: DiscoveryCache,
    flood_cache: FloodCache,
    /// Discoveries in progress, ours and relayed, with their timers.
    discoveries: discoveries::Discoveries,
    recent: RecentSessions,
    /// Unicast channels and what they hold (deadlines, session ids).
    channels: channels::Channels,
    budgets: Budgets,
    next_subscription: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EngineStats,
    /// What a session said to do, being carried out (kept to reuse its
    /// allocation).
    session_actions: Vec<Action>,
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

/// How long a discovery with `loop_count` waits for answers: 100 ms per hop
/// (RFC 8990 §2.5.4.3 leaves it to the implementation; graspy's rule).
fn discovery_timeout(loop_count: u8) -> Duration {
    Duration::from_millis(100 * u64::from(loop_count.max(1)))
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
            recent: RecentSessions::new(config.max_recent_sessions),
            config: Config { limits, ..config },
            rng,
            security: info.security,
            interfaces: info.interfaces,
            node_addr,
            node_port,
            relay,
            registry: registrations::Registrations::new(config.max_asas, config.max_objectives),
            discoveries: discoveries::Discoveries::new(config.max_discoveries),
            channels: channels::Channels::new(config.max_channels),
            budgets: Budgets::new(),
            next_subscription: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            session_actions: Vec::new(),
        }
    }

    /// Whether this instance relays between interfaces.
    pub fn is_relay(&self) -> bool {
        self.relay
    }

    /// The engine's counters, and its tables' sizes now.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            tables: TableSizes {
                asas: self.registry.asas().count(),
                objectives: self.registry.objectives().count(),
                discovery_cache: self.disc_cache.len(),
                flood_cache: self.flood_cache.len(),
                discoveries: self.discoveries.len(),
            },
            ..self.stats
        }
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
        let discovery = self.discoveries.next_deadline();
        match (discovery, self.channels.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn new_subscription(&mut self) -> SubscriptionId {
        let id = SubscriptionId(self.next_subscription);
        self.next_subscription += 1;
        id
    }

    /// A fresh session id, not in use with our address (RFC 8990 §2.7).
    fn new_sid(&mut self, now: Instant) -> SessionId {
        for _ in 0..16 {
            let sid = SessionId(self.rng.random());
            let key = (sid, self.node_addr);
            if !self.discoveries.knows(&key)
                && !self.recent.contains(&key, now)
                && !self.channels.owns_sid(&sid)
            {
                return sid;
            }
        }
        // 16 clashes in a row among 2^32 values cannot happen with a working
        // RNG and bounded tables; take the last draw anyway.
        SessionId(self.rng.random())
    }

    fn set_deadline(&mut self, id: ChannelId, at: Option<Instant>) {
        self.channels.set_deadline(id, at);
    }

    /// Stops tracking a channel (the table releases what it held) and ends
    /// a raw receive or open still waiting on it.
    fn remove_channel(&mut self, id: ChannelId) -> Option<Chan> {
        let ch = self.channels.remove(id)?;
        if let ChanState::Neg(s) = &ch.state {
            for a in s.abandoned() {
                self.act(id, s.sid, a);
            }
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

    /// Multicasts `msg` on every interface but `except` (the one a relayed
    /// message came from).
    fn multicast(&mut self, except: Option<u32>, msg: &Bytes) {
        for i in &self.interfaces {
            if Some(i.index) != except {
                self.transmits.push_back(Transmit::Multicast {
                    ifindex: i.index,
                    msg: msg.clone(),
                });
            }
        }
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

    /// Refuses `what` (a procedure, for the message) over an insecure
    /// substrate or in DULL (RFC 8990 §2.5.1).
    fn require_secure(&self, what: &str) -> Result<(), ApiError> {
        if !self.config.dull && (self.security.is_secure() || self.config.allow_insecure) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::NoSecurity,
                format!("{what} needs a secured transport"),
            ))
        }
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

    /// Starts a unicast session of ours to `loc`: a new channel and session
    /// id, the connect, and the request and channel state that `open`
    /// makes for the session id; the deadline is `until`. Fails with `code`
    /// when the locator cannot be connected to.
    fn open_session(
        &mut self,
        now: Instant,
        loc: &AsaLocator,
        code: ErrorCode,
        until: Instant,
        open: impl FnOnce(SessionId) -> (Message, ChanState),
    ) -> Result<ChannelId, ApiError> {
        let Some(peer) = loc.socket_addr() else {
            let detail = format!("cannot connect to locator {}", loc.locator);
            return Err(err(code, detail));
        };
        let sid = self.new_sid(now);
        let (request, state) = open(sid);
        let chan = Chan {
            peer,
            identity: None,
            deadline: None,
            state,
        };
        let Ok(channel) = self.channels.open(chan, until.max(now)) else {
            self.stats.bounded_refusals += 1;
            return Err(err(ErrorCode::NoSocket, "too many sessions open"));
        };
        self.transmits
            .push_back(Transmit::Connect { channel, peer });
        self.send(channel, &request);
        Ok(channel)
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
}

impl Config {
    /// When a wait an ASA asked for ends: never later than
    /// `max_asa_timeout` from now (`Duration::MAX` must not overflow).
    pub(super) fn asa_deadline(&self, now: Instant, t: Duration) -> Instant {
        now + t.min(self.max_asa_timeout)
    }
}

#[cfg(test)]
mod tests;
