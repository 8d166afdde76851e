//! Shared helpers of the workspace's integration tests.
//!
//! * [`backend`]: every backend behind one builder, for the conformance
//!   suite (`tests/tests/conformance`).
//! * [`netns`]: Linux network-namespace labs (veth pairs, ULA addresses) and
//!   running async code inside a namespace.
//! * [`place`]: where a conformance scenario's nodes run (the fabric or
//!   namespaces), and nodes in a line there.
//! * [`scenario`]: GRASP exchanges the backend tests share.
#![warn(missing_docs)]

pub mod backend;
pub mod netns;
pub mod place;
pub mod scenario;
