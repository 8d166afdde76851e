//! Inputs and outputs of the sans-IO engine.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::ApiError;
use crate::wire::{Limits, Locator, MessageType, Objective, SessionId, Value};

/// An ASA's handle (RFC 8991 `asa_handle`): opaque, unpredictable, local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsaHandle(pub u32);

/// A map keyed by ids the engine hands out itself (channels, calls,
/// subscriptions, ASAs), never by anything a peer or an ASA chooses: such
/// keys cannot be picked to collide, so foldhash's speed is safe here.
/// Maps keyed by what arrives from outside (session ids, addresses,
/// objective names) keep std's SipHash.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The engine's name for one unicast channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

/// The caller's name for one waiting call, repeated in the event that ends
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// The engine's name for a listen or a watch, in each event it delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// A negotiation session (RFC 8991 `session_handle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle {
    /// The channel carrying the session.
    pub channel: ChannelId,
    /// Its GRASP session id.
    pub session_id: SessionId,
}

/// A locator as the API hands it to ASAs (RFC 8991 `ASA_locator`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsaLocator {
    /// Address (or name), protocol and port.
    pub locator: Locator,
    /// Interface it was learnt on (the scope of a link-local address); 0 if
    /// not known or not needed.
    pub ifindex: u32,
    /// Expiry in the engine's clock, if any.
    pub expires: Option<Instant>,
    /// Learnt through an O_DIVERT.
    pub diverted: bool,
    /// The objective the responder sent with its answer (graspy's rapid
    /// synchronization puts the value there).
    pub objective: Option<Objective>,
}

impl AsaLocator {
    /// A locator with nothing else known.
    pub fn new(locator: Locator) -> Self {
        AsaLocator {
            locator,
            ifindex: 0,
            expires: None,
            diverted: false,
            objective: None,
        }
    }

    /// The socket address to connect to, if this is an IP locator.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.locator {
            Locator::Ipv6 { addr, port, .. } => {
                let scope = if is_link_local(addr) { self.ifindex } else { 0 };
                Some(SocketAddr::V6(SocketAddrV6::new(*addr, *port, 0, scope)))
            }
            Locator::Ipv4 { addr, port, .. } => Some(SocketAddr::new(IpAddr::V4(*addr), *port)),
            _ => None,
        }
    }
}

pub(crate) fn is_link_local(a: &std::net::Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Options of `register_objective` (RFC 8991 §2.3.3, plus graspy's `rapid`
/// and explicit `locators`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOptions {
    /// Lifetime of the discovery responses we send for it, in ms. The default
    /// is graspy's 600 000 (RFC 8991 suggests GRASP_DEF_TIMEOUT).
    pub ttl_ms: u32,
    /// Answer discoveries even before a listen call.
    pub discoverable: bool,
    /// Let several ASAs register it.
    pub overlap: bool,
    /// Answer discoveries with the link-local address of the interface the
    /// discovery came in on.
    pub local: bool,
    /// Put the objective (with its value) into discovery responses, graspy's
    /// rapid synchronization.
    pub rapid: bool,
    /// Locators to advertise instead of the node's own.
    pub locators: Vec<Locator>,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            ttl_ms: 600_000,
            discoverable: false,
            overlap: false,
            local: false,
            rapid: false,
            locators: Vec::new(),
        }
    }
}

/// Options of `discover`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// How long to collect answers. `Some(ZERO)` means the cache only;
    /// `None` means 100 ms × the objective's loop count (RFC 8990 §2.5.4.3).
    pub timeout: Option<Duration>,
    /// Drop cached locators with at most this much lifetime left before
    /// looking (`Some(ZERO)` drops expired ones only; RFC 8991 `minimum_TTL`).
    /// `flush` drops them all.
    pub min_ttl: Option<Duration>,
    /// Ignore the cache entirely and ask the network.
    pub flush: bool,
    /// Return as soon as the first answer arrives instead of at the timeout.
    pub first_only: bool,
}

