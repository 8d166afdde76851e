//! Where a conformance scenario's nodes run: over the in-memory fabric on
//! tokio's paused clock, or between Linux network namespaces on real
//! sockets and real time. A scenario is written once against a [`Line`]
//! and runs in both places.

use std::time::Duration;

use grasp_acp::fabric::{Fabric, LinkConfig};

use crate::backend::{Domain, TestNode};
use crate::netns::Lab;

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The in-memory fabric, 1 ms links, on a paused clock.
    Fabric,
    /// One network namespace per node, veth links (root only).
    Netns,
}

impl Place {
    /// Long enough for a multicast to cross a link and be taken in: a
    /// fabric hop is 1 ms of virtual time; a veth hop is well under a
    /// millisecond but shares two cores with the whole test suite.
    pub fn settle(self) -> Duration {
        match self {
            Place::Fabric => Duration::from_millis(10),
            Place::Netns => Duration::from_millis(300),
        }
    }

    /// The longest one round trip between neighbours may take: how a
    /// scenario tells "answered at once" from "waited for a timeout".
    pub fn round_trip(self) -> Duration {
        match self {
            Place::Fabric => Duration::from_millis(10),
            Place::Netns => Duration::from_millis(250),
        }
    }

    /// A paused clock runs the fabric scenarios; real time the others. The
    /// netns form of a scenario, skipped loudly without root.
    pub fn run_between_namespaces<F: std::future::Future<Output = ()>>(test: &str, scenario: F) {
        if Lab::skip_loudly(test) {
            return;
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(scenario);
    }
}

/// Nodes of one domain in a line, each joined to the next by a link of its
/// own: A — B — C. On the fabric, links are fabric links; between
/// namespaces, node `i` and node `i + 1` are joined by veth link `i + 1`
/// with the vectors' address plan (`fe80::n:1` / `fd00:n::1` on the first
/// end, `…:2` on the second), the first end named `nx0`, the second `pv0`,
/// inner nodes forwarding and every node routing every link's prefix.
pub struct Line {
    /// The nodes, in line order.
    pub nodes: Vec<TestNode>,
    /// Where they run.
    pub place: Place,
    // Dropped after the nodes: the fabric or the namespaces they live in.
    _home: Home,
}

/// Held for as long as the nodes live; dropping a [`Lab`] deletes its
/// namespaces.
enum Home {
    Fabric { _fabric: Fabric },
    Netns { _lab: Lab },
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("place", &self.place)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Line {
    /// Panics if any node's backend dropped anything (every multicast
    /// opened, every channel's records were good).
    pub fn assert_no_drops(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            n.assert_no_drops(&format!("node {i} ({:?})", self.place));
        }
    }

    /// Nodes named `names` of domain `d`, in a line, at `place` (`seed`
    /// seeds the fabric).
    pub async fn new(d: &Domain, place: Place, seed: u64, names: &[&str]) -> Line {
        let n = names.len();
        match place {
            Place::Fabric => {
                let f = Fabric::new(seed);
                let cfg = LinkConfig {
                    loss: 0.0,
                    delay: Duration::from_millis(1),
                };
                let links: Vec<_> = (1..n).map(|i| f.link(format!("l{i}"), cfg)).collect();
                let mut nodes = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let mine: Vec<_> = [i.checked_sub(1), (i + 1 < n).then_some(i)]
                        .into_iter()
                        .flatten()
                        .map(|l| &links[l])
                        .collect();
                    nodes.push(d.fabric_node(&f, name, &mine).await);
                }
                Line {
                    nodes,
                    place,
                    _home: Home::Fabric { _fabric: f },
                }
            }
            Place::Netns => {
                let mut lab = Lab::new();
                let spaces: Vec<_> = (0..n).map(|_| lab.netns().expect("a namespace")).collect();
                for i in 1..n {
                    let link = u16::try_from(i).expect("a short line");
                    lab.link(link, (&spaces[i - 1], "nx0"), (&spaces[i], "pv0"))
                        .expect("a veth link");
                }
                // Every node reaches every link's ULA prefix: inner nodes
                // forward, and each routes the far links towards them.
                for (i, ns) in spaces.iter().enumerate() {
                    if i > 0 && i + 1 < n {
                        lab.forwarding(ns).expect("forwarding");
                    }
                    for l in 1..n {
                        let prefix = format!("fd00:{l:x}::/64");
                        if l > i + 1 {
                            let via = format!("fe80::{:x}:2", i + 1);
                            lab.route(ns, &prefix, &via, "nx0").expect("a route");
                        } else if l < i {
                            let via = format!("fe80::{i:x}:1");
                            lab.route(ns, &prefix, &via, "pv0").expect("a route");
                        }
                    }
                }
                let nodes = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let ifaces: Vec<&str> =
                            [(i > 0).then_some("pv0"), (i + 1 < n).then_some("nx0")]
                                .into_iter()
                                .flatten()
                                .collect();
                        d.netns_node(&spaces[i], &ifaces, name)
                    })
                    .collect();
                Line {
                    nodes,
                    place,
                    _home: Home::Netns { _lab: lab },
                }
            }
        }
    }
}
