//! The protocol's requests as a type: one variant per method of
//! `asa-protocol.cddl`, written by the client ([`Request::params`]) and
//! read by graspd ([`Request::parse`]), so the two cannot disagree on a
//! method's keys; and the answers both sides share ([`Outcome`],
//! [`Offer`]).
//!
//! Parsing reads every field before anything is done, and never panics:
//! a missing field, a wrong type or a value out of range is
//! [`ErrorCode::BadRequest`] naming the field; an unknown method is
//! [`ErrorCode::Unsupported`].

use std::net::SocketAddr;
use std::time::Duration;

use ciborium::Value;
use grasp_engine::wire::{Limits, Objective, TaggedObjective};
use grasp_engine::{ApiError, ErrorCode};
use grasp_engine::{AsaLocator, DiscoverOptions, FloodEntry, RegisterOptions};

use crate::form::{self, map, uint, Fields};

/// A client's request: its method and params.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // the fields are the CDDL's, documented there
pub enum Request {
    /// The greeting: the versions the client speaks, its largest frame.
    Hello {
        versions: Vec<u64>,
        features: Vec<String>,
        max_frame: Option<u64>,
        client: Option<String>,
    },
    RegisterAsa {
        name: String,
    },
    DeregisterAsa {
        asa: u64,
    },
    RegisterObjective {
        asa: u64,
        objective: Objective,
        options: RegisterOptions,
    },
    DeregisterObjective {
        asa: u64,
        name: String,
    },
    /// `stream`: locators as events while they arrive (not served yet).
    Discover {
        asa: u64,
        objective: Objective,
        options: DiscoverOptions,
        stream: bool,
    },
    Synchronize {
        asa: u64,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    },
    ListenSynchronize {
        asa: u64,
        objective: Objective,
    },
    StopSynchronize {
        asa: u64,
        name: String,
    },
    Flood {
        asa: u64,
        ttl_ms: u32,
        tagged: Vec<TaggedObjective>,
    },
    GetFlood {
        asa: u64,
        name: String,
    },
    ExpireFlood {
        asa: u64,
        entry: FloodEntry,
    },
    RequestNegotiate {
        asa: u64,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
        noloop: bool,
    },
    NegotiateStep {
        asa: u64,
        session: u64,
        objective: Objective,
        timeout: Duration,
    },
    NegotiateWait {
        asa: u64,
        session: u64,
        wait: Duration,
    },
    EndNegotiate {
        asa: u64,
        session: u64,
        accept: bool,
        reason: Option<String>,
    },
    SendInvalid {
        asa: u64,
        session: u64,
        info: Option<Value>,
    },
    ListenNegotiate {
        asa: u64,
        name: String,
    },
    StopNegotiate {
        asa: u64,
        name: String,
    },
    /// Events instead of long polls; `kind` is "negotiation" (served) or
    /// "flood" (not yet).
    Subscribe {
        asa: u64,
        kind: String,
        name: String,
    },
    Unsubscribe {
        subscription: u64,
    },
    /// A session the client will not answer (its listener is full or
    /// gone): graspd drops it, the peer sees the connection close.
    AbortSession {
        session: u64,
    },
    /// graspy's gsend on a raw session: one CBOR item (in `data`).
    Gsend {
        asa: u64,
        session: u64,
        data: grasp_engine::wire::Value,
    },
    /// graspy's grecv: the next CBOR item (the answer, a byte string).
    Grecv {
        asa: u64,
        session: u64,
        timeout: Duration,
    },
    /// A read-only view of registrations and caches (what the client may
    /// read).
    Dump {
        asa: u64,
    },
}

/// Every method this build serves, in the CDDL's order.
pub const METHODS: [&str; 25] = [
    "hello",
    "register_asa",
    "deregister_asa",
    "register_objective",
    "deregister_objective",
    "discover",
    "synchronize",
    "listen_synchronize",
    "stop_synchronize",
    "flood",
    "get_flood",
    "expire_flood",
    "request_negotiate",
    "negotiate_step",
    "negotiate_wait",
    "end_negotiate",
    "send_invalid",
    "listen_negotiate",
    "stop_negotiate",
    "subscribe",
    "unsubscribe",
    "abort_session",
    "gsend",
    "grecv",
    "dump",
];

/// Methods the CDDL specifies that this build does not serve yet (graspd
/// answers unsupported).
pub const PLANNED: [&str; 0] = [];

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

