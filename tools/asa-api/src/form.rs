//! How the engine's types travel in the ASA protocol (the CDDL's
//! `objective`, `locator`, `asa-locator`, `flood-entry`, options and
//! durations). The daemon and the client both use these functions, one
//! direction each, so the two sides cannot disagree on a field.
//!
//! Objectives and locators are byte strings holding their RFC 8990 CBOR, so
//! values are byte-exact; durations are milliseconds; addresses are their
//! 4 or 16 bytes. Reading never panics: what is wrong is a
//! [`ErrorCode::BadRequest`] saying which field and why.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::Value;
use grasp_engine::proto::DumpedObjective;
use grasp_engine::wire::{Limits, Locator, Objective, Protocol, TaggedObjective};
use grasp_engine::{ApiError, ErrorCode};
use grasp_engine::{AsaHandle, AsaLocator, DiscoverOptions, Dump, FloodEntry, RegisterOptions};

/// A bad request: `detail` says which field and why.
pub fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, detail)
}

/// A CBOR map with text keys.
pub fn map(kv: Vec<(&str, Value)>) -> Value {
    Value::Map(
        kv.into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v))
            .collect(),
    )
}

/// An unsigned integer.
pub fn uint(n: u64) -> Value {
    Value::Integer(n.into())
}

/// A duration in milliseconds (saturating).
pub fn millis(d: Duration) -> Value {
    uint(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The unsigned integer `v` holds, if it holds one.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

/// An objective: its RFC 8990 CBOR in a byte string.
pub fn objective(o: &Objective) -> Value {
    Value::Bytes(o.encode().to_vec())
}

/// A locator: its RFC 8990 option in a byte string.
pub fn locator(l: &Locator) -> Value {
    Value::Bytes(l.encode().to_vec())
}

fn address(a: IpAddr) -> Value {
    Value::Bytes(match a {
        IpAddr::V6(a) => a.octets().to_vec(),
        IpAddr::V4(a) => a.octets().to_vec(),
    })
}

fn ttl_left(expires: Instant) -> Value {
    millis(expires.saturating_duration_since(Instant::now()))
}

/// An asa-locator: the locator, and what the engine knows of it.
pub fn asa_locator(l: &AsaLocator) -> Value {
    let mut kv = vec![("locator", locator(&l.locator))];
    if l.ifindex != 0 {
        kv.push(("ifindex", uint(l.ifindex.into())));
    }
    if let Some(e) = l.expires {
        kv.push(("ttl_ms", ttl_left(e)));
    }
    if l.diverted {
        kv.push(("diverted", Value::Bool(true)));
    }
    if let Some(o) = &l.objective {
        kv.push(("objective", objective(o)));
    }
    map(kv)
}

/// A negotiation peer's address as an asa-locator (a TCP locator, the
/// scope as ifindex), with its authenticated identity when there is one.
pub fn peer(p: SocketAddr, identity: Option<&str>) -> Value {
    let (l, ifindex) = match p {
        SocketAddr::V6(a) => (Locator::tcp6(*a.ip(), a.port()), a.scope_id()),
        SocketAddr::V4(a) => (
            Locator::Ipv4 {
                addr: *a.ip(),
                protocol: Protocol::TCP,
                port: a.port(),
            },
            0,
        ),
    };
    let mut kv = vec![("locator", locator(&l))];
    if ifindex != 0 {
        kv.push(("ifindex", uint(ifindex.into())));
    }
    if let Some(id) = identity {
        kv.push(("identity", Value::Text(id.to_string())));
    }
    map(kv)
}

/// A flood-cache entry.
pub fn flood_entry(f: &FloodEntry) -> Value {
    let mut kv = vec![
        ("objective", objective(&f.objective)),
        ("initiator", address(f.initiator)),
    ];
    if let Some(l) = &f.locator {
        kv.push(("locator", locator(l)));
    }
    if let Some(e) = f.expires {
        kv.push(("ttl_ms", ttl_left(e)));
    }
    if f.ifindex != 0 {
        kv.push(("ifindex", uint(f.ifindex.into())));
    }
    map(kv)
}

/// A tagged objective of a flood.
pub fn tagged(t: &TaggedObjective) -> Value {
    let mut kv = vec![("objective", objective(&t.objective))];
    if let Some(l) = &t.locator {
        kv.push(("locator", locator(l)));
    }
    map(kv)
}

/// register_objective's options, as params.
pub fn register_options(o: &RegisterOptions) -> Vec<(&'static str, Value)> {
    let mut kv = vec![
        ("ttl_ms", uint(o.ttl_ms.into())),
        ("discoverable", Value::Bool(o.discoverable)),
        ("overlap", Value::Bool(o.overlap)),
        ("local", Value::Bool(o.local)),
        ("rapid", Value::Bool(o.rapid)),
    ];
    if !o.locators.is_empty() {
        kv.push((
            "locators",
            Value::Array(o.locators.iter().map(locator).collect()),
        ));
    }
    kv
}

/// discover's options, as params.
pub fn discover_options(o: &DiscoverOptions) -> Vec<(&'static str, Value)> {
    let mut kv = vec![
        ("flush", Value::Bool(o.flush)),
        ("first_only", Value::Bool(o.first_only)),
    ];
    if let Some(t) = o.timeout {
        kv.push(("timeout_ms", millis(t)));
    }
    if let Some(t) = o.min_ttl {
        kv.push(("min_ttl_ms", millis(t)));
    }
    kv
}

/// A dump as `dump` answers it. `who(h)` names engine ASA `h` for this
/// client: its name, and its handle when it is the client's own.
pub fn dump(d: &Dump, who: impl Fn(AsaHandle) -> (String, Option<u64>)) -> Value {
    let asa = |h: AsaHandle| {
        let (name, mine) = who(h);
        let mut kv = vec![("name", Value::Text(name))];
        kv.extend(mine.map(|m| ("asa", uint(m))));
        map(kv)
    };
    let objectives = d
        .objectives
        .iter()
        .map(|o| {
            let mut kv = vec![
                ("objective", objective(&o.objective)),
                (
                    "owners",
                    Value::Array(o.owners.iter().map(|h| asa(*h)).collect()),
                ),
                ("listen_negotiate", Value::Bool(o.listen_negotiate)),
                ("listen_synchronize", Value::Bool(o.listen_synchronize)),
            ];
            kv.extend(register_options(&o.options));
            map(kv)
        })
        .collect();
    let discovery = d
        .discovery_cache
        .iter()
        .map(|(name, l)| {
            map(vec![
                ("name", Value::Text(name.clone())),
                (
                    "locators",
                    Value::Array(l.iter().map(asa_locator).collect()),
                ),
            ])
        })
        .collect();
    map(vec![
        (
            "asas",
            Value::Array(d.asas.iter().map(|(h, _)| asa(*h)).collect()),
        ),
        ("objectives", Value::Array(objectives)),
        ("discovery_cache", Value::Array(discovery)),
        (
            "flood_cache",
            Value::Array(d.flood_cache.iter().map(flood_entry).collect()),
        ),
    ])
}

/// A dump from its map; ASAs that are not the client's have handle 0.
pub fn dump_of(v: &Value, lim: &Limits) -> Result<Dump, ApiError> {
    let f = Fields::of(v, "dump")?;
    let asa = |v: &Value| -> Result<(AsaHandle, String), ApiError> {
        let a = Fields::of(v, "asa")?;
        Ok((AsaHandle(a.opt_u32("asa")?.unwrap_or(0)), a.text("name")?))
    };
    let asas = f.list("asas")?.iter().map(asa).collect::<Result<_, _>>()?;
    let objectives = f
        .list("objectives")?
        .iter()
        .map(|o| {
            let o = Fields::of(o, "objective")?;
            Ok(DumpedObjective {
                objective: o.objective("objective", lim)?,
                owners: o
                    .list("owners")?
                    .iter()
                    .map(|v| asa(v).map(|(h, _)| h))
                    .collect::<Result<_, ApiError>>()?,
                options: register_options_of(&o, lim)?,
                listen_negotiate: o.bool("listen_negotiate")?,
                listen_synchronize: o.bool("listen_synchronize")?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let discovery_cache = f
        .list("discovery_cache")?
        .iter()
        .map(|e| {
            let e = Fields::of(e, "discovery_cache")?;
            let l = e
                .list("locators")?
                .iter()
                .map(|l| asa_locator_of(&Fields::of(l, "locator")?, lim))
                .collect::<Result<_, _>>()?;
            Ok((e.text("name")?, l))
        })
        .collect::<Result<_, ApiError>>()?;
    let flood_cache = f
        .list("flood_cache")?
        .iter()
        .map(|e| flood_entry_of(&Fields::of(e, "flood_cache")?, lim))
        .collect::<Result<_, _>>()?;
    Ok(Dump {
        asas,
        objectives,
        discovery_cache,
        flood_cache,
    })
}

/// The fields of a CBOR map with text keys (a request's params, a result,
/// a nested map): typed lookups that say what was wrong, and where.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    what: &'a str,
    kv: Vec<(&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    /// A request's params.
    pub fn params(params: &'a [(String, Value)]) -> Fields<'a> {
        Fields {
            what: "",
            kv: params.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    /// The map `v`, called `what` in errors.
    pub fn of(v: &'a Value, what: &'a str) -> Result<Fields<'a>, ApiError> {
        let Value::Map(m) = v else {
            return Err(bad(format!("{what} is a map")));
        };
        let kv = m
            .iter()
            .map(|(k, v)| match k {
                Value::Text(k) => Ok((k.as_str(), v)),
                _ => Err(bad(format!("{what} has text keys"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Fields { what, kv })
    }

    fn err(&self, key: &str, why: &str) -> ApiError {
        if self.what.is_empty() {
            bad(format!("{key:?} {why}"))
        } else {
            bad(format!("{}: {key:?} {why}", self.what))
        }
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn need(&self, key: &str) -> Result<&'a Value, ApiError> {
        self.get(key).ok_or_else(|| self.err(key, "is missing"))
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| as_u64(v).ok_or_else(|| self.err(key, "must be an unsigned integer")))
            .transpose()
    }

    /// An unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64, ApiError> {
        self.opt_u64(key)?
            .ok_or_else(|| self.err(key, "is missing"))
    }

    /// An optional unsigned integer of 32 bits.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, ApiError> {
        self.opt_u64(key)?
            .map(|n| u32::try_from(n).map_err(|_| self.err(key, "must be at most 2^32 - 1")))
            .transpose()
    }

    /// An unsigned integer of 32 bits.
    pub fn u32(&self, key: &str) -> Result<u32, ApiError> {
        self.opt_u32(key)?
            .ok_or_else(|| self.err(key, "is missing"))
    }

    /// An optional duration in milliseconds.
    pub fn opt_ms(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        Ok(self.opt_u64(key)?.map(Duration::from_millis))
    }

    /// An optional time to live in milliseconds (at most 2^32 - 1, as
    /// GRASP's), as the instant it ends.
    pub fn expiry(&self, key: &str) -> Result<Option<Instant>, ApiError> {
        Ok(self
            .opt_u32(key)?
            .map(|t| Instant::now() + Duration::from_millis(t.into())))
    }

    /// A duration in milliseconds.
    pub fn ms(&self, key: &str) -> Result<Duration, ApiError> {
        Ok(Duration::from_millis(self.u64(key)?))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                _ => Err(self.err(key, "must be true or false")),
            })
            .transpose()
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        self.opt_bool(key)?
            .ok_or_else(|| self.err(key, "is missing"))
    }

    /// Optional text.
    pub fn opt_text(&self, key: &str) -> Result<Option<String>, ApiError> {
        self.get(key)
            .map(|v| match v {
                Value::Text(t) => Ok(t.clone()),
                _ => Err(self.err(key, "must be text")),
            })
            .transpose()
    }

    /// Text.
    pub fn text(&self, key: &str) -> Result<String, ApiError> {
        self.opt_text(key)?
            .ok_or_else(|| self.err(key, "is missing"))
    }

    /// An array.
    pub fn list(&self, key: &str) -> Result<&'a [Value], ApiError> {
        match self.need(key)? {
            Value::Array(a) => Ok(a),
            _ => Err(self.err(key, "must be an array")),
        }
    }

    /// A nested map.
    pub fn fields(&self, key: &'a str) -> Result<Fields<'a>, ApiError> {
        Fields::of(self.need(key)?, key)
    }

    /// An objective (its RFC 8990 CBOR in a byte string).
    pub fn objective(&self, key: &str, lim: &Limits) -> Result<Objective, ApiError> {
        match self.need(key)? {
            Value::Bytes(b) => Objective::decode_with(&Bytes::copy_from_slice(b), lim)
                .map_err(|e| self.err(key, &format!("is not an objective: {e}"))),
            _ => Err(self.err(key, "must be a byte string (the RFC 8990 objective)")),
        }
    }

    /// An optional locator (its RFC 8990 option in a byte string).
    pub fn opt_locator(&self, key: &str, lim: &Limits) -> Result<Option<Locator>, ApiError> {
        self.get(key)
            .map(|v| locator_of(v, lim).map_err(|e| self.err(key, &e.detail)))
            .transpose()
    }

    /// An optional asa-locator.
    pub fn opt_asa_locator(
        &self,
        key: &'a str,
        lim: &Limits,
    ) -> Result<Option<AsaLocator>, ApiError> {
        self.get(key)
            .map(|v| asa_locator_of(&Fields::of(v, key)?, lim))
            .transpose()
    }

    /// An address (4 or 16 bytes).
    pub fn address(&self, key: &str) -> Result<IpAddr, ApiError> {
        let b = match self.need(key)? {
            Value::Bytes(b) => b.as_slice(),
            _ => return Err(self.err(key, "must be a byte string")),
        };
        if let Ok(a) = <[u8; 16]>::try_from(b) {
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        } else if let Ok(a) = <[u8; 4]>::try_from(b) {
            Ok(IpAddr::V4(Ipv4Addr::from(a)))
        } else {
            Err(self.err(key, "must be 4 or 16 bytes"))
        }
    }
}

/// A locator from its byte string.
pub fn locator_of(v: &Value, lim: &Limits) -> Result<Locator, ApiError> {
    let Value::Bytes(b) = v else {
        return Err(bad(
            "a locator is a byte string (its RFC 8990 option)".to_string()
        ));
    };
    Locator::decode_with(&Bytes::copy_from_slice(b), lim)
        .map_err(|e| bad(format!("not a locator: {e}")))
}

/// An asa-locator from its fields.
pub fn asa_locator_of(f: &Fields<'_>, lim: &Limits) -> Result<AsaLocator, ApiError> {
    let mut l = AsaLocator::new(
        f.opt_locator("locator", lim)?
            .ok_or_else(|| f.err("locator", "is missing"))?,
    );
    l.ifindex = f.opt_u32("ifindex")?.unwrap_or(0);
    l.expires = f.expiry("ttl_ms")?;
    l.diverted = f.opt_bool("diverted")?.unwrap_or(false);
    l.objective = match f.get("objective") {
        None => None,
        Some(_) => Some(f.objective("objective", lim)?),
    };
    Ok(l)
}

/// A peer's socket address (and identity) from its asa-locator.
pub fn peer_of(f: &Fields<'_>, lim: &Limits) -> Result<(SocketAddr, Option<String>), ApiError> {
    let l = asa_locator_of(f, lim)?;
    let addr = match l.locator {
        Locator::Ipv6 { addr, port, .. } => {
            SocketAddr::V6(SocketAddrV6::new(addr, port, 0, l.ifindex))
        }
        Locator::Ipv4 { addr, port, .. } => SocketAddr::new(IpAddr::V4(addr), port),
        _ => return Err(f.err("locator", "must be an address for a peer")),
    };
    Ok((addr, f.opt_text("identity")?))
}

/// A flood-cache entry from its fields.
pub fn flood_entry_of(f: &Fields<'_>, lim: &Limits) -> Result<FloodEntry, ApiError> {
    Ok(FloodEntry {
        objective: f.objective("objective", lim)?,
        locator: f.opt_locator("locator", lim)?,
        initiator: f.address("initiator")?,
        expires: f.expiry("ttl_ms")?,
        ifindex: f.opt_u32("ifindex")?.unwrap_or(0),
    })
}

/// A tagged objective from its fields.
pub fn tagged_of(f: &Fields<'_>, lim: &Limits) -> Result<TaggedObjective, ApiError> {
    Ok(TaggedObjective {
        objective: f.objective("objective", lim)?,
        locator: f.opt_locator("locator", lim)?,
    })
}

/// register_objective's options from its params (absent ones default).
pub fn register_options_of(f: &Fields<'_>, lim: &Limits) -> Result<RegisterOptions, ApiError> {
    let d = RegisterOptions::default();
    let locators = match f.get("locators") {
        None => Vec::new(),
        Some(_) => f
            .list("locators")?
            .iter()
            .map(|v| locator_of(v, lim))
            .collect::<Result<_, _>>()?,
    };
    Ok(RegisterOptions {
        ttl_ms: f.opt_u32("ttl_ms")?.unwrap_or(d.ttl_ms),
        discoverable: f.opt_bool("discoverable")?.unwrap_or(d.discoverable),
        overlap: f.opt_bool("overlap")?.unwrap_or(d.overlap),
        local: f.opt_bool("local")?.unwrap_or(d.local),
        rapid: f.opt_bool("rapid")?.unwrap_or(d.rapid),
        locators,
    })
}

/// discover's options from its params (absent ones default).
pub fn discover_options_of(f: &Fields<'_>) -> Result<DiscoverOptions, ApiError> {
    Ok(DiscoverOptions {
        timeout: f.opt_ms("timeout_ms")?,
        min_ttl: f.opt_ms("min_ttl_ms")?,
        flush: f.opt_bool("flush")?.unwrap_or(false),
        first_only: f.opt_bool("first_only")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use grasp_engine::wire::ObjectiveFlags;

    #[test]
    fn what_one_side_writes_the_other_reads() {
        let lim = Limits::default();
        let o = Objective::new("EX.x", ObjectiveFlags::SYNCH).with_value(7u32);
        let mut l = AsaLocator::new(Locator::tcp6("fd00::1".parse().unwrap(), 7017));
        l.ifindex = 3;
        l.diverted = true;
        l.objective = Some(o.clone());
        let back = asa_locator_of(&Fields::of(&asa_locator(&l), "l").unwrap(), &lim).unwrap();
        assert_eq!(back, l);

        let p: SocketAddr = "[fe80::1%4]:7017".parse().unwrap();
        let (got, id) = peer_of(&Fields::of(&peer(p, Some("n1")), "p").unwrap(), &lim).unwrap();
        assert_eq!((got, id.as_deref()), (p, Some("n1")));

        let f = FloodEntry {
            objective: o.clone(),
            locator: Some(Locator::tcp6("fd00::2".parse().unwrap(), 1)),
            initiator: "fd00::9".parse().unwrap(),
            expires: None,
            ifindex: 2,
        };
        assert_eq!(
            flood_entry_of(&Fields::of(&flood_entry(&f), "f").unwrap(), &lim).unwrap(),
            f
        );

        let r = RegisterOptions {
            ttl_ms: 5,
            rapid: true,
            locators: vec![Locator::tcp6("fd00::3".parse().unwrap(), 9)],
            ..RegisterOptions::default()
        };
        let params: Vec<(String, Value)> = register_options(&r)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(
            register_options_of(&Fields::params(&params), &lim).unwrap(),
            r
        );
    }

    #[test]
    fn a_time_to_live_past_grasps_range_is_refused_not_a_panic() {
        let v = map(vec![
            (
                "locator",
                locator(&Locator::tcp6("fd00::1".parse().unwrap(), 1)),
            ),
            ("ttl_ms", uint(u64::MAX)),
        ]);
        let e = asa_locator_of(&Fields::of(&v, "peer").unwrap(), &Limits::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn wrong_fields_say_which_and_why() {
        let v = map(vec![("locator", Value::Text("x".into()))]);
        let e = asa_locator_of(&Fields::of(&v, "peer").unwrap(), &Limits::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.detail.starts_with("peer: \"locator\""), "{}", e.detail);
        let params = vec![("ttl_ms".to_string(), Value::Integer((1u64 << 33).into()))];
        let e = register_options_of(&Fields::params(&params), &Limits::default()).unwrap_err();
        assert_eq!(e.detail, "\"ttl_ms\" must be at most 2^32 - 1");
    }
}
