//! The registration table: ASAs, their objectives and flood watches, owned
//! here with the invariants that tie them together:
//!
//! * at most `max_asas` ASAs, at most `max_objectives` objectives and as
//!   many flood watches; ASA names are unique;
//! * every owner of an objective, its negotiation listener and every flood
//!   watch belong to a registered ASA: removing an ASA removes all of them
//!   and names the subscriptions that ended;
//! * an objective has at least one owner (the last one out removes it).
//!
//! What an objective may be (flags, name, DULL, size) is checked by the
//! calls in `registry.rs`; this table checks only what its contents decide.

use std::collections::HashMap;

use rand::Rng;

use crate::error::{ApiError, ErrorCode};
use crate::wire::Objective;

use super::err;
use super::tables::Registered;
use super::types::{AsaHandle, IdMap, RegisterOptions, SubscriptionId};

#[derive(Debug)]
pub(super) struct Registrations {
    asas: IdMap<AsaHandle, String>,
    objectives: HashMap<String, Registered>,
    /// Who watches which objective's floods.
    watches: HashMap<String, Vec<(AsaHandle, SubscriptionId)>>,
    max_asas: usize,
    max_objectives: usize,
}

impl Registrations {
    pub(super) fn new(max_asas: usize, max_objectives: usize) -> Self {
        Registrations {
            asas: IdMap::default(),
            objectives: HashMap::new(),
            watches: HashMap::new(),
            max_asas,
            max_objectives,
        }
    }

    /// A new handle for the ASA called `name`.
    pub(super) fn add_asa(
        &mut self,
        name: String,
        rng: &mut impl Rng,
    ) -> Result<AsaHandle, ApiError> {
        if self.asas.values().any(|n| *n == name) {
            return Err(err(
                ErrorCode::DupAsa,
                format!("an ASA named {name:?} exists"),
            ));
        }
        if self.asas.len() >= self.max_asas {
            return Err(ErrorCode::AsaFull.into());
        }
        let handle = loop {
            let h = AsaHandle(rng.random::<u32>().max(1));
            if !self.asas.contains_key(&h) {
                break h;
            }
        };
        self.asas.insert(handle, name);
        Ok(handle)
    }

