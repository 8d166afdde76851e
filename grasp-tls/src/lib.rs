//! # grasp-tls (not implemented yet)
//!
//! This crate will be the certificate-based GRASP backend: rustls mutual TLS
//! for unicast channels and authenticated link-local multicast. It is issue 5
//! of the project and has no code yet: it exports nothing, so nothing can
//! mistake it for a working backend.
#![warn(missing_docs)]
