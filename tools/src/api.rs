//! graspd's ASA socket (issue 12): ASAs in other processes use this node's
//! GRASP core, its cache, relaying and keys, instead of each being a node of
//! its own. The protocol is `tools/asa-api/asa-protocol.cddl`; frames and
//! envelopes come from `grasp_asa_api`.
//!
//! This first slice serves `hello`, ASA and objective registration,
//! discovery, synchronization (and listening for it), flooding and
//! negotiation (request, step, wait, end, send_invalid, listen, stop).
//! `expire_flood` and negotiation subscriptions (requests as events) too.
//! Flood subscriptions, streamed discovery, the raw channel, `dump` and the
//! authorization policy are still to come: those methods
//! answer `unsupported`, and until the policy exists the socket is mode
//! 0600, so only graspd's own user (and root) can connect.
//!
//! An ASA belongs to the connection that registered it: when the connection
//! ends, its outstanding calls are abandoned, its open negotiation
//! sessions declined ("ASA gone") and its ASAs (with their objectives and
//! listeners) deregistered. Per connection: at most
//! [`Limits::requests`] calls outstanding and [`Limits::asas`] ASAs; in
//! all, [`Limits::connections`] connections.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use grasp_asa_api::{ApiCode, Frame, FrameError, WireError};
use grasp_engine::proto::{AsaLocator, DiscoverOptions, FloodEntry, RegisterOptions};
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{Limits as WireLimits, Locator, Objective, TaggedObjective};
use grasp_engine::{ApiError, Asa, Grasp, Negotiation, NegotiationListener, Session};
use tokio::net::UnixStream;

use crate::socket::SocketGuard;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The smallest frame limit a client may ask for in `hello`.
pub const MIN_FRAME: usize = 1024;

/// Bounds of the ASA socket.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections at once.
    pub connections: usize,
    /// Calls outstanding per connection.
    pub requests: usize,
    /// ASAs per connection.
    pub asas: usize,
    /// Negotiation sessions per connection.
    pub sessions: usize,
    /// Largest frame, either way.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 256,
            requests: 256,
            asas: 16,
            sessions: 256,
            max_frame: grasp_asa_api::DEFAULT_MAX_FRAME,
        }
    }
}

/// The ASA socket's counters (in `grasp stats` under "api").
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (too many at once).
    pub connections_refused: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Calls answered.
    pub calls: AtomicU64,
    /// Calls answered with an error (of the engine or the API).
    pub calls_failed: AtomicU64,
    /// Requests refused as malformed (badRequest), or frames that closed
    /// their connection (not a frame, oversized, a response from a client).
    pub bad_requests: AtomicU64,
    /// Events sent to subscribers.
    pub events: AtomicU64,
    /// Events a client lost because it was not reading (its queue full).
    pub events_dropped: AtomicU64,
}

impl Stats {
    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "connections": g(&self.connections),
            "connections_refused": g(&self.connections_refused),
            "open": g(&self.open),
            "calls": g(&self.calls),
            "calls_failed": g(&self.calls_failed),
            "bad_requests": g(&self.bad_requests),
            "events": g(&self.events),
            "events_dropped": g(&self.events_dropped),
        })
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What `hello` tells a client about this node.
#[derive(Clone)]
pub struct NodeFacts {
    /// The transport (interfaces, locator, security, message size).
    pub transport: Arc<dyn AcpTransport>,
    /// Relaying between interfaces.
    pub relay: bool,
    /// A DULL instance.
    pub dull: bool,
}

impl std::fmt::Debug for NodeFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFacts")
            .field("locator", &self.transport.node_locator())
            .field("relay", &self.relay)
            .field("dull", &self.dull)
            .finish()
    }
}

/// The node's side of the ASA socket: the engine and what it says of
/// itself.
#[derive(Clone, Debug)]
pub struct Core {
    /// The engine's API.
    pub grasp: Grasp,
    /// What `hello` says.
    pub facts: NodeFacts,
    /// Bounds.
    pub limits: Limits,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// Listens on `path` (replacing a stale socket there, mode 0600) until the
/// returned guard is dropped.
pub fn serve(path: &Path, core: Core) -> std::io::Result<SocketGuard> {
    let permits = Arc::new(tokio::sync::Semaphore::new(core.limits.connections));
    let guard = crate::socket::serve_private(path, "api.socket", move |s| {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!("ASA client refused: too many connections");
            bump(&core.stats.connections_refused);
            return;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(s, core).await;
        });
    })?;
    info!(socket = %path.display(), "ASA socket listening");
    Ok(guard)
}

