//! The engine under QUADS over the in-memory fabric: every GRASP operation
//! works, two domains on one link stay apart, and a key rotation loses no
//! message.

use std::sync::Arc;
use std::time::Duration;

use grasp_acp::fabric::{Fabric, Link, LinkConfig};
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::Grasp;
use grasp_engine::{Config, DiscoverOptions, RegisterOptions};
use grasp_quads::{DomainKey, DropReason, KeyRing, MasterSecret, QuadsConfig, QuadsTransport};
use grasp_tests::scenario::{
    answer_with_counter, flood_one, negotiable, request_and_accept_step, serve_sync,
};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(5);

/// Keys from fixed master secrets (argon2 is tested in the crate; here it
/// would only slow the test down).
fn key(n: u8) -> DomainKey {
    DomainKey::from_master(&MasterSecret::from_bytes([n; 32]))
}

struct Node {
    grasp: Grasp,
    quads: Arc<QuadsTransport>,
}

fn node(f: &Fabric, name: &str, links: &[&Link], ring: KeyRing) -> Node {
    let mut b = f.node(name).max_message_size(2048 + grasp_quads::OVERHEAD);
    for l in links {
        b = b.attach(l);
    }
    let (inner, inbound) = b.bind();
    let (quads, inbound) = grasp_quads::wrap(inner, inbound, ring, QuadsConfig::default());
    assert_eq!(quads.security(), Security::Quads);
    assert_eq!(quads.max_message_size(), 2048);
    let mut c = Config::default();
    c.seed = Some(u64::from(name.as_bytes()[0]));
    let grasp = Grasp::start(quads.clone(), inbound, c);
    Node { grasp, quads }
}

fn link(f: &Fabric, name: &str) -> Link {
    f.link(
        name,
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(1),
        },
    )
}

