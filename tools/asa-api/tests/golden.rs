//! The golden transcript: for every method of the ASA protocol, a request
//! with every field it has, and an answer, as the bytes of their frames
//! (`tests/golden/transcript.txt`). The bytes must not change by accident;
//! each request reads back as itself; and `asa-protocol.cddl` names the
//! same methods with the same keys, so the spec and the code agree.
//!
//! After a deliberate change of the protocol: `GOLDEN_UPDATE=1 cargo test
//! -p grasp-asa-api --test golden`, and review the diff.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use ciborium::Value;
use grasp_asa_api::form::{self, map, uint};
use grasp_asa_api::request::{Offer, Outcome, Request, METHODS, PLANNED};
use grasp_asa_api::{Frame, WireError};
use grasp_engine::proto::DumpedObjective;
use grasp_engine::wire::{Limits, Locator, Objective, ObjectiveFlags, TaggedObjective};
use grasp_engine::{ApiError, ErrorCode};
use grasp_engine::{AsaHandle, AsaLocator, DiscoverOptions, Dump, FloodEntry, RegisterOptions};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/transcript.txt");
const CDDL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/asa-protocol.cddl");

fn objective(name: &str) -> Objective {
    Objective::new(
        name,
        ObjectiveFlags::DISC | ObjectiveFlags::NEG | ObjectiveFlags::SYNCH,
    )
    .with_loop_count(6)
    .with_value(grasp_engine::wire::Value::from_serialize(&("NZD", 100)).unwrap())
}

fn locator() -> Locator {
    Locator::tcp6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), 7017)
}

fn asa_locator() -> AsaLocator {
    let mut l = AsaLocator::new(locator());
    l.ifindex = 3;
    l.diverted = true;
    l.objective = Some(objective("EX.rapid"));
    l
}

fn entry() -> FloodEntry {
    FloodEntry {
        objective: objective("EX.flood"),
        locator: Some(locator()),
        initiator: "fd00::9".parse().unwrap(),
        expires: None,
        ifindex: 2,
    }
}

fn offer() -> Offer {
    let peer: SocketAddr = "[fe80::2%3]:7017".parse().unwrap();
    Offer {
        session: 7,
        objective: objective("EX.loan"),
        peer: Some((peer, Some("node2.lab".into()))),
    }
}

fn dump() -> Dump {
    Dump {
        asas: vec![
            (AsaHandle(1), "Briggs".into()),
            (AsaHandle(9), "other".into()),
        ],
        objectives: vec![DumpedObjective {
            objective: objective("EX2"),
            owners: vec![AsaHandle(1), AsaHandle(9)],
            options: RegisterOptions {
                overlap: true,
                ..RegisterOptions::default()
            },
            listen_negotiate: false,
            listen_synchronize: true,
        }],
        discovery_cache: vec![("EX3".into(), vec![asa_locator()])],
        flood_cache: vec![entry()],
    }
}

