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
//! `serve` / `client`: the same over real sockets, with `--mode grasp`
//! (the engine on the plain ACP, one TCP connection per synchronization as
//! RFC 8990 asks) or `--mode bare` (a bare tokio loop doing the same socket
//! work: connect, 22-byte request, 22-byte reply, server closes first). The
//! server prints its CPU time per 1000 requests; the client prints rates.
//! `tools/bench/veth.sh` runs both in two network namespaces side by side.
//!
//! `client --api SOCKET` runs the same requesters as ASAs of a running
//! graspd, through its ASA socket (the Rust client), instead of an engine
//! of their own; `--discoveries N --cached` times discoveries answered
//! from the cache. `api-crowd` connects a thousand clients, each with an
//! objective, and prints graspd's RSS and another client's rate without
//! and with them. `tools/bench/api.sh` runs these between namespaces side
//! by side with the in-process engine.
//!
//! `memory`: RSS of an idle node, and per open negotiation session.
//!
//! `count`: a fixed number of synchronizations on the fabric, for
//! `valgrind --tool=callgrind` (instructions per synchronization, plain vs
//! QUADS).
//!
//! `--quads` runs serve/client under QUADS; with `GRASP_BENCH_TLS_CA=DIR` in
//! the environment they run over the TLS backend instead, each with a node
//! certificate issued from the CA in DIR (`grasp-ca init --dir DIR`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
use grasp_engine::{AsaLocator, Config, RegisterOptions};
use grasp_engine::{Grasp, Negotiation};
use grasp_tools::backend::Spec;

