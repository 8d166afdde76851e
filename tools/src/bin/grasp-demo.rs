//! GRASP on the in-memory fabric, through the engine and the RFC 8991 API,
//! with every message printed as it crosses a link.
//!
//! Three nodes in a line, A - R - C; R relays. C serves `EX.demo` for
//! synchronization and `EX.price` for negotiation, and floods `EX.news`.
//! A discovers `EX.demo` through the relay on its first try, synchronizes it,
//! negotiates a price with C, and reads the flood.
//!
//! `cargo run -p grasp-tools --bin grasp-demo -- --help`

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Parser;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream, StreamExt};
use grasp_acp::fabric::{Fabric, LinkConfig};
use grasp_engine::proto::{Config, DiscoverOptions, RegisterOptions};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, MessageIo, Security,
    TransportStats,
};
use grasp_engine::wire::{Locator, Message, Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::{Grasp, Negotiation};

#[derive(Parser, Debug)]
#[command(
    about = "GRASP discovery through a relay, synchronization, negotiation and flooding over the in-memory fabric, message by message"
)]
struct Args {
    /// One-way link delay in milliseconds.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Price C asks (A offers 80, then meets C halfway).
    #[arg(long, default_value_t = 100)]
    price: u32,
    /// Do not print the messages.
    #[arg(long)]
    quiet: bool,
}

/// Prints what a node sends: a transport wrapper, the engine does not know.
struct Tap {
    name: &'static str,
    inner: Arc<dyn AcpTransport>,
    quiet: bool,
}

fn show(quiet: bool, from: &str, to: &str, raw: &Bytes) {
    if quiet {
        return;
    }
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
    println!("  {from:>2} -> {to:<24} {text}");
}

struct TapIo {
    name: &'static str,
    peer: String,
    quiet: bool,
    inner: Pin<Box<dyn MessageIo>>,
}

impl Stream for TapIo {
    type Item = Result<Bytes, AcpError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Sink<Bytes> for TapIo {
    type Error = AcpError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), AcpError> {
        show(self.quiet, self.name, &self.peer, &item);
        self.inner.as_mut().start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), AcpError>> {
        self.inner.as_mut().poll_close(cx)
    }
}

impl Tap {
    fn wrap(&self, ch: Channel) -> Channel {
        Channel {
            peer: ch.peer,
            local: ch.local,
            identity: ch.identity,
            io: Box::pin(TapIo {
                name: self.name,
                peer: ch.peer.to_string(),
                quiet: self.quiet,
                inner: ch.io,
            }),
        }
    }
}

impl AcpTransport for Tap {
    fn security(&self) -> Security {
        self.inner.security()
    }
    fn interfaces(&self) -> Vec<Interface> {
        self.inner.interfaces()
    }
    fn node_locator(&self) -> Locator {
        self.inner.node_locator()
    }
    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        let link = self
            .inner
            .interfaces()
            .into_iter()
            .find(|i| i.index == ifindex)
            .map_or_else(|| format!("if {ifindex}"), |i| i.name);
        show(
            self.quiet,
            self.name,
            &format!("[ff02::13]:7017 {link}"),
            &msg,
        );
        self.inner.send_multicast(ifindex, msg)
    }
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        async move { self.inner.connect(peer).await.map(|c| self.wrap(c)) }.boxed()
    }
    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }
}

