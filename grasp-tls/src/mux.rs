//! Many GRASP sessions over one TLS connection per peer.
//!
//! RFC 8990 lets a substrate carry GRASP sessions any way it likes (§2.5.1);
//! the plain ACP uses one TCP connection per session because graspy does.
//! Over TLS that would cost a TCP connect and a TLS handshake (an ephemeral
//! key exchange even when resumed) for every synchronization, so this
//! backend keeps one TLS connection per peer and runs each GRASP channel as
//! a *stream* inside it, as the ACP proper (RFC 8994) keeps one secure
//! channel per neighbour.
//!
//! # Wire format
//!
//! Every TLS connection of this backend (ALPN `grasp-mux/1`) carries frames,
//! each one definite-length CBOR array:
//!
//! * `[1, 0, stream, message]`: DATA, one whole GRASP message (a byte
//!   string) on stream `stream` (an unsigned integer);
//! * `[1, 1, stream, h'']`: FIN, the sender will send nothing more on that
//!   stream;
//! * `[1, 2, 0, h'']`: GOAWAY, from the listening side: open no more
//!   streams on this connection (streams already open carry on; the
//!   dialling side closes the connection when its last stream ends and
//!   dials a new one for the next channel).
//!
//! Only the side that opened the TLS connection opens streams, numbering
//! them 0, 1, 2, … ; a stream exists from its first frame. The other side
//! hands each new stream to the engine as an inbound channel. A stream ends
//! when both sides have sent FIN (or one side's channel is dropped). Frames
//! for a stream that has ended are ignored; a frame that does not parse
//! closes the connection. Per stream, at most `stream_queue` received
//! messages wait for the engine; more resets the stream (counted).
//!
//! # Lifetime
//!
//! The dialling side closes a connection that has carried no stream for
//! `idle_timeout`, and stops opening streams on one older than `max_age`
//! (it then closes when its last stream ends), so certificates are checked
//! again at least that often. The listening side sends GOAWAY on a
//! connection older than `max_age` and closes connections idle for twice
//! `idle_timeout`. A reloaded identity retires every dialled connection and
//! sends GOAWAY on every accepted one, so both ends present the new
//! certificate from the next channel on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{Sink, Stream};
use grasp_engine::transport::{AcpError, Channel, Inbound, MessageIo};
use grasp_engine::wire::envelope;
use tracing::debug;

/// The ALPN protocol name of this mapping.
pub const ALPN: &[u8] = b"grasp-mux/1";

/// The most a frame adds to the message it carries (array, version, kind,
/// stream number and byte-string heads).
pub const FRAME_OVERHEAD: usize = 16;

const VERSION: u64 = 1;
const KIND_DATA: u64 = 0;
const KIND_FIN: u64 = 1;
const KIND_GOAWAY: u64 = 2;

/// Bounds and timers of the multiplexer.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Config {
    /// A dialled connection with no stream for this long is closed; the
    /// listening side waits twice as long. Default 30 s.
    pub idle_timeout: Duration,
    /// No new stream on a dialled connection older than this; it closes
    /// when its last stream ends. Default 10 minutes.
    pub max_age: Duration,
    /// Streams open at once on one connection. Default 256.
    pub max_streams: usize,
    /// Received messages waiting for the engine, per stream. Default 8.
    pub stream_queue: usize,
    /// Dialled connections kept for reuse (one per peer). Default 1024;
    /// beyond it, a connection serves one stream and closes.
    pub max_pooled: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
            max_streams: 256,
            stream_queue: 8,
            max_pooled: 1024,
        }
    }
}

/// Counters of the multiplexer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// TLS connections dialled.
    pub connections_dialled: u64,
    /// TLS connections accepted.
    pub connections_accepted: u64,
    /// Connections closed after being idle (or retired and empty).
    pub connections_idle_closed: u64,
    /// Connections closed because the peer sent a frame that does not parse.
    pub connections_malformed: u64,
    /// Streams (GRASP channels) opened by us.
    pub streams_opened: u64,
    /// Streams opened by peers and handed to the engine.
    pub streams_accepted: u64,
    /// Streams a peer opened that were refused (stream limit, or the
    /// engine's inbound queue full).
    pub streams_refused: u64,
    /// Streams reset because their peer sent more than the engine had
    /// taken, or a message over the size limit.
    pub streams_reset: u64,
    /// Connections closed because the peer kept opening streams (or making
    /// us answer with FINs) while not reading what we wrote.
    pub connections_stalled: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_dialled: AtomicU64,
    connections_accepted: AtomicU64,
    connections_idle_closed: AtomicU64,
    connections_malformed: AtomicU64,
    streams_opened: AtomicU64,
    streams_accepted: AtomicU64,
    streams_refused: AtomicU64,
    streams_reset: AtomicU64,
    connections_stalled: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections_dialled: g(&self.connections_dialled),
            connections_accepted: g(&self.connections_accepted),
            connections_idle_closed: g(&self.connections_idle_closed),
            connections_malformed: g(&self.connections_malformed),
            streams_opened: g(&self.streams_opened),
            streams_accepted: g(&self.streams_accepted),
            streams_refused: g(&self.streams_refused),
            streams_reset: g(&self.streams_reset),
            connections_stalled: g(&self.connections_stalled),
        }
    }
}

