//! # grasp-quads: QUADS for GRASP
//!
//! A GRASP security substrate for domains secured by one shared password:
//! every GRASP message, multicast and unicast, is sealed with AES-256-GCM
//! under keys derived from the password. [`Backend`] stacks on any base
//! with [`grasp_acp::secure::bind`] (the plain ACP's sockets, or the
//! in-memory fabric for tests and labs), or over any transport with
//! [`grasp_acp::secure::wrap`]; the engine sees no difference.
//!
//! graspy's own QUADS (AES-CBC with a fixed IV and no integrity) is available
//! only behind the `quads-legacy` feature, in [`legacy`], for joining an
//! existing graspy domain.
//!
//! ```
//! use grasp_acp::fabric::{Fabric, LinkConfig};
//! use grasp_acp::secure;
//! use grasp_engine::transport::{AcpTransport, Security};
//! use grasp_engine::Grasp;
//! use grasp_quads::{DomainKey, KdfParams, KeyRing, Password};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Real nodes use the defaults (64 MiB) or a key file from quadsmaker.
//! let fast = KdfParams { m_kib: 64, t: 1, p: 1 };
//! let key = DomainKey::from_password(&Password::new("correct horse")?, "lab", fast)?;
//! println!("key id {}", key.id());
//!
//! let fabric = Fabric::new(1);
//! let link = fabric.link("l", LinkConfig::default());
//! let backend = grasp_quads::Backend::new(KeyRing::new(key), grasp_quads::Config::default());
//! let (quads, inbound) = secure::bind(fabric.node("A").attach(&link), backend).await?;
//! assert_eq!(quads.security(), Security::Quads);
//! assert_eq!(quads.max_message_size(), 2048); // the overhead is the backend's business
//! let grasp = Grasp::start(quads.clone(), inbound, grasp_engine::Config::default());
//! let _asa = grasp.register_asa("example").await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Keys
//!
//! ```text
//! salt    = SHA-256("GRASP-QUADS-v1 salt" || 0x00 || domain)         (32 bytes)
//! master  = argon2id(password, salt, m = 64 MiB, t = 3, p = 1)         (32 bytes; v0x13)
//! K_uni   = HKDF-SHA256(ikm = master, salt = "GRASP-QUADS-v1", info = "unicast")    (32)
//! K_multi = HKDF-SHA256(ikm = master, salt = "GRASP-QUADS-v1", info = "multicast")  (32)
//! key id  = HKDF-SHA256(ikm = master, salt = "GRASP-QUADS-v1", info = "key id")     (8)
//! ```
//!
//! The argon2 parameters are recorded in the key file (`quadsmaker`), which
//! stores the master secret, never the password. The key id is public: it
//! names the key a record was sealed under.
//!
//! ## Records
//!
//! Every sealed message is one CBOR array (definite length; unsigned
//! integers and byte strings only), so it is self-delimiting and the TCP
//! stream framing of the plain ACP carries it unchanged. The first two items
//! are the format version (1) and the record kind. The last item is the
//! AES-256-GCM ciphertext with its 16-byte tag appended. The associated data
//! is every byte of the record before the ciphertext item (the array head,
//! version, kind and header fields exactly as sent), so none of them can be
//! changed.
//!
//! | kind | record | key | nonce (12 bytes) |
//! |---|---|---|---|
//! | 0 multicast | `[1, 0, key_id(8), sender(8), counter, time_ms, ct]` | K_multi | sender ‖ counter (u32 BE) |
//! | 1 open | `[1, 1, key_id(8), cr(16), time_ms, ct]` | K_ch | 0 ‖ 0 (u32 ‖ u64, BE) |
//! | 3 early | `[1, 3, ct]` | K_ch | 0 ‖ n, n = 1, 2, … |
//! | 2 answer | `[1, 2, sr(16), ct]` | K_ch | 1 ‖ 0 |
//! | 4 data, responder | `[1, 4, ct]` | K_ch | 1 ‖ n, counting on |
//! | 4 data, initiator | `[1, 4, ct]` | K_c2s | 0 ‖ n, n = 0, 1, … |
//!
//! ```text
//! derive(l, x) = AES-256(K_uni, [l, 0] ‖ x[2..16])[0..8] ‖ … ‖ AES-256(K_uni, [l, 3] ‖ x[2..16])[0..8]
//! K_ch  = derive(1, cr)
//! K_c2s = derive(2, cr ⊕ sr)
//! ```
//!
//! (the per-nonce key derivation of AES-GCM-SIV, RFC 8452 §4: four AES
//! blocks per channel key instead of an HKDF run, which matters at tens of
//! thousands of channels per second.)
//!
//! * **Multicast.** `sender` is 8 random bytes a node draws at start (and
//!   again after 2³² multicasts); `counter` counts from 0. A receiver keeps,
//!   per sender, the highest counter and a 64-entry window, and drops a
//!   counter it has seen or that is 64 or more behind. `time_ms` is the
//!   sender's Unix time in milliseconds; a record more than the clock window
//!   (30 s by default) away from the receiver's clock is dropped.
//!   **Clock assumption:** nodes' clocks agree within the window (NTP or
//!   better). Windows are kept for the 4096 most recently heard senders; a
//!   sender forgotten and then replayed within the clock window is accepted
//!   again (an attacker would need 4096 fresh authentic senders in 30 s).
//! * **Unicast.** The initiator of a channel draws a 16-byte `cr` and sends
//!   kind 1 first (and kind 3 if it has more to say before the answer);
//!   K_ch is fresh for it, so the answers it gets cannot be old ones. The
//!   responder checks the time, that `cr` was not seen within the window
//!   (it remembers a 64-bit fingerprint of every `cr` for two to four
//!   windows; when that cache is full — 1 048 576 entries by default, enough
//!   for about 8 700 new channels per second with the 30 s window — it
//!   refuses new channels rather than forget) and that it was not made
//!   before the responder started (a restarted node has an empty cache),
//!   draws `sr`, and answers with kind 2. What the initiator sends after
//!   the answer is under K_c2s, fresh for the responder. No extra round
//!   trip: the request travels in the first record. A recorded channel
//!   replayed later fails at its first record (stale or seen); nothing
//!   after the first record could be opened under a new `sr` anyway. The
//!   responder seals under the key the initiator named.
//! * **Key rotation.** A node seals under its current key and opens under
//!   the current key and up to four more ([`KeyRing::accept`]). Rotate by
//!   first making every node accept the new key, then switching each to
//!   send under it, then dropping the old one.
//! * **Failures.** A record that does not parse, names an unknown key id or
//!   version, fails the tag (tampered, truncated ciphertext, wrong key), is
//!   stale or replayed is dropped, counted per [`DropReason`] and logged at
//!   most once per second per reason with its source. A channel whose record
//!   fails is closed. Nothing of another domain is ever delivered.
//!
//! ## Secrets
//!
//! The password, master secret and derived keys live in zeroizing types and
//! print as their key id only; nothing here logs them.

