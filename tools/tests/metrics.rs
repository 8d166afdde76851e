//! graspd's Prometheus endpoint (`[metrics] listen`), scraped live: the
//! text format's rules (a HELP and a TYPE per family, counters ending in
//! `_total`, `grasp_` names), the counters and gauges an operator looks
//! for, figures that follow what happens (an ASA client connecting and
//! registering an objective), and nothing but `GET /metrics` answered.
//! graspd runs on an interface that does not exist: it sends nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; (status line, headers, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").unwrap_or((&got, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_live_graspd_serves_its_counters_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = dir.path().join("api.sock");
    let conf = dir.path().join("graspd.toml");
    std::fs::write(
        &conf,
        format!(
            "security = \"none\"\ninterfaces = [\"gmetrics0\"]\n[api]\nsocket = \"{}\"\n[metrics]\nlisten = \"[::1]:{port}\"\n",
            api.display()
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_graspd"))
        .args(["--config", conf.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let explained = String::from_utf8_lossy(&check.stdout);
    assert!(
        explained.contains(&format!("http://[::1]:{port}/metrics")),
        "--check-config names the endpoint: {explained}"
    );
    let _graspd = Reap(
        Command::new(env!("CARGO_BIN_EXE_graspd"))
            .args(["--config", conf.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() || !api.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "graspd's endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, headers, body) = http(addr, "GET", "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    // The format: every sample's family has HELP and TYPE; names are
    // grasp_*, counters' samples end in _total; values are numbers.
    let mut types = std::collections::HashMap::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
        }
    }
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("grasp_"), "{l}");
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{l}");
        let family = types
            .keys()
            .find(|f| name == f.as_str() || name.strip_prefix(f.as_str()) == Some("_total"))
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "{l}");
        }
    }
    assert!(
        body.trim_end().ends_with("# EOF"),
        "the exposition ends with # EOF"
    );
    for want in [
        "grasp_uptime_seconds",
        "grasp_node_info{security=\"none\"} 1",
        "grasp_open_channels",
        "grasp_asas",
        "grasp_objectives",
        "grasp_discovery_cache_objectives",
        "grasp_flood_cache_entries",
        "grasp_api_clients",
        "grasp_dropped_total{layer=\"engine\",reason=\"malformed\"}",
        "grasp_dropped_total{layer=\"transport\",reason=\"multicast_queue_full\"}",
        "grasp_dropped_total{layer=\"api\",reason=\"not_authorized\"}",
        "grasp_rate_limited_total{limit=\"relay\"}",
        "grasp_relayed_total{kind=\"flood\"}",
        "grasp_key_reloads_total{result=\"done\"}",
    ] {
        assert!(body.contains(want), "no {want} in:\n{body}");
    }
    assert_eq!(sample(&body, "grasp_api_clients"), Some(0.0));
    // An ASA client with an objective shows up in the next scrape.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = grasp_asa_api::client::connect(&api).await.unwrap();
        let asa = g.register_asa("metrics-test").await.unwrap();
        let o = grasp_engine::wire::Objective::new(
            "EX.metrics",
            grasp_engine::wire::ObjectiveFlags::SYNCH,
        );
        asa.register_objective(&o, grasp_engine::RegisterOptions::default())
            .await
            .unwrap();
        let (_, _, body) = http(addr, "GET", "/metrics");
        assert_eq!(sample(&body, "grasp_api_clients"), Some(1.0), "{body}");
        assert_eq!(sample(&body, "grasp_asas"), Some(1.0), "{body}");
        assert_eq!(sample(&body, "grasp_objectives"), Some(1.0), "{body}");
        assert_eq!(
            sample(&body, "grasp_api_calls_total"),
            Some(2.0),
            "register_asa and register_objective: {body}"
        );
    });
    let (status, _, _) = http(addr, "GET", "/other");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _, _) = http(addr, "POST", "/metrics");
    assert!(status.contains(" 405 "), "{status}");
}