#[derive(Parser, Debug)]
#[command(about = "GRASP engine throughput benchmarks")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// The GRASP engine over the plain ACP.
    Grasp,
    /// A bare tokio TCP loop with no protocol logic.
    Bare,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Serve synchronizations (or bare requests) for `--seconds`, then print
    /// the count and CPU time.
    Serve {
        /// grasp or bare.
        #[arg(long, value_enum)]
        mode: Kind,
        /// Interface (grasp mode).
        #[arg(long, default_value = "ba0")]
        iface: String,
        /// Port to listen on.
        #[arg(long, default_value_t = 7018)]
        port: u16,
        /// How long to serve.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Serve negotiations instead (grasp mode): counter-offer until the
        /// requester has made `steps` steps, then accept (0: accept at once).
        #[arg(long)]
        negotiate: Option<u32>,
        /// Tokio worker threads (0: current-thread runtime, the engine's
        /// natural shape: it is one task).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Run the engine under QUADS (AES-256-GCM, a fixed benchmark key).
        #[arg(long)]
        quads: bool,
    },
    /// Request synchronizations (or bare requests) for `--seconds`.
    Client {
        /// grasp or bare.
        #[arg(long, value_enum)]
        mode: Kind,
        /// Interface (grasp mode).
        #[arg(long, default_value = "ab0")]
        iface: String,
        /// The server's address.
        #[arg(long)]
        peer: std::net::Ipv6Addr,
        /// The server's port.
        #[arg(long, default_value_t = 7018)]
        port: u16,
        /// Run time.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent requesters.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Tokio worker threads (0: current-thread runtime, the engine's
        /// natural shape: it is one task).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Also time `discover` with return-on-first-answer this many times.
        #[arg(long, default_value_t = 0)]
        discoveries: usize,
        /// The discoveries are answered from the cache (not flushed).
        #[arg(long)]
        cached: bool,
        /// Use the running graspd behind this ASA socket instead of an
        /// engine of our own (grasp mode).
        #[arg(long)]
        api: Option<std::path::PathBuf>,
        /// Negotiate instead of synchronizing (grasp mode): accept every
        /// counter-offer; the session has 1 + 2 × counter-offers messages
        /// from us and the server's.
        #[arg(long)]
        negotiate: bool,
        /// Run the engine under QUADS (AES-256-GCM, a fixed benchmark key).
        #[arg(long)]
        quads: bool,
        /// Offer at most this many requests per second in all (0: as fast
        /// as answers come), spread over the requesters: two servers'
        /// CPU per request compared at the same load.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// graspd with many ASA clients: another client's synchronization rate
    /// (through the socket) without them, then with `--clients` connected,
    /// each with a registered objective; graspd's RSS (`--pid`) with each.
    ApiCrowd {
        /// graspd's ASA socket.
        #[arg(long)]
        api: std::path::PathBuf,
        /// graspd's process id.
        #[arg(long)]
        pid: u32,
        /// Clients to connect.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// The synchronization server's address.
        #[arg(long)]
        peer: std::net::Ipv6Addr,
        /// Its port.
        #[arg(long, default_value_t = 7018)]
        port: u16,
        /// Run time of each rate measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// The floor under the ASA socket's round trip: a bare tokio echo over
    /// a Unix socket, same frames' size, no protocol. `--serve` echoes;
    /// without it, `--count` round trips are timed.
    UnixEcho {
        /// The socket.
        #[arg(long)]
        socket: std::path::PathBuf,
        /// Echo (the daemon's side).
        #[arg(long)]
        serve: bool,
        /// Round trips to time.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// Memory: idle node RSS and RSS per open negotiation session (fabric).
    Memory {
        /// Sessions to hold open.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// Memory per open session over the plain ACP, server side: answer each
    /// negotiation request with a counter-offer and hold the session open;
    /// print the RSS per held session (run `hold-client` in the other
    /// namespace; `tools/bench/veth.sh` does).
    HoldServe {
        /// Interface.
        #[arg(long, default_value = "ba0")]
        iface: String,
        /// Port to listen on.
        #[arg(long, default_value_t = 7018)]
        port: u16,
        /// How long to run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Memory per open session over the plain ACP, client side: open
    /// `--sessions` negotiations, keep them open, print the RSS per session.
    HoldClient {
        /// Interface.
        #[arg(long, default_value = "ab0")]
        iface: String,
        /// The server's address.
        #[arg(long)]
        peer: std::net::Ipv6Addr,
        /// The server's port.
        #[arg(long, default_value_t = 7018)]
        port: u16,
        /// Sessions to open and hold.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// Constant mixed load on a graspd that runs Briggs (`asas =
    /// ["briggs"]`), for RSS over a long run: `--rate` operations a second,
    /// 45% loan negotiations (EX3 `["NZD", 40]`, accepted at once), 45%
    /// synchronizations of EX2 and 10% discoveries of EX2 with the cache
    /// flushed. Every minute it prints the operations done and failed and
    /// the daemon's RSS (`--pid`); at the end the growth from minute 2 to
    /// the last, and fails when it is over `--max-growth-kib`.
    /// `tools/bench/soak.sh` runs it against graspd between namespaces.
    Soak {
        /// Interface.
        #[arg(long, default_value = "ab0")]
        iface: String,
        /// graspd's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// Run time in minutes (at least 3).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Operations started per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Operations in flight at most (when all are busy, a tick is
        /// counted as skipped: the load was not constant).
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Allowed RSS growth from minute 2 to the last minute, KiB.
        #[arg(long, default_value_t = 2048)]
        max_growth_kib: u64,
    },
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
        /// Run twice, without and with QUADS (AES-256-GCM), and print the
        /// ratio.
        #[arg(long)]
        compare_quads: bool,
    },
    /// Exactly `--syncs` synchronizations between two fabric engines, for
    /// counting instructions with callgrind (noise-free where timings on a
    /// shared VM are not): instructions per synchronization = the
    /// difference of two runs with different counts over the difference.
    Count {
        /// Synchronizations to run.
        #[arg(long, default_value_t = 5000)]
        syncs: u64,
        /// Under QUADS instead of the simulated-secure fabric.
        #[arg(long)]
        quads: bool,
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
            compare_quads,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let run = Duration::from_secs(seconds);
            let plain = rt.block_on(fabric(run, concurrency.max(1), negotiate, false))?;
            if compare_quads {
                let quads = rt.block_on(fabric(run, concurrency.max(1), negotiate, true))?;
                println!(
                    "QUADS / simulated-secure plain: {:.0} / {:.0} = {:.1}%",
                    quads,
                    plain,
                    100.0 * quads / plain.max(1.0)
                );
            }
            Ok(())
        }
        Mode::Count { syncs, quads } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let p = fabric_pair(false, quads).await?;
                for i in 0..syncs {
                    p.client
                        .synchronize(&p.o, Some(p.peer.clone()), Duration::from_secs(5))
                        .await
                        .with_context(|| format!("synchronization {i}"))?;
                }
                println!(
                    "{syncs} synchronizations{}",
                    if quads { " under QUADS" } else { "" }
                );
                Ok(())
            }),
        Mode::Serve {
            mode,
            iface,
            port,
            seconds,
            negotiate,
            workers,
            quads,
        } => runtime(workers)?.block_on(serve(
            mode,
            iface,
            port,
            Duration::from_secs(seconds),
            negotiate,
            quads,
        )),
        Mode::Client {
            mode,
            iface,
            peer,
            port,
            seconds,
            concurrency,
            workers,
            discoveries,
            cached,
            api,
            negotiate,
            quads,
            rate,
        } => runtime(workers)?.block_on(client(
            mode,
            iface,
            std::net::SocketAddr::from((peer, port)),
            Duration::from_secs(seconds),
            concurrency.max(1),
            Discoveries {
                count: discoveries,
                cached,
            },
            api,
            negotiate,
            quads,
            rate,
        )),
        Mode::ApiCrowd {
            api,
            pid,
            clients,
            peer,
            port,
            seconds,
        } => runtime(2)?.block_on(api_crowd(
            api,
            pid,
            clients,
            std::net::SocketAddr::from((peer, port)),
            Duration::from_secs(seconds),
        )),
        Mode::HoldServe {
            iface,
            port,
            seconds,
        } => runtime(0)?.block_on(hold_serve(iface, port, Duration::from_secs(seconds))),
        Mode::HoldClient {
            iface,
            peer,
            port,
            sessions,
        } => runtime(0)?.block_on(hold_client(
            iface,
            std::net::SocketAddr::from((peer, port)),
            sessions,
        )),
        Mode::Soak {
            iface,
            pid,
            minutes,
            rate,
            in_flight,
            max_growth_kib,
        } => runtime(0)?.block_on(soak(
            iface,
            pid,
            minutes.max(3),
            rate.max(1),
            in_flight.max(1),
            max_growth_kib,
        )),
        Mode::UnixEcho {
            socket,
            serve,
            count,
        } => runtime(0)?.block_on(unix_echo(socket, serve, count)),
        Mode::Memory { sessions } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(memory(sessions)),
    }
}

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    })
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    rss_kib_of("self")
}

