//! The discovery table: our discoveries in progress and those we relay,
//! owned here with the invariants that tie them together:
//!
//! * the table holds at most `max` discoveries (a new one is refused);
//! * a repeat's session id (an alias) names a live discovery, and goes
//!   when that discovery goes;
//! * every live discovery's end, and its next repeat, are in the timer set
//!   (a timer of a discovery already gone is skipped when it is due).
//!
//! The memory of finished sessions (`RecentSessions`) stays the engine's:
//! flooding shares it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use crate::wire::SessionId;

use super::tables::Disc;

/// A discovery's session: its session id and initiator (RFC 8990 §2.7).
pub(super) type Key = (SessionId, IpAddr);

/// What a discovery timer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// The discovery's time is up.
    End(Key),
    /// Repeat our discovery (keyed by its first session id).
    Repeat(Key),
}

/// The table is full.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full;

#[derive(Debug)]
pub(super) struct Discoveries {
    map: HashMap<Key, Disc>,
    /// A repeat's session id to the discovery it repeats.
    alias: HashMap<Key, Key>,
    timers: BTreeSet<(Instant, Due)>,
    max: usize,
}

impl Discoveries {
    /// Discoveries under way.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn new(max: usize) -> Self {
        Discoveries {
            map: HashMap::new(),
            alias: HashMap::new(),
            timers: BTreeSet::new(),
            max,
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.map.len() >= self.max
    }

    /// Whether `key` is a discovery here, or a repeat of one.
    pub(super) fn knows(&self, key: &Key) -> bool {
        self.map.contains_key(key) || self.alias.contains_key(key)
    }

    /// The discovery `key` belongs to (itself, or the one it repeats).
    pub(super) fn resolve(&self, key: Key) -> Key {
        self.alias.get(&key).copied().unwrap_or(key)
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Disc> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut Disc> {
        self.map.get_mut(key)
    }

    /// Tracks a new discovery until its deadline, with its first repeat at
    /// `repeat_at` (ours only).
    pub(super) fn start(
        &mut self,
        key: Key,
        disc: Disc,
        repeat_at: Option<Instant>,
    ) -> Result<(), Full> {
        if self.is_full() {
            return Err(Full);
        }
        self.timers.insert((disc.deadline, Due::End(key)));
        if let Some(at) = repeat_at {
            self.timers.insert((at, Due::Repeat(key)));
        }
        self.map.insert(key, disc);
        Ok(())
    }

    /// Notes that `key` was sent again as `sid`, with the next repeat at
    /// `next` (if any).
    pub(super) fn repeated(&mut self, key: Key, sid: SessionId, next: Option<Instant>) {
        let Some(r) = self.map.get_mut(&key).and_then(|d| d.repeat.as_mut()) else {
            return;
        };
        r.aliases.push(sid);
        self.alias.insert((sid, key.1), key);
        if let Some(at) = next {
            self.timers.insert((at, Due::Repeat(key)));
        }
    }

    /// Stops tracking `key`, with its aliases.
    pub(super) fn finish(&mut self, key: &Key) -> Option<Disc> {
        let d = self.map.remove(key)?;
        for sid in d.repeat.iter().flat_map(|r| &r.aliases) {
            self.alias.remove(&(*sid, key.1));
        }
        Some(d)
    }

    /// When the next timer is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next timer due by `now`, taken out of the set.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        if self.next_deadline()? > now {
            return None;
        }
        self.timers.pop_first().map(|(_, due)| due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use std::time::Duration;

    use super::super::tables::Repeat;
    use crate::wire::{Objective, ObjectiveFlags};

    fn key(sid: u32) -> Key {
        (SessionId(sid), IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    fn disc(deadline: Instant, ours: bool) -> Disc {
        Disc {
            name: "EX.t".into(),
            deadline,
            waiters: Vec::new(),
            found: Vec::new(),
            relay_to: None,
            repeat: ours.then(|| Repeat {
                objective: Objective::new("EX.t", ObjectiveFlags::default()),
                gap: Duration::from_millis(100),
                aliases: Vec::new(),
            }),
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut t = Discoveries::new(2);
        assert_eq!(t.start(key(1), disc(now, false), None), Ok(()));
        assert_eq!(t.start(key(2), disc(now, false), None), Ok(()));
        assert_eq!(t.start(key(3), disc(now, false), None), Err(Full));
        assert!(t.finish(&key(1)).is_some());
        assert_eq!(t.start(key(3), disc(now, false), None), Ok(()));
    }

    #[test]
    fn an_alias_lives_exactly_as_long_as_its_discovery() {
        let now = Instant::now();
        let mut t = Discoveries::new(4);
        t.start(key(1), disc(now, true), Some(now)).unwrap();
        t.repeated(key(1), SessionId(9), None);
        assert!(t.knows(&key(9)));
        assert_eq!(t.resolve(key(9)), key(1));
        assert!(t.finish(&key(1)).is_some());
        assert!(!t.knows(&key(9)));
        assert_eq!(t.resolve(key(9)), key(9));
    }

    #[test]
    fn timers_come_due_in_time_order() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut t = Discoveries::new(4);
        t.start(key(1), disc(later, true), Some(now)).unwrap();
        assert_eq!(t.next_deadline(), Some(now));
        assert_eq!(t.pop_due(now), Some(Due::Repeat(key(1))));
        assert_eq!(t.pop_due(now), None, "the end is not due yet");
        assert_eq!(t.pop_due(later), Some(Due::End(key(1))));
        assert_eq!(t.next_deadline(), None);
    }
}
