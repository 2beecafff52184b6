//! Micro-benchmarks of the sans-IO path: parse only, parse + answer in place (the whole handler
//! decision) for the request kinds that matter, FINGERPRINT / MESSAGE-INTEGRITY(-SHA256), and
//! the handler with authentication on (short-term, long-term MD5 / SHA-256 / TURN REST, the 401
//! challenge). Run: `cargo bench -p stunedge-bench`.
//! Results are recorded in bench/results/ with commit, CPU and kernel.
#![allow(missing_docs, reason = "criterion_group! generates an undocumented pub fn")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge::stun::attr::XorMappedAddress;
use stunedge::stun::integrity::{self, check_fingerprint, check_integrity_sha1};
use stunedge::stun::registry::{ATTR_MESSAGE_INTEGRITY, MAGIC_COOKIE};
use stunedge::stun::{Message, MessageType, MessageWriter};
use stunedge_bench::{Credentials, Kind, request};

fn cookie_and_id(tid: [u8; 12]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid);
    key
}

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
    let meta = Meta {
        src: "203.0.113.9:40000".parse().unwrap(),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
    let meta6 = Meta {
        src: "[2001:db8::9]:40000".parse().unwrap(),
        local: "[2001:db8::1]:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
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

fn integrity(c: &mut Criterion) {
    let mut group = c.benchmark_group("integrity");
    group.throughput(Throughput::Elements(1));
    // FINGERPRINT over a 32-byte answer (header + XOR-MAPPED-ADDRESS), as the handler computes it.
    let answer = {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_SUCCESS, &cookie_and_id([7; 12])).unwrap();
        w.add(&XorMappedAddress("203.0.113.9:40000".parse().unwrap())).unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    };
    group.bench_function("fingerprint_compute_32_bytes", |b| {
        b.iter(|| black_box(integrity::fingerprint(black_box(&answer), answer.len() - 8)))
    });
    // MESSAGE-INTEGRITY (HMAC-SHA1) and -SHA256 over an ICE-sized request, compute and verify.
    let ice = request(Kind::Ice, [7; 12]);
    let msg = Message::parse(&ice).unwrap();
    let mi = msg.attribute(ATTR_MESSAGE_INTEGRITY).unwrap();
    let key = Credentials::default().password.into_bytes();
    group.bench_function("message_integrity_sha1_compute", |b| {
        b.iter(|| {
            black_box(integrity::integrity_sha1(integrity::mac_sha1(black_box(&key)), black_box(&ice), mi.offset))
        })
    });
    group.bench_function("message_integrity_sha1_verify", |b| {
        b.iter(|| black_box(check_integrity_sha1(&Message::parse(black_box(&ice)).unwrap(), &key)))
    });
    group.bench_function("message_integrity_sha256_compute", |b| {
        b.iter(|| {
            black_box(integrity::integrity_sha256(
                integrity::mac_sha256(black_box(&key)),
                black_box(&ice),
                mi.offset,
                32,
            ))
        })
    });
    group.finish();
}

/// The handler's configuration for one listener with `[auth]` set to `auth` (TOML lines).
fn auth_config(auth: &str) -> HandlerConfig {
    // The cost of authentication alone: one source at millions of requests a second would be
    // rate limited, and a bare request's challenge is over the amplification cap.
    let text = format!(
        "[server]\nlisten = [\"192.0.2.1:3478\"]\n[limit]\nmode = \"off\"\nmax_amplification = 0\n[auth]\n{auth}"
    );
    Config::from_toml(&text, "bench").unwrap().validate(&[0]).unwrap().handlers.remove(0)
}

/// A long-term request from the bench user: USERNAME, REALM, NONCE, the algorithm attributes
/// when `sha256`, MESSAGE-INTEGRITY(-SHA256), FINGERPRINT.
fn long_term_request(username: &str, password: &str, nonce: &[u8], sha256: bool) -> Vec<u8> {
    use stunedge::auth::keys::{Algorithm, long_term_key};
    use stunedge::stun::attr::{Nonce, Realm, Username};
    use stunedge::stun::registry::{ATTR_PASSWORD_ALGORITHM, ATTR_PASSWORD_ALGORITHMS};
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &cookie_and_id([7; 12])).unwrap();
    w.add(&Username(username.as_bytes())).unwrap();
    w.add(&Realm(b"example.org")).unwrap();
    w.add(&Nonce(nonce)).unwrap();
    let algorithm = if sha256 { Algorithm::Sha256 } else { Algorithm::Md5 };
    let key = long_term_key(algorithm, username.as_bytes(), b"example.org", password.as_bytes());
    if sha256 {
        w.add_raw(ATTR_PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0]).unwrap();
        w.add_raw(ATTR_PASSWORD_ALGORITHM, &[0, 2, 0, 0]).unwrap();
        w.add_integrity_sha256(key.as_bytes(), 32).unwrap();
    } else {
        w.add_integrity_sha1(key.as_bytes()).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

/// The whole handler decision for authenticated requests, against the same request answered
/// with authentication off: the difference is the per-request cost of checking and signing.
fn auth(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    let now = 1_790_000_000;
    let meta =
        Meta { src: "203.0.113.9:40000".parse().unwrap(), local: "192.0.2.1:3478".parse().unwrap(), now, clock_ms: 1 };
    let creds = Credentials::default();
    let users = format!(
        "realm = \"example.org\"\nnonce_secret = \"bench-nonce-secret-0123456789\"\n\
         short_term_users = {{ \"{0}\" = \"{1}\" }}\nlong_term_users = {{ \"{0}\" = \"{1}\" }}\n\
         rest_secrets = [\"rest-secret\"]\n",
        creds.username, creds.password
    );
    let none = auth_config(&users);
    let short = auth_config(&format!("policy = \"required\"\nmechanism = \"short-term\"\n{users}"));
    let long = auth_config(&format!("policy = \"required\"\n{users}"));
    let nonce = long.auth.as_ref().unwrap().authenticator.nonce_for(meta.src, now);
    let rest_user = format!("{}:bench", now + 3600);
    let rest_password = {
        let mac = integrity::mac_sha1(b"rest-secret");
        String::from_utf8(stunedge::auth::keys::rest_password(&mac, rest_user.as_bytes()).to_vec()).unwrap()
    };
    let integrity_request = request(Kind::Integrity, [7; 12]);
    let cases: [(&str, &HandlerConfig, Vec<u8>); 6] = [
        ("integrity_request_auth_off", &none, integrity_request.clone()),
        ("short_term_sha1", &short, integrity_request),
        ("long_term_md5", &long, long_term_request(&creds.username, &creds.password, &nonce, false)),
        ("long_term_sha256", &long, long_term_request(&creds.username, &creds.password, &nonce, true)),
        ("long_term_rest_md5", &long, long_term_request(&rest_user, &rest_password, &nonce, false)),
        ("long_term_challenge_401", &long, request(Kind::Plain, [7; 12])),
    ];
    for (name, config, bytes) in cases {
        let mut buf = [0u8; BUFFER_SIZE];
        let mut stats = Stats::default();
        // Check once that the case does what its name says.
        buf[..bytes.len()].copy_from_slice(&bytes);
        let stunedge::handler::Action::Reply { len, .. } = handle(&mut buf, bytes.len(), &meta, config, &mut stats)
        else {
            panic!("{name}: no answer")
        };
        let answer = Message::parse(&buf[..len]).unwrap();
        let is_error = answer.message_type().class == stunedge::stun::Class::ErrorResponse;
        assert_eq!(is_error, name.ends_with("401"), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                buf[..bytes.len()].copy_from_slice(&bytes);
                black_box(handle(&mut buf, black_box(bytes.len()), &meta, config, &mut stats))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, respond, integrity, auth);
criterion_main!(benches);
