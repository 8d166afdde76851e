//! One negotiation session, either side (RFC 8990 §2.8.6–§2.8.10), and
//! graspy's raw channel on top of one, as a state machine of its own.
//!
//! A [`Session`] takes the peer's messages, its ASA's calls, the end of its
//! channel and its deadline, and answers each with [`Action`]s: what to
//! send, when it next times out, which call ends how, and whether to
//! close. It knows no engine, no channel table and no clock of its own, so
//! it is tested alone (`tests/session.rs`). The engine finds the session of a channel,
//! feeds it and carries out what it says (`negotiation.rs`, `raw.rs`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::err;
use super::types::{AsaHandle, ChannelEnd, CommandId, Config};
use crate::error::{ApiError, ErrorCode};
use crate::wire::{
    DecodeError, End, EndOption, Invalid, Message, Objective, ObjectiveFlags, SessionId,
    SessionObjective, Value, Wait,
};

/// How long a raw session of ours keeps the connection to M_REQ_NEG before
/// the ASA may send: graspy reads one message per `recv()`, and an item
/// right behind the request would be read with it and lost (seen by hand
/// against graspy's listen_negotiate/grecv).
pub(super) const RAW_GAP: Duration = Duration::from_millis(100);

/// Items a raw session keeps for its ASA before it closes the session.
pub(super) const RAW_INBOX: usize = 16;

/// Messages the peer may send during our turn before the session closes.
pub(super) const EARLY: usize = 4;

/// What a session asks its engine to do, in order.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Send this message to the peer.
    Send(Message),
    /// Send this bare CBOR item (graspy's `gsend`).
    SendItem(Bytes),
    /// The channel's deadline is now this.
    Deadline(Instant),
    /// A request or step ends.
    Answer(CommandId, Result<Answer, ApiError>),
    /// A raw receive (`grecv`) ends.
    Item(CommandId, Result<Value, ApiError>),
    /// A raw request ends: `Ok`, the session is its ASA's.
    Opened(CommandId, Result<(), ApiError>),
    /// Count this.
    Count(Tally),
    /// Close the channel; with `linger`, after what is queued is out.
    Close {
        /// Let queued messages out first.
        linger: bool,
    },
}

/// How the peer answered a request or step.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// M_NEGOTIATE: a counter-offer, its loop count already decremented
    /// (graspy's rule, spec digest §9.3); our turn.
    Step(Objective),
    /// M_END O_ACCEPT; the session is over.
    Accepted,
    /// M_END O_DECLINE; the session is over.
    Declined(Option<String>),
}

/// What a session counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tally {
    /// The peer sent what is not GRASP.
    Malformed,
    /// A peer's M_WAIT was cut to `max_wait`.
    WaitCapped,
    /// A bound refused the peer (a raw session's inbox was full).
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// For the answer to our M_REQ_NEG.
    First,
    /// For the answer to our M_NEGOTIATE.
    Step,
}

/// An item the peer sent during our turn: its bytes, and the message they
/// are if they are one.
#[derive(Debug)]
struct Early {
    raw: Bytes,
    msg: Option<Message>,
}

/// A session in graspy's raw mode (`gsend`/`grecv`).
#[derive(Debug, Default)]
struct Raw {
    /// Items received, not yet asked for (at most [`RAW_INBOX`]).
    inbox: VecDeque<Bytes>,
    /// A receive waiting for the next item.
    waiting: Option<CommandId>,
    /// Our request, answered with the session once M_REQ_NEG has had
    /// [`RAW_GAP`] to itself.
    opening: Option<CommandId>,
}

/// One negotiation session.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) sid: SessionId,
    pub(super) asa: AsaHandle,
    /// We sent the M_REQ_NEG (the session id is ours).
    pub(super) requester: bool,
    /// A peer's request: its (session id, address), unique while it lives
    /// (§2.8.6).
    pub(super) clash_key: Option<(SessionId, IpAddr)>,
    name: String,
    /// The call waiting for the peer; `None`: our turn.
    pending: Option<(CommandId, Waiting)>,
    /// What the peer sent during our turn (e.g. an M_END), for the next
    /// call: a message to a step, bytes to a raw receive.
    early: VecDeque<Early>,
    raw: Option<Raw>,
    peer_closed: bool,
}

