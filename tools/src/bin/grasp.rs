//! grasp: a dig for GRASP. Each command does one thing, prints the result
//! and exits. Like dig with the system's resolver, it uses a running
//! graspd's GRASP core (its node, cache and keys) through graspd's ASA
//! socket when one is given (`--api SOCKET` or `GRASP_API_SOCKET`), or
//! found at the default path (`/run/graspd/api.sock`) while no node flags
//! are given; otherwise (or with `--no-api`) it runs a short-lived node of
//! its own, with the same backend flags and configuration file as graspd.
//! `watch` always listens for itself.
//!
//! ```text
//! grasp --security none -i eth0 discover EX.demo
//! grasp --key-file domain.key sync EX.demo [--peer '[fd00::2]:7017']
//! grasp --key-file domain.key flood EX.news '"hello"' --ttl 60000
//! grasp --key-file domain.key get-flood EX.news --wait 10
//! grasp --key-file domain.key negotiate EX.price '["NZD", 100]'
//! grasp --key-file domain.key listen-negotiate EX.price --counter '["NZD", 90]'
//! grasp --key-file domain.key serve-sync EX.demo '{"a": 1}' --seconds 60
//! grasp --key-file domain.key watch --seconds 30
//! grasp --api /run/graspd/api.sock discover EX.demo   # through a running graspd
//! grasp decode 8304...            # or a capture: grasp decode trace.pcap [--key-file K]
//! grasp stats                    # graspd's counters (--control /run/graspd/graspd.sock)
//! ```
//!
//! Values: CBOR diagnostic notation or JSON (`42`, `"text"`, `[1, "two"]`,
//! `{"a": 1}`, `h'0102'`); a bare word is text. `--json` prints one JSON
//! object per result for scripts.
//!
//! Exit status: 0 success; 1 failure (network, peer error); 2 bad arguments
//! or configuration; 3 nothing found or no answer in time; 4 declined.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use grasp_asa_api::client::{Remote, DEFAULT_SOCKET};
use grasp_engine::transport::Inbound;
use grasp_engine::wire::{Locator, MessageType, Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::{ApiError, ErrorCode, Negotiation};
use grasp_engine::{AsaLocator, DiscoverOptions, RegisterOptions};
use grasp_tools::cli::grasp::{Args, Cmd, Haggle};
use grasp_tools::config::{DaemonOverrides, NodeConfig};
use grasp_tools::node::Node;
use grasp_tools::parse_value;
use serde_json::json;

/// How a command ended, for the exit status.
enum Outcome {
    Ok,
    NothingFound(String),
    Declined(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    grasp_tools::init_logging(grasp_tools::config::LogFormat::Plain, "warn");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grasp: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NothingFound(why)) => {
            eprintln!("grasp: {why}");
            ExitCode::from(3)
        }
        Ok(Outcome::Declined(why)) => {
            eprintln!("grasp: declined: {why}");
            ExitCode::from(4)
        }
        Err(e) => {
            let usage = e
                .downcast_ref::<grasp_tools::config::ConfigError>()
                .is_some()
                || e.downcast_ref::<grasp_tools::value::ValueError>().is_some();
            eprintln!("grasp: {e:#}");
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

async fn run(args: &Args) -> Result<Outcome> {
    // Commands that need no node of their own.
    match &args.cmd {
        Cmd::Decode { input, write_pcap } => {
            let n = grasp_tools::decode::run(input, &args.node, args.json, write_pcap.as_deref())?;
            return Ok(if n == 0 {
                Outcome::NothingFound(format!("no GRASP message in {input}"))
            } else {
                Outcome::Ok
            });
        }
        Cmd::Stats { control } | Cmd::Reload { control } => {
            let what = if matches!(args.cmd, Cmd::Stats { .. }) {
                "stats"
            } else {
                "reload"
            };
            let v = grasp_tools::control::request(control, what)
                .await
                .map_err(anyhow::Error::msg)?;
            if args.json {
                grasp_tools::outln!("{v}");
            } else {
                grasp_tools::outln!("{}", serde_json::to_string_pretty(&v)?);
            }
            if v.get("ok") == Some(&json!(false)) {
                anyhow::bail!("graspd refused: {}", v["error"]);
            }
            return Ok(Outcome::Ok);
        }
        _ => {}
    }
    // Values are checked before any socket is opened.
    match &args.cmd {
        Cmd::Flood { more, .. } => {
            if more.len() % 2 != 0 {
                anyhow::bail!(grasp_tools::config::ConfigError::Invalid {
                    setting: "flood".into(),
                    why: format!(
                        "objectives and values go in pairs; {:?} has no value",
                        more[more.len() - 1]
                    ),
                });
            }
            for p in more.chunks(2) {
                parse_value(&p[1])?;
            }
        }
        Cmd::ListenNegotiate {
            invalid: Some(v), ..
        } if !v.is_empty() => {
            parse_value(v)?;
        }
        _ => {}
    }
    let value = match &args.cmd {
        Cmd::Flood { value, .. } | Cmd::Negotiate { value, .. } | Cmd::ServeSync { value, .. } => {
            Some(parse_value(value)?)
        }
        Cmd::ListenNegotiate {
            counter: Some(c), ..
        } => Some(parse_value(c)?),
        _ => None,
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    if !matches!(args.cmd, Cmd::Watch { .. }) {
        if let Some(daemon) = daemon(args).await? {
            let locator = daemon.hello().locator.clone();
            let grasp = grasp_engine::Grasp::with_core(daemon);
            return command(args, &grasp, Reached::Daemon(locator), value, timeout).await;
        }
    }
    let mut cfg = NodeConfig::resolve(&args.node, &DaemonOverrides::default())?;
    if cfg.dull {
        // DULL allows only listed objectives: this command's.
        let name = match &args.cmd {
            Cmd::Discover { objective, .. }
            | Cmd::Sync { objective, .. }
            | Cmd::Flood { objective, .. }
            | Cmd::GetFlood { objective, .. }
            | Cmd::Negotiate { objective, .. }
            | Cmd::ListenNegotiate { objective, .. }
            | Cmd::ServeSync { objective, .. } => Some(objective.clone()),
            _ => None,
        };
        cfg.dull_objectives.extend(name);
        if let Cmd::Flood { more, .. } = &args.cmd {
            cfg.dull_objectives
                .extend(more.chunks(2).map(|p| p[0].clone()));
        }
    }
    if let Cmd::Watch { seconds } = &args.cmd {
        return watch(&cfg, *seconds, args.json).await;
    }
    let node = Node::start(&cfg).await?;
    let locator = Some(node.transport.node_locator());
    command(args, &node.grasp, Reached::Own(locator), value, timeout).await
}

/// The running graspd to use, if any: `--api` (or `GRASP_API_SOCKET`) must
/// answer; the default path is used when it answers and no node flags were
/// given.
async fn daemon(args: &Args) -> Result<Option<std::sync::Arc<Remote>>> {
    if let Some(p) = &args.api {
        return Ok(Some(Remote::connect(p).await?));
    }
    if args.no_api || args.node.names_a_node() {
        return Ok(None);
    }
    let p = std::path::Path::new(DEFAULT_SOCKET);
    if !p.exists() {
        return Ok(None);
    }
    match Remote::connect(p).await {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            tracing::info!(error = %e, "no graspd at the default ASA socket; using a node of our own");
            Ok(None)
        }
    }
}

/// Whose GRASP core a command uses, and where that node is.
enum Reached {
    /// A node of our own.
    Own(Option<Locator>),
    /// A running graspd's.
    Daemon(Option<Locator>),
}

/// Runs the command on `grasp` (our own node's or a graspd's).
async fn command(
    args: &Args,
    grasp: &grasp_engine::Grasp,
    reached: Reached,
    value: Option<Value>,
    timeout: Duration,
) -> Result<Outcome> {
    let (Reached::Own(locator) | Reached::Daemon(locator)) = &reached;
    let at = locator
        .as_ref()
        .map_or_else(|| "graspd's node".to_string(), |l| l.to_string());
    // Named by process: several grasp commands may share one graspd.
    let asa = grasp
        .register_asa(&format!("grasp-cli-{}", std::process::id()))
        .await
        .map_err(api)?;
    let sync_flags = ObjectiveFlags::from_bits(5); // F_DISC | F_SYNCH
    let neg_flags = ObjectiveFlags::from_bits(3); // F_DISC | F_NEG
    match &args.cmd {
        Cmd::Discover {
            objective,
            all,
            loop_count,
        } => {
            let o = Objective::new(objective, sync_flags).with_loop_count(*loop_count);
            let opts = if *all {
                DiscoverOptions::all(timeout)
            } else {
                DiscoverOptions::first(timeout)
            };
            let t0 = Instant::now();
            let found = asa.discover(&o, opts).await.map_err(api)?;
            if found.is_empty() {
                return Ok(Outcome::NothingFound(format!(
                    "nobody answered for {objective} within {} ms",
                    args.timeout_ms
                )));
            }
            for l in &found {
                if args.json {
                    grasp_tools::outln!(
                        "{}",
                        json!({"objective": objective, "locator": l.locator.to_string(),
                               "diverted": l.diverted, "ms": t0.elapsed().as_secs_f64() * 1000.0})
                    );
                } else {
                    grasp_tools::outln!(
                        "{objective}: {}{}",
                        l.locator,
                        if l.diverted { " (via a relay)" } else { "" }
                    );
                }
            }
        }
        Cmd::Sync { objective, peer } => {
            let o = Objective::new(objective, sync_flags);
            let at = peer.map(peer_locator);
            match asa.synchronize(&o, at, timeout).await {
                Ok(got) => print_value(args.json, objective, &got, "synchronized"),
                Err(e) if no_answer(&e) => {
                    return Ok(Outcome::NothingFound(format!("{objective}: {e}")))
                }
                Err(e) => return Err(api(e)),
            }
        }
        Cmd::Flood {
            objective,
            more,
            ttl,
            loop_count,
            locator,
            ..
        } => {
            // The first pair's value was parsed already; the others here
            // (their count was checked before any socket opened).
            let mut pairs = vec![(objective.clone(), value.clone().unwrap_or_else(Value::null))];
            for p in more.chunks(2) {
                pairs.push((p[0].clone(), parse_value(&p[1])?));
            }
            let mut tagged = Vec::new();
            for (name, v) in &pairs {
                let o = Objective::new(name, sync_flags)
                    .with_value(v.clone())
                    .with_loop_count(*loop_count);
                asa.register_objective(&o, RegisterOptions::default())
                    .await
                    .map_err(api)?;
                tagged.push(TaggedObjective {
                    objective: o,
                    locator: locator.map(|l| peer_locator(l).locator),
                });
            }
            asa.flood(*ttl, tagged).await.map_err(api)?;
            // Let the multicast leave before the node goes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (name, v) in &pairs {
                if args.json {
                    grasp_tools::outln!(
                        "{}",
                        json!({"objective": name, "flooded": v.to_string(), "ttl_ms": ttl, "loop_count": loop_count})
                    );
                } else {
                    grasp_tools::outln!(
                        "flooded {name} = {v} (ttl {ttl} ms, loop count {loop_count})"
                    );
                }
            }
        }
        Cmd::GetFlood { objective, wait } => {
            // Watching first, so a flood between the two calls is not missed.
            let watch = asa.watch_flood(objective).await.map_err(api)?;
            let mut got = asa.get_flood(objective).await.map_err(api)?;
            if got.is_empty() {
                match tokio::time::timeout(Duration::from_secs(*wait), watch.next()).await {
                    Ok(Some(e)) => got.push(e),
                    _ => {
                        return Ok(Outcome::NothingFound(format!(
                            "no flood of {objective} arrived within {wait} s"
                        )))
                    }
                }
            }
            for e in got {
                let v = e.objective.value.map(|v| v.to_string()).unwrap_or_default();
                if args.json {
                    grasp_tools::outln!(
                        "{}",
                        json!({"objective": objective, "value": v, "initiator": e.initiator.to_string(),
                               "loop_count": e.objective.loop_count,
                               "locator": e.locator.map(|l| l.to_string())})
                    );
                } else {
                    grasp_tools::outln!(
                        "{objective} = {v} (from {}, loop count {})",
                        e.initiator,
                        e.objective.loop_count
                    );
                }
            }
        }
        Cmd::Negotiate {
            objective,
            decline,
            peer,
            dry_run,
            haggle,
            ..
        } => {
            let flags = if *dry_run {
                ObjectiveFlags::from_bits(neg_flags.bits() | ObjectiveFlags::NEG_DRY.bits())
            } else {
                neg_flags
            };
            let o = Objective::new(objective, flags)
                .with_value(value.clone().unwrap_or_else(Value::null));
            asa.register_objective(&o, RegisterOptions::default())
                .await
                .map_err(api)?;
            let at = peer.map(peer_locator);
            let r = match asa.request_negotiate(&o, at, timeout).await {
                Ok(r) => r,
                Err(e) if no_answer(&e) => {
                    return Ok(Outcome::NothingFound(format!("{objective}: {e}")))
                }
                Err(e) => return Err(api(e)),
            };
            if let Some(rounds) = haggle.rounds {
                return haggle_request(args.json, &o, r, haggle, rounds, timeout).await;
            }
            match r {
                Negotiation::Accepted => report(args.json, objective, "accepted", None),
                Negotiation::Declined { reason } => {
                    return Ok(Outcome::Declined(
                        reason.unwrap_or_else(|| "no reason given".into()),
                    ))
                }
                Negotiation::Step {
                    session,
                    objective: offer,
                } => {
                    let v = offer.value.as_ref().map(|v| v.to_string());
                    match decline {
                        Some(reason) => {
                            session.decline(Some(reason)).await.map_err(api)?;
                            report(args.json, objective, "we declined the offer", v);
                        }
                        None => {
                            session.accept().await.map_err(api)?;
                            report(args.json, objective, "we accepted the offer", v);
                        }
                    }
                }
            }
        }
        Cmd::ServeSync {
            objective,
            seconds,
            rapid,
            ..
        } => {
            let o = Objective::new(objective, sync_flags)
                .with_value(value.clone().unwrap_or_else(Value::null));
            let opts = RegisterOptions {
                rapid: *rapid,
                ..RegisterOptions::default()
            };
            asa.register_objective(&o, opts).await.map_err(api)?;
            asa.listen_synchronize(&o).await.map_err(api)?;
            if !args.json {
                grasp_tools::outln!(
                    "serving {objective} = {} at {at} (Ctrl-C to stop)",
                    o.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                );
            }
            wait_or_interrupt(*seconds).await;
            // A graspd's counters are its own (`grasp stats`): none here.
            let Ok((s, _)) = grasp.stats().await else {
                return Ok(Outcome::Ok);
            };
            let served = s.received.get(MessageType::ReqSyn);
            if args.json {
                grasp_tools::outln!(
                    "{}",
                    json!({"objective": objective, "requests_answered": served})
                );
            } else {
                grasp_tools::outln!("answered {served} synchronization request(s)");
            }
        }
        Cmd::ListenNegotiate {
            objective,
            decline,
            invalid,
            wait_ms,
            seconds,
            haggle,
            ..
        } => {
            let o = Objective::new(objective, neg_flags);
            asa.register_objective(&o, RegisterOptions::default())
                .await
                .map_err(api)?;
            let listener = asa.listen_negotiate(objective).await.map_err(api)?;
            if !args.json {
                grasp_tools::outln!(
                    "answering negotiations for {objective} at {at} (Ctrl-C to stop)"
                );
            }
            let serve = async {
                while let Some((session, req)) = listener.next().await {
                    let mut asked = req
                        .value
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    if req.flags.contains(ObjectiveFlags::NEG_DRY) {
                        asked.push_str(" (dry run)");
                    }
                    if let Some(w) = wait_ms {
                        let _ = session.wait(Duration::from_millis(*w)).await;
                        tokio::time::sleep(Duration::from_millis(*w / 2)).await;
                    }
                    let what = match (decline, &value) {
                        _ if invalid.is_some() => {
                            let info = match invalid.as_deref() {
                                Some("") | None => None,
                                Some(v) => parse_value(v).ok(),
                            };
                            session
                                .send_invalid(info)
                                .await
                                .map(|_| "answered M_INVALID".to_string())
                        }
                        (Some(r), _) => session
                            .decline(Some(r))
                            .await
                            .map(|_| format!("declined ({r})")),
                        (None, Some(c)) if haggle.rounds.is_some() => {
                            haggle_answer(session, req.clone(), c, haggle, timeout).await
                        }
                        (None, Some(c)) => match session
                            .step(&req.clone().with_value(c.clone()), timeout)
                            .await
                        {
                            Ok(Negotiation::Step {
                                session,
                                objective: back,
                            }) => {
                                let b = back.value.map(|v| v.to_string()).unwrap_or_default();
                                session.accept().await.map(|_| {
                                    format!("countered {c}, peer came back with {b}; accepted")
                                })
                            }
                            Ok(Negotiation::Accepted) => {
                                Ok(format!("countered {c}; peer accepted"))
                            }
                            Ok(Negotiation::Declined { reason }) => Ok(format!(
                                "countered {c}; peer declined ({})",
                                reason.unwrap_or_default()
                            )),
                            Err(e) => Err(e),
                        },
                        (None, None) => session.accept().await.map(|_| "accepted".to_string()),
                    };
                    let what = what.unwrap_or_else(|e| format!("failed: {e}"));
                    if args.json {
                        grasp_tools::outln!(
                            "{}",
                            json!({"objective": objective, "asked": asked, "result": what})
                        );
                    } else {
                        grasp_tools::outln!("{objective}: asked {asked}: {what}");
                    }
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = wait_or_interrupt(*seconds) => {}
            }
        }
        Cmd::Dump => {
            if let Reached::Own(_) = reached {
                // Our own node: let the links' floods and discoveries in.
                tokio::time::sleep(timeout).await;
            }
            print_dump(args.json, &asa.dump().await.map_err(api)?);
        }
        Cmd::Watch { .. } | Cmd::Decode { .. } | Cmd::Stats { .. } | Cmd::Reload { .. } => {}
    }
    Ok(Outcome::Ok)
}

fn print_dump(json_out: bool, d: &grasp_engine::Dump) {
    let name_of = |h: &grasp_engine::AsaHandle| {
        d.asas
            .iter()
            .find(|(a, _)| a == h && a.0 != 0)
            .map_or_else(|| "another client's ASA".to_string(), |(_, n)| n.clone())
    };
    let value = |o: &Objective| o.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
    if json_out {
        let objectives: Vec<_> = d
            .objectives
            .iter()
            .map(|r| {
                json!({"objective": r.objective.name, "value": value(&r.objective),
                       "loop_count": r.objective.loop_count,
                       "owners": r.owners.iter().map(name_of).collect::<Vec<_>>(),
                       "discoverable": r.options.discoverable,
                       "listen_negotiate": r.listen_negotiate,
                       "listen_synchronize": r.listen_synchronize})
            })
            .collect();
        let discovery: Vec<_> = d
            .discovery_cache
            .iter()
            .map(|(n, l)| json!({"objective": n, "locators": l.iter().map(|l| l.locator.to_string()).collect::<Vec<_>>()}))
            .collect();
        let floods: Vec<_> = d
            .flood_cache
            .iter()
            .map(|e| json!({"objective": e.objective.name, "value": value(&e.objective), "initiator": e.initiator.to_string()}))
            .collect();
        grasp_tools::outln!(
            "{}",
            json!({"asas": d.asas.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                   "objectives": objectives, "discovery_cache": discovery, "flood_cache": floods})
        );
        return;
    }
    grasp_tools::outln!(
        "ASAs: {}",
        d.asas
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in &d.objectives {
        grasp_tools::outln!(
            "objective {} = {} (owners {}{}{}{})",
            r.objective.name,
            value(&r.objective),
            r.owners.iter().map(name_of).collect::<Vec<_>>().join(", "),
            if r.options.discoverable {
                "; discoverable"
            } else {
                ""
            },
            if r.listen_synchronize {
                "; answers synchronization"
            } else {
                ""
            },
            if r.listen_negotiate {
                "; answers negotiation"
            } else {
                ""
            },
        );
    }
    for (n, l) in &d.discovery_cache {
        let at: Vec<String> = l.iter().map(|l| l.locator.to_string()).collect();
        grasp_tools::outln!("discovered {n} at {}", at.join(", "));
    }
    for e in &d.flood_cache {
        grasp_tools::outln!(
            "flood {} = {} from {}",
            e.objective.name,
            value(&e.objective),
            e.initiator
        );
    }
}

/// A haggle's amount in a value: the value itself if a number, else the
/// last element of an array (`["NZD", 150]`).
fn amount(v: Option<&Value>) -> Option<f64> {
    let num = |c: &ciborium::Value| match c {
        ciborium::Value::Integer(i) => i128::from(*i).to_string().parse().ok(),
        ciborium::Value::Float(f) => Some(*f),
        _ => None,
    };
    match v?.to_ciborium().ok()? {
        ciborium::Value::Array(a) => a.last().and_then(num),
        other => num(&other),
    }
}

/// `v` with its amount set to `x` (an integer when `x` is whole).
fn with_amount(v: Option<&Value>, x: f64) -> Option<Value> {
    let n = if x.fract() == 0.0 && x.abs() < 9.0e15 {
        ciborium::Value::Integer((x as i64).into())
    } else {
        ciborium::Value::Float(x)
    };
    let c = match v?.to_ciborium().ok()? {
        ciborium::Value::Array(mut a) if !a.is_empty() => {
            let last = a.len() - 1;
            a[last] = n;
            ciborium::Value::Array(a)
        }
        _ => n,
    };
    Value::from_ciborium(&c).ok()
}

/// The next offer of ours, or why there is none.
fn next_offer(h: &Haggle, ours: Option<&Value>, round: u32, rounds: u32) -> Result<Value, String> {
    if round >= rounds {
        return Err(format!("no agreement in {rounds} rounds"));
    }
    let now = amount(ours).ok_or("the value has no amount to haggle over")?;
    let next = now + h.step;
    if let Some(f) = h.floor {
        if (h.step < 0.0 && next < f) || (h.step > 0.0 && next > f) {
            return Err(format!("{next} would pass my floor of {f}"));
        }
    }
    with_amount(ours, next).ok_or_else(|| "cannot write the amount".to_string())
}

/// The requester's side of a haggle, from the first answer `r`.
async fn haggle_request(
    json_out: bool,
    o: &Objective,
    mut r: Negotiation,
    h: &Haggle,
    rounds: u32,
    timeout: Duration,
) -> Result<Outcome> {
    let name = &o.name;
    let mut ask = o.clone();
    // Our first ask was round one.
    let mut round = 1;
    loop {
        let (session, offer) = match r {
            Negotiation::Accepted => {
                let v = ask.value.as_ref().map(|v| v.to_string());
                report(
                    json_out,
                    name,
                    &format!("accepted after {round} offer(s)"),
                    v,
                );
                return Ok(Outcome::Ok);
            }
            Negotiation::Declined { reason } => {
                return Ok(Outcome::Declined(
                    reason.unwrap_or_else(|| "no reason given".into()),
                ))
            }
            Negotiation::Step { session, objective } => (session, objective),
        };
        let got = amount(offer.value.as_ref());
        if let (Some(t), Some(g)) = (h.accept_at, got) {
            if g >= t {
                session.accept().await.map_err(api)?;
                let v = offer.value.as_ref().map(|v| v.to_string());
                report(json_out, name, "we accepted the offer", v);
                return Ok(Outcome::Ok);
            }
        }
        match next_offer(h, ask.value.as_ref(), round, rounds) {
            Ok(v) => {
                ask = ask.with_value(v);
                round += 1;
                r = session.step(&ask, timeout).await.map_err(api)?;
            }
            Err(why) => {
                session.decline(Some(&why)).await.map_err(api)?;
                let v = offer.value.as_ref().map(|v| v.to_string());
                report(json_out, name, &format!("we declined the offer: {why}"), v);
                return Ok(Outcome::Ok);
            }
        }
    }
}

/// The responder's side of a haggle: `first` is our first counter-offer.
async fn haggle_answer(
    mut session: grasp_engine::Session,
    mut req: Objective,
    first: &Value,
    h: &Haggle,
    timeout: Duration,
) -> Result<String, ApiError> {
    let rounds = h.rounds.unwrap_or(1);
    let mut ours: Option<Value> = None;
    let mut round = 0;
    loop {
        let asked = amount(req.value.as_ref());
        if let (Some(t), Some(a)) = (h.accept_at, asked) {
            if a <= t {
                session.accept().await?;
                return Ok(format!("accepted {a} after {round} counter-offer(s)"));
            }
        }
        let counter = match &ours {
            None => Ok(first.clone()),
            Some(v) => next_offer(h, Some(v), round, rounds),
        };
        let counter = match counter {
            Ok(c) => c,
            Err(why) => {
                session.decline(Some(&why)).await?;
                return Ok(format!("declined: {why}"));
            }
        };
        round += 1;
        match session
            .step(&req.clone().with_value(counter.clone()), timeout)
            .await?
        {
            Negotiation::Step {
                session: s,
                objective,
            } => {
                session = s;
                req = objective;
                ours = Some(counter);
            }
            Negotiation::Accepted => {
                return Ok(format!("peer accepted our counter-offer {counter}"))
            }
            Negotiation::Declined { reason } => {
                return Ok(format!("peer declined ({})", reason.unwrap_or_default()))
            }
        }
    }
}

fn peer_locator(p: SocketAddr) -> AsaLocator {
    let mut l = AsaLocator::new(match p {
        SocketAddr::V6(a) => Locator::tcp6(*a.ip(), a.port()),
        SocketAddr::V4(a) => Locator::tcp6(a.ip().to_ipv6_mapped(), a.port()),
    });
    if let SocketAddr::V6(a) = p {
        l.ifindex = a.scope_id();
    }
    l
}

fn api(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Errors that mean nobody answered (exit status 3), not a failure.
fn no_answer(e: &ApiError) -> bool {
    matches!(
        e.code,
        ErrorCode::NoReply
            | ErrorCode::NoDiscReply
            | ErrorCode::NoPeer
            | ErrorCode::NoNegReply
            | ErrorCode::NotFloodDisc
    )
}

fn print_value(json_out: bool, name: &str, o: &Objective, what: &str) {
    let v = o.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
    if json_out {
        grasp_tools::outln!("{}", json!({"objective": name, "value": v, "result": what}));
    } else {
        grasp_tools::outln!("{name} = {v}");
    }
}

fn report(json_out: bool, name: &str, what: &str, value: Option<String>) {
    if json_out {
        grasp_tools::outln!(
            "{}",
            json!({"objective": name, "result": what, "offer": value})
        );
    } else {
        match value {
            Some(v) => grasp_tools::outln!("{name}: peer offered {v}; {what}"),
            None => grasp_tools::outln!("{name}: {what}"),
        }
    }
}

async fn wait_or_interrupt(seconds: Option<u64>) {
    let stop = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Prints every multicast the backend delivers (decrypted or verified),
/// without running an engine: floods and discoveries as they pass.
async fn watch(cfg: &NodeConfig, seconds: Option<u64>, json_out: bool) -> Result<Outcome> {
    use futures::StreamExt;
    let (_t, mut inbound) = grasp_tools::node::bind_transport(cfg).await?;
    let until = seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut seen = 0u64;
    loop {
        let next = async {
            match until {
                Some(u) => tokio::time::timeout_at(u, inbound.next())
                    .await
                    .ok()
                    .flatten(),
                None => inbound.next().await,
            }
        };
        let item = tokio::select! {
            i = next => i,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(item) = item else { break };
        let Inbound::Datagram(d) = item else { continue };
        seen += 1;
        let text = grasp_tools::pretty::summary(&d.msg);
        if json_out {
            grasp_tools::outln!(
                "{}",
                json!({"from": d.src.to_string(), "ifindex": d.ifindex, "message": text})
            );
        } else {
            grasp_tools::outln!("{} {}", d.src, text);
        }
    }
    if !json_out {
        eprintln!("{seen} multicast(s) seen");
    }
    Ok(Outcome::Ok)
}