#![warn(missing_docs)]

use std::time::Duration;

mod keyfile;
mod keys;
#[cfg(feature = "quads-legacy")]
pub mod legacy;
mod record;
mod seal;
mod transport;

pub use keyfile::{read_key_file, read_secret_file, write_key_file, write_secret_file, KeyFile};
pub use keys::{domain_salt, DomainKey, KdfParams, KeyId, KeyRing, MasterSecret, Password};
pub use seal::{ChannelObserver, Observer, Sealer, Stats, UnicastSession, OVERHEAD};
pub use transport::{Backend, Protection, Transport};

use grasp_engine::transport::AcpTransport;

/// Why a record was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a QUADS record of the expected shape.
    Malformed,
    /// Shorter than its own structure says (cut off).
    Truncated,
    /// A format version this node does not know.
    UnknownVersion,
    /// Sealed under a key id this node does not have (another domain, or a
    /// rotation it has not been told about).
    UnknownKey,
    /// The tag did not verify: tampered with, or sealed under another key.
    AuthFailed,
    /// Seen before.
    Replay,
    /// Its timestamp is outside the clock window.
    Stale,
    /// The unicast replay cache is full; the channel was refused.
    ReplayCacheFull,
    /// A plain GRASP message, not a QUADS record: a node without QUADS (or
    /// of a plain-ACP domain) on the link.
    Plaintext,
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 9;

    /// Every reason, in [`index`](Self::index) order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::UnknownVersion,
        DropReason::UnknownKey,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::Stale,
        DropReason::ReplayCacheFull,
        DropReason::Plaintext,
    ];

    /// Position in [`Stats::dropped`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::UnknownVersion => "unknown-version",
            DropReason::UnknownKey => "unknown-key",
            DropReason::AuthFailed => "auth-failed",
            DropReason::Replay => "replay",
            DropReason::Stale => "stale",
            DropReason::ReplayCacheFull => "replay-cache-full",
            DropReason::Plaintext => "plaintext",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tunables of the QUADS layer (the keys come separately, as a [`KeyRing`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How far a record's timestamp may be from our clock.
    pub clock_window: Duration,
    /// Unicast opening randoms remembered (refuse new channels beyond).
    pub replay_cache: usize,
    /// Multicast senders whose counter windows are kept.
    pub multicast_senders: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clock_window: Duration::from_secs(30),
            replay_cache: 1 << 20,
            multicast_senders: 4096,
        }
    }
}

impl Config {
    /// Sets the clock window.
    pub fn clock_window(mut self, w: Duration) -> Self {
        self.clock_window = w;
        self
    }

    /// Sets the unicast replay cache size (entries).
    pub fn replay_cache(mut self, n: usize) -> Self {
        self.replay_cache = n;
        self
    }

    /// Sets how many multicast senders' windows are kept.
    pub fn multicast_senders(mut self, n: usize) -> Self {
        self.multicast_senders = n;
        self
    }
}

/// Errors of this crate's configuration and key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad parameter or value.
    #[error("QUADS configuration: {0}")]
    Config(String),
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key file is readable by group or others.
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// A key file's content is wrong.
    #[error("key file {path}: {why}")]
    BadKeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The file exists and overwriting was not asked for.
    #[error("key file {0} exists; pass --force to overwrite it")]
    Exists(String),
}

/// Milliseconds since the Unix epoch, our clock for record timestamps.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Compile-time check that the transport is usable where the engine wants it.
#[allow(dead_code)]
fn _assert_dyn(t: std::sync::Arc<Transport>) -> std::sync::Arc<dyn AcpTransport> {
    t
}
