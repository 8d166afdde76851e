//! Golden bytes from graspy: every plaintext message captured between two
//! graspy instances (tests/vectors/graspy, copied from the project's shared
//! vectors) must decode to the structure its `grasp` summary describes, print
//! as its `cbor_diag`, and re-encode to exactly the captured bytes.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

use bytes::Bytes;
use grasp_engine::wire::{EndOption, Locator, Message, Objective, ResponseTarget, Value};
use serde_json::Value as Json;

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/graspy")
}

fn plaintext_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(vector_dir())
        .expect("vector directory tests/vectors/graspy")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".json") && !n.ends_with(".quads.json")
        })
        .collect();
    files.sort();
    files
}

fn check_objective(o: &Objective, j: &Json, ctx: &str) {
    assert_eq!(o.name, j["name"].as_str().unwrap(), "{ctx} name");
    assert_eq!(o.flags.bits(), j["flags"].as_u64().unwrap(), "{ctx} flags");
    assert_eq!(
        u64::from(o.loop_count),
        j["loop_count"].as_u64().unwrap(),
        "{ctx} loop"
    );
    match (&o.value, j.get("value_diag")) {
        (Some(v), Some(d)) => assert_eq!(v.to_string(), d.as_str().unwrap(), "{ctx} value"),
        (None, None) => {}
        (v, d) => panic!("{ctx}: value {v:?} vs summary {d:?}"),
    }
}

fn check_locator(l: &Locator, j: &Json, ctx: &str) {
    let Locator::Ipv6 {
        addr,
        protocol,
        port,
    } = l
    else {
        panic!("{ctx}: graspy only sends IPv6 locators, got {l:?}")
    };
    assert_eq!(j["option"], 103, "{ctx}");
    assert_eq!(
        addr.to_string(),
        j["locator"].as_str().unwrap(),
        "{ctx} addr"
    );
    assert_eq!(
        u64::from(protocol.0),
        j["protocol"].as_u64().unwrap(),
        "{ctx} proto"
    );
    assert_eq!(u64::from(*port), j["port"].as_u64().unwrap(), "{ctx} port");
}

fn check_initiator(a: &IpAddr, j: &Json, ctx: &str) {
    assert_eq!(
        a.to_string(),
        j["initiator"].as_str().unwrap(),
        "{ctx} initiator"
    );
}

