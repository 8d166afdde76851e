//! # grasp-quads: QUADS for GRASP
//!
//! A GRASP security substrate for domains secured by one shared password:
//! every GRASP message, multicast and unicast, is sealed with AES-256-GCM
//! under keys derived from the password. [`wrap`] turns any
//! [`AcpTransport`] (the plain ACP, or the in-memory fabric for tests and
//! labs) into a QUADS transport; the engine sees no difference.
//!
//! graspy's own QUADS (AES-CBC with a fixed IV and no integrity) is available
//! only behind the `quads-legacy` feature, in [`legacy`], for joining an
//! existing graspy domain.
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
//! | 1 open | `[1, 1, key_id(8), cr(16), time_ms, ct]` | HKDF(K_uni, salt = cr, info = "GRASP-QUADS-v1 c2s-0") | 0⁴ ‖ 0 (u64 BE) |
//! | 2 answer | `[1, 2, sr(16), ct]` | HKDF(K_uni, salt = cr ‖ sr, info = "GRASP-QUADS-v1 s2c") | 0⁴ ‖ 0 |
//! | 3 early | `[1, 3, ct]` | the initiator's c2s-0 key | 0⁴ ‖ n, n = 1, 2, … |
//! | 4 data | `[1, 4, ct]` | initiator: HKDF(K_uni, cr ‖ sr, "… c2s"); responder: its s2c key | 0⁴ ‖ n, counting on from the last |
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
//!   kind 1 first (and kind 3 if it has more to say before the answer). The
//!   responder checks the time, that `cr` was not seen within the window
//!   (it remembers every `cr` until its window has passed; when that cache
//!   is full it refuses new channels rather than forget), draws `sr`, and
//!   answers with kind 2; both then use the fresh session keys (kind 4).
//!   No extra round trip: the request travels in the first record. A
//!   recorded channel replayed later fails at its first record (stale or
//!   seen); nothing after it can be opened under the new `sr`. The
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
pub use seal::{QuadsStats, Sealer, UnicastSession, OVERHEAD};
pub use transport::{bind_plain, wrap, QuadsTransport};

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
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 8;

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
    ];

    /// Position in [`QuadsStats::dropped`].
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
pub struct QuadsConfig {
    /// How far a record's timestamp may be from our clock.
    pub clock_window: Duration,
    /// Unicast opening randoms remembered (refuse new channels beyond).
    pub replay_cache: usize,
    /// Multicast senders whose counter windows are kept.
    pub multicast_senders: usize,
}

impl Default for QuadsConfig {
    fn default() -> Self {
        QuadsConfig {
            clock_window: Duration::from_secs(30),
            replay_cache: 262_144,
            multicast_senders: 4096,
        }
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
    /// The underlying transport failed.
    #[error(transparent)]
    Transport(#[from] grasp_acp::Error),
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
fn _assert_dyn(t: std::sync::Arc<QuadsTransport>) -> std::sync::Arc<dyn AcpTransport> {
    t
}
