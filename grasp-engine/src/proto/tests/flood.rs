//! Flood watches and our own floods in the cache.

use super::*;

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
            if let Event::Flood {
                subscription,
                entry,
            } = ev
            {
                out.push((subscription, entry.objective.name, entry.objective.value));
            }
        }
        out
    };
    let asa = e.register_asa("w".into()).unwrap();
    let first = e.watch_flood(asa, "EX.news").unwrap();
    // Twice is once: the second watch replaces the first, which ends.
    let watch = e.watch_flood(asa, "EX.news").unwrap();
    assert_ne!(watch, first);
    assert!(matches!(
        e.poll_event(),
        Some(Event::Unsubscribed { subscription }) if subscription == first
    ));
    e.handle_datagram(now, flood(1, "EX.news"));
    e.handle_datagram(now, flood(1, "EX.news")); // a duplicate: not cached again
    e.handle_datagram(now, flood(2, "EX.other"));
    assert_eq!(
        floods(&mut e),
        vec![(watch, "EX.news".to_string(), Some(Value::from(1u64)))]
    );
    assert_eq!(e.stop_watch_flood(asa, "EX.news"), Ok(()));
    assert!(matches!(
        e.poll_event(),
        Some(Event::Unsubscribed { subscription }) if subscription == watch
    ));
    e.handle_datagram(now, flood(3, "EX.news"));
    assert_eq!(floods(&mut e), vec![]);
    // An ASA that goes takes its watches with it, and says so.
    let watch = e.watch_flood(asa, "EX.news").unwrap();
    assert_eq!(e.deregister_asa(asa), Ok(()));
    assert!(matches!(
        e.poll_event(),
        Some(Event::Unsubscribed { subscription }) if subscription == watch
    ));
    e.handle_datagram(now, flood(4, "EX.news"));
    assert_eq!(floods(&mut e), vec![]);
    assert!(e.watch_flood(asa, "EX.news").is_err(), "noASA");
}

#[test]
fn an_own_flood_from_here_is_cached_as_each_link_has_it() {
    let mut e = two_link_engine(Config::default());
    let now = Instant::now();
    let asa = e.register_asa("p".into()).unwrap();
    let obj = Objective::new("AN_proxy", SYNCH).with_value(Value::from("x"));
    let r = e.register_objective(asa, obj.clone(), RegisterOptions::default());
    assert_eq!(r, Ok(()));
    let tagged = vec![crate::wire::TaggedObjective {
        objective: obj,
        locator: Some(Locator::tcp6(Ipv6Addr::UNSPECIFIED, 443)),
    }];
    assert_eq!(e.flood(now, asa, 1000, tagged), Ok(()));
    let mut entries = e.get_flood(now, asa, "AN_proxy").unwrap();
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