/// A read-only view of an engine's registrations and caches
/// ([`Engine::dump`](super::Engine::dump)), for operators and tools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// Registered ASAs.
    pub asas: Vec<(AsaHandle, String)>,
    /// Registered objectives.
    pub objectives: Vec<DumpedObjective>,
    /// The discovery cache: unexpired locators by objective name.
    pub discovery_cache: Vec<(String, Vec<AsaLocator>)>,
    /// The flood cache's unexpired entries.
    pub flood_cache: Vec<FloodEntry>,
}

/// A registered objective in a [`Dump`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedObjective {
    /// The objective (its current value).
    pub objective: Objective,
    /// The ASAs that registered it.
    pub owners: Vec<AsaHandle>,
    /// Its options.
    pub options: RegisterOptions,
    /// Someone listens for negotiation requests.
    pub listen_negotiate: bool,
    /// Someone answers synchronization requests.
    pub listen_synchronize: bool,
}

/// An entry of the flood cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodEntry {
    /// The flooded objective (with its value).
    pub objective: Objective,
    /// Its locator tag.
    pub locator: Option<Locator>,
    /// Who flooded it.
    pub initiator: IpAddr,
    /// When it expires (`None`: never).
    pub expires: Option<Instant>,
    /// Interface it arrived on (0: flooded by this node).
    pub ifindex: u32,
}

/// The result of a negotiation request or step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiationOutcome {
    /// The peer accepted (M_END O_ACCEPT); the session is over.
    Accepted,
    /// The peer declined (M_END O_DECLINE); the session is over.
    Declined {
        /// The peer's reason, if any.
        reason: Option<String>,
    },
    /// The peer made a counter-offer (M_NEGOTIATE); it is our turn. The
    /// objective's loop count has already been decremented (graspy's rule).
    Step {
        /// The session, for the next call.
        session: SessionHandle,
        /// The peer's proposal.
        objective: Objective,
        /// The peer's address.
        peer: Option<SocketAddr>,
        /// The peer's authenticated identity, if the transport has one.
        identity: Option<String>,
    },
}

/// Something the engine tells its driver: how a waiting call ended, what a
/// subscription delivers, and that a subscription ended.
///
/// A waiting call (one that takes a [`CommandId`]) that returned `Ok` ends
/// in exactly one event naming its `cmd`; one that returned `Err` ends in
/// none.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// [`Engine::discover`](super::Engine::discover) ended.
    Discovered {
        /// The call.
        cmd: CommandId,
        /// Discovered locators (possibly none).
        result: Result<Vec<AsaLocator>, ApiError>,
    },
    /// A streamed discovery found a new locator (it is in the
    /// [`Event::Discovered`] that ends the call too).
    Found {
        /// The discovery.
        cmd: CommandId,
        /// What it found.
        locator: AsaLocator,
    },
    /// [`Engine::synchronize`](super::Engine::synchronize) ended.
    Synchronized {
        /// The call.
        cmd: CommandId,
        /// The peer's (or the flood cache's) objective.
        result: Result<Objective, ApiError>,
    },
    /// [`Engine::request_negotiate`](super::Engine::request_negotiate) or
    /// [`Engine::negotiate_step`](super::Engine::negotiate_step) ended.
    Negotiated {
        /// The call.
        cmd: CommandId,
        /// What the peer answered.
        result: Result<NegotiationOutcome, ApiError>,
    },
    /// [`Engine::request_raw`](super::Engine::request_raw) ended: the raw
    /// session is the ASA's.
    RawOpened {
        /// The call.
        cmd: CommandId,
        /// The session.
        result: Result<SessionHandle, ApiError>,
    },
    /// [`Engine::raw_recv`](super::Engine::raw_recv) ended.
    RawReceived {
        /// The call.
        cmd: CommandId,
        /// The bare CBOR item the peer sent.
        result: Result<Value, ApiError>,
    },
    /// A flood of a watched objective entered the flood cache
    /// ([`Engine::watch_flood`](super::Engine::watch_flood)).
    Flood {
        /// The watch.
        subscription: SubscriptionId,
        /// The cache entry.
        entry: FloodEntry,
    },
    /// A peer asked to negotiate a listened objective
    /// ([`Engine::listen_negotiate`](super::Engine::listen_negotiate)).
    NegotiationRequest {
        /// The listen.
        subscription: SubscriptionId,
        /// The session.
        session: SessionHandle,
        /// The requested objective (loop count as received).
        objective: Objective,
        /// The peer.
        peer: SocketAddr,
        /// The peer's authenticated identity, if the transport has one.
        identity: Option<String>,
    },
    /// A listen or watch ended (stopped, replaced by a new one, or its ASA
    /// or objective deregistered): it delivers nothing more.
    Unsubscribed {
        /// The listen or watch.
        subscription: SubscriptionId,
    },
}

