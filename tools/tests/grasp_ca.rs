//! grasp-ca end to end: init, issue, inspect, and the refusals.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn ca(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grasp-ca"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn init_issue_inspect() {
    let d = tempfile::tempdir().unwrap();
    let cadir = d.path().join("ca");
    let nodes = d.path().join("nodes");
    let (c, n) = (cadir.to_str().unwrap(), nodes.to_str().unwrap());
    let o = ca(&["init", "--domain", "lab", "--dir", c]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cadir.join("ca.key")), 0o600);
    // A second init does not clobber the CA.
    let o = ca(&["init", "--domain", "lab", "--dir", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--force"), "{}", text(&o));

    let o = ca(&["issue", "node1.lab", "--ca", c, "--out", n]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("node node1.lab"), "{}", text(&o));
    assert_eq!(mode(&nodes.join("node1.lab.key")), 0o600);
    // The node's files load as a node identity.
    let id = grasp_tls::NodeIdentity::load(
        &nodes.join("node1.lab.crt"),
        &nodes.join("node1.lab.key"),
        &cadir.join("ca.crt"),
    )
    .unwrap();
    assert_eq!(id.name, "node1.lab");

    let o = ca(&["inspect", nodes.join("node1.lab.crt").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("node1.lab") && t.contains("GRASP domain CA lab"),
        "{t}"
    );
    assert!(!t.contains("PRIVATE"), "{t}");

    // A CA key others can read is refused.
    std::fs::set_permissions(cadir.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ca(&["issue", "node2.lab", "--ca", c, "--out", n]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    // Bad input.
    assert!(!ca(&["issue"]).status.success());
    let o = ca(&["inspect", "/nonexistent.crt"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot read"), "{}", text(&o));
}
