//! The driver's unicast channels, polled on the driver's own task.
//!
//! Each channel is a slot holding its socket (or the connect that will give
//! it one), the messages the engine queued that the socket has not taken
//! yet, and a waker of its own. When a socket becomes readable or writable
//! its waker puts the channel on the woken list and wakes the driver, which
//! then polls exactly the woken channels, each with its own waker. Every
//! poll is non-blocking, so a slow or silent peer only ever holds up its
//! own channel, as with a task per channel, without a task's spawn, its two
//! queues and a task switch for every message in each direction.
//!
//! Written by hand: `futures`' `FuturesUnordered` and `SelectAll` poll only
//! what woke in the same way, but own their members, while the driver must
//! reach a channel by its id to write to it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tracing::debug;

use crate::proto::{ChannelEnd, ChannelId, IdMap};
use crate::transport::{AcpError, Channel, MessageIo};

/// Messages queued towards one channel that its socket has not taken: a
/// peer that reads nothing for this long loses the channel.
const CHANNEL_QUEUE: usize = 16;
/// How long a lingering close waits for the peer to close first.
const LINGER: Duration = Duration::from_secs(2);

/// What a channel tells the driver (and so the engine).
pub(super) enum Report {
    /// The transport authenticated the peer of an outgoing channel; comes
    /// before any of its messages.
    Identity(String),
    /// A message arrived.
    Msg(Bytes),
    /// A message queued for the channel that will never be written; the
    /// channel's end follows.
    Unsent(Bytes),
    /// The connect failed; the channel is gone.
    ConnectFailed(String),
    /// The channel ended. After [`ChannelEnd::PeerFinished`] it still
    /// writes what the engine queues until the engine closes it; after the
    /// others it is gone.
    Closed(ChannelEnd),
}

/// The channels, by the engine's ids.
pub(super) struct Channels {
    slots: IdMap<ChannelId, Slot>,
    woken: Arc<Woken>,
    /// The woken ids being served (kept for its allocation).
    batch: Vec<ChannelId>,
    /// Channels that gave a message and may hold more without a wake to
    /// come: polled again on the driver's next turn.
    again: Vec<ChannelId>,
    /// Wakers of ended channels that nothing else holds, for new channels
    /// to take (one allocation less per channel), at most [`SPARE_WAKERS`].
    spare: Vec<Arc<SlotWaker>>,
}

/// Ended channels' wakers kept for reuse, at most.
const SPARE_WAKERS: usize = 64;

/// The channels whose sockets woke since the driver last looked.
#[derive(Default)]
pub(super) struct Woken {
    ids: Mutex<Vec<ChannelId>>,
    any: AtomicBool,
    driver: futures::task::AtomicWaker,
}

