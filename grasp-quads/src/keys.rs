//! Key derivation: password → argon2id → master secret → HKDF-SHA256 →
//! unicast key, multicast key and the public key identifier.

use std::fmt;

use aes::cipher::BlockEncrypt;
use aes_gcm::{Aes256Gcm, KeyInit};
use ring::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;

/// Label mixed into every derivation, so keys of this format can never equal
/// keys derived for anything else.
pub(crate) const LABEL: &[u8] = b"GRASP-QUADS-v1";

/// argon2id cost parameters. The defaults (64 MiB, 3 passes, 1 lane) are
/// RFC 9106's second recommended option; they are recorded in the key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Checks the parameters are usable (and not absurdly weak or large).
    pub fn validate(&self) -> Result<(), Error> {
        if self.m_kib < 8 * self.p.max(1) || self.m_kib > 4 * 1024 * 1024 {
            return Err(Error::Config(format!(
                "argon2 memory {} KiB is out of range (8×lanes KiB to 4 GiB)",
                self.m_kib
            )));
        }
        if self.t == 0 || self.t > 100 || self.p == 0 || self.p > 64 {
            return Err(Error::Config(format!(
                "argon2 passes {} / lanes {} out of range (1–100 / 1–64)",
                self.t, self.p
            )));
        }
        Ok(())
    }
}

/// The domain password. Zeroized on drop; `Debug` does not print it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Password(String);

impl Password {
    /// Wraps a password; refuses an empty one.
    pub fn new(p: impl Into<String>) -> Result<Self, Error> {
        let p = Password(p.into());
        if p.0.is_empty() {
            return Err(Error::Config("the QUADS password is empty".into()));
        }
        Ok(p)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The public identifier of a domain key: 8 bytes derived from the master
/// secret (it tells which key a message was sealed with and reveals nothing
/// of the key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let v = hex::decode(s).map_err(|_| Error::Config(format!("key id {s:?} is not hex")))?;
        let a: [u8; 8] = v
            .try_into()
            .map_err(|_| Error::Config(format!("key id {s:?} is not 8 bytes")))?;
        Ok(KeyId(a))
    }
}