fn frame(kind: u64, sid: u64, payload: &[u8]) -> Bytes {
    let mut out = envelope::start(4, VERSION, kind, 16 + payload.len());
    envelope::push_uint(&mut out, sid);
    envelope::push_bytes(&mut out, payload);
    Bytes::from(out)
}

/// One frame on its way out.
struct Out {
    sid: u64,
    fin: bool,
    frame: Bytes,
}

struct Slot {
    /// Received messages for the stream; `None` once the peer sent FIN.
    tx: Option<mpsc::Sender<Bytes>>,
    fin_sent: bool,
}

#[derive(Default)]
struct State {
    streams: HashMap<u64, Slot>,
    /// Dialler: the next stream number. Listener: the lowest number the
    /// peer has not used yet.
    next_sid: u64,
    closed: bool,
    /// No new streams; close when the last one ends.
    retired: bool,
    /// When the last stream ended.
    idle_since: Option<Instant>,
}

/// One TLS connection carrying streams.
struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    identity: Option<String>,
    dialled: bool,
    born: Instant,
    max_msg: usize,
    cfg: Config,
    out: mpsc::Sender<Out>,
    /// Streams whose channel was dropped (one entry per stream), and
    /// GOAWAY requests (at most one is acted on). Bounded because the
    /// driver closes a connection whose peer opens more than twice
    /// `max_streams` streams while not reading: at most the live streams
    /// plus that many.
    dropped: mpsc::UnboundedSender<Ctl>,
    state: Mutex<State>,
    counters: Arc<Counters>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retire(&self) {
        self.state().retired = true;
    }

    fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// A new stream, or `None` if this connection takes no more.
    fn open(self: &Arc<Self>) -> Option<Channel> {
        let mut st = self.state();
        if self.born.elapsed() >= self.cfg.max_age {
            st.retired = true;
        }
        if st.closed || st.retired || st.streams.len() >= self.cfg.max_streams {
            return None;
        }
        let sid = st.next_sid;
        st.next_sid += 1;
        let ch = self.stream(&mut st, sid);
        drop(st);
        bump(&self.counters.streams_opened);
        Some(ch)
    }

    /// Makes stream `sid` (the state is locked by the caller).
    fn stream(self: &Arc<Self>, st: &mut State, sid: u64) -> Channel {
        let (tx, rx) = mpsc::channel(self.cfg.stream_queue.saturating_sub(1));
        st.streams.insert(
            sid,
            Slot {
                tx: Some(tx),
                fin_sent: false,
            },
        );
        st.idle_since = None;
        Channel {
            peer: self.peer,
            local: self.local,
            identity: self.identity.clone(),
            io: Box::pin(MuxStream {
                sid,
                rx,
                out: self.out.clone(),
                dropped: self.dropped.clone(),
                fin_sent: false,
                max: self.max_msg,
            }),
        }
    }
}

/// A GRASP channel that is one stream of a connection.
struct MuxStream {
    sid: u64,
    rx: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
    dropped: mpsc::UnboundedSender<Ctl>,
    fin_sent: bool,
    max: usize,
}

/// What the connection's task is told besides frames to send.
enum Ctl {
    /// A stream's channel was dropped.
    Dropped(u64),
    /// Send GOAWAY (a listening connection).
    GoAway,
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let _ = self.dropped.unbounded_send(Ctl::Dropped(self.sid));
    }
}

impl Stream for MuxStream {
    type Item = Result<Bytes, AcpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Bytes> for MuxStream {
    type Error = AcpError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.out.poll_ready(cx).map_err(|_| AcpError::Closed)
    }

