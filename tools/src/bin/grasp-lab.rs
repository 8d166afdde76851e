//! grasp-lab: a GRASP domain in one command.
//!
//! Runs N nodes (default 3 in a line; inner nodes relay) inside this
//! process over the in-memory fabric, under QUADS with a demo password by
//! default: no root, no network. Gray (on the first node) discovers
//! Briggs's objective across the relays, synchronizes it, reads Briggs's
//! flood and negotiates a loan with Briggs (on the farthest node); the lab
//! prints what happened as it happens, then a summary table.
//!
//! ```text
//! grasp-lab                                   # 3 nodes in a line, QUADS
//! grasp-lab --security tls --nodes 9 --topology grid
//! grasp-lab --messages                        # every GRASP message too
//! sudo grasp-lab --netns                      # real graspd processes in namespaces
//! ```
//!
//! Exit status 0 when every step worked, 1 otherwise, 2 for bad arguments.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Parser;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream, StreamExt};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::proto::{Config, EngineStats, MESSAGE_TYPE_NAMES};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, MessageIo, Security,
    TransportStats,
};
use grasp_engine::wire::Locator;
use grasp_engine::Grasp;
use grasp_tools::asa::briggs_gray::{briggs, gray, GrayReport, LoanResult};
use grasp_tools::asa::{ms, Transcript};
use grasp_tools::config::SecurityChoice;

#[derive(Parser, Debug)]
#[command(
    name = "grasp-lab",
    version,
    about = "A GRASP domain in one command: N nodes, relays, discovery, synchronization, flooding and negotiation (Briggs and Gray)"
)]
struct Args {
    /// Security: none, quads (default, demo password) or tls (a CA made
    /// for the run).
    #[arg(long, default_value = "quads")]
    security: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// line, ring or grid.
    #[arg(long, default_value = "line")]
    topology: String,
    /// One-way delay of each link, ms (fabric).
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Seed for the ASAs' choices (amounts, reserves).
    #[arg(long, default_value_t = 8990)]
    seed: u64,
    /// Print every GRASP message as it is sent (decrypted).
    #[arg(long)]
    messages: bool,
    /// Only the summary.
    #[arg(long)]
    quiet: bool,
    /// Real graspd processes in network namespaces the lab creates and
    /// removes (root; Linux).
    #[arg(long)]
    netns: bool,
    /// QUADS demo password.
    #[arg(long, default_value = "grasp-lab-demo")]
    password: String,
}

/// Node pairs linked by the topology.
fn links(topology: &str, n: usize) -> Result<Vec<(usize, usize)>> {
    if n < 2 {
        bail!("--nodes must be at least 2 (Gray and Briggs need a node each)");
    }
    if n > 64 {
        bail!("--nodes at most 64 in one lab");
    }
    let line: Vec<_> = (0..n - 1).map(|i| (i, i + 1)).collect();
    Ok(match topology {
        "line" => line,
        "ring" => {
            let mut v = line;
            if n > 2 {
                v.push((n - 1, 0));
            }
            v
        }
        "grid" => {
            let side = (n as f64).sqrt().ceil() as usize;
            let mut v = Vec::new();
            for i in 0..n {
                if (i + 1) % side != 0 && i + 1 < n {
                    v.push((i, i + 1));
                }
                if i + side < n {
                    v.push((i, i + side));
                }
            }
            v
        }
        other => bail!("unknown topology {other:?}: choose line, ring or grid"),
    })
}

/// Hops from node 0 to every node.
fn distances(n: usize, links: &[(usize, usize)]) -> Vec<usize> {
    let mut d = vec![usize::MAX; n];
    d[0] = 0;
    let mut q = VecDeque::from([0]);
    while let Some(x) = q.pop_front() {
        for &(a, b) in links {
            for (u, v) in [(a, b), (b, a)] {
                if u == x && d[v] == usize::MAX {
                    d[v] = d[x] + 1;
                    q.push_back(v);
                }
            }
        }
    }
    d
}