/// One client, until it goes; then everything it registered goes too.
pub async fn connection(stream: UnixStream, core: Core) {
    let stats = core.stats.clone();
    bump(&stats.connections);
    stats.open.fetch_add(1, Ordering::Relaxed);
    serve_connection(stream, core).await;
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_connection(stream: UnixStream, core: Core) {
    let framed =
        tokio_util::codec::Framed::new(stream, grasp_asa_api::codec(core.limits.max_frame));
    let (mut sink, mut source) = framed.split();
    // Answers wait here for the writer; bounded by the outstanding calls.
    let (tx, mut rx) = mpsc::channel::<Frame>(core.limits.requests + 2);
    // The largest frame the client takes (hello may lower it).
    let max_out = Arc::new(AtomicUsize::new(core.limits.max_frame));
    let writer = {
        let max_out = max_out.clone();
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let mut bytes = f.encode();
                let max = max_out.load(Ordering::Relaxed);
                if bytes.len() > max {
                    // Never more than the client said it takes: an answer
                    // becomes tooLarge; anything else cannot be sent.
                    let Frame::Response { id, .. } = f else {
                        continue;
                    };
                    bytes = Frame::Response {
                        id,
                        err: Some(ApiCode::TooLarge.error(format!(
                            "the answer is {} bytes; this connection takes {max}",
                            bytes.len()
                        ))),
                        result: Value::Null,
                    }
                    .encode();
                }
                if sink.send(Bytes::from(bytes)).await.is_err() {
                    return;
                }
            }
        })
    };
    let conn = Arc::new(Conn {
        core,
        asas: Mutex::new(HashMap::new()),
        registering: AtomicUsize::new(0),
        next_asa: AtomicU64::new(1),
        closed: AtomicBool::new(false),
        sessions: Mutex::new(HashMap::new()),
        next_session: AtomicU64::new(1),
        listeners: Mutex::new(HashMap::new()),
        events: tx.clone(),
        subscriptions: Mutex::new(HashMap::new()),
    });
    let mut calls: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut greeted = false;
    loop {
        let next = tokio::select! {
            n = source.next() => n,
            // Finished calls leave the table.
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    calls.remove(&id);
                }
                continue;
            }
        };
        let raw = match next {
            Some(Ok(raw)) => raw,
            Some(Err(e)) => {
                // Oversized (refused from its length) or an I/O error.
                debug!(error = %e, "ASA client frame refused; closing");
                bump(&conn.core.stats.bad_requests);
                let _ = tx.try_send(closing(ApiCode::TooLarge.error(e.to_string())));
                break;
            }
            None => break,
        };
        let frame = match Frame::decode(&raw) {
            Ok(f) => f,
            Err(FrameError::NotAFrame { id: Some(id), why }) => {
                bump(&conn.core.stats.bad_requests);
                respond(&tx, id, Err(ApiCode::BadRequest.error(why))).await;
                continue;
            }
            Err(e) => {
                debug!(error = %e, "ASA client sent what is not a frame; closing");
                bump(&conn.core.stats.bad_requests);
                let _ = tx.try_send(closing(ApiCode::BadRequest.error(e.to_string())));
                break;
            }
        };
        match frame {
            Frame::Request { id, method, params } => {
                if calls.contains_key(&id) {
                    respond(
                        &tx,
                        id,
                        Err(ApiCode::BadRequest.error("this id is outstanding already")),
                    )
                    .await;
                    continue;
                }
                if !greeted {
                    if method != "hello" {
                        respond(&tx, id, Err(ApiCode::NotHello.error("call hello first"))).await;
                        continue;
                    }
                    let r = hello(&conn.core, &params);
                    if let Ok(v) = &r {
                        if let Some(m) = grasp_asa_api::get(v, "max_frame").and_then(as_u64) {
                            max_out.store(m as usize, Ordering::Relaxed);
                        }
                    }
                    greeted = r.is_ok();
                    respond(&tx, id, r).await;
                    continue;
                }
                if calls.len() >= conn.core.limits.requests {
                    respond(
                        &tx,
                        id,
                        Err(ApiCode::TooMany.error(format!(
                            "{} calls outstanding on this connection",
                            calls.len()
                        ))),
                    )
                    .await;
                    continue;
                }
                let (conn, tx) = (conn.clone(), tx.clone());
                let h = tasks.spawn(async move {
                    let r = conn.call(id, &method, &params).await;
                    bump(&conn.core.stats.calls);
                    if let Err(e) = &r {
                        bump(&conn.core.stats.calls_failed);
                        if e.code == ApiCode::BadRequest as u64 {
                            bump(&conn.core.stats.bad_requests);
                        }
                    }
                    respond(&tx, id, r).await;
                    id
                });
                calls.insert(id, h);
            }
            Frame::Cancel { id } => {
                if let Some(h) = calls.remove(&id) {
                    h.abort();
                    respond(&tx, id, Err(ApiCode::Cancelled.error("cancelled"))).await;
                }
            }
            Frame::Response { .. } | Frame::Event { .. } => {
                let _ = tx.try_send(closing(
                    ApiCode::BadRequest.error("clients send requests and cancels only"),
                ));
                break;
            }
        }
    }
    // The client is gone: abandon its calls, then deregister its ASAs.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    for (_, t) in lock(&conn.subscriptions).drain() {
        t.abort();
    }
    for (_, (_, stop)) in lock(&conn.listeners).drain() {
        stop.cancel();
    }
    // Its open sessions end with a decline the peer can read.
    let sessions: Vec<Session> = lock(&conn.sessions).drain().map(|(_, (_, s))| s).collect();
    for s in sessions {
        let _ = s.decline(Some("ASA gone")).await;
    }
    let asas: Vec<Asa> = {
        let mut a = lock(&conn.asas);
        conn.closed.store(true, Ordering::SeqCst);
        a.drain().map(|(_, a)| a).collect()
    };
    for a in asas {
        let _ = a.deregister().await;
    }
    drop(tx);
    drop(conn); // its copy of the writer's queue
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closing(e: WireError) -> Frame {
    Frame::Event {
        subscription: 0,
        kind: "closing".into(),
        data: wire_error_value(&e),
    }
}