impl Event {
    /// The waiting call this event ends, if it ends one.
    pub fn ended_call(&self) -> Option<CommandId> {
        match self {
            Event::Discovered { cmd, .. }
            | Event::Synchronized { cmd, .. }
            | Event::Negotiated { cmd, .. }
            | Event::RawOpened { cmd, .. }
            | Event::RawReceived { cmd, .. } => Some(*cmd),
            Event::Found { .. }
            | Event::Flood { .. }
            | Event::NegotiationRequest { .. }
            | Event::Unsubscribed { .. } => None,
        }
    }
}

/// Something the driver must do on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Multicast `msg` on interface `ifindex`.
    Multicast {
        /// Interface.
        ifindex: u32,
        /// Encoded message.
        msg: Bytes,
    },
    /// Open channel `channel` to `peer`. Sends for it may follow at once; the
    /// driver queues them until the connection is up, and reports failure
    /// with `Engine::handle_connect_failed`.
    Connect {
        /// The new channel's id.
        channel: ChannelId,
        /// Where to.
        peer: SocketAddr,
    },
    /// Send one message on a channel.
    Send {
        /// Channel.
        channel: ChannelId,
        /// Encoded message.
        msg: Bytes,
    },
    /// Finish with a channel. With `linger`, after the queued sends wait
    /// (bounded) for the peer to close first, so that TIME_WAIT stays on the
    /// responder's side; otherwise close at once.
    Close {
        /// Channel.
        channel: ChannelId,
        /// Let the peer close first.
        linger: bool,
    },
}

/// How a channel ended, for [`Engine::handle_channel_closed`](super::Engine::handle_channel_closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelEnd {
    /// The peer finished sending (EOF, a TCP half-close) but may still read:
    /// what is queued for it, and the answer it waits for, are still
    /// delivered, then the channel is closed.
    PeerFinished,
    /// The channel is gone (write failure, malformed input, the transport
    /// ended it): nothing more can be sent on it.
    Lost,
    /// The peer reset the connection: it refused it (at its connection
    /// limit) or restarted. Like [`Lost`](Self::Lost), but the ASA is told
    /// it was refused rather than that nobody answered.
    Reset,
}

/// Token bucket parameters: `rate` per second, bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained rate per second.
    pub rate: f64,
    /// Burst size.
    pub burst: f64,
}

