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

use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge_bench::{Kind, request};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("plain") | None => Kind::Plain,
        Some("fingerprint") => Kind::Fingerprint,
        Some("ice") => Kind::Ice,
        Some(other) => {
            eprintln!("handle_loop: unknown kind {other:?}; use plain, fingerprint or ice");
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
    let config = HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() };
    let meta = Meta { src: "203.0.113.9:40000".parse().unwrap(), local: "192.0.2.1:3478".parse().unwrap(), now: 0 };
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