/// One channel's waker: puts it on the woken list once until it is served.
struct SlotWaker {
    id: ChannelId,
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl futures::task::ArcWake for SlotWaker {
    fn wake_by_ref(w: &Arc<Self>) {
        if !w.queued.swap(true, Ordering::AcqRel) {
            if let Ok(mut ids) = w.woken.ids.lock() {
                ids.push(w.id);
            }
            w.woken.any.store(true, Ordering::Release);
        }
        w.woken.driver.wake();
    }
}

struct Slot {
    io: Io,
    /// Queued by the engine, not yet taken by the socket.
    out: VecDeque<Bytes>,
    /// Taken by the socket, not yet flushed (reported unsent if that fails).
    flushing: Option<Bytes>,
    /// The peer finished sending.
    read_done: bool,
    /// The engine closed the channel (`Some(linger)`): it ends once `out`
    /// is written.
    close: Option<bool>,
    /// Closed by the engine, waiting for the peer to close first (so the
    /// peer keeps the TIME_WAIT), until this fires.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    wake: Arc<SlotWaker>,
    waker: Waker,
}

enum Io {
    Connecting(BoxFuture<'static, Result<Channel, AcpError>>),
    Open(Pin<Box<dyn MessageIo>>),
}

/// What a poll of a slot leaves.
#[derive(PartialEq)]
enum Keep {
    Yes,
    /// Poll it again on the next turn.
    Again,
    /// Gone: remove the slot.
    No,
}

impl Woken {
    /// Ready when some channel woke or is to be polled again.
    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.driver.register(cx.waker());
        if self.any.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Channels {
    pub(super) fn new() -> Self {
        Channels {
            slots: IdMap::default(),
            woken: Arc::default(),
            batch: Vec::new(),
            again: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// A waker for channel `id`: an ended channel's, or a new one.
    fn waker_for(&mut self, id: ChannelId) -> Arc<SlotWaker> {
        if let Some(mut w) = self.spare.pop() {
            if let Some(s) = Arc::get_mut(&mut w) {
                s.id = id;
                *s.queued.get_mut() = false;
                return w;
            }
        }
        Arc::new(SlotWaker {
            id,
            queued: AtomicBool::new(false),
            woken: self.woken.clone(),
        })
    }

    /// Drops an ended channel's slot, keeping its waker if nothing else
    /// holds it (a stale entry of its old id on the woken list finds no
    /// slot and is skipped).
    fn retire(&mut self, slot: Slot) {
        // The socket and the timer first: they may hold clones of the waker.
        let Slot {
            io,
            linger,
            waker,
            mut wake,
            ..
        } = slot;
        drop(io);
        drop(linger);
        drop(waker);
        if self.spare.len() < SPARE_WAKERS && Arc::get_mut(&mut wake).is_some() {
            self.spare.push(wake);
        }
    }

    fn insert(&mut self, id: ChannelId, io: Io, report: &mut impl FnMut(ChannelId, Report)) {
        let wake = self.waker_for(id);
        let waker = futures::task::waker(wake.clone());
        let mut slot = Slot {
            io,
            out: VecDeque::new(),
            flushing: None,
            read_done: false,
            close: None,
            linger: None,
            wake,
            waker,
        };
        // Polled at once: a connect starts, a peer's first message (usually
        // there already) is read in this same turn.
        let keep = slot.poll(id, report);
        if keep != Keep::No {
            self.slots.insert(id, slot);
        } else {
            self.retire(slot);
        }
        self.kept(id, keep);
    }

    /// Carries out what a poll of channel `id` left.
    fn kept(&mut self, id: ChannelId, keep: Keep) {
        match keep {
            Keep::Yes => {}
            Keep::Again => {
                self.again.push(id);
                self.woken.any.store(true, Ordering::Release);
            }
            Keep::No => {
                if let Some(slot) = self.slots.remove(&id) {
                    self.retire(slot);
                }
            }
        }
    }

    /// Opens the channel `id` with `connect`, which gives its socket.
    pub(super) fn connect(
        &mut self,
        id: ChannelId,
        connect: BoxFuture<'static, Result<Channel, AcpError>>,
        report: &mut impl FnMut(ChannelId, Report),
    ) {
        self.insert(id, Io::Connecting(connect), report);
    }

    /// Takes on a peer's channel `id`.
    pub(super) fn accept(
        &mut self,
        id: ChannelId,
        io: Pin<Box<dyn MessageIo>>,
        report: &mut impl FnMut(ChannelId, Report),
    ) {
        self.insert(id, Io::Open(io), report);
    }

    /// Queues `msg` on channel `id` and writes what its socket takes now.
    pub(super) fn send(
        &mut self,
        id: ChannelId,
        msg: Bytes,
        report: &mut impl FnMut(ChannelId, Report),
    ) {
        let Some(slot) = self.slots.get_mut(&id) else {
            // Gone (the peer too).
            return report(id, Report::Unsent(msg));
        };
        if slot.out.len() >= CHANNEL_QUEUE {
            // The peer does not read: give up on this channel only.
            debug!(?id, "channel queue full; closing it");
            report(id, Report::Unsent(msg));
            slot.lost(id, ChannelEnd::Lost, report);
            return self.kept(id, Keep::No);
        }
        match slot.start_send(msg) {
            Ok(None) => {}
            Ok(Some(msg)) => slot.out.push_back(msg),
            Err(e) => {
                debug!(?id, error = %e, "send failed");
                slot.lost(id, ChannelEnd::Lost, report);
                return self.kept(id, Keep::No);
            }
        }
        let keep = slot.write_all(id, report);
        self.kept(id, keep);
    }

    /// Closes channel `id` once what is queued is written; with `linger`,
    /// after the peer has closed (or [`LINGER`] has passed).
    pub(super) fn close(
        &mut self,
        id: ChannelId,
        linger: bool,
        report: &mut impl FnMut(ChannelId, Report),
    ) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.close = Some(linger);
        // Not read: the engine is done with the channel.
        let keep = slot.write_all(id, report);
        self.kept(id, keep);
    }

    /// What tells the driver that some channel woke.
    pub(super) fn woken(&self) -> Arc<Woken> {
        self.woken.clone()
    }

    /// Polls every channel that woke or is to be polled again.
    pub(super) fn serve(&mut self, report: &mut impl FnMut(ChannelId, Report)) {
        let mut batch = std::mem::take(&mut self.batch);
        if let Ok(mut ids) = self.woken.ids.lock() {
            std::mem::swap(&mut *ids, &mut batch);
        }
        batch.append(&mut self.again);
        for id in batch.drain(..) {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            // Before the poll: a wake during it queues the channel again.
            slot.wake.queued.store(false, Ordering::Release);
            let keep = slot.poll(id, report);
            self.kept(id, keep);
        }
        self.batch = batch;
    }
}

impl Slot {
    /// Moves the channel on as far as it goes without waiting: finishes a
    /// connect, writes what is queued, carries out a close, reads one
    /// message (and comes back for the next on the driver's next turn, so
    /// a peer that floods us shares the task fairly).
    fn poll(&mut self, id: ChannelId, report: &mut impl FnMut(ChannelId, Report)) -> Keep {
        if let Io::Connecting(connect) = &mut self.io {
            let mut cx = Context::from_waker(&self.waker);
            match connect.poll_unpin(&mut cx) {
                Poll::Pending => return Keep::Yes,
                Poll::Ready(Ok(ch)) => {
                    self.io = Io::Open(ch.io);
                    if let Some(who) = ch.identity {
                        report(id, Report::Identity(who));
                    }
                }
                Poll::Ready(Err(e)) => {
                    debug!(?id, error = %e, "connect failed");
                    self.report_unsent(id, report);
                    report(id, Report::ConnectFailed(e.to_string()));
                    return Keep::No;
                }
            }
        }
        if self.write_all(id, report) == Keep::No {
            return Keep::No;
        }
        let Io::Open(io) = &mut self.io else {
            return Keep::Yes;
        };
        let mut cx = Context::from_waker(&self.waker);
        if let Some(linger) = self.linger.as_mut() {
            // Closed on our side: until the peer closes or the linger runs
            // out (checked first, so a peer that keeps talking cannot hold
            // the channel), read and drop, one message a turn as below.
            if linger.poll_unpin(&mut cx).is_ready() {
                return Keep::No;
            }
            return match io.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Ok(_))) => Keep::Again,
                Poll::Ready(_) => Keep::No,
                Poll::Pending => Keep::Yes,
            };
        }
        if self.read_done {
            return Keep::Yes;
        }
        match io.poll_next_unpin(&mut cx) {
            Poll::Pending => Keep::Yes,
            Poll::Ready(Some(Ok(msg))) => {
                report(id, Report::Msg(msg));
                // More may be buffered without a wake to come.
                Keep::Again
            }
            Poll::Ready(None) => {
                self.read_done = true;
                report(id, Report::Closed(ChannelEnd::PeerFinished));
                Keep::Yes
            }
            Poll::Ready(Some(Err(e))) => {
                debug!(?id, error = %e, "channel error");
                self.lost(id, channel_end(&e), report);
                Keep::No
            }
        }
    }