/// Engine configuration. Every cache, queue and rate is bounded here.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Run as a DULL instance (RFC 8990 §2.5.2): link-local only, loop count
    /// 1, no relaying, only the objectives in `dull_objectives`.
    pub dull: bool,
    /// Objectives a DULL instance accepts.
    pub dull_objectives: Vec<String>,
    /// Relay discoveries and floods between interfaces. `None`: relay when
    /// there is more than one interface and the instance is not DULL.
    pub relay: Option<bool>,
    /// Treat a transport without security as secured: allow negotiation,
    /// synchronization and flooding over it (labs and tests only; RFC 8990
    /// requires a secured substrate). The one knob for that in the
    /// workspace. Default false: such calls fail with `noSecurity`.
    pub allow_insecure: bool,
    /// Decoding limits.
    pub limits: Limits,
    /// Seed for session ids and handles; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Most ASAs.
    pub max_asas: usize,
    /// Most registered objectives.
    pub max_objectives: usize,
    /// Objectives kept in the discovery cache (least recently used evicted).
    pub discovery_cache_objectives: usize,
    /// Locators kept per objective in the discovery cache.
    pub discovery_cache_locators: usize,
    /// Entries in the flood cache (oldest evicted).
    pub flood_cache_entries: usize,
    /// Discoveries in progress (own and relayed).
    pub max_discoveries: usize,
    /// Unicast channels open at once.
    pub max_channels: usize,
    /// Remembered (session id, initiator) pairs for duplicate suppression.
    pub max_recent_sessions: usize,
    /// How long an inbound channel may take to send its first message.
    pub first_message_timeout: Duration,
    /// How long a negotiation may wait for its ASA to act.
    pub session_idle_timeout: Duration,
    /// The longest wait a peer's M_WAIT may ask for (longer ones are cut
    /// to it and counted); it may ask again.
    pub max_wait: Duration,
    /// The longest timeout an ASA call may ask for (longer ones are cut to
    /// it: a discovery or session held for days holds its slot for days).
    pub max_asa_timeout: Duration,
    /// How long relayed floods are remembered (RFC: at least 2 × GRASP_DEF_TIMEOUT).
    pub flood_memory: Duration,
    /// Relayed discoveries per interface.
    pub relay_rate: RateLimit,
    /// Relayed discoveries per source under `relay_rate`: per link-local
    /// sender and per initiator claimed (both must have budget).
    pub relay_per_source: RateLimit,
    /// Relayed floods per interface.
    pub flood_relay_rate: RateLimit,
    /// Relayed floods per source under `flood_relay_rate` (link-local
    /// sender and initiator).
    pub flood_relay_per_source: RateLimit,
    /// Discovery responses sent per interface.
    pub response_rate: RateLimit,
    /// Discovery responses per address answered to, under
    /// `response_rate`: the connections a storm of discoveries claiming
    /// one sender can make this node open towards it.
    pub response_per_source: RateLimit,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dull: false,
            dull_objectives: Vec::new(),
            relay: None,
            allow_insecure: false,
            limits: Limits::default(),
            seed: None,
            max_asas: 100,
            max_objectives: 1000,
            discovery_cache_objectives: 500,
            discovery_cache_locators: 16,
            flood_cache_entries: 1000,
            max_discoveries: 1000,
            max_channels: 10_000,
            max_recent_sessions: 8192,
            first_message_timeout: Duration::from_secs(5),
            session_idle_timeout: Duration::from_millis(u64::from(
                crate::wire::GRASP_DEF_TIMEOUT_MS,
            )),
            // GRASP_DEF_TIMEOUT, the default for a whole negotiation step.
            max_wait: Duration::from_millis(u64::from(crate::wire::GRASP_DEF_TIMEOUT_MS)),
            max_asa_timeout: Duration::from_secs(3600),
            flood_memory: Duration::from_secs(120),
            relay_rate: RateLimit {
                rate: 50.0,
                burst: 100.0,
            },
            // A source gets half of a relay pool at most; heavy sources
            // cannot take its last quarter (see `budget`).
            relay_per_source: RateLimit {
                rate: 25.0,
                burst: 50.0,
            },
            flood_relay_rate: RateLimit {
                rate: 50.0,
                burst: 100.0,
            },
            flood_relay_per_source: RateLimit {
                rate: 25.0,
                burst: 50.0,
            },
            response_rate: RateLimit {
                rate: 2000.0,
                burst: 4000.0,
            },
            // Twice the relay pool: a relay passing on every discovery it
            // may relay is still answered in full.
            response_per_source: RateLimit {
                rate: 100.0,
                burst: 200.0,
            },
        }
    }
}

/// GRASP messages counted by type (RFC 8990 §2.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    counts: [u64; 12],
}

impl MessageCounts {
    /// The slot of `msg`'s type: its place in [`MessageType::ALL`], or the
    /// last one for a type this implementation does not know.
    fn slot(msg: &[u8]) -> usize {
        crate::wire::peek_type(msg)
            .and_then(|t| u8::try_from(t).ok())
            .map_or(11, |t| Self::slot_of(MessageType::from(t)))
    }

    fn slot_of(t: MessageType) -> usize {
        // M_NOOP..M_FLOOD are 0..9 and M_INVALID is 99: MessageType::ALL's
        // order (a test checks it).
        match u8::from(t) {
            t @ 0..=9 => usize::from(t),
            99 => 10,
            _ => 11,
        }
    }

