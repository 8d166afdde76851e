//! A negotiation session alone: no engine, no channels, no clock; what
//! it is fed and what it says to do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::session::{Action, Answer, Session, Tally, EARLY, RAW_INBOX};
use super::super::types::{AsaHandle, ChannelEnd, CommandId, Config};
use crate::error::ErrorCode;
use crate::wire::{
    End, EndOption, Invalid, Message, Objective, ObjectiveFlags, SessionId, SessionObjective,
    Value, Wait,
};

const SID: SessionId = SessionId(77);
const ASA: AsaHandle = AsaHandle(3);
const CMD: CommandId = CommandId(1);

fn peer() -> SocketAddr {
    "[fe80::2]:7017".parse().unwrap()
}

fn offer(v: u64, loop_count: u8) -> Objective {
    Objective::new("EX1", ObjectiveFlags::NEG)
        .with_value(v)
        .with_loop_count(loop_count)
}

fn negotiate(sid: SessionId, o: Objective) -> Message {
    Message::Negotiate(SessionObjective::new(sid, o))
}

fn end(option: EndOption) -> Message {
    Message::End(End {
        session_id: SID,
        option,
        extensions: Vec::new(),
    })
}

/// Feeds `msg` as the peer's bytes; what the session said.
fn hear(s: &mut Session, now: Instant, msg: &Message) -> Vec<Action> {
    let raw = msg.encode();
    let decoded = Message::decode(&raw);
    let mut out = Vec::new();
    s.on_message(now, &Config::default(), raw, decoded, &mut out);
    out
}

fn requester() -> Session {
    Session::requesting(SID, ASA, "EX1".into(), CMD, false)
}

#[test]
fn a_haggle_from_the_requesters_side() {
    let cfg = Config::default();
    let now = Instant::now();
    let mut s = requester();
    assert!(s.turn(ASA, SID).is_err(), "our request waits for the peer");
    // The peer counters: our turn, the loop count taken down on receipt.
    let out = hear(&mut s, now, &negotiate(SID, offer(5, 6)));
    assert_eq!(
        out,
        [
            Action::Answer(CMD, Ok(Answer::Step(offer(5, 5)))),
            Action::Deadline(now + cfg.session_idle_timeout),
        ]
    );
    s.turn(ASA, SID).unwrap();
    assert!(s.turn(AsaHandle(4), SID).is_err(), "another ASA's session");
    assert!(s.turn(ASA, SessionId(1)).is_err(), "another session");
    // Our counter-offer goes out and waits, for the ASA's time at most.
    let mut out = Vec::new();
    let step = CommandId(2);
    let t = Duration::from_secs(2);
    s.step(now, &cfg, step, offer(6, 5), t, &mut out).unwrap();
    assert_eq!(
        out,
        [
            Action::Send(negotiate(SID, offer(6, 5))),
            Action::Deadline(now + t)
        ]
    );
    // The peer asks for time: still waiting, for no more than max_wait.
    let wait = Message::Wait(Wait {
        session_id: SID,
        waiting_time_ms: u32::MAX,
        extensions: Vec::new(),
    });
    assert_eq!(
        hear(&mut s, now, &wait),
        [
            Action::Count(Tally::WaitCapped),
            Action::Deadline(now + cfg.max_wait)
        ]
    );
    // Then declines; the requester lets nothing more out and closes.
    let reason = Some("too dear".to_string());
    let decline = end(EndOption::Decline {
        reason: reason.clone(),
    });
    assert_eq!(
        hear(&mut s, now, &decline),
        [
            Action::Answer(step, Ok(Answer::Declined(reason))),
            Action::Close { linger: true }
        ]
    );
}

#[test]
fn the_responder_ends_its_session() {
    let ip = peer().ip();
    let mut s = Session::answering(SID, ASA, "EX1".into(), ip);
    assert_eq!(s.clash_key, Some((SID, ip)));
    s.turn(ASA, SID).unwrap();
    let mut out = Vec::new();
    s.end(true, None, &mut out);
    assert_eq!(
        out,
        [
            Action::Send(end(EndOption::Accept)),
            // The requester has the last word: no linger needed.
            Action::Close { linger: false }
        ]
    );
}

