//! The Rust client of graspd's ASA socket: a [`GraspCore`] in another
//! process, so that [`Grasp`], [`grasp_engine::Asa`],
//! [`grasp_engine::Session`] and [`grasp_engine::NegotiationListener`]
//! work against graspd exactly as against an engine of one's own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let grasp = grasp_asa_api::client::connect(grasp_asa_api::client::DEFAULT_SOCKET).await?;
//! let asa = grasp.register_asa("my-asa").await?;
//! # Ok(()) }
//! ```
//!
//! One connection carries every call of the process at once: each request
//! has its id, a reader task hands each answer to its caller, and a call
//! whose future is dropped is cancelled at graspd (`[3, id]`). Negotiation
//! listeners and flood watches are subscriptions: graspd pushes each peer's
//! request, each flood, as an event; a streamed discover's locators come as
//! events of its request. When graspd goes away, outstanding calls fail and
//! listeners end ([`Remote::closed`] says when). The engine's counters are
//! graspd's (`grasp stats`): [`Grasp::stats`] answers unsupported here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ciborium::Value;
use futures::StreamExt;
use grasp_engine::api::{Call, Incoming};
use grasp_engine::proto::ChannelId;
use grasp_engine::wire::{Limits, Objective, SessionId, TaggedObjective};
use grasp_engine::{ApiError, ErrorCode, Grasp, GraspCore};
use grasp_engine::{
    AsaHandle, AsaLocator, DiscoverOptions, Dump, EngineStats, FloodEntry, NegotiationOutcome,
    RegisterOptions, SessionHandle,
};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::form::{self, Fields};
use crate::request::{Offer, Outcome, Request};
use crate::Frame;

/// Where graspd's ASA socket is when nobody says otherwise (graspd's
/// `[api] socket` in its packaged configuration).
pub const DEFAULT_SOCKET: &str = "/run/graspd/api.sock";

/// Frames waiting for the writer.
const SEND_QUEUE: usize = 1024;
/// Requests queued per negotiation listener before they are refused.
const LISTEN_QUEUE: usize = 64;

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be reached.
    #[error("cannot connect to graspd's ASA socket {path}: {source} (is graspd running with `[api] socket` set, and may this user open it?)")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// graspd refused the greeting (another protocol version, say).
    #[error("graspd refused hello on {path}: {error}")]
    Refused {
        /// The socket's path.
        path: PathBuf,
        /// graspd's answer.
        error: ApiError,
    },
}

/// What graspd said of itself in `hello`.
#[derive(Clone, Debug)]
pub struct Hello {
    /// The protocol version in use.
    pub version: u64,
    /// The largest frame graspd takes from us.
    pub max_frame: usize,
    /// The node's locator.
    pub locator: Option<grasp_engine::wire::Locator>,
    /// graspd relays between interfaces.
    pub relay: bool,
    /// This is a DULL instance.
    pub dull: bool,
    /// The security backend: "none", "quads" or "tls".
    pub security: String,
    /// The daemon and its version.
    pub daemon: String,
    /// The optional parts of the protocol both sides have.
    pub features: Vec<String>,
    /// The largest GRASP message the node sends or takes.
    pub max_message: usize,
    /// The whole answer, for what this build does not read.
    pub raw: Value,
}

/// Connects to graspd's ASA socket at `path`: the [`Grasp`] every ASA of
/// this process can share.
pub async fn connect(path: impl AsRef<Path>) -> Result<Grasp, ConnectError> {
    Ok(Grasp::with_core(Remote::connect(path).await?))
}

type Waiter = oneshot::Sender<Result<Value, ApiError>>;

/// graspd's GRASP core, over its ASA socket.
#[derive(Debug)]
pub struct Remote {
    /// Encoded frames to the writer.
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    hello: Hello,
    limits: Limits,
}

