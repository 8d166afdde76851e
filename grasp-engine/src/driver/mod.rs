//! The thin async driver: runs an [`Engine`] on tokio over an
//! [`AcpTransport`].
//!
//! One task owns the engine. It `select!`s over inbound traffic, the
//! channels whose sockets woke, API requests and the engine's next timeout,
//! feeds each to the engine, then carries out the engine's transmits and
//! events. The same task polls the unicast channels ([`channels`]), each
//! only when its socket woke and never waiting on one, so a slow or silent
//! peer only ever holds up its own channel; every queue is bounded.

mod channels;
mod gate;

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::error::ApiError;
use crate::proto::{
    AsaLocator, ChannelId, CommandId, Engine, Event, FloodEntry, IdMap, NegotiationOutcome,
    SessionHandle, SubscriptionId, Transmit,
};
use crate::transport::{AcpTransport, Inbound, InboundStream};
use crate::wire::{Objective, Value};
use channels::{Channels, Report};
use gate::Gates;

/// A peer's negotiation request, as a core hands it to a listener.
#[derive(Debug)]
pub struct Incoming {
    /// The session it opened.
    pub session: SessionHandle,
    /// The requested objective (as received; the first answer keeps its
    /// loop count).
    pub objective: Objective,
    /// The peer's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The peer's authenticated identity, if the transport has one.
    pub identity: Option<String>,
}

/// A request from the API: one engine call, run on the engine's task,
/// carrying its own typed answer (a oneshot it fills, or a route it leaves
/// for the event that ends a waiting call).
pub(crate) type Request = Box<dyn FnOnce(&mut Engine, std::time::Instant, &mut Routes) + Send>;

/// Where a call's answer goes.
pub(crate) type Answer<T> = oneshot::Sender<Result<T, ApiError>>;

/// Where the engine's events go: the waiting calls by [`CommandId`], the
/// listens and watches by [`SubscriptionId`]. Requests fill it; events
/// empty it.
#[derive(Default)]
pub(crate) struct Routes {
    next_cmd: u64,
    pub(crate) discovered: IdMap<CommandId, Answer<Vec<AsaLocator>>>,
    /// A streamed discovery's locators, as they come.
    pub(crate) found: IdMap<CommandId, mpsc::Sender<AsaLocator>>,
    pub(crate) synchronized: IdMap<CommandId, Answer<Objective>>,
    pub(crate) negotiated: IdMap<CommandId, Answer<NegotiationOutcome>>,
    pub(crate) raw_opened: IdMap<CommandId, Answer<SessionHandle>>,
    pub(crate) raw_received: IdMap<CommandId, Answer<Value>>,
    /// Peers' negotiation requests, per listen.
    pub(crate) listeners: IdMap<SubscriptionId, mpsc::Sender<Incoming>>,
    /// Floods entering the cache, per watch.
    pub(crate) watchers: IdMap<SubscriptionId, mpsc::Sender<FloodEntry>>,
}

impl Routes {
    /// A fresh id for a waiting call.
    pub(crate) fn next_cmd(&mut self) -> CommandId {
        self.next_cmd += 1;
        CommandId(self.next_cmd)
    }
}

/// Sends `result` to whoever waits for `cmd` in `route`.
fn answer<T>(route: &mut IdMap<CommandId, Answer<T>>, cmd: CommandId, result: Result<T, ApiError>) {
    if let Some(tx) = route.remove(&cmd) {
        let _ = tx.send(result);
    }
}

