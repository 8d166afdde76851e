//! The engine's tables: what it keeps per registration, discovery, channel
//! and session, and its timers. Data only; the procedures that keep them
//! consistent are in the files beside this one.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::types::{AsaHandle, AsaLocator, CommandId, RegisterOptions, SubscriptionId};
use crate::wire::{Message, Objective, SessionId};

/// A registered objective.
#[derive(Debug)]
pub(super) struct Registered {
    /// Its ASAs (more than one only with `overlap`).
    pub(super) owners: Vec<AsaHandle>,
    /// Its value is what a synchronization listener serves.
    pub(super) objective: Objective,
    pub(super) options: RegisterOptions,
    /// The ASA listening for negotiation requests, and its listen.
    pub(super) listener: Option<(AsaHandle, SubscriptionId)>,
    pub(super) listen_synch: bool,
}

impl Registered {
    pub(super) fn discoverable(&self) -> bool {
        self.options.discoverable || self.listener.is_some() || self.listen_synch
    }
}

/// What to do with a discovery's result: hand it to the ASA, or go on
/// with the call that needed a peer.
#[derive(Debug)]
pub(super) enum Waiter {
    Api {
        cmd: CommandId,
        first_only: bool,
        /// Each new locator as an [`Event::Found`](super::Event::Found).
        stream: bool,
    },
    Then(Continuation),
}

/// A call waiting for a peer to go on with.
#[derive(Debug)]
pub(super) enum Continuation {
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
        /// graspy's raw channel ([`Engine::request_raw`](super::Engine::request_raw)).
        raw: bool,
    },
}

impl Continuation {
    /// The objective the call is for.
    pub(super) fn objective(&self) -> &Objective {
        match self {
            Continuation::Synch { objective, .. } | Continuation::Neg { objective, .. } => {
                objective
            }
        }
    }
}

/// A discovery under way: ours, or one we relay.
#[derive(Debug)]
pub(super) struct Disc {
    pub(super) name: String,
    pub(super) deadline: Instant,
    pub(super) waiters: Vec<Waiter>,
    pub(super) found: Vec<AsaLocator>,
    /// For a relayed discovery: where to send what we learn.
    pub(super) relay_to: Option<SocketAddrV6>,
    /// Our own discovery's repeats while nothing is found: what to send,
    /// the next gap, and the session ids used so far after the first.
    pub(super) repeat: Option<Repeat>,
}

/// Repeats of a discovery within its timeout (RFC 8990 §2.5.4.2: "MAY be
/// repeated, with a newly generated Session ID", with exponential backoff):
/// at a quarter of the timeout, then at three quarters, while nothing has
/// answered. A discovery lost to a full queue or a relay's rate limit on a
/// busy link gets two more chances within the time the ASA gave it.
#[derive(Debug)]
pub(super) struct Repeat {
    pub(super) objective: Objective,
    pub(super) gap: Duration,
    pub(super) aliases: Vec<SessionId>,
}

/// Repeats of one discovery at most.
pub(super) const DISCOVERY_REPEATS: usize = 2;

/// Waiters a discovery is done with, and what it found: the procedures
/// hand these back, and the calls (`calls.rs`) go on with them.
#[derive(Debug, Default)]
pub(super) struct Finished {
    pub(super) waiters: Vec<Waiter>,
    pub(super) found: Vec<AsaLocator>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NegWait {
    /// Waiting for the answer to our M_REQ_NEG.
    First,
    /// Waiting for the answer to our M_NEGOTIATE.
    Step,
}

#[derive(Debug)]
pub(super) struct Neg {
    pub(super) sid: SessionId,
    pub(super) asa: AsaHandle,
    pub(super) name: String,
    pub(super) requester: bool,
    pub(super) pending: Option<(CommandId, NegWait)>,
    /// What the peer sent while it was our turn (e.g. an M_END), handed
    /// to the next call: as a message to a step, as bytes to a raw receive.
    pub(super) early: VecDeque<Early>,
    /// graspy's raw channel: bare CBOR items instead of messages.
    pub(super) raw: Option<Raw>,
    pub(super) peer_closed: bool,
    pub(super) clash_key: Option<(SessionId, IpAddr)>,
}

/// An item the peer sent during our turn: its bytes, and the message they
/// are if they are one.
#[derive(Debug)]
pub(super) struct Early {
    pub(super) raw: Bytes,
    pub(super) msg: Option<Message>,
}

/// A session in graspy's raw mode (`gsend`/`grecv`).
#[derive(Debug, Default)]
pub(super) struct Raw {
    /// Items received, not yet asked for (bounded by [`RAW_INBOX`]).
    pub(super) inbox: VecDeque<Bytes>,
    /// A receive waiting for the next item.
    pub(super) waiting: Option<CommandId>,
    /// Our request, answered with the session once M_REQ_NEG has had
    /// [`RAW_GAP`] to itself.
    pub(super) opening: Option<CommandId>,
}

/// How long a raw session of ours keeps the connection to M_REQ_NEG before
/// the ASA may send: graspy reads one message per `recv()`, and an item
/// right behind the request would be read with it and lost (seen by hand
/// against graspy's listen_negotiate/grecv).
pub(super) const RAW_GAP: Duration = Duration::from_millis(100);

/// Items a raw session keeps for its ASA before it closes the session.
pub(super) const RAW_INBOX: usize = 16;

#[derive(Debug)]
pub(super) enum ChanState {
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
pub(super) struct Chan {
    pub(super) peer: SocketAddr,
    /// The peer's authenticated identity (TLS), if any.
    pub(super) identity: Option<String>,
    pub(super) deadline: Option<Instant>,
    pub(super) state: ChanState,
}
