//! A scriptable GRASP node over the plain ACP, for trying the engine against
//! another implementation (graspy) by hand inside network namespaces.
//!
//! Each subcommand runs one node on the given interfaces, does one thing, and
//! prints what happened. Values are integers on the wire (what graspy ASAs
//! exchange in its own tests); received values print in CBOR diagnostic
//! notation.
//!
//! ```text
//! # relay between two links, no ASAs (graspy's gremlin)
//! lab_peer --iface ra --iface rc relay --seconds 60
//! # flood EX.news = 7 with loop count 3, ttl 60 s, then stay up 10 s
//! lab_peer --iface ab flood EX.news 7 --loop-count 3
//! # wait up to 10 s for a flood of EX.news to arrive and print every copy
//! lab_peer --iface ab get-flood EX.news
//! # discover (first answer), then synchronize
//! lab_peer --iface ab discover EX.bench --first
//! lab_peer --iface ab sync EX.bench
//! # serve EX.bench = 5 for synchronization
//! lab_peer --iface ab serve-sync EX.bench 5
//! # answer negotiations: ask for a wait, then decline with a reason
//! lab_peer --iface ab neg-listen EX.price --wait-ms 2000 --decline "too dear"
//! # request one: accept the peer's counter-offer, or decline it
//! lab_peer --iface ab neg-request EX.price 10 [--decline "no thanks"]
//! ```
//! Only ever run it inside namespaces you created: it multicasts on every
//! interface it is given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use grasp_engine::api::{Grasp, Negotiation};
use grasp_engine::proto::{Config, DiscoverOptions, RegisterOptions};
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, TaggedObjective, Value};

