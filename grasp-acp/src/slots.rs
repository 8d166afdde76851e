//! Admission of inbound connections: a cap on all of them, a cap per source
//! address under it, and who pays when the pool is full.
//!
//! One on-link host opening thousands of silent TCP connections must not keep
//! everyone else out. So:
//!
//! * a source holds at most [`Admission::per_source`] slots; its next
//!   connection takes the place of its own oldest silent one, or is refused
//!   when all of its connections are in use;
//! * when all [`Admission::max`] slots are taken, a newcomer takes the place
//!   of the oldest silent connection of the source holding the most slots;
//!   only when every connection has spoken is the newcomer refused;
//! * from three quarters full on, connections silent for longer than
//!   [`Admission::pressured_silence`] are closed as newcomers arrive (the
//!   engine's first-message timeout, 5 s, applies below that).
//!
//! "Silent": it has not delivered a whole message yet or, under a layer such
//! as TLS, not finished its handshake. A refused connection is reset (RST):
//! refusing costs nothing, and the client reports a reset as a refusal
//! ([`AcpError::Reset`](grasp_engine::transport::AcpError::Reset)), not as
//! "no listener".
//!
//! Worst case: `max` connections plus the evicted ones whose tasks have not
//! yet noticed (they close at their next poll), one table entry (about 64
//! bytes) each, and up to `2 × max` source entries (sources without a
//! connection are remembered until there are that many: a source that
//! connects again and again does not rebuild its entry every time).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// Limits on inbound connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Connections open at once, from everyone.
    pub max: usize,
    /// Connections open at once from one source address.
    pub per_source: usize,
    /// How long a connection may stay silent (not deliver its first
    /// message, or not finish its handshake) before it is closed.
    pub silence: Duration,
    /// From three quarters full on, how long a connection may stay silent.
    pub pressured_silence: Duration,
}

impl Default for Admission {
    /// 1024 in all, 128 per source (an eighth: fewer than eight sources
    /// cannot fill the pool at all), 5 s of silence (the engine's
    /// first-message timeout), 1 s under pressure.
    fn default() -> Self {
        Admission {
            max: 1024,
            per_source: 128,
            silence: Duration::from_secs(5),
            pressured_silence: Duration::from_secs(1),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source holds its share already, all of it in use.
    SourceFull,
    /// Every slot is held by a connection that has spoken.
    PoolFull,
}

/// Admission-order capacity an idle source keeps for its next connection.
const IDLE_ORDER: usize = 16;

#[derive(Debug, Default)]
struct Flags {
    spoke: AtomicBool,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Debug)]
struct Conn {
    source: IpAddr,
    opened: Instant,
    flags: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Source {
    /// Connections held.
    held: usize,
    /// Its connections in admission order, oldest first (some may have
    /// spoken or gone since: skipped when looked at).
    order: VecDeque<u64>,
}

/// Connections by the number admission gave them. The numbers are ours,
/// not a peer's, so they hash with foldhash rather than SipHash; nothing
/// needs them in order (a source's own order is its `order`).
type Conns = HashMap<u64, Conn, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Table {
    next: u64,
    conns: Conns,
    per_source: HashMap<IpAddr, Source>,
    /// When silent connections were last swept for pressure.
    swept: Option<Instant>,
    /// Ended connections' flags, for new ones to take (one allocation less
    /// per connection), at most [`SPARE_FLAGS`].
    spare: Vec<Arc<Flags>>,
}

/// Ended connections' flags kept for reuse, at most.
const SPARE_FLAGS: usize = 64;

impl Table {
    /// Removes connection `id`. Its source's entry stays when it holds
    /// nothing more (the next connection from it, usually soon, reuses it);
    /// [`Table::forget_idle_sources`] bounds how many such entries stay.
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        if let Some(s) = self.per_source.get_mut(&c.source) {
            s.held -= 1;
            if s.held == 0 {
                s.order.clear();
                if s.order.capacity() > IDLE_ORDER {
                    s.order = VecDeque::new();
                }
            }
        }
        Some(c)
    }

