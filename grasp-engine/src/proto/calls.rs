//! The calls that may need a discovery first (RFC 8991 `discover`,
//! `synchronize`, `request_negotiate`, and graspy's raw request), and going
//! on with the waits a discovery has finished. The input router hands
//! finished discoveries here; the procedures below never call back.

use super::*;

impl Engine {
    /// `discover`: locators of ASAs offering `objective`, ending in
    /// [`Event::Discovered`]; with `stream`, each new one also arrives as
    /// [`Event::Found`] before that.
    pub fn discover(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        options: DiscoverOptions,
        stream: bool,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        let w = Waiter::Api {
            cmd,
            first_only: options.first_only,
            stream,
        };
        let finished = self.find(now, objective, &options, w)?;
        self.resolve(now, finished);
        Ok(())
    }

    /// `synchronize`: `objective`'s value from `peer`, or without one from
    /// the flood cache, then from the first peer discovery finds; ending
    /// in [`Event::Synchronized`].
    pub fn synchronize(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        if !objective.flags.contains(ObjectiveFlags::SYNCH) {
            return Err(ErrorCode::NotSynch.into());
        }
        if peer.is_none() {
            let cached = self
                .flood_cache
                .get(&objective.name, now)
                .into_iter()
                .next();
            if let Some(e) = cached {
                let result = Ok(e.objective);
                self.events.push_back(Event::Synchronized { cmd, result });
                return Ok(());
            }
        }
        self.require_secure("synchronization")?;
        let deadline = self.config.asa_deadline(now, timeout);
        let c = Continuation::Synch {
            cmd,
            objective,
            deadline,
        };
        self.with_peer(now, peer, timeout, c)
    }

    /// `request_negotiate`: opens a session with `peer`, or the first peer
    /// discovery finds, ending in [`Event::Negotiated`].
    pub fn request_negotiate(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.negotiation_request(now, cmd, asa, objective, peer, timeout, false)
    }

    /// graspy's raw channel (`req_negotiate(..., noloop=True)`): sends
    /// M_REQ_NEG to `peer` (or the first discovered) and ends in
    /// [`Event::RawOpened`] with the session; from then on it carries bare
    /// CBOR items ([`raw_send`](Self::raw_send),
    /// [`raw_recv`](Self::raw_recv)), not GRASP messages.
    pub fn request_raw(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.negotiation_request(now, cmd, asa, objective, peer, timeout, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn negotiation_request(
        &mut self,
        now: Instant,
        cmd: CommandId,
        asa: AsaHandle,
        objective: Objective,
        peer: Option<AsaLocator>,
        timeout: Duration,
        raw: bool,
    ) -> Result<(), ApiError> {
        self.fits(&objective)?;
        self.check_asa(asa)?;
        self.require_secure("negotiation")?;
        if !objective.flags.contains(ObjectiveFlags::NEG) {
            return Err(ErrorCode::NotNeg.into());
        }
        let deadline = self.config.asa_deadline(now, timeout);
        let c = Continuation::Neg {
            cmd,
            asa,
            objective,
            deadline,
            raw,
        };
        self.with_peer(now, peer, timeout, c)
    }

    /// Goes on with `c` at `peer`, or without one after a first-answer
    /// discovery within `timeout` (at most the discovery timeout of the
    /// objective's loop count).
    fn with_peer(
        &mut self,
        now: Instant,
        peer: Option<AsaLocator>,
        timeout: Duration,
        c: Continuation,
    ) -> Result<(), ApiError> {
        if let Some(p) = peer {
            self.go_on(now, c, p);
            return Ok(());
        }
        let objective = c.objective().clone();
        let opts = DiscoverOptions {
            first_only: true,
            timeout: Some(timeout.min(discovery_timeout(objective.loop_count))),
            ..DiscoverOptions::default()
        };
        let finished = self.find(now, objective, &opts, Waiter::Then(c))?;
        self.resolve(now, finished);
        Ok(())
    }

    /// Goes on with every wait a discovery has finished.
    pub(super) fn resolve(&mut self, now: Instant, finished: Finished) {
        for w in finished.waiters {
            self.resolve_waiter(now, w, &finished.found);
        }
    }

    fn resolve_waiter(&mut self, now: Instant, w: Waiter, found: &[AsaLocator]) {
        let c = match w {
            Waiter::Api { cmd, .. } => {
                let result = Ok(found.to_vec());
                return self.events.push_back(Event::Discovered { cmd, result });
            }
            Waiter::Then(c) => c,
        };
        let peer = match &c {
            Continuation::Synch { .. } => found.first(),
            Continuation::Neg { .. } => found.iter().find(|l| l.socket_addr().is_some()),
        };
        if let Some(p) = peer {
            return self.go_on(now, c, p.clone());
        }
        match c {
            Continuation::Synch { cmd, objective, .. } => {
                let result = Err(err(
                    ErrorCode::NotFloodDisc,
                    format!(
                        "{:?} is not in the flood cache and discovery found no peer",
                        objective.name
                    ),
                ));
                self.events.push_back(Event::Synchronized { cmd, result });
            }
            Continuation::Neg {
                cmd,
                objective,
                raw,
                ..
            } => {
                let e = err(
                    ErrorCode::NoDiscReply,
                    format!("no peer found for {:?}", objective.name),
                );
                self.request_failed(cmd, raw, e);
            }
        }
    }

    /// Starts the synchronization or negotiation `c` waited to start, with
    /// `peer`.
    fn go_on(&mut self, now: Instant, c: Continuation, peer: AsaLocator) {
        match c {
            Continuation::Synch {
                cmd,
                objective,
                deadline,
            } => self.synch_with(now, cmd, peer, objective, deadline),
            Continuation::Neg {
                cmd,
                asa,
                objective,
                deadline,
                raw,
            } => self.start_negotiation(now, cmd, asa, peer, objective, deadline, raw),
        }
    }
}
