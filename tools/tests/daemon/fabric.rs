//! A node line on the in-memory fabric whose first node's ASA socket is
//! served in the test's process: connections are Unix socket pairs.

use std::time::Duration;

use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::Config;
use grasp_engine::Grasp;
use grasp_tools::api::policy::Grants;
use grasp_tools::api::{connection, Core, Limits as ApiLimits, NodeFacts};
use std::sync::Arc;

use grasp_tools::api::serve;
use grasp_tools::socket::SocketGuard;
use tokio::net::UnixStream;

use super::asa_client::Client;

/// N1 - N2 - N3 on the fabric under QUADS; N1's engine and transport for
/// the socket.
pub(crate) async fn line() -> (Core, Grasp) {
    let f = Fabric::new(12);
    let cfg = LinkConfig {
        loss: 0.0,
        delay: Duration::from_millis(1),
    };
    let (l1, l2) = (f.link("l1", cfg), f.link("l2", cfg));
    let bind = |name: &str, links: &[&grasp_acp::fabric::Link]| {
        let mut b = f.node(name);
        for l in links {
            b = b.attach(l);
        }
        // A fixed key: argon2 would only slow the tests down.
        let key =
            grasp_quads::DomainKey::from_master(&grasp_quads::MasterSecret::from_bytes([12; 32]));
        let spec = grasp_tools::backend::Spec::Quads(Box::new(grasp_quads::KeyRing::new(key)));
        async move {
            let b = grasp_tools::backend::bind(b, spec).await.unwrap();
            let g = Grasp::start(b.transport.clone(), b.inbound, Config::default());
            (b.transport, g)
        }
    };
    let (t1, g1) = bind("N1", &[&l1]).await;
    let (_, g2) = bind("N2", &[&l1, &l2]).await;
    std::mem::forget(g2); // the relay runs for the test's life
    let (_, g3) = bind("N3", &[&l2]).await;
    (
        Core {
            grasp: g1,
            facts: NodeFacts {
                transport: t1,
                relay: false,
                dull: false,
            },
            limits: ApiLimits::default(),
            stats: Default::default(),
            policy: Default::default(),
        },
        g3,
    )
}

/// A client of a connection served in this process.
pub(crate) fn client(core: Core) -> Client {
    let (a, b) = UnixStream::pair().unwrap();
    tokio::spawn(connection(b, core, Grants::everything("the test")));
    Client::new(a)
}

/// How the ASAs reach their node's GRASP core.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reach {
    /// The engine in the ASA's process.
    InProcess,
    /// The node's ASA socket (the ASA a separate client).
    Socket,
}

/// A line of nodes (each relaying to the next), as the ASAs reach them:
/// the engines themselves, or each node's ASA socket through the client.
pub(crate) struct Line {
    nodes: Vec<Grasp>,
    /// The sockets' counters (none in process).
    stats: Vec<Arc<grasp_tools::api::Stats>>,
    _sockets: Vec<SocketGuard>,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Line {
    type Target = [Grasp];
    fn deref(&self) -> &[Grasp] {
        &self.nodes
    }
}

pub(crate) async fn line_reached(n: usize, reach: Reach) -> Line {
    let nodes = grasp_tools::asa::fabric_nodes(n, 42);
    let Reach::Socket = reach else {
        return Line {
            nodes: nodes.into_iter().map(|(_, g)| g).collect(),
            stats: Vec::new(),
            _sockets: Vec::new(),
            _dir: None,
        };
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut remote, mut sockets, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (transport, grasp)) in nodes.into_iter().enumerate() {
        let path = dir.path().join(format!("api-{i}.sock"));
        let core = Core {
            grasp,
            facts: NodeFacts {
                transport,
                relay: i > 0 && i + 1 < n,
                dull: false,
            },
            limits: Default::default(),
            stats: Default::default(),
            policy: Default::default(),
        };
        stats.push(core.stats.clone());
        sockets.push(serve(&path, core).unwrap());
        remote.push(grasp_asa_api::client::connect(&path).await.unwrap());
    }
    Line {
        nodes: remote,
        stats,
        _sockets: sockets,
        _dir: Some(dir),
    }
}

impl Line {
    /// Through sockets, the ASAs' calls were answered there.
    fn calls_answered_by_sockets(&self) -> u64 {
        use std::sync::atomic::Ordering;
        self.stats
            .iter()
            .map(|s| s.calls.load(Ordering::Relaxed))
            .sum()
    }
}

/// Asserts that the calls went where `reach` says.
pub(crate) fn went(reach: Reach, nodes: &Line) {
    let calls = nodes.calls_answered_by_sockets();
    match reach {
        Reach::InProcess => assert_eq!(calls, 0),
        Reach::Socket => assert!(calls >= 3, "{calls} calls through the sockets"),
    }
}
