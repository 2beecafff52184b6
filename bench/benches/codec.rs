//! Micro-benchmarks of the sans-IO path: parse only, and parse + answer in place (the whole
//! handler decision), for the request kinds that matter. Run: `cargo bench -p stunedge-bench`.
//! Results are recorded in bench/results/ with commit, CPU and kernel.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stunedge::handler::{BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge::metrics::Stats;
use stunedge::stun::Message;
use stunedge::stun::integrity::check_fingerprint;
use stunedge_bench::{Kind, request};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, kind) in [("binding", Kind::Plain), ("binding_fingerprint", Kind::Fingerprint), ("ice", Kind::Ice)] {
        let bytes = request(kind, [7; 12]);
        group.bench_function(name, |b| {
            b.iter(|| {
                // Header and attribute framing, then one walk over the attributes.
                let msg = Message::parse(black_box(&bytes)).unwrap();
                black_box(msg.attributes().count())
            })
        });
    }
    let bytes = request(Kind::Fingerprint, [7; 12]);
    group.bench_function("binding_fingerprint_verified", |b| {
        b.iter(|| black_box(check_fingerprint(&Message::parse(black_box(&bytes)).unwrap())))
    });
    group.finish();
}

fn respond(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_and_respond");
    group.throughput(Throughput::Elements(1));
    let config = HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() };
    let meta = Meta { src: "203.0.113.9:40000".parse().unwrap(), local: "192.0.2.1:3478".parse().unwrap() };
    let meta6 = Meta { src: "[2001:db8::9]:40000".parse().unwrap(), local: "[2001:db8::1]:3478".parse().unwrap() };
    for (name, kind, meta) in [
        ("binding", Kind::Plain, &meta),
        ("binding_fingerprint", Kind::Fingerprint, &meta),
        ("binding_fingerprint_ipv6", Kind::Fingerprint, &meta6),
        ("ice", Kind::Ice, &meta),
    ] {
        let bytes = request(kind, [7; 12]);
        let mut buf = [0u8; BUFFER_SIZE];
        let mut stats = Stats::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                // The answer overwrites the request, so each iteration puts the request back
                // (a copy of 20–108 bytes, included in the time).
                buf[..bytes.len()].copy_from_slice(&bytes);
                black_box(handle(&mut buf, black_box(bytes.len()), meta, &config, &mut stats))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, respond);
criterion_main!(benches);
