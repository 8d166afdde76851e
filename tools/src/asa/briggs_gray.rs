//! Briggs and Gray, the negotiating pair of the graspy API document.
//!
//! **Briggs** (a bank) offers three objectives:
//! * `EX1` (synchronization, loop count 4): the time, flooded periodically;
//! * `EX2` (synchronization, loop count 4): `[1, "two", 3]`, answered on
//!   request;
//! * `EX3` (negotiation): loans in `["NZD", amount]`. For each request
//!   Briggs draws its reserves (100..400). A request of at most half the
//!   reserves is accepted at once; otherwise Briggs offers half its
//!   reserves and raises the offer by 10 each round while it is under 60%
//!   of its reserves, then declines ("Insufficient funds"). Any other
//!   currency is declined ("Invalid currency"). Now and then it asks for
//!   more time first (M_WAIT), as graspy's Briggs does.
//!
//! **Gray** (a borrower) synchronizes `EX2`, reads the `EX1` flood, then
//! asks to borrow `iwant` (10..500). Its target starts at 90% of `iwant`
//! and falls by 10% each round; it accepts an offer that meets the target
//! and declines ("You are mean!") once the target would drop below 70% of
//! `iwant`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_engine::wire::{Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::{ApiError, Asa, Grasp, Negotiation, Session};
use grasp_engine::{DiscoverOptions, RegisterOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ms, Transcript};

/// Step timeout of both sides.
const STEP: Duration = Duration::from_secs(3);

/// The loop count graspy's Briggs gives its objectives (how many hops a
/// discovery or flood of them travels).
pub const REACH: u8 = 4;

fn sync_obj(name: &str, reach: u8) -> Objective {
    Objective::new(name, ObjectiveFlags::DISC | ObjectiveFlags::SYNCH).with_loop_count(reach)
}

fn loan_obj(reach: u8) -> Objective {
    Objective::new("EX3", ObjectiveFlags::DISC | ObjectiveFlags::NEG).with_loop_count(reach.max(6))
}

fn loan(currency: &str, amount: i64) -> Value {
    Value::from_serialize(&(currency, amount)).unwrap_or_else(|_| Value::null())
}

fn read_loan(v: &Option<Value>) -> Option<(String, i64)> {
    v.as_ref()?.deserialize::<(String, i64)>().ok()
}

/// Runs Briggs on `grasp` until the returned task is aborted: registers
/// EX1, EX2 and EX3, floods EX1 every `flood_every`, and answers loan
/// requests.
pub async fn briggs(
    grasp: &Grasp,
    seed: u64,
    flood_every: Duration,
    t: Arc<Transcript>,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    briggs_with(grasp, seed, flood_every, REACH, t).await
}

