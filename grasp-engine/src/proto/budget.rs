//! Rate budgets for relaying and responding, per interface and, under that,
//! per source, so that one storming source cannot spend what the others need.
//!
//! Each interface has a pool per kind of work (a token bucket: the RFC's
//! "rate-limit total relayed discoveries", §2.5.4.4, §2.5.6.2). Each source
//! of that work, named by its link-local address and, for relaying, also by
//! the initiator it claims, has a bucket of its own under the pool. Work is
//! done only if the pool and every bucket of its sources have a token, and a
//! "heavy" source (one that has spent more than half of its own bucket, or
//! was refused in the last second) cannot take the pool's last quarter: that
//! reserve is kept for light sources. So one storming source gets at most
//! its own rate, and even several storming sources leave the reserve to
//! everyone else; the storm pays first.
//!
//! The source table is bounded ([`MAX_SOURCES`] buckets). A bucket that has
//! refilled completely says nothing and is forgotten first; when the table is
//! full of sources that are all spending, newcomers share one overflow bucket
//! per interface and kind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::cache::Bucket;
use super::RateLimit;

/// Source buckets kept (about 100 bytes each).
pub(crate) const MAX_SOURCES: usize = 4096;

/// How long a refused source counts as heavy.
const HEAVY_FOR: Duration = Duration::from_secs(1);

/// What the work is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Work {
    /// Relaying a discovery.
    Relay,
    /// Relaying a flood.
    FloodRelay,
    /// Answering a discovery (a TCP connection to its sender).
    Response,
}

/// Who asks for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The link-local address the multicast came from.
    Neighbour(IpAddr),
    /// The initiator the message names.
    Initiator(IpAddr),
    /// Every source that found the table full.
    Overflow,
}

/// Why work was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The interface's pool is empty.
    Pool,
    /// A source has spent its own budget (or, being heavy, met the reserve).
    Source,
}

/// The rates of one kind of work: the pool per interface and each source's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rates {
    pub(crate) pool: RateLimit,
    pub(crate) per_source: RateLimit,
}

#[derive(Debug)]
struct Share {
    bucket: Bucket,
    refused_at: Option<Instant>,
}

impl Share {
    fn heavy(&mut self, now: Instant) -> bool {
        let half = self.bucket.limit().burst / 2.0;
        self.bucket.level(now) < half
            || self
                .refused_at
                .is_some_and(|t| now.saturating_duration_since(t) < HEAVY_FOR)
    }
}

#[derive(Debug)]
pub(crate) struct Budgets {
    pools: HashMap<(u32, Work), Bucket>,
    sources: HashMap<(u32, Work, Source), Share>,
}

impl Budgets {
    pub(crate) fn new() -> Self {
        Budgets {
            pools: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Takes a token for `work` on `ifindex` asked for by `sources`, or says
    /// who is out of budget.
    pub(crate) fn take(
        &mut self,
        now: Instant,
        ifindex: u32,
        work: Work,
        rates: Rates,
        sources: &[Source],
    ) -> Result<(), Refused> {
        let mut keys: [Option<(u32, Work, Source)>; 2] = [None; 2];
        let mut heavy = false;
        let mut broke = false;
        for (slot, s) in keys.iter_mut().zip(sources) {
            let key = self.source_key(now, ifindex, work, *s, rates.per_source);
            let share = self.sources.entry(key).or_insert_with(|| Share {
                bucket: Bucket::new(rates.per_source, now),
                refused_at: None,
            });
            if share.bucket.level(now) < 1.0 {
                share.refused_at = Some(now);
                broke = true;
            }
            heavy |= share.heavy(now);
            *slot = Some(key);
        }
        // Whoever is refused, for whatever reason, counts as heavy a while:
        // it asked for more than there was.
        let refuse = |b: &mut Self, why| {
            for k in keys.iter().flatten() {
                if let Some(s) = b.sources.get_mut(k) {
                    s.refused_at = Some(now);
                }
            }
            Err(why)
        };
        if broke {
            return refuse(self, Refused::Source);
        }
        let pool = self
            .pools
            .entry((ifindex, work))
            .or_insert_with(|| Bucket::new(rates.pool, now));
        let level = pool.level(now);
        if level < 1.0 {
            return refuse(self, Refused::Pool);
        }
        if heavy && level < rates.pool.burst / 4.0 {
            return refuse(self, Refused::Source);
        }
        pool.take(now);
        for k in keys.into_iter().flatten() {
            if let Some(s) = self.sources.get_mut(&k) {
                s.bucket.take(now);
            }
        }
        Ok(())
    }

    /// The table key for `source`: its own, or the overflow bucket when
    /// the table is full (after forgetting the buckets that have refilled).
    fn source_key(
        &mut self,
        now: Instant,
        ifindex: u32,
        work: Work,
        source: Source,
        per_source: RateLimit,
    ) -> (u32, Work, Source) {
        let key = (ifindex, work, source);
        if self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES {
            return key;
        }
        // Forget what says nothing: full buckets of sources not refused lately.
        self.sources
            .retain(|_, s| s.heavy(now) || s.bucket.level(now) < s.bucket.limit().burst);
        if self.sources.len() < MAX_SOURCES {
            return key;
        }
        let overflow = (ifindex, work, Source::Overflow);
        if !self.sources.contains_key(&overflow) {
            // Make room for it: it stands for everyone the table cannot hold.
            if let Some(k) = self.sources.keys().next().copied() {
                self.sources.remove(&k);
            }
            self.sources.insert(
                overflow,
                Share {
                    bucket: Bucket::new(per_source, now),
                    refused_at: None,
                },
            );
        }
        overflow
    }

    /// Source buckets held (for tests and bounds).
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn n(i: u16) -> Source {
        Source::Neighbour(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i)))
    }

