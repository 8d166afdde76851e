//! quadsmaker: makes and shows QUADS key files.
//!
//! ```text
//! quadsmaker new --domain lab --out lab.key            # prompts for the password twice
//! echo "$PW" | quadsmaker new --domain lab --out lab.key --password-stdin
//! GRASP_QUADS_PASSWORD=... quadsmaker new --domain lab --out lab.key
//! quadsmaker show lab.key                              # parameters and key id, never key material
//! quadsmaker graspy --out quadsk.py                    # graspy's legacy key file (no integrity!)
//! quadsmaker show quadsk.py                            # also reads graspy's format
//! ```

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use grasp_quads::legacy::{read_quadsk, write_quadsk, LegacyKey};
use grasp_quads::{read_key_file, write_key_file, KdfParams, KeyFile, MasterSecret, Password};
use grasp_tools::cli::quadsmaker::{Args, Cmd, PasswordSource};
use zeroize::Zeroizing;

fn read_password(src: &PasswordSource) -> Result<Password> {
    let pw = if src.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string())
    } else if let Ok(p) = std::env::var("GRASP_QUADS_PASSWORD") {
        Zeroizing::new(p)
    } else {
        let a = Zeroizing::new(
            rpassword::prompt_password("Domain password: ").context("reading the password")?,
        );
        let b =
            Zeroizing::new(rpassword::prompt_password("Again: ").context("reading the password")?);
        if *a != *b {
            bail!("the two passwords differ; nothing written");
        }
        a
    };
    if pw.is_empty() {
        bail!("the password is empty; nothing written");
    }
    Ok(Password::new(pw.as_str())?)
}

fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::New {
            domain,
            out,
            force,
            m_kib,
            t,
            p,
            password,
        } => {
            if domain.is_empty() {
                bail!("--domain is empty");
            }
            if out.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", out.display());
            }
            let params = KdfParams { m_kib, t, p };
            params.validate()?;
            let pw = read_password(&password)?;
            let t0 = Instant::now();
            let master = MasterSecret::derive(&pw, &domain, params)?;
            let took = t0.elapsed();
            let kf = KeyFile {
                domain,
                params,
                master,
            };
            let id = write_key_file(&out, &kf, force)?;
            println!(
                "wrote {} (mode 0600): domain {:?}, argon2id m={} KiB t={} p={} ({:.2} s), key id {id}",
                out.display(),
                kf.domain,
                m_kib,
                t,
                p,
                took.as_secs_f64()
            );
        }
        Cmd::Show { file } => {
            let head =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let graspy_format = head.starts_with(b"key=")
                || (head.starts_with(b"#") && !head.starts_with(b"# GRASP"));
            if graspy_format {
                let k = read_quadsk(&file)?;
                println!(
                    "{}: graspy legacy QUADS key (quadsk.py): AES-256-CBC, fixed IV, no integrity; fingerprint {}",
                    file.display(),
                    k.fingerprint()
                );
            } else {
                let kf = read_key_file(&file)?;
                println!(
                    "{}: QUADS key file v1\n  domain  {:?}\n  kdf     argon2id m={} KiB t={} p={}\n  key id  {}",
                    file.display(),
                    kf.domain,
                    kf.params.m_kib,
                    kf.params.t,
                    kf.params.p,
                    kf.key().id()
                );
            }
        }
        Cmd::Graspy {
            out,
            force,
            password,
        } => {
            if out.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", out.display());
            }
            let pw = read_password(&password)?;
            let k = LegacyKey::from_password(&pw);
            write_quadsk(&out, &k, force)?;
            eprintln!("WARNING: graspy's QUADS has no integrity protection; use it only to join a graspy domain.");
            println!(
                "wrote {} (mode 0600): graspy legacy key, fingerprint {}",
                out.display(),
                k.fingerprint()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quadsmaker: {e:#}");
            ExitCode::from(1)
        }
    }
}
