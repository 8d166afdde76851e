//! Throughput benchmark of the engine.
//!
//! `cargo run --release -p grasp-tools --bin grasp-bench -- fabric --seconds 10 --concurrency 1`
//!
//! `fabric`: two nodes on the in-memory fabric, on one core (a current-thread
//! runtime). One node serves a synchronization objective; the other runs
//! `--concurrency` requesters, each calling `synchronize` with an explicit
//! peer in a loop (one channel, M_REQ_SYN and M_SYNCH per call, as over TCP).
//! Prints the overall rate, the rate in the first and last 10% of the run, and
//! the ratio of the two (the rate must stay flat), or `negotiate` rates with
//! `--negotiate` (request answered by an immediate accept).
//!
//! The plain-ACP (veth) variant and the bare tokio baseline come with the
//! namespace benchmark script (not yet written: see the issue notes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::proto::{AsaLocator, Config, RegisterOptions};
use grasp_engine::transport::{AcpTransport, Security};
use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::{Grasp, Negotiation};

#[derive(Parser, Debug)]
#[command(about = "GRASP engine throughput benchmarks")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Two nodes on the in-memory fabric, one core.
    Fabric {
        /// Run time.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent requesters.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Benchmark negotiation (request, immediate accept) instead.
        #[arg(long)]
        negotiate: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match args.mode {
        Mode::Fabric {
            seconds,
            concurrency,
            negotiate,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(fabric(
                Duration::from_secs(seconds),
                concurrency.max(1),
                negotiate,
            ))
        }
    }
}

async fn fabric(run: Duration, concurrency: usize, negotiate: bool) -> Result<()> {
    let f = Fabric::new(1);
    let l = f.link("l", LinkConfig::default());
    let mut cfg = Config::default();
    cfg.max_channels = 100_000;
    let (ta, ia) = f
        .node("A")
        .attach(&l)
        .simulated_security(Security::Quads)
        .max_inbound_connections(100_000)
        .bind();
    let (tb, ib) = f
        .node("B")
        .attach(&l)
        .simulated_security(Security::Quads)
        .max_inbound_connections(100_000)
        .bind();
    let a = Grasp::start(ta, ia, cfg.clone());
    let b = Grasp::start(tb.clone(), ib, cfg);
    let server = b.register_asa("server").await?;
    let client = a.register_asa("client").await?;
    let peer = AsaLocator::new(tb.node_locator());
    let flags = if negotiate { 3 } else { 5 };
    let o = Objective::new("EX.bench", ObjectiveFlags::from_bits(flags)).with_value(
        Value::from_serialize(
            &[("a", 1)]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )?,
    );
    server
        .register_objective(&o, RegisterOptions::default())
        .await?;
    if negotiate {
        let listener = server.listen_negotiate("EX.bench").await?;
        tokio::spawn(async move {
            while let Some((session, _)) = listener.next().await {
                let _ = session.accept().await;
            }
        });
    } else {
        server.listen_synchronize(&o).await?;
    }

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let (o, peer, done, errors) = (o.clone(), peer.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let ok = if negotiate {
                    matches!(
                        client
                            .request_negotiate(&o, Some(peer.clone()), Duration::from_secs(5))
                            .await,
                        Ok(Negotiation::Accepted)
                    )
                } else {
                    client
                        .synchronize(&o, Some(peer.clone()), Duration::from_secs(5))
                        .await
                        .is_ok()
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Sample the counter every tenth of the run.
    let tenth = run / 10;
    let mut samples = vec![0u64];
    for i in 1..=10 {
        tokio::time::sleep_until((start + tenth * i).into()).await;
        samples.push(done.load(Ordering::Relaxed));
    }
    for t in tasks {
        t.await.context("requester task")?;
    }
    let total = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let first = (samples[1] - samples[0]) as f64 / tenth.as_secs_f64();
    let last = (samples[10] - samples[9]) as f64 / tenth.as_secs_f64();
    let what = if negotiate {
        "negotiations"
    } else {
        "synchronizations"
    };
    println!(
        "fabric, 1 core, {concurrency} requester(s): {total} {what} in {secs:.2} s = {:.0}/s; first 10% {first:.0}/s, last 10% {last:.0}/s, last/first {:.3}; errors {}",
        total as f64 / secs,
        last / first.max(1.0),
        errors.load(Ordering::Relaxed)
    );
    if total == 0 {
        bail!("nothing completed");
    }
    Ok(())
}
