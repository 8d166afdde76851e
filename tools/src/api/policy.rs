//! Who may do what on graspd's ASA socket: the `[api]` policy of
//! graspd.toml, held against each client's credentials (SO_PEERCRED).
//!
//! Root and graspd's own user may do everything. Anyone else may do what
//! a rule naming their user or one of their groups grants: register ASAs
//! of some names, own (register, flood, answer, negotiate) some
//! objectives, read (discover, synchronize, get_flood) some others. Owning
//! an objective includes reading it. Names are exact or end in `*` (a
//! prefix; `*` alone is every name). `open = true` lets anyone who can
//! open the socket do everything, for labs; graspd says so loudly at start.

use std::fmt::Write as _;

use grasp_engine::{ApiError, ErrorCode};

/// Names an ASA or objective may have: exact, or a prefix ending in `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names(Vec<String>);

impl Names {
    /// Reads patterns; `*` may only end one.
    pub fn new(patterns: Vec<String>) -> Result<Names, String> {
        for p in &patterns {
            if p.is_empty() {
                return Err("an empty name matches nothing; remove it".into());
            }
            if p.trim_end_matches('*').contains('*') || p.ends_with("**") {
                return Err(format!(
                    "{p:?}: `*` may only end a pattern (a prefix), e.g. \"EX.*\""
                ));
            }
        }
        Ok(Names(patterns))
    }

    /// Every name.
    pub fn all() -> Names {
        Names(vec!["*".into()])
    }

    /// Whether `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }

    fn extend(&mut self, other: &Names) {
        for p in &other.0 {
            if !self.0.contains(p) {
                self.0.push(p.clone());
            }
        }
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            "nothing".into()
        } else {
            self.0.join(", ")
        }
    }
}

/// Whom a rule is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// A user, by uid (and the name it was written as).
    User {
        /// The uid.
        uid: u32,
        /// As written in the file.
        name: String,
    },
    /// Members of a group (primary or supplementary), by gid.
    Group {
        /// The gid.
        gid: u32,
        /// As written in the file.
        name: String,
    },
}

/// One `[[api.allow]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Whom it is for.
    pub who: Who,
    /// ASA names they may register.
    pub asas: Names,
    /// Objectives they may own (register, flood, answer, negotiate).
    pub own: Names,
    /// Objectives they may read (discover, synchronize, get_flood).
    pub read: Names,
}

/// The socket's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Anyone who can open the socket may do everything.
    pub open: bool,
    /// What others may do.
    pub rules: Vec<Rule>,
}

/// A client's credentials, from SO_PEERCRED (and its groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its process, when the system says.
    pub pid: Option<i32>,
    /// Its supplementary groups (looked up only when a rule names a group).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the other end of `stream`; `None` if the system
    /// will not say (then the client may do nothing).
    pub fn of(stream: &tokio::net::UnixStream, policy: &Policy) -> Option<Peer> {
        let c = stream.peer_cred().ok()?;
        let mut peer = Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
            groups: Vec::new(),
        };
        if policy
            .rules
            .iter()
            .any(|r| matches!(r.who, Who::Group { .. }))
        {
            peer.groups = groups_of(peer.uid, peer.gid);
        }
        Some(peer)
    }
}

fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    getgrouplist(&name, Gid::from_raw(gid))
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_default()
}

/// What one client may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// Who it is, for errors and logs ("uid 1000").
    pub who: String,
    everything: bool,
    asas: Names,
    own: Names,
    read: Names,
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// To register an ASA of this name.
    Asa,
    /// To own an objective of this name.
    Own,
    /// To read an objective of this name.
    Read,
}

impl Grants {
    /// Everything (root, graspd's user, an open socket).
    pub fn everything(who: impl Into<String>) -> Grants {
        Grants {
            who: who.into(),
            everything: true,
            asas: Names::all(),
            own: Names::all(),
            read: Names::all(),
        }
    }

    /// Whether this client may do everything (root, graspd's user, an open
    /// socket).
    pub fn is_everything(&self) -> bool {
        self.everything
    }

    /// Whether this client may do `need` with `name`; a refusal says who,
    /// what and where to change it.
    pub fn check(&self, need: Need, name: &str) -> Result<(), ApiError> {
        // Everything is every name (`Grants::everything`).
        let ok = match need {
            Need::Asa => self.asas.matches(name),
            Need::Own => self.own.matches(name),
            Need::Read => self.read.matches(name) || self.own.matches(name),
        };
        if ok {
            return Ok(());
        }
        let what = match need {
            Need::Asa => "register an ASA named",
            Need::Own => "own (register, flood, answer, negotiate) objective",
            Need::Read => "read (discover, synchronize, get_flood) objective",
        };
        Err(ApiError::new(
            ErrorCode::NotAuthorized,
            format!(
                "{} may not {what} {name:?}: graspd.toml's [[api.allow]] rules do not grant it",
                self.who
            ),
        ))
    }
}