#[derive(Debug, Default)]
struct Shared {
    next_id: AtomicU64,
    /// Callers waiting for their answer, by request id.
    pending: Mutex<HashMap<u64, Waiter>>,
    /// Negotiation listeners and flood watchers by subscription (the
    /// subscribe request's id).
    listeners: Mutex<HashMap<u64, Listener>>,
    /// The connection ended: calls fail at once.
    gone: std::sync::atomic::AtomicBool,
    /// Woken when the connection ends.
    closed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Listener {
    asa: AsaHandle,
    name: String,
    to: To,
}

/// Where a subscription's events go.
#[derive(Debug)]
enum To {
    Negotiation(mpsc::Sender<Incoming>),
    Flood(mpsc::Sender<FloodEntry>),
    /// A streamed discover's locators (until its answer).
    Found(mpsc::Sender<AsaLocator>),
}

impl Listener {
    fn negotiation(&self) -> bool {
        matches!(self.to, To::Negotiation(_))
    }
}

impl Shared {
    /// A request id not used before on this connection (never 0).
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn gone() -> ApiError {
    ApiError::new(
        ErrorCode::NoCore,
        "graspd closed the ASA socket (is it still running?)",
    )
}

impl Remote {
    /// Connects and says hello.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Arc<Remote>, ConnectError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ConnectError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let framed =
            crate::frames(stream, crate::DEFAULT_MAX_FRAME).map_err(|source| ConnectError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let (sink, source) = framed.split();
        let (tx, rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
        tokio::spawn(crate::write_frames(sink, rx, Some));
        let shared = Arc::new(Shared::default());
        tokio::spawn(read(source, shared.clone(), tx.clone()));
        let mut remote = Remote {
            tx,
            shared,
            hello: Hello {
                version: 0,
                max_frame: crate::DEFAULT_MAX_FRAME,
                locator: None,
                relay: false,
                dull: false,
                security: String::new(),
                daemon: String::new(),
                features: Vec::new(),
                max_message: Limits::default().max_message_size,
                raw: Value::Null,
            },
            limits: Limits::default(),
        };
        let refused = |error| ConnectError::Refused {
            path: path.to_path_buf(),
            error,
        };
        let raw = remote
            .call(Request::Hello {
                versions: vec![crate::VERSION],
                features: crate::FEATURES.iter().map(|f| f.to_string()).collect(),
                max_frame: Some(crate::DEFAULT_MAX_FRAME as u64),
                client: Some(format!(
                    "grasp-asa-api {} pid {}",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id()
                )),
            })
            .await
            .map_err(refused)?;
        remote.hello = hello_of(raw).map_err(refused)?;
        remote.limits.max_message_size = remote.hello.max_message;
        Ok(Arc::new(remote))
    }

    /// Resolves when the connection to graspd has ended (graspd stopped
    /// or closed it); every call fails from then on.
    pub async fn closed(&self) {
        let wait = self.shared.closed.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        if !self.shared.gone.load(Ordering::SeqCst) {
            wait.await;
        }
    }

    /// What graspd said in `hello`.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends `request` and waits for its answer (the result, undecoded).
    /// Dropping the future cancels the call at graspd.
    pub async fn call(&self, request: Request) -> Result<Value, ApiError> {
        self.call_as(self.next_id(), request).await
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id()
    }

    /// [`Remote::call`] with request id `id` (from [`Remote::next_id`]).
    async fn call_as(&self, id: u64, request: Request) -> Result<Value, ApiError> {
        if self.shared.gone.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let method = request.method();
        let frame = Bytes::from(request.frame(id).encode());
        // graspd closes a connection that sends it an oversized frame: say
        // so here instead.
        let size = frame.len();
        if size > self.hello.max_frame {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "{method} would be a {size}-byte frame; graspd takes {}",
                    self.hello.max_frame
                ),
            ));
        }
        let (wait, answer) = oneshot::channel();
        lock(&self.shared.pending).insert(id, wait);
        let mut outstanding = Outstanding {
            id,
            remote: self,
            done: false,
        };
        if self.tx.send(frame).await.is_err() {
            return Err(gone());
        }
        let r = answer.await.unwrap_or_else(|_| Err(gone()));
        outstanding.done = true;
        r
    }

    async fn done(&self, request: Request) -> Result<(), ApiError> {
        self.call(request).await.map(|_| ())
    }