impl Session {
    /// A peer's M_REQ_NEG for `name`: our turn.
    pub(super) fn answering(sid: SessionId, asa: AsaHandle, name: String, peer: IpAddr) -> Self {
        Session {
            sid,
            asa,
            requester: false,
            clash_key: Some((sid, peer)),
            name,
            pending: None,
            early: VecDeque::new(),
            raw: None,
            peer_closed: false,
        }
    }

    /// Our M_REQ_NEG for `name`, by call `cmd`: with `raw`, graspy's raw
    /// channel, the ASA's after [`RAW_GAP`]; otherwise waiting for the
    /// peer's answer.
    pub(super) fn requesting(
        sid: SessionId,
        asa: AsaHandle,
        name: String,
        cmd: CommandId,
        raw: bool,
    ) -> Self {
        Session {
            sid,
            asa,
            requester: true,
            clash_key: None,
            name,
            pending: (!raw).then_some((cmd, Waiting::First)),
            early: VecDeque::new(),
            raw: raw.then(|| Raw {
                opening: Some(cmd),
                ..Raw::default()
            }),
            peer_closed: false,
        }
    }

    /// Whether session `sid` is this one, `asa`'s, and its turn.
    pub(super) fn turn(&self, asa: AsaHandle, sid: SessionId) -> Result<(), ApiError> {
        if self.sid != sid {
            Err(err(
                ErrorCode::NoSession,
                "no such negotiation session (ended or timed out)",
            ))
        } else if self.asa != asa {
            Err(err(
                ErrorCode::NoSession,
                "the session belongs to another ASA",
            ))
        } else if self.pending.is_some() {
            Err(err(
                ErrorCode::NoSession,
                "a step is already waiting for the peer",
            ))
        } else {
            Ok(())
        }
    }

    /// What the peer sent: `raw`, and the message it is (or why not).
    pub(super) fn on_message(
        &mut self,
        now: Instant,
        cfg: &Config,
        raw: Bytes,
        decoded: Result<Message, DecodeError>,
        out: &mut Vec<Action>,
    ) {
        if let Some(r) = &mut self.raw {
            // graspy's raw channel: whatever comes is the ASA's, as it is.
            match r.waiting.take() {
                Some(cmd) => {
                    out.push(Action::Item(cmd, item(raw)));
                    out.push(Action::Deadline(now + cfg.session_idle_timeout));
                }
                None if r.inbox.len() < RAW_INBOX => r.inbox.push_back(raw),
                None => {
                    out.push(Action::Count(Tally::Refused));
                    out.push(Action::Close { linger: false });
                }
            }
            return;
        }
        if self.pending.is_none() && !matches!(decoded, Ok(Message::Noop)) {
            // Our turn, but the peer spoke: keep it for the next call.
            if self.early.len() >= EARLY {
                out.push(Action::Close { linger: false });
            } else {
                let msg = decoded.ok();
                self.early.push_back(Early { raw, msg });
            }
            return;
        }
        let msg = match decoded {
            Ok(Message::Noop) => return,
            Ok(m) => m,
            Err(e) => {
                out.push(Action::Count(Tally::Malformed));
                if let Some((cmd, _)) = self.pending.take() {
                    let e = err(ErrorCode::CborFail, e.to_string());
                    out.push(Action::Answer(cmd, Err(e)));
                }
                out.push(Action::Close { linger: false });
                return;
            }
        };
        if msg.session_id() != Some(self.sid) {
            return foreign(&msg, out);
        }
        if let Some((cmd, waiting)) = self.pending.take() {
            self.answer(now, cfg, cmd, waiting, msg, out);
        }
    }

