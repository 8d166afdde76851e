//! The Wireshark dissector (`tools/wireshark/grasp.lua`) under tshark, on
//! captures built from the graspy vectors (`tests/vectors/graspy/*.json`):
//! every field of every message decodes to what the vector records, with
//! each TCP message in one segment, split over two, and several in one;
//! a graspy QUADS capture decrypted by `grasp decode --write-pcap` decodes
//! likewise; and a capture of mangled messages decodes without a Lua error.
//! Without tshark the test says loudly that it was skipped (CI installs it).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value as J;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plugin() -> PathBuf {
    repo().join("tools/wireshark/grasp.lua")
}

fn tshark_or_skip(test: &str) -> bool {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!(
        "{test}: WARNING: tshark is not installed; this test was SKIPPED (apt install tshark)"
    );
    false
}

fn vectors() -> Vec<(String, J)> {
    let dir = repo().join("tests/vectors/graspy");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("vectors directory") {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.ends_with(".quads.json") {
            out.push((
                name,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 13, "all thirteen plain captures");
    out
}

/// How TCP messages go into segments.
#[derive(Clone, Copy, Debug)]
enum Segments {
    /// One message, one segment.
    One,
    /// Each message split after its first byte.
    Split,
    /// Messages back to back in one direction share a segment.
    Coalesced,
}

/// A capture being built: the vectors' packets in order, one per 1 ms.
struct Capture {
    w: grasp_tools::capture::Writer,
    n: u64,
}

impl Capture {
    fn new() -> Capture {
        Capture {
            w: grasp_tools::capture::Writer::new(),
            n: 0,
        }
    }

    fn tick(&mut self) -> Duration {
        self.n += 1;
        Duration::from_millis(self.n)
    }

    fn udp(&mut self, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) {
        let t = self.tick();
        let (s, d) = ((src, sport).into(), (dst, dport).into());
        self.w.udp(t, s, d, payload).unwrap();
    }

    fn tcp(&mut self, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) {
        let t = self.tick();
        let (s, d) = ((src, sport).into(), (dst, dport).into());
        self.w.tcp(t, s, d, payload).unwrap();
    }

    fn write(self, path: &Path) {
        std::fs::write(path, self.w.finish()).unwrap();
    }
}

fn addr(m: &J, k: &str) -> Ipv6Addr {
    m[k].as_str().unwrap().parse().unwrap()
}

/// The vectors' messages as a capture; returns each message's expected
/// fields, in capture order.
fn build(vs: &[(String, J)], how: Segments, path: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut cap = Capture::new();
    let mut expected = Vec::new();
    for (name, v) in vs {
        let msgs = v["messages"].as_array().unwrap();
        let mut k = 0;
        while k < msgs.len() {
            let m = &msgs[k];
            let payload = hex::decode(m["payload_hex"].as_str().unwrap()).unwrap();
            let (src, dst) = (addr(m, "src"), addr(m, "dst"));
            let (sp, dp) = (
                m["src_port"].as_u64().unwrap() as u16,
                m["dst_port"].as_u64().unwrap() as u16,
            );
            expected.push((format!("{name}#{}", m["index"]), fields(&m["grasp"])));
            if m["transport"] == "udp-multicast" {
                cap.udp(src, sp, dst, dp, &payload);
                k += 1;
                continue;
            }
            match how {
                Segments::One => cap.tcp(src, sp, dst, dp, &payload),
                Segments::Split => {
                    cap.tcp(src, sp, dst, dp, &payload[..1]);
                    cap.tcp(src, sp, dst, dp, &payload[1..]);
                }
                Segments::Coalesced => {
                    // The next messages of the same stream and direction
                    // (in the same capture) ride along.
                    let mut all = payload.clone();
                    while let Some(n) = msgs.get(k + 1) {
                        let same = n["transport"] == "tcp"
                            && n["capture"] == m["capture"]
                            && n["src"] == m["src"]
                            && n["src_port"] == m["src_port"]
                            && n["dst"] == m["dst"]
                            && n["dst_port"] == m["dst_port"];
                        if !same {
                            break;
                        }
                        k += 1;
                        expected.push((format!("{name}#{}", n["index"]), fields(&n["grasp"])));
                        all.extend(hex::decode(n["payload_hex"].as_str().unwrap()).unwrap());
                    }
                    cap.tcp(src, sp, dst, dp, &all);
                }
            }
            k += 1;
        }
    }
    cap.write(path);
    expected
}

fn push(out: &mut Vec<(String, String)>, k: &str, v: impl ToString) {
    out.push((format!("grasp.{k}"), v.to_string()));
}

fn objective(out: &mut Vec<(String, String)>, o: &J) {
    push(out, "objective.name", o["name"].as_str().unwrap());
    let flags = o["flags"].as_u64().unwrap();
    push(out, "objective.flags", format!("0x{flags:02x}"));
    for (bit, f) in [(1, "disc"), (2, "neg"), (4, "synch"), (8, "neg_dry")] {
        push(
            out,
            &format!("objective.flags.{f}"),
            u64::from(flags & bit != 0),
        );
    }
    push(
        out,
        "objective.loop_count",
        o["loop_count"].as_u64().unwrap(),
    );
}

fn locator(out: &mut Vec<(String, String)>, l: &J) {
    push(out, "option", l["option"].as_u64().unwrap());
    if let Some(a) = l.get("locator") {
        let kind = match l["option"].as_u64() {
            Some(103) => "ipv6",
            Some(104) => "ipv4",
            Some(105) => "fqdn",
            _ => "uri",
        };
        push(out, &format!("locator.{kind}"), a.as_str().unwrap());
    }
    for k in ["protocol", "port"] {
        if let Some(x) = l.get(k).and_then(J::as_u64) {
            push(out, &format!("locator.{k}"), x);
        }
    }
}

/// The fields a message's vector record says the dissector must show.
fn fields(g: &J) -> Vec<(String, String)> {
    let mut out = Vec::new();
    push(&mut out, "type", g["type"].as_u64().unwrap());
    if let Some(s) = g.get("session_id") {
        push(&mut out, "session_id", s.as_u64().unwrap());
    }
    if let Some(i) = g.get("initiator") {
        push(&mut out, "initiator", i.as_str().unwrap());
    }
    if let Some(t) = g.get("ttl_ms") {
        push(&mut out, "ttl", t.as_u64().unwrap());
    }
    if let Some(w) = g.get("waiting_time_ms") {
        push(&mut out, "waiting_time", w.as_u64().unwrap());
    }
    if let Some(o) = g.get("objective") {
        objective(&mut out, o);
    }
    for o in g.get("options").and_then(J::as_array).into_iter().flatten() {
        locator(&mut out, o);
        for e in o
            .get("embedded")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            locator(&mut out, e);
        }
    }
    if let Some(o) = g.get("option") {
        push(&mut out, "option", o["option"].as_u64().unwrap());
        if let Some(r) = o.get("reason") {
            push(&mut out, "decline.reason", r.as_str().unwrap());
        }
    }
    for t in g
        .get("tagged_objectives")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        objective(&mut out, &t["objective"]);
        if t["locator"].is_null() {
            push(&mut out, "locator.none", "");
        } else {
            locator(&mut out, &t["locator"]);
        }
    }
    out.sort();
    out
}

/// tshark's JSON of `path` through the plugin.
fn tshark(path: &Path) -> (Vec<J>, String) {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .arg("-X")
        .arg(format!("lua_script:{}", plugin().display()))
        .args([
            "-o",
            "tcp.desegment_tcp_streams:TRUE",
            "-o",
            "tcp.try_heuristic_first:TRUE",
            "-T",
            "json",
            "--no-duplicate-keys",
        ])
        .output()
        .expect("tshark runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tshark failed: {stderr}");
    let frames: Vec<J> = serde_json::from_slice(&out.stdout).expect("tshark's JSON");
    (frames, stderr)
}

/// Every GRASP message tshark shows, in order: its leaf fields, sorted.
fn shown(frames: &[J]) -> Vec<Vec<(String, String)>> {
    fn leaves(v: &J, out: &mut Vec<(String, String)>) {
        match v {
            J::Object(m) => {
                for (k, x) in m {
                    match x {
                        J::String(s) if k.starts_with("grasp.") => {
                            // Values are kept whole; the field list is what is compared.
                            if k != "grasp.objective.value"
                                && k != "grasp.objective"
                                && k != "grasp.tagged_objective"
                                && k != "grasp.extra"
                                && k != "grasp.invalid.content"
                            {
                                out.push((k.clone(), s.clone()));
                            }
                        }
                        J::Array(a) if k.starts_with("grasp.") && a.iter().all(J::is_string) => {
                            for s in a {
                                out.push((k.clone(), s.as_str().unwrap_or_default().to_string()));
                            }
                        }
                        _ if k.starts_with("cbor") => {} // the value, as Wireshark's CBOR dissector shows it
                        _ => leaves(x, out),
                    }
                }
            }
            J::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for f in frames {
        let layers = &f["_source"]["layers"];
        let g = &layers["grasp"];
        let msgs: Vec<&J> = match g {
            J::Array(a) => a.iter().collect(),
            J::Object(_) => vec![g],
            _ => vec![],
        };
        for m in msgs {
            let mut out = Vec::new();
            leaves(m, &mut out);
            // tshark names text-only items after their label; keep the
            // filterable fields.
            out.retain(|(k, _)| k.starts_with("grasp."));
            for (k, v) in out.iter_mut() {
                if k == "grasp.locator.none" {
                    v.clear();
                }
                if k == "grasp.session_id" {
                    // base.DEC_HEX shows the decimal value.
                    *v = v.split_whitespace().next().unwrap_or_default().to_string();
                }
            }
            out.sort();
            all.push(out);
        }
    }
    all
}

#[test]
fn every_vector_message_decodes_as_recorded() {
    if !tshark_or_skip("wireshark") {
        return;
    }
    let vs = vectors();
    let dir = tempfile::tempdir().unwrap();
    for how in [Segments::One, Segments::Split, Segments::Coalesced] {
        let path = dir.path().join(format!("{how:?}.pcap"));
        let expected = build(&vs, how, &path);
        let (frames, stderr) = tshark(&path);
        assert!(!stderr.contains("Lua"), "{how:?}: Lua complained: {stderr}");
        let got = shown(&frames);
        assert_eq!(
            got.len(),
            expected.len(),
            "{how:?}: one GRASP message per vector message"
        );
        for ((what, want), got) in expected.iter().zip(&got) {
            assert_eq!(got, want, "{how:?}: {what}");
        }
        let text = String::from_utf8_lossy(&frames_text(&path)).into_owned();
        assert!(!text.contains("Lua Error"), "{how:?}: a Lua error: {text}");
        assert!(
            !text.contains("Expert Info (Error/Malformed)"),
            "{how:?}: the vectors are well-formed GRASP"
        );
    }
}

/// tshark's verbose text of `path` (expert infos and Lua errors show here).
fn frames_text(path: &Path) -> Vec<u8> {
    let out = Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(path)
        .arg("-X")
        .arg(format!("lua_script:{}", plugin().display()))
        .args(["-o", "tcp.try_heuristic_first:TRUE"])
        .output()
        .expect("tshark runs");
    assert!(out.status.success());
    let mut all = out.stdout;
    all.extend(out.stderr);
    all
}

/// A deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mangled_messages_decode_without_a_lua_error() {
    if !tshark_or_skip("wireshark") {
        return;
    }
    let payloads: Vec<Vec<u8>> = vectors()
        .iter()
        .flat_map(|(_, v)| v["messages"].as_array().unwrap().clone())
        .map(|m| hex::decode(m["payload_hex"].as_str().unwrap()).unwrap())
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cap = Capture::new();
    let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00:1::1".parse().unwrap(), "fd00:1::2".parse().unwrap());
    // Hand-made nasties: deep nesting, lying lengths, indefinite items
    // without a break, reserved heads, huge counts, a lone break.
    let mut nasty: Vec<Vec<u8>> = vec![
        vec![0x81; 5000],
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![
            0x84, 0x01, 0x1a, 0, 0, 0, 1, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        vec![0x9f, 0x01, 0x02],
        vec![0x5f, 0x41, 0x00, 0x61, 0x00, 0xff],
        vec![0x84, 0x1c, 0x1d, 0x1e, 0xff],
        vec![0xff],
        vec![0x84, 0x09, 0x00, 0x50, 0x00],
        vec![
            0x85, 0x02, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1b, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x84, 0x18, 0x67, 0x50,
        ],
        vec![0x83, 0x06, 0x00, 0x82, 0x18, 0x66, 0x63, 0xff, 0xfe, 0xfd],
        vec![0xd8, 0x18, 0x84, 0x01, 0x02, 0x03],
    ];
    for _ in 0..600 {
        let mut p = payloads[rng.below(payloads.len())].clone();
        match rng.below(4) {
            0 => {
                let n = rng.below(p.len());
                p.truncate(n);
            }
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            _ => {
                let i = rng.below(p.len());
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                p.splice(i..i, junk);
            }
        }
        nasty.push(p);
    }
    for (k, p) in nasty.iter().enumerate() {
        if k % 2 == 0 {
            cap.udp(a, 40000, "ff02::13".parse().unwrap(), 7017, p);
        } else {
            // Each on a stream of its own, to port 7017 and to the
            // heuristic on another port.
            let port = if k % 4 == 1 { 7017 } else { 45000 };
            cap.tcp(a, 30000 + k as u16, b, port, p);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mangled.pcap");
    cap.write(&path);
    let text = String::from_utf8_lossy(&frames_text(&path)).into_owned();
    assert!(
        !text.contains("Lua Error"),
        "a Lua error: {}",
        &text[text.find("Lua Error").unwrap_or(0)..][..400.min(text.len())]
    );
    assert!(
        !text.contains("GRASP dissector error"),
        "the dissector failed on mangled input"
    );
    assert!(
        text.contains("Expert Info (Error/Malformed)"),
        "mangled messages are flagged"
    );
}

#[cfg(feature = "quads")]
#[test]
fn a_quads_capture_decrypted_by_grasp_decode_reads_in_wireshark() {
    if !tshark_or_skip("wireshark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = "neg_accept.quads.json";
    let v: J = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/vectors/graspy").join(name)).unwrap(),
    )
    .unwrap();
    // The ciphertexts as captured; graspy's key as quadsmaker graspy writes it.
    let mut cap = Capture::new();
    let mut expected = Vec::new();
    for m in v["messages"].as_array().unwrap() {
        let p = hex::decode(m["payload_hex"].as_str().unwrap()).unwrap();
        let (src, dst) = (addr(m, "src"), addr(m, "dst"));
        let (sp, dp) = (
            m["src_port"].as_u64().unwrap() as u16,
            m["dst_port"].as_u64().unwrap() as u16,
        );
        if m["transport"] == "tcp" {
            cap.tcp(src, sp, dst, dp, &p);
        } else {
            cap.udp(src, sp, dst, dp, &p);
        }
        expected.push((format!("{name}#{}", m["index"]), fields(&m["grasp"])));
    }
    let sealed = dir.path().join("sealed.pcap");
    cap.write(&sealed);
    let part = |k: &str| -> Vec<u8> { hex::decode(v["quads"][k].as_str().unwrap()).unwrap() };
    let key = grasp_quads::legacy::LegacyKey::from_parts(
        part("key_hex").try_into().unwrap(),
        part("iv_hex").try_into().unwrap(),
    );
    let quadsk = dir.path().join("quadsk.py");
    grasp_quads::legacy::write_quadsk(&quadsk, &key, false).unwrap();
    // Sealed, Wireshark sees no GRASP; decrypted, every field.
    let (frames, _) = tshark(&sealed);
    assert!(shown(&frames)
        .iter()
        .all(|m| !m.iter().any(|(k, _)| k == "grasp.session_id")));
    let plain = dir.path().join("plain.pcap");
    let o = Command::new(env!("CARGO_BIN_EXE_grasp"))
        .arg("--key-file")
        .arg(&quadsk)
        .arg("decode")
        .arg(&sealed)
        .arg("--write-pcap")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (frames, stderr) = tshark(&plain);
    assert!(!stderr.contains("Lua"), "{stderr}");
    let got = shown(&frames);
    assert_eq!(got.len(), expected.len());
    for ((what, want), got) in expected.iter().zip(&got) {
        assert_eq!(got, want, "{what}");
    }
}
