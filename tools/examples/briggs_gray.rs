//! Briggs and Gray, the negotiating pair of the graspy API document, as
//! Rust ASAs (the code is `grasp_tools::asa::briggs_gray`).
//!
//! With no arguments both run on a three-node line on the in-memory
//! fabric (no root, no network), Gray on one end, Briggs on the other:
//!
//! ```text
//! cargo run -p grasp-tools --example briggs_gray
//! ```
//!
//! With `--role briggs` or `--role gray` one of them runs on a real node
//! with graspd's flags (run it only inside a namespace you made, or on a
//! real GRASP network), e.g.
//! `briggs_gray --role gray --security none -i ab0`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use grasp_tools::asa::{briggs_gray, fabric_line, Transcript};
use grasp_tools::config::{DaemonOverrides, NodeArgs, NodeConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Run one side on a real node: briggs or gray.
    #[arg(long)]
    role: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let t = Arc::new(Transcript::new(false));
    match args.role.as_deref() {
        None => {
            let nodes = fabric_line(3, 1);
            let bank = briggs_gray::briggs(&nodes[2], 7, Duration::from_secs(1), t.clone()).await?;
            let report = briggs_gray::gray(&nodes[0], 8, Duration::from_secs(3), &t).await?;
            bank.abort();
            println!("\n{report:#?}");
        }
        Some(role) => {
            let cfg = NodeConfig::resolve(&args.node, &DaemonOverrides::default())?;
            let node = grasp_tools::Node::start(&cfg).await?;
            if role == "briggs" {
                let bank =
                    briggs_gray::briggs(&node.grasp, rand_seed(), Duration::from_secs(60), t)
                        .await?;
                tokio::signal::ctrl_c().await?;
                bank.abort();
            } else {
                let report =
                    briggs_gray::gray(&node.grasp, rand_seed(), Duration::from_secs(70), &t)
                        .await?;
                println!("\n{report:#?}");
            }
        }
    }
    Ok(())
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
