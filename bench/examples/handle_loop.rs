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

use std::hint::black_box;

use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge_bench::{Kind, request};

fn main() {
    let mut args = std::env::args().skip(1);
    // The request kind, and the [auth] section of the listener that answers it.
    let (kind, auth) = match args.next().as_deref() {
        Some("plain") | None => (Kind::Plain, None),
        Some("fingerprint") => (Kind::Fingerprint, None),
        Some("ice") => (Kind::Ice, None),
        // Short-term credentials checked and the answer signed (the bench user's password).
        Some("short-term") => (Kind::Integrity, Some("mechanism = \"short-term\"")),
        // A long-term listener's 401 challenge to a request without credentials.
        Some("challenge") => (Kind::Plain, Some("mechanism = \"long-term\"")),
        Some(other) => {
            eprintln!("handle_loop: unknown kind {other:?}; use plain, fingerprint, ice, short-term or challenge");
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
        None => HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() },
        Some(auth) => {
            let user = stunedge_bench::Credentials::default();
            let text = format!(
                "[server]\nlisten = [\"192.0.2.1:3478\"]\n[auth]\npolicy = \"required\"\n{auth}\n\
                 nonce_secret = \"handle-loop-nonce-secret\"\n\
                 short_term_users = {{ \"{0}\" = \"{1}\" }}\nlong_term_users = {{ \"{0}\" = \"{1}\" }}\n",
                user.username, user.password
            );
            let config = Config::from_toml(&text, "handle_loop").and_then(|c| c.validate(&[0]));
            config.unwrap_or_else(|e| panic!("handle_loop's own config: {e}")).handlers.remove(0)
        }
    };
    let meta = Meta {
        src: "203.0.113.9:40000".parse().unwrap(),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
    let bytes = request(kind, [7; 12]);
    let mut buf = [0u8; BUFFER_SIZE];
    let mut stats = Stats::default();
    let started = std::time::Instant::now();
    let mut replies = 0u64;
    for _ in 0..n {
        buf[..bytes.len()].copy_from_slice(&bytes);
        if let Action::Reply { .. } = black_box(handle(&mut buf, black_box(bytes.len()), &meta, &config, &mut stats)) {
            replies += 1;
        }
    }
    assert_eq!(replies, n, "every request is answered");
    eprintln!("{kind:?}: {:.1} ns/op over {n}", started.elapsed().as_nanos() as f64 / n as f64);
}
