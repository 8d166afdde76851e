//! The GRASP core in this process: the engine task, reached by typed calls
//! queued as closures, answered on oneshots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Call, GraspCore, Incoming};
use crate::driver::{Answer, Driver, Request, Routes};
use crate::error::{ApiError, ErrorCode};
use crate::proto::{
    AsaHandle, AsaLocator, CommandId, Config, DiscoverOptions, Dump, Engine, EngineStats,
    FloodEntry, IdMap, NegotiationOutcome, RegisterOptions, SessionHandle, TransportInfo,
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

fn stopped() -> ApiError {
    ApiError::new(ErrorCode::Unspec, "the GRASP engine has stopped")
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

    /// Runs `f` on the engine's task and returns what it returns.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, Instant, &mut Routes) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let request: Request = Box::new(move |engine, now, routes| {
            let _ = tx.send(f(engine, now, routes));
        });
        send_or_wait(&self.tx, request)
            .await
            .map_err(|()| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Starts a waiting call with `f` (given its id) and waits for the
    /// event that ends it, which the driver sends along `route`.
    async fn wait<T: Send + 'static>(
        &self,
        route: fn(&mut Routes) -> &mut IdMap<CommandId, Answer<T>>,
        f: impl FnOnce(&mut Engine, Instant, CommandId, &mut Routes) -> Result<(), ApiError>
            + Send
            + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let request: Request = Box::new(move |engine, now, routes| {
            let cmd = routes.next_cmd();
            match f(engine, now, cmd, routes) {
                Ok(()) => {
                    route(routes).insert(cmd, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        send_or_wait(&self.tx, request)
            .await
            .map_err(|()| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl GraspCore for Local {
    fn stats(&self) -> Call<'_, (EngineStats, usize)> {
        Box::pin(self.call(|e, _, _| Ok((e.stats(), e.open_channels()))))
    }

    fn register_asa(&self, name: String) -> Call<'_, AsaHandle> {
        Box::pin(self.call(move |e, _, _| e.register_asa(name)))
    }

    fn deregister_asa(&self, asa: AsaHandle) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.deregister_asa(asa)))
    }

    fn register_objective(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.register_objective(asa, objective, options)))
    }

    fn deregister_objective(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.deregister_objective(asa, &name)))
    }

    fn discover(
        &self,
        asa: AsaHandle,
        objective: Objective,
        options: DiscoverOptions,
        found: Option<mpsc::Sender<AsaLocator>>,
    ) -> Call<'_, Vec<AsaLocator>> {
        Box::pin(self.wait(
            |r| &mut r.discovered,
            move |e, now, cmd, routes| {
                let started = e.discover(now, cmd, asa, objective, options, found.is_some());
                if let (Ok(()), Some(f)) = (&started, found) {
                    routes.found.insert(cmd, f);
                }
                started
            },
        ))
    }

    fn synchronize(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, Objective> {
        Box::pin(self.wait(
            |r| &mut r.synchronized,
            move |e, now, cmd, _| e.synchronize(now, cmd, asa, objective, peer, timeout),
        ))
    }

    fn listen_synchronize(&self, asa: AsaHandle, objective: Objective) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.listen_synchronize(asa, objective)))
    }

    fn stop_synchronize(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.stop_synchronize(asa, &name)))
    }

    fn flood(&self, asa: AsaHandle, ttl_ms: u32, tagged: Vec<TaggedObjective>) -> Call<'_, ()> {
        Box::pin(self.call(move |e, now, _| e.flood(now, asa, ttl_ms, tagged)))
    }

    fn get_flood(&self, asa: AsaHandle, name: String) -> Call<'_, Vec<FloodEntry>> {
        Box::pin(self.call(move |e, now, _| e.get_flood(now, asa, &name)))
    }

    fn expire_flood(&self, asa: AsaHandle, entry: FloodEntry) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.expire_flood(asa, &entry)))
    }

    fn request_negotiate(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.wait(
            |r| &mut r.negotiated,
            move |e, now, cmd, _| e.request_negotiate(now, cmd, asa, objective, peer, timeout),
        ))
    }

    fn request_raw(
        &self,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Call<'_, SessionHandle> {
        Box::pin(self.wait(
            |r| &mut r.raw_opened,
            move |e, now, cmd, _| e.request_raw(now, cmd, asa, objective, peer, timeout),
        ))
    }

    fn raw_send(&self, asa: AsaHandle, session: SessionHandle, data: Value) -> Call<'_, ()> {
        Box::pin(self.call(move |e, now, _| e.raw_send(now, asa, session, &data)))
    }

    fn raw_recv(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        timeout: Duration,
    ) -> Call<'_, Value> {
        Box::pin(self.wait(
            |r| &mut r.raw_received,
            move |e, now, cmd, _| e.raw_recv(now, cmd, asa, session, timeout),
        ))
    }

    fn negotiate_step(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        objective: Objective,
        timeout: Duration,
    ) -> Call<'_, NegotiationOutcome> {
        Box::pin(self.wait(
            |r| &mut r.negotiated,
            move |e, now, cmd, _| e.negotiate_step(now, cmd, asa, session, objective, timeout),
        ))
    }

    fn negotiate_wait(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        wait: Duration,
    ) -> Call<'_, ()> {
        Box::pin(self.call(move |e, now, _| e.negotiate_wait(now, asa, session, wait)))
    }

    fn end_negotiate(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        accept: bool,
        reason: Option<String>,
    ) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.end_negotiate(asa, session, accept, reason)))
    }

    fn send_invalid(
        &self,
        asa: AsaHandle,
        session: SessionHandle,
        info: Option<Value>,
    ) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.send_invalid(asa, session, info)))
    }

    fn abort_session(&self, _asa: AsaHandle, session: SessionHandle) {
        let request: Request = Box::new(move |e, _, _| e.abort_session(session));
        let _ = self.tx.try_send(request);
    }

    fn listen_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<Incoming>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            self.call(move |e, _, routes| {
                let sub = e.listen_negotiate(asa, &name)?;
                routes.listeners.insert(sub, tx);
                Ok(())
            })
            .await?;
            Ok(rx)
        })
    }

    fn stop_negotiate(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.stop_negotiate(asa, &name)))
    }

    fn watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, mpsc::Receiver<FloodEntry>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
            self.call(move |e, _, routes| {
                let sub = e.watch_flood(asa, &name)?;
                routes.watchers.insert(sub, tx);
                Ok(())
            })
            .await?;
            Ok(rx)
        })
    }

    fn stop_watch_flood(&self, asa: AsaHandle, name: String) -> Call<'_, ()> {
        Box::pin(self.call(move |e, _, _| e.stop_watch_flood(asa, &name)))
    }

    fn dump(&self, asa: AsaHandle) -> Call<'_, Dump> {
        Box::pin(self.call(move |e, now, _| e.dump(now, asa)))
    }
}

/// Sends `v` on `tx`, waiting for room only when the queue is full (the
/// usual case, room, takes none of tokio's waiting machinery). `Err`: the
/// receiver (the driver) is gone.
async fn send_or_wait<T>(tx: &mpsc::Sender<T>, v: T) -> Result<(), ()> {
    match tx.try_send(v) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(v)) => tx.send(v).await.map_err(drop),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}
