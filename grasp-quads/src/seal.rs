//! Sealing and opening records: multicast with a per-sender counter window
//! and a timestamp window, unicast with fresh per-connection keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::{DomainKey, KeyId, KeyRing};
use crate::record::{self, kind, Item};
use crate::{DropReason, QuadsConfig};

/// AES-GCM tag length.
pub(crate) const TAG: usize = 16;

/// Largest record overhead over the plaintext (the multicast layout with
/// 9-byte integers, a 3-byte ciphertext head and the tag).
pub const OVERHEAD: usize = 1 + 1 + 1 + 9 + 9 + 9 + 9 + 3 + TAG;

fn random<const N: usize>(rng: &SystemRandom) -> [u8; N] {
    let mut b = [0u8; N];
    // SystemRandom fails only if the OS has no entropy source at all.
    if rng.fill(&mut b).is_err() {
        panic!("the operating system's random number generator failed");
    }
    b
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

fn counter_nonce(c: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&c.to_be_bytes());
    n
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
pub struct QuadsStats {
    /// Records sealed.
    pub sealed: u64,
    /// Records opened.
    pub opened: u64,
    /// Records dropped, by reason (index with [`DropReason::index`]).
    pub dropped: [u64; DropReason::COUNT],
}

impl QuadsStats {
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
    pub(crate) fn snapshot(&self) -> QuadsStats {
        let mut dropped = [0; DropReason::COUNT];
        for (d, c) in dropped.iter_mut().zip(&self.dropped) {
            *d = c.load(Ordering::Relaxed);
        }
        QuadsStats {
            sealed: self.sealed.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            dropped,
        }
    }

    pub(crate) fn note_drop(&self, r: DropReason) {
        self.dropped[r.index()].fetch_add(1, Ordering::Relaxed);
    }
}

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

/// Per-sender counter windows for multicast, bounded (least recently used
/// sender forgotten first).
#[derive(Debug)]
pub(crate) struct ReplayWindows {
    map: HashMap<[u8; 8], Window>,
    cap: usize,
    tick: u64,
}

impl ReplayWindows {
    pub(crate) fn new(cap: usize) -> Self {
        ReplayWindows {
            map: HashMap::new(),
            cap: cap.max(1),
            tick: 0,
        }
    }

    /// Records `counter` from `sender`; false if it was seen (or is older
    /// than the window).
    pub(crate) fn accept(&mut self, sender: [u8; 8], counter: u64) -> bool {
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

/// Opening randoms of unicast channels seen within the clock window. Full
/// means refuse, never forget early: forgetting would open a replay hole.
#[derive(Debug)]
pub(crate) struct OpenCache {
    set: HashSet<[u8; 16]>,
    order: VecDeque<([u8; 16], u64)>,
    cap: usize,
}

impl OpenCache {
    pub(crate) fn new(cap: usize) -> Self {
        OpenCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn check(&mut self, r: [u8; 16], expires_ms: u64, now_ms: u64) -> Result<(), DropReason> {
        while let Some(&(k, exp)) = self.order.front() {
            if exp < now_ms {
                self.order.pop_front();
                self.set.remove(&k);
            } else {
                break;
            }
        }
        if self.set.contains(&r) {
            return Err(DropReason::Replay);
        }
        if self.set.len() >= self.cap {
            return Err(DropReason::ReplayCacheFull);
        }
        self.set.insert(r);
        self.order.push_back((r, expires_ms));
        Ok(())
    }
}

/// State shared by a node's sealing and opening.
#[derive(Debug)]
pub struct Sealer {
    ring: std::sync::RwLock<Arc<KeyRing>>,
    pub(crate) config: QuadsConfig,
    rng: SystemRandom,
    /// Our multicast sender id and next counter.
    mc: Mutex<([u8; 8], u64)>,
    windows: Mutex<ReplayWindows>,
    opens: Mutex<OpenCache>,
    pub(crate) counters: Counters,
}

impl Sealer {
    /// A sealer for `ring`.
    pub fn new(ring: KeyRing, config: QuadsConfig) -> Arc<Self> {
        let rng = SystemRandom::new();
        let sender = random(&rng);
        Arc::new(Sealer {
            windows: Mutex::new(ReplayWindows::new(config.multicast_senders)),
            opens: Mutex::new(OpenCache::new(config.replay_cache)),
            ring: std::sync::RwLock::new(Arc::new(ring)),
            config,
            rng,
            mc: Mutex::new((sender, 0)),
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
    pub fn stats(&self) -> QuadsStats {
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
                *g = (random(&self.rng), 0);
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
        let r = self.open_multicast_inner(now_ms, rec);
        match &r {
            Ok(_) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.note_drop(*e);
                self.counters
                    .multicast_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Multicast records dropped (all reasons).
    pub(crate) fn multicast_dropped(&self) -> u64 {
        self.counters.multicast_dropped.load(Ordering::Relaxed)
    }

    fn open_multicast_inner(&self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        if p.kind != kind::MULTICAST || p.fields.len() != 4 {
            return Err(DropReason::Malformed);
        }
        let id = key_id(p.fields.first())?;
        let sender: [u8; 8] = match p.fields.get(1) {
            Some(Item::Bytes(b)) => (*b).try_into().map_err(|_| DropReason::Malformed)?,
            _ => return Err(DropReason::Malformed),
        };
        let counter = uint(p.fields.get(2))?;
        let t = uint(p.fields.get(3))?;
        if counter > u64::from(u32::MAX) {
            return Err(DropReason::Malformed);
        }
        let ring = self.ring();
        let key = ring.get(&id).ok_or(DropReason::UnknownKey)?;
        if !self.fresh(t, now_ms) {
            return Err(DropReason::Stale);
        }
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&sender);
        nonce[8..].copy_from_slice(&(counter as u32).to_be_bytes());
        let pt = open_ct(key.multicast(), &nonce, p.header, p.ciphertext)?;
        // Only authenticated records move the window.
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !w.accept(sender, counter) {
            return Err(DropReason::Replay);
        }
        Ok(pt)
    }

    /// The initiator's side of a new unicast channel.
    pub fn initiator(self: &Arc<Self>) -> UnicastSession {
        self.initiator_with(random(&self.rng))
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
                early: (key.unicast_aead(&cr, b"c2s-0"), 0),
                session: None,
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

/// Keys and counters of an established direction pair.
struct Keys {
    send: (Aes256Gcm, u64),
    recv: (Aes256Gcm, u64),
}

enum State {
    Initiator {
        key_id: KeyId,
        cr: [u8; 16],
        /// The opening key (`c2s-0`) and its next counter.
        early: (Aes256Gcm, u64),
        /// Set by the responder's first record.
        session: Option<Keys>,
    },
    /// `sr` is drawn when the first record arrives (fixed only in tests).
    ResponderNew { sr: Option<[u8; 16]> },
    Responder {
        /// The initiator's opening key, for its early records.
        early: (Aes256Gcm, u64),
        keys: Keys,
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
            State::Initiator { session: None, .. } => "initiator, opening",
            State::Initiator { .. } => "initiator",
            State::ResponderNew { .. } => "responder, waiting",
            State::Responder { .. } => "responder",
        };
        f.debug_struct("UnicastSession").field("state", &s).finish()
    }
}

impl UnicastSession {
    /// Seals one message for the peer.
    pub fn seal(&mut self, now_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, &'static str> {
        let cap = plaintext.len() + OVERHEAD;
        let out = match &mut self.state {
            State::Initiator {
                key_id,
                cr,
                early,
                session,
            } => match session {
                Some(keys) => {
                    let mut out = record::start(3, kind::DATA, cap);
                    let n = counter_nonce(keys.send.1);
                    keys.send.1 += 1;
                    seal_into(&mut out, &keys.send.0, &n, plaintext);
                    out
                }
                None if early.1 == 0 => {
                    let mut out = record::start(6, kind::OPEN, cap + 24);
                    record::push_bytes(&mut out, &key_id.0);
                    record::push_bytes(&mut out, cr);
                    record::push_uint(&mut out, now_ms);
                    early.1 = 1;
                    seal_into(&mut out, &early.0, &counter_nonce(0), plaintext);
                    out
                }
                None => {
                    let mut out = record::start(3, kind::EARLY, cap);
                    let n = counter_nonce(early.1);
                    early.1 += 1;
                    seal_into(&mut out, &early.0, &n, plaintext);
                    out
                }
            },
            State::ResponderNew { .. } => {
                return Err("a responder cannot send before the peer's first message")
            }
            State::Responder { keys, answer, .. } => {
                let n = counter_nonce(keys.send.1);
                keys.send.1 += 1;
                match answer.take() {
                    Some(sr) => {
                        let mut out = record::start(4, kind::ANSWER, cap + 17);
                        record::push_bytes(&mut out, &sr);
                        seal_into(&mut out, &keys.send.0, &n, plaintext);
                        out
                    }
                    None => {
                        let mut out = record::start(3, kind::DATA, cap);
                        seal_into(&mut out, &keys.send.0, &n, plaintext);
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
        let r = self.open_inner(now_ms, rec);
        match &r {
            Ok(_) => {
                self.sealer.counters.opened.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.sealer.counters.note_drop(*e),
        }
        r
    }

    fn open_inner(&mut self, now_ms: u64, rec: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = record::parse(rec)?;
        let sealer = self.sealer.clone();
        match &mut self.state {
            State::Initiator {
                key_id,
                cr,
                session,
                ..
            } => match session {
                None => {
                    if p.kind != kind::ANSWER || p.fields.len() != 1 {
                        return Err(DropReason::Malformed);
                    }
                    let sr = bytes16(p.fields.first())?;
                    let key = self.ring.get(key_id).ok_or(DropReason::UnknownKey)?;
                    let randoms = [&cr[..], &sr[..]].concat();
                    let s2c = key.unicast_aead(&randoms, b"s2c");
                    let pt = open_ct(&s2c, &counter_nonce(0), p.header, p.ciphertext)?;
                    *session = Some(Keys {
                        send: (key.unicast_aead(&randoms, b"c2s"), 0),
                        recv: (s2c, 1),
                    });
                    Ok(pt)
                }
                Some(keys) => {
                    if p.kind != kind::DATA || !p.fields.is_empty() {
                        return Err(DropReason::Malformed);
                    }
                    let pt = open_ct(
                        &keys.recv.0,
                        &counter_nonce(keys.recv.1),
                        p.header,
                        p.ciphertext,
                    )?;
                    keys.recv.1 += 1;
                    Ok(pt)
                }
            },
            State::ResponderNew { sr: fixed_sr } => {
                if p.kind != kind::OPEN || p.fields.len() != 3 {
                    return Err(DropReason::Malformed);
                }
                let id = key_id(p.fields.first())?;
                let cr = bytes16(p.fields.get(1))?;
                let t = uint(p.fields.get(2))?;
                let key: &DomainKey = self.ring.get(&id).ok_or(DropReason::UnknownKey)?;
                if !sealer.fresh(t, now_ms) {
                    return Err(DropReason::Stale);
                }
                let early = key.unicast_aead(&cr, b"c2s-0");
                let pt = open_ct(&early, &counter_nonce(0), p.header, p.ciphertext)?;
                // Authenticated: now it may enter the replay cache.
                let expires = t.max(now_ms) + sealer.window_ms();
                sealer
                    .opens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(cr, expires, now_ms)?;
                let sr: [u8; 16] = fixed_sr.unwrap_or_else(|| random(&sealer.rng));
                let randoms = [&cr[..], &sr[..]].concat();
                self.state = State::Responder {
                    early: (early, 1),
                    keys: Keys {
                        send: (key.unicast_aead(&randoms, b"s2c"), 0),
                        recv: (key.unicast_aead(&randoms, b"c2s"), 0),
                    },
                    answer: Some(sr),
                };
                Ok(pt)
            }
            State::Responder { early, keys, .. } => {
                if !p.fields.is_empty() {
                    return Err(DropReason::Malformed);
                }
                let k = match p.kind {
                    kind::EARLY => early,
                    kind::DATA => &mut keys.recv,
                    _ => return Err(DropReason::Malformed),
                };
                let pt = open_ct(&k.0, &counter_nonce(k.1), p.header, p.ciphertext)?;
                k.1 += 1;
                Ok(pt)
            }
        }
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
        Sealer::new(KeyRing::new(key), QuadsConfig::default())
    }

    fn other_key() -> DomainKey {
        DomainKey::from_master(&MasterSecret::from_bytes([1; 32]))
    }

    // Expected bytes computed independently (Python: argon2-cffi,
    // cryptography's HKDF and AESGCM) from the format in the crate docs.
    const KAT_MULTICAST: &str = "870100483249f5db67bf18b1480102030405060708051b0000018bcfe5680052c743bf7275f48f25e04f1640a841ddf45c99";
    const KAT_OPEN: &str = "860101483249f5db67bf18b150111111111111111111111111111111111b0000018bcfe5680054095d93025f12522178f9e0386f322d891c0b4290";
    const KAT_ANSWER: &str =
        "84010250222222222222222222222222222222225456ba9773fad9f0d705bde18b924a8716731e98f3";
    const KAT_DATA: &str = "83010452ee866904d4c609514b16d16b361c661a8f50";

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
        let st = b.stats();
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
        let b = Sealer::new(
            KeyRing::new(kat_key()),
            QuadsConfig {
                replay_cache: 2,
                ..QuadsConfig::default()
            },
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
        // Once the window has passed, room again.
        let later = a.initiator().seal(T + 40_000, b"r").unwrap();
        assert!(b.responder().open(T + 40_000, &later).is_ok());
    }

    #[test]
    fn rotation_accepts_next_key_and_answers_under_the_callers_key() {
        let k_old = || kat_key();
        let k_new = || other_key();
        // Phase 1: everyone accepts the new key; A already sends under it.
        let a = Sealer::new(
            KeyRing::new(k_new()).accept(k_old()).unwrap(),
            QuadsConfig::default(),
        );
        let b = Sealer::new(
            KeyRing::new(k_old()).accept(k_new()).unwrap(),
            QuadsConfig::default(),
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