fn wire_error_value(e: &WireError) -> Value {
    Value::Array(vec![
        Value::Integer(e.code.into()),
        Value::Text(e.name.clone()),
        Value::Text(e.detail.clone()),
    ])
}

async fn respond(tx: &mpsc::Sender<Frame>, id: u64, r: Result<Value, WireError>) {
    let f = match r {
        Ok(result) => Frame::Response {
            id,
            err: None,
            result,
        },
        Err(e) => Frame::Response {
            id,
            err: Some(e),
            result: Value::Null,
        },
    };
    let _ = tx.send(f).await;
}

fn hello(core: &Core, params: &[(String, Value)]) -> Result<Value, WireError> {
    let p = Params(params);
    let versions = p.list("versions")?;
    if !versions
        .iter()
        .any(|v| as_u64(v) == Some(grasp_asa_api::VERSION))
    {
        return Err(ApiCode::Unsupported.error(format!(
            "this graspd speaks version {} of the ASA protocol",
            grasp_asa_api::VERSION
        )));
    }
    // At least MIN_FRAME, so an error always fits.
    let max_frame = p.opt_u64("max_frame")?.map_or(core.limits.max_frame, |m| {
        (m as usize).clamp(MIN_FRAME, core.limits.max_frame.max(MIN_FRAME))
    });
    let t = &core.facts.transport;
    let interfaces = t
        .interfaces()
        .into_iter()
        .map(|i| {
            map(vec![
                ("name", Value::Text(i.name)),
                ("index", Value::Integer(i.index.into())),
                ("link_local", Value::Bytes(i.link_local.octets().to_vec())),
            ])
        })
        .collect();
    let security = match t.security() {
        grasp_engine::transport::Security::None => "none",
        grasp_engine::transport::Security::Quads => "quads",
        grasp_engine::transport::Security::Tls => "tls",
        _ => "other", // a backend newer than this file
    };
    Ok(map(vec![
        ("version", Value::Integer(grasp_asa_api::VERSION.into())),
        ("features", Value::Array(Vec::new())),
        ("max_frame", Value::Integer((max_frame as u64).into())),
        (
            "node",
            map(vec![
                ("locator", Value::Bytes(t.node_locator().encode().to_vec())),
                ("interfaces", Value::Array(interfaces)),
                ("relay", Value::Bool(core.facts.relay)),
                ("dull", Value::Bool(core.facts.dull)),
                ("security", Value::Text(security.into())),
                (
                    "daemon",
                    Value::Text(format!("graspd {}", env!("CARGO_PKG_VERSION"))),
                ),
            ]),
        ),
        (
            "limits",
            map(vec![
                ("asas", uint(core.limits.asas)),
                ("sessions", uint(core.limits.sessions)),
                ("requests", uint(core.limits.requests)),
                ("max_message", uint(t.max_message_size())),
            ]),
        ),
    ]))
}

