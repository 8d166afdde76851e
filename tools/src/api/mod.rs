//! graspd's ASA socket (issue 12): ASAs in other processes use this node's
//! GRASP core, its cache, relaying and keys, instead of each being a node of
//! its own. The protocol is `tools/asa-api/asa-protocol.cddl`; frames and
//! envelopes come from `grasp_asa_api`.
//!
//! It serves every method of the protocol: `hello`, ASA and objective
//! registration, discovery (streamed too), synchronization, flooding,
//! negotiation (with subscriptions that push peers' requests as events),
//! flood subscriptions, `dump`, and graspy's raw channel (`noloop`, gsend,
//! grecv). Requests are read whole by `grasp_asa_api::request` before
//! anything is done.
//!
//! Each call is held against the [`policy`] for the client's credentials
//! (SO_PEERCRED); refusals answer `notAuthorized` and are counted. The
//! socket is mode 0666 when the policy grants anything to anyone beyond
//! root and graspd's user (the policy decides), 0600 otherwise.
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
use futures::StreamExt;
use grasp_asa_api::form::{self, map, uint};
use grasp_asa_api::request::{Offer, Outcome, Request};
use grasp_asa_api::{Frame, FrameError, WireError};
use grasp_engine::transport::AcpTransport;
use grasp_engine::wire::{Limits as WireLimits, Objective};
use grasp_engine::{
    ApiError, Asa, ErrorCode, FloodWatcher, Grasp, Negotiation, NegotiationListener, Session,
};
use tokio::net::UnixStream;

use crate::socket::SocketGuard;

pub mod policy;
use policy::{Grants, Need, Peer, Policy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A streamed discover's locators waiting to become events.
const LOCATOR_EVENTS: usize = 64;

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
    /// Objectives registered per connection.
    pub objectives: usize,
    /// Negotiation sessions per connection.
    pub sessions: usize,
    /// Connections at once of one user (other than root and graspd's).
    pub per_user: usize,
    /// Largest frame, either way.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 1024,
            requests: 256,
            asas: 16,
            objectives: 64,
            sessions: 256,
            per_user: 64,
            max_frame: grasp_asa_api::DEFAULT_MAX_FRAME,
        }
    }
}

/// The ASA socket's counters (in `grasp stats` under "api").
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (too many at once, in all or of one user).
    pub connections_refused: AtomicU64,
    /// Calls the policy refused (notAuthorized).
    pub denied: AtomicU64,
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
            "denied": g(&self.denied),
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
    /// Who may do what.
    pub policy: Arc<Policy>,
}

/// The socket's mode for `policy`: others may connect only when a rule or
/// `open` lets them do something.
pub fn socket_mode(policy: &Policy) -> u32 {
    if policy.open || !policy.rules.is_empty() {
        0o666
    } else {
        0o600
    }
}

/// Listens on `path` (replacing a stale socket there; mode
/// [`socket_mode`]) until the returned guard is dropped.
pub fn serve(path: &Path, core: Core) -> std::io::Result<SocketGuard> {
    let permits = Arc::new(tokio::sync::Semaphore::new(core.limits.connections));
    let users: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let daemon_uid = nix::unistd::geteuid().as_raw();
    if core.policy.open {
        warn!(socket = %path.display(), "the ASA socket is OPEN ([api] open = true): anyone who can reach it may register any ASA and own or read any objective; for labs only");
    }
    let mode = socket_mode(&core.policy);
    let guard = crate::socket::serve_unix(path, "api.socket", mode, move |s| {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!("ASA client refused: too many connections");
            bump(&core.stats.connections_refused);
            return;
        };
        let peer = Peer::of(&s, &core.policy);
        // One user's connections are bounded, so it cannot take them all.
        let user = peer
            .as_ref()
            .map(|p| p.uid)
            .filter(|u| *u != 0 && *u != daemon_uid);
        if let Some(uid) = user {
            let mut u = lock(&users);
            let n = u.entry(uid).or_insert(0);
            if *n >= core.limits.per_user {
                warn!(uid, "ASA client refused: too many connections of this user");
                bump(&core.stats.connections_refused);
                return;
            }
            *n += 1;
        }
        let grants = core.policy.grants(peer.as_ref(), daemon_uid);
        debug!(uid = ?peer.as_ref().map(|p| p.uid), pid = ?peer.as_ref().and_then(|p| p.pid), "ASA client connected");
        let (core, users) = (core.clone(), users.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(s, core, grants).await;
            if let Some(uid) = user {
                let mut u = lock(&users);
                if let Some(n) = u.get_mut(&uid) {
                    *n -= 1;
                    if *n == 0 {
                        u.remove(&uid);
                    }
                }
            }
        });
    })?;
    info!(socket = %path.display(), mode = format!("{mode:o}"), "ASA socket listening");
    Ok(guard)
}

