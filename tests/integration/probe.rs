//! The STUN client (`stunedge::client`, `stunedge probe`) against the server on loopback: plain
//! Binding on IPv4 and IPv6, short-term and long-term credentials (the 401 challenge answered,
//! SHA-256 negotiated), a wrong password, a silent server (RFC 8489 §6.2.1 schedule, then a
//! timeout), a closed port (ICMP unreachable), and the CLI's JSON.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use stunedge::client::{Credentials, ProbeError, Retransmit, binding};
use stunedge::config::Config;
use stunedge::worker::Server;

fn server() -> Server {
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let (long, short) = (crate::cli::free_port(), crate::cli::free_port());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\", \"127.0.0.2:{long}\", \"127.0.0.3:{short}\"]\n\
         [io]\ncpus = [{cpu}]\n[auth]\nrealm = \"example.org\"\nlong_term_users = {{ alice = \"wonderland\" }}\n\
         short_term_users = {{ bob = \"builder\" }}\nlisteners = [{{ listen = \"127.0.0.2:{long}\", policy = \"required\" }}, \
         {{ listen = \"127.0.0.3:{short}\", policy = \"required\", mechanism = \"short-term\" }}]\n"
    );
    Server::start(&Config::from_toml(&text, "test").unwrap().validate(&[cpu]).unwrap()).unwrap()
}

fn fast() -> Retransmit {
    Retransmit { rto: Duration::from_millis(100), rc: 4, rm: 4 }
}

