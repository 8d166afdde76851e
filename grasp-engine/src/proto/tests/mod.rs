//! The core alone, on virtual time: engines wired to each other by a tiny
//! in-test network that delivers every transmit at once.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::*;
use crate::transport::{Datagram, Interface, Security};
use crate::wire::{Locator, Objective, ObjectiveFlags, Value};

mod basics;
mod discovery;
mod dull;
mod flood;
mod relay;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);

struct Net {
    now: Instant,
    engines: Vec<Engine>,
    /// (engine, channel) -> (engine, channel) of the other end.
    links: HashMap<(usize, ChannelId), (usize, ChannelId)>,
    /// The events that ended waiting calls, by engine and call.
    ended: HashMap<(usize, CommandId), Event>,
    next_cmd: u64,
    /// Multicasts seen, for assertions.
    multicasts: usize,
}

impl Net {
    fn new(n: usize) -> Self {
        let engines = (1..=n)
            .map(|i| {
                let config = Config {
                    seed: Some(i as u64),
                    ..Config::default()
                };
                Engine::new(
                    config,
                    TransportInfo {
                        security: Security::Quads,
                        interfaces: vec![Interface {
                            index: 1,
                            name: "eth0".into(),
                            link_local: ll(i),
                        }],
                        node_locator: Locator::tcp6(ula(i), 7017),
                        max_message_size: 2048,
                    },
                )
            })
            .collect();
        Net {
            now: Instant::now(),
            engines,
            links: HashMap::new(),
            ended: HashMap::new(),
            next_cmd: 1,
            multicasts: 0,
        }
    }

    /// A call that finishes at once, on engine `e`; then the network runs.
    fn call<T>(&mut self, e: usize, f: impl FnOnce(&mut Engine, Instant) -> T) -> T {
        let r = f(&mut self.engines[e], self.now);
        self.run();
        r
    }

    /// Starts a waiting call on engine `e` (it must be accepted); then the
    /// network runs. Its end is [`ended`](Self::ended).
    fn start(
        &mut self,
        e: usize,
        f: impl FnOnce(&mut Engine, Instant, CommandId) -> Result<(), ApiError>,
    ) -> CommandId {
        let id = CommandId(self.next_cmd);
        self.next_cmd += 1;
        f(&mut self.engines[e], self.now, id).expect("the call is accepted");
        self.run();
        id
    }

    /// The event that ended call `id` of engine `e`, if it has ended.
    fn ended(&mut self, e: usize, id: CommandId) -> Option<Event> {
        self.ended.remove(&(e, id))
    }

    /// Delivers everything until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for e in 0..self.engines.len() {
                while let Some(t) = self.engines[e].poll_transmit() {
                    moved = true;
                    self.deliver(e, t);
                }
                while let Some(ev) = self.engines[e].poll_event() {
                    moved = true;
                    if let Some(cmd) = ev.ended_call() {
                        self.ended.insert((e, cmd), ev);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, from: usize, t: Transmit) {
        let now = self.now;
        match t {
            Transmit::Multicast { ifindex, msg } => {
                assert_eq!(ifindex, 1);
                self.multicasts += 1;
                for to in 0..self.engines.len() {
                    if to != from {
                        self.engines[to].handle_datagram(
                            now,
                            Datagram {
                                ifindex: 1,
                                src: SocketAddrV6::new(ll(from + 1), 7017, 0, 1),
                                msg: msg.clone(),
                            },
                        );
                    }
                }
            }
            Transmit::Connect { channel, peer } => {
                let to = match peer.ip() {
                    std::net::IpAddr::V6(a) => {
                        (1..=self.engines.len())
                            .find(|&n| a == ula(n) || a == ll(n))
                            .expect("known peer")
                            - 1
                    }
                    _ => unreachable!(),
                };
                let src = SocketAddr::V6(SocketAddrV6::new(ll(from + 1), 40000, 0, 1));
                let theirs = self.engines[to]
                    .handle_inbound_channel(now, src, None)
                    .expect("room for the channel");
                self.links.insert((from, channel), (to, theirs));
                self.links.insert((to, theirs), (from, channel));
            }
            Transmit::Send { channel, msg } => {
                if let Some(&(to, ch)) = self.links.get(&(from, channel)) {
                    self.engines[to].handle_channel_message(now, ch, msg);
                }
            }
            Transmit::Close { channel, .. } => {
                if let Some((to, ch)) = self.links.remove(&(from, channel)) {
                    self.links.remove(&(to, ch));
                    self.engines[to].handle_channel_closed(now, ch, ChannelEnd::Lost);
                }
            }
        }
    }

    /// Advances virtual time to the next timer of any engine (at most `max`).
    fn advance(&mut self, max: Duration) {
        let limit = self.now + max;
        let next = self
            .engines
            .iter()
            .filter_map(|e| e.poll_timeout())
            .min()
            .map_or(limit, |t| t.min(limit));
        self.now = next.max(self.now);
        for e in &mut self.engines {
            e.handle_timeout(next);
        }
        self.run();
    }
}

fn ll(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, n as u16)
}

fn ula(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, n as u16)
}

fn asa(net: &mut Net, e: usize, name: &str) -> AsaHandle {
    net.call(e, |eng, _| eng.register_asa(name.into()))
        .expect("a new ASA")
}

/// The event that ended call `id` on a bare engine, or `None` when the
/// engine has none queued (events of other calls are skipped).
fn ended(e: &mut Engine, id: CommandId) -> Option<Event> {
    while let Some(ev) = e.poll_event() {
        if ev.ended_call() == Some(id) {
            return Some(ev);
        }
    }
    None
}

/// A secured engine on two links (so a relay), with `config`.
fn two_link_engine(config: Config) -> Engine {
    Engine::new(
        config,
        TransportInfo {
            security: Security::Quads,
            interfaces: vec![
                Interface {
                    index: 1,
                    name: "a".into(),
                    link_local: ll(1),
                },
                Interface {
                    index: 2,
                    name: "b".into(),
                    link_local: ll(2),
                },
            ],
            node_locator: Locator::tcp6(ula(1), 7017),
            max_message_size: 2048,
        },
    )
}
