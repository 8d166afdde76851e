//! The thin async driver: runs an [`Engine`] on tokio over an
//! [`AcpTransport`].
//!
//! One task owns the engine. It `select!`s over inbound traffic, messages
//! from channel tasks, API requests and the engine's next timeout, feeds each
//! to the engine, then carries out the engine's transmits and events. Each
//! unicast channel has its own small task that moves messages between the
//! socket and the engine, so a slow or silent peer only ever holds up its own
//! channel; every queue between them is bounded.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::error::ApiError;
use crate::proto::{
    AsaLocator, ChannelEnd, ChannelId, CommandId, Engine, Event, FloodEntry, IdMap,
    NegotiationOutcome, SessionHandle, SubscriptionId, Transmit,
};
use crate::transport::{AcpError, AcpTransport, Inbound, InboundStream, MessageIo};
use crate::wire::{Objective, Value};

/// Messages queued towards one channel. The queue is `futures`' mpsc, which
/// allocates per queued message rather than a block of slots up front: an
/// idle channel (a session waiting for its peer) costs a few bytes, not 1 KiB.
const CHANNEL_QUEUE: usize = 16;
/// Messages from all channels towards the engine.
const EVENT_QUEUE: usize = 1024;
/// How long a lingering close waits for the peer to close first.
const LINGER: Duration = Duration::from_secs(2);

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

type ChanTx = futures::channel::mpsc::Sender<ChanOut>;
type ChanRx = futures::channel::mpsc::Receiver<ChanOut>;

enum ChanOut {
    Msg(Bytes),
    Close { linger: bool },
}

enum ChanEvent {
    Msg(ChannelId, Bytes),
    Closed(ChannelId, ChannelEnd),
    /// A message queued for the channel that was never written.
    Unsent(Bytes),
    ConnectFailed(ChannelId, String),
    /// The transport authenticated the peer of an outgoing channel.
    Identity(ChannelId, String),
}

