//! The engine API's scenarios that the example ASAs do not cover, written
//! once against `&[Grasp]` (the first node asks, the last serves) and run
//! linked in, through graspd's socket over the fabric, and between
//! namespaces with real graspd processes.

use std::time::Duration;

use grasp_engine::wire::{Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::RegisterOptions;
use grasp_engine::{ErrorCode, Grasp, Negotiation};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(3);

/// Rapid synchronization (the value in the discovery response), and a
/// served value updated by calling listen_synchronize again.
pub(crate) async fn rapid_synchronization(nodes: &[Grasp]) {
    let server = nodes[nodes.len() - 1].register_asa("rapid").await.unwrap();
    let served = Objective::new("EX.rapid", SYNCH).with_value("fast");
    let opts = RegisterOptions {
        rapid: true,
        ..RegisterOptions::default()
    };
    server.register_objective(&served, opts).await.unwrap();
    server.listen_synchronize(&served).await.unwrap();
    let client = nodes[0].register_asa("rapid-client").await.unwrap();
    let got = client
        .synchronize(&Objective::new("EX.rapid", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value, Some(Value::from("fast")));
    // listen_synchronize again updates the value served.
    let upd = Objective::new("EX.update", SYNCH).with_value(1u32);
    server
        .register_objective(&upd, RegisterOptions::default())
        .await
        .unwrap();
    server.listen_synchronize(&upd).await.unwrap();
    let ask = Objective::new("EX.update", SYNCH);
    let got = client.synchronize(&ask, None, T).await.unwrap();
    assert_eq!(got.value, Some(Value::from(1u32)));
    server
        .listen_synchronize(&upd.clone().with_value(2u32))
        .await
        .unwrap();
    let got = client.synchronize(&ask, None, T).await.unwrap();
    assert_eq!(got.value, Some(Value::from(2u32)));
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}

/// A flood read from the cache and expired there.
pub(crate) async fn flood_get_and_expire(nodes: &[Grasp]) {
    let speaker = nodes[nodes.len() - 1]
        .register_asa("speaker")
        .await
        .unwrap();
    let o = Objective::new("EX.expire", SYNCH).with_value(9u32);
    speaker
        .register_objective(&o, RegisterOptions::default())
        .await
        .unwrap();
    let reader = nodes[0].register_asa("reader").await.unwrap();
    let watch = reader.watch_flood("EX.expire").await.unwrap();
    let tagged = TaggedObjective {
        objective: o,
        locator: None,
    };
    speaker.flood(60_000, vec![tagged]).await.unwrap();
    tokio::time::timeout(T, watch.next())
        .await
        .unwrap()
        .unwrap();
    let got = reader.get_flood("EX.expire").await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].objective.value, Some(Value::from(9u32)));
    reader.expire_flood(&got[0]).await.unwrap();
    assert!(reader.get_flood("EX.expire").await.unwrap().is_empty());
    // Expiring what is not there is an error that says so.
    assert_eq!(
        reader.expire_flood(&got[0]).await.unwrap_err().code,
        ErrorCode::NotObj
    );
    speaker.deregister().await.unwrap();
    reader.deregister().await.unwrap();
}

/// A negotiation whose loop count runs out: whoever runs out gets
/// loopExhausted, the other sees the session end; then a peer that never
/// answers (noNegReply) and one that vanishes (noPeer).
pub(crate) async fn negotiation_ends(nodes: &[Grasp]) {
    let offer = |v: u32, lc: u8| {
        Objective::new("EX.haggle", NEG)
            .with_value(v)
            .with_loop_count(lc)
    };
    let server = nodes[nodes.len() - 1]
        .register_asa("haggler")
        .await
        .unwrap();
    server
        .register_objective(&offer(0, 6), RegisterOptions::default())
        .await
        .unwrap();
    let listener = server.listen_negotiate("EX.haggle").await.unwrap();
    let serving = tokio::spawn(async move {
        let (mut session, req) = listener.next().await.unwrap();
        let mut lc = req.loop_count;
        let end = loop {
            match session.step(&offer(100, lc), T).await {
                Ok(Negotiation::Step {
                    session: s,
                    objective,
                }) => {
                    lc = objective.loop_count;
                    session = s;
                }
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e.code,
            }
        };
        let (silent, _) = listener.next().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(silent);
        let (gone, _) = listener.next().await.unwrap();
        drop(gone);
        (end, server)
    });
    let client = nodes[0].register_asa("haggle-client").await.unwrap();
    client
        .register_objective(&offer(0, 6), RegisterOptions::default())
        .await
        .unwrap();
    let mut out = client
        .request_negotiate(&offer(150, 4), None, T)
        .await
        .unwrap();
    let mut steps = 0;
    let client_end = loop {
        let Negotiation::Step { session, objective } = out else {
            panic!("{out:?}")
        };
        steps += 1;
        match session.step(&offer(150, objective.loop_count), T).await {
            Ok(next) => out = next,
            Err(e) => break e.code,
        }
    };
    assert!(steps <= 4, "loop count 4 bounds the exchange: {steps}");
    let e = client
        .request_negotiate(&offer(150, 6), None, Duration::from_millis(700))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoNegReply);
    let e = client
        .request_negotiate(&offer(150, 6), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoPeer);
    let (server_end, server) = serving.await.unwrap();
    let mut ends = [client_end, server_end];
    ends.sort_by_key(|c| c.code());
    assert_eq!(ends, [ErrorCode::LoopExhausted, ErrorCode::NoPeer]);
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}

/// All of the above, in turn.
pub(crate) async fn all(nodes: &[Grasp]) {
    rapid_synchronization(nodes).await;
    flood_get_and_expire(nodes).await;
    negotiation_ends(nodes).await;
}
