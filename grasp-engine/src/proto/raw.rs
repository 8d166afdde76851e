//! graspy's raw channel (`req_negotiate(..., noloop=True)`, `gsend`,
//! `grecv`): after M_REQ_NEG a session carries bare CBOR items, not GRASP
//! messages. Not RFC 8990; graspy's, for interop.

use super::*;

impl Engine {
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
        let item = Bytes::copy_from_slice(data.as_cbor());
        self.on_turn(asa, session, |s, cfg, out| s.send_item(now, cfg, item, out))
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
        self.on_turn(asa, session, |s, cfg, out| {
            s.recv_item(now, cfg, cmd, timeout, out)
        })
    }
}