#[test]
fn what_the_peer_says_during_our_turn_answers_the_next_step() {
    let cfg = Config::default();
    let now = Instant::now();
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    // A stray message of another session, then the peer's M_END.
    assert!(hear(&mut s, now, &negotiate(SessionId(9), offer(1, 6))).is_empty());
    assert!(hear(&mut s, now, &end(EndOption::Accept)).is_empty());
    let mut out = Vec::new();
    let t = Duration::from_secs(1);
    s.step(now, &cfg, CMD, offer(2, 6), t, &mut out).unwrap();
    let stray = Message::Invalid(Invalid::new(
        SessionId(9),
        "unknown session on this connection",
    ));
    assert_eq!(
        out,
        [
            Action::Send(stray),
            Action::Answer(CMD, Ok(Answer::Accepted)),
            Action::Close { linger: true }
        ],
        "nothing of ours was sent: the peer had already ended"
    );
    // A peer that keeps talking out of turn is cut off.
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    for _ in 0..EARLY {
        assert!(hear(&mut s, now, &end(EndOption::Accept)).is_empty());
    }
    assert_eq!(
        hear(&mut s, now, &end(EndOption::Accept)),
        [Action::Close { linger: false }]
    );
}

#[test]
fn a_step_that_would_exhaust_the_loop_count_is_not_sent() {
    let now = Instant::now();
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    let mut out = Vec::new();
    let t = Duration::from_secs(1);
    let e = s.step(now, &Config::default(), CMD, offer(1, 1), t, &mut out);
    assert_eq!(e.unwrap_err().code, ErrorCode::LoopExhausted);
    assert_eq!(out, [Action::Close { linger: false }]);
}

#[test]
fn bad_answers_end_the_call_and_the_session() {
    let now = Instant::now();
    // Not GRASP: counted, and the waiting call learns why.
    let mut s = requester();
    let mut out = Vec::new();
    let raw = Bytes::from_static(&[0xff]);
    let decoded = Message::decode(&raw);
    s.on_message(now, &Config::default(), raw, decoded, &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Action::Count(Tally::Malformed));
    assert!(
        matches!(&out[1], Action::Answer(CMD, Err(e)) if e.code == ErrorCode::CborFail),
        "{out:?}"
    );
    assert_eq!(out[2], Action::Close { linger: false });
    // A counter-offer for another objective.
    let mut s = requester();
    let other = Objective::new("EX2", ObjectiveFlags::NEG);
    let out = hear(&mut s, now, &negotiate(SID, other));
    assert!(
        matches!(&out[0], Action::Answer(CMD, Err(e)) if e.code == ErrorCode::InvalidNeg),
        "{out:?}"
    );
    // Another session's message is answered, and the call still waits.
    let mut s = requester();
    let out = hear(&mut s, now, &negotiate(SessionId(9), offer(1, 6)));
    assert!(matches!(&out[..], [Action::Send(Message::Invalid(_))]));
    assert!(s.turn(ASA, SID).is_err(), "still waiting for the peer");
    // An unexpected message type: M_INVALID back, the call fails.
    let out = hear(
        &mut s,
        now,
        &Message::ReqNeg(SessionObjective::new(SID, offer(1, 6))),
    );
    assert!(
        matches!(&out[0], Action::Send(Message::Invalid(_))),
        "{out:?}"
    );
    assert!(matches!(&out[1], Action::Answer(CMD, Err(e)) if e.code == ErrorCode::NoValidStep));
    assert_eq!(out[2], Action::Close { linger: false });
}

#[test]
fn timeouts_and_a_vanishing_peer() {
    let cfg = Config::default();
    let now = Instant::now();
    let mut s = requester();
    let mut out = Vec::new();
    s.on_timeout(now, &cfg, peer(), &mut out);
    assert!(matches!(&out[0], Action::Answer(CMD, Err(e)) if e.code == ErrorCode::NoNegReply));
    assert_eq!(out[1], Action::Close { linger: false });
    // A reset before the first answer: the peer refused us.
    let mut s = requester();
    let mut out = Vec::new();
    assert!(!s.on_peer_end(ChannelEnd::Reset, peer(), &mut out));
    assert!(matches!(&out[0], Action::Answer(CMD, Err(e)) if e.code == ErrorCode::SockErrNegRq));
    // During our turn a half-close keeps the session for our M_END;
    // the next step learns the peer is gone.
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    let mut out = Vec::new();
    assert!(s.on_peer_end(ChannelEnd::PeerFinished, peer(), &mut out));
    assert!(out.is_empty());
    let t = Duration::from_secs(1);
    let e = s.step(now, &cfg, CMD, offer(1, 6), t, &mut out);
    assert_eq!(e.unwrap_err().code, ErrorCode::NoPeer);
    assert_eq!(out, [Action::Close { linger: false }]);
    // A lost channel during our turn with nothing said: over.
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    assert!(!s.on_peer_end(ChannelEnd::Lost, peer(), &mut Vec::new()));
}

