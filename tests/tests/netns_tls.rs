//! What only TLS has, between namespaces over the plain ACP's sockets
//! (root only; loudly skipped otherwise): a renewed certificate taken
//! without a restart, and a connection flood that does not keep a member
//! out. (Every GRASP operation runs under TLS between namespaces in the
//! conformance suite.)

use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grasp_acp::plain;
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, Value};
use grasp_engine::{AsaLocator, Config, RegisterOptions};
use grasp_engine::{Grasp, Negotiation};
use grasp_tests::netns::{spawn_in, Lab};
use grasp_tls::NodeIdentity;
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
) -> (Grasp, Arc<grasp_tls::Transport>) {
    let id = NodeIdentity::load(&files.0, &files.1, &files.2).unwrap();
    let backend = grasp_tls::Backend::new(&id, grasp_tls::Config::default()).unwrap();
    let base = plain::Config::default().interfaces([iface]);
    let (t, inbound) = grasp_acp::secure::bind(base, backend).await.unwrap();
    assert_eq!(t.security(), Security::Tls);
    (Grasp::start(t.clone(), inbound, Config::default()), t)
}

/// A domain CA: certificate and key, PEM.
fn new_ca(name: &str) -> (String, String) {
    let (c, k) = grasp_tls::certs::new_ca(name, 30).unwrap();
    (c, k.to_string())
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
        let _w = t.protection().watch_files(
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
            if t.protection().name() == "b2.lab" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            t.protection().name(),
            "b2.lab",
            "reloaded without a restart"
        );
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
                    if t.protection().pooled_connections() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert_eq!(
                    t.protection().pooled_connections(),
                    0,
                    "GOAWAY retired the connection"
                );
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