fn tap(
    name: &'static str,
    inner: Arc<dyn AcpTransport>,
    inbound: InboundStream,
    quiet: bool,
) -> (Arc<dyn AcpTransport>, InboundStream) {
    let t = Arc::new(Tap { name, inner, quiet });
    let t2 = t.clone();
    let inbound = inbound
        .map(move |i| match i {
            Inbound::Channel(c) => Inbound::Channel(t2.wrap(c)),
            d => d,
        })
        .boxed();
    (t, inbound)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let fabric = Fabric::new(8990);
    let cfg = LinkConfig {
        loss: 0.0,
        delay: Duration::from_millis(args.delay_ms),
    };
    let l1 = fabric.link("link1", cfg);
    let l2 = fabric.link("link2", cfg);
    // The fabric encrypts nothing; it claims QUADS so that the calls RFC 8990
    // reserves for a secured substrate run.
    let node = |name: &'static str, links: &[&grasp_acp::fabric::Link]| {
        let mut b = fabric.node(name).simulated_security(Security::Quads);
        for l in links {
            b = b.attach(l);
        }
        let (t, i) = b.bind();
        let (t, i) = tap(name, t, i, args.quiet);
        (Grasp::start(t.clone(), i, Config::default()), t)
    };
    let (a, ta) = node("A", &[&l1]);
    let (_r, tr) = node("R", &[&l1, &l2]);
    let (c, tc) = node("C", &[&l2]);
    println!(
        "A {} --link1-- R {} --link2-- C {}",
        ta.node_locator(),
        tr.node_locator(),
        tc.node_locator()
    );

    // C: the services.
    let server = c.register_asa("C-services").await?;
    let demo = Objective::new("EX.demo", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
        .with_value(Value::from("hello from C"));
    server
        .register_objective(&demo, RegisterOptions::default())
        .await?;
    server.listen_synchronize(&demo).await?;
    let price = Objective::new("EX.price", ObjectiveFlags::DISC | ObjectiveFlags::NEG);
    server
        .register_objective(&price, RegisterOptions::default())
        .await?;
    let listener = server.listen_negotiate("EX.price").await?;
    let ask = args.price;
    tokio::spawn(async move {
        while let Some((session, offer)) = listener.next().await {
            let bid = offer.value.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) as u32;
            let _ = if bid >= ask {
                session.accept().await
            } else {
                let counter = offer.clone().with_value(Value::from(ask));
                session
                    .step(&counter, Duration::from_secs(5))
                    .await
                    .map(|_| ())
            };
        }
    });

    // A: discovery through the relay, on the first try.
    let client = a.register_asa("A-client").await?;
    println!("\nA discovers EX.demo (first answer):");
    let t0 = tokio::time::Instant::now();
    let probe = Objective::new("EX.demo", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH);
    let found = client
        .discover(&probe, DiscoverOptions::first(Duration::from_secs(1)))
        .await?;
    let Some(first) = found.first() else {
        bail!("nothing found")
    };
    println!(
        "  => {} ({}) after {:?}",
        first.locator,
        if first.diverted {
            "diverted by R"
        } else {
            "direct"
        },
        t0.elapsed()
    );

    println!("\nA synchronizes EX.demo:");
    let got = client
        .synchronize(&probe, Some(first.clone()), Duration::from_secs(5))
        .await?;
    println!(
        "  => {}",
        got.value.map(|v| v.to_string()).unwrap_or_default()
    );

    println!("\nA negotiates EX.price, offering 80:");
    let offer = price.clone().with_value(Value::from(80u32));
    match client
        .request_negotiate(&offer, None, Duration::from_secs(5))
        .await?
    {
        Negotiation::Step { session, objective } => {
            let theirs = objective
                .value
                .as_ref()
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            println!(
                "  => C asks {theirs} (loop count now {}); A accepts",
                objective.loop_count
            );
            session.accept().await?;
        }
        Negotiation::Accepted => println!("  => accepted at once"),
        Negotiation::Declined { reason } => println!("  => declined: {reason:?}"),
    }

    println!("\nC floods EX.news (loop count 3; R relays it):");
    let news = Objective::new("EX.news", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
        .with_value(Value::from("GRASP in Rust"))
        .with_loop_count(3);
    server
        .register_objective(&news, RegisterOptions::default())
        .await?;
    server
        .flood(
            60_000,
            vec![TaggedObjective {
                objective: news,
                locator: None,
            }],
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(20 + 4 * args.delay_ms)).await;
    for e in client.get_flood("EX.news").await? {
        println!(
            "  => A has {} = {} from {} (loop count {})",
            e.objective.name,
            e.objective.value.map(|v| v.to_string()).unwrap_or_default(),
            e.initiator,
            e.objective.loop_count
        );
    }
    println!(
        "\ntransport counters:\n  A {:?}\n  R {:?}\n  C {:?}",
        ta.stats(),
        tr.stats(),
        tc.stats()
    );
    Ok(())
}
