//! grasp-asa: the example ASAs as a process of their own, using a running
//! graspd's GRASP core through its ASA socket instead of a node of their
//! own. The same source graspd runs built in (`asas = [...]`).
//!
//! ```text
//! grasp-asa briggs                           # at $GRASP_API_SOCKET or /run/graspd/api.sock
//! grasp-asa --api /run/graspd/api.sock pfx-delegator brski-registrar
//! ```
//!
//! Runs until SIGINT or SIGTERM (exit 0) or until graspd closes the socket
//! (exit 1; graspd has deregistered the ASAs by then). Logs go to standard
//! error (`RUST_LOG`, default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use grasp_asa_api::client::{Remote, DEFAULT_SOCKET};
use grasp_engine::Grasp;
use grasp_tools::config::{LogFormat, BUILTIN_ASAS};
use grasp_tools::node::run_asas;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "grasp-asa",
    version,
    about = "Run the example ASAs against a running graspd's ASA socket"
)]
struct Args {
    /// graspd's ASA socket.
    #[arg(long, env = "GRASP_API_SOCKET", default_value = DEFAULT_SOCKET)]
    api: PathBuf,
    /// Loop count of the ASAs' objectives (how far their floods and
    /// discoveries travel).
    #[arg(long, default_value_t = 4)]
    loop_count: u8,
    /// The ASAs: briggs, pfx-delegator, brski-registrar.
    #[arg(required = true, value_parser = asa_name)]
    asas: Vec<String>,
}

fn asa_name(s: &str) -> Result<String, String> {
    if BUILTIN_ASAS.iter().any(|(n, _)| *n == s) {
        return Ok(s.to_string());
    }
    let known: Vec<String> = BUILTIN_ASAS
        .iter()
        .map(|(n, what)| format!("{n} ({what})"))
        .collect();
    Err(format!("the example ASAs are: {}", known.join("; ")))
}

fn main() -> ExitCode {
    let args = Args::parse();
    grasp_tools::init_logging(LogFormat::Plain, "info");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grasp-asa: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let remote = match Remote::connect(&args.api).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grasp-asa: {e}");
            return ExitCode::from(1);
        }
    };
    let hello = remote.hello();
    info!(daemon = %hello.daemon, security = %hello.security, socket = %args.api.display(), "connected to graspd");
    let addr = match hello.locator {
        Some(grasp_engine::wire::Locator::Ipv6 { addr, .. }) => addr,
        _ => std::net::Ipv6Addr::LOCALHOST,
    };
    // Before the ASAs start, so a stop asked for at any time is clean.
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("grasp-asa: cannot install signal handlers");
        return ExitCode::from(1);
    };
    let grasp = Grasp::with_core(remote.clone());
    let tasks = match run_asas(&grasp, addr, &args.asas, args.loop_count).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("grasp-asa: cannot start the ASAs: {e}");
            return ExitCode::from(1);
        }
    };
    let code = tokio::select! {
        _ = int.recv() => { info!("SIGINT: stopping"); ExitCode::SUCCESS }
        _ = term.recv() => { info!("SIGTERM: stopping"); ExitCode::SUCCESS }
        () = remote.closed() => { error!("graspd closed the ASA socket; stopping"); ExitCode::from(1) }
    };
    for t in tasks {
        t.abort();
    }
    code
}
