//! The load generator's TCP mode counts what really happened: against stunedge's own stream
//! plane (in-process) its sent and valid counts equal the server's message and answer
//! counters, in the closed and the open loop; against a deliberately faulty server every wrong
//! address, duplicate, split answer, lost request, closed connection and framing error is
//! counted exactly as the server made it. And the stream flood does what it reports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge::stream::Plane;
use stunedge_bench::Kind;
use stunedge_bench::flood::stream::{self as flood, StreamFloodConfig};
use stunedge_bench::load::{self, Progress};
use stunedge_bench::stream;

/// stunedge's stream plane alone on loopback (one thread), with `extra` lines in `[stream]`.
fn plane(extra: &str) -> Plane {
    let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[stream]\ntcp = [\"127.0.0.1:0\"]\n{extra}\n");
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let settings = Config::from_toml(&text, "test").unwrap().validate(&[cpu]).unwrap();
    Plane::start(&settings.stream).unwrap().expect("a TCP listener")
}

fn load_config(server: SocketAddr, threads: usize, connections: usize, window: usize, ms: u64) -> load::Config {
    load::Config {
        server,
        cpus: vec![None; threads],
        sockets: connections,
        sources: 1,
        duration: Duration::from_millis(ms),
        rate: 0,
        window,
        batch: 1,
        mix: vec![(Kind::Plain, 1)],
        credentials: Default::default(),
        timeout: Duration::from_millis(300),
        junk_percent: 0,
    }
}

fn progress(threads: usize) -> Vec<Arc<Progress>> {
    (0..threads).map(|_| Arc::new(Progress::default())).collect()
}

/// The plane's TCP counters: accepted, messages, answers, open.
fn counts(plane: &Plane) -> (u64, u64, u64, u64) {
    let view = plane.viewer()();
    let t = view.transports.iter().find(|t| t.transport == "tcp").unwrap();
    (t.accepted, t.messages, t.answers, t.open)
}

#[test]
fn pipelined_load_agrees_with_stunedges_counters() {
    let plane = plane("messages_per_second = 1000000\nmessage_burst = 1000000");
    let server = plane.local_addrs()[0].0;
    let mut config = load_config(server, 2, 3, 16, 600);
    config.mix = vec![(Kind::Plain, 2), (Kind::Fingerprint, 1), (Kind::Ice, 1)];
    let r = stream::run(&config, false, &progress(2)).unwrap();
    assert!(r.report.sent > 1000, "the load ran: {r:?}");
    assert_eq!((r.report.invalid, r.report.lost, r.report.late), (0, 0, 0), "{r:?}");
    assert_eq!((r.closed_by_server, r.framing_errors, r.reconnects), (0, 0, 0));
    assert_eq!((r.report.valid, r.report.received), (r.report.sent, r.report.sent));
    assert_eq!((r.report.sockets, r.window, r.transport, r.report.mode), (6, 16, "tcp", "closed"));
    assert!(r.report.latency.p50_us > 0.0 && r.report.latency.p99_us >= r.report.latency.p50_us);
    // Every answer was read, so the server has counted every message and answer.
    let (accepted, messages, answers, _) = counts(&plane);
    assert_eq!((accepted, messages, answers), (6, r.report.sent, r.report.valid));

    // Open loop: 400 requests/s over 4 connections for 0.5 s.
    let mut open = load_config(server, 1, 4, 4, 500);
    open.rate = 400;
    let o = stream::run(&open, false, &progress(1)).unwrap();
    assert_eq!(o.report.mode, "open");
    assert!((180..=201).contains(&o.report.sent), "{o:?}");
    assert_eq!((o.report.valid, o.report.invalid, o.report.lost, o.report.not_sent), (o.report.sent, 0, 0, 0));
    let (accepted, messages, answers, _) = counts(&plane);
    assert_eq!((accepted, messages, answers), (10, r.report.sent + o.report.sent, r.report.valid + o.report.valid));
    plane.stop();
}

#[test]
fn stunedges_message_rate_holds_a_connection_back_without_loss() {
    // 20 messages/s after a burst of 64: a closed loop over one connection for 1 s gets about
    // 64 + 20 answers, none lost (the server stops reading; TCP holds the rest).
    let plane = plane("");
    let server = plane.local_addrs()[0].0;
    let mut c = load_config(server, 1, 1, 8, 1000);
    c.timeout = Duration::from_secs(2);
    let r = stream::run(&c, false, &progress(1)).unwrap();
    assert_eq!((r.report.invalid, r.report.lost), (0, 0), "{r:?}");
    assert!((80..=100).contains(&r.report.valid), "burst 64 + 20/s for ~1 s: {r:?}");
    plane.stop();
}