    /// Forgets the sources that hold nothing once there are more entries
    /// than twice the slots (amortised O(1): afterwards at most `max`
    /// remain, the sources that hold a slot).
    fn forget_idle_sources(&mut self, max: usize) {
        if self.per_source.len() > 2 * max {
            self.per_source.retain(|_, s| s.held > 0);
        }
    }

    /// Gives `source` (whose entry is `s`) connection number `next`.
    fn place(
        conns: &mut Conns,
        next: &mut u64,
        spare: &mut Vec<Arc<Flags>>,
        s: &mut Source,
        source: IpAddr,
        now: Instant,
    ) -> (u64, Arc<Flags>) {
        let id = *next;
        *next += 1;
        let flags = spare
            .pop()
            .and_then(|mut f| {
                *Arc::get_mut(&mut f)? = Flags::default();
                Some(f)
            })
            .unwrap_or_default();
        conns.insert(
            id,
            Conn {
                source,
                opened: now,
                flags: flags.clone(),
            },
        );
        s.held += 1;
        s.order.push_back(id);
        if s.order.len() > 2 * s.held + 8 {
            // Bounded: forget the ones that spoke or went.
            s.order
                .retain(|id| conns.get(id).is_some_and(Table::silent));
        }
        (id, flags)
    }

    fn held(&self, source: &IpAddr) -> usize {
        self.per_source.get(source).map_or(0, |s| s.held)
    }

    /// The oldest silent connection of `source`, forgetting those that
    /// spoke or went (amortised O(1)).
    fn oldest_silent(&mut self, source: &IpAddr) -> Option<u64> {
        let s = self.per_source.get_mut(source)?;
        while let Some(&id) = s.order.front() {
            match self.conns.get(&id) {
                Some(c) if Table::silent(c) => return Some(id),
                _ => {
                    s.order.pop_front();
                }
            }
        }
        None
    }

    fn evict(&mut self, id: u64) {
        if let Some(c) = self.remove(id) {
            c.flags.evicted.store(true, Ordering::Release);
            c.flags.waker.wake();
        }
    }

    fn silent(c: &Conn) -> bool {
        !c.flags.spoke.load(Ordering::Acquire)
    }
}

/// The slot table of one listener.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    limits: Admission,
    table: Arc<Mutex<Table>>,
}

/// What [`Slots::admit`] did besides admitting.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Silent connections closed to make room.
    pub(crate) evicted: usize,
}

impl Slots {
    pub(crate) fn new(limits: Admission) -> Self {
        Slots {
            limits: Admission {
                max: limits.max.max(1),
                per_source: limits.per_source.clamp(1, limits.max.max(1)),
                ..limits
            },
            table: Arc::default(),
        }
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `source`, closing silent ones to make room
    /// as the module documentation says.
    pub(crate) fn admit(&self, source: IpAddr, now: Instant) -> Result<(Slot, Admitted), Refusal> {
        let l = self.limits;
        let mut t = self.lock();
        let mut done = Admitted::default();
        // Under pressure, a sweep at most every tenth of the silence allowed.
        let sweep_due = t
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= l.pressured_silence / 10);
        if t.conns.len() * 4 >= l.max * 3 && sweep_due {
            t.swept = Some(now);
            let stale: Vec<u64> = t
                .conns
                .iter()
                .filter(|(_, c)| {
                    Table::silent(c)
                        && now.saturating_duration_since(c.opened) > l.pressured_silence
                })
                .map(|(id, _)| *id)
                .collect();
            done.evicted += stale.len();
            for id in stale {
                t.evict(id);
            }
        }
        // The usual case, a source seen before with room in its share and
        // in the pool: one lookup.
        let room = t.conns.len() < l.max;
        let Table {
            conns,
            per_source,
            next,
            spare,
            ..
        } = &mut *t;
        if let Some(s) = per_source
            .get_mut(&source)
            .filter(|s| room && s.held < l.per_source)
        {
            let (id, flags) = Table::place(conns, next, spare, s, source, now);
            return Ok((self.slot(id, flags), done));
        }
        if t.held(&source) >= l.per_source {
            // The source pays for itself.
            let own = t.oldest_silent(&source).ok_or(Refusal::SourceFull)?;
            t.evict(own);
            done.evicted += 1;
        } else if t.conns.len() >= l.max {
            // The heaviest source with a silent connection pays: its oldest.
            let mut by_weight: Vec<(usize, IpAddr)> = t
                .per_source
                .iter()
                .filter(|(_, s)| s.held > 0)
                .map(|(ip, s)| (s.held, *ip))
                .collect();
            by_weight.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
            let id = by_weight
                .iter()
                .find_map(|(_, ip)| t.oldest_silent(ip))
                .ok_or(Refusal::PoolFull)?;
            t.evict(id);
            done.evicted += 1;
        }
        t.forget_idle_sources(l.max);
        let Table {
            conns,
            per_source,
            next,
            spare,
            ..
        } = &mut *t;
        let s = per_source.entry(source).or_default();
        let (id, flags) = Table::place(conns, next, spare, s, source, now);
        Ok((self.slot(id, flags), done))
    }

