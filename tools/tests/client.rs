//! The engine's ASA API behaves the same linked in and through graspd's
//! ASA socket (`grasp_asa_api::client`): each scenario runs both ways from
//! one source, on a line of fabric nodes.

use std::time::{Duration, Instant};

use grasp_engine::wire::{Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::ErrorCode;
use grasp_engine::{AsaLocator, DiscoverOptions, RegisterOptions};

mod daemon;
use daemon::fabric::{line_reached, went, Reach};
use daemon::scenarios;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(3);

async fn floods_arrive_as_they_come_until_the_watch_stops(reach: Reach) {
    let nodes = line_reached(3, reach).await;
    let watcher_asa = nodes[0].register_asa("watcher").await.unwrap();
    let watch = watcher_asa.watch_flood("EX.news").await.unwrap();
    let speaker = nodes[2].register_asa("speaker").await.unwrap();
    let news = |v: u32| TaggedObjective {
        objective: Objective::new("EX.news", SYNCH)
            .with_loop_count(4)
            .with_value(v),
        locator: None,
    };
    speaker
        .register_objective(&news(0).objective, RegisterOptions::default())
        .await
        .unwrap();
    for v in [1u32, 2] {
        speaker.flood(60_000, vec![news(v)]).await.unwrap();
        let e = tokio::time::timeout(T, watch.next())
            .await
            .expect("the flood in time")
            .expect("still watching");
        assert_eq!(e.objective.value, Some(Value::from(v)));
        assert_eq!(e.objective.loop_count, 3, "one relay: 4 -> 3");
    }
    // Our own floods are watched too (they enter our cache).
    watcher_asa
        .register_objective(&news(0).objective, RegisterOptions::default())
        .await
        .unwrap();
    watcher_asa.flood(60_000, vec![news(7)]).await.unwrap();
    let e = tokio::time::timeout(T, watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.objective.value, Some(Value::from(7u32)));
    // Stopped: nothing more arrives, though the flood enters the cache
    // (our own: a relay's flood budget would not let a third from the
    // speaker through this soon).
    watcher_asa.stop_watch_flood("EX.news").await.unwrap();
    watcher_asa.flood(60_000, vec![news(8)]).await.unwrap();
    let more = tokio::time::timeout(Duration::from_millis(400), watch.next()).await;
    assert!(
        matches!(more, Err(_) | Ok(None)),
        "a flood after the watch stopped: {more:?}"
    );
    let cached = watcher_asa.get_flood("EX.news").await.unwrap();
    assert!(
        cached
            .iter()
            .any(|e| e.objective.value == Some(Value::from(8u32))),
        "{cached:?}"
    );
    went(reach, &nodes);
}

async fn a_streamed_discovery_hands_out_locators_as_they_come(reach: Reach) {
    let nodes = line_reached(3, reach).await;
    let o = Objective::new("EX.many", SYNCH);
    // Two hops away, with two locators of its own.
    let server = nodes[2].register_asa("server").await.unwrap();
    let at = |port| {
        grasp_engine::wire::Locator::tcp6(
            std::net::Ipv6Addr::new(0xfd00, 0xfab, 0, 0, 0, 0, 0, 3),
            port,
        )
    };
    let opts = RegisterOptions {
        discoverable: true,
        locators: vec![at(7100), at(7101)],
        ..RegisterOptions::default()
    };
    server.register_objective(&o, opts).await.unwrap();
    let asa = nodes[0].register_asa("seeker").await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let opts = DiscoverOptions {
        flush: true,
        ..DiscoverOptions::all(Duration::from_millis(800))
    };
    let t0 = Instant::now();
    let seeking = asa.discover_each(&o, opts, tx);
    tokio::pin!(seeking);
    // The first locator comes long before the discovery's end.
    let first = tokio::select! {
        l = rx.recv() => l.expect("a locator"),
        r = &mut seeking => panic!("ended first: {r:?}"),
    };
    let early = t0.elapsed();
    assert!(early < Duration::from_millis(500), "{early:?}");
    let all = seeking.await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "collects for the timeout"
    );
    let mut streamed = vec![first];
    while let Ok(l) = rx.try_recv() {
        streamed.push(l);
    }
    assert_eq!(all.len(), 2, "{all:?}");
    let key = |v: &[AsaLocator]| {
        let mut k: Vec<String> = v.iter().map(|l| l.locator.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(key(&streamed), key(&all));
    went(reach, &nodes);
}

#[tokio::test]
async fn streamed_discovery_linked_in() {
    a_streamed_discovery_hands_out_locators_as_they_come(Reach::InProcess).await;
}

#[tokio::test]
async fn streamed_discovery_through_the_asa_socket() {
    a_streamed_discovery_hands_out_locators_as_they_come(Reach::Socket).await;
}

async fn a_dump_shows_registrations_and_caches(reach: Reach) {
    let nodes = line_reached(3, reach).await;
    let far = nodes[2].register_asa("far").await.unwrap();
    let o = Objective::new("EX.far", SYNCH).with_value(5u32);
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    far.register_objective(&o, opts.clone()).await.unwrap();
    let asa = nodes[0].register_asa("looker").await.unwrap();
    let mine = Objective::new("EX.mine", SYNCH).with_value(1u32);
    asa.register_objective(&mine, opts).await.unwrap();
    asa.listen_synchronize(&mine).await.unwrap();
    let news = TaggedObjective {
        objective: Objective::new("EX.news", SYNCH).with_value(2u32),
        locator: None,
    };
    asa.register_objective(&news.objective, RegisterOptions::default())
        .await
        .unwrap();
    asa.flood(60_000, vec![news]).await.unwrap();
    assert_eq!(
        asa.discover(&o, DiscoverOptions::first(T))
            .await
            .unwrap()
            .len(),
        1
    );
    let d = asa.dump().await.unwrap();
    assert!(
        d.asas
            .iter()
            .any(|(h, n)| *h == asa.handle() && n == "looker"),
        "{:?}",
        d.asas
    );
    let reg = d
        .objectives
        .iter()
        .find(|r| r.objective.name == "EX.mine")
        .expect("our objective");
    assert_eq!(reg.owners, vec![asa.handle()]);
    assert!(reg.listen_synchronize && reg.options.discoverable);
    assert!(d
        .discovery_cache
        .iter()
        .any(|(n, l)| n == "EX.far" && l.len() == 1));
    assert!(d.flood_cache.iter().any(|e| e.objective.name == "EX.news"));
    went(reach, &nodes);
}

#[tokio::test]
async fn dump_linked_in() {
    a_dump_shows_registrations_and_caches(Reach::InProcess).await;
}

#[tokio::test]
async fn dump_through_the_asa_socket() {
    a_dump_shows_registrations_and_caches(Reach::Socket).await;
}

/// graspy's raw channel (`noloop`, gsend/grecv): M_REQ_NEG, then bare
/// CBOR items both ways on the session.
async fn a_raw_channel_carries_bare_items_both_ways(reach: Reach) {
    const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
    let nodes = line_reached(3, reach).await;
    let chat = Objective::new("EX.chat", NEG);
    let server = nodes[2].register_asa("server").await.unwrap();
    server
        .register_objective(&chat, RegisterOptions::default())
        .await
        .unwrap();
    let listener = server.listen_negotiate("EX.chat").await.unwrap();
    let served = tokio::spawn(async move {
        let (s, req) = listener.next().await.expect("a request");
        assert_eq!(req.name, "EX.chat");
        for _ in 0..2 {
            let got = s.recv_raw(T).await.unwrap();
            let text: String = got.deserialize().unwrap();
            s.send_raw(&Value::from(format!("you said {text}").as_str()))
                .await
                .unwrap();
        }
        // Then it ends it (a raw session ends by closing): the client's
        // next receive learns the peer left.
        s.decline(Some("bye")).await.unwrap();
        listener
    });
    let client = nodes[0].register_asa("client").await.unwrap();
    client
        .register_objective(&chat, RegisterOptions::default())
        .await
        .unwrap();
    let s = client.request_raw(&chat, None, T).await.unwrap();
    // An item bigger than the transport carries is refused, not sent.
    let big = Value::from("x".repeat(10_000).as_str());
    assert_eq!(
        s.send_raw(&big).await.unwrap_err().code,
        ErrorCode::TooLarge
    );
    for word in ["hello", "again"] {
        s.send_raw(&Value::from(word)).await.unwrap();
        let back: String = s.recv_raw(T).await.unwrap().deserialize().unwrap();
        assert_eq!(back, format!("you said {word}"));
    }
    let listener = served.await.unwrap();
    let gone = s.recv_raw(T).await.unwrap_err();
    assert!(
        matches!(gone.code, ErrorCode::NoPeer | ErrorCode::NoSession),
        "{gone:?}"
    );
    // A receive that times out is noReply, and the session stays: the
    // peer (silent) answers the second.
    let holder = tokio::spawn(async move {
        let (s, _) = listener.next().await.unwrap();
        let got: String = s.recv_raw(T).await.unwrap().deserialize().unwrap();
        s.send_raw(&Value::from(got.as_str())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let s = client.request_raw(&chat, None, T).await.unwrap();
    let quiet = s.recv_raw(Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(quiet.code, ErrorCode::NoReply);
    s.send_raw(&Value::from("still there?")).await.unwrap();
    let back: String = s.recv_raw(T).await.unwrap().deserialize().unwrap();
    assert_eq!(back, "still there?");
    holder.await.unwrap();
    went(reach, &nodes);
}

#[tokio::test]
async fn raw_channel_linked_in() {
    a_raw_channel_carries_bare_items_both_ways(Reach::InProcess).await;
}

#[tokio::test]
async fn raw_channel_through_the_asa_socket() {
    a_raw_channel_carries_bare_items_both_ways(Reach::Socket).await;
}

#[tokio::test]
async fn flood_watch_linked_in() {
    floods_arrive_as_they_come_until_the_watch_stops(Reach::InProcess).await;
}

#[tokio::test]
async fn flood_watch_through_the_asa_socket() {
    floods_arrive_as_they_come_until_the_watch_stops(Reach::Socket).await;
}

/// Rapid synchronization, flood expiry, and a negotiation's every ending,
/// across a relay.
async fn the_remaining_scenarios(reach: Reach) {
    let nodes = line_reached(3, reach).await;
    scenarios::all(&nodes).await;
    went(reach, &nodes);
}

#[tokio::test]
async fn remaining_scenarios_linked_in() {
    the_remaining_scenarios(Reach::InProcess).await;
}

#[tokio::test]
async fn remaining_scenarios_through_the_asa_socket() {
    the_remaining_scenarios(Reach::Socket).await;
}
