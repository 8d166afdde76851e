//! The engine's only way to the network: the [`AcpTransport`] trait.
//!
//! GRASP runs over a "security and transport substrate" (RFC 8990 §2.5.1),
//! normally the ACP. The engine does not know which: it hands whole GRASP
//! messages to a backend and gets whole messages back. Framing, sockets and
//! cryptography are the backend's business. Backends (`grasp-acp`,
//! `grasp-quads`, `grasp-tls`) implement this trait and are picked at run
//! time, so it is dyn-compatible: use `Arc<dyn AcpTransport>`.
//!
//! # Shape
//!
//! A backend is created by its own `bind` function, which returns the
//! transport and an [`InboundStream`]. Out of the node:
//!
//! * [`AcpTransport::send_multicast`] sends one message to `ALL_GRASP_NEIGHBORS`
//!   on one interface (link-local, hop limit 1);
//! * [`AcpTransport::connect`] opens a unicast [`Channel`] to a peer.
//!
//! Into the node, the inbound stream yields [`Inbound::Datagram`] (a multicast,
//! with the interface index and source address it came from) and
//! [`Inbound::Channel`] (a unicast channel a peer opened to us).
//!
//! A [`Channel`] carries whole messages both ways: it is a
//! `Stream<Item = Result<Bytes, AcpError>>` of received messages and a
//! `Sink<Bytes>` for sending. Each item is exactly one GRASP message, already
//! decrypted and no larger than the backend's maximum message size; each send
//! reaches the peer as one unit (one TCP write for the plain ACP, because
//! graspy reads one message per `recv`). Closing the sink closes the channel.
//!
//! Discovery responses come back on a channel too: every backend listens for
//! unicast on the same port number its multicasts are sent from
//! ([`AcpTransport::node_locator`] gives it), because RFC 8990 §2.5.4.3
//! responders connect to the UDP source port of the M_DISCOVERY.
//!
//! # Bounds
//!
//! Backends bound everything they queue: inbound datagrams beyond the queue
//! and connections beyond the configured maximum are dropped and counted in
//! [`TransportStats`], never buffered without limit.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Sink, Stream};

use crate::wire::{DecodeError, Locator};

/// The security a backend provides (RFC 8990 §2.5.1 requires a secure
/// substrate for everything but DULL). Exhaustive on purpose: the crates
/// move together, and a new backend must be matched everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// No security: plain UDP and TCP. For labs, tests and DULL only.
    None,
    /// QUADS: a shared-key encrypted substrate.
    Quads,
    /// Mutually authenticated TLS for unicast, authenticated multicast.
    Tls,
}

impl Security {
    /// Whether the substrate provides confidentiality and authentication, so
    /// that negotiation, synchronization and flooding may be used.
    pub fn is_secure(self) -> bool {
        !matches!(self, Security::None)
    }
}

impl std::str::FromStr for Security {
    type Err = String;

    /// `none` (or `insecure`), `quads` or `tls`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "insecure" => Ok(Security::None),
            "quads" => Ok(Security::Quads),
            "tls" => Ok(Security::Tls),
            _ => Err(format!("unknown security {s:?}: choose none, quads or tls")),
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::None => "none",
            Security::Quads => "quads",
            Security::Tls => "tls",
        })
    }
}

/// A network interface GRASP uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface index (the scope id of its link-local addresses).
    pub index: u32,
    /// Interface name (`eth0`, or a fabric name).
    pub name: String,
    /// The interface's IPv6 link-local address.
    pub link_local: Ipv6Addr,
}

/// Errors at the transport boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcpError {
    /// An operating-system I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connecting did not finish in time.
    #[error(
        "connecting to {peer} timed out after {after:?}; check that the peer is up and reachable"
    )]
    ConnectTimeout {
        /// The peer.
        peer: SocketAddr,
        /// The timeout in force.
        after: Duration,
    },
    /// Nobody listens at that address and port.
    #[error("connection to {0} refused: no GRASP listener there")]
    Refused(SocketAddr),
    /// No route to that address (the fabric reports this for unknown nodes).
    #[error("{0} is unreachable")]
    Unreachable(SocketAddr),
    /// The interface index is not one this transport uses.
    #[error("interface index {0} is not a GRASP interface of this transport")]
    NoInterface(u32),
    /// The peer could not be authenticated, or a message failed its check.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer sent bytes that are not a GRASP message.
    #[error("malformed message from the peer: {0}")]
    Malformed(#[from] DecodeError),
    /// A message is larger than the transport allows.
    #[error("message of {len} bytes exceeds the transport's maximum of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The channel or transport has been closed.
    #[error("the channel is closed")]
    Closed,
    /// The peer reset the connection: it refused it (it is at its
    /// connection limit, or holds too many of ours) or it restarted.
    #[error("the peer reset the connection: it refused it (at its connection limit) or restarted; try again later")]
    Reset,
    /// A backend-specific error.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl AcpError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        AcpError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A received link-local multicast.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Interface it arrived on.
    pub ifindex: u32,
    /// Sender's address and UDP source port (responses go to that port by TCP).
    pub src: SocketAddrV6,
    /// One whole GRASP message.
    pub msg: Bytes,
}

/// The message-level I/O of a [`Channel`]: a stream of received messages
/// and a sink of messages to send.
pub trait MessageIo:
    Stream<Item = Result<Bytes, AcpError>> + Sink<Bytes, Error = AcpError> + Send
{
}

impl<T> MessageIo for T where
    T: Stream<Item = Result<Bytes, AcpError>> + Sink<Bytes, Error = AcpError> + Send
{
}

