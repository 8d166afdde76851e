//! Synchronization (RFC 8990 §2.5.5): our M_REQ_SYN and its M_SYNCH, and
//! answering peers' requests for the objectives we serve.

use super::*;

impl Engine {
    /// Fetches `objective` from the ASA at `loc` (M_REQ_SYN), ending in
    /// [`Event::Synchronized`] for `cmd`.
    pub(super) fn synch_with(
        &mut self,
        now: Instant,
        cmd: CommandId,
        loc: AsaLocator,
        objective: Objective,
        deadline: Instant,
    ) {
        // graspy's rapid mode: the value came with the discovery response.
        if let Some(o) = loc.objective.as_ref().filter(|o| o.name == objective.name) {
            if o.value.is_some() {
                let result = Ok(o.clone());
                return self.events.push_back(Event::Synchronized { cmd, result });
            }
        }
        let name = objective.name.clone();
        let opened = self.open_session(now, &loc, ErrorCode::SockErrSynRq, deadline, |sid| {
            let request = Message::ReqSyn(SessionObjective::new(sid, with_value_slot(objective)));
            (request, ChanState::Synch { cmd, sid, name })
        });
        if let Err(e) = opened {
            let result = Err(e);
            self.events.push_back(Event::Synchronized { cmd, result });
        }
    }

    /// The answer to our M_REQ_SYN.
    pub(super) fn on_synch_reply(
        &mut self,
        channel: ChannelId,
        peer: SocketAddr,
        decoded: Result<Message, crate::wire::DecodeError>,
    ) {
        let Some(Chan {
            state: ChanState::Synch { cmd, sid, name },
            ..
        }) = self.channels.get(&channel)
        else {
            return;
        };
        let (cmd, sid, name) = (*cmd, *sid, name.clone());
        let result = match decoded {
            Ok(Message::Synch(s)) if s.session_id == sid && s.objective.name == name => {
                Ok(s.objective)
            }
            Ok(Message::Invalid(i)) => Err(err(
                ErrorCode::NoValidSynch,
                format!(
                    "{peer} answered M_INVALID {}",
                    i.content.map(|c| c.to_string()).unwrap_or_default()
                ),
            )),
            Ok(other) => Err(err(
                ErrorCode::NoValidSynch,
                format!(
                    "{peer} answered {} instead of M_SYNCH for this session",
                    other.msg_type()
                ),
            )),
            Err(e) => {
                self.stats.malformed += 1;
                Err(err(ErrorCode::CborFail, format!("{peer}: {e}")))
            }
        };
        self.events.push_back(Event::Synchronized { cmd, result });
        // Let the responder close first (TIME_WAIT on its side).
        self.close(channel, true);
    }

    /// A peer's M_REQ_SYN: answered with M_SYNCH when an ASA listens for
    /// the objective; the channel closes either way (RFC 8990 §2.8.6 rule
    /// 5: nobody listening, close at once).
    pub(super) fn on_req_syn(&mut self, channel: ChannelId, req: SessionObjective) {
        let mut obj = req.objective;
        if let Some(r) = self.registry.get(&obj.name).filter(|r| r.listen_synch) {
            // The request's objective has the same name: it becomes the
            // answer, with what we serve (no copy of the name).
            let Objective {
                name: _,
                flags,
                loop_count,
                value,
            } = &r.objective;
            obj.flags = *flags;
            obj.loop_count = *loop_count;
            obj.value.clone_from(value);
            self.send(
                channel,
                &Message::Synch(SessionObjective::new(req.session_id, obj)),
            );
        }
        self.close(channel, false);
    }

    /// `listen_synchronize`: serve `objective`'s value to peers from now
    /// on; called again, it updates the value served.
    pub fn listen_synchronize(
        &mut self,
        asa: AsaHandle,
        objective: Objective,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        self.require_secure("synchronization")?;
        self.own_objective(asa, &objective.name)?;
        if !objective.flags.contains(ObjectiveFlags::SYNCH) {
            return Err(ErrorCode::NotSynch.into());
        }
        if let Some(r) = self.registry.get_mut(&objective.name) {
            if !r.objective.flags.contains(ObjectiveFlags::SYNCH) {
                return Err(ErrorCode::NotSynch.into());
            }
            r.objective.value = objective.value;
            r.objective.loop_count = objective.loop_count;
            r.listen_synch = true;
        }
        Ok(())
    }

    /// `stop_listen_synchronize`.
    pub fn stop_synchronize(&mut self, asa: AsaHandle, name: &str) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.own_objective(asa, name)?;
        if let Some(r) = self.registry.get_mut(name) {
            r.listen_synch = false;
        }
        Ok(())
    }
}
