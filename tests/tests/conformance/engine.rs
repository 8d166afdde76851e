//! The engine and the RFC 8991 API end to end: written once, run on every
//! backend, over the in-memory fabric on tokio's paused clock and (those
//! taking a [`Place`]) between network namespaces on real time.

use std::time::Duration;

use grasp_acp::fabric::{Fabric, Link, LinkConfig};
use grasp_engine::wire::{Locator, MessageType, Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::{Asa, ErrorCode, Negotiation};
use grasp_engine::{DiscoverOptions, RegisterOptions};
use grasp_tests::backend::{Backend, Domain, TestNode};
use grasp_tests::place::{Line, Place};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5); // F_DISC | F_SYNCH
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3); // F_DISC | F_NEG
const T: Duration = Duration::from_secs(5);

async fn asa(n: &TestNode, name: &str) -> Asa {
    n.grasp.register_asa(name).await.unwrap()
}

fn obj(name: &str, flags: ObjectiveFlags) -> Objective {
    Objective::new(name, flags).with_value(Value::null())
}

pub(crate) fn link(f: &Fabric, name: &str) -> Link {
    f.link(
        name,
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(1),
        },
    )
}

/// The two nodes of a line of two.
fn two(line: &Line) -> (&TestNode, &TestNode) {
    match &line.nodes[..] {
        [a, b] => (a, b),
        _ => panic!("a line of two"),
    }
}

pub(crate) async fn discover_and_synchronize_between_two_nodes(backend: Backend, place: Place) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, 1, &["A", "B"]).await;
    let (a, b) = two(&line);
    let asa_b = asa(b, "server").await;
    let served =
        Objective::new("EX.sync", SYNCH).with_value(Value::from_serialize(&("v", 1)).unwrap());
    asa_b
        .register_objective(&served, RegisterOptions::default())
        .await
        .unwrap();
    asa_b.listen_synchronize(&served).await.unwrap();

    let asa_a = asa(a, "client").await;
    // First-answer discovery returns after one round trip, not the timeout.
    let t0 = tokio::time::Instant::now();
    let locs = asa_a
        .discover(
            &obj("EX.sync", SYNCH),
            DiscoverOptions::first(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(t0.elapsed() < place.round_trip(), "took {:?}", t0.elapsed());
    assert_eq!(locs.len(), 1);
    assert_eq!(locs[0].locator, b.transport.node_locator());
    // Second time from the cache, at once.
    let t1 = tokio::time::Instant::now();
    let again = asa_a
        .discover(&obj("EX.sync", SYNCH), DiscoverOptions::default())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    match place {
        Place::Fabric => assert_eq!(t1.elapsed(), Duration::ZERO),
        Place::Netns => assert!(t1.elapsed() < place.round_trip()),
    }

    // Synchronize with discovery, and with an explicit peer.
    let got = asa_a
        .synchronize(&obj("EX.sync", SYNCH), None, T)
        .await
        .unwrap();
    let v: (String, u32) = got.value.unwrap().deserialize().unwrap();
    assert_eq!(v, ("v".to_string(), 1));
    let got = asa_a
        .synchronize(&obj("EX.sync", SYNCH), Some(locs[0].clone()), T)
        .await
        .unwrap();
    assert!(got.value.is_some());

    // Updating the value is seen by the next synchronization.
    let updated = served.clone().with_value(Value::from("new"));
    asa_b.listen_synchronize(&updated).await.unwrap();
    let got = asa_a
        .synchronize(&obj("EX.sync", SYNCH), Some(locs[0].clone()), T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("new"));

    // Stopped: the responder closes at once and we get noListener.
    asa_b.stop_synchronize("EX.sync").await.unwrap();
    let e = asa_a
        .synchronize(&obj("EX.sync", SYNCH), Some(locs[0].clone()), T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoListener);

    // Nothing anywhere: notFloodDisc.
    let e = asa_a
        .synchronize(&obj("EX.none", SYNCH), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFloodDisc);
    // Not a synchronization objective.
    let e = asa_a
        .synchronize(&obj("EX.neg", NEG), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotSynch);
    line.assert_no_drops();
}

pub(crate) async fn rapid_synchronization_rides_on_the_response(backend: Backend, place: Place) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, 2, &["A", "B"]).await;
    let (a, b) = two(&line);
    let asa_b = asa(b, "server").await;
    let served = Objective::new("EX.rapid", SYNCH).with_value(Value::from("fast"));
    let opts = RegisterOptions {
        rapid: true,
        ..RegisterOptions::default()
    };
    asa_b.register_objective(&served, opts).await.unwrap();
    asa_b.listen_synchronize(&served).await.unwrap();
    let asa_a = asa(a, "client").await;
    let before = b.transport.stats().channels_accepted;
    let got = asa_a
        .synchronize(&obj("EX.rapid", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("fast"));
    // No M_REQ_SYN connection reached B: the value came in the M_RESPONSE.
    assert_eq!(b.transport.stats().channels_accepted, before);
}