    fn start_send(mut self: Pin<&mut Self>, msg: Bytes) -> Result<(), AcpError> {
        if msg.len() > self.max {
            return Err(AcpError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        if self.fin_sent {
            return Err(AcpError::Closed);
        }
        let out = Out {
            sid: self.sid,
            fin: false,
            frame: frame(KIND_DATA, self.sid, &msg),
        };
        self.out.start_send(out).map_err(|_| AcpError::Closed)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        // Frames are queued in order for the connection's writer, which
        // writes and flushes each as it takes it.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        if self.fin_sent {
            return Poll::Ready(Ok(()));
        }
        ready!(self.out.poll_ready(cx)).map_err(|_| AcpError::Closed)?;
        let sid = self.sid;
        self.out
            .start_send(Out {
                sid,
                fin: true,
                frame: frame(KIND_FIN, sid, &[]),
            })
            .map_err(|_| AcpError::Closed)?;
        self.fin_sent = true;
        Poll::Ready(Ok(()))
    }
}

/// Where a listening connection hands new streams.
pub(crate) type Accepted = tokio::sync::mpsc::Sender<Inbound>;

/// Runs `ch` (an established TLS connection) as a multiplexed connection:
/// dialled (we open streams; the returned handle does) or accepted (new
/// streams go to `accepted`).
fn start(
    ch: Channel,
    dialled: bool,
    max_msg: usize,
    cfg: Config,
    counters: Arc<Counters>,
    accepted: Option<Accepted>,
) -> Arc<Conn> {
    // Room for every stream to have one frame queued besides its own slot.
    let (out, out_rx) = mpsc::channel(cfg.max_streams.min(64));
    let (dropped, dropped_rx) = mpsc::unbounded();
    let conn = Arc::new(Conn {
        peer: ch.peer,
        local: ch.local,
        identity: ch.identity,
        dialled,
        born: Instant::now(),
        max_msg,
        cfg,
        out,
        dropped,
        state: Mutex::new(State {
            idle_since: Some(Instant::now()),
            ..State::default()
        }),
        counters,
    });
    let idle = if dialled {
        cfg.idle_timeout
    } else {
        cfg.idle_timeout.saturating_mul(2)
    };
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut driver = Driver {
        conn: conn.clone(),
        io: ch.io,
        out_rx,
        dropped_rx,
        goaway_sent: false,
        control: Vec::new(),
        opened_unwritten: 0,
        accepted,
        idle,
        tick: tokio::time::interval_at(tokio::time::Instant::now() + tick, tick),
        flush: false,
    };
    tokio::spawn(async move {
        futures::future::poll_fn(|cx| driver.poll(cx)).await;
        driver.shut();
    });
    conn
}

/// Serves an accepted TLS connection: each stream the peer opens becomes
/// an inbound channel on `accepted`.
pub(crate) fn serve(
    ch: Channel,
    max_msg: usize,
    cfg: Config,
    counters: Arc<Counters>,
    accepted: Accepted,
) -> Accepting {
    bump(&counters.connections_accepted);
    Accepting(Arc::downgrade(&start(
        ch,
        false,
        max_msg,
        cfg,
        counters,
        Some(accepted),
    )))
}

/// An accepted connection, while it lasts.
#[derive(Clone)]
pub(crate) struct Accepting(std::sync::Weak<Conn>);

impl Accepting {
    /// Whether the connection still runs.
    pub(crate) fn is_live(&self) -> bool {
        self.0.upgrade().is_some_and(|c| !c.is_closed())
    }