/// Resident set size of process `pid` ("self" or a number), in KiB.
fn rss_kib_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The objective every mode synchronizes: `{"a": 1}`, as in the graspy anchors.
fn bench_objective(flags: u64) -> Result<Objective> {
    let v: std::collections::BTreeMap<&str, u32> = [("a", 1)].into_iter().collect();
    Ok(Objective::new("EX.bench", ObjectiveFlags::from_bits(flags))
        .with_value(Value::from_serialize(&v)?))
}

/// The benchmark's QUADS key: a fixed master secret (argon2 runs once per
/// node in real use and is measured on its own in `grasp-quads`' bench).
fn bench_ring() -> grasp_quads::KeyRing {
    grasp_quads::KeyRing::new(grasp_quads::DomainKey::from_master(
        &grasp_quads::MasterSecret::from_bytes([0x42; 32]),
    ))
}

/// The plain ACP, or QUADS over it.
async fn bind_node(
    cfg: grasp_acp::plain::Config,
    quads: bool,
) -> Result<(
    Arc<dyn AcpTransport>,
    grasp_engine::transport::InboundStream,
)> {
    if let Ok(dir) = std::env::var("GRASP_BENCH_TLS_CA") {
        // TLS backend: a node certificate from the CA in `dir` (grasp-ca init).
        let dir = std::path::PathBuf::from(dir);
        let (crt, key) = grasp_tls::certs::ca_paths(&dir);
        let ca =
            std::fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
        let ca_key =
            std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        let name = format!("bench-{}.lab", std::process::id());
        let (cert, nkey) = grasp_tls::certs::issue_node(&ca, &ca_key, &name, 1)?;
        let id =
            grasp_tls::NodeIdentity::from_pem(&cert, &nkey, &ca, std::time::SystemTime::now())?;
        let b = grasp_tools::backend::bind(cfg, Spec::Tls(Box::new(id))).await?;
        println!("TLS backend, node {name}");
        return Ok((b.transport, b.inbound));
    }
    let spec = if quads {
        Spec::Quads(Box::new(bench_ring()))
    } else {
        Spec::None
    };
    let b = grasp_tools::backend::bind(cfg, spec).await?;
    Ok((b.transport, b.inbound))
}

fn bench_config() -> Config {
    let mut c = Config::default();
    // The plain ACP has no security; this is a lab.
    c.allow_insecure = true;
    c.max_channels = 100_000;
    // One client discovers as fast as it can: measure the engine, not the
    // per-source response budget that guards against storms.
    c.response_per_source = c.response_rate;
    c
}

const BARE_REQ: [u8; 22] = [0xa5; 22];