#[tokio::test(start_paused = true)]
async fn every_operation_under_quads_across_a_relay() {
    let f = Fabric::new(7);
    let (l1, l2) = (link(&f, "l1"), link(&f, "l2"));
    let a = node(&f, "A", &[&l1], KeyRing::new(key(1)));
    let r = node(&f, "R", &[&l1, &l2], KeyRing::new(key(1)));
    let c = node(&f, "C", &[&l2], KeyRing::new(key(1)));
    let _relay = r.grasp.register_asa("relay").await.unwrap();
    let asa_c = c.grasp.register_asa("C").await.unwrap();
    let asa_a = a.grasp.register_asa("A").await.unwrap();
    serve_sync(&asa_c, "EX.sync", "secret value").await;

    // Discovery through the relay, first try.
    let found = asa_a
        .discover(
            &Objective::new("EX.sync", SYNCH),
            DiscoverOptions::first(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // Synchronization (unicast, routed).
    let got = asa_a
        .synchronize(&Objective::new("EX.sync", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("secret value"));

    // Negotiation: request, counter-offer, step, accept.
    let neg = Objective::new("EX.neg", NEG);
    asa_c
        .register_objective(&neg, RegisterOptions::default())
        .await
        .unwrap();
    let listener = asa_c.listen_negotiate("EX.neg").await.unwrap();
    let server = tokio::spawn(async move { answer_with_counter(&listener, None, 20, T).await });
    let bid = negotiable(&asa_a, "EX.neg", 10).await;
    let requested = request_and_accept_step(&asa_a, &bid, 15, T).await;
    assert_eq!(requested.countered, Some(20));
    let answered = server.await.unwrap();
    assert_eq!(answered.requested, Some(10));
    assert_eq!(answered.stepped, Some(15));

    // Flood from C, relayed by R, reaches A once with loop count decremented.
    let fl = Objective::new("EX.flood", SYNCH)
        .with_value(Value::from("flooded"))
        .with_loop_count(3);
    asa_c
        .register_objective(&fl, RegisterOptions::default())
        .await
        .unwrap();
    flood_one(&asa_c, fl, 10_000).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = asa_a.get_flood("EX.flood").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].objective.loop_count, 2);

    // Everything was sealed and opened; nothing dropped.
    for n in [&a, &r, &c] {
        let s = n.quads.quads_stats();
        assert!(s.sealed > 0 && s.opened > 0, "{s:?}");
        assert_eq!(s.dropped_total(), 0, "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn two_domains_on_one_link_stay_apart() {
    let f = Fabric::new(8);
    let l = link(&f, "l");
    let a1 = node(&f, "A", &[&l], KeyRing::new(key(1)));
    let b1 = node(&f, "B", &[&l], KeyRing::new(key(1)));
    let x2 = node(&f, "X", &[&l], KeyRing::new(key(2)));
    let asa_b = b1.grasp.register_asa("B").await.unwrap();
    let asa_x = x2.grasp.register_asa("X").await.unwrap();
    serve_sync(&asa_b, "EX.sync", "domain one").await;
    serve_sync(&asa_x, "EX.sync", "domain two").await;
    let asa_a = a1.grasp.register_asa("A").await.unwrap();
    let found = asa_a
        .discover(
            &Objective::new("EX.sync", SYNCH),
            DiscoverOptions::all(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "only its own domain answers: {found:?}");
    let got = asa_a
        .synchronize(&Objective::new("EX.sync", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("domain one"));
    // X saw A's discovery and dropped it as another domain's.
    let sx = x2.quads.quads_stats();
    assert!(sx.dropped(DropReason::UnknownKey) >= 1, "{sx:?}");
    // X cannot join A's domain: its discovery of what only B serves goes
    // unanswered (B drops it), and a channel it opens directly to B is
    // refused at its first record.
    serve_sync(&asa_b, "EX.b-only", "not for X").await;
    let asa_x2 = x2.grasp.register_asa("X2").await.unwrap();
    let found = asa_x2
        .discover(
            &Objective::new("EX.b-only", SYNCH),
            DiscoverOptions::all(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    let b_locator = grasp_engine::AsaLocator::new(b1.quads.node_locator());
    let err = asa_x2
        .synchronize(&Objective::new("EX.b-only", SYNCH), Some(b_locator), T)
        .await;
    assert!(err.is_err(), "{err:?}");
    // X's discovery went out three times (unanswered, so repeated), then
    // its channel: four records B could not open.
    let sb = b1.quads.quads_stats();
    assert_eq!(sb.dropped(DropReason::UnknownKey), 4, "{sb:?}");
    let tb = b1.quads.stats();
    assert_eq!(tb.multicast_dropped_other, 3, "{tb:?}");
    assert_eq!(tb.malformed_streams, 1, "{tb:?}");
}

#[tokio::test(start_paused = true)]
async fn key_rotation_without_a_flag_day() {
    // Two running nodes move from key 1 to key 2, one node at a time, while
    // they synchronize with each other and flood continuously. Nothing may
    // fail and nothing may be dropped.
    let f = Fabric::new(9);
    let l = link(&f, "l");
    let a = node(&f, "A", &[&l], KeyRing::new(key(1)));
    let b = node(&f, "B", &[&l], KeyRing::new(key(1)));
    let asa_a = a.grasp.register_asa("A").await.unwrap();
    let asa_b = b.grasp.register_asa("B").await.unwrap();
    serve_sync(&asa_a, "EX.a", "from A").await;
    serve_sync(&asa_b, "EX.b", "from B").await;
    let fl = Objective::new("EX.tick", SYNCH).with_value(Value::from(0u32));
    asa_b
        .register_objective(&fl, RegisterOptions::default())
        .await
        .unwrap();
    let a_loc = grasp_engine::AsaLocator::new(a.quads.node_locator());
    let b_loc = grasp_engine::AsaLocator::new(b.quads.node_locator());

    // One round of traffic: both directions of synchronization, and a flood
    // from B that A must see with the round's value.
    let round = |n: u32| {
        let (asa_a, asa_b) = (asa_a.clone(), asa_b.clone());
        let (a_loc, b_loc) = (a_loc.clone(), b_loc.clone());
        async move {
            let got = asa_a
                .synchronize(&Objective::new("EX.b", SYNCH), Some(b_loc), T)
                .await
                .unwrap_or_else(|e| panic!("round {n}: A from B: {e}"));
            assert_eq!(got.value.unwrap().as_str(), Some("from B"));
            let got = asa_b
                .synchronize(&Objective::new("EX.a", SYNCH), Some(a_loc), T)
                .await
                .unwrap_or_else(|e| panic!("round {n}: B from A: {e}"));
            assert_eq!(got.value.unwrap().as_str(), Some("from A"));
            let tick = Objective::new("EX.tick", SYNCH).with_value(Value::from(n));
            flood_one(&asa_b, tick, 60_000).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let seen = asa_a.get_flood("EX.tick").await.unwrap();
            assert_eq!(
                seen.first()
                    .and_then(|e| e.objective.value.as_ref()?.as_u64()),
                Some(u64::from(n)),
                "round {n}: the flood did not arrive"
            );
        }
    };
    let mut n = 0;
    let mut rounds = |k: u32| {
        let start = n;
        n += k;
        (start..n).map(round).collect::<Vec<_>>()
    };
    for r in rounds(3) {
        r.await;
    }
    // 1. Everyone also accepts key 2 (one node after the other).
    a.quads
        .set_keys(KeyRing::new(key(1)).accept(key(2)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    b.quads
        .set_keys(KeyRing::new(key(1)).accept(key(2)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    // 2. Each switches to sending under key 2, still accepting key 1.
    a.quads
        .set_keys(KeyRing::new(key(2)).accept(key(1)).unwrap());
    for r in rounds(3) {
        r.await;
    }
    b.quads
        .set_keys(KeyRing::new(key(2)).accept(key(1)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    // 3. Key 1 is retired.
    a.quads.set_keys(KeyRing::new(key(2)));
    b.quads.set_keys(KeyRing::new(key(2)));
    for r in rounds(3) {
        r.await;
    }
    for node in [&a, &b] {
        let s = node.quads.quads_stats();
        assert_eq!(s.dropped_total(), 0, "{s:?}");
        assert!(s.opened >= 15 * 2, "{s:?}");
    }
    // Traffic is now under key 2 only: a node with key 1 alone opens none.
    let old = node(&f, "O", &[&l], KeyRing::new(key(1)));
    let _asa_o = old.grasp.register_asa("O").await.unwrap();
    for r in rounds(1) {
        r.await;
    }
    let so = old.quads.quads_stats();
    assert_eq!(so.opened, 0, "{so:?}");
    assert!(so.dropped(DropReason::UnknownKey) >= 1, "{so:?}");
}

#[tokio::test(start_paused = true)]
async fn graspy_legacy_mode_over_the_fabric() {
    use grasp_quads::legacy::{wrap_legacy, LegacyKey};
    let f = Fabric::new(10);
    let l = link(&f, "l");
    let legacy = |name: &str, pw: &str| {
        let (t, i) = f.node(name).attach(&l).max_message_size(2048 + 16).bind();
        let key = LegacyKey::from_password(&grasp_quads::Password::new(pw).unwrap());
        let (t, i) = wrap_legacy(t, i, key);
        (Grasp::start(t.clone(), i, Config::default()), t)
    };
    let (a, _ta) = legacy("A", "grasp-test-password");
    let (b, _tb) = legacy("B", "grasp-test-password");
    let (x, tx) = legacy("X", "another password");
    let asa_b = b.register_asa("B").await.unwrap();
    serve_sync(&asa_b, "EX.sync", "legacy ok").await;
    let neg = Objective::new("EX.neg", NEG);
    asa_b
        .register_objective(&neg, RegisterOptions::default())
        .await
        .unwrap();
    let listener = asa_b.listen_negotiate("EX.neg").await.unwrap();
    // A wait and then a counter-offer: two messages back to back.
    let server = tokio::spawn(async move {
        answer_with_counter(&listener, Some(Duration::from_secs(2)), 9, T).await
    });
    let asa_a = a.register_asa("A").await.unwrap();
    let got = asa_a
        .synchronize(&Objective::new("EX.sync", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("legacy ok"));
    let bid = negotiable(&asa_a, "EX.neg", 5).await;
    let r = request_and_accept_step(&asa_a, &bid, 9, T).await;
    assert_eq!(r.countered, Some(9));
    server.await.unwrap();
    // Another password: nothing decrypts, nothing is answered.
    let asa_x = x.register_asa("X").await.unwrap();
    let found = asa_x
        .discover(
            &Objective::new("EX.sync", SYNCH),
            DiscoverOptions::all(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert!(tx.dropped() >= 1);
}
