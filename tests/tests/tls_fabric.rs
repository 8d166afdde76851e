//! What only TLS has, over the in-memory fabric: strangers of every kind
//! (another CA, an expired certificate, a plaintext peer, tampered and
//! replayed multicasts) refused and counted by reason with the engine
//! unaffected, and one multiplexed connection per peer. (Every GRASP
//! operation runs under TLS in the conformance suite.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use grasp_acp::fabric::{Fabric, Link, LinkConfig};
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Message, Objective, ObjectiveFlags};
use grasp_engine::Grasp;
use grasp_engine::{AsaLocator, Config, DiscoverOptions};
use grasp_tests::scenario::serve_sync;
use grasp_tls::multicast::{DropReason, Multicast};
use grasp_tls::NodeIdentity;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

struct Ca(String, String);

impl Ca {
    fn new(domain: &str) -> Self {
        let (c, k) = grasp_tls::certs::new_ca(domain, 30).unwrap();
        Ca(c, k.to_string())
    }

    /// An identity, checked at `at` (the past, for an expired one).
    fn identity_at(&self, node: &str, expired: bool) -> NodeIdentity {
        let (cert, key) = grasp_tls::certs::issue_node_with(&self.0, &self.1, node, |p| {
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
        })
        .unwrap();
        let at = if expired {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_593_561_600)
        } else {
            SystemTime::now()
        };
        NodeIdentity::from_pem(&cert, &key, &self.0, at).unwrap()
    }

    fn identity(&self, node: &str) -> NodeIdentity {
        self.identity_at(node, false)
    }
}

fn link(f: &Fabric, name: &str) -> Link {
    f.link(
        name,
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(1),
        },
    )
}

async fn node(
    f: &Fabric,
    name: &str,
    links: &[&Link],
    id: &NodeIdentity,
) -> (Grasp, Arc<grasp_tls::Transport>) {
    let mut b = f.node(name);
    for l in links {
        b = b.attach(l);
    }
    let backend = grasp_tls::Backend::new(id, grasp_tls::Config::default()).unwrap();
    let (t, inbound) = grasp_acp::secure::bind(b, backend).await.unwrap();
    assert_eq!(t.security(), Security::Tls);
    let mut c = Config::default();
    c.seed = Some(u64::from(name.as_bytes()[0]));
    (Grasp::start(t.clone(), inbound, c), t)
}

async fn serve(g: &Grasp, name: &str, v: &str) -> grasp_engine::Asa {
    let asa = g.register_asa(&format!("srv-{name}")).await.unwrap();
    serve_sync(&asa, name, v).await;
    asa
}

/// A node outside the domain neither discovers `probe` nor synchronizes
/// it from `member`.
async fn shut_out(node: &Grasp, probe: &Objective, member: &AsaLocator) {
    let asa = node.register_asa("stranger").await.unwrap();
    let found = asa
        .discover(probe, DiscoverOptions::all(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert!(asa
        .synchronize(probe, Some(member.clone()), T)
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn strangers_are_refused_and_the_engine_carries_on() {
    let ca = Ca::new("lab");
    let other = Ca::new("other");
    let f = Fabric::new(22);
    let l = link(&f, "l");
    let (b, tb) = node(&f, "B", &[&l], &ca.identity("b.lab")).await;
    let _s = serve(&b, "EX.sync", "members only").await;
    let b_loc = AsaLocator::new(tb.node_locator());
    let probe = Objective::new("EX.sync", SYNCH);

    // Another CA's node: its discovery is dropped, its channel refused.
    let (x, _tx) = node(&f, "X", &[&l], &other.identity("x.other")).await;
    shut_out(&x, &probe, &b_loc).await;
    // A node whose certificate has expired.
    let (e, _te) = node(&f, "E", &[&l], &ca.identity_at("e.lab", true)).await;
    let asa_e = e.register_asa("E").await.unwrap();
    assert!(asa_e
        .synchronize(&probe, Some(b_loc.clone()), T)
        .await
        .is_err());
    // A plaintext GRASP peer: unsigned multicast, no TLS on its channel.
    let (pt, pti) = f.node("P").attach(&l).max_message_size(20_000).bind();
    let mut c = Config::default();
    c.allow_insecure = true;
    let p = Grasp::start(pt.clone(), pti, c);
    shut_out(&p, &probe, &b_loc).await;
    // A member's multicast, tampered with and replayed by the plaintext node.
    let m = Multicast::new(&ca.identity("m.lab")).unwrap();
    let noop = Message::Noop.encode();
    let good = m.sign(SystemTime::now(), &noop).unwrap();
    let ifindex = pt.interfaces()[0].index;
    pt.send_multicast(ifindex, good.clone().into())
        .await
        .unwrap();
    pt.send_multicast(ifindex, good.clone().into())
        .await
        .unwrap();
    let mut bad = m.sign(SystemTime::now(), &noop).unwrap();
    let n = bad.len();
    bad[n - 10] ^= 1; // inside the signature
    pt.send_multicast(ifindex, bad.into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let s = tb.protection().multicast_stats();
    assert!(s.dropped(DropReason::Untrusted) >= 1, "{s:?}");
    assert!(s.dropped(DropReason::Unsigned) >= 1, "{s:?}");
    assert_eq!(s.dropped(DropReason::Replay), 1, "{s:?}");
    assert_eq!(s.dropped(DropReason::BadSignature), 1, "{s:?}");
    // And a member still gets served.
    let (a, _ta) = node(&f, "A", &[&l], &ca.identity("a.lab")).await;
    let asa_a = a.register_asa("A").await.unwrap();
    let got = asa_a.synchronize(&probe, None, T).await.unwrap();
    assert_eq!(got.value.unwrap().as_str(), Some("members only"));
}

#[tokio::test(start_paused = true)]
async fn two_nodes_sync_over_tls() {
    let ca = Ca::new("lab");
    let f = Fabric::new(23);
    let l = link(&f, "l");
    let (a, _ta) = node(&f, "A", &[&l], &ca.identity("a.lab")).await;
    let (b, tb) = node(&f, "B", &[&l], &ca.identity("b.lab")).await;
    let _s = serve(&b, "EX.sync", "direct").await;
    let asa_a = a.register_asa("A").await.unwrap();
    // Repeated sessions to one peer share one TLS connection.
    for _ in 0..21 {
        let got = asa_a
            .synchronize(
                &Objective::new("EX.sync", SYNCH),
                Some(AsaLocator::new(tb.node_locator())),
                T,
            )
            .await;
        assert_eq!(got.unwrap().value.unwrap().as_str(), Some("direct"));
    }
    let found = asa_a
        .discover(
            &Objective::new("EX.sync", SYNCH),
            DiscoverOptions::first(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{:?} {:?}", _ta.stats(), tb.stats());
    let (ma, mb) = (_ta.protection().mux_stats(), tb.protection().mux_stats());
    assert_eq!(ma.connections_dialled, 1, "{ma:?}");
    assert_eq!(ma.streams_opened, 21, "{ma:?}");
    assert_eq!(
        (mb.connections_accepted, mb.streams_accepted),
        (1, 21),
        "{mb:?}"
    );
    assert_eq!(_ta.stats().channels_opened, 21);
    assert_eq!(tb.stats().channels_accepted, 21);
}
