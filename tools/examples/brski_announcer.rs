//! A BRSKI-style announcer (RFC 8995; the code is
//! `grasp_tools::asa::brski`): a registrar floods `AN_join_registrar`
//! (loop count 255, "EST-TLS", its address and TCP port) across the
//! domain, and a join proxy floods `AN_Proxy` (loop count 1) on its link
//! only, where pledges find it.
//!
//! ```text
//! cargo run -p grasp-tools --example brski_announcer
//! ```
//!
//! Runs on a four-node line on the in-memory fabric: the registrar on N4,
//! the proxy on N2. Every node learns the registrar; only the proxy's
//! neighbours (N1, N3) learn the proxy, N4 never sees its link-local
//! announcement.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use grasp_tools::asa::{brski, fabric_line, Transcript};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let t = Arc::new(Transcript::new(false));
    let nodes = fabric_line(4, 3);
    let every = Duration::from_millis(500);
    let reg = brski::registrar_flood("fd00:fab::4".parse()?, 8443);
    let r = brski::announce(&nodes[3], reg, every, t.clone()).await?;
    let proxy = brski::proxy_flood("fe80::1:2".parse()?, 4443);
    let p = brski::announce(&nodes[1], proxy, every, t.clone()).await?;
    for (i, node) in nodes.iter().enumerate() {
        for name in [brski::REGISTRAR, brski::PROXY] {
            match brski::find(node, name, Duration::from_secs(1)).await? {
                Some((loc, value, lc)) => {
                    println!(
                        "N{} knows {name} at {loc} ({value:?}, loop count {lc} on arrival)",
                        i + 1
                    )
                }
                None => println!("N{} has no {name}", i + 1),
            }
        }
    }
    r.abort();
    p.abort();
    Ok(())
}
