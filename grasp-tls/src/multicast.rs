//! Multicast: every M_DISCOVERY, M_FLOOD and M_NOOP is signed with the
//! sender's certificate key. **Authenticated, not encrypted**: anyone on
//! the link can read multicast content; only domain members can produce
//! messages receivers accept.
//!
//! ```text
//! [1, 0, scheme, counter, time_ms, cert, payload, signature]
//! ```
//!
//! A [`grasp_engine::wire::envelope`] (version 1, kind 0): `scheme` is the TLS
//! SignatureScheme code of the signature; `counter` starts at the sender's
//! clock in microseconds when it starts and counts up (so a restarted
//! sender continues above its old counters); `time_ms` is the sender's Unix
//! time in ms; `cert` is the sender's leaf certificate (DER), issued
//! directly by a domain trust anchor — or, when the envelope would
//! otherwise exceed 1200 bytes, the certificate's SHA-256 fingerprint (32
//! bytes), which receivers resolve from certificates they have verified
//! before (the sender's small multicasts, M_NOOP included, carry it); `payload` is the GRASP message;
//! `signature` covers every byte before it. Receivers check the
//! certificate against the anchors (cached by SHA-256 fingerprint, 1024
//! senders), the signature, a ±30 s clock window and a 64-entry counter
//! window per sender, and drop and count what fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use grasp_acp::replay::CounterWindows;
use grasp_engine::wire::envelope::{self, EnvelopeError, Item};
use rustls::pki_types::CertificateDer;
use rustls::SignatureScheme;

use crate::certs::{verify_chain, NodeIdentity};
use crate::CertError;

const VERSION: u64 = 1;
const KIND: u64 = 0;

/// Why a multicast was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a signed envelope at all (a plaintext GRASP peer, or garbage).
    Unsigned,
    /// Cut short.
    Truncated,
    /// Another envelope version.
    UnknownVersion,
    /// The certificate does not lead to a domain trust anchor (another CA,
    /// expired, not a node certificate).
    Untrusted,
    /// A signature scheme we do not accept.
    UnsupportedScheme,
    /// The signature does not verify (tampered).
    BadSignature,
    /// Outside the clock window.
    Stale,
    /// Seen before.
    Replay,
    /// Names its sender by certificate fingerprint only, and that sender's
    /// certificate has not been seen (it comes with the sender's smaller
    /// multicasts).
    UnknownSender,
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 9;

    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Unsigned,
        DropReason::Truncated,
        DropReason::UnknownVersion,
        DropReason::Untrusted,
        DropReason::UnsupportedScheme,
        DropReason::BadSignature,
        DropReason::Stale,
        DropReason::Replay,
        DropReason::UnknownSender,
    ];

    /// Its index in [`Stats::dropped`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::Unsigned => "unsigned",
            DropReason::Truncated => "truncated",
            DropReason::UnknownVersion => "unknown-version",
            DropReason::Untrusted => "untrusted",
            DropReason::UnsupportedScheme => "unsupported-scheme",
            DropReason::BadSignature => "bad-signature",
            DropReason::Stale => "stale",
            DropReason::Replay => "replay",
            DropReason::UnknownSender => "unknown-sender",
        })
    }
}

/// Counters of signed multicasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Signed and sent.
    pub signed: u64,
    /// Verified and delivered.
    pub verified: u64,
    /// Dropped, by [`DropReason::index`].
    pub dropped: [u64; DropReason::COUNT],
}

impl Stats {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }
}

fn alg_for(scheme: u16) -> Option<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    Some(match SignatureScheme::from(scheme) {
        SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
        SignatureScheme::ED25519 => webpki::ring::ED25519,
        SignatureScheme::RSA_PSS_SHA256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        SignatureScheme::RSA_PKCS1_SHA256 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        _ => return None,
    })
}

const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut f = [0u8; 32];
    f.copy_from_slice(d.as_ref());
    f
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A verified sender certificate (by fingerprint): the certificate, until
/// when it is valid and when it was last used.
#[derive(Debug)]
struct Known {
    der: CertificateDer<'static>,
    not_after: SystemTime,
    last_used: u64,
}

/// Envelopes larger than this carry the sender's certificate fingerprint
/// instead of the certificate, so they fit a 1280-byte IPv6 link MTU
/// whenever the GRASP message itself is small enough.
const CERT_BUDGET: usize = 1200;

/// What a node signs with and trusts; replaced whole on a reload.
struct Keys {
    signer: Box<dyn rustls::sign::Signer>,
    cert: CertificateDer<'static>,
    anchors: Vec<CertificateDer<'static>>,
}