/// What the faulty server did.
#[derive(Default)]
struct Faults {
    requests: AtomicU64,
    good: AtomicU64,
    wrong_address: AtomicU64,
    duplicates: AtomicU64,
    split: AtomicU64,
    closed: AtomicU64,
}

/// A STUN-over-TCP server (stunedge's sans-IO handler behind blocking sockets) that, on each
/// connection, answers request k with the wrong port when k % 7 == 3, else twice when
/// k % 11 == 5, one byte per write when k % 13 == 0, garbage instead when `garbage`, and closes the
/// connection after `close_after` requests.
fn faulty_server(
    garbage: bool,
    close_after: Option<u64>,
) -> (SocketAddr, Arc<Faults>, Arc<AtomicBool>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (f, s) = (faults.clone(), stop.clone());
    let acceptor = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while !s.load(SeqCst) {
            match listener.accept() {
                Ok((sock, peer)) => {
                    let f = f.clone();
                    conns.push(std::thread::spawn(move || serve(sock, peer, addr, &f, garbage, close_after)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        for c in conns {
            c.join().unwrap();
        }
    });
    (addr, faults, stop, acceptor)
}

fn serve(
    mut sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    f: &Faults,
    garbage: bool,
    close_after: Option<u64>,
) {
    sock.set_nonblocking(false).unwrap();
    sock.set_nodelay(true).unwrap();
    let config = HandlerConfig::default();
    let mut stats = Stats::default();
    let mut buf = [0u8; BUFFER_SIZE];
    for k in 0u64.. {
        if close_after == Some(k) {
            f.closed.fetch_add(1, SeqCst);
            return;
        }
        if sock.read_exact(&mut buf[..20]).is_err() {
            return;
        }
        let len = 20 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        sock.read_exact(&mut buf[20..len]).unwrap();
        f.requests.fetch_add(1, SeqCst);
        if garbage {
            let _ = sock.write_all(&[0xC3; 20]);
            continue;
        }
        let src = if k % 7 == 3 { SocketAddr::new(peer.ip(), peer.port() ^ 1) } else { peer };
        let meta = Meta { src, local, now: 0, clock_ms: 1 };
        let Action::Reply { len, .. } = handle(&mut buf, len, &meta, &config, &mut stats) else { panic!("no answer") };
        let answer = &buf[..len];
        let written = if k.is_multiple_of(13) {
            f.split.fetch_add(1, SeqCst);
            answer.iter().try_for_each(|b| sock.write_all(std::slice::from_ref(b)))
        } else if k % 11 == 5 && k % 7 != 3 {
            f.duplicates.fetch_add(1, SeqCst);
            sock.write_all(&[answer, answer].concat())
        } else {
            sock.write_all(answer)
        };
        if written.is_err() {
            return;
        }
        if k % 7 == 3 {
            f.wrong_address.fetch_add(1, SeqCst);
        } else {
            f.good.fetch_add(1, SeqCst);
        }
    }
}

#[test]
fn every_fault_of_a_server_is_counted_exactly() {
    let (server, faults, stop, acceptor) = faulty_server(false, None);
    let r = stream::run(&load_config(server, 2, 2, 4, 500), false, &progress(2)).unwrap();
    stop.store(true, SeqCst);
    acceptor.join().unwrap(); // the generator closed its connections: every server thread ended
    let f = |c: &AtomicU64| c.load(SeqCst);
    let kind = |name: &str| r.report.invalid_by_kind.get(name).copied().unwrap_or(0);
    assert!(f(&faults.requests) > 100 && f(&faults.split) > 0 && f(&faults.duplicates) > 0, "too little ran: {r:?}");
    assert_eq!(r.report.sent, f(&faults.requests));
    assert_eq!(r.report.valid, f(&faults.good));
    assert_eq!(kind("wrong_address"), f(&faults.wrong_address));
    assert_eq!(kind("duplicate"), f(&faults.duplicates));
    assert_eq!(r.report.invalid, f(&faults.wrong_address) + f(&faults.duplicates));
    assert_eq!(r.report.received, r.report.valid + r.report.invalid);
    // A request whose only answer was wrong is never answered: lost after the timeout.
    assert_eq!((r.report.lost, r.report.late), (f(&faults.wrong_address), 0));
    assert_eq!(r.report.sent, r.report.valid + r.report.lost);
    assert_eq!((r.closed_by_server, r.framing_errors), (0, 0));
}

#[test]
fn garbage_ends_a_connection_and_a_closed_one_is_reopened_on_request() {
    let (server, faults, stop, acceptor) = faulty_server(true, None);
    let r = stream::run(&load_config(server, 1, 3, 4, 200), false, &progress(1)).unwrap();
    stop.store(true, SeqCst);
    acceptor.join().unwrap();
    // Each connection: its 4 requests, one garbage "answer" that ends it, its 4 requests lost.
    assert_eq!((r.framing_errors, r.closed_by_server), (3, 0), "{r:?}");
    assert!(faults.requests.load(SeqCst) >= 3);
    assert_eq!(r.report.sent, 12);
    assert_eq!((r.report.invalid_by_kind.get("malformed"), r.report.valid, r.report.lost), (Some(&3), 0, 12));

    // A server that closes every connection after 10 requests: without reconnecting, each
    // connection ends; with it, the load goes on over new connections.
    let (server, faults, stop, acceptor) = faulty_server(false, Some(10));
    let mut c = load_config(server, 1, 2, 4, 300);
    c.timeout = Duration::from_millis(100);
    let once = stream::run(&c, false, &progress(1)).unwrap();
    // 10 requests answered per connection, 1 in 7 with a wrong address (k = 3): 9 valid each.
    assert_eq!((once.closed_by_server, once.reconnects, once.report.valid), (2, 0, 18), "{once:?}");
    assert_eq!(once.report.sent, once.report.valid + once.report.lost);
    let again = stream::run(&c, true, &progress(1)).unwrap();
    stop.store(true, SeqCst);
    acceptor.join().unwrap();
    assert!(again.reconnects >= 4 && again.closed_by_server >= again.reconnects, "{again:?}");
    assert!(again.report.valid > 36, "{again:?}");
    assert_eq!(again.report.sent, again.report.valid + again.report.lost);
    assert!(faults.closed.load(SeqCst) >= 2 + again.closed_by_server);
}

#[test]
fn the_stream_flood_holds_connections_until_the_servers_timeouts_close_them() {
    let plane = plane("first_message_timeout = 0.3\nidle_timeout = 1.5");
    let server = plane.local_addrs()[0].0;
    let ready = std::env::temp_dir().join(format!("stunedge-flood-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let started = Instant::now();
    let r = flood::run(&StreamFloodConfig {
        tcp: server,
        tls: None,
        idle: 40,
        slowloris: 6,
        slowloris_interval: Duration::from_millis(200),
        handshake: 5,
        retry: Duration::from_millis(100),
        sources: 4,
        max_connecting: 16,
        duration: Duration::from_millis(800),
        hold: Duration::from_secs(5),
        stop: Arc::new(AtomicBool::new(false)),
        ready_file: Some(ready.clone()),
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), "ready\n");
    let _ = std::fs::remove_file(&ready);
    assert!(started.elapsed() < Duration::from_secs(4), "the hold ended when the server had closed all");
    assert_eq!((r.idle.connects, r.idle.answered, r.idle.closed_by_server), (40, 40, 0), "{r:?}");
    assert!(r.idle_ready_s >= 0.0 && r.peak_open >= 46);
    // Slowloris never completes a message in 0.3 s: closed by first_message_timeout, reopened.
    assert!(r.slowloris.closed_by_server >= 6 && r.slowloris.bytes_sent >= 6, "{r:?}");
    // No TLS listener: the handshake group does not run.
    assert_eq!((r.handshake.slots, r.handshake.connects), (5, 0));
    // The hold: everything left open was closed by the server (idle and first-message timeouts).
    assert_eq!(r.hold_closed_by_server, r.hold_open, "{r:?}");
    assert!(r.hold_open >= 40);
    let (accepted, messages, answers, open) = counts(&plane);
    // (A connect still in progress when the flood ended may have been accepted too.)
    assert!(accepted >= r.idle.connects + r.slowloris.connects, "{accepted} {r:?}");
    assert_eq!((messages, answers, open), (40, 40, 0));
    plane.stop();
}
