//! Relaying discoveries and floods: byte for byte, rate limited per
//! interface and per source, duplicates suppressed.

use super::*;

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
    let asa = e.register_asa("r".into()).unwrap();
    let entries = e.get_flood(now, asa, "EX.news").unwrap();
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
    let asa = e.register_asa("r".into()).unwrap();
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    e.register_objective(asa, Objective::new("EX.served", SYNCH), opts)
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
    let asa = e.register_asa("r".into()).unwrap();
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    e.register_objective(asa, Objective::new("EX.here", SYNCH), opts)
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