fn check_structure(m: &Message, g: &Json, ctx: &str) {
    assert_eq!(
        u64::from(u8::from(m.msg_type())),
        g["type"].as_u64().unwrap(),
        "{ctx} type"
    );
    assert_eq!(
        m.msg_type().to_string(),
        g["name"].as_str().unwrap(),
        "{ctx}"
    );
    if let Some(sid) = g.get("session_id") {
        assert_eq!(
            u64::from(m.session_id().unwrap().0),
            sid.as_u64().unwrap(),
            "{ctx} session"
        );
    }
    match m {
        Message::Noop => {}
        Message::Discovery(d) => {
            check_initiator(&d.initiator, g, ctx);
            check_objective(&d.objective, &g["objective"], ctx);
            assert!(d.extensions.is_empty());
        }
        Message::Response(r) => {
            check_initiator(&r.initiator, g, ctx);
            assert_eq!(
                u64::from(r.ttl_ms),
                g["ttl_ms"].as_u64().unwrap(),
                "{ctx} ttl"
            );
            let opts = g["options"].as_array().unwrap();
            match &r.target {
                ResponseTarget::Locators(locs) => {
                    assert_eq!(locs.len(), opts.len(), "{ctx}");
                    for (l, j) in locs.iter().zip(opts) {
                        check_locator(l, j, ctx);
                    }
                }
                ResponseTarget::Divert(locs) => {
                    assert_eq!(opts.len(), 1);
                    assert_eq!(opts[0]["option"], 100, "{ctx} divert");
                    let emb = opts[0]["embedded"].as_array().unwrap();
                    assert_eq!(locs.len(), emb.len());
                    for (l, j) in locs.iter().zip(emb) {
                        check_locator(l, j, ctx);
                    }
                }
            }
            match (&r.objective, g.get("objective")) {
                (Some(o), Some(j)) => check_objective(o, j, ctx),
                (None, None) => {}
                (o, j) => panic!("{ctx}: objective {o:?} vs {j:?}"),
            }
        }
        Message::ReqNeg(s) | Message::ReqSyn(s) | Message::Negotiate(s) | Message::Synch(s) => {
            check_objective(&s.objective, &g["objective"], ctx);
        }
        Message::End(e) => {
            let opt = &g["option"];
            match &e.option {
                EndOption::Accept => assert_eq!(opt["option"], 101, "{ctx}"),
                EndOption::Decline { reason } => {
                    assert_eq!(opt["option"], 102, "{ctx}");
                    assert_eq!(reason.as_deref(), opt.get("reason").and_then(Json::as_str));
                }
                EndOption::Unknown(v) => panic!("{ctx}: unknown end option {v}"),
            }
        }
        Message::Wait(w) => assert_eq!(
            u64::from(w.waiting_time_ms),
            g["waiting_time_ms"].as_u64().unwrap(),
            "{ctx}"
        ),
        Message::Flood(f) => {
            check_initiator(&f.initiator, g, ctx);
            assert_eq!(
                u64::from(f.ttl_ms),
                g["ttl_ms"].as_u64().unwrap(),
                "{ctx} ttl"
            );
            let tagged = g["tagged_objectives"].as_array().unwrap();
            assert_eq!(f.tagged.len(), tagged.len(), "{ctx}");
            for (t, j) in f.tagged.iter().zip(tagged) {
                check_objective(&t.objective, &j["objective"], ctx);
                match (&t.locator, &j["locator"]) {
                    (Some(l), j) if !j.is_null() => check_locator(l, j, ctx),
                    (None, Json::Null) => {}
                    (l, j) => panic!("{ctx}: tag {l:?} vs {j:?}"),
                }
            }
        }
        Message::Invalid(i) => {
            let mut content: Vec<String> = i.content.iter().map(Value::to_string).collect();
            content.extend(i.extensions.iter().map(Value::to_string));
            let want: Vec<String> = g["content_diag"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(content, want, "{ctx}");
        }
        other => panic!("{ctx}: unexpected {other:?}"),
    }
}

#[test]
fn every_plaintext_vector_round_trips() {
    let files = plaintext_files();
    assert_eq!(files.len(), 13, "expected the 13 plaintext scenarios");
    let mut total = 0;
    let mut types = std::collections::BTreeSet::new();
    for f in &files {
        let doc: Json = serde_json::from_str(&fs::read_to_string(f).unwrap()).unwrap();
        assert!(doc["quads"].is_null(), "{f:?} is not plaintext");
        let msgs = doc["messages"].as_array().unwrap();
        assert!(!msgs.is_empty());
        for m in msgs {
            let ctx = format!(
                "{}#{}",
                f.file_name().unwrap().to_str().unwrap(),
                m["index"]
            );
            let bytes = Bytes::from(hex::decode(m["payload_hex"].as_str().unwrap()).unwrap());
            let msg = Message::decode(&bytes).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            check_structure(&msg, &m["grasp"], &ctx);
            // Diagnostic notation of the whole message equals cbor2's.
            let diag = Value::from_cbor(bytes.clone()).unwrap().to_string();
            assert_eq!(diag, m["cbor_diag"].as_str().unwrap(), "{ctx} diag");
            assert_eq!(msg.encode(), bytes, "{ctx}: re-encoding differs");
            types.insert(u8::from(msg.msg_type()));
            total += 1;
        }
    }
    // Every message type graspy produced in these scenarios was covered.
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99]
    );
    assert!(total >= 90, "only {total} messages");
}

#[test]
fn tag24_value_is_preserved_and_unwrappable() {
    let doc: Json =
        serde_json::from_str(&fs::read_to_string(vector_dir().join("neg_dry_tag24.json")).unwrap())
            .unwrap();
    let req = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["grasp"]["type"] == 3)
        .unwrap();
    let bytes = Bytes::from(hex::decode(req["payload_hex"].as_str().unwrap()).unwrap());
    let Message::ReqNeg(r) = Message::decode(&bytes).unwrap() else {
        panic!()
    };
    let v = r.objective.value.unwrap();
    let inner = v.embedded().expect("tag 24");
    let (cur, amount): (String, u32) = Value::from_cbor(inner.to_vec())
        .unwrap()
        .deserialize()
        .unwrap();
    assert_eq!((cur.as_str(), amount), ("NZD", 100));
    assert_eq!(Value::embed(inner), v);
}