    /// Removes `asa` with its ownerships, listens and watches; returns the
    /// subscriptions that ended.
    pub(super) fn remove_asa(&mut self, asa: AsaHandle) -> Vec<SubscriptionId> {
        let mut ended = Vec::new();
        if self.asas.remove(&asa).is_none() {
            return ended;
        }
        self.watches.retain(|_, w| {
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
        ended
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

    pub(super) fn asas(&self) -> impl Iterator<Item = (&AsaHandle, &String)> {
        self.asas.iter()
    }

    /// Registers `objective` for `asa` (a second owner only where both ask
    /// for overlap).
    pub(super) fn add_objective(
        &mut self,
        asa: AsaHandle,
        objective: Objective,
        options: RegisterOptions,
    ) -> Result<(), ApiError> {
        self.check_asa(asa)?;
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
        if self.objectives.len() >= self.max_objectives {
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

    /// Takes `asa` off `name`'s owners; returns the listen that ended with
    /// it (its own, or any when it was the last owner).
    pub(super) fn remove_objective(
        &mut self,
        asa: AsaHandle,
        name: &str,
    ) -> Result<Option<SubscriptionId>, ApiError> {
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
        Ok(ended.map(|(_, s)| s))
    }

    pub(super) fn get(&self, name: &str) -> Option<&Registered> {
        self.objectives.get(name)
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Registered> {
        self.objectives.get_mut(name)
    }

    /// `name`, when `asa` owns it.
    pub(super) fn owned(&self, asa: AsaHandle, name: &str) -> Result<&Registered, ApiError> {
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

    pub(super) fn objectives(&self) -> impl Iterator<Item = &Registered> {
        self.objectives.values()
    }

    /// Ends a listen or watch; whether it was one.
    pub(super) fn unsubscribe(&mut self, subscription: SubscriptionId) -> bool {
        let mut found = false;
        for r in self.objectives.values_mut() {
            if r.listener.is_some_and(|(_, s)| s == subscription) {
                r.listener = None;
                found = true;
            }
        }
        self.watches.retain(|_, w| {
            w.retain(|(_, s)| {
                found |= *s == subscription;
                *s != subscription
            });
            !w.is_empty()
        });
        found
    }

    /// The watches of `name`'s floods.
    pub(super) fn watchers(&self, name: &str) -> &[(AsaHandle, SubscriptionId)] {
        self.watches.get(name).map_or(&[], Vec::as_slice)
    }

    /// `asa` watches `name` as `sub`; returns the watch it replaced.
    pub(super) fn watch(
        &mut self,
        asa: AsaHandle,
        name: &str,
        sub: SubscriptionId,
    ) -> Result<Option<SubscriptionId>, ApiError> {
        self.check_asa(asa)?;
        let old = self
            .watchers(name)
            .iter()
            .find(|(a, _)| *a == asa)
            .map(|(_, s)| *s);
        let watches: usize = self.watches.values().map(Vec::len).sum();
        if old.is_none() && watches >= self.max_objectives {
            return Err(err(ErrorCode::ObjFull, "too many flood watches"));
        }
        let w = self.watches.entry(name.to_owned()).or_default();
        w.retain(|(a, _)| *a != asa);
        w.push((asa, sub));
        Ok(old)
    }

    /// `asa` stops watching `name`; returns the watch that ended.
    pub(super) fn unwatch(
        &mut self,
        asa: AsaHandle,
        name: &str,
    ) -> Result<Option<SubscriptionId>, ApiError> {
        self.check_asa(asa)?;
        let mut ended = None;
        if let Some(w) = self.watches.get_mut(name) {
            w.retain(|(a, s)| {
                if *a == asa {
                    ended = Some(*s);
                }
                *a != asa
            });
            if w.is_empty() {
                self.watches.remove(name);
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ObjectiveFlags;
    use rand::SeedableRng;

    fn obj(name: &str) -> Objective {
        Objective::new(name, ObjectiveFlags::SYNCH)
    }

    #[test]
    fn removing_an_asa_leaves_nothing_of_it_behind() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut t = Registrations::new(4, 4);
        let a = t.add_asa("a".into(), &mut rng).unwrap();
        let b = t.add_asa("b".into(), &mut rng).unwrap();
        let shared = RegisterOptions {
            overlap: true,
            ..RegisterOptions::default()
        };
        t.add_objective(a, obj("EX.mine"), RegisterOptions::default())
            .unwrap();
        t.add_objective(a, obj("EX.both"), shared.clone()).unwrap();
        t.add_objective(b, obj("EX.both"), shared).unwrap();
        t.get_mut("EX.mine").unwrap().listener = Some((a, SubscriptionId(1)));
        assert_eq!(t.watch(a, "EX.f", SubscriptionId(2)), Ok(None));
        let mut ended = t.remove_asa(a);
        ended.sort_by_key(|s| s.0);
        assert_eq!(ended, vec![SubscriptionId(1), SubscriptionId(2)]);
        assert!(t.get("EX.mine").is_none(), "its only owner went");
        assert_eq!(t.get("EX.both").map(|r| r.owners.clone()), Some(vec![b]));
        assert!(t.watchers("EX.f").is_empty());
        assert!(t.check_asa(a).is_err());
    }

    #[test]
    fn the_tables_are_bounded_and_names_unique() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut t = Registrations::new(1, 1);
        let a = t.add_asa("a".into(), &mut rng).unwrap();
        assert!(t.add_asa("a".into(), &mut rng).is_err(), "a duplicate name");
        assert!(t.add_asa("b".into(), &mut rng).is_err(), "over max_asas");
        t.add_objective(a, obj("EX.1"), RegisterOptions::default())
            .unwrap();
        assert!(t
            .add_objective(a, obj("EX.2"), RegisterOptions::default())
            .is_err());
        assert_eq!(t.watch(a, "EX.1", SubscriptionId(1)), Ok(None));
        assert!(t.watch(a, "EX.2", SubscriptionId(2)).is_err());
        // Replacing a watch is not a new one.
        assert_eq!(
            t.watch(a, "EX.1", SubscriptionId(3)),
            Ok(Some(SubscriptionId(1)))
        );
    }
}
