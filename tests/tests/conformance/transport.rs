//! The transport contract below the engine, held by every backend: two
//! bound transports on one fabric link, and what crosses between them.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use grasp_acp::fabric::Fabric;
use grasp_engine::transport::{AcpError, Channel, Datagram, Inbound, InboundStream};
use grasp_engine::wire::{Locator, Message};
use grasp_tests::backend::{Backend, Domain};

use crate::engine::link;

const T: Duration = Duration::from_secs(5);

async fn next_datagram(s: &mut InboundStream) -> Datagram {
    loop {
        match tokio::time::timeout(T, s.next())
            .await
            .expect("a datagram in time")
        {
            Some(Inbound::Datagram(d)) => return d,
            Some(Inbound::Interfaces { .. }) => continue,
            other => panic!("expected a datagram, got {other:?}"),
        }
    }
}

async fn next_channel(s: &mut InboundStream) -> Channel {
    loop {
        match tokio::time::timeout(T, s.next())
            .await
            .expect("a channel in time")
        {
            Some(Inbound::Channel(c)) => return c,
            Some(Inbound::Interfaces { .. }) => continue,
            other => panic!("expected a channel, got {other:?}"),
        }
    }
}

/// The next channel `inbound` yields, polled in a task of its own (a
/// backend that handshakes, TLS, needs its inbound stream polled while the
/// peer connects, as the engine always does).
fn accept(mut inbound: InboundStream) -> tokio::task::JoinHandle<Channel> {
    tokio::spawn(async move { next_channel(&mut inbound).await })
}

fn peer(l: &Locator) -> std::net::SocketAddr {
    match l {
        Locator::Ipv6 { addr, port, .. } => std::net::SocketAddr::from((*addr, *port)),
        other => panic!("{other:?}"),
    }
}

/// A multicast sent on A's interface reaches B whole, with B's interface
/// index and A's link-local source.
pub(crate) async fn multicast_round_trip_with_ifindex(backend: Backend) {
    let f = Fabric::new(31);
    let (l0, l) = (link(&f, "other"), link(&f, "l"));
    let d = Domain::new(backend, 1);
    let a = d.fabric_transport(&f, "A", &[&l]).await;
    // B's interface on the link is its second one.
    let mut b = d.fabric_transport(&f, "B", &[&l0, &l]).await;
    let msg = Message::Noop.encode();
    let ifa = a.transport.interfaces()[0].clone();
    a.transport
        .send_multicast(ifa.index, msg.clone())
        .await
        .unwrap();
    let got = next_datagram(&mut b.inbound).await;
    assert_eq!(got.msg, msg);
    assert_eq!(got.ifindex, b.transport.interfaces()[1].index);
    assert_eq!(*got.src.ip(), ifa.link_local);
}

/// Messages both ways over a channel, each whole; then A closes and B's
/// stream ends.
pub(crate) async fn channel_round_trip_and_close(backend: Backend) {
    let f = Fabric::new(32);
    let l = link(&f, "l");
    let d = Domain::new(backend, 1);
    let a = d.fabric_transport(&f, "A", &[&l]).await;
    let b = d.fabric_transport(&f, "B", &[&l]).await;
    let accepted = accept(b.inbound);
    let mut ca = a
        .transport
        .connect(peer(&b.transport.node_locator()))
        .await
        .unwrap();
    let m1 = Message::Noop.encode();
    let m2 = Bytes::from(vec![0x82, 0x07, 0x19, 0x07, 0xd0]);
    ca.io.send(m1.clone()).await.unwrap();
    let mut cb = accepted.await.unwrap();
    assert_eq!(cb.io.next().await.unwrap().unwrap(), m1);
    cb.io.send(m2.clone()).await.unwrap();
    assert_eq!(ca.io.next().await.unwrap().unwrap(), m2);
    // Dropping a channel ends the peer's stream (EOF or an error, never a
    // hang).
    drop(ca);
    let end = tokio::time::timeout(T, cb.io.next())
        .await
        .expect("the stream ends");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

/// A message over the limit is refused with TooLarge, by multicast and by
/// channel; the limit is the engine's, whatever the backend's overhead.
pub(crate) async fn oversize_is_too_large(backend: Backend) {
    let f = Fabric::new(33);
    let l = link(&f, "l");
    let d = Domain::new(backend, 1);
    let a = d.fabric_transport(&f, "A", &[&l]).await;
    let b = d.fabric_transport(&f, "B", &[&l]).await;
    let max = a.transport.max_message_size();
    assert_eq!(max, grasp_engine::wire::GRASP_DEF_MAX_SIZE);
    let big = Bytes::from(vec![0u8; max + 1]);
    let ifindex = a.transport.interfaces()[0].index;
    assert!(matches!(
        a.transport.send_multicast(ifindex, big.clone()).await,
        Err(AcpError::TooLarge { .. })
    ));
    // A full-size message still goes through.
    let accepted = accept(b.inbound);
    let mut ca = a
        .transport
        .connect(peer(&b.transport.node_locator()))
        .await
        .unwrap();
    let mut full = vec![0x59, 0x07, 0xfd];
    full.resize(max, 0xab);
    ca.io.send(Bytes::from(full.clone())).await.unwrap();
    let mut cb = accepted.await.unwrap();
    assert_eq!(cb.io.next().await.unwrap().unwrap(), Bytes::from(full));
    let sent = ca.io.send(big).await;
    assert!(matches!(sent, Err(AcpError::TooLarge { .. })), "{sent:?}");
}

/// What a backend cannot deliver it counts: a multicast of garbage from a
/// bare node on the link is dropped and counted (a plain backend delivers
/// it: it has nothing to check), and an oversize one is dropped as such.
pub(crate) async fn drops_are_counted(backend: Backend) {
    let f = Fabric::new(34);
    let l = link(&f, "l");
    let d = Domain::new(backend, 1);
    let mut b = d.fabric_transport(&f, "B", &[&l]).await;
    let (raw, _raw_in) = f.node("raw").attach(&l).max_message_size(1 << 16).bind();
    let ifindex = grasp_engine::transport::AcpTransport::interfaces(&*raw)[0].index;
    use grasp_engine::transport::AcpTransport as _;
    raw.send_multicast(ifindex, Bytes::from_static(&[0x82, 0x02, 0xff, 0x00]))
        .await
        .unwrap();
    let huge = Bytes::from(vec![0u8; b.transport.max_message_size() + 4096]);
    raw.send_multicast(ifindex, huge).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    if backend.has_domains() {
        // Poll the inbound stream so the protection sees the datagram.
        let polled = tokio::time::timeout(Duration::from_millis(50), b.inbound.next()).await;
        assert!(polled.is_err(), "nothing is delivered: {polled:?}");
        assert_eq!(b.transport.stats().multicast_dropped_other, 1);
    } else {
        let got = next_datagram(&mut b.inbound).await;
        assert_eq!(&got.msg[..], &[0x82, 0x02, 0xff, 0x00]);
    }
    assert_eq!(b.transport.stats().multicast_dropped_oversize, 1);
}
