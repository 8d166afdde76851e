//! The engine under random faults, on virtual time (the crate's harness):
//! three engines on a link run random discoveries, synchronizations,
//! negotiations and floods while the network drops, duplicates, delays and
//! reorders multicasts and truncates, corrupts and resets unicast. Whatever
//! happens: no panic, every waiting call ends in exactly one event, no
//! channel outlives its deadlines, and every table stays within its bound.

use std::collections::HashMap;
use std::time::Duration;

use grasp_engine::proto::{
    AsaHandle, CommandId, Config, DiscoverOptions, Event, NegotiationOutcome, RegisterOptions,
};
use grasp_engine::testing::{Faults, Net};
use grasp_engine::wire::{MessageType, Objective, ObjectiveFlags, TaggedObjective, Value};
use proptest::prelude::*;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const ENGINES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Discover { from: usize, neg: bool },
    Synchronize { from: usize },
    Negotiate { from: usize, amount: u32 },
    Flood { from: usize, n: u32 },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..ENGINES, any::<bool>()).prop_map(|(from, neg)| Op::Discover { from, neg }),
        (0..ENGINES).prop_map(|from| Op::Synchronize { from }),
        (0..ENGINES, 0u32..200).prop_map(|(from, amount)| Op::Negotiate { from, amount }),
        (0..ENGINES, any::<u32>()).prop_map(|(from, n)| Op::Flood { from, n }),
        (0u64..3000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    let p = || 0.0..0.3f64;
    (p(), p(), p(), 0u64..800, p(), p(), p()).prop_map(
        |(drop, duplicate, delay, max_ms, truncate, corrupt, reset)| Faults {
            drop,
            duplicate,
            delay,
            max_delay: Duration::from_millis(max_ms),
            truncate,
            corrupt,
            reset,
        },
    )
}

/// Small bounds, so that reaching them is part of the test.
fn config(_i: usize) -> Config {
    let mut c = Config::default();
    c.max_channels = 16;
    c.max_discoveries = 8;
    c.discovery_cache_objectives = 4;
    c.discovery_cache_locators = 2;
    c.flood_cache_entries = 4;
    c.max_recent_sessions = 64;
    c
}

struct World {
    net: Net,
    asas: Vec<AsaHandle>,
    started: Vec<(usize, CommandId)>,
    /// Events before this one have been answered.
    answered: usize,
}

impl World {
    fn new(seed: u64, faults: Faults) -> Self {
        let mut net = Net::with(ENGINES, config).faults(seed, faults);
        let mut asas = Vec::new();
        for e in 0..ENGINES {
            let asa = net
                .call(e, |eng, _| eng.register_asa(format!("asa{e}")))
                .unwrap();
            // Engine 2 serves EX.sync, engines 1 and 2 negotiate EX.neg,
            // everyone floods EX.flood: calls cross the network.
            let flood = Objective::new("EX.flood", SYNCH).with_value(Value::from(e as u32));
            net.call(e, |eng, _| {
                eng.register_objective(asa, flood, RegisterOptions::default())
            })
            .unwrap();
            if e == 2 {
                let o = Objective::new("EX.sync", SYNCH).with_value(Value::from(e as u32));
                net.call(e, |eng, _| {
                    eng.register_objective(asa, o.clone(), RegisterOptions::default())
                })
                .unwrap();
                net.call(e, |eng, _| eng.listen_synchronize(asa, o))
                    .unwrap();
            }
            if e >= 1 {
                let neg = Objective::new("EX.neg", NEG).with_value(Value::from(0u32));
                net.call(e, |eng, _| {
                    eng.register_objective(asa, neg, RegisterOptions::default())
                })
                .unwrap();
                net.call(e, |eng, _| eng.listen_negotiate(asa, "EX.neg"))
                    .unwrap();
            }
            asas.push(asa);
        }
        World {
            net,
            asas,
            started: Vec::new(),
            answered: 0,
        }
    }

    /// Starts a waiting call; one the engine refused at once has no event.
    fn start(
        &mut self,
        e: usize,
        f: impl FnOnce(
            &mut grasp_engine::proto::Engine,
            std::time::Instant,
            CommandId,
            AsaHandle,
        ) -> Result<(), grasp_engine::ApiError>,
    ) {
        let asa = self.asas[e];
        if let Ok(id) = self.net.try_start(e, |eng, now, id| f(eng, now, id, asa)) {
            self.started.push((e, id));
        }
        self.answer();
    }

    fn apply(&mut self, op: &Op) {
        let t = Duration::from_secs(2);
        match *op {
            Op::Discover { from, neg } => {
                let o = if neg {
                    Objective::new("EX.neg", NEG)
                } else {
                    Objective::new("EX.sync", SYNCH)
                };
                self.start(from, |eng, now, id, asa| {
                    eng.discover(now, id, asa, o, DiscoverOptions::all(t), false)
                });
            }
            Op::Synchronize { from } => {
                let o = Objective::new("EX.sync", SYNCH);
                self.start(from, |eng, now, id, asa| {
                    eng.synchronize(now, id, asa, o, None, t)
                });
            }
            Op::Negotiate { from, amount } => {
                let o = Objective::new("EX.neg", NEG).with_value(Value::from(amount));
                self.start(from, |eng, now, id, asa| {
                    eng.request_negotiate(now, id, asa, o, None, t)
                });
            }
            Op::Flood { from, n } => {
                let asa = self.asas[from];
                let o = Objective::new("EX.flood", SYNCH).with_value(Value::from(n));
                let tagged = vec![TaggedObjective {
                    objective: o,
                    locator: None,
                }];
                let _ = self
                    .net
                    .call(from, |eng, now| eng.flood(now, asa, 10_000, tagged));
            }
            Op::Advance { ms } => self.net.advance(Duration::from_millis(ms)),
        }
        self.answer();
        self.check_bounds();
    }

