//! Sealing and opening records: multicast with a per-sender counter window
//! and a timestamp window, unicast with fresh per-connection keys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use crate::keys::{DomainKey, KeyId, KeyRing};
use crate::record::{self, kind, Item};
use crate::{Config, DropReason};

/// AES-GCM tag length.
pub(crate) const TAG: usize = 16;

/// Largest record overhead over the plaintext (the multicast layout with
/// 9-byte integers, a 3-byte ciphertext head and the tag).
pub const OVERHEAD: usize = 1 + 1 + 1 + 9 + 9 + 9 + 9 + 3 + TAG;

/// Random bytes from the thread's CSPRNG (ChaCha12, seeded and reseeded
/// from the operating system): no system call per channel.
fn random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// An AES-GCM key whose cipher is set up on first use (a direction that
/// never carries a record costs no key schedule).
struct LazyAead {
    key: Zeroizing<[u8; 32]>,
    /// Boxed: the key schedules are large, and the channel state moves.
    aead: Option<Box<Aes256Gcm>>,
}

impl LazyAead {
    fn new(key: Zeroizing<[u8; 32]>) -> Self {
        LazyAead { key, aead: None }
    }

    fn get(&mut self) -> &Aes256Gcm {
        let key = &self.key;
        self.aead
            .get_or_insert_with(|| Box::new(Aes256Gcm::new((&**key).into())))
    }
}

/// Seals `plaintext` under `aead` into `out` (which already holds the header
/// to authenticate): appends the ciphertext byte string.
fn seal_into(out: &mut Vec<u8>, aead: &Aes256Gcm, nonce: &[u8; 12], plaintext: &[u8]) {
    let hdr = out.len();
    record::push_bytes_head(out, plaintext.len() + TAG);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let (head, body) = out.split_at_mut(start);
    // Encryption fails only for plaintexts over 64 GiB.
    let tag = aead
        .encrypt_in_place_detached(Nonce::from_slice(nonce), &head[..hdr], body)
        .unwrap_or_default();
    out.extend_from_slice(&tag);
}

fn open_ct(
    aead: &Aes256Gcm,
    nonce: &[u8; 12],
    header: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, DropReason> {
    if ciphertext.len() < TAG {
        return Err(DropReason::Truncated);
    }
    let (ct, tag) = ciphertext.split_at(ciphertext.len() - TAG);
    let mut buf = ct.to_vec();
    aead.decrypt_in_place_detached(
        Nonce::from_slice(nonce),
        header,
        &mut buf,
        Tag::from_slice(tag),
    )
    .map_err(|_| DropReason::AuthFailed)?;
    Ok(buf)
}

fn key_id(item: Option<&Item<'_>>) -> Result<KeyId, DropReason> {
    match item {
        Some(Item::Bytes(b)) => Ok(KeyId((*b).try_into().map_err(|_| DropReason::Malformed)?)),
        _ => Err(DropReason::Malformed),
    }
}

fn bytes16(item: Option<&Item<'_>>) -> Result<[u8; 16], DropReason> {
    match item {
        Some(Item::Bytes(b)) => (*b).try_into().map_err(|_| DropReason::Malformed),
        _ => Err(DropReason::Malformed),
    }
}

fn uint(item: Option<&Item<'_>>) -> Result<u64, DropReason> {
    match item {
        Some(Item::Uint(v)) => Ok(*v),
        _ => Err(DropReason::Malformed),
    }
}

/// The header of a multicast record `[1, 0, key_id, sender, counter, time_ms, ct]`.
struct MulticastHeader {
    key_id: KeyId,
    sender: [u8; 8],
    counter: u64,
    time_ms: u64,
}

impl MulticastHeader {
    fn of(p: &record::Parsed<'_>) -> Result<Self, DropReason> {
        if p.kind != kind::MULTICAST || p.fields.len() != 4 {
            return Err(DropReason::Malformed);
        }
        let sender = match p.fields.get(1) {
            Some(Item::Bytes(b)) => (*b).try_into().map_err(|_| DropReason::Malformed)?,
            _ => return Err(DropReason::Malformed),
        };
        let counter = uint(p.fields.get(2))?;
        if counter > u64::from(u32::MAX) {
            return Err(DropReason::Malformed);
        }
        Ok(MulticastHeader {
            key_id: key_id(p.fields.first())?,
            sender,
            counter,
            time_ms: uint(p.fields.get(3))?,
        })
    }

    /// Sender ‖ 32-bit counter.
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.sender);
        n[8..].copy_from_slice(&(self.counter as u32).to_be_bytes());
        n
    }
}

/// The header of a channel's opening record `[1, 1, key_id, cr, time_ms, ct]`.
fn opening_header(p: &record::Parsed<'_>) -> Result<(KeyId, [u8; 16], u64), DropReason> {
    if p.kind != kind::OPEN || p.fields.len() != 3 {
        return Err(DropReason::Malformed);
    }
    Ok((
        key_id(p.fields.first())?,
        bytes16(p.fields.get(1))?,
        uint(p.fields.get(2))?,
    ))
}

