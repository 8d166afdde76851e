//! The plain ACP between Linux network namespaces: real UDP multicast on
//! ff02::13 and real TCP over a veth pair (root only; loudly skipped
//! otherwise).
//!
//! Topology: nsA (ab0: fe80::1:1, fd00:1::1) --veth-- nsB (ba0: fe80::1:2,
//! fd00:1::2), the addresses of the graspy vectors.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use grasp_acp::plain::{self, Config};
use grasp_engine::transport::{AcpTransport, Channel, Datagram, Inbound, InboundStream};
use grasp_engine::wire::{
    Discovery, Locator, Message, Objective, ObjectiveFlags, Response, ResponseTarget, SessionId,
    SessionObjective, Value,
};
use grasp_tests::netns::{spawn_in, Lab, Netns};
use tokio::sync::oneshot;
use tokio::time::timeout;

const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, 1);
const B_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, 2);
const A_ULA: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
const B_ULA: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
const T: Duration = Duration::from_secs(5);

fn two_node_lab() -> (Lab, Netns, Netns) {
    let mut lab = Lab::new();
    let a = lab.netns().expect("netns A");
    let b = lab.netns().expect("netns B");
    lab.veth(&a, "ab0", A_LL, Some(A_ULA), &b, "ba0", B_LL, Some(B_ULA))
        .expect("veth pair");
    (lab, a, b)
}

