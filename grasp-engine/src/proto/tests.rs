//! The core alone, on virtual time: engines wired to each other by a tiny
//! in-test network that delivers every transmit at once.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::*;
use crate::transport::{Datagram, Interface, Security};
use crate::wire::{Locator, Objective, ObjectiveFlags, Value};

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);

struct Net {
    now: Instant,
    engines: Vec<Engine>,
    /// (engine, channel) -> (engine, channel) of the other end.
    links: HashMap<(usize, ChannelId), (usize, ChannelId)>,
    replies: HashMap<(usize, CommandId), Result<Reply, ApiError>>,
    next_cmd: u64,
    /// Multicasts seen, for assertions.
    multicasts: usize,
}

fn ll(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, n as u16)
}

fn ula(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, n as u16)
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
            replies: HashMap::new(),
            next_cmd: 1,
            multicasts: 0,
        }
    }

    fn command(&mut self, e: usize, c: Command) -> CommandId {
        let id = CommandId(self.next_cmd);
        self.next_cmd += 1;
        self.engines[e].handle_command(self.now, id, c);
        self.run();
        id
    }

    fn reply(&mut self, e: usize, id: CommandId) -> Option<Result<Reply, ApiError>> {
        self.replies.remove(&(e, id))
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
                    if let Event::Reply { cmd, result } = ev {
                        self.replies.insert((e, cmd), result);
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
                let theirs = self.engines[to].allocate_channel();
                self.links.insert((from, channel), (to, theirs));
                self.links.insert((to, theirs), (from, channel));
                let src = SocketAddr::V6(SocketAddrV6::new(ll(from + 1), 40000, 0, 1));
                self.engines[to].handle_inbound_channel(now, theirs, src);
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

fn asa(net: &mut Net, e: usize, name: &str) -> AsaHandle {
    let id = net.command(e, Command::RegisterAsa { name: name.into() });
    match net.reply(e, id) {
        Some(Ok(Reply::Asa(h))) => h,
        other => panic!("{other:?}"),
    }
}

#[test]
fn discovery_and_synchronization_on_virtual_time() {
    let mut net = Net::new(2);
    let b = asa(&mut net, 1, "server");
    let served = Objective::new("EX.sync", SYNCH).with_value(Value::from("v"));
    let id = net.command(
        1,
        Command::RegisterObjective {
            asa: b,
            objective: served.clone(),
            options: RegisterOptions::default(),
        },
    );
    assert_eq!(net.reply(1, id), Some(Ok(Reply::Done)));
    let id = net.command(
        1,
        Command::ListenSynchronize {
            asa: b,
            objective: served,
        },
    );
    assert_eq!(net.reply(1, id), Some(Ok(Reply::Done)));

    let a = asa(&mut net, 0, "client");
    let probe = Objective::new("EX.sync", SYNCH).with_value(Value::null());
    // Collect-all discovery: nothing comes back before the timeout...
    let id = net.command(
        0,
        Command::Discover {
            asa: a,
            objective: probe.clone(),
            options: DiscoverOptions::default(),
            stream: false,
        },
    );
    assert!(net.reply(0, id).is_none(), "waits for the whole timeout");
    // ...which is 100 ms x loop count 6 (the repeat planned at 150 ms does
    // nothing: B answered).
    let t0 = net.now;
    let locs = loop {
        net.advance(Duration::from_secs(5));
        if let Some(r) = net.reply(0, id) {
            let Ok(Reply::Locators(locs)) = r else {
                panic!("{r:?}")
            };
            break locs;
        }
    };
    assert_eq!(net.now - t0, Duration::from_millis(600));
    assert_eq!(net.engines[0].stats().discoveries_repeated, 0);
    assert_eq!(locs.len(), 1);
    assert_eq!(locs[0].locator, Locator::tcp6(ula(2), 7017));
    // Synchronize from the cache: no multicast.
    let before = net.multicasts;
    let id = net.command(
        0,
        Command::Synchronize {
            asa: a,
            objective: probe,
            peer: None,
            timeout: Duration::from_secs(1),
        },
    );
    let Some(Ok(Reply::Synch(o))) = net.reply(0, id) else {
        panic!()
    };
    assert_eq!(o.value.unwrap().as_str(), Some("v"));
    assert_eq!(net.multicasts, before);
    assert_eq!(net.engines[0].open_channels(), 0);
    assert_eq!(net.engines[1].open_channels(), 0);
}

#[test]
fn silent_inbound_channel_times_out_without_holding_anything() {
    let mut net = Net::new(1);
    let e = &mut net.engines[0];
    let ch = e.allocate_channel();
    let peer = SocketAddr::V6(SocketAddrV6::new(ll(9), 1234, 0, 1));
    let now = net.now;
    e.handle_inbound_channel(now, ch, peer);
    assert_eq!(e.open_channels(), 1);
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(5)));
    e.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(e.open_channels(), 0);
    assert_eq!(e.stats().idle_channels_closed, 1);
    assert_eq!(
        e.poll_transmit(),
        Some(Transmit::Close {
            channel: ch,
            linger: false
        })
    );
}

