//! The registry: ASAs and their objectives (RFC 8991 §2.3.2, §2.3.3),
//! the read-only dump of it and the caches, and ending subscriptions.

use super::*;

/// The longest ASA name, in bytes (names are for logs and dumps).
const MAX_ASA_NAME: usize = 256;

impl Engine {
    /// `register_asa`: a new handle for the ASA called `name`.
    pub fn register_asa(&mut self, name: String) -> Result<AsaHandle, ApiError> {
        if name.len() > MAX_ASA_NAME {
            return Err(err(
                ErrorCode::Unspec,
                format!("an ASA name is at most {MAX_ASA_NAME} bytes"),
            ));
        }
        self.registry.add_asa(name, &mut self.rng)
    }

    /// `deregister_asa`: also removes its objectives, ends its listens,
    /// watches and negotiation sessions.
    pub fn deregister_asa(&mut self, asa: AsaHandle) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        for subscription in self.registry.remove_asa(asa) {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        let sessions: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(&c.state, ChanState::Neg(n) if n.asa == asa))
            .map(|(id, _)| *id)
            .collect();
        for id in sessions {
            // A step still waiting for the peer ends here, not never.
            self.session(id, |s, _, out| s.on_asa_gone(out));
        }
        Ok(())
    }

    /// `register_objective`: `objective`'s value is the initial value a
    /// synchronization listener serves.
    pub fn register_objective(
        &mut self,
        asa: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        if options.locators.len() > self.config.discovery_cache_locators {
            return Err(err(
                ErrorCode::Unspec,
                format!(
                    "{} locators given; at most {} are announced",
                    options.locators.len(),
                    self.config.discovery_cache_locators
                ),
            ));
        }
        let f = objective.flags;
        if f.contains(ObjectiveFlags::NEG) && f.contains(ObjectiveFlags::SYNCH) {
            return Err(ErrorCode::NotBoth.into());
        }
        if f.contains(ObjectiveFlags::NEG_DRY) && !f.contains(ObjectiveFlags::NEG) {
            return Err(ErrorCode::NotDry.into());
        }
        if objective.name.is_empty() {
            return Err(err(ErrorCode::Unspec, "objective name is empty"));
        }
        if self.config.dull && !self.dull_allows(&objective.name) {
            return Err(err(
                ErrorCode::NoSecurity,
                "not an objective this DULL instance allows",
            ));
        }
        self.registry.add_objective(asa, objective, options)
    }

    /// `deregister_objective`: ends the ASA's listen for it.
    pub fn deregister_objective(&mut self, asa: AsaHandle, name: &str) -> Result<(), ApiError> {
        if let Some(subscription) = self.registry.remove_objective(asa, name)? {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(())
    }

    /// Ends a listen or watch whose receiver is gone (the driver's call;
    /// nothing happens for an id that has ended already).
    pub fn unsubscribe(&mut self, subscription: SubscriptionId) {
        if self.registry.unsubscribe(subscription) {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
    }

    /// A read-only view of the registrations and caches (not an RFC 8991
    /// call; for operators and tools).
    pub fn dump(&mut self, now: Instant, asa: AsaHandle) -> Result<Dump, ApiError> {
        self.check_asa(asa)?;
        let mut d = Dump {
            asas: self.registry.asas().map(|(h, n)| (*h, n.clone())).collect(),
            objectives: self
                .registry
                .objectives()
                .map(|r| DumpedObjective {
                    objective: r.objective.clone(),
                    owners: r.owners.clone(),
                    options: r.options.clone(),
                    listen_negotiate: r.listener.is_some(),
                    listen_synchronize: r.listen_synch,
                })
                .collect(),
            discovery_cache: Vec::new(),
            flood_cache: Vec::new(),
        };
        for name in self.disc_cache.names() {
            let l = self.disc_cache.get(&name, now);
            if !l.is_empty() {
                d.discovery_cache.push((name, l));
            }
        }
        for name in self.flood_cache.names() {
            d.flood_cache.extend(self.flood_cache.get(&name, now));
        }
        d.asas.sort_by_key(|(h, _)| h.0);
        d.objectives
            .sort_by(|a, b| a.objective.name.cmp(&b.objective.name));
        d.discovery_cache.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(d)
    }

    pub(super) fn check_asa(&self, asa: AsaHandle) -> Result<(), ApiError> {
        self.registry.check_asa(asa)
    }

    pub(super) fn own_objective(
        &self,
        asa: AsaHandle,
        name: &str,
    ) -> Result<&Registered, ApiError> {
        self.registry.owned(asa, name)
    }

    pub(super) fn dull_allows(&self, name: &str) -> bool {
        self.config.dull_objectives.iter().any(|n| n == name)
    }
}