fn socket_for(addr: SocketAddr) -> UdpSocket {
    UdpSocket::bind(if addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap()
}

#[test]
fn binding_with_and_without_credentials() {
    let server = server();
    let a = server.local_addrs().to_vec();
    for addr in [a[0], a[1]] {
        let s = socket_for(addr);
        let b = binding(&s, addr, None, &fast()).unwrap();
        assert_eq!(b.mapped, s.local_addr().unwrap(), "{addr}");
        assert!(!b.authenticated);
    }
    let alice = Credentials::LongTerm { username: "alice".into(), password: "wonderland".into() };
    let s = socket_for(a[2]);
    let b = binding(&s, a[2], Some(&alice), &fast()).unwrap();
    assert!(b.authenticated, "answer signed and checked");
    assert_eq!(b.mapped, s.local_addr().unwrap());
    let wrong = Credentials::LongTerm { username: "alice".into(), password: "nope".into() };
    match binding(&socket_for(a[2]), a[2], Some(&wrong), &fast()) {
        Err(e @ ProbeError::ErrorResponse { code: 401, .. }) => {
            assert_eq!(e.to_string(), "error response 401 (Unauthenticated)")
        }
        other => panic!("{other:?}"),
    }
    // Without credentials the request is bare (28 bytes with FINGERPRINT): its 96-byte
    // challenge would pass the default 3× amplification cap, so the listener stays silent. With
    // credentials (above) the client's first request carries SOFTWARE and gets its challenge.
    assert!(matches!(binding(&socket_for(a[2]), a[2], None, &fast()), Err(ProbeError::Timeout { .. })));
    let bob = Credentials::ShortTerm { username: "bob".into(), password: "builder".into() };
    assert!(binding(&socket_for(a[3]), a[3], Some(&bob), &fast()).unwrap().authenticated);
}

#[test]
fn silence_times_out_on_the_rfc_schedule_and_a_closed_port_is_unreachable() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let retransmit = Retransmit { rto: Duration::from_millis(20), rc: 3, rm: 2 };
    let start = Instant::now();
    match binding(&socket_for(addr), addr, None, &retransmit) {
        Err(ProbeError::Timeout { attempts: 3, after }) => {
            // Sends at 0, 20, 60 ms; timeout 40 ms after the last: 100 ms.
            assert!(after >= Duration::from_millis(100) && start.elapsed() < Duration::from_secs(2), "{after:?}");
        }
        other => panic!("{other:?}"),
    }
    let mut buf = [0u8; 64];
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut seen = 0;
    while silent.recv_from(&mut buf).is_ok() {
        seen += 1;
    }
    assert_eq!(seen, 3, "three requests reached the silent server");

    drop(silent);
    match binding(&socket_for(addr), addr, None, &retransmit) {
        Err(e @ ProbeError::Unreachable(_)) => assert!(e.to_string().starts_with("unreachable"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn probe_command_prints_json() {
    let server = server();
    let addr = server.local_addrs()[0];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stunedge"))
        .args(["probe", &addr.to_string(), "--json", "--rto-ms", "100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("{{\"server\": \"{addr}\", \"local\": \"127.0.0.1:")), "{text}");
    let local = text.split("\"local\": \"").nth(1).unwrap().split('"').next().unwrap();
    assert!(text.contains(&format!("\"mapped\": \"{local}\"")), "mapped is the local address on loopback: {text}");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_stunedge")).args(["probe", "no such host!"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));
}

/// `--nat` against nothing: mapping test I goes unanswered, which is the "UDP blocked" result
/// (exit 0, it is an answer); against a server outside RFC 5780 mode: an error naming the missing
/// OTHER-ADDRESS (exit 1).
#[test]
fn nat_mode_reports_udp_blocked_and_a_server_without_rfc5780() {
    let bin = env!("CARGO_BIN_EXE_stunedge");
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let target = silent.local_addr().unwrap().to_string();
    let args = ["probe", "--nat", "--json", "--rto-ms", "20", "--retries", "2", &target];
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"nat_type\": \"UDP blocked\""), "{text}");
    assert!(text.contains("\"mapped\": null"), "{text}");

    let server = server();
    let plain = server.local_addrs()[0].to_string();
    let args = ["probe", "--nat", "--rto-ms", "100", "--retries", "3", &plain];
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no OTHER-ADDRESS in the answer: the server does not run RFC 5780"), "{err}");
}

/// Against a server that never answers, `probe` says on stderr, after the third request, that
/// it is still waiting; stdout stays one JSON object.
#[test]
fn probe_says_on_stderr_that_it_is_still_waiting() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let target = silent.local_addr().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stunedge"))
        .args(["probe", "--json", "--rto-ms", "50", "--retries", "4", &target.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let waiting: Vec<&str> = err.lines().filter(|l| l.contains("yet")).collect();
    assert_eq!(waiting.len(), 1, "one line: {err}");
    // Sends at 0, 50, 150 and 350 ms; gives up 16 RTOs after the last.
    assert_eq!(
        waiting[0],
        format!("stunedge probe: no answer from {target} yet (3 requests sent); retrying until 1.15s after the first")
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(json["server"], target.to_string());
    let error = json["error"].as_str().unwrap();
    assert!(error.starts_with("no answer after 1.") && error.ends_with(" s and 4 requests"), "{error}");
}

/// `--rto-ms 0` and `--retries 0` are refused (status 2) rather than clamped; `[::1]` without a
/// port is port 3478; an unresolvable name keeps the resolver's reason.
#[test]
fn probe_checks_its_arguments() {
    let bin = env!("CARGO_BIN_EXE_stunedge");
    for (flag, message) in [
        ("--rto-ms", "--rto-ms 0: must be between 1 and 60000"),
        ("--retries", "--retries 0: must be between 1 and 20"),
    ] {
        let out = std::process::Command::new(bin).args(["probe", "--nat", flag, "0", "127.0.0.1"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("stunedge probe: {message}\n"));
        assert!(out.stdout.is_empty());
    }
    let server = server();
    let port = server.local_addrs()[1].port();
    // [::1] alone is [::1]:3478 (the port below is the server's, to get an answer).
    let out =
        std::process::Command::new(bin).args(["probe", "[::1]", "--rto-ms", "20", "--retries", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cannot resolve"), "{err}");
    assert!(err.contains("[::1]:3478") || out.status.success(), "{err}");
    let out = std::process::Command::new(bin).args(["probe", &format!("[::1]:{port}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(bin).args(["probe", "nope.invalid"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("stunedge probe: cannot resolve \"nope.invalid\": failed to lookup address information: "),
        "{err}"
    );
}

/// The password for `--username` from `--password-file` or `STUNEDGE_PASSWORD`, never only
/// from the command line.
#[test]
fn probe_reads_the_password_from_a_file_or_the_environment() {
    let server = server();
    let short = server.local_addrs()[3].to_string(); // bob, short-term, required
    let bin = env!("CARGO_BIN_EXE_stunedge");
    let file = crate::support::Scratch::new("probe-bob", "builder\n");
    let base = ["probe", "--json", "--rto-ms", "100", "--username", "bob"];
    let out = std::process::Command::new(bin)
        .args(base)
        .args(["--password-file", file.to_str().unwrap(), &short])
        .env_remove("STUNEDGE_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"authenticated\": true"));
    let out =
        std::process::Command::new(bin).args(base).arg(&short).env("STUNEDGE_PASSWORD", "builder").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"authenticated\": true"));
    let out = std::process::Command::new(bin).args(base).arg(&short).env_remove("STUNEDGE_PASSWORD").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--username: needs a password"));
}
