//! The ASA API of RFC 8991, in async Rust.
//!
//! [`Grasp::start`] runs an engine over a transport and returns a handle.
//! Every RFC 8991 function is an `async fn` on [`Grasp`], [`Asa`] or a
//! negotiation [`Session`]; failures are [`ApiError`]s carrying the RFC's
//! numeric code. Calls never block one another: each is a message to the
//! engine task and a reply back.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::driver::{Driver, Incoming, Request};
use crate::error::{ApiError, ErrorCode};
use crate::proto::{
    AsaHandle, AsaLocator, Command, Config, DiscoverOptions, Engine, EngineStats, FloodEntry,
    NegotiationOutcome, RegisterOptions, Reply, SessionHandle, TransportInfo,
};
use crate::transport::{AcpTransport, InboundStream};
use crate::wire::{Objective, TaggedObjective, Value, GRASP_DEF_TIMEOUT_MS};

/// Requests queued towards the engine task.
const REQUEST_QUEUE: usize = 1024;
/// Negotiation requests queued per listened objective.
const LISTEN_QUEUE: usize = 64;

/// `GRASP_DEF_TIMEOUT` as a duration.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(GRASP_DEF_TIMEOUT_MS as u64);

/// A running GRASP instance. Cheap to clone; the engine stops when every
/// clone (and every [`Asa`]) is gone.
#[derive(Clone, Debug)]
pub struct Grasp {
    tx: mpsc::Sender<Request>,
}

fn unexpected(r: Reply) -> ApiError {
    ApiError::new(ErrorCode::Unspec, format!("unexpected engine reply {r:?}"))
}

impl Grasp {
    /// Starts an engine over `transport` (spawns its task; call inside a
    /// tokio runtime).
    pub fn start(
        transport: Arc<dyn AcpTransport>,
        inbound: InboundStream,
        config: Config,
    ) -> Grasp {
        let info = TransportInfo {
            security: transport.security(),
            interfaces: transport.interfaces(),
            node_locator: transport.node_locator(),
            max_message_size: transport.max_message_size(),
        };
        let engine = Engine::new(config, info);
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        tokio::spawn(Driver::new(engine, transport, inbound, rx).run());
        Grasp { tx }
    }

    async fn call(&self, command: Command) -> Result<Reply, ApiError> {
        self.call_with(command, None).await
    }