/// [`briggs`] with objectives of loop count `reach` (for domains wider
/// than graspy's 4 hops).
pub async fn briggs_with(
    grasp: &Grasp,
    seed: u64,
    flood_every: Duration,
    reach: u8,
    t: Arc<Transcript>,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    let asa = grasp.register_asa("Briggs").await?;
    let ex1 = sync_obj("EX1", reach).with_value(Value::from("the time from Briggs"));
    let ex2 = sync_obj("EX2", reach)
        .with_value(Value::from_serialize(&(1, "two", 3)).unwrap_or_else(|_| Value::null()));
    let ex3 = loan_obj(reach).with_value(loan("NZD", 0));
    for o in [&ex1, &ex2, &ex3] {
        asa.register_objective(o, RegisterOptions::default())
            .await?;
    }
    asa.listen_synchronize(&ex2).await?;
    asa.listen_synchronize(&ex1).await?;
    let listener = asa.listen_negotiate("EX3").await?;
    t.say(
        "Briggs",
        "registered EX1 (flooded), EX2 (synchronization) and EX3 (loans)",
    );
    let (fl_asa, fl_t) = (asa.clone(), t.clone());
    let flooder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(flood_every);
        loop {
            tick.tick().await;
            let r = fl_asa
                .flood(
                    60_000,
                    vec![TaggedObjective {
                        objective: ex1.clone(),
                        locator: None,
                    }],
                )
                .await;
            match r {
                Ok(()) => fl_t.say(
                    "Briggs",
                    format!("flooded EX1 (loop count {reach}, ttl 60 s)"),
                ),
                Err(e) => fl_t.say("Briggs", format!("flood failed: {e}")),
            }
        }
    });
    Ok(tokio::spawn(async move {
        let _flooder = AbortOnDrop(flooder);
        let mut rng = StdRng::seed_from_u64(seed);
        while let Some((session, request)) = listener.next().await {
            let reserves: i64 = rng.random_range(100..400);
            let wait = rng.random_bool(0.3);
            let t = t.clone();
            tokio::spawn(async move {
                if let Err(e) = bank(session, request, reserves, wait, &t).await {
                    t.say("Briggs", format!("session failed: {e}"));
                }
            });
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One loan negotiation, Briggs's side.
async fn bank(
    session: Session,
    request: Objective,
    reserves: i64,
    ask_wait: bool,
    t: &Transcript,
) -> Result<(), ApiError> {
    let Some((currency, want)) = read_loan(&request.value) else {
        return session.decline(Some("Invalid request")).await;
    };
    t.say(
        "Briggs",
        format!(
            "asked for {currency} {want}{}; reserves {reserves}",
            if request.flags.contains(ObjectiveFlags::NEG_DRY) {
                " (dry run)"
            } else {
                ""
            }
        ),
    );
    if currency != "NZD" {
        t.say("Briggs", "declines: Invalid currency");
        return session.decline(Some("Invalid currency")).await;
    }
    if want <= reserves / 2 {
        t.say("Briggs", format!("accepts {want} at once"));
        return session.accept().await;
    }
    let mut offer = reserves / 2;
    let mut waited = false;
    let mut session = session;
    loop {
        t.say("Briggs", format!("offers {offer}"));
        let step = request.clone().with_value(loan("NZD", offer));
        match session.step(&step, STEP).await? {
            Negotiation::Accepted => {
                t.say("Briggs", format!("Gray accepted {offer}"));
                return Ok(());
            }
            Negotiation::Declined { reason } => {
                t.say(
                    "Briggs",
                    format!("Gray declined: {}", reason.unwrap_or_default()),
                );
                return Ok(());
            }
            Negotiation::Step {
                session: s,
                objective,
            } => {
                session = s;
                let asked = read_loan(&objective.value).map_or(want, |(_, n)| n);
                t.say(
                    "Briggs",
                    format!(
                        "Gray now asks {asked} (loop count {})",
                        objective.loop_count
                    ),
                );
                if ask_wait && !waited {
                    waited = true;
                    t.say("Briggs", "asks for 300 ms to think (M_WAIT)");
                    session.wait(Duration::from_millis(300)).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if offer * 10 < reserves * 6 {
                    offer = (offer + 10).min(asked - 1);
                } else {
                    t.say("Briggs", "declines: Insufficient funds");
                    return session.decline(Some("Insufficient funds")).await;
                }
            }
        }
    }
}

/// What Gray's run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoanResult {
    /// A loan of this amount.
    Agreed(i64),
    /// No loan, and why.
    Refused(String),
}

/// Gray's steps, with their times.
#[derive(Debug, Clone, Default)]
pub struct GrayReport {
    /// Where EX2 was found, whether through a relay, and how long it took.
    pub discovery: Option<(String, bool, Duration)>,
    /// EX2's value and how long the synchronization took.
    pub sync: Option<(String, Duration)>,
    /// EX1's flooded value, its loop count on arrival, and how long after
    /// Gray started looking.
    pub flood: Option<(String, u8, Duration)>,
    /// The loan negotiation: what was asked, how it ended, rounds, time.
    pub negotiation: Option<(i64, LoanResult, u32, Duration)>,
}

/// Runs Gray once on `grasp`: discover and synchronize EX2, read the EX1
/// flood (waiting up to `flood_wait`), and negotiate one loan.
pub async fn gray(
    grasp: &Grasp,
    seed: u64,
    flood_wait: Duration,
    t: &Transcript,
) -> Result<GrayReport, ApiError> {
    gray_with(grasp, seed, flood_wait, REACH, t).await
}

/// [`gray`] discovering and negotiating with loop count `reach`.
pub async fn gray_with(
    grasp: &Grasp,
    seed: u64,
    flood_wait: Duration,
    reach: u8,
    t: &Transcript,
) -> Result<GrayReport, ApiError> {
    let asa = grasp.register_asa("Gray").await?;
    let r = gray_as(&asa, seed, flood_wait, reach, t).await;
    // Gone when done, so Gray can run again on the same node.
    asa.deregister().await?;
    r
}

async fn gray_as(
    asa: &Asa,
    seed: u64,
    flood_wait: Duration,
    reach: u8,
    t: &Transcript,
) -> Result<GrayReport, ApiError> {
    let mut report = GrayReport::default();
    let mut rng = StdRng::seed_from_u64(seed);

    // Discovery across the relays, first answer.
    let t0 = Instant::now();
    let found = asa
        .discover(
            &sync_obj("EX2", reach),
            DiscoverOptions::first(Duration::from_secs(2)),
        )
        .await?;
    let Some(at) = found.first().cloned() else {
        t.say("Gray", "nobody offers EX2");
        return Ok(report);
    };
    let took = t0.elapsed();
    t.say(
        "Gray",
        format!(
            "discovered EX2 at {}{} in {}",
            at.locator,
            if at.diverted { " (answer relayed)" } else { "" },
            ms(took)
        ),
    );
    report.discovery = Some((at.locator.to_string(), at.diverted, took));

    let t0 = Instant::now();
    let got = asa
        .synchronize(&sync_obj("EX2", reach), Some(at), STEP)
        .await?;
    let v = got.value.map(|v| v.to_string()).unwrap_or_default();
    let took = t0.elapsed();
    t.say("Gray", format!("synchronized EX2 = {v} in {}", ms(took)));
    report.sync = Some((v, took));

    report.flood = wait_flood(asa, flood_wait, t).await?;

    // One loan.
    let iwant: i64 = rng.random_range(10..500);
    let limit = iwant * 7 / 10;
    let t0 = Instant::now();
    let o = loan_obj(reach).with_value(loan("NZD", iwant));
    asa.register_objective(&o, RegisterOptions::default())
        .await?;
    t.say(
        "Gray",
        format!("asks to borrow NZD {iwant} (will not go below {limit})"),
    );
    let mut rounds = 1;
    let mut target = iwant * 9 / 10;
    let mut answer = asa.request_negotiate(&o, None, STEP).await?;
    let result = loop {
        match answer {
            Negotiation::Accepted => break LoanResult::Agreed(iwant),
            Negotiation::Declined { reason } => {
                break LoanResult::Refused(reason.unwrap_or_default())
            }
            Negotiation::Step { session, objective } => {
                let offer = read_loan(&objective.value).map_or(0, |(_, n)| n);
                t.say(
                    "Gray",
                    format!(
                        "Briggs offers {offer} (loop count {})",
                        objective.loop_count
                    ),
                );
                if offer >= target {
                    session.accept().await?;
                    t.say("Gray", format!("accepts {offer}"));
                    break LoanResult::Agreed(offer);
                }
                target = target * 9 / 10;
                if target < limit {
                    session.decline(Some("You are mean!")).await?;
                    t.say("Gray", "declines: You are mean!");
                    break LoanResult::Refused("You are mean!".into());
                }
                rounds += 1;
                t.say("Gray", format!("asks for {target} instead"));
                answer = session
                    .step(&objective.with_value(loan("NZD", target)), STEP)
                    .await?;
            }
        }
    };
    let took = t0.elapsed();
    match &result {
        LoanResult::Agreed(n) => t.say(
            "Gray",
            format!(
                "loan of NZD {n} agreed after {rounds} round(s), {}",
                ms(took)
            ),
        ),
        LoanResult::Refused(r) => t.say(
            "Gray",
            format!("no loan ({r}) after {rounds} round(s), {}", ms(took)),
        ),
    }
    report.negotiation = Some((iwant, result, rounds, took));
    Ok(report)
}

async fn wait_flood(
    asa: &Asa,
    wait: Duration,
    t: &Transcript,
) -> Result<Option<(String, u8, Duration)>, ApiError> {
    let t0 = Instant::now();
    loop {
        if let Some(e) = asa.get_flood("EX1").await?.into_iter().next() {
            let v = e.objective.value.map(|v| v.to_string()).unwrap_or_default();
            t.say(
                "Gray",
                format!(
                    "has the EX1 flood = {v} from {} (loop count {} on arrival)",
                    e.initiator, e.objective.loop_count
                ),
            );
            return Ok(Some((v, e.objective.loop_count, t0.elapsed())));
        }
        if t0.elapsed() >= wait {
            t.say("Gray", "no EX1 flood arrived");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
