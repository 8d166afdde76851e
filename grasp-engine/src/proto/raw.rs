//! graspy's raw channel (`req_negotiate(..., noloop=True)`, `gsend`,
//! `grecv`): after M_REQ_NEG a session carries bare CBOR items, not GRASP
//! messages. Not RFC 8990; graspy's, for interop.

use super::*;

impl Engine {
    /// Answers a raw receive with `item`, or CBORfail when it is not one
    /// well-formed CBOR item.
    fn reply_raw(&mut self, cmd: CommandId, item: Bytes) {
        let result = Value::from_cbor(item)
            .map_err(|e| err(ErrorCode::CborFail, format!("the peer sent {e}")));
        self.events.push_back(Event::RawReceived { cmd, result });
    }

    /// Makes session `s` of `asa` raw (graspy's gsend/grecv) if it is not
    /// yet: what the peer said during our turn becomes its first items.
    fn raw_session(&mut self, asa: AsaHandle, s: SessionHandle) -> Result<&mut Raw, ApiError> {
        self.our_turn(asa, s)?;
        let n = self
            .neg_mut(s.channel)
            .ok_or_else(|| err(ErrorCode::NoSession, "no such session"))?;
        if n.raw.is_none() {
            let inbox = n.early.drain(..).map(|e| e.raw).collect();
            n.raw = Some(Raw {
                inbox,
                ..Raw::default()
            });
        }
        n.raw
            .as_mut()
            .ok_or_else(|| err(ErrorCode::NoSession, "no such session"))
    }

    /// An item on a raw session: whatever comes is the ASA's, as it is.
    pub(super) fn on_raw_item(&mut self, now: Instant, channel: ChannelId, item: Bytes) {
        let Some(r) = self.neg_mut(channel).and_then(|n| n.raw.as_mut()) else {
            return;
        };
        match r.waiting.take() {
            Some(cmd) => {
                let idle = now + self.config.session_idle_timeout;
                self.reply_raw(cmd, item);
                self.set_deadline(channel, Some(idle));
            }
            None if r.inbox.len() < RAW_INBOX => r.inbox.push_back(item),
            None => {
                self.stats.bounded_refusals += 1;
                self.close(channel, false);
            }
        }
    }

    /// graspy's `gsend`: one bare CBOR item on `session`. On a session a
    /// peer opened (from a listen), the first raw call makes it raw.
    pub fn raw_send(
        &mut self,
        now: Instant,
        asa: AsaHandle,
        session: SessionHandle,
        data: &Value,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        let max = self.config.limits.max_message_size;
        if data.as_cbor().len() > max {
            return Err(err(
                ErrorCode::TooLarge,
                format!(
                    "a {}-byte item; the transport carries {max} at most",
                    data.as_cbor().len()
                ),
            ));
        }
        self.raw_session(asa, session)?;
        let idle = now + self.config.session_idle_timeout;
        self.transmits.push_back(Transmit::Send {
            channel: session.channel,
            msg: Bytes::copy_from_slice(data.as_cbor()),
        });
        if self.neg_mut(session.channel).is_some_and(|n| n.peer_closed) {
            self.close(session.channel, false);
            return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
        }
        self.set_deadline(session.channel, Some(idle));
        Ok(())
    }

    /// graspy's `grecv`: the next bare CBOR item the peer sent, waiting up
    /// to `timeout`, ending in [`Event::RawReceived`] (`noReply` on
    /// timeout; the session stays).
    pub fn raw_recv(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        session: SessionHandle,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        let deadline = self.asa_deadline(now, timeout);
        let closed = self.neg_mut(session.channel).is_some_and(|n| n.peer_closed);
        let r = self.raw_session(asa, session)?;
        if r.waiting.is_some() {
            return Err(err(ErrorCode::NoSession, "a grecv is already waiting"));
        }
        if let Some(item) = r.inbox.pop_front() {
            self.reply_raw(cmd, item);
        } else if closed {
            self.close(session.channel, false);
            return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
        } else {
            r.waiting = Some(cmd);
            self.set_deadline(session.channel, Some(deadline));
        }
        Ok(())
    }
}