pub(crate) async fn flood_get_expire_and_linklocal(backend: Backend, place: Place) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, 3, &["A", "B"]).await;
    let (a, b) = two(&line);
    let asa_b = asa(b, "flooder").await;
    let o1 = Objective::new("EX.flood", SYNCH).with_value(Value::from("flooded-value-1"));
    let o2 =
        Objective::new("EX.flood2", SYNCH).with_value(Value::from_serialize(&[1, 2, 3]).unwrap());
    for o in [&o1, &o2] {
        asa_b
            .register_objective(o, RegisterOptions::default())
            .await
            .unwrap();
    }
    asa_b
        .flood(
            10_000,
            vec![
                TaggedObjective {
                    objective: o1.clone(),
                    locator: Some(b.transport.node_locator()),
                },
                TaggedObjective {
                    objective: o2.clone(),
                    locator: None,
                },
            ],
        )
        .await
        .unwrap();
    tokio::time::sleep(place.settle()).await;
    let asa_a = asa(a, "reader").await;
    let got = asa_a.get_flood("EX.flood").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].objective.value.as_ref().unwrap().as_str(),
        Some("flooded-value-1")
    );
    assert_eq!(got[0].locator, Some(b.transport.node_locator()));
    // synchronize(peer = None) answers from the flood cache.
    let s = asa_a
        .synchronize(&obj("EX.flood2", SYNCH), None, T)
        .await
        .unwrap();
    assert_eq!(s.value.unwrap().to_string(), "[1, 2, 3]");
    // The flooder sees its own flood too.
    assert_eq!(asa_b.get_flood("EX.flood").await.unwrap().len(), 1);
    // expire_flood removes it; ttl expiry removes the other.
    asa_a.expire_flood(&got[0]).await.unwrap();
    assert!(asa_a.get_flood("EX.flood").await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(asa_a.get_flood("EX.flood2").await.unwrap().is_empty());

    // `::` means this link's link-local address, with loop count 1.
    let ll = Objective::new("EX.llflood", SYNCH).with_value(Value::from("here"));
    asa_b
        .register_objective(&ll, RegisterOptions::default())
        .await
        .unwrap();
    let tag = Locator::tcp6(std::net::Ipv6Addr::UNSPECIFIED, 7017);
    asa_b
        .flood(
            0,
            vec![TaggedObjective {
                objective: ll,
                locator: Some(tag),
            }],
        )
        .await
        .unwrap();
    tokio::time::sleep(place.settle()).await;
    let got = asa_a.get_flood("EX.llflood").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].objective.loop_count, 1);
    let b_ll = b.transport.interfaces()[0].link_local;
    assert_eq!(got[0].locator, Some(Locator::tcp6(b_ll, 7017)));
    assert_eq!(got[0].expires, None, "ttl 0 never expires");
    // Only registered objectives can be flooded.
    let stranger = Objective::new("EX.other", SYNCH);
    let e = asa_a
        .flood(
            1000,
            vec![TaggedObjective {
                objective: stranger,
                locator: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotYourObj);
    line.assert_no_drops();
}

async fn negotiation_pair(
    backend: Backend,
    place: Place,
    seed: u64,
) -> (Line, Asa, Asa, grasp_engine::NegotiationListener) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, seed, &["A", "B"]).await;
    let (a, b) = two(&line);
    let asa_b = asa(b, "seller").await;
    asa_b
        .register_objective(&obj("EX.neg", NEG), RegisterOptions::default())
        .await
        .unwrap();
    let listener = asa_b.listen_negotiate("EX.neg").await.unwrap();
    let asa_a = asa(a, "buyer").await;
    (line, asa_a, asa_b, listener)
}

