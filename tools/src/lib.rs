//! # grasp-tools
//!
//! What the GRASP programs share: node configuration (a TOML file with
//! flags on top), starting a node on the chosen backend, typed values,
//! graspd's control socket, and logging.
//!
//! The programs: `graspd` (the node daemon), `grasp` (the command line),
//! `grasp-lab` (N nodes in one process, or in namespaces), `quadsmaker`,
//! `grasp-ca`, `grasp-bench`.
#![warn(missing_docs)]

pub mod api;
pub mod asa;
pub mod backend;
pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod decode;
pub mod metrics;
pub mod node;
pub mod pretty;
pub mod socket;
pub mod value;

pub use config::{NodeArgs, NodeConfig};
pub use node::Node;
pub use value::parse_value;

/// Installs the tracing subscriber: `RUST_LOG` if set, else `default`;
/// plain text or JSON lines on standard error.
pub fn init_logging(format: config::LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Plain => b.try_init(),
        config::LogFormat::Json => b.json().try_init(),
    };
}

/// `println!` that ignores a closed standard output (`grasp-lab | head`)
/// instead of panicking, as command-line tools should.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed standard output.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}
