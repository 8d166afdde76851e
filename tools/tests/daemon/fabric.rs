//! A node line on the in-memory fabric whose first node's ASA socket is
//! served in the test's process: connections are Unix socket pairs.

use std::time::Duration;

use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::proto::Config;
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::Grasp;
use grasp_tools::api::policy::Grants;
use grasp_tools::api::{connection, Core, Limits as ApiLimits, NodeFacts};
use tokio::net::UnixStream;

use super::asa_client::Client;

/// N1 - N2 - N3 on the fabric; N1's engine and transport for the socket.
pub(crate) fn line() -> (Core, Grasp) {
    let f = Fabric::new(12);
    let cfg = LinkConfig {
        loss: 0.0,
        delay: Duration::from_millis(1),
    };
    let (l1, l2) = (f.link("l1", cfg), f.link("l2", cfg));
    let bind = |name: &str, links: &[&grasp_acp::fabric::Link]| {
        let mut b = f.node(name).simulated_security(Security::Quads);
        for l in links {
            b = b.attach(l);
        }
        let (t, inbound) = b.bind();
        (t.clone(), Grasp::start(t, inbound, Config::default()))
    };
    let (t1, g1) = bind("N1", &[&l1]);
    let (_, g2) = bind("N2", &[&l1, &l2]);
    std::mem::forget(g2); // the relay runs for the test's life
    let (_, g3) = bind("N3", &[&l2]);
    let t1: std::sync::Arc<dyn AcpTransport> = t1;
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