/// A connection's ASAs.
struct Conn {
    core: Core,
    asas: Mutex<HashMap<u64, Asa>>,
    /// register_asa calls under way (they count against the limit).
    registering: AtomicUsize,
    next_asa: AtomicU64,
    /// The client is gone: ASAs registered now are deregistered at once.
    closed: AtomicBool,
    /// Negotiation sessions where it is the client's turn, by handle. A
    /// session is taken out while a call uses it.
    sessions: Mutex<HashMap<u64, (u64, Session)>>,
    next_session: AtomicU64,
    /// Negotiation listeners by (ASA, objective name), shared by the
    /// outstanding listen_negotiate calls; stop_negotiate cancels them.
    listeners: Mutex<HashMap<(u64, String), Listening>>,
    /// Where events go (the writer's queue; full: the event is dropped and
    /// counted, never waited for).
    events: mpsc::Sender<Frame>,
    /// Subscriptions by id, with their tasks.
    subscriptions: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
}

/// A negotiation listener shared by the listen_negotiate calls of one
/// (ASA, objective), and what stops them.
type Listening = (Arc<NegotiationListener>, CancellationToken);

/// A register_asa under way, counted until it is dropped.
struct Reserved(Arc<Conn>);

impl Reserved {
    fn new(conn: Arc<Conn>) -> Self {
        conn.registering.fetch_add(1, Ordering::SeqCst);
        Reserved(conn)
    }