#[derive(Parser, Debug)]
#[command(about = "A scriptable GRASP node over the plain ACP (lab use, inside namespaces)")]
struct Args {
    /// Interfaces to run on (repeat the flag for several).
    #[arg(long = "iface", required = true)]
    ifaces: Vec<String>,
    /// TCP port for this node's listener (0: any).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Security: none, quads (AES-GCM, ours) or quads-legacy (graspy's).
    #[arg(long, default_value = "none")]
    security: String,
    /// The QUADS domain password (with --security quads or quads-legacy).
    #[arg(long, env = "GRASP_QUADS_PASSWORD")]
    password: Option<String>,
    /// The QUADS domain name (with --security quads and a password).
    #[arg(long, default_value = "lab")]
    domain: String,
    /// A key file instead of the password: quadsmaker's (with --security
    /// quads) or graspy's quadsk.py (with --security quads-legacy). Refused
    /// when others can read it.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Relay discoveries and floods between the interfaces; no ASAs.
    Relay {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Flood an integer value, then stay up.
    Flood {
        /// Objective name.
        name: String,
        /// Its value.
        value: i64,
        /// Loop count (1: this link only).
        #[arg(long, default_value_t = 6)]
        loop_count: u8,
        /// Time to live, ms.
        #[arg(long, default_value_t = 60_000)]
        ttl_ms: u32,
        /// Tag the flood with `::` (this link's link-local address, loop count 1) and our port.
        #[arg(long)]
        link_local_tag: bool,
        /// How long to stay up afterwards.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Wait for floods of an objective and print every copy.
    GetFlood {
        /// Objective name.
        name: String,
        /// How long to wait for the first copy.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Discover an objective and print the locators found.
    Discover {
        /// Objective name.
        name: String,
        /// Return on the first answer.
        #[arg(long)]
        first: bool,
        /// Loop count of the discovery.
        #[arg(long, default_value_t = 6)]
        loop_count: u8,
        /// Tries (a graspy relay answers only on a repeat).
        #[arg(long, default_value_t = 1)]
        tries: u32,
    },
    /// Synchronize an objective (flood cache, then discovery and M_REQ_SYN).
    Sync {
        /// Objective name.
        name: String,
    },
    /// Serve an integer value for synchronization.
    ServeSync {
        /// Objective name.
        name: String,
        /// Its value.
        value: i64,
        /// How long to serve.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Answer negotiation requests: optionally ask for a wait first, then
    /// accept, decline, or counter-offer once.
    NegListen {
        /// Objective name.
        name: String,
        /// Send M_NEGOTIATE with O_WAITING for this long first.
        #[arg(long)]
        wait_ms: Option<u64>,
        /// Decline with this reason (else accept).
        #[arg(long)]
        decline: Option<String>,
        /// Counter-offer this value once before ending.
        #[arg(long)]
        counter: Option<i64>,
        /// Sessions to serve before exiting.
        #[arg(long, default_value_t = 1)]
        sessions: u32,
        /// Give up after this long.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Request a negotiation; accept (or decline) what the peer proposes.
    NegRequest {
        /// Objective name.
        name: String,
        /// Our offer.
        value: i64,
        /// Decline the peer's counter-offer with this reason.
        #[arg(long)]
        decline: Option<String>,
        /// Session timeout.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

const SYNCH: u64 = ObjectiveFlags::SYNCH.bits();

fn objective(name: &str, flags: u64, value: i64) -> Objective {
    Objective::new(name, ObjectiveFlags::from_bits(flags)).with_value(Value::from(value))
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "(none)".to_string(), Value::to_string)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let plain = grasp_acp::plain::Config::default()
        .interfaces(args.ifaces.iter().map(String::as_str))
        .port(args.port);
    let password = || {
        grasp_quads::Password::new(args.password.clone().unwrap_or_default())
            .context("--password (or GRASP_QUADS_PASSWORD) is needed with QUADS")
    };
    let (transport, inbound): (Arc<dyn AcpTransport>, _) = match args.security.as_str() {
        "none" => {
            let (t, i) = grasp_acp::plain::bind(plain)
                .await
                .context("binding the plain ACP")?;
            (t, i)
        }
        "quads" => {
            let key = match &args.key_file {
                Some(f) => grasp_quads::read_key_file(f)?.key(),
                None => grasp_quads::DomainKey::from_password(
                    &password()?,
                    &args.domain,
                    grasp_quads::KdfParams::default(),
                )?,
            };
            println!("QUADS key id {}", key.id());
            let (t, i) = grasp_quads::bind_plain(
                plain,
                grasp_quads::KeyRing::new(key),
                grasp_quads::QuadsConfig::default(),
            )
            .await?;
            (t, i)
        }
        "quads-legacy" => {
            let key = match &args.key_file {
                Some(f) => grasp_quads::legacy::read_quadsk(f)?,
                None => grasp_quads::legacy::LegacyKey::from_password(&password()?),
            };
            let (t, i) = grasp_quads::legacy::bind_plain_legacy(plain, key).await?;
            (t, i)
        }
        other => bail!("--security {other:?}: use none, quads or quads-legacy"),
    };
    let mut config = Config::default();
    // The plain ACP has no security: this is a lab.
    config.allow_insecure = true;
    config.relay = Some(matches!(args.cmd, Cmd::Relay { .. }) || args.ifaces.len() > 1);
    let grasp = Grasp::start(transport.clone(), inbound, config);
    let asa = grasp.register_asa("lab-peer").await?;
    let port = match transport.node_locator() {
        Locator::Ipv6 { port, .. } => port,
        _ => 0,
    };
    println!(
        "node on {:?} ({}), TCP port {port}",
        args.ifaces,
        transport.security()
    );
    match args.cmd {
        Cmd::Relay { seconds } => {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        Cmd::Flood {
            name,
            value,
            loop_count,
            ttl_ms,
            link_local_tag,
            seconds,
        } => {
            let o = objective(&name, SYNCH, value).with_loop_count(loop_count);
            asa.register_objective(&o, RegisterOptions::default())
                .await?;
            let locator =
                link_local_tag.then(|| Locator::tcp6(std::net::Ipv6Addr::UNSPECIFIED, port));
            asa.flood(
                ttl_ms,
                vec![TaggedObjective {
                    objective: o,
                    locator,
                }],
            )
            .await?;
            println!("flooded {name} = {value}, loop count {loop_count}, ttl {ttl_ms} ms");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        Cmd::GetFlood { name, seconds } => {
            let start = Instant::now();
            loop {
                let got = asa.get_flood(&name).await?;
                if !got.is_empty() {
                    for e in got {
                        println!(
                            "flood {} = {} loop count {} from {} tag {:?} (ifindex {}) after {:?}",
                            e.objective.name,
                            show(&e.objective.value),
                            e.objective.loop_count,
                            e.initiator,
                            e.locator,
                            e.ifindex,
                            start.elapsed()
                        );
                    }
                    break;
                }
                if start.elapsed() > Duration::from_secs(seconds) {
                    bail!("no flood of {name} within {seconds} s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Cmd::Discover {
            name,
            first,
            loop_count,
            tries,
        } => {
            let o = objective(&name, SYNCH, 0).with_loop_count(loop_count);
            for t in 1..=tries {
                let start = Instant::now();
                let opts = DiscoverOptions {
                    first_only: first,
                    ..DiscoverOptions::default()
                };
                let found = asa.discover(&o, opts).await?;
                println!(
                    "try {t}: {} locator(s) after {:?}",
                    found.len(),
                    start.elapsed()
                );
                for l in &found {
                    println!(
                        "  {:?} ifindex {} diverted {}",
                        l.locator, l.ifindex, l.diverted
                    );
                }
                if !found.is_empty() {
                    break;
                }
            }
        }
        Cmd::Sync { name } => {
            let o = objective(&name, SYNCH, 0);
            let start = Instant::now();
            let got = asa.synchronize(&o, None, Duration::from_secs(5)).await?;
            println!(
                "synchronized {name} = {} after {:?}",
                show(&got.value),
                start.elapsed()
            );
        }
        Cmd::ServeSync {
            name,
            value,
            seconds,
        } => {
            asa.register_objective(&objective(&name, SYNCH, value), RegisterOptions::default())
                .await?;
            asa.listen_synchronize(&objective(&name, SYNCH, value))
                .await?;
            println!("serving {name} = {value}");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        Cmd::NegListen {
            name,
            wait_ms,
            decline,
            counter,
            sessions,
            seconds,
        } => {
            let neg = ObjectiveFlags::NEG.bits();
            asa.register_objective(&objective(&name, neg, 0), RegisterOptions::default())
                .await?;
            let listener = asa.listen_negotiate(&name).await?;
            println!("listening for {name}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
            for _ in 0..sessions {
                let Ok(Some((mut session, req))) =
                    tokio::time::timeout_at(deadline, listener.next()).await
                else {
                    bail!("no request within {seconds} s");
                };
                println!(
                    "request from {:?}: {} = {} loop count {}",
                    session.peer(),
                    req.name,
                    show(&req.value),
                    req.loop_count
                );
                if let Some(ms) = wait_ms {
                    session.wait(Duration::from_millis(ms)).await?;
                    println!("  sent wait {ms} ms");
                    tokio::time::sleep(Duration::from_millis(ms / 2)).await;
                }
                if let Some(v) = counter {
                    let mut offer = req.clone();
                    offer.value = Some(Value::from(v));
                    match session.step(&offer, Duration::from_secs(5)).await? {
                        Negotiation::Accepted => {
                            println!("  counter-offer {v}: peer accepted");
                            continue;
                        }
                        Negotiation::Declined { reason } => {
                            println!("  counter-offer {v}: peer declined: {reason:?}");
                            continue;
                        }
                        Negotiation::Step {
                            session: s,
                            objective,
                        } => {
                            println!(
                                "  counter-offer {v}: peer proposed {} loop count {}",
                                show(&objective.value),
                                objective.loop_count
                            );
                            session = s;
                        }
                    }
                }
                match &decline {
                    Some(reason) => {
                        session.decline(Some(reason)).await?;
                        println!("  declined: {reason:?}");
                    }
                    None => {
                        session.accept().await?;
                        println!("  accepted");
                    }
                }
            }
        }
        Cmd::NegRequest {
            name,
            value,
            decline,
            timeout_ms,
        } => {
            let neg = ObjectiveFlags::NEG.bits();
            let o = objective(&name, neg, value);
            asa.register_objective(&o, RegisterOptions::default())
                .await?;
            let start = Instant::now();
            let timeout = Duration::from_millis(timeout_ms);
            match asa.request_negotiate(&o, None, timeout).await? {
                Negotiation::Accepted => println!("accepted at once after {:?}", start.elapsed()),
                Negotiation::Declined { reason } => {
                    println!("declined after {:?}: {reason:?}", start.elapsed())
                }
                Negotiation::Step { session, objective } => {
                    println!(
                        "peer {:?} proposed {} loop count {} after {:?}",
                        session.peer(),
                        show(&objective.value),
                        objective.loop_count,
                        start.elapsed()
                    );
                    match decline {
                        Some(r) => {
                            session.decline(Some(&r)).await?;
                            println!("declined: {r:?}");
                        }
                        None => {
                            session.accept().await?;
                            println!("accepted");
                        }
                    }
                }
            }
        }
    }
    let s = transport.stats();
    println!("transport: {s:?}");
    Ok(())
}