/// One client, allowed `grants`, until it goes; then everything it
/// registered goes too.
pub async fn connection(stream: UnixStream, core: Core, grants: Grants) {
    let stats = core.stats.clone();
    bump(&stats.connections);
    stats.open.fetch_add(1, Ordering::Relaxed);
    serve_connection(stream, core, grants).await;
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_connection(stream: UnixStream, core: Core, grants: Grants) {
    let framed = match grasp_asa_api::frames(stream, core.limits.max_frame) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "ASA client dropped: its socket cannot be registered");
            return;
        }
    };
    let (sink, mut source) = framed.split();
    // Answers wait here for the writer; bounded by the outstanding calls.
    let (tx, rx) = mpsc::channel::<Frame>(core.limits.requests + 2);
    // The largest frame the client takes (hello may lower it).
    let max_out = Arc::new(AtomicUsize::new(core.limits.max_frame));
    let writer = {
        let max_out = max_out.clone();
        tokio::spawn(grasp_asa_api::write_frames(sink, rx, move |f: Frame| {
            let bytes = f.encode();
            let max = max_out.load(Ordering::Relaxed);
            if bytes.len() <= max {
                return Some(Bytes::from(bytes));
            }
            // Never more than the client said it takes: an answer becomes
            // tooLarge; anything else cannot be sent.
            let Frame::Response { id, .. } = f else {
                return None;
            };
            let err = ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "the answer is {} bytes; this connection takes {max}",
                    bytes.len()
                ),
            );
            let answer = Frame::Response {
                id,
                err: Some(WireError::from(&err)),
                result: Value::Null,
            };
            Some(Bytes::from(answer.encode()))
        }))
    };
    let conn = Arc::new(Conn {
        core,
        grants,
        asas: Mutex::new(HashMap::new()),
        registering: AtomicUsize::new(0),
        objectives: Mutex::new(std::collections::HashSet::new()),
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
    let lim = conn.limits();
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
                let _ = tx.try_send(closing(ApiError::new(ErrorCode::TooLarge, e.to_string())));
                break;
            }
            None => break,
        };
        let frame = match Frame::decode(&raw) {
            Ok(f) => f,
            Err(FrameError::NotAFrame { id: Some(id), why }) => {
                bump(&conn.core.stats.bad_requests);
                respond(&tx, id, Err(ApiError::new(ErrorCode::BadRequest, why))).await;
                continue;
            }
            Err(e) => {
                debug!(error = %e, "ASA client sent what is not a frame; closing");
                bump(&conn.core.stats.bad_requests);
                let _ = tx.try_send(closing(ApiError::new(ErrorCode::BadRequest, e.to_string())));
                break;
            }
        };
        match frame {
            Frame::Request { id, method, params } => {
                if calls.contains_key(&id) {
                    respond(
                        &tx,
                        id,
                        Err(ApiError::new(
                            ErrorCode::BadRequest,
                            "this id is outstanding already",
                        )),
                    )
                    .await;
                    continue;
                }
                // Every field is read before anything is done.
                let request = match Request::parse(&method, &params, &lim) {
                    Ok(r) => r,
                    Err(e) => {
                        let r = Err(e);
                        count(&conn.core.stats, &r);
                        respond(&tx, id, r).await;
                        continue;
                    }
                };
                if !greeted {
                    let Request::Hello {
                        versions,
                        features,
                        max_frame,
                        ..
                    } = request
                    else {
                        respond(
                            &tx,
                            id,
                            Err(ApiError::new(ErrorCode::NotHello, "call hello first")),
                        )
                        .await;
                        continue;
                    };
                    let r = hello(&conn.core, &versions, &features, max_frame);
                    if let Ok((_, m)) = &r {
                        max_out.store(*m, Ordering::Relaxed);
                    }
                    greeted = r.is_ok();
                    respond(&tx, id, r.map(|(v, _)| v)).await;
                    continue;
                }
                if calls.len() >= conn.core.limits.requests {
                    respond(
                        &tx,
                        id,
                        Err(ApiError::new(
                            ErrorCode::TooMany,
                            format!("{} calls outstanding on this connection", calls.len()),
                        )),
                    )
                    .await;
                    continue;
                }
                let (conn, tx) = (conn.clone(), tx.clone());
                let h = tasks.spawn(async move {
                    let r = conn.call(id, request).await;
                    count(&conn.core.stats, &r);
                    respond(&tx, id, r).await;
                    id
                });
                calls.insert(id, h);
            }
            Frame::Cancel { id } => {
                if let Some(h) = calls.remove(&id) {
                    h.abort();
                    respond(
                        &tx,
                        id,
                        Err(ApiError::new(ErrorCode::Cancelled, "cancelled")),
                    )
                    .await;
                }
            }
            Frame::Response { .. } | Frame::Event { .. } => {
                let _ = tx.try_send(closing(ApiError::new(
                    ErrorCode::BadRequest,
                    "clients send requests and cancels only",
                )));
                break;
            }
        }
    }
    // The client is gone: abandon its calls, then deregister its ASAs.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let subscriptions: Vec<_> = lock(&conn.subscriptions).drain().collect();
    for (_, t) in subscriptions {
        t.abort();
    }
    for (_, (_, stop)) in lock(&conn.listeners).drain() {
        stop.cancel();
    }
    // Its open sessions end with a decline the peer can read.
    let sessions: Vec<Arc<Session>> = lock(&conn.sessions).drain().map(|(_, (_, s))| s).collect();
    for s in sessions {
        // A raw call still under way holds its own copy: that one aborts.
        if let Ok(s) = Arc::try_unwrap(s) {
            let _ = s.decline(Some("ASA gone")).await;
        }
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

/// The event that tells a client why its connection is closed.
fn closing(e: ApiError) -> Frame {
    Frame::Event {
        subscription: 0,
        kind: "closing".into(),
        data: WireError::from(&e).value(),
    }
}

async fn respond(tx: &mpsc::Sender<Frame>, id: u64, r: Result<Value, ApiError>) {
    let f = match r {
        Ok(result) => Frame::Response {
            id,
            err: None,
            result,
        },
        Err(e) => Frame::Response {
            id,
            err: Some(WireError::from(&e)),
            result: Value::Null,
        },
    };
    let _ = tx.send(f).await;
}

/// Counts an answered call.
fn count(stats: &Stats, r: &Result<Value, ApiError>) {
    bump(&stats.calls);
    if let Err(e) = r {
        bump(&stats.calls_failed);
        if e.code == ErrorCode::BadRequest {
            bump(&stats.bad_requests);
        }
    }
}

/// hello's answer, and the largest frame the client takes.
fn hello(
    core: &Core,
    versions: &[u64],
    features: &[String],
    max_frame: Option<u64>,
) -> Result<(Value, usize), ApiError> {
    if !versions.contains(&grasp_asa_api::VERSION) {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "this graspd speaks version {} of the ASA protocol",
                grasp_asa_api::VERSION
            ),
        ));
    }
    // At least MIN_FRAME, so an error always fits.
    let max_frame = max_frame.map_or(core.limits.max_frame, |m| {
        usize::try_from(m)
            .unwrap_or(usize::MAX)
            .clamp(MIN_FRAME, core.limits.max_frame.max(MIN_FRAME))
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
    let security = t.security().to_string();
    Ok((
        map(vec![
            ("version", Value::Integer(grasp_asa_api::VERSION.into())),
            (
                "features",
                Value::Array(
                    grasp_asa_api::FEATURES
                        .iter()
                        .filter(|f| features.iter().any(|c| c == *f))
                        .map(|f| Value::Text(f.to_string()))
                        .collect(),
                ),
            ),
            ("max_frame", Value::Integer((max_frame as u64).into())),
            (
                "node",
                map(vec![
                    ("locator", Value::Bytes(t.node_locator().encode().to_vec())),
                    ("interfaces", Value::Array(interfaces)),
                    ("relay", Value::Bool(core.facts.relay)),
                    ("dull", Value::Bool(core.facts.dull)),
                    ("security", Value::Text(security)),
                    (
                        "daemon",
                        Value::Text(format!("graspd {}", env!("CARGO_PKG_VERSION"))),
                    ),
                ]),
            ),
            (
                "limits",
                map(vec![
                    ("asas", uint(core.limits.asas as u64)),
                    ("objectives", uint(core.limits.objectives as u64)),
                    // Frames queued towards the client (answers and events).
                    ("events", uint(core.limits.requests as u64 + 2)),
                    ("sessions", uint(core.limits.sessions as u64)),
                    ("requests", uint(core.limits.requests as u64)),
                    ("max_message", uint(t.max_message_size() as u64)),
                ]),
            ),
        ]),
        max_frame,
    ))
}

/// A connection's ASAs.
struct Conn {
    core: Core,
    /// What the client may do.
    grants: Grants,
    asas: Mutex<HashMap<u64, Asa>>,
    /// register_asa calls under way (they count against the limit).
    registering: AtomicUsize,
    /// Objectives its ASAs registered, by (ASA, name).
    objectives: Mutex<std::collections::HashSet<(u64, String)>>,
    next_asa: AtomicU64,
    /// The client is gone: ASAs registered now are deregistered at once.
    closed: AtomicBool,
    /// Negotiation sessions where it is the client's turn, by handle. A
    /// session is taken out while a call uses it.
    sessions: Mutex<HashMap<u64, (u64, Arc<Session>)>>,
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

/// A subscription's task leaves the table when it ends.
struct Leave(Arc<Conn>, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        lock(&self.0.subscriptions).remove(&self.1);
    }
}

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
    fn asa(&self, h: u64) -> Result<Asa, ApiError> {
        lock(&self.asas)
            .get(&h)
            .cloned()
            .ok_or_else(|| ApiError::from(ErrorCode::NoAsa))
    }

    /// The policy's word on `need` for `name`; refusals are counted.
    fn allow(&self, need: Need, name: &str) -> Result<(), ApiError> {
        self.grants.check(need, name).inspect_err(|_| {
            bump(&self.core.stats.denied);
        })
    }

    fn room_for_a_session(&self) -> Result<(), ApiError> {
        if lock(&self.sessions).len() >= self.core.limits.sessions {
            return Err(ApiError::new(
                ErrorCode::TooMany,
                format!(
                    "{} negotiation sessions open on this connection",
                    self.core.limits.sessions
                ),
            ));
        }
        Ok(())
    }

    /// The listener of (`h`, `name`), made on first use and shared.
    async fn listening(&self, asa: &Asa, h: u64, name: &str) -> Result<Listening, ApiError> {
        if let Some(l) = lock(&self.listeners).get(&(h, name.to_string())).cloned() {
            return Ok(l);
        }
        let l = Arc::new(asa.listen_negotiate(name).await?);
        Ok(lock(&self.listeners)
            .entry((h, name.to_string()))
            .or_insert((l, CancellationToken::new()))
            .clone())
    }

    /// A peer's proposal on `session` of ASA `h`, kept (under `id` when it
    /// continues one) for the client's answer.
    fn offer(&self, h: u64, session: Session, objective: Objective, id: Option<u64>) -> Offer {
        let peer = session
            .peer()
            .map(|p| (p, session.peer_identity().map(str::to_string)));
        let id = id.unwrap_or_else(|| self.next_session.fetch_add(1, Ordering::Relaxed));
        lock(&self.sessions).insert(id, (h, Arc::new(session)));
        Offer {
            session: id,
            objective,
            peer,
        }
    }

    /// Takes session `id` of ASA `asa` out for a call that ends or
    /// continues it.
    fn session(&self, asa: u64, id: u64) -> Result<Session, ApiError> {
        let mut sessions = lock(&self.sessions);
        let no = || ApiError::from(ErrorCode::NoSession);
        match sessions.remove(&id) {
            Some((owner, s)) if owner == asa => Arc::try_unwrap(s).map_err(|s| {
                // A raw call (gsend/grecv) is using it.
                sessions.insert(id, (owner, s));
                ApiError::new(ErrorCode::NoSession, "the session is in use by a raw call")
            }),
            Some(other) => {
                // Another ASA's (of this connection): not for this caller.
                sessions.insert(id, other);
                Err(no())
            }
            None => Err(no()),
        }
    }

    /// Session `id` of ASA `asa`, shared, for raw calls (a gsend may run
    /// while a grecv waits).
    fn raw_session(&self, asa: u64, id: u64) -> Result<Arc<Session>, ApiError> {
        match lock(&self.sessions).get(&id) {
            Some((owner, s)) if *owner == asa => Ok(s.clone()),
            _ => Err(ApiError::from(ErrorCode::NoSession)),
        }
    }

    /// A negotiation's result; a step keeps the session (under `id` when
    /// it continues one).
    fn outcome(&self, asa: u64, n: Negotiation, id: Option<u64>) -> Value {
        match n {
            Negotiation::Accepted => Outcome::Accepted,
            Negotiation::Declined { reason } => Outcome::Declined { reason },
            Negotiation::Step { session, objective } => {
                Outcome::Step(self.offer(asa, session, objective, id))
            }
        }
        .value()
    }

    fn limits(&self) -> WireLimits {
        WireLimits {
            max_message_size: self.core.facts.transport.max_message_size(),
            ..WireLimits::default()
        }
    }

    /// Queues event `kind` of subscription `id` for the client, never
    /// waiting: false (and counted) when the client has no room for it.
    fn push(&self, id: u64, kind: &str, data: Value) -> bool {
        let ev = Frame::Event {
            subscription: id,
            kind: kind.into(),
            data,
        };
        let sent = self.events.try_send(ev).is_ok();
        bump(if sent {
            &self.core.stats.events
        } else {
            &self.core.stats.events_dropped
        });
        sent
    }

    /// Pushes the peers' requests `listener` hears as events of
    /// subscription `id` until unsubscribe or stop_negotiate. One the
    /// client has no room for (its session table or its queue full) is
    /// ended at once, and counted as a dropped event.
    fn subscribe_negotiation(
        self: &Arc<Self>,
        id: u64,
        h: u64,
        listener: Arc<NegotiationListener>,
        stop: CancellationToken,
    ) {
        let me = self.clone();
        // The table is held while the task starts, so the task's own
        // removal (when listening stops) comes after its entry.
        let mut subscriptions = lock(&self.subscriptions);
        let task = tokio::spawn(async move {
            let _leave = Leave(me.clone(), id);
            loop {
                let next = tokio::select! {
                    n = listener.next() => n,
                    () = stop.cancelled() => None,
                };
                let Some((session, objective)) = next else {
                    return;
                };
                if me.room_for_a_session().is_err() {
                    bump(&me.core.stats.events_dropped);
                    continue; // dropped: the peer's session ends
                }
                let offer = me.offer(h, session, objective, None);
                if !me.push(id, "negotiation", offer.value()) {
                    lock(&me.sessions).remove(&offer.session);
                }
            }
        });
        subscriptions.insert(id, task.abort_handle());
    }

    /// Pushes the floods `watcher` sees as events of subscription `id`
    /// until unsubscribe or the ASA goes; one the client has no room for is
    /// dropped and counted (the flood cache keeps the latest).
    fn subscribe_floods(self: &Arc<Self>, id: u64, watcher: FloodWatcher) {
        let me = self.clone();
        let mut subscriptions = lock(&self.subscriptions);
        let task = tokio::spawn(async move {
            let _leave = Leave(me.clone(), id);
            while let Some(entry) = watcher.next().await {
                me.push(id, "flood", form::flood_entry(&entry));
            }
        });
        subscriptions.insert(id, task.abort_handle());
    }

    async fn call(self: &Arc<Self>, id: u64, request: Request) -> Result<Value, ApiError> {
        match request {
            Request::Hello { .. } => {
                Err(ApiError::new(ErrorCode::BadRequest, "hello is said once"))
            }
            Request::RegisterAsa { name } => {
                self.allow(Need::Asa, &name)?;
                // Counted before the engine is asked, so calls at once
                // cannot pass the limit together.
                let reserved = Reserved::new(self.clone());
                if lock(&self.asas).len() + reserved.others() >= self.core.limits.asas {
                    return Err(ApiError::new(
                        ErrorCode::TooMany,
                        format!("{} ASAs on this connection", self.core.limits.asas),
                    ));
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
                    Err(ApiError::from(ErrorCode::NoAsa))
                });
                let h = job.await.map_err(|_| {
                    ApiError::new(ErrorCode::Cancelled, "register_asa did not finish")
                })??;
                Ok(map(vec![("asa", uint(h))]))
            }
            Request::DeregisterAsa { asa: h } => {
                let asa = lock(&self.asas)
                    .remove(&h)
                    .ok_or_else(|| ApiError::from(ErrorCode::NoAsa))?;
                // Its listeners and sessions go with it (the engine ends
                // them; the tables forget them).
                lock(&self.listeners).retain(|(owner, _), (_, stop)| {
                    if *owner == h {
                        stop.cancel();
                    }
                    *owner != h
                });
                lock(&self.sessions).retain(|_, (owner, _)| *owner != h);
                lock(&self.objectives).retain(|(owner, _)| *owner != h);
                // Not cancellable half way either (see register_asa).
                tokio::spawn(asa.deregister()).await.map_err(|_| {
                    ApiError::new(ErrorCode::Cancelled, "deregister_asa did not finish")
                })??;
                Ok(Value::Null)
            }
            Request::RegisterObjective {
                asa,
                objective,
                options,
            } => {
                let h = asa;
                let asa = self.asa(h)?;
                self.allow(Need::Own, &objective.name)?;
                let key = (h, objective.name.clone());
                let known = {
                    // Counted before the engine is asked (again: a second
                    // registration of the same name updates it).
                    let mut mine = lock(&self.objectives);
                    if !mine.contains(&key) && mine.len() >= self.core.limits.objectives {
                        return Err(ApiError::new(
                            ErrorCode::TooMany,
                            format!(
                                "{} objectives registered on this connection",
                                self.core.limits.objectives
                            ),
                        ));
                    }
                    !mine.insert(key.clone())
                };
                if let Err(e) = asa.register_objective(&objective, options).await {
                    if !known {
                        lock(&self.objectives).remove(&key);
                    }
                    return Err(e);
                }
                Ok(Value::Null)
            }
            Request::DeregisterObjective { asa: h, name } => {
                self.asa(h)?.deregister_objective(&name).await?;
                lock(&self.objectives).remove(&(h, name.clone()));
                if let Some((_, stop)) = lock(&self.listeners).remove(&(h, name)) {
                    stop.cancel();
                }
                Ok(Value::Null)
            }
            Request::Discover {
                asa,
                objective,
                options,
                stream,
            } => {
                let asa = self.asa(asa)?;
                self.allow(Need::Read, &objective.name)?;
                if !stream {
                    let found = asa.discover(&objective, options).await?;
                    return Ok(Value::Array(found.iter().map(form::asa_locator).collect()));
                }
                // Each new locator as an event of this request, then the
                // answer with all of them.
                let (tx, mut rx) = mpsc::channel(LOCATOR_EVENTS);
                let push = |l: &grasp_engine::AsaLocator| {
                    self.push(id, "locator", form::asa_locator(l));
                };
                let discovery = asa.discover_each(&objective, options, tx);
                tokio::pin!(discovery);
                let found = loop {
                    tokio::select! {
                        r = &mut discovery => break r?,
                        Some(l) = rx.recv() => push(&l),
                    }
                };
                while let Ok(l) = rx.try_recv() {
                    push(&l);
                }
                Ok(Value::Array(found.iter().map(form::asa_locator).collect()))
            }
            Request::Synchronize {
                asa,
                objective,
                peer,
                timeout,
            } => {
                let asa = self.asa(asa)?;
                self.allow(Need::Read, &objective.name)?;
                let got = asa.synchronize(&objective, peer, timeout).await?;
                Ok(form::objective(&got))
            }
            Request::ListenSynchronize { asa, objective } => {
                let asa = self.asa(asa)?;
                self.allow(Need::Own, &objective.name)?;
                asa.listen_synchronize(&objective).await?;
                Ok(Value::Null)
            }
            Request::StopSynchronize { asa, name } => {
                self.asa(asa)?.stop_synchronize(&name).await?;
                Ok(Value::Null)
            }
            Request::Flood {
                asa,
                ttl_ms,
                tagged,
            } => {
                let asa = self.asa(asa)?;
                for t in &tagged {
                    self.allow(Need::Own, &t.objective.name)?;
                }
                asa.flood(ttl_ms, tagged).await?;
                Ok(Value::Null)
            }
            Request::GetFlood { asa, name } => {
                let asa = self.asa(asa)?;
                self.allow(Need::Read, &name)?;
                let v = asa.get_flood(&name).await?;
                Ok(Value::Array(v.iter().map(form::flood_entry).collect()))
            }
            Request::ExpireFlood { asa, mut entry } => {
                let asa = self.asa(asa)?;
                self.allow(Need::Own, &entry.objective.name)?;
                // Entries are matched on objective, locator and initiator.
                entry.expires = None;
                entry.ifindex = 0;
                asa.expire_flood(&entry).await?;
                Ok(Value::Null)
            }
            Request::RequestNegotiate {
                asa: h,
                objective,
                peer,
                timeout,
                noloop,
            } => {
                let asa = self.asa(h)?;
                self.allow(Need::Own, &objective.name)?;
                self.room_for_a_session()?;
                if noloop {
                    // graspy's raw channel: the session at once.
                    let s = asa.request_raw(&objective, peer, timeout).await?;
                    let id = self.next_session.fetch_add(1, Ordering::Relaxed);
                    lock(&self.sessions).insert(id, (h, Arc::new(s)));
                    return Ok(map(vec![("session", uint(id))]));
                }
                let n = asa.request_negotiate(&objective, peer, timeout).await?;
                Ok(self.outcome(h, n, None))
            }
            Request::NegotiateStep {
                asa,
                session: id,
                objective,
                timeout,
            } => {
                let session = self.session(asa, id)?;
                let n = session.step(&objective, timeout).await?;
                Ok(self.outcome(asa, n, Some(id)))
            }
            Request::NegotiateWait {
                asa,
                session: id,
                wait,
            } => {
                let session = self.session(asa, id)?;
                let r = session.wait(wait).await;
                lock(&self.sessions).insert(id, (asa, Arc::new(session)));
                r?;
                Ok(Value::Null)
            }
            Request::EndNegotiate {
                asa,
                session: id,
                accept,
                reason,
            } => {
                let session = self.session(asa, id)?;
                if accept {
                    session.accept().await?;
                } else {
                    session.decline(reason.as_deref()).await?;
                }
                Ok(Value::Null)
            }
            Request::SendInvalid {
                asa,
                session: id,
                info,
            } => {
                let info = info
                    .map(|v| {
                        let mut b = Vec::new();
                        let _ = ciborium::ser::into_writer(&v, &mut b);
                        grasp_engine::wire::Value::from_cbor(b)
                    })
                    .transpose()
                    .map_err(|e| form::bad(format!("\"info\": {e}")))?;
                let session = self.session(asa, id)?;
                session.send_invalid(info).await?;
                Ok(Value::Null)
            }
            Request::ListenNegotiate { asa: h, name } => {
                let asa = self.asa(h)?;
                self.allow(Need::Own, &name)?;
                let (listener, stop) = self.listening(&asa, h, &name).await?;
                let next = tokio::select! {
                    n = listener.next() => n,
                    () = stop.cancelled() => None,
                };
                let Some((session, objective)) = next else {
                    return Err(ApiError::new(
                        ErrorCode::Cancelled,
                        format!("stop_negotiate for {name:?}"),
                    ));
                };
                self.room_for_a_session()?;
                Ok(self.offer(h, session, objective, None).value())
            }
            Request::Subscribe { asa: h, kind, name } => {
                let asa = self.asa(h)?;
                let need = match kind.as_str() {
                    "negotiation" => Need::Own,
                    "flood" => Need::Read,
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::Unsupported,
                            format!(
                                "no subscriptions of kind {other:?}: \"negotiation\" or \"flood\""
                            ),
                        ))
                    }
                };
                self.allow(need, &name)?;
                if lock(&self.subscriptions).len() >= self.core.limits.requests {
                    return Err(ApiError::new(
                        ErrorCode::TooMany,
                        "too many subscriptions on this connection",
                    ));
                }
                if need == Need::Read {
                    let watcher = asa.watch_flood(&name).await?;
                    self.subscribe_floods(id, watcher);
                } else {
                    let (listener, stop) = self.listening(&asa, h, &name).await?;
                    self.subscribe_negotiation(id, h, listener, stop);
                }
                Ok(map(vec![("subscription", uint(id))]))
            }
            Request::Unsubscribe { subscription } => {
                let t = lock(&self.subscriptions)
                    .remove(&subscription)
                    .ok_or_else(|| form::bad("no such subscription"))?;
                t.abort();
                Ok(Value::Null)
            }
            Request::AbortSession { session: id } => {
                // The client's side of a session it will not answer (its
                // listener is full or gone): dropped, the engine aborts it.
                lock(&self.sessions)
                    .remove(&id)
                    .ok_or_else(|| ApiError::from(ErrorCode::NoSession))?;
                Ok(Value::Null)
            }
            Request::Gsend {
                asa,
                session: id,
                data,
            } => {
                let s = self.raw_session(asa, id)?;
                s.send_raw(&data).await?;
                Ok(Value::Null)
            }
            Request::Grecv {
                asa,
                session: id,
                timeout,
            } => {
                let s = self.raw_session(asa, id)?;
                let r = s.recv_raw(timeout).await;
                if matches!(&r, Err(e) if e.code == ErrorCode::NoPeer || e.code == ErrorCode::NoSession)
                {
                    // The peer closed it: forget it (graspy disactivates it).
                    lock(&self.sessions).remove(&id);
                }
                Ok(Value::Bytes(r?.as_cbor().to_vec()))
            }
            Request::Dump { asa: h } => {
                let mut d = self.asa(h)?.dump().await?;
                // What this client may read: its own ASAs (every one for
                // root), the objectives and cache entries it may read.
                let mine: HashMap<grasp_engine::AsaHandle, u64> = lock(&self.asas)
                    .iter()
                    .map(|(local, a)| (a.handle(), *local))
                    .collect();
                let names: HashMap<_, _> = d.asas.iter().cloned().collect();
                let may = |n: &str| self.grants.check(Need::Read, n).is_ok();
                if !self.grants.is_everything() {
                    d.asas.retain(|(h, _)| mine.contains_key(h));
                }
                d.objectives.retain(|o| may(&o.objective.name));
                d.discovery_cache.retain(|(n, _)| may(n));
                d.flood_cache.retain(|e| may(&e.objective.name));
                Ok(form::dump(&d, |h| {
                    (
                        names.get(&h).cloned().unwrap_or_default(),
                        mine.get(&h).copied(),
                    )
                }))
            }
            Request::StopNegotiate { asa: h, name } => {
                let asa = self.asa(h)?;
                if let Some((_, stop)) = lock(&self.listeners).remove(&(h, name.clone())) {
                    stop.cancel();
                }
                asa.stop_negotiate(&name).await?;
                Ok(Value::Null)
            }
        }
    }
}
