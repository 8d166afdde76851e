//! The host's interfaces: which ones GRASP uses, and the node's address.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use grasp_engine::transport::Interface;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use crate::Error;

/// One interface of the host, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Administratively up and running.
    pub up: bool,
    /// Supports multicast.
    pub multicast: bool,
    /// The loopback interface.
    pub loopback: bool,
    /// Its IPv6 addresses, in the kernel's order.
    pub addrs: Vec<Ipv6Addr>,
}

impl HostInterface {
    /// Its first IPv6 link-local address, if any.
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().copied().find(is_link_local)
    }

    /// Whether GRASP can use it: up, multicast-capable, not loopback, with a
    /// link-local address.
    pub fn usable(&self) -> bool {
        self.up && self.multicast && !self.loopback && self.link_local().is_some()
    }
}

/// `fe80::/10`
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `fc00::/7`, unique local addresses.
pub fn is_ula(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xfe00 == 0xfc00
}

fn is_global(a: &Ipv6Addr) -> bool {
    !a.is_loopback()
        && !a.is_unspecified()
        && !a.is_multicast()
        && !is_link_local(a)
        && !is_ula(a)
        && a.to_ipv4_mapped().is_none()
}

/// The addresses not usable yet or at all: still in duplicate address
/// detection (IFA_F_TENTATIVE) or found duplicate (IFA_F_DADFAILED), as
/// `/proc/net/if_inet6` lists them (getifaddrs does not tell). Empty where
/// that file is missing.
fn unusable_addresses() -> Vec<Ipv6Addr> {
    const IFA_F_DADFAILED: u32 = 0x08;
    const IFA_F_TENTATIVE: u32 = 0x40;
    let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let hex = f.next()?;
            let flags = u32::from_str_radix(f.nth(3)?, 16).ok()?;
            if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0 || hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

/// Lists the host's interfaces with their usable IPv6 addresses (none
/// still in duplicate address detection), ordered by index.
pub fn host_interfaces() -> Result<Vec<HostInterface>, Error> {
    let addrs = getifaddrs().map_err(|e| Error::Io {
        context: "listing network interfaces (getifaddrs)".into(),
        source: e.into(),
    })?;
    let unusable = unusable_addresses();
    let mut by_name: BTreeMap<String, HostInterface> = BTreeMap::new();
    for ifa in addrs {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| HostInterface {
                index: nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0),
                name: ifa.interface_name.clone(),
                up: false,
                multicast: false,
                loopback: false,
                addrs: Vec::new(),
            });
        entry.up |= ifa.flags.contains(InterfaceFlags::IFF_UP)
            && ifa.flags.contains(InterfaceFlags::IFF_RUNNING);
        entry.multicast |= ifa.flags.contains(InterfaceFlags::IFF_MULTICAST);
        entry.loopback |= ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if let Some(a) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in6()) {
            let ip = a.ip();
            if !entry.addrs.contains(&ip) && !unusable.contains(&ip) {
                entry.addrs.push(ip);
            }
        }
    }
    let mut v: Vec<HostInterface> = by_name.into_values().filter(|i| i.index != 0).collect();
    v.sort_by_key(|i| i.index);
    Ok(v)
}

/// Why a named interface is unusable when it lacks a link-local address
/// (perhaps only for now: duplicate address detection takes a second or two).
pub const NO_LINK_LOCAL: &str =
    "it has no usable IPv6 link-local address (yet: duplicate address detection may still be running)";

