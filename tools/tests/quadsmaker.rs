//! quadsmaker end to end: the binary as a user runs it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn quadsmaker(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quadsmaker"));
    c.args(args)
        .env_remove("GRASP_QUADS_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        // A run that refuses before reading its password closes stdin
        // first: a broken pipe here is that run's business, not an error.
        if let Err(e) = child.stdin.take().unwrap().write_all(s.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FAST: [&str; 6] = ["--m-kib", "64", "--t", "1", "--p", "1"];

#[test]
fn new_show_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("lab.key");
    let k = key.to_str().unwrap();
    let mut args = vec!["new", "--domain", "example", "--out", k, "--password-stdin"];
    args.extend(FAST);
    let o = quadsmaker(&args, Some("grasp-test-password\n"));
    assert!(o.status.success(), "{}", text(&o));
    // The known-answer key id of ("grasp-test-password", "example", 64 KiB, t=1).
    assert!(text(&o).contains("key id 3249f5db67bf18b1"), "{}", text(&o));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let o = quadsmaker(&["show", k], None);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("3249f5db67bf18b1") && t.contains("m=64 KiB"),
        "{t}"
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    let master = secret
        .lines()
        .find_map(|l| l.strip_prefix("master = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(!t.contains(master), "show never prints key material");

    // No overwrite without --force; with it, fine.
    let o = quadsmaker(&args, Some("grasp-test-password\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let mut forced = args.clone();
    forced.push("--force");
    assert!(quadsmaker(&forced, Some("other\n")).status.success());

    // Empty password refused, nothing written.
    let empty = dir.path().join("empty.key");
    let mut a2 = vec![
        "new",
        "--domain",
        "x",
        "--out",
        empty.to_str().unwrap(),
        "--password-stdin",
    ];
    a2.extend(FAST);
    let o = quadsmaker(&a2, Some("\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("empty"), "{}", text(&o));
    assert!(!empty.exists());

    // The environment variable works for automation.
    let o = Command::new(env!("CARGO_BIN_EXE_quadsmaker"))
        .args([
            "new",
            "--domain",
            "example",
            "--out",
            empty.to_str().unwrap(),
        ])
        .args(FAST)
        .env("GRASP_QUADS_PASSWORD", "grasp-test-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(text(&o).contains("key id 3249f5db67bf18b1"), "{}", text(&o));

    // A key file others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = quadsmaker(&["show", k], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));

    // Bad arguments: clap's usage error, non-zero.
    let o = quadsmaker(&["new", "--domain", "x"], None);
    assert!(!o.status.success());
    let o = quadsmaker(
        &[
            "new",
            "--domain",
            "x",
            "--out",
            "/nonexistent/dir/k",
            "--m-kib",
            "1",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("argon2 memory"), "{}", text(&o));
}

#[test]
fn graspy_quadsk_py_write_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("quadsk.py");
    let o = quadsmaker(
        &["graspy", "--out", f.to_str().unwrap(), "--password-stdin"],
        Some("grasp-test-password\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no integrity"), "{}", text(&o));
    // graspy's key for this password (tests/vectors/graspy/README.md),
    // written as Python's str(bytes).
    let k = grasp_quads::legacy::read_quadsk(&f).unwrap();
    assert_eq!(
        hex::encode(k.expose().0),
        "2f2196135afeed4bda313d75393b38748d3ede7a829458ce79b7c182815c859a"
    );
    let body = std::fs::read_to_string(&f).unwrap();
    assert!(
        body.starts_with("key=b'/!\\x96\\x13Z\\xfe\\xedK\\xda1=u9;8t"),
        "{body}"
    );
    let o = quadsmaker(&["show", f.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("graspy legacy"), "{}", text(&o));
}