    /// Asks the peer to open no more streams on it.
    pub(crate) fn go_away(&self) {
        if let Some(c) = self.0.upgrade() {
            let _ = c.dropped.unbounded_send(Ctl::GoAway);
        }
    }
}

/// The connection's task: reads frames and hands them to streams, writes
/// the streams' frames, and closes the connection when idle.
struct Driver {
    conn: Arc<Conn>,
    io: Pin<Box<dyn MessageIo>>,
    out_rx: mpsc::Receiver<Out>,
    dropped_rx: mpsc::UnboundedReceiver<Ctl>,
    goaway_sent: bool,
    /// FINs for dropped streams, written before the next queued frame.
    control: Vec<Bytes>,
    /// Streams the peer opened since we last wrote anything: a peer that
    /// opens streams but does not read cannot make `control` and the
    /// dropped queue grow past twice `max_streams`.
    opened_unwritten: usize,
    accepted: Option<Accepted>,
    idle: Duration,
    tick: tokio::time::Interval,
    flush: bool,
}

/// Frames read in one turn before writing gets its go.
const READ_BURST: usize = 32;

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Reading.
        let mut n = 0;
        loop {
            if n == READ_BURST {
                cx.waker().wake_by_ref();
                break;
            }
            match self.io.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    if !self.on_frame(f) {
                        return Poll::Ready(());
                    }
                    n += 1;
                }
                Poll::Ready(Some(Err(e))) => {
                    debug!(peer = %self.conn.peer, error = %e, "TLS connection failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        // Writing: our FINs for dropped streams, then the streams' frames;
        // dropped streams are looked at only once every frame queued before
        // the drop has been taken, so a FIN never overtakes its data.
        loop {
            match self.io.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    debug!(peer = %self.conn.peer, error = %e, "TLS connection failed");
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
            if let Some(f) = self.control.pop() {
                if self.io.as_mut().start_send(f).is_err() {
                    return Poll::Ready(());
                }
                self.flush = true;
                self.opened_unwritten = 0;
                continue;
            }
            match Pin::new(&mut self.out_rx).poll_next(cx) {
                Poll::Ready(Some(o)) => {
                    if o.fin {
                        self.local_fin(o.sid);
                    }
                    if self.io.as_mut().start_send(o.frame).is_err() {
                        return Poll::Ready(());
                    }
                    self.flush = true;
                    self.opened_unwritten = 0;
                    continue;
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            match Pin::new(&mut self.dropped_rx).poll_next(cx) {
                Poll::Ready(Some(Ctl::GoAway)) => self.go_away(),
                Poll::Ready(Some(Ctl::Dropped(sid))) => {
                    self.on_dropped(sid);
                    if self.finished() {
                        return Poll::Ready(());
                    }
                }
                _ => break,
            }
        }
        if self.flush {
            match self.io.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {}
            }
        }
        // Idle and retired connections.
        while self.tick.poll_tick(cx).is_ready() {
            let st = self.conn.state();
            let idle =
                st.streams.is_empty() && st.idle_since.is_some_and(|t| t.elapsed() >= self.idle);
            drop(st);
            // A listening connection whose node has gone.
            let orphan = self.accepted.as_ref().is_some_and(|a| a.is_closed());
            if !self.conn.dialled && self.conn.born.elapsed() >= self.conn.cfg.max_age {
                self.go_away();
            }
            if idle || orphan || self.finished() {
                bump(&self.conn.counters.connections_idle_closed);
                debug!(peer = %self.conn.peer, "closing an idle TLS connection");
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    /// A retired dialled connection whose last stream has ended.
    fn finished(&self) -> bool {
        let st = self.conn.state();
        st.retired && st.streams.is_empty()
    }

    fn local_fin(&mut self, sid: u64) {
        let mut st = self.conn.state();
        let gone = match st.streams.get_mut(&sid) {
            Some(s) => {
                s.fin_sent = true;
                s.tx.is_none()
            }
            None => false,
        };
        if gone {
            remove(&mut st, sid);
        }
    }

    fn go_away(&mut self) {
        if !self.goaway_sent && !self.conn.dialled {
            self.goaway_sent = true;
            self.control.push(frame(KIND_GOAWAY, 0, &[]));
        }
    }

    fn on_dropped(&mut self, sid: u64) {
        let mut st = self.conn.state();
        if let Some(s) = remove(&mut st, sid) {
            if !s.fin_sent {
                self.control.push(frame(KIND_FIN, sid, &[]));
            }
        }
    }

    /// Handles one received frame; `false` closes the connection.
    fn on_frame(&mut self, f: Bytes) -> bool {
        if self.control.len() > 2 * self.conn.cfg.max_streams {
            return self.stalled();
        }
        let (kind, sid, range) = match envelope::parse(&f, VERSION) {
            Ok(p) => match (p.kind, p.fields.len(), p.fields.first()) {
                (KIND_GOAWAY, 1, _) if self.conn.dialled && p.last.is_empty() => {
                    debug!(peer = %self.conn.peer, "GOAWAY: no new streams on this connection");
                    self.conn.retire();
                    return !self.finished();
                }
                (KIND_DATA | KIND_FIN, 1, Some(envelope::Item::Uint(sid))) => {
                    let start = p.last.as_ptr() as usize - f.as_ptr() as usize;
                    (p.kind, *sid, start..start + p.last.len())
                }
                _ => return self.malformed("unknown frame"),
            },
            Err(e) => return self.malformed(&e.to_string()),
        };
        let conn = self.conn.clone();
        let mut st = conn.state();
        if kind == KIND_FIN {
            if !range.is_empty() {
                return self.malformed("FIN with data");
            }
            let gone = match st.streams.get_mut(&sid) {
                Some(s) => {
                    s.tx = None;
                    s.fin_sent
                }
                None => {
                    if !self.conn.dialled && sid >= st.next_sid {
                        st.next_sid = sid + 1;
                    }
                    false
                }
            };
            if gone {
                remove(&mut st, sid);
            }
            return true;
        }
        let msg = f.slice(range);
        if let Some(slot) = st.streams.get_mut(&sid) {
            let Some(tx) = &mut slot.tx else {
                return self.malformed("DATA after FIN");
            };
            if msg.len() > self.conn.max_msg {
                return self.reset(&mut st, sid);
            }
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(e) if e.is_full() => return self.reset(&mut st, sid),
                // The channel is being dropped; its drop will be seen.
                Err(_) => {}
            }
            return true;
        }
        // A new stream from the peer?
        if self.conn.dialled || sid < st.next_sid {
            return true; // a late frame for a stream that has ended
        }
        st.next_sid = sid + 1;
        self.opened_unwritten += 1;
        if self.opened_unwritten > 2 * self.conn.cfg.max_streams {
            drop(st);
            return self.stalled();
        }
        let Some(accepted) = &self.accepted else {
            return true;
        };
        if st.streams.len() >= self.conn.cfg.max_streams || msg.len() > self.conn.max_msg {
            bump(&self.conn.counters.streams_refused);
            self.control.push(frame(KIND_FIN, sid, &[]));
            return true;
        }
        let ch = self.conn.stream(&mut st, sid);
        if let Some(Slot { tx: Some(tx), .. }) = st.streams.get_mut(&sid) {
            let _ = tx.try_send(msg);
        }
        drop(st);
        match accepted.try_send(Inbound::Channel(ch)) {
            Ok(()) => bump(&self.conn.counters.streams_accepted),
            Err(e) => {
                bump(&self.conn.counters.streams_refused);
                // Dropping the channel removes the stream and sends FIN.
                drop(e);
            }
        }
        true
    }

    /// Ends stream `sid` at once: its channel sees the end, the peer a FIN.
    fn reset(&mut self, st: &mut State, sid: u64) -> bool {
        bump(&self.conn.counters.streams_reset);
        if let Some(s) = remove(st, sid) {
            if !s.fin_sent {
                self.control.push(frame(KIND_FIN, sid, &[]));
            }
        }
        true
    }

    /// The peer makes us queue answers (FINs, streams' frames) it does not
    /// read: end the connection rather than queue without bound.
    fn stalled(&self) -> bool {
        bump(&self.conn.counters.connections_stalled);
        debug!(peer = %self.conn.peer, "the peer opens streams but does not read; closing the TLS connection");
        false
    }

    fn malformed(&self, why: &str) -> bool {
        bump(&self.conn.counters.connections_malformed);
        debug!(peer = %self.conn.peer, why, "malformed frame; closing the TLS connection");
        false
    }

    /// The connection is over: every stream sees its end.
    fn shut(&mut self) {
        let mut st = self.conn.state();
        st.closed = true;
        st.streams.clear();
    }
}

fn remove(st: &mut State, sid: u64) -> Option<Slot> {
    let s = st.streams.remove(&sid);
    if st.streams.is_empty() {
        st.idle_since = Some(Instant::now());
    }
    s
}

/// Makes an authenticated connection to a peer.
pub(crate) type Dial<'a> = &'a (dyn Fn() -> BoxFuture<'a, Result<Channel, AcpError>> + Sync);

/// A pooled connection being dialled or dialled: every channel waiting for
/// it gets the same result (a failed dial is not retried by each waiter in
/// turn; the next channel after it dials afresh).
type Dialling = Arc<tokio::sync::OnceCell<Result<Arc<Conn>, String>>>;

fn live(slot: &Dialling) -> Option<&Arc<Conn>> {
    slot.get().and_then(|r| r.as_ref().ok())
}

/// Dialled connections, one per peer, reused by every channel to it.
pub(crate) struct Pool {
    conns: Mutex<HashMap<SocketAddr, Dialling>>,
    cfg: Config,
    max_msg: usize,
    pub(crate) counters: Arc<Counters>,
}

impl Pool {
    pub(crate) fn new(cfg: Config, max_msg: usize) -> Self {
        Pool {
            conns: Mutex::new(HashMap::new()),
            cfg,
            max_msg,
            counters: Arc::default(),
        }
    }

    pub(crate) fn config(&self) -> Config {
        self.cfg
    }

    pub(crate) fn max_msg(&self) -> usize {
        self.max_msg
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<SocketAddr, Dialling>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dialled(&self, ch: Channel) -> Arc<Conn> {
        bump(&self.counters.connections_dialled);
        start(
            ch,
            true,
            self.max_msg,
            self.cfg,
            self.counters.clone(),
            None,
        )
    }

    /// A channel to `peer`: a new stream on its connection, dialling one
    /// (with `dial`) when there is none to use.
    pub(crate) async fn channel(
        &self,
        peer: SocketAddr,
        dial: Dial<'_>,
    ) -> Result<Channel, AcpError> {
        for _ in 0..3 {
            let cell = {
                let mut conns = self.conns();
                if !conns.contains_key(&peer) && conns.len() >= self.cfg.max_pooled {
                    conns.retain(|_, c| live(c).is_some_and(|c| !c.is_closed()));
                }
                if !conns.contains_key(&peer) && conns.len() >= self.cfg.max_pooled {
                    None
                } else {
                    Some(conns.entry(peer).or_default().clone())
                }
            };
            let Some(cell) = cell else {
                // The pool is full: a connection for this one channel.
                let conn = self.dialled(dial().await?);
                let ch = conn.open();
                conn.retire();
                return ch.ok_or(AcpError::Closed);
            };
            let conn = match cell
                .get_or_init(|| async {
                    dial()
                        .await
                        .map(|ch| self.dialled(ch))
                        .map_err(|e| e.to_string())
                })
                .await
            {
                Ok(c) => c.clone(),
                Err(e) => {
                    self.forget(peer, &cell);
                    return Err(AcpError::Backend(e.clone().into()));
                }
            };
            if let Some(ch) = conn.open() {
                return Ok(ch);
            }
            // Full, old or gone: it ends with its streams; dial another.
            conn.retire();
            self.forget(peer, &cell);
        }
        Err(AcpError::Closed)
    }

    fn forget(&self, peer: SocketAddr, cell: &Dialling) {
        let mut conns = self.conns();
        if conns.get(&peer).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            conns.remove(&peer);
        }
    }

    /// Retires every pooled connection (after an identity reload): open
    /// streams finish, new channels dial afresh.
    pub(crate) fn retire_all(&self) {
        let old: Vec<_> = self.conns().drain().collect();
        for (_, cell) in old {
            if let Some(c) = live(&cell) {
                c.retire();
            }
        }
    }

    /// Pooled connections that take new channels now.
    pub(crate) fn len(&self) -> usize {
        self.conns()
            .values()
            .filter(|c| {
                live(c).is_some_and(|c| {
                    let st = c.state();
                    !st.closed && !st.retired
                })
            })
            .count()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.retire_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use grasp_acp::stream::StreamChannel;
    use grasp_engine::wire::Limits;
    use std::sync::atomic::AtomicUsize;

    const MAX: usize = 2048;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
    }

    /// Two ends of a connection (no TLS: the multiplexer does not care).
    fn pipe() -> (Channel, Channel) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let lim = Limits {
            max_message_size: MAX + FRAME_OVERHEAD,
            ..Limits::default()
        };
        let ch = |io, peer, local, name: &str| Channel {
            peer,
            local,
            io: Box::pin(StreamChannel::new(io, lim)),
            identity: Some(name.to_string()),
        };
        (
            ch(a, addr(2), addr(1), "server.lab"),
            ch(b, addr(1), addr(2), "client.lab"),
        )
    }

    struct Lab {
        pool: Pool,
        server_counters: Arc<Counters>,
        accepted: tokio::sync::mpsc::Receiver<Inbound>,
        accepted_tx: Accepted,
        dials: AtomicUsize,
        cfg: Config,
    }

    impl Lab {
        fn new(cfg: Config) -> Self {
            let (accepted_tx, accepted) = tokio::sync::mpsc::channel(64);
            Lab {
                pool: Pool::new(cfg, MAX),
                server_counters: Arc::default(),
                accepted,
                accepted_tx,
                dials: AtomicUsize::new(0),
                cfg,
            }
        }

        /// A channel from the pool; a dial makes a pipe and serves its far end.
        async fn channel(&self) -> Channel {
            let dial = || {
                let (near, far) = pipe();
                self.dials.fetch_add(1, Ordering::Relaxed);
                serve(
                    far,
                    MAX,
                    self.cfg,
                    self.server_counters.clone(),
                    self.accepted_tx.clone(),
                );
                futures::future::ready(Ok(near)).boxed()
            };
            self.pool.channel(addr(2), &dial).await.unwrap()
        }

        async fn next_inbound(&mut self) -> Channel {
            match tokio::time::timeout(Duration::from_secs(5), self.accepted.recv()).await {
                Ok(Some(Inbound::Channel(c))) => c,
                other => panic!("no inbound channel: {other:?}"),
            }
        }

        fn dials(&self) -> usize {
            self.dials.load(Ordering::Relaxed)
        }
    }

    use futures::FutureExt;

    fn msg(i: u8) -> Bytes {
        Bytes::from(vec![0x83, 0x04, 0x18, i, 0x61, b'x'])
    }

    async fn recv(ch: &mut Channel) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), ch.io.next())
            .await
            .expect("nothing received in time")
            .map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn many_channels_share_one_connection_with_identities_and_ends() {
        let mut lab = Lab::new(Config::default());
        for i in 0..50u8 {
            let mut c = lab.channel().await;
            assert_eq!(c.identity.as_deref(), Some("server.lab"));
            c.io.send(msg(i)).await.unwrap();
            let mut s = lab.next_inbound().await;
            assert_eq!(s.identity.as_deref(), Some("client.lab"));
            assert_eq!(recv(&mut s).await, Some(msg(i)));
            s.io.send(msg(i + 100)).await.unwrap();
            assert_eq!(recv(&mut c).await, Some(msg(i + 100)));
            // The requester closes its side; the responder sees the end,
            // answers the same way, and the requester sees the end too.
            c.io.close().await.unwrap();
            assert_eq!(recv(&mut s).await, None);
            drop(s);
            assert_eq!(recv(&mut c).await, None);
        }
        assert_eq!(lab.dials(), 1);
        let st = lab.pool.counters.snapshot();
        assert_eq!((st.connections_dialled, st.streams_opened), (1, 50));
        let st = lab.server_counters.snapshot();
        assert_eq!((st.connections_accepted, st.streams_accepted), (1, 50));
        assert_eq!(
            st.streams_reset + st.streams_refused + st.connections_malformed,
            0
        );
    }

    #[tokio::test]
    async fn concurrent_channels_wait_for_one_dial_and_stay_apart() {
        let mut lab = Lab::new(Config::default());
        let lab_ref = &lab;
        let chans = futures::future::join_all((0..20).map(|_| lab_ref.channel())).await;
        assert_eq!(lab.dials(), 1);
        let mut chans = chans;
        for (i, c) in chans.iter_mut().enumerate() {
            c.io.send(msg(i as u8)).await.unwrap();
        }
        // Each inbound stream carries its own message and answers it.
        for _ in 0..20 {
            let mut s = lab.next_inbound().await;
            let m = recv(&mut s).await.unwrap();
            s.io.send(Bytes::from([&m[..], b"!"].concat()))
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ = s.io.next().await;
            });
        }
        for (i, c) in chans.iter_mut().enumerate() {
            let a = recv(c).await.unwrap();
            assert_eq!(a, Bytes::from([&msg(i as u8)[..], b"!"].concat()));
        }
    }