    async fn negotiation(&self, request: Request) -> Result<NegotiationOutcome, ApiError> {
        let v = self.call(request).await?;
        Ok(match Outcome::of(&v, &self.limits)? {
            Outcome::Accepted => NegotiationOutcome::Accepted,
            Outcome::Declined { reason } => NegotiationOutcome::Declined { reason },
            Outcome::Step(offer) => {
                let i = incoming(offer);
                NegotiationOutcome::Step {
                    session: i.session,
                    objective: i.objective,
                    peer: i.peer,
                    identity: i.identity,
                }
            }
        })
    }

    /// Subscribes to `kind` events of `name` for ASA `a`, delivered to
    /// `to`. A subscription's id is its request's, and graspd may push the
    /// first event before its answer: the listener is in place first.
    async fn subscribe(&self, a: AsaHandle, name: String, to: To) -> Result<(), ApiError> {
        let kind = match to {
            To::Negotiation(_) => "negotiation",
            To::Flood(_) => "flood",
            To::Found(_) => "locator",
        };
        let id = self.next_id();
        lock(&self.shared.listeners).insert(
            id,
            Listener {
                asa: a,
                name: name.clone(),
                to,
            },
        );
        let subscribe = Request::Subscribe {
            asa: a.0.into(),
            kind: kind.into(),
            name,
        };
        if let Err(e) = self.call_as(id, subscribe).await {
            lock(&self.shared.listeners).remove(&id);
            return Err(e);
        }
        Ok(())
    }

    fn forget_listeners(&self, keep: impl Fn(&Listener) -> bool) {
        lock(&self.shared.listeners).retain(|_, l| keep(l));
    }
}

/// A call under way; dropped before its answer, it is cancelled at graspd.
struct Outstanding<'a> {
    id: u64,
    remote: &'a Remote,
    done: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if !self.done && lock(&self.remote.shared.pending).remove(&self.id).is_some() {
            let cancel = Frame::Cancel { id: self.id }.encode();
            let _ = self.remote.tx.try_send(Bytes::from(cancel));
        }
    }
}

fn protocol(detail: String) -> ApiError {
    ApiError::new(
        ErrorCode::Unspec,
        format!("graspd's answer is not the ASA protocol: {detail}"),
    )
}

/// graspd's session ids travel in the handle's channel field: an ASA never
/// looks inside a handle.
fn session_handle(id: u64) -> SessionHandle {
    SessionHandle {
        channel: ChannelId(id),
        session_id: SessionId(0),
    }
}

/// A peer's proposal as the engine's API hands it to an ASA.
fn incoming(o: Offer) -> Incoming {
    let (peer, identity) = match o.peer {
        Some((p, id)) => (Some(p), id),
        None => (None, None),
    };
    Incoming {
        session: session_handle(o.session),
        objective: o.objective,
        peer,
        identity,
    }
}

fn hello_of(v: Value) -> Result<Hello, ApiError> {
    let f = Fields::of(&v, "hello")?;
    let node = f.fields("node")?;
    let limits = f.fields("limits")?;
    let lim = Limits::default();
    Ok(Hello {
        version: f.u64("version")?,
        max_frame: usize::try_from(f.u64("max_frame")?).unwrap_or(usize::MAX),
        locator: node.opt_locator("locator", &lim)?,
        relay: node.opt_bool("relay")?.unwrap_or(false),
        dull: node.opt_bool("dull")?.unwrap_or(false),
        security: node.opt_text("security")?.unwrap_or_default(),
        daemon: node.opt_text("daemon")?.unwrap_or_default(),
        features: f
            .list("features")?
            .iter()
            .filter_map(|v| v.as_text().map(str::to_string))
            .collect(),
        max_message: limits
            .opt_u64("max_message")?
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(lim.max_message_size),
        raw: v.clone(),
    })
}

