//! graspy's own smoke tests, on every backend: (`grasptests.py` / `graspitests.py`, scenarios
//! T1-T11 of the project's graspy reference §5) as real assertions, over the
//! in-memory fabric on a paused clock (T1-T9 and T11 between namespaces too). graspy runs them in one process with
//! `listen_self`; here the ASAs sit on separate nodes where that matters
//! (divert needs a node that has the objective only in its cache).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::wire::{
    Locator, Message, Objective, ObjectiveFlags, SessionId, SessionObjective, TaggedObjective,
    Value,
};
use grasp_engine::{DiscoverOptions, RegisterOptions};
use grasp_engine::{ErrorCode, Negotiation};
use grasp_tests::backend::{Backend, Domain};
use grasp_tests::place::{Line, Place};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(5);

pub(crate) async fn t1_to_t9_and_t11_registration_discovery_divert_flood_synch(
    backend: Backend,
    place: Place,
) {
    let d = Domain::new(backend, 1);
    // B is the ASA node of graspy's test; A learns B's objectives and
    // answers C with diverts.
    let line = Line::new(&d, place, 11, &["B", "A", "C"]).await;
    let [nb, na, nc] = &line.nodes[..] else {
        panic!("a line of three")
    };
    let (b, tb) = (&nb.grasp, &nb.transport);
    let (a, c) = (&na.grasp, &nc.grasp);

    // T1: register ASA-1 and EX1 (synch, loop count 2, ttl 10 s).
    let asa1 = b.register_asa("ASA-1").await.unwrap();
    let ex1 = Objective::new("EX1", SYNCH).with_loop_count(2);
    let opts = RegisterOptions {
        ttl_ms: 10_000,
        ..RegisterOptions::default()
    };
    asa1.register_objective(&ex1, opts).await.unwrap();

    // T2: EX1 is registered but neither listening nor discoverable: no answer.
    let probe_a = a.register_asa("probe").await.unwrap();
    let found = probe_a
        .discover(
            &Objective::new("EX1", SYNCH),
            DiscoverOptions::all(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(found.is_empty(), "T2: {found:?}");

    // T3: "Boot", discoverable: found, three times, one locator (duplicates
    // merged); then a node that only has it cached answers with O_DIVERT.
    let boot_asa = b.register_asa("Boot").await.unwrap();
    let boot = Objective::new("Boot", SYNCH);
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    boot_asa.register_objective(&boot, opts).await.unwrap();
    for _ in 0..3 {
        let found = probe_a
            .discover(
                &boot,
                DiscoverOptions {
                    flush: false,
                    ..DiscoverOptions::all(Duration::from_millis(300))
                },
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "T3");
        assert_eq!(found[0].locator, tb.node_locator());
        assert!(!found[0].diverted);
    }
    let probe_c = c.register_asa("probe-c").await.unwrap();
    let via_divert = probe_c
        .discover(&boot, DiscoverOptions::first(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(via_divert.len(), 1, "T3 divert");
    assert!(
        via_divert[0].diverted,
        "T3: answered from A's cache with O_DIVERT"
    );
    assert_eq!(via_divert[0].locator, tb.node_locator());

    // T4: Money, Bling (registered twice: objReg), Intent.PrefixManager with
    // a raw CBOR value (tag 24); one M_FLOOD with all three, ttl 0.
    let money = Objective::new("Money", SYNCH).with_value(Value::from(1000u32));
    let bling = Objective::new("Bling", SYNCH).with_value(Value::from("diamonds"));
    let raw_cbor = Value::from_serialize(&("prefix", 64u8)).unwrap();
    let pm =
        Objective::new("Intent.PrefixManager", SYNCH).with_value(Value::embed(raw_cbor.as_cbor()));
    asa1.register_objective(&money, RegisterOptions::default())
        .await
        .unwrap();
    asa1.register_objective(&bling, RegisterOptions::default())
        .await
        .unwrap();
    let again = asa1
        .register_objective(&bling, RegisterOptions::default())
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::ObjReg, "T4");
    asa1.register_objective(&pm, RegisterOptions::default())
        .await
        .unwrap();
    let tagged = [&money, &bling, &pm]
        .into_iter()
        .map(|o| TaggedObjective {
            objective: o.clone(),
            locator: None,
        })
        .collect();
    asa1.flood(0, tagged).await.unwrap();
    tokio::time::sleep(place.settle() * 2).await;
    assert_eq!(
        asa1.get_flood("Money").await.unwrap().len(),
        1,
        "T4: received locally too"
    );

    // T5: listen_synchronize Boot with [1, "two", 3].
    let boot_v = boot
        .clone()
        .with_value(Value::from_serialize(&(1, "two", 3)).unwrap());
    boot_asa.listen_synchronize(&boot_v).await.unwrap();

    // T6: from the flood cache; EX1 fails; Boot by discovery + M_REQ_SYN
    // through another objective instance.
    let s = probe_a
        .synchronize(&Objective::new("Bling", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(s.value.unwrap().as_str(), Some("diamonds"), "T6");
    let s = probe_a
        .synchronize(&Objective::new("Intent.PrefixManager", SYNCH), None, T)
        .await
        .unwrap();
    assert!(s.value.unwrap().embedded().is_some(), "T6: tag 24 kept");
    let e = probe_a
        .synchronize(&Objective::new("EX1", SYNCH), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFloodDisc, "T6: EX1 should fail");
    let s = probe_a
        .synchronize(&Objective::new("Boot", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(s.value.unwrap().to_string(), "[1, \"two\", 3]", "T6");

    // T8: get_flood Intent.PrefixManager, and the value decodes as CBOR.
    let pmf = probe_a.get_flood("Intent.PrefixManager").await.unwrap();
    assert_eq!(pmf.len(), 1);
    let inner = pmf[0]
        .objective
        .value
        .as_ref()
        .unwrap()
        .embedded()
        .unwrap()
        .to_vec();
    let (what, len): (String, u8) = Value::from_cbor(inner).unwrap().deserialize().unwrap();
    assert_eq!((what.as_str(), len), ("prefix", 64), "T8");

    // T9: deregister Boot; the cached locator points at a node that no
    // longer listens: noListener.
    let cached = probe_a
        .discover(&boot, DiscoverOptions::default())
        .await
        .unwrap();
    assert_eq!(cached.len(), 1);
    boot_asa.deregister_objective("Boot").await.unwrap();
    let e = probe_a
        .synchronize(&boot, Some(cached[0].clone()), T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoListener, "T9");

    // T11: deregister ASA-1; its handle is then unknown.
    let asa1_copy = asa1.clone();
    asa1.deregister().await.unwrap();
    let e = asa1_copy.get_flood("Money").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NoAsa, "T11");
}

/// T10: in-host negotiation, each of graspy's random branches as its own
/// deterministic case.
pub(crate) async fn t10_negotiation_branches(backend: Backend) {
    let f = Fabric::new(12);
    let d = Domain::new(backend, 1);
    let l = f.link(
        "l",
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(1),
        },
    );
    let host = d
        .node(f.node("host").attach(&l).listen_self(true), "host")
        .await;
    let (g, t) = (&host.grasp, &host.transport);
    let neg1 = g.register_asa("Neg1").await.unwrap();
    let neg2 = g.register_asa("Neg2").await.unwrap();
    let ex2 = Objective::new("EX2", NEG);
    neg1.register_objective(&ex2, RegisterOptions::default())
        .await
        .unwrap();
    let listener = neg1.listen_negotiate("EX2").await.unwrap();
    let want = |amount: u32, cur: &str| {
        Objective::new("EX2", NEG).with_value(Value::from_serialize(&(cur, amount)).unwrap())
    };
    let amount = |o: &Objective| {
        o.value
            .as_ref()
            .unwrap()
            .deserialize::<(String, u32)>()
            .unwrap()
    };

    let server = tokio::spawn(async move {
        // 1: accept at once.
        let (s, _) = listener.next().await.unwrap();
        s.accept().await.unwrap();
        // 2: counter-offer, then accept.
        let (s, req) = listener.next().await.unwrap();
        let Negotiation::Step { session, .. } = s
            .step(
                &req.clone()
                    .with_value(Value::from_serialize(&("NZD", 80)).unwrap()),
                T,
            )
            .await
            .unwrap()
        else {
            panic!("2")
        };
        session.accept().await.unwrap();
        // 3: negotiate_wait, then a step after the wait began.
        let (s, req) = listener.next().await.unwrap();
        s.wait(Duration::from_secs(15)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let Negotiation::Step { session, .. } = s
            .step(
                &req.clone()
                    .with_value(Value::from_serialize(&("NZD", 90)).unwrap()),
                T,
            )
            .await
            .unwrap()
        else {
            panic!("3")
        };
        session.accept().await.unwrap();
        // 4: decline, invalid currency.
        let (s, _) = listener.next().await.unwrap();
        s.decline(Some("Invalid currency")).await.unwrap();
        // 5: decline with a UTF-8 (Russian) reason.
        let (s, _) = listener.next().await.unwrap();
        s.decline(Some("Недостаточно средств")).await.unwrap();
        // 6: counter-offer; the requester declines.
        let (s, req) = listener.next().await.unwrap();
        let out = s
            .step(
                &req.clone()
                    .with_value(Value::from_serialize(&("NZD", 10)).unwrap()),
                T,
            )
            .await
            .unwrap();
        assert!(
            matches!(out, Negotiation::Declined { reason: Some(ref r) } if r == "You are mean!")
        );
        // 7: the peer answers our step with a malformed message.
        let (s, req) = listener.next().await.unwrap();
        let e = s.step(&req, T).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::CborFail);
    });

    let t_timeout = Duration::from_secs(30);
    assert!(matches!(
        neg2.request_negotiate(&want(100, "NZD"), None, T)
            .await
            .unwrap(),
        Negotiation::Accepted
    ));
    let Negotiation::Step { session, objective } = neg2
        .request_negotiate(&want(100, "NZD"), None, T)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(amount(&objective).1, 80);
    assert!(matches!(
        session.step(&objective, T).await.unwrap(),
        Negotiation::Accepted
    ));
    // 3: the 15 s M_WAIT stretches our 5 s timeout.
    let Negotiation::Step { session, objective } = neg2
        .request_negotiate(&want(100, "NZD"), None, T)
        .await
        .unwrap()
    else {
        panic!("the wait must extend the timeout")
    };
    assert_eq!(amount(&objective).1, 90);
    assert!(matches!(
        session.step(&objective, t_timeout).await.unwrap(),
        Negotiation::Accepted
    ));
    match neg2
        .request_negotiate(&want(100, "USD"), None, T)
        .await
        .unwrap()
    {
        Negotiation::Declined { reason } => assert_eq!(reason.as_deref(), Some("Invalid currency")),
        other => panic!("{other:?}"),
    }
    match neg2
        .request_negotiate(&want(100, "NZD"), None, T)
        .await
        .unwrap()
    {
        Negotiation::Declined { reason } => {
            assert_eq!(reason.as_deref(), Some("Недостаточно средств"))
        }
        other => panic!("{other:?}"),
    }
    let Negotiation::Step { session, .. } = neg2
        .request_negotiate(&want(100, "NZD"), None, T)
        .await
        .unwrap()
    else {
        panic!()
    };
    session.decline(Some("You are mean!")).await.unwrap();

    // 7: a raw peer sends M_REQ_NEG, then garbage instead of a step.
    let mut raw = t
        .connect(std::net::SocketAddr::from(match t.node_locator() {
            Locator::Ipv6 { addr, port, .. } => (addr, port),
            _ => unreachable!(),
        }))
        .await
        .unwrap();
    let req = Message::ReqNeg(SessionObjective::new(SessionId(7), want(100, "NZD")));
    raw.io.send(req.encode()).await.unwrap();
    let step = raw.io.next().await.unwrap().unwrap();
    assert!(matches!(
        Message::decode(&step).unwrap(),
        Message::Negotiate(_)
    ));
    raw.io
        .send(bytes::Bytes::from_static(&[0x83, 0x05, 0x07, 0xff]))
        .await
        .unwrap();
    server.await.unwrap();
}
