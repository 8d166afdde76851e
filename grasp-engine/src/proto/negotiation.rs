//! Negotiation (RFC 8990 §2.5.5, §2.8.6–§2.8.10): sessions we request
//! and sessions peers request, step by step, from either side's turn.

use super::*;

impl Engine {
    /// A peer's M_REQ_NEG: a new session for the ASA listening, if any.
    pub(super) fn on_neg_request(
        &mut self,
        now: Instant,
        channel: ChannelId,
        peer: SocketAddr,
        req: SessionObjective,
    ) {
        let listener = self
            .registry
            .get(&req.objective.name)
            .and_then(|r| r.listener);
        let Some((asa, subscription)) = listener else {
            // Nobody listening: close at once (§2.8.6 rule 5).
            return self.close(channel, false);
        };
        if !req.objective.flags.contains(ObjectiveFlags::NEG) {
            let m = Message::Invalid(Invalid::new(
                req.session_id,
                "M_REQ_NEG objective lacks F_NEG",
            ));
            self.send(channel, &m);
            return self.close(channel, false);
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.6
        //# if the received session ID is already locally active, the request
        //# MUST be discarded
        let session = SessionHandle {
            channel,
            session_id: req.session_id,
        };
        let name = req.objective.name.clone();
        let state = ChanState::Neg(Session::answering(req.session_id, asa, name, peer.ip()));
        if self.channels.set_state(channel, state).is_err() {
            self.stats.id_clashes += 1;
            return self.close(channel, false);
        }
        self.set_deadline(channel, Some(now + self.config.session_idle_timeout));
        let identity = self.channels.get(&channel).and_then(|c| c.identity.clone());
        self.events.push_back(Event::NegotiationRequest {
            subscription,
            session,
            objective: req.objective,
            peer,
            identity,
        });
    }

    /// Opens a session of `asa` to `loc` (M_REQ_NEG), ending in
    /// [`Event::Negotiated`] for `cmd`; with `raw`, graspy's raw channel,
    /// ending in [`Event::RawOpened`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_negotiation(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        loc: AsaLocator,
        objective: Objective,
        deadline: Instant,
        raw: bool,
    ) {
        // A raw session is the ASA's after RAW_GAP (graspy expects no
        // answer to this M_REQ_NEG); a negotiation waits for the peer.
        let until = if raw { now + RAW_GAP } else { deadline };
        let name = objective.name.clone();
        let opened = self.open_session(now, &loc, ErrorCode::SockErrNegRq, until, |sid| {
            let request = Message::ReqNeg(SessionObjective::new(sid, with_value_slot(objective)));
            let state = ChanState::Neg(Session::requesting(sid, asa, name, cmd, raw));
            (request, state)
        });
        if let Err(e) = opened {
            self.request_failed(cmd, raw, e);
        }
    }

    /// A request of ours failed before the peer answered: the call ends in
    /// [`Event::RawOpened`] for a raw one, [`Event::Negotiated`] otherwise.
    pub(super) fn request_failed(&mut self, cmd: CommandId, raw: bool, e: ApiError) {
        self.events.push_back(if raw {
            Event::RawOpened {
                cmd,
                result: Err(e),
            }
        } else {
            Event::Negotiated {
                cmd,
                result: Err(e),
            }
        });
    }

    /// Feeds the session on `channel`, if it is one, with `f`, and carries
    /// out what it says.
    pub(super) fn session<R>(
        &mut self,
        channel: ChannelId,
        f: impl FnOnce(&mut Session, &Config, &mut Vec<Action>) -> R,
    ) -> Option<R> {
        let Some(Chan {
            state: ChanState::Neg(s),
            ..
        }) = self.channels.get_mut(&channel)
        else {
            return None;
        };
        let mut out = std::mem::take(&mut self.session_actions);
        let r = f(s, &self.config, &mut out);
        let sid = s.sid;
        for a in out.drain(..) {
            self.act(channel, sid, a);
        }
        self.session_actions = out;
        Some(r)
    }