/// The salt argon2id uses for `domain`: bound to the domain name, never one
/// constant for everyone. `SHA-256("GRASP-QUADS-v1 salt" || 0x00 || domain)`.
pub fn domain_salt(domain: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(LABEL);
    ctx.update(b" salt\0");
    ctx.update(domain.as_bytes());
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The master secret of a domain (32 bytes), from which every key is derived.
/// This is what a key file stores. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret(pub(crate) [u8; 32]);

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

impl MasterSecret {
    /// argon2id(password, domain salt, params). Takes as long as the
    /// parameters say (about 0.1–0.5 s with the defaults).
    pub fn derive(password: &Password, domain: &str, params: KdfParams) -> Result<Self, Error> {
        params.validate()?;
        let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|e| Error::Config(format!("argon2 parameters: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
        let mut out = [0u8; 32];
        a.hash_password_into(password.as_bytes(), &domain_salt(domain), &mut out)
            .map_err(|e| Error::Config(format!("argon2: {e}")))?;
        let m = MasterSecret(out);
        out.zeroize();
        Ok(m)
    }

    /// From stored bytes (a key file).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterSecret(b)
    }

    /// The bytes, for writing a key file.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 extract-and-expand into `out`.
pub(crate) fn hkdf_into(ikm: &[u8], salt: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    // `expand` fails only when the output is over 255 × 32 bytes; ours are
    // 8 to 32.
    if let Ok(okm) = prk.expand(info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

/// One domain key: what a node seals and opens with.
pub struct DomainKey {
    id: KeyId,
    /// K_uni as an AES-256 key schedule: the key-generating key of the
    /// per-channel keys (zeroized on drop).
    unicast: aes::Aes256,
    /// The multicast AEAD (its key schedule is zeroized on drop).
    multicast: Aes256Gcm,
}

impl fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DomainKey {
    /// Derives the unicast key, the multicast key and the key id:
    /// `HKDF-SHA256(ikm = master, salt = "GRASP-QUADS-v1", info = "unicast" |
    /// "multicast" | "key id")`.
    pub fn from_master(master: &MasterSecret) -> Self {
        let mut unicast = Zeroizing::new([0u8; 32]);
        hkdf_into(&master.0, LABEL, &[b"unicast"], &mut unicast[..]);
        let mut mk = Zeroizing::new([0u8; 32]);
        hkdf_into(&master.0, LABEL, &[b"multicast"], &mut mk[..]);
        let mut id = [0u8; 8];
        hkdf_into(&master.0, LABEL, &[b"key id"], &mut id);
        DomainKey {
            id: KeyId(id),
            unicast: aes::Aes256::new((&*unicast).into()),
            multicast: Aes256Gcm::new((&*mk).into()),
        }
    }

    /// Password → key, in one step (runs argon2id).
    pub fn from_password(
        password: &Password,
        domain: &str,
        params: KdfParams,
    ) -> Result<Self, Error> {
        Ok(Self::from_master(&MasterSecret::derive(
            password, domain, params,
        )?))
    }

    /// The public key identifier.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(crate) fn multicast(&self) -> &Aes256Gcm {
        &self.multicast
    }

    /// A 256-bit per-channel key from the key-generating key K_uni, as
    /// AES-GCM-SIV derives its per-nonce keys (RFC 8452 §4): the first 8
    /// bytes of each of `AES-256(K_uni, [label, i] ‖ input[2..16])` for
    /// i = 0..3. Four AES blocks: a fraction of a microsecond, where HKDF
    /// would cost several (it runs for every channel).
    fn derive(&self, label: u8, input: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        let mut blocks = [aes::Block::default(); 4];
        for (i, b) in blocks.iter_mut().enumerate() {
            b[0] = label;
            b[1] = i as u8;
            b[2..].copy_from_slice(&input[2..]);
        }
        self.unicast.encrypt_blocks(&mut blocks);
        for (i, b) in blocks.iter_mut().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&b[..8]);
            b.zeroize();
        }
        out
    }

    /// The channel key K_ch = `derive(1, cr)`.
    pub(crate) fn channel_key(&self, cr: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        self.derive(1, cr)
    }

    /// The initiator's key after the answer, K_c2s = `derive(2, x)` with
    /// x = cr ⊕ sr (fresh for the responder because `sr` is).
    pub(crate) fn late_key(&self, x: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        self.derive(2, x)
    }
}

/// The keys a node uses: it seals under `current` and opens under `current`
/// or any of `accepted` (key rotation without a flag day: first add the new
/// key as accepted everywhere, then make it current everywhere, then drop the
/// old one).
#[derive(Debug)]
pub struct KeyRing {
    current: DomainKey,
    accepted: Vec<DomainKey>,
}

impl KeyRing {
    /// A ring with one key.
    pub fn new(current: DomainKey) -> Self {
        KeyRing {
            current,
            accepted: Vec::new(),
        }
    }

    /// Also opens messages sealed under `key` (the next key, or the previous
    /// one during a rotation). At most 4 extra keys.
    pub fn accept(mut self, key: DomainKey) -> Result<Self, Error> {
        if self.accepted.len() >= 4 {
            return Err(Error::Config("at most 4 extra accepted keys".into()));
        }
        if key.id() != self.current.id() && !self.accepted.iter().any(|k| k.id() == key.id()) {
            self.accepted.push(key);
        }
        Ok(self)
    }

    /// The key messages are sealed under.
    pub fn current(&self) -> &DomainKey {
        &self.current
    }

    /// The key with this id, if it is one we open.
    pub fn get(&self, id: &KeyId) -> Option<&DomainKey> {
        std::iter::once(&self.current)
            .chain(self.accepted.iter())
            .find(|k| k.id() == *id)
    }

    /// Ids of every key this ring opens.
    pub fn ids(&self) -> Vec<KeyId> {
        std::iter::once(&self.current)
            .chain(self.accepted.iter())
            .map(DomainKey::id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small parameters: the derivation chain, not argon2's cost, is tested.
    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn salt_is_bound_to_the_domain() {
        assert_ne!(domain_salt("a"), domain_salt("b"));
        assert_eq!(
            hex::encode(domain_salt("example")),
            // SHA-256("GRASP-QUADS-v1 salt\0example")
            {
                let d =
                    ring::digest::digest(&ring::digest::SHA256, b"GRASP-QUADS-v1 salt\0example");
                hex::encode(d.as_ref())
            }
        );
    }

    #[test]
    fn known_answers_for_the_kdf_chain() {
        // Fixed vectors, computed independently (Python argon2-cffi and
        // cryptography's HKDF): changing any step of the chain (salt,
        // argon2id parameters, HKDF labels) changes them, and breaks interop.
        let pw = Password::new("grasp-test-password").unwrap();
        let m = MasterSecret::derive(&pw, "example", FAST).unwrap();
        let k = DomainKey::from_master(&m);
        assert_eq!(
            hex::encode(m.expose()),
            "e2e275cd52e97b3f9f6fbafe1af105239201a9619ebc385fa3975a2e599e9aa5",
            "master secret"
        );
        assert_eq!(k.id().to_string(), "3249f5db67bf18b1", "key id");
        // Independent of each other.
        let mut u = [0u8; 32];
        hkdf_into(&m.0, LABEL, &[b"unicast"], &mut u);
        let mut mc = [0u8; 32];
        hkdf_into(&m.0, LABEL, &[b"multicast"], &mut mc);
        assert_ne!(u, mc);
    }

    #[test]
    fn different_passwords_and_domains_give_different_keys() {
        let a = DomainKey::from_password(&Password::new("one").unwrap(), "d", FAST).unwrap();
        let b = DomainKey::from_password(&Password::new("two").unwrap(), "d", FAST).unwrap();
        let c = DomainKey::from_password(&Password::new("one").unwrap(), "e", FAST).unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn secrets_do_not_print() {
        let pw = Password::new("hunter2").unwrap();
        assert!(!format!("{pw:?}").contains("hunter2"));
        let m = MasterSecret::from_bytes([7; 32]);
        assert!(!format!("{m:?}").contains("07"));
        let k = DomainKey::from_master(&m);
        let s = format!("{k:?}");
        assert!(s.contains(&k.id().to_string()) && !s.contains("0707"));
        assert!(Password::new("").is_err());
    }
}