    fn slot(&self, id: u64, flags: Arc<Flags>) -> Slot {
        Slot {
            id,
            flags,
            table: Arc::downgrade(&self.table),
        }
    }
}

/// A connection's place in the table, held while it lives.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    flags: Arc<Flags>,
    table: Weak<Mutex<Table>>,
}

impl Slot {
    /// The connection delivered a whole message (or finished its
    /// handshake): it is no longer one that can be closed to make room.
    pub fn spoke(&self) {
        self.flags.spoke.store(true, Ordering::Release);
    }

    /// Whether the connection was closed to make room; if not, `cx` is
    /// woken when it is.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> bool {
        if self.flags.evicted.load(Ordering::Acquire) {
            return true;
        }
        self.flags.waker.register(cx.waker());
        self.flags.evicted.load(Ordering::Acquire)
    }

    /// Resolves when the connection is closed to make room.
    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| {
            if self.poll_evicted(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(t) = self.table.upgrade() else {
            return;
        };
        let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
        // The table's and this slot's are the only holders of the flags:
        // once this slot is gone the spare one is free to reuse (`place`
        // checks that it is).
        if let Some(c) = t.remove(self.id) {
            if t.spare.len() < SPARE_FLAGS && Arc::strong_count(&c.flags) == 2 {
                t.spare.push(c.flags);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ip(n: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n))
    }

    fn slots(max: usize, per_source: usize) -> Slots {
        Slots::new(Admission {
            max,
            per_source,
            ..Admission::default()
        })
    }

    #[test]
    fn reused_flags_start_fresh() {
        let s = slots(100, 3);
        let now = Instant::now();
        let a = s.admit(ip(1), now).unwrap().0;
        a.spoke();
        let b = s.admit(ip(1), now).unwrap().0;
        s.lock().evict(b.id);
        let (pa, pb) = (Arc::as_ptr(&a.flags), Arc::as_ptr(&b.flags));
        drop((a, b));
        // a's flags came back (b's went with its eviction): taken again, reset.
        let c = s.admit(ip(1), now).unwrap().0;
        assert_eq!(Arc::as_ptr(&c.flags), pa);
        assert_ne!(Arc::as_ptr(&c.flags), pb);
        assert!(!c.flags.spoke.load(Ordering::Acquire));
        assert!(!c.flags.evicted.load(Ordering::Acquire));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_source_pays_for_itself() {
        let s = slots(100, 3);
        let now = Instant::now();
        let a: Vec<Slot> = (0..3).map(|_| s.admit(ip(1), now).unwrap().0).collect();
        // A fourth from the same source takes the place of its oldest
        // silent connection.
        let (_d, done) = s.admit(ip(1), now).unwrap();
        assert_eq!(done.evicted, 1);
        assert!(a[0].flags.evicted.load(Ordering::Acquire));
        assert_eq!(s.len(), 3);
        // All of its connections in use: refused.
        for x in &a[1..] {
            x.spoke();
        }
        _d.spoke();
        assert_eq!(s.admit(ip(1), now).unwrap_err(), Refusal::SourceFull);
        // Another source is not affected.
        assert!(s.admit(ip(2), now).is_ok());
    }

    #[test]
    fn the_heaviest_source_pays_when_the_pool_is_full() {
        let s = slots(10, 8);
        let now = Instant::now();
        let heavy: Vec<Slot> = (0..7).map(|_| s.admit(ip(1), now).unwrap().0).collect();
        let light: Vec<Slot> = (0..3).map(|_| s.admit(ip(2), now).unwrap().0).collect();
        // Full: a newcomer evicts the heavy source's oldest silent one.
        let (n, done) = s.admit(ip(3), now).unwrap();
        assert_eq!(done.evicted, 1);
        assert!(heavy[0].flags.evicted.load(Ordering::Acquire));
        assert!(light
            .iter()
            .all(|l| !l.flags.evicted.load(Ordering::Acquire)));
        // Connections that spoke are never evicted: with everything in
        // use, the newcomer is refused.
        n.spoke();
        for x in heavy[1..].iter().chain(&light) {
            x.spoke();
        }
        assert_eq!(s.admit(ip(4), now).unwrap_err(), Refusal::PoolFull);
        // A slot given back is free again.
        drop(light);
        assert!(s.admit(ip(4), now).is_ok());
    }

    #[test]
    fn under_pressure_silence_is_short() {
        let s = slots(8, 8);
        let t0 = Instant::now();
        let old: Vec<Slot> = (0..6).map(|_| s.admit(ip(1), t0).unwrap().0).collect();
        old[0].spoke();
        // Six of eight is three quarters: the next admission closes the
        // silent ones older than a second.
        let (_n, done) = s.admit(ip(2), t0 + Duration::from_millis(1500)).unwrap();
        assert_eq!(done.evicted, 5);
        assert_eq!(s.len(), 2);
        assert!(!old[0].flags.evicted.load(Ordering::Acquire));
    }

    #[test]
    fn a_busy_source_does_not_grow_the_table() {
        let s = slots(100, 10);
        let now = Instant::now();
        for _ in 0..10_000 {
            let (slot, _) = s.admit(ip(1), now).unwrap();
            slot.spoke();
        }
        let t = s.lock();
        assert!(t.conns.is_empty());
        assert_eq!(t.per_source.len(), 1, "its entry stays, for its next one");
        assert_eq!(t.per_source[&ip(1)].held, 0);
        drop(t);
        let held: Vec<Slot> = (0..5).map(|_| s.admit(ip(1), now).unwrap().0).collect();
        for _ in 0..10_000 {
            let (slot, _) = s.admit(ip(1), now).unwrap();
            slot.spoke();
        }
        assert!(s.lock().per_source[&ip(1)].order.len() <= 2 * 6 + 8);
        drop(held);
    }

    #[test]
    fn sources_that_went_are_forgotten_within_a_bound() {
        let s = slots(100, 10);
        let now = Instant::now();
        let held = s.admit(ip(0), now).unwrap().0;
        for n in 1..10_000 {
            let (slot, _) = s.admit(ip(n), now).unwrap();
            slot.spoke();
            assert!(s.lock().per_source.len() <= 2 * 100 + 1);
        }
        // The one still held is never forgotten.
        assert_eq!(s.lock().per_source[&ip(0)].held, 1);
        drop(held);
    }

    #[tokio::test]
    async fn an_evicted_slot_wakes_its_task() {
        let s = slots(1, 1);
        let (a, _) = s.admit(ip(1), Instant::now()).unwrap();
        let waiter = tokio::spawn(async move { a.evicted().await });
        tokio::task::yield_now().await;
        let _b = s.admit(ip(2), Instant::now()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the evicted connection was not woken")
            .unwrap();
    }
}
