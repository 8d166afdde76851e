//! Codec throughput on graspy's captured messages.
//!
//! `cargo bench -p grasp-engine --bench codec`. Each benchmark reports
//! messages per second (criterion's "thrpt" in elements/s). The target is at
//! least 2,000,000 decodes and 2,000,000 encodes per second per core for a
//! typical M_REQ_SYN / M_SYNCH; graspy's codec does about 600,000.

use std::fs;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use grasp_engine::wire::{Limits, Message, StreamDecoder};
use serde_json::Value as Json;

/// Every plaintext vector message, with its scenario and type.
fn vectors() -> Vec<(String, u8, Bytes)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/graspy");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| !p.to_str().unwrap().ends_with(".quads.json"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let doc: Json = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        let scen = doc["scenario"].as_str().unwrap().to_string();
        for m in doc["messages"].as_array().unwrap() {
            let b = Bytes::from(hex::decode(m["payload_hex"].as_str().unwrap()).unwrap());
            let ty = m["grasp"]["type"].as_u64().unwrap() as u8;
            out.push((scen.clone(), ty, b));
        }
    }
    out
}

fn pick(all: &[(String, u8, Bytes)], scenario: &str, ty: u8) -> Bytes {
    all.iter()
        .find(|(s, t, _)| s == scenario && *t == ty)
        .map(|(_, _, b)| b.clone())
        .unwrap_or_else(|| panic!("no type {ty} in {scenario}"))
}

fn bench_one(c: &mut Criterion, name: &str, raw: Bytes) {
    let msg = Message::decode(&raw).unwrap();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| Message::decode(black_box(&raw)).unwrap())
    });
    let mut buf = Vec::with_capacity(256);
    g.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode_into(&mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("encode_alloc", |b| b.iter(|| black_box(&msg).encode()));
    // What a TCP channel does before decoding: find where the message ends
    // in what was read (the copy into a fresh buffer is part of each turn).
    let mut framer = StreamDecoder::new(Limits::default());
    g.bench_function("frame", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(&raw[..]));
            framer.decode(&mut buf).unwrap().unwrap()
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let all = vectors();
    bench_one(c, "M_REQ_SYN", pick(&all, "sync", 4));
    bench_one(c, "M_SYNCH", pick(&all, "sync", 8));
    bench_one(c, "M_DISCOVERY", pick(&all, "sync", 1));
    bench_one(c, "M_RESPONSE", pick(&all, "sync", 2));
    bench_one(c, "M_FLOOD", pick(&all, "flood", 9));

    let msgs: Vec<Message> = all
        .iter()
        .map(|(_, _, b)| Message::decode(b).unwrap())
        .collect();
    let mut g = c.benchmark_group("all_vectors");
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for (_, _, raw) in &all {
                black_box(Message::decode(black_box(raw)).unwrap());
            }
        })
    });
    let mut buf = Vec::with_capacity(256);
    g.bench_function("encode", |b| {
        b.iter(|| {
            for m in &msgs {
                buf.clear();
                m.encode_into(&mut buf);
                black_box(buf.len());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
