//! `quadsmaker`'s command line (its man page and completions are made from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use grasp_quads::KdfParams;

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Parser, Debug)]
#[command(
    name = "quadsmaker",
    about = "Make and inspect QUADS key files for GRASP domains",
    long_about = "Derives a QUADS domain key from the domain password (argon2id, then HKDF) and \
                  writes it to a key file (mode 0600, atomically). Nodes load the file instead of \
                  asking for the password. `graspy` writes graspy's legacy quadsk.py instead."
)]
pub struct Args {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: Cmd,
}

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Clone, Debug, clap::Args)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input (for
    /// automation); otherwise GRASP_QUADS_PASSWORD, otherwise a prompt.
    #[arg(long)]
    pub password_stdin: bool,
}

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Derive a domain key from the password and write a key file.
    New {
        /// The domain name (the argon2 salt is bound to it).
        #[arg(long)]
        domain: String,
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        /// argon2id memory in KiB.
        #[arg(long, default_value_t = KdfParams::default().m_kib)]
        m_kib: u32,
        /// argon2id passes.
        #[arg(long, default_value_t = KdfParams::default().t)]
        t: u32,
        /// argon2id lanes.
        #[arg(long, default_value_t = KdfParams::default().p)]
        p: u32,
        #[command(flatten)]
        #[allow(missing_docs)]
        password: PasswordSource,
    },
    /// Print a key file's parameters and key id (never key material). Reads
    /// our format and graspy's quadsk.py.
    Show {
        /// The key file.
        file: PathBuf,
    },
    /// Write graspy's legacy quadsk.py (PBKDF2, AES-CBC, NO INTEGRITY), for
    /// joining an existing graspy domain only.
    Graspy {
        /// Where to write it (graspy looks for quadsk.py on its path).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        password: PasswordSource,
    },
}
