//! GRASP exchanges the backend tests run again and again: serving a value
//! for synchronization, and a negotiation of one counter-offer and an
//! accept, from either side. They return what happened; the tests assert.

use std::time::Duration;

use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::RegisterOptions;
use grasp_engine::{Asa, Negotiation, NegotiationListener};

/// F_DISC | F_SYNCH.
pub const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
/// F_DISC | F_NEG.
pub const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);

/// Registers `name` with `value` and serves it for synchronization.
pub async fn serve_sync(asa: &Asa, name: &str, value: impl Into<Value>) {
    let o = Objective::new(name, SYNCH).with_value(value);
    asa.register_objective(&o, RegisterOptions::default())
        .await
        .expect("register the served objective");
    asa.listen_synchronize(&o)
        .await
        .expect("listen for synchronization");
}

/// What the responder of [`answer_with_counter`] saw.
#[derive(Debug)]
pub struct Answered {
    /// The requester's value.
    pub requested: Option<u64>,
    /// The requester's value after our counter-offer.
    pub stepped: Option<u64>,
    /// The requester's authenticated identity.
    pub identity: Option<String>,
}

/// Takes the next request on `listener`, optionally asks the requester to
/// wait first, counter-offers `counter` and accepts the requester's step.
pub async fn answer_with_counter(
    listener: &NegotiationListener,
    wait: Option<Duration>,
    counter: u32,
    timeout: Duration,
) -> Answered {
    let (session, req) = listener.next().await.expect("a negotiation request");
    let requested = req.value.as_ref().and_then(Value::as_u64);
    let identity = session.peer_identity().map(str::to_string);
    if let Some(w) = wait {
        session.wait(w).await.expect("send M_WAIT");
    }
    match session
        .step(&req.clone().with_value(Value::from(counter)), timeout)
        .await
        .expect("counter-offer")
    {
        Negotiation::Step { session, objective } => {
            session.accept().await.expect("accept");
            Answered {
                requested,
                stepped: objective.value.as_ref().and_then(Value::as_u64),
                identity,
            }
        }
        other => panic!("expected the requester's step, got {other:?}"),
    }
}

/// What the requester of [`request_and_accept_step`] saw.
#[derive(Debug)]
pub struct Requested {
    /// The responder's counter-offer.
    pub countered: Option<u64>,
    /// Its loop count as received.
    pub loop_count: u8,
    /// The responder's authenticated identity.
    pub identity: Option<String>,
}

/// Registers `name` (negotiation) for `asa` and returns it with `value`.
pub async fn negotiable(asa: &Asa, name: &str, value: u32) -> Objective {
    let o = Objective::new(name, NEG).with_value(Value::from(value));
    asa.register_objective(&o, RegisterOptions::default())
        .await
        .expect("register the negotiated objective");
    o
}

/// Requests `bid` (registered by `asa`), answers the counter-offer with
/// `next`, and expects the responder to accept.
pub async fn request_and_accept_step(
    asa: &Asa,
    bid: &Objective,
    next: u32,
    timeout: Duration,
) -> Requested {
    match asa
        .request_negotiate(bid, None, timeout)
        .await
        .expect("request")
    {
        Negotiation::Step { session, objective } => {
            let r = Requested {
                countered: objective.value.as_ref().and_then(Value::as_u64),
                loop_count: objective.loop_count,
                identity: session.peer_identity().map(str::to_string),
            };
            let step = objective.with_value(Value::from(next));
            match session.step(&step, timeout).await.expect("step") {
                Negotiation::Accepted => r,
                other => panic!("expected an accept, got {other:?}"),
            }
        }
        other => panic!("expected a counter-offer, got {other:?}"),
    }
}

/// Floods `objective` (registered by `asa`) untagged for `ttl_ms`.
pub async fn flood_one(asa: &Asa, objective: Objective, ttl_ms: u32) {
    asa.flood(
        ttl_ms,
        vec![grasp_engine::wire::TaggedObjective {
            objective,
            locator: None,
        }],
    )
    .await
    .expect("flood");
}

/// Polls `asa`'s flood cache for `name` every 20 ms, at most `tries` times;
/// returns what is there (empty if nothing came).
pub async fn wait_for_flood(asa: &Asa, name: &str, tries: u32) -> Vec<grasp_engine::FloodEntry> {
    for _ in 0..tries {
        let got = asa.get_flood(name).await.expect("get_flood");
        if !got.is_empty() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}
