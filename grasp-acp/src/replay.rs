//! Replay protection for authenticated multicasts: a 64-entry sliding
//! window of counters per sender.

use std::collections::HashMap;

/// A sliding window of the last 64 counters of one sender.
#[derive(Debug, Clone, Copy)]
struct Window {
    top: u64,
    seen: u64,
    last_used: u64,
}

impl Window {
    fn accept(&mut self, c: u64) -> bool {
        if c > self.top {
            let shift = c - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = c;
            true
        } else {
            let back = self.top - c;
            if back >= 64 || self.seen & (1 << back) != 0 {
                false
            } else {
                self.seen |= 1 << back;
                true
            }
        }
    }
}

/// Per-sender counter windows, bounded (the least recently heard sender
/// is forgotten first). Only authenticated messages should be recorded.
#[derive(Debug)]
pub struct CounterWindows<K> {
    map: HashMap<K, Window>,
    cap: usize,
    tick: u64,
}

impl<K: std::hash::Hash + Eq + Copy> CounterWindows<K> {
    /// Windows for at most `cap` senders.
    pub fn new(cap: usize) -> Self {
        CounterWindows {
            map: HashMap::new(),
            cap: cap.max(1),
            tick: 0,
        }
    }

    /// Records `counter` from `sender`; false if it was seen (or is older
    /// than the window).
    pub fn accept(&mut self, sender: K, counter: u64) -> bool {
        self.tick += 1;
        if let Some(w) = self.map.get_mut(&sender) {
            w.last_used = self.tick;
            return w.accept(counter);
        }
        if self.map.len() >= self.cap {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(
            sender,
            Window {
                top: counter,
                seen: 1,
                last_used: self.tick,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_bound() {
        let mut w = CounterWindows::new(2);
        assert!(w.accept(1u8, 5));
        assert!(!w.accept(1, 5), "seen");
        assert!(w.accept(1, 3), "late but inside the window");
        assert!(w.accept(1, 100));
        assert!(!w.accept(1, 36), "64 or more behind");
        assert!(w.accept(1, 37));
        assert!(w.accept(2, 0));
        // A third sender evicts the least recently heard (1).
        assert!(w.accept(3, 0));
        assert!(w.accept(1, 100), "1 was forgotten");
        assert!(!w.accept(3, 0));
    }
}
