//! The engine and API over the plain ACP between network namespaces (root
//! only; loudly skipped otherwise): two nodes on one veth link, and a line of
//! three where the middle node relays.
//!
//! Addresses follow the graspy vectors: A ab0 fe80::1:1 fd00:1::1; B/R
//! ba0 fe80::1:2 fd00:1::2 and bc0 fe80::2:1 fd00:2::1; C cb0 fe80::2:2
//! fd00:2::2.

use std::net::Ipv6Addr;
use std::time::Duration;

use grasp_acp::plain;
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{MessageType, Objective, ObjectiveFlags, Value};
use grasp_engine::Grasp;
use grasp_engine::{Config, DiscoverOptions, RegisterOptions};
use grasp_tests::netns::{spawn_in, Lab};
use grasp_tests::scenario::{flood_one, wait_for_flood};
use tokio::sync::oneshot;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn config() -> Config {
    let mut c = Config::default();
    c.allow_insecure = true; // the plain ACP has no security: a lab
    c
}

async fn start(iface: &str) -> Grasp {
    let (t, inbound) = plain::bind(plain::Config::default().interfaces([iface]))
        .await
        .expect("bind the plain ACP");
    Grasp::start(t, inbound, config())
}

#[test]
fn engine_three_node_line_with_a_relay_over_the_plain_acp() {
    if Lab::skip_loudly("engine_three_node_line_with_a_relay_over_the_plain_acp") {
        return;
    }
    let mut lab = Lab::new();
    let (na, nr) = lab.pair().unwrap();
    let nc = lab.netns().unwrap();
    lab.link(2, (&nr, "bc0"), (&nc, "cb0")).unwrap();
    lab.forwarding(&nr).unwrap();
    lab.route(&na, "fd00:2::/64", "fe80::1:2", "ab0").unwrap();
    lab.route(&nc, "fd00:1::/64", "fe80::2:1", "cb0").unwrap();

    let (r_ready_tx, r_ready_rx) = oneshot::channel::<()>();
    let (c_ready_tx, c_ready_rx) = oneshot::channel::<()>();
    let (done_r_tx, done_r_rx) = oneshot::channel::<()>();
    let (done_c_tx, done_c_rx) = oneshot::channel::<()>();
    let (flood_tx, flood_rx) = oneshot::channel::<()>();

    let r = spawn_in(&nr, move || async move {
        let (t, inbound) = plain::bind(plain::Config::default().interfaces(["ba0", "bc0"]))
            .await
            .unwrap();
        assert_eq!(t.interfaces().len(), 2);
        let _g = Grasp::start(t, inbound, config());
        r_ready_tx.send(()).unwrap();
        done_r_rx.await.unwrap();
    });
    let c = spawn_in(&nc, move || async move {
        let g = start("cb0").await;
        let asa = g.register_asa("C").await.unwrap();
        let o = Objective::new("EX.relay", SYNCH).with_value(Value::from("via-relay"));
        asa.register_objective(&o, RegisterOptions::default())
            .await
            .unwrap();
        asa.listen_synchronize(&o).await.unwrap();
        let fl = Objective::new("EX.rflood", SYNCH)
            .with_value(Value::from("from-C"))
            .with_loop_count(3);
        asa.register_objective(&fl, RegisterOptions::default())
            .await
            .unwrap();
        c_ready_tx.send(()).unwrap();
        flood_rx.await.unwrap();
        flood_one(&asa, fl, 10_000).await;
        done_c_rx.await.unwrap();
    });
    let a = spawn_in(&na, move || async move {
        let g = start("ab0").await;
        let asa = g.register_asa("A").await.unwrap();
        r_ready_rx.await.unwrap();
        c_ready_rx.await.unwrap();
        let probe = Objective::new("EX.relay", SYNCH);
        // The first discovery succeeds through the relay.
        let found = asa
            .discover(&probe, DiscoverOptions::first(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "relayed answer on the first try");
        assert!(found[0].diverted);
        assert_eq!(
            found[0].socket_addr().unwrap().ip(),
            std::net::IpAddr::V6(a6("fd00:2::2"))
        );
        let got = asa
            .synchronize(&probe, Some(found[0].clone()), T)
            .await
            .unwrap();
        assert_eq!(got.value.unwrap().as_str(), Some("via-relay"));
        // A flood from C reaches A through R, loop count 3 -> 2.
        flood_tx.send(()).unwrap();
        let got = wait_for_flood(&asa, "EX.rflood", 100).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].objective.loop_count, 2);
        assert_eq!(got[0].initiator, std::net::IpAddr::V6(a6("fd00:2::2")));
        done_r_tx.send(()).unwrap();
        done_c_tx.send(()).unwrap();
    });
    a.join().expect("A panicked").unwrap();
    c.join().expect("C panicked").unwrap();
    r.join().expect("R panicked").unwrap();
}