    /// Other register_asa calls under way.
    fn others(&self) -> usize {
        self.0.registering.load(Ordering::SeqCst).saturating_sub(1)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.registering.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    fn asa(&self, p: &Params<'_>) -> Result<Asa, WireError> {
        let h = p.u64("asa")?;
        lock(&self.asas)
            .get(&h)
            .cloned()
            .ok_or_else(|| engine_error(&ApiError::from(grasp_engine::ErrorCode::NoAsa)))
    }

    fn room_for_a_session(&self) -> Result<(), WireError> {
        if lock(&self.sessions).len() >= self.core.limits.sessions {
            return Err(ApiCode::TooMany.error(format!(
                "{} negotiation sessions open on this connection",
                self.core.limits.sessions
            )));
        }
        Ok(())
    }

    /// The listener of (`h`, `name`), made on first use and shared.
    async fn listening(&self, asa: &Asa, h: u64, name: &str) -> Result<Listening, WireError> {
        if let Some(l) = lock(&self.listeners).get(&(h, name.to_string())).cloned() {
            return Ok(l);
        }
        let l = Arc::new(
            asa.listen_negotiate(name)
                .await
                .map_err(|e| engine_error(&e))?,
        );
        Ok(lock(&self.listeners)
            .entry((h, name.to_string()))
            .or_insert((l, CancellationToken::new()))
            .clone())
    }

    /// A peer's request, kept as a session of ASA `h`: what the client is
    /// told of it.
    fn incoming(&self, h: u64, session: Session, objective: Objective) -> Value {
        let peer = session.peer();
        let id = self.keep_session(h, session);
        let mut kv = vec![
            ("session", Value::Integer(id.into())),
            ("objective", Value::Bytes(objective.encode().to_vec())),
        ];
        if let Some(p) = peer {
            kv.push(("peer", peer_value(p)));
        }
        map(kv)
    }

    fn keep_session(&self, asa: u64, s: Session) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, (asa, s));
        id
    }

    /// Takes session `params.session` of ASA `params.asa` out for a call.
    fn session(&self, p: &Params<'_>) -> Result<(u64, Session), WireError> {
        let (asa, id) = (p.u64("asa")?, p.u64("session")?);
        let mut sessions = lock(&self.sessions);
        let no = || engine_error(&ApiError::from(grasp_engine::ErrorCode::NoSession));
        match sessions.remove(&id) {
            Some((owner, s)) if owner == asa => Ok((owner, s)),
            Some(other) => {
                // Another ASA's (of this connection): not for this caller.
                sessions.insert(id, other);
                Err(no())
            }
            None => Err(no()),
        }
    }

    /// A negotiation's result; a step keeps the session (under `id` when
    /// it continues one).
    fn outcome(&self, asa: u64, n: Negotiation, id: Option<u64>) -> Value {
        match n {
            Negotiation::Accepted => map(vec![("outcome", Value::Text("accepted".into()))]),
            Negotiation::Declined { reason } => {
                let mut kv = vec![("outcome", Value::Text("declined".into()))];
                if let Some(r) = reason {
                    kv.push(("reason", Value::Text(r)));
                }
                map(kv)
            }
            Negotiation::Step { session, objective } => {
                let peer = session.peer();
                let id = match id {
                    Some(id) => {
                        lock(&self.sessions).insert(id, (asa, session));
                        id
                    }
                    None => self.keep_session(asa, session),
                };
                let mut kv = vec![
                    ("outcome", Value::Text("step".into())),
                    ("session", Value::Integer(id.into())),
                    ("objective", Value::Bytes(objective.encode().to_vec())),
                ];
                if let Some(p) = peer {
                    kv.push(("peer", peer_value(p)));
                }
                map(kv)
            }
        }
    }

    fn limits(&self) -> WireLimits {
        WireLimits {
            max_message_size: self.core.facts.transport.max_message_size(),
            ..WireLimits::default()
        }
    }

    async fn call(
        self: &Arc<Self>,
        id: u64,
        method: &str,
        params: &[(String, Value)],
    ) -> Result<Value, WireError> {
        let p = Params(params);
        let lim = self.limits();
        let e = |r: ApiError| engine_error(&r);
        match method {
            "hello" => Err(ApiCode::BadRequest.error("hello is said once")),
            "register_asa" => {
                let name = p.text("name")?;
                // Counted before the engine is asked, so calls at once
                // cannot pass the limit together.
                let reserved = Reserved::new(self.clone());
                if lock(&self.asas).len() + reserved.others() >= self.core.limits.asas {
                    return Err(ApiCode::TooMany
                        .error(format!("{} ASAs on this connection", self.core.limits.asas)));
                }
                // Not cancellable half way: a cancel or a disconnect must not
                // leave an ASA in the engine that nobody tracks.
                let me = self.clone();
                let job = tokio::spawn(async move {
                    let _reserved = reserved;
                    let asa = me.core.grasp.register_asa(&name).await?;
                    let h = me.next_asa.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut asas = lock(&me.asas);
                        if !me.closed.load(Ordering::SeqCst) {
                            asas.insert(h, asa);
                            return Ok(h);
                        }
                    }
                    // The connection ended meanwhile.
                    let _ = asa.deregister().await;
                    Err(ApiError::from(grasp_engine::ErrorCode::NoAsa))
                });
                let h = job
                    .await
                    .map_err(|_| ApiCode::Cancelled.error("register_asa did not finish"))?
                    .map_err(e)?;
                Ok(map(vec![("asa", Value::Integer(h.into()))]))
            }
            "deregister_asa" => {
                let h = p.u64("asa")?;
                let asa = lock(&self.asas)
                    .remove(&h)
                    .ok_or_else(|| engine_error(&ApiError::from(grasp_engine::ErrorCode::NoAsa)))?;
                // Not cancellable half way either (see register_asa).
                tokio::spawn(asa.deregister())
                    .await
                    .map_err(|_| ApiCode::Cancelled.error("deregister_asa did not finish"))?
                    .map_err(e)?;
                Ok(Value::Null)
            }
            "register_objective" => {
                let asa = self.asa(&p)?;
                let objective = p.objective("objective", &lim)?;
                let d = RegisterOptions::default();
                let locators = match p.get("locators") {
                    None => Vec::new(),
                    Some(_) => p
                        .list("locators")?
                        .iter()
                        .map(|v| locator_of(v, &lim))
                        .collect::<Result<_, _>>()?,
                };
                let opts = RegisterOptions {
                    ttl_ms: p.opt_u32("ttl_ms")?.unwrap_or(d.ttl_ms),
                    discoverable: p.opt_bool("discoverable")?.unwrap_or(d.discoverable),
                    overlap: p.opt_bool("overlap")?.unwrap_or(d.overlap),
                    local: p.opt_bool("local")?.unwrap_or(d.local),
                    rapid: p.opt_bool("rapid")?.unwrap_or(d.rapid),
                    locators,
                };
                asa.register_objective(&objective, opts).await.map_err(e)?;
                Ok(Value::Null)
            }
            "deregister_objective" => {
                let asa = self.asa(&p)?;
                asa.deregister_objective(&p.text("name")?)
                    .await
                    .map_err(e)?;
                Ok(Value::Null)
            }
            "discover" => {
                let asa = self.asa(&p)?;
                let objective = p.objective("objective", &lim)?;
                let opts = DiscoverOptions {
                    timeout: p.opt_u64("timeout_ms")?.map(Duration::from_millis),
                    min_ttl: p.opt_u64("min_ttl_ms")?.map(Duration::from_millis),
                    flush: p.opt_bool("flush")?.unwrap_or(false),
                    first_only: p.opt_bool("first_only")?.unwrap_or(false),
                };
                let found = asa.discover(&objective, opts).await.map_err(e)?;
                Ok(Value::Array(found.iter().map(asa_locator_value).collect()))
            }
            "synchronize" => {
                let asa = self.asa(&p)?;
                let objective = p.objective("objective", &lim)?;
                let peer = match p.get("peer") {
                    None => None,
                    Some(v) => Some(asa_locator_of(v, &lim)?),
                };
                let timeout = Duration::from_millis(p.u64("timeout_ms")?);
                let got = asa
                    .synchronize(&objective, peer, timeout)
                    .await
                    .map_err(e)?;
                Ok(Value::Bytes(got.encode().to_vec()))
            }
            "listen_synchronize" => {
                let asa = self.asa(&p)?;
                asa.listen_synchronize(&p.objective("objective", &lim)?)
                    .await
                    .map_err(e)?;
                Ok(Value::Null)
            }
            "stop_synchronize" => {
                let asa = self.asa(&p)?;
                asa.stop_synchronize(&p.text("name")?).await.map_err(e)?;
                Ok(Value::Null)
            }
            "flood" => {
                let asa = self.asa(&p)?;
                let ttl_ms = p.u32("ttl_ms")?;
                let tagged = p
                    .list("tagged")?
                    .iter()
                    .map(|t| {
                        let t = entries(t, "tagged")?;
                        let t = Params(&t);
                        Ok(TaggedObjective {
                            objective: t.objective("objective", &lim)?,
                            locator: match t.get("locator") {
                                None => None,
                                Some(l) => Some(locator_of(l, &lim)?),
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()?;
                asa.flood(ttl_ms, tagged).await.map_err(e)?;
                Ok(Value::Null)
            }
            "get_flood" => {
                let asa = self.asa(&p)?;
                let v = asa.get_flood(&p.text("name")?).await.map_err(e)?;
                Ok(Value::Array(v.iter().map(flood_entry_value).collect()))
            }
            "expire_flood" => {
                let asa = self.asa(&p)?;
                let entry = entries(
                    p.get("entry")
                        .ok_or_else(|| ApiCode::BadRequest.error("missing \"entry\""))?,
                    "entry",
                )?;
                let entry = Params(&entry);
                let initiator = match entry.get("initiator") {
                    Some(Value::Bytes(b)) => match b.len() {
                        16 => <[u8; 16]>::try_from(b.as_slice())
                            .map(|a| std::net::IpAddr::from(std::net::Ipv6Addr::from(a)))
                            .ok(),
                        4 => <[u8; 4]>::try_from(b.as_slice())
                            .map(|a| std::net::IpAddr::from(std::net::Ipv4Addr::from(a)))
                            .ok(),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| {
                    ApiCode::BadRequest.error("entry's \"initiator\" is 4 or 16 bytes")
                })?;
                let flood = FloodEntry {
                    objective: entry.objective("objective", &lim)?,
                    locator: match entry.get("locator") {
                        None => None,
                        Some(l) => Some(locator_of(l, &lim)?),
                    },
                    initiator,
                    expires: None,
                    ifindex: 0,
                };
                asa.expire_flood(&flood).await.map_err(e)?;
                Ok(Value::Null)
            }
            "request_negotiate" => {
                let asa = self.asa(&p)?;
                let h = p.u64("asa")?;
                let objective = p.objective("objective", &lim)?;
                let peer = match p.get("peer") {
                    None => None,
                    Some(v) => Some(asa_locator_of(v, &lim)?),
                };
                if p.opt_bool("noloop")?.unwrap_or(false) {
                    return Err(
                        ApiCode::Unsupported.error("noloop (the raw channel) is not served yet")
                    );
                }
                self.room_for_a_session()?;
                let timeout = Duration::from_millis(p.u64("timeout_ms")?);
                let n = asa
                    .request_negotiate(&objective, peer, timeout)
                    .await
                    .map_err(e)?;
                Ok(self.outcome(h, n, None))
            }
            "negotiate_step" => {
                let (h, session) = self.session(&p)?;
                let objective = p.objective("objective", &lim)?;
                let timeout = Duration::from_millis(p.u64("timeout_ms")?);
                let id = p.u64("session")?;
                let n = session.step(&objective, timeout).await.map_err(e)?;
                Ok(self.outcome(h, n, Some(id)))
            }
            "negotiate_wait" => {
                let (h, session) = self.session(&p)?;
                let id = p.u64("session")?;
                let wait = Duration::from_millis(p.u64("wait_ms")?);
                let r = session.wait(wait).await;
                lock(&self.sessions).insert(id, (h, session));
                r.map_err(e)?;
                Ok(Value::Null)
            }
            "end_negotiate" => {
                let (_, session) = self.session(&p)?;
                let accept = p
                    .opt_bool("accept")?
                    .ok_or_else(|| ApiCode::BadRequest.error("missing \"accept\""))?;
                let reason = match p.get("reason") {
                    None => None,
                    Some(_) => Some(p.text("reason")?),
                };
                if accept {
                    session.accept().await.map_err(e)?;
                } else {
                    session.decline(reason.as_deref()).await.map_err(e)?;
                }
                Ok(Value::Null)
            }
            "send_invalid" => {
                let (_, session) = self.session(&p)?;
                let info = p.get("info").map(|v| {
                    let mut b = Vec::new();
                    let _ = ciborium::ser::into_writer(v, &mut b);
                    grasp_engine::wire::Value::from_cbor(b)
                });
                let info = info
                    .transpose()
                    .map_err(|e| ApiCode::BadRequest.error(format!("info: {e}")))?;
                session.send_invalid(info).await.map_err(e)?;
                Ok(Value::Null)
            }
            "listen_negotiate" => {
                let asa = self.asa(&p)?;
                let h = p.u64("asa")?;
                let name = p.text("name")?;
                let (listener, stop) = self.listening(&asa, h, &name).await?;
                let next = tokio::select! {
                    n = listener.next() => n,
                    () = stop.cancelled() => None,
                };
                let Some((session, objective)) = next else {
                    return Err(ApiCode::Cancelled.error(format!("stop_negotiate for {name:?}")));
                };
                self.room_for_a_session()?;
                Ok(self.incoming(h, session, objective))
            }
            "subscribe" => {
                let asa = self.asa(&p)?;
                let h = p.u64("asa")?;
                if p.text("kind")? != "negotiation" {
                    return Err(ApiCode::Unsupported.error(
                        "only \"negotiation\" subscriptions are served yet (flood: use get_flood)",
                    ));
                }
                let name = p.text("name")?;
                if lock(&self.subscriptions).len() >= self.core.limits.requests {
                    return Err(ApiCode::TooMany.error("too many subscriptions on this connection"));
                }
                let (listener, stop) = self.listening(&asa, h, &name).await?;
                // Requests arrive as events until unsubscribe or
                // stop_negotiate; one the client has no room for is ended.
                let me = self.clone();
                let task = tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            n = listener.next() => n,
                            () = stop.cancelled() => None,
                        };
                        let Some((session, objective)) = next else {
                            return;
                        };
                        if me.room_for_a_session().is_err() {
                            continue; // dropped: the peer's session ends
                        }
                        let data = me.incoming(h, session, objective);
                        let ev = Frame::Event {
                            subscription: id,
                            kind: "negotiation".into(),
                            data,
                        };
                        if me.events.try_send(ev).is_ok() {
                            bump(&me.core.stats.events);
                        } else {
                            bump(&me.core.stats.events_dropped);
                        }
                    }
                });
                lock(&self.subscriptions).insert(id, task.abort_handle());
                Ok(map(vec![("subscription", Value::Integer(id.into()))]))
            }
            "unsubscribe" => {
                let sub = p.u64("subscription")?;
                let t = lock(&self.subscriptions)
                    .remove(&sub)
                    .ok_or_else(|| ApiCode::BadRequest.error("no such subscription"))?;
                t.abort();
                Ok(Value::Null)
            }
            "stop_negotiate" => {
                let asa = self.asa(&p)?;
                let h = p.u64("asa")?;
                let name = p.text("name")?;
                if let Some((_, stop)) = lock(&self.listeners).remove(&(h, name.clone())) {
                    stop.cancel();
                }
                asa.stop_negotiate(&name).await.map_err(e)?;
                Ok(Value::Null)
            }
            other => Err(ApiCode::Unsupported.error(format!(
                "method {other:?} is not served (yet) by this graspd"
            ))),
        }
    }
}

