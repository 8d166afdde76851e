//! One on-link source storms at full speed while two other nodes go on
//! working, directly and through a relay (issue 11 §3 and §4). Root only
//! (loudly skipped otherwise); everything stays in namespaces the test
//! creates and deletes.
//!
//! ```text
//!   L (legitimate, fd00:1::1) ─┐
//!   A (attacker,   fd00:1::66) ─┼─ bridge ── R graspd (relay, serves EX.near) ── S graspd
//!                              ┘   link 1                 link 2      (Briggs, serves and floods EX.far)
//! ```
//!
//! For each storm, L runs rounds of: discover EX.far (behind the relay)
//! and synchronize it, four times a second discover EX.deep (behind the
//! relay, answers valid 50 ms: never from a cache) and synchronize it, negotiate a loan with Briggs on S (through R),
//! discover and synchronize EX.near (R itself), and checks that S's flood
//! of EX.far keeps arriving across R. Every kind of operation must succeed
//! at least 95% of the time. The figures are printed.
//!
//! `GRASP_STORM_SECS` sets each storm's length (default 6); with
//! `GRASP_STORM_GRASPD=PATH` R (the node under attack) runs that graspd
//! instead (S stays this build's: its 50 ms answers need `ttl_ms`), and with
//! `GRASP_STORM_REPORT_ONLY=1` nothing is asserted: `tools/bench/storms.sh`
//! uses both to measure an older graspd beside this one.

mod daemon;
use daemon::*;

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_engine::wire::{
    Discovery, Flood, Message, Objective, ObjectiveFlags, SessionId, TaggedObjective, Value,
};
use grasp_engine::{Config, DiscoverOptions};
use grasp_engine::{Grasp, Negotiation};
use grasp_tests::netns::{spawn_in, Lab, Netns};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
/// R's unicast port (the connection flood's target).
const R_PORT: u16 = 7100;
/// How long L waits for a fresh flood of EX.far (S floods every second).
const FLOOD_WINDOW: Duration = Duration::from_millis(2500);
/// The attacker's UDP source port (and the TCP port R's answers reach).
const STORM_PORT: u16 = 7200;