/// Counters of what was sealed, opened and dropped.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sealed: AtomicU64,
    /// Of the drops, how many were multicasts.
    pub(crate) multicast_dropped: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) dropped: [AtomicU64; DropReason::COUNT],
}

/// A copy of the QUADS counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records sealed.
    pub sealed: u64,
    /// Records opened.
    pub opened: u64,
    /// Records dropped, by reason (index with [`DropReason::index`]).
    pub dropped: [u64; DropReason::COUNT],
}

impl Stats {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }

    /// Drops for every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let mut dropped = [0; DropReason::COUNT];
        for (d, c) in dropped.iter_mut().zip(&self.dropped) {
            *d = c.load(Ordering::Relaxed);
        }
        Stats {
            sealed: self.sealed.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            dropped,
        }
    }

    /// Counts a drop of `rec` for `r`; a record that did not parse as
    /// QUADS but is a plain GRASP message counts as
    /// [`DropReason::Plaintext`] (graspy's M_FLOOD `[9, ...]` would read as
    /// an unknown record version, an M_DISCOVERY as a malformed record).
    /// Returns the reason counted.
    pub(crate) fn note_drop(&self, rec: &[u8], r: DropReason) -> DropReason {
        let r = match r {
            DropReason::Malformed | DropReason::UnknownVersion | DropReason::Truncated
                if grasp_engine::wire::Message::decode_slice(rec).is_ok() =>
            {
                DropReason::Plaintext
            }
            r => r,
        };
        self.dropped[r.index()].fetch_add(1, Ordering::Relaxed);
        r
    }
}

/// The fingerprints are random bytes already: hashing them again (SipHash)
/// buys nothing, so the table uses them as they are.
type Fingerprints = std::hash::BuildHasherDefault<IdentityHasher>;

#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Opening randoms of unicast channels seen within the clock window, as
/// 64-bit fingerprints in two generations of one window each: a record is
/// accepted only within one window of our clock, so anything older than two
/// generations can no longer be replayed and is forgotten wholesale. Full
/// means refuse, never forget early: forgetting would open a replay hole.
#[derive(Debug)]
pub(crate) struct OpenCache {
    current: HashSet<u64, Fingerprints>,
    previous: HashSet<u64, Fingerprints>,
    /// When `current` began (ms).
    started: u64,
    cap: usize,
}

impl OpenCache {
    pub(crate) fn new(cap: usize) -> Self {
        OpenCache {
            current: HashSet::default(),
            previous: HashSet::default(),
            started: 0,
            cap: cap.max(1),
        }
    }

    fn check(&mut self, cr: &[u8; 16], now_ms: u64, window_ms: u64) -> Result<(), DropReason> {
        // Records are accepted up to `window` after their time, and their
        // time may be up to `window` ahead of ours: keep each fingerprint
        // for at least 2 × window.
        let gen = 2 * window_ms.max(1);
        if now_ms >= self.started + 2 * gen {
            self.previous.clear();
            self.current.clear();
            self.started = now_ms;
        } else if now_ms >= self.started + gen {
            self.previous = std::mem::take(&mut self.current);
            self.started += gen;
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&cr[..8]);
        let fp = u64::from_le_bytes(fp);
        if self.current.contains(&fp) || self.previous.contains(&fp) {
            return Err(DropReason::Replay);
        }
        if self.current.len() + self.previous.len() >= self.cap {
            return Err(DropReason::ReplayCacheFull);
        }
        self.current.insert(fp);
        Ok(())
    }
}

/// State shared by a node's sealing and opening.
#[derive(Debug)]
pub struct Sealer {
    ring: std::sync::RwLock<Arc<KeyRing>>,
    pub(crate) config: Config,
    /// Our multicast sender id and next counter.
    mc: Mutex<([u8; 8], u64)>,
    windows: Mutex<grasp_acp::replay::CounterWindows<[u8; 8]>>,
    opens: Mutex<OpenCache>,
    /// When this sealer was made: multicasts and unicast openings sealed
    /// before this are refused, because the replay state that would
    /// recognise a copy (counter windows, opening cache) starts empty.
    /// A sender whose clock is behind ours by `d` (at most the clock
    /// window) is refused for the first `d` after a restart.
    started_ms: u64,
    pub(crate) counters: Counters,
}

impl Sealer {
    /// A sealer for `ring`.
    pub fn new(ring: KeyRing, config: Config) -> Arc<Self> {
        Self::new_at(ring, config, crate::now_ms())
    }