    const RATES: Rates = Rates {
        pool: RateLimit {
            rate: 40.0,
            burst: 40.0,
        },
        per_source: RateLimit {
            rate: 10.0,
            burst: 10.0,
        },
    };

    #[test]
    fn one_storming_source_gets_its_own_rate_only() {
        let mut b = Budgets::new();
        let t0 = Instant::now();
        let mut storm = 0;
        let mut other = 0;
        // 100 s: the storm asks 1000 times a second, a light source once.
        for ms in 0..100_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if b.take(now, 1, Work::Relay, RATES, &[n(1)]).is_ok() {
                storm += 1;
            }
            if ms % 1000 == 0 && b.take(now, 1, Work::Relay, RATES, &[n(2)]).is_ok() {
                other += 1;
            }
        }
        assert!((1000..=1015).contains(&storm), "{storm}");
        assert_eq!(other, 100, "the light source never waited");
    }

    #[test]
    fn several_storming_sources_leave_the_reserve_to_light_ones() {
        let mut b = Budgets::new();
        let t0 = Instant::now();
        let mut light = 0;
        let mut heavy = 0;
        for ms in 0..20_000u64 {
            let now = t0 + Duration::from_millis(ms);
            // Eight storming sources, each well over its own rate: together
            // twice the pool.
            for s in 10..18 {
                if b.take(now, 1, Work::Relay, RATES, &[n(s)]).is_ok() {
                    heavy += 1;
                }
            }
            // Ten light sources, one request each every 2 s (5/s in all),
            // from the first second on (the storm starts with a full pool).
            if ms % 200 == 0 && ms >= 1000 {
                let s = 100 + ((ms / 200) % 10) as u16;
                if b.take(now, 1, Work::Relay, RATES, &[n(s)]).is_ok() {
                    light += 1;
                }
            }
        }
        assert_eq!(light, 95, "every light request passed");
        assert!(heavy <= 40 * 20 + 40, "{heavy}");
    }

    #[test]
    fn every_source_named_must_have_budget() {
        let mut b = Budgets::new();
        let now = Instant::now();
        let init = Source::Initiator(IpAddr::V6(Ipv6Addr::LOCALHOST));
        // One initiator behind many neighbours (spoofed sources): its own
        // bucket stops it.
        let ok = (0..100)
            .filter(|i| b.take(now, 1, Work::Relay, RATES, &[n(*i), init]).is_ok())
            .count();
        assert_eq!(ok, 10);
        assert_eq!(
            b.take(now, 1, Work::Relay, RATES, &[n(500), init]),
            Err(Refused::Source)
        );
        // Interfaces and kinds of work have separate pools.
        assert!(b.take(now, 2, Work::Relay, RATES, &[n(1)]).is_ok());
        assert!(b.take(now, 1, Work::Response, RATES, &[n(1)]).is_ok());
    }

    #[test]
    fn the_source_table_is_bounded() {
        let mut b = Budgets::new();
        let now = Instant::now();
        let mut passed = 0;
        for i in 0..(MAX_SOURCES as u32 + 5000) {
            let s = Source::Neighbour(IpAddr::V6(Ipv6Addr::from(u128::from(i) + 1)));
            let big = Rates {
                pool: RateLimit {
                    rate: 1e9,
                    burst: 1e9,
                },
                ..RATES
            };
            if b.take(now, 1, Work::Response, big, &[s]).is_ok() {
                passed += 1;
            }
            assert!(b.sources() <= MAX_SOURCES);
        }
        // Beyond the table, newcomers share the overflow bucket.
        assert!(passed < MAX_SOURCES + 5000);
        assert!(passed >= MAX_SOURCES);
    }
}