    /// The peer's answer to our request or step.
    fn answer(
        &mut self,
        now: Instant,
        cfg: &Config,
        cmd: CommandId,
        waiting: Waiting,
        msg: Message,
        out: &mut Vec<Action>,
    ) {
        let over = match msg {
            Message::Negotiate(mut m) => {
                let o = &mut m.objective;
                if o.name != self.name || !o.flags.contains(ObjectiveFlags::NEG) {
                    let why = format!("M_NEGOTIATE for {:?}", o.name);
                    out.push(Action::Answer(cmd, Err(err(ErrorCode::InvalidNeg, why))));
                    out.push(Action::Close { linger: false });
                    return;
                }
                o.loop_count = o.loop_count.saturating_sub(1);
                out.push(Action::Answer(cmd, Ok(Answer::Step(m.objective))));
                out.push(Action::Deadline(now + cfg.session_idle_timeout));
                return;
            }
            Message::Wait(w) => {
                //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.9
                //# the recipient ... replaces its timeout with the waiting time
                self.pending = Some((cmd, waiting));
                // Bounded: a peer's M_WAIT of 49 days would hold the
                // channel, its connection slot and the ASA's call that long.
                let asked = Duration::from_millis(u64::from(w.waiting_time_ms));
                if asked > cfg.max_wait {
                    out.push(Action::Count(Tally::WaitCapped));
                }
                out.push(Action::Deadline(now + asked.min(cfg.max_wait)));
                return;
            }
            Message::End(e) => match e.option {
                EndOption::Accept => Ok(Answer::Accepted),
                EndOption::Decline { reason } => Ok(Answer::Declined(reason)),
                EndOption::Unknown(v) => {
                    Err(err(ErrorCode::InvalidEnd, format!("M_END with option {v}")))
                }
            },
            Message::Invalid(i) => {
                let what = i.content.map(|c| c.to_string()).unwrap_or_default();
                let why = format!("peer sent M_INVALID {what}");
                out.push(Action::Answer(cmd, Err(err(ErrorCode::NoValidStep, why))));
                out.push(Action::Close { linger: false });
                return;
            }
            other => {
                let why = format!("unexpected {}", other.msg_type());
                out.push(Action::Send(Message::Invalid(Invalid::new(self.sid, &why))));
                out.push(Action::Answer(cmd, Err(err(ErrorCode::NoValidStep, why))));
                out.push(Action::Close { linger: false });
                return;
            }
        };
        out.push(Action::Answer(cmd, over));
        out.push(Action::Close { linger: true });
    }