#[test]
fn garbage_on_a_channel_gets_m_invalid_and_a_close() {
    let mut net = Net::new(1);
    let e = &mut net.engines[0];
    let ch = e.allocate_channel();
    let now = net.now;
    e.handle_inbound_channel(now, ch, SocketAddr::V6(SocketAddrV6::new(ll(9), 1, 0, 1)));
    e.handle_channel_message(now, ch, bytes::Bytes::from_static(&[0xff, 0x00]));
    let Some(Transmit::Send { msg, .. }) = e.poll_transmit() else {
        panic!()
    };
    assert!(matches!(Message::decode(&msg), Ok(Message::Invalid(_))));
    assert!(matches!(e.poll_transmit(), Some(Transmit::Close { .. })));
    assert_eq!(e.stats().malformed, 1);
    // An unknown multicast type is counted and dropped.
    e.handle_datagram(
        now,
        Datagram {
            ifindex: 1,
            src: SocketAddrV6::new(ll(9), 1, 0, 1),
            msg: bytes::Bytes::from_static(&[0x82, 0x18, 0x2a, 0x01]),
        },
    );
    assert_eq!(e.stats().unknown_multicast, 1);
    assert_eq!(e.poll_transmit(), None);
}

#[test]
fn registration_rules() {
    let mut net = Net::new(1);
    let a = asa(&mut net, 0, "a");
    let id = net.command(0, Command::RegisterAsa { name: "a".into() });
    assert_eq!(
        net.reply(0, id).unwrap().unwrap_err().code,
        ErrorCode::DupAsa
    );
    let both = Objective::new("X", ObjectiveFlags::from_bits(7));
    let id = net.command(
        0,
        Command::RegisterObjective {
            asa: a,
            objective: both,
            options: RegisterOptions::default(),
        },
    );
    assert_eq!(
        net.reply(0, id).unwrap().unwrap_err().code,
        ErrorCode::NotBoth
    );
    let dry = Objective::new("X", ObjectiveFlags::from_bits(8));
    let id = net.command(
        0,
        Command::RegisterObjective {
            asa: a,
            objective: dry,
            options: RegisterOptions::default(),
        },
    );
    assert_eq!(
        net.reply(0, id).unwrap().unwrap_err().code,
        ErrorCode::NotDry
    );
    let ok = Objective::new("X", SYNCH);
    for expect in [None, Some(ErrorCode::ObjReg)] {
        let id = net.command(
            0,
            Command::RegisterObjective {
                asa: a,
                objective: ok.clone(),
                options: RegisterOptions::default(),
            },
        );
        assert_eq!(net.reply(0, id).unwrap().err().map(|e| e.code), expect);
    }
    let id = net.command(0, Command::DeregisterAsa { asa: a });
    assert_eq!(net.reply(0, id), Some(Ok(Reply::Done)));
    let id = net.command(
        0,
        Command::GetFlood {
            asa: a,
            name: "X".into(),
        },
    );
    assert_eq!(
        net.reply(0, id).unwrap().unwrap_err().code,
        ErrorCode::NoAsa
    );
}

fn dull_engine() -> Engine {
    let config = Config {
        seed: Some(3),
        dull: true,
        dull_objectives: vec!["AN_Proxy".into()],
        ..Config::default()
    };
    Engine::new(
        config,
        TransportInfo {
            security: Security::None,
            interfaces: vec![
                Interface {
                    index: 1,
                    name: "eth0".into(),
                    link_local: ll(1),
                },
                Interface {
                    index: 2,
                    name: "eth1".into(),
                    link_local: ll(2),
                },
            ],
            node_locator: Locator::tcp6(ula(1), 7017),
            max_message_size: 2048,
        },
    )
}

fn disc_bytes(name: &str, loop_count: u8) -> bytes::Bytes {
    Message::Discovery(crate::wire::Discovery {
        session_id: SessionId(77),
        initiator: std::net::IpAddr::V6(ll(9)),
        objective: Objective::new(name, ObjectiveFlags::from_bits(5)).with_loop_count(loop_count),
        extensions: Vec::new(),
    })
    .encode()
}