pub(crate) struct Driver {
    engine: Engine,
    transport: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    requests: mpsc::Receiver<Request>,
    /// Whether each source woke the task since it was last polled empty.
    gates: Gates,
    routes: Routes,
    chans: IdMap<ChannelId, ChanTx>,
    /// A peer's channel taken on in this turn that has no task yet.
    fresh: Option<(ChannelId, Pin<Box<dyn MessageIo>>)>,
    ev_tx: mpsc::Sender<ChanEvent>,
    ev_rx: mpsc::Receiver<ChanEvent>,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        transport: Arc<dyn AcpTransport>,
        inbound: InboundStream,
        requests: mpsc::Receiver<Request>,
    ) -> Self {
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        Driver {
            engine,
            transport,
            inbound,
            requests,
            gates: Gates::default(),
            routes: Routes::default(),
            chans: IdMap::default(),
            fresh: None,
            ev_tx,
            ev_rx,
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
                    Some(Inbound::Channel(ch)) => self.accept(ch).await,
                    None => {
                        warn!("the transport's inbound stream ended");
                        inbound_open = false;
                    }
                },
                Some(ev) = gates.channels.poll(|cx| self.ev_rx.poll_recv(cx)) => self.on_chan_event(ev),
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

    /// Takes on a peer's new channel. Its first message is usually there
    /// already (the plain ACP hands on channels once they have spoken), and
    /// a one-shot exchange (a synchronization, a refusal) often ends within
    /// that one turn: the driver then answers and closes it itself, with no
    /// task and no queues. Whatever is left gets its channel task.
    async fn accept(&mut self, ch: crate::transport::Channel) {
        // Refused (at the limit): dropping `ch` closes it.
        let Some(id) = self
            .engine
            .handle_inbound_channel(now(), ch.peer, ch.identity)
        else {
            return;
        };
        let mut io = ch.io;
        // Polled once without a waker: if nothing is there, the channel
        // task polls again with its own, and readiness is not lost.
        match io.next().now_or_never() {
            Some(Some(Ok(msg))) => {
                self.fresh = Some((id, io));
                self.engine.handle_channel_message(now(), id, msg);
                self.flush().await;
                if let Some((id, io)) = self.fresh.take() {
                    self.spawn_channel(id, io, false);
                }
            }
            None => self.spawn_channel(id, io, false),
            Some(None) => {
                self.spawn_channel(id, io, true);
                self.engine
                    .handle_channel_closed(now(), id, ChannelEnd::PeerFinished);
            }
            Some(Some(Err(e))) => {
                debug!(?id, error = %e, "channel error");
                self.engine
                    .handle_channel_closed(now(), id, channel_end(&e));
            }
        }
    }

    /// Gives a channel its task (`read_done`: the peer has finished).
    fn spawn_channel(&mut self, id: ChannelId, io: Pin<Box<dyn MessageIo>>, read_done: bool) {
        let (tx, rx) = futures::channel::mpsc::channel(CHANNEL_QUEUE);
        self.chans.insert(id, tx);
        // Boxed, as a connect task is (see `transmit`).
        tokio::spawn(Box::pin(channel_task(
            id,
            io,
            rx,
            self.ev_tx.clone(),
            read_done,
        )));
    }

    /// Writes `msg` on the fresh channel `id` at once, if its socket takes
    /// it without waiting; otherwise the channel gets its task (which first
    /// finishes a write begun here), and `msg` comes back when it is still
    /// to be queued.
    fn send_fresh(
        &mut self,
        id: ChannelId,
        mut io: Pin<Box<dyn MessageIo>>,
        msg: Bytes,
    ) -> Option<Bytes> {
        let flushed = match std::future::poll_fn(|cx| io.as_mut().poll_ready(cx)).now_or_never() {
            None => {
                self.spawn_channel(id, io, false);
                return Some(msg);
            }
            Some(Ok(())) => match io.as_mut().start_send(msg.clone()) {
                Ok(()) => std::future::poll_fn(|cx| io.as_mut().poll_flush(cx)).now_or_never(),
                Err(e) => Some(Err(e)),
            },
            Some(Err(e)) => Some(Err(e)),
        };
        match flushed {
            Some(Ok(())) => self.fresh = Some((id, io)),
            // In its buffer: the task flushes it first.
            None => self.spawn_channel(id, io, false),
            Some(Err(e)) => {
                debug!(?id, error = %e, "send failed");
                self.engine.handle_unsent(&msg);
                self.engine
                    .handle_channel_closed(now(), id, ChannelEnd::Lost);
            }
        }
        None
    }

    fn on_chan_event(&mut self, ev: ChanEvent) {
        match ev {
            ChanEvent::Msg(id, msg) => self.engine.handle_channel_message(now(), id, msg),
            ChanEvent::Closed(id, how @ (ChannelEnd::Lost | ChannelEnd::Reset)) => {
                self.chans.remove(&id);
                self.engine.handle_channel_closed(now(), id, how);
            }
            // The channel task still writes what the engine queues, until
            // the engine closes the channel.
            ChanEvent::Closed(id, ChannelEnd::PeerFinished) => {
                self.engine
                    .handle_channel_closed(now(), id, ChannelEnd::PeerFinished);
            }
            ChanEvent::Unsent(msg) => self.engine.handle_unsent(&msg),
            ChanEvent::ConnectFailed(id, why) => {
                self.chans.remove(&id);
                self.engine.handle_connect_failed(now(), id, why);
            }
            ChanEvent::Identity(id, who) => self.engine.handle_peer_identity(id, who),
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
        match t {
            Transmit::Multicast { ifindex, msg } => {
                if let Err(e) = self.transport.send_multicast(ifindex, msg.clone()).await {
                    warn!(ifindex, error = %e, "multicast failed");
                    self.engine.handle_unsent(&msg);
                }
            }
            Transmit::Connect { channel, peer } => {
                let (tx, rx) = futures::channel::mpsc::channel(CHANNEL_QUEUE);
                self.chans.insert(channel, tx);
                let transport = self.transport.clone();
                let ev = self.ev_tx.clone();
                let fut = async move {
                    match transport.connect(peer).await {
                        Ok(ch) => {
                            // Before any message of the channel (one queue).
                            if let Some(who) = ch.identity {
                                if send_or_wait(&ev, ChanEvent::Identity(channel, who))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            channel_task(channel, ch.io, rx, ev, false).await
                        }
                        Err(e) => {
                            debug!(%peer, error = %e, "connect failed");
                            unsent(rx, &ev).await;
                            let _ =
                                send_or_wait(&ev, ChanEvent::ConnectFailed(channel, e.to_string()))
                                    .await;
                        }
                    }
                };
                // Boxed: the task's future (a connect, then the channel's
                // loop) is over a kilobyte, and tokio moves a future
                // several times while spawning it; a box moves as a pointer.
                tokio::spawn(Box::pin(fut));
            }
            Transmit::Send { channel, msg } => {
                let msg = match self.fresh.take_if(|(f, _)| *f == channel) {
                    Some((id, io)) => match self.send_fresh(id, io, msg) {
                        Some(msg) => msg,
                        None => return,
                    },
                    None => msg,
                };
                let Some(tx) = self.chans.get_mut(&channel) else {
                    // Its task ended (the peer is gone).
                    self.engine.handle_unsent(&msg);
                    return;
                };
                if let Err(e) = tx.try_send(ChanOut::Msg(msg)) {
                    let full = e.is_full();
                    if let ChanOut::Msg(m) = e.into_inner() {
                        self.engine.handle_unsent(&m);
                    }
                    if full {
                        // The peer does not read: give up on this channel only.
                        debug!(?channel, "channel queue full; closing it");
                    }
                    self.chans.remove(&channel);
                    self.engine
                        .handle_channel_closed(now(), channel, ChannelEnd::Lost);
                }
            }
            Transmit::Close { channel, linger } => {
                if let Some((id, io)) = self.fresh.take_if(|(f, _)| *f == channel) {
                    if !linger {
                        // Every send was flushed: dropping it closes it.
                        return;
                    }
                    self.spawn_channel(id, io, false);
                }
                if let Some(mut tx) = self.chans.remove(&channel) {
                    let _ = tx.try_send(ChanOut::Close { linger });
                }
            }
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

/// How a channel that failed with `e` ended.
fn channel_end(e: &AcpError) -> ChannelEnd {
    match e {
        AcpError::Reset => ChannelEnd::Reset,
        _ => ChannelEnd::Lost,
    }
}

/// Sends `v` on `tx`, waiting for room only when the queue is full (the
/// usual case, room, takes none of tokio's waiting machinery). `Err`: the
/// receiver is gone. Used by API calls towards the driver and by channel
/// tasks towards it.
pub(crate) async fn send_or_wait<T>(tx: &mpsc::Sender<T>, v: T) -> Result<(), ()> {
    match tx.try_send(v) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(v)) => tx.send(v).await.map_err(drop),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

/// Reports what is still queued for a channel that will never write it.
async fn unsent(mut out: ChanRx, ev: &mpsc::Sender<ChanEvent>) {
    out.close();
    while let Ok(o) = out.try_recv() {
        if let ChanOut::Msg(b) = o {
            if send_or_wait(ev, ChanEvent::Unsent(b)).await.is_err() {
                return;
            }
        }
    }
}

/// Moves one channel's messages between its socket and the engine.
///
/// When the peer finishes sending (EOF), the task stops reading but goes on
/// writing what the engine queues until the engine closes the channel: a
/// peer that half-closes after its request (`shutdown(SHUT_WR)`, `nc -N`)
/// still gets its answer. Messages that cannot be written are reported
/// back as unsent.
async fn channel_task(
    id: ChannelId,
    mut io: Pin<Box<dyn MessageIo>>,
    mut out: ChanRx,
    ev: mpsc::Sender<ChanEvent>,
    mut read_done: bool,
) {
    // What the driver started writing before the task existed.
    if let Err(e) = io.flush().await {
        debug!(?id, error = %e, "send failed");
        unsent(out, &ev).await;
        let _ = send_or_wait(&ev, ChanEvent::Closed(id, ChannelEnd::Lost)).await;
        return;
    }
    loop {
        tokio::select! {
            // The engine's sends first: a peer that floods us cannot hold
            // them up (the queue is bounded, so reads wait at most that long).
            biased;
            o = out.next() => match o {
                Some(ChanOut::Msg(b)) => {
                    if let Err(e) = io.send(b.clone()).await {
                        debug!(?id, error = %e, "send failed");
                        let _ = send_or_wait(&ev, ChanEvent::Unsent(b)).await;
                        unsent(out, &ev).await;
                        let _ = send_or_wait(&ev, ChanEvent::Closed(id, ChannelEnd::Lost)).await;
                        return;
                    }
                }
                Some(ChanOut::Close { linger }) => {
                    if linger && !read_done {
                        // Let the peer close first so TIME_WAIT stays there.
                        let _ = tokio::time::timeout(LINGER, async {
                            while let Some(Ok(_)) = io.next().await {}
                        })
                        .await;
                    }
                    // Every send was flushed as it went: dropping the
                    // channel closes it without a separate shutdown call.
                    return;
                }
                None => {
                    let _ = tokio::time::timeout(LINGER, io.close()).await;
                    return;
                }
            },
            m = io.next(), if !read_done => match m {
                Some(Ok(b)) => {
                    if send_or_wait(&ev, ChanEvent::Msg(id, b)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    debug!(?id, error = %e, "channel error");
                    unsent(out, &ev).await;
                    let _ = send_or_wait(&ev, ChanEvent::Closed(id, channel_end(&e))).await;
                    return;
                }
                None => {
                    read_done = true;
                    if send_or_wait(&ev, ChanEvent::Closed(id, ChannelEnd::PeerFinished)).await.is_err()
                    {
                        return;
                    }
                }
            },
        }
    }
}

/// One gate per source the driver's `select!` waits on. `select!` polls
/// every branch on every turn, though usually one source woke the task:
/// polling an idle acceptor costs several hundred instructions, an idle
/// queue one or two hundred, several times per synchronization. A gate
/// polls its source only after the source woke it (or gave an item, as
/// more may follow without a wake).
#[derive(Default)]
struct Gates {
    inbound: Gate,
    channels: Gate,
    requests: Gate,
}

/// See [`Gates`]: a waker of its own for one source, which records the wake
/// and passes it on to the task.
struct Gate {
    flag: Arc<GateFlag>,
    waker: std::task::Waker,
}

struct GateFlag {
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl futures::task::ArcWake for GateFlag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.woken.store(true, std::sync::atomic::Ordering::Release);
        flag.task.wake();
    }
}

impl Default for Gate {
    fn default() -> Self {
        let flag = Arc::new(GateFlag {
            // Polled the first time round.
            woken: std::sync::atomic::AtomicBool::new(true),
            task: futures::task::AtomicWaker::new(),
        });
        let waker = futures::task::waker(flag.clone());
        Gate { flag, waker }
    }
}

impl Gate {
    /// A future that polls the source with `poll` when it woke the gate,
    /// and waits otherwise.
    fn poll<'a, T: 'a>(
        &'a self,
        mut poll: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T> + 'a,
    ) -> impl std::future::Future<Output = T> + 'a {
        use std::sync::atomic::Ordering;
        std::future::poll_fn(move |cx| {
            self.flag.task.register(cx.waker());
            if !self.flag.woken.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Pending;
            }
            let r = poll(&mut std::task::Context::from_waker(&self.waker));
            if r.is_ready() {
                self.flag.woken.store(true, Ordering::Release);
            }
            r
        })
    }
}