impl Keys {
    fn new(identity: &NodeIdentity) -> Result<Self, CertError> {
        let key = rustls::crypto::ring::sign::any_supported_type(&identity.key)
            .map_err(|e| CertError::BadKey(e.to_string()))?;
        let signer = key
            .choose_scheme(SCHEMES)
            .ok_or_else(|| CertError::BadKey("no signature scheme for multicast".into()))?;
        Ok(Keys {
            signer,
            cert: identity
                .chain
                .first()
                .cloned()
                .ok_or_else(|| CertError::BadKey("no certificate to sign with".into()))?,
            anchors: identity.anchors.clone(),
        })
    }
}

/// Signs our multicasts and verifies others'.
pub struct Multicast {
    keys: std::sync::RwLock<std::sync::Arc<Keys>>,
    counter: AtomicU64,
    window: Duration,
    known: Mutex<(std::collections::HashMap<[u8; 32], Known>, u64)>,
    windows: Mutex<CounterWindows<[u8; 32]>>,
    /// When this node started (Unix ms): multicasts signed before are
    /// refused, because the counter windows that would recognise a copy
    /// start empty. A sender whose clock is behind ours by `d` (at most
    /// the clock window) is refused for the first `d` after a restart.
    started_ms: u64,
    signed: AtomicU64,
    verified: AtomicU64,
    dropped: [AtomicU64; DropReason::COUNT],
}

impl std::fmt::Debug for Multicast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multicast").finish_non_exhaustive()
    }
}

/// Senders whose certificates are kept verified.
const KNOWN_SENDERS: usize = 1024;

/// The GRASP message inside a signed multicast, its signature **not**
/// checked (the envelope is authenticated, not encrypted: anyone on the
/// link can read it). For tools that show traffic, such as `grasp decode`;
/// a node uses [`Multicast::verify`].
pub fn payload_unverified(msg: &[u8]) -> Option<&[u8]> {
    let p = envelope::parse(msg, VERSION).ok()?;
    match (p.kind, p.fields.len(), p.fields.get(4)) {
        (KIND, 5, Some(Item::Bytes(m))) => Some(m),
        _ => None,
    }
}

impl Multicast {
    /// For `identity` (its leaf certificate and key), trusting its anchors.
    pub fn new(identity: &NodeIdentity) -> Result<Self, CertError> {
        Self::new_at(identity, SystemTime::now())
    }