    #[tokio::test]
    async fn a_failed_dial_fails_every_waiter_once_and_the_next_channel_dials_again() {
        let pool = Pool::new(Config::default(), MAX);
        let dials = AtomicUsize::new(0);
        let dial = || {
            dials.fetch_add(1, Ordering::Relaxed);
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(AcpError::Refused(addr(9)))
            }
            .boxed()
        };
        let all = futures::future::join_all((0..10).map(|_| pool.channel(addr(9), &dial))).await;
        assert!(all.iter().all(|r| r.is_err()));
        assert_eq!(dials.load(Ordering::Relaxed), 1, "one dial for ten waiters");
        assert!(pool.channel(addr(9), &dial).await.is_err());
        assert_eq!(
            dials.load(Ordering::Relaxed),
            2,
            "the next channel dials afresh"
        );
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_stream_whose_reader_falls_behind_is_reset_alone() {
        let cfg = Config {
            stream_queue: 4,
            ..Config::default()
        };
        let mut lab = Lab::new(cfg);
        let mut c = lab.channel().await;
        c.io.send(msg(0)).await.unwrap();
        let mut s = lab.next_inbound().await;
        // The responder does not read; the requester sends far too much.
        for i in 1..20 {
            c.io.send(msg(i)).await.unwrap();
        }
        // Another stream on the same connection still works.
        let mut c2 = lab.channel().await;
        c2.io.send(msg(99)).await.unwrap();
        let mut s2 = lab.next_inbound().await;
        assert_eq!(recv(&mut s2).await, Some(msg(99)));
        // The overrun stream delivers what it queued, then ends.
        let mut got = 0;
        while recv(&mut s).await.is_some() {
            got += 1;
        }
        assert!((1..=4).contains(&got), "{got}");
        assert_eq!(lab.server_counters.snapshot().streams_reset, 1);
        // The requester sees the reset as the end of its channel.
        assert_eq!(recv(&mut c).await, None);
        assert_eq!(lab.dials(), 1);
    }

