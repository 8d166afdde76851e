//! TLS backend costs: full and resumed handshakes over loopback TCP, and
//! signing / verifying one multicast.
//!
//! `cargo bench -p grasp-tls --bench tls`

use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use grasp_acp::stream::StreamLayer;
use grasp_tls::certs::{issue_node, new_ca};
use grasp_tls::multicast::Multicast;
use grasp_tls::unicast::Layer;
use grasp_tls::NodeIdentity;

fn identity(ca: &str, ca_key: &str, node: &str) -> NodeIdentity {
    let (cert, key) = issue_node(ca, ca_key, node, 10).unwrap();
    NodeIdentity::from_pem(&cert, &key, ca, SystemTime::now()).unwrap()
}

/// `n` handshakes; a new client layer each time makes them all full.
async fn handshakes(n: u64, resume: bool, ca: &str, ca_key: &str) -> Duration {
    let server = Layer::new(&identity(ca, ca_key, "server.lab")).unwrap();
    let client_id = identity(ca, ca_key, "client.lab");
    let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = l.accept().await else {
                return;
            };
            let s = server.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                if let Ok(l) = s.accept(Box::new(tcp), peer).await {
                    let mut io = l.io;
                    let mut b = [0u8; 1];
                    let _ = io.read(&mut b).await;
                }
            });
        }
    });
    let shared = Layer::new(&client_id).unwrap();
    // Warm the ticket store.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    drop(shared.connect(Box::new(tcp), addr).await.unwrap());
    // A fresh client layer (no ticket) per full handshake, made before
    // the clock starts.
    let layers: Vec<Layer> = (0..n)
        .map(|_| {
            if resume {
                shared.clone()
            } else {
                Layer::new(&client_id).unwrap()
            }
        })
        .collect();
    let start = Instant::now();
    for layer in layers {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut io = layer.connect(Box::new(tcp), addr).await.unwrap().io;
        // A byte each way, so the server has finished too.
        use tokio::io::AsyncWriteExt;
        io.write_all(&[0]).await.unwrap();
        io.flush().await.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let (ca, ca_key) = new_ca("lab", 30).unwrap();
    let ca_key = ca_key.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("tls");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // Reported as handshakes per second too.
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("handshake_full", |b| {
        b.iter_custom(|n| rt.block_on(handshakes(n, false, &ca, &ca_key)))
    });
    g.bench_function("handshake_resumed", |b| {
        b.iter_custom(|n| rt.block_on(handshakes(n, true, &ca, &ca_key)))
    });
    g.finish();
    let a = Multicast::new(&identity(&ca, &ca_key, "a.lab")).unwrap();
    let b = Multicast::new(&identity(&ca, &ca_key, "b.lab")).unwrap();
    let msg = vec![0x5a; 100];
    let mut g = c.benchmark_group("tls_multicast");
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("sign_100B", |bn| {
        bn.iter(|| a.sign(SystemTime::now(), &msg).unwrap())
    });
    g.bench_function("verify_100B_cached_sender", |bn| {
        bn.iter_custom(|n| {
            let signed: Vec<_> = (0..n)
                .map(|_| a.sign(SystemTime::now(), &msg).unwrap())
                .collect();
            let now = SystemTime::now();
            let t = Instant::now();
            for m in &signed {
                b.verify(now, m).unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