    pub(crate) fn new_at(ring: KeyRing, config: Config, started_ms: u64) -> Arc<Self> {
        let sender = random();
        Arc::new(Sealer {
            windows: Mutex::new(grasp_acp::replay::CounterWindows::new(
                config.multicast_senders,
            )),
            opens: Mutex::new(OpenCache::new(config.replay_cache)),
            ring: std::sync::RwLock::new(Arc::new(ring)),
            config,
            mc: Mutex::new((sender, 0)),
            started_ms,
            counters: Counters::default(),
        })
    }

    /// The keys in force.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the keys (a rotation step). Channels already open keep the
    /// keys they started with; new records use the new ring.
    pub fn set_ring(&self, ring: KeyRing) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    fn window_ms(&self) -> u64 {
        self.config.clock_window.as_millis() as u64
    }

    fn fresh(&self, t: u64, now_ms: u64) -> bool {
        t.abs_diff(now_ms) <= self.window_ms()
    }

    /// Seals a multicast: `[1, 0, key id, sender, counter, time ms, ct]`.
    pub fn seal_multicast(&self, now_ms: u64, plaintext: &[u8]) -> Vec<u8> {
        let (sender, counter) = {
            let mut g = self.mc.lock().unwrap_or_else(|e| e.into_inner());
            if g.1 > u64::from(u32::MAX) {
                // 2^32 multicasts under one sender id: take a new one.
                *g = (random(), 0);
            }
            let out = *g;
            g.1 += 1;
            out
        };
        self.seal_multicast_as(sender, counter, now_ms, plaintext)
    }

    fn seal_multicast_as(
        &self,
        sender: [u8; 8],
        counter: u64,
        now_ms: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let ring = self.ring();
        let key = ring.current();
        let mut out = record::start(7, kind::MULTICAST, plaintext.len() + OVERHEAD);
        record::push_bytes(&mut out, &key.id().0);
        record::push_bytes(&mut out, &sender);
        record::push_uint(&mut out, counter);
        record::push_uint(&mut out, now_ms);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&sender);
        nonce[8..].copy_from_slice(&(counter as u32).to_be_bytes());
        seal_into(&mut out, key.multicast(), &nonce, plaintext);
        self.counters.sealed.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Opens a multicast record.
    pub fn open_multicast(&self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        match self.open_multicast_inner(now_ms, rec) {
            Ok(pt) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                Ok(pt)
            }
            Err(e) => {
                self.counters
                    .multicast_dropped
                    .fetch_add(1, Ordering::Relaxed);
                Err(self.counters.note_drop(rec, e))
            }
        }
    }

    /// Multicast records dropped (all reasons).
    pub(crate) fn multicast_dropped(&self) -> u64 {
        self.counters.multicast_dropped.load(Ordering::Relaxed)
    }

    fn open_multicast_inner(&self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        let m = MulticastHeader::of(&p)?;
        let ring = self.ring();
        let key = ring.get(&m.key_id).ok_or(DropReason::UnknownKey)?;
        // Within the clock window, and not from before this node started:
        // the counter windows start empty, so a copy captured before a
        // restart would otherwise open again.
        if !self.fresh(m.time_ms, now_ms) || m.time_ms < self.started_ms {
            return Err(DropReason::Stale);
        }
        let pt = open_ct(key.multicast(), &m.nonce(), p.header, p.last)?;
        // Only authenticated records move the window.
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !w.accept(m.sender, m.counter) {
            return Err(DropReason::Replay);
        }
        Ok(pt)
    }

    /// The initiator's side of a new unicast channel.
    pub fn initiator(self: &Arc<Self>) -> UnicastSession {
        self.initiator_with(random())
    }

    fn initiator_with(self: &Arc<Self>, cr: [u8; 16]) -> UnicastSession {
        let ring = self.ring();
        let key = ring.current();
        UnicastSession {
            sealer: self.clone(),
            ring: ring.clone(),
            state: State::Initiator {
                key_id: key.id(),
                cr,
                ch: LazyAead::new(key.channel_key(&cr)),
                sent: 0,
                received: 0,
                late: None,
            },
        }
    }

    /// The responder's side of a channel a peer opened.
    pub fn responder(self: &Arc<Self>) -> UnicastSession {
        UnicastSession {
            sealer: self.clone(),
            ring: self.ring(),
            state: State::ResponderNew { sr: None },
        }
    }
}

/// K_c2s, derived only if the initiator sends after the answer (a
/// synchronization never needs it).
struct Late {
    /// cr ⊕ sr (both travel in clear).
    x: [u8; 16],
    aead: Option<Box<Aes256Gcm>>,
}

impl Late {
    fn new(cr: &[u8; 16], sr: &[u8; 16]) -> Self {
        let mut x = [0u8; 16];
        for (o, (a, b)) in x.iter_mut().zip(cr.iter().zip(sr)) {
            *o = a ^ b;
        }
        Late { x, aead: None }
    }

