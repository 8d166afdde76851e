//! The GRASP core in this process: the engine task, reached by commands on
//! a queue and replies on oneshots.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Call, GraspCore, Incoming};
use crate::driver::{Driver, Request, Subscriber};
use crate::error::{ApiError, ErrorCode};
use crate::proto::{
    AsaHandle, AsaLocator, Command, Config, DiscoverOptions, Dump, Engine, EngineStats, FloodEntry,
    NegotiationOutcome, RegisterOptions, Reply, SessionHandle, TransportInfo,
};
use crate::transport::{AcpTransport, InboundStream};
use crate::wire::{Objective, TaggedObjective, Value};

/// Requests queued towards the engine task.
const REQUEST_QUEUE: usize = 1024;
/// Negotiation requests queued per listened objective, and floods per
/// watched one.
const LISTEN_QUEUE: usize = 64;

/// The engine task's queue.
#[derive(Debug)]
pub(super) struct Local {
    tx: mpsc::Sender<Request>,
}

fn unexpected(r: Reply) -> ApiError {
    ApiError::new(ErrorCode::Unspec, format!("unexpected engine reply {r:?}"))
}

impl Local {
    /// Spawns the engine's task over `transport`.
    pub(super) fn start(
        transport: Arc<dyn AcpTransport>,
        inbound: InboundStream,
        config: Config,
    ) -> Local {
        let info = TransportInfo {
            security: transport.security(),
            interfaces: transport.interfaces(),
            node_locator: transport.node_locator(),
            max_message_size: transport.max_message_size(),
        };
        let engine = Engine::new(config, info);
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        tokio::spawn(Driver::new(engine, transport, inbound, rx).run());
        Local { tx }
    }

    async fn call(&self, command: Command) -> Result<Reply, ApiError> {
        self.call_with(command, None).await
    }

