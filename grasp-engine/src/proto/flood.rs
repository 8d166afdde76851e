//! Flooding (RFC 8990 §2.5.6): our floods, others' floods into the cache
//! and on to the other links, and the ASAs' view of the cache.

use super::*;

impl Engine {
    /// Puts a flood in the cache, and tells the ASAs watching its objective.
    fn cache_flood(&mut self, e: FloodEntry) {
        for (_, subscription) in self.registry.watchers(&e.objective.name) {
            self.events.push_back(Event::Flood {
                subscription: *subscription,
                entry: e.clone(),
            });
        }
        self.flood_cache.insert(e);
    }

    /// An M_FLOOD arrived (`raw` as received, for relaying).
    pub(super) fn on_flood(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: SocketAddrV6,
        f: Flood,
        raw: &[u8],
    ) {
        let key = (f.session_id, f.initiator);
        if self.recent.contains(&key, now) {
            self.stats.duplicates += 1;
            return;
        }
        let first_lc = f.tagged[0].objective.loop_count;
        if self.config.dull
            && (first_lc != 1 || !f.tagged.iter().all(|t| self.dull_allows(&t.objective.name)))
        {
            self.stats.dull_dropped += 1;
            return;
        }
        //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.6.2
        //# a flood with a link-local source address and a loop count other
        //# than 1 is invalid and MUST be discarded
        let ll_tag = f.tagged.iter().any(|t| {
            matches!(&t.locator, Some(Locator::Ipv6 { addr, .. }) if is_link_local(addr))
                && t.objective.loop_count != 1
        });
        if ll_tag || matches!(f.initiator, IpAddr::V6(a) if is_link_local(&a) && first_lc != 1) {
            self.stats.malformed += 1;
            return;
        }
        self.recent.insert(key, now + self.config.flood_memory, now);
        let expires = (f.ttl_ms != 0).then(|| now + Duration::from_millis(u64::from(f.ttl_ms)));
        for t in &f.tagged {
            if !t.objective.flags.contains(ObjectiveFlags::SYNCH) {
                continue;
            }
            self.cache_flood(FloodEntry {
                objective: t.objective.clone(),
                locator: t.locator.clone(),
                initiator: f.initiator,
                expires,
                ifindex,
            });
        }
        if self.relay && first_lc > 1 {
            let sources = [
                Source::Neighbour(IpAddr::V6(*src.ip())),
                Source::Initiator(f.initiator),
            ];
            if !self.budget(now, ifindex, Work::FloodRelay, &sources) {
                return;
            }
            //= https://www.rfc-editor.org/rfc/rfc8990#section-2.5.6.2
            //# decrement the loop count of the first objective
            // Everything else is forwarded as received.
            let Ok(bytes) = crate::wire::with_loop_count(raw, first_lc - 1) else {
                self.stats.malformed += 1;
                return;
            };
            self.multicast(Some(ifindex), &bytes);
            self.stats.floods_relayed += 1;
        }
    }