impl Request {
    /// The method's name.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::RegisterAsa { .. } => "register_asa",
            Request::DeregisterAsa { .. } => "deregister_asa",
            Request::RegisterObjective { .. } => "register_objective",
            Request::DeregisterObjective { .. } => "deregister_objective",
            Request::Discover { .. } => "discover",
            Request::Synchronize { .. } => "synchronize",
            Request::ListenSynchronize { .. } => "listen_synchronize",
            Request::StopSynchronize { .. } => "stop_synchronize",
            Request::Flood { .. } => "flood",
            Request::GetFlood { .. } => "get_flood",
            Request::ExpireFlood { .. } => "expire_flood",
            Request::RequestNegotiate { .. } => "request_negotiate",
            Request::NegotiateStep { .. } => "negotiate_step",
            Request::NegotiateWait { .. } => "negotiate_wait",
            Request::EndNegotiate { .. } => "end_negotiate",
            Request::SendInvalid { .. } => "send_invalid",
            Request::ListenNegotiate { .. } => "listen_negotiate",
            Request::StopNegotiate { .. } => "stop_negotiate",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::AbortSession { .. } => "abort_session",
            Request::Gsend { .. } => "gsend",
            Request::Grecv { .. } => "grecv",
            Request::Dump { .. } => "dump",
        }
    }

    /// The ASA handle the request names, if it names one.
    pub fn asa(&self) -> Option<u64> {
        match self {
            Request::Hello { .. }
            | Request::RegisterAsa { .. }
            | Request::Unsubscribe { .. }
            | Request::AbortSession { .. } => None,
            Request::DeregisterAsa { asa }
            | Request::Dump { asa }
            | Request::RegisterObjective { asa, .. }
            | Request::DeregisterObjective { asa, .. }
            | Request::Discover { asa, .. }
            | Request::Synchronize { asa, .. }
            | Request::ListenSynchronize { asa, .. }
            | Request::StopSynchronize { asa, .. }
            | Request::Flood { asa, .. }
            | Request::GetFlood { asa, .. }
            | Request::ExpireFlood { asa, .. }
            | Request::RequestNegotiate { asa, .. }
            | Request::NegotiateStep { asa, .. }
            | Request::NegotiateWait { asa, .. }
            | Request::EndNegotiate { asa, .. }
            | Request::SendInvalid { asa, .. }
            | Request::Gsend { asa, .. }
            | Request::Grecv { asa, .. }
            | Request::ListenNegotiate { asa, .. }
            | Request::StopNegotiate { asa, .. }
            | Request::Subscribe { asa, .. } => Some(*asa),
        }
    }

    /// The request's frame, with request id `id`.
    pub fn frame(&self, id: u64) -> crate::Frame {
        crate::Frame::Request {
            id,
            method: self.method().to_string(),
            params: self.params(),
        }
    }

    /// The params map, as the client sends it.
    pub fn params(&self) -> Vec<(String, Value)> {
        let asa = |h: &u64| ("asa", uint(*h));
        let session = |s: &u64| ("session", uint(*s));
        let obj = |o: &Objective| ("objective", form::objective(o));
        let mut kv: Vec<(&str, Value)> = match self {
            Request::Hello {
                versions,
                features,
                max_frame,
                client,
            } => {
                let mut kv = vec![(
                    "versions",
                    Value::Array(versions.iter().map(|v| uint(*v)).collect()),
                )];
                if !features.is_empty() {
                    kv.push((
                        "features",
                        Value::Array(features.iter().map(|f| text(f)).collect()),
                    ));
                }
                kv.extend(max_frame.map(|m| ("max_frame", uint(m))));
                kv.extend(client.as_deref().map(|c| ("client", text(c))));
                kv
            }
            Request::RegisterAsa { name } => vec![("name", text(name))],
            Request::DeregisterAsa { asa: a } | Request::Dump { asa: a } => vec![asa(a)],
            Request::RegisterObjective {
                asa: a,
                objective,
                options,
            } => {
                let mut kv = vec![asa(a), obj(objective)];
                kv.extend(form::register_options(options));
                kv
            }
            Request::Discover {
                asa: a,
                objective,
                options,
                stream,
            } => {
                let mut kv = vec![asa(a), obj(objective)];
                kv.extend(form::discover_options(options));
                if *stream {
                    kv.push(("stream", Value::Bool(true)));
                }
                kv
            }
            Request::Synchronize {
                asa: a,
                objective,
                peer,
                timeout,
            } => {
                let mut kv = vec![
                    asa(a),
                    obj(objective),
                    ("timeout_ms", form::millis(*timeout)),
                ];
                kv.extend(peer.as_ref().map(|p| ("peer", form::asa_locator(p))));
                kv
            }
            Request::ListenSynchronize { asa: a, objective } => vec![asa(a), obj(objective)],
            Request::DeregisterObjective { asa: a, name }
            | Request::StopSynchronize { asa: a, name }
            | Request::GetFlood { asa: a, name }
            | Request::ListenNegotiate { asa: a, name }
            | Request::StopNegotiate { asa: a, name } => vec![asa(a), ("name", text(name))],
            Request::Flood {
                asa: a,
                ttl_ms,
                tagged,
            } => vec![
                asa(a),
                ("ttl_ms", uint((*ttl_ms).into())),
                (
                    "tagged",
                    Value::Array(tagged.iter().map(form::tagged).collect()),
                ),
            ],
            Request::ExpireFlood { asa: a, entry } => {
                vec![asa(a), ("entry", form::flood_entry(entry))]
            }
            Request::RequestNegotiate {
                asa: a,
                objective,
                peer,
                timeout,
                noloop,
            } => {
                let mut kv = vec![
                    asa(a),
                    obj(objective),
                    ("timeout_ms", form::millis(*timeout)),
                ];
                kv.extend(peer.as_ref().map(|p| ("peer", form::asa_locator(p))));
                if *noloop {
                    kv.push(("noloop", Value::Bool(true)));
                }
                kv
            }
            Request::NegotiateStep {
                asa: a,
                session: s,
                objective,
                timeout,
            } => vec![
                asa(a),
                session(s),
                obj(objective),
                ("timeout_ms", form::millis(*timeout)),
            ],
            Request::NegotiateWait {
                asa: a,
                session: s,
                wait,
            } => vec![asa(a), session(s), ("wait_ms", form::millis(*wait))],
            Request::EndNegotiate {
                asa: a,
                session: s,
                accept,
                reason,
            } => {
                let mut kv = vec![asa(a), session(s), ("accept", Value::Bool(*accept))];
                kv.extend(reason.as_deref().map(|r| ("reason", text(r))));
                kv
            }
            Request::SendInvalid {
                asa: a,
                session: s,
                info,
            } => {
                let mut kv = vec![asa(a), session(s)];
                kv.extend(info.clone().map(|i| ("info", i)));
                kv
            }
            Request::Subscribe { asa: a, kind, name } => {
                vec![asa(a), ("kind", text(kind)), ("name", text(name))]
            }
            Request::Gsend {
                asa: a,
                session: s,
                data,
            } => vec![
                asa(a),
                session(s),
                ("data", Value::Bytes(data.as_cbor().to_vec())),
            ],
            Request::Grecv {
                asa: a,
                session: s,
                timeout,
            } => vec![asa(a), session(s), ("timeout_ms", form::millis(*timeout))],
            Request::Unsubscribe { subscription } => vec![("subscription", uint(*subscription))],
            Request::AbortSession { session: s } => vec![session(s)],
        };
        kv.drain(..).map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Reads request `method` with `params`; objectives and locators are
    /// held to `lim`.
    pub fn parse(
        method: &str,
        params: &[(String, Value)],
        lim: &Limits,
    ) -> Result<Request, ApiError> {
        let p = Fields::params(params);
        let asa = || p.u64("asa");
        let objective = || p.objective("objective", lim);
        Ok(match method {
            "hello" => Request::Hello {
                versions: p
                    .list("versions")?
                    .iter()
                    .map(|v| {
                        form::as_u64(v)
                            .ok_or_else(|| form::bad("\"versions\" holds unsigned integers"))
                    })
                    .collect::<Result<_, _>>()?,
                features: match p.get("features") {
                    None => Vec::new(),
                    Some(_) => p
                        .list("features")?
                        .iter()
                        .map(|f| {
                            f.as_text()
                                .map(str::to_string)
                                .ok_or_else(|| form::bad("\"features\" holds text"))
                        })
                        .collect::<Result<_, _>>()?,
                },
                max_frame: p.opt_u64("max_frame")?,
                client: p.opt_text("client")?,
            },
            "register_asa" => Request::RegisterAsa {
                name: p.text("name")?,
            },
            "deregister_asa" => Request::DeregisterAsa { asa: asa()? },
            "register_objective" => Request::RegisterObjective {
                asa: asa()?,
                objective: objective()?,
                options: form::register_options_of(&p, lim)?,
            },
            "deregister_objective" => Request::DeregisterObjective {
                asa: asa()?,
                name: p.text("name")?,
            },
            "discover" => Request::Discover {
                asa: asa()?,
                objective: objective()?,
                options: form::discover_options_of(&p)?,
                stream: p.opt_bool("stream")?.unwrap_or(false),
            },
            "synchronize" => Request::Synchronize {
                asa: asa()?,
                objective: objective()?,
                peer: p.opt_asa_locator("peer", lim)?,
                timeout: p.ms("timeout_ms")?,
            },
            "listen_synchronize" => Request::ListenSynchronize {
                asa: asa()?,
                objective: objective()?,
            },
            "stop_synchronize" => Request::StopSynchronize {
                asa: asa()?,
                name: p.text("name")?,
            },
            "flood" => Request::Flood {
                asa: asa()?,
                ttl_ms: p.u32("ttl_ms")?,
                tagged: p
                    .list("tagged")?
                    .iter()
                    .map(|t| form::tagged_of(&Fields::of(t, "tagged")?, lim))
                    .collect::<Result<_, _>>()?,
            },
            "get_flood" => Request::GetFlood {
                asa: asa()?,
                name: p.text("name")?,
            },
            "expire_flood" => Request::ExpireFlood {
                asa: asa()?,
                entry: form::flood_entry_of(&p.fields("entry")?, lim)?,
            },
            "request_negotiate" => Request::RequestNegotiate {
                asa: asa()?,
                objective: objective()?,
                peer: p.opt_asa_locator("peer", lim)?,
                timeout: p.ms("timeout_ms")?,
                noloop: p.opt_bool("noloop")?.unwrap_or(false),
            },
            "negotiate_step" => Request::NegotiateStep {
                asa: asa()?,
                session: p.u64("session")?,
                objective: objective()?,
                timeout: p.ms("timeout_ms")?,
            },
            "negotiate_wait" => Request::NegotiateWait {
                asa: asa()?,
                session: p.u64("session")?,
                wait: p.ms("wait_ms")?,
            },
            "end_negotiate" => Request::EndNegotiate {
                asa: asa()?,
                session: p.u64("session")?,
                accept: p.bool("accept")?,
                reason: p.opt_text("reason")?,
            },
            "send_invalid" => Request::SendInvalid {
                asa: asa()?,
                session: p.u64("session")?,
                info: p.get("info").cloned(),
            },
            "listen_negotiate" => Request::ListenNegotiate {
                asa: asa()?,
                name: p.text("name")?,
            },
            "stop_negotiate" => Request::StopNegotiate {
                asa: asa()?,
                name: p.text("name")?,
            },
            "subscribe" => Request::Subscribe {
                asa: asa()?,
                kind: p.text("kind")?,
                name: p.text("name")?,
            },
            "unsubscribe" => Request::Unsubscribe {
                subscription: p.u64("subscription")?,
            },
            "abort_session" => Request::AbortSession {
                session: p.u64("session")?,
            },
            "gsend" => Request::Gsend {
                asa: asa()?,
                session: p.u64("session")?,
                data: match p.get("data") {
                    Some(Value::Bytes(b)) => grasp_engine::wire::Value::from_cbor(b.clone())
                        .map_err(|e| form::bad(format!("\"data\" is not one CBOR item: {e}")))?,
                    Some(_) => {
                        return Err(form::bad("\"data\" must be a byte string (one CBOR item)"))
                    }
                    None => return Err(form::bad("\"data\" is missing")),
                },
            },
            "grecv" => Request::Grecv {
                asa: asa()?,
                session: p.u64("session")?,
                timeout: p.ms("timeout_ms")?,
            },
            "dump" => Request::Dump { asa: asa()? },
            other => {
                return Err(ApiError::new(
                    ErrorCode::Unsupported,
                    format!("method {other:?} is not served by this graspd"),
                ))
            }
        })
    }
}