/// The reader: answers to their callers, events to their listeners.
async fn read<S>(mut source: S, shared: Arc<Shared>, tx: mpsc::Sender<Bytes>)
where
    S: futures::Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
{
    // Peers' requests are read with the largest limits; the daemon checked
    // them against the node's already.
    let lim = Limits::default();
    while let Some(Ok(raw)) = source.next().await {
        let frame = match Frame::decode(&raw) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "graspd sent what is not a frame; closing");
                break;
            }
        };
        match frame {
            Frame::Response { id, err, result } => {
                let waiter = lock(&shared.pending).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(match err {
                        None => Ok(result),
                        Some(e) => Err(ApiError::from(e)),
                    });
                }
            }
            Frame::Event {
                subscription: 0,
                kind,
                data,
            } => {
                let detail = match data {
                    Value::Array(a) => a
                        .last()
                        .and_then(|d| d.as_text())
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                };
                warn!(%kind, %detail, "graspd is closing the ASA connection");
            }
            Frame::Event {
                subscription,
                kind,
                data,
            } if kind == "negotiation" => {
                let offer = Fields::of(&data, "event").and_then(|f| Offer::of(&f, &lim));
                let incoming = match offer {
                    Ok(o) => incoming(o),
                    Err(e) => {
                        warn!(error = %e, "graspd sent a negotiation event this client cannot read");
                        continue;
                    }
                };
                let session = incoming.session;
                let mut listeners = lock(&shared.listeners);
                let Some(To::Negotiation(l)) = listeners.get(&subscription).map(|l| &l.to) else {
                    drop(listeners);
                    // Its listener has just stopped.
                    abort(&shared, &tx, session);
                    continue;
                };
                match l.try_send(incoming) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        debug!("negotiation listener full; the request is abandoned");
                        drop(listeners);
                        abort(&shared, &tx, session);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        // The listener was dropped: stop listening.
                        listeners.remove(&subscription);
                        drop(listeners);
                        abort(&shared, &tx, session);
                        cast(&shared, &tx, Request::Unsubscribe { subscription });
                    }
                }
            }
            Frame::Event {
                subscription,
                kind,
                data,
            } if kind == "flood" => {
                let entry =
                    match Fields::of(&data, "event").and_then(|f| form::flood_entry_of(&f, &lim)) {
                        Ok(e) => e,
                        Err(e) => {
                            warn!(error = %e, "graspd sent a flood event this client cannot read");
                            continue;
                        }
                    };
                let mut listeners = lock(&shared.listeners);
                let Some(To::Flood(w)) = listeners.get(&subscription).map(|l| &l.to) else {
                    continue; // its watch has just stopped
                };
                match w.try_send(entry) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        debug!("flood watcher full; a flood is dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        listeners.remove(&subscription);
                        drop(listeners);
                        cast(&shared, &tx, Request::Unsubscribe { subscription });
                    }
                }
            }
            Frame::Event {
                subscription,
                kind,
                data,
            } if kind == "locator" => {
                let l = match Fields::of(&data, "event")
                    .and_then(|f| form::asa_locator_of(&f, &lim))
                {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "graspd sent a locator event this client cannot read");
                        continue;
                    }
                };
                if let Some(To::Found(tx)) =
                    lock(&shared.listeners).get(&subscription).map(|l| &l.to)
                {
                    // One that does not fit is in the answer anyway.
                    let _ = tx.try_send(l);
                }
            }
            Frame::Event { kind, .. } => debug!(%kind, "event of a kind this client does not know"),
            Frame::Request { .. } | Frame::Cancel { .. } => {
                warn!("graspd sent a request; closing");
                break;
            }
        }
    }
    shared.gone.store(true, Ordering::SeqCst);
    shared.closed.notify_waiters();
    for (_, w) in lock(&shared.pending).drain() {
        let _ = w.send(Err(gone()));
    }
    lock(&shared.listeners).clear();
}

/// Abandons session `s` at graspd (the peer sees its connection close).
fn abort(shared: &Shared, tx: &mpsc::Sender<Bytes>, s: SessionHandle) {
    let session = s.channel.0;
    cast(shared, tx, Request::AbortSession { session });
}

/// Sends a request whose answer nobody waits for (no caller holds its id).
fn cast(shared: &Shared, tx: &mpsc::Sender<Bytes>, r: Request) {
    let _ = tx.try_send(Bytes::from(r.frame(shared.next_id()).encode()));
}