    fn get(&mut self, key: &DomainKey) -> &Aes256Gcm {
        let x = self.x;
        self.aead.get_or_insert_with(|| {
            let k = key.late_key(&x);
            Box::new(Aes256Gcm::new((&*k).into()))
        })
    }
}

/// Nonce direction words under the channel key.
const C2S: u32 = 0;
const S2C: u32 = 1;

fn nonce(dir: u32, n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&dir.to_be_bytes());
    b[4..].copy_from_slice(&n.to_be_bytes());
    b
}

enum State {
    Initiator {
        key_id: KeyId,
        cr: [u8; 16],
        /// K_ch: our records until the answer (C2S), the responder's (S2C).
        ch: LazyAead,
        /// Next C2S counter under K_ch.
        sent: u64,
        /// Next S2C counter under K_ch.
        received: u64,
        /// K_c2s and its next counter, once the answer brought `sr`.
        late: Option<(Late, u64)>,
    },
    /// `sr` is drawn when the first record arrives (fixed only in tests).
    ResponderNew { sr: Option<[u8; 16]> },
    Responder {
        key_id: KeyId,
        ch: LazyAead,
        /// Next C2S counter under K_ch (the initiator's early records).
        received: u64,
        /// Next S2C counter under K_ch.
        sent: u64,
        /// K_c2s (set up only if the initiator sends after our answer).
        late: (Late, u64),
        /// Our first record carries `sr`.
        answer: Option<[u8; 16]>,
    },
}

/// One unicast channel's crypto state.
pub struct UnicastSession {
    sealer: Arc<Sealer>,
    /// The keys in force when the channel was created.
    ring: Arc<KeyRing>,
    state: State,
}

impl std::fmt::Debug for UnicastSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match &self.state {
            State::Initiator { late: None, .. } => "initiator, opening",
            State::Initiator { .. } => "initiator",
            State::ResponderNew { .. } => "responder, waiting",
            State::Responder { .. } => "responder",
        };
        f.debug_struct("UnicastSession").field("state", &s).finish()
    }
}

impl UnicastSession {
    /// Whether the next [`seal`](Self::seal) or [`open`](Self::open) reads
    /// the clock (only a channel's opening record carries or checks a time;
    /// callers may pass 0 otherwise and save the clock read).
    pub fn needs_clock(&self) -> bool {
        matches!(
            self.state,
            State::Initiator {
                sent: 0,
                late: None,
                ..
            } | State::ResponderNew { .. }
        )
    }