    /// Counts one encoded message by its type.
    pub fn count(&mut self, msg: &[u8]) {
        self.counts[Self::slot(msg)] += 1;
    }

    /// Takes back one count of `msg`'s type (it was not sent after all).
    pub fn uncount(&mut self, msg: &[u8]) {
        let c = &mut self.counts[Self::slot(msg)];
        *c = c.saturating_sub(1);
    }

    /// How many messages of type `t` (any unknown type: all of those).
    pub fn get(&self, t: MessageType) -> u64 {
        self.counts[Self::slot_of(t)]
    }

    /// The names of the counts, in [`iter`](Self::iter)'s order: every
    /// known type's, then "other".
    pub fn names() -> impl Iterator<Item = &'static str> {
        MessageType::ALL
            .iter()
            .filter_map(|t| t.name())
            .chain(["other"])
    }

    /// Every type's name with its count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::names().zip(self.counts)
    }

    /// All messages.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Counters the engine keeps; every drop is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Messages received (multicast and unicast), by type.
    pub received: MessageCounts,
    /// Messages sent (multicast and unicast), by type: handed to the
    /// transport and not reported back as unsent.
    pub sent: MessageCounts,
    /// Messages the engine sent that the transport could not write (the
    /// channel was gone, its queue full, a connect or multicast failed);
    /// they are not in `sent`.
    pub unsent: u64,
    /// Times the transport's interfaces or node address changed.
    pub interface_changes: u64,
    /// Messages that failed to decode.
    pub malformed: u64,
    /// Multicasts of unknown type (silently dropped, RFC 8990 §2.8.2).
    pub unknown_multicast: u64,
    /// Multicasts dropped by DULL rules.
    pub dull_dropped: u64,
    /// Discoveries relayed.
    pub discoveries_relayed: u64,
    /// Our discoveries sent again (new session id) because nothing had
    /// answered within a quarter, then three quarters, of their timeout.
    pub discoveries_repeated: u64,
    /// Locators answered to a discovery beyond the
    /// `discovery_cache_locators` it keeps (not kept, not passed on).
    pub discovery_answers_dropped: u64,
    /// Waits a peer asked for (M_WAIT) cut to `max_wait`.
    pub waits_capped: u64,
    /// Floods, values and objectives an ASA gave that were over the
    /// message size limit (refused with an error).
    pub asa_oversize: u64,
    /// Floods relayed.
    pub floods_relayed: u64,
    /// Discovery relays refused by the relay rate limit.
    pub relay_rate_limited: u64,
    /// Discovery relays refused because their sender or initiator had
    /// spent its share (`relay_per_source`).
    pub relay_source_limited: u64,
    /// Flood relays refused by the flood-relay rate limit (the flood is
    /// still cached and delivered to local ASAs).
    pub flood_relay_rate_limited: u64,
    /// Flood relays refused because their sender or initiator had spent its
    /// share (still cached and delivered locally).
    pub flood_relay_source_limited: u64,
    /// Duplicate relayed discoveries/floods suppressed.
    pub duplicates: u64,
    /// Discovery responses sent.
    pub responses_sent: u64,
    /// Discovery responses not sent because of the rate limit.
    pub response_rate_limited: u64,
    /// Discovery responses not sent because the address to answer had
    /// spent its share (`response_per_source`).
    pub response_source_limited: u64,
    /// Inbound channels closed for silence.
    pub idle_channels_closed: u64,
    /// Things refused because a bound was reached.
    pub bounded_refusals: u64,
    /// Requests whose session id clashed with an active one.
    pub id_clashes: u64,
    /// Sizes now (gauges, filled when the stats are read): registered
    /// ASAs and objectives, objectives in the discovery cache, entries in
    /// the flood cache, discoveries under way.
    pub tables: TableSizes,
}

/// How full the engine's tables are, when its stats were read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSizes {
    /// Registered ASAs.
    pub asas: usize,
    /// Registered objectives.
    pub objectives: usize,
    /// Objectives with cached discovery answers.
    pub discovery_cache: usize,
    /// Entries in the flood cache.
    pub flood_cache: usize,
    /// Discoveries under way.
    pub discoveries: usize,
}
