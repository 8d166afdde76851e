//! The engine's records: what it keeps per registration, discovery and
//! channel. Data only; the tables that own them and keep them consistent
//! are in the files beside this one (a negotiation session is its own
//! state machine, `session.rs`).

use std::net::{SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::session::Session;
use super::types::{AsaHandle, AsaLocator, CommandId, RegisterOptions, SubscriptionId};
use crate::wire::{Objective, SessionId};

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
    Neg(Session),
}

#[derive(Debug)]
pub(super) struct Chan {
    pub(super) peer: SocketAddr,
    /// The peer's authenticated identity (TLS), if any.
    pub(super) identity: Option<String>,
    pub(super) deadline: Option<Instant>,
    pub(super) state: ChanState,
}
