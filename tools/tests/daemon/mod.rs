//! Running graspd and grasp inside a test's network namespaces: commands,
//! configurations, daemons that are reaped by PID, and waiting.
#![allow(dead_code)] // each test file uses its own part

pub(crate) mod asa_client;
pub(crate) mod fabric;
pub(crate) mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use grasp_tests::netns::Netns;

pub(crate) const GRASPD: &str = env!("CARGO_BIN_EXE_graspd");
pub(crate) const GRASP: &str = env!("CARGO_BIN_EXE_grasp");
pub(crate) const GRASP_ASA: &str = env!("CARGO_BIN_EXE_grasp-asa");

pub(crate) fn cmd(ns: &Netns, bin: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, bin])
        .args(args)
        .env_remove("GRASP_QUADS_PASSWORD")
        .env_remove("GRASP_CONFIG")
        .env_remove("GRASP_API_SOCKET")
        .env_remove("RUST_LOG");
    c
}

pub(crate) fn run(ns: &Netns, bin: &str, args: &[&str]) -> Output {
    cmd(ns, bin, args).output().unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `grasp` on the plain ACP on one interface.
pub(crate) fn grasp(ns: &Netns, iface: &str, args: &[&str]) -> Output {
    let mut a = vec!["--security", "none", "-i", iface];
    a.extend_from_slice(args);
    run(ns, GRASP, &a)
}

pub(crate) fn spawn(ns: &Netns, bin: &str, args: &[&str], log: &Path) -> Child {
    cmd(ns, bin, args)
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Kills a child we started if it is still running (by its PID).
pub(crate) struct Reap(pub(crate) Child);
impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Writes graspd's configuration `name.toml` in `dir`: `body` (top-level
/// settings first, then tables) and a control socket `name.sock`.
/// Returns (configuration, socket).
pub(crate) fn daemon_config(dir: &Path, name: &str, body: &str) -> (PathBuf, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!("{body}\n[control]\nsocket = \"{}\"\n", sock.display()),
    )
    .unwrap();
    (conf, sock)
}

/// `graspd --config CONF --check-config` in `ns`.
pub(crate) fn check_config(ns: &Netns, conf: &Path) -> Output {
    run(
        ns,
        GRASPD,
        &["--config", conf.to_str().unwrap(), "--check-config"],
    )
}

/// Starts graspd in `ns` with `conf` and waits for its control socket;
/// fails with its log if it exits first.
pub(crate) fn start_graspd(ns: &Netns, conf: &Path, sock: &Path, log: &Path) -> Reap {
    let mut d = Reap(spawn(
        ns,
        GRASPD,
        &["--config", conf.to_str().unwrap()],
        log,
    ));
    wait_for("graspd's control socket", || {
        if let Ok(Some(s)) = d.0.try_wait() {
            panic!(
                "graspd exited ({s}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        run(ns, GRASP, &["stats", "--control", sock.to_str().unwrap()])
            .status
            .success()
    });
    d
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