    /// Seals one message for the peer.
    pub fn seal(&mut self, now_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, &'static str> {
        let cap = plaintext.len() + OVERHEAD;
        let UnicastSession { ring, state, .. } = self;
        let out = match state {
            State::Initiator {
                key_id,
                cr,
                ch,
                sent,
                late,
                ..
            } => match late {
                Some((k, n)) => {
                    let key = ring
                        .get(key_id)
                        .ok_or("the channel's key is no longer in the key ring")?;
                    let mut out = record::start(3, kind::DATA, cap);
                    seal_into(&mut out, k.get(key), &nonce(C2S, *n), plaintext);
                    *n += 1;
                    out
                }
                None if *sent == 0 => {
                    let mut out = record::start(6, kind::OPEN, cap + 24);
                    record::push_bytes(&mut out, &key_id.0);
                    record::push_bytes(&mut out, cr);
                    record::push_uint(&mut out, now_ms);
                    seal_into(&mut out, ch.get(), &nonce(C2S, 0), plaintext);
                    *sent = 1;
                    out
                }
                None => {
                    let mut out = record::start(3, kind::EARLY, cap);
                    seal_into(&mut out, ch.get(), &nonce(C2S, *sent), plaintext);
                    *sent += 1;
                    out
                }
            },
            State::ResponderNew { .. } => {
                return Err("a responder cannot send before the peer's first message")
            }
            State::Responder {
                ch, sent, answer, ..
            } => {
                let n = nonce(S2C, *sent);
                *sent += 1;
                match answer.take() {
                    Some(sr) => {
                        let mut out = record::start(4, kind::ANSWER, cap + 17);
                        record::push_bytes(&mut out, &sr);
                        seal_into(&mut out, ch.get(), &n, plaintext);
                        out
                    }
                    None => {
                        let mut out = record::start(3, kind::DATA, cap);
                        seal_into(&mut out, ch.get(), &n, plaintext);
                        out
                    }
                }
            }
        };
        self.sealer.counters.sealed.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Opens one record from the peer.
    pub fn open(&mut self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        match self.open_inner(now_ms, rec) {
            Ok(pt) => {
                self.sealer.counters.opened.fetch_add(1, Ordering::Relaxed);
                Ok(pt)
            }
            Err(e) => Err(self.sealer.counters.note_drop(rec, e)),
        }
    }

    fn open_inner(&mut self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        let UnicastSession {
            sealer,
            ring,
            state,
        } = self;
        match state {
            State::Initiator {
                key_id,
                cr,
                ch,
                received,
                late,
                ..
            } => {
                let first = late.is_none();
                let expect = if first { kind::ANSWER } else { kind::DATA };
                if p.kind != expect || p.fields.len() != usize::from(first) {
                    return Err(DropReason::Malformed);
                }
                let pt = open_ct(ch.get(), &nonce(S2C, *received), p.header, p.last)?;
                *received += 1;
                if first {
                    let sr = bytes16(p.fields.first())?;
                    ring.get(key_id).ok_or(DropReason::UnknownKey)?;
                    *late = Some((Late::new(cr, &sr), 0));
                }
                Ok(pt)
            }
            State::ResponderNew { sr: fixed_sr } => {
                let (id, cr, t) = opening_header(&p)?;
                let key: &DomainKey = ring.get(&id).ok_or(DropReason::UnknownKey)?;
                // Within the clock window, and not from before this node
                // started (its replay cache starts empty).
                if !sealer.fresh(t, now_ms) || t < sealer.started_ms {
                    return Err(DropReason::Stale);
                }
                let mut ch = LazyAead::new(key.channel_key(&cr));
                let pt = open_ct(ch.get(), &nonce(C2S, 0), p.header, p.last)?;
                // Authenticated: now it may enter the replay cache.
                sealer
                    .opens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(&cr, now_ms, sealer.window_ms())?;
                let sr: [u8; 16] = fixed_sr.unwrap_or_else(random);
                *state = State::Responder {
                    key_id: id,
                    ch,
                    received: 1,
                    sent: 0,
                    late: (Late::new(&cr, &sr), 0),
                    answer: Some(sr),
                };
                Ok(pt)
            }
            State::Responder {
                key_id,
                ch,
                received,
                late,
                ..
            } => {
                if !p.fields.is_empty() {
                    return Err(DropReason::Malformed);
                }
                let (aead, n) = match p.kind {
                    kind::EARLY => (ch.get(), received),
                    kind::DATA => {
                        let key = ring.get(key_id).ok_or(DropReason::UnknownKey)?;
                        (late.0.get(key), &mut late.1)
                    }
                    _ => return Err(DropReason::Malformed),
                };
                let pt = open_ct(aead, &nonce(C2S, *n), p.header, p.last)?;
                *n += 1;
                Ok(pt)
            }
        }
    }
}

/// Reads captured QUADS traffic with the domain key, for diagnostics
/// (`grasp decode`): no clock window, no replay state, nothing counted.
/// Whoever holds the key file can read the domain's traffic anyway.
#[derive(Debug)]
pub struct Observer {
    ring: Arc<KeyRing>,
}

impl Observer {
    /// An observer with these keys.
    pub fn new(ring: KeyRing) -> Self {
        Observer {
            ring: Arc::new(ring),
        }
    }

    /// Opens a captured multicast record.
    pub fn multicast(&self, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        let m = MulticastHeader::of(&p)?;
        let key = self.ring.get(&m.key_id).ok_or(DropReason::UnknownKey)?;
        open_ct(key.multicast(), &m.nonce(), p.header, p.last)
    }

    /// A captured unicast channel: feed each direction's records in the
    /// order they were captured.
    pub fn channel(&self) -> ChannelObserver {
        ChannelObserver {
            ring: self.ring.clone(),
            state: None,
        }
    }
}

/// One captured unicast channel (see [`Observer::channel`]).
pub struct ChannelObserver {
    ring: Arc<KeyRing>,
    /// Key id, K_ch, next C2S and S2C counters under K_ch, cr, and K_c2s
    /// with its counter once the answer was seen.
    state: Option<ObservedChannel>,
}

struct ObservedChannel {
    key_id: KeyId,
    cr: [u8; 16],
    ch: LazyAead,
    c2s: u64,
    s2c: u64,
    late: Option<(Late, u64)>,
}

impl std::fmt::Debug for ChannelObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelObserver")
            .field("opened", &self.state.is_some())
            .finish()
    }
}

impl ChannelObserver {
    /// A record the initiator sent.
    pub fn from_initiator(&mut self, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        if p.kind == kind::OPEN {
            let (id, cr, _) = opening_header(&p)?;
            let key = self.ring.get(&id).ok_or(DropReason::UnknownKey)?;
            let mut ch = LazyAead::new(key.channel_key(&cr));
            let pt = open_ct(ch.get(), &nonce(C2S, 0), p.header, p.last)?;
            self.state = Some(ObservedChannel {
                key_id: id,
                cr,
                ch,
                c2s: 1,
                s2c: 0,
                late: None,
            });
            return Ok(pt);
        }
        let Some(st) = self.state.as_mut() else {
            return Err(DropReason::Malformed);
        };
        if !p.fields.is_empty() {
            return Err(DropReason::Malformed);
        }
        match p.kind {
            kind::EARLY => {
                let pt = open_ct(st.ch.get(), &nonce(C2S, st.c2s), p.header, p.last)?;
                st.c2s += 1;
                Ok(pt)
            }
            kind::DATA => {
                let key = self.ring.get(&st.key_id).ok_or(DropReason::UnknownKey)?;
                let (late, n) = st.late.as_mut().ok_or(DropReason::Malformed)?;
                let pt = open_ct(late.get(key), &nonce(C2S, *n), p.header, p.last)?;
                *n += 1;
                Ok(pt)
            }
            _ => Err(DropReason::Malformed),
        }
    }