impl GraspCore for Remote {
    fn stats(&self) -> Call<'_, (EngineStats, usize)> {
        Box::pin(async {
            Err(ApiError::new(
                ErrorCode::Unsupported,
                "the engine's counters are graspd's: read them with `grasp stats`",
            ))
        })
    }

    fn register_asa(&self, name: String) -> Call<'_, AsaHandle> {
        Box::pin(async move {
            let v = self.call(Request::RegisterAsa { name }).await?;
            let h = Fields::of(&v, "the answer")?.u32("asa")?;
            Ok(AsaHandle(h))
        })
    }

    fn deregister_asa(&self, a: AsaHandle) -> Call<'_, ()> {
        Box::pin(async move {
            self.done(Request::DeregisterAsa { asa: a.0.into() })
                .await?;
            self.forget_listeners(|l| l.asa != a);
            Ok(())
        })
    }

    fn register_objective(
        &self,
        a: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Request::RegisterObjective {
            asa: a.0.into(),
            objective,
            options,
        }))
    }

    fn deregister_objective(&self, a: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(async move {
            self.done(Request::DeregisterObjective {
                asa: a.0.into(),
                name: name.clone(),
            })
            .await?;
            self.forget_listeners(|l| !l.negotiation() || l.asa != a || l.name != name);
            Ok(())
        })
    }

    fn discover(
        &self,
        a: AsaHandle,
        objective: Objective,
        options: DiscoverOptions,
        found: Option<mpsc::Sender<AsaLocator>>,
    ) -> Call<'_, Vec<AsaLocator>> {
        Box::pin(async move {
            let request = Request::Discover {
                asa: a.0.into(),
                objective,
                options,
                stream: found.is_some(),
            };
            let id = self.next_id();
            // Events of a streamed discover carry its request's id, and come
            // before its answer.
            if let Some(tx) = found {
                let l = Listener {
                    asa: a,
                    name: String::new(),
                    to: To::Found(tx),
                };
                lock(&self.shared.listeners).insert(id, l);
            }
            let v = self.call_as(id, request).await;
            lock(&self.shared.listeners).remove(&id);
            let v = v?;
            let Value::Array(found) = v else {
                return Err(protocol("discover answers an array".into()));
            };
            found
                .iter()
                .map(|l| form::asa_locator_of(&Fields::of(l, "locator")?, &self.limits))
                .collect()
        })
    }

    fn synchronize(
        &self,
        a: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, Objective> {
        Box::pin(async move {
            let v = self
                .call(Request::Synchronize {
                    asa: a.0.into(),
                    objective,
                    peer,
                    timeout,
                })
                .await?;
            let params = [("objective".to_string(), v)];
            Fields::params(&params).objective("objective", &self.limits)
        })
    }

    fn listen_synchronize(&self, a: AsaHandle, objective: Objective) -> Call<'_, ()> {
        Box::pin(self.done(Request::ListenSynchronize {
            asa: a.0.into(),
            objective,
        }))
    }

    fn stop_synchronize(&self, a: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.done(Request::StopSynchronize {
            asa: a.0.into(),
            name,
        }))
    }

    fn flood(&self, a: AsaHandle, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Call<'_, ()> {
        Box::pin(self.done(Request::Flood {
            asa: a.0.into(),
            ttl_ms,
            tagged,
        }))
    }

    fn get_flood(&self, a: AsaHandle, name: String) -> Call<'_, Vec<FloodEntry>> {
        Box::pin(async move {
            let v = self
                .call(Request::GetFlood {
                    asa: a.0.into(),
                    name,
                })
                .await?;
            let Value::Array(entries) = v else {
                return Err(protocol("get_flood answers an array".into()));
            };
            entries
                .iter()
                .map(|e| form::flood_entry_of(&Fields::of(e, "entry")?, &self.limits))
                .collect()
        })
    }

    fn expire_flood(&self, a: AsaHandle, entry: FloodEntry) -> Call<'_, ()> {
        Box::pin(self.done(Request::ExpireFlood {
            asa: a.0.into(),
            entry,
        }))
    }

    fn request_negotiate(
        &self,
        a: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.negotiation(Request::RequestNegotiate {
            asa: a.0.into(),
            objective,
            peer,
            timeout,
            noloop: false,
        }))
    }

    fn request_raw(
        &self,
        a: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, SessionHandle> {
        Box::pin(async move {
            let v = self
                .call(Request::RequestNegotiate {
                    asa: a.0.into(),
                    objective,
                    peer,
                    timeout,
                    noloop: true,
                })
                .await?;
            Ok(session_handle(
                Fields::of(&v, "the answer")?.u64("session")?,
            ))
        })
    }

    fn raw_send(
        &self,
        a: AsaHandle,
        s: SessionHandle,
        data: grasp_engine::wire::Value,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Request::Gsend {
            asa: a.0.into(),
            session: s.channel.0,
            data,
        }))
    }

    fn raw_recv(
        &self,
        a: AsaHandle,
        s: SessionHandle,
        timeout: Duration,
    ) -> Call<'_, grasp_engine::wire::Value> {
        Box::pin(async move {
            let v = self
                .call(Request::Grecv {
                    asa: a.0.into(),
                    session: s.channel.0,
                    timeout,
                })
                .await?;
            let Value::Bytes(b) = v else {
                return Err(protocol("grecv answers a byte string".into()));
            };
            grasp_engine::wire::Value::from_cbor(b)
                .map_err(|e| protocol(format!("grecv's item: {e}")))
        })
    }

    fn negotiate_step(
        &self,
        a: AsaHandle,
        s: SessionHandle,
        objective: Objective,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.negotiation(Request::NegotiateStep {
            asa: a.0.into(),
            session: s.channel.0,
            objective,
            timeout,
        }))
    }

    fn negotiate_wait(&self, a: AsaHandle, s: SessionHandle, wait: Duration) -> Call<'_, ()> {
        Box::pin(self.done(Request::NegotiateWait {
            asa: a.0.into(),
            session: s.channel.0,
            wait,
        }))
    }

    fn end_negotiate(
        &self,
        a: AsaHandle,
        s: SessionHandle,
        accept: bool,
        reason: Option<String>,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Request::EndNegotiate {
            asa: a.0.into(),
            session: s.channel.0,
            accept,
            reason,
        }))
    }

    fn send_invalid(
        &self,
        a: AsaHandle,
        s: SessionHandle,
        info: Option<grasp_engine::wire::Value>,
    ) -> Call<'_, ()> {
        Box::pin(async move {
            let info = match info {
                None => None,
                Some(i) => Some(
                    ciborium::de::from_reader(i.as_cbor())
                        .map_err(|e| form::bad(format!("info is not CBOR: {e}")))?,
                ),
            };
            self.done(Request::SendInvalid {
                asa: a.0.into(),
                session: s.channel.0,
                info,
            })
            .await
        })
    }

    fn abort_session(&self, _asa: AsaHandle, s: SessionHandle) {
        abort(&self.shared, &self.tx, s);
    }

    fn listen_negotiate(&self, a: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<Incoming>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            // A subscription's id is its request's, and graspd may push the
            // first request before its answer: the listener is in place
            // before the call.
            self.subscribe(a, name, To::Negotiation(tx)).await?;
            Ok(rx)
        })
    }

    fn watch_flood(&self, a: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<FloodEntry>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            self.subscribe(a, name, To::Flood(tx)).await?;
            Ok(rx)
        })
    }

    fn dump(&self, a: AsaHandle) -> Call<'_, Dump> {
        Box::pin(async move {
            let v = self.call(Request::Dump { asa: a.0.into() }).await?;
            form::dump_of(&v, &self.limits)
        })
    }

    fn stop_watch_flood(&self, a: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(async move {
            let subs: Vec<u64> = {
                let mut l = lock(&self.shared.listeners);
                let subs = l
                    .iter()
                    .filter(|(_, w)| !w.negotiation() && w.asa == a && w.name == name)
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>();
                for id in &subs {
                    l.remove(id);
                }
                subs
            };
            for subscription in subs {
                self.done(Request::Unsubscribe { subscription }).await?;
            }
            Ok(())
        })
    }

    fn stop_negotiate(&self, a: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(async move {
            let r = self
                .done(Request::StopNegotiate {
                    asa: a.0.into(),
                    name: name.clone(),
                })
                .await;
            self.forget_listeners(|l| !l.negotiation() || l.asa != a || l.name != name);
            r
        })
    }
}
