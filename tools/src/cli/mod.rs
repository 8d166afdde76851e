//! The command lines of the operator's tools, as clap definitions: the
//! binaries parse them, and [`docs`] makes their man pages and shell
//! completions from them, so neither can drift from the tools.

pub mod docs;
pub mod grasp;
#[cfg(all(feature = "tls", feature = "quads"))]
pub mod grasp_ca;
pub mod graspd;
#[cfg(feature = "quads")]
pub mod quadsmaker;
