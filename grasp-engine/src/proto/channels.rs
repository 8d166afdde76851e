//! The channel table: every unicast channel the engine tracks, owned here
//! with the invariants that tie channels to the rest of the engine, as
//! quinn's `Connection` owns its streams:
//!
//! * the table holds at most `max` channels (a new one is refused beyond);
//! * a channel's deadline is in the deadline set exactly while it is set;
//! * the session id of a session of ours is reserved while its channel
//!   lives (so a new one never reuses it, RFC 8990 §2.7);
//! * a responder's (session id, initiator) is held while its negotiation
//!   lives, and a second request with the same pair is refused (§2.8.6);
//! * removing a channel releases all of the above, in one place.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::wire::SessionId;

use super::tables::{Chan, ChanState};
use super::types::{ChannelId, IdMap};

/// Why a channel's new state was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The table is full.
    Full,
    /// Another negotiation holds the same session id and initiator.
    Clash,
}

#[derive(Debug)]
pub(super) struct Channels {
    map: IdMap<ChannelId, Chan>,
    deadlines: BTreeSet<(Instant, ChannelId)>,
    own_sids: HashSet<SessionId>,
    clashes: HashSet<(SessionId, IpAddr)>,
    next: u64,
    max: usize,
}

impl Channels {
    pub(super) fn new(max: usize) -> Self {
        Channels {
            map: IdMap::default(),
            deadlines: BTreeSet::new(),
            own_sids: HashSet::new(),
            clashes: HashSet::new(),
            next: 1,
            max,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// A fresh id, for a channel the table will not track (a one-shot
    /// discovery answer) or for [`open`](Self::open).
    pub(super) fn id(&mut self) -> ChannelId {
        let id = ChannelId(self.next);
        self.next += 1;
        id
    }

    /// Tracks a new channel in `state`, with its deadline; reserves what
    /// the state holds.
    pub(super) fn open(&mut self, chan: Chan, deadline: Instant) -> Result<ChannelId, Refused> {
        if self.map.len() >= self.max {
            return Err(Refused::Full);
        }
        self.check(&chan.state)?;
        let id = self.id();
        self.reserve(&chan.state);
        self.map.insert(
            id,
            Chan {
                deadline: None,
                ..chan
            },
        );
        self.set_deadline(id, Some(deadline));
        Ok(id)
    }

    /// Moves a fresh channel into `state` (an inbound request), or refuses
    /// it when its negotiation clashes with one held.
    pub(super) fn set_state(&mut self, id: ChannelId, state: ChanState) -> Result<(), Refused> {
        self.check(&state)?;
        if !self.map.contains_key(&id) {
            return Ok(());
        }
        self.reserve(&state);
        if let Some(ch) = self.map.get_mut(&id) {
            debug_assert!(matches!(ch.state, ChanState::Fresh), "only a fresh channel");
            ch.state = state;
        }
        Ok(())
    }

    fn check(&self, state: &ChanState) -> Result<(), Refused> {
        match state {
            ChanState::Neg(n) if n.clash_key.is_some_and(|k| self.clashes.contains(&k)) => {
                Err(Refused::Clash)
            }
            _ => Ok(()),
        }
    }

    fn reserve(&mut self, state: &ChanState) {
        match state {
            ChanState::Synch { sid, .. } => {
                self.own_sids.insert(*sid);
            }
            ChanState::Neg(n) => {
                if n.requester {
                    self.own_sids.insert(n.sid);
                }
                if let Some(k) = n.clash_key {
                    self.clashes.insert(k);
                }
            }
            ChanState::Fresh => {}
        }
    }

    /// Whether a session of ours uses `sid`.
    pub(super) fn owns_sid(&self, sid: &SessionId) -> bool {
        self.own_sids.contains(sid)
    }

    /// Every channel.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ChannelId, &Chan)> {
        self.map.iter()
    }

    pub(super) fn get(&self, id: &ChannelId) -> Option<&Chan> {
        self.map.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ChannelId) -> Option<&mut Chan> {
        self.map.get_mut(id)
    }

    /// Sets (or clears) a channel's deadline.
    pub(super) fn set_deadline(&mut self, id: ChannelId, at: Option<Instant>) {
        if let Some(ch) = self.map.get_mut(&id) {
            if let Some(old) = ch.deadline.take() {
                self.deadlines.remove(&(old, id));
            }
            ch.deadline = at;
            if let Some(t) = at {
                self.deadlines.insert((t, id));
            }
        }
    }

    /// Stops tracking a channel, releasing its deadline, session id and
    /// clash key.
    pub(super) fn remove(&mut self, id: ChannelId) -> Option<Chan> {
        let ch = self.map.remove(&id)?;
        if let Some(t) = ch.deadline {
            self.deadlines.remove(&(t, id));
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
                    self.clashes.remove(&k);
                }
            }
            ChanState::Fresh => {}
        }
        Some(ch)
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// A channel whose deadline is due at `now`, its deadline cleared.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<ChannelId> {
        let &(t, id) = self.deadlines.first()?;
        if t > now {
            return None;
        }
        self.deadlines.pop_first();
        if let Some(ch) = self.map.get_mut(&id) {
            ch.deadline = None;
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::session::Session;
    use super::super::types::{AsaHandle, CommandId};
    use super::*;
    use std::time::Duration;

    fn chan(state: ChanState) -> Chan {
        Chan {
            peer: "[fe80::1]:7017".parse().unwrap(),
            identity: None,
            deadline: None,
            state,
        }
    }

    fn ours(sid: u32) -> ChanState {
        let cmd = CommandId(1);
        ChanState::Neg(Session::requesting(
            SessionId(sid),
            AsaHandle(1),
            "EX".into(),
            cmd,
            false,
        ))
    }

    fn theirs(sid: u32, peer: IpAddr) -> ChanState {
        ChanState::Neg(Session::answering(
            SessionId(sid),
            AsaHandle(1),
            "EX".into(),
            peer,
        ))
    }

    #[test]
    fn removing_releases_everything_a_channel_held() {
        let now = Instant::now();
        let mut c = Channels::new(2);
        let ours = c.open(chan(ours(7)), now).unwrap();
        assert!(c.owns_sid(&SessionId(7)));
        let ip: IpAddr = "fe80::2".parse().unwrap();
        let inbound = c
            .open(chan(ChanState::Fresh), now + Duration::from_secs(1))
            .unwrap();
        assert_eq!(c.open(chan(ChanState::Fresh), now), Err(Refused::Full));
        c.set_state(inbound, theirs(9, ip)).unwrap();
        assert_eq!(c.next_deadline(), Some(now));
        // The same request again clashes while the first lives.
        assert_eq!(c.set_state(inbound, theirs(9, ip)), Err(Refused::Clash));
        assert_eq!(c.pop_due(now), Some(ours));
        assert_eq!(c.pop_due(now), None, "the other is not due yet");
        assert!(c.get(&ours).unwrap().deadline.is_none());
        c.remove(ours);
        assert!(!c.owns_sid(&SessionId(7)));
        c.remove(inbound);
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.len(), 0);
        let again = c.open(chan(ChanState::Fresh), now).unwrap();
        c.set_state(again, theirs(9, ip)).unwrap();
    }
}