    /// `negotiate_step` by call `cmd` (the caller checked [`Session::turn`]).
    pub(super) fn step(
        &mut self,
        now: Instant,
        cfg: &Config,
        cmd: CommandId,
        objective: Objective,
        timeout: Duration,
        out: &mut Vec<Action>,
    ) -> Result<(), ApiError> {
        if self.raw.is_some() {
            return Err(err(
                ErrorCode::NoSession,
                "a raw session (gsend/grecv) takes no negotiation steps",
            ));
        }
        // Something the peer already said answers this step.
        while let Some(early) = self.early.pop_front() {
            let Some(msg) = early.msg else {
                out.push(Action::Count(Tally::Malformed));
                out.push(Action::Close { linger: false });
                return Err(err(ErrorCode::CborFail, "the peer sent what is not GRASP"));
            };
            if msg.session_id() == Some(self.sid) {
                self.answer(now, cfg, cmd, Waiting::Step, msg, out);
                return Ok(());
            }
            foreign(&msg, out);
        }
        if self.peer_closed {
            return Err(peer_gone(out));
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.7
        //# if it would reach zero, the message MUST NOT be sent
        if objective.loop_count < 2 {
            out.push(Action::Close { linger: false });
            return Err(ErrorCode::LoopExhausted.into());
        }
        self.pending = Some((cmd, Waiting::Step));
        let m = Message::Negotiate(SessionObjective::new(self.sid, objective));
        out.push(Action::Send(m));
        out.push(Action::Deadline(cfg.asa_deadline(now, timeout)));
        Ok(())
    }

    /// `negotiate_wait`: M_WAIT, promising our next step within `wait`.
    pub(super) fn wait(
        &mut self,
        now: Instant,
        cfg: &Config,
        wait: Duration,
        out: &mut Vec<Action>,
    ) -> Result<(), ApiError> {
        if self.raw.is_some() {
            return Err(err(
                ErrorCode::NoSession,
                "a raw session (gsend/grecv) takes no M_WAIT",
            ));
        }
        out.push(Action::Send(Message::Wait(Wait {
            session_id: self.sid,
            waiting_time_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            extensions: Vec::new(),
        })));
        // We promised to answer within `wait`; give ourselves that long.
        let until = cfg.asa_deadline(now, wait) + cfg.first_message_timeout;
        out.push(Action::Deadline(until));
        Ok(())
    }

    /// `end_negotiate`: M_END, accepting or declining with `reason`. A raw
    /// session ends by closing its connection, as graspy's do.
    pub(super) fn end(&mut self, accept: bool, reason: Option<String>, out: &mut Vec<Action>) {
        if self.raw.is_none() {
            let option = if accept {
                EndOption::Accept
            } else {
                EndOption::Decline { reason }
            };
            out.push(Action::Send(Message::End(End {
                session_id: self.sid,
                option,
                extensions: Vec::new(),
            })));
        }
        // The requester speaks last: let its M_END out before closing.
        let linger = self.raw.is_none() && self.requester;
        out.push(Action::Close { linger });
    }

    /// `send_invalid`: M_INVALID with `info`, ending the session.
    pub(super) fn invalid(&mut self, info: Option<Value>, out: &mut Vec<Action>) {
        if self.raw.is_none() {
            out.push(Action::Send(Message::Invalid(Invalid {
                session_id: self.sid,
                content: info,
                extensions: Vec::new(),
            })));
        }
        out.push(Action::Close { linger: false });
    }

    /// Makes the session raw if it is not yet: what the peer said during
    /// our turn becomes its first items.
    fn raw(&mut self) -> &mut Raw {
        let early = &mut self.early;
        self.raw.get_or_insert_with(|| Raw {
            inbox: early.drain(..).map(|e| e.raw).collect(),
            ..Raw::default()
        })
    }

    /// graspy's `gsend` (the caller checked [`Session::turn`] and the
    /// item's size).
    pub(super) fn send_item(
        &mut self,
        now: Instant,
        cfg: &Config,
        item: Bytes,
        out: &mut Vec<Action>,
    ) -> Result<(), ApiError> {
        self.raw();
        out.push(Action::SendItem(item));
        if self.peer_closed {
            return Err(peer_gone(out));
        }
        out.push(Action::Deadline(now + cfg.session_idle_timeout));
        Ok(())
    }

    /// graspy's `grecv` by call `cmd`, waiting up to `timeout` (the caller
    /// checked [`Session::turn`]).
    pub(super) fn recv_item(
        &mut self,
        now: Instant,
        cfg: &Config,
        cmd: CommandId,
        timeout: Duration,
        out: &mut Vec<Action>,
    ) -> Result<(), ApiError> {
        let closed = self.peer_closed;
        let r = self.raw();
        if r.waiting.is_some() {
            return Err(err(ErrorCode::NoSession, "a grecv is already waiting"));
        }
        if let Some(i) = r.inbox.pop_front() {
            out.push(Action::Item(cmd, item(i)));
        } else if closed {
            return Err(peer_gone(out));
        } else {
            r.waiting = Some(cmd);
            out.push(Action::Deadline(cfg.asa_deadline(now, timeout)));
        }
        Ok(())
    }

    /// The peer (at `peer`) ended the channel. True: the session stays for
    /// its ASA's next call (which learns the peer is gone); false: it is
    /// over, and the call waiting, if any, has its answer.
    ///
    /// A half-close ([`ChannelEnd::PeerFinished`]) means "done sending":
    /// during our turn the peer can still read our M_END.
    pub(super) fn on_peer_end(
        &mut self,
        how: ChannelEnd,
        peer: SocketAddr,
        out: &mut Vec<Action>,
    ) -> bool {
        if let Some(r) = &mut self.raw {
            // Items already received are still the ASA's.
            if let Some(cmd) = r.waiting.take() {
                let e = err(ErrorCode::NoPeer, PEER_GONE);
                out.push(Action::Item(cmd, Err(e)));
                return false;
            }
            self.peer_closed = !r.inbox.is_empty();
            return self.peer_closed;
        }
        let Some((cmd, waiting)) = self.pending else {
            // Our turn: keep it if the peer may read our answer, or left
            // something for the ASA's next call.
            self.peer_closed = how == ChannelEnd::PeerFinished || !self.early.is_empty();
            return self.peer_closed;
        };
        self.pending = None;
        let e = if waiting == Waiting::First && how == ChannelEnd::Reset {
            err(
                ErrorCode::SockErrNegRq,
                format!("{peer} refused the connection (reset) before answering: it is at its connection limit or restarting; try again later"),
            )
        } else {
            err(ErrorCode::NoPeer, format!("{peer} closed the connection"))
        };
        out.push(Action::Answer(cmd, Err(e)));
        false
    }

    /// Our connection to `peer` failed (`reason`).
    pub(super) fn on_connect_failed(
        &mut self,
        peer: SocketAddr,
        reason: &str,
        out: &mut Vec<Action>,
    ) {
        if let Some((cmd, _)) = self.pending.take() {
            let e = err(
                ErrorCode::SockErrNegRq,
                format!("connecting to {peer}: {reason}"),
            );
            out.push(Action::Answer(cmd, Err(e)));
        }
    }

    /// The channel's deadline passed.
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        cfg: &Config,
        peer: SocketAddr,
        out: &mut Vec<Action>,
    ) {
        if let Some(r) = &mut self.raw {
            if let Some(cmd) = r.opening.take() {
                // Our raw request has had the connection to itself.
                out.push(Action::Opened(cmd, Ok(())));
                out.push(Action::Deadline(now + cfg.session_idle_timeout));
                return;
            }
            if let Some(cmd) = r.waiting.take() {
                // A grecv timed out (graspy's noReply); the session stays.
                let e = err(ErrorCode::NoReply, format!("{peer} sent nothing in time"));
                out.push(Action::Item(cmd, Err(e)));
                out.push(Action::Deadline(now + cfg.session_idle_timeout));
                return;
            }
        }
        if let Some((cmd, _)) = self.pending.take() {
            let e = err(
                ErrorCode::NoNegReply,
                format!("{peer} did not answer in time"),
            );
            out.push(Action::Answer(cmd, Err(e)));
        }
        out.push(Action::Close { linger: false });
    }

