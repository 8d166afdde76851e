//! graspy's QUADS, bit for bit, for joining an existing graspy domain.
//!
//! **No integrity protection.** Every message is AES-256-CBC with PKCS#7
//! padding under one key and one fixed IV (derived from the key), with no
//! MAC: anyone on the link can flip bits in a message undetected, replay
//! any message, and see when two messages are equal. Use it only to talk
//! to graspy, only when configured explicitly; [`Backend`] logs a loud
//! warning at start-up.
//!
//! ```text
//! key = PBKDF2-HMAC-SHA256(password, salt = f474526a2e74accee189f1fbc1c34ceb, 100 000 iterations, 32 bytes)
//! k   = key[0] % 10
//! iv  = key[k .. k + 16]
//! wire = AES-256-CBC(key, iv, PKCS#7(cbor(message)))     (every message, unicast and multicast)
//! ```
//!
//! On TCP the ciphertexts are written back to back with no length, as graspy
//! does; its framer (`Backend::upgrade`) finds where each ends (CBC restarts from the fixed
//! IV at every message, so the first message's plaintext is decrypted block
//! by block until it is exactly one CBOR item followed by valid padding).

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use grasp_acp::secure;
use grasp_acp::stream::Upgrade;
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, InboundStream, MessageIo, Security,
};
use grasp_engine::wire::{DecodeError, Limits, StreamDecoder};
use tracing::warn;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::transport::{RecordCodec, SealedChannel};
use crate::{DropReason, Error, Password};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// graspy's fixed PBKDF2 salt (`b'\xf4tRj.t\xac\xce\xe1\x89\xf1\xfb\xc1\xc3L\xeb'`).
pub const GRASPY_SALT: [u8; 16] = [
    0xf4, 0x74, 0x52, 0x6a, 0x2e, 0x74, 0xac, 0xce, 0xe1, 0x89, 0xf1, 0xfb, 0xc1, 0xc3, 0x4c, 0xeb,
];
/// graspy's PBKDF2 iteration count.
pub const GRASPY_ITERATIONS: u32 = 100_000;

/// A graspy QUADS key and its IV. Zeroized on drop; `Debug` prints nothing
/// secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct LegacyKey {
    key: [u8; 32],
    iv: [u8; 16],
}

impl fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyKey(..)")
    }
}

impl LegacyKey {
    /// graspy's derivation from the domain password.
    pub fn from_password(password: &Password) -> Self {
        let mut key = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(GRASPY_ITERATIONS).unwrap_or(NonZeroU32::MIN),
            &GRASPY_SALT,
            password.as_bytes(),
            &mut key,
        );
        let k = usize::from(key[0] % 10);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&key[k..k + 16]);
        LegacyKey { key, iv }
    }

    /// From a key and IV (graspy's `quadsk.py`).
    pub fn from_parts(key: [u8; 32], iv: [u8; 16]) -> Self {
        LegacyKey { key, iv }
    }

    /// The key and IV, for writing a `quadsk.py`.
    pub fn expose(&self) -> (&[u8; 32], &[u8; 16]) {
        (&self.key, &self.iv)
    }

    /// Encrypts one message as graspy does.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        Enc::new((&self.key).into(), (&self.iv).into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(plaintext)
    }

    /// Decrypts one whole message.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, DropReason> {
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
            return Err(DropReason::Truncated);
        }
        Dec::new((&self.key).into(), (&self.iv).into())
            .decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(ciphertext)
            .map_err(|_| DropReason::AuthFailed)
    }

    /// The length of the first message in a stream of back-to-back
    /// ciphertexts, `None` if it is not complete yet.
    pub fn split(&self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
        let mut dec = Dec::new((&self.key).into(), (&self.iv).into());
        let mut plain = Zeroizing::new(Vec::with_capacity(
            buf.len().min(limits.max_message_size + 16),
        ));
        for (i, block) in buf.chunks_exact(16).enumerate() {
            let mut b = aes::Block::clone_from_slice(block);
            dec.decrypt_block_mut(&mut b);
            plain.extend_from_slice(&b);
            let end = (i + 1) * 16;
            let pad = usize::from(*plain.last().unwrap_or(&0));
            if (1..=16).contains(&pad) && plain[end - pad..].iter().all(|&x| usize::from(x) == pad)
            {
                let body = &plain[..end - pad];
                let mut bm = BytesMut::from(body);
                if let Ok(Some(item)) = StreamDecoder::new(*limits).decode(&mut bm) {
                    if item.len() == body.len() {
                        return Ok(Some(end));
                    }
                }
            }
            if end > limits.max_message_size + 16 {
                return Err(DecodeError::TooLarge {
                    len: end,
                    max: limits.max_message_size,
                });
            }
        }
        Ok(None)
    }
}

