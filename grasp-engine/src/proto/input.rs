//! The input router: what arrives from the network and the clock, sent to
//! the procedure it belongs to. Waits a procedure finishes go on through
//! the calls (`calls.rs`); procedures never call back here.

use super::discoveries::Due;
use super::*;

impl Engine {
    /// A link-local multicast arrived.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        self.stats.received.count(&d.msg);
        let msg = match Message::decode_with(&d.msg, &self.config.limits) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        // RFC 8990 §2.5.2 rule 6 for DULL; every GRASP multicast should come
        // from a link-local source anyway.
        if self.config.dull && !is_link_local(d.src.ip()) {
            self.stats.dull_dropped += 1;
            return;
        }
        let src = SocketAddrV6::new(*d.src.ip(), d.src.port(), 0, d.ifindex);
        match msg {
            Message::Discovery(disc) => self.on_discovery(now, d.ifindex, src, disc, &d.msg),
            Message::Flood(f) => self.on_flood(now, d.ifindex, src, f, &d.msg),
            Message::Unknown(_) => self.stats.unknown_multicast += 1,
            _ => {} // M_NOOP and unicast-only types: ignore.
        }
    }

    /// A peer opened a channel to us; `identity` is who the transport
    /// proved it to be (TLS), if anyone. Returns the channel's id, or `None`
    /// when the engine refuses it (at its channel limit): then drop the
    /// connection.
    pub fn handle_inbound_channel(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        identity: Option<String>,
    ) -> Option<ChannelId> {
        let chan = Chan {
            peer,
            identity,
            deadline: None,
            state: ChanState::Fresh,
        };
        match self
            .channels
            .open(chan, now + self.config.first_message_timeout)
        {
            Ok(channel) => Some(channel),
            Err(_) => {
                self.stats.bounded_refusals += 1;
                None
            }
        }
    }

    /// The transport proved who the peer of our outgoing `channel` is
    /// (TLS); its sessions report the identity from now on.
    pub fn handle_peer_identity(&mut self, channel: ChannelId, identity: String) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.identity = Some(identity);
        }
    }

    /// A channel we asked for could not be opened.
    pub fn handle_connect_failed(&mut self, _now: Instant, channel: ChannelId, reason: String) {
        let Some(peer) = self.channels.get(&channel).map(|c| c.peer) else {
            return;
        };
        self.session(channel, |s, _, out| s.on_connect_failed(peer, &reason, out));
        let Some(ch) = self.remove_channel(channel) else {
            return;
        };
        if let ChanState::Synch { cmd, .. } = ch.state {
            let result = Err(err(
                ErrorCode::SockErrSynRq,
                format!("connecting to {peer}: {reason}"),
            ));
            self.events.push_back(Event::Synchronized { cmd, result });
        }
    }

    /// A channel ended: the peer finished sending, or the channel is gone.
    ///
    /// A half-close ([`ChannelEnd::PeerFinished`]) means "done sending", not
    /// "gone": what the engine already queued for the channel is still
    /// delivered (the driver closes after it), and a negotiation may stay
    /// for its ASA's next call (the session decides).
    pub fn handle_channel_closed(&mut self, _now: Instant, channel: ChannelId, how: ChannelEnd) {
        let Some(peer) = self.channels.get(&channel).map(|c| c.peer) else {
            return;
        };
        if self.session(channel, |s, _, out| s.on_peer_end(how, peer, out)) == Some(true) {
            return;
        }
        let Some(ch) = self.remove_channel(channel) else {
            return;
        };
        if how == ChannelEnd::PeerFinished {
            // Closing our side too; the driver sends what is queued first.
            self.transmits.push_back(Transmit::Close {
                channel,
                linger: false,
            });
        }
        if let ChanState::Synch { cmd, .. } = ch.state {
            let result = Err(if how == ChannelEnd::Reset {
                err(
                    ErrorCode::SockErrSynRq,
                    format!("{peer} refused the connection (reset) before answering: it is at its connection limit or restarting; try again later"),
                )
            } else {
                err(
                    ErrorCode::NoListener,
                    format!("{peer} closed the connection without answering"),
                )
            });
            self.events.push_back(Event::Synchronized { cmd, result });
        }
    }

    /// A message the engine sent (a [`Transmit::Send`] or
    /// [`Transmit::Multicast`]) could not be written: the channel was gone,
    /// its queue full, or the connect or multicast failed. It is taken out
    /// of the sent counts and counted as unsent.
    pub fn handle_unsent(&mut self, msg: &[u8]) {
        self.stats.sent.uncount(msg);
        self.stats.unsent += 1;
    }

    /// A message arrived on a channel.
    pub fn handle_channel_message(&mut self, now: Instant, channel: ChannelId, raw: Bytes) {
        self.stats.received.count(&raw);
        let decoded = Message::decode_with(&raw, &self.config.limits);
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let peer = ch.peer;
        match &mut ch.state {
            ChanState::Fresh => match decoded {
                Ok(msg) => self.on_first_message(now, channel, peer, msg),
                Err(e) => {
                    self.stats.malformed += 1;
                    // RFC 8990 §2.8.12: M_INVALID for a malformed unicast.
                    let why = format!("malformed message: {e}");
                    self.send(channel, &Message::Invalid(Invalid::new(SessionId(0), &why)));
                    self.close(channel, false);
                }
            },
            ChanState::Synch { .. } => self.on_synch_reply(channel, peer, decoded),
            ChanState::Neg(_) => {
                self.session(channel, |s, cfg, out| {
                    s.on_message(now, cfg, raw, decoded, out)
                });
            }
        }
    }

    fn on_first_message(
        &mut self,
        now: Instant,
        channel: ChannelId,
        peer: SocketAddr,
        msg: Message,
    ) {
        match msg {
            Message::Noop => {} // ignored; keep waiting
            Message::Response(r) => {
                self.close(channel, true);
                let learnt_on = match peer {
                    SocketAddr::V6(p) => p.scope_id(),
                    SocketAddr::V4(_) => 0,
                };
                let finished = self.on_response(now, learnt_on, r);
                self.resolve(now, finished);
            }
            Message::ReqSyn(req) => self.on_req_syn(channel, req),
            Message::ReqNeg(req) => self.on_neg_request(now, channel, peer, req),
            Message::Invalid(_) => self.close(channel, false),
            Message::Discovery(disc) => self.on_unicast_discovery(channel, peer, disc),
            other => {
                // Unknown or out-of-place: M_INVALID with the session id.
                let sid = other.session_id().unwrap_or(SessionId(0));
                let why = format!("unexpected {}", other.msg_type());
                self.send(channel, &Message::Invalid(Invalid::new(sid, &why)));
                self.close(channel, false);
            }
        }
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Discovery timers and channel deadlines, in time order.
        loop {
            let disc = self.discoveries.next_deadline().filter(|t| *t <= now);
            let chan = self.channels.next_deadline().filter(|t| *t <= now);
            let discovery_first = match (disc, chan) {
                (Some(d), Some(c)) => d <= c,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            if discovery_first {
                match self.discoveries.pop_due(now) {
                    Some(Due::End(key)) => {
                        let finished = self.finish_discovery(now, key);
                        self.resolve(now, finished);
                    }
                    Some(Due::Repeat(key)) => self.repeat_discovery(now, key),
                    None => return,
                }
            } else if let Some(id) = self.channels.pop_due(now) {
                self.channel_timeout(now, id);
            }
        }
    }

    fn channel_timeout(&mut self, now: Instant, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        let peer = ch.peer;
        match &ch.state {
            ChanState::Fresh => {
                self.stats.idle_channels_closed += 1;
                self.close(id, false);
            }
            ChanState::Synch { cmd, .. } => {
                let cmd = *cmd;
                let result = Err(err(
                    ErrorCode::NoSynchReply,
                    format!("{peer} did not answer in time"),
                ));
                self.events.push_back(Event::Synchronized { cmd, result });
                self.close(id, false);
            }
            ChanState::Neg(_) => {
                self.session(id, |s, cfg, out| s.on_timeout(now, cfg, peer, out));
            }
        }
    }
}