fn storm_secs() -> u64 {
    std::env::var("GRASP_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

fn report_only() -> bool {
    std::env::var_os("GRASP_STORM_REPORT_ONLY").is_some()
}

fn graspd_bin() -> String {
    std::env::var("GRASP_STORM_GRASPD").unwrap_or_else(|_| GRASPD.to_string())
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

struct Domain {
    // Daemons before the lab: they stop before their namespaces go.
    _daemons: Vec<Reap>,
    l: Netns,
    a: Netns,
    r_sock: PathBuf,
    _dir: tempfile::TempDir,
    _lab: Lab,
}

fn graspd(
    bin: &str,
    ns: &Netns,
    conf: &std::path::Path,
    sock: &std::path::Path,
    log: &std::path::Path,
) -> Reap {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, bin])
        .args(["--config", conf.to_str().unwrap()])
        .env(
            "RUST_LOG",
            std::env::var("GRASP_STORM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let mut d = Reap(c.spawn().unwrap());
    wait_for("graspd's control socket", || {
        if let Ok(Some(s)) = d.0.try_wait() {
            panic!(
                "graspd exited ({s}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        sock.exists()
    });
    d
}
fn domain() -> Domain {
    let mut lab = Lab::new();
    let sw = lab.netns().unwrap();
    lab.bridge(&sw, "br0").unwrap();
    let (l, a, r, s) = (
        lab.netns().unwrap(),
        lab.netns().unwrap(),
        lab.netns().unwrap(),
        lab.netns().unwrap(),
    );
    for (ns, ifname, ll, ula, port, sw_ll) in [
        (&l, "l0", "fe80::1:1", "fd00:1::1", "sw-l", "fe80::ff:1"),
        (&a, "a0", "fe80::1:66", "fd00:1::66", "sw-a", "fe80::ff:2"),
        (&r, "r0", "fe80::1:2", "fd00:1::2", "sw-r", "fe80::ff:3"),
    ] {
        lab.veth(
            ns,
            ifname,
            a6(ll),
            Some(a6(ula)),
            &sw,
            port,
            a6(sw_ll),
            None,
        )
        .unwrap();
        lab.bridge_port(&sw, port, "br0").unwrap();
    }
    // The connection flood comes from sixteen addresses of A.
    for i in 0..16 {
        lab.addr(&a, "a0", &format!("fd00:1::1{i:02x}/64")).unwrap();
    }
    lab.link(2, (&r, "r1"), (&s, "s0")).unwrap();
    lab.forwarding(&r).unwrap();
    lab.route(&l, "fd00:2::/64", "fe80::1:2", "l0").unwrap();
    lab.route(&s, "fd00:1::/64", "fe80::2:1", "s0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Logs stay where GRASP_STORM_LOGS says, if it does.
    let logs = std::env::var("GRASP_STORM_LOGS").map_or(dir.path().to_path_buf(), PathBuf::from);
    let (r_conf, r_sock) = daemon_config(
        dir.path(),
        "r",
        &format!(
            "security = \"none\"\ninterfaces = [\"r0\", \"r1\"]\nport = {R_PORT}\n[[serve]]\nname = \"EX.near\"\nvalue = '\"near\"'"
        ),
    );
    let (s_conf, s_sock) = daemon_config(
        dir.path(),
        "s",
        "security = \"none\"\ninterfaces = [\"s0\"]\nasas = [\"briggs\"]\n[[serve]]\nname = \"EX.far\"\nvalue = '\"far\"'\nflood_every_secs = 1\nloop_count = 3\n[[serve]]\nname = \"EX.deep\"\nvalue = '\"deep\"'\nttl_ms = 50",
    );
    let daemons = vec![
        graspd(&graspd_bin(), &r, &r_conf, &r_sock, &logs.join("r.log")),
        graspd(GRASPD, &s, &s_conf, &s_sock, &logs.join("s.log")),
    ];
    Domain {
        _daemons: daemons,
        l,
        a,
        r_sock,
        _dir: dir,
        _lab: lab,
    }
}

/// Successes and attempts per kind of operation, and the first failure of
/// each.
#[derive(Debug, Default)]
struct Tally(
    BTreeMap<&'static str, (u32, u32)>,
    BTreeMap<&'static str, String>,
);

impl Tally {
    fn add(&mut self, what: &'static str, ok: bool) {
        self.add_why(what, ok, String::new);
    }

    fn add_why(&mut self, what: &'static str, ok: bool, why: impl FnOnce() -> String) {
        let e = self.0.entry(what).or_default();
        e.0 += u32::from(ok);
        e.1 += 1;
        if !ok {
            self.1.entry(what).or_insert_with(why);
        }
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(k, (ok, n))| {
                format!(
                    "{k} {ok}/{n} ({:.0}%)",
                    100.0 * f64::from(*ok) / f64::from((*n).max(1))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
            + &self
                .1
                .iter()
                .filter(|(_, w)| !w.is_empty())
                .map(|(k, w)| format!("; first {k} failure: {w}"))
                .collect::<String>()
    }

    fn check(&self, storm: &str) {
        for (k, (ok, n)) in &self.0 {
            // Flood windows are counted as L's rounds pass them; a slow
            // round (a debug build under a storm) can make one window of
            // a short storm.
            let least = if *k == "flood-far" { 1 } else { 2 };
            assert!(
                *n >= least,
                "{storm}: only {n} attempts of {k}: {}",
                self.line()
            );
            assert!(
                f64::from(*ok) >= 0.95 * f64::from(*n),
                "{storm}: {k} succeeded {ok} of {n} times: {}",
                self.line()
            );
        }
    }
}

/// L's work for `secs`, on its own engine over the plain ACP.
async fn legit(secs: u64) -> Tally {
    let (t, inbound) =
        grasp_acp::plain::bind(grasp_acp::plain::Config::default().interfaces(["l0"]))
            .await
            .unwrap();
    let mut cfg = Config::default();
    cfg.allow_insecure = true; // a lab on the plain ACP
    let g = Grasp::start(t, inbound, cfg);
    let asa = g.register_asa("legit").await.unwrap();
    let fresh = |t: Duration| DiscoverOptions {
        flush: true,
        ..DiscoverOptions::first(t)
    };
    let loan = Objective::new("EX3", NEG)
        .with_loop_count(6)
        .with_value(Value::from_serialize(&("NZD", 40)).unwrap());
    let mut tally = Tally::default();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    // S floods EX.far every second: each 2.5-second window (two or three floods)
    // must see a new one. Floods are multicast, unreliable by design and
    // repeated; L shares the attacked link, and in a debug build its own
    // socket drops some of the storm and with it now and then a flood.
    let mut window = (t0 + FLOOD_WINDOW, None::<Instant>, false);
    // EX.deep's answers live 50 ms, so no cache answers for it: R must relay
    // each discovery. Four a second (L's own relay share is 25/s).
    let mut next_deep = t0;
    while Instant::now() < end {
        if Instant::now() >= next_deep {
            next_deep = Instant::now() + Duration::from_millis(250);
            let deep = asa
                .discover(
                    &Objective::new("EX.deep", SYNCH),
                    fresh(Duration::from_secs(1)),
                )
                .await;
            let peer = deep.as_ref().ok().and_then(|f| f.first().cloned());
            tally.add("discover-deep", peer.is_some());
            if let Some(p) = peer {
                let got = asa
                    .synchronize(
                        &Objective::new("EX.deep", SYNCH),
                        Some(p),
                        Duration::from_secs(2),
                    )
                    .await;
                tally.add_why("sync-deep", got.is_ok(), || format!("{got:?}"));
            }
        }
        let far = asa
            .discover(
                &Objective::new("EX.far", SYNCH),
                fresh(Duration::from_secs(1)),
            )
            .await;
        let peer = far.as_ref().ok().and_then(|f| f.first().cloned());
        tally.add("discover-far", peer.is_some());
        let got = asa
            .synchronize(
                &Objective::new("EX.far", SYNCH),
                peer,
                Duration::from_secs(2),
            )
            .await;
        let ok = got
            .as_ref()
            .is_ok_and(|o| o.value.as_ref().and_then(|v| v.as_str()) == Some("far"));
        tally.add_why("sync-far", ok, || format!("{got:?}"));
        let n = asa
            .request_negotiate(&loan, None, Duration::from_secs(3))
            .await;
        tally.add_why(
            "negotiate-far",
            matches!(n, Ok(Negotiation::Accepted)),
            || format!("{n:?}"),
        );
        let near = asa
            .discover(
                &Objective::new("EX.near", SYNCH),
                fresh(Duration::from_secs(1)),
            )
            .await;
        let peer = near.as_ref().ok().and_then(|f| f.first().cloned());
        tally.add("discover-near", peer.is_some());
        let got = asa
            .synchronize(
                &Objective::new("EX.near", SYNCH),
                peer,
                Duration::from_secs(2),
            )
            .await;
        tally.add_why("sync-near", got.is_ok(), || format!("{got:?}"));
        // Floods: has the cached EX.far been refreshed in this window?
        let latest = asa
            .get_flood("EX.far")
            .await
            .ok()
            .and_then(|v| v.iter().filter_map(|e| e.expires).max());
        if let (Some(l), Some(prev)) = (latest, window.1) {
            window.2 |= l > prev;
        }
        if window.1.is_none() {
            window.1 = latest;
        }
        if Instant::now() >= window.0 {
            tally.add("flood-far", window.2);
            window = (Instant::now() + FLOOD_WINDOW, latest, false);
        }
    }
    tally
}

#[derive(Clone, Copy, Debug)]
enum Storm {
    /// Discoveries of an objective nobody serves, fresh session ids: R
    /// relays them.
    Discovery,
    /// Floods with fresh session ids: R relays them.
    Flood,
    /// Discoveries of the objective R serves: R answers each by TCP to the
    /// claimed sender (a reflection path).
    Served,
    /// Silent TCP connections to R from sixteen addresses, reconnecting.
    Connections,
}

fn storm_message(kind: Storm, sid: u32) -> bytes::Bytes {
    let initiator = std::net::IpAddr::V6(a6("fd00:1::66"));
    let obj = |name: &str| {
        Objective::new(name, SYNCH)
            .with_loop_count(6)
            .with_value(Value::null())
    };
    match kind {
        Storm::Flood => Message::Flood(Flood {
            session_id: SessionId(sid),
            initiator,
            ttl_ms: 60_000,
            tagged: vec![TaggedObjective {
                objective: obj("EX.junk"),
                locator: None,
            }],
            extensions: Vec::new(),
        }),
        Storm::Served | Storm::Discovery | Storm::Connections => Message::Discovery(Discovery {
            session_id: SessionId(sid),
            initiator,
            objective: obj(if matches!(kind, Storm::Served) {
                "EX.near"
            } else {
                "EX.nothing"
            }),
            extensions: Vec::new(),
        }),
    }
    .encode()
}

/// A's storm for `secs`; returns what it sent, and for `Served` the
/// connections R opened back to it.
async fn attack(kind: Storm, secs: u64) -> (u64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    if let Storm::Connections = kind {
        return (connection_flood(end), 0);
    }
    let reflected = Arc::new(AtomicU64::new(0));
    let listener = {
        let l = std::net::TcpListener::bind("[::]:7200").unwrap();
        l.set_nonblocking(true).unwrap();
        let n = reflected.clone();
        std::thread::spawn(move || {
            while Instant::now() < end + Duration::from_secs(1) {
                match l.accept() {
                    Ok(_) => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let ifindex = nix::net::if_::if_nametoindex("a0").unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    s.set_only_v6(true).unwrap();
    s.set_multicast_hops_v6(1).unwrap();
    s.set_multicast_if_v6(ifindex).unwrap();
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, STORM_PORT)).into())
        .unwrap();
    let dst: socket2::SockAddr = SocketAddrV6::new(a6("ff02::13"), 7017, 0, ifindex).into();
    let mut sent = 0u64;
    let mut sid = 0x4000_0000u32;
    while Instant::now() < end {
        for _ in 0..256 {
            sid = sid.wrapping_add(1);
            if s.send_to(&storm_message(kind, sid), &dst).is_ok() {
                sent += 1;
            }
        }
    }
    listener.join().unwrap();
    (sent, reflected.load(Ordering::Relaxed))
}

/// Opens silent connections to R from sixteen source addresses until
/// `end`, holding up to 3,000 and replacing the oldest as it goes.
fn connection_flood(end: Instant) -> u64 {
    let to: socket2::SockAddr = SocketAddr::from((a6("fd00:1::2"), R_PORT)).into();
    let mut held = std::collections::VecDeque::new();
    let mut opened = 0u64;
    while Instant::now() < end {
        let from = SocketAddr::from((a6(&format!("fd00:1::1{:02x}", opened % 16)), 0));
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        if s.bind(&from.into()).is_ok()
            && s.connect_timeout(&to, Duration::from_millis(200)).is_ok()
        {
            opened += 1;
            held.push_back(s);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        if held.len() > 3000 {
            held.pop_front();
        }
    }
    opened
}

fn r_stats(d: &Domain) -> serde_json::Value {
    let sock = d.r_sock.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(grasp_tools::control::request(&sock, "stats"))
        .unwrap()
}

#[test]
fn legitimate_traffic_survives_a_storm_from_one_source() {
    if Lab::skip_loudly("legitimate_traffic_survives_a_storm_from_one_source") {
        return;
    }
    let d = domain();
    let secs = storm_secs();
    // Let S's first floods and Briggs settle.
    std::thread::sleep(Duration::from_secs(2));
    let calm = spawn_in(&d.l, move || legit(6)).join().unwrap().unwrap();
    println!("no storm: {}", calm.line());
    if !report_only() {
        calm.check("no storm");
    }
    let mut failures = Vec::new();
    let only = std::env::var("GRASP_STORM_ONLY").unwrap_or_default();
    for kind in [
        Storm::Discovery,
        Storm::Flood,
        Storm::Served,
        Storm::Connections,
    ] {
        if !only.is_empty() && !format!("{kind:?}").eq_ignore_ascii_case(&only) {
            continue;
        }
        let before = r_stats(&d);
        let storm = spawn_in(&d.a, move || attack(kind, secs + 1));
        std::thread::sleep(Duration::from_millis(500));
        let tally = spawn_in(&d.l, move || legit(secs)).join().unwrap().unwrap();
        let (sent, reflected) = storm.join().unwrap().unwrap();
        let after = r_stats(&d);
        let e = |s: &serde_json::Value, k: &str| s["engine"][k].as_u64().unwrap_or(0);
        let t = |s: &serde_json::Value, k: &str| s["transport"][k].as_u64().unwrap_or(0);
        let delta_e = |k| e(&after, k) - e(&before, k);
        let delta_t = |k| t(&after, k) - t(&before, k);
        println!(
            "{kind:?} storm: {sent} sent in {} s ({:.0}/s); {}",
            secs + 1,
            sent as f64 / (secs + 1) as f64,
            tally.line()
        );
        println!(
            "  R: relayed {} discoveries, {} floods; source-limited: relay {} flood {} response {}; responses {}; kernel drops {}, queue drops {}; connections refused {} (by source {}), evicted {}; reflected connections to A {reflected} ({:.0}/s)",
            delta_e("discoveries_relayed"),
            delta_e("floods_relayed"),
            delta_e("relay_source_limited"),
            delta_e("flood_relay_source_limited"),
            delta_e("response_source_limited"),
            delta_e("responses_sent"),
            delta_t("multicast_dropped_kernel"),
            delta_t("multicast_dropped_queue_full"),
            delta_t("channels_refused"),
            delta_t("channels_refused_source"),
            delta_t("channels_evicted"),
            reflected as f64 / (secs + 1) as f64,
        );
        if report_only() {
            continue;
        }
        if let Err(e) = std::panic::catch_unwind(|| tally.check(&format!("{kind:?} storm"))) {
            failures.push(e);
        }
        if let Storm::Served = kind {
            // R answers the claimed sender at its own rate (100/s, a burst
            // of 200), not at R's whole response rate (2,000/s). Counted
            // over the storm plus the second after it (R still works
            // through its queue then).
            assert!(
                reflected <= 100 * (secs + 2) + 200,
                "R opened {reflected} connections towards the storm's source"
            );
        }
    }
    if let Some(e) = failures.pop() {
        std::panic::resume_unwind(e);
    }
}
