//! `grasp-ca`'s command line (its man page and completions are made from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Parser, Debug)]
#[command(
    name = "grasp-ca",
    about = "A GRASP domain's certificate authority: make the CA, issue node certificates, inspect certificates"
)]
pub struct Args {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: Cmd,
}

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a domain CA: DIR/ca.crt and DIR/ca.key (mode 0600).
    Init {
        /// The domain's name (in the CA's subject).
        #[arg(long)]
        domain: String,
        /// Directory for the CA's files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Overwrite an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node key and certificate with NODE as its DNS name (SAN):
    /// OUT/NODE.crt and OUT/NODE.key (mode 0600).
    Issue {
        /// The node's name (a DNS name such as node1.lab).
        node: String,
        /// The CA directory made by `init`.
        #[arg(long)]
        ca: PathBuf,
        /// Directory for the node's files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Show what a certificate (or chain) says.
    Inspect {
        /// A PEM file.
        file: PathBuf,
    },
}
