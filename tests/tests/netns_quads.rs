//! QUADS over the plain ACP between network namespaces (root only; loudly
//! skipped otherwise): discovery, synchronization, negotiation and flooding
//! under AES-GCM, and a node of another domain that neither disturbs nor
//! joins.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use grasp_acp::plain;
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, Value};
use grasp_engine::Grasp;
use grasp_engine::{AsaLocator, Config, DiscoverOptions, RegisterOptions};
use grasp_quads::{DomainKey, DropReason, KeyRing, MasterSecret, QuadsConfig, QuadsTransport};
use grasp_tests::netns::{spawn_in, Lab};
use grasp_tests::scenario::{
    answer_with_counter, flood_one, negotiable, request_and_accept_step, serve_sync, wait_for_flood,
};
use tokio::sync::oneshot;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const T: Duration = Duration::from_secs(5);

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn key(n: u8) -> DomainKey {
    DomainKey::from_master(&MasterSecret::from_bytes([n; 32]))
}

fn port(t: &Arc<QuadsTransport>) -> u16 {
    match t.node_locator() {
        Locator::Ipv6 { port, .. } => port,
        other => panic!("{other:?}"),
    }
}

async fn start(iface: &str, k: u8) -> (Grasp, Arc<QuadsTransport>) {
    let (t, inbound) = grasp_quads::bind_plain(
        plain::Config::default().interfaces([iface]),
        KeyRing::new(key(k)),
        QuadsConfig::default(),
    )
    .await
    .expect("bind QUADS over the plain ACP");
    assert_eq!(t.security(), Security::Quads);
    // QUADS is a secured substrate: no allow_insecure.
    (Grasp::start(t.clone(), inbound, Config::default()), t)
}

async fn serve(g: &Grasp, value: &str) -> grasp_engine::Asa {
    let asa = g.register_asa("server").await.unwrap();
    serve_sync(&asa, "EX.sync", value).await;
    asa
}

#[test]
fn quads_over_the_plain_acp() {
    if Lab::skip_loudly("quads_over_the_plain_acp") {
        return;
    }
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let nx = lab.netns().unwrap();
    // X, of another domain, is on a second link to B.
    lab.link(2, (&nb, "bx0"), (&nx, "xb0")).unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (xready_tx, xready_rx) = oneshot::channel::<u16>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (xdone_tx, xdone_rx) = oneshot::channel::<()>();

    let b = spawn_in(&nb, move || async move {
        let (g, t) = start("ba0", 1).await;
        // B's node on X's link, same domain key 1.
        let (g2, t2) = start("bx0", 1).await;
        let _s1 = serve(&g, "quads ok").await;
        let _s2 = serve(&g2, "not for X").await;
        let asa = g.register_asa("B-neg").await.unwrap();
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
        xready_tx.send(port(&t2)).unwrap();
        let answered = answer_with_counter(&listener, None, 100, T).await;
        assert_eq!(answered.requested, Some(150));
        assert_eq!(answered.stepped, Some(120));
        flood_one(&asa, fl, 10_000).await;
        done_rx.await.unwrap();
        xdone_rx.await.unwrap();
        (t.quads_stats(), t2.quads_stats(), t2.stats())
    });

    let a = spawn_in(&na, move || async move {
        let (g, t) = start("ab0", 1).await;
        let asa = g.register_asa("A").await.unwrap();
        ready_rx.await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        let found = asa
            .discover(&probe, DiscoverOptions::first(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let got = asa.synchronize(&probe, None, T).await.unwrap();
        assert_eq!(got.value.unwrap().as_str(), Some("quads ok"));
        let bid = negotiable(&asa, "EX.neg", 150).await;
        let requested = request_and_accept_step(&asa, &bid, 120, T).await;
        assert_eq!(requested.countered, Some(100));
        let got = wait_for_flood(&asa, "EX.flood", 100).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].objective.value.as_ref().unwrap().as_str(),
            Some("flooded")
        );
        done_tx.send(()).unwrap();
        t.quads_stats()
    });

    let x = spawn_in(&nx, move || async move {
        let (g, t) = start("xb0", 2).await;
        let asa = g.register_asa("X").await.unwrap();
        let b_port = xready_rx.await.unwrap();
        let probe = Objective::new("EX.sync", SYNCH);
        let found = asa
            .discover(&probe, DiscoverOptions::all(Duration::from_millis(500)))
            .await
            .unwrap();
        assert!(found.is_empty(), "another domain answered: {found:?}");
        // Straight at B's locator: refused at the first record.
        let b = AsaLocator::new(Locator::tcp6(a6("fd00:2::1"), b_port));
        let r = asa.synchronize(&probe, Some(b), T).await;
        assert!(r.is_err(), "{r:?}");
        xdone_tx.send(()).unwrap();
        t.quads_stats()
    });
    let sa = a.join().expect("A panicked").unwrap();
    let sx = x.join().expect("X panicked").unwrap();
    let (sb, sb2, tb2) = b.join().expect("B panicked").unwrap();
    assert_eq!(sa.dropped_total(), 0, "A: {sa:?}");
    assert_eq!(sb.dropped_total(), 0, "B on A's link: {sb:?}");
    assert!(sa.opened >= 4 && sb.opened >= 4, "{sa:?} {sb:?}");
    // X's discovery (sent three times: nobody answered) and its channel
    // were dropped by B as another domain's.
    assert_eq!(
        sb2.dropped(DropReason::UnknownKey),
        4,
        "B on X's link: {sb2:?}"
    );
    assert_eq!(tb2.malformed_streams, 1, "X's channel closed: {tb2:?}");
    assert_eq!(sx.opened, 0, "X opened nothing: {sx:?}");
}

