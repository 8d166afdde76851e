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
use futures::{FutureExt, Sink, Stream};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_acp::secure;
use grasp_engine::proto::MessageCounts;
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, InboundStream, MessageIo, Security,
};
use grasp_engine::Grasp;
use grasp_engine::{Config, EngineStats};
use grasp_tools::asa::briggs_gray::{briggs_with, gray_with, GrayReport, LoanResult, REACH};
use grasp_tools::asa::{ms, Transcript};
use grasp_tools::backend::Spec;

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

/// Breadth-first from `root`: each node's hop count and the node before it
/// on a shortest path from `root` (`usize::MAX` where unreachable).
fn bfs(n: usize, links: &[(usize, usize)], root: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut d, mut prev) = (vec![usize::MAX; n], vec![usize::MAX; n]);
    d[root] = 0;
    prev[root] = root;
    let mut q = VecDeque::from([root]);
    while let Some(x) = q.pop_front() {
        for &(a, b) in links {
            for (u, v) in [(a, b), (b, a)] {
                if u == x && d[v] == usize::MAX {
                    d[v] = d[x] + 1;
                    prev[v] = x;
                    q.push_back(v);
                }
            }
        }
    }
    (d, prev)
}

/// Where Briggs goes (the node farthest from Gray's N1, the highest-
/// numbered of the farthest), how far that is, and the loop count that
/// reaches across (graspy's 4 at least).
struct Roles {
    far: usize,
    hops: usize,
    reach: u8,
}

