//! graspd's ASA socket with real processes between two network namespaces
//! (root only; loudly skipped otherwise): ASAs as processes of their own
//! (`grasp-asa`, `grasp --api`, this test's own Rust client) using each
//! namespace's graspd, and what is left of a client graspd kills or loses.
//! Namespaces are created and deleted by the tests; nothing leaves them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_engine::wire::{Objective, ObjectiveFlags};
use grasp_engine::DiscoverOptions;
use grasp_tests::netns::{Lab, Netns};
use grasp_tools::asa::{briggs_gray, Transcript};

mod daemon;
use daemon::*;

/// graspd `name` in `ns` on `iface` (plain ACP) with an ASA socket.
/// Returns the daemon, its ASA socket and its control socket.
fn graspd_with_api(ns: &Netns, dir: &Path, name: &str, iface: &str) -> (Reap, PathBuf, PathBuf) {
    let api = dir.join(format!("{name}-api.sock"));
    let (conf, control) = daemon_config(
        dir,
        name,
        &format!(
            "security = \"none\"\ninterfaces = [\"{iface}\"]\n[api]\nsocket = \"{}\"",
            api.display()
        ),
    );
    let d = start_graspd(ns, &conf, &control, &dir.join(format!("{name}.log")));
    (d, api, control)
}

/// Two namespaces joined by a veth pair, each with a graspd and its ASA
/// socket; `None` (said loudly) without root.
struct Pair {
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
    api_a: PathBuf,
    api_b: PathBuf,
    control_b: PathBuf,
    _daemons: (Reap, Reap),
    _lab: Lab,
}

