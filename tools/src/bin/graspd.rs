//! graspd: a GRASP node daemon.
//!
//! Runs the GRASP engine on the configured interfaces over the chosen
//! security backend: relays discoveries and floods between its interfaces,
//! answers from its discovery cache, serves the objectives listed under
//! `[[serve]]`, and follows interfaces and addresses that change.
//!
//! ```text
//! graspd --config /etc/grasp/graspd.toml
//! graspd --config graspd.toml --check-config     # validate and explain
//! graspd --security tls --cert n.crt --key n.key --ca ca.crt -i eth0 -i eth1
//! graspd --security none --relay-only -i ra -i rc   # a lab relay (graspy's gremlin)
//! ```
//!
//! Signals: SIGINT/SIGTERM stop it cleanly; SIGHUP re-reads the QUADS key
//! file or the TLS certificate and key. Logs go to standard error
//! (`RUST_LOG`, `--log-format json`). `grasp stats --control PATH` reads its
//! counters when `--control PATH` (or `control.socket`) is set.
//!
//! Exit status: 0 after a clean stop or a good `--check-config`; 1 when the
//! node cannot start; 2 for a bad configuration or bad arguments.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use grasp_tools::cli::graspd::Args;
use grasp_tools::config::{DaemonOverrides, NodeConfig};
use grasp_tools::node::{check_deep, run_asas, serve_objectives, Node};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = DaemonOverrides {
        relay_only: args.relay_only,
        log_format: args.log_format.clone(),
        control: args.control.clone(),
    };
    let cfg = match NodeConfig::resolve(&args.node, &overrides) {
        // A daemon may start before its links are up.
        Ok(c) => NodeConfig {
            wait_for_interfaces: true,
            ..c
        },
        Err(e) => {
            eprintln!("graspd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", cfg.explain());
        return match check_deep(&cfg) {
            Ok(found) => {
                for f in found {
                    println!("  found        {f}");
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("graspd: configuration error: {e}");
                ExitCode::from(2)
            }
        };
    }
    grasp_tools::init_logging(cfg.log_format, &cfg.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("graspd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(cfg))
}

async fn run(cfg: NodeConfig) -> ExitCode {
    // First, so a stop asked for during start-up is clean too.
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("graspd: cannot install signal handlers");
        return ExitCode::from(1);
    };
    let node = match Node::start(&cfg).await {
        Ok(n) => Arc::new(n),
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("graspd: {e}");
            return ExitCode::from(1);
        }
    };
    info!(
        security = %cfg.security,
        locator = %node.transport.node_locator(),
        interfaces = ?node.transport.interfaces().iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        dull = cfg.dull,
        relay_only = cfg.relay_only,
        "graspd running"
    );
    let _control = match &cfg.control {
        Some(p) => match grasp_tools::control::serve(p, node.clone()) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("graspd: control socket {}: {e}", p.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let _api = match &cfg.api_socket {
        Some(p) => {
            let relay = match cfg.relay {
                grasp_tools::config::RelayChoice::Always => true,
                grasp_tools::config::RelayChoice::Never => false,
                grasp_tools::config::RelayChoice::Auto => {
                    !cfg.dull && node.transport.interfaces().len() > 1
                }
            };
            let core = grasp_tools::api::Core {
                grasp: node.grasp.clone(),
                facts: grasp_tools::api::NodeFacts {
                    transport: node.transport.clone(),
                    relay,
                    dull: cfg.dull,
                },
                limits: grasp_tools::api::Limits {
                    connections: cfg.api_connections,
                    ..grasp_tools::api::Limits::default()
                },
                stats: node.api_stats.clone(),
                policy: Arc::new(cfg.api_policy.clone()),
            };
            match grasp_tools::api::serve(p, core) {
                Ok(g) => Some(g),
                Err(e) => {
                    eprintln!("graspd: ASA socket {}: {e}", p.display());
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    let _metrics = match cfg.metrics_listen {
        Some(a) => match grasp_tools::metrics::serve(a, node.clone()).await {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("graspd: metrics.listen {a}: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let floods = match serve_objectives(&node.grasp, &cfg.serve, cfg.dull).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("graspd: cannot serve the configured objectives: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = match node.transport.node_locator() {
        grasp_engine::wire::Locator::Ipv6 { addr, .. } => addr,
        _ => std::net::Ipv6Addr::LOCALHOST,
    };
    let asas = match run_asas(&node.grasp, addr, &cfg.asas, cfg.asa_loop_count).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("graspd: cannot start the configured ASAs: {e}");
            return ExitCode::from(1);
        }
    };
    loop {
        tokio::select! {
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = hup.recv() => match node.reload() {
                Ok(m) => info!("SIGHUP: {m}"),
                Err(e) => warn!(error = %e, "SIGHUP: reload failed; keeping the old keys"),
            },
        }
    }
    for f in floods.into_iter().chain(asas) {
        f.abort();
    }
    if let Ok((s, open)) = node.grasp.stats().await {
        info!(
            received = s.received.total(),
            sent = s.sent.total(),
            open_channels = open,
            "graspd stopped"
        );
    }
    ExitCode::SUCCESS
}
