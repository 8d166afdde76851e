//! Discovery then synchronization between two engines, channels that
//! misbehave, registration rules and message counts.

use super::*;

#[test]
fn discovery_and_synchronization_on_virtual_time() {
    let mut net = Net::new(2);
    let b = asa(&mut net, 1, "server");
    let served = Objective::new("EX.sync", SYNCH).with_value(Value::from("v"));
    let r = net.call(1, |e, _| {
        e.register_objective(b, served.clone(), RegisterOptions::default())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(net.call(1, |e, _| e.listen_synchronize(b, served)), Ok(()));

    let a = asa(&mut net, 0, "client");
    let probe = Objective::new("EX.sync", SYNCH).with_value(Value::null());
    // Collect-all discovery: nothing comes back before the timeout...
    let id = net.start(0, |e, now, cmd| {
        e.discover(
            now,
            cmd,
            a,
            probe.clone(),
            DiscoverOptions::default(),
            false,
        )
    });
    assert!(net.ended(0, id).is_none(), "waits for the whole timeout");
    // ...which is 100 ms x loop count 6 (the repeat planned at 150 ms does
    // nothing: B answered).
    let t0 = net.now;
    let locs = loop {
        net.advance(Duration::from_secs(5));
        if let Some(r) = net.ended(0, id) {
            let Event::Discovered {
                result: Ok(locs), ..
            } = r
            else {
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
    let id = net.start(0, |e, now, cmd| {
        e.synchronize(now, cmd, a, probe, None, Duration::from_secs(1))
    });
    let Some(Event::Synchronized { result: Ok(o), .. }) = net.ended(0, id) else {
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
    let peer = SocketAddr::V6(SocketAddrV6::new(ll(9), 1234, 0, 1));
    let now = net.now;
    let ch = e.handle_inbound_channel(now, peer, None).unwrap();
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
    let now = net.now;
    let peer = SocketAddr::V6(SocketAddrV6::new(ll(9), 1, 0, 1));
    let ch = e.handle_inbound_channel(now, peer, None).unwrap();
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
    let e = &mut net.engines[0];
    let a = e.register_asa("a".into()).unwrap();
    let code = |r: Result<(), ApiError>| r.err().map(|e| e.code);
    assert_eq!(
        e.register_asa("a".into()).unwrap_err().code,
        ErrorCode::DupAsa
    );
    let both = Objective::new("X", ObjectiveFlags::from_bits(7));
    let r = e.register_objective(a, both, RegisterOptions::default());
    assert_eq!(code(r), Some(ErrorCode::NotBoth));
    let dry = Objective::new("X", ObjectiveFlags::from_bits(8));
    let r = e.register_objective(a, dry, RegisterOptions::default());
    assert_eq!(code(r), Some(ErrorCode::NotDry));
    let ok = Objective::new("X", SYNCH);
    for expect in [None, Some(ErrorCode::ObjReg)] {
        let r = e.register_objective(a, ok.clone(), RegisterOptions::default());
        assert_eq!(code(r), expect);
    }
    assert_eq!(e.deregister_asa(a), Ok(()));
    let now = net.now;
    assert_eq!(
        net.engines[0].get_flood(now, a, "X").unwrap_err().code,
        ErrorCode::NoAsa
    );
}

#[test]
fn messages_are_counted_by_type_whatever_their_shape() {
    let mut c = MessageCounts::default();
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
    assert_eq!(c.get(MessageType::Noop), 1);
    assert_eq!(c.get(MessageType::ReqSyn), 1);
    assert_eq!(c.get(MessageType::Invalid), 1);
    assert_eq!(c.get(MessageType::Wait), 1);
    assert_eq!(c.get(MessageType::Flood), 1);
    assert_eq!(c.get(MessageType::Unknown(12)), 3, "every unknown type");
    assert_eq!(c.total(), 8);
    // The slots follow MessageType::ALL, and the names come from it.
    let names: Vec<_> = MessageCounts::names().collect();
    assert_eq!(names.len(), MessageType::ALL.len() + 1);
    for (i, t) in MessageType::ALL.iter().enumerate() {
        assert_eq!(names[i], t.to_string());
        let ty = u8::from(*t);
        let msg = if ty < 24 {
            vec![0x81, ty]
        } else {
            vec![0x81, 0x18, ty]
        };
        let mut one = MessageCounts::default();
        one.count(&msg);
        assert_eq!(one.iter().nth(i).map(|(_, n)| n), Some(1), "{t}");
    }
}

/// Every waiting call ends: a negotiation still waiting for its peer when
/// its ASA is deregistered ends then, with an error.
#[test]
fn deregistering_an_asa_ends_its_waiting_negotiation() {
    let mut net = Net::new(2);
    let b = asa(&mut net, 1, "listener");
    let neg = Objective::new("EX.neg", ObjectiveFlags::from_bits(3)).with_value(Value::from(1u32));
    let r = net.call(1, |e, _| {
        e.register_objective(b, neg.clone(), RegisterOptions::default())
    });
    assert_eq!(r, Ok(()));
    assert!(net.call(1, |e, _| e.listen_negotiate(b, "EX.neg")).is_ok());
    let a = asa(&mut net, 0, "requester");
    let peer = AsaLocator::new(Locator::tcp6(ula(2), 7017));
    let id = net.start(0, |e, now, cmd| {
        e.request_negotiate(now, cmd, a, neg, Some(peer), Duration::from_secs(5))
    });
    assert!(net.ended(0, id).is_none(), "the listener has not answered");
    assert_eq!(net.call(0, |e, _| e.deregister_asa(a)), Ok(()));
    match net.ended(0, id) {
        Some(Event::Negotiated { result: Err(e), .. }) => assert_eq!(e.code, ErrorCode::NoSession),
        other => panic!("{other:?}"),
    }
    assert_eq!(net.engines[0].open_channels(), 0);
}
