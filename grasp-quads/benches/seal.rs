//! Seal/open throughput for 64 B, 512 B and 2 KiB messages, multicast and
//! unicast, and the key derivation with the default argon2id parameters.
//!
//! `cargo bench -p grasp-quads --bench seal`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grasp_quads::{Config, DomainKey, KdfParams, KeyRing, MasterSecret, Password, Sealer};

fn ring() -> KeyRing {
    KeyRing::new(DomainKey::from_master(&MasterSecret::from_bytes([7; 32])))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("quads");
    for size in [64usize, 512, 2048] {
        let msg = vec![0x5a; size];
        g.throughput(Throughput::Bytes(size as u64));
        let s = Sealer::new(ring(), Config::default());
        g.bench_with_input(BenchmarkId::new("seal_multicast", size), &msg, |b, m| {
            b.iter(|| s.seal_multicast(now_ms(), m))
        });
        // Opening needs a fresh counter each time (replay protection), so
        // seal a batch up front and open it in order.
        let sender = Sealer::new(ring(), Config::default());
        g.bench_with_input(BenchmarkId::new("open_multicast", size), &msg, |b, m| {
            b.iter_custom(|iters| {
                let recs: Vec<Vec<u8>> = (0..iters)
                    .map(|_| sender.seal_multicast(now_ms(), m))
                    .collect();
                let t = now_ms();
                let start = Instant::now();
                for r in &recs {
                    s.open_multicast(t, r).expect("opens");
                }
                start.elapsed()
            })
        });
        // Unicast: one channel, records after the opening exchange.
        g.bench_with_input(BenchmarkId::new("unicast_seal_open", size), &msg, |b, m| {
            let a = Sealer::new(ring(), Config::default());
            let z = Sealer::new(ring(), Config::default());
            let mut ini = a.initiator();
            let mut res = z.responder();
            let t = now_ms();
            res.open(t, &ini.seal(t, m).unwrap()).unwrap();
            ini.open(t, &res.seal(t, m).unwrap()).unwrap();
            b.iter(|| res.open(t, &ini.seal(t, m).unwrap()).unwrap())
        });
    }
    g.finish();
    // A whole channel's crypto: open + answer (key derivations included).
    let mut g = c.benchmark_group("quads_channel");
    let a = Sealer::new(ring(), Config::default());
    let z = Sealer::new(ring(), Config::default().replay_cache(1 << 24));
    let msg = vec![0x5a; 40];
    g.bench_function("open_and_answer_40B", |b| {
        b.iter(|| {
            let t = now_ms();
            let mut ini = a.initiator();
            let mut res = z.responder();
            res.open(t, &ini.seal(t, &msg).unwrap()).unwrap();
            ini.open(t, &res.seal(t, &msg).unwrap()).unwrap();
        })
    });
    g.finish();
    let mut g = c.benchmark_group("quads_kdf");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let pw = Password::new("grasp-test-password").unwrap();
    g.bench_function("argon2id_default_params", |b| {
        b.iter(|| MasterSecret::derive(&pw, "lab", KdfParams::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches, parts_benches);

mod parts {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
    use criterion::Criterion;

    /// What one channel's crypto is made of.
    pub(crate) fn bench(c: &mut Criterion) {
        let mut g = c.benchmark_group("quads_parts");
        let key = [7u8; 32];
        g.bench_function("aes256gcm_key_setup", |b| {
            b.iter(|| Aes256Gcm::new(std::hint::black_box(&key).into()))
        });
        let aead = Aes256Gcm::new((&key).into());
        let mut buf = vec![0u8; 40];
        g.bench_function("aes256gcm_seal_40B", |b| {
            b.iter(|| {
                aead.encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), b"hdr", &mut buf)
                    .unwrap()
            })
        });
        // For comparison: ring's AES-256-GCM (faster, but its key schedules
        // are not zeroized on drop, which the secrets rule asks for).
        g.bench_function("ring_aes256gcm_key_setup", |b| {
            b.iter(|| {
                ring::aead::LessSafeKey::new(
                    ring::aead::UnboundKey::new(
                        &ring::aead::AES_256_GCM,
                        std::hint::black_box(&key),
                    )
                    .unwrap(),
                )
            })
        });
        let rk = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
        );
        let mut rbuf = vec![0u8; 40];
        g.bench_function("ring_aes256gcm_seal_40B", |b| {
            b.iter(|| {
                rk.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key([0; 12]),
                    ring::aead::Aad::from(b"hdr"),
                    &mut rbuf,
                )
                .unwrap()
            })
        });
        g.bench_function("thread_rng_16B", |b| {
            b.iter(|| {
                use rand::RngCore;
                let mut x = [0u8; 16];
                rand::rng().fill_bytes(&mut x);
                x
            })
        });
        g.finish();
    }
}

criterion_group!(parts_benches, parts::bench);