    /// Its ASA is gone: the call waiting for the peer ends, and so does
    /// the session.
    pub(super) fn on_asa_gone(&mut self, out: &mut Vec<Action>) {
        if let Some((cmd, _)) = self.pending.take() {
            let e = err(ErrorCode::NoSession, "the ASA was deregistered");
            out.push(Action::Answer(cmd, Err(e)));
        }
        out.push(Action::Close { linger: false });
    }

    /// The session is gone (closed, or its channel lost): the raw calls
    /// still waiting on it end.
    pub(super) fn abandoned(&self) -> impl Iterator<Item = Action> {
        let r = self.raw.as_ref();
        let waiting = r.and_then(|r| r.waiting).map(|cmd| {
            let e = err(ErrorCode::NoSession, "the session ended");
            Action::Item(cmd, Err(e))
        });
        let opening = r.and_then(|r| r.opening).map(|cmd| {
            let e = err(ErrorCode::SockErrNegRq, "the connection to the peer failed");
            Action::Opened(cmd, Err(e))
        });
        waiting.into_iter().chain(opening)
    }
}

const PEER_GONE: &str = "the peer closed the session";

/// An ASA's call on a session whose peer has gone: the session closes and
/// the call fails with noPeer.
fn peer_gone(out: &mut Vec<Action>) -> ApiError {
    out.push(Action::Close { linger: false });
    err(ErrorCode::NoPeer, PEER_GONE)
}

/// A raw item as the ASA gets it: one well-formed CBOR item, or CBORfail.
fn item(raw: Bytes) -> Result<Value, ApiError> {
    Value::from_cbor(raw).map_err(|e| err(ErrorCode::CborFail, format!("the peer sent {e}")))
}

/// Another session's message on this one's channel: M_INVALID (unless it
/// is one).
fn foreign(msg: &Message, out: &mut Vec<Action>) {
    if !matches!(msg, Message::Invalid(_)) {
        let sid = msg.session_id().unwrap_or(SessionId(0));
        let why = "unknown session on this connection";
        out.push(Action::Send(Message::Invalid(Invalid::new(sid, why))));
    }
}