/// Reads graspy's `quadsk.py` (`key=b'…'` and `iv=b'…'`, Python bytes
/// literals).
pub fn parse_quadsk(text: &str) -> Result<LegacyKey, Error> {
    let mut key = None;
    let mut iv = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let bytes = py_bytes(value.trim())?;
        match name.trim() {
            "key" => key = Some(bytes),
            "iv" => iv = Some(bytes),
            _ => {}
        }
    }
    let key = key.ok_or_else(|| Error::Config("quadsk.py has no key= line".into()))?;
    let iv = iv.ok_or_else(|| Error::Config("quadsk.py has no iv= line".into()))?;
    let k: [u8; 32] = key[..]
        .try_into()
        .map_err(|_| Error::Config(format!("quadsk.py key is {} bytes, not 32", key.len())))?;
    let i: [u8; 16] = iv[..]
        .try_into()
        .map_err(|_| Error::Config(format!("quadsk.py iv is {} bytes, not 16", iv.len())))?;
    Ok(LegacyKey::from_parts(k, i))
}

/// Reads a graspy `quadsk.py` file (refused when others can read it).
pub fn read_quadsk(path: &std::path::Path) -> Result<LegacyKey, Error> {
    parse_quadsk(&crate::read_secret_file(path)?)
}

/// Writes a graspy `quadsk.py` file atomically with mode 0600.
pub fn write_quadsk(path: &std::path::Path, key: &LegacyKey, force: bool) -> Result<(), Error> {
    crate::write_secret_file(path, format_quadsk(key).as_bytes(), force)
}

impl LegacyKey {
    /// A public fingerprint of the key (graspy has no key id): the first 8
    /// bytes of SHA-256("GRASP-QUADS-legacy fingerprint" || key), in hex.
    pub fn fingerprint(&self) -> String {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        c.update(b"GRASP-QUADS-legacy fingerprint");
        c.update(&self.key);
        hex::encode(&c.finish().as_ref()[..8])
    }
}

/// Writes `key` in graspy's `quadsk.py` format (what `str(bytes)` prints).
pub fn format_quadsk(key: &LegacyKey) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "key={}\niv={}\n",
        py_repr(&key.key),
        py_repr(&key.iv)
    ))
}

fn py_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut s = String::from("b");
    s.push(quote);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c == quote as u8 => {
                s.push('\\');
                s.push(quote);
            }
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote);
    s
}

fn py_bytes(lit: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bad = |why: &str| Error::Config(format!("quadsk.py: {why} in a bytes literal"));
    let rest = lit.strip_prefix('b').ok_or_else(|| {
        if lit.contains("No key") {
            Error::Config("quadsk.py says 'No key': that is graspy's insecure mode".into())
        } else {
            bad("missing b prefix")
        }
    })?;
    let quote = rest.chars().next().ok_or_else(|| bad("nothing"))?;
    if quote != '\'' && quote != '"' {
        return Err(bad("no quote"));
    }
    let body = rest[1..]
        .strip_suffix(quote)
        .ok_or_else(|| bad("no closing quote"))?;
    let mut out = Zeroizing::new(Vec::new());
    let mut it = body.bytes();
    while let Some(c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'\'') => out.push(b'\''),
            Some(b'"') => out.push(b'"'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let h: Vec<u8> = it.by_ref().take(2).collect();
                let s = std::str::from_utf8(&h).map_err(|_| bad("bad \\x escape"))?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| bad("bad \\x escape"))?);
            }
            _ => return Err(bad("unsupported escape")),
        }
    }
    Ok(out)
}

/// The [`Framer`](grasp_acp::stream::Framer) for graspy's back-to-back TCP
/// ciphertexts.
#[derive(Debug)]
struct LegacyFramer {
    key: Arc<LegacyKey>,
    limits: Limits,
}

impl grasp_acp::stream::Framer for LegacyFramer {
    fn split(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        self.key.split(buf, &self.limits)
    }
}

fn warn_loudly() {
    warn!("QUADS LEGACY MODE (graspy-compatible): AES-CBC with a fixed IV and NO INTEGRITY PROTECTION. Anyone on the link can alter or replay messages undetected. Use only to interoperate with graspy.");
}

/// graspy's QUADS as a backend: stack it on a base with
/// [`grasp_acp::secure::bind`]. On TCP it asks the base for its framer
/// (graspy's ciphertexts are not self-delimiting); it logs a loud warning
/// when it starts.
#[derive(Debug)]
pub struct Backend {
    key: Arc<LegacyKey>,
}

impl Backend {
    /// graspy's QUADS under `key`.
    pub fn new(key: LegacyKey) -> Self {
        Backend { key: Arc::new(key) }
    }
}

impl secure::Backend for Backend {
    type Protection = Protection;

    fn overhead(&self) -> usize {
        // PKCS#7 pads to a whole block: 1 to 16 bytes more.
        16
    }

    fn upgrade(&self, limits: Limits) -> Upgrade {
        Upgrade {
            layer: None,
            framer: Some(Arc::new(LegacyFramer {
                key: self.key.clone(),
                limits,
            })),
        }
    }

