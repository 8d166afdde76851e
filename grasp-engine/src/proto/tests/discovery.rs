//! Our own discoveries: what they multicast, their repeats, and the
//! bounds on what peers and ASAs can make the engine hold.

use super::*;

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
    let asa = e.register_asa("a".into()).unwrap();
    let secret = Value::from("for the peer alone");
    let neg = Objective::new("EX.secret", ObjectiveFlags::from_bits(3)).with_value(secret.clone());
    let second = Duration::from_secs(1);
    e.request_negotiate(now, CommandId(2), asa, neg, None, second)
        .unwrap();
    let synch = Objective::new("EX.secret2", SYNCH).with_value(secret.clone());
    e.synchronize(now, CommandId(3), asa, synch, None, second)
        .unwrap();
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
    let asa = e.register_asa("a".into()).unwrap();
    let far = Objective::new("EX.far", SYNCH); // loop count 6: 600 ms
    let opts = DiscoverOptions::first(Duration::from_millis(600));
    e.discover(t0, CommandId(2), asa, far, opts, false).unwrap();
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
    let peer = SocketAddr::V6(SocketAddrV6::new(ll(5), 7017, 0, 1));
    let ch = e
        .handle_inbound_channel(t0 + Duration::from_millis(460), peer, None)
        .unwrap();
    let resp = Message::Response(crate::wire::Response {
        session_id: second[0],
        initiator: std::net::IpAddr::V6(ula(1)),
        ttl_ms: 60_000,
        target: crate::wire::ResponseTarget::Locators(vec![Locator::tcp6(ula(5), 7017)]),
        objective: None,
        extensions: Vec::new(),
    });
    e.handle_channel_message(t0 + Duration::from_millis(460), ch, resp.encode());
    let got = ended(&mut e, CommandId(2));
    let Some(Event::Discovered { result: Ok(l), .. }) = got else {
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
    let asa = e.register_asa("a".into()).unwrap();
    while e.poll_transmit().is_some() {}
    // A collect-all discovery answered by 3 responses of 80 locators each.
    let many = Objective::new("EX.many", SYNCH);
    let opts = DiscoverOptions::all(Duration::from_millis(600));
    e.discover(t0, CommandId(2), asa, many, opts, false)
        .unwrap();
    let mut sid = None;
    while let Some(t) = e.poll_transmit() {
        if let Transmit::Multicast { msg, .. } = t {
            if let Ok(Message::Discovery(d)) = Message::decode(&msg) {
                sid = Some(d.session_id);
            }
        }
    }
    for r in 0..3u16 {
        let peer = SocketAddr::V6(SocketAddrV6::new(ll(5), 7017, 0, 1));
        let ch = e.handle_inbound_channel(t0, peer, None).unwrap();
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
    match ended(&mut e, CommandId(2)) {
        Some(Event::Discovered { result: Ok(l), .. }) => assert_eq!(l.len(), cap),
        other => panic!("{other:?}"),
    }

    // A negotiation whose peer asks to wait 49 days waits max_wait.
    let peer = AsaLocator::new(Locator::tcp6(ula(5), 7017));
    let neg = Objective::new("EX.neg", ObjectiveFlags::from_bits(3)).with_value(Value::from(1u32));
    e.request_negotiate(
        t0,
        CommandId(3),
        asa,
        neg.clone(),
        Some(peer.clone()),
        Duration::MAX,
    )
    .unwrap();
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
    let s = Objective::new("EX.s", SYNCH);
    e.synchronize(t0, CommandId(5), asa, s, None, Duration::MAX)
        .unwrap();
    let d = Objective::new("EX.d", SYNCH);
    let opts = DiscoverOptions::first(Duration::MAX);
    e.discover(t0, CommandId(6), asa, d, opts, false).unwrap();
    e.handle_timeout(t0 + Config::default().max_asa_timeout);
    let mut done = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let Some(cmd) = ev.ended_call() {
            done.push(cmd.0);
        }
    }
    assert!(done.contains(&5) && done.contains(&6), "{done:?}");

    // An objective too big for any message is refused at registration.
    let big = Objective::new("EX.big", SYNCH)
        .with_value(Value::from_serialize(&vec![7u8; 3000]).unwrap());
    let r = e.register_objective(asa, big, RegisterOptions::default());
    assert!(r.is_err(), "{r:?}");
    assert_eq!(e.stats().asa_oversize, 1);
}