    /// Hands `msg` straight to the socket when nothing is ahead of it and
    /// the socket takes it now (most messages: no queue entry, whose first
    /// push would allocate); gives it back otherwise, to be queued.
    fn start_send(&mut self, msg: Bytes) -> Result<Option<Bytes>, AcpError> {
        let Io::Open(io) = &mut self.io else {
            return Ok(Some(msg));
        };
        if !self.out.is_empty() || self.flushing.is_some() {
            return Ok(Some(msg));
        }
        let mut cx = Context::from_waker(&self.waker);
        match io.as_mut().poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                // Held until flushed, like every message `write` sends, so
                // a failure reports it unsent.
                self.flushing = Some(msg.clone());
                io.as_mut().start_send(msg).map(|()| None)
            }
            Poll::Ready(Err(e)) => {
                self.out.push_back(msg);
                Err(e)
            }
            Poll::Pending => Ok(Some(msg)),
        }
    }

    /// Writes what is queued as far as the socket takes it, then carries
    /// out the engine's close once everything is flushed.
    fn write_all(&mut self, id: ChannelId, report: &mut impl FnMut(ChannelId, Report)) -> Keep {
        let Io::Open(io) = &mut self.io else {
            // Written once connected.
            return Keep::Yes;
        };
        let mut cx = Context::from_waker(&self.waker);
        match write(io.as_mut(), &mut self.out, &mut self.flushing, &mut cx) {
            Poll::Pending => return Keep::Yes,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                debug!(?id, error = %e, "send failed");
                self.lost(id, ChannelEnd::Lost, report);
                return Keep::No;
            }
        }
        match self.close {
            None => Keep::Yes,
            // Every send was flushed: dropping the channel closes it
            // without a separate shutdown call.
            Some(false) => Keep::No,
            Some(true) if self.read_done => Keep::No,
            Some(true) => {
                if self.linger.is_none() {
                    self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
                    // The first look at the read side and the timer.
                    return Keep::Again;
                }
                Keep::Yes
            }
        }
    }

    /// Reports what will never be written and the channel's end.
    fn lost(&mut self, id: ChannelId, how: ChannelEnd, report: &mut impl FnMut(ChannelId, Report)) {
        self.report_unsent(id, report);
        report(id, Report::Closed(how));
    }

    fn report_unsent(&mut self, id: ChannelId, report: &mut impl FnMut(ChannelId, Report)) {
        for msg in self.flushing.take().into_iter().chain(self.out.drain(..)) {
            report(id, Report::Unsent(msg));
        }
    }
}