#[test]
fn a_raw_session_keeps_items_for_its_asa_within_a_bound() {
    let cfg = Config::default();
    let now = Instant::now();
    let mut s = Session::requesting(SID, ASA, "EX1".into(), CMD, true);
    // The request has the connection to itself for RAW_GAP, then the
    // session is the ASA's.
    let mut out = Vec::new();
    s.on_timeout(now, &cfg, peer(), &mut out);
    assert_eq!(
        out,
        [
            Action::Opened(CMD, Ok(())),
            Action::Deadline(now + cfg.session_idle_timeout)
        ]
    );
    s.turn(ASA, SID).unwrap();
    let item = |n: u64| Bytes::copy_from_slice(Value::from(n).as_cbor());
    let mut out = Vec::new();
    for n in 0..RAW_INBOX as u64 {
        s.on_message(now, &cfg, item(n), Message::decode(&item(n)), &mut out);
    }
    assert!(out.is_empty(), "kept: {out:?}");
    // One more than the inbox holds ends the session, counted.
    let mut full = Session::requesting(SID, ASA, "EX1".into(), CMD, true);
    for n in 0..=RAW_INBOX as u64 {
        full.on_message(now, &cfg, item(n), Message::decode(&item(n)), &mut out);
    }
    assert_eq!(
        out,
        [
            Action::Count(Tally::Refused),
            Action::Close { linger: false }
        ]
    );
    // The peer leaves: its items are still the ASA's, then NoPeer.
    let mut out = Vec::new();
    assert!(s.on_peer_end(ChannelEnd::PeerFinished, peer(), &mut out));
    let t = Duration::from_secs(1);
    for n in 0..RAW_INBOX as u64 {
        s.recv_item(now, &cfg, CMD, t, &mut out).unwrap();
        assert_eq!(out.pop(), Some(Action::Item(CMD, Ok(Value::from(n)))));
    }
    let e = s.recv_item(now, &cfg, CMD, t, &mut out);
    assert_eq!(e.unwrap_err().code, ErrorCode::NoPeer);
    assert_eq!(out, [Action::Close { linger: false }]);
    // A raw session takes no GRASP steps.
    let e = s.step(now, &cfg, CMD, offer(1, 6), t, &mut Vec::new());
    assert_eq!(e.unwrap_err().code, ErrorCode::NoSession);
}

#[test]
fn a_session_a_peer_opened_turns_raw_with_what_the_peer_said() {
    let cfg = Config::default();
    let now = Instant::now();
    let mut s = Session::answering(SID, ASA, "EX1".into(), peer().ip());
    let first = Bytes::copy_from_slice(Value::from(42u64).as_cbor());
    let decoded = Message::decode(&first);
    s.on_message(now, &cfg, first, decoded, &mut Vec::new());
    let mut out = Vec::new();
    let t = Duration::from_secs(1);
    s.recv_item(now, &cfg, CMD, t, &mut out).unwrap();
    assert_eq!(out, [Action::Item(CMD, Ok(Value::from(42u64)))]);
    // A receive waits; the item that comes answers it.
    let mut out = Vec::new();
    s.recv_item(now, &cfg, CommandId(2), t, &mut out).unwrap();
    assert_eq!(out, [Action::Deadline(now + t)]);
    assert_eq!(
        s.recv_item(now, &cfg, CommandId(3), t, &mut out)
            .unwrap_err()
            .code,
        ErrorCode::NoSession,
        "one receive at a time"
    );
    // Ending it: the raw calls still waiting learn so.
    let ended: Vec<_> = s.abandoned().collect();
    assert!(
        matches!(&ended[..], [Action::Item(CommandId(2), Err(e))] if e.code == ErrorCode::NoSession)
    );
    let mut out = Vec::new();
    s.end(true, None, &mut out);
    assert_eq!(
        out,
        [Action::Close { linger: false }],
        "no M_END on a raw session"
    );
}