fn engine_error(e: &ApiError) -> WireError {
    WireError {
        code: u64::from(e.code.code()),
        name: e.code.name().to_string(),
        detail: e.detail.clone(),
    }
}

fn uint(n: usize) -> Value {
    Value::Integer((n as u64).into())
}

fn map(kv: Vec<(&str, Value)>) -> Value {
    Value::Map(
        kv.into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v))
            .collect(),
    )
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn asa_locator_value(l: &AsaLocator) -> Value {
    let mut kv = vec![("locator", Value::Bytes(l.locator.encode().to_vec()))];
    if l.ifindex != 0 {
        kv.push(("ifindex", Value::Integer(l.ifindex.into())));
    }
    if let Some(e) = l.expires {
        let left = e.saturating_duration_since(std::time::Instant::now());
        kv.push(("ttl_ms", uint(left.as_millis() as usize)));
    }
    if l.diverted {
        kv.push(("diverted", Value::Bool(true)));
    }
    if let Some(o) = &l.objective {
        kv.push(("objective", Value::Bytes(o.encode().to_vec())));
    }
    map(kv)
}

/// A peer's socket address as an asa-locator.
fn peer_value(p: std::net::SocketAddr) -> Value {
    match p {
        std::net::SocketAddr::V6(a) => {
            let mut kv = vec![(
                "locator",
                Value::Bytes(Locator::tcp6(*a.ip(), a.port()).encode().to_vec()),
            )];
            if a.scope_id() != 0 {
                kv.push(("ifindex", Value::Integer(a.scope_id().into())));
            }
            map(kv)
        }
        std::net::SocketAddr::V4(a) => map(vec![(
            "locator",
            Value::Bytes(
                Locator::Ipv4 {
                    addr: *a.ip(),
                    protocol: grasp_engine::wire::Protocol::TCP,
                    port: a.port(),
                }
                .encode()
                .to_vec(),
            ),
        )]),
    }
}

