//! graspy's QUADS checked against real graspy traffic
//! (`tests/vectors/graspy/*.quads.json`): every captured message decrypts to
//! the plaintext recorded there, encrypting that plaintext gives the
//! captured bytes, and each TCP connection's byte stream splits into exactly
//! its messages.
#![cfg(feature = "quads-legacy")]

use std::path::PathBuf;

use grasp_engine::wire::Limits;
use grasp_quads::legacy::LegacyKey;
use grasp_quads::Password;
use serde_json::Value as J;

fn vectors() -> Vec<(String, J)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/graspy");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("vectors directory") {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".quads.json") {
            let j: J = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((name, j));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 13, "all thirteen QUADS captures");
    out
}

#[test]
fn every_captured_message_decrypts_and_reencrypts_byte_identical() {
    let mut n = 0;
    for (name, v) in vectors() {
        let q = &v["quads"];
        let key =
            LegacyKey::from_password(&Password::new(q["password"].as_str().unwrap()).unwrap());
        assert_eq!(
            hex::encode(key.expose().0),
            q["key_hex"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex::encode(key.expose().1),
            q["iv_hex"].as_str().unwrap(),
            "{name}"
        );
        for m in v["messages"].as_array().unwrap() {
            let ct = hex::decode(m["payload_hex"].as_str().unwrap()).unwrap();
            let pt = hex::decode(m["decrypted_hex"].as_str().unwrap()).unwrap();
            let idx = &m["index"];
            assert_eq!(key.decrypt(&ct).unwrap(), pt, "{name} #{idx}: decrypt");
            assert_eq!(key.encrypt(&pt), ct, "{name} #{idx}: encrypt");
            // And the plaintext is a GRASP message our codec reads.
            grasp_engine::wire::Message::decode(&bytes::Bytes::from(pt.clone()))
                .unwrap_or_else(|e| panic!("{name} #{idx}: {e}"));
            n += 1;
        }
    }
    assert!(n > 90, "{n} messages checked");
}

#[test]
fn tcp_streams_split_into_their_messages() {
    let limits = Limits::default();
    let mut conns = 0;
    for (name, v) in vectors() {
        let q = &v["quads"];
        let key =
            LegacyKey::from_password(&Password::new(q["password"].as_str().unwrap()).unwrap());
        let msgs = v["messages"].as_array().unwrap();
        for c in v["tcp_connections"].as_array().unwrap() {
            // Each direction of the connection, as one byte stream.
            for from in ["client", "server"] {
                let addr = c[from]["addr"].as_str().unwrap();
                let port = c[from]["port"].as_u64().unwrap();
                let parts: Vec<Vec<u8>> = c["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| &msgs[i.as_u64().unwrap() as usize])
                    .filter(|m| m["src"] == addr && m["src_port"].as_u64() == Some(port))
                    .filter(|m| m["capture"] == c["capture"])
                    .map(|m| hex::decode(m["payload_hex"].as_str().unwrap()).unwrap())
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                let stream: Vec<u8> = parts.concat();
                let mut rest = &stream[..];
                for (i, p) in parts.iter().enumerate() {
                    let n = key
                        .split(rest, &limits)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{name}: message {i} not found"));
                    assert_eq!(&rest[..n], &p[..], "{name}: message {i}");
                    rest = &rest[n..];
                }
                assert!(rest.is_empty());
                conns += 1;
            }
        }
    }
    assert!(conns > 20, "{conns} streams split");
}