    /// The ASAs' side: a responder counters small offers and accepts the
    /// rest; a requester given a counter-offer accepts it. Every session
    /// the engine hands an ASA is answered once.
    fn answer(&mut self) {
        loop {
            let handled = self.answered;
            let Some(i) = self.net.events[handled..].iter().position(|(_, ev)| {
                matches!(
                    ev,
                    Event::NegotiationRequest { .. }
                        | Event::Negotiated {
                            result: Ok(NegotiationOutcome::Step { .. }),
                            ..
                        }
                )
            }) else {
                return;
            };
            let at = handled + i;
            self.answered = at + 1;
            let (e, ev) = &self.net.events[at];
            let (e, asa) = (*e, self.asas[*e]);
            match ev.clone() {
                Event::NegotiationRequest {
                    session, objective, ..
                } => {
                    let small = objective.value.as_ref().and_then(Value::as_u64) < Some(100);
                    let counter = objective.with_value(Value::from(100u32));
                    if small {
                        let t = Duration::from_secs(2);
                        if let Ok(id) = self.net.try_start(e, |eng, now, id| {
                            eng.negotiate_step(now, id, asa, session, counter, t)
                        }) {
                            self.started.push((e, id));
                        }
                    } else {
                        let _ = self
                            .net
                            .call(e, |eng, _| eng.end_negotiate(asa, session, true, None));
                    }
                }
                Event::Negotiated {
                    result: Ok(NegotiationOutcome::Step { session, .. }),
                    ..
                } => {
                    let _ = self
                        .net
                        .call(e, |eng, _| eng.end_negotiate(asa, session, true, None));
                }
                _ => {}
            }
        }
    }

    fn check_bounds(&mut self) {
        let now = self.net.now;
        for (i, eng) in self.net.engines.iter_mut().enumerate() {
            let c = config(i);
            assert!(
                eng.open_channels() <= c.max_channels,
                "engine {i}: channels"
            );
            let d = eng
                .dump(now, self.asas[i])
                .expect("the dump of a registered ASA");
            assert!(
                d.flood_cache.len() <= c.flood_cache_entries,
                "engine {i}: floods"
            );
            assert!(
                d.discovery_cache.len() <= c.discovery_cache_objectives,
                "engine {i}: discovery cache"
            );
            for (name, locs) in &d.discovery_cache {
                assert!(
                    locs.len() <= c.discovery_cache_locators,
                    "engine {i}: {name}"
                );
            }
        }
    }

    /// Runs virtual time until every deadline has passed, then checks that
    /// every call ended exactly once and no channel is left.
    fn settle(&mut self) {
        let end = self.net.now + Duration::from_secs(300);
        let mut steps = 0;
        while self.net.now < end && steps < 10_000 {
            self.net.advance(Duration::from_secs(5));
            self.answer();
            steps += 1;
        }
        let mut ends: HashMap<(usize, CommandId), usize> = HashMap::new();
        for (e, ev) in &self.net.events {
            if let Some(id) = ev.ended_call() {
                *ends.entry((*e, id)).or_default() += 1;
            }
        }
        for key in &self.started {
            assert_eq!(
                ends.remove(key),
                Some(1),
                "call {key:?} must end exactly once"
            );
        }
        assert!(ends.is_empty(), "events for calls never started: {ends:?}");
        for (i, eng) in self.net.engines.iter().enumerate() {
            assert_eq!(
                eng.open_channels(),
                0,
                "engine {i} kept a channel past its deadline"
            );
        }
        self.check_bounds();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn under_random_faults_every_call_ends_once_and_nothing_leaks(
        seed in any::<u64>(),
        faults in faults(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut w = World::new(seed, faults);
        for op in &ops {
            w.apply(op);
        }
        w.settle();
    }
}

/// The same with no faults: everything a call asks for succeeds, over the
/// network (the scenario is not trivially local).
#[test]
fn without_faults_the_calls_succeed() {
    let mut w = World::new(1, Faults::default());
    w.apply(&Op::Synchronize { from: 0 });
    w.apply(&Op::Negotiate {
        from: 0,
        amount: 50,
    });
    w.apply(&Op::Negotiate {
        from: 0,
        amount: 150,
    });
    w.apply(&Op::Flood { from: 1, n: 7 });
    w.apply(&Op::Advance { ms: 10 });
    let s = w.net.engines[0].stats();
    assert_eq!(s.sent.get(MessageType::ReqSyn), 1, "{s:?}");
    assert_eq!(s.sent.get(MessageType::ReqNeg), 2, "{s:?}");
    assert_eq!(s.received.get(MessageType::Flood), 1, "{s:?}");
    let failed: Vec<_> = w
        .net
        .events
        .iter()
        .filter(|(_, ev)| {
            matches!(
                ev,
                Event::Synchronized { result: Err(_), .. }
                    | Event::Negotiated { result: Err(_), .. }
            )
        })
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    w.settle();
}