    fn new_at(identity: &NodeIdentity, started: SystemTime) -> Result<Self, CertError> {
        let keys = Keys::new(identity)?;
        let start_us = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Ok(Multicast {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            counter: AtomicU64::new(start_us),
            window: Duration::from_secs(30),
            known: Mutex::new((std::collections::HashMap::new(), 0)),
            windows: Mutex::new(CounterWindows::new(KNOWN_SENDERS)),
            started_ms: unix_ms(started),
            signed: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            dropped: Default::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let mut dropped = [0; DropReason::COUNT];
        for (d, c) in dropped.iter_mut().zip(&self.dropped) {
            *d = c.load(Ordering::Relaxed);
        }
        Stats {
            signed: self.signed.load(Ordering::Relaxed),
            verified: self.verified.load(Ordering::Relaxed),
            dropped,
        }
    }

    /// Wraps and signs one GRASP message.
    pub fn sign(&self, now: SystemTime, payload: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let keys = self.keys();
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = envelope::start(8, VERSION, KIND, payload.len() + keys.cert.len() + 128);
        envelope::push_uint(&mut out, u64::from(u16::from(keys.signer.scheme())));
        envelope::push_uint(&mut out, counter);
        envelope::push_uint(&mut out, unix_ms(now));
        if payload.len() + keys.cert.len() + 160 <= CERT_BUDGET {
            envelope::push_bytes(&mut out, &keys.cert);
        } else {
            envelope::push_bytes(&mut out, &fingerprint(&keys.cert));
        }
        envelope::push_bytes(&mut out, payload);
        let sig = keys.signer.sign(&out)?;
        envelope::push_bytes(&mut out, &sig);
        self.signed.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Checks one received multicast and returns its GRASP message.
    pub fn verify(&self, now: SystemTime, msg: &[u8]) -> Result<Vec<u8>, DropReason> {
        let r = self.verify_inner(now, msg).map_err(|e| match e {
            // A plain GRASP multicast (from a node outside TLS): graspy's
            // M_FLOOD `[9, ...]` would read as envelope version 9.
            DropReason::UnknownVersion | DropReason::Truncated
                if grasp_engine::wire::Message::decode_slice(msg).is_ok() =>
            {
                DropReason::Unsigned
            }
            e => e,
        });
        match &r {
            Ok(_) => {
                self.verified.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.dropped[e.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn verify_inner(&self, now: SystemTime, msg: &[u8]) -> Result<Vec<u8>, DropReason> {
        let p = envelope::parse(msg, VERSION).map_err(|e| match e {
            EnvelopeError::Truncated => DropReason::Truncated,
            EnvelopeError::UnknownVersion => DropReason::UnknownVersion,
            _ => DropReason::Unsigned,
        })?;
        if p.kind != KIND || p.fields.len() != 5 {
            return Err(DropReason::Unsigned);
        }
        let uint = |i| match p.fields.get(i) {
            Some(Item::Uint(v)) => Ok(*v),
            _ => Err(DropReason::Unsigned),
        };
        let bytes = |i| match p.fields.get(i) {
            Some(Item::Bytes(b)) => Ok(*b),
            _ => Err(DropReason::Unsigned),
        };
        let scheme = u16::try_from(uint(0)?).map_err(|_| DropReason::UnsupportedScheme)?;
        let counter = uint(1)?;
        let t = uint(2)?;
        let cert = bytes(3)?;
        let payload = bytes(4)?;
        let alg = alg_for(scheme).ok_or(DropReason::UnsupportedScheme)?;
        if t.abs_diff(unix_ms(now)) > self.window.as_millis() as u64 || t < self.started_ms {
            return Err(DropReason::Stale);
        }
        let (fp, der) = self.trust(cert, now)?;
        let ee = webpki::EndEntityCert::try_from(&der).map_err(|_| DropReason::Untrusted)?;
        ee.verify_signature(alg, p.header, p.last)
            .map_err(|_| DropReason::BadSignature)?;
        // Authenticated: now it may move the sender's window.
        if !self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accept(fp, counter)
        {
            return Err(DropReason::Replay);
        }
        Ok(payload.to_vec())
    }

    /// The sender's fingerprint and certificate: `cert` is the certificate
    /// (checked against the anchors unless already known) or its 32-byte
    /// fingerprint (then it must be known).
    fn trust(
        &self,
        cert: &[u8],
        now: SystemTime,
    ) -> Result<([u8; 32], CertificateDer<'static>), DropReason> {
        let by_ref = cert.len() == 32;
        let fp: [u8; 32] = if by_ref {
            cert.try_into().map_err(|_| DropReason::Unsigned)?
        } else {
            fingerprint(cert)
        };
        let mut g = self.known.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let tick = g.1;
        if let Some(k) = g.0.get_mut(&fp) {
            if now <= k.not_after {
                k.last_used = tick;
                return Ok((fp, k.der.clone()));
            }
            g.0.remove(&fp);
        }
        drop(g);
        if by_ref {
            return Err(DropReason::UnknownSender);
        }
        let der = CertificateDer::from(cert.to_vec());
        verify_chain(std::slice::from_ref(&der), &self.keys().anchors, now)
            .map_err(|_| DropReason::Untrusted)?;
        use x509_parser::prelude::FromDer;
        let not_after = x509_parser::prelude::X509Certificate::from_der(cert)
            .map(|(_, c)| {
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(c.validity().not_after.timestamp().max(0) as u64)
            })
            .map_err(|_| DropReason::Untrusted)?;
        let mut g = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() >= KNOWN_SENDERS {
            if let Some(old) = g.0.iter().min_by_key(|(_, k)| k.last_used).map(|(f, _)| *f) {
                g.0.remove(&old);
            }
        }
        g.0.insert(
            fp,
            Known {
                der: der.clone(),
                not_after,
                last_used: tick,
            },
        );
        Ok((fp, der))
    }
}

impl Multicast {
    fn keys(&self) -> std::sync::Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Signs with `identity` from now on and trusts its anchors (a renewed
    /// certificate); every sender is verified again.
    pub fn reload(&self, identity: &NodeIdentity) -> Result<(), CertError> {
        let keys = Keys::new(identity)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(keys);
        self.forget_all();
        Ok(())
    }

    /// Forgets every verified sender (after the anchors change).
    pub fn forget_all(&self) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{issue_node, new_ca};

    fn identity(ca: &str, ca_key: &str, node: &str) -> NodeIdentity {
        let (cert, key) = issue_node(ca, ca_key, node, 10).unwrap();
        NodeIdentity::from_pem(&cert, &key, ca, SystemTime::now()).unwrap()
    }

    #[test]
    fn signed_multicasts_verify_and_every_fault_is_counted() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let (ca2, ca2_key) = new_ca("other", 30).unwrap();
        let a = Multicast::new(&identity(&ca, &ca_key, "a.lab")).unwrap();
        let b = Multicast::new(&identity(&ca, &ca_key, "b.lab")).unwrap();
        let x = Multicast::new(&identity(&ca2, &ca2_key, "x.other")).unwrap();
        let now = SystemTime::now();
        let m = a.sign(now, &[0x81, 0x00]).unwrap();
        assert_eq!(b.verify(now, &m).unwrap(), vec![0x81, 0x00]);
        // Replayed.
        assert_eq!(b.verify(now, &m), Err(DropReason::Replay));
        // Tampered payload (the last payload byte sits before the signature).
        let m2 = a.sign(now, &[0x81, 0x00]).unwrap();
        let sig_len = 72usize.min(m2.len());
        let mut t = m2.clone();
        let i = t.len() - sig_len - 1;
        t[i] ^= 1;
        assert!(matches!(
            b.verify(now, &t),
            Err(DropReason::BadSignature | DropReason::Unsigned | DropReason::Truncated)
        ));
        assert_eq!(
            b.verify(now, &m2).unwrap(),
            vec![0x81, 0x00],
            "a refused copy does not poison"
        );
        // Another CA's member.
        let mx = x.sign(now, &[0x81, 0x00]).unwrap();
        assert_eq!(b.verify(now, &mx), Err(DropReason::Untrusted));
        // Unsigned: plaintext GRASP messages (RFC 8990 Appendix A's
        // M_NOOP, M_DISCOVERY and M_FLOOD), whatever their first element.
        for plain in [
            "8100",
            "84011a00d4d7485020010db8f000baaa28ccdc4c970367818463455831050200",
            "85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710828463455831050282704578616d706c6520312076616c75653d186480",
        ] {
            let plain = hex::decode(plain).unwrap();
            assert_eq!(b.verify(now, &plain), Err(DropReason::Unsigned));
        }
        assert_eq!(b.stats().dropped(DropReason::UnknownVersion), 0);
        // Stale.
        let old = a
            .sign(now - Duration::from_secs(60), &[0x81, 0x00])
            .unwrap();
        assert_eq!(b.verify(now, &old), Err(DropReason::Stale));
        // Truncated.
        let m3 = a.sign(now, &[0x81, 0x00]).unwrap();
        assert_eq!(
            b.verify(now, &m3[..m3.len() - 3]),
            Err(DropReason::Truncated)
        );
        // A large message names its sender by fingerprint: unknown until a
        // smaller one from the same sender has brought the certificate.
        let c = Multicast::new(&identity(&ca, &ca_key, "c.lab")).unwrap();
        let big = vec![0x42; 900];
        let mb = c.sign(now, &big).unwrap();
        assert!(mb.len() < 1200, "{}", mb.len());
        assert_eq!(b.verify(now, &mb), Err(DropReason::UnknownSender));
        let small = c.sign(now, &[0x81, 0x00]).unwrap();
        assert!(b.verify(now, &small).is_ok());
        let mb2 = c.sign(now, &big).unwrap();
        assert_eq!(b.verify(now, &mb2).unwrap(), big);
        let s = b.stats();
        assert_eq!(s.verified, 4);
        assert_eq!(s.dropped(DropReason::UnknownSender), 1);
        assert_eq!(s.dropped(DropReason::Replay), 1);
        assert_eq!(s.dropped(DropReason::Untrusted), 1);
        assert_eq!(s.dropped(DropReason::Stale), 1);
    }

    /// A multicast signed before this node started is refused after it
    /// starts, even within the clock window (issue 11 §5).
    #[test]
    fn a_multicast_from_before_a_restart_is_refused() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let a = Multicast::new(&identity(&ca, &ca_key, "a.lab")).unwrap();
        let b_id = identity(&ca, &ca_key, "b.lab");
        let t0 = SystemTime::now();
        let m = a.sign(t0, &[0x81, 0x00]).unwrap();
        let b = Multicast::new_at(&b_id, t0 - Duration::from_secs(1)).unwrap();
        assert!(b.verify(t0, &m).is_ok());
        // b restarts 5 s later; the copy is replayed 10 s after it was made.
        let b = Multicast::new_at(&b_id, t0 + Duration::from_secs(5)).unwrap();
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.verify(later, &m), Err(DropReason::Stale));
        let fresh = a.sign(later, &[0x81, 0x00]).unwrap();
        assert!(b.verify(later, &fresh).is_ok());
    }
}