/// Interfaces that come and go while a node runs: a link added after start
/// is joined and used (discovery over it finds a node there), a link
/// deleted is dropped, and a changed address becomes the node's locator;
/// the engine hears of each.
#[test]
fn interfaces_coming_and_going_are_followed() {
    if Lab::skip_loudly("interfaces_coming_and_going_are_followed") {
        return;
    }
    let mut lab = Lab::new();
    let (na, _nb) = lab.pair().unwrap();
    let nc = lab.netns().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (linked_tx, linked_rx) = oneshot::channel::<()>();
    let (found_tx, found_rx) = std::sync::mpsc::channel::<()>();
    let (deleted_tx, deleted_rx) = oneshot::channel::<()>();
    let (c_ready_tx, c_ready_rx) = oneshot::channel::<()>();
    let (done_c_tx, done_c_rx) = oneshot::channel::<()>();
    let (readdressed_tx, readdressed_rx) = std::sync::mpsc::channel::<()>();
    let (readdressed_tx2, readdressed_rx2) = oneshot::channel::<()>();
    let a = spawn_in(&na, move || async move {
        // Every usable interface, rescanned every 200 ms.
        let (t, inbound) =
            plain::bind(plain::Config::default().rescan_interval(Some(Duration::from_millis(200))))
                .await
                .unwrap();
        assert_eq!(t.interfaces().len(), 1);
        let g = Grasp::start(t.clone(), inbound, config());
        let asa = g.register_asa("A").await.unwrap();
        started_tx.send(()).unwrap();
        linked_rx.await.unwrap();
        c_ready_rx.await.unwrap();
        let mut n = 0;
        while t.interfaces().len() != 2 && n < 50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            n += 1;
        }
        let names: Vec<_> = t.interfaces().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["ab0", "ac0"], "the new link is used");
        // The engine heard of it: a discovery goes out on the new link too.
        let mut found = Vec::new();
        for _ in 0..10 {
            found = asa
                .discover(
                    &Objective::new("EX.late", SYNCH),
                    DiscoverOptions::first(Duration::from_millis(500)),
                )
                .await
                .unwrap_or_default();
            if !found.is_empty() {
                break;
            }
        }
        assert_eq!(found.len(), 1, "discovered over the link added at run time");
        assert_eq!(
            found[0].socket_addr().unwrap().ip(),
            std::net::IpAddr::V6(a6("fd00:2::2"))
        );
        let got = asa
            .synchronize(&Objective::new("EX.late", SYNCH), Some(found[0].clone()), T)
            .await
            .unwrap();
        assert_eq!(got.value.unwrap().as_str(), Some("late"));
        done_c_tx.send(()).unwrap();
        found_tx.send(()).unwrap();
        deleted_rx.await.unwrap();
        let mut n = 0;
        while t.interfaces().len() != 1 && n < 50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            n += 1;
        }
        let names: Vec<_> = t.interfaces().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["ab0"], "the deleted link is dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (stats, _) = g.stats().await.unwrap();
        assert!(stats.interface_changes >= 2, "{stats:?}");
        // Discovery still works and still counts messages by type.
        let _ = asa
            .discover(
                &Objective::new("EX.none", SYNCH),
                DiscoverOptions::first(Duration::from_millis(200)),
            )
            .await;
        let (stats, _) = g.stats().await.unwrap();
        assert!(stats.sent.get(MessageType::Discovery) >= 2, "{stats:?}");
        assert!(stats.received.get(MessageType::Synch) >= 1, "{stats:?}");
        // The node's address changes: the locator follows.
        readdressed_tx.send(()).unwrap();
        readdressed_rx2.await.unwrap();
        let mut n = 0;
        while !t.node_locator().to_string().starts_with("[fd00:9::1]") && n < 50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            n += 1;
        }
        assert!(
            t.node_locator().to_string().starts_with("[fd00:9::1]"),
            "{}",
            t.node_locator()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (stats, _) = g.stats().await.unwrap();
        assert!(stats.interface_changes >= 3, "{stats:?}");
    });
    started_rx.recv_timeout(T).unwrap();
    lab.link(2, (&na, "ac0"), (&nc, "ca0")).unwrap();
    let c = spawn_in(&nc, move || async move {
        let g = start("ca0").await;
        let asa = g.register_asa("C").await.unwrap();
        let o = Objective::new("EX.late", SYNCH).with_value(Value::from("late"));
        asa.register_objective(&o, RegisterOptions::default())
            .await
            .unwrap();
        asa.listen_synchronize(&o).await.unwrap();
        c_ready_tx.send(()).unwrap();
        done_c_rx.await.unwrap();
    });
    linked_tx.send(()).unwrap();
    found_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    c.join().expect("C panicked").unwrap();
    lab.del_link(&na, "ac0").unwrap();
    deleted_tx.send(()).unwrap();
    readdressed_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap();
    lab.del_addr(&na, "ab0", "fd00:1::1/64").unwrap();
    lab.addr(&na, "ab0", "fd00:9::1/64").unwrap();
    readdressed_tx2.send(()).unwrap();
    a.join().expect("A panicked").unwrap();
}