    #[tokio::test]
    async fn a_malformed_frame_closes_the_connection_and_its_streams() {
        let mut lab = Lab::new(Config::default());
        let (mut raw, far) = pipe();
        serve(
            far,
            MAX,
            lab.cfg,
            lab.server_counters.clone(),
            lab.accepted_tx.clone(),
        );
        raw.io.send(frame(KIND_DATA, 0, &msg(1))).await.unwrap();
        let mut s = lab.next_inbound().await;
        assert_eq!(recv(&mut s).await, Some(msg(1)));
        // A well-formed CBOR item that is not a frame.
        raw.io
            .send(Bytes::from_static(&[0x82, 0x01, 0x02]))
            .await
            .unwrap();
        assert_eq!(recv(&mut s).await, None);
        assert_eq!(recv(&mut raw).await, None, "the connection is closed");
        assert_eq!(lab.server_counters.snapshot().connections_malformed, 1);
    }

    #[tokio::test]
    async fn the_stream_limit_refuses_new_streams_from_the_peer() {
        let cfg = Config {
            max_streams: 2,
            ..Config::default()
        };
        let mut lab = Lab::new(cfg);
        let (mut raw, far) = pipe();
        serve(
            far,
            MAX,
            cfg,
            lab.server_counters.clone(),
            lab.accepted_tx.clone(),
        );
        for sid in 0..3 {
            raw.io
                .send(frame(KIND_DATA, sid, &msg(sid as u8)))
                .await
                .unwrap();
        }
        let _a = lab.next_inbound().await;
        let _b = lab.next_inbound().await;
        // The third is answered with a FIN and never reaches the engine.
        let fin = recv(&mut raw).await.unwrap();
        assert_eq!(fin, frame(KIND_FIN, 2, &[]));
        assert!(lab.accepted.try_recv().is_err());
        assert_eq!(lab.server_counters.snapshot().streams_refused, 1);
        // A late frame for the refused stream is ignored, not a new stream.
        raw.io.send(frame(KIND_DATA, 2, &msg(7))).await.unwrap();
        raw.io.send(frame(KIND_DATA, 1, &msg(8))).await.unwrap();
        let mut b = _b;
        assert_eq!(recv(&mut b).await, Some(msg(1)));
        assert_eq!(recv(&mut b).await, Some(msg(8)));
        assert!(lab.accepted.try_recv().is_err());
    }

