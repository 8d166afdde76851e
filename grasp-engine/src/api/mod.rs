//! The ASA API of RFC 8991, in async Rust.
//!
//! [`Grasp::start`] runs an engine over a transport and returns a handle.
//! Every RFC 8991 function is an `async fn` on [`Grasp`], [`Asa`] or a
//! negotiation [`Session`]; failures are [`ApiError`]s carrying the RFC's
//! numeric code. Calls never block one another.
//!
//! Behind the handle is a [`GraspCore`]: the engine in this process
//! ([`Grasp::start`]), or another process's GRASP core, such as graspd's
//! ASA socket (the `grasp-asa-api` client gives a [`Grasp`] through
//! [`Grasp::with_core`]). An ASA written against [`Grasp`] runs on either
//! unchanged (RFC 8991 §2.1: one GRASP core per node, shared by its ASAs).
//!
//! | RFC 8991 | here |
//! | --- | --- |
//! | register_asa / deregister_asa | [`Grasp::register_asa`], [`Asa::deregister`] |
//! | register_objective / deregister_objective | [`Asa::register_objective`], [`Asa::deregister_objective`] |
//! | discover | [`Asa::discover`] |
//! | request_negotiate | [`Asa::request_negotiate`] |
//! | listen_negotiate / stop_listen_negotiate | [`Asa::listen_negotiate`], [`Asa::stop_negotiate`] |
//! | negotiate_step / negotiate_wait / end_negotiate / send_invalid | [`Session::step`], [`Session::wait`], [`Session::accept`] / [`Session::decline`], [`Session::send_invalid`] |
//! | synchronize | [`Asa::synchronize`] |
//! | listen_synchronize / stop_listen_synchronize | [`Asa::listen_synchronize`], [`Asa::stop_synchronize`] |
//! | flood / get_flood / expire_flood | [`Asa::flood`], [`Asa::get_flood`], [`Asa::expire_flood`] |

mod local;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use crate::error::ApiError;
use crate::proto::{
    AsaHandle, AsaLocator, Config, DiscoverOptions, Dump, EngineStats, FloodEntry,
    NegotiationOutcome, RegisterOptions, SessionHandle,
};
use crate::transport::{AcpTransport, InboundStream};
use crate::wire::{Objective, TaggedObjective, Value, GRASP_DEF_TIMEOUT_MS};

/// `GRASP_DEF_TIMEOUT` as a duration.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(GRASP_DEF_TIMEOUT_MS as u64);

/// A call into a [`GraspCore`]: it owns its arguments and borrows only the
/// core.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// A peer's negotiation request, as a core hands it to a listener (made
/// by the engine's driver, which is why it lives there).
pub use crate::driver::Incoming;

