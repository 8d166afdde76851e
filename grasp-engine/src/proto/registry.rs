//! The registry: ASAs and their objectives (RFC 8991 §2.3.2, §2.3.3),
//! the read-only dump of it and the caches, and ending subscriptions.

use rand::Rng;

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
        if self.asas.values().any(|n| *n == name) {
            return Err(err(
                ErrorCode::DupAsa,
                format!("an ASA named {name:?} exists"),
            ));
        }
        if self.asas.len() >= self.config.max_asas {
            return Err(ErrorCode::AsaFull.into());
        }
        let handle = loop {
            let h = AsaHandle(self.rng.random::<u32>().max(1));
            if !self.asas.contains_key(&h) {
                break h;
            }
        };
        self.asas.insert(handle, name);
        Ok(handle)
    }

    /// `deregister_asa`: also removes its objectives, ends its listens,
    /// watches and negotiation sessions.
    pub fn deregister_asa(&mut self, asa: AsaHandle) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        self.asas.remove(&asa);
        let mut ended = Vec::new();
        self.flood_watch.retain(|_, w| {
            w.retain(|(a, sub)| {
                let mine = *a == asa;
                if mine {
                    ended.push(*sub);
                }
                !mine
            });
            !w.is_empty()
        });
        self.objectives.retain(|_, r| {
            r.owners.retain(|o| *o != asa);
            if let Some((_, sub)) = r.listener.filter(|(a, _)| *a == asa) {
                ended.push(sub);
                r.listener = None;
            }
            !r.owners.is_empty()
        });
        for subscription in ended {
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
            if let Some((cmd, _)) = self.neg_mut(id).and_then(|n| n.pending.take()) {
                let result = Err(err(ErrorCode::NoSession, "the ASA was deregistered"));
                self.events.push_back(Event::Negotiated { cmd, result });
            }
            self.close(id, false);
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
        if let Some(r) = self.objectives.get_mut(&objective.name) {
            if r.options.overlap && options.overlap && !r.owners.contains(&asa) {
                r.owners.push(asa);
                return Ok(());
            }
            return Err(err(
                ErrorCode::ObjReg,
                format!("{:?} is registered", objective.name),
            ));
        }
        if self.objectives.len() >= self.config.max_objectives {
            return Err(ErrorCode::ObjFull.into());
        }
        self.objectives.insert(
            objective.name.clone(),
            Registered {
                owners: vec![asa],
                objective,
                options,
                listener: None,
                listen_synch: false,
            },
        );
        Ok(())
    }

    /// `deregister_objective`: ends the ASA's listen for it.
    pub fn deregister_objective(&mut self, asa: AsaHandle, name: &str) -> Result<(), ApiError> {
        self.check_asa(asa)?;
        let r = match self.objectives.get_mut(name) {
            None => return Err(err(ErrorCode::NotObj, format!("{name:?}"))),
            Some(r) if !r.owners.contains(&asa) => return Err(ErrorCode::NotYourObj.into()),
            Some(r) => r,
        };
        r.owners.retain(|o| *o != asa);
        let ended = r.listener.filter(|(a, _)| *a == asa || r.owners.is_empty());
        if ended.is_some() {
            r.listener = None;
        }
        if r.owners.is_empty() {
            self.objectives.remove(name);
        }
        if let Some((_, subscription)) = ended {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
        Ok(())
    }

    /// Ends a listen or watch whose receiver is gone (the driver's call;
    /// nothing happens for an id that has ended already).
    pub fn unsubscribe(&mut self, subscription: SubscriptionId) {
        let mut found = false;
        for r in self.objectives.values_mut() {
            if r.listener.is_some_and(|(_, s)| s == subscription) {
                r.listener = None;
                found = true;
            }
        }
        self.flood_watch.retain(|_, w| {
            w.retain(|(_, s)| {
                found |= *s == subscription;
                *s != subscription
            });
            !w.is_empty()
        });
        if found {
            self.events.push_back(Event::Unsubscribed { subscription });
        }
    }

    /// A read-only view of the registrations and caches (not an RFC 8991
    /// call; for operators and tools).
    pub fn dump(&mut self, now: Instant, asa: AsaHandle) -> Result<Dump, ApiError> {
        self.check_asa(asa)?;
        let mut d = Dump {
            asas: self.asas.iter().map(|(h, n)| (*h, n.clone())).collect(),
            objectives: self
                .objectives
                .values()
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
        if self.asas.contains_key(&asa) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::NoAsa,
                format!("ASA handle {} is not registered", asa.0),
            ))
        }
    }

    pub(super) fn own_objective(
        &self,
        asa: AsaHandle,
        name: &str,
    ) -> Result<&Registered, ApiError> {
        match self.objectives.get(name) {
            Some(r) if r.owners.contains(&asa) => Ok(r),
            Some(_) => Err(err(
                ErrorCode::NotYourObj,
                format!("{name:?} belongs to another ASA"),
            )),
            None => Err(err(
                ErrorCode::NotYourObj,
                format!("{name:?} is not registered"),
            )),
        }
    }

    pub(super) fn dull_allows(&self, name: &str) -> bool {
        self.config.dull_objectives.iter().any(|n| n == name)
    }
}
