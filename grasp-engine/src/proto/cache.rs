//! Bounded caches: discovery results, flood contents, recent sessions, and
//! token buckets.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::types::{is_link_local, AsaLocator, FloodEntry, RateLimit};
use crate::wire::{Locator, SessionId};

/// Where a cached locator came from.
#[derive(Clone, Debug)]
struct Cached {
    loc: AsaLocator,
    learnt_on: u32,
}

#[derive(Debug)]
struct CacheObjective {
    locs: Vec<Cached>,
    used: u64,
}

/// The discovery cache (RFC 8990 §2.5.4.5): per objective, de-duplicated
/// locators with their expiry, least recently used objectives evicted.
#[derive(Debug)]
pub(crate) struct DiscoveryCache {
    map: HashMap<String, CacheObjective>,
    clock: u64,
    max_objectives: usize,
    max_locators: usize,
}

fn same_endpoint(a: &Locator, b: &Locator) -> bool {
    match (a, b) {
        (
            Locator::Ipv6 {
                addr: x, port: p, ..
            },
            Locator::Ipv6 {
                addr: y, port: q, ..
            },
        ) => x == y && p == q,
        (
            Locator::Ipv4 {
                addr: x, port: p, ..
            },
            Locator::Ipv4 {
                addr: y, port: q, ..
            },
        ) => x == y && p == q,
        _ => a == b,
    }
}

impl DiscoveryCache {
    /// Objectives with cached answers.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn new(max_objectives: usize, max_locators: usize) -> Self {
        DiscoveryCache {
            map: HashMap::new(),
            clock: 0,
            max_objectives: max_objectives.max(1),
            max_locators: max_locators.max(1),
        }
    }

    /// The objective names it holds locators for.
    pub(crate) fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Adds or refreshes a locator (the later expiry and the latest
    /// objective win).
    pub(crate) fn insert(&mut self, name: &str, loc: AsaLocator, learnt_on: u32) {
        self.clock += 1;
        if !self.map.contains_key(name) && self.map.len() >= self.max_objectives {
            if let Some(victim) = self
                .map
                .iter()
                .min_by_key(|(_, o)| o.used)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&victim);
            }
        }
        let clock = self.clock;
        let obj = self
            .map
            .entry(name.to_string())
            .or_insert_with(|| CacheObjective {
                locs: Vec::new(),
                used: clock,
            });
        obj.used = clock;
        if let Some(c) = obj
            .locs
            .iter_mut()
            .find(|c| same_endpoint(&c.loc.locator, &loc.locator))
        {
            if loc.expires > c.loc.expires || loc.expires.is_none() {
                c.loc.expires = loc.expires;
            }
            c.loc.objective = loc.objective;
            c.loc.diverted &= loc.diverted;
            c.learnt_on = learnt_on;
            return;
        }
        if obj.locs.len() >= self.max_locators {
            if let Some(i) = obj
                .locs
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.loc.expires)
                .map(|(i, _)| i)
            {
                obj.locs.swap_remove(i);
            }
        }
        obj.locs.push(Cached { loc, learnt_on });
    }

    /// Unexpired locators for `name` (expired ones are deleted).
    pub(crate) fn get(&mut self, name: &str, now: Instant) -> Vec<AsaLocator> {
        self.clock += 1;
        let clock = self.clock;
        let Some(obj) = self.map.get_mut(name) else {
            return Vec::new();
        };
        obj.used = clock;
        obj.locs.retain(|c| c.loc.expires.is_none_or(|e| e > now));
        let out: Vec<AsaLocator> = obj.locs.iter().map(|c| c.loc.clone()).collect();
        if obj.locs.is_empty() {
            self.map.remove(name);
        }
        out
    }

    /// Drops locators with at most `min_ttl` left (all of them with `None`).
    pub(crate) fn flush(&mut self, name: &str, now: Instant, min_ttl: Option<Duration>) {
        match min_ttl {
            None => {
                self.map.remove(name);
            }
            Some(min) => {
                if let Some(obj) = self.map.get_mut(name) {
                    obj.locs
                        .retain(|c| c.loc.expires.is_none_or(|e| e > now + min));
                }
            }
        }
    }

    /// Locators to offer in an O_DIVERT to a discovery that arrived on
    /// `ifindex`: unexpired, not link-local (RFC 8990 §2.9.5.1), not learnt on
    /// that interface (§2.5.4.2). Also returns the smallest remaining
    /// lifetime in ms.
    pub(crate) fn divert_for(
        &mut self,
        name: &str,
        now: Instant,
        ifindex: u32,
    ) -> Option<(Vec<Locator>, u32)> {
        let obj = self.map.get_mut(name)?;
        obj.locs.retain(|c| c.loc.expires.is_none_or(|e| e > now));
        let mut ttl: Option<Duration> = None;
        let mut out = Vec::new();
        for c in &obj.locs {
            if c.learnt_on == ifindex && ifindex != 0 {
                continue;
            }
            if let Locator::Ipv6 { addr, .. } = &c.loc.locator {
                if is_link_local(addr) {
                    continue;
                }
            }
            if let Some(e) = c.loc.expires {
                let left = e - now;
                ttl = Some(ttl.map_or(left, |t| t.min(left)));
            }
            out.push(c.loc.locator.clone());
        }
        if out.is_empty() {
            return None;
        }
        let ms = ttl.map_or(600_000, |t| {
            t.as_millis().clamp(1, u128::from(u32::MAX)) as u32
        });
        Some((out, ms))
    }

    /// Whether anything at all is cached for `name` (before interface filtering).
    pub(crate) fn has(&self, name: &str, now: Instant) -> bool {
        // Expired locators do not count: an objective whose answers have
        // all expired is unknown again (and a relay must relay it).
        self.map
            .get(name)
            .is_some_and(|o| o.locs.iter().any(|c| c.loc.expires.is_none_or(|e| e > now)))
    }
}