/// graspy's legacy QUADS over real TCP: back-to-back ciphertexts (M_WAIT then
/// M_NEGOTIATE) are split by the legacy framer.
#[test]
fn legacy_quads_over_the_plain_acp() {
    use grasp_quads::legacy::{bind_plain_legacy, LegacyKey};
    if Lab::skip_loudly("legacy_quads_over_the_plain_acp") {
        return;
    }
    let mut lab = Lab::new();
    let (na, nb) = lab.pair().unwrap();
    let key =
        || LegacyKey::from_password(&grasp_quads::Password::new("grasp-test-password").unwrap());
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let kb = key();
    let b = spawn_in(&nb, move || async move {
        let (t, i) = bind_plain_legacy(plain::Config::default().interfaces(["ba0"]), kb)
            .await
            .unwrap();
        let g = Grasp::start(t, i, Config::default());
        let _s = serve(&g, "legacy ok").await;
        let asa = g.register_asa("neg").await.unwrap();
        let neg = Objective::new("EX.neg", NEG);
        asa.register_objective(&neg, RegisterOptions::default())
            .await
            .unwrap();
        let listener = asa.listen_negotiate("EX.neg").await.unwrap();
        ready_tx.send(()).unwrap();
        for _ in 0..5 {
            answer_with_counter(&listener, Some(Duration::from_secs(2)), 9, T).await;
        }
    });
    let ka = key();
    let a = spawn_in(&na, move || async move {
        let (t, i) = bind_plain_legacy(plain::Config::default().interfaces(["ab0"]), ka)
            .await
            .unwrap();
        let g = Grasp::start(t.clone(), i, Config::default());
        let asa = g.register_asa("A").await.unwrap();
        ready_rx.await.unwrap();
        let got = asa
            .synchronize(&Objective::new("EX.sync", SYNCH), None, T)
            .await
            .unwrap();
        assert_eq!(got.value.unwrap().as_str(), Some("legacy ok"));
        let neg = negotiable(&asa, "EX.neg", 5).await;
        for _ in 0..5 {
            let requested = request_and_accept_step(&asa, &neg, 9, T).await;
            assert_eq!(requested.countered, Some(9));
        }
        t.stats()
    });
    let sa = a.join().expect("A panicked").unwrap();
    b.join().expect("B panicked").unwrap();
    assert_eq!(sa.malformed_streams, 0, "{sa:?}");
}