fn offer(amount: u32, loop_count: u8) -> Objective {
    Objective::new("EX.neg", NEG)
        .with_loop_count(loop_count)
        .with_value(Value::from_serialize(&("NZD", amount)).unwrap())
}

fn amount(o: &Objective) -> u32 {
    let (_, a): (String, u32) = o.value.as_ref().unwrap().deserialize().unwrap();
    a
}

pub(crate) async fn negotiation_steps_wait_and_accept_with_graspy_loop_counts(
    backend: Backend,
    place: Place,
) {
    let (_line, asa_a, _asa_b, listener) = negotiation_pair(backend, place, 4).await;
    // B: wait, counter 100, then accept whatever comes next.
    let server = tokio::spawn(async move {
        let (session, req) = listener.next().await.unwrap();
        assert_eq!(amount(&req), 150);
        assert_eq!(req.loop_count, 6, "the request is not decremented");
        session.wait(Duration::from_millis(2000)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let Negotiation::Step { session, objective } =
            session.step(&offer(100, req.loop_count), T).await.unwrap()
        else {
            panic!("expected a counter-offer")
        };
        assert_eq!(amount(&objective), 130);
        assert_eq!(objective.loop_count, 4, "sent as 5, decremented on receipt");
        session.accept().await.unwrap();
    });
    let Negotiation::Step { session, objective } = asa_a
        .request_negotiate(&offer(150, 6), None, T)
        .await
        .unwrap()
    else {
        panic!("expected a counter-offer")
    };
    assert_eq!(amount(&objective), 100);
    assert_eq!(objective.loop_count, 5, "sent as 6, decremented on receipt");
    assert!(session.peer().is_some());
    let out = session
        .step(&offer(130, objective.loop_count), T)
        .await
        .unwrap();
    assert!(matches!(out, Negotiation::Accepted));
    server.await.unwrap();
}

pub(crate) async fn negotiation_decline_with_reason_both_ways(backend: Backend, place: Place) {
    let (_line, asa_a, _asa_b, listener) = negotiation_pair(backend, place, 5).await;
    let server = tokio::spawn(async move {
        let (session, _) = listener.next().await.unwrap();
        session.decline(Some("Insufficient funds")).await.unwrap();
        // Second session: counter-offer; the requester declines.
        let (session, req) = listener.next().await.unwrap();
        let out = session.step(&offer(100, req.loop_count), T).await.unwrap();
        match out {
            Negotiation::Declined { reason } => {
                assert_eq!(reason.as_deref(), Some("Offer too low"))
            }
            other => panic!("{other:?}"),
        }
    });
    match asa_a
        .request_negotiate(&offer(300, 6), None, T)
        .await
        .unwrap()
    {
        Negotiation::Declined { reason } => {
            assert_eq!(reason.as_deref(), Some("Insufficient funds"))
        }
        other => panic!("{other:?}"),
    }
    let Negotiation::Step { session, .. } = asa_a
        .request_negotiate(&offer(150, 6), None, T)
        .await
        .unwrap()
    else {
        panic!()
    };
    session.decline(Some("Offer too low")).await.unwrap();
    server.await.unwrap();
}

pub(crate) async fn negotiation_loop_exhaustion_timeout_and_vanishing_peer(
    backend: Backend,
    place: Place,
) {
    let (_line, asa_a, _asa_b, listener) = negotiation_pair(backend, place, 6).await;
    let server = tokio::spawn(async move {
        // 1: keep countering until the loop count runs out.
        let (mut session, req) = listener.next().await.unwrap();
        let mut lc = req.loop_count;
        let server_end = loop {
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
        // 2: never answer (the requester times out).
        let (silent, _) = listener.next().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(silent);
        // 3: vanish mid-session.
        let (gone, _) = listener.next().await.unwrap();
        drop(gone);
        server_end
    });
    // 1: loop count 3 allows few steps; whoever runs out gets
    // loopExhausted, the other side sees the session close (noPeer).
    let mut out = asa_a
        .request_negotiate(&offer(150, 3), None, T)
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
    assert!(steps <= 3, "loop count 3 bounds the exchange");
    // 2: timeout.
    let e = asa_a
        .request_negotiate(&offer(150, 6), None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoNegReply);
    // 3: the peer vanishes.
    let e = asa_a
        .request_negotiate(&offer(150, 6), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoPeer);
    let server_end = server.await.unwrap();
    let mut ends = [client_end, server_end];
    ends.sort_by_key(|c| c.code());
    assert_eq!(ends, [ErrorCode::LoopExhausted, ErrorCode::NoPeer]);
}

pub(crate) async fn three_node_line_relays_discovery_on_first_try_and_floods_once(
    backend: Backend,
    place: Place,
) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, 8, &["A", "R", "C"]).await;
    let [a, r, c] = &line.nodes[..] else {
        panic!("a line of three")
    };
    let asa_c = asa(c, "far").await;
    let served = Objective::new("EX.relay", SYNCH).with_value(Value::from("via-relay"));
    asa_c
        .register_objective(&served, RegisterOptions::default())
        .await
        .unwrap();
    asa_c.listen_synchronize(&served).await.unwrap();
    let asa_a = asa(a, "near").await;
    // First call finds it, through the relay (graspy returns [] here).
    let locs = asa_a
        .discover(
            &obj("EX.relay", SYNCH),
            DiscoverOptions::first(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(locs.len(), 1);
    assert_eq!(locs[0].locator, c.transport.node_locator());
    assert!(locs[0].diverted);
    let got = asa_a
        .synchronize(&obj("EX.relay", SYNCH), Some(locs[0].clone()), T)
        .await
        .unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("via-relay"));
    // A flood from C reaches A once, with the loop count decremented by R.
    let fl = Objective::new("EX.rflood", SYNCH)
        .with_value(Value::from("from-C"))
        .with_loop_count(3);
    asa_c
        .register_objective(&fl, RegisterOptions::default())
        .await
        .unwrap();
    asa_c
        .flood(
            10_000,
            vec![TaggedObjective {
                objective: fl,
                locator: None,
            }],
        )
        .await
        .unwrap();
    tokio::time::sleep(place.settle() * 2).await;
    let got = asa_a.get_flood("EX.rflood").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].objective.loop_count, 2);
    assert_eq!(
        a.transport.stats().multicast_received,
        1,
        "exactly one flood copy reached A"
    );
    let asa_r = asa(r, "relay").await;
    assert_eq!(asa_r.get_flood("EX.rflood").await.unwrap().len(), 1);
}