    async fn call_with(
        &self,
        command: Command,
        listener: Option<mpsc::Sender<Incoming>>,
    ) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                command,
                reply: Some(reply),
                listener,
            })
            .await
            .map_err(|_| ApiError::new(ErrorCode::Unspec, "the GRASP engine has stopped"))?;
        rx.await
            .map_err(|_| ApiError::new(ErrorCode::Unspec, "the GRASP engine has stopped"))?
    }

    fn fire(&self, command: Command) {
        let _ = self.tx.try_send(Request {
            command,
            reply: None,
            listener: None,
        });
    }

    /// The engine's counters (every drop is counted) and the number of
    /// unicast channels open now. Not an RFC 8991 call: for operators and
    /// tests.
    pub async fn stats(&self) -> Result<(EngineStats, usize), ApiError> {
        match self.call(Command::Stats).await? {
            Reply::Stats {
                stats,
                open_channels,
            } => Ok((*stats, open_channels)),
            other => Err(unexpected(other)),
        }
    }

    /// `register_asa`: every ASA's first call.
    pub async fn register_asa(&self, name: &str) -> Result<Asa, ApiError> {
        match self
            .call(Command::RegisterAsa {
                name: name.to_string(),
            })
            .await?
        {
            Reply::Asa(handle) => Ok(Asa {
                grasp: self.clone(),
                handle,
            }),
            other => Err(unexpected(other)),
        }
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

    async fn done(&self, c: Command) -> Result<(), ApiError> {
        match self.grasp.call(c).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `deregister_asa`: removes its objectives and listeners.
    pub async fn deregister(self) -> Result<(), ApiError> {
        self.done(Command::DeregisterAsa { asa: self.handle }).await
    }

    /// `register_objective`.
    pub async fn register_objective(
        &self,
        objective: &Objective,
        options: RegisterOptions,
    ) -> Result<(), ApiError> {
        self.done(Command::RegisterObjective {
            asa: self.handle,
            objective: objective.clone(),
            options,
        })
        .await
    }

    /// `deregister_objective`.
    pub async fn deregister_objective(&self, name: &str) -> Result<(), ApiError> {
        self.done(Command::DeregisterObjective {
            asa: self.handle,
            name: name.to_string(),
        })
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
        match self
            .grasp
            .call(Command::Discover {
                asa: self.handle,
                objective: objective.clone(),
                options,
            })
            .await?
        {
            Reply::Locators(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// `synchronize`: from `peer`, or (with `None`) the flood cache, then a
    /// rapid value from discovery, then discovery and M_REQ_SYN.
    pub async fn synchronize(
        &self,
        objective: &Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<Objective, ApiError> {
        match self
            .grasp
            .call(Command::Synchronize {
                asa: self.handle,
                objective: objective.clone(),
                peer,
                timeout,
            })
            .await?
        {
            Reply::Synch(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// `listen_synchronize`: serve `objective`'s value; call again to update it.
    pub async fn listen_synchronize(&self, objective: &Objective) -> Result<(), ApiError> {
        self.done(Command::ListenSynchronize {
            asa: self.handle,
            objective: objective.clone(),
        })
        .await
    }

    /// `stop_listen_synchronize`.
    pub async fn stop_synchronize(&self, name: &str) -> Result<(), ApiError> {
        self.done(Command::StopSynchronize {
            asa: self.handle,
            name: name.to_string(),
        })
        .await
    }

    /// `flood`: `ttl_ms` 0 is indefinite.
    pub async fn flood(&self, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Result<(), ApiError> {
        self.done(Command::Flood {
            asa: self.handle,
            ttl_ms,
            tagged,
        })
        .await
    }

    /// `get_flood`: every unexpired copy, one per source and tag.
    pub async fn get_flood(&self, name: &str) -> Result<Vec<FloodEntry>, ApiError> {
        match self
            .grasp
            .call(Command::GetFlood {
                asa: self.handle,
                name: name.to_string(),
            })
            .await?
        {
            Reply::Floods(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// `expire_flood`.
    pub async fn expire_flood(&self, entry: &FloodEntry) -> Result<(), ApiError> {
        self.done(Command::ExpireFlood {
            asa: self.handle,
            entry: entry.clone(),
        })
        .await
    }

    /// `request_negotiate`: to `peer`, or to the first peer discovery finds.
    pub async fn request_negotiate(
        &self,
        objective: &Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<Negotiation, ApiError> {
        let out = self
            .grasp
            .call(Command::RequestNegotiate {
                asa: self.handle,
                objective: objective.clone(),
                peer,
                timeout,
            })
            .await?;
        self.outcome(out)
    }

    fn outcome(&self, r: Reply) -> Result<Negotiation, ApiError> {
        match r {
            Reply::Negotiation(NegotiationOutcome::Accepted) => Ok(Negotiation::Accepted),
            Reply::Negotiation(NegotiationOutcome::Declined { reason }) => {
                Ok(Negotiation::Declined { reason })
            }
            Reply::Negotiation(NegotiationOutcome::Step {
                session,
                objective,
                peer,
                identity,
            }) => Ok(Negotiation::Step {
                session: Session::new(self.clone(), session, peer, identity),
                objective,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// `listen_negotiate`: requests for `name` arrive on the returned
    /// listener (several tasks may share it).
    pub async fn listen_negotiate(&self, name: &str) -> Result<NegotiationListener, ApiError> {
        let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
        match self
            .grasp
            .call_with(
                Command::ListenNegotiate {
                    asa: self.handle,
                    name: name.to_string(),
                },
                Some(tx),
            )
            .await?
        {
            Reply::Done => Ok(NegotiationListener {
                asa: self.clone(),
                rx: Arc::new(Mutex::new(rx)),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// `stop_listen_negotiate`.
    pub async fn stop_negotiate(&self, name: &str) -> Result<(), ApiError> {
        self.done(Command::StopNegotiate {
            asa: self.handle,
            name: name.to_string(),
        })
        .await
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
        let r = self
            .asa
            .grasp
            .call(Command::NegotiateStep {
                asa: self.asa.handle,
                session: self.handle,
                objective: objective.clone(),
                timeout,
            })
            .await?;
        match self.asa.outcome(r)? {
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

    /// `negotiate_wait`: ask the peer to wait.
    pub async fn wait(&self, wait: Duration) -> Result<(), ApiError> {
        self.asa
            .done(Command::NegotiateWait {
                asa: self.asa.handle,
                session: self.handle,
                wait,
            })
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
            .done(Command::EndNegotiate {
                asa: self.asa.handle,
                session: self.handle,
                accept,
                reason,
            })
            .await
    }

    /// `send_invalid`: M_INVALID to the peer, and the session ends.
    pub async fn send_invalid(mut self, info: Option<Value>) -> Result<(), ApiError> {
        self.finished = true;
        self.asa
            .done(Command::SendInvalid {
                asa: self.asa.handle,
                session: self.handle,
                info,
            })
            .await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            self.asa.grasp.fire(Command::AbortSession {
                session: self.handle,
            });
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
            Session::new(self.asa.clone(), inc.session, Some(inc.peer), inc.identity),
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