    /// `flood`: `tagged` objectives with their locator tags, for `ttl_ms`
    /// (0: indefinitely); an IPv6 `::` tag floods a link-local announcement
    /// (loop count 1, each interface's own address).
    pub fn flood(
        &mut self,
        now: Instant,
        asa: AsaHandle,
        ttl_ms: u32,
        tagged: Vec<TaggedObjective>,
    ) -> Result<(), ApiError> {
        tagged.iter().try_for_each(|t| self.fits(&t.objective))?;
        self.check_asa(asa)?;
        if !self.config.dull {
            self.require_secure("flooding")?;
        }
        if tagged.is_empty() {
            return Err(err(ErrorCode::Unspec, "nothing to flood"));
        }
        for t in &tagged {
            self.own_objective(asa, &t.objective.name)?;
            if !t.objective.flags.contains(ObjectiveFlags::SYNCH) {
                return Err(err(ErrorCode::NotSynch, format!("{:?}", t.objective.name)));
            }
            if let Some(Locator::Ipv6 { port: 0, .. }) = &t.locator {
                return Err(ErrorCode::InvalidLoc.into());
            }
        }
        let sid = self.new_sid(now);
        let interfaces = self.interfaces.clone();
        let expires = (ttl_ms != 0).then(|| now + Duration::from_millis(u64::from(ttl_ms)));
        let here = |t: &TaggedObjective| matches!(&t.locator, Some(Locator::Ipv6 { addr, .. }) if addr.is_unspecified());
        // Our own floods go in our cache too, for our own ASAs; a `::` one
        // as each link has it.
        let mut cached: Vec<FloodEntry> = Vec::new();
        for iface in &interfaces {
            let tagged_here: Vec<TaggedObjective> = tagged
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.objective = with_value_slot(t.objective);
                    if let Some(Locator::Ipv6 { addr, .. }) = &mut t.locator {
                        //= https://www.rfc-editor.org/rfc/rfc8991#section-2.3.6.3
                        //# `::` means this link's link-local address, loop count 1
                        if addr.is_unspecified() {
                            *addr = iface.link_local;
                            t.objective.loop_count = 1;
                        }
                    }
                    if self.config.dull {
                        t.objective.loop_count = 1;
                    }
                    t
                })
                .collect();
            let sent_here: Vec<TaggedObjective> = tagged
                .iter()
                .zip(&tagged_here)
                .filter(|(t, _)| here(t))
                .map(|(_, sent)| sent.clone())
                .collect();
            let msg = Message::Flood(Flood {
                session_id: sid,
                initiator: self.node_addr,
                ttl_ms,
                tagged: tagged_here,
                extensions: Vec::new(),
            })
            .encode();
            if msg.len() > MAX_MULTICAST_PAYLOAD.min(self.config.limits.max_message_size) {
                return Err(err(ErrorCode::Unspec, "the flood would exceed 1232 bytes"));
            }
            self.transmits.push_back(Transmit::Multicast {
                ifindex: iface.index,
                msg,
            });
            cached.extend(sent_here.into_iter().map(|sent| FloodEntry {
                objective: sent.objective,
                locator: sent.locator,
                initiator: self.node_addr,
                expires,
                ifindex: iface.index,
            }));
        }
        for t in tagged {
            if !here(&t) || interfaces.is_empty() {
                cached.push(FloodEntry {
                    objective: t.objective,
                    locator: t.locator,
                    initiator: self.node_addr,
                    expires,
                    ifindex: 0,
                });
            }
        }
        for e in cached {
            self.cache_flood(e);
        }
        self.recent
            .insert((sid, self.node_addr), now + self.config.flood_memory, now);
        Ok(())
    }

    /// `get_flood`: the flood cache's entries for `name`.
    pub fn get_flood(
        &mut self,
        now: Instant,
        asa: AsaHandle,
        name: &str,
    ) -> Result<Vec<FloodEntry>, ApiError> {
        self.check_asa(asa)?;
        Ok(self.flood_cache.get(name, now))
    }

    /// `expire_flood`: removes `entry` (as [`get_flood`](Self::get_flood)
    /// returned it) from the cache.
    pub fn expire_flood(&mut self, asa: AsaHandle, entry: &FloodEntry) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        if !self.flood_cache.remove(entry) {
            return Err(err(ErrorCode::NotObj, "no such flood cache entry"));
        }
        Ok(())
    }

    /// Watches the floods of `name`: each one that enters the flood cache
    /// (new, or replacing an entry) then arrives as [`Event::Flood`]
    /// (RFC 8991's event-loop model, instead of polling `get_flood`). A
    /// second watch of the same ASA replaces the first.
    pub fn watch_flood(&mut self, asa: AsaHandle, name: &str) -> Result<SubscriptionId, ApiError> {
        let sub = self.new_subscription();
        if let Some(subscription) = self.registry.watch(asa, name, sub)? {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(sub)
    }

    /// Stops watching `name` (no error when not watching).
    pub fn stop_watch_flood(&mut self, asa: AsaHandle, name: &str) -> Result<(), ApiError> {
        if let Some(subscription) = self.registry.unwatch(asa, name)? {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(())
    }
}
