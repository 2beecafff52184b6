//! The admin endpoint of the real binary: /healthz, /readyz, /metrics, and the drain sequence
//! (SIGTERM → /readyz 503 at once, answers continue for `drain_seconds`, then a clean exit).

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use stunedge::admin::{http_get, http_get_with};

use crate::cli::{Running, free_port, write_config};
use crate::support::{binding_request, client_for, exchange, expected_answer};

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `stunedge serve` on a free UDP port with its admin endpoint on a free TCP port and the given
/// drain, once it answers; returns the process and both addresses.
fn serve_with_drain(name: &str, drain_seconds: u64) -> (Running, SocketAddr, SocketAddr) {
    serve_admin(name, &format!("drain_seconds = {drain_seconds}\n"))
}

/// `stunedge serve` with `admin_fields` added to its `[admin]` section, once both answer.
fn serve_admin(name: &str, admin_fields: &str) -> (Running, SocketAddr, SocketAddr) {
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config =
        write_config(name, &format!("[server]\nlisten = [\"{udp}\"]\n[admin]\nlisten = \"{admin}\"\n{admin_fields}"));
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.keep(config);
    server.wait_answering(udp);
    // The admin endpoint starts just after the workers: wait for it too.
    let started = Instant::now();
    while http_get(admin, "/healthz").is_err() {
        assert!(started.elapsed() < Duration::from_secs(2), "admin endpoint not up: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, udp, admin)
}

#[test]
fn drain_flips_readyz_keeps_answering_then_exits() {
    let (mut server, udp, admin) = serve_with_drain("drain.toml", 2);
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(admin, "/readyz").unwrap(), (200, "ready\n".to_string()));
    assert_eq!(http_get(admin, "/nope").unwrap().0, 404);
    let (status, metrics) = http_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE stunedge_received_datagrams_total counter"), "{metrics}");

    let client = client_for(udp);
    let answer = |tid: u8| exchange(&client, udp, &binding_request([tid; 12], &[]));
    server.signal(libc::SIGTERM);
    let term = Instant::now();
    // /readyz turns 503 at once (the main loop looks every 50 ms).
    while http_get(admin, "/readyz").unwrap().0 != 503 {
        assert!(term.elapsed() < Duration::from_secs(1), "readyz still 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(http_get(admin, "/readyz").unwrap(), (503, "draining\n".to_string()));
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200, "alive while draining");
    // Answers continue during the drain.
    for tid in 1..=3 {
        assert_eq!(answer(tid), expected_answer(client.local_addr().unwrap(), [tid; 12]));
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(server.alive(), "still running {:?} after SIGTERM", term.elapsed());
    assert_eq!(server.wait_exit(Duration::from_secs(4)), 0);
    let took = term.elapsed();
    assert!(took >= Duration::from_millis(1900), "exited after {took:?}, before the 2 s drain");
    assert!(server.stderr().contains("SIGTERM: draining for 2 s"), "{}", server.stderr());
}

#[test]
fn sigint_stops_at_once_even_with_a_drain_configured() {
    let (mut server, _, _) = serve_with_drain("drain-int.toml", 30);
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(1)), 0);
}

#[test]
fn admin_port_in_use_exits_2_naming_admin_listen() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(
        "admin-busy.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"{}\"\n",
            free_port(),
            busy.local_addr().unwrap()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stunedge"))
        .args(["serve", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on admin.listen"), "{err}");
}

/// `(soft, hard)` limits on open files of this process, from /proc/self/limits.
fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    let soft = numbers.next().unwrap_or(u64::MAX);
    (soft, numbers.next().unwrap_or(soft))
}

/// Makes sure this process may open `need` descriptors: raises the soft RLIMIT_NOFILE to the
/// hard limit with util-linux's `prlimit` (setrlimit through libc would need `unsafe`, which this
/// crate denies). Returns false (the test skips, or fails in CI) when that is not possible.
fn ensure_nofile(need: u64) -> bool {
    let (soft, hard) = nofile_limits();
    if soft >= need {
        return true;
    }
    assert!(hard >= need, "the hard limit on open files ({hard}) is below the {need} this test needs");
    if crate::support::tool_missing("prlimit") {
        return false;
    }
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");
    assert!(nofile_limits().0 >= need);
    true
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The slowest of `rounds` GETs of `path`, each of which must answer 200.
fn worst_latency(admin: SocketAddr, path: &str, rounds: usize) -> Duration {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let (status, _) = http_get(admin, path).unwrap();
            assert_eq!(status, 200, "{path}");
            started.elapsed()
        })
        .max()
        .unwrap()
}

/// A slowloris client: the start of a request head, then one more header byte every 300 ms,
/// never finishing. Returns how long the server kept the connection open (`None`: still open
/// after `give_up`).
fn slowloris(admin: SocketAddr, give_up: Duration) -> Option<Duration> {
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
    let mut sent = 0;
    while started.elapsed() < give_up {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_err() {
            return Some(started.elapsed());
        }
        sent += 1;
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(_) => return Some(started.elapsed()), // EOF (or an answer, then EOF)
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// Issue 14: 2,000 idle connections and a slowloris client against the admin port. The bounds
/// this test states:
/// - `/healthz` and `/metrics` each answer within 100 ms (the median of 20 requests each; the
///   worst within 500 ms) while the connections are open;
/// - the server holds at most 256 client connections (its descriptor count stays within
///   baseline + 256 + 8), so the rest were closed by it;
/// - its RSS stays within baseline + 20 MB while they are open, and within baseline + 10 MB
///   after they closed;
/// - the slowloris connection is closed within 5 s (the head deadline is 3 s), although it
///   keeps sending.
#[test]
fn admin_stays_fast_and_bounded_under_2000_idle_connections_and_a_slowloris() {
    const IDLE: usize = 2000;
    const WORST: Duration = Duration::from_millis(100);
    const MB: u64 = 1 << 20;
    if !ensure_nofile(IDLE as u64 + 512) {
        return;
    }
    let (mut server, _, admin) = serve_with_drain("flood.toml", 0);
    let pid = server.pid();
    // Warm up: the first scrape builds the exporter's families.
    for _ in 0..5 {
        worst_latency(admin, "/metrics", 1);
        worst_latency(admin, "/healthz", 1);
    }
    let (base_rss, base_fds) = (rss(pid), open_fds(pid));

    let idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|i| {
            std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    // After the flood, so that it is not the oldest connection (evicted first) but must be
    // closed by the head deadline.
    let loris = std::thread::spawn(move || slowloris(admin, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));

    // The median must stay fast; the worst of 20 only under a looser bound, as one scheduling
    // hiccup of a loaded 2-CPU machine (the other tests run beside this one) can cost 100 ms.
    let typical = |path: &str| {
        let mut took: Vec<Duration> = (0..20).map(|_| worst_latency(admin, path, 1)).collect();
        took.sort_unstable();
        (took[took.len() / 2], took[took.len() - 1])
    };
    let (healthz_median, healthz) = typical("/healthz");
    let (metrics_median, metrics) = typical("/metrics");
    assert!(healthz_median < WORST, "/healthz median {healthz_median:?} with {IDLE} idle connections open");
    assert!(metrics_median < WORST, "/metrics median {metrics_median:?} with {IDLE} idle connections open");
    let (flood_rss, flood_fds) = (rss(pid), open_fds(pid));
    eprintln!(
        "worst /healthz {healthz:?}, /metrics {metrics:?}; RSS {} -> {} KiB; fds {base_fds} -> {flood_fds}",
        base_rss / 1024,
        flood_rss / 1024
    );
    assert!(healthz < 5 * WORST, "/healthz took {healthz:?} with {IDLE} idle connections open");
    assert!(metrics < 5 * WORST, "/metrics took {metrics:?} with {IDLE} idle connections open");
    assert!(flood_fds <= base_fds + 256 + 8, "the server holds {flood_fds} descriptors (baseline {base_fds})");
    assert!(flood_rss <= base_rss + 20 * MB, "RSS grew from {base_rss} to {flood_rss} bytes");

    let held = loris.join().unwrap();
    eprintln!("slowloris held for {held:?}");
    assert!(
        held.is_some_and(|d| d < Duration::from_secs(5)),
        "the slowloris connection was held {held:?} (None: still open after 10 s)"
    );

    drop(idle);
    let closed = Instant::now();
    while open_fds(pid) > base_fds + 2 && closed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after_rss = rss(pid);
    eprintln!("after close: RSS {} KiB, fds {}", after_rss / 1024, open_fds(pid));
    assert!(
        after_rss <= base_rss + 10 * MB,
        "RSS {after_rss} bytes after the connections closed (baseline {base_rss})"
    );
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200);
    assert!(server.alive());
}

/// `admin.metrics_token_file`: `/metrics` answers 401 without the bearer token or with a wrong
/// one, 200 with it; `/healthz` and `/readyz` need none; a SIGHUP after the file changed
/// swaps the token; the log never shows it.
#[test]
fn metrics_token_guards_metrics_not_probes_and_reloads() {
    let file = write_config("metrics-token", "first-token\n");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Relative: taken from the configuration file's directory (both are in the temp dir).
    let relative = file.file_name().unwrap().to_str().unwrap().to_string();
    let (mut server, _, admin) = serve_admin("token.toml", &format!("metrics_token_file = \"{relative}\"\n"));
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    let metrics = |token: &str| http_get_with(admin, "/metrics", &[&bearer(token)]).unwrap();
    assert_eq!(http_get(admin, "/metrics").unwrap(), (401, "unauthorized\n".to_string()));
    assert_eq!(metrics("wrong-token").0, 401);
    assert_eq!(metrics("first-toke").0, 401);
    let (status, body) = metrics("first-token");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE stunedge_received_datagrams_total counter"), "{body}");
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(admin, "/readyz").unwrap().0, 200);

    std::fs::write(&file, "second-token\n").unwrap();
    server.signal(libc::SIGHUP);
    let sent = Instant::now();
    while metrics("second-token").0 != 200 {
        assert!(sent.elapsed() < Duration::from_secs(2), "token not reloaded: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics("first-token").0, 401);
    let log = server.stderr();
    assert!(!log.contains("first-token") && !log.contains("second-token"), "{log}");
}

/// Sends `request` as is and returns everything the server sent before closing.
fn raw(admin: SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    // A refused request may be closed with its unread bytes: a reset after the answer is fine.
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// The request limits over the wire: a head over 8 KiB is 431, methods other than GET and
/// HEAD are 405, HEAD gets the head alone, and every answer closes the connection.
#[test]
fn admin_request_limits_over_the_wire() {
    let (_server, _, admin) = serve_admin("limits.toml", "");
    let mut long = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
    long.resize(9000, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    let reply = raw(admin, &long);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    let reply = raw(admin, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 405 ") && reply.contains("Allow: GET, HEAD\r\n"), "{reply}");
    let reply = raw(admin, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("Connection: close\r\n\r\n"), "{reply}");
    let reply = raw(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{reply}");
}
