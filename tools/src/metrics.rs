//! graspd's counters for Prometheus: `[metrics] listen = "[::1]:9464"`
//! serves `GET /metrics` in the Prometheus text format (prometheus-client
//! encodes it, hyper serves it). A scrape reads the same snapshot as
//! `grasp stats` ([`Node::stats_json`]), so the two never disagree and
//! nothing is counted twice; between scrapes it costs nothing.
//!
//! Names follow Prometheus's conventions: a `grasp_` prefix, `_total` on
//! counters, base units, and labels for what varies (`type` of message,
//! `layer` and `reason` of a drop, `kind` of relay, `limit` hit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value as Json;
use tracing::{debug, info, warn};

use crate::node::Node;

/// Scrapes served at once; more wait for their turn.
const MAX_SCRAPERS: usize = 8;
/// A scrape connection's whole life: a stuck client is cut off.
const CONNECTION_LIFE: Duration = Duration::from_secs(10);

type Labels = Vec<(String, String)>;

/// The exposition being built from one stats snapshot.
struct Build {
    reg: Registry,
}

impl Build {
    fn counter(&mut self, name: &str, help: &str, v: Option<u64>) {
        if let Some(v) = v {
            let c: Counter = Counter::default();
            c.inc_by(v);
            self.reg.register(name, help, c);
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: Option<u64>) {
        if let Some(v) = v {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            self.reg.register(name, help, g);
        }
    }

    /// A counter family with one label: for each (label value, key),
    /// the counter `v[key]`, where the snapshot has it.
    fn labelled(
        &mut self,
        name: &str,
        help: &str,
        v: &Json,
        label_name: &str,
        rows: &[(&str, &str)],
    ) {
        let rows = rows
            .iter()
            .filter_map(|(l, k)| Some((label(&[(label_name, l)]), u(v, &[k])?)))
            .collect();
        self.counters(name, help, rows);
    }

    /// A counter family: each (labels, value).
    fn counters(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        if rows.is_empty() {
            return;
        }
        let f = Family::<Labels, Counter>::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.reg.register(name, help, f);
    }
}

fn u(v: &Json, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Prometheus text exposition of a [`Node::stats_json`] snapshot.
pub fn render(s: &Json) -> String {
    let mut b = Build {
        reg: Registry::with_prefix("grasp"),
    };
    b.gauge(
        "uptime_seconds",
        "Seconds since graspd started",
        u(s, &["uptime_s"]),
    );
    if let Some(sec) = s.get("security").and_then(Json::as_str) {
        let f = Family::<Labels, Gauge>::default();
        f.get_or_create(&label(&[("security", sec)])).set(1);
        b.reg
            .register("node_info", "The node's security substrate", f);
    }
    let e = s.get("engine").cloned().unwrap_or(Json::Null);
    for (dir, help) in [
        ("received", "GRASP messages received, by type"),
        ("sent", "GRASP messages sent, by type"),
    ] {
        let rows = e
            .get(dir)
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(t, n)| Some((label(&[("type", t)]), n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        b.counters(&format!("messages_{dir}"), help, rows);
    }
    b.counter(
        "messages_unsent",
        "Messages the transport could not send",
        u(&e, &["unsent"]),
    );
    b.gauge(
        "open_channels",
        "Unicast channels (sessions) open",
        u(&e, &["open_channels"]),
    );
    for (k, name, help) in [
        ("asas", "asas", "Registered ASAs"),
        ("objectives", "objectives", "Registered objectives"),
        (
            "discovery_cache",
            "discovery_cache_objectives",
            "Objectives in the discovery cache",
        ),
        (
            "flood_cache",
            "flood_cache_entries",
            "Entries in the flood cache",
        ),
        (
            "discoveries",
            "discoveries_in_progress",
            "Discoveries under way",
        ),
    ] {
        b.gauge(name, help, u(&e, &["tables", k]));
    }
    b.labelled(
        "relayed",
        "Messages relayed to other interfaces, by kind",
        &e,
        "kind",
        &[
            ("discovery", "discoveries_relayed"),
            ("flood", "floods_relayed"),
        ],
    );
    b.labelled(
        "rate_limited",
        "Work refused by a rate limit, by limit",
        &e,
        "limit",
        &[
            ("relay", "relay_rate_limited"),
            ("relay_per_source", "relay_source_limited"),
            ("flood_relay", "flood_relay_rate_limited"),
            ("flood_relay_per_source", "flood_relay_source_limited"),
            ("response", "response_rate_limited"),
            ("response_per_source", "response_source_limited"),
        ],
    );
    for (k, help) in [
        ("responses_sent", "Discovery responses sent"),
        (
            "discoveries_repeated",
            "Discoveries repeated for want of answers",
        ),
        ("waits_capped", "M_WAIT times capped"),
        ("interface_changes", "Interface or address changes seen"),
        (
            "idle_channels_closed",
            "Inbound channels closed for silence",
        ),
    ] {
        b.counter(k, help, u(&e, &[k]));
    }
    b.counters(
        "dropped",
        "Messages, connections or requests dropped, by layer and reason",
        drops(s),
    );
    let t = s.get("transport").cloned().unwrap_or(Json::Null);
    b.counter(
        "multicast_sent",
        "Multicasts sent",
        u(&t, &["multicast_sent"]),
    );
    b.counter(
        "multicast_received",
        "Multicasts received",
        u(&t, &["multicast_received"]),
    );
    b.labelled(
        "channels",
        "Unicast channels, by how they began",
        &t,
        "event",
        &[
            ("opened", "channels_opened"),
            ("accepted", "channels_accepted"),
        ],
    );
    b.counter(
        "connect_failures",
        "Outbound connections that failed",
        u(&t, &["connect_failures"]),
    );
    if let Some(a) = s.get("api") {
        b.gauge("api_clients", "ASA clients connected", u(a, &["open"]));
        b.counter(
            "api_connections",
            "ASA client connections accepted",
            u(a, &["connections"]),
        );
        b.counter("api_calls", "ASA calls answered", u(a, &["calls"]));
        b.counter(
            "api_calls_failed",
            "ASA calls answered with an error",
            u(a, &["calls_failed"]),
        );
        b.counter(
            "api_events",
            "Events pushed to ASA clients",
            u(a, &["events"]),
        );
    }
    if let Some(q) = s.get("quads") {
        b.counter("quads_sealed", "QUADS records sealed", u(q, &["sealed"]));
        b.counter("quads_opened", "QUADS records opened", u(q, &["opened"]));
    }
    if let Some(x) = s.get("tls") {
        b.counter(
            "tls_multicast_signed",
            "Multicasts signed",
            u(x, &["multicast_signed"]),
        );
        b.counter(
            "tls_multicast_verified",
            "Multicasts whose signature verified",
            u(x, &["multicast_verified"]),
        );
        b.labelled(
            "tls_handshakes",
            "TLS connections set up, by side",
            x,
            "side",
            &[
                ("client", "connections_dialled"),
                ("server", "connections_accepted"),
            ],
        );
        b.labelled(
            "tls_streams",
            "Sessions carried on TLS connections, by side",
            x,
            "event",
            &[
                ("opened", "streams_opened"),
                ("accepted", "streams_accepted"),
            ],
        );
        b.counter(
            "tls_connections_idle_closed",
            "TLS connections closed when idle",
            u(x, &["connections_idle_closed"]),
        );
    }
    b.labelled(
        "key_reloads",
        "Key or certificate reloads (SIGHUP, grasp reload), by result",
        &s["key_reloads"],
        "result",
        &[("done", "done"), ("failed", "failed")],
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &b.reg);
    out
}

/// Every drop in the snapshot as (layer, reason) rows.
fn drops(s: &Json) -> Vec<(Labels, u64)> {
    let mut rows = Vec::new();
    let mut add = |layer: &str, reason: &str, v: Option<u64>| {
        if let Some(v) = v {
            rows.push((label(&[("layer", layer), ("reason", reason)]), v));
        }
    };
    let e = s.get("engine").cloned().unwrap_or(Json::Null);
    for k in [
        "malformed",
        "unknown_multicast",
        "dull_dropped",
        "duplicates",
        "asa_oversize",
        "discovery_answers_dropped",
        "bounded_refusals",
        "id_clashes",
    ] {
        add("engine", k, u(&e, &[k]));
    }
    let t = s.get("transport").cloned().unwrap_or(Json::Null);
    for (reason, k) in [
        ("multicast_oversize", "multicast_dropped_oversize"),
        ("multicast_queue_full", "multicast_dropped_queue_full"),
        ("multicast_kernel", "multicast_dropped_kernel"),
        ("multicast_other", "multicast_dropped_other"),
        ("malformed_stream", "malformed_streams"),
        ("connection_refused", "channels_refused"),
        ("connection_refused_source", "channels_refused_source"),
        ("connection_evicted", "channels_evicted"),
        ("connection_silent", "channels_silent"),
    ] {
        add("transport", reason, u(&t, &[k]));
    }
    for (layer, key) in [("quads", "dropped"), ("tls", "multicast_dropped")] {
        if let Some(m) = s
            .get(layer)
            .and_then(|x| x.get(key))
            .and_then(Json::as_object)
        {
            for (reason, v) in m {
                add(layer, reason, v.as_u64());
            }
        }
    }
    add(
        "quads_legacy",
        "undecryptable",
        u(s, &["quads_legacy", "dropped"]),
    );
    if let Some(x) = s.get("tls") {
        for (reason, k) in [
            ("connection_malformed", "connections_malformed"),
            ("connection_stalled", "connections_stalled"),
            ("stream_refused", "streams_refused"),
            ("stream_reset", "streams_reset"),
        ] {
            add("tls", reason, u(x, &[k]));
        }
    }
    if let Some(a) = s.get("api") {
        for (reason, k) in [
            ("connection_refused", "connections_refused"),
            ("not_authorized", "denied"),
            ("bad_request", "bad_requests"),
            ("event_dropped", "events_dropped"),
        ] {
            add("api", reason, u(a, &[k]));
        }
    }
    rows
}

/// Stops the metrics endpoint when dropped.
#[derive(Debug)]
pub struct MetricsGuard {
    task: tokio::task::JoinHandle<()>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for MetricsGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `addr` for `node` until the guard is dropped.
pub async fn serve(addr: SocketAddr, node: Arc<Node>) -> std::io::Result<MetricsGuard> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        warn!(%addr, "the metrics endpoint listens beyond loopback: anyone who reaches it reads the node's counters");
    }
    info!(%addr, "metrics endpoint listening (GET /metrics)");
    let turns = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                // EMFILE and friends: wait instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(turn) = turns.clone().acquire_owned().await else {
                return;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let _turn = turn;
                let service = hyper::service::service_fn(move |req| answer(req, node.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFE, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                    Err(_) => debug!(%peer, "metrics connection cut off after its time"),
                }
            });
        }
    });
    Ok(MetricsGuard { task, addr })
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    node: Arc<Node>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(&node.stats_json().await),
        ),
        (&Method::GET, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics is here\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        ),
    })
}