/// A responder with silent and trickling peers connected keeps serving
/// everyone else, and closes those peers when their silence runs out
/// (graspy's listener blocks on such a peer). They never reach the engine:
/// the transport keeps connections that have not spoken.
#[test]
fn silent_and_slow_peers_do_not_hold_up_the_responder() {
    if Lab::skip_loudly("silent_and_slow_peers_do_not_hold_up_the_responder") {
        return;
    }
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<u16>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    const SILENT: usize = 20;
    const SLOW: usize = 5;

    let b = spawn_in(&nb, move || async move {
        let admission = grasp_acp::slots::Admission {
            silence: Duration::from_secs(3),
            ..Default::default()
        };
        let (t, inbound) = plain::bind(
            plain::Config::default()
                .interfaces(["ba0"])
                .admission(admission),
        )
        .await
        .expect("bind the plain ACP");
        let port = t.port();
        let g = Grasp::start(t.clone(), inbound, config());
        let asa = g.register_asa("B").await.unwrap();
        let sync = Objective::new("EX.sync", SYNCH).with_value(Value::from(7u32));
        asa.register_objective(&sync, RegisterOptions::default())
            .await
            .unwrap();
        asa.listen_synchronize(&sync).await.unwrap();
        ready_tx.send(port).unwrap();
        done_rx.await.unwrap();
        (g.stats().await.unwrap(), t.stats())
    });

    let a = spawn_in(&na, move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = ready_rx.await.unwrap();
        let peer = std::net::SocketAddr::from((a6("fd00:1::2"), port));
        // Silent peers: connect and say nothing.
        let mut silent = Vec::new();
        for _ in 0..SILENT {
            silent.push(tokio::net::TcpStream::connect(peer).await.unwrap());
        }
        // Slow peers: a valid M_REQ_SYN, one byte every 400 ms (over 5 s in all).
        let req = grasp_engine::wire::Message::ReqSyn(grasp_engine::wire::SessionObjective {
            session_id: grasp_engine::wire::SessionId(99),
            objective: Objective::new("EX.sync", SYNCH),
            extensions: Vec::new(),
        })
        .encode();
        let mut slow = Vec::new();
        for _ in 0..SLOW {
            let s = tokio::net::TcpStream::connect(peer).await.unwrap();
            let (r, mut w) = s.into_split();
            let bytes = req.clone();
            let writer = tokio::spawn(async move {
                for b in bytes.iter() {
                    if w.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            });
            slow.push((r, writer));
        }
        // Everyone else is served meanwhile.
        let g = start("ab0").await;
        let asa = g.register_asa("A").await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        for _ in 0..50 {
            let got = asa.synchronize(&probe, None, T).await.unwrap();
            assert_eq!(got.value.unwrap().as_u64(), Some(7));
        }
        // ...while the silent peers are still connected (their timeout is
        // 3 s; 50 synchronizations take milliseconds).
        let mut buf = [0u8; 64];
        for s in &silent {
            assert!(
                matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "served while the silent peers were connected"
            );
        }
        // The silent and slow peers are closed by the responder (end of
        // stream or reset), not left hanging.
        for mut s in silent {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                other => panic!("a silent peer was not closed: {other:?}"),
            }
        }
        for (mut r, writer) in slow {
            match tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                other => panic!("a slow peer was not closed: {other:?}"),
            }
            writer.abort();
        }
        done_tx.send(()).unwrap();
    });
    a.join().expect("A panicked").unwrap();
    let ((stats, open), transport) = b.join().expect("B panicked").unwrap();
    assert_eq!(
        transport.channels_silent as usize,
        SILENT + SLOW,
        "{transport:?}"
    );
    assert_eq!(stats.idle_channels_closed, 0, "{stats:?}");
    assert_eq!(open, 0, "nothing left open on the responder");
}

