//! graspd, grasp and grasp-lab as a user runs them, without root: bad
//! configurations and arguments (clear message, non-zero exit), decoding of
//! hex and of captures built from the graspy vectors (plain and QUADS),
//! and a lab run on every security backend. The commands that need a
//! network are exercised in namespaces by `netns_cli.rs`.

use std::path::Path;
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("GRASP_QUADS_PASSWORD")
        .env_remove("GRASP_CONFIG")
        .env_remove("RUST_LOG")
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

const GRASPD: &str = env!("CARGO_BIN_EXE_graspd");
const GRASP: &str = env!("CARGO_BIN_EXE_grasp");
const LAB: &str = env!("CARGO_BIN_EXE_grasp-lab");

fn config(dir: &Path, body: &str) -> String {
    let p = dir.join("graspd.toml");
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn graspd_refuses_bad_configurations_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("open.key");
    std::fs::write(&key, "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("colour = \"blue\"".into(), "unknown field"),
        ("security = \"ipsec\"".into(), "none, quads or tls"),
        ("security = \"quads\"".into(), "quadsmaker new"),
        ("security = \"tls\"".into(), "grasp-ca"),
        (
            "security = \"none\"\n[[serve]]\nname = \"EX.a\"\nvalue = \"[1,\"".into(),
            "serve[0].value",
        ),
        ("security = \"none\"\nasas = [\"hal9000\"]".into(), "briggs"),
        (
            "security = \"none\"\ndull = true\nrelay_only = true".into(),
            "DULL",
        ),
        (
            format!(
                "security = \"quads\"\n[quads]\nkey_file = \"{}\"",
                key.display()
            ),
            "chmod 600",
        ),
        ("port = 99999".into(), "port"),
    ];
    for (body, want) in cases {
        let c = config(dir.path(), &body);
        let o = run(GRASPD, &["--config", &c, "--check-config"]);
        assert_eq!(o.status.code(), Some(2), "{body:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{body:?}: {}", text(&o));
    }
    // Flags are checked too, and a missing file is named.
    let o = run(GRASPD, &["--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(GRASPD, &["--security", "ipsec", "--check-config"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("none, quads or tls"), "{}", text(&o));
    let o = run(GRASPD, &["--config", "/nonexistent/graspd.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("/nonexistent/graspd.toml"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_documented_example_configuration_parses() {
    // The example names files that exist only on a real node: --check-config
    // stops at them, after the TOML itself was accepted.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/graspd.toml");
    let o = run(GRASPD, &["--config", example, "--check-config"]);
    let t = text(&o);
    assert!(!t.contains("unknown field") && !t.contains("TOML"), "{t}");
    assert!(t.contains("/etc/grasp/"), "{t}");
}

#[test]
fn grasp_refuses_bad_arguments_and_values() {
    let o = run(GRASP, &["--security", "none", "flood", "EX.a", "[1,"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot read the value"), "{}", text(&o));
    let o = run(GRASP, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(GRASP, &["sync", "EX.a"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "QUADS is the default and needs a key"
    );
    assert!(text(&o).contains("--key-file"), "{}", text(&o));
    let o = run(GRASP, &["stats", "--control", "/nonexistent/graspd.sock"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot reach graspd"), "{}", text(&o));
    let o = run(GRASP, &["decode", "not-hex-and-not-a-file"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("neither an existing capture file"),
        "{}",
        text(&o)
    );
}

#[test]
fn grasp_decodes_hex_as_text_and_json() {
    // graspy's M_DISCOVERY for EX.neg, from the vectors.
    let hex = "84011afb620a5550fd000001000000000000000000000001846645582e6e65670306f6";
    let o = run(GRASP, &["decode", hex]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Message type: M_DISCOVERY"), "{t}");
    assert!(t.contains("Objective: EX.neg"), "{t}");
    assert!(t.contains("Flags: |Discoverable|Negotiable"), "{t}");
    let o = run(GRASP, &["--json", "decode", hex]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type"], "M_DISCOVERY");
    assert_eq!(
        v["cbor_diag"],
        "[1, 4217506389, h'fd000001000000000000000000000001', [\"EX.neg\", 3, 6, null]]"
    );
}

/// One captured packet: source, destination, TCP or UDP, payload.
struct Pkt {
    src: (std::net::Ipv6Addr, u16),
    dst: (std::net::Ipv6Addr, u16),
    tcp: bool,
    payload: Vec<u8>,
}

/// A pcap (raw IPv6) of `pkts`, in order, TCP sequence numbers per flow.
fn write_pcap(out: &Path, pkts: &[Pkt]) {
    let mut w = grasp_tools::capture::Writer::new();
    for (i, p) in pkts.iter().enumerate() {
        let (src, dst) = (p.src.into(), p.dst.into());
        let t = std::time::Duration::from_millis(i as u64);
        if p.tcp {
            w.tcp(t, src, dst, &p.payload).unwrap();
        } else {
            w.udp(t, src, dst, &p.payload).unwrap();
        }
    }
    std::fs::write(out, w.finish()).unwrap();
}

#[cfg(feature = "quads")]
/// `grasp decode CAP --key-file KEY --write-pcap OUT` writes the messages
/// in the clear: OUT decodes without a key to `expected` (hex), and is
/// readable by its owner only.
fn decrypts_to_a_capture(cap: &Path, key: &Path, expected: &[serde_json::Value]) {
    let out = cap.with_extension("plain.pcap");
    let o = run(
        GRASP,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "decode",
            cap.to_str().unwrap(),
            "--write-pcap",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("wrote {} messages", expected.len())),
        "{}",
        text(&o)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the plaintext capture is the owner's only");
    let got = decode_json(&out, None);
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (g, want) in got.iter().zip(expected) {
        assert_eq!(&g["hex"], want, "{g}");
    }
}

fn vector(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../tests/vectors/graspy/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pkt_of(m: &serde_json::Value, payload: Vec<u8>) -> Pkt {
    let addr = |k: &str, p: &str| {
        (
            m[k].as_str().unwrap().parse().unwrap(),
            m[p].as_u64().unwrap() as u16,
        )
    };
    Pkt {
        src: addr("src", "src_port"),
        dst: addr("dst", "dst_port"),
        tcp: m["transport"] == "tcp",
        payload,
    }
}

/// A pcap of every message of a vector capture, as captured.
fn pcap_of(vector_name: &str, out: &Path) -> Vec<serde_json::Value> {
    let msgs = vector(vector_name)["messages"].as_array().unwrap().clone();
    let pkts: Vec<Pkt> = msgs
        .iter()
        .map(|m| pkt_of(m, hex::decode(m["payload_hex"].as_str().unwrap()).unwrap()))
        .collect();
    write_pcap(out, &pkts);
    msgs
}

/// `grasp --json [--key-file K] decode CAP`, which must succeed: one JSON
/// object per message.
fn decode_json(cap: &Path, key: Option<&Path>) -> Vec<serde_json::Value> {
    let mut args = vec!["--json".to_string()];
    if let Some(k) = key {
        args.extend(["--key-file".to_string(), k.to_str().unwrap().to_string()]);
    }
    args.extend(["decode".to_string(), cap.to_str().unwrap().to_string()]);
    let o = run(GRASP, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[cfg(feature = "quads")]
#[test]
fn grasp_decrypts_our_quads_capture_with_a_key_file() {
    // The plaintext negotiation of the vectors, sealed as our QUADS would:
    // multicasts under the domain multicast key, the TCP session as one
    // channel (opening, answers, later records under the late key).
    let dir = tempfile::tempdir().unwrap();
    let kf = grasp_quads::KeyFile {
        domain: "lab".into(),
        params: grasp_quads::KdfParams::default(),
        master: grasp_quads::MasterSecret::from_bytes([7; 32]),
    };
    let keyfile = dir.path().join("lab.key");
    grasp_quads::write_key_file(&keyfile, &kf, false).unwrap();
    let sealer = grasp_quads::Sealer::new(grasp_quads::KeyRing::new(kf.key()), Default::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let msgs = vector("neg_accept.json")["messages"]
        .as_array()
        .unwrap()
        .clone();
    // One channel per TCP connection; its opener is its first sender.
    let mut chans = std::collections::HashMap::new();
    let mut pkts = Vec::new();
    for m in &msgs {
        let plain = hex::decode(m["payload_hex"].as_str().unwrap()).unwrap();
        let sealed = if m["transport"] != "tcp" {
            sealer.seal_multicast(now, &plain)
        } else {
            let from = (m["src"].to_string(), m["src_port"].to_string());
            let (opener, ini, res) = chans
                .entry(m["tcp_conn"].to_string())
                .or_insert_with(|| (from.clone(), sealer.initiator(), sealer.responder()));
            if from == *opener {
                let r = ini.seal(now, &plain).unwrap();
                res.open(now, &r).unwrap();
                r
            } else {
                let r = res.seal(now, &plain).unwrap();
                ini.open(now, &r).unwrap();
                r
            }
        };
        pkts.push(pkt_of(m, sealed));
    }
    let cap = dir.path().join("ours.pcap");
    write_pcap(&cap, &pkts);
    let got = decode_json(&cap, Some(&keyfile));
    assert_eq!(got.len(), msgs.len(), "{got:?}");
    for (g, m) in got.iter().zip(&msgs) {
        assert_eq!(g["hex"], m["payload_hex"], "{g}");
        assert_eq!(g["type"], m["grasp"]["name"]);
    }
    let plain: Vec<_> = msgs.iter().map(|m| m["payload_hex"].clone()).collect();
    decrypts_to_a_capture(&cap, &keyfile, &plain);
}

#[test]
fn grasp_decodes_a_plain_capture() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("sync.pcap");
    let msgs = pcap_of("sync.json", &cap);
    let got = decode_json(&cap, None);
    assert_eq!(got.len(), msgs.len(), "{got:?}");
    for (g, m) in got.iter().zip(&msgs) {
        assert_eq!(g["type"], m["grasp"]["name"], "{g}");
        assert_eq!(g["hex"], m["payload_hex"]);
    }
}

#[cfg(feature = "quads")]
#[test]
fn grasp_decrypts_a_graspy_quads_capture_with_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("neg.pcap");
    let msgs = pcap_of("neg_accept.quads.json", &cap);
    // graspy's key for the vectors' password, as quadsmaker graspy writes it.
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../tests/vectors/graspy/neg_accept.quads.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let key: [u8; 32] = hex::decode(v["quads"]["key_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let iv: [u8; 16] = hex::decode(v["quads"]["iv_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let quadsk = dir.path().join("quadsk.py");
    grasp_quads::legacy::write_quadsk(
        &quadsk,
        &grasp_quads::legacy::LegacyKey::from_parts(key, iv),
        false,
    )
    .unwrap();
    let got = decode_json(&cap, Some(&quadsk));
    assert_eq!(got.len(), msgs.len(), "{got:?}");
    for (g, m) in got.iter().zip(&msgs) {
        assert_eq!(g["hex"], m["decrypted_hex"], "{g}");
    }
    let plain: Vec<_> = msgs.iter().map(|m| m["decrypted_hex"].clone()).collect();
    decrypts_to_a_capture(&cap, &quadsk, &plain);
    // Without the key the ciphertexts are not GRASP.
    let o = run(GRASP, &["--json", "decode", cap.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("M_REQ_NEG"));
}

#[test]
fn grasp_lab_runs_on_every_backend() {
    for security in ["none", "quads", "tls"] {
        let o = run(LAB, &["--security", security, "--quiet"]);
        let t = text(&o);
        assert!(o.status.success(), "{security}: {t}");
        for want in [
            "discovery of EX2",
            "(relayed)",
            "[1, \"two\", 3]",
            "loop count 3 on arrival",
            "negotiation of EX3",
            "M_REQ_NEG",
            "N2 relayed",
            "lab OK",
        ] {
            assert!(t.contains(want), "{security}: missing {want:?} in {t}");
        }
    }
    let o = run(
        LAB,
        &["--security", "none", "--nodes", "5", "--topology", "ring"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Briggs on N4 (2 hop(s) away)"),
        "the farthest node of a 5-ring: {}",
        text(&o)
    );
    let o = run(
        LAB,
        &[
            "--security",
            "none",
            "--nodes",
            "6",
            "--topology",
            "grid",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Wider than graspy's loop count of 4: the lab's ASAs reach across.
    let o = run(LAB, &["--security", "none", "--nodes", "12", "--quiet"]);
    assert!(
        o.status.success() && text(&o).contains("lab OK"),
        "{}",
        text(&o)
    );
    for bad in [
        &["--topology", "star"][..],
        &["--nodes", "1"],
        &["--security", "ipsec"],
    ] {
        let o = run(LAB, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
    }
}

#[cfg(feature = "tls")]
#[test]
fn grasp_decode_reads_the_message_inside_a_tls_signed_multicast() {
    let (ca, key) = grasp_tls::certs::new_ca("lab", 1).unwrap();
    let (c, k) = grasp_tls::certs::issue_node(&ca, key.as_ref(), "a.lab", 1).unwrap();
    let id = grasp_tls::NodeIdentity::from_pem(&c, &k, &ca, std::time::SystemTime::now()).unwrap();
    let mc = grasp_tls::multicast::Multicast::new(&id).unwrap();
    // graspy's M_DISCOVERY for EX.neg, signed as the TLS backend sends it.
    let msg = hex::decode("84011afb620a5550fd000001000000000000000000000001846645582e6e65670306f6")
        .unwrap();
    let signed = mc.sign(std::time::SystemTime::now(), &msg).unwrap();
    let o = run(GRASP, &["--json", "decode", &hex::encode(&signed)]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type"], "M_DISCOVERY", "{v}");
    assert_eq!(v["hex"], hex::encode(&msg));
}
