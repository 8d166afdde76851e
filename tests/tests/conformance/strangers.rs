//! Two domains of one backend on one link: a node of the other domain
//! neither joins (no answer to its discovery, its channel refused) nor
//! disturbs (the members still discover and synchronize, and count what
//! they dropped). For every backend that has domains.

use std::time::Duration;

use grasp_acp::fabric::Fabric;
use grasp_engine::wire::{Objective, ObjectiveFlags};
use grasp_engine::{AsaLocator, DiscoverOptions};
use grasp_tests::backend::{Backend, Domain};
use grasp_tests::scenario::serve_sync;

use crate::engine::link;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

pub(crate) async fn another_domain_neither_joins_nor_disturbs(backend: Backend) {
    let f = Fabric::new(8);
    let l = link(&f, "l");
    let (one, two) = (Domain::new(backend, 1), Domain::new(backend, 2));
    let a = one.fabric_node(&f, "A", &[&l]).await;
    let b = one.fabric_node(&f, "B", &[&l]).await;
    let x = two.fabric_node(&f, "X", &[&l]).await;
    let asa_b = b.grasp.register_asa("B").await.unwrap();
    let asa_x = x.grasp.register_asa("X").await.unwrap();
    serve_sync(&asa_b, "EX.sync", "domain one").await;
    serve_sync(&asa_x, "EX.sync", "domain two").await;
    let asa_a = a.grasp.register_asa("A").await.unwrap();
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
    assert!(x.multicast_dropped() >= 1, "{:?}", x.transport.stats());

    // X cannot join: its discovery of what only B serves goes unanswered
    // (B drops it), and a channel it opens directly to B is refused.
    serve_sync(&asa_b, "EX.b-only", "not for X").await;
    let before = b.multicast_dropped();
    let found = asa_x
        .discover(
            &Objective::new("EX.b-only", SYNCH),
            DiscoverOptions::all(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert!(b.multicast_dropped() > before, "B counts X's discoveries");
    let b_locator = AsaLocator::new(b.transport.node_locator());
    let err = asa_x
        .synchronize(&Objective::new("EX.b-only", SYNCH), Some(b_locator), T)
        .await;
    assert!(err.is_err(), "{err:?}");
    // The members still work together, and A dropped nothing of B's.
    let got = asa_a
        .synchronize(&Objective::new("EX.b-only", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("not for X"));
}
