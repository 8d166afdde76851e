//! GRASP messages for people: one line ([`summary`]) or an indented block
//! in the spirit of graspy's pretty-parse ([`pretty`]).

use std::fmt::Write as _;

use grasp_engine::wire::{
    EndOption, Message, Objective, ObjectiveFlags, ResponseTarget, TaggedObjective, Value,
};

/// Decodes one message from a byte slice.
pub fn decode(raw: &[u8]) -> Result<Message, grasp_engine::wire::DecodeError> {
    Message::decode(&bytes::Bytes::copy_from_slice(raw))
}

/// The RFC 8990 name of a message type.
pub fn type_name(m: &Message) -> String {
    match m {
        Message::Noop => "M_NOOP".into(),
        Message::Discovery(_) => "M_DISCOVERY".into(),
        Message::Response(_) => "M_RESPONSE".into(),
        Message::ReqNeg(_) => "M_REQ_NEG".into(),
        Message::ReqSyn(_) => "M_REQ_SYN".into(),
        Message::Negotiate(_) => "M_NEGOTIATE".into(),
        Message::End(_) => "M_END".into(),
        Message::Wait(_) => "M_WAIT".into(),
        Message::Synch(_) => "M_SYNCH".into(),
        Message::Flood(_) => "M_FLOOD".into(),
        Message::Invalid(_) => "M_INVALID".into(),
        Message::Unknown(u) => format!("type {}", u.msg_type),
        _ => "M_?".into(),
    }
}

/// `|Discoverable|Negotiable|Dry Run|Synchronizable`, as graspy prints.
pub fn flag_names(f: ObjectiveFlags) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (ObjectiveFlags::DISC, "Discoverable"),
        (ObjectiveFlags::NEG, "Negotiable"),
        (ObjectiveFlags::NEG_DRY, "Dry Run"),
        (ObjectiveFlags::SYNCH, "Synchronizable"),
    ] {
        if f.contains(bit) {
            s.push('|');
            s.push_str(name);
        }
    }
    if s.is_empty() {
        s.push_str("(none)");
    }
    s
}

fn value(v: &Option<Value>) -> String {
    v.as_ref().map_or("(absent)".into(), |v| v.to_string())
}

fn obj_line(o: &Objective) -> String {
    format!(
        "{} [{}] loop {} = {}",
        o.name,
        o.flags.bits(),
        o.loop_count,
        value(&o.value)
    )
}