fn flood_entry_value(f: &FloodEntry) -> Value {
    let initiator = match f.initiator {
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
    };
    let mut kv = vec![
        ("objective", Value::Bytes(f.objective.encode().to_vec())),
        ("initiator", Value::Bytes(initiator)),
    ];
    if let Some(l) = &f.locator {
        kv.push(("locator", Value::Bytes(l.encode().to_vec())));
    }
    if let Some(e) = f.expires {
        let left = e.saturating_duration_since(std::time::Instant::now());
        kv.push(("ttl_ms", uint(left.as_millis() as usize)));
    }
    map(kv)
}

fn locator_of(v: &Value, lim: &WireLimits) -> Result<Locator, WireError> {
    let Value::Bytes(b) = v else {
        return Err(ApiCode::BadRequest.error("a locator is a byte string (its RFC 8990 option)"));
    };
    Locator::decode_with(&Bytes::copy_from_slice(b), lim)
        .map_err(|e| ApiCode::BadRequest.error(format!("locator: {e}")))
}

fn asa_locator_of(v: &Value, lim: &WireLimits) -> Result<AsaLocator, WireError> {
    let p = entries(v, "peer")?;
    let p = Params(&p);
    let mut l = AsaLocator::new(locator_of(
        p.get("locator")
            .ok_or_else(|| ApiCode::BadRequest.error("peer: no \"locator\""))?,
        lim,
    )?);
    l.ifindex = p.opt_u32("ifindex")?.unwrap_or(0);
    Ok(l)
}

