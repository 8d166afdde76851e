//! A DULL instance (RFC 8990 §2.5.2, §3.5.2.2): what it accepts, answers
//! and floods.

use super::*;

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
    let asa = e.register_asa("proxy".into()).unwrap();
    // Only allow-listed objectives can be registered.
    let other = Objective::new("EX.other", SYNCH);
    let err = e
        .register_objective(asa, other, RegisterOptions::default())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSecurity);
    let opts = RegisterOptions {
        discoverable: true,
        ..RegisterOptions::default()
    };
    let proxy = Objective::new("AN_Proxy", SYNCH);
    assert_eq!(e.register_objective(asa, proxy, opts), Ok(()));
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
    let proxy = Objective::new("AN_Proxy", SYNCH);
    let err = e
        .synchronize(now, CommandId(4), asa, proxy, None, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSecurity);
    // Flooding is allowed, with loop count 1 on every interface.
    while e.poll_transmit().is_some() {}
    let obj = Objective::new("AN_Proxy", SYNCH).with_value(Value::from("here"));
    let tagged = vec![crate::wire::TaggedObjective {
        objective: obj,
        locator: None,
    }];
    assert_eq!(e.flood(now, asa, 1000, tagged), Ok(()));
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