#[test]
fn dull_instance_rules() {
    let mut e = dull_engine();
    let now = Instant::now();
    assert!(!e.is_relay(), "DULL never relays, even with two interfaces");
    e.handle_command(
        now,
        CommandId(1),
        Command::RegisterAsa {
            name: "proxy".into(),
        },
    );
    let Some(Event::Reply {
        result: Ok(Reply::Asa(asa)),
        ..
    }) = e.poll_event()
    else {
        panic!()
    };
    // Only allow-listed objectives can be registered.
    e.handle_command(
        now,
        CommandId(2),
        Command::RegisterObjective {
            asa,
            objective: Objective::new("EX.other", SYNCH),
            options: RegisterOptions::default(),
        },
    );
    let Some(Event::Reply {
        result: Err(err), ..
    }) = e.poll_event()
    else {
        panic!()
    };
    assert_eq!(err.code, ErrorCode::NoSecurity);
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    e.handle_command(
        now,
        CommandId(3),
        Command::RegisterObjective {
            asa,
            objective: Objective::new("AN_Proxy", SYNCH),
            options: opts,
        },
    );
    assert!(matches!(
        e.poll_event(),
        Some(Event::Reply { result: Ok(_), .. })
    ));
    let from = |src: Ipv6Addr, msg| Datagram {
        ifindex: 2,
        src: SocketAddrV6::new(src, 5000, 0, 2),
        msg,
    };
    // Loop count other than 1: dropped.
    e.handle_datagram(now, from(ll(9), disc_bytes("AN_Proxy", 6)));
    assert_eq!(e.poll_transmit(), None);
    // A source that is not link-local: dropped.
    e.handle_datagram(now, from(ula(9), disc_bytes("AN_Proxy", 1)));
    assert_eq!(e.poll_transmit(), None);
    // Not on the allow-list: dropped.
    e.handle_datagram(now, from(ll(9), disc_bytes("EX.other", 1)));
    assert_eq!(e.poll_transmit(), None);
    assert_eq!(e.stats().dull_dropped, 3);
    // A proper one: answered with the link-local address of the interface it
    // came in on, never a divert, to the source port.
    e.handle_datagram(now, from(ll(9), disc_bytes("AN_Proxy", 1)));
    let Some(Transmit::Connect { peer, .. }) = e.poll_transmit() else {
        panic!()
    };
    assert_eq!(peer, SocketAddr::V6(SocketAddrV6::new(ll(9), 5000, 0, 2)));
    let Some(Transmit::Send { msg, .. }) = e.poll_transmit() else {
        panic!()
    };
    let Message::Response(r) = Message::decode(&msg).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.target,
        crate::wire::ResponseTarget::Locators(vec![Locator::tcp6(ll(2), 7017)])
    );
    // Negotiation and synchronization need security DULL does not have.
    e.handle_command(
        now,
        CommandId(4),
        Command::Synchronize {
            asa,
            objective: Objective::new("AN_Proxy", SYNCH),
            peer: None,
            timeout: Duration::from_secs(1),
        },
    );
    let Some(Event::Reply {
        result: Err(err), ..
    }) = e.poll_event()
    else {
        panic!()
    };
    assert_eq!(err.code, ErrorCode::NoSecurity);
    // Flooding is allowed, with loop count 1 on every interface.
    while e.poll_transmit().is_some() {}
    let obj = Objective::new("AN_Proxy", SYNCH).with_value(Value::from("here"));
    e.handle_command(
        now,
        CommandId(5),
        Command::Flood {
            asa,
            ttl_ms: 1000,
            tagged: vec![crate::wire::TaggedObjective {
                objective: obj,
                locator: None,
            }],
        },
    );
    let mut floods = 0;
    while let Some(t) = e.poll_transmit() {
        let Transmit::Multicast { msg, .. } = t else {
            panic!()
        };
        let Message::Flood(f) = Message::decode(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(f.tagged[0].objective.loop_count, 1);
        floods += 1;
    }
    assert_eq!(floods, 2);
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

/// Runs one command on a bare engine and returns its reply.
fn call(e: &mut Engine, now: Instant, id: u64, c: Command) -> Result<Reply, ApiError> {
    e.handle_command(now, CommandId(id), c);
    loop {
        match e.poll_event() {
            Some(Event::Reply { cmd, result }) if cmd == CommandId(id) => return result,
            Some(_) => continue,
            None => panic!("no reply to command {id}"),
        }
    }
}

#[test]
fn relay_rate_limit_and_duplicate_suppression() {
    let config = Config {
        seed: Some(4),
        relay_rate: RateLimit {
            rate: 1.0,
            burst: 2.0,
        },
        ..Config::default()
    };
    let mut e = two_link_engine(config);
    assert!(e.is_relay());
    let now = Instant::now();
    let disc = |sid: u32, lc: u8| Datagram {
        ifindex: 1,
        src: SocketAddrV6::new(ll(9), 5000, 0, 1),
        msg: Message::Discovery(crate::wire::Discovery {
            session_id: SessionId(sid),
            initiator: std::net::IpAddr::V6(ula(9)),
            objective: Objective::new("EX.far", SYNCH).with_loop_count(lc),
            extensions: Vec::new(),
        })
        .encode(),
    };
    let relayed = |e: &mut Engine| {
        let mut n = 0;
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Multicast { ifindex, msg } = t {
                assert_eq!(ifindex, 2, "relayed on the other interface only");
                let Message::Discovery(d) = Message::decode(&msg).unwrap() else {
                    panic!()
                };
                assert_eq!(d.objective.loop_count, 5);
                n += 1;
            }
        }
        n
    };
    e.handle_datagram(now, disc(1, 6));
    assert_eq!(relayed(&mut e), 1);
    e.handle_datagram(now, disc(1, 6)); // the same session again: a loop
    assert_eq!(relayed(&mut e), 0);
    e.handle_datagram(now, disc(2, 6));
    assert_eq!(relayed(&mut e), 1);
    e.handle_datagram(now, disc(3, 6)); // burst of 2 used up
    assert_eq!(relayed(&mut e), 0);
    assert_eq!(e.stats().relay_rate_limited, 1);
    e.handle_datagram(now + Duration::from_secs(1), disc(4, 6)); // refilled
    assert_eq!(relayed(&mut e), 1);
    e.handle_datagram(now + Duration::from_secs(3), disc(5, 1)); // loop count 1: not relayed
    assert_eq!(relayed(&mut e), 0);
    assert_eq!(e.stats().duplicates, 1);
}