/// A peer's proposal the client must answer: a counter-offer (a step) or a
/// new request (listen_negotiate's result, a "negotiation" event).
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// graspd's handle of the session.
    pub session: u64,
    /// What the peer proposed.
    pub objective: Objective,
    /// The peer's address and authenticated identity, when known.
    pub peer: Option<(SocketAddr, Option<String>)>,
}

impl Offer {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut kv = vec![
            ("session", uint(self.session)),
            ("objective", form::objective(&self.objective)),
        ];
        if let Some((addr, id)) = &self.peer {
            kv.push(("peer", form::peer(*addr, id.as_deref())));
        }
        kv
    }

    /// Its CBOR map.
    pub fn value(&self) -> Value {
        map(self.fields())
    }

    /// Reads one.
    pub fn of(f: &Fields<'_>, lim: &Limits) -> Result<Offer, ApiError> {
        Ok(Offer {
            session: f.u64("session")?,
            objective: f.objective("objective", lim)?,
            peer: match f.get("peer") {
                None => None,
                Some(_) => Some(form::peer_of(&f.fields("peer")?, lim)?),
            },
        })
    }
}

/// How request_negotiate or negotiate_step ended (the CDDL's
/// `negotiation`).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The peer accepted.
    Accepted,
    /// The peer declined.
    Declined {
        /// Its reason, if it gave one.
        reason: Option<String>,
    },
    /// The peer counter-offered: the client's turn.
    Step(Offer),
}