/// One request per method, every optional field present, and its answer.
fn exchanges() -> Vec<(Request, Result<Value, ApiError>)> {
    let asa = 1;
    let ok = || Ok(Value::Null);
    vec![
        (
            Request::Hello {
                versions: vec![1],
                features: vec!["streamed-discover".into()],
                max_frame: Some(65536),
                client: Some("golden".into()),
            },
            Ok(map(vec![
                ("version", uint(1)),
                ("features", Value::Array(vec![])),
                ("max_frame", uint(65536)),
                (
                    "node",
                    map(vec![
                        ("locator", form::locator(&locator())),
                        ("relay", Value::Bool(false)),
                        ("dull", Value::Bool(false)),
                        ("security", Value::Text("quads".into())),
                        ("daemon", Value::Text("graspd 0.1.0".into())),
                    ]),
                ),
                ("limits", map(vec![("max_message", uint(2048))])),
            ])),
        ),
        (
            Request::RegisterAsa {
                name: "Briggs".into(),
            },
            Ok(map(vec![("asa", uint(1))])),
        ),
        (Request::DeregisterAsa { asa }, ok()),
        (
            Request::RegisterObjective {
                asa,
                objective: objective("EX2"),
                options: RegisterOptions {
                    ttl_ms: 60000,
                    discoverable: true,
                    overlap: true,
                    local: true,
                    rapid: true,
                    locators: vec![locator()],
                },
            },
            ok(),
        ),
        (
            Request::DeregisterObjective {
                asa,
                name: "EX2".into(),
            },
            Err(ApiError::from(ErrorCode::NotYourObj)),
        ),
        (
            Request::Discover {
                asa,
                objective: objective("EX2"),
                options: DiscoverOptions {
                    timeout: Some(Duration::from_millis(2000)),
                    min_ttl: Some(Duration::from_millis(500)),
                    flush: true,
                    first_only: true,
                },
                stream: true,
            },
            Ok(Value::Array(vec![form::asa_locator(&asa_locator())])),
        ),
        (
            Request::Synchronize {
                asa,
                objective: objective("EX2"),
                peer: Some(asa_locator()),
                timeout: Duration::from_millis(3000),
            },
            Ok(form::objective(&objective("EX2"))),
        ),
        (
            Request::ListenSynchronize {
                asa,
                objective: objective("EX2"),
            },
            ok(),
        ),
        (
            Request::StopSynchronize {
                asa,
                name: "EX2".into(),
            },
            ok(),
        ),
        (
            Request::Flood {
                asa,
                ttl_ms: 60000,
                tagged: vec![TaggedObjective {
                    objective: objective("EX1"),
                    locator: Some(locator()),
                }],
            },
            ok(),
        ),
        (
            Request::GetFlood {
                asa,
                name: "EX.flood".into(),
            },
            Ok(Value::Array(vec![form::flood_entry(&entry())])),
        ),
        (
            Request::ExpireFlood {
                asa,
                entry: entry(),
            },
            ok(),
        ),
        (
            Request::RequestNegotiate {
                asa,
                objective: objective("EX.loan"),
                peer: Some(asa_locator()),
                timeout: Duration::from_millis(5000),
                noloop: true,
            },
            Ok(Outcome::Step(offer()).value()),
        ),
        (
            Request::NegotiateStep {
                asa,
                session: 7,
                objective: objective("EX.loan"),
                timeout: Duration::from_millis(5000),
            },
            Ok(Outcome::Declined {
                reason: Some("Insufficient funds".into()),
            }
            .value()),
        ),
        (
            Request::NegotiateWait {
                asa,
                session: 7,
                wait: Duration::from_millis(4000),
            },
            ok(),
        ),
        (
            Request::EndNegotiate {
                asa,
                session: 7,
                accept: false,
                reason: Some("You are mean!".into()),
            },
            ok(),
        ),
        (
            Request::SendInvalid {
                asa,
                session: 7,
                info: Some(Value::Text("bad value".into())),
            },
            Err(ApiError::from(ErrorCode::NoSession)),
        ),
        (
            Request::ListenNegotiate {
                asa,
                name: "EX.loan".into(),
            },
            Ok(offer().value()),
        ),
        (
            Request::StopNegotiate {
                asa,
                name: "EX.loan".into(),
            },
            ok(),
        ),
        (
            Request::Subscribe {
                asa,
                kind: "negotiation".into(),
                name: "EX.loan".into(),
            },
            Ok(map(vec![("subscription", uint(20))])),
        ),
        (Request::Unsubscribe { subscription: 20 }, ok()),
        (Request::AbortSession { session: 7 }, ok()),
        (
            Request::Gsend {
                asa,
                session: 8,
                data: grasp_engine::wire::Value::from("hello"),
            },
            ok(),
        ),
        (
            Request::Grecv {
                asa,
                session: 8,
                timeout: Duration::from_millis(60000),
            },
            Ok(Value::Bytes(
                grasp_engine::wire::Value::from("you said hello")
                    .as_cbor()
                    .to_vec(),
            )),
        ),
        (
            Request::Dump { asa },
            Ok(form::dump(&dump(), |h| {
                (format!("asa-{}", h.0), (h.0 == 1).then_some(1))
            })),
        ),
    ]
}

fn response(id: u64, r: &Result<Value, ApiError>) -> Frame {
    match r {
        Ok(v) => Frame::Response {
            id,
            err: None,
            result: v.clone(),
        },
        Err(e) => Frame::Response {
            id,
            err: Some(WireError::from(e)),
            result: Value::Null,
        },
    }
}

