//! graspd's ASA socket (`grasp_tools::api`, issue 12's first slice) over the
//! in-memory fabric: a client on a Unix socket pair uses node N1's engine
//! to discover, synchronize, serve and flood across a relay (N2) to N3;
//! bad requests get errors that say why; what a client registered goes
//! when it goes.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use grasp_asa_api::Frame;
use grasp_engine::wire::{Limits, Locator, Objective, ObjectiveFlags, TaggedObjective};
use grasp_engine::RegisterOptions;
use grasp_tools::api::connection;
use tokio::net::UnixStream;

mod daemon;
use daemon::asa_client::{get, Client};
use daemon::fabric::{client, line};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

fn obj(o: &Objective) -> Value {
    Value::Bytes(o.encode().to_vec())
}

fn decode_obj(v: &Value) -> Objective {
    let Value::Bytes(b) = v else { panic!("{v:?}") };
    Objective::decode_with(&Bytes::copy_from_slice(b), &Limits::default()).unwrap()
}

#[tokio::test]
async fn a_client_uses_the_nodes_core_through_the_socket() {
    let (core, n3) = line().await;
    // N3 serves EX.far.
    let far_asa = n3.register_asa("far").await.unwrap();
    let far = Objective::new("EX.far", SYNCH).with_value("far");
    far_asa
        .register_objective(&far, RegisterOptions::default())
        .await
        .unwrap();
    far_asa.listen_synchronize(&far).await.unwrap();

    let mut c = client(core.clone());
    // Nothing before hello.
    assert_eq!(
        c.call("register_asa", vec![("name", "x".into())]).await,
        Err(106)
    );
    let r = c
        .call(
            "hello",
            vec![
                ("versions", Value::Array(vec![1.into()])),
                (
                    "features",
                    Value::Array(vec!["dump".into(), "telepathy".into()]),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        get(&r, "features"),
        Some(&Value::Array(vec!["dump".into()])),
        "the features both have"
    );
    let node = get(&r, "node").unwrap();
    assert_eq!(get(node, "security"), Some(&Value::from("quads")));
    let asa = c.register_asa("remote").await;

    // Discovery across the relay, then synchronization.
    let found = c
        .call(
            "discover",
            vec![
                ("asa", asa.clone()),
                ("objective", obj(&Objective::new("EX.far", SYNCH))),
                ("flush", true.into()),
                ("timeout_ms", 2000.into()),
                ("first_only", true.into()),
            ],
        )
        .await
        .unwrap();
    let Value::Array(found) = found else {
        panic!("{found:?}")
    };
    assert_eq!(found.len(), 1);
    let Some(Value::Bytes(loc)) = get(&found[0], "locator") else {
        panic!()
    };
    let loc = Locator::decode_with(&Bytes::copy_from_slice(loc), &Limits::default()).unwrap();
    assert!(matches!(loc, Locator::Ipv6 { .. }), "{loc:?}");
    let got = c
        .call(
            "synchronize",
            vec![
                ("asa", asa.clone()),
                ("objective", obj(&Objective::new("EX.far", SYNCH))),
                ("timeout_ms", 3000.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(decode_obj(&got).value.unwrap().as_str(), Some("far"));

    // The client serves EX.mine and floods EX.news; N3 sees both.
    let mine = Objective::new("EX.mine", SYNCH).with_value(7u32);
    for m in ["register_objective", "listen_synchronize"] {
        c.call(m, vec![("asa", asa.clone()), ("objective", obj(&mine))])
            .await
            .unwrap();
    }
    let probe = n3.register_asa("probe").await.unwrap();
    let got = probe
        .synchronize(&Objective::new("EX.mine", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_u64(), Some(7));
    let news = Objective::new("EX.news", SYNCH).with_value("hello");
    c.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", obj(&news))],
    )
    .await
    .unwrap();
    c.flood(&asa, obj(&news)).await.unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if !probe.get_flood("EX.news").await.unwrap().is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "N3 got the client's flood");
    // ...and the client reads N3's flood from N1's cache.
    let fl = Objective::new("EX.fl", SYNCH).with_value(1u32);
    far_asa
        .register_objective(&fl, RegisterOptions::default())
        .await
        .unwrap();
    far_asa
        .flood(
            60_000,
            vec![TaggedObjective {
                objective: fl,
                locator: None,
            }],
        )
        .await
        .unwrap();
    let mut entries = Vec::new();
    for _ in 0..100 {
        let r = c
            .call(
                "get_flood",
                vec![("asa", asa.clone()), ("name", "EX.fl".into())],
            )
            .await
            .unwrap();
        if let Value::Array(a) = r {
            if !a.is_empty() {
                entries = a;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entries.len(), 1);
    assert_eq!(
        decode_obj(get(&entries[0], "objective").unwrap())
            .value
            .unwrap()
            .as_u64(),
        Some(1)
    );
    // expire_flood takes back what get_flood gave.
    c.call(
        "expire_flood",
        vec![("asa", asa.clone()), ("entry", entries[0].clone())],
    )
    .await
    .unwrap();
    assert_eq!(
        c.call(
            "get_flood",
            vec![("asa", asa.clone()), ("name", "EX.fl".into())]
        )
        .await,
        Ok(Value::Array(Vec::new()))
    );

    // When the client goes, so does what it registered: its ASA name is
    // free again, and so is EX.mine (registering it again would be objReg),
    // and N3 can no longer synchronize it.
    drop(c);
    let mut c2 = client(core);
    c2.hello().await;
    let mut again = Err(0);
    for _ in 0..100 {
        again = c2
            .call("register_asa", vec![("name", "remote".into())])
            .await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asa2 = get(&again.expect("the name is free again"), "asa")
        .unwrap()
        .clone();
    c2.call(
        "register_objective",
        vec![("asa", asa2), ("objective", obj(&mine))],
    )
    .await
    .expect("EX.mine is free again");
    let r = probe
        .synchronize(&Objective::new("EX.mine", SYNCH), None, T)
        .await;
    assert!(r.is_err(), "nobody listens for EX.mine now: {r:?}");
}

#[tokio::test]
async fn bad_requests_get_errors_that_say_why() {
    let (core, _n3) = line().await;
    let mut c = client(core.clone());
    c.hello().await;
    let asa = c.register_asa("a").await;
    // Unknown method, unknown ASA handle, wrong types, missing keys, an
    // objective that is not RFC 8990 CBOR.
    assert_eq!(c.call("teleport", vec![]).await, Err(101));
    assert_eq!(
        c.call(
            "discover",
            vec![
                ("asa", 999.into()),
                ("objective", obj(&Objective::new("EX.x", SYNCH)))
            ]
        )
        .await,
        Err(6),
        "noASA"
    );
    assert_eq!(
        c.call(
            "discover",
            vec![("asa", asa.clone()), ("objective", "EX.x".into())]
        )
        .await,
        Err(100)
    );
    assert_eq!(
        c.call("discover", vec![("asa", asa.clone())]).await,
        Err(100)
    );
    assert_eq!(
        c.call(
            "discover",
            vec![
                ("asa", asa.clone()),
                ("objective", Value::Bytes(vec![0x83, 0x01]))
            ]
        )
        .await,
        Err(100)
    );
    assert_eq!(
        c.call(
            "register_objective",
            vec![
                ("asa", asa.clone()),
                ("objective", obj(&Objective::new("EX.y", SYNCH))),
                ("ttl_ms", "soon".into()),
            ]
        )
        .await,
        Err(100)
    );
    // A request whose params are not a map: answered, not a disconnect.
    c.io.send(Bytes::from_static(&[
        0x84, 0x00, 0x18, 0x63, 0x61, b'x', 0x01,
    ]))
    .await
    .unwrap();
    match c.frame().await {
        Frame::Response {
            id: 99,
            err: Some(e),
            ..
        } => assert_eq!(e.code, 100),
        other => panic!("{other:?}"),
    }
    // Still serving this client; then garbage closes the connection.
    assert!(c
        .call("get_flood", vec![("asa", asa), ("name", "EX.z".into())])
        .await
        .is_ok());
    c.io.send(Bytes::from_static(&[0xff, 0xff])).await.unwrap();
    match c.frame().await {
        Frame::Event { kind, .. } => assert_eq!(kind, "closing"),
        other => panic!("{other:?}"),
    }
    assert!(
        tokio::time::timeout(T, c.io.next())
            .await
            .unwrap()
            .is_none(),
        "then the connection ends"
    );
    // Counted: four bad params, the bad frame, the garbage; six calls
    // failed (those four, the unknown method, the unknown ASA).
    use std::sync::atomic::Ordering::Relaxed;
    let st = &core.stats;
    assert_eq!(st.bad_requests.load(Relaxed), 6, "{st:?}");
    assert_eq!(st.calls_failed.load(Relaxed), 6, "{st:?}");
    assert_eq!(st.connections.load(Relaxed), 1, "{st:?}");
}

#[tokio::test]
async fn calls_outstanding_are_bounded_and_can_be_cancelled() {
    let (mut core, _n3) = line().await;
    core.limits.requests = 1;
    core.limits.asas = 1;
    let mut c = client(core);
    c.hello().await;
    let asa = c
        .call("register_asa", vec![("name", "a".into())])
        .await
        .unwrap();
    assert_eq!(
        c.call("register_asa", vec![("name", "b".into())]).await,
        Err(104),
        "one ASA per connection here"
    );
    let asa = get(&asa, "asa").unwrap().clone();
    let slow = |asa: Value| {
        vec![
            ("asa", asa),
            ("objective", obj(&Objective::new("EX.nobody", SYNCH))),
            ("flush", true.into()),
            ("timeout_ms", 3000.into()),
        ]
    };
    let first = c.send("discover", slow(asa.clone())).await;
    let second = c.send("discover", slow(asa.clone())).await;
    match c.frame().await {
        Frame::Response {
            id, err: Some(e), ..
        } => {
            assert_eq!((id, e.code), (second, 104), "tooMany")
        }
        other => panic!("{other:?}"),
    }
    c.io.send(Bytes::from(Frame::Cancel { id: first }.encode()))
        .await
        .unwrap();
    match c.frame().await {
        Frame::Response {
            id, err: Some(e), ..
        } => {
            assert_eq!((id, e.code), (first, 103), "cancelled")
        }
        other => panic!("{other:?}"),
    }
    // The slot is free again.
    assert!(c
        .call("get_flood", vec![("asa", asa), ("name", "EX.z".into())])
        .await
        .is_ok());
}

/// Negotiation both ways through the socket: the client requests from an
/// ASA on N3 that counters once, and serves N3's request as a listener
/// (countering, then accepting); a client that goes mid-negotiation leaves
/// its peer a decline, "ASA gone".
#[tokio::test]
async fn negotiation_through_the_socket_both_ways() {
    const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
    let (core, n3) = line().await;
    let bank = n3.register_asa("bank").await.unwrap();
    let loan = Objective::new("EX.loan", NEG).with_value(0u32);
    bank.register_objective(&loan, RegisterOptions::default())
        .await
        .unwrap();
    let listener = bank.listen_negotiate("EX.loan").await.unwrap();
    // N3's bank: counter with 50, then accept.
    let served = tokio::spawn(async move {
        let (s, req) = listener.next().await.unwrap();
        let asked = req.value.as_ref().and_then(|v| v.as_u64());
        match s.step(&req.with_value(50u32), T).await.unwrap() {
            grasp_engine::Negotiation::Step { session, objective } => {
                let second = objective.value.as_ref().and_then(|v| v.as_u64());
                session.accept().await.unwrap();
                (asked, second)
            }
            other => panic!("{other:?}"),
        }
    });
    let mut c = client(core.clone());
    c.hello().await;
    let asa = c.register_asa("borrower").await;
    let want = Objective::new("EX.loan", NEG).with_value(80u32);
    c.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", obj(&want))],
    )
    .await
    .unwrap();
    let r = c
        .call(
            "request_negotiate",
            vec![
                ("asa", asa.clone()),
                ("objective", obj(&want)),
                ("timeout_ms", 3000.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(get(&r, "outcome"), Some(&Value::from("step")), "{r:?}");
    assert_eq!(
        decode_obj(get(&r, "objective").unwrap())
            .value
            .unwrap()
            .as_u64(),
        Some(50)
    );
    let session = get(&r, "session").unwrap().clone();
    // Another ASA's handle may not touch it; a wait is fine; then a step.
    assert_eq!(
        c.call(
            "negotiate_wait",
            vec![
                ("asa", 999.into()),
                ("session", session.clone()),
                ("wait_ms", 10.into())
            ]
        )
        .await,
        Err(19),
        "noSession"
    );
    c.call(
        "negotiate_wait",
        vec![
            ("asa", asa.clone()),
            ("session", session.clone()),
            ("wait_ms", 500.into()),
        ],
    )
    .await
    .unwrap();
    let r = c
        .call(
            "negotiate_step",
            vec![
                ("asa", asa.clone()),
                ("session", session.clone()),
                ("objective", obj(&want.clone().with_value(60u32))),
                ("timeout_ms", 3000.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(get(&r, "outcome"), Some(&Value::from("accepted")), "{r:?}");
    assert_eq!(served.await.unwrap(), (Some(80), Some(60)));

    // The other way: the client listens; N3 requests.
    let offer = Objective::new("EX.offer", NEG).with_value(0u32);
    c.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", obj(&offer))],
    )
    .await
    .unwrap();
    let listen = c
        .send(
            "listen_negotiate",
            vec![("asa", asa.clone()), ("name", "EX.offer".into())],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let buyer = n3.register_asa("buyer").await.unwrap();
    let ask = Objective::new("EX.offer", NEG).with_value(5u32);
    buyer
        .register_objective(&ask, RegisterOptions::default())
        .await
        .unwrap();
    let asking = tokio::spawn(async move {
        match buyer.request_negotiate(&ask, None, T).await.unwrap() {
            grasp_engine::Negotiation::Step { session, objective } => {
                let v = objective.value.as_ref().and_then(|v| v.as_u64());
                session.accept().await.unwrap();
                (v, buyer)
            }
            other => panic!("{other:?}"),
        }
    });
    let incoming = match c.frame().await {
        Frame::Response {
            id,
            err: None,
            result,
        } if id == listen => result,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        decode_obj(get(&incoming, "objective").unwrap())
            .value
            .unwrap()
            .as_u64(),
        Some(5)
    );
    let s = get(&incoming, "session").unwrap().clone();
    let r = c
        .call(
            "negotiate_step",
            vec![
                ("asa", asa.clone()),
                ("session", s),
                ("objective", obj(&offer.clone().with_value(7u32))),
                ("timeout_ms", 3000.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(get(&r, "outcome"), Some(&Value::from("accepted")));
    let (got, buyer) = asking.await.unwrap();
    assert_eq!(got, Some(7));

    // stop_negotiate completes an outstanding listen with `cancelled`.
    let listen = c
        .send(
            "listen_negotiate",
            vec![("asa", asa.clone()), ("name", "EX.offer".into())],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stop = c
        .send(
            "stop_negotiate",
            vec![("asa", asa.clone()), ("name", "EX.offer".into())],
        )
        .await;
    let mut seen = HashMap::new();
    for _ in 0..2 {
        if let Frame::Response { id, err, .. } = c.frame().await {
            seen.insert(id, err.map(|e| e.code));
        }
    }
    assert_eq!(seen.get(&listen), Some(&Some(103)), "{seen:?}");
    assert_eq!(seen.get(&stop), Some(&None), "{seen:?}");

    // A client that goes in the middle: its peer reads "ASA gone".
    let listen = c
        .send(
            "listen_negotiate",
            vec![("asa", asa.clone()), ("name", "EX.offer".into())],
        )
        .await;
    // (A long poll says nothing when it starts listening: give it a moment.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ask = Objective::new("EX.offer", NEG).with_value(9u32);
    let pending = tokio::spawn(async move { buyer.request_negotiate(&ask, None, T).await });
    match c.frame().await {
        Frame::Response { id, err: None, .. } if id == listen => {}
        other => panic!("{other:?}"),
    }
    drop(c);
    match pending.await.unwrap() {
        Ok(grasp_engine::Negotiation::Declined { reason }) => {
            assert_eq!(reason.as_deref(), Some("ASA gone"))
        }
        other => panic!("{other:?}"),
    }
}

/// A client that takes small frames gets `tooLarge` instead of an answer
/// over its limit, and the connection goes on.
#[tokio::test]
async fn answers_respect_the_clients_frame_limit() {
    let (core, _n3) = line().await;
    let mut c = client(core);
    let r = c
        .call(
            "hello",
            vec![
                ("versions", Value::Array(vec![1.into()])),
                ("max_frame", 1024.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(get(&r, "max_frame"), Some(&Value::from(1024)));
    let asa = c.register_asa("small").await;
    let big = Objective::new("EX.big", SYNCH).with_value("x".repeat(1100).as_str());
    c.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", obj(&big))],
    )
    .await
    .unwrap();
    c.flood(&asa, obj(&big)).await.unwrap();
    assert_eq!(
        c.call(
            "get_flood",
            vec![("asa", asa.clone()), ("name", "EX.big".into())]
        )
        .await,
        Err(105),
        "tooLarge"
    );
    assert!(c
        .call("get_flood", vec![("asa", asa), ("name", "EX.none".into())])
        .await
        .is_ok());
}

/// RFC 8991's event-loop model: a subscription turns peers' negotiation
/// requests into events; the client answers each on its session.
#[tokio::test]
async fn negotiation_requests_arrive_as_events() {
    const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
    let (core, n3) = line().await;
    let stats = core.stats.clone();
    let mut c = client(core);
    c.hello().await;
    let asa = c.register_asa("events").await;
    let o = Objective::new("EX.sub", NEG).with_value(0u32);
    c.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", obj(&o))],
    )
    .await
    .unwrap();
    let r = c
        .call(
            "subscribe",
            vec![
                ("asa", asa.clone()),
                ("kind", "negotiation".into()),
                ("name", "EX.sub".into()),
            ],
        )
        .await
        .unwrap();
    let sub = get(&r, "subscription").unwrap().clone();
    let buyer = n3.register_asa("buyer").await.unwrap();
    let ask = Objective::new("EX.sub", NEG).with_value(3u32);
    buyer
        .register_objective(&ask, RegisterOptions::default())
        .await
        .unwrap();
    for round in 0..2u64 {
        let (b, a) = (buyer.clone(), ask.clone());
        let asking = tokio::spawn(async move { b.request_negotiate(&a, None, T).await });
        let data = match c.frame().await {
            Frame::Event {
                subscription,
                kind,
                data,
            } => {
                assert_eq!(
                    (Value::from(subscription), kind.as_str()),
                    (sub.clone(), "negotiation")
                );
                data
            }
            other => panic!("round {round}: {other:?}"),
        };
        let s = get(&data, "session").unwrap().clone();
        c.call(
            "end_negotiate",
            vec![
                ("asa", asa.clone()),
                ("session", s),
                ("accept", true.into()),
            ],
        )
        .await
        .unwrap();
        assert!(matches!(
            asking.await.unwrap(),
            Ok(grasp_engine::Negotiation::Accepted)
        ));
    }
    c.call("unsubscribe", vec![("subscription", sub)])
        .await
        .unwrap();
    assert_eq!(
        c.call(
            "subscribe",
            vec![
                ("asa", asa),
                ("kind", "telepathy".into()),
                ("name", "EX.sub".into())
            ]
        )
        .await,
        Err(101),
        "no such kind of subscription"
    );
    assert_eq!(stats.events.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// The policy, per method and per objective: a user with a rule may do
/// what it grants and nothing else; a user without one may do nothing;
/// each refusal says notAuthorized (102) and is counted.
#[tokio::test]
async fn the_policy_refuses_what_no_rule_grants() {
    use grasp_tools::api::policy::{Names, Peer, Policy, Rule, Who};
    let (mut core, _n3) = line().await;
    let names = |v: &[&str]| Names::new(v.iter().map(|s| s.to_string()).collect()).unwrap();
    core.policy = std::sync::Arc::new(Policy {
        open: false,
        rules: vec![Rule {
            who: Who::User {
                uid: 1000,
                name: "alice".into(),
            },
            asas: names(&["alice-*"]),
            own: names(&["EX.alice"]),
            read: names(&["EX.pub*"]),
        }],
    });
    let peer = |uid| Peer {
        uid,
        gid: uid,
        pid: None,
        groups: Vec::new(),
    };
    let as_user = |uid| {
        let (a, b) = UnixStream::pair().unwrap();
        let grants = core.policy.grants(Some(&peer(uid)), 4242);
        tokio::spawn(connection(b, core.clone(), grants));
        Client::new(a)
    };
    let mut alice = as_user(1000);
    alice.hello().await;
    assert_eq!(
        alice
            .call("register_asa", vec![("name", "bob".into())])
            .await,
        Err(102)
    );
    let asa = alice.register_asa("alice-1").await;
    let mine = obj(&Objective::new("EX.alice", SYNCH).with_value(1));
    let other = obj(&Objective::new("EX.other", SYNCH).with_value(1));
    let public = obj(&Objective::new("EX.public", SYNCH));
    let tagged = |o: &Value| Value::Array(vec![Value::Map(vec![("objective".into(), o.clone())])]);
    let entry = |o: &Value| {
        Value::Map(vec![
            ("objective".into(), o.clone()),
            ("initiator".into(), Value::Bytes(vec![0; 16])),
        ])
    };
    let calls = |o: &Value, name: &str| -> Vec<(&'static str, Vec<(&'static str, Value)>)> {
        let a = asa.clone();
        vec![
            (
                "register_objective",
                vec![("asa", a.clone()), ("objective", o.clone())],
            ),
            (
                "listen_synchronize",
                vec![("asa", a.clone()), ("objective", o.clone())],
            ),
            (
                "flood",
                vec![
                    ("asa", a.clone()),
                    ("ttl_ms", 1000.into()),
                    ("tagged", tagged(o)),
                ],
            ),
            (
                "expire_flood",
                vec![("asa", a.clone()), ("entry", entry(o))],
            ),
            (
                "request_negotiate",
                vec![
                    ("asa", a.clone()),
                    ("objective", o.clone()),
                    ("timeout_ms", 100.into()),
                ],
            ),
            (
                "subscribe",
                vec![
                    ("asa", a.clone()),
                    ("kind", "negotiation".into()),
                    ("name", name.into()),
                ],
            ),
            (
                "discover",
                vec![
                    ("asa", a.clone()),
                    ("objective", o.clone()),
                    ("timeout_ms", 100.into()),
                ],
            ),
            (
                "synchronize",
                vec![
                    ("asa", a.clone()),
                    ("objective", o.clone()),
                    ("timeout_ms", 100.into()),
                ],
            ),
            ("get_flood", vec![("asa", a.clone()), ("name", name.into())]),
        ]
    };
    // Not hers: every call refused, before anything is done.
    let refused = calls(&other, "EX.other");
    for (m, params) in refused.clone() {
        assert_eq!(alice.call(m, params).await, Err(102), "{m} of EX.other");
    }
    // Hers: none refused (they may fail for other reasons: nobody answers).
    for (m, params) in calls(&mine, "EX.alice") {
        let r = alice.call(m, params).await;
        assert_ne!(r, Err(102), "{m} of EX.alice");
    }
    // Public: read, not owned.
    for (m, params) in calls(&public, "EX.public") {
        let r = alice.call(m, params).await;
        let reads = ["discover", "synchronize", "get_flood"].contains(&m);
        assert_eq!(r == Err(102), !reads, "{m} of EX.public: {r:?}");
    }
    // A user without a rule may not even register an ASA.
    let mut mallory = as_user(1001);
    mallory.hello().await;
    assert_eq!(
        mallory
            .call("register_asa", vec![("name", "alice-2".into())])
            .await,
        Err(102)
    );
    let denied = core.stats.denied.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(denied, 1 + refused.len() as u64 + 6 + 1);
}
