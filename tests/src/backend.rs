//! Every backend behind one builder, so that a scenario is written once and
//! runs on all of them: [`Domain`] holds a domain's key material for one
//! [`Backend`] (a QUADS key, graspy's legacy key, a CA); [`Domain::fabric_node`]
//! and [`Domain::netns_node`] start a node of it on a fabric or inside a
//! network namespace, both through `grasp_tools::backend::bind`, the one
//! place programs build backends. A new backend is one variant here and one
//! line in each suite's list.

use std::sync::Arc;
use std::time::SystemTime;

use grasp_acp::fabric::{Fabric, Link};
use grasp_acp::secure::Base;
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::{Config, Grasp};
use grasp_tools::backend::{Bound, Control, Spec};

use crate::netns::Netns;

/// A backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The plain ACP (or a plain fabric node), the engine told to treat it
    /// as secured.
    Plain,
    /// QUADS.
    Quads,
    /// graspy's legacy QUADS.
    LegacyQuads,
    /// Mutual TLS and signed multicast.
    Tls,
}

impl Backend {
    /// Every backend, for suites that loop.
    pub const ALL: [Backend; 4] = [
        Backend::Plain,
        Backend::Quads,
        Backend::LegacyQuads,
        Backend::Tls,
    ];

    /// Whether nodes of another domain exist for it (a key or a CA).
    pub fn has_domains(self) -> bool {
        self != Backend::Plain
    }
}

/// One domain of a backend: what its nodes share.
pub struct Domain {
    backend: Backend,
    /// Distinguishes domains of one backend (a key byte, a CA name).
    n: u8,
    ca: Option<(String, String)>,
}

/// A running node of a [`Domain`].
pub struct TestNode {
    /// Its engine.
    pub grasp: Grasp,
    /// Its transport, as the engine sees it.
    pub transport: Arc<dyn AcpTransport>,
    /// The backend's own controls and counters.
    pub control: Control,
    /// In a namespace: the thread whose runtime runs it (it ends when the
    /// node is dropped).
    _thread: Option<NodeThread>,
}

