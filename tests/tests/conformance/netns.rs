//! Every backend between two network namespaces over a veth pair, on real
//! sockets (root only; loudly skipped otherwise): discovery,
//! synchronization, negotiation and flooding, each node's engine on a
//! thread inside its namespace, the scenario driven from the test.

use std::time::Duration;

use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::{DiscoverOptions, Negotiation, RegisterOptions};
use grasp_tests::backend::{Backend, Domain};
use grasp_tests::netns::Lab;
use grasp_tests::scenario::{flood_one, wait_for_flood};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(5);

pub(crate) fn every_operation_between_namespaces(backend: Backend) {
    if Lab::skip_loudly(&format!("conformance netns {backend:?}")) {
        return;
    }
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let d = Domain::new(backend, 1);
    let b = d.netns_node(&nb, "ba0", "B");
    let a = d.netns_node(&na, "ab0", "A");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let asa_b = b.grasp.register_asa("B").await.unwrap();
        let sync = Objective::new("EX.sync", SYNCH)
            .with_value(Value::from_serialize(&("ver", 1)).unwrap());
        asa_b
            .register_objective(&sync, RegisterOptions::default())
            .await
            .unwrap();
        asa_b.listen_synchronize(&sync).await.unwrap();
        let neg = Objective::new("EX.neg", NEG);
        asa_b
            .register_objective(&neg, RegisterOptions::default())
            .await
            .unwrap();
        let listener = asa_b.listen_negotiate("EX.neg").await.unwrap();
        let server = tokio::spawn(async move {
            let (session, req) = listener.next().await.unwrap();
            assert_eq!(req.value.as_ref().unwrap().as_u64(), Some(150));
            let counter = req.clone().with_value(Value::from(100u32));
            match session.step(&counter, T).await.unwrap() {
                Negotiation::Step { session, objective } => {
                    assert_eq!(objective.value.unwrap().as_u64(), Some(120));
                    session.accept().await.unwrap();
                }
                other => panic!("{other:?}"),
            }
        });

        let asa_a = a.grasp.register_asa("A").await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        let found = asa_a
            .discover(&probe, DiscoverOptions::first(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "one responder");
        let got = asa_a.synchronize(&probe, None, T).await.unwrap();
        let v: (String, u32) = got.value.unwrap().deserialize().unwrap();
        assert_eq!(v, ("ver".into(), 1));
        let bid = Objective::new("EX.neg", NEG).with_value(Value::from(150u32));
        match asa_a.request_negotiate(&bid, None, T).await.unwrap() {
            Negotiation::Step { session, objective } => {
                assert_eq!(objective.value.clone().unwrap().as_u64(), Some(100));
                let next = objective.with_value(Value::from(120u32));
                assert!(matches!(
                    session.step(&next, T).await.unwrap(),
                    Negotiation::Accepted
                ));
            }
            other => panic!("{other:?}"),
        }
        server.await.unwrap();

        let fl = Objective::new("EX.flood", SYNCH).with_value(Value::from("flooded"));
        asa_b
            .register_objective(&fl, RegisterOptions::default())
            .await
            .unwrap();
        flood_one(&asa_b, fl, 10_000).await;
        let got = wait_for_flood(&asa_a, "EX.flood", 50).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].initiator,
            std::net::IpAddr::V6("fd00:1::2".parse().unwrap())
        );
        a.assert_no_drops("A");
        b.assert_no_drops("B");
    });
}