pub(crate) struct Driver {
    engine: Engine,
    transport: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    requests: mpsc::Receiver<Request>,
    /// Whether each source woke the task since it was last polled empty.
    gates: Gates,
    routes: Routes,
    chans: Channels,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Hands what a channel reports to the engine.
fn on_report(engine: &mut Engine, id: ChannelId, r: Report) {
    match r {
        Report::Identity(who) => engine.handle_peer_identity(id, who),
        Report::Msg(msg) => engine.handle_channel_message(now(), id, msg),
        Report::Unsent(msg) => engine.handle_unsent(&msg),
        Report::ConnectFailed(why) => engine.handle_connect_failed(now(), id, why),
        Report::Closed(how) => engine.handle_channel_closed(now(), id, how),
    }
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        transport: Arc<dyn AcpTransport>,
        inbound: InboundStream,
        requests: mpsc::Receiver<Request>,
    ) -> Self {
        Driver {
            engine,
            transport,
            inbound,
            requests,
            gates: Gates::default(),
            routes: Routes::default(),
            chans: Channels::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut inbound_open = true;
        // One timer for the engine's next deadline, moved only when the
        // deadline moves: most turns leave it where it is, and a timer made
        // anew each turn would enter and leave tokio's wheel every time.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let woken = self.chans.woken();
        loop {
            let deadline = self.engine.poll_timeout().map(Instant::from_std);
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            let gates = &self.gates;
            tokio::select! {
                item = gates.inbound.poll(|cx| self.inbound.poll_next_unpin(cx)), if inbound_open => match item {
                    Some(Inbound::Datagram(d)) => self.engine.handle_datagram(now(), d),
                    Some(Inbound::Interfaces { interfaces, node_locator }) => {
                        info!(
                            interfaces = ?interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
                            locator = %node_locator,
                            "interfaces changed"
                        );
                        self.engine.set_interfaces(interfaces, &node_locator);
                    }
                    Some(Inbound::Channel(ch)) => {
                        // Refused (at the limit): dropping `ch` closes it.
                        if let Some(id) = self.engine.handle_inbound_channel(now(), ch.peer, ch.identity) {
                            let engine = &mut self.engine;
                            self.chans.accept(id, ch.io, &mut |id, r| on_report(engine, id, r));
                        }
                    }
                    None => {
                        warn!("the transport's inbound stream ended");
                        inbound_open = false;
                    }
                },
                () = std::future::poll_fn(|cx| woken.poll(cx)) => {
                    let engine = &mut self.engine;
                    self.chans.serve(&mut |id, r| on_report(engine, id, r));
                }
                req = gates.requests.poll(|cx| self.requests.poll_recv(cx)) => match req {
                    Some(r) => r(&mut self.engine, now(), &mut self.routes),
                    None => {
                        debug!("every API handle is gone; the engine stops");
                        return;
                    }
                },
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.engine.handle_timeout(now());
                }
            }
            self.flush().await;
        }
    }

    /// Carries out everything the engine asked for.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.engine.poll_transmit() {
                progressed = true;
                self.transmit(t).await;
            }
            while let Some(e) = self.engine.poll_event() {
                progressed = true;
                self.event(e);
            }
            if !progressed {
                return;
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        let engine = &mut self.engine;
        let report = &mut |id, r| on_report(engine, id, r);
        match t {
            Transmit::Multicast { ifindex, msg } => {
                if let Err(e) = self.transport.send_multicast(ifindex, msg.clone()).await {
                    warn!(ifindex, error = %e, "multicast failed");
                    self.engine.handle_unsent(&msg);
                }
            }
            Transmit::Connect { channel, peer } => {
                let transport = self.transport.clone();
                let connect = Box::pin(async move { transport.connect(peer).await });
                self.chans.connect(channel, connect, report);
            }
            Transmit::Send { channel, msg } => self.chans.send(channel, msg, report),
            Transmit::Close { channel, linger } => self.chans.close(channel, linger, report),
        }
    }

    fn event(&mut self, e: Event) {
        let r = &mut self.routes;
        match e {
            Event::Discovered { cmd, result } => {
                r.found.remove(&cmd);
                answer(&mut r.discovered, cmd, result);
            }
            Event::Found { cmd, locator } => {
                // One the caller has no room for is in the result anyway.
                if let Some(tx) = r.found.get(&cmd) {
                    let _ = tx.try_send(locator);
                }
            }
            Event::Synchronized { cmd, result } => answer(&mut r.synchronized, cmd, result),
            Event::Negotiated { cmd, result } => answer(&mut r.negotiated, cmd, result),
            Event::RawOpened { cmd, result } => answer(&mut r.raw_opened, cmd, result),
            Event::RawReceived { cmd, result } => answer(&mut r.raw_received, cmd, result),
            Event::Flood {
                subscription,
                entry,
            } => {
                let Some(w) = r.watchers.get(&subscription) else {
                    return;
                };
                match w.try_send(entry) {
                    Ok(()) => {}
                    // A watcher that does not keep up misses floods (the
                    // cache still has the latest).
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        trace!(?subscription, "flood watcher full; dropping a flood");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        r.watchers.remove(&subscription);
                        self.engine.unsubscribe(subscription);
                    }
                }
            }
            Event::NegotiationRequest {
                subscription,
                session,
                objective,
                peer,
                identity,
            } => {
                let Some(l) = r.listeners.get(&subscription) else {
                    return self.engine.abort_session(session);
                };
                let incoming = Incoming {
                    session,
                    objective,
                    peer: Some(peer),
                    identity,
                };
                if l.try_send(incoming).is_err() {
                    if l.is_closed() {
                        // A listener dropped without stop_negotiate.
                        r.listeners.remove(&subscription);
                        self.engine.unsubscribe(subscription);
                    }
                    trace!(?session, "no room for the negotiation request; dropping it");
                    self.engine.abort_session(session);
                }
            }
            Event::Unsubscribed { subscription } => {
                r.listeners.remove(&subscription);
                r.watchers.remove(&subscription);
            }
        }
    }
}
