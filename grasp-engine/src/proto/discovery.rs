//! Discovery (RFC 8990 §2.5.4): answering, relaying and diverting others'
//! M_DISCOVERY, sending ours with its repeats, and collecting M_RESPONSEs
//! into the cache. Finished waits are handed back to the caller, never
//! continued here.

use super::*;

impl Engine {
    /// An M_DISCOVERY arrived by multicast (`raw` as received, for relaying).
    pub(super) fn on_discovery(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: SocketAddrV6,
        disc: Discovery,
        raw: &[u8],
    ) {
        let key = (disc.session_id, disc.initiator);
        if self.discoveries.knows(&key) || self.recent.contains(&key, now) {
            // Our own (looped back), or one we relayed already.
            self.stats.duplicates += 1;
            return;
        }
        let name = disc.objective.name.clone();
        if self.config.dull && (disc.objective.loop_count != 1 || !self.dull_allows(&name)) {
            self.stats.dull_dropped += 1;
            return;
        }
        if let Some(reg) = self.registry.get(&name).filter(|r| r.discoverable()) {
            let locs = self.locators_for(reg, ifindex);
            let rapid = (reg.options.rapid && reg.listen_synch).then(|| reg.objective.clone());
            let ttl = reg.options.ttl_ms;
            self.respond(
                now,
                ifindex,
                src,
                &disc,
                ttl,
                ResponseTarget::Locators(locs),
                rapid,
            );
            return;
        }
        if self.config.dull {
            return;
        }
        if let Some((locs, ttl)) = self.disc_cache.divert_for(&name, now, ifindex) {
            self.respond(
                now,
                ifindex,
                src,
                &disc,
                ttl,
                ResponseTarget::Divert(locs),
                None,
            );
            return;
        }
        if self.disc_cache.has(&name, now) {
            // Known only on the link the discovery came from: the responder
            // there answers itself.
            return;
        }
        if self.relay {
            self.relay_discovery(now, ifindex, src, disc, raw);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        ifindex: u32,
        to: SocketAddrV6,
        disc: &Discovery,
        ttl_ms: u32,
        target: ResponseTarget,
        objective: Option<Objective>,
    ) {
        // Keyed by the address we would connect to: a storm of discoveries
        // claiming one sender gets that sender at most its own rate of
        // connections (no reflection at the pool's rate).
        if !self.budget(
            now,
            ifindex,
            Work::Response,
            &[Source::Neighbour(IpAddr::V6(*to.ip()))],
        ) {
            return;
        }
        let msg = Message::Response(Response {
            session_id: disc.session_id,
            initiator: disc.initiator,
            ttl_ms,
            target,
            objective,
            extensions: Vec::new(),
        });
        self.send_oneshot(to, &msg);
        self.stats.responses_sent += 1;
    }

    /// Connect, send one message, close (the responder closes first).
    fn send_oneshot(&mut self, to: SocketAddrV6, msg: &Message) {
        let channel = self.channels.id();
        self.transmits.push_back(Transmit::Connect {
            channel,
            peer: SocketAddr::V6(to),
        });
        self.send(channel, msg);
        self.transmits.push_back(Transmit::Close {
            channel,
            linger: false,
        });
    }

    fn relay_discovery(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: SocketAddrV6,
        disc: Discovery,
        raw: &[u8],
    ) {
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.4.4
        //# it MUST decrement the loop count ... and MUST NOT relay the
        //# M_DISCOVERY if the result is zero
        let lc = disc.objective.loop_count;
        if lc <= 1 {
            return;
        }
        // Before the relay budget is spent on one we could not track.
        if self.discoveries.is_full() {
            self.stats.bounded_refusals += 1;
            return;
        }
        let sources = [
            Source::Neighbour(IpAddr::V6(*src.ip())),
            Source::Initiator(disc.initiator),
        ];
        if !self.budget(now, ifindex, Work::Relay, &sources) {
            return;
        }
        let key = (disc.session_id, disc.initiator);
        // Forwarded as received but for the loop count.
        let Ok(bytes) = crate::wire::with_loop_count(raw, lc - 1) else {
            self.stats.malformed += 1;
            return;
        };
        let relayed = Disc {
            name: disc.objective.name,
            deadline: now + discovery_timeout(lc - 1),
            waiters: Vec::new(),
            found: Vec::new(),
            relay_to: Some(src),
            repeat: None,
        };
        if self.discoveries.start(key, relayed, None).is_err() {
            self.stats.bounded_refusals += 1;
            return;
        }
        self.multicast(Some(ifindex), &bytes);
        self.stats.discoveries_relayed += 1;
    }

    /// An M_RESPONSE to a discovery of ours or one we relay: cached,
    /// relayed back, and handed to the waiters that can go on now.
    pub(super) fn on_response(&mut self, now: Instant, learnt_on: u32, r: Response) -> Finished {
        let key = (r.session_id, r.initiator);
        let key = self.discoveries.resolve(key);
        let Some(disc) = self.discoveries.get(&key) else {
            return Finished::default(); // unknown or expired session: drop silently (§2.5.4.3)
        };
        let name = disc.name.clone();
        let ttl = if r.ttl_ms == 0 { 600_000 } else { r.ttl_ms };
        let expires = Some(now + Duration::from_millis(u64::from(ttl)));
        let (locs, diverted) = match &r.target {
            ResponseTarget::Locators(l) => (l.clone(), false),
            ResponseTarget::Divert(l) => (l.clone(), true),
        };
        let objective = r.objective.clone().filter(|o| o.name == name);
        let mut new = Vec::new();
        for l in locs {
            let scoped = matches!(&l, Locator::Ipv6 { addr, .. } if is_link_local(addr));
            let loc = AsaLocator {
                locator: l,
                ifindex: if scoped { learnt_on } else { 0 },
                expires,
                diverted,
                objective: objective.clone(),
            };
            self.disc_cache.insert(&name, loc.clone(), learnt_on);
            new.push(loc);
        }
        let Some(disc) = self.discoveries.get_mut(&key) else {
            return Finished::default();
        };
        // Bounded like the cache: answers beyond it are counted, not kept
        // (anyone who saw the multicast can answer, as often as it likes).
        let cap = self.config.discovery_cache_locators;
        for l in &new {
            if disc.found.iter().any(|f| f.locator == l.locator) {
                continue;
            }
            if disc.found.len() < cap {
                disc.found.push(l.clone());
                for w in &disc.waiters {
                    if let Waiter::Api {
                        cmd, stream: true, ..
                    } = w
                    {
                        self.events.push_back(Event::Found {
                            cmd: *cmd,
                            locator: l.clone(),
                        });
                    }
                }
            } else {
                self.stats.discovery_answers_dropped += 1;
            }
        }
        // Relayed: pass the answer back at once (§2.5.4.4), as a divert to
        // the globally valid locators.
        if let Some(to) = disc.relay_to {
            let fwd: Vec<Locator> = new
                .iter()
                .map(|l| l.locator.clone())
                .filter(|l| !matches!(l, Locator::Ipv6 { addr, .. } if is_link_local(addr)))
                .collect();
            if !fwd.is_empty() {
                let d = Discovery {
                    session_id: r.session_id,
                    initiator: r.initiator,
                    objective: Objective::new(name.clone(), ObjectiveFlags::empty()),
                    extensions: Vec::new(),
                };
                self.respond(
                    now,
                    to.scope_id(),
                    to,
                    &d,
                    ttl,
                    ResponseTarget::Divert(fwd),
                    r.objective,
                );
            }
        }
        self.wake_waiters(key, false)
    }

    /// Hands results to waiters: all of them at the end, first-answer ones
    /// as soon as there is something.
    fn wake_waiters(&mut self, key: (SessionId, IpAddr), finished: bool) -> Finished {
        let Some(disc) = self.discoveries.get_mut(&key) else {
            return Finished::default();
        };
        if (disc.found.is_empty() && !finished) || disc.waiters.is_empty() {
            return Finished::default();
        }
        let found = disc.found.clone();
        let waiters: Vec<Waiter> = if finished {
            std::mem::take(&mut disc.waiters)
        } else {
            let (now_ready, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut disc.waiters)
                .into_iter()
                .partition(|w| {
                    !matches!(
                        w,
                        Waiter::Api {
                            first_only: false,
                            ..
                        }
                    )
                });
            disc.waiters = keep;
            now_ready
        };
        Finished { waiters, found }
    }

    /// A discovery's time is up: every waiter gets what it found.
    pub(super) fn finish_discovery(&mut self, now: Instant, key: (SessionId, IpAddr)) -> Finished {
        let finished = self.wake_waiters(key, true);
        if let Some(d) = self.discoveries.finish(&key) {
            // Remember it a while so late copies are not relayed again.
            let hold = (d.deadline - now).max(Duration::from_secs(10));
            self.recent.insert(key, now + hold, now);
            for sid in d.repeat.iter().flat_map(|r| &r.aliases) {
                self.recent.insert((*sid, key.1), now + hold, now);
            }
        }
        finished
    }

    /// Sends our discovery `key` again under a new session id if nothing
    /// has answered yet, and plans the next repeat.
    pub(super) fn repeat_discovery(&mut self, now: Instant, key: (SessionId, IpAddr)) {
        let Some(d) = self.discoveries.get(&key) else {
            return;
        };
        let Some(r) = d.repeat.as_ref() else {
            return;
        };
        if !d.found.is_empty() || r.aliases.len() >= DISCOVERY_REPEATS {
            return;
        }
        let (objective, deadline) = (r.objective.clone(), d.deadline);
        let sid = self.new_sid(now);
        let msg = Message::Discovery(Discovery {
            session_id: sid,
            initiator: key.1,
            objective,
            extensions: Vec::new(),
        })
        .encode();
        self.multicast(None, &msg);
        self.stats.discoveries_repeated += 1;
        let mut next = None;
        if let Some(r) = self
            .discoveries
            .get_mut(&key)
            .and_then(|d| d.repeat.as_mut())
        {
            r.gap *= 2;
            let at = now + r.gap;
            // This repeat is the (len + 1)th.
            if at < deadline && r.aliases.len() + 1 < DISCOVERY_REPEATS {
                next = Some(at);
            }
        }
        self.discoveries.repeated(key, sid, next);
    }

    /// Discovery for every call that needs it: local registrations and the
    /// cache first, then the network. Hands `w` back with what was found
    /// when that is the end of it (found here, or no time to ask), or keeps
    /// it until the network answers (then `Finished` is empty).
    pub(super) fn find(
        &mut self,
        now: Instant,
        mut objective: Objective,
        opts: &DiscoverOptions,
        w: Waiter,
    ) -> Result<Finished, ApiError> {
        let name = objective.name.clone();
        if opts.flush {
            self.disc_cache.flush(&name, now, None);
        } else if let Some(min) = opts.min_ttl {
            self.disc_cache.flush(&name, now, Some(min));
        }
        let mut found: Vec<AsaLocator> = Vec::new();
        // ASAs of this node that offer it (ASAs in one process find each other).
        if let Some(reg) = self.registry.get(&name).filter(|r| r.discoverable()) {
            let ifindex = self.interfaces.first().map_or(0, |i| i.index);
            for l in self.locators_for(reg, ifindex) {
                let mut al = AsaLocator::new(l);
                al.ifindex = ifindex;
                if reg.options.rapid && reg.listen_synch {
                    al.objective = Some(reg.objective.clone());
                }
                found.push(al);
            }
        }
        if !opts.flush {
            for l in self.disc_cache.get(&name, now) {
                if !found.iter().any(|f| f.locator == l.locator) {
                    found.push(l);
                }
            }
        }
        let timeout = opts
            .timeout
            .unwrap_or(discovery_timeout(objective.loop_count))
            .min(self.config.max_asa_timeout);
        if !found.is_empty() || timeout.is_zero() {
            return Ok(Finished {
                waiters: vec![w],
                found,
            });
        }
        if self.config.dull {
            objective.loop_count = 1;
        }
        let sid = self.new_sid(now);
        let key = (sid, self.node_addr);
        // The value a synchronization or negotiation will carry is for the
        // peer alone: a multicast is read by every node on the link (and
        // relayed further), so the discovery carries null, as graspy's does.
        objective.value = Some(Value::null());
        let msg = Message::Discovery(Discovery {
            session_id: sid,
            initiator: self.node_addr,
            objective: objective.clone(),
            extensions: Vec::new(),
        })
        .encode();
        if msg.len() > MAX_MULTICAST_PAYLOAD.min(self.config.limits.max_message_size) {
            return Err(err(
                ErrorCode::Unspec,
                "the discovery message would exceed 1232 bytes",
            ));
        }
        let ours = Disc {
            name,
            deadline: now + timeout,
            waiters: vec![w],
            found: Vec::new(),
            relay_to: None,
            repeat: Some(Repeat {
                objective,
                gap: timeout / 4,
                aliases: Vec::new(),
            }),
        };
        if self
            .discoveries
            .start(key, ours, Some(now + timeout / 4))
            .is_err()
        {
            self.stats.bounded_refusals += 1;
            return Err(err(ErrorCode::Unspec, "too many discoveries in progress"));
        }
        self.multicast(None, &msg);
        Ok(Finished::default())
    }

    /// A unicast M_DISCOVERY (RFC 8990 §2.8.4 rule 4): answered on its
    /// channel when we offer the objective; the channel closes either way.
    pub(super) fn on_unicast_discovery(
        &mut self,
        channel: ChannelId,
        peer: SocketAddr,
        disc: Discovery,
    ) {
        if let Some(reg) = self
            .registry
            .get(&disc.objective.name)
            .filter(|r| r.discoverable())
        {
            let ifindex = match peer {
                SocketAddr::V6(p) => p.scope_id(),
                SocketAddr::V4(_) => 0,
            };
            let msg = Message::Response(Response {
                session_id: disc.session_id,
                initiator: disc.initiator,
                ttl_ms: reg.options.ttl_ms,
                target: ResponseTarget::Locators(self.locators_for(reg, ifindex)),
                objective: None,
                extensions: Vec::new(),
            });
            self.send(channel, &msg);
        }
        self.close(channel, false);
    }
}