impl Policy {
    /// What `peer` may do: everything for root, graspd's own user
    /// (`daemon_uid`) and an open socket; otherwise the union of the rules
    /// for its user and groups. `None` (credentials unknown): nothing.
    pub fn grants(&self, peer: Option<&Peer>, daemon_uid: u32) -> Grants {
        let Some(peer) = peer else {
            return Grants {
                who: "a client of unknown credentials".into(),
                everything: false,
                asas: Names::default(),
                own: Names::default(),
                read: Names::default(),
            };
        };
        let who = format!("uid {}", peer.uid);
        if self.open || peer.uid == 0 || peer.uid == daemon_uid {
            return Grants::everything(who);
        }
        let mut g = Grants {
            who,
            everything: false,
            asas: Names::default(),
            own: Names::default(),
            read: Names::default(),
        };
        for r in &self.rules {
            let applies = match &r.who {
                Who::User { uid, .. } => *uid == peer.uid,
                Who::Group { gid, .. } => *gid == peer.gid || peer.groups.contains(gid),
            };
            if applies {
                g.asas.extend(&r.asas);
                g.own.extend(&r.own);
                g.read.extend(&r.read);
            }
        }
        g
    }

    /// The policy in words (`graspd --check-config`).
    pub fn explain(&self) -> String {
        let mut o = String::new();
        if self.open {
            o.push_str("OPEN: anyone who can open the socket may do everything (a lab setting)");
            return o;
        }
        o.push_str("root and graspd's own user: everything");
        if self.rules.is_empty() {
            o.push_str("; nobody else anything (add [[api.allow]] rules)");
        }
        for r in &self.rules {
            let who = match &r.who {
                Who::User { uid, name } => format!("user {name} (uid {uid})"),
                Who::Group { gid, name } => format!("group {name} (gid {gid})"),
            };
            let _ = write!(
                o,
                "\n               {who}: ASAs {}; owns {}; reads {}",
                r.asas.describe(),
                r.own.describe(),
                r.read.describe()
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Names {
        Names::new(v.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn patterns_are_exact_or_prefixes() {
        let n = names(&["EX1", "pfx.*"]);
        assert!(n.matches("EX1") && n.matches("pfx.a") && n.matches("pfx."));
        assert!(!n.matches("EX10") && !n.matches("pfx") && !n.matches("ex1"));
        assert!(Names::all().matches("anything"));
        for bad in ["a*b", "**", "", "*x*"] {
            assert!(Names::new(vec![bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn root_the_daemon_and_an_open_socket_may_do_everything() {
        let p = Policy::default();
        for g in [
            p.grants(Some(&peer(0, 0, &[])), 500),
            p.grants(Some(&peer(500, 500, &[])), 500),
            Policy {
                open: true,
                rules: vec![],
            }
            .grants(Some(&peer(1000, 1000, &[])), 500),
        ] {
            g.check(Need::Asa, "x").unwrap();
            g.check(Need::Own, "y").unwrap();
        }
        let nobody = p.grants(Some(&peer(1000, 1000, &[])), 500);
        for need in [Need::Asa, Need::Own, Need::Read] {
            let e = nobody.check(need, "EX1").unwrap_err();
            assert_eq!(e.code, ErrorCode::NotAuthorized);
            assert!(e.detail.contains("uid 1000") && e.detail.contains("EX1"));
        }
        assert!(p.grants(None, 500).check(Need::Read, "EX1").is_err());
    }

    #[test]
    fn rules_grant_by_user_and_group_and_add_up() {
        let p = Policy {
            open: false,
            rules: vec![
                Rule {
                    who: Who::User {
                        uid: 1000,
                        name: "alice".into(),
                    },
                    asas: names(&["alice-*"]),
                    own: names(&["EX.alice.*"]),
                    read: names(&[]),
                },
                Rule {
                    who: Who::Group {
                        gid: 77,
                        name: "netops".into(),
                    },
                    asas: names(&[]),
                    own: names(&[]),
                    read: names(&["EX*"]),
                },
            ],
        };
        let alice = p.grants(Some(&peer(1000, 1000, &[])), 500);
        alice.check(Need::Asa, "alice-1").unwrap();
        alice.check(Need::Own, "EX.alice.x").unwrap();
        alice.check(Need::Read, "EX.alice.x").unwrap(); // owning includes reading
        assert!(alice.check(Need::Read, "EX2").is_err());
        assert!(alice.check(Need::Asa, "bob").is_err());
        // In netops too (supplementary): reads EX*, still owns only hers.
        let alice = p.grants(Some(&peer(1000, 1000, &[77])), 500);
        alice.check(Need::Read, "EX2").unwrap();
        assert!(alice.check(Need::Own, "EX2").is_err());
        // netops as primary group.
        let carol = p.grants(Some(&peer(1001, 77, &[])), 500);
        carol.check(Need::Read, "EX9").unwrap();
        assert!(carol.check(Need::Asa, "carol").is_err());
        assert!(p
            .explain()
            .contains("user alice (uid 1000): ASAs alice-*; owns EX.alice.*; reads nothing"));
    }
}
