//! graspd and every grasp command over real sockets, between two network
//! namespaces (root only; loudly skipped otherwise), and grasp-lab
//! --netns on each backend. Namespaces are created and deleted by the
//! tests; nothing leaves them.

use std::process::Command;
use std::time::Duration;

use grasp_tests::netns::Lab;

mod daemon;
use daemon::*;

const LAB: &str = env!("CARGO_BIN_EXE_grasp-lab");

#[test]
fn graspd_and_every_grasp_command_between_two_namespaces() {
    if Lab::skip_loudly("graspd_and_every_grasp_command_between_two_namespaces") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (conf, sock) = daemon_config(
        dir.path(),
        "graspd",
        "security = \"none\"\ninterfaces = [\"ba0\"]\nasas = [\"briggs\"]\n[log]\nformat = \"json\"\n[[serve]]\nname = \"EX.site\"\nvalue = '{\"site\": \"lab-1\"}'\nflood_every_secs = 1\nloop_count = 3",
    );
    let c = conf.to_str().unwrap();

    // --check-config inside the namespace: explains and finds ba0.
    let o = run(&b, GRASPD, &["--config", c, "--check-config"]);
    assert!(o.status.success(), "{}", text(&o));
    for want in [
        "security     none",
        "serves       EX.site",
        "runs ASA     briggs",
        "ba0 (fe80::1:2)",
        "configuration OK",
    ] {
        assert!(text(&o).contains(want), "missing {want:?}: {}", text(&o));
    }

    let log = dir.path().join("graspd.log");
    let mut d = start_graspd(&b, &conf, &sock, &log);
    // JSON logs on standard error.
    let first = std::fs::read_to_string(&log).unwrap();
    let line = first.lines().next().expect("graspd logged nothing");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v.get("level").is_some(), "{line}");

    // discover, with --json, and sync through the locator found.
    let o = grasp(&a, "ab0", &["--json", "discover", "EX.site"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let loc = v["locator"].as_str().unwrap().to_string();
    assert!(loc.starts_with("[fd00:1::2]:"), "{loc}");
    let peer = loc.split('/').next().unwrap();
    let o = grasp(&a, "ab0", &["sync", "EX.site", "--peer", peer]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("EX.site = {\"site\": \"lab-1\"}"),
        "{}",
        text(&o)
    );
    let o = grasp(&a, "ab0", &["sync", "EX.site"]);
    assert!(o.status.success(), "without --peer too: {}", text(&o));

    // get-flood: graspd floods EX.site every second.
    let o = grasp(&a, "ab0", &["get-flood", "EX.site", "--wait", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("loop count 3"), "{}", text(&o));

    // negotiate with graspd's Briggs: a small loan is accepted at once, a
    // foreign currency declined (exit 4).
    let o = grasp(&a, "ab0", &["negotiate", "EX3", "[\"NZD\", 40]"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("accepted"), "{}", text(&o));
    let o = grasp(&a, "ab0", &["negotiate", "EX3", "[\"USD\", 40]"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("Invalid currency"), "{}", text(&o));

    // Nothing to find: exit 3.
    let o = grasp(&a, "ab0", &["--timeout-ms", "300", "discover", "EX.nobody"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    // watch sees graspd's floods go by.
    let o = grasp(&a, "ab0", &["watch", "--seconds", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("M_FLOOD") && text(&o).contains("EX.site"),
        "{}",
        text(&o)
    );

    // serve-sync and listen-negotiate in A, answered to a grasp in B
    // (running beside graspd on the same host).
    let slog = dir.path().join("serve.log");
    let _s = Reap(spawn(
        &a,
        GRASP,
        &[
            "--security",
            "none",
            "-i",
            "ab0",
            "serve-sync",
            "EX.mine",
            "7",
            "--seconds",
            "20",
        ],
        &slog,
    ));
    let nlog = dir.path().join("neg.log");
    let _n = Reap(spawn(
        &a,
        GRASP,
        &[
            "--security",
            "none",
            "-i",
            "ab0",
            "listen-negotiate",
            "EX.deal",
            "--counter",
            "9",
            "--wait-ms",
            "200",
            "--seconds",
            "20",
        ],
        &nlog,
    ));
    std::thread::sleep(Duration::from_millis(500));
    let o = grasp(&b, "ba0", &["sync", "EX.mine"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("EX.mine = 7"), "{}", text(&o));
    let o = grasp(
        &b,
        "ba0",
        &["--timeout-ms", "3000", "negotiate", "EX.deal", "5"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("peer offered 9; we accepted the offer"),
        "{}",
        text(&o)
    );

    // A flood tagged with a locator arrives with it.
    let slog2 = dir.path().join("tagged.log");
    let _g = Reap(spawn(
        &b,
        GRASP,
        &[
            "--security",
            "none",
            "-i",
            "ba0",
            "--json",
            "get-flood",
            "EX.tagged",
            "--wait",
            "10",
        ],
        &slog2,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let o = grasp(
        &a,
        "ab0",
        &["flood", "EX.tagged", "1", "--locator", "[fd00:1::1]:7400"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut g = _g;
    let st = g.0.wait().unwrap();
    let got = std::fs::read_to_string(slog2.with_extension("out")).unwrap();
    assert!(st.success(), "{got}");
    let v: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(v["value"], "1");
    assert_eq!(v["locator"], "[fd00:1::1]:7400/6", "{v}");
    // A flood from A reaches graspd (counted), and stats show it all.
    let o = grasp(
        &a,
        "ab0",
        &["flood", "EX.news", "\"hello\"", "--loop-count", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_millis(300));
    let o = run(
        &b,
        GRASP,
        &["--json", "stats", "--control", sock.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &v["engine"];
    assert!(e["received"]["M_FLOOD"].as_u64().unwrap() >= 1, "{v}");
    assert!(e["received"]["M_REQ_SYN"].as_u64().unwrap() >= 2, "{v}");
    assert!(e["received"]["M_REQ_NEG"].as_u64().unwrap() >= 2, "{v}");
    assert!(e["sent"]["M_FLOOD"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["interfaces"][0], "ba0");

    // reload (nothing to reload on this backend, but it answers), SIGHUP
    // keeps it running, SIGTERM stops it cleanly and removes the socket.
    let o = run(&b, GRASP, &["reload", "--control", sock.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let pid = nix::unistd::Pid::from_raw(d.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop graspd"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    wait_for("graspd to stop on SIGTERM", || {
        status = d.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(
        status.unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!sock.exists(), "the control socket is removed on exit");
}

#[test]
fn graspd_relay_only_between_two_links() {
    if Lab::skip_loudly("graspd_relay_only_between_two_links") {
        return;
    }
    let mut lab = Lab::new();
    let (a, r) = lab.pair().unwrap();
    let c = lab.netns().unwrap();
    lab.link(2, (&r, "bc0"), (&c, "cb0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _relay = Reap(spawn(
        &r,
        GRASPD,
        &[
            "--security",
            "none",
            "--relay-only",
            "-i",
            "ba0",
            "-i",
            "bc0",
        ],
        &dir.path().join("relay.log"),
    ));
    let _serve = Reap(spawn(
        &c,
        GRASP,
        &[
            "--security",
            "none",
            "-i",
            "cb0",
            "serve-sync",
            "EX.far",
            "[1, \"two\"]",
            "--seconds",
            "20",
        ],
        &dir.path().join("serve.log"),
    ));
    std::thread::sleep(Duration::from_millis(800));
    // The relay answers A's discovery with a divert to C (first try).
    let o = grasp(&a, "ab0", &["--json", "discover", "EX.far"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["diverted"], true, "{v}");
    assert!(
        v["locator"].as_str().unwrap().starts_with("[fd00:2::2]"),
        "{v}"
    );
}

#[test]
fn graspd_in_dull_mode_answers_only_link_local_loop_count_one() {
    if Lab::skip_loudly("graspd_in_dull_mode_answers_only_link_local_loop_count_one") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (conf, sock) = daemon_config(
        dir.path(),
        "dull",
        "security = \"none\"\ndull = true\ninterfaces = [\"ba0\"]\n[[serve]]\nname = \"EX.dull\"\nvalue = \"1\"",
    );
    let o = check_config(&b, &conf);
    assert!(
        text(&o).contains("objectives allowed: EX.dull"),
        "{}",
        text(&o)
    );
    let log = dir.path().join("dull.log");
    let mut d = Reap(spawn(
        &b,
        GRASPD,
        &["--config", conf.to_str().unwrap()],
        &log,
    ));
    wait_for("graspd's control socket", || {
        if let Ok(Some(s)) = d.0.try_wait() {
            panic!(
                "graspd exited ({s}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        run(&b, GRASP, &["stats", "--control", sock.to_str().unwrap()])
            .status
            .success()
    });
    // Loop count 1: answered, with B's link-local locator.
    let o = grasp(
        &a,
        "ab0",
        &[
            "--dull",
            "--json",
            "discover",
            "EX.dull",
            "--loop-count",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["locator"].as_str().unwrap().starts_with("[fe80::1:2"),
        "{v}"
    );
    // Loop count 6: dropped by DULL rules (and counted), so exit 3.
    let o = grasp(&a, "ab0", &["--timeout-ms", "500", "discover", "EX.dull"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(
        &b,
        GRASP,
        &["--json", "stats", "--control", sock.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["engine"]["dull_dropped"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn grasp_lab_netns_on_every_backend() {
    if Lab::skip_loudly("grasp_lab_netns_on_every_backend") {
        return;
    }
    for security in ["none", "quads", "tls"] {
        let o = Command::new(LAB)
            .args(["--netns", "--security", security, "--quiet"])
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{security}: {t}");
        for want in [
            "(relayed)",
            "[1, \"two\", 3]",
            "negotiation of EX3",
            "N2 relayed",
            "lab OK",
        ] {
            assert!(t.contains(want), "{security}: missing {want:?}: {t}");
        }
    }
    // Its namespaces are gone.
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let tag = "gl";
    assert!(
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with(tag) && l.contains('n')),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn grasp_and_graspd_over_quads_and_tls_made_with_the_key_tools() {
    if Lab::skip_loudly("grasp_and_graspd_over_quads_and_tls_made_with_the_key_tools") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    // A QUADS key file from quadsmaker, a CA and two nodes from grasp-ca.
    let mut q = Command::new(env!("CARGO_BIN_EXE_quadsmaker"))
        .args([
            "new",
            "--domain",
            "lab",
            "--out",
            &format!("{d}/lab.key"),
            "--password-stdin",
        ])
        .args(["--m-kib", "64", "--t", "1", "--p", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        q.stdin
            .take()
            .unwrap()
            .write_all(b"lab-password\n")
            .unwrap();
    }
    assert!(q.wait().unwrap().success());
    let ca = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_grasp-ca"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    ca(&["init", "--domain", "lab", "--dir", &format!("{d}/ca")]);
    for n in ["a.lab", "b.lab"] {
        ca(&[
            "issue",
            n,
            "--ca",
            &format!("{d}/ca"),
            "--out",
            &format!("{d}/nodes"),
        ]);
    }
    let backends = [
        ("quads", format!("[quads]\nkey_file = \"{d}/lab.key\"\n"), vec!["--key-file".to_string(), format!("{d}/lab.key")]),
        (
            "tls",
            format!("[tls]\ncert = \"{d}/nodes/b.lab.crt\"\nkey = \"{d}/nodes/b.lab.key\"\nca = \"{d}/ca/ca.crt\"\n"),
            vec![
                "--cert".into(),
                format!("{d}/nodes/a.lab.crt"),
                "--key".into(),
                format!("{d}/nodes/a.lab.key"),
                "--ca".into(),
                format!("{d}/ca/ca.crt"),
            ],
        ),
    ];
    for (security, section, flags) in backends {
        let (conf, sock) = daemon_config(
            dir.path(),
            security,
            &format!("security = \"{security}\"\ninterfaces = [\"ba0\"]\nasas = [\"briggs\"]\n[[serve]]\nname = \"EX.sec\"\nvalue = '\"{security}\"'\n{section}"),
        );
        let _d = start_graspd(
            &b,
            &conf,
            &sock,
            &dir.path().join(format!("{security}.log")),
        );
        let mut args: Vec<&str> = vec!["--security", security, "-i", "ab0"];
        args.extend(flags.iter().map(String::as_str));
        let with = |extra: &[&str]| {
            let mut v = args.clone();
            v.extend_from_slice(extra);
            run(&a, GRASP, &v)
        };
        let o = with(&["sync", "EX.sec"]);
        assert!(o.status.success(), "{security}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("EX.sec = \"{security}\"")),
            "{security}: {}",
            text(&o)
        );
        let o = with(&["negotiate", "EX3", "[\"NZD\", 30]"]);
        assert!(o.status.success(), "{security}: {}", text(&o));
        // The other side's counters show the backend at work.
        let o = run(
            &b,
            GRASP,
            &["--json", "stats", "--control", sock.to_str().unwrap()],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["security"], security);
        match security {
            "quads" => assert!(v["quads"]["opened"].as_u64().unwrap() >= 2, "{v}"),
            _ => {
                assert_eq!(v["tls"]["identity"], "b.lab", "{v}");
                assert!(v["tls"]["streams_accepted"].as_u64().unwrap() >= 2, "{v}");
            }
        }
        // Without the key, nothing: QUADS drops the stranger, exit 3.
        if security == "quads" {
            let o = run(
                &a,
                GRASP,
                &[
                    "--security",
                    "none",
                    "-i",
                    "ab0",
                    "--timeout-ms",
                    "500",
                    "discover",
                    "EX.sec",
                ],
            );
            assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        }
    }
}

#[test]
fn graspd_started_before_its_link_uses_it_when_it_appears() {
    if Lab::skip_loudly("graspd_started_before_its_link_uses_it_when_it_appears") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns().unwrap();
    let b = lab.netns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (conf, sock) = daemon_config(
        dir.path(),
        "late",
        "security = \"none\"\ninterfaces = [\"late0\"]\nrescan_secs = 1\n[[serve]]\nname = \"EX.late\"\nvalue = \"2\"",
    );
    let o = check_config(&b, &conf);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not usable yet: late0"), "{}", text(&o));
    let _d = start_graspd(&b, &conf, &sock, &dir.path().join("late.log"));
    // The link appears after graspd started.
    lab.link(3, (&a, "la0"), (&b, "late0")).unwrap();
    let mut found = None;
    wait_for("graspd to use its new link", || {
        let o = grasp(&a, "la0", &["--timeout-ms", "500", "sync", "EX.late"]);
        found = Some(text(&o));
        o.status.success()
    });
    assert!(found.unwrap().contains("EX.late = 2"));
}

#[test]
fn listen_self_lets_two_nodes_on_one_host_find_each_other() {
    if Lab::skip_loudly("listen_self_lets_two_nodes_on_one_host_find_each_other") {
        return;
    }
    let mut lab = Lab::new();
    let (_a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (conf, sock) = daemon_config(
        dir.path(),
        "self",
        "security = \"none\"\ninterfaces = [\"ba0\"]\nlisten_self = true\n[[serve]]\nname = \"EX.self\"\nvalue = \"3\"",
    );
    let _d = start_graspd(&b, &conf, &sock, &dir.path().join("self.log"));
    // Another node on the same host and link finds graspd only when its
    // own multicasts loop back to the host (listen_self).
    let o = grasp(&b, "ba0", &["--listen-self", "sync", "EX.self"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("EX.self = 3"), "{}", text(&o));
    let o = grasp(&b, "ba0", &["--timeout-ms", "500", "discover", "EX.self"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "without listen_self: {}",
        text(&o)
    );
}

#[test]
fn the_command_line_haggles_answers_invalid_serves_rapid_and_floods_several() {
    let test = "the_command_line_haggles_answers_invalid_serves_rapid_and_floods_several";
    if Lab::skip_loudly(test) {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serve = |name: &str, args: &[&str]| {
        let mut all = vec!["--security", "none", "-i", "ba0"];
        all.extend_from_slice(args);
        Reap(spawn(
            &b,
            GRASP,
            &all,
            &dir.path().join(format!("{name}.log")),
        ))
    };
    let out = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.out"))).unwrap_or_default()
    };
    // The responder of the vectors' haggle: counter 100, then 5 less each
    // round; accept a request of 110 or less; at most 3 counter-offers.
    let mut haggler = serve(
        "haggle",
        &[
            "listen-negotiate",
            "EX.haggle",
            "--counter",
            "[\"NZD\", 100]",
            "--rounds",
            "3",
            "--step",
            "-5",
            "--accept-at",
            "110",
            "--seconds",
            "30",
        ],
    );
    let mut invalid = serve(
        "invalid",
        &[
            "listen-negotiate",
            "EX.bad",
            "--invalid",
            "\"Surprise!\"",
            "--seconds",
            "30",
        ],
    );
    let mut rapid = serve(
        "rapid",
        &["serve-sync", "EX.rapid", "7", "--rapid", "--seconds", "8"],
    );
    let mut watch = serve("watch", &["--json", "watch", "--seconds", "6"]);
    std::thread::sleep(Duration::from_millis(700));

    // The requester asks 150 and comes down 20 a round, never below its
    // floor: 150, (100), 130, (95), 110, accepted; with a floor of 140 it
    // gives up instead of asking 130.
    let haggle = |floor: &str| {
        let args = [
            "--timeout-ms",
            "3000",
            "negotiate",
            "EX.haggle",
            "[\"NZD\", 150]",
            "--rounds",
            "5",
            "--step",
            "-20",
            "--floor",
            floor,
        ];
        grasp(&a, "ab0", &args)
    };
    for (floor, want) in [
        ("90", "accepted after 3 offer(s)"),
        ("140", "130 would pass my floor of 140"),
    ] {
        let o = haggle(floor);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(want), "floor {floor}: {}", text(&o));
    }
    // A dry run is marked so on the wire: the responder says it saw one.
    let o = grasp(
        &a,
        "ab0",
        &[
            "--timeout-ms",
            "3000",
            "negotiate",
            "EX.haggle",
            "[\"NZD\", 100]",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // M_INVALID ends the request with an error.
    let o = grasp(
        &a,
        "ab0",
        &["--timeout-ms", "3000", "negotiate", "EX.bad", "1"],
    );
    assert!(
        !o.status.success(),
        "M_INVALID is not an answer: {}",
        text(&o)
    );
    // Rapid mode: the value comes in the discovery response.
    let o = grasp(&a, "ab0", &["sync", "EX.rapid"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("EX.rapid = 7"), "{}", text(&o));
    // Two objectives in one flood.
    let o = grasp(
        &a,
        "ab0",
        &[
            "flood",
            "EX.f1",
            "1",
            "EX.f2",
            "\"two\"",
            "--loop-count",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("flooded EX.f1 = 1") && text(&o).contains("flooded EX.f2 = \"two\""),
        "{}",
        text(&o)
    );
    let o = grasp(&a, "ab0", &["flood", "EX.f1", "1", "EX.f2"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an objective without its value: {}",
        text(&o)
    );

    assert!(watch.0.wait().unwrap().success());
    let seen = out("watch");
    let both = seen
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            let s = v.to_string();
            s.contains("M_FLOOD") && s.contains("EX.f1") && s.contains("EX.f2")
        });
    assert!(both, "one M_FLOOD carries both objectives: {seen}");
    assert!(rapid.0.wait().unwrap().success());
    assert!(
        out("rapid").contains("answered 0 synchronization request(s)"),
        "rapid sync needs no M_REQ_SYN: {}",
        out("rapid")
    );
    let _ = haggler.0.kill();
    let _ = haggler.0.wait();
    let _ = invalid.0.kill();
    let _ = invalid.0.wait();
    let h = out("haggle");
    assert!(h.contains("accepted 110 after 2 counter-offer(s)"), "{h}");
    assert!(h.contains("(dry run)"), "{h}");
    assert!(
        out("invalid").contains("answered M_INVALID"),
        "{}",
        out("invalid")
    );
}

/// The interface names graspd uses now, from its control socket.
fn used(rt: &tokio::runtime::Runtime, sock: &std::path::Path) -> Vec<String> {
    let v = rt
        .block_on(grasp_tools::control::request(sock, "stats"))
        .unwrap();
    v["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 2 ms for up to 5 s; how long until it held.
fn until(mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn graspd_follows_links_and_addresses_as_the_kernel_reports_them() {
    let test = "graspd_follows_links_and_addresses_as_the_kernel_reports_them";
    if Lab::skip_loudly(test) {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns().unwrap();
    let b = lab.netns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A minute between rescans: only the kernel's reports can explain
    // anything faster.
    let (conf, sock) = daemon_config(
        dir.path(),
        "nl",
        "security = \"none\"\ninterfaces = [\"nl0\", \"nl1\"]\nrescan_secs = 60",
    );
    let _d = start_graspd(&b, &conf, &sock, &dir.path().join("nl.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(used(&rt, &sock).is_empty());

    // A new link (addresses without DAD) is in use within 100 ms.
    lab.link(7, (&a, "na0"), (&b, "nl0")).unwrap();
    let took = until(|| used(&rt, &sock).contains(&"nl0".to_string())).expect("nl0 used");
    eprintln!("{test}: new link used after {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "new link used after {took:?}"
    );
    // A deleted one is dropped within 100 ms.
    lab.del_link(&b, "nl0").unwrap();
    let took = until(|| !used(&rt, &sock).contains(&"nl0".to_string())).expect("nl0 dropped");
    eprintln!("{test}: deleted link dropped after {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "deleted link dropped after {took:?}"
    );

    // A link whose link-local address goes through duplicate address
    // detection is not used while the address is tentative, and is used
    // within 100 ms of it becoming valid.
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // A veth pair A:ours - B:theirs, link-local addresses fe80::N:1 and
    // fe80::N:2 with duplicate address detection.
    let dad_link = |ours: &str, theirs: &str, n: u8| {
        ip(&[
            "-n", &a.name, "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns",
            &b.name,
        ]);
        for (ns, dev, end) in [(&a.name, ours, 1), (&b.name, theirs, 2)] {
            let ll = format!("fe80::{n}:{end}/64");
            ip(&["-n", ns, "link", "set", dev, "addrgenmode", "none"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", &ll, "dev", dev]);
        }
    };
    dad_link("nb0", "nl1", 8);
    let tentative =
        || ip(&["-n", &b.name, "-6", "addr", "show", "dev", "nl1"]).contains("tentative");
    let mut seen_tentative = 0;
    let valid_after = until(|| {
        let now = used(&rt, &sock);
        let t = tentative();
        if t {
            seen_tentative += 1;
            assert!(
                !now.contains(&"nl1".to_string()),
                "nl1 used while its address is tentative"
            );
        }
        !t
    })
    .expect("DAD ends");
    assert!(
        seen_tentative > 0,
        "the address was never seen tentative (DAD did not run)"
    );
    let took = until(|| used(&rt, &sock).contains(&"nl1".to_string())).expect("nl1 used");
    eprintln!("{test}: DAD took {valid_after:?}; the link was used {took:?} after");
    assert!(
        took < Duration::from_millis(100),
        "nl1 used {took:?} after DAD ended"
    );

    // A one-shot grasp on a link still in DAD waits for it instead of
    // failing (the README's demo has no `sleep` for it).
    dad_link("nc0", "nc1", 9);
    let o = grasp(&a, "nc0", &["--timeout-ms", "200", "discover", "EX.nobody"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "it ran (nothing to find), not refused the link: {}",
        text(&o)
    );
}