    /// A record the responder sent.
    pub fn from_responder(&mut self, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        let st = self.state.as_mut().ok_or(DropReason::Malformed)?;
        let first = st.late.is_none();
        let expect = if first { kind::ANSWER } else { kind::DATA };
        if p.kind != expect || p.fields.len() != usize::from(first) {
            return Err(DropReason::Malformed);
        }
        let pt = open_ct(st.ch.get(), &nonce(S2C, st.s2c), p.header, p.last)?;
        st.s2c += 1;
        if first {
            let sr = bytes16(p.fields.first())?;
            st.late = Some((Late::new(&st.cr, &sr), 0));
        }
        Ok(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KdfParams, MasterSecret, Password};

    const T: u64 = 1_700_000_000_000;

    /// The known-answer key: "grasp-test-password", domain "example",
    /// argon2id m = 64 KiB, t = 1, p = 1 (small, so the test is fast).
    fn kat_key() -> DomainKey {
        let pw = Password::new("grasp-test-password").unwrap();
        let m = MasterSecret::derive(
            &pw,
            "example",
            KdfParams {
                m_kib: 64,
                t: 1,
                p: 1,
            },
        )
        .unwrap();
        DomainKey::from_master(&m)
    }

    fn sealer(key: DomainKey) -> Arc<Sealer> {
        Sealer::new_at(KeyRing::new(key), Config::default(), 0)
    }

    fn other_key() -> DomainKey {
        DomainKey::from_master(&MasterSecret::from_bytes([1; 32]))
    }

    // Expected bytes computed independently (Python: argon2-cffi,
    // cryptography's HKDF and AESGCM) from the format in the crate docs.
    const KAT_MULTICAST: &str = "870100483249f5db67bf18b1480102030405060708051b0000018bcfe5680052c743bf7275f48f25e04f1640a841ddf45c99";
    const KAT_OPEN: &str = "860101483249f5db67bf18b150111111111111111111111111111111111b0000018bcfe5680054c80a05da663b91b132e2833a08276fba7cc8aa16";
    const KAT_ANSWER: &str =
        "8401025022222222222222222222222222222222546e3ff6da7aa965c47dbd682d0d6ee1756aca49c3";
    const KAT_DATA: &str = "83010452fa666187141b132aa809e3ed6be0a5bf8d0a";

    #[test]
    fn known_answers_for_the_record_format() {
        let s = sealer(kat_key());
        assert_eq!(s.ring().current().id().to_string(), "3249f5db67bf18b1");
        let mc = s.seal_multicast_as([1, 2, 3, 4, 5, 6, 7, 8], 5, T, &[0x81, 0x00]);
        assert_eq!(hex::encode(&mc), KAT_MULTICAST);
        assert_eq!(
            sealer(kat_key()).open_multicast(T, &mc).unwrap(),
            vec![0x81, 0x00]
        );

        let mut ini = s.initiator_with([0x11; 16]);
        let open = ini.seal(T, &hex::decode("8304010a").unwrap()).unwrap();
        assert_eq!(hex::encode(&open), KAT_OPEN);
        let r = sealer(kat_key());
        let mut res = UnicastSession {
            sealer: r.clone(),
            ring: r.ring(),
            state: State::ResponderNew {
                sr: Some([0x22; 16]),
            },
        };
        assert_eq!(hex::encode(res.open(T, &open).unwrap()), "8304010a");
        let answer = res.seal(T, &hex::decode("8308010b").unwrap()).unwrap();
        assert_eq!(hex::encode(&answer), KAT_ANSWER);
        assert_eq!(hex::encode(ini.open(T, &answer).unwrap()), "8308010b");
        let data = ini.seal(T, &[0x81, 0x06]).unwrap();
        assert_eq!(hex::encode(&data), KAT_DATA);
        assert_eq!(res.open(T, &data).unwrap(), vec![0x81, 0x06]);
    }

    #[test]
    fn an_observer_reads_captured_records_without_clock_or_replay_state() {
        let o = Observer::new(KeyRing::new(kat_key()));
        let h = |s: &str| hex::decode(s).unwrap();
        // Years after the capture, twice: no clock window, no replay state.
        for _ in 0..2 {
            assert_eq!(o.multicast(&h(KAT_MULTICAST)).unwrap(), vec![0x81, 0x00]);
            let mut ch = o.channel();
            assert_eq!(
                hex::encode(ch.from_initiator(&h(KAT_OPEN)).unwrap()),
                "8304010a"
            );
            assert_eq!(
                hex::encode(ch.from_responder(&h(KAT_ANSWER)).unwrap()),
                "8308010b"
            );
            assert_eq!(ch.from_initiator(&h(KAT_DATA)).unwrap(), vec![0x81, 0x06]);
        }
        // Another key reads nothing.
        let other = Observer::new(KeyRing::new(other_key()));
        assert_eq!(
            other.multicast(&h(KAT_MULTICAST)),
            Err(DropReason::UnknownKey)
        );
        assert!(other.channel().from_initiator(&h(KAT_OPEN)).is_err());
        // A responder record before any opening is refused, not a panic.
        assert!(o.channel().from_responder(&h(KAT_ANSWER)).is_err());
    }

    /// A multicast sealed before this node started is refused after it
    /// starts, even within the clock window (issue 11 §5).
    #[test]
    fn a_multicast_from_before_a_restart_is_refused() {
        let a = sealer(kat_key());
        let rec = a.seal_multicast(T, b"flood");
        let before = Sealer::new_at(KeyRing::new(kat_key()), Config::default(), T - 5);
        assert_eq!(before.open_multicast(T + 10, &rec).unwrap(), b"flood");
        // The same node restarted 5 s later: its windows are empty.
        let restarted = Sealer::new_at(KeyRing::new(kat_key()), Config::default(), T + 5_000);
        assert_eq!(
            restarted.open_multicast(T + 10_000, &rec),
            Err(DropReason::Stale)
        );
        // What the sender seals after the restart opens.
        let fresh = a.seal_multicast(T + 9_000, b"flood");
        assert_eq!(
            restarted.open_multicast(T + 10_000, &fresh).unwrap(),
            b"flood"
        );
    }

    #[test]
    fn multicast_failures_each_with_its_reason() {
        let a = sealer(kat_key());
        let b = sealer(kat_key());
        let rec = a.seal_multicast(T, b"hello");
        // Tampering anywhere: header (authenticated) or ciphertext.
        for i in [5, 12, 20, rec.len() - 20, rec.len() - 1] {
            let mut t = rec.clone();
            t[i] ^= 0x01;
            let e = b.open_multicast(T, &t).unwrap_err();
            assert!(
                matches!(
                    e,
                    DropReason::AuthFailed
                        | DropReason::UnknownKey
                        | DropReason::Malformed
                        | DropReason::Truncated
                ),
                "byte {i}: {e:?}"
            );
        }
        let mut t = rec.clone();
        let last = t.len() - 1;
        t[last] ^= 0x80;
        assert_eq!(b.open_multicast(T, &t), Err(DropReason::AuthFailed));
        // Truncation.
        assert_eq!(
            b.open_multicast(T, &rec[..rec.len() - 3]),
            Err(DropReason::Truncated)
        );
        // Wrong key: another domain's id is unknown here.
        let c = sealer(other_key());
        assert_eq!(c.open_multicast(T, &rec), Err(DropReason::UnknownKey));
        // Unknown version.
        let mut v = rec.clone();
        v[1] = 0x02;
        assert_eq!(b.open_multicast(T, &v), Err(DropReason::UnknownVersion));
        // Stale, both directions.
        assert_eq!(b.open_multicast(T + 31_000, &rec), Err(DropReason::Stale));
        assert_eq!(b.open_multicast(T - 31_000, &rec), Err(DropReason::Stale));
        // Genuine, then replayed.
        assert_eq!(b.open_multicast(T + 29_000, &rec).unwrap(), b"hello");
        assert_eq!(b.open_multicast(T, &rec), Err(DropReason::Replay));
        // Reordering within the window is fine; far behind is not.
        let recs: Vec<_> = (0..70).map(|_| a.seal_multicast(T, b"x")).collect();
        assert!(b.open_multicast(T, &recs[69]).is_ok());
        assert!(b.open_multicast(T, &recs[10]).is_ok());
        assert_eq!(b.open_multicast(T, &recs[3]), Err(DropReason::Replay));
        // Plain GRASP (RFC 8990 Appendix A's M_DISCOVERY and M_FLOOD) is
        // counted as plaintext, not as a bad record.
        for plain in [
            "84011a00d4d7485020010db8f000baaa28ccdc4c970367818463455831050200",
            "85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710828463455831050282704578616d706c6520312076616c75653d186480",
        ] {
            let plain = hex::decode(plain).unwrap();
            assert_eq!(b.open_multicast(T, &plain), Err(DropReason::Plaintext));
        }
        let st = b.stats();
        assert_eq!(st.dropped(DropReason::Plaintext), 2);
        assert_eq!(st.dropped(DropReason::Replay), 2);
        assert_eq!(st.dropped(DropReason::Stale), 2);
        assert_eq!(st.dropped(DropReason::UnknownVersion), 1);
        assert!(st.dropped(DropReason::Truncated) >= 1);
        assert_eq!(st.opened, 3);
    }

    #[test]
    fn unicast_round_trips_and_failures() {
        let a = sealer(kat_key());
        let b = sealer(kat_key());
        let mut ini = a.initiator();
        let mut res = b.responder();
        assert!(
            res.seal(T, b"too early").is_err(),
            "a responder never speaks first"
        );
        let open = ini.seal(T, b"req").unwrap();
        let early = ini.seal(T, b"more").unwrap();
        assert_eq!(res.open(T, &open).unwrap(), b"req");
        assert_eq!(res.open(T, &early).unwrap(), b"more");
        for i in 0..3 {
            let m = format!("answer {i}");
            assert_eq!(
                ini.open(T, &res.seal(T, m.as_bytes()).unwrap()).unwrap(),
                m.as_bytes()
            );
            let m = format!("step {i}");
            assert_eq!(
                res.open(T, &ini.seal(T, m.as_bytes()).unwrap()).unwrap(),
                m.as_bytes()
            );
        }
        // A record replayed inside the channel fails (counter moved on).
        let d = ini.seal(T, b"once").unwrap();
        assert_eq!(res.open(T, &d).unwrap(), b"once");
        assert_eq!(res.open(T, &d), Err(DropReason::AuthFailed));

        // The whole recorded channel replayed to the same node: its first
        // record is refused (seen), and later (stale).
        let mut res2 = b.responder();
        assert_eq!(res2.open(T, &open), Err(DropReason::Replay));
        let mut res3 = b.responder();
        assert_eq!(res3.open(T + 60_000, &open), Err(DropReason::Stale));
        // A node that restarted (empty replay cache) refuses openings made
        // before it started.
        let restarted = Sealer::new_at(KeyRing::new(kat_key()), Config::default(), T + 1);
        assert_eq!(
            restarted.responder().open(T + 2, &open),
            Err(DropReason::Stale)
        );
        // A node of another domain cannot open it; tampering is caught.
        let mut other = sealer(other_key()).responder();
        assert_eq!(other.open(T, &open), Err(DropReason::UnknownKey));
        let mut ini2 = a.initiator();
        let mut open2 = ini2.seal(T, b"req").unwrap();
        let n = open2.len();
        open2[n - 5] ^= 1;
        assert_eq!(b.responder().open(T, &open2), Err(DropReason::AuthFailed));
        assert_eq!(
            b.responder().open(T, &open2[..n - 1]),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn replay_cache_full_refuses_instead_of_forgetting() {
        let a = sealer(kat_key());
        let b = Sealer::new_at(
            KeyRing::new(kat_key()),
            Config::default().replay_cache(2),
            0,
        );
        let opens: Vec<_> = (0..3)
            .map(|_| a.initiator().seal(T, b"r").unwrap())
            .collect();
        assert!(b.responder().open(T, &opens[0]).is_ok());
        assert!(b.responder().open(T, &opens[1]).is_ok());
        assert_eq!(
            b.responder().open(T, &opens[2]),
            Err(DropReason::ReplayCacheFull)
        );
        // Once two generations (2 × 2 × window) have passed, room again.
        let later = a.initiator().seal(T + 130_000, b"r").unwrap();
        assert!(b.responder().open(T + 130_000, &later).is_ok());
    }

    #[test]
    fn rotation_accepts_next_key_and_answers_under_the_callers_key() {
        let k_old = || kat_key();
        let k_new = || other_key();
        // Phase 1: everyone accepts the new key; A already sends under it.
        let a = Sealer::new_at(
            KeyRing::new(k_new()).accept(k_old()).unwrap(),
            Config::default(),
            0,
        );
        let b = Sealer::new_at(
            KeyRing::new(k_old()).accept(k_new()).unwrap(),
            Config::default(),
            0,
        );
        let mc = a.seal_multicast(T, b"m");
        assert_eq!(b.open_multicast(T, &mc).unwrap(), b"m");
        let mc = b.seal_multicast(T, b"n");
        assert_eq!(a.open_multicast(T, &mc).unwrap(), b"n");
        let mut ini = b.initiator(); // under the old key
        let mut res = a.responder();
        assert_eq!(res.open(T, &ini.seal(T, b"q").unwrap()).unwrap(), b"q");
        assert_eq!(ini.open(T, &res.seal(T, b"a").unwrap()).unwrap(), b"a");
        // A node that does not know the new key drops it, counted.
        let c = sealer(k_old());
        assert_eq!(
            c.open_multicast(T, &a.seal_multicast(T, b"m")),
            Err(DropReason::UnknownKey)
        );
    }
}