/// Chooses the GRASP interfaces: the named ones (each must exist and be
/// usable), or, when `wanted` is `None`, every usable one.
pub fn select(all: &[HostInterface], wanted: Option<&[String]>) -> Result<Vec<Interface>, Error> {
    let chosen: Vec<&HostInterface> = match wanted {
        Some(names) => {
            let mut v = Vec::new();
            for n in names {
                let i = all
                    .iter()
                    .find(|i| &i.name == n)
                    .ok_or_else(|| Error::NoSuchInterface(n.clone()))?;
                if !i.usable() {
                    return Err(Error::UnusableInterface {
                        name: n.clone(),
                        why: if !i.up {
                            "it is down"
                        } else if i.loopback {
                            "it is a loopback interface"
                        } else if !i.multicast {
                            "it does not support multicast"
                        } else {
                            NO_LINK_LOCAL
                        },
                    });
                }
                v.push(i);
            }
            v
        }
        None => all.iter().filter(|i| i.usable()).collect(),
    };
    if chosen.is_empty() {
        return Err(Error::NoInterfaces);
    }
    Ok(chosen
        .into_iter()
        .filter_map(|i| {
            Some(Interface {
                index: i.index,
                name: i.name.clone(),
                link_local: i.link_local()?,
            })
        })
        .collect())
}

/// The interfaces to use now, for a running node: the named ones that exist
/// and are usable (others are waited for), or every usable one.
pub fn select_present(all: &[HostInterface], wanted: Option<&[String]>) -> Vec<Interface> {
    all.iter()
        .filter(|i| i.usable() && wanted.is_none_or(|w| w.contains(&i.name)))
        .filter_map(|i| {
            Some(Interface {
                index: i.index,
                name: i.name.clone(),
                link_local: i.link_local()?,
            })
        })
        .collect()
}

/// The node's address for its locator and initiator field (RFC 8990
/// §2.8.4: a global address, ULA counting as one; else a link-local one):
/// the first ULA on any interface, else the first global address, else the
/// first chosen interface's link-local address.
pub fn preferred_address(all: &[HostInterface], chosen: &[Interface]) -> Option<Ipv6Addr> {
    let every = || all.iter().flat_map(|i| i.addrs.iter().copied());
    every()
        .find(is_ula)
        .or_else(|| every().find(is_global))
        .or_else(|| chosen.first().map(|i| i.link_local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str, addrs: &[&str]) -> HostInterface {
        HostInterface {
            index,
            name: name.into(),
            up: true,
            multicast: true,
            loopback: false,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn address_preference() {
        let mut lo = iface(1, "lo", &["::1"]);
        lo.loopback = true;
        let eth = iface(2, "eth0", &["2001:db8::5", "fe80::1", "fd00:1::2"]);
        let all = vec![lo, eth];
        let chosen = select(&all, None).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].link_local, "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            preferred_address(&all, &chosen),
            Some("fd00:1::2".parse().unwrap())
        );
        let all2 = vec![iface(2, "eth0", &["fe80::1", "2001:db8::5"])];
        let c2 = select(&all2, None).unwrap();
        assert_eq!(
            preferred_address(&all2, &c2),
            Some("2001:db8::5".parse().unwrap())
        );
        let all3 = vec![iface(2, "eth0", &["fe80::1"])];
        let c3 = select(&all3, None).unwrap();
        assert_eq!(
            preferred_address(&all3, &c3),
            Some("fe80::1".parse().unwrap())
        );
    }

    #[test]
    fn explicit_selection_errors() {
        let mut down = iface(3, "eth1", &["fe80::3"]);
        down.up = false;
        let all = vec![
            iface(2, "eth0", &["fe80::1"]),
            down,
            iface(4, "eth2", &["fd00::4"]),
        ];
        assert!(matches!(
            select(&all, Some(&["nope".into()])),
            Err(Error::NoSuchInterface(_))
        ));
        assert!(matches!(
            select(&all, Some(&["eth1".into()])),
            Err(Error::UnusableInterface { .. })
        ));
        assert!(matches!(
            select(&all, Some(&["eth2".into()])),
            Err(Error::UnusableInterface { .. })
        ));
        assert_eq!(select(&all, Some(&["eth0".into()])).unwrap()[0].index, 2);
        assert!(matches!(select(&[], None), Err(Error::NoInterfaces)));
    }

    #[test]
    fn host_listing_works() {
        // Whatever this host has, listing must not fail and indices are unique.
        let all = host_interfaces().unwrap();
        let mut idx: Vec<u32> = all.iter().map(|i| i.index).collect();
        idx.dedup();
        assert_eq!(idx.len(), all.len());
    }
}
