//! A tight loop over `handler::handle` for instruction counting, which is repeatable where wall
//! time on a shared machine is not:
//!
//! ```sh
//! cargo build --release -p stunedge-bench --example handle_loop
//! valgrind --tool=callgrind target/release/examples/handle_loop fingerprint 100000
//! valgrind --tool=callgrind target/release/examples/handle_loop fingerprint 200000
//! ```
//!
//! The difference of the two totals divided by 100000 is instructions per request. Without
//! valgrind it prints ns/op (noisy; criterion's `cargo bench` is the timing of record).
//!
//! Kinds: plain, fingerprint, ice, short-term, challenge; and `limited`: plain requests through
//! the reflection defence with the default `[limit]` (enforce), from 65,536 sources spread over
//! every /18, the clock moving 1 ms per 16 requests, so every answer passes and every level's
//! key is looked up and charged in a 524,288-key (4 MiB) table. `HL_SOURCES=1024` uses fewer
//! sources (a table that stays in cache: the cost of the limiter's instructions alone).
//! `turn-lb`: plain requests on a listener that balances TURN (`[turn_lb]` with three
//! backends): compared with `plain`, what balancing costs the Binding path (nothing, is the
//! claim).

use std::hint::black_box;

use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge_bench::{Kind, request};

fn main() {
    let mut args = std::env::args().skip(1);
    // The request kind, and the [auth] section of the listener that answers it.
    let arg = args.next();
    let limited = arg.as_deref() == Some("limited");
    let balancing = arg.as_deref() == Some("turn-lb");
    let (kind, auth) = match arg.as_deref() {
        Some("plain" | "limited" | "turn-lb") | None => (Kind::Plain, None),
        Some("fingerprint") => (Kind::Fingerprint, None),
        Some("ice") => (Kind::Ice, None),
        // Short-term credentials checked and the answer signed (the bench user's password).
        Some("short-term") => (Kind::Integrity, Some("mechanism = \"short-term\"")),
        // A long-term listener's 401 challenge to a request without credentials.
        Some("challenge") => (Kind::Plain, Some("mechanism = \"long-term\"")),
        Some(other) => {
            eprintln!(
                "handle_loop: unknown kind {other:?}; use plain, fingerprint, ice, short-term, challenge, limited or turn-lb"
            );
            std::process::exit(2);
        }
    };
    let n: u64 = match args.next().map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("handle_loop: bad iteration count: {e}");
            std::process::exit(2);
        }
    };
    let config = match auth {
        None if limited => {
            let params = stunedge::limit::Params::default();
            let rules = std::sync::Arc::new(stunedge::limit::Rules::new(params.clone(), vec![3478]));
            let shared = std::sync::Arc::new(stunedge::limit::Shared::new(params.table_size));
            let limit = stunedge::limit::Limit::new(rules, shared);
            HandlerConfig { rfc3489_classic: true, limit, ..HandlerConfig::default() }
        }
        None if balancing => {
            use stunedge::lb::{BackendAddr, Balancer, KeyRule, ProbeSettings};
            let backends: Vec<BackendAddr> = ["192.0.2.50:3478", "192.0.2.51:3478", "[2001:db8::50]:3478"]
                .iter()
                .enumerate()
                .map(|(i, a)| BackendAddr::new(&format!("b{i}"), a.parse().unwrap()))
                .collect();
            let balancer = Balancer::new(&backends, [3; 16], KeyRule::default(), ProbeSettings::default(), None);
            let turn = Some(std::sync::Arc::new(balancer.expect("a valid pool")));
            HandlerConfig { rfc3489_classic: true, turn, ..HandlerConfig::default() }
        }
        None => HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() },
        Some(auth) => {
            let user = stunedge_bench::Credentials::default();
            let text = format!(
                "[server]\nlisten = [\"192.0.2.1:3478\"]\n[limit]\nmode = \"off\"\nmax_amplification = 0\n\
                 [auth]\npolicy = \"required\"\n{auth}\n\
                 nonce_secret = \"handle-loop-nonce-secret\"\n\
                 short_term_users = {{ \"{0}\" = \"{1}\" }}\nlong_term_users = {{ \"{0}\" = \"{1}\" }}\n",
                user.username, user.password
            );
            let config = Config::from_toml(&text, "handle_loop").and_then(|c| c.validate(&[0]));
            config.unwrap_or_else(|e| panic!("handle_loop's own config: {e}")).handlers.remove(0)
        }
    };
    let mut meta = Meta {
        src: "203.0.113.9:40000".parse().unwrap(),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
    // `limited`: 65,536 sources (or HL_SOURCES), first octet 1..=223, then the index's bytes.
    let count = std::env::var("HL_SOURCES").ok().and_then(|v| v.parse().ok()).unwrap_or(65_536u32);
    let sources: Vec<std::net::SocketAddr> = (0..count)
        .map(|i| std::net::SocketAddr::from(([1 + (i % 223) as u8, (i >> 8) as u8, i as u8, 7], 40000)))
        .collect();
    let bytes = request(kind, [7; 12]);
    let mut buf = [0u8; BUFFER_SIZE];
    let mut stats = Stats::default();
    let started = std::time::Instant::now();
    let mut replies = 0u64;
    for i in 0..n {
        if limited {
            meta.src = sources[(i % sources.len() as u64) as usize];
            meta.clock_ms = 1 + i / 16;
        }
        buf[..bytes.len()].copy_from_slice(&bytes);
        if let Action::Reply { .. } = black_box(handle(&mut buf, black_box(bytes.len()), &meta, &config, &mut stats)) {
            replies += 1;
        }
    }
    assert_eq!(replies, n, "every request is answered: {stats}");
    eprintln!("{kind:?}: {:.1} ns/op over {n}", started.elapsed().as_nanos() as f64 / n as f64);
    if limited {
        let pass =
            stats.limit_decisions(0, stunedge::counters::AnswerClass::Success, stunedge::counters::LimitAction::Pass);
        eprintln!("limited: {pass} of {n} passed");
    }
}