/// The flood cache (RFC 8990 §2.8.11): keyed by objective name, initiator
/// and locator tag, so floods of one objective from different sources do not
/// overwrite each other. Oldest entries are evicted beyond the bound.
#[derive(Debug)]
pub(crate) struct FloodCache {
    map: HashMap<String, Vec<(u64, FloodEntry)>>,
    count: usize,
    seq: u64,
    max: usize,
}

impl FloodCache {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn new(max: usize) -> Self {
        FloodCache {
            map: HashMap::new(),
            count: 0,
            seq: 0,
            max: max.max(1),
        }
    }

    pub(crate) fn insert(&mut self, e: FloodEntry) {
        self.seq += 1;
        let seq = self.seq;
        let v = self.map.entry(e.objective.name.clone()).or_default();
        if let Some(slot) = v
            .iter_mut()
            .find(|(_, x)| x.initiator == e.initiator && x.locator == e.locator)
        {
            *slot = (seq, e);
            return;
        }
        v.push((seq, e));
        self.count += 1;
        if self.count > self.max {
            // Evict the oldest entry overall.
            if let Some((name, idx)) = self
                .map
                .iter()
                .flat_map(|(k, v)| v.iter().enumerate().map(move |(i, (s, _))| (*s, k, i)))
                .min_by_key(|(s, _, _)| *s)
                .map(|(_, k, i)| (k.clone(), i))
            {
                if let Some(v) = self.map.get_mut(&name) {
                    v.remove(idx);
                    if v.is_empty() {
                        self.map.remove(&name);
                    }
                }
                self.count -= 1;
            }
        }
    }

    /// The objective names it holds floods of.
    pub(crate) fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Unexpired entries for `name`, most recent first; expired ones are deleted.
    pub(crate) fn get(&mut self, name: &str, now: Instant) -> Vec<FloodEntry> {
        let Some(v) = self.map.get_mut(name) else {
            return Vec::new();
        };
        let before = v.len();
        v.retain(|(_, e)| e.expires.is_none_or(|t| t > now));
        self.count -= before - v.len();
        let mut out: Vec<(u64, FloodEntry)> = v.clone();
        if v.is_empty() {
            self.map.remove(name);
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out.into_iter().map(|(_, e)| e).collect()
    }

    /// Removes one entry; true if it was there.
    pub(crate) fn remove(&mut self, e: &FloodEntry) -> bool {
        let Some(v) = self.map.get_mut(&e.objective.name) else {
            return false;
        };
        let before = v.len();
        v.retain(|(_, x)| !(x.initiator == e.initiator && x.locator == e.locator));
        let removed = before - v.len();
        self.count -= removed;
        if v.is_empty() {
            self.map.remove(&e.objective.name);
        }
        removed > 0
    }
}

/// (session id, initiator) pairs seen recently, for loop prevention and id
/// clash avoidance; bounded, oldest forgotten first.
#[derive(Debug)]
pub(crate) struct RecentSessions {
    map: HashMap<(SessionId, IpAddr), Instant>,
    order: VecDeque<(SessionId, IpAddr)>,
    max: usize,
}

impl RecentSessions {
    pub(crate) fn new(max: usize) -> Self {
        RecentSessions {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    pub(crate) fn contains(&self, key: &(SessionId, IpAddr), now: Instant) -> bool {
        self.map.get(key).is_some_and(|t| *t > now)
    }

    /// Remembers `key` until `until`, forgetting the oldest entry if full.
    pub(crate) fn insert(&mut self, key: (SessionId, IpAddr), until: Instant, now: Instant) {
        // Forget expired entries at the front, then the oldest while full.
        while let Some(front) = self.order.front().copied() {
            let expired = self.map.get(&front).is_none_or(|t| *t <= now);
            if expired || self.map.len() >= self.max {
                self.order.pop_front();
                self.map.remove(&front);
            } else {
                break;
            }
        }
        if self.map.insert(key, until).is_none() {
            self.order.push_back(key);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A token bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    limit: RateLimit,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: limit.burst,
            last: now,
            limit,
        }
    }

    /// The tokens there are at `now`.
    pub(crate) fn level(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.limit.rate).min(self.limit.burst);
        self.tokens
    }

    /// Its rate and burst.
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if self.level(now) >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Objective, ObjectiveFlags};

