//! The admin endpoint of the real binary: /healthz, /readyz, /metrics, and the drain sequence
//! (SIGTERM → /readyz 503 at once, answers continue for `drain_seconds`, then a clean exit).

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use stunedge::admin::http_get;

use crate::cli::{Running, free_port, write_config};
use crate::support::{binding_request, client_for, exchange, expected_answer};

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `stunedge serve` on a free UDP port with its admin endpoint on a free TCP port and the given
/// drain, once it answers; returns the process and both addresses.
fn serve_with_drain(name: &str, drain_seconds: u64) -> (Running, SocketAddr, SocketAddr) {
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config = write_config(
        name,
        &format!("[server]\nlisten = [\"{udp}\"]\n[admin]\nlisten = \"{admin}\"\ndrain_seconds = {drain_seconds}\n"),
    );
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
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