/// A unicast message channel (a TCP connection, a TLS session, a fabric pipe).
pub struct Channel {
    /// The peer's address (with scope id when link-local).
    pub peer: SocketAddr,
    /// Our end's address.
    pub local: SocketAddr,
    /// Messages in and out.
    pub io: Pin<Box<dyn MessageIo>>,
    /// Who the peer proved to be (its certificate's name), on backends that
    /// authenticate peers individually (TLS); `None` elsewhere.
    pub identity: Option<String>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Something that arrived from the network.
#[derive(Debug)]
pub enum Inbound {
    /// A link-local multicast.
    Datagram(Datagram),
    /// A unicast channel a peer opened.
    Channel(Channel),
    /// The transport's interfaces or node address changed (an interface
    /// came or went, or an address changed); the engine uses these from
    /// now on. Backends that wrap another pass it through.
    Interfaces {
        /// The interfaces in use now.
        interfaces: Vec<Interface>,
        /// This node's unicast locator now.
        node_locator: Locator,
    },
}

/// The stream of inbound traffic a backend's `bind` returns. It ends when the
/// transport shuts down.
pub type InboundStream = BoxStream<'static, Inbound>;

/// Counters every backend keeps. Drops are counted here, never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Multicast messages sent.
    pub multicast_sent: u64,
    /// Multicast messages delivered to the inbound stream.
    pub multicast_received: u64,
    /// Multicasts dropped because they exceeded the maximum size.
    pub multicast_dropped_oversize: u64,
    /// Multicasts dropped on their way to the engine: their source held
    /// its share of the inbound queue, or the queue was full (then the
    /// heaviest source's newest is dropped).
    pub multicast_dropped_queue_full: u64,
    /// Multicasts the kernel dropped because the socket's receive buffer
    /// was full (`SO_RXQ_OVFL`; 0 where the system does not report it).
    pub multicast_dropped_kernel: u64,
    /// Multicasts dropped because their interface is not a GRASP interface,
    /// or they failed authentication or decryption.
    pub multicast_dropped_other: u64,
    /// Channels we opened.
    pub channels_opened: u64,
    /// Channels peers opened that we accepted.
    pub channels_accepted: u64,
    /// Inbound connections refused (reset): the connection limits, or a
    /// full inbound queue.
    pub channels_refused: u64,
    /// Of those, refused because their source held its share already.
    pub channels_refused_source: u64,
    /// Inbound connections that had not spoken yet, closed to make room for
    /// a newcomer or for silence while the pool was filling.
    pub channels_evicted: u64,
    /// Inbound connections closed because they sent no whole message (or
    /// did not finish their handshake) in time.
    pub channels_silent: u64,
    /// Outgoing connections that failed.
    pub connect_failures: u64,
    /// Channels closed because the peer sent a malformed or oversize message.
    pub malformed_streams: u64,
}

/// Atomic counters behind [`TransportStats`], for backends to share.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct StatsCounters {
    pub multicast_sent: AtomicU64,
    pub multicast_received: AtomicU64,
    pub multicast_dropped_oversize: AtomicU64,
    pub multicast_dropped_queue_full: AtomicU64,
    pub multicast_dropped_kernel: AtomicU64,
    pub multicast_dropped_other: AtomicU64,
    pub channels_opened: AtomicU64,
    pub channels_accepted: AtomicU64,
    pub channels_refused: AtomicU64,
    pub channels_refused_source: AtomicU64,
    pub channels_evicted: AtomicU64,
    pub channels_silent: AtomicU64,
    pub connect_failures: AtomicU64,
    pub malformed_streams: AtomicU64,
}

impl StatsCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            multicast_sent: g(&self.multicast_sent),
            multicast_received: g(&self.multicast_received),
            multicast_dropped_oversize: g(&self.multicast_dropped_oversize),
            multicast_dropped_queue_full: g(&self.multicast_dropped_queue_full),
            multicast_dropped_kernel: g(&self.multicast_dropped_kernel),
            multicast_dropped_other: g(&self.multicast_dropped_other),
            channels_opened: g(&self.channels_opened),
            channels_accepted: g(&self.channels_accepted),
            channels_refused: g(&self.channels_refused),
            channels_refused_source: g(&self.channels_refused_source),
            channels_evicted: g(&self.channels_evicted),
            channels_silent: g(&self.channels_silent),
            connect_failures: g(&self.connect_failures),
            malformed_streams: g(&self.malformed_streams),
        }
    }
}

/// A GRASP security and transport substrate (RFC 8990 §2.5.1).
///
/// Dyn-compatible; see the [module documentation](self) for the contract.
pub trait AcpTransport: Send + Sync + 'static {
    /// The security this backend provides.
    fn security(&self) -> Security;

    /// The interfaces in use, with their link-local addresses.
    fn interfaces(&self) -> Vec<Interface>;

    /// This node's own unicast locator: its preferred address (ULA, else
    /// global, else link-local) with the protocol and port on which it
    /// accepts channels. Multicasts are sent from the same port number.
    fn node_locator(&self) -> Locator;

    /// The largest message this transport sends or delivers, in bytes.
    fn max_message_size(&self) -> usize;

    /// Sends one message to `ALL_GRASP_NEIGHBORS` on interface `ifindex`.
    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>>;

    /// Opens a unicast channel to `peer` (give link-local peers their scope id).
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>>;

    /// The transport's counters.
    fn stats(&self) -> TransportStats;
}