/// One line: type, session id and the essentials.
pub fn summary(raw: &[u8]) -> String {
    let m = match decode(raw) {
        Ok(m) => m,
        Err(e) => return format!("undecodable ({e}): {}", hex::encode(raw)),
    };
    let t = type_name(&m);
    match &m {
        Message::Discovery(d) => format!(
            "{t} sid {} from {}: {}",
            d.session_id,
            d.initiator,
            obj_line(&d.objective)
        ),
        Message::Response(r) => {
            let target = match &r.target {
                ResponseTarget::Locators(l) => l
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                ResponseTarget::Divert(l) => format!(
                    "divert to {}",
                    l.iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!(
                "{t} sid {} ttl {} ms: {target}{}",
                r.session_id,
                r.ttl_ms,
                r.objective
                    .as_ref()
                    .map_or(String::new(), |o| format!(" ({})", obj_line(o)))
            )
        }
        Message::ReqNeg(s) | Message::ReqSyn(s) | Message::Negotiate(s) | Message::Synch(s) => {
            format!("{t} sid {}: {}", s.session_id, obj_line(&s.objective))
        }
        Message::End(e) => format!(
            "{t} sid {}: {}",
            e.session_id,
            match &e.option {
                EndOption::Accept => "accept".to_string(),
                EndOption::Decline { reason } => format!(
                    "decline{}",
                    reason
                        .as_ref()
                        .map_or(String::new(), |r| format!(" ({r:?})"))
                ),
                EndOption::Unknown(v) => format!("option {v}"),
            }
        ),
        Message::Wait(w) => format!("{t} sid {}: wait {} ms", w.session_id, w.waiting_time_ms),
        Message::Flood(f) => format!(
            "{t} sid {} from {} ttl {} ms: {}",
            f.session_id,
            f.initiator,
            f.ttl_ms,
            f.tagged
                .iter()
                .map(tagged_line)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Message::Invalid(i) => format!("{t} sid {}: {}", i.session_id, value(&i.content)),
        _ => format!(
            "{t}: {}",
            Value::from_cbor(raw.to_vec())
                .map(|v| v.to_string())
                .unwrap_or_default()
        ),
    }
}

fn tagged_line(t: &TaggedObjective) -> String {
    format!(
        "{}{}",
        obj_line(&t.objective),
        t.locator
            .as_ref()
            .map_or(String::new(), |l| format!(" @ {l}"))
    )
}

fn write_obj(o: &mut String, indent: &str, obj: &Objective) {
    let _ = writeln!(o, "{indent}Objective: {}", obj.name);
    let _ = writeln!(o, "{indent}    Flags: {}", flag_names(obj.flags));
    let _ = writeln!(o, "{indent}    Loop count: {}", obj.loop_count);
    let _ = writeln!(o, "{indent}    Value: {}", value(&obj.value));
}

/// An indented block, field by field.
pub fn pretty(raw: &[u8]) -> String {
    let mut o = String::new();
    let m = match decode(raw) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(o, "Undecodable: {e}");
            let _ = writeln!(o, "    Bytes: {}", hex::encode(raw));
            return o;
        }
    };
    let _ = writeln!(o, "Message type: {}", type_name(&m));
    match &m {
        Message::Discovery(d) => {
            let _ = writeln!(o, "Session ID: {}", d.session_id);
            let _ = writeln!(o, "Initiator: {}", d.initiator);
            write_obj(&mut o, "", &d.objective);
        }
        Message::Response(r) => {
            let _ = writeln!(o, "Session ID: {}", r.session_id);
            let _ = writeln!(o, "Initiator: {}", r.initiator);
            let _ = writeln!(o, "TTL: {} ms", r.ttl_ms);
            match &r.target {
                ResponseTarget::Locators(ls) => {
                    for l in ls {
                        let _ = writeln!(o, "    Locator: {l}");
                    }
                }
                ResponseTarget::Divert(ls) => {
                    let _ = writeln!(o, "    Option: O_DIVERT");
                    for l in ls {
                        let _ = writeln!(o, "        Locator: {l}");
                    }
                }
            }
            if let Some(obj) = &r.objective {
                write_obj(&mut o, "", obj);
            }
        }
        Message::ReqNeg(s) | Message::ReqSyn(s) | Message::Negotiate(s) | Message::Synch(s) => {
            let _ = writeln!(o, "Session ID: {}", s.session_id);
            write_obj(&mut o, "", &s.objective);
        }
        Message::End(e) => {
            let _ = writeln!(o, "Session ID: {}", e.session_id);
            match &e.option {
                EndOption::Accept => {
                    let _ = writeln!(o, "    Option: O_ACCEPT");
                }
                EndOption::Decline { reason } => {
                    let _ = writeln!(o, "    Option: O_DECLINE");
                    if let Some(r) = reason {
                        let _ = writeln!(o, "        Reason: {r}");
                    }
                }
                EndOption::Unknown(v) => {
                    let _ = writeln!(o, "    Option: {v}");
                }
            }
        }
        Message::Wait(w) => {
            let _ = writeln!(o, "Session ID: {}", w.session_id);
            let _ = writeln!(o, "TTL extension: {} ms", w.waiting_time_ms);
        }
        Message::Flood(f) => {
            let _ = writeln!(o, "Session ID: {}", f.session_id);
            let _ = writeln!(o, "Initiator: {}", f.initiator);
            let _ = writeln!(o, "TTL: {} ms", f.ttl_ms);
            let _ = writeln!(o, "Flood list length: {}", f.tagged.len());
            for t in &f.tagged {
                write_obj(&mut o, "    ", &t.objective);
                if let Some(l) = &t.locator {
                    let _ = writeln!(o, "        Locator: {l}");
                }
            }
        }
        Message::Invalid(i) => {
            let _ = writeln!(o, "Session ID: {}", i.session_id);
            let _ = writeln!(o, "Reason: {}", value(&i.content));
        }
        _ => {
            let _ = writeln!(
                o,
                "    {}",
                Value::from_cbor(raw.to_vec())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_and_a_response_read_like_graspy() {
        // A flood from the vectors: EX.news = 42, loop 3.
        let flood = grasp_engine::wire::Message::Flood(grasp_engine::wire::Flood {
            session_id: grasp_engine::wire::SessionId(7),
            initiator: "fd00:1::1".parse().unwrap(),
            ttl_ms: 60_000,
            tagged: vec![TaggedObjective {
                objective: Objective::new("EX.news", ObjectiveFlags::from_bits(5))
                    .with_value(Value::from(42u32))
                    .with_loop_count(3),
                locator: None,
            }],
            extensions: Vec::new(),
        })
        .encode();
        let p = pretty(&flood);
        assert!(p.contains("Message type: M_FLOOD"), "{p}");
        assert!(p.contains("Flags: |Discoverable|Synchronizable"), "{p}");
        assert!(p.contains("Loop count: 3"), "{p}");
        assert!(p.contains("Value: 42"), "{p}");
        assert_eq!(
            summary(&flood),
            "M_FLOOD sid 7 from fd00:1::1 ttl 60000 ms: EX.news [5] loop 3 = 42"
        );
        assert!(summary(&[0xff]).starts_with("undecodable"));
        assert!(pretty(&[0xff]).starts_with("Undecodable"));
    }
}