#[test]
fn flood_relay_rate_limit_is_per_interface_and_still_delivers_locally() {
    let config = Config {
        seed: Some(5),
        flood_relay_rate: RateLimit {
            rate: 1.0,
            burst: 2.0,
        },
        ..Config::default()
    };
    let mut e = two_link_engine(config);
    let now = Instant::now();
    let flood = |sid: u32, ifindex: u32, value: u64| Datagram {
        ifindex,
        src: SocketAddrV6::new(ll(9), 7017, 0, ifindex),
        msg: Message::Flood(crate::wire::Flood {
            session_id: SessionId(sid),
            initiator: std::net::IpAddr::V6(ula(9)),
            ttl_ms: 60_000,
            tagged: vec![crate::wire::TaggedObjective {
                objective: Objective::new("EX.news", SYNCH)
                    .with_loop_count(4)
                    .with_value(Value::from(value)),
                locator: None,
            }],
            extensions: Vec::new(),
        })
        .encode(),
    };
    // Relayed copies, as (out interface, loop count).
    let relayed = |e: &mut Engine| {
        let mut out = Vec::new();
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Multicast { ifindex, msg } = t {
                let Message::Flood(f) = Message::decode(&msg).unwrap() else {
                    panic!()
                };
                out.push((ifindex, f.tagged[0].objective.loop_count));
            }
        }
        out
    };
    e.handle_datagram(now, flood(1, 1, 1));
    assert_eq!(relayed(&mut e), vec![(2, 3)]);
    e.handle_datagram(now, flood(1, 1, 1)); // a loop: suppressed
    assert_eq!(relayed(&mut e), vec![]);
    e.handle_datagram(now, flood(2, 1, 2));
    assert_eq!(relayed(&mut e), vec![(2, 3)]);
    // Interface 1's burst is spent; the third is not relayed...
    e.handle_datagram(now, flood(3, 1, 3));
    assert_eq!(relayed(&mut e), vec![]);
    assert_eq!(e.stats().flood_relay_rate_limited, 1);
    assert_eq!(e.stats().relay_rate_limited, 0);
    // ...but local ASAs still get it: the limit is on relaying only.
    let asa = match call(&mut e, now, 1, Command::RegisterAsa { name: "r".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    let Ok(Reply::Floods(entries)) = call(
        &mut e,
        now,
        2,
        Command::GetFlood {
            asa,
            name: "EX.news".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!(entries.len(), 1, "one source, one tag: one entry");
    assert_eq!(entries[0].objective.value, Some(Value::from(3u64)));
    // Interface 2 has its own bucket.
    e.handle_datagram(now, flood(4, 2, 4));
    assert_eq!(relayed(&mut e), vec![(1, 3)]);
    // Refilled after a second.
    e.handle_datagram(now + Duration::from_secs(1), flood(5, 1, 5));
    assert_eq!(relayed(&mut e), vec![(2, 3)]);
    assert_eq!(e.stats().floods_relayed, 4);
    assert_eq!(e.stats().duplicates, 1);
}

#[test]
fn response_rate_limit_per_interface() {
    let config = Config {
        seed: Some(6),
        response_rate: RateLimit {
            rate: 2.0,
            burst: 2.0,
        },
        relay: Some(false),
        ..Config::default()
    };
    let mut e = two_link_engine(config);
    let now = Instant::now();
    let asa = match call(&mut e, now, 1, Command::RegisterAsa { name: "r".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    call(
        &mut e,
        now,
        2,
        Command::RegisterObjective {
            asa,
            objective: Objective::new("EX.served", SYNCH),
            options: RegisterOptions {
                discoverable: true,
                ..RegisterOptions::default()
            },
        },
    )
    .unwrap();
    let disc = |sid: u32, ifindex: u32| Datagram {
        ifindex,
        src: SocketAddrV6::new(ll(9), 5000, 0, ifindex),
        msg: Message::Discovery(crate::wire::Discovery {
            session_id: SessionId(sid),
            initiator: std::net::IpAddr::V6(ll(9)),
            objective: Objective::new("EX.served", SYNCH),
            extensions: Vec::new(),
        })
        .encode(),
    };
    // Responses sent, counted by the connections they open.
    let responses = |e: &mut Engine| {
        let mut n = 0;
        while let Some(t) = e.poll_transmit() {
            if matches!(t, Transmit::Connect { .. }) {
                n += 1;
            }
        }
        n
    };
    for sid in 1..=5 {
        e.handle_datagram(now, disc(sid, 1));
    }
    assert_eq!(responses(&mut e), 2, "burst of 2 on interface 1");
    assert_eq!(e.stats().response_rate_limited, 3);
    e.handle_datagram(now, disc(6, 2));
    assert_eq!(responses(&mut e), 1, "interface 2 has its own bucket");
    // 2 per second: half a second buys one more.
    e.handle_datagram(now + Duration::from_millis(500), disc(7, 1));
    e.handle_datagram(now + Duration::from_millis(500), disc(8, 1));
    assert_eq!(responses(&mut e), 1);
    assert_eq!(e.stats().responses_sent, 4);
    assert_eq!(e.stats().response_rate_limited, 4);
}

#[test]
fn messages_are_counted_by_type_whatever_their_shape() {
    let mut c = crate::proto::MessageCounts::default();
    for m in [
        &[0x81, 0x00][..],         // [M_NOOP]
        &[0x83, 0x04, 0x01, 0xf6], // M_REQ_SYN
        &[0x82, 0x18, 0x63, 0x01], // M_INVALID (99)
        &[0x83, 0x07, 0x01, 0x19], // M_WAIT
        &[0x82, 0x0c, 0x00],       // type 12: other
        &[0xa1, 0x00, 0x00],       // not an array: other
        &[],                       // nothing: other
        &[0x98, 0x18, 0x09],       // a long array head: M_FLOOD
    ] {
        c.count(m);
    }
    assert_eq!(c.get("M_NOOP"), 1);
    assert_eq!(c.get("M_REQ_SYN"), 1);
    assert_eq!(c.get("M_INVALID"), 1);
    assert_eq!(c.get("M_WAIT"), 1);
    assert_eq!(c.get("M_FLOOD"), 1);
    assert_eq!(c.get("other"), 3);
    assert_eq!(c.total(), 8);
}

/// A relay forwards a flood or discovery byte for byte but for the first
/// objective's loop count, and refuses what the CDDL does not allow
/// instead of rewriting it (issue 11 §6).
#[test]
fn relays_forward_what_they_got_or_nothing() {
    let mut e = two_link_engine(Config {
        seed: Some(8),
        ..Config::default()
    });
    let now = Instant::now();
    // Returns what was relayed onto interface 2.
    let relay = |e: &mut Engine, hex_msg: &str| -> (Vec<u8>, Vec<Vec<u8>>) {
        let raw = hex::decode(hex_msg).unwrap();
        e.handle_datagram(
            now,
            Datagram {
                ifindex: 1,
                src: SocketAddrV6::new(ll(9), 7017, 0, 1),
                msg: bytes::Bytes::from(raw.clone()),
            },
        );
        let mut out = Vec::new();
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Multicast { ifindex: 2, msg } = t {
                out.push(msg.to_vec());
            }
        }
        (raw, out)
    };
    // Changes the byte(s) at `at` to `with`.
    let patched = |raw: &[u8], at: usize, len: usize, with: &[u8]| {
        let mut w = raw.to_vec();
        w.splice(at..at + len, with.iter().copied());
        w
    };
    // [9, 101, initiator, 60000, [["EX.rp1", 5, 3, "a"], []],
    //  [["EX.rp1b", 5, 3, "b"], []], 7]: the trailing option stays last.
    let (raw, out) = relay(
        &mut e,
        "8709186550fd00000000000000000000000000000919ea6082846645582e727031050361618082846745582e72703162050361628007",
    );
    assert_eq!(
        out,
        vec![patched(&raw, 34, 1, &[0x02])],
        "only the first loop count"
    );
    // [9, 102, initiator, 60000 as a 4-byte head, [["EX.rp2", 5, 24 as 0x18 0x18, "a"], []]]:
    // encodings are kept as they came; the new loop count is written shortest.
    let (raw, out) = relay(
        &mut e,
        "8509186650fd0000000000000000000000000000091a0000ea6082846645582e727032051818616180",
    );
    assert_eq!(out, vec![patched(&raw, 36, 2, &[0x17])]);
    // [1, 103, initiator, ["EX3", 5, 6, 0], 7]: an unknown trailing option.
    let (raw, out) = relay(
        &mut e,
        "8501186750fd000000000000000000000000000009846345583305060007",
    );
    assert_eq!(out, vec![patched(&raw, 27, 1, &[0x05])]);

    // What the CDDL does not allow is neither relayed nor delivered:
    // [9, 104, initiator, 60000, [["EX.rp3", 5, 3, "a"], []], 7, [["EX.rp3b", 5, 3, "b"], []]]
    // [9, 105, initiator, 60000, [65536, ["EX.rp4", 5, 3, "a"], []], [["EX.rp4b", 5, 3, "b"], []]]
    let before = e.stats().malformed;
    for bad in [
        "8709186850fd00000000000000000000000000000919ea6082846645582e72703305036161800782846745582e727033620503616280",
        "8609186950fd00000000000000000000000000000919ea60831a00010000846645582e727034050361618082846745582e727034620503616280",
    ] {
        let (_, out) = relay(&mut e, bad);
        assert!(out.is_empty(), "{bad}");
    }
    assert_eq!(e.stats().malformed, before + 2);
    assert_eq!(e.stats().floods_relayed, 2);
    assert_eq!(e.stats().discoveries_relayed, 1);
}

/// The discovery a negotiation or synchronization starts with carries
/// null, never the value meant for the peer: every node on the link reads
/// a multicast, and relays carry it further (issue 11 §7).
#[test]
fn discovery_for_a_session_does_not_multicast_its_value() {
    let mut e = two_link_engine(Config {
        seed: Some(9),
        ..Config::default()
    });
    let now = Instant::now();
    let asa = match call(&mut e, now, 1, Command::RegisterAsa { name: "a".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    let secret = Value::from("for the peer alone");
    e.handle_command(
        now,
        CommandId(2),
        Command::RequestNegotiate {
            asa,
            objective: Objective::new("EX.secret", ObjectiveFlags::from_bits(3))
                .with_value(secret.clone()),
            peer: None,
            timeout: Duration::from_secs(1),
        },
    );
    e.handle_command(
        now,
        CommandId(3),
        Command::Synchronize {
            asa,
            objective: Objective::new("EX.secret2", SYNCH).with_value(secret.clone()),
            peer: None,
            timeout: Duration::from_secs(1),
        },
    );
    let mut seen = 0;
    while let Some(t) = e.poll_transmit() {
        let Transmit::Multicast { msg, .. } = t else {
            continue;
        };
        let Message::Discovery(d) = Message::decode(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(
            d.objective.value,
            Some(Value::null()),
            "{}",
            d.objective.name
        );
        seen += 1;
    }
    assert_eq!(seen, 4, "two discoveries on two interfaces");
}

/// A discovery nobody answers is sent again under a new session id at a
/// quarter and at three quarters of its timeout; an answer to a repeat
/// completes it (issue 11 §4).
#[test]
fn an_unanswered_discovery_is_repeated_within_its_timeout() {
    let mut e = two_link_engine(Config {
        seed: Some(10),
        relay: Some(false),
        ..Config::default()
    });
    let t0 = Instant::now();
    let asa = match call(&mut e, t0, 1, Command::RegisterAsa { name: "a".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    e.handle_command(
        t0,
        CommandId(2),
        Command::Discover {
            asa,
            objective: Objective::new("EX.far", SYNCH), // loop count 6: 600 ms
            options: DiscoverOptions::first(Duration::from_millis(600)),
            stream: false,
        },
    );
    let sids = |e: &mut Engine| {
        let mut v = Vec::new();
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Multicast { msg, .. } = t {
                let Message::Discovery(d) = Message::decode(&msg).unwrap() else {
                    panic!()
                };
                v.push(d.session_id);
            }
        }
        v.dedup();
        v
    };
    let first = sids(&mut e);
    assert_eq!(first.len(), 1);
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_millis(150)));
    e.handle_timeout(t0 + Duration::from_millis(150));
    let second = sids(&mut e);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "a new session id");
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_millis(450)));
    e.handle_timeout(t0 + Duration::from_millis(450));
    let third = sids(&mut e);
    assert_eq!(third.len(), 1);
    assert_eq!(e.stats().discoveries_repeated, 2);
    // The answer to the second copy arrives: the discovery is done.
    let ch = e.allocate_channel();
    let peer = SocketAddr::V6(SocketAddrV6::new(ll(5), 7017, 0, 1));
    e.handle_inbound_channel(t0 + Duration::from_millis(460), ch, peer);
    let resp = Message::Response(crate::wire::Response {
        session_id: second[0],
        initiator: std::net::IpAddr::V6(ula(1)),
        ttl_ms: 60_000,
        target: crate::wire::ResponseTarget::Locators(vec![Locator::tcp6(ula(5), 7017)]),
        objective: None,
        extensions: Vec::new(),
    });
    e.handle_channel_message(t0 + Duration::from_millis(460), ch, resp.encode());
    let mut got = None;
    while let Some(ev) = e.poll_event() {
        if let Event::Reply {
            cmd: CommandId(2),
            result,
        } = ev
        {
            got = Some(result);
        }
    }
    let Some(Ok(Reply::Locators(l))) = got else {
        panic!("{got:?}")
    };
    assert_eq!(l[0].locator, Locator::tcp6(ula(5), 7017));
    // No repeat is left, and our own copies looped back are duplicates.
    e.handle_timeout(t0 + Duration::from_secs(1));
    assert!(sids(&mut e).is_empty());
    let dup = Datagram {
        ifindex: 1,
        src: SocketAddrV6::new(ll(1), 7017, 0, 1),
        msg: Message::Discovery(crate::wire::Discovery {
            session_id: third[0],
            initiator: std::net::IpAddr::V6(ula(1)),
            objective: Objective::new("EX.far", SYNCH),
            extensions: Vec::new(),
        })
        .encode(),
    };
    let before = e.stats().duplicates;
    e.handle_datagram(t0 + Duration::from_secs(1), dup);
    assert_eq!(e.stats().duplicates, before + 1);
}

/// A storm from one neighbour gets that neighbour's share of the relay and
/// of the responses; another neighbour on the same link is still relayed
/// and answered (issue 11 §4).
#[test]
fn one_storming_neighbour_gets_its_share_only() {
    let mut e = two_link_engine(Config {
        seed: Some(11),
        ..Config::default()
    });
    let now = Instant::now();
    let asa = match call(&mut e, now, 1, Command::RegisterAsa { name: "r".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    call(
        &mut e,
        now,
        2,
        Command::RegisterObjective {
            asa,
            objective: Objective::new("EX.here", SYNCH),
            options: RegisterOptions {
                discoverable: true,
                ..RegisterOptions::default()
            },
        },
    )
    .unwrap();
    let disc = |sid: u32, from: usize, name: &str| Datagram {
        ifindex: 1,
        src: SocketAddrV6::new(ll(from), 5000, 0, 1),
        msg: Message::Discovery(crate::wire::Discovery {
            session_id: SessionId(sid),
            initiator: std::net::IpAddr::V6(ula(from)),
            objective: Objective::new(name, SYNCH),
            extensions: Vec::new(),
        })
        .encode(),
    };
    // (relayed, connections opened, and to whom)
    let out = |e: &mut Engine| {
        let (mut relayed, mut to) = (0, Vec::new());
        while let Some(t) = e.poll_transmit() {
            match t {
                Transmit::Multicast { .. } => relayed += 1,
                Transmit::Connect { peer, .. } => to.push(peer.ip()),
                _ => {}
            }
        }
        (relayed, to)
    };
    let (mut storm_relayed, mut storm_answered) = (0, 0);
    let (mut other_relayed, mut other_answered) = (0, 0);
    // 10 s: the storm sends 2,000 a second of each; the other neighbour
    // one of each a second.
    for ms in 0..10_000u32 {
        let t = now + Duration::from_millis(u64::from(ms));
        for k in 0..2 {
            let sid = 1_000_000 + ms * 4 + k * 2;
            e.handle_datagram(t, disc(sid, 9, "EX.far"));
            storm_relayed += out(&mut e).0;
            e.handle_datagram(t, disc(sid + 1, 9, "EX.here"));
            storm_answered += out(&mut e).1.len();
        }
        if ms % 1000 == 0 {
            e.handle_datagram(t, disc(ms * 4 + 1, 7, "EX.far"));
            other_relayed += out(&mut e).0;
            e.handle_datagram(t, disc(ms * 4 + 3, 7, "EX.here"));
            other_answered += out(&mut e).1.len();
        }
        // Relayed discoveries time out; keep the table small.
        e.handle_timeout(t);
        out(&mut e);
    }
    assert_eq!(
        other_relayed, 10,
        "every discovery of the other neighbour relayed"
    );
    assert_eq!(other_answered, 10, "and answered");
    // The storm: its own rate (25/s relayed, 100/s answered) plus a burst.
    assert!(storm_relayed <= 25 * 10 + 50, "{storm_relayed}");
    assert!(storm_answered <= 100 * 10 + 200, "{storm_answered}");
    assert!(e.stats().relay_source_limited > 10_000);
    assert!(e.stats().response_source_limited > 10_000);
}

/// What peers and ASAs hand the engine is bounded: answers to a discovery
/// (at `discovery_cache_locators`, the rest counted), a peer's M_WAIT (cut
/// to `max_wait`), an ASA's timeout (`Duration::MAX` neither panics nor
/// holds anything for ever) and an ASA's objective (over the message size:
/// refused, counted). Issue 11 §1.
#[test]
fn peer_and_asa_input_is_bounded() {
    let mut e = two_link_engine(Config {
        seed: Some(12),
        relay: Some(false),
        ..Config::default()
    });
    let t0 = Instant::now();
    let asa = match call(&mut e, t0, 1, Command::RegisterAsa { name: "a".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    while e.poll_transmit().is_some() {}
    // A collect-all discovery answered by 3 responses of 80 locators each.
    e.handle_command(
        t0,
        CommandId(2),
        Command::Discover {
            asa,
            objective: Objective::new("EX.many", SYNCH),
            options: DiscoverOptions::all(Duration::from_millis(600)),
            stream: false,
        },
    );
    let mut sid = None;
    while let Some(t) = e.poll_transmit() {
        if let Transmit::Multicast { msg, .. } = t {
            if let Ok(Message::Discovery(d)) = Message::decode(&msg) {
                sid = Some(d.session_id);
            }
        }
    }
    for r in 0..3u16 {
        let ch = e.allocate_channel();
        let peer = SocketAddr::V6(SocketAddrV6::new(ll(5), 7017, 0, 1));
        e.handle_inbound_channel(t0, ch, peer);
        let locs = (0..80u16)
            .map(|i| Locator::tcp6(Ipv6Addr::new(0xfd00, 7, r, 0, 0, 0, 0, i + 1), 7017))
            .collect();
        let resp = Message::Response(crate::wire::Response {
            session_id: sid.unwrap(),
            initiator: std::net::IpAddr::V6(ula(1)),
            ttl_ms: 60_000,
            target: crate::wire::ResponseTarget::Locators(locs),
            objective: None,
            extensions: Vec::new(),
        });
        e.handle_channel_message(t0, ch, resp.encode());
    }
    let cap = Config::default().discovery_cache_locators;
    assert_eq!(e.stats().discovery_answers_dropped, (240 - cap) as u64);
    e.handle_timeout(t0 + Duration::from_millis(600));
    let mut found = None;
    while let Some(ev) = e.poll_event() {
        if let Event::Reply {
            cmd: CommandId(2),
            result,
        } = ev
        {
            found = Some(result);
        }
    }
    match found {
        Some(Ok(Reply::Locators(l))) => assert_eq!(l.len(), cap),
        other => panic!("{other:?}"),
    }

    // A negotiation whose peer asks to wait 49 days waits max_wait.
    let peer = AsaLocator::new(Locator::tcp6(ula(5), 7017));
    let neg = Objective::new("EX.neg", ObjectiveFlags::from_bits(3)).with_value(Value::from(1u32));
    e.handle_command(
        t0,
        CommandId(3),
        Command::RequestNegotiate {
            asa,
            objective: neg.clone(),
            peer: Some(peer.clone()),
            timeout: Duration::MAX,
        },
    );
    let mut ch = None;
    while let Some(t) = e.poll_transmit() {
        if let Transmit::Connect { channel, .. } = t {
            ch = Some(channel);
        }
    }
    let ch = ch.expect("a connection to the peer");
    // The session id is the engine's: read it from its session table.
    let sent_sid = e
        .channels
        .get(&ch)
        .and_then(|c| match &c.state {
            ChanState::Neg(n) => Some(n.sid),
            _ => None,
        })
        .expect("a negotiation on the channel");
    let wait = Message::Wait(crate::wire::Wait {
        session_id: sent_sid,
        waiting_time_ms: u32::MAX,
        extensions: Vec::new(),
    });
    e.handle_channel_message(t0, ch, wait.encode());
    assert_eq!(e.stats().waits_capped, 1);
    let max_wait = Config::default().max_wait;
    assert!(
        e.poll_timeout().is_some_and(|t| t <= t0 + max_wait),
        "{:?}",
        e.poll_timeout()
    );
    // A synchronization and a discovery with Duration::MAX: no panic, and
    // nothing waits longer than max_asa_timeout.
    for (id, c) in [
        (
            5,
            Command::Synchronize {
                asa,
                objective: Objective::new("EX.s", SYNCH),
                peer: None,
                timeout: Duration::MAX,
            },
        ),
        (
            6,
            Command::Discover {
                asa,
                objective: Objective::new("EX.d", SYNCH),
                options: DiscoverOptions::first(Duration::MAX),
                stream: false,
            },
        ),
    ] {
        e.handle_command(t0, CommandId(id), c);
    }
    e.handle_timeout(t0 + Config::default().max_asa_timeout);
    let mut done = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let Event::Reply { cmd, .. } = ev {
            done.push(cmd.0);
        }
    }
    assert!(done.contains(&5) && done.contains(&6), "{done:?}");

    // An objective too big for any message is refused at registration.
    let big = Objective::new("EX.big", SYNCH)
        .with_value(Value::from_serialize(&vec![7u8; 3000]).unwrap());
    let r = call(
        &mut e,
        t0,
        7,
        Command::RegisterObjective {
            asa,
            objective: big,
            options: RegisterOptions::default(),
        },
    );
    assert!(r.is_err(), "{r:?}");
    assert_eq!(e.stats().asa_oversize, 1);
}

#[test]
fn watched_floods_arrive_as_events_until_the_watch_stops() {
    let mut e = two_link_engine(Config {
        seed: Some(6),
        ..Config::default()
    });
    let now = Instant::now();
    let flood = |sid: u32, name: &str| Datagram {
        ifindex: 1,
        src: SocketAddrV6::new(ll(9), 7017, 0, 1),
        msg: Message::Flood(crate::wire::Flood {
            session_id: SessionId(sid),
            initiator: std::net::IpAddr::V6(ula(9)),
            ttl_ms: 60_000,
            tagged: vec![crate::wire::TaggedObjective {
                objective: Objective::new(name, SYNCH).with_value(Value::from(u64::from(sid))),
                locator: None,
            }],
            extensions: Vec::new(),
        })
        .encode(),
    };
    let floods = |e: &mut Engine| {
        let mut out = Vec::new();
        while let Some(ev) = e.poll_event() {
            if let Event::Flood { asa, entry } = ev {
                out.push((asa, entry.objective.name, entry.objective.value));
            }
        }
        out
    };
    let asa = match call(&mut e, now, 1, Command::RegisterAsa { name: "w".into() }) {
        Ok(Reply::Asa(h)) => h,
        other => panic!("{other:?}"),
    };
    let watch = |name: &str| Command::WatchFlood {
        asa,
        name: name.into(),
    };
    assert!(matches!(
        call(&mut e, now, 2, watch("EX.news")),
        Ok(Reply::Done)
    ));
    // Twice is once.
    assert!(matches!(
        call(&mut e, now, 3, watch("EX.news")),
        Ok(Reply::Done)
    ));
    e.handle_datagram(now, flood(1, "EX.news"));
    e.handle_datagram(now, flood(1, "EX.news")); // a duplicate: not cached again
    e.handle_datagram(now, flood(2, "EX.other"));
    assert_eq!(
        floods(&mut e),
        vec![(asa, "EX.news".to_string(), Some(Value::from(1u64)))]
    );
    let stop = Command::StopWatchFlood {
        asa,
        name: "EX.news".into(),
    };
    assert!(matches!(call(&mut e, now, 4, stop), Ok(Reply::Done)));
    e.handle_datagram(now, flood(3, "EX.news"));
    assert_eq!(floods(&mut e), vec![]);
    // An ASA that goes takes its watches with it.
    assert!(matches!(
        call(&mut e, now, 5, watch("EX.news")),
        Ok(Reply::Done)
    ));
    assert!(matches!(
        call(&mut e, now, 6, Command::DeregisterAsa { asa }),
        Ok(Reply::Done)
    ));
    e.handle_datagram(now, flood(4, "EX.news"));
    assert_eq!(floods(&mut e), vec![]);
    assert!(call(&mut e, now, 7, watch("EX.news")).is_err(), "noASA");
}

#[test]
fn an_own_flood_from_here_is_cached_as_each_link_has_it() {
    let mut e = two_link_engine(Config::default());
    let now = Instant::now();
    let Ok(Reply::Asa(asa)) = call(&mut e, now, 1, Command::RegisterAsa { name: "p".into() })
    else {
        panic!()
    };
    let obj = Objective::new("AN_proxy", SYNCH).with_value(Value::from("x"));
    let reg = Command::RegisterObjective {
        asa,
        objective: obj.clone(),
        options: RegisterOptions::default(),
    };
    assert!(matches!(call(&mut e, now, 2, reg), Ok(Reply::Done)));
    let flood = Command::Flood {
        asa,
        ttl_ms: 1000,
        tagged: vec![crate::wire::TaggedObjective {
            objective: obj,
            locator: Some(Locator::tcp6(Ipv6Addr::UNSPECIFIED, 443)),
        }],
    };
    assert!(matches!(call(&mut e, now, 3, flood), Ok(Reply::Done)));
    let get = Command::GetFlood {
        asa,
        name: "AN_proxy".into(),
    };
    let Ok(Reply::Floods(mut entries)) = call(&mut e, now, 4, get) else {
        panic!()
    };
    entries.sort_by_key(|f| f.ifindex);
    let got: Vec<_> = entries
        .iter()
        .map(|f| (f.ifindex, f.locator.clone(), f.objective.loop_count))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(Locator::tcp6(ll(1), 443)), 1),
            (2, Some(Locator::tcp6(ll(2), 443)), 1)
        ]
    );
}