    fn start(self, max_message_size: usize) -> (Protection, Option<InboundStream>) {
        warn_loudly();
        let p = Protection {
            key: self.key,
            max: max_message_size,
        };
        (p, None)
    }
}

/// A legacy QUADS transport: [`Protection`] over a base.
pub type Transport = secure::Transport<Protection>;

/// graspy's QUADS running.
pub struct Protection {
    key: Arc<LegacyKey>,
    max: usize,
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("legacy::Protection")
            .field("key", &self.key.fingerprint())
            .finish()
    }
}

impl secure::Protection for Protection {
    type Drop = DropReason;

    fn security(&self) -> Security {
        Security::Quads
    }

    fn seal_multicast(&self, msg: &[u8]) -> Result<Bytes, AcpError> {
        Ok(Bytes::from(self.key.encrypt(msg)))
    }

    fn open_multicast(&self, msg: &[u8]) -> Result<Bytes, DropReason> {
        self.key.decrypt(msg).map(Bytes::from)
    }

    fn connect<'a>(
        &'a self,
        base: &'a dyn AcpTransport,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Result<Channel, AcpError>> {
        async move {
            let ch = base.connect(peer).await?;
            Ok(Channel {
                io: self.channel(ch.io, peer),
                ..ch
            })
        }
        .boxed()
    }

    fn accept(&self, ch: Channel) -> Option<Channel> {
        Some(Channel {
            io: self.channel(ch.io, ch.peer),
            ..ch
        })
    }
}

/// graspy's QUADS on a unicast channel.
struct LegacyCodec {
    key: Arc<LegacyKey>,
    peer: SocketAddr,
}

impl RecordCodec for LegacyCodec {
    fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AcpError> {
        Ok(self.key.encrypt(plaintext))
    }

    fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, AcpError> {
        self.key
            .decrypt(record)
            .map_err(|r| AcpError::Auth(format!("legacy QUADS from {}: {r}", self.peer)))
    }
}

impl Protection {
    fn channel(&self, inner: Pin<Box<dyn MessageIo>>, peer: SocketAddr) -> Pin<Box<dyn MessageIo>> {
        let codec = LegacyCodec {
            key: self.key.clone(),
            peer,
        };
        Box::pin(SealedChannel::new(inner, codec, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graspy_key_derivation_and_quadsk_format() {
        let k = LegacyKey::from_password(&Password::new("grasp-test-password").unwrap());
        let (key, iv) = k.expose();
        assert_eq!(
            hex::encode(key),
            "2f2196135afeed4bda313d75393b38748d3ede7a829458ce79b7c182815c859a"
        );
        assert_eq!(hex::encode(iv), "4bda313d75393b38748d3ede7a829458");
        // M_NOOP is always the same ciphertext under one key (no IV change).
        assert_eq!(
            hex::encode(k.encrypt(&[0x81, 0x00])),
            "40fa44256da0a22b17e47dceffa12842"
        );
        let text = format_quadsk(&k);
        let back = parse_quadsk(&text).unwrap();
        assert_eq!(back.expose(), k.expose());
        // What Python's str(bytes) prints, quotes and escapes included.
        let odd =
            LegacyKey::from_parts(*b"a'b\\c\"d\te\nf\rg\x00h\xffij0123456789abcd", [b'\''; 16]);
        let t = format_quadsk(&odd);
        assert!(
            t.starts_with("key=b'a\\'b\\\\c\"d\\te\\nf\\rg\\x00h\\xffij"),
            "{}",
            *t
        );
        assert!(t.contains("iv=b\"''''"), "{}", *t);
        assert_eq!(parse_quadsk(&t).unwrap().expose(), odd.expose());
        assert!(parse_quadsk("key='No key'\niv='No key'\n").is_err());
    }

    #[test]
    fn stream_splitting_of_back_to_back_ciphertexts() {
        let k = LegacyKey::from_password(&Password::new("pw").unwrap());
        let limits = Limits::default();
        let m1 = k.encrypt(&[0x82, 0x07, 0x19, 0x07, 0xd0]); // [7, 2000] M_WAIT-like
        let m2 = k.encrypt(&[0x81, 0x00]);
        let big = {
            let mut v = vec![0x82, 0x05, 0x59, 0x01, 0x00];
            v.extend_from_slice(&[0x10; 256]);
            k.encrypt(&v)
        };
        let mut stream = m1.clone();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&m2);
        assert_eq!(k.split(&stream, &limits).unwrap(), Some(m1.len()));
        let rest = &stream[m1.len()..];
        assert_eq!(k.split(rest, &limits).unwrap(), Some(big.len()));
        assert_eq!(
            k.split(&rest[big.len()..], &limits).unwrap(),
            Some(m2.len())
        );
        // Incomplete: needs more.
        assert_eq!(k.split(&big[..big.len() - 16], &limits).unwrap(), None);
        assert_eq!(k.split(&big[..7], &limits).unwrap(), None);
        // Garbage that never forms a message: an error once past the limit.
        let junk = vec![0x55; 3000];
        assert!(k.split(&junk, &limits).is_err());
    }
}