impl Outcome {
    /// Its CBOR map.
    pub fn value(&self) -> Value {
        match self {
            Outcome::Accepted => map(vec![("outcome", text("accepted"))]),
            Outcome::Declined { reason } => {
                let mut kv = vec![("outcome", text("declined"))];
                kv.extend(reason.as_deref().map(|r| ("reason", text(r))));
                map(kv)
            }
            Outcome::Step(o) => {
                let mut kv = vec![("outcome", text("step"))];
                kv.extend(o.fields());
                map(kv)
            }
        }
    }

    /// Reads one.
    pub fn of(v: &Value, lim: &Limits) -> Result<Outcome, ApiError> {
        let f = Fields::of(v, "negotiation")?;
        match f.text("outcome")?.as_str() {
            "accepted" => Ok(Outcome::Accepted),
            "declined" => Ok(Outcome::Declined {
                reason: f.opt_text("reason")?,
            }),
            "step" => Ok(Outcome::Step(Offer::of(&f, lim)?)),
            other => Err(form::bad(format!(
                "negotiation: unknown \"outcome\" {other:?}"
            ))),
        }
    }
}

/// The fuzz target's body (`fuzz/`): decodes `data` as a frame and, when
/// it is a request, parses it; what parses must re-encode to a request
/// that parses to the same method. Panics only on a bug.
#[doc(hidden)]
pub fn exercise(data: &[u8]) {
    let lim = Limits::default();
    let Ok(crate::Frame::Request { id, method, params }) = crate::Frame::decode(data) else {
        return;
    };
    let Ok(r) = Request::parse(&method, &params, &lim) else {
        return;
    };
    let again = crate::Frame::decode(&r.frame(id).encode()).expect("a request re-encodes");
    let crate::Frame::Request { method, params, .. } = again else {
        panic!("a request re-encoded as another kind of frame");
    };
    let back = Request::parse(&method, &params, &lim).expect("a re-encoded request parses");
    assert_eq!(back.method(), r.method());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target over the golden frames, mutated (a byte changed,
    /// cut short, a byte inserted): a deterministic slice of `cargo fuzz`.
    #[test]
    fn mutated_golden_frames_never_panic() {
        let golden = include_str!("../tests/golden/transcript.txt");
        let frames: Vec<Vec<u8>> = golden
            .lines()
            .filter_map(|l| l.strip_prefix("> "))
            .map(|h| hex::decode(h).unwrap())
            .collect();
        assert!(frames.len() >= METHODS.len());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for f in &frames {
            exercise(f);
            for _ in 0..300 {
                let mut m = f.clone();
                let i = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => m.truncate(i),
                    _ => m.insert(i, next() as u8),
                }
                exercise(&m);
            }
        }
    }

    #[test]
    fn unknown_methods_are_unsupported_and_bad_fields_named() {
        let lim = Limits::default();
        let e = Request::parse("teleport", &[], &lim).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        let e = Request::parse("get_flood", &[("asa".into(), text("one"))], &lim).unwrap_err();
        assert_eq!(
            (e.code, e.detail.as_str()),
            (ErrorCode::BadRequest, "\"asa\" must be an unsigned integer")
        );
        for m in METHODS {
            // Served: parses or fails on a field, not as unknown.
            if let Err(e) = Request::parse(m, &[], &lim) {
                assert_eq!(e.code, ErrorCode::BadRequest, "{m}");
            }
        }
        for m in PLANNED {
            let e = Request::parse(m, &[], &lim).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unsupported, "{m}");
        }
    }
}