fn objective() -> Objective {
    Objective::new("EX.sync", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
        .with_value(Value::null())
}

fn discovery(sid: u32) -> Bytes {
    Message::Discovery(Discovery {
        session_id: SessionId(sid),
        initiator: A_ULA.into(),
        objective: objective(),
        extensions: vec![],
    })
    .encode()
}

async fn next_datagram(inb: &mut InboundStream) -> Datagram {
    match timeout(T, inb.next())
        .await
        .expect("timed out waiting for a multicast")
    {
        Some(Inbound::Datagram(d)) => d,
        Some(Inbound::Channel(c)) => panic!("unexpected channel from {}", c.peer),
        Some(other) => panic!("unexpected {other:?}"),
        None => panic!("inbound stream ended"),
    }
}

async fn next_channel(inb: &mut InboundStream) -> Channel {
    loop {
        match timeout(T, inb.next())
            .await
            .expect("timed out waiting for a channel")
        {
            Some(Inbound::Channel(c)) => return c,
            Some(Inbound::Datagram(_)) => continue, // retransmitted discoveries
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("inbound stream ended"),
        }
    }
}

async fn recv(ch: &mut Channel) -> Message {
    let raw = timeout(T, ch.io.next())
        .await
        .expect("timed out waiting for a message")
        .expect("channel closed")
        .expect("channel error");
    Message::decode(&raw).expect("decodes")
}

fn locator_addr(l: &Locator) -> SocketAddr {
    match l {
        Locator::Ipv6 { addr, port, .. } => SocketAddr::V6(SocketAddrV6::new(*addr, *port, 0, 0)),
        other => panic!("unexpected locator {other}"),
    }
}

#[test]
fn multicast_and_unicast_round_trips_between_namespaces() {
    if Lab::skip_loudly("multicast_and_unicast_round_trips_between_namespaces") {
        return;
    }
    let (_lab, ns_a, ns_b) = two_node_lab();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();

    // B: answers the discovery at the multicast's source port, then serves
    // one synchronization with two extra messages back to back.
    let b = spawn_in(&ns_b, move || async move {
        let (acp, mut inb) = plain::bind(Config::default().interfaces(["ba0"]))
            .await
            .unwrap();
        assert_eq!(acp.node_locator(), Locator::tcp6(B_ULA, acp.port()));
        let ifindex = acp.interfaces()[0].index;
        ready_tx.send(()).unwrap();

        let d = next_datagram(&mut inb).await;
        assert_eq!(d.ifindex, ifindex, "arrival interface");
        assert_eq!(*d.src.ip(), A_LL, "link-local source");
        let Message::Discovery(disc) = Message::decode(&d.msg).unwrap() else {
            panic!("not a discovery")
        };
        // The response goes by TCP to the UDP source port, on this link.
        let to = SocketAddr::V6(SocketAddrV6::new(*d.src.ip(), d.src.port(), 0, d.ifindex));
        let mut ch = acp
            .connect(to)
            .await
            .expect("connect to the discovery source port");
        let resp = Message::Response(Response {
            session_id: disc.session_id,
            initiator: disc.initiator,
            ttl_ms: 600_000,
            target: ResponseTarget::Locators(vec![acp.node_locator()]),
            objective: None,
            extensions: vec![],
        });
        ch.io.send(resp.encode()).await.unwrap();
        ch.io.close().await.unwrap();

        let mut ch = next_channel(&mut inb).await;
        assert_eq!(ch.peer.ip(), std::net::IpAddr::V6(A_ULA));
        let Message::ReqSyn(req) = recv(&mut ch).await else {
            panic!("not M_REQ_SYN")
        };
        // Two messages sent back to back arrive as two messages.
        assert_eq!(recv(&mut ch).await, Message::Noop);
        assert_eq!(recv(&mut ch).await, Message::Noop);
        let value = Value::from_serialize(&("via-namespace", 1)).unwrap();
        let synch = Message::Synch(SessionObjective::new(
            req.session_id,
            req.objective.with_value(value),
        ));
        ch.io.send(synch.encode()).await.unwrap();
        ch.io.close().await.unwrap();
        let s = acp.stats();
        assert!(s.multicast_received >= 1);
        assert_eq!(s.channels_accepted, 1);
        assert_eq!(s.channels_opened, 1);
    });

    // A: discovers (retrying a few times in case B is slow to start), then
    // synchronizes with the locator it got back.
    let a = spawn_in(&ns_a, move || async move {
        let (acp, mut inb) = plain::bind(Config::default().interfaces(["ab0"]))
            .await
            .unwrap();
        ready_rx.await.unwrap();
        let ifindex = acp.interfaces()[0].index;
        let mut ch = None;
        for attempt in 0..10u32 {
            acp.send_multicast(ifindex, discovery(1000 + attempt))
                .await
                .unwrap();
            if let Ok(Some(Inbound::Channel(c))) =
                timeout(Duration::from_millis(300), inb.next()).await
            {
                ch = Some(c);
                break;
            }
        }
        let mut ch = ch.expect("a discovery response within 10 tries");
        let Message::Response(resp) = recv(&mut ch).await else {
            panic!("not M_RESPONSE")
        };
        assert_eq!(resp.initiator, std::net::IpAddr::V6(A_ULA));
        let ResponseTarget::Locators(locs) = resp.target else {
            panic!("divert")
        };
        assert!(
            timeout(T, ch.io.next()).await.unwrap().is_none(),
            "responder closes"
        );

        let peer = locator_addr(&locs[0]);
        assert_eq!(peer.ip(), std::net::IpAddr::V6(B_ULA));
        let mut s = acp.connect(peer).await.unwrap();
        let req = Message::ReqSyn(SessionObjective::new(SessionId(7), objective()));
        s.io.send(req.encode()).await.unwrap();
        s.io.feed(Message::Noop.encode()).await.unwrap();
        s.io.feed(Message::Noop.encode()).await.unwrap();
        s.io.flush().await.unwrap();
        let Message::Synch(synch) = recv(&mut s).await else {
            panic!("not M_SYNCH")
        };
        assert_eq!(synch.session_id, SessionId(7));
        let v: (String, u32) = synch.objective.value.unwrap().deserialize().unwrap();
        assert_eq!(v, ("via-namespace".to_string(), 1));
        assert!(timeout(T, s.io.next()).await.unwrap().is_none());
        // Nothing listens on port 1: refused, counted.
        let closed = SocketAddr::V6(SocketAddrV6::new(B_ULA, 1, 0, 0));
        assert!(acp.connect(closed).await.is_err());
        assert_eq!(acp.stats().connect_failures, 1);
    });
    a.join().expect("node A panicked").expect("node A setup");
    b.join().expect("node B panicked").expect("node B setup");
}

#[test]
fn every_instance_on_a_host_receives_every_multicast() {
    if Lab::skip_loudly("every_instance_on_a_host_receives_every_multicast") {
        return;
    }
    let (_lab, ns_a, ns_b) = two_node_lab();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();

    // Two instances in B, both on ba0: both get A's multicast; an oversize
    // one is dropped and counted by both.
    let b = spawn_in(&ns_b, move || async move {
        let (b1, mut in1) = plain::bind(Config::default().interfaces(["ba0"]))
            .await
            .unwrap();
        let (b2, mut in2) = plain::bind(Config::default().interfaces(["ba0"]))
            .await
            .unwrap();
        assert_ne!(b1.port(), b2.port());
        ready_tx.send(()).unwrap();
        for inb in [&mut in1, &mut in2] {
            let d = next_datagram(inb).await;
            assert_eq!(*d.src.ip(), A_LL);
            assert!(matches!(
                Message::decode(&d.msg).unwrap(),
                Message::Discovery(_)
            ));
        }
        // The oversize one never shows up; the next small one does.
        for inb in [&mut in1, &mut in2] {
            let d = next_datagram(inb).await;
            assert_eq!(Message::decode(&d.msg).unwrap(), Message::Noop);
        }
        for t in [&b1, &b2] {
            assert_eq!(t.stats().multicast_dropped_oversize, 1);
        }
        done_tx.send(()).unwrap();
    });

    // In A: `quiet` (no listen_self) and `selfish` (listen_self).
    let a = spawn_in(&ns_a, move || async move {
        let (quiet, mut quiet_in) =
            plain::bind(Config::default().interfaces(["ab0"]).max_message_size(4096))
                .await
                .unwrap();
        let (selfish, mut selfish_in) =
            plain::bind(Config::default().interfaces(["ab0"]).listen_self(true))
                .await
                .unwrap();
        ready_rx.await.unwrap();
        let ifindex = quiet.interfaces()[0].index;
        quiet.send_multicast(ifindex, discovery(1)).await.unwrap();
        let big = Message::Invalid(grasp_engine::wire::Invalid {
            session_id: SessionId(2),
            content: Some(Value::from_serialize(&"x".repeat(3000)).unwrap()),
            extensions: vec![],
        })
        .encode();
        assert!(big.len() > 2048);
        quiet.send_multicast(ifindex, big).await.unwrap();
        quiet
            .send_multicast(ifindex, Message::Noop.encode())
            .await
            .unwrap();
        // listen_self: the selfish instance hears itself.
        selfish.send_multicast(ifindex, discovery(3)).await.unwrap();
        let d = next_datagram(&mut selfish_in).await;
        assert_eq!(d.src.port(), selfish.port());
        done_rx.await.unwrap();
        // The quiet one heard the selfish one (another instance) but never
        // its own multicasts.
        let mut from_self = 0;
        let mut from_other = 0;
        while let Ok(Some(item)) = timeout(Duration::from_millis(300), quiet_in.next()).await {
            if let Inbound::Datagram(d) = item {
                if d.src.port() == quiet.port() {
                    from_self += 1;
                } else {
                    from_other += 1;
                }
            }
        }
        assert_eq!(
            from_self, 0,
            "own multicasts must not come back without listen_self"
        );
        assert_eq!(from_other, 1, "the other local instance's multicast");
    });
    a.join().expect("node A panicked").expect("node A setup");
    b.join().expect("node B panicked").expect("node B setup");
}