/// Writes `out` on `io`, one message at a time, each flushed before the
/// next is taken (so a failure names the message it lost).
fn write(
    mut io: Pin<&mut dyn MessageIo>,
    out: &mut VecDeque<Bytes>,
    flushing: &mut Option<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), AcpError>> {
    loop {
        if flushing.is_some() {
            futures::ready!(io.as_mut().poll_flush(cx))?;
            *flushing = None;
        }
        if out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        futures::ready!(io.as_mut().poll_ready(cx))?;
        let msg = out.pop_front().expect("not empty");
        *flushing = Some(msg.clone());
        io.as_mut().start_send(msg)?;
    }
}

/// How a channel that failed with `e` ended.
fn channel_end(e: &AcpError) -> ChannelEnd {
    match e {
        AcpError::Reset => ChannelEnd::Reset,
        _ => ChannelEnd::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::{Sink, Stream};

    /// One end of an in-memory channel whose peer reads only when the test
    /// says so (a sink of capacity 0 takes one message, then waits).
    struct Pipe {
        rx: mpsc::Receiver<Bytes>,
        tx: mpsc::Sender<Bytes>,
    }

    impl Stream for Pipe {
        type Item = Result<Bytes, AcpError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.poll_next_unpin(cx).map(|m| m.map(Ok))
        }
    }

    impl Sink<Bytes> for Pipe {
        type Error = AcpError;
        fn poll_ready(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), AcpError>> {
            self.tx.poll_ready(cx).map_err(|_| AcpError::Reset)
        }
        fn start_send(mut self: Pin<&mut Self>, m: Bytes) -> Result<(), AcpError> {
            self.tx.start_send(m).map_err(|_| AcpError::Reset)
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), AcpError>> {
            Pin::new(&mut self.tx)
                .poll_flush(cx)
                .map_err(|_| AcpError::Reset)
        }
        fn poll_close(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), AcpError>> {
            Pin::new(&mut self.tx)
                .poll_close(cx)
                .map_err(|_| AcpError::Reset)
        }
    }

    /// Our end, and the peer's: what it sends us, what we wrote to it.
    fn pipe() -> (
        Pin<Box<dyn MessageIo>>,
        mpsc::Sender<Bytes>,
        mpsc::Receiver<Bytes>,
    ) {
        let (to_us, rx) = mpsc::channel(0);
        let (tx, from_us) = mpsc::channel(0);
        (Box::pin(Pipe { rx, tx }), to_us, from_us)
    }

    #[derive(Debug, PartialEq)]
    enum Seen {
        Msg(u64, Bytes),
        Unsent(u64, Bytes),
        Closed(u64, ChannelEnd),
    }

    fn recorder(seen: &mut Vec<Seen>) -> impl FnMut(ChannelId, Report) + '_ {
        |id, r| match r {
            Report::Msg(m) => seen.push(Seen::Msg(id.0, m)),
            Report::Unsent(m) => seen.push(Seen::Unsent(id.0, m)),
            Report::Closed(how) => seen.push(Seen::Closed(id.0, how)),
            Report::Identity(_) | Report::ConnectFailed(_) => unreachable!("no connects here"),
        }
    }

    /// A peer that never reads loses its own channel once its queue is
    /// full, with every message it did not take reported unsent; a peer
    /// beside it is served throughout, both ways.
    #[test]
    fn a_peer_that_never_reads_loses_only_its_channel() {
        let mut chans = Channels::new();
        let mut seen = Vec::new();
        let (stuck, _stuck_to_us, _stuck_unread) = pipe();
        let (good, mut good_to_us, mut good_from_us) = pipe();
        chans.accept(ChannelId(1), stuck, &mut recorder(&mut seen));
        chans.accept(ChannelId(2), good, &mut recorder(&mut seen));

        let msgs: Vec<Bytes> = (0..CHANNEL_QUEUE as u8 + 3)
            .map(|i| Bytes::from(vec![i]))
            .collect();
        for (i, m) in msgs.iter().enumerate() {
            chans.send(ChannelId(1), m.clone(), &mut recorder(&mut seen));
            // The good channel is written as soon as it is sent to...
            let echo = Bytes::from(vec![100, i as u8]);
            chans.send(ChannelId(2), echo.clone(), &mut recorder(&mut seen));
            assert_eq!(good_from_us.try_recv().ok(), Some(echo));
            // ...and read as soon as its peer speaks.
            let hello = Bytes::from(vec![200, i as u8]);
            good_to_us.try_send(hello.clone()).unwrap();
            chans.serve(&mut recorder(&mut seen));
            assert_eq!(seen.pop(), Some(Seen::Msg(2, hello)));
        }

        // The stuck peer's sink took the first message and flushes nothing
        // more: CHANNEL_QUEUE wait behind it, the next one overflows.
        let overflow = CHANNEL_QUEUE + 1;
        let mut want = vec![Seen::Unsent(1, msgs[overflow].clone())];
        want.extend(msgs[..overflow].iter().map(|m| Seen::Unsent(1, m.clone())));
        want.push(Seen::Closed(1, ChannelEnd::Lost));
        // The messages after the end find the channel gone.
        want.extend(
            msgs[overflow + 1..]
                .iter()
                .map(|m| Seen::Unsent(1, m.clone())),
        );
        assert_eq!(seen, want);
        assert!(
            !chans.slots.contains_key(&ChannelId(1)),
            "the stuck channel is dropped"
        );
        assert!(
            chans.slots.contains_key(&ChannelId(2)),
            "the good one stays"
        );
    }
}
