//! grasp-docs: writes the man pages (graspd, grasp, quadsmaker, grasp-ca,
//! their subcommands, graspd.toml(5)) and the bash, zsh and fish
//! completions, all made from the tools' own definitions, under DIR (see
//! `grasp_tools::cli::docs`). Packaging runs it; so can anyone:
//!
//! ```text
//! grasp-docs target/docs && man -l target/docs/man/man1/grasp.1
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "grasp-docs",
    about = "Write the tools' man pages and shell completions under DIR"
)]
struct Args {
    /// Where to write man/ and completions/.
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match grasp_tools::cli::docs::write(&args.dir) {
        Ok(files) => {
            println!("wrote {} files under {}", files.len(), args.dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("grasp-docs: cannot write under {}: {e}", args.dir.display());
            ExitCode::from(1)
        }
    }
}
