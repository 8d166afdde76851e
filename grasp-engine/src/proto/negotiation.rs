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
        let clash = (req.session_id, peer.ip());
        let session = SessionHandle {
            channel,
            session_id: req.session_id,
        };
        let state = ChanState::Neg(Neg {
            sid: req.session_id,
            asa,
            name: req.objective.name.clone(),
            requester: false,
            pending: None,
            early: VecDeque::new(),
            raw: None,
            peer_closed: false,
            clash_key: Some(clash),
        });
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
            let state = ChanState::Neg(Neg {
                sid,
                asa,
                name,
                requester: true,
                pending: (!raw).then_some((cmd, NegWait::First)),
                early: VecDeque::new(),
                raw: raw.then(|| Raw {
                    opening: Some(cmd),
                    ..Raw::default()
                }),
                peer_closed: false,
                clash_key: None,
            });
            (request, state)
        });
        if let Err(e) = opened {
            self.request_failed(cmd, raw, e);
        }
    }

    /// A message on a negotiation session (not a raw one).
    pub(super) fn on_neg_message(
        &mut self,
        now: Instant,
        channel: ChannelId,
        raw: Bytes,
        decoded: Result<Message, crate::wire::DecodeError>,
    ) {
        let Some(n) = self.neg_mut(channel) else {
            return;
        };
        if n.pending.is_none() && !matches!(decoded, Ok(Message::Noop)) {
            // Our turn, but the peer spoke: keep it for the next call (a
            // step reads it as a message, a raw receive as bytes).
            if n.early.len() >= 4 {
                return self.close(channel, false);
            }
            n.early.push_back(Early {
                raw,
                msg: decoded.ok(),
            });
            return;
        }
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                let pending = self.neg_mut(channel).and_then(|n| n.pending.take());
                if let Some((cmd, _)) = pending {
                    let result = Err(err(ErrorCode::CborFail, e.to_string()));
                    self.events.push_back(Event::Negotiated { cmd, result });
                }
                return self.close(channel, false);
            }
        };
        if matches!(msg, Message::Noop) {
            return;
        }
        let Some(n) = self.neg_mut(channel) else {
            return;
        };
        if msg.session_id() != Some(n.sid) {
            return self.foreign_message(channel, &msg);
        }
        if let Some((cmd, wait)) = n.pending.take() {
            self.neg_reply(now, channel, cmd, wait, msg);
        }
    }

    /// The peer's answer to our request or step.
    fn neg_reply(
        &mut self,
        now: Instant,
        channel: ChannelId,
        cmd: CommandId,
        wait: NegWait,
        msg: Message,
    ) {
        let (sid, name) = match self.neg_mut(channel) {
            Some(n) => (n.sid, n.name.clone()),
            None => return,
        };
        match msg {
            Message::Negotiate(mut m) => {
                if m.objective.name != name || !m.objective.flags.contains(ObjectiveFlags::NEG) {
                    let result = Err(err(
                        ErrorCode::InvalidNeg,
                        format!("M_NEGOTIATE for {:?}", m.objective.name),
                    ));
                    self.events.push_back(Event::Negotiated { cmd, result });
                    return self.close(channel, false);
                }
                // graspy decrements on receipt (spec digest §9.3).
                m.objective.loop_count = m.objective.loop_count.saturating_sub(1);
                let session = SessionHandle {
                    channel,
                    session_id: sid,
                };
                let peer = self.channels.get(&channel).map(|c| c.peer);
                let identity = self.channels.get(&channel).and_then(|c| c.identity.clone());
                let result = Ok(NegotiationOutcome::Step {
                    session,
                    objective: m.objective,
                    peer,
                    identity,
                });
                self.events.push_back(Event::Negotiated { cmd, result });
                self.set_deadline(channel, Some(now + self.config.session_idle_timeout));
            }
            Message::Wait(w) => {
                //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.9
                //# the recipient ... replaces its timeout with the waiting time
                if let Some(n) = self.neg_mut(channel) {
                    n.pending = Some((cmd, wait));
                }
                // Bounded: a peer's M_WAIT of 49 days would hold the
                // channel, its connection slot and the ASA's call that long.
                let asked = Duration::from_millis(u64::from(w.waiting_time_ms));
                if asked > self.config.max_wait {
                    self.stats.waits_capped += 1;
                }
                self.set_deadline(channel, Some(now + asked.min(self.config.max_wait)));
            }
            Message::End(e) => {
                let result = match e.option {
                    EndOption::Accept => Ok(NegotiationOutcome::Accepted),
                    EndOption::Decline { reason } => Ok(NegotiationOutcome::Declined { reason }),
                    EndOption::Unknown(v) => {
                        Err(err(ErrorCode::InvalidEnd, format!("M_END with option {v}")))
                    }
                };
                self.events.push_back(Event::Negotiated { cmd, result });
                self.close(channel, true);
            }
            Message::Invalid(i) => {
                let result = Err(err(
                    ErrorCode::NoValidStep,
                    format!(
                        "peer sent M_INVALID {}",
                        i.content.map(|c| c.to_string()).unwrap_or_default()
                    ),
                ));
                self.events.push_back(Event::Negotiated { cmd, result });
                self.close(channel, false);
            }
            other => {
                let why = format!("unexpected {}", other.msg_type());
                let m = Message::Invalid(Invalid::new(sid, &why));
                let result = Err(err(ErrorCode::NoValidStep, why));
                self.events.push_back(Event::Negotiated { cmd, result });
                self.send(channel, &m);
                self.close(channel, false);
            }
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

    /// Another session's message on a session's channel: answered with
    /// M_INVALID (unless it is one).
    fn foreign_message(&mut self, channel: ChannelId, msg: &Message) {
        if !matches!(msg, Message::Invalid(_)) {
            let sid = msg.session_id().unwrap_or(SessionId(0));
            let m = Message::Invalid(Invalid::new(sid, "unknown session on this connection"));
            self.send(channel, &m);
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
        self.our_turn(asa, session)?;
        let ch = session.channel;
        if self.neg_mut(ch).is_some_and(|n| n.raw.is_some()) {
            return Err(err(
                ErrorCode::NoSession,
                "a raw session (gsend/grecv) takes no negotiation steps",
            ));
        }
        // Something the peer already said answers this step.
        while let Some(early) = self.neg_mut(ch).and_then(|n| n.early.pop_front()) {
            let Some(msg) = early.msg else {
                self.stats.malformed += 1;
                self.close(ch, false);
                return Err(err(ErrorCode::CborFail, "the peer sent what is not GRASP"));
            };
            if msg.session_id() == Some(session.session_id) {
                self.neg_reply(now, ch, cmd, NegWait::Step, msg);
                return Ok(());
            }
            self.foreign_message(ch, &msg);
        }
        if self.neg_mut(ch).is_some_and(|n| n.peer_closed) {
            self.close(ch, false);
            return Err(err(ErrorCode::NoPeer, "the peer closed the session"));
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.8.7
        //# if it would reach zero, the message MUST NOT be sent
        if objective.loop_count < 2 {
            self.close(ch, false);
            return Err(ErrorCode::LoopExhausted.into());
        }
        if let Some(n) = self.neg_mut(ch) {
            n.pending = Some((cmd, NegWait::Step));
        }
        self.send(
            ch,
            &Message::Negotiate(SessionObjective::new(session.session_id, objective)),
        );
        self.set_deadline(ch, Some(self.asa_deadline(now, timeout)));
        Ok(())
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
        self.our_turn(asa, session)?;
        if self
            .neg_mut(session.channel)
            .is_some_and(|n| n.raw.is_some())
        {
            return Err(err(
                ErrorCode::NoSession,
                "a raw session (gsend/grecv) takes no M_WAIT",
            ));
        }
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        self.send(
            session.channel,
            &Message::Wait(Wait {
                session_id: session.session_id,
                waiting_time_ms: ms,
                extensions: Vec::new(),
            }),
        );
        // We promised to answer within `wait`; give ourselves that long.
        self.set_deadline(
            session.channel,
            Some(self.asa_deadline(now, wait) + self.config.first_message_timeout),
        );
        Ok(())
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
        self.our_turn(asa, session)?;
        if self.ends_raw(session.channel) {
            return Ok(());
        }
        let option = if accept {
            EndOption::Accept
        } else {
            EndOption::Decline { reason }
        };
        self.send(
            session.channel,
            &Message::End(End {
                session_id: session.session_id,
                option,
                extensions: Vec::new(),
            }),
        );
        let requester = self.neg_mut(session.channel).is_some_and(|n| n.requester);
        self.close(session.channel, requester);
        Ok(())
    }

    /// `send_invalid`: M_INVALID with `info`, ending the session.
    pub fn send_invalid(
        &mut self,
        asa: AsaHandle,
        session: SessionHandle,
        info: Option<Value>,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.our_turn(asa, session)?;
        if self.ends_raw(session.channel) {
            return Ok(());
        }
        self.send(
            session.channel,
            &Message::Invalid(Invalid {
                session_id: session.session_id,
                content: info,
                extensions: Vec::new(),
            }),
        );
        self.close(session.channel, false);
        Ok(())
    }

    /// Abandons a session without telling the peer anything but EOF (the
    /// driver's call when an ASA's listener is gone or its queue is full).
    pub fn abort_session(&mut self, session: SessionHandle) {
        if let Some(n) = self.neg_mut(session.channel) {
            if n.sid == session.session_id {
                self.close(session.channel, false);
            }
        }
    }
}
