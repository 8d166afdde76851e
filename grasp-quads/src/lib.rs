//! # grasp-quads (not implemented yet)
//!
//! This crate will be the QUADS backend of GRASP: the plain ACP's sockets with
//! every message encrypted and authenticated under AES-256-GCM keys derived
//! from a domain password with argon2id, for unicast and multicast, plus a
//! graspy-compatible mode. It is issue 4 of the project and has no code yet:
//! it exports nothing, so nothing can mistake it for a working backend.
#![warn(missing_docs)]