fn roles(n: usize, links: &[(usize, usize)]) -> Roles {
    let d = bfs(n, links, 0).0;
    let far = (0..n)
        .filter(|&i| d[i] != usize::MAX)
        .max_by_key(|&i| (d[i], i))
        .unwrap_or(n - 1);
    let hops = d[far];
    Roles {
        far,
        hops,
        reach: REACH.max(u8::try_from(hops + 1).unwrap_or(u8::MAX)),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    grasp_tools::init_logging(grasp_tools::config::LogFormat::Plain, "warn");
    let security: Security = match args.security.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("grasp-lab: --security: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = grasp_tools::config::check_compiled(security) {
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

/// Makes each node's backend for `security`.
struct Secure {
    #[cfg(feature = "quads")]
    quads: Option<grasp_quads::MasterSecret>,
    #[cfg(feature = "tls")]
    ca: Option<(String, String)>,
}

impl Secure {
    fn new(security: Security, password: &str) -> Result<Self> {
        let _ = (security, password);
        Ok(Secure {
            #[cfg(feature = "quads")]
            quads: if security == Security::Quads {
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
            ca: if security == Security::Tls {
                let (c, k) = grasp_tls::certs::new_ca("lab", 1)?;
                Some((c, k.to_string()))
            } else {
                None
            },
        })
    }

    /// The backend of the node `name`.
    fn spec(&self, name: &str) -> Result<Spec> {
        let _ = name;
        #[cfg(feature = "quads")]
        if let Some(m) = &self.quads {
            let ring = grasp_quads::KeyRing::new(grasp_quads::DomainKey::from_master(m));
            return Ok(Spec::Quads(Box::new(ring)));
        }
        #[cfg(feature = "tls")]
        if let Some((ca, key)) = &self.ca {
            let (c, k) =
                grasp_tls::certs::issue_node(ca, key, &format!("{}.lab", name.to_lowercase()), 1)?;
            let id = grasp_tls::NodeIdentity::from_pem(&c, &k, ca, std::time::SystemTime::now())?;
            return Ok(Spec::Tls(Box::new(id)));
        }
        Ok(Spec::None)
    }
}

struct LabNode {
    name: String,
    grasp: Grasp,
    transport: Arc<dyn AcpTransport>,
}

async fn fabric_lab(args: &Args, security: Security, topo: &[(usize, usize)]) -> Result<bool> {
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
        let mut b = fabric.node(name.clone());
        for (k, (a, bb)) in topo.iter().enumerate() {
            if *a == i || *bb == i {
                b = b.attach(&fab_links[k]);
            }
        }
        let bound = grasp_tools::backend::bind(b, secure.spec(&name)?).await?;
        let (t, inbound) = if args.messages && !args.quiet {
            tap(name.clone(), bound.transport, bound.inbound)?
        } else {
            (bound.transport, bound.inbound)
        };
        let mut c = Config::default();
        c.allow_insecure = security == Security::None;
        nodes.push(LabNode {
            name,
            grasp: Grasp::start(t.clone(), inbound, c),
            transport: t,
        });
    }
    let Roles { far, hops, reach } = roles(n, topo);
    if !args.quiet {
        grasp_tools::outln!(
            "grasp-lab: {n} nodes, {} topology, security {security}{}; Gray on N1, Briggs on N{} ({} hop(s) away)",
            args.topology,
            match security {
                Security::Quads => " (AES-256-GCM, key from the demo password)",
                Security::Tls => " (mutual TLS 1.3, a CA made for this run)",
                Security::None => " (NO security: a lab)",
            },
            far + 1,
            hops
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
    let bank = briggs_with(
        &nodes[far].grasp,
        args.seed,
        Duration::from_secs(1),
        reach,
        t.clone(),
    )
    .await?;
    let report = gray_with(
        &nodes[0].grasp,
        args.seed + 1,
        Duration::from_secs(5),
        reach,
        &t,
    )
    .await?;
    bank.abort();
    let mut counts = Vec::new();
    for node in &nodes {
        counts.push(NodeCounts::from_stats(
            &node.name,
            &node.grasp.stats().await?.0,
        ));
    }
    Ok(summary(args, security, &report, &counts))
}

/// One node's counters for the summary.
struct NodeCounts {
    name: String,
    sent: Vec<u64>,
    discoveries_relayed: u64,
    floods_relayed: u64,
}

impl NodeCounts {
    fn from_stats(name: &str, s: &EngineStats) -> Self {
        NodeCounts {
            name: name.into(),
            sent: s.sent.iter().map(|(_, n)| n).collect(),
            discoveries_relayed: s.discoveries_relayed,
            floods_relayed: s.floods_relayed,
        }
    }

    /// From graspd's `stats` over its control socket.
    fn from_json(name: &str, v: &serde_json::Value) -> Self {
        let e = &v["engine"];
        NodeCounts {
            name: name.into(),
            sent: MessageCounts::names()
                .map(|t| e["sent"][t].as_u64().unwrap_or(0))
                .collect(),
            discoveries_relayed: e["discoveries_relayed"].as_u64().unwrap_or(0),
            floods_relayed: e["floods_relayed"].as_u64().unwrap_or(0),
        }
    }
}

/// Prints the summary table; whether every step worked.
fn summary(args: &Args, security: Security, r: &GrayReport, nodes: &[NodeCounts]) -> bool {
    grasp_tools::outln!(
        "\nSummary: {} nodes, {}, security {security}",
        nodes.len(),
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
    row("synchronization of EX2", r.sync.clone());
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
    for n in nodes {
        grasp_tools::out!(" {:>5}", n.name);
    }
    grasp_tools::outln!(" {:>6}", "total");
    for (k, ty) in MessageCounts::names().enumerate() {
        let counts: Vec<u64> = nodes.iter().map(|n| n.sent[k]).collect();
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
    let relayed: Vec<String> = nodes
        .iter()
        .filter(|s| s.discoveries_relayed + s.floods_relayed > 0)
        .map(|s| {
            format!(
                "{} relayed {} discover(ies), {} flood(s)",
                s.name, s.discoveries_relayed, s.floods_relayed
            )
        })
        .collect();
    if !relayed.is_empty() {
        grasp_tools::outln!("\nRelays: {}", relayed.join("; "));
    }
    grasp_tools::outln!("\n{}", if ok { "lab OK" } else { "lab FAILED" });
    ok
}

/// Prints what a node sends (above the security layer): a pass-through
/// protection over the node's transport, which the engine does not know
/// about.
struct Tap {
    name: String,
}

fn show(from: &str, to: &str, raw: &[u8]) {
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

/// Also what a tapped node's engine sees: the security below the tap.
struct Tapped {
    tap: Tap,
    security: Security,
}

impl secure::Backend for Tapped {
    type Protection = Tapped;
    fn overhead(&self) -> usize {
        0
    }
    fn start(self, _max: usize) -> (Tapped, Option<InboundStream>) {
        (self, None)
    }
}

impl secure::Protection for Tapped {
    type Drop = &'static str;
    fn security(&self) -> Security {
        self.security
    }
    fn seal_multicast(&self, msg: &[u8]) -> Result<Bytes, AcpError> {
        show(&self.tap.name, "ff02::13", msg);
        Ok(Bytes::copy_from_slice(msg))
    }
    fn open_multicast(&self, msg: &[u8]) -> Result<Bytes, &'static str> {
        Ok(Bytes::copy_from_slice(msg))
    }
    fn connect<'a>(
        &'a self,
        base: &'a dyn AcpTransport,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Channel, AcpError>> {
        async move { base.connect(peer).await.map(|c| self.tap.wrap(c)) }.boxed()
    }
    fn accept(&self, ch: Channel) -> Option<Channel> {
        Some(self.tap.wrap(ch))
    }
}

fn tap(
    name: String,
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
) -> Result<(Arc<dyn AcpTransport>, InboundStream)> {
    let security = inner.security();
    let tapped = Tapped {
        tap: Tap { name },
        security,
    };
    let (t, i) = secure::wrap(inner, inbound, tapped)?;
    Ok((t, i))
}

mod netns {
    //! `--netns`: the same scenario with real processes: a namespace per
    //! node, a veth pair per link, each node's ULA (fd00:99::N/128) on its
    //! loopback with routes along the topology, `graspd` in every namespace
    //! but Gray's (Briggs's runs the Briggs ASA), and Gray run by this
    //! process inside its namespace. Everything is removed afterwards.

    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    use super::*;
    use grasp_tools::config::{DaemonOverrides, NodeArgs, NodeConfig};

    fn ip(args: &[&str]) -> Result<()> {
        let out = Command::new("ip").args(args).output()?;
        if !out.status.success() {
            bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Namespaces and processes of one run; all removed on drop.
    struct NetLab {
        ns: Vec<String>,
        children: Vec<Child>,
    }

    impl Drop for NetLab {
        fn drop(&mut self) {
            for c in &mut self.children {
                stop(c);
            }
            for ns in self.ns.drain(..).rev() {
                let _ = ip(&["netns", "del", &ns]);
            }
        }
    }

    /// SIGTERM, then up to 5 s for a clean exit, then SIGKILL.
    fn stop(c: &mut Child) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    fn ula(i: usize) -> String {
        format!("fd00:99::{:x}", i + 1)
    }

    /// Next hop from `from` towards `to` (BFS), as (link index, neighbour).
    fn next_hop(
        n: usize,
        topo: &[(usize, usize)],
        from: usize,
        to: usize,
    ) -> Option<(usize, usize)> {
        // A shortest path from `to` back to `from` gives the first hop.
        let prev = bfs(n, topo, to).1;
        let hop = prev[from];
        if hop == usize::MAX || from == to {
            return None;
        }
        let link = topo
            .iter()
            .position(|&(a, b)| (a, b) == (from, hop) || (b, a) == (from, hop))?;
        Some((link, hop))
    }

    /// This end's interface name and link-local address on link `k`.
    fn end(topo: &[(usize, usize)], k: usize, node: usize) -> (String, String) {
        let first = topo[k].0 == node;
        (
            format!("v{k}{}", if first { 'a' } else { 'b' }),
            format!("fe80::{:x}:{}", k + 1, if first { 1 } else { 2 }),
        )
    }

    pub(super) fn run(args: &Args, security: Security, topo: &[(usize, usize)]) -> Result<bool> {
        if !nix::unistd::geteuid().is_root() {
            bail!("--netns needs root (it creates network namespaces); run without --netns for the in-process lab");
        }
        let graspd = std::env::current_exe()?.with_file_name("graspd");
        if !graspd.exists() {
            bail!(
                "{} not found: build it first (cargo build -p grasp-tools --bins)",
                graspd.display()
            );
        }
        let n = args.nodes;
        let dir = tempfile::tempdir()?;
        let mut lab = NetLab {
            ns: Vec::new(),
            children: Vec::new(),
        };
        let tag = std::process::id();
        for i in 0..n {
            let name = format!("gl{tag}n{i}");
            ip(&["netns", "add", &name])?;
            lab.ns.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/128", ula(i)),
                "dev",
                "lo",
            ])?;
            ip(&[
                "netns",
                "exec",
                &name,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.forwarding=1",
            ])?;
        }
        for (k, &(a, b)) in topo.iter().enumerate() {
            let (ia, la) = end(topo, k, a);
            let (ib, lb) = end(topo, k, b);
            ip(&[
                "-n", &lab.ns[a], "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns",
                &lab.ns[b],
            ])?;
            for (node, ifn, ll) in [(a, &ia, &la), (b, &ib, &lb)] {
                let ns = &lab.ns[node];
                ip(&["-n", ns, "link", "set", ifn, "addrgenmode", "none"])?;
                ip(&["-n", ns, "link", "set", ifn, "up"])?;
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{ll}/64"),
                    "dev",
                    ifn,
                    "nodad",
                ])?;
            }
        }
        for x in 0..n {
            for y in 0..n {
                if let Some((k, hop)) = next_hop(n, topo, x, y) {
                    let (ifn, _) = end(topo, k, x);
                    let (_, via) = end(topo, k, hop);
                    ip(&[
                        "-n",
                        &lab.ns[x],
                        "-6",
                        "route",
                        "add",
                        &format!("{}/128", ula(y)),
                        "via",
                        &via,
                        "dev",
                        &ifn,
                    ])?;
                }
            }
        }
        let Roles { far, reach, .. } = roles(n, topo);
        let creds = credentials(dir.path(), security, n, &args.password)?;
        if !args.quiet {
            grasp_tools::outln!(
                "grasp-lab --netns: {n} namespaces, {} topology, security {security}; graspd on N2..N{n} (Briggs on N{}, the others relay only), Gray in N1",
                args.topology,
                far + 1
            );
        }
        // graspd everywhere but Gray's namespace.
        let mut controls = Vec::new();
        for i in 1..n {
            let ifaces: Vec<String> = topo
                .iter()
                .enumerate()
                .filter(|(_, &(a, b))| a == i || b == i)
                .map(|(k, _)| format!("\"{}\"", end(topo, k, i).0))
                .collect();
            let control = dir.path().join(format!("n{}.sock", i + 1));
            let mut cfg = format!(
                "security = \"{security}\"\ninterfaces = [{}]\nrescan_secs = 1\n{}\n[control]\nsocket = \"{}\"\n",
                ifaces.join(", "),
                if i == far {
                    format!("asas = [\"briggs\"]\nasa_loop_count = {reach}")
                } else {
                    "relay_only = true".to_string()
                },
                control.display()
            );
            cfg.push_str(&creds.config(i));
            let path = dir.path().join(format!("n{}.toml", i + 1));
            std::fs::write(&path, cfg)?;
            let log = File::create(dir.path().join(format!("n{}.log", i + 1)))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &lab.ns[i]])
                .arg(&graspd)
                .arg("--config")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            lab.children.push(child);
            controls.push((format!("N{}", i + 1), control));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for (name, c) in &controls {
            let up = rt.block_on(async {
                for _ in 0..100 {
                    if grasp_tools::control::request(c, "stats").await.is_ok() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            });
            if !up {
                let log = std::fs::read_to_string(c.with_extension("log")).unwrap_or_default();
                bail!("graspd on {name} did not come up:\n{log}");
            }
        }
        // Gray, in N1's namespace, on a node of its own.
        let gray_ifaces: Vec<String> = topo
            .iter()
            .enumerate()
            .filter(|(_, &(a, b))| a == 0 || b == 0)
            .map(|(k, _)| end(topo, k, 0).0)
            .collect();
        let node_args = creds.args(0, gray_ifaces, security);
        let ns0 = lab.ns[0].clone();
        let (seed, quiet) = (args.seed, args.quiet);
        let gray_run = std::thread::spawn(move || -> Result<(GrayReport, EngineStats)> {
            let f = File::open(format!("/run/netns/{ns0}"))?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cfg = NodeConfig::resolve(&node_args, &DaemonOverrides::default())?;
                let node = grasp_tools::node::Node::start(&cfg).await?;
                let t = Transcript::new(quiet);
                let r =
                    gray_with(&node.grasp, seed + 1, Duration::from_secs(12), reach, &t).await?;
                let s = node.grasp.stats().await?.0;
                Ok((r, s))
            })
        });
        let (report, gray_stats) = gray_run
            .join()
            .map_err(|_| anyhow::anyhow!("Gray's thread panicked"))??;
        let mut counts = vec![NodeCounts::from_stats("N1", &gray_stats)];
        for (name, c) in &controls {
            let v = rt
                .block_on(grasp_tools::control::request(c, "stats"))
                .map_err(anyhow::Error::msg)?;
            counts.push(NodeCounts::from_json(name, &v));
        }
        let mut clean = true;
        for c in &mut lab.children {
            clean &= stop(c).is_some_and(|s| s.success());
        }
        if !clean {
            grasp_tools::outln!("warning: a graspd did not stop cleanly on SIGTERM");
        }
        Ok(summary(args, security, &report, &counts) && clean)
    }

    /// Keys or certificates for every node, in `dir`.
    struct Creds {
        dir: PathBuf,
        security: Security,
    }

    fn credentials(dir: &Path, security: Security, n: usize, password: &str) -> Result<Creds> {
        let _ = (n, password);
        match security {
            #[cfg(feature = "quads")]
            Security::Quads => {
                let pw = grasp_quads::Password::new(password)?;
                let params = grasp_quads::KdfParams::default();
                let kf = grasp_quads::KeyFile {
                    domain: "lab".into(),
                    params,
                    master: grasp_quads::MasterSecret::derive(&pw, "lab", params)?,
                };
                grasp_quads::write_key_file(&dir.join("domain.key"), &kf, false)?;
            }
            #[cfg(feature = "tls")]
            Security::Tls => {
                let (ca, key) = grasp_tls::certs::new_ca("lab", 1)?;
                std::fs::write(dir.join("ca.crt"), &ca)?;
                for i in 0..n {
                    let (c, k) = grasp_tls::certs::issue_node(
                        &ca,
                        key.as_ref(),
                        &format!("n{}.lab", i + 1),
                        1,
                    )?;
                    std::fs::write(dir.join(format!("n{}.crt", i + 1)), c)?;
                    write_private(&dir.join(format!("n{}.key", i + 1)), k.as_bytes())?;
                }
            }
            _ => {}
        }
        Ok(Creds {
            dir: dir.to_path_buf(),
            security,
        })
    }

    /// Writes a private key file, mode 0600 from creation.
    #[cfg(feature = "tls")]
    fn write_private(p: &Path, body: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)?;
        f.write_all(body)?;
        Ok(())
    }

    impl Creds {
        /// The TOML lines for node `i`.
        fn config(&self, i: usize) -> String {
            let d = self.dir.display();
            match self.security {
                Security::Quads => format!("[quads]\nkey_file = \"{d}/domain.key\"\n"),
                Security::Tls => format!(
                    "[tls]\ncert = \"{d}/n{n}.crt\"\nkey = \"{d}/n{n}.key\"\nca = \"{d}/ca.crt\"\n",
                    n = i + 1
                ),
                Security::None => String::new(),
            }
        }

        /// Flags for node `i` run in-process.
        fn args(&self, i: usize, interfaces: Vec<String>, security: Security) -> NodeArgs {
            let mut a = NodeArgs {
                security: Some(security.to_string()),
                interfaces,
                domain: "lab".into(),
                ..NodeArgs::default()
            };
            match security {
                Security::Quads => a.key_file = Some(self.dir.join("domain.key")),
                Security::Tls => {
                    a.cert = Some(self.dir.join(format!("n{}.crt", i + 1)));
                    a.key = Some(self.dir.join(format!("n{}.key", i + 1)));
                    a.ca = Some(self.dir.join("ca.crt"));
                }
                Security::None => {}
            }
            a
        }
    }
}
