//! A fixed number of synchronizations between two engines on the fabric,
//! plain (simulated security) or under QUADS, for counting instructions
//! with callgrind: noise-free where timings on a shared VM are not.
//!
//! ```text
//! cargo build --release -p grasp-tools --example sync_count
//! valgrind --tool=callgrind target/release/examples/sync_count plain 5000
//! valgrind --tool=callgrind target/release/examples/sync_count quads 5000
//! ```
//! (instructions per synchronization = the difference of two runs with
//! different counts, divided by the difference in count.)
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::proto::{AsaLocator, Config, RegisterOptions};
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::Grasp;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quads = std::env::args().nth(1).as_deref() == Some("quads");
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let f = Fabric::new(1);
    let l = f.link("l", LinkConfig::default());
    let mut cfg = Config::default();
    cfg.max_channels = 100_000;
    let node = |name: &str| -> (
        Arc<dyn AcpTransport>,
        grasp_engine::transport::InboundStream,
    ) {
        let b = f
            .node(name)
            .attach(&l)
            .max_inbound_connections(100_000)
            .max_message_size(2048 + grasp_quads::OVERHEAD);
        if quads {
            let (t, i) = b.bind();
            let ring = grasp_quads::KeyRing::new(grasp_quads::DomainKey::from_master(
                &grasp_quads::MasterSecret::from_bytes([0x42; 32]),
            ));
            let (t, i) = grasp_quads::wrap(t, i, ring, grasp_quads::QuadsConfig::default());
            (t, i)
        } else {
            let (t, i) = b.simulated_security(Security::Quads).bind();
            (t, i)
        }
    };
    let (ta, ia) = node("A");
    let (tb, ib) = node("B");
    let a = Grasp::start(ta, ia, cfg.clone());
    let b = Grasp::start(tb.clone(), ib, cfg);
    let server = b.register_asa("s").await.unwrap();
    let client = a.register_asa("c").await.unwrap();
    let o = Objective::new("EX.bench", ObjectiveFlags::from_bits(5)).with_value(Value::from(1u32));
    server
        .register_objective(&o, RegisterOptions::default())
        .await
        .unwrap();
    server.listen_synchronize(&o).await.unwrap();
    let peer = AsaLocator::new(tb.node_locator());
    for _ in 0..n {
        client
            .synchronize(&o, Some(peer.clone()), Duration::from_secs(5))
            .await
            .unwrap();
    }
    println!("done {n}");
}
