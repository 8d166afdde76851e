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
//! ## Example
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
pub mod transport;
pub mod wire;

pub use api::{Asa, Grasp, Negotiation, NegotiationListener, Session};
pub use error::{ApiError, ErrorCode};
