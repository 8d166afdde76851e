//! # grasp-acp
//!
//! Two backends of the engine's [`AcpTransport`](grasp_engine::transport::AcpTransport):
//!
//! * [`plain`]: the plain, **insecure** ACP. Link-local multicast to
//!   `[ff02::13]:7017` over UDP on each chosen interface (joined by interface
//!   index, hop limit 1, loopback of our own multicasts only with
//!   `listen_self`), and TCP for unicast, one message per write with
//!   `TCP_NODELAY`. The TCP listener shares its port number with the UDP
//!   socket our multicasts leave from, because discovery responders connect to
//!   that port (RFC 8990 §2.5.4.3). Several instances on one host each get
//!   every multicast (`SO_REUSEADDR` + `SO_REUSEPORT` on 7017). For labs,
//!   DULL and tests; production needs `grasp-quads` or `grasp-tls`.
//! * [`fabric`]: an in-memory fabric of virtual nodes, interfaces and links,
//!   with loss and delay knobs. No root, no sockets, deterministic under
//!   tokio's paused clock.
//!
//! Also here, for the security backends: [`secure`], the one place a
//! backend's protection is stacked on a base and applied (multicasts
//! sealed and opened, channels protected, drops counted);
//! [`stream::StreamChannel`] (whole messages over a byte stream) and
//! [`interfaces`] (interface selection and the node's address).
//!
//! ```no_run
//! # async fn demo() -> Result<(), grasp_acp::Error> {
//! use grasp_engine::transport::AcpTransport;
//! let (acp, inbound) = grasp_acp::plain::bind(
//!     grasp_acp::plain::Config::default().interfaces(["eth0"]),
//! ).await?;
//! println!("node locator {}", acp.node_locator());
//! # drop(inbound); Ok(()) }
//! ```
//!
//! ## Features
//!
//! None.
#![warn(missing_docs)]

use std::io;

use futures::StreamExt;
use grasp_engine::transport::{Inbound, InboundStream};
use tokio::sync::mpsc;

pub mod fabric;
pub mod fair;
pub mod interfaces;
mod message_bytes;
mod netlink;
pub mod plain;
pub mod replay;
pub mod secure;
pub mod slots;
pub mod stream;

/// Errors setting up a backend of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No interface is usable for GRASP.
    #[error("no usable interface: GRASP needs an interface that is up, supports multicast, is not loopback and has an IPv6 link-local address")]
    NoInterfaces,
    /// A named interface does not exist.
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    /// A named interface cannot be used.
    #[error("interface {name:?} cannot be used for GRASP: {why}")]
    UnusableInterface {
        /// Its name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// A backend that runs a layer on the base's connections (TLS) was
    /// given a transport already bound.
    #[error("this security backend runs on the base's connections: stack it with secure::bind on a plain::Config or a fabric node, not with secure::wrap")]
    NeedsBase,
}

/// Turns the receiving end of a bounded queue into the engine's inbound stream.
pub(crate) fn inbound_stream(mut rx: mpsc::Receiver<Inbound>) -> InboundStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
