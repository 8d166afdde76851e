//! Prefix delegation in the spirit of RFC 8992 (autonomic IPv6 edge prefix
//! management), as graspy's `pfxm3.py` does it.
//!
//! * `PrefixManager.Params` (synchronization, flooded, loop count 4): the
//!   prefix length each role of router gets,
//!   `[[["role","RSG"],["prefix_length",34]], [["role","ASG"],["prefix_length",44]], [["role","CSG"],["prefix_length",56]]]`.
//! * `PrefixManager` (negotiation, loop count 4): a request is
//!   `[6, length, null]`; the delegator answers with one offer
//!   `[6, length, h'<16 bytes>']` carved from its pool, which the requester
//!   accepts if it is at least as large as it asked for (a length no longer
//!   than requested) or declines ("Insufficient offer"). The delegator
//!   declines lengths outside 32..=96 ("Prefix length out of range") and
//!   requests it cannot satisfy ("Prefix pool empty"); a declined offer
//!   goes back to the pool.

use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grasp_engine::wire::{Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::RegisterOptions;
use grasp_engine::{ApiError, Grasp, Negotiation};
use serde::{Deserialize, Serialize};

use super::Transcript;

const STEP: Duration = Duration::from_secs(3);

/// The roles and their prefix lengths, as RFC 8992's example.
pub const PARAMS: [(&str, u8); 3] = [("RSG", 34), ("ASG", 44), ("CSG", 56)];

fn pm() -> Objective {
    Objective::new("PrefixManager", ObjectiveFlags::DISC | ObjectiveFlags::NEG).with_loop_count(4)
}

fn params() -> Objective {
    Objective::new(
        "PrefixManager.Params",
        ObjectiveFlags::DISC | ObjectiveFlags::SYNCH,
    )
    .with_loop_count(4)
}

/// `[ipversion, length, prefix]`.
#[derive(Debug, Serialize, Deserialize)]
struct Pref(u8, u8, Option<serde_bytes_16::B>);

mod serde_bytes_16 {
    //! A byte string (not an array of numbers) in CBOR.
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Debug, Clone)]
    pub(super) struct B(pub(super) Vec<u8>);

    impl Serialize for B {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for B {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = B;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<B, E> {
                    Ok(B(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// `[["role", R], ["prefix_length", L]]`.
type ParamRow<'a> = ((&'a str, &'a str), (&'a str, u8));

fn value_of(p: &Pref) -> Value {
    Value::from_serialize(p).unwrap_or_else(|_| Value::null())
}

/// Delegations a delegator keeps at most: RFC 8992's example has no
/// leases, so nothing is ever given back, and a peer could otherwise ask
/// until memory (and the quadratic search of `Pool::take`) runs out. Beyond
/// it requests are declined ("Delegation table full"); about 50 bytes each.
pub const MAX_DELEGATIONS: usize = 4096;

/// A pool of prefixes of one base, handed out in order.
#[derive(Debug)]
struct Pool {
    base: u128,
    base_len: u8,
    /// Prefixes handed out (as network, length).
    used: Vec<(u128, u8)>,
}

impl Pool {
    fn take(&mut self, len: u8) -> Option<u128> {
        if len < self.base_len || len > 128 || self.base_len == 0 {
            return None;
        }
        let size = |l: u8| 1u128.checked_shl(u32::from(128 - l)).unwrap_or(0).max(1);
        let (step, end) = (size(len), self.base.saturating_add(size(self.base_len)));
        let mut net = self.base;
        // Each pass either finds a free block or jumps past a used one, so
        // this ends after at most used.len() + 1 passes.
        while net.saturating_add(step) <= end {
            let clash = self
                .used
                .iter()
                .find(|&&(u, ul)| net < u.saturating_add(size(ul)) && u < net + step);
            match clash {
                None => {
                    self.used.push((net, len));
                    return Some(net);
                }
                Some(&(u, ul)) => {
                    let past = u.saturating_add(size(ul));
                    // The next block of our size at or after `past`.
                    net = past.div_ceil(step).saturating_mul(step);
                }
            }
        }
        None
    }

    fn give_back(&mut self, net: u128) {
        self.used.retain(|&(u, _)| u != net);
    }
}

/// Runs a delegator with the pool `base/base_len`: floods the parameters
/// every `flood_every` and answers `PrefixManager` requests. Returns the
/// task (abort to stop) and the prefixes delegated so far.
pub async fn delegator(
    grasp: &Grasp,
    base: Ipv6Addr,
    base_len: u8,
    flood_every: Duration,
    t: Arc<Transcript>,
) -> Result<(tokio::task::JoinHandle<()>, Arc<Mutex<Vec<(Ipv6Addr, u8)>>>), ApiError> {
    let asa = grasp.register_asa("pfx-delegator").await?;
    let table: Vec<ParamRow<'_>> = PARAMS
        .iter()
        .map(|&(r, l)| (("role", r), ("prefix_length", l)))
        .collect();
    let p = params().with_value(Value::from_serialize(&table).unwrap_or_else(|_| Value::null()));
    asa.register_objective(&p, RegisterOptions::default())
        .await?;
    asa.listen_synchronize(&p).await?;
    asa.register_objective(&pm(), RegisterOptions::default())
        .await?;
    let listener = asa.listen_negotiate("PrefixManager").await?;
    t.say(
        "pfxm",
        format!("delegating from {base}/{base_len}; flooding PrefixManager.Params"),
    );
    let delegated = Arc::new(Mutex::new(Vec::new()));
    let d2 = delegated.clone();
    let pool = Arc::new(Mutex::new(Pool {
        base: u128::from(base),
        base_len,
        used: Vec::new(),
    }));
    let task = tokio::spawn(async move {
        let fl = {
            let (asa, p) = (asa.clone(), p.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(flood_every);
                loop {
                    tick.tick().await;
                    let _ = asa
                        .flood(
                            60_000,
                            vec![TaggedObjective {
                                objective: p.clone(),
                                locator: None,
                            }],
                        )
                        .await;
                }
            })
        };
        while let Some((session, req)) = listener.next().await {
            let want = req
                .value
                .as_ref()
                .and_then(|v| v.deserialize::<Pref>().ok());
            let Some(Pref(6, len, _)) = want else {
                let _ = session.decline(Some("Only IPv6 prefixes here")).await;
                continue;
            };
            if !(32..=96).contains(&len) {
                t.say("pfxm", format!("declines a /{len}: out of range"));
                let _ = session.decline(Some("Prefix length out of range")).await;
                continue;
            }
            if pool.lock().unwrap_or_else(|e| e.into_inner()).used.len() >= MAX_DELEGATIONS {
                t.say(
                    "pfxm",
                    format!("declines a /{len}: {MAX_DELEGATIONS} delegations held"),
                );
                let _ = session.decline(Some("Delegation table full")).await;
                continue;
            }
            let Some(net) = pool.lock().unwrap_or_else(|e| e.into_inner()).take(len) else {
                t.say("pfxm", format!("declines a /{len}: pool empty"));
                let _ = session.decline(Some("Prefix pool empty")).await;
                continue;
            };
            let addr = Ipv6Addr::from(net);
            t.say("pfxm", format!("offers {addr}/{len}"));
            let offer = req.with_value(value_of(&Pref(
                6,
                len,
                Some(serde_bytes_16::B(addr.octets().to_vec())),
            )));
            match session.step(&offer, STEP).await {
                Ok(Negotiation::Accepted) => {
                    t.say("pfxm", format!("delegated {addr}/{len}"));
                    d2.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((addr, len));
                }
                other => {
                    t.say(
                        "pfxm",
                        format!(
                            "offer of {addr}/{len} not taken ({})",
                            match other {
                                Ok(Negotiation::Declined { reason }) => reason.unwrap_or_default(),
                                Ok(_) => "unexpected step".into(),
                                Err(e) => e.to_string(),
                            }
                        ),
                    );
                    pool.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .give_back(net);
                }
            }
        }
        fl.abort();
    });
    Ok((task, delegated))
}

/// A router of `role` (RSG, ASG or CSG): learns its prefix length from the
/// `PrefixManager.Params` flood (waiting up to `wait`), then negotiates a
/// prefix of that length. Returns the prefix, or `None` if refused.
pub async fn requester(
    grasp: &Grasp,
    role: &str,
    wait: Duration,
    t: &Transcript,
) -> Result<Option<(Ipv6Addr, u8)>, ApiError> {
    let asa = grasp.register_asa(&format!("pfx-{role}")).await?;
    let r = request_as(&asa, role, wait, t).await;
    asa.deregister().await?;
    r
}

async fn request_as(
    asa: &grasp_engine::Asa,
    role: &str,
    wait: Duration,
    t: &Transcript,
) -> Result<Option<(Ipv6Addr, u8)>, ApiError> {
    let t0 = std::time::Instant::now();
    let len = loop {
        let got = asa.get_flood("PrefixManager.Params").await?;
        let table = got
            .first()
            .and_then(|e| e.objective.value.as_ref())
            .and_then(|v| {
                v.deserialize::<Vec<((String, String), (String, u8))>>()
                    .ok()
            });
        if let Some(table) = table {
            match table.iter().find(|((_, r), _)| r == role) {
                Some((_, (_, l))) => break *l,
                None => {
                    t.say(role, "my role is not in PrefixManager.Params");
                    return Ok(None);
                }
            }
        }
        if t0.elapsed() > wait {
            t.say(role, "no PrefixManager.Params flood arrived");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    t.say(role, format!("role {role}: asks for a /{len}"));
    let o = pm().with_value(value_of(&Pref(6, len, None)));
    asa.register_objective(&o, RegisterOptions::default())
        .await?;
    match asa.request_negotiate(&o, None, STEP).await? {
        Negotiation::Step { session, objective } => {
            match objective
                .value
                .as_ref()
                .and_then(|v| v.deserialize::<Pref>().ok())
            {
                Some(Pref(6, got, Some(b))) if got <= len && b.0.len() == 16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&b.0);
                    session.accept().await?;
                    let addr = Ipv6Addr::from(a);
                    t.say(role, format!("accepted {addr}/{got}"));
                    Ok(Some((addr, got)))
                }
                _ => {
                    session.decline(Some("Insufficient offer")).await?;
                    t.say(role, "declined the offer: Insufficient offer");
                    Ok(None)
                }
            }
        }
        Negotiation::Declined { reason } => {
            t.say(role, format!("refused: {}", reason.unwrap_or_default()));
            Ok(None)
        }
        Negotiation::Accepted => Ok(None),
    }
}
