//! grasp-ca: a GRASP domain's certificate authority, for the TLS backend.
//!
//! ```text
//! grasp-ca init --domain lab --dir ca/             # ca/ca.crt, ca/ca.key (0600)
//! grasp-ca issue node1.lab --ca ca/ --out nodes/   # nodes/node1.lab.crt, nodes/node1.lab.key (0600)
//! grasp-ca inspect nodes/node1.lab.crt
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use grasp_tls::certs;
use grasp_tools::cli::grasp_ca::{Args, Cmd};

fn write(path: &Path, body: &[u8], secret: bool, force: bool) -> Result<()> {
    if secret {
        grasp_quads::write_secret_file(path, body, force)?;
    } else {
        if path.exists() && !force {
            bail!("{} exists; pass --force to overwrite it", path.display());
        }
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Init {
            domain,
            dir,
            days,
            force,
        } => {
            if domain.is_empty() {
                bail!("--domain is empty");
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (crt, key) = certs::ca_paths(&dir);
            if (crt.exists() || key.exists()) && !force {
                bail!(
                    "{} already holds a CA; pass --force to replace it",
                    dir.display()
                );
            }
            let (cert, k) = certs::new_ca(&domain, days)?;
            write(&key, k.as_bytes(), true, force)?;
            write(&crt, cert.as_bytes(), false, force)?;
            println!(
                "CA for domain {domain:?}: {} (give to every node as its trust anchor), {} (mode 0600, keep it off the nodes), valid {days} days",
                crt.display(),
                key.display()
            );
        }
        Cmd::Issue {
            node,
            ca,
            out,
            days,
            force,
        } => {
            if node.is_empty() || node.contains('/') {
                bail!("the node name {node:?} is not a DNS name");
            }
            let (crt, key) = certs::ca_paths(&ca);
            certs::check_private(&key)?;
            let ca_cert = std::fs::read_to_string(&crt)
                .with_context(|| format!("reading the CA certificate {}", crt.display()))?;
            let ca_key = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key)
                    .with_context(|| format!("reading the CA key {}", key.display()))?,
            );
            let (cert, k) = certs::issue_node(&ca_cert, &ca_key, &node, days)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let node_crt = out.join(format!("{node}.crt"));
            let node_key = out.join(format!("{node}.key"));
            write(&node_key, k.as_bytes(), true, force)?;
            write(&node_crt, cert.as_bytes(), false, force)?;
            // Check what we wrote the way a node will load it.
            let id = grasp_tls::NodeIdentity::load(&node_crt, &node_key, &crt)?;
            println!(
                "node {}: {} and {} (mode 0600), valid {days} days, trusted by {}",
                id.name,
                node_crt.display(),
                node_key.display(),
                crt.display()
            );
        }
        Cmd::Inspect { file } => {
            print!("{}", certs::describe(&file)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grasp-ca: {e:#}");
            ExitCode::from(1)
        }
    }
}
