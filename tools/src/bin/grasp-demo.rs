//! A discovery and a synchronization between two nodes of the in-memory
//! fabric, with every message printed as it crosses the link.
//!
//! Node B offers the synchronization objective `EX.demo`. Node A multicasts
//! an M_DISCOVERY; B answers by TCP-style channel to the discovery's source
//! port with an M_RESPONSE carrying its locator; A opens a channel to that
//! locator and sends an M_REQ_SYN; B answers with an M_SYNCH carrying the
//! value. The protocol steps are written out here by hand over the wire codec
//! and the transport trait; the GRASP engine (next issue) will do them.
//!
//! `cargo run -p grasp-tools --bin grasp-demo -- --help`

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::transport::{AcpTransport, Channel, Inbound, InboundStream};
use grasp_engine::wire::{
    Discovery, Locator, Message, Objective, ObjectiveFlags, Response, ResponseTarget, SessionId,
    SessionObjective, Value, GRASP_DEF_LOOPCT,
};
use tokio::time::timeout;

#[derive(Parser, Debug)]
#[command(
    about = "GRASP discovery and synchronization over the in-memory fabric, message by message"
)]
struct Args {
    /// One-way link delay in milliseconds.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Objective name.
    #[arg(long, default_value = "EX.demo")]
    objective: String,
    /// Value B serves (sent as a CBOR text string).
    #[arg(long, default_value = "hello from B")]
    value: String,
    /// Seed of the fabric (and of the session ids).
    #[arg(long, default_value_t = 8990)]
    seed: u64,
}

fn show(from: &str, to: &str, raw: &Bytes) {
    let text = match Message::decode(raw) {
        Ok(m) => format!(
            "{:<11} {}",
            m.msg_type().to_string(),
            Value::from_cbor(raw.clone())
                .map(|v| v.to_string())
                .unwrap_or_default()
        ),
        Err(e) => format!("undecodable: {e}"),
    };
    println!("{from:>2} -> {to:<26} {text}");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    println!("{:>32}{} bytes: {hex}", "", raw.len());
}

async fn recv(ch: &mut Channel) -> Result<Bytes> {
    timeout(Duration::from_secs(2), ch.io.next())
        .await
        .context("timed out waiting for a message")?
        .context("the peer closed the channel")?
        .context("channel error")
}

/// B: answer discoveries for the objective, then serve one M_REQ_SYN.
async fn responder(
    acp: std::sync::Arc<grasp_acp::fabric::MemTransport>,
    mut inbound: InboundStream,
    name: String,
    value: Value,
) -> Result<()> {
    loop {
        match inbound.next().await {
            Some(Inbound::Datagram(d)) => {
                let Ok(Message::Discovery(disc)) = Message::decode(&d.msg) else {
                    continue;
                };
                if disc.objective.name != name {
                    continue;
                }
                // RFC 8990 §2.5.4.3: answer at the UDP source port of the multicast.
                let to = SocketAddrV6::new(*d.src.ip(), d.src.port(), 0, d.ifindex);
                let mut ch = acp.connect(SocketAddr::V6(to)).await?;
                let resp = Message::Response(Response {
                    session_id: disc.session_id,
                    initiator: disc.initiator,
                    ttl_ms: 60_000,
                    target: ResponseTarget::Locators(vec![acp.node_locator()]),
                    objective: None,
                    extensions: vec![],
                })
                .encode();
                show("B", &format!("[{}]:{}", to.ip(), to.port()), &resp);
                ch.io.send(resp).await?;
                ch.io.close().await?;
            }
            Some(Inbound::Channel(mut ch)) => {
                let raw = recv(&mut ch).await?;
                let Message::ReqSyn(req) = Message::decode(&raw)? else {
                    bail!("B expected M_REQ_SYN");
                };
                let reply = Message::Synch(SessionObjective::new(
                    req.session_id,
                    Objective {
                        value: Some(value.clone()),
                        ..req.objective
                    },
                ))
                .encode();
                show("B", &ch.peer.to_string(), &reply);
                ch.io.send(reply).await?;
                ch.io.close().await?;
                return Ok(());
            }
            None => bail!("B's inbound stream ended"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let fabric = Fabric::new(args.seed);
    let link = fabric.link(
        "link1",
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(args.delay_ms),
        },
    );
    let (a, mut a_in) = fabric.node("A").attach(&link).port(49152).bind();
    let (b, b_in) = fabric.node("B").attach(&link).port(7017).bind();
    println!(
        "fabric: A {} and B {} on link1 ({} ms one way)",
        a.node_locator(),
        b.node_locator(),
        args.delay_ms
    );
    println!("B serves {:?} = {:?}\n", args.objective, args.value);

    let served = Value::from(args.value.as_str());
    let b_task = tokio::spawn(responder(b.clone(), b_in, args.objective.clone(), served));

    // A: discovery.
    let mut sid = args.seed as u32;
    let mut next_sid = || {
        sid = sid.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        SessionId(sid)
    };
    let obj = Objective::new(
        &args.objective,
        ObjectiveFlags::DISC | ObjectiveFlags::SYNCH,
    )
    .with_loop_count(GRASP_DEF_LOOPCT)
    .with_value(Value::null());
    let initiator = match a.node_locator() {
        Locator::Ipv6 { addr, .. } => addr,
        _ => unreachable!("the fabric gives IPv6 locators"),
    };
    let disc = Message::Discovery(Discovery {
        session_id: next_sid(),
        initiator: initiator.into(),
        objective: obj.clone(),
        extensions: vec![],
    })
    .encode();
    let ifindex = a.interfaces()[0].index;
    show("A", "[ff02::13]:7017 (link1)", &disc);
    let started = tokio::time::Instant::now();
    a.send_multicast(ifindex, disc).await?;

    let mut ch = loop {
        match timeout(Duration::from_secs(2), a_in.next()).await {
            Ok(Some(Inbound::Channel(ch))) => break ch,
            Ok(Some(Inbound::Datagram(_))) => continue,
            _ => bail!("no discovery response"),
        }
    };
    let Message::Response(resp) = Message::decode(&recv(&mut ch).await?)? else {
        bail!("A expected M_RESPONSE");
    };
    let ResponseTarget::Locators(locs) = resp.target else {
        bail!("unexpected O_DIVERT");
    };
    let Some(Locator::Ipv6 { addr, port, .. }) = locs.first().cloned() else {
        bail!("no IPv6 locator in the response");
    };
    println!(
        "   A discovered {} at [{addr}]:{port} in {:?}",
        args.objective,
        started.elapsed()
    );

    // A: synchronization.
    let mut s = a
        .connect(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0)))
        .await?;
    let req = Message::ReqSyn(SessionObjective::new(next_sid(), obj)).encode();
    show("A", &format!("[{addr}]:{port}"), &req);
    s.io.send(req).await?;
    let Message::Synch(synch) = Message::decode(&recv(&mut s).await?)? else {
        bail!("A expected M_SYNCH");
    };
    let value = synch.objective.value.context("M_SYNCH without a value")?;
    println!(
        "   A synchronized {} = {value} ({:?} from the discovery)",
        args.objective,
        started.elapsed()
    );
    b_task.await??;
    println!(
        "\ntransport counters: A {:?}\n                    B {:?}",
        a.stats(),
        b.stats()
    );
    Ok(())
}
