//! The TLS backend over the plain ACP's sockets between namespaces (root
//! only; loudly skipped otherwise): discovery, synchronization,
//! negotiation and flooding between two members of a domain, and a node
//! with a certificate from another CA that is refused on both unicast and
//! multicast.

use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grasp_acp::plain;
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, Value};
use grasp_engine::{AsaLocator, Config, DiscoverOptions, RegisterOptions};
use grasp_engine::{Grasp, Negotiation};
use grasp_tests::netns::{spawn_in, Lab};
use grasp_tests::scenario::{
    answer_with_counter, flood_one, negotiable, request_and_accept_step, wait_for_flood,
};
use grasp_tls::multicast::McDrop;
use grasp_tls::{NodeIdentity, TlsTransport};
use tokio::sync::oneshot;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(5);

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Writes a node's certificate, key (0600) and its CA's certificate.
fn node_files(
    dir: &Path,
    ca: &(String, String),
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = grasp_tls::certs::issue_node(&ca.0, &ca.1, name, 10).unwrap();
    let c = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    let a = dir.join(format!("{name}.ca.crt"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key.as_bytes()).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&a, &ca.0).unwrap();
    (c, k, a)
}

async fn start(
    iface: &str,
    files: &(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf),
) -> (Grasp, Arc<TlsTransport>) {
    let id = NodeIdentity::load(&files.0, &files.1, &files.2).unwrap();
    let (t, inbound) = grasp_tls::bind_plain(plain::Config::default().interfaces([iface]), &id)
        .await
        .unwrap();
    assert_eq!(t.security(), Security::Tls);
    (Grasp::start(t.clone(), inbound, Config::default()), t)
}

/// A domain CA: certificate and key, PEM.
fn new_ca(name: &str) -> (String, String) {
    let (c, k) = grasp_tls::certs::new_ca(name, 30).unwrap();
    (c, k.to_string())
}