/// Clients that send their request and half-close (`shutdown(SHUT_WR)`, as
/// `nc -N` and scripts do) get their answer, then EOF: M_SYNCH for a
/// synchronization, M_INVALID for a malformed message; one at a time and 48
/// at once. The responder counts as sent exactly what it wrote (issue 11
/// §2; before, 30 of 500 got their answer).
#[test]
fn half_closed_clients_get_their_answers_over_tcp() {
    if Lab::skip_loudly("half_closed_clients_get_their_answers_over_tcp") {
        return;
    }
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<u16>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    const ONE_BY_ONE: u32 = 200;
    const AT_ONCE: u32 = 300;

    let b = spawn_in(&nb, move || async move {
        let (t, inbound) = plain::bind(plain::Config::default().interfaces(["ba0"]))
            .await
            .expect("bind the plain ACP");
        let port = t.port();
        let g = Grasp::start(t, inbound, config());
        let asa = g.register_asa("B").await.unwrap();
        let legit = Objective::new("EX.legit", SYNCH)
            .with_loop_count(6)
            .with_value(Value::from(7u32));
        asa.register_objective(&legit, RegisterOptions::default())
            .await
            .unwrap();
        asa.listen_synchronize(&legit).await.unwrap();
        ready_tx.send(port).unwrap();
        done_rx.await.unwrap();
        g.stats().await.unwrap().0
    });

    let a = spawn_in(&na, move || async move {
        use grasp_engine::wire::Message;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = ready_rx.await.unwrap();
        let peer = std::net::SocketAddr::from((a6("fd00:1::2"), port));
        // The M_REQ_SYN [4, 7, ["EX.legit", 5, 6, null]], and [4, 7]:
        // CBOR, but not a GRASP message.
        let req = hex::decode("830407846845582e6c656769740506f6").unwrap();
        let bad = vec![0x82, 0x04, 0x07];
        let one = |i: u32| {
            let msg = if i.is_multiple_of(3) {
                bad.clone()
            } else {
                req.clone()
            };
            async move {
                let mut s = tokio::net::TcpStream::connect(peer).await.unwrap();
                s.write_all(&msg).await.unwrap();
                s.shutdown().await.unwrap();
                let mut got = Vec::new();
                tokio::time::timeout(T, s.read_to_end(&mut got))
                    .await
                    .expect("no EOF in time")
                    .expect("read");
                match Message::decode(&bytes::Bytes::from(got)) {
                    Ok(Message::Synch(s)) if !i.is_multiple_of(3) => {
                        s.objective.value.and_then(|v| v.as_u64()) == Some(7)
                    }
                    Ok(Message::Invalid(_)) => i.is_multiple_of(3),
                    _ => false,
                }
            }
        };
        let mut answered = 0u32;
        for i in 0..ONE_BY_ONE {
            answered += u32::from(one(i).await);
        }
        let mut at_once = futures::stream::iter(ONE_BY_ONE..ONE_BY_ONE + AT_ONCE)
            .map(one)
            .buffer_unordered(48);
        use futures::StreamExt;
        while let Some(ok) = at_once.next().await {
            answered += u32::from(ok);
        }
        done_tx.send(()).unwrap();
        answered
    });
    let answered = a.join().expect("A panicked").unwrap();
    let s = b.join().expect("B panicked").unwrap();
    let total = ONE_BY_ONE + AT_ONCE;
    let bad = (0..total).filter(|i| i.is_multiple_of(3)).count() as u64;
    assert_eq!(answered, total, "answers read before EOF");
    assert_eq!(
        s.sent.get(MessageType::Synch),
        u64::from(total) - bad,
        "{s:?}"
    );
    assert_eq!(s.sent.get(MessageType::Invalid), bad, "{s:?}");
    assert_eq!(s.unsent, 0, "{s:?}");
}
