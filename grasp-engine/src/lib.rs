//! # grasp-engine
//!
//! The GRASP protocol (RFC 8990) for Rust, with the ASA API of RFC 8991.
//!
//! This crate holds everything that is protocol and nothing that is a socket:
//!
//! * [`wire`]: the message codec. Strict, bounded decoding of all eleven
//!   message types and seven options; encoding byte-identical to graspy's;
//!   objective values kept as verbatim CBOR; a stream splitter for TCP.
//! * [`transport`]: the [`AcpTransport`](transport::AcpTransport) trait, the
//!   engine's only way to the network. The backends `grasp-acp` (plain UDP
//!   multicast and TCP, and an in-memory link fabric), `grasp-quads` and
//!   `grasp-tls` implement it.
//!
//! * [`proto`]: the protocol engine, deterministic and sans-IO (time and
//!   randomness injected): discovery with caching, divert and relaying,
//!   synchronization, flooding, negotiation, sessions, bounds and rate limits.
//! * [`api`]: the RFC 8991 ASA API as async Rust, running the engine on tokio
//!   through a thin driver.
//! * [`error`]: RFC 8991 error codes.
//!
//! ## Example: a small ASA
//!
//! Two nodes on the in-memory fabric (any backend works the same way). One
//! ASA serves a synchronization objective and answers negotiations; another
//! discovers it, synchronizes, and negotiates.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use grasp_acp::fabric::{Fabric, LinkConfig};
//! use grasp_engine::{Config, DiscoverOptions, RegisterOptions};
//! use grasp_engine::wire::{Objective, ObjectiveFlags, Value};
//! use grasp_engine::{Grasp, Negotiation};
//!
//! let fabric = Fabric::new(1);
//! let link = fabric.link("link1", LinkConfig::default());
//! let (tb, ib) = fabric.node("B").attach(&link).bind();
//! let (ta, ia) = fabric.node("A").attach(&link).bind();
//! // The fabric encrypts nothing; negotiation and synchronization, which
//! // RFC 8990 reserves for a secured substrate, run only because this
//! // example says to treat it as secured (a real node stacks QUADS or TLS
//! // with `grasp_acp::secure::bind`).
//! let mut config = Config::default();
//! config.allow_insecure = true;
//! let b = Grasp::start(tb, ib, config.clone());
//! let a = Grasp::start(ta, ia, config);
//!
//! // B: a synchronization objective and a negotiation objective.
//! let server = b.register_asa("example-server").await?;
//! let temp = Objective::new("EX.temp", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
//!     .with_value(Value::from(21u32));
//! server.register_objective(&temp, RegisterOptions::default()).await?;
//! server.listen_synchronize(&temp).await?;
//! let price = Objective::new("EX.price", ObjectiveFlags::DISC | ObjectiveFlags::NEG);
//! server.register_objective(&price, RegisterOptions::default()).await?;
//! let listener = server.listen_negotiate("EX.price").await?;
//! tokio::spawn(async move {
//!     while let Some((session, offer)) = listener.next().await {
//!         // Accept anything of at least 100, otherwise counter with 100.
//!         if offer.value.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) >= 100 {
//!             let _ = session.accept().await;
//!         } else {
//!             let counter = offer.clone().with_value(Value::from(100u32));
//!             let _ = session.step(&counter, Duration::from_secs(5)).await;
//!         }
//!     }
//! });
//!
//! // A: discover, synchronize, negotiate.
//! let client = a.register_asa("example-client").await?;
//! let probe = Objective::new("EX.temp", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH);
//! let found = client.discover(&probe, DiscoverOptions::first(Duration::from_secs(1))).await?;
//! assert_eq!(found.len(), 1);
//! let got = client.synchronize(&probe, None, Duration::from_secs(5)).await?;
//! assert_eq!(got.value.unwrap().as_u64(), Some(21));
//!
//! let bid = price.clone().with_value(Value::from(80u32));
//! match client.request_negotiate(&bid, None, Duration::from_secs(5)).await? {
//!     Negotiation::Step { session, objective } => {
//!         assert_eq!(objective.value.unwrap().as_u64(), Some(100));
//!         session.accept().await?;
//!     }
//!     other => panic!("expected a counter-offer, got {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Example: the wire codec
//!
//! ```
//! use grasp_engine::wire::{Discovery, Message, Objective, ObjectiveFlags, SessionId, Value};
//!
//! let disc = Message::Discovery(Discovery {
//!     session_id: SessionId(3280759116),
//!     initiator: "fd00:1::1".parse().unwrap(),
//!     objective: Objective::new("EX.sync", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
//!         .with_value(Value::null()),
//!     extensions: vec![],
//! });
//! let bytes = disc.encode();
//! // The same 36 bytes graspy multicasts for this discovery.
//! assert_eq!(
//!     bytes[..],
//!     [0x84, 0x01, 0x1a, 0xc3, 0x8c, 0x69, 0x4c, 0x50, 0xfd, 0x00, 0x00, 0x01, 0, 0, 0, 0,
//!      0, 0, 0, 0, 0, 0, 0, 0x01, 0x84, 0x67, b'E', b'X', b'.', b's', b'y', b'n', b'c',
//!      0x05, 0x06, 0xf6]
//! );
//! assert_eq!(Message::decode(&bytes).unwrap(), disc);
//! ```
//!
//! ## Features
//!
//! None: the engine has no backend features; backends are separate crates.
#![warn(missing_docs)]

pub mod api;
mod driver;
pub mod error;
pub mod proto;
#[doc(hidden)]
pub mod testing;
pub mod transport;
pub mod wire;

pub use api::{Asa, FloodWatcher, Grasp, GraspCore, Negotiation, NegotiationListener, Session};
pub use error::{ApiError, ErrorCode};
/// The everyday types an ASA hands to and gets from the API.
pub use proto::{
    AsaHandle, AsaLocator, Config, DiscoverOptions, Dump, EngineStats, FloodEntry,
    NegotiationOutcome, RegisterOptions, SessionHandle, TableSizes,
};
