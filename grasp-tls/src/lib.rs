//! # grasp-tls
//!
//! The TLS backend of GRASP: mutual TLS 1.3 for unicast and signed
//! multicast for a certificate-based domain.
//!
//! * [`certs`]: loading and checking a node's chain, key and trust anchors
//!   (a distinct error for each misconfiguration); making a domain CA and
//!   node certificates (the `grasp-ca` tool).
//! * [`unicast`]: the TLS 1.3 layer on the base's connections (mutual
//!   authentication against the domain anchors, ticket resumption).
//! * [`mux`]: GRASP channels as streams of one TLS connection per peer.
//! * [`multicast`]: the signed multicast envelope.
//! * [`transport`]: the [`Backend`], stacked on the plain ACP's sockets or
//!   on a fabric node alike with `grasp_acp::secure::bind`;
//!   [`Protection::reload`] / [`Protection::watch_files`] take a renewed
//!   certificate without a restart. ASAs see the peer's certificate name
//!   through `Session::peer_identity()`.
//!
//! ```no_run
//! # async fn demo(identity: grasp_tls::NodeIdentity) -> Result<(), Box<dyn std::error::Error>> {
//! let backend = grasp_tls::Backend::new(&identity, grasp_tls::Config::default())?;
//! let base = grasp_acp::plain::Config::default().interfaces(["eth0"]);
//! let (tls, inbound) = grasp_acp::secure::bind(base, backend).await?;
//! println!("TLS node {}", tls.protection().name());
//! # drop(inbound); Ok(()) }
//! ```
//!
//! # The mapping
//!
//! RFC 8990 defines no TLS mapping (its §2.5.1 leaves the substrate open);
//! this one is, precisely:
//!
//! * **Unicast.** A node dials a peer's GRASP port (the locator discovery
//!   gave) over TCP and runs TLS 1.3 (nothing older), ALPN `grasp-mux/1`.
//!   Both sides present a certificate chain that must lead to one of the
//!   domain's trust anchors, with both the TLS server and client usages;
//!   the dialled name is not checked (peers are found by address): domain
//!   membership is. A node's identity is the first DNS name in its
//!   certificate's subject alternative names; ASAs see it per session.
//!   Resumption uses TLS 1.3 tickets (one per connection, stateless on the
//!   server), kept per peer address.
//! * **Channels.** One TLS connection per peer carries every GRASP session
//!   to it: each GRASP channel is a stream of that connection, its messages
//!   in DATA frames, its end a FIN frame ([`mux`] gives the frames,
//!   stream numbering, GOAWAY, limits and lifetimes). Repeated sessions to
//!   a peer therefore cost no TCP connect and no handshake; an idle
//!   connection closes after 30 s and a connection is retired after 10
//!   minutes, so certificates are re-checked at least that often.
//! * **Multicast.** Every M_DISCOVERY, M_FLOOD and M_NOOP is the signed
//!   envelope of [`multicast`]: **authenticated, not encrypted** (its GRASP
//!   message is readable on the link), with the sender's certificate or
//!   its fingerprint, a per-sender counter and a timestamp.
//!
//! Node certificates carry both the TLS server and client authentication
//! usages (every node is both).
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::SystemTime;

pub mod certs;
pub mod multicast;
pub mod mux;
pub mod transport;
pub mod unicast;

pub use certs::NodeIdentity;
pub use transport::{Backend, Config, Protection, Transport};

/// What is wrong with a node's certificates or keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No certificate in a file that should hold some.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The private key cannot be used.
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    /// The private key file is readable by group or others.
    #[error("{path} is readable by group or others (mode {mode:o}); run `chmod 600 {}`", path.display())]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate in {0}")]
    KeyMismatch(PathBuf),
    /// The certificate is not valid yet.
    #[error("the certificate in {path} is not valid until {not_before:?}; check the clock")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its start.
        not_before: SystemTime,
    },
    /// The certificate has expired.
    #[error(
        "the certificate in {path} expired at {not_after:?}; issue a new one (grasp-ca issue)"
    )]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its end.
        not_after: SystemTime,
    },
    /// A trust anchor is not a CA certificate.
    #[error("{0}: a trust anchor there is not a CA certificate")]
    AnchorNotCa(PathBuf),
    /// The certificate has no DNS name to identify the node.
    #[error("the certificate in {0} has no DNS subject alternative name (the node's identity)")]
    NoName(PathBuf),
    /// The chain does not lead to a trust anchor.
    #[error("the certificate in {path} is not trusted: {why}")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Making a key or certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
}
