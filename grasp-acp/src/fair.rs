//! The queue of received multicasts between the socket and the engine, fair
//! among sources.
//!
//! A single FIFO lets one storming neighbour fill it, and then every other
//! neighbour's datagrams are dropped with the storm's. Here each source (the
//! link-local address a multicast came from) has its own queue, the engine
//! takes one datagram from each source in turn (round robin), a source may
//! hold at most `per_source` datagrams, and when the whole queue is
//! full the source holding the most pays: its newest datagram is dropped to
//! make room. A neighbour sending a few multicasts a second is then served
//! within one round of the sources, however fast another one sends.
//!
//! Bounds: `cap` datagrams in all (each at most the maximum message size),
//! one small queue per source with something queued.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use grasp_engine::transport::Datagram;

/// Why a datagram was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its source holds its share of the queue already.
    SourceShare,
    /// The queue was full and another (lighter) source needed the room:
    /// this is the dropped datagram of the heaviest source.
    Heaviest,
}

#[derive(Debug, Default)]
struct Inner {
    queues: HashMap<Ipv6Addr, VecDeque<Datagram>>,
    /// Sources with something queued, in serving order.
    ring: VecDeque<Ipv6Addr>,
    len: usize,
}

/// A fair queue of datagrams: one producer (the receive loop), one
/// consumer (the engine's inbound stream).
#[derive(Debug)]
pub(crate) struct Fair {
    inner: Mutex<Inner>,
    waker: AtomicWaker,
    cap: usize,
    per_source: usize,
}

impl Fair {
    pub(crate) fn new(cap: usize, per_source: usize) -> Self {
        let cap = cap.max(1);
        Fair {
            inner: Mutex::default(),
            waker: AtomicWaker::new(),
            cap,
            per_source: per_source.clamp(1, cap),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `d`. `Err` says that one datagram was dropped and why: `d`
    /// itself (its source holds its share), or the heaviest source's newest
    /// to make room for `d`.
    pub(crate) fn push(&self, d: Datagram) -> Result<(), Dropped> {
        let src = *d.src.ip();
        let mut g = self.lock();
        let mine = g.queues.get(&src).map_or(0, VecDeque::len);
        if mine >= self.per_source {
            return Err(Dropped::SourceShare);
        }
        let mut dropped = None;
        if g.len >= self.cap {
            // The heaviest source pays (it holds at least as much as we do,
            // since the queue is full and we hold less than our share).
            let heaviest = g
                .queues
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(s, q)| (*s, q.len()));
            match heaviest {
                Some((h, n)) if n > mine => {
                    if let Some(q) = g.queues.get_mut(&h) {
                        q.pop_back();
                    }
                    g.len -= 1;
                    dropped = Some(Dropped::Heaviest);
                }
                _ => return Err(Dropped::Heaviest),
            }
        }
        let q = g.queues.entry(src).or_default();
        let was_empty = q.is_empty();
        q.push_back(d);
        g.len += 1;
        if was_empty {
            g.ring.push_back(src);
        }
        drop(g);
        self.waker.wake();
        dropped.map_or(Ok(()), Err)
    }

    /// The next datagram, taking sources in turn (the stream never ends:
    /// the queue lives as long as its consumer).
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Datagram>> {
        if let Some(d) = self.pop() {
            return Poll::Ready(Some(d));
        }
        self.waker.register(cx.waker());
        match self.pop() {
            Some(d) => Poll::Ready(Some(d)),
            None => Poll::Pending,
        }
    }

    fn pop(&self) -> Option<Datagram> {
        let mut g = self.lock();
        while let Some(src) = g.ring.pop_front() {
            let Some(q) = g.queues.get_mut(&src) else {
                continue;
            };
            let Some(d) = q.pop_front() else {
                g.queues.remove(&src);
                continue;
            };
            if q.is_empty() {
                g.queues.remove(&src);
            } else {
                g.ring.push_back(src);
            }
            g.len -= 1;
            return Some(d);
        }
        None
    }

    /// Datagrams queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::SocketAddrV6;

    fn d(src: u16, n: u8) -> Datagram {
        Datagram {
            ifindex: 1,
            src: SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, src), 7017, 0, 1),
            msg: Bytes::from(vec![n]),
        }
    }

    fn pop(f: &Fair) -> Option<(u16, u8)> {
        f.pop().map(|d| (d.src.ip().segments()[7], d.msg[0]))
    }

    #[test]
    fn sources_are_served_in_turn() {
        let f = Fair::new(100, 50);
        for n in 0..10 {
            f.push(d(1, n)).unwrap();
        }
        f.push(d(2, 0)).unwrap();
        f.push(d(2, 1)).unwrap();
        // The storm's first, then the other source, alternating.
        assert_eq!(pop(&f), Some((1, 0)));
        assert_eq!(pop(&f), Some((2, 0)));
        assert_eq!(pop(&f), Some((1, 1)));
        assert_eq!(pop(&f), Some((2, 1)));
        assert_eq!(pop(&f), Some((1, 2)));
        assert_eq!(f.len(), 7);
    }

    #[test]
    fn a_source_holds_its_share_and_the_heaviest_pays_when_full() {
        let f = Fair::new(10, 6);
        for n in 0..6 {
            f.push(d(1, n)).unwrap();
        }
        assert_eq!(f.push(d(1, 6)), Err(Dropped::SourceShare));
        for n in 0..4 {
            f.push(d(2, n)).unwrap();
        }
        // Full (6 + 4): a third source takes the heaviest's newest place.
        assert_eq!(f.push(d(3, 0)), Err(Dropped::Heaviest));
        assert_eq!(f.len(), 10);
        let mut from1 = 0;
        let mut from3 = 0;
        while let Some((s, _)) = pop(&f) {
            from1 += usize::from(s == 1);
            from3 += usize::from(s == 3);
        }
        assert_eq!((from1, from3), (5, 1));
        // Two equal sources filling the queue: a newcomer that would be as
        // heavy as they are is dropped itself.
        let f = Fair::new(4, 2);
        for s in [1, 2] {
            for n in 0..2 {
                f.push(d(s, n)).unwrap();
            }
        }
        f.push(d(3, 0)).unwrap_err();
        assert_eq!(f.len(), 4);
    }

    #[tokio::test]
    async fn the_consumer_is_woken() {
        let f = std::sync::Arc::new(Fair::new(8, 8));
        let g = f.clone();
        let t = tokio::spawn(async move { std::future::poll_fn(|cx| g.poll_pop(cx)).await });
        tokio::task::yield_now().await;
        f.push(d(1, 9)).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.map(|d| d.msg[0]), Some(9));
    }
}