fn main() -> ExitCode {
    let args = Args::parse();
    grasp_tools::init_logging(grasp_tools::config::LogFormat::Plain, "warn");
    let security: SecurityChoice = match args.security.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("grasp-lab: --security: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = security.check_compiled() {
        eprintln!("grasp-lab: {e}");
        return ExitCode::from(2);
    }
    let topo = match links(&args.topology, args.nodes) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("grasp-lab: {e}");
            return ExitCode::from(2);
        }
    };
    if args.netns {
        return match netns::run(&args, security, &topo) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("grasp-lab: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grasp-lab: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fabric_lab(&args, security, &topo)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("grasp-lab: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Makes each node's transport for `security` over its fabric node.
struct Secure {
    #[cfg(feature = "quads")]
    quads: Option<grasp_quads::MasterSecret>,
    #[cfg(feature = "tls")]
    ca: Option<(String, String)>,
}

impl Secure {
    fn new(security: SecurityChoice, password: &str) -> Result<Self> {
        let _ = password;
        Ok(Secure {
            #[cfg(feature = "quads")]
            quads: if security == SecurityChoice::Quads {
                let pw = grasp_quads::Password::new(password)?;
                Some(grasp_quads::MasterSecret::derive(
                    &pw,
                    "lab",
                    grasp_quads::KdfParams::default(),
                )?)
            } else {
                None
            },
            #[cfg(feature = "tls")]
            ca: if security == SecurityChoice::Tls {
                let (c, k) = grasp_tls::certs::new_ca("lab", 1)?;
                Some((c, k.to_string()))
            } else {
                None
            },
        })
    }

    fn wrap(
        &self,
        name: &str,
        t: Arc<dyn AcpTransport>,
        i: InboundStream,
    ) -> Result<(Arc<dyn AcpTransport>, InboundStream)> {
        let _ = name;
        #[cfg(feature = "quads")]
        if let Some(m) = &self.quads {
            let ring = grasp_quads::KeyRing::new(grasp_quads::DomainKey::from_master(m));
            let (t, i) = grasp_quads::wrap(t, i, ring, grasp_quads::QuadsConfig::default());
            return Ok((t, i));
        }
        #[cfg(feature = "tls")]
        if let Some((ca, key)) = &self.ca {
            let (c, k) =
                grasp_tls::certs::issue_node(ca, key, &format!("{}.lab", name.to_lowercase()), 1)?;
            let id = grasp_tls::NodeIdentity::from_pem(&c, &k, ca, std::time::SystemTime::now())?;
            let (t, i) = grasp_tls::wrap_messages(t, i, &id)?;
            return Ok((t, i));
        }
        Ok((t, i))
    }
}

struct LabNode {
    name: String,
    grasp: Grasp,
    transport: Arc<dyn AcpTransport>,
}

async fn fabric_lab(
    args: &Args,
    security: SecurityChoice,
    topo: &[(usize, usize)],
) -> Result<bool> {
    let n = args.nodes;
    let fabric = Fabric::new(args.seed);
    let cfg = LinkConfig {
        loss: 0.0,
        delay: Duration::from_millis(args.delay_ms),
    };
    let fab_links: Vec<_> = topo
        .iter()
        .map(|(a, b)| fabric.link(format!("l{}-{}", a + 1, b + 1), cfg))
        .collect();
    let secure = Secure::new(security, &args.password)?;
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("N{}", i + 1);
        let mut b = fabric.node(name.clone()).max_message_size(20_000);
        if security == SecurityChoice::None {
            b = b.simulated_security(Security::None);
        }
        for (k, (a, bb)) in topo.iter().enumerate() {
            if *a == i || *bb == i {
                b = b.attach(&fab_links[k]);
            }
        }
        let (t, inbound) = b.bind();
        let (t, inbound) = secure.wrap(&name, t, inbound)?;
        let (t, inbound) = if args.messages && !args.quiet {
            tap(name.clone(), t, inbound)
        } else {
            (t, inbound)
        };
        let mut c = Config::default();
        c.allow_insecure = security == SecurityChoice::None;
        nodes.push(LabNode {
            name,
            grasp: Grasp::start(t.clone(), inbound, c),
            transport: t,
        });
    }
    let d = distances(n, topo);
    let far = (0..n)
        .filter(|&i| d[i] != usize::MAX)
        .max_by_key(|&i| (d[i], i))
        .unwrap_or(n - 1);
    if !args.quiet {
        grasp_tools::outln!(
            "grasp-lab: {n} nodes, {} topology, security {security}{}; Gray on N1, Briggs on N{} ({} hop(s) away)",
            args.topology,
            match security {
                SecurityChoice::Quads => " (AES-256-GCM, key from the demo password)",
                SecurityChoice::Tls => " (mutual TLS 1.3, a CA made for this run)",
                SecurityChoice::None => " (NO security: a lab)",
            },
            far + 1,
            d[far]
        );
        for (a, b) in topo {
            grasp_tools::outln!("  link N{} -- N{}", a + 1, b + 1);
        }
        for node in &nodes {
            grasp_tools::outln!("  {} at {}", node.name, node.transport.node_locator());
        }
        grasp_tools::outln!();
    }
    let t = Arc::new(Transcript::new(args.quiet));
    let bank = briggs(
        &nodes[far].grasp,
        args.seed,
        Duration::from_secs(1),
        t.clone(),
    )
    .await?;
    let report = gray(&nodes[0].grasp, args.seed + 1, Duration::from_secs(5), &t).await?;
    bank.abort();
    let mut stats = Vec::new();
    for node in &nodes {
        stats.push(node.grasp.stats().await?.0);
    }
    Ok(summary(
        args,
        security,
        &report,
        &nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        &stats,
    ))
}

/// Prints the summary table; whether every step worked.
fn summary(
    args: &Args,
    security: SecurityChoice,
    r: &GrayReport,
    names: &[String],
    stats: &[EngineStats],
) -> bool {
    grasp_tools::outln!(
        "\nSummary: {} nodes, {}, security {security}",
        names.len(),
        args.topology
    );
    grasp_tools::outln!("  {:<24} {:<52} {:>10}", "step", "result", "time");
    let mut ok = true;
    let mut row = |step: &str, result: Option<(String, std::time::Duration)>| match result {
        Some((what, d)) => grasp_tools::outln!("  {step:<24} {what:<52} {:>10}", ms(d)),
        None => {
            ok = false;
            grasp_tools::outln!("  {step:<24} {:<52} {:>10}", "FAILED", "-");
        }
    };
    row(
        "discovery of EX2",
        r.discovery.as_ref().map(|(l, relayed, d)| {
            (
                format!("{l}{}", if *relayed { " (relayed)" } else { "" }),
                *d,
            )
        }),
    );
    row(
        "synchronization of EX2",
        r.sync.clone(),
    );
    row(
        "flood of EX1",
        r.flood
            .as_ref()
            .map(|(v, lc, d)| (format!("{v}, loop count {lc} on arrival"), *d)),
    );
    row(
        "negotiation of EX3",
        r.negotiation.as_ref().map(|(want, res, rounds, d)| {
            (
                match res {
                    LoanResult::Agreed(n) => {
                        format!("asked {want}, agreed {n} in {rounds} round(s)")
                    }
                    LoanResult::Refused(why) => {
                        format!("asked {want}, no deal ({why}), {rounds} round(s)")
                    }
                },
                *d,
            )
        }),
    );
    grasp_tools::outln!("\nMessages sent, by type (after decryption; each node's engine counts):");
    grasp_tools::out!("  {:<12}", "type");
    for n in names {
        grasp_tools::out!(" {n:>5}");
    }
    grasp_tools::outln!(" {:>6}", "total");
    for ty in MESSAGE_TYPE_NAMES {
        let counts: Vec<u64> = stats.iter().map(|s| s.sent.get(ty)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        grasp_tools::out!("  {ty:<12}");
        for c in &counts {
            grasp_tools::out!(" {c:>5}");
        }
        grasp_tools::outln!(" {total:>6}");
    }
    let relayed: Vec<String> = names
        .iter()
        .zip(stats)
        .filter(|(_, s)| s.discoveries_relayed + s.floods_relayed > 0)
        .map(|(n, s)| {
            format!(
                "{n} relayed {} discover(ies), {} flood(s)",
                s.discoveries_relayed, s.floods_relayed
            )
        })
        .collect();
    if !relayed.is_empty() {
        grasp_tools::outln!("\nRelays: {}", relayed.join("; "));
    }
    grasp_tools::outln!("\n{}", if ok { "lab OK" } else { "lab FAILED" });
    ok
}

/// Prints what a node sends (above the security layer): a transport
/// wrapper the engine does not know about.
struct Tap {
    name: String,
    inner: Arc<dyn AcpTransport>,
}

fn show(from: &str, to: &str, raw: &Bytes) {
    grasp_tools::outln!(
        "      {from:>4} -> {to:<28} {}",
        grasp_tools::pretty::summary(raw)
    );
}

struct TapIo {
    name: String,
    peer: String,
    inner: Pin<Box<dyn MessageIo>>,
}

impl Stream for TapIo {
    type Item = Result<Bytes, AcpError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Sink<Bytes> for TapIo {
    type Error = AcpError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), AcpError> {
        show(&self.name, &self.peer, &item);
        self.inner.as_mut().start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_close(cx)
    }
}

impl Tap {
    fn wrap(&self, ch: Channel) -> Channel {
        Channel {
            peer: ch.peer,
            local: ch.local,
            identity: ch.identity,
            io: Box::pin(TapIo {
                name: self.name.clone(),
                peer: ch.peer.to_string(),
                inner: ch.io,
            }),
        }
    }
}

impl AcpTransport for Tap {
    fn security(&self) -> Security {
        self.inner.security()
    }
    fn interfaces(&self) -> Vec<Interface> {
        self.inner.interfaces()
    }
    fn node_locator(&self) -> Locator {
        self.inner.node_locator()
    }
    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        let link = self
            .inner
            .interfaces()
            .into_iter()
            .find(|i| i.index == ifindex)
            .map_or_else(|| format!("if {ifindex}"), |i| i.name);
        show(&self.name, &format!("ff02::13 on {link}"), &msg);
        self.inner.send_multicast(ifindex, msg)
    }
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        async move { self.inner.connect(peer).await.map(|c| self.wrap(c)) }.boxed()
    }
    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }
}

fn tap(
    name: String,
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
) -> (Arc<dyn AcpTransport>, InboundStream) {
    let t = Arc::new(Tap { name, inner });
    let t2 = t.clone();
    let inbound = inbound
        .map(move |i| match i {
            Inbound::Channel(c) => Inbound::Channel(t2.wrap(c)),
            d => d,
        })
        .boxed();
    (t, inbound)
}

mod netns {
    //! `--netns`: the same scenario with real processes: a namespace per
    //! node, a veth pair per link (ULA fd00:<link>::/64, routes along the
    //! topology), `graspd` in every namespace but Gray's (Briggs's with
    //! its ASAs), and Gray run by this process inside its namespace.

    use super::*;

    pub(super) fn run(
        _args: &Args,
        _security: SecurityChoice,
        _topo: &[(usize, usize)],
    ) -> Result<bool> {
        bail!("--netns is not available yet")
    }
}