/// A request's params (a map with text keys): typed lookups that say what
/// was wrong.
struct Params<'a>(&'a [(String, Value)]);

/// The entries of a nested map with text keys (for [`Params`]).
fn entries(v: &Value, what: &str) -> Result<Vec<(String, Value)>, WireError> {
    let Value::Map(m) = v else {
        return Err(ApiCode::BadRequest.error(format!("{what} is a map")));
    };
    m.iter()
        .map(|(k, v)| match k {
            Value::Text(k) => Ok((k.clone(), v.clone())),
            _ => Err(ApiCode::BadRequest.error(format!("{what} has text keys"))),
        })
        .collect()
}

impl<'a> Params<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn missing(key: &str) -> WireError {
        ApiCode::BadRequest.error(format!("missing {key:?}"))
    }

    fn wrong(key: &str, what: &str) -> WireError {
        ApiCode::BadRequest.error(format!("{key:?} must be {what}"))
    }

    fn u64(&self, key: &str) -> Result<u64, WireError> {
        self.opt_u64(key)?.ok_or_else(|| Self::missing(key))
    }

    fn u32(&self, key: &str) -> Result<u32, WireError> {
        self.opt_u32(key)?.ok_or_else(|| Self::missing(key))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, WireError> {
        self.get(key)
            .map(|v| as_u64(v).ok_or_else(|| Self::wrong(key, "an unsigned integer")))
            .transpose()
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, WireError> {
        self.opt_u64(key)?
            .map(|n| u32::try_from(n).map_err(|_| Self::wrong(key, "at most 2^32 - 1")))
            .transpose()
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, WireError> {
        self.get(key)
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                _ => Err(Self::wrong(key, "true or false")),
            })
            .transpose()
    }

    fn text(&self, key: &str) -> Result<String, WireError> {
        match self.get(key) {
            Some(Value::Text(t)) => Ok(t.clone()),
            Some(_) => Err(Self::wrong(key, "text")),
            None => Err(Self::missing(key)),
        }
    }

    fn list(&self, key: &str) -> Result<&'a [Value], WireError> {
        match self.get(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(Self::wrong(key, "an array")),
            None => Err(Self::missing(key)),
        }
    }

    fn objective(&self, key: &str, lim: &WireLimits) -> Result<Objective, WireError> {
        match self.get(key) {
            Some(Value::Bytes(b)) => Objective::decode_with(&Bytes::copy_from_slice(b), lim)
                .map_err(|e| ApiCode::BadRequest.error(format!("{key:?}: {e}"))),
            Some(_) => Err(Self::wrong(key, "a byte string (the RFC 8990 objective)")),
            None => Err(Self::missing(key)),
        }
    }
}
