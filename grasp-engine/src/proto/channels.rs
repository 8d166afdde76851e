//! The channel table: every unicast channel the engine tracks, owned here
//! with the invariants that tie channels to the rest of the engine, as
//! quinn's `Connection` owns its streams:
//!
//! * the table holds at most `max` channels (a new one is refused beyond);
//! * a channel's deadline is in the deadline heap while it is set, and the
//!   heap's earliest entry is always a live one (see [`Deadlines`]);
//! * the session id of a session of ours is reserved while its channel
//!   lives (so a new one never reuses it, RFC 8990 §2.7);
//! * a responder's (session id, initiator) is held while its negotiation
//!   lives, and a second request with the same pair is refused (§2.8.6);
//! * removing a channel releases all of the above, in one place.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
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
    deadlines: Deadlines,
    own_sids: HashSet<SessionId>,
    clashes: HashSet<(SessionId, IpAddr)>,
    next: u64,
    max: usize,
}

impl Channels {
    pub(super) fn new(max: usize) -> Self {
        Channels {
            map: IdMap::default(),
            deadlines: Deadlines::default(),
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
            let moved = ch.deadline != at;
            ch.deadline = at;
            if let Some(t) = at.filter(|_| moved) {
                self.deadlines.heap.push(Reverse((t, id)));
            }
            if moved {
                self.deadlines.tidy(&self.map);
            }
        }
    }

    /// Stops tracking a channel, releasing its deadline, session id and
    /// clash key.
    pub(super) fn remove(&mut self, id: ChannelId) -> Option<Chan> {
        let ch = self.map.remove(&id)?;
        if ch.deadline.is_some() {
            self.deadlines.tidy(&self.map);
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
        self.deadlines.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// A channel whose deadline is due at `now`, its deadline cleared.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<ChannelId> {
        let &Reverse((t, id)) = self.deadlines.heap.peek()?;
        if t > now {
            return None;
        }
        self.deadlines.heap.pop();
        if let Some(ch) = self.map.get_mut(&id) {
            ch.deadline = None;
        }
        self.deadlines.tidy(&self.map);
        Some(id)
    }
}

/// The channels' deadlines, earliest first.
///
/// A min-heap with lazy removal instead of an ordered set: nearly every
/// channel is opened with a deadline and closed well before it (a
/// synchronization lives for a few hundred microseconds), and a set paid a
/// tree insert and a tree removal for each; here opening pushes onto a heap
/// and closing removes nothing. An entry whose channel is gone or whose
/// deadline moved is stale: stale entries are dropped whenever they come to
/// the front (so the front is always live and
/// [`Channels::next_deadline`] is exact), and all of them at once when they
/// outnumber the live ones (so the heap stays within about twice the
/// table).
#[derive(Debug, Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ChannelId)>>,
}

impl Deadlines {
    fn live(
        map: &IdMap<ChannelId, Chan>,
        &Reverse((t, id)): &Reverse<(Instant, ChannelId)>,
    ) -> bool {
        map.get(&id).is_some_and(|c| c.deadline == Some(t))
    }

    /// Restores the invariants after a deadline went stale.
    fn tidy(&mut self, map: &IdMap<ChannelId, Chan>) {
        if self.heap.len() > 2 * map.len() + 32 {
            self.heap.retain(|e| Deadlines::live(map, e));
        }
        while self.heap.peek().is_some_and(|e| !Deadlines::live(map, e)) {
            self.heap.pop();
        }
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

    /// Closing channels leaves stale deadlines behind: the earliest
    /// deadline stays exact and the heap stays within about twice the
    /// table, however many channels come and go.
    #[test]
    fn deadlines_stay_exact_and_bounded() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Channels::new(100);
        let long = c.open(chan(ChanState::Fresh), now + 100 * s).unwrap();
        for i in 0..1000u32 {
            let short = c.open(chan(ChanState::Fresh), now + s).unwrap();
            assert_eq!(c.next_deadline(), Some(now + s));
            if i % 2 == 0 {
                // Moved later, then closed.
                c.set_deadline(short, Some(now + 200 * s));
                assert_eq!(c.next_deadline(), Some(now + 100 * s));
            }
            c.remove(short);
            assert_eq!(c.next_deadline(), Some(now + 100 * s));
            assert!(c.deadlines.heap.len() <= 2 * c.len() + 33);
        }
        // Moving the one left away and back: it fires once.
        c.set_deadline(long, Some(now + 2 * s));
        c.set_deadline(long, Some(now + 100 * s));
        assert_eq!(c.pop_due(now + 99 * s), None);
        assert_eq!(c.pop_due(now + 100 * s), Some(long));
        assert_eq!(c.pop_due(now + 300 * s), None);
        assert_eq!(c.next_deadline(), None);
    }
}