fn transcript() -> String {
    let mut out = String::from(
        "# The ASA protocol's golden transcript (tests/golden.rs): per method, the\n\
         # request frame (>) and an answer (<), hex of the CBOR item after the\n\
         # 4-byte length. Then an event and a cancel.\n",
    );
    for (i, (req, answer)) in exchanges().iter().enumerate() {
        let id = i as u64 + 1;
        out += &format!(
            "\n{}\n> {}\n< {}\n",
            req.method(),
            hex::encode(req.frame(id).encode()),
            hex::encode(response(id, answer).encode())
        );
    }
    let event = Frame::Event {
        subscription: 20,
        kind: "negotiation".into(),
        data: offer().value(),
    };
    let closing = Frame::Event {
        subscription: 0,
        kind: "closing".into(),
        data: WireError::from(&ApiError::new(ErrorCode::TooLarge, "a 70000-byte frame")).value(),
    };
    out += &format!(
        "\nevent negotiation\n< {}\n\nevent closing\n< {}\n\ncancel\n> {}\n",
        hex::encode(event.encode()),
        hex::encode(closing.encode()),
        hex::encode(Frame::Cancel { id: 5 }.encode())
    );
    out
}

#[test]
fn the_frames_of_every_method_are_the_golden_ones() {
    let got = transcript();
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(std::path::Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let want =
        std::fs::read_to_string(GOLDEN).expect("the golden transcript (GOLDEN_UPDATE=1 writes it)");
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w, "the frames changed; if on purpose, GOLDEN_UPDATE=1");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

#[test]
fn every_request_and_answer_reads_back_as_itself() {
    let lim = Limits::default();
    for (i, (req, answer)) in exchanges().into_iter().enumerate() {
        let id = i as u64 + 1;
        let Ok(Frame::Request { method, params, .. }) = Frame::decode(&req.frame(id).encode())
        else {
            panic!("{req:?}");
        };
        assert_eq!(Request::parse(&method, &params, &lim).unwrap(), req);
        let Ok(Frame::Response { err, result, .. }) =
            Frame::decode(&response(id, &answer).encode())
        else {
            panic!("{answer:?}");
        };
        match (answer, err) {
            (Ok(v), None) => assert_eq!(result, v),
            (Err(e), Some(w)) => assert_eq!(ApiError::from(w), e),
            other => panic!("{other:?}"),
        }
    }
    // The shared answers, decoded as the client decodes them.
    let o = Outcome::Step(offer());
    assert_eq!(Outcome::of(&o.value(), &lim).unwrap(), o);
    // A dump as the client reads it: other clients' ASAs have handle 0.
    let v = form::dump(&dump(), |h| {
        (format!("asa-{}", h.0), (h.0 == 1).then_some(1))
    });
    let back = form::dump_of(&v, &lim).unwrap();
    assert_eq!(
        back.asas,
        vec![
            (AsaHandle(1), "asa-1".into()),
            (AsaHandle(0), "asa-9".into())
        ]
    );
    assert_eq!(back.objectives[0].owners, vec![AsaHandle(1), AsaHandle(0)]);
    assert_eq!((back.discovery_cache.len(), back.flood_cache.len()), (1, 1));
}

/// The keys of CDDL rule `name = { ... }`: quoted names followed by `:`
/// at the rule's own level (not inside nested maps), if the rule exists.
fn cddl_keys(cddl: &str, rule: &str) -> Option<BTreeSet<String>> {
    let start = cddl.find(&format!("\n{rule} = {{"))? + 1;
    // The rule's text, comments removed.
    let text: String = cddl[start..]
        .lines()
        .map(|l| l.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let (mut depth, mut keys, mut chars) = (0, BTreeSet::new(), text.char_indices());
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            '"' => {
                let end = text[i + 1..].find('"')? + i + 1;
                if depth == 1 && text[end + 1..].trim_start().starts_with(':') {
                    keys.insert(text[i + 1..end].to_string());
                }
                // Skip to the closing quote.
                for (j, _) in chars.by_ref() {
                    if j == end {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Some(keys)
}

#[test]
fn the_cddl_names_every_method_with_the_same_keys() {
    let cddl = std::fs::read_to_string(CDDL).unwrap();
    let served: BTreeSet<&str> = exchanges().iter().map(|(r, _)| r.method()).collect();
    for m in METHODS.into_iter().chain(PLANNED) {
        let rule = if m == "hello" {
            "hello-params".to_string()
        } else {
            m.replace('_', "-")
        };
        let Some(keys) = cddl_keys(&cddl, &rule) else {
            panic!("asa-protocol.cddl has no rule {rule} for method {m}");
        };
        if !served.contains(m) {
            continue; // specified, not served yet
        }
        let (req, _) = exchanges()
            .into_iter()
            .find(|(r, _)| r.method() == m)
            .unwrap();
        let ours: BTreeSet<String> = req.params().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            ours, keys,
            "{m}: the code's keys (left) and the CDDL's (right)"
        );
    }
    assert_eq!(
        served,
        METHODS.into_iter().collect(),
        "the transcript has every served method"
    );
}