    /// A peer that opens stream after stream but never reads the FINs
    /// refusing them is cut off once the writer is stuck, instead of
    /// having them queued without end (issue 11 §1).
    #[tokio::test]
    async fn a_peer_that_opens_streams_but_never_reads_is_cut_off() {
        let cfg = Config {
            max_streams: 2,
            ..Config::default()
        };
        let lab = Lab::new(cfg);
        let (mut raw, far) = pipe();
        serve(
            far,
            MAX,
            cfg,
            lab.server_counters.clone(),
            lab.accepted_tx.clone(),
        );
        let mut sent = 0u64;
        for sid in 0..50_000u64 {
            let f = frame(KIND_DATA, sid, &msg(1));
            match tokio::time::timeout(Duration::from_secs(2), raw.io.send(f)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        for _ in 0..100 {
            if lab.server_counters.snapshot().connections_stalled == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = lab.server_counters.snapshot();
        assert_eq!(st.connections_stalled, 1, "after {sent} frames: {st:?}");
        assert!(sent < 50_000, "the connection was never closed");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_and_the_next_channel_dials_again() {
        let cfg = Config {
            idle_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        let mut lab = Lab::new(cfg);
        let mut c = lab.channel().await;
        c.io.send(msg(1)).await.unwrap();
        let s = lab.next_inbound().await;
        drop((c, s));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = lab.channel().await;
        drop(c);
        assert_eq!(lab.dials(), 1, "reused within the idle time");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _c = lab.channel().await;
        assert_eq!(lab.dials(), 2, "dialled again after the idle close");
        assert_eq!(lab.pool.counters.snapshot().connections_idle_closed, 1);
    }

    #[tokio::test]
    async fn retired_connections_finish_their_streams_and_close() {
        let mut lab = Lab::new(Config::default());
        let mut c = lab.channel().await;
        c.io.send(msg(1)).await.unwrap();
        let mut s = lab.next_inbound().await;
        assert_eq!(recv(&mut s).await, Some(msg(1)));
        lab.pool.retire_all();
        // The open stream carries on.
        s.io.send(msg(2)).await.unwrap();
        assert_eq!(recv(&mut c).await, Some(msg(2)));
        // A new channel gets a new connection.
        let _c2 = lab.channel().await;
        assert_eq!(lab.dials(), 2);
        drop(c);
        assert_eq!(recv(&mut s).await, None);
    }

    #[tokio::test]
    async fn goaway_moves_new_channels_to_a_new_connection() {
        let mut lab = Lab::new(Config::default());
        let (near, far) = pipe();
        let server = serve(
            far,
            MAX,
            lab.cfg,
            lab.server_counters.clone(),
            lab.accepted_tx.clone(),
        );
        let conn = lab.pool.dialled(near);
        let cell = Arc::new(tokio::sync::OnceCell::new_with(Some(Ok(conn))));
        lab.pool.conns().insert(addr(2), cell);
        let mut c = lab.channel().await;
        c.io.send(msg(1)).await.unwrap();
        let mut s = lab.next_inbound().await;
        assert_eq!(recv(&mut s).await, Some(msg(1)));
        assert_eq!(lab.pool.len(), 1);
        server.go_away();
        for _ in 0..100 {
            if lab.pool.len() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lab.pool.len(), 0, "the dialler retired the connection");
        // The open stream still works both ways.
        s.io.send(msg(2)).await.unwrap();
        assert_eq!(recv(&mut c).await, Some(msg(2)));
        c.io.send(msg(3)).await.unwrap();
        assert_eq!(recv(&mut s).await, Some(msg(3)));
        // The next channel dials a new connection.
        let _c2 = lab.channel().await;
        assert_eq!(lab.dials(), 1);
        // When the last stream ends, the old connection closes.
        drop(c);
        assert_eq!(recv(&mut s).await, None);
        drop(s);
        for _ in 0..100 {
            if !server.is_live() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!server.is_live(), "the retired connection closed");
    }

    /// Random frames from an authenticated but broken or hostile peer:
    /// the listener never panics or hangs; either it closed the connection
    /// as malformed (counted), or a fresh stream still works.
    #[tokio::test]
    async fn hostile_frames_never_break_the_listener() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut closed, mut alive) = (0, 0);
        for _ in 0..300 {
            let cfg = Config {
                max_streams: 3,
                stream_queue: 2,
                ..Config::default()
            };
            let mut lab = Lab::new(cfg);
            let (mut raw, far) = pipe();
            let server = serve(
                far,
                MAX,
                cfg,
                lab.server_counters.clone(),
                lab.accepted_tx.clone(),
            );
            for _ in 0..rnd(12) {
                let sid = rnd(8);
                let payload = vec![0x41; rnd(MAX as u64 + 1) as usize + 8];
                let f = match rnd(8) {
                    0..=2 => frame(KIND_DATA, sid, &payload[..payload.len().min(40)]),
                    3 => frame(KIND_DATA, sid, &payload),
                    4 => frame(KIND_FIN, sid, &[]),
                    5 => frame(KIND_GOAWAY, 0, &[]),
                    6 => frame(rnd(5), sid, &payload[..rnd(3) as usize]),
                    _ => {
                        let mut b = envelope::start(rnd(6), rnd(3), rnd(4), 32);
                        envelope::push_uint(&mut b, sid);
                        envelope::push_bytes(&mut b, &payload[..rnd(4) as usize]);
                        Bytes::from(b)
                    }
                };
                if raw.io.send(f).await.is_err() {
                    break;
                }
            }
            // The engine takes and ends every stream it was given, then a
            // new stream with a number above every other arrives.
            tokio::time::sleep(Duration::from_millis(2)).await;
            while lab.accepted.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(2)).await;
            let probe = msg(200);
            let mut found = false;
            if raw.io.send(frame(KIND_DATA, 1000, &probe)).await.is_ok() {
                if let Ok(Some(Inbound::Channel(mut c))) =
                    tokio::time::timeout(Duration::from_millis(500), lab.accepted.recv()).await
                {
                    found = recv(&mut c).await == Some(probe);
                }
            }
            if lab.server_counters.snapshot().connections_malformed == 1 {
                closed += 1;
                for _ in 0..100 {
                    if !server.is_live() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                assert!(!server.is_live(), "a malformed frame closes the connection");
            } else {
                alive += 1;
                assert!(found, "the listener still opens streams");
            }
        }
        // Both outcomes were exercised.
        assert!(closed > 20 && alive > 20, "closed {closed}, alive {alive}");
    }

    #[tokio::test]
    async fn oversize_messages_are_refused_both_ways() {
        let mut lab = Lab::new(Config::default());
        let mut c = lab.channel().await;
        assert!(matches!(
            c.io.send(Bytes::from(vec![0u8; MAX + 1])).await,
            Err(AcpError::TooLarge { .. })
        ));
        c.io.send(msg(1)).await.unwrap();
        let mut s = lab.next_inbound().await;
        assert_eq!(recv(&mut s).await, Some(msg(1)));
    }
}
