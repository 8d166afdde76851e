//! Prefix delegation in the spirit of RFC 8992 (the code is
//! `grasp_tools::asa::prefix_manager`): a delegator floods
//! `PrefixManager.Params` and answers `PrefixManager` negotiations from
//! its pool; routers learn their prefix length from the flood by role and
//! negotiate a prefix.
//!
//! ```text
//! cargo run -p grasp-tools --example prefix_manager
//! ```
//!
//! Runs on a three-node line on the in-memory fabric: the delegator at one
//! end with fd00:5::/32, an RSG, an ASG and two CSGs at the other.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use grasp_tools::asa::{fabric_line, prefix_manager, Transcript};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let t = Arc::new(Transcript::new(false));
    let nodes = fabric_line(3, 2);
    let base = "fd00:5::".parse()?;
    let (task, delegated) =
        prefix_manager::delegator(&nodes[2], base, 32, Duration::from_secs(1), t.clone()).await?;
    for role in ["RSG", "ASG", "CSG", "CSG"] {
        prefix_manager::requester(&nodes[0], role, Duration::from_secs(3), &t).await?;
    }
    task.abort();
    println!("\ndelegated:");
    for (p, len) in delegated.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {p}/{len}");
    }
    Ok(())
}