pub(crate) async fn hundred_concurrent_synchronizations(backend: Backend, place: Place) {
    let d = Domain::new(backend, 1);
    let line = Line::new(&d, place, 9, &["A", "B"]).await;
    let (a, b) = two(&line);
    let asa_b = asa(b, "server").await;
    let served = Objective::new("EX.many", SYNCH).with_value(Value::from(42u32));
    asa_b
        .register_objective(&served, RegisterOptions::default())
        .await
        .unwrap();
    asa_b.listen_synchronize(&served).await.unwrap();
    let asa_a = asa(a, "client").await;
    let locs = asa_a
        .discover(
            &obj("EX.many", SYNCH),
            DiscoverOptions::first(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let asa_a = asa_a.clone();
        let peer = locs[0].clone();
        tasks.push(tokio::spawn(async move {
            asa_a
                .synchronize(&obj("EX.many", SYNCH), Some(peer), T)
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().value.unwrap().as_u64(), Some(42));
    }
}

/// A requester that half-closes after its request (`shutdown(SHUT_WR)`,
/// `nc -N`) still gets the answer, then EOF; one that drops its channel
/// altogether is counted as unsent, never as sent.
pub(crate) async fn a_half_closed_requester_still_gets_its_answer(backend: Backend) {
    use futures::{SinkExt, StreamExt};
    use grasp_engine::wire::{Message, SessionId, SessionObjective};
    let f = Fabric::new(11);
    let d = Domain::new(backend, 1);
    let l = link(&f, "l");
    let b = d.fabric_node(&f, "B", &[&l]).await;
    let raw = d.fabric_transport(&f, "raw", &[&l]).await;
    let asa_b = asa(&b, "server").await;
    let served = Objective::new("EX.hc", SYNCH).with_value(Value::from(7u32));
    asa_b
        .register_objective(&served, RegisterOptions::default())
        .await
        .unwrap();
    asa_b.listen_synchronize(&served).await.unwrap();
    let Locator::Ipv6 { addr, port, .. } = b.transport.node_locator() else {
        panic!("no IPv6 locator")
    };
    let peer = std::net::SocketAddr::from((addr, port));
    let req = |sid: u32| {
        Message::ReqSyn(SessionObjective::new(SessionId(sid), obj("EX.hc", SYNCH))).encode()
    };
    for i in 0..50u32 {
        let mut ch = raw.transport.connect(peer).await.unwrap();
        // A request then a half-close; every third one is garbage, answered
        // with M_INVALID.
        let bad = i % 3 == 0;
        let msg = if bad {
            bytes::Bytes::from_static(&[0x82, 0x04, 0xff])
        } else {
            req(i + 1)
        };
        ch.io.send(msg).await.unwrap();
        ch.io.close().await.unwrap();
        let answer = tokio::time::timeout(T, ch.io.next())
            .await
            .expect("no answer in time")
            .expect("EOF before the answer")
            .unwrap();
        match Message::decode(&answer).unwrap() {
            Message::Synch(s) if !bad => {
                assert_eq!(s.session_id, SessionId(i + 1));
                assert_eq!(s.objective.value.unwrap().as_u64(), Some(7));
            }
            Message::Invalid(_) if bad => {}
            other => panic!("connection {i}: {other:?}"),
        }
        assert!(ch.io.next().await.is_none(), "then EOF");
    }
    let (s, _) = b.grasp.stats().await.unwrap();
    assert_eq!(s.sent.get(MessageType::Synch), 33);
    assert_eq!(s.sent.get(MessageType::Invalid), 17);
    assert_eq!(s.unsent, 0);

    // A negotiation requester that half-closes still reads the ASA's M_END.
    let neg = Objective::new("EX.hcneg", NEG).with_value(Value::null());
    asa_b
        .register_objective(&neg, RegisterOptions::default())
        .await
        .unwrap();
    let listener = asa_b.listen_negotiate("EX.hcneg").await.unwrap();
    let mut ch = raw.transport.connect(peer).await.unwrap();
    let m = Message::ReqNeg(SessionObjective::new(
        SessionId(77),
        Objective::new("EX.hcneg", NEG).with_value(Value::from(5u32)),
    ));
    ch.io.send(m.encode()).await.unwrap();
    ch.io.close().await.unwrap();
    let (session, _) = listener.next().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    session.accept().await.unwrap();
    let end = ch.io.next().await.expect("EOF before M_END").unwrap();
    assert!(
        matches!(Message::decode(&end).unwrap(), Message::End(e) if e.session_id == SessionId(77)),
        "{end:?}"
    );
    assert!(ch.io.next().await.is_none(), "then EOF");

    // A requester that vanishes before the answer: the answer is counted
    // once, as unsent where the backend learns of the close before the
    // write (the fabric's pipes), as sent where the close arrives after it
    // (TLS's multiplexed streams, like TCP under a race).
    let mut ch = raw.transport.connect(peer).await.unwrap();
    ch.io.send(req(1000)).await.unwrap();
    drop(ch);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, _) = b.grasp.stats().await.unwrap();
    assert_eq!(s.sent.get(MessageType::Synch) + s.unsent, 34, "{s:?}");
    if backend != Backend::Tls {
        assert_eq!(s.unsent, 1, "{s:?}");
    }
}

/// Plain only: without the knob, an insecure substrate refuses what RFC 8990
/// reserves for a secured one, but not discovery.
pub(crate) async fn insecure_transport_refuses_negotiation_but_not_discovery() {
    let f = Fabric::new(7);
    let l = link(&f, "l");
    let (t, inbound) = f.node("A").attach(&l).bind();
    let g = grasp_engine::Grasp::start(t, inbound, grasp_engine::Config::default());
    let asa = g.register_asa("x").await.unwrap();
    let e = asa
        .request_negotiate(&offer(1, 6), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoSecurity);
    let found = asa
        .discover(
            &obj("EX.any", SYNCH),
            DiscoverOptions::first(Duration::from_millis(50)),
        )
        .await;
    assert_eq!(found.unwrap(), vec![]);
}