    fn loc(a: &str, port: u16, expires: Option<Instant>) -> AsaLocator {
        AsaLocator {
            expires,
            ..AsaLocator::new(Locator::tcp6(a.parse().unwrap(), port))
        }
    }

    #[test]
    fn discovery_cache_dedup_expiry_divert_and_lru() {
        let t0 = Instant::now();
        let mut c = DiscoveryCache::new(2, 2);
        c.insert("A", loc("fd00::1", 1, Some(t0 + Duration::from_secs(1))), 1);
        c.insert("A", loc("fd00::1", 1, Some(t0 + Duration::from_secs(5))), 1);
        assert_eq!(c.get("A", t0).len(), 1, "duplicates merge");
        assert_eq!(c.get("A", t0)[0].expires, Some(t0 + Duration::from_secs(5)));
        c.insert("A", loc("fe80::1", 1, Some(t0 + Duration::from_secs(9))), 2);
        // Not on the interface it was learnt on; never link-local.
        assert!(c.divert_for("A", t0, 1).is_none());
        let (d, ttl) = c.divert_for("A", t0, 2).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(ttl, 5000);
        // Per-objective bound: the soonest to expire goes.
        c.insert("A", loc("fd00::3", 1, Some(t0 + Duration::from_secs(7))), 1);
        assert_eq!(c.get("A", t0).len(), 2);
        // Objective bound: least recently used goes.
        c.insert("B", loc("fd00::4", 1, None), 1);
        c.get("A", t0);
        c.insert("C", loc("fd00::5", 1, None), 1);
        assert!(!c.has("B", t0));
        assert!(c.has("A", t0) && c.has("C", t0));
        // Expiry: an objective whose locators have all expired is unknown
        // (a relay relays it again).
        assert!(!c.has("A", t0 + Duration::from_secs(60)));
        assert!(c.get("A", t0 + Duration::from_secs(60)).is_empty());
        c.flush("C", t0, None);
        assert!(!c.has("C", t0));
    }

    fn flood(name: &str, init: &str, t: Option<Instant>) -> FloodEntry {
        FloodEntry {
            objective: Objective::new(name, ObjectiveFlags::SYNCH),
            locator: None,
            initiator: init.parse().unwrap(),
            expires: t,
            ifindex: 1,
        }
    }

    #[test]
    fn flood_cache_keys_bounds_and_expiry() {
        let t0 = Instant::now();
        let mut f = FloodCache::new(3);
        f.insert(flood("X", "fd00::1", None));
        f.insert(flood("X", "fd00::2", None));
        f.insert(flood("X", "fd00::1", None)); // overwrite
        assert_eq!(f.get("X", t0).len(), 2, "different sources do not collide");
        f.insert(flood("Y", "fd00::1", Some(t0 + Duration::from_secs(1))));
        f.insert(flood("Z", "fd00::1", None)); // evicts the oldest (X from fd00::2)
        assert_eq!(f.get("X", t0).len(), 1);
        assert!(f.get("Y", t0 + Duration::from_secs(2)).is_empty());
        assert!(f.remove(&flood("Z", "fd00::1", None)));
        assert!(f.get("Z", t0).is_empty());
    }

    #[test]
    fn recent_sessions_bound() {
        let t0 = Instant::now();
        let mut r = RecentSessions::new(2);
        let k = |n| (SessionId(n), "fd00::1".parse().unwrap());
        r.insert(k(1), t0 + Duration::from_secs(10), t0);
        r.insert(k(2), t0 + Duration::from_secs(10), t0);
        r.insert(k(3), t0 + Duration::from_secs(10), t0);
        assert!(r.len() <= 2);
        assert!(r.contains(&k(3), t0));
        assert!(!r.contains(&k(1), t0));
        assert!(!r.contains(&k(3), t0 + Duration::from_secs(11)));
    }

    #[test]
    fn bucket_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            RateLimit {
                rate: 10.0,
                burst: 2.0,
            },
            t0,
        );
        assert!(b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
