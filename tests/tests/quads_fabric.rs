//! What only QUADS has: a key rotation loses no message. (Every GRASP
//! operation, and a second domain on the link, run under QUADS and legacy
//! QUADS in the conformance suite.)

use std::sync::Arc;
use std::time::Duration;

use grasp_acp::fabric::{Fabric, Link, LinkConfig};
use grasp_acp::secure;
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::Grasp;
use grasp_engine::{Config, RegisterOptions};
use grasp_quads::{DomainKey, DropReason, KeyRing, MasterSecret};
use grasp_tests::scenario::{flood_one, serve_sync};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

/// Keys from fixed master secrets (argon2 is tested in the crate; here it
/// would only slow the test down).
fn key(n: u8) -> DomainKey {
    DomainKey::from_master(&MasterSecret::from_bytes([n; 32]))
}

struct Node {
    grasp: Grasp,
    quads: Arc<grasp_quads::Transport>,
}

async fn node(f: &Fabric, name: &str, links: &[&Link], ring: KeyRing) -> Node {
    let mut b = f.node(name);
    for l in links {
        b = b.attach(l);
    }
    let backend = grasp_quads::Backend::new(ring, grasp_quads::Config::default());
    let (quads, inbound) = secure::bind(b, backend).await.unwrap();
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
async fn key_rotation_without_a_flag_day() {
    // Two running nodes move from key 1 to key 2, one node at a time, while
    // they synchronize with each other and flood continuously. Nothing may
    // fail and nothing may be dropped.
    let f = Fabric::new(9);
    let l = link(&f, "l");
    let a = node(&f, "A", &[&l], KeyRing::new(key(1))).await;
    let b = node(&f, "B", &[&l], KeyRing::new(key(1))).await;
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
        .protection()
        .set_keys(KeyRing::new(key(1)).accept(key(2)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    b.quads
        .protection()
        .set_keys(KeyRing::new(key(1)).accept(key(2)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    // 2. Each switches to sending under key 2, still accepting key 1.
    a.quads
        .protection()
        .set_keys(KeyRing::new(key(2)).accept(key(1)).unwrap());
    for r in rounds(3) {
        r.await;
    }
    b.quads
        .protection()
        .set_keys(KeyRing::new(key(2)).accept(key(1)).unwrap());
    for r in rounds(2) {
        r.await;
    }
    // 3. Key 1 is retired.
    a.quads.protection().set_keys(KeyRing::new(key(2)));
    b.quads.protection().set_keys(KeyRing::new(key(2)));
    for r in rounds(3) {
        r.await;
    }
    for node in [&a, &b] {
        let s = node.quads.protection().stats();
        assert_eq!(s.dropped_total(), 0, "{s:?}");
        assert!(s.opened >= 15 * 2, "{s:?}");
    }
    // Traffic is now under key 2 only: a node with key 1 alone opens none.
    let old = node(&f, "O", &[&l], KeyRing::new(key(1))).await;
    let _asa_o = old.grasp.register_asa("O").await.unwrap();
    for r in rounds(1) {
        r.await;
    }
    let so = old.quads.protection().stats();
    assert_eq!(so.opened, 0, "{so:?}");
    assert!(so.dropped(DropReason::UnknownKey) >= 1, "{so:?}");
}