#[test]
fn tls_over_the_plain_acp() {
    if Lab::skip_loudly("tls_over_the_plain_acp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("lab");
    let other = new_ca("other");
    let fa = node_files(dir.path(), &ca, "a.lab");
    let fb = node_files(dir.path(), &ca, "b.lab");
    let fx = node_files(dir.path(), &other, "x.other");
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let nx = lab.netns().unwrap();
    lab.link(2, (&nb, "bx0"), (&nx, "xb0")).unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (xready_tx, xready_rx) = oneshot::channel::<u16>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (xdone_tx, xdone_rx) = oneshot::channel::<()>();

    let fb2 = fb.clone();
    let b = spawn_in(&nb, move || async move {
        let (g, t) = start("ba0", &fb2).await;
        let (g2, t2) = start("bx0", &fb2).await;
        for g in [&g, &g2] {
            let asa = g.register_asa("sync").await.unwrap();
            let o = Objective::new("EX.sync", SYNCH).with_value(Value::from("tls ok"));
            asa.register_objective(&o, RegisterOptions::default())
                .await
                .unwrap();
            asa.listen_synchronize(&o).await.unwrap();
            std::mem::forget(asa);
        }
        let asa = g.register_asa("neg").await.unwrap();
        let neg = Objective::new("EX.neg", NEG);
        asa.register_objective(&neg, RegisterOptions::default())
            .await
            .unwrap();
        let listener = asa.listen_negotiate("EX.neg").await.unwrap();
        let fl = Objective::new("EX.flood", SYNCH).with_value(Value::from("flooded"));
        asa.register_objective(&fl, RegisterOptions::default())
            .await
            .unwrap();
        ready_tx.send(()).unwrap();
        let port2 = match t2.node_locator() {
            Locator::Ipv6 { port, .. } => port,
            other => panic!("{other:?}"),
        };
        xready_tx.send(port2).unwrap();
        let answered = answer_with_counter(&listener, None, 100, T).await;
        assert_eq!(answered.requested, Some(150));
        assert_eq!(answered.stepped, Some(120));
        assert_eq!(
            answered.identity.as_deref(),
            Some("a.lab"),
            "the requester's certificate name"
        );
        flood_one(&asa, fl, 10_000).await;
        done_rx.await.unwrap();
        xdone_rx.await.unwrap();
        (t.multicast_stats(), t2.multicast_stats(), t2.stats())
    });

    let a = spawn_in(&na, move || async move {
        let (g, t) = start("ab0", &fa).await;
        let asa = g.register_asa("A").await.unwrap();
        ready_rx.await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        let found = asa
            .discover(&probe, DiscoverOptions::first(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let got = asa.synchronize(&probe, None, T).await.unwrap();
        assert_eq!(got.value.unwrap().as_str(), Some("tls ok"));
        let bid = negotiable(&asa, "EX.neg", 150).await;
        let requested = request_and_accept_step(&asa, &bid, 120, T).await;
        assert_eq!(requested.countered, Some(100));
        assert_eq!(
            requested.identity.as_deref(),
            Some("b.lab"),
            "the responder's certificate name"
        );
        let got = wait_for_flood(&asa, "EX.flood", 100).await;
        assert_eq!(got.len(), 1);
        done_tx.send(()).unwrap();
        t.multicast_stats()
    });

    let x = spawn_in(&nx, move || async move {
        let (g, t) = start("xb0", &fx).await;
        let asa = g.register_asa("X").await.unwrap();
        let b_port = xready_rx.await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        let found = asa
            .discover(&probe, DiscoverOptions::all(Duration::from_millis(500)))
            .await
            .unwrap();
        assert!(
            found.is_empty(),
            "another CA's node was answered: {found:?}"
        );
        let b = AsaLocator::new(Locator::tcp6(a6("fd00:2::1"), b_port));
        let r = asa.synchronize(&probe, Some(b), T).await;
        assert!(r.is_err(), "{r:?}");
        xdone_tx.send(()).unwrap();
        t.stats()
    });
    let sa = a.join().expect("A panicked").unwrap();
    let tx = x.join().expect("X panicked").unwrap();
    let (sb, sb2, tb2) = b.join().expect("B panicked").unwrap();
    assert!(sa.verified >= 1 && sb.verified >= 1, "{sa:?} {sb:?}");
    assert_eq!(sa.dropped.iter().sum::<u64>(), 0, "{sa:?}");
    // B dropped X's multicasts as untrusted and refused its TLS channel.
    assert!(sb2.dropped(McDrop::Untrusted) >= 1, "{sb2:?}");
    // X's TLS client refuses B's certificate (another CA) and B refuses
    // X's; whichever side sees it first, no channel opens.
    assert!(tx.connect_failures >= 1, "{tx:?}");
    assert_eq!(tb2.channels_accepted, 0, "{tb2:?}");
}

/// A renewed certificate written over the node's files is picked up
/// without restarting: new sessions present it.
#[test]
fn renewed_certificate_is_picked_up_without_restart() {
    if Lab::skip_loudly("renewed_certificate_is_picked_up_without_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("lab");
    let fa = node_files(dir.path(), &ca, "a.lab");
    let fb = node_files(dir.path(), &ca, "b.lab");
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (renew_tx, renew_rx) = oneshot::channel::<()>();
    let (renewed_tx, renewed_rx) = oneshot::channel::<()>();
    let (ca2, fb2) = (ca.clone(), fb.clone());
    let b = spawn_in(&nb, move || async move {
        let (g, t) = start("ba0", &fb2).await;
        let _w = t.watch_files(
            fb2.0.clone(),
            fb2.1.clone(),
            fb2.2.clone(),
            Duration::from_millis(100),
        );
        let asa = g.register_asa("neg").await.unwrap();
        let neg = Objective::new("EX.neg", NEG);
        asa.register_objective(&neg, RegisterOptions::default())
            .await
            .unwrap();
        let listener = asa.listen_negotiate("EX.neg").await.unwrap();
        ready_tx.send(()).unwrap();
        let serve_one = |listener: grasp_engine::NegotiationListener| async move {
            let (s, req) = listener.next().await.unwrap();
            match s
                .step(&req.clone().with_value(Value::from(1u32)), T)
                .await
                .unwrap()
            {
                Negotiation::Accepted => {}
                other => panic!("{other:?}"),
            }
            listener
        };
        let listener = serve_one(listener).await;
        renew_rx.await.unwrap();
        // The CA issues b2.lab; it is written over B's files.
        let (cert, key) = grasp_tls::certs::issue_node(&ca2.0, &ca2.1, "b2.lab", 10).unwrap();
        std::fs::write(&fb2.0, cert).unwrap();
        std::fs::write(&fb2.1, key.as_bytes()).unwrap();
        for _ in 0..50 {
            if t.name() == "b2.lab" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(t.name(), "b2.lab", "reloaded without a restart");
        renewed_tx.send(()).unwrap();
        serve_one(listener).await;
    });
    let a = spawn_in(&na, move || async move {
        let (mut renew_tx, mut renewed_rx) = (Some(renew_tx), Some(renewed_rx));
        let (g, t) = start("ab0", &fa).await;
        let asa = g.register_asa("A").await.unwrap();
        ready_rx.await.unwrap();
        let bid = Objective::new("EX.neg", NEG).with_value(Value::from(5u32));
        asa.register_objective(&bid, RegisterOptions::default())
            .await
            .unwrap();
        let mut seen = Vec::new();
        for round in 0..2 {
            if round == 1 {
                if let Some(t) = renew_tx.take() {
                    t.send(()).unwrap();
                }
                renewed_rx.take().unwrap().await.unwrap();
                // B's reload sent GOAWAY on A's connection to it: A's next
                // channel dials afresh and meets the new certificate.
                for _ in 0..50 {
                    if t.pooled_connections() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert_eq!(t.pooled_connections(), 0, "GOAWAY retired the connection");
            }
            match asa.request_negotiate(&bid, None, T).await.unwrap() {
                Negotiation::Step { session, objective } => {
                    seen.push(session.peer_identity().map(str::to_string));
                    session.accept().await.unwrap();
                    let _ = objective;
                }
                other => panic!("{other:?}"),
            }
        }
        seen
    });
    let seen = a.join().expect("A panicked").unwrap();
    b.join().expect("B panicked").unwrap();
    assert_eq!(
        seen,
        vec![Some("b.lab".to_string()), Some("b2.lab".to_string())]
    );
}

/// One host holding 1,500 silent connections to a TLS node from sixteen
/// addresses, and reconnecting as they are closed, does not keep a member
/// out: the pool is full, the member's handshake takes the place of a
/// silent connection and its synchronizations succeed (issue 11 §3; before,
/// the member's handshake was reset).
#[test]
fn a_connection_flood_does_not_keep_a_member_out() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if Lab::skip_loudly("a_connection_flood_does_not_keep_a_member_out") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("lab");
    let fa = node_files(dir.path(), &ca, "a.lab");
    let fb = node_files(dir.path(), &ca, "b.lab");
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    // The flood's sources: another prefix on A's link, so A's own
    // sessions keep fd00:1::1.
    for i in 0..16 {
        lab.addr(&na, "ab0", &format!("fd00:9::{:x}/64", i + 1))
            .unwrap();
    }
    lab.route(&nb, "fd00:9::/64", "fe80::1:1", "ba0").unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let b = spawn_in(&nb, move || async move {
        let (g, t) = start("ba0", &fb).await;
        let asa = g.register_asa("sync").await.unwrap();
        let o = Objective::new("EX.sync", SYNCH).with_value(Value::from("tls ok"));
        asa.register_objective(&o, RegisterOptions::default())
            .await
            .unwrap();
        asa.listen_synchronize(&o).await.unwrap();
        let port = match t.node_locator() {
            Locator::Ipv6 { port, .. } => port,
            other => panic!("{other:?}"),
        };
        port_tx.send(port).unwrap();
        port_tx.send(port).unwrap();
        done_rx.await.unwrap();
        t.stats()
    });
    let port = port_rx.recv().unwrap();
    let held = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (held2, stop2) = (held.clone(), stop.clone());
    let flood = spawn_in(&na, move || async move {
        let to = std::net::SocketAddr::from((a6("fd00:1::2"), port));
        let mut conns = std::collections::VecDeque::new();
        let mut opened = 0u64;
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < end {
            let from = std::net::SocketAddr::from((
                Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, (opened % 16) as u16 + 1),
                0,
            ));
            let s = tokio::net::TcpSocket::new_v6().unwrap();
            s.bind(from).unwrap();
            match tokio::time::timeout(Duration::from_millis(200), s.connect(to)).await {
                Ok(Ok(c)) => {
                    opened += 1;
                    conns.push_back(c);
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
            if conns.len() > 1500 {
                conns.pop_front();
            }
            held2.store(conns.len() as u64, Ordering::Relaxed);
        }
        opened
    });
    let member = spawn_in(&na, move || async move {
        let (g, t) = start("ab0", &fa).await;
        let asa = g.register_asa("A").await.unwrap();
        let b = AsaLocator::new(Locator::tcp6(a6("fd00:1::2"), port_rx.recv().unwrap()));
        for _ in 0..300 {
            if held.load(Ordering::Relaxed) >= 1500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let probe = Objective::new("EX.sync", SYNCH);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                asa.synchronize(&probe, Some(b.clone()), T)
                    .await
                    .map(|o| o.value.and_then(|v| v.as_str().map(str::to_string))),
            );
        }
        stop.store(true, Ordering::Relaxed);
        (got, t.stats(), held.load(Ordering::Relaxed))
    });
    let (got, ta, held) = member.join().expect("the member panicked").unwrap();
    let opened = flood.join().expect("the flood panicked").unwrap();
    done_tx.send(()).unwrap();
    let tb = b.join().expect("B panicked").unwrap();
    println!("flood: {opened} connections opened, {held} held; B: {tb:?}");
    assert!(held >= 1500, "the flood held only {held} connections");
    for g in &got {
        assert_eq!(
            g.as_ref().ok().and_then(|v| v.as_deref()),
            Some("tls ok"),
            "{got:?} {ta:?}"
        );
    }
    assert!(
        tb.channels_evicted >= 1,
        "the pool never filled, so nothing was tested: {tb:?}"
    );
    assert!(tb.channels_accepted >= 1, "{tb:?}");
}