struct NodeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("backend", &self.backend)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl Domain {
    /// Domain number `n` of `backend` (nodes of different numbers do not
    /// understand each other, except on the plain backend).
    pub fn new(backend: Backend, n: u8) -> Self {
        let ca = (backend == Backend::Tls).then(|| {
            let (c, k) = grasp_tls::certs::new_ca(&format!("domain{n}"), 30).expect("a CA");
            (c, k.to_string())
        });
        Domain { backend, n, ca }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The spec of node `name` in this domain.
    pub fn spec(&self, name: &str) -> Spec {
        match self.backend {
            Backend::Plain => Spec::None,
            // Keys from fixed master secrets: argon2 is tested in its crate
            // and would only slow the suite down.
            Backend::Quads => {
                let key = grasp_quads::DomainKey::from_master(
                    &grasp_quads::MasterSecret::from_bytes([self.n; 32]),
                );
                Spec::Quads(Box::new(grasp_quads::KeyRing::new(key)))
            }
            Backend::LegacyQuads => Spec::LegacyQuads(grasp_quads::legacy::LegacyKey::from_parts(
                [self.n; 32],
                [self.n ^ 0x5a; 16],
            )),
            Backend::Tls => {
                let (ca, key) = self.ca.as_ref().expect("a TLS domain has a CA");
                let node = format!("{}.domain{}", name.to_lowercase(), self.n);
                let (c, k) = grasp_tls::certs::issue_node(ca, key, &node, 10).expect("a node cert");
                Spec::Tls(Box::new(
                    grasp_tls::NodeIdentity::from_pem(&c, &k, ca, SystemTime::now())
                        .expect("a node identity"),
                ))
            }
        }
    }

    /// The engine configuration for this backend: the plain backend is
    /// treated as secured (the one knob for that), the rest are.
    pub fn config(&self, seed: u64) -> Config {
        let mut c = Config::default();
        c.seed = Some(seed);
        c.allow_insecure = self.backend == Backend::Plain;
        c
    }

    /// A node named `name` on `links` of `fabric`.
    pub async fn fabric_node(&self, fabric: &Fabric, name: &str, links: &[&Link]) -> TestNode {
        let mut b = fabric.node(name);
        for l in links {
            b = b.attach(l);
        }
        self.node(b, name).await
    }

    /// A bare transport of this backend (no engine) on `links`.
    pub async fn fabric_transport(&self, fabric: &Fabric, name: &str, links: &[&Link]) -> Bound {
        let mut b = fabric.node(name);
        for l in links {
            b = b.attach(l);
        }
        grasp_tools::backend::bind(b, self.spec(name))
            .await
            .expect("bind the backend")
    }

    /// A node on interfaces `ifaces` of namespace `ns`; its engine runs on
    /// a thread inside `ns` until the node is dropped.
    pub fn netns_node(&self, ns: &Netns, ifaces: &[&str], name: &str) -> TestNode {
        let spec = self.spec(name);
        let config = self.config(u64::from(name.as_bytes()[0]));
        let security = self.security();
        let ifaces: Vec<String> = ifaces.iter().map(|i| i.to_string()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let join = crate::netns::spawn_in(ns, move || async move {
            let base = grasp_acp::plain::Config::default().interfaces(ifaces);
            let b = grasp_tools::backend::bind(base, spec)
                .await
                .expect("bind the backend in the namespace");
            assert_eq!(b.transport.security(), security);
            let grasp = Grasp::start(b.transport.clone(), b.inbound, config);
            let _ = tx.send((grasp, b.transport, b.control));
            // Keep the runtime (and its sockets) until the node is dropped.
            let _ = stop_rx.await;
        });
        let (grasp, transport, control) = rx.recv().expect("the namespace thread started a node");
        TestNode {
            grasp,
            transport,
            control,
            _thread: Some(NodeThread {
                stop: Some(stop_tx),
                join: Some(join),
            }),
        }
    }

    /// The security the engine is to see.
    pub fn security(&self) -> Security {
        match self.backend {
            Backend::Plain => Security::None,
            Backend::Quads | Backend::LegacyQuads => Security::Quads,
            Backend::Tls => Security::Tls,
        }
    }

    /// A node named `name` on any base (a fabric node built by hand: with
    /// `listen_self`, say).
    pub async fn node(&self, base: impl Into<Base>, name: &str) -> TestNode {
        let b = grasp_tools::backend::bind(base, self.spec(name))
            .await
            .expect("bind the backend");
        assert_eq!(b.transport.security(), self.security());
        let grasp = Grasp::start(
            b.transport.clone(),
            b.inbound,
            self.config(u64::from(name.as_bytes()[0])),
        );
        TestNode {
            grasp,
            transport: b.transport,
            control: b.control,
            _thread: None,
        }
    }
}

impl TestNode {
    /// Received multicasts the backend dropped (failed to open or verify).
    pub fn multicast_dropped(&self) -> u64 {
        self.transport.stats().multicast_dropped_other
    }

    /// Panics if the backend dropped anything: every multicast opened and
    /// every channel's records were good.
    pub fn assert_no_drops(&self, who: &str) {
        let s = self.transport.stats();
        assert_eq!(s.multicast_dropped_other, 0, "{who}: {s:?}");
        assert_eq!(s.malformed_streams, 0, "{who}: {s:?}");
        match &self.control {
            Control::Quads(t) => {
                let q = t.protection().stats();
                assert_eq!(q.dropped_total(), 0, "{who}: {q:?}");
            }
            Control::Tls(t) => {
                let m = t.protection().multicast_stats();
                assert_eq!(m.dropped.iter().sum::<u64>(), 0, "{who}: {m:?}");
            }
            _ => {}
        }
    }
}