fn pair(test: &str) -> Option<Pair> {
    if Lab::skip_loudly(test) {
        return None;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (da, api_a, _) = graspd_with_api(&a, dir.path(), "a", "ab0");
    let (db, api_b, control_b) = graspd_with_api(&b, dir.path(), "b", "ba0");
    Some(Pair {
        a,
        b,
        dir,
        api_a,
        api_b,
        control_b,
        _daemons: (da, db),
        _lab: lab,
    })
}

/// `grasp --api SOCKET ARGS` in `ns`.
fn grasp_via(ns: &Netns, api: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["--api", api.to_str().unwrap()];
    a.extend_from_slice(args);
    run(ns, GRASP, &a)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Briggs runs as a `grasp-asa` process on B's graspd; Gray, this test's
/// own code, runs on A's graspd through the Rust client, and `grasp --api`
/// uses A's graspd too. Then Briggs is killed (SIGKILL) while listening:
/// its objectives vanish, and B's graspd goes on serving its other client.
#[test]
fn example_asas_as_processes_on_each_graspd() {
    let Some(p) = pair("example_asas_as_processes_on_each_graspd") else {
        return;
    };
    let Pair {
        a,
        b,
        dir,
        api_a,
        api_b,
        control_b,
        ..
    } = &p;
    let mut briggs = Reap(spawn(
        b,
        GRASP_ASA,
        &["--api", api_b.to_str().unwrap(), "briggs"],
        &dir.path().join("briggs.log"),
    ));
    // B's other client: a synchronization server.
    let _other = Reap(spawn(
        b,
        GRASP,
        &[
            "--api",
            api_b.to_str().unwrap(),
            "serve-sync",
            "EX.other",
            "\"still here\"",
        ],
        &dir.path().join("other.log"),
    ));
    wait_for("Briggs's EX2 through A's graspd", || {
        grasp_via(a, api_a, &["sync", "EX2"]).status.success()
    });
    let o = grasp_via(a, api_a, &["sync", "EX2"]);
    assert!(text(&o).contains("[1, \"two\", 3]"), "{}", text(&o));
    let o = grasp_via(a, api_a, &["discover", "EX3"]);
    assert!(o.status.success(), "{}", text(&o));
    // B's registrations and A's caches, read through the sockets.
    let o = grasp_via(b, api_b, &["dump"]);
    assert!(
        text(&o).contains("objective EX2 = [1, \"two\", 3]") && text(&o).contains("EX.other"),
        "{}",
        text(&o)
    );
    let o = grasp_via(a, api_a, &["--json", "dump"]);
    assert!(
        text(&o).contains("\"discovery_cache\"") && text(&o).contains("EX3"),
        "{}",
        text(&o)
    );

    let rt = runtime();
    let grasp = rt.block_on(grasp_asa_api::client::connect(&api_a)).unwrap();
    let t = Transcript::new(true);
    let mut endings = 0;
    for seed in 0..4 {
        let r = rt
            .block_on(briggs_gray::gray(&grasp, seed, Duration::from_secs(5), &t))
            .unwrap();
        assert_eq!(r.sync.expect("EX2 synchronized").0, "[1, \"two\", 3]");
        let (v, _, _) = r.flood.expect("the EX1 flood");
        assert_eq!(v, "\"the time from Briggs\"");
        if r.negotiation.is_some() {
            endings += 1;
        }
    }
    assert_eq!(endings, 4, "{:?}", t.lines());

    // Briggs dies without a word.
    briggs.0.kill().unwrap();
    briggs.0.wait().unwrap();
    let asa = rt.block_on(grasp.register_asa("looker")).unwrap();
    let ex2 = Objective::new("EX2", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH);
    let t0 = Instant::now();
    loop {
        let opts = DiscoverOptions {
            flush: true,
            ..DiscoverOptions::all(Duration::from_millis(500))
        };
        let found = rt.block_on(asa.discover(&ex2, opts)).unwrap();
        if found.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "EX2 is still discovered after Briggs was killed: {found:?}"
        );
    }
    let o = grasp_via(a, api_a, &["sync", "EX.other"]);
    assert!(text(&o).contains("still here"), "{}", text(&o));
    let st = run(
        b,
        GRASP,
        &["stats", "--control", control_b.to_str().unwrap()],
    );
    assert!(text(&st).contains("\"api\""), "{}", text(&st));
}

/// A client killed (SIGKILL) in the middle of a negotiation, after asking
/// its peer to wait: graspd declines the session for it ("ASA gone"), so
/// the requester learns at once instead of waiting out its timeout.
#[test]
fn a_client_killed_mid_negotiation_is_declined_for() {
    let Some(p) = pair("a_client_killed_mid_negotiation_is_declined_for") else {
        return;
    };
    let Pair {
        a,
        b,
        dir,
        api_a,
        api_b,
        ..
    } = &p;
    let mut answerer = Reap(spawn(
        b,
        GRASP,
        &[
            "--api",
            api_b.to_str().unwrap(),
            "listen-negotiate",
            "EX.kill",
            "--wait-ms",
            "20000",
        ],
        &dir.path().join("answerer.log"),
    ));
    wait_for("EX.kill discoverable", || {
        grasp_via(a, api_a, &["discover", "EX.kill"])
            .status
            .success()
    });
    let requester = Arc::new(std::sync::Mutex::new(None));
    let (api, ns, slot) = (api_a.clone(), a.clone(), requester.clone());
    let t0 = Instant::now();
    let asking = std::thread::spawn(move || {
        let o = grasp_via(
            &ns,
            &api,
            &["--timeout-ms", "15000", "negotiate", "EX.kill", "5"],
        );
        *slot.lock().unwrap() = Some(t0.elapsed());
        o
    });
    // The answerer has the request and has asked for 20 s more.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(requester.lock().unwrap().is_none(), "answered too soon");
    answerer.0.kill().unwrap();
    answerer.0.wait().unwrap();
    let o = asking.join().unwrap();
    let took = requester.lock().unwrap().unwrap();
    assert_eq!(o.status.code(), Some(4), "declined: {}", text(&o));
    assert!(text(&o).contains("ASA gone"), "{}", text(&o));
    assert!(took < Duration::from_secs(8), "took {took:?}");
}
/// An ASA in another process serves an objective through graspd's ASA
/// socket (`[api] socket`), and `grasp sync` in the other namespace reads
/// it from graspd's node (issue 12's first slice, over real sockets).
#[test]
fn an_asa_process_serves_through_graspds_socket() {
    if Lab::skip_loudly("an_asa_process_serves_through_graspds_socket") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("asa.sock");
    let (conf, sock) = daemon_config(
        dir.path(),
        "graspd",
        &format!(
            "security = \"none\"\ninterfaces = [\"ba0\"]\n[api]\nsocket = \"{}\"",
            api.display()
        ),
    );
    let o = check_config(&b, &conf);
    assert!(text(&o).contains("ASA socket"), "{}", text(&o));
    let _d = start_graspd(&b, &conf, &sock, &dir.path().join("graspd.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The ASA process: hello, an ASA, EX.remote served with a value. The
    // socket is a file: reachable from outside graspd's namespace.
    let c = rt.block_on(async {
        let mut c = asa_client::Client::new(tokio::net::UnixStream::connect(&api).await.unwrap());
        c.hello().await;
        let asa = c
            .call("register_asa", vec![("name", "remote".into())])
            .await
            .unwrap();
        let asa = asa_client::get(&asa, "asa").unwrap().clone();
        let o = grasp_engine::wire::Objective::new(
            "EX.remote",
            grasp_engine::wire::ObjectiveFlags::from_bits(5),
        )
        .with_value("from afar");
        let o = ciborium::Value::Bytes(o.encode().to_vec());
        for m in ["register_objective", "listen_synchronize"] {
            c.call(m, vec![("asa", asa.clone()), ("objective", o.clone())])
                .await
                .unwrap();
        }
        c
    });
    let out = grasp(&a, "ab0", &["sync", "EX.remote"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"from afar\""), "{}", text(&out));
    let st = run(&b, GRASP, &["stats", "--control", sock.to_str().unwrap()]);
    assert!(
        text(&st).contains("\"api\"") && text(&st).contains("\"calls\""),
        "{}",
        text(&st)
    );
    // The ASA process goes; so does its objective.
    drop(c);
    drop(rt);
    let mut gone = false;
    for _ in 0..20 {
        let out = grasp(&a, "ab0", &["sync", "EX.remote", "--timeout-ms", "500"]);
        if !out.status.success() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "EX.remote is still served after its ASA left");
}

/// The policy against a real client's credentials (SO_PEERCRED): `grasp`
/// run as nobody may read what its rule grants and nothing more; root may
/// do everything; `--check-config` explains it; refusals are counted.
#[test]
fn the_policy_holds_against_another_users_credentials() {
    if Lab::skip_loudly("the_policy_holds_against_another_users_credentials") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mut lab = Lab::new();
    let (_a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // nobody must reach the socket through the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let api = dir.path().join("api.sock");
    let (conf, control) = daemon_config(
        dir.path(),
        "b",
        &format!(
            "security = \"none\"\ninterfaces = [\"ba0\"]\n[api]\nsocket = \"{}\"\n\
             [[api.allow]]\nuid = 65534\nasas = [\"grasp-cli-*\"]\nread = [\"EX.pub*\"]",
            api.display()
        ),
    );
    let o = check_config(&b, &conf);
    assert!(
        text(&o).contains("mode 666")
            && text(&o)
                .contains("user 65534 (uid 65534): ASAs grasp-cli-*; owns nothing; reads EX.pub*"),
        "{}",
        text(&o)
    );
    let _d = start_graspd(&b, &conf, &control, &dir.path().join("b.log"));
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(GRASP)
            .args(["--api", api.to_str().unwrap(), "--timeout-ms", "300"])
            .args(args)
            .env_remove("RUST_LOG")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let o = as_nobody(&["discover", "EX.secret"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("may not read"), "{}", text(&o));
    let o = as_nobody(&["flood", "EX.pub", "1"]);
    assert!(text(&o).contains("may not own"), "{}", text(&o));
    let o = as_nobody(&["discover", "EX.pub"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "allowed, nobody answers: {}",
        text(&o)
    );
    // Root may do everything.
    let o = grasp_via(&b, &api, &["--timeout-ms", "300", "discover", "EX.secret"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let st = run(
        &b,
        GRASP,
        &["stats", "--control", control.to_str().unwrap()],
    );
    assert!(text(&st).contains("\"denied\": 2"), "{}", text(&st));
}

/// Rapid synchronization, flood expiry and a negotiation's every ending,
/// between two real graspd processes, both sides ASA clients of their
/// node's socket (the scenarios the fabric runs too, from one source).
#[test]
fn the_remaining_scenarios_between_two_graspds() {
    let Some(p) = pair("the_remaining_scenarios_between_two_graspds") else {
        return;
    };
    let Pair { api_a, api_b, .. } = &p;
    let rt = runtime();
    rt.block_on(async {
        let nodes = [
            grasp_asa_api::client::connect(&api_a).await.unwrap(),
            grasp_asa_api::client::connect(&api_b).await.unwrap(),
        ];
        daemon::scenarios::all(&nodes).await;
    });
}

/// `grasp-asa` stops by itself when its graspd goes (exit 1, its ASAs gone
/// with the connection), and cleanly on SIGTERM (exit 0).
#[test]
fn grasp_asa_follows_its_graspd() {
    if Lab::skip_loudly("grasp_asa_follows_its_graspd") {
        return;
    }
    let mut lab = Lab::new();
    let (_a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut d, api, _) = graspd_with_api(&b, dir.path(), "b", "ba0");
    let run_asa = |name: &str| {
        Reap(spawn(
            &b,
            GRASP_ASA,
            &["--api", api.to_str().unwrap(), "pfx-delegator"],
            &dir.path().join(format!("{name}.log")),
        ))
    };
    let wait_exit = |c: &mut Reap| {
        let t0 = Instant::now();
        loop {
            if let Some(s) = c.0.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "grasp-asa did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // SIGTERM: a clean stop.
    let mut first = run_asa("first");
    wait_for("the delegator's objective", || {
        text(&grasp_via(&b, &api, &["dump"])).contains("PrefixManager")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut first), Some(0));
    // graspd goes: grasp-asa notices and exits 1.
    let mut second = run_asa("second");
    wait_for("the delegator's objective again", || {
        text(&grasp_via(&b, &api, &["dump"])).contains("PrefixManager")
    });
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    assert_eq!(wait_exit(&mut second), Some(1));
}
