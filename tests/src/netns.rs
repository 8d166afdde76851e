//! Linux network-namespace labs for tests that need real sockets and real
//! multicast (the loopback interface has no multicast).
//!
//! A [`Lab`] creates namespaces with unique names (`gt<pid>x<n>`), links them
//! with veth pairs whose ends are created directly inside the namespaces (the
//! host's interfaces are never touched), gives the ends fixed link-local and
//! ULA (`fd00::/8`) addresses with duplicate address detection off, and
//! deletes everything when dropped. [`spawn_in`] runs async code on a thread
//! whose network namespace is one of the lab's, so every socket it opens
//! lives there.
//!
//! Needs root and iproute2's `ip`. [`Lab::skip_reason`] says why a test
//! cannot run here; callers print it loudly and return.

use std::fs::File;
use std::future::Future;
use std::net::Ipv6Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace of a [`Lab`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    /// The namespace's name under `/run/netns`.
    pub name: String,
}

/// A set of namespaces, removed on drop.
#[derive(Debug)]
pub struct Lab {
    namespaces: Vec<Netns>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// `None` if labs can be made here; otherwise why not.
    pub fn skip_reason() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("network-namespace tests need root (CI runs them as root)".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => None,
            _ => Some("iproute2's `ip` command is not installed".into()),
        }
    }

    /// Prints a loud skip notice and returns true if labs cannot be made.
    pub fn skip_loudly(test: &str) -> bool {
        match Self::skip_reason() {
            Some(why) => {
                eprintln!();
                eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                eprintln!("!! SKIPPED {test}: {why}");
                eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                true
            }
            None => false,
        }
    }

    /// An empty lab.
    pub fn new() -> Self {
        Lab {
            namespaces: Vec::new(),
        }
    }

    /// Creates a namespace with its loopback up.
    pub fn netns(&mut self) -> Result<Netns, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("gt{}x{}", std::process::id(), n);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Links `a` and `b` with a veth pair named `a_if` (in `a`) and `b_if`
    /// (in `b`), and brings both ends up with the given link-local and
    /// optional ULA addresses (prefix length 64, no DAD, no automatic
    /// link-local).
    #[allow(clippy::too_many_arguments)]
    pub fn veth(
        &mut self,
        a: &Netns,
        a_if: &str,
        a_ll: Ipv6Addr,
        a_ula: Option<Ipv6Addr>,
        b: &Netns,
        b_if: &str,
        b_ll: Ipv6Addr,
        b_ula: Option<Ipv6Addr>,
    ) -> Result<(), String> {
        ip(&[
            "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ])?;
        for (ns, ifname, ll, ula) in [(a, a_if, a_ll, a_ula), (b, b_if, b_ll, b_ula)] {
            ip(&["-n", &ns.name, "link", "set", ifname, "addrgenmode", "none"])?;
            ip(&["-n", &ns.name, "link", "set", ifname, "up"])?;
            let ll = format!("{ll}/64");
            ip(&["-n", &ns.name, "addr", "add", &ll, "dev", ifname, "nodad"])?;
            if let Some(u) = ula {
                let u = format!("{u}/64");
                ip(&["-n", &ns.name, "addr", "add", &u, "dev", ifname, "nodad"])?;
            }
        }
        Ok(())
    }

    /// Two new namespaces A and B on one veth link with the graspy vectors'
    /// addresses: A `ab0` fe80::1:1 / fd00:1::1, B `ba0` fe80::1:2 /
    /// fd00:1::2.
    pub fn pair(&mut self) -> Result<(Netns, Netns), String> {
        let a = self.netns()?;
        let b = self.netns()?;
        self.link(1, (&a, "ab0"), (&b, "ba0"))?;
        Ok((a, b))
    }

    /// Link number `n` between two namespaces, with the vectors' address
    /// plan: the first end fe80::n:1 / fd00:n::1, the second fe80::n:2 /
    /// fd00:n::2.
    pub fn link(
        &mut self,
        n: u16,
        first: (&Netns, &str),
        second: (&Netns, &str),
    ) -> Result<(), String> {
        let ll = |i: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, n, i);
        let ula = |i: u16| Ipv6Addr::new(0xfd00, n, 0, 0, 0, 0, 0, i);
        self.veth(
            first.0,
            first.1,
            ll(1),
            Some(ula(1)),
            second.0,
            second.1,
            ll(2),
            Some(ula(2)),
        )
    }

    /// A bridge `name` in `ns` (a switch: several nodes on one link), up,
    /// forwarding multicast to every port (no MLD snooping).
    pub fn bridge(&self, ns: &Netns, name: &str) -> Result<(), String> {
        ip(&[
            "-n",
            &ns.name,
            "link",
            "add",
            name,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &ns.name, "link", "set", name, "up"])
    }

    /// Makes interface `ifname` of `ns` a port of bridge `bridge`.
    pub fn bridge_port(&self, ns: &Netns, ifname: &str, bridge: &str) -> Result<(), String> {
        ip(&["-n", &ns.name, "link", "set", ifname, "master", bridge])
    }

    /// Removes an address from an interface.
    pub fn del_addr(&self, ns: &Netns, ifname: &str, cidr: &str) -> Result<(), String> {
        ip(&["-n", &ns.name, "addr", "del", cidr, "dev", ifname])
    }

    /// Deletes an interface (a veth end takes its peer with it).
    pub fn del_link(&self, ns: &Netns, ifname: &str) -> Result<(), String> {
        ip(&["-n", &ns.name, "link", "del", ifname])
    }

    /// Adds an address to an interface (no DAD).
    pub fn addr(&self, ns: &Netns, ifname: &str, cidr: &str) -> Result<(), String> {
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", ifname, "nodad"])
    }

    /// Adds an IPv6 route in `ns` via a (link-local) next hop on `dev`.
    pub fn route(&self, ns: &Netns, prefix: &str, via: &str, dev: &str) -> Result<(), String> {
        ip(&[
            "-n", &ns.name, "-6", "route", "add", prefix, "via", via, "dev", dev,
        ])
    }

    /// Turns on IPv6 forwarding in `ns` (for relay nodes).
    pub fn forwarding(&self, ns: &Netns) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns.name]) {
                eprintln!("warning: could not delete namespace {}: {e}", ns.name);
            }
        }
    }
}

/// Runs `f` on a new thread inside `ns`, on a single-threaded tokio runtime.
/// Every socket the future opens belongs to `ns`.
pub fn spawn_in<F, Fut, T>(ns: &Netns, f: F) -> JoinHandle<Result<T, String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(rt.block_on(f()))
    })
}