async fn serve(
    mode: Kind,
    iface: String,
    port: u16,
    run: Duration,
    negotiate: Option<u32>,
    quads: bool,
) -> Result<()> {
    let served = Arc::new(AtomicU64::new(0));
    // Holds the engine's handles for the run: it stops when they are gone.
    let mut keep = None;
    match mode {
        Kind::Bare => {
            let l = tokio::net::TcpListener::bind(("::", port)).await?;
            let served = served.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok((mut s, _)) = l.accept().await {
                    let served = served.clone();
                    tokio::spawn(async move {
                        let _ = s.set_nodelay(true);
                        let mut buf = [0u8; 64];
                        let mut got = 0;
                        while got < BARE_REQ.len() {
                            match s.read(&mut buf[got..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        if s.write_all(&BARE_REQ).await.is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        // Dropping the stream closes it: the server closes
                        // first, as a GRASP responder does.
                    });
                }
            });
            println!("bare server on port {port}, idle RSS {} KiB", rss_kib());
        }
        Kind::Grasp => {
            let (t, inbound) = bind_node(
                grasp_acp::plain::Config::default()
                    .interfaces([iface.as_str()])
                    .port(port),
                quads,
            )
            .await?;
            let g = Grasp::start(t.clone(), inbound, bench_config());
            let asa = g.register_asa("bench-server").await?;
            if let Some(steps) = negotiate {
                let o = bench_objective(3)?;
                asa.register_objective(&o, RegisterOptions::default())
                    .await?;
                let listener = asa.listen_negotiate("EX.bench").await?;
                for _ in 0..64 {
                    let listener = listener.clone();
                    tokio::spawn(async move {
                        while let Some((mut session, mut req)) = listener.next().await {
                            let mut left = steps;
                            loop {
                                if left == 0 {
                                    let _ = session.accept().await;
                                    break;
                                }
                                left -= 1;
                                match session.step(&req, Duration::from_secs(5)).await {
                                    Ok(Negotiation::Step {
                                        session: s,
                                        objective,
                                    }) => {
                                        session = s;
                                        req = objective;
                                    }
                                    _ => break,
                                }
                            }
                        }
                    });
                }
            } else {
                let o = bench_objective(5)?;
                asa.register_objective(&o, RegisterOptions::default())
                    .await?;
                asa.listen_synchronize(&o).await?;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            println!("grasp server on port {port}, idle RSS {} KiB", rss_kib());
            keep = Some((g, asa, t));
        }
    }
    // CPU per request counts from here, when either server is ready, to the
    // end of the run: not the engine's start, and no wake-ups of the bench's
    // own (the engine answers without the ASA; its accepted channels are
    // counted once, at the end).
    let cpu0 = cpu_time();
    tokio::time::sleep(run).await;
    if let Some((g, _, t)) = &keep {
        served.store(t.stats().channels_accepted, Ordering::Relaxed);
        let (stats, open) = g.stats().await?;
        println!("engine: {open} channels open at the end; {stats:?}");
    }
    drop(keep);
    let cpu = cpu_time() - cpu0;
    let n = served.load(Ordering::Relaxed);
    println!(
        "{mode:?} server served {n}, cpu {:.3} s = {:.1} ms per 1000, RSS {} KiB",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        rss_kib()
    );
    Ok(())
}

/// One negotiation: request, then accept whatever the server counters with
/// after answering each counter-offer with a step of our own until the
/// server accepts.
async fn negotiate_once(asa: &grasp_engine::Asa, o: &Objective, peer: &AsaLocator) -> bool {
    let t = Duration::from_secs(5);
    let mut out = asa.request_negotiate(o, Some(peer.clone()), t).await;
    loop {
        match out {
            Ok(Negotiation::Accepted) => return true,
            Ok(Negotiation::Step { session, objective }) => out = session.step(&objective, t).await,
            _ => return false,
        }
    }
}

async fn bare_request(peer: std::net::SocketAddr) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(peer).await?;
    s.set_nodelay(true)?;
    s.write_all(&BARE_REQ).await?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    // Read the reply, then to EOF: the server closes first (no TIME_WAIT here).
    loop {
        match s.read(&mut buf[got.min(63)..]).await? {
            0 => break,
            n => got += n,
        }
    }
    if got < BARE_REQ.len() {
        bail!("short reply");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// Discoveries the client times before its run.
#[derive(Clone, Copy, Debug)]
struct Discoveries {
    /// How many (0: none).
    count: usize,
    /// Answered from the cache (after one that fills it), not flushed.
    cached: bool,
}

/// Times `d.count` first-answer discoveries of the bench objective.
async fn time_discoveries(asa: &grasp_engine::Asa, d: Discoveries, how: &str) -> Result<()> {
    let o = bench_objective(5)?;
    let opts = grasp_engine::DiscoverOptions {
        flush: !d.cached,
        ..grasp_engine::DiscoverOptions::first(Duration::from_secs(1))
    };
    if d.cached && asa.discover(&o, opts).await?.is_empty() {
        bail!("discovery found nothing");
    }
    let mut times = Vec::with_capacity(d.count);
    for _ in 0..d.count {
        let t0 = Instant::now();
        let found = asa.discover(&o, opts).await?;
        times.push(t0.elapsed());
        if found.is_empty() {
            bail!("discovery found nothing");
        }
    }
    times.sort();
    println!(
        "discover {how} (first answer, {}) x{}: median {:?}, p99 {:?}, max {:?}",
        if d.cached {
            "from the cache"
        } else {
            "cache flushed"
        },
        d.count,
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn client(
    mode: Kind,
    iface: String,
    peer: std::net::SocketAddr,
    run: Duration,
    concurrency: usize,
    discoveries: Discoveries,
    api: Option<std::path::PathBuf>,
    negotiate: bool,
    quads: bool,
    rate: u64,
) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut grasp_asa = None;
    let how = if api.is_some() {
        "through graspd's ASA socket"
    } else {
        "in process"
    };
    if mode == Kind::Grasp {
        let g = match &api {
            Some(path) => grasp_asa_api::client::connect(path).await?,
            None => {
                let (t, inbound) = bind_node(
                    grasp_acp::plain::Config::default().interfaces([iface.as_str()]),
                    quads,
                )
                .await?;
                Grasp::start(t, inbound, bench_config())
            }
        };
        let asa = g.register_asa("bench-client").await?;
        if discoveries.count > 0 {
            time_discoveries(&asa, discoveries, how).await?;
        }
        grasp_asa = Some(asa);
    } else if api.is_some() {
        bail!("--api needs --mode grasp");
    }
    let o = bench_objective(if negotiate { 3 } else { 5 })?;
    let std::net::IpAddr::V6(addr) = peer.ip() else {
        bail!("IPv6 peer expected")
    };
    let mut locator = AsaLocator::new(grasp_engine::wire::Locator::tcp6(addr, peer.port()));
    if peer.port() == 0 {
        // Port 0: find the peer by discovery (e.g. a graspy responder,
        // whose objective port is dynamic).
        let Some(asa) = &grasp_asa else {
            bail!("--port 0 needs --mode grasp")
        };
        let found = asa
            .discover(
                &o,
                grasp_engine::DiscoverOptions::first(Duration::from_secs(3)),
            )
            .await?;
        let Some(first) = found.into_iter().next() else {
            bail!("discovery found no peer for EX.bench")
        };
        println!("discovered {}", first.locator);
        locator = first;
    }
    let cpu0 = cpu_time();
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (done, errors, lat) = (done.clone(), errors.clone(), lat.clone());
        let asa = grasp_asa.clone();
        let (o, locator) = (o.clone(), locator.clone());
        // Each requester's share of the rate: its k-th request not before
        // start + k × gap (tokio's timer has 1 ms steps, so they leave in
        // small bursts; the average is the rate).
        let gap = (rate > 0).then(|| {
            Duration::from_secs(concurrency as u64) / u32::try_from(rate).unwrap_or(u32::MAX)
        });
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(1 << 16);
            let mut k = 0u32;
            while Instant::now() < deadline {
                if let Some(gap) = gap {
                    k += 1;
                    let due = start + gap * k;
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let t0 = Instant::now();
                let ok = match &asa {
                    Some(asa) if negotiate => negotiate_once(asa, &o, &locator).await,
                    Some(asa) => asa
                        .synchronize(&o, Some(locator.clone()), Duration::from_secs(5))
                        .await
                        .is_ok(),
                    None => bare_request(peer).await.is_ok(),
                };
                if ok {
                    mine.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
        }));
    }
    let tenth = run / 10;
    let mut samples = vec![0u64];
    for i in 1..=10 {
        tokio::time::sleep_until((start + tenth * i).into()).await;
        samples.push(done.load(Ordering::Relaxed));
    }
    for t in tasks {
        t.await?;
    }
    let total = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    let first = (samples[1] - samples[0]) as f64 / tenth.as_secs_f64();
    let last = (samples[10] - samples[9]) as f64 / tenth.as_secs_f64();
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: usize| {
        l.get(l.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{mode:?} client {how}, {concurrency} requester(s): {total} in {secs:.2} s = {:.0}/s; first 10% {first:.0}/s, last 10% {last:.0}/s, last/first {:.3}; p50 {} us, p99 {} us; client cpu {:.1} ms per 1000; errors {}",
        total as f64 / secs,
        last / first.max(1.0),
        pct(50),
        pct(99),
        cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Synchronizations a second by one requester on `asa` for `run`.
async fn sync_rate(asa: &grasp_engine::Asa, peer: &AsaLocator, run: Duration) -> Result<f64> {
    let o = bench_objective(5)?;
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < run {
        asa.synchronize(&o, Some(peer.clone()), Duration::from_secs(5))
            .await?;
        n += 1;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn api_crowd(
    api: std::path::PathBuf,
    pid: u32,
    clients: usize,
    peer: std::net::SocketAddr,
    run: Duration,
) -> Result<()> {
    grasp_tools::node::raise_open_files(clients as u64);
    let std::net::IpAddr::V6(addr) = peer.ip() else {
        bail!("IPv6 peer expected")
    };
    let peer = AsaLocator::new(grasp_engine::wire::Locator::tcp6(addr, peer.port()));
    let me = grasp_asa_api::client::connect(&api).await?;
    let asa = me.register_asa("bench-measurer").await?;
    let pid = pid.to_string();
    let rss_alone = rss_kib_of(&pid);
    sync_rate(&asa, &peer, Duration::from_millis(500)).await?; // warm-up
    let alone = sync_rate(&asa, &peer, run).await?;
    let mut crowd = Vec::with_capacity(clients);
    let t0 = Instant::now();
    for i in 0..clients {
        let g = grasp_asa_api::client::connect(&api)
            .await
            .with_context(|| format!("client {i}"))?;
        let a = g.register_asa(&format!("crowd-{i}")).await?;
        let o = Objective::new(format!("EX.crowd.{i}"), ObjectiveFlags::from_bits(5));
        a.register_objective(&o, RegisterOptions::default()).await?;
        crowd.push((g, a));
    }
    let connect = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_crowd = rss_kib_of(&pid);
    let with = sync_rate(&asa, &peer, run).await?;
    println!(
        "graspd with {clients} ASA clients (each an ASA and an objective; connected in {connect:.2?}): RSS {:.1} MiB (alone {:.1} MiB, {:.1} KiB per client)",
        rss_crowd as f64 / 1024.0,
        rss_alone as f64 / 1024.0,
        (rss_crowd.saturating_sub(rss_alone)) as f64 / clients.max(1) as f64
    );
    println!(
        "another client's synchronizations through graspd: alone {alone:.0}/s, with {clients} clients {with:.0}/s = {:.1}%",
        100.0 * with / alone.max(1.0)
    );
    drop(crowd);
    Ok(())
}

async fn unix_echo(socket: std::path::PathBuf, serve: bool, count: usize) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 64];
    if serve {
        let _ = std::fs::remove_file(&socket);
        let l = tokio::net::UnixListener::bind(&socket)?;
        let (mut s, _) = l.accept().await?;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        return Ok(());
    }
    let mut s = tokio::net::UnixStream::connect(&socket).await?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        s.write_all(&[0x84; 40]).await?;
        let mut got = 0;
        while got < 40 {
            let n = s.read(&mut buf[got..]).await?;
            if n == 0 {
                bail!("the echo server went away");
            }
            got += n;
        }
        times.push(t0.elapsed());
    }
    times.sort();
    println!(
        "bare Unix-socket echo between two processes (tokio, 40 bytes) x{count}: median {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    Ok(())
}

/// A plain-ACP node with room for many open sessions.
async fn hold_node(iface: &str, port: u16) -> Result<(Arc<grasp_acp::plain::Transport>, Grasp)> {
    grasp_tools::node::raise_open_files(0);
    let (t, inbound) = grasp_acp::plain::bind(
        grasp_acp::plain::Config::default()
            .interfaces([iface])
            .port(port)
            .admission(grasp_acp::slots::Admission {
                max: 200_000,
                per_source: 200_000,
                ..Default::default()
            }),
    )
    .await?;
    Ok((t.clone(), Grasp::start(t, inbound, bench_config())))
}

async fn hold_serve(iface: String, port: u16, run: Duration) -> Result<()> {
    let (_t, g) = hold_node(&iface, port).await?;
    let asa = g.register_asa("hold-server").await?;
    let o = bench_objective(3)?;
    asa.register_objective(&o, RegisterOptions::default())
        .await?;
    let listener = asa.listen_negotiate("EX.bench").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_kib();
    println!("hold server on port {port}, idle RSS {idle} KiB");
    // Each request gets a counter-offer whose answer we wait for (600 s):
    // the session stays open on both ends. The parked task is part of what
    // an ASA holding a session costs, so it is counted.
    tokio::spawn(async move {
        while let Some((session, req)) = listener.next().await {
            tokio::spawn(async move { session.step(&req, Duration::from_secs(600)).await });
        }
    });
    let deadline = tokio::time::Instant::now() + run;
    let mut peak = (0usize, idle);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, open) = g.stats().await?;
        if open > peak.0 {
            peak = (open, rss_kib());
        }
    }
    let (open, rss) = peak;
    println!(
        "hold server: peak {open} open sessions, RSS {rss} KiB, {:.2} KiB per session",
        rss.saturating_sub(idle) as f64 / open.max(1) as f64
    );
    Ok(())
}

async fn hold_client(iface: String, peer: std::net::SocketAddr, n: usize) -> Result<()> {
    let (_t, g) = hold_node(&iface, 0).await?;
    let asa = g.register_asa("hold-client").await?;
    let o = bench_objective(3)?;
    asa.register_objective(&o, RegisterOptions::default())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_kib();
    let std::net::IpAddr::V6(addr) = peer.ip() else {
        bail!("IPv6 peer expected")
    };
    let locator = AsaLocator::new(grasp_engine::wire::Locator::tcp6(addr, peer.port()));
    let mut held = Vec::with_capacity(n);
    let t0 = Instant::now();
    // A burst can overflow the server's listener queue (bounded: the request
    // is then refused); retry those, within a bound.
    let mut refused = 0;
    while held.len() < n {
        match asa
            .request_negotiate(&o, Some(locator.clone()), Duration::from_secs(600))
            .await
        {
            Ok(Negotiation::Step { session, .. }) => held.push(session),
            Ok(other) => bail!("expected a counter-offer, got {other:?}"),
            Err(e) if refused < n => {
                refused += 1;
                tracing::debug!(error = %e, "refused; retrying");
            }
            Err(e) => bail!("{refused} refusals, the last: {e}"),
        }
    }
    let rss = rss_kib();
    let (_, open) = g.stats().await?;
    println!(
        "hold client: {n} sessions opened in {:.2} s ({refused} refused and retried), {open} open; idle RSS {idle} KiB, now {rss} KiB, {:.2} KiB per session",
        t0.elapsed().as_secs_f64(),
        rss.saturating_sub(idle) as f64 / n.max(1) as f64
    );
    // Keep them open while the server samples, then end them all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    Ok(())
}

/// RSS of two idle engines, then with `n` negotiation sessions held open on
/// both sides (fabric, one process).
async fn memory(n: usize) -> Result<()> {
    let before = rss_kib();
    let f = Fabric::new(1);
    let l = f.link("l", LinkConfig::default());
    let node = |name: &str| {
        f.node(name)
            .attach(&l)
            .max_inbound_connections(n + 10)
            .bind()
    };
    let (ta, ia) = node("A");
    let (tb, ib) = node("B");
    let mut cfg = Config::default();
    cfg.max_channels = n + 100;
    // The fabric has no security: negotiating over it is a lab.
    cfg.allow_insecure = true;
    let a = Grasp::start(ta, ia, cfg.clone());
    let b = Grasp::start(tb.clone(), ib, cfg);
    let server = b.register_asa("server").await?;
    let client = a.register_asa("client").await?;
    let o = bench_objective(3)?;
    server
        .register_objective(&o, RegisterOptions::default())
        .await?;
    let listener = server.listen_negotiate("EX.bench").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle = rss_kib();
    println!("process before engines: {before} KiB; two idle engines on the fabric: {idle} KiB");
    // The server answers each request with a counter-offer; both sides keep
    // their sessions open.
    let o2 = o.clone();
    let held_server = tokio::spawn(async move {
        let mut held = Vec::with_capacity(n);
        while let Some((session, req)) = listener.next().await {
            let counter = o2.clone().with_loop_count(req.loop_count);
            // The client never answers; park the pending step.
            held.push(tokio::spawn(async move {
                session.step(&counter, Duration::from_secs(600)).await
            }));
        }
        held
    });
    let peer = AsaLocator::new(tb.node_locator());
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match client
            .request_negotiate(&o, Some(peer.clone()), Duration::from_secs(600))
            .await?
        {
            Negotiation::Step { session, .. } => held.push(session),
            other => bail!("expected a counter-offer, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let loaded = rss_kib();
    println!(
        "{n} open negotiation sessions, both ends in this process: {loaded} KiB, {:.2} KiB per session (both ends together)",
        loaded.saturating_sub(idle) as f64 / n as f64
    );
    drop(held);
    held_server.abort();
    Ok(())
}

/// Two engines on one fabric link, B serving `EX.bench` (synchronization,
/// or negotiation with an immediate accept), plain (treated as secured) or
/// under QUADS; what a requester on A needs.
struct FabricPair {
    client: grasp_engine::Asa,
    peer: AsaLocator,
    o: Objective,
    /// Keeps the engines running.
    _keep: (Grasp, Grasp, grasp_engine::Asa),
}

async fn fabric_pair(negotiate: bool, quads: bool) -> Result<FabricPair> {
    let f = Fabric::new(1);
    let l = f.link("l", LinkConfig::default());
    let mut cfg = Config::default();
    cfg.max_channels = 100_000;
    // Without QUADS the engine needs to be told to treat the fabric as
    // secured for synchronization.
    cfg.allow_insecure = !quads;
    let node = |name: &str| {
        let b = f.node(name).attach(&l).max_inbound_connections(100_000);
        let spec = if quads {
            Spec::Quads(Box::new(bench_ring()))
        } else {
            Spec::None
        };
        grasp_tools::backend::bind(b, spec)
    };
    let na = node("A").await?;
    let nb = node("B").await?;
    let (ta, ia) = (na.transport, na.inbound);
    let (tb, ib) = (nb.transport, nb.inbound);
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

    Ok(FabricPair {
        client,
        peer,
        o,
        _keep: (a, b, server),
    })
}

async fn fabric(run: Duration, concurrency: usize, negotiate: bool, quads: bool) -> Result<f64> {
    let FabricPair {
        client,
        peer,
        o,
        _keep,
    } = fabric_pair(negotiate, quads).await?;
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
        "fabric{}, 1 core, {concurrency} requester(s): {total} {what} in {secs:.2} s = {:.0}/s; first 10% {first:.0}/s, last 10% {last:.0}/s, last/first {:.3}; errors {}",
        if quads { " under QUADS" } else { "" },
        total as f64 / secs,
        last / first.max(1.0),
        errors.load(Ordering::Relaxed)
    );
    if total == 0 {
        bail!("nothing completed");
    }
    Ok(total as f64 / secs)
}

/// Counts of one kind of soak operation.
#[derive(Default)]
struct SoakCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// The soak's operations, in the proportions of `soak_op`.
const SOAK_OPS: [&str; 3] = ["negotiate", "synchronize", "discover"];

/// The soak operation for tick `i`: 9 of 20 negotiations, 9 of 20
/// synchronizations, 2 of 20 discoveries.
fn soak_op(i: u64) -> usize {
    match i % 20 {
        0..=8 => 0,
        9..=17 => 1,
        _ => 2,
    }
}

async fn soak(
    iface: String,
    pid: u32,
    minutes: u64,
    rate: u32,
    in_flight: usize,
    max_growth_kib: u64,
) -> Result<()> {
    let pid = pid.to_string();
    if rss_kib_of(&pid) == 0 {
        bail!("no process {pid} to watch (--pid is graspd's process id)");
    }
    let (t, inbound) = bind_node(
        grasp_acp::plain::Config::default().interfaces([iface.as_str()]),
        false,
    )
    .await?;
    let g = Grasp::start(t, inbound, bench_config());
    let asa = Arc::new(g.register_asa("soak").await?);
    let sync = Objective::new("EX2", ObjectiveFlags::from_bits(5));
    let loan = Objective::new("EX3", ObjectiveFlags::from_bits(3))
        .with_loop_count(6)
        .with_value(Value::from_serialize(&("NZD", 40))?);
    let found = asa
        .discover(
            &sync,
            grasp_engine::DiscoverOptions::first(Duration::from_secs(3)),
        )
        .await?;
    if found.is_empty() {
        bail!("no graspd with Briggs answered a discovery of EX2 (asas = [\"briggs\"])");
    }
    let counts: Arc<[SoakCounts; 3]> = Arc::new(Default::default());
    let skipped = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let step = Duration::from_secs(1) / rate;
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rss = vec![rss_kib_of(&pid)];
    println!(
        "soak: {rate} operations/s for {minutes} min, graspd {pid} at {} KiB",
        rss[0]
    );
    let mut i = 0u64;
    let mut next_minute = t0 + Duration::from_secs(60);
    while rss.len() <= minutes as usize {
        tick.tick().await;
        i += 1;
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (asa, counts) = (asa.clone(), counts.clone());
                let (sync, loan) = (sync.clone(), loan.clone());
                let op = soak_op(i);
                tokio::spawn(async move {
                    let t = Duration::from_secs(3);
                    let ok = match op {
                        0 => matches!(
                            asa.request_negotiate(&loan, None, t).await,
                            Ok(Negotiation::Accepted)
                        ),
                        1 => asa.synchronize(&sync, None, t).await.is_ok(),
                        _ => asa
                            .discover(
                                &sync,
                                grasp_engine::DiscoverOptions {
                                    flush: true,
                                    ..grasp_engine::DiscoverOptions::first(t)
                                },
                            )
                            .await
                            .is_ok_and(|f| !f.is_empty()),
                    };
                    let c = &counts[op];
                    if ok { &c.ok } else { &c.failed }.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            Err(_) => {
                skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if Instant::now() >= next_minute {
            next_minute += Duration::from_secs(60);
            rss.push(rss_kib_of(&pid));
            let ops = SOAK_OPS
                .iter()
                .zip(counts.iter())
                .map(|(n, c)| {
                    format!(
                        "{n} {} ok {} failed",
                        c.ok.load(Ordering::Relaxed),
                        c.failed.load(Ordering::Relaxed)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "minute {:2}: graspd RSS {} KiB; {ops}; {} ticks skipped",
                rss.len() - 1,
                rss[rss.len() - 1],
                skipped.load(Ordering::Relaxed)
            );
        }
    }
    let last = rss[rss.len() - 1];
    let growth = last as i64 - rss[2] as i64;
    let total: u64 = counts
        .iter()
        .map(|c| c.ok.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed))
        .sum();
    let failed: u64 = counts
        .iter()
        .map(|c| c.failed.load(Ordering::Relaxed))
        .sum();
    println!(
        "soak: {total} operations ({failed} failed) in {:.0} s; graspd RSS minute 2 {} KiB, minute {minutes} {last} KiB: growth {growth} KiB (allowed {max_growth_kib})",
        t0.elapsed().as_secs_f64(),
        rss[2],
    );
    if failed * 100 > total {
        bail!("{failed} of {total} operations failed: the load was not served");
    }
    if growth > max_growth_kib as i64 {
        bail!(
            "graspd's RSS grew {growth} KiB between minute 2 and minute {minutes} at constant load"
        );
    }
    Ok(())
}