/// A GRASP core: what the ASA API's handles talk to. One method per
/// RFC 8991 call, taking the ASA's handle; an implementation answers each
/// call on its own (calls run concurrently) and never panics on a bad
/// argument (it answers an [`ApiError`]).
///
/// ASAs do not use this trait; they use [`Grasp`], [`Asa`] and [`Session`].
/// It is public so that a core in another process can be reached through
/// the same handles.
pub trait GraspCore: Send + Sync + fmt::Debug {
    /// The core's counters and open unicast channels (not RFC 8991).
    fn stats(&self) -> Call<'_, (EngineStats, usize)>;
    /// `register_asa`.
    fn register_asa(&self, name: String) -> Call<'_, AsaHandle>;
    /// `deregister_asa`.
    fn deregister_asa(&self, asa: AsaHandle) -> Call<'_, ()>;
    /// `register_objective`.
    fn register_objective(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Call<'_, ()>;
    /// `deregister_objective`.
    fn deregister_objective(&self, asa: AsaHandle, name: String) -> Call<'_, ()>;
    /// `discover`.
    /// `discover`; with `found`, each new locator is also sent there as it
    /// arrives (one that does not fit is in the result anyway).
    fn discover(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: DiscoverOptions,
        found: Option<mpsc::Sender<AsaLocator>>,
    ) -> Call<'_, Vec<AsaLocator>>;
    /// `synchronize`.
    fn synchronize(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, Objective>;
    /// `listen_synchronize`.
    fn listen_synchronize(&self, asa: AsaHandle, objective: Objective) -> Call<'_, ()>;
    /// `stop_listen_synchronize`.
    fn stop_synchronize(&self, asa: AsaHandle, name: String) -> Call<'_, ()>;
    /// `flood`.
    fn flood(&self, asa: AsaHandle, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Call<'_, ()>;
    /// `get_flood`.
    fn get_flood(&self, asa: AsaHandle, name: String) -> Call<'_, Vec<FloodEntry>>;
    /// `expire_flood`.
    fn expire_flood(&self, asa: AsaHandle, entry: FloodEntry) -> Call<'_, ()>;
    /// `request_negotiate`.
    fn request_negotiate(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome>;
    /// graspy's `req_negotiate(..., noloop=True)`: M_REQ_NEG sent, the
    /// session answered at once, for `raw_send`/`raw_recv`.
    fn request_raw(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, SessionHandle>;
    /// graspy's `gsend`: one bare CBOR item on a raw session.
    fn raw_send(&self, asa: AsaHandle, session: SessionHandle, data: Value) -> Call<'_, ()>;
    /// graspy's `grecv`: the next bare CBOR item, waiting up to `timeout`.
    fn raw_recv(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        timeout: Duration,
    ) -> Call<'_, Value>;
    /// `negotiate_step`.
    fn negotiate_step(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        objective: Objective,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome>;
    /// `negotiate_wait`.
    fn negotiate_wait(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        wait: Duration,
    ) -> Call<'_, ()>;
    /// `end_negotiate`.
    fn end_negotiate(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        accept: bool,
        reason: Option<String>,
    ) -> Call<'_, ()>;
    /// `send_invalid`.
    fn send_invalid(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        info: Option<Value>,
    ) -> Call<'_, ()>;
    /// A session dropped without ending it: abandon it (the peer sees the
    /// connection close). Never waits.
    fn abort_session(&self, asa: AsaHandle, session: SessionHandle);
    /// `listen_negotiate`: requests arrive on the receiver until
    /// `stop_negotiate` (or the ASA or objective goes); dropping the
    /// receiver stops listening too.
    fn listen_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<Incoming>>;
    /// `stop_listen_negotiate`.
    fn stop_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, ()>;
    /// Floods of `name` entering the flood cache arrive on the receiver
    /// until `stop_watch_flood` (or the ASA goes); dropping it stops the
    /// watch too. A receiver that does not keep up misses floods.
    fn watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<FloodEntry>>;
    /// Stops watching `name`'s floods.
    fn stop_watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, ()>;
    /// A read-only view of registrations and caches.
    fn dump(&self, asa: AsaHandle) -> Call<'_, Dump>;
}

/// A running GRASP instance. Cheap to clone; the engine stops when every
/// clone (and every [`Asa`]) is gone.
#[derive(Clone, Debug)]
pub struct Grasp {
    core: Arc<dyn GraspCore>,
}

impl Grasp {
    /// Starts an engine over `transport` (spawns its task; call inside a
    /// tokio runtime).
    pub fn start(
        transport: Arc<dyn AcpTransport>,
        inbound: InboundStream,
        config: Config,
    ) -> Grasp {
        Grasp::with_core(Arc::new(local::Local::start(transport, inbound, config)))
    }

    /// The API over another GRASP core (such as graspd's, through its ASA
    /// socket).
    pub fn with_core(core: Arc<dyn GraspCore>) -> Grasp {
        Grasp { core }
    }

    /// The engine's counters (every drop is counted) and the number of
    /// unicast channels open now. Not an RFC 8991 call: for operators and
    /// tests.
    pub async fn stats(&self) -> Result<(EngineStats, usize), ApiError> {
        self.core.stats().await
    }

    /// `register_asa`: every ASA's first call.
    pub async fn register_asa(&self, name: &str) -> Result<Asa, ApiError> {
        let handle = self.core.register_asa(name.to_string()).await?;
        Ok(Asa {
            grasp: self.clone(),
            handle,
        })
    }
}

/// A registered ASA (RFC 8991 `asa_handle` plus the engine).
#[derive(Clone, Debug)]
pub struct Asa {
    grasp: Grasp,
    handle: AsaHandle,
}

impl Asa {
    /// The ASA's handle.
    pub fn handle(&self) -> AsaHandle {
        self.handle
    }

    fn core(&self) -> &dyn GraspCore {
        &*self.grasp.core
    }

    /// `deregister_asa`: removes its objectives and listeners.
    pub async fn deregister(self) -> Result<(), ApiError> {
        self.core().deregister_asa(self.handle).await
    }

    /// `register_objective`.
    pub async fn register_objective(
        &self,
        objective: &Objective,
        options: RegisterOptions,
    ) -> Result<(), ApiError> {
        self.core()
            .register_objective(self.handle, objective.clone(), options)
            .await
    }

    /// `deregister_objective`.
    pub async fn deregister_objective(&self, name: &str) -> Result<(), ApiError> {
        self.core()
            .deregister_objective(self.handle, name.to_string())
            .await
    }

    /// `discover`: cached answers at once when there are any; otherwise asks
    /// the network and waits for the timeout, or only for the first answer
    /// with `first_only`. An empty list is not an error.
    pub async fn discover(
        &self,
        objective: &Objective,
        options: DiscoverOptions,
    ) -> Result<Vec<AsaLocator>, ApiError> {
        self.core()
            .discover(self.handle, objective.clone(), options, None)
            .await
    }

    /// `discover`, also sending each new locator to `found` as it arrives
    /// (answers from the cache come only in the result). For an ASA that
    /// acts on the first answers while collecting the rest.
    pub async fn discover_each(
        &self,
        objective: &Objective,
        options: DiscoverOptions,
        found: mpsc::Sender<AsaLocator>,
    ) -> Result<Vec<AsaLocator>, ApiError> {
        self.core()
            .discover(self.handle, objective.clone(), options, Some(found))
            .await
    }

    /// `synchronize`: from `peer`, or (with `None`) the flood cache, then a
    /// rapid value from discovery, then discovery and M_REQ_SYN.
    pub async fn synchronize(
        &self,
        objective: &Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<Objective, ApiError> {
        self.core()
            .synchronize(self.handle, objective.clone(), peer, timeout)
            .await
    }

    /// `listen_synchronize`: serve `objective`'s value; call again to update it.
    pub async fn listen_synchronize(&self, objective: &Objective) -> Result<(), ApiError> {
        self.core()
            .listen_synchronize(self.handle, objective.clone())
            .await
    }

    /// `stop_listen_synchronize`.
    pub async fn stop_synchronize(&self, name: &str) -> Result<(), ApiError> {
        self.core()
            .stop_synchronize(self.handle, name.to_string())
            .await
    }

    /// `flood`: `ttl_ms` 0 is indefinite.
    pub async fn flood(&self, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Result<(), ApiError> {
        self.core().flood(self.handle, ttl_ms, tagged).await
    }

    /// `get_flood`: every unexpired copy, one per source and tag.
    pub async fn get_flood(&self, name: &str) -> Result<Vec<FloodEntry>, ApiError> {
        self.core().get_flood(self.handle, name.to_string()).await
    }

    /// `expire_flood`.
    pub async fn expire_flood(&self, entry: &FloodEntry) -> Result<(), ApiError> {
        self.core().expire_flood(self.handle, entry.clone()).await
    }

    /// `request_negotiate`: to `peer`, or to the first peer discovery finds.
    pub async fn request_negotiate(
        &self,
        objective: &Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<Negotiation, ApiError> {
        let out = self
            .core()
            .request_negotiate(self.handle, objective.clone(), peer, timeout)
            .await?;
        Ok(self.outcome(out))
    }

    /// graspy's raw channel (`req_negotiate(..., noloop=True)`, not RFC
    /// 8990): M_REQ_NEG for `objective` goes to `peer` (or the first peer
    /// discovery finds) and the session is returned at once; then
    /// [`Session::send_raw`] and [`Session::recv_raw`] carry bare CBOR
    /// items both ways, as graspy's `gsend`/`grecv` do. The peer's ASA
    /// takes the session from its listener and uses the same two calls.
    /// Dropping the session closes it.
    pub async fn request_raw(
        &self,
        objective: &Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<Session, ApiError> {
        let handle = self
            .core()
            .request_raw(self.handle, objective.clone(), peer, timeout)
            .await?;
        Ok(Session::new(self.clone(), handle, None, None))
    }

    fn outcome(&self, out: NegotiationOutcome) -> Negotiation {
        match out {
            NegotiationOutcome::Accepted => Negotiation::Accepted,
            NegotiationOutcome::Declined { reason } => Negotiation::Declined { reason },
            NegotiationOutcome::Step {
                session,
                objective,
                peer,
                identity,
            } => Negotiation::Step {
                session: Session::new(self.clone(), session, peer, identity),
                objective,
            },
        }
    }

    /// `listen_negotiate`: requests for `name` arrive on the returned
    /// listener (several tasks may share it).
    pub async fn listen_negotiate(&self, name: &str) -> Result<NegotiationListener, ApiError> {
        let rx = self
            .core()
            .listen_negotiate(self.handle, name.to_string())
            .await?;
        Ok(NegotiationListener {
            asa: self.clone(),
            rx: Arc::new(Mutex::new(rx)),
        })
    }

    /// `stop_listen_negotiate`.
    pub async fn stop_negotiate(&self, name: &str) -> Result<(), ApiError> {
        self.core()
            .stop_negotiate(self.handle, name.to_string())
            .await
    }

    /// Watches the floods of `name`: each one entering the flood cache
    /// (from a peer, or this node's own) arrives on the returned watcher,
    /// instead of polling [`Asa::get_flood`] (RFC 8991's event-loop model).
    pub async fn watch_flood(&self, name: &str) -> Result<FloodWatcher, ApiError> {
        let rx = self
            .core()
            .watch_flood(self.handle, name.to_string())
            .await?;
        Ok(FloodWatcher {
            rx: Arc::new(Mutex::new(rx)),
        })
    }

    /// A read-only view of the node's registrations and caches (through
    /// graspd: what this client may read; other clients' ASAs have handle
    /// 0).
    pub async fn dump(&self) -> Result<Dump, ApiError> {
        self.core().dump(self.handle).await
    }

    /// Stops watching the floods of `name`.
    pub async fn stop_watch_flood(&self, name: &str) -> Result<(), ApiError> {
        self.core()
            .stop_watch_flood(self.handle, name.to_string())
            .await
    }
}

/// Floods of one objective as they enter the flood cache
/// ([`Asa::watch_flood`]).
#[derive(Clone, Debug)]
pub struct FloodWatcher {
    rx: Arc<Mutex<mpsc::Receiver<FloodEntry>>>,
}

impl FloodWatcher {
    /// The next flood; `None` once watching has stopped.
    pub async fn next(&self) -> Option<FloodEntry> {
        self.rx.lock().await.recv().await
    }
}

/// The result of [`Asa::request_negotiate`] or [`Session::step`].
#[derive(Debug)]
pub enum Negotiation {
    /// The peer accepted; the session is over.
    Accepted,
    /// The peer declined; the session is over.
    Declined {
        /// Its reason.
        reason: Option<String>,
    },
    /// The peer proposed `objective`; our turn on `session`.
    Step {
        /// Continue with this.
        session: Session,
        /// The proposal (loop count already decremented).
        objective: Objective,
    },
}

/// Our side of a negotiation session in progress. Dropping it without
/// ending it abandons the session (the peer sees the connection close).
#[derive(Debug)]
pub struct Session {
    asa: Asa,
    handle: SessionHandle,
    peer: Option<SocketAddr>,
    identity: Option<String>,
    finished: bool,
}

impl Session {
    fn new(
        asa: Asa,
        handle: SessionHandle,
        peer: Option<SocketAddr>,
        identity: Option<String>,
    ) -> Self {
        Session {
            asa,
            handle,
            peer,
            identity,
            finished: false,
        }
    }

    /// Who the peer proved to be (its certificate's name) on transports
    /// that authenticate peers individually (TLS); `None` on others (a
    /// QUADS peer is only known to hold the domain key).
    pub fn peer_identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The session handle.
    pub fn handle(&self) -> SessionHandle {
        self.handle
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// `negotiate_step`: send our proposal, wait up to `timeout` for the
    /// peer's answer. Consumes the session; a counter-offer returns it.
    pub async fn step(
        mut self,
        objective: &Objective,
        timeout: Duration,
    ) -> Result<Negotiation, ApiError> {
        self.finished = true;
        let out = self
            .asa
            .core()
            .negotiate_step(self.asa.handle, self.handle, objective.clone(), timeout)
            .await?;
        match self.asa.outcome(out) {
            Negotiation::Step {
                mut session,
                objective,
            } => {
                session.peer = session.peer.or(self.peer);
                if session.identity.is_none() {
                    session.identity = self.identity.take();
                }
                Ok(Negotiation::Step { session, objective })
            }
            other => Ok(other),
        }
    }

    /// graspy's `gsend`: one bare CBOR item to the peer. On a session from
    /// a listener, the first raw call makes the session raw (it takes no
    /// more steps).
    pub async fn send_raw(&self, data: &Value) -> Result<(), ApiError> {
        self.asa
            .core()
            .raw_send(self.asa.handle, self.handle, data.clone())
            .await
    }

    /// graspy's `grecv`: the next bare CBOR item from the peer, waiting up
    /// to `timeout` (`noReply` then; the session stays).
    pub async fn recv_raw(&self, timeout: Duration) -> Result<Value, ApiError> {
        self.asa
            .core()
            .raw_recv(self.asa.handle, self.handle, timeout)
            .await
    }

    /// `negotiate_wait`: ask the peer to wait.
    pub async fn wait(&self, wait: Duration) -> Result<(), ApiError> {
        self.asa
            .core()
            .negotiate_wait(self.asa.handle, self.handle, wait)
            .await
    }

    /// `end_negotiate` with accept.
    pub async fn accept(mut self) -> Result<(), ApiError> {
        self.finished = true;
        self.end(true, None).await
    }

    /// `end_negotiate` with decline and an optional reason.
    pub async fn decline(mut self, reason: Option<&str>) -> Result<(), ApiError> {
        self.finished = true;
        self.end(false, reason.map(str::to_string)).await
    }

    async fn end(&self, accept: bool, reason: Option<String>) -> Result<(), ApiError> {
        self.asa
            .core()
            .end_negotiate(self.asa.handle, self.handle, accept, reason)
            .await
    }

    /// `send_invalid`: M_INVALID to the peer, and the session ends.
    pub async fn send_invalid(mut self, info: Option<Value>) -> Result<(), ApiError> {
        self.finished = true;
        self.asa
            .core()
            .send_invalid(self.asa.handle, self.handle, info)
            .await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            self.asa.core().abort_session(self.asa.handle, self.handle);
        }
    }
}

/// Incoming negotiation requests for one objective.
#[derive(Clone, Debug)]
pub struct NegotiationListener {
    asa: Asa,
    rx: Arc<Mutex<mpsc::Receiver<Incoming>>>,
}

impl NegotiationListener {
    /// The next request: the session and the requested objective (as
    /// received; the first answer keeps its loop count). `None` once
    /// listening has stopped.
    pub async fn next(&self) -> Option<(Session, Objective)> {
        let inc = self.rx.lock().await.recv().await?;
        Some((
            Session::new(self.asa.clone(), inc.session, inc.peer, inc.identity),
            inc.objective,
        ))
    }
}

/// Convenience for `discover` options.
impl DiscoverOptions {
    /// Return on the first answer, waiting at most `timeout`.
    pub fn first(timeout: Duration) -> Self {
        DiscoverOptions {
            timeout: Some(timeout),
            first_only: true,
            ..DiscoverOptions::default()
        }
    }

    /// Collect answers for `timeout`.
    pub fn all(timeout: Duration) -> Self {
        DiscoverOptions {
            timeout: Some(timeout),
            ..DiscoverOptions::default()
        }
    }
}
