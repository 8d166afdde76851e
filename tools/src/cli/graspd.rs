//! `graspd`'s command line (its man page and completions are made from it).

use std::path::PathBuf;

use clap::Parser;

use crate::config::NodeArgs;

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Parser, Debug)]
#[command(name = "graspd", version, about = "GRASP node daemon (RFC 8990)")]
pub struct Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    /// Relay only: no ASAs; relay discoveries and floods and answer from the
    /// cache (graspy's gremlin).
    #[arg(long)]
    pub relay_only: bool,
    /// Log format: plain or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Control socket for `grasp stats` / `grasp reload`.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Check the configuration (files, keys, certificates, interfaces),
    /// explain what the node would do, and exit.
    #[arg(long)]
    pub check_config: bool,
}