    async fn call_with(
        &self,
        command: Command,
        subscriber: Option<Subscriber>,
    ) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                command,
                reply: Some(reply),
                subscriber,
            })
            .await
            .map_err(|_| ApiError::new(ErrorCode::Unspec, "the GRASP engine has stopped"))?;
        rx.await
            .map_err(|_| ApiError::new(ErrorCode::Unspec, "the GRASP engine has stopped"))?
    }

    async fn done(&self, command: Command) -> Result<(), ApiError> {
        match self.call(command).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn negotiation(&self, command: Command) -> Result<NegotiationOutcome, ApiError> {
        match self.call(command).await? {
            Reply::Negotiation(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

impl GraspCore for Local {
    fn stats(&self) -> Call<'_, (EngineStats, usize)> {
        Box::pin(async move {
            match self.call(Command::Stats).await? {
                Reply::Stats {
                    stats,
                    open_channels,
                } => Ok((*stats, open_channels)),
                other => Err(unexpected(other)),
            }
        })
    }

    fn register_asa(&self, name: String) -> Call<'_, AsaHandle> {
        Box::pin(async move {
            match self.call(Command::RegisterAsa { name }).await? {
                Reply::Asa(handle) => Ok(handle),
                other => Err(unexpected(other)),
            }
        })
    }

    fn deregister_asa(&self, asa: AsaHandle) -> Call<'_, ()> {
        Box::pin(self.done(Command::DeregisterAsa { asa }))
    }

    fn register_objective(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Command::RegisterObjective {
            asa,
            objective,
            options,
        }))
    }

    fn deregister_objective(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.done(Command::DeregisterObjective { asa, name }))
    }

    fn discover(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: DiscoverOptions,
        found: Option<mpsc::Sender<AsaLocator>>,
    ) -> Call<'_, Vec<AsaLocator>> {
        Box::pin(async move {
            let command = Command::Discover {
                asa,
                objective,
                options,
                stream: found.is_some(),
            };
            match self
                .call_with(command, found.map(Subscriber::Found))
                .await?
            {
                Reply::Locators(l) => Ok(l),
                other => Err(unexpected(other)),
            }
        })
    }

    fn synchronize(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, Objective> {
        Box::pin(async move {
            match self
                .call(Command::Synchronize {
                    asa,
                    objective,
                    peer,
                    timeout,
                })
                .await?
            {
                Reply::Synch(o) => Ok(o),
                other => Err(unexpected(other)),
            }
        })
    }

    fn listen_synchronize(&self, asa: AsaHandle, objective: Objective) -> Call<'_, ()> {
        Box::pin(self.done(Command::ListenSynchronize { asa, objective }))
    }

    fn stop_synchronize(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.done(Command::StopSynchronize { asa, name }))
    }

    fn flood(&self, asa: AsaHandle, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Call<'_, ()> {
        Box::pin(self.done(Command::Flood {
            asa,
            ttl_ms,
            tagged,
        }))
    }

    fn get_flood(&self, asa: AsaHandle, name: String) -> Call<'_, Vec<FloodEntry>> {
        Box::pin(async move {
            match self.call(Command::GetFlood { asa, name }).await? {
                Reply::Floods(v) => Ok(v),
                other => Err(unexpected(other)),
            }
        })
    }

    fn expire_flood(&self, asa: AsaHandle, entry: FloodEntry) -> Call<'_, ()> {
        Box::pin(self.done(Command::ExpireFlood { asa, entry }))
    }

    fn request_negotiate(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.negotiation(Command::RequestNegotiate {
            asa,
            objective,
            peer,
            timeout,
        }))
    }

    fn request_raw(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, SessionHandle> {
        Box::pin(async move {
            let command = Command::RequestRaw {
                asa,
                objective,
                peer,
                timeout,
            };
            match self.call(command).await? {
                Reply::Session(s) => Ok(s),
                other => Err(unexpected(other)),
            }
        })
    }

    fn raw_send(&self, asa: AsaHandle, session: SessionHandle, data: Value) -> Call<'_, ()> {
        Box::pin(self.done(Command::RawSend { asa, session, data }))
    }

    fn raw_recv(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        timeout: Duration,
    ) -> Call<'_, Value> {
        Box::pin(async move {
            let command = Command::RawRecv {
                asa,
                session,
                timeout,
            };
            match self.call(command).await? {
                Reply::Raw(v) => Ok(v),
                other => Err(unexpected(other)),
            }
        })
    }

    fn negotiate_step(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        objective: Objective,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.negotiation(Command::NegotiateStep {
            asa,
            session,
            objective,
            timeout,
        }))
    }

    fn negotiate_wait(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        wait: Duration,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Command::NegotiateWait { asa, session, wait }))
    }

    fn end_negotiate(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        accept: bool,
        reason: Option<String>,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Command::EndNegotiate {
            asa,
            session,
            accept,
            reason,
        }))
    }

    fn send_invalid(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        info: Option<Value>,
    ) -> Call<'_, ()> {
        Box::pin(self.done(Command::SendInvalid { asa, session, info }))
    }

    fn abort_session(&self, _asa: AsaHandle, session: SessionHandle) {
        let _ = self.tx.try_send(Request {
            command: Command::AbortSession { session },
            reply: None,
            subscriber: None,
        });
    }

    fn listen_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<Incoming>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            match self
                .call_with(
                    Command::ListenNegotiate { asa, name },
                    Some(Subscriber::Negotiation(tx)),
                )
                .await?
            {
                Reply::Done => Ok(rx),
                other => Err(unexpected(other)),
            }
        })
    }

    fn stop_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.done(Command::StopNegotiate { asa, name }))
    }

    fn watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<FloodEntry>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            match self
                .call_with(
                    Command::WatchFlood { asa, name },
                    Some(Subscriber::Flood(tx)),
                )
                .await?
            {
                Reply::Done => Ok(rx),
                other => Err(unexpected(other)),
            }
        })
    }

    fn stop_watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.done(Command::StopWatchFlood { asa, name }))
    }

    fn dump(&self, asa: AsaHandle) -> Call<'_, Dump> {
        Box::pin(async move {
            match self.call(Command::Dump { asa }).await? {
                Reply::Dump(d) => Ok(*d),
                other => Err(unexpected(other)),
            }
        })
    }
}