    /// An ASA's call `f` on `session`, when it is a live session of `asa`
    /// and its turn.
    pub(super) fn on_turn(
        &mut self,
        asa: AsaHandle,
        session: SessionHandle,
        f: impl FnOnce(&mut Session, &Config, &mut Vec<Action>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        self.session(session.channel, |s, cfg, out| {
            s.turn(asa, session.session_id)?;
            f(s, cfg, out)
        })
        .unwrap_or_else(|| {
            Err(err(
                ErrorCode::NoSession,
                "no such negotiation session (ended or timed out)",
            ))
        })
    }

    /// Carries out one thing session `sid` on `channel` said to do.
    pub(super) fn act(&mut self, channel: ChannelId, sid: SessionId, action: Action) {
        let session = SessionHandle {
            channel,
            session_id: sid,
        };
        match action {
            Action::Send(m) => self.send(channel, &m),
            Action::SendItem(msg) => self.transmits.push_back(Transmit::Send { channel, msg }),
            Action::Deadline(t) => self.set_deadline(channel, Some(t)),
            Action::Answer(cmd, result) => {
                let result = result.map(|a| match a {
                    Answer::Step(objective) => {
                        let c = self.channels.get(&channel);
                        NegotiationOutcome::Step {
                            session,
                            objective,
                            peer: c.map(|c| c.peer),
                            identity: c.and_then(|c| c.identity.clone()),
                        }
                    }
                    Answer::Accepted => NegotiationOutcome::Accepted,
                    Answer::Declined(reason) => NegotiationOutcome::Declined { reason },
                });
                self.events.push_back(Event::Negotiated { cmd, result });
            }
            Action::Item(cmd, result) => self.events.push_back(Event::RawReceived { cmd, result }),
            Action::Opened(cmd, result) => {
                let result = result.map(|()| session);
                self.events.push_back(Event::RawOpened { cmd, result });
            }
            Action::Count(Tally::Malformed) => self.stats.malformed += 1,
            Action::Count(Tally::WaitCapped) => self.stats.waits_capped += 1,
            Action::Count(Tally::Refused) => self.stats.bounded_refusals += 1,
            Action::Close { linger } => self.close(channel, linger),
        }
    }

    /// `listen_negotiate`: peers' requests for `name` then arrive as
    /// [`Event::NegotiationRequest`] naming the returned listen. A second
    /// listen replaces the first.
    pub fn listen_negotiate(
        &mut self,
        asa: AsaHandle,
        name: &str,
    ) -> Result<SubscriptionId, ApiError> {
        self.check_asa(asa)?;
        self.require_secure("negotiation")?;
        let reg = self.own_objective(asa, name)?;
        if !reg.objective.flags.contains(ObjectiveFlags::NEG) {
            return Err(ErrorCode::NotNeg.into());
        }
        let sub = self.new_subscription();
        let old = self
            .registry
            .get_mut(name)
            .and_then(|r| r.listener.replace((asa, sub)));
        if let Some((_, subscription)) = old {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(sub)
    }

    /// `stop_listen_negotiate`: ends the listen (its receiver sees the end).
    pub fn stop_negotiate(&mut self, asa: AsaHandle, name: &str) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.own_objective(asa, name)?;
        let old = self.registry.get_mut(name).and_then(|r| r.listener.take());
        if let Some((_, subscription)) = old {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(())
    }

    /// `negotiate_step`: our counter-offer (carry the loop count of the
    /// last received step), ending in [`Event::Negotiated`].
    pub fn negotiate_step(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        session: SessionHandle,
        objective: Objective,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        self.on_turn(asa, session, |s, cfg, out| {
            s.step(now, cfg, cmd, objective, timeout, out)
        })
    }

    /// `negotiate_wait`: tells the peer to wait `wait` for our next step
    /// (M_WAIT).
    pub fn negotiate_wait(
        &mut self,
        now: Instant,
        asa: AsaHandle,
        session: SessionHandle,
        wait: Duration,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.on_turn(asa, session, |s, cfg, out| s.wait(now, cfg, wait, out))
    }

    /// `end_negotiate`: accept, or decline with `reason` (M_END).
    pub fn end_negotiate(
        &mut self,
        asa: AsaHandle,
        session: SessionHandle,
        accept: bool,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.on_turn(asa, session, |s, _, out| {
            s.end(accept, reason, out);
            Ok(())
        })
    }

    /// `send_invalid`: M_INVALID with `info`, ending the session.
    pub fn send_invalid(
        &mut self,
        asa: AsaHandle,
        session: SessionHandle,
        info: Option<Value>,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.on_turn(asa, session, |s, _, out| {
            s.invalid(info, out);
            Ok(())
        })
    }

    /// Abandons a session without telling the peer anything but EOF (the
    /// driver's call when an ASA's listener is gone or its queue is full).
    pub fn abort_session(&mut self, session: SessionHandle) {
        self.session(session.channel, |s, _, out| {
            if s.sid == session.session_id {
                out.push(Action::Close { linger: false });
            }
        });
    }
}
