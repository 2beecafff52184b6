//! STUN over TCP and TLS (issue 19) against the real binary, with an independent client
//! (`tests/stream/client.py`: Python's socket and ssl, i.e. OpenSSL) and test certificates
//! made by `openssl req`:
//!
//! - Binding over TCP and TLS: two messages in one write, one sent byte by byte, each answer's
//!   XOR-MAPPED-ADDRESS the connection's source; TLS 1.3 and 1.2, ALPN `stun.turn` echoed when
//!   offered, none when not, a client offering only `h2` still served; `openssl s_client`
//!   carrying a raw Binding;
//! - framing edges: garbage and HTTP first bytes, a huge length, close the connection (counted
//!   by reason); a burst of 10,000 messages all answered in order; past the message rate a
//!   connection is read slowly, nothing lost;
//! - timeouts: a TLS handshake that never starts, a slowloris first message, an idle
//!   connection;
//! - caps, in a network namespace (loopback is exempt from the per-prefix cap): per source
//!   prefix and global, the excess closed at once and counted;
//! - SIGHUP: a new certificate for new connections, the established one kept answering; a bad
//!   certificate keeps the running one.
//!
//! Needs python3 and openssl (and ip for the namespace test): skipped, saying why, without them,
//! except in CI.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stunedge::admin::http_get;

use crate::cli::{Running, write_config};
use crate::support::{Scratch, metric_sum, skip, tool_missing};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stream/client.py");

/// A self-signed certificate for `stun.test` and 127.0.0.1 (P-256), and its key.
pub(crate) fn certificate(tag: &str) -> (Scratch, Scratch) {
    let (cert, key) = (Scratch::new(&format!("{tag}-cert.pem"), ""), Scratch::new(&format!("{tag}-key.pem"), ""));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=stun.test", "-addext", "subjectAltName=DNS:stun.test,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&*key)
        .arg("-out")
        .arg(&*cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A running server with TCP and TLS listeners on free ports.
struct Server {
    running: Running,
    tcp: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    cert: Scratch,
    key: Scratch,
    config: Scratch,
}

impl Server {
    /// `stunedge serve` on 127.0.0.1 with `[stream]` options `stream` added.
    fn start(tag: &str, stream: &str) -> Server {
        let (cert, key) = certificate(tag);
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[stream]\ntcp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n{stream}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            cert.display(),
            key.display()
        );
        let config = write_config(&format!("{tag}.toml"), &text);
        let mut running = Running::start(&["serve", "-c", config.to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            let log = running.stderr();
            if log.contains("serving") {
                break log;
            }
            assert!(running.alive(), "stunedge exited: {log}");
            assert!(Instant::now() < deadline, "stunedge did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let find = |prefix: &str| -> SocketAddr {
            let at = log.find(prefix).unwrap_or_else(|| panic!("no {prefix} in {log}")) + prefix.len();
            let end = log[at..].find([',', '"', ' ']).map_or(log.len(), |e| at + e);
            log[at..end].parse().unwrap_or_else(|e| panic!("{prefix}{}: {e}", &log[at..end]))
        };
        let admin_line = log.lines().find(|l| l.contains("admin endpoint")).unwrap_or_else(|| panic!("{log}"));
        let admin = admin_line.rsplit("listen=").next().unwrap().trim().parse().unwrap();
        let (tcp, tls) = (find("tcp://"), find("tls://"));
        Server { running, tcp, tls, admin, cert, key, config }
    }

    fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    /// The client's JSON for `scenario` against `addr` (TLS options added for the TLS port).
    fn client(&self, scenario: &str, addr: SocketAddr, extra: &[&str]) -> Value {
        let mut cmd = Command::new("python3");
        cmd.arg(CLIENT).arg(scenario).arg(addr.to_string()).args(extra);
        if addr == self.tls {
            cmd.args(["--tls", "--name", "stun.test", "--ca"]).arg(&*self.cert);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "client {scenario}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn closed(&self, transport: &str, reason: &str) -> f64 {
        let labels = [format!("transport=\"{transport}\""), format!("reason=\"{reason}\"")];
        metric_sum(&self.metrics(), "stunedge_stream_closed_total", &[&labels[0], &labels[1]])
    }
}

/// Whether python3 and openssl are here (else the test is skipped through `tool_missing`, or
/// fails in CI).
fn ready(_test: &str) -> bool {
    !["python3", "openssl"].iter().any(|t| tool_missing(t))
}

#[test]
fn binding_over_tcp_and_tls_names_the_connections_address() {
    if !ready("stream::binding_over_tcp_and_tls_names_the_connections_address") {
        return;
    }
    let s = Server::start("binding", "");
    let tcp = s.client("pipelined", s.tcp, &[]);
    assert_eq!(tcp["ok"], serde_json::json!([true, true, true]), "{tcp}");
    let alpn = s.client("pipelined", s.tls, &["--alpn", "h2,stun.turn"]);
    assert_eq!(alpn["ok"], serde_json::json!([true, true, true]), "{alpn}");
    assert_eq!(alpn["alpn"], "stun.turn", "echoed when offered: {alpn}");
    assert_eq!(alpn["version"], "TLSv1.3", "{alpn}");
    let none = s.client("pipelined", s.tls, &[]);
    assert_eq!(none["alpn"], Value::Null, "{none}");
    let tls12 = s.client("pipelined", s.tls, &["--tls12", "--alpn", "stun.nat-discovery"]);
    assert_eq!(tls12["ok"], serde_json::json!([true, true, true]), "{tls12}");
    assert_eq!((tls12["version"].as_str(), tls12["alpn"].as_str()), (Some("TLSv1.2"), Some("stun.nat-discovery")));
    let h2 = s.client("pipelined", s.tls, &["--alpn", "h2"]);
    assert_eq!((h2["alpn"].clone(), h2["ok"][2].clone()), (Value::Null, Value::Bool(true)), "never required: {h2}");
    // OpenSSL's own client carries a raw Binding (ALPN stun.nat-discovery, SNI, the CA checked).
    let tid = [0x5A; 12];
    let request = Scratch::new("s_client-request.bin", "");
    std::fs::write(&*request, crate::support::binding_request(tid, &[])).unwrap();
    let out = Command::new("timeout")
        .args(["3", "openssl", "s_client", "-quiet", "-ign_eof", "-alpn", "stun.nat-discovery"])
        .args(["-servername", "stun.test", "-verify_return_error", "-CAfile"])
        .arg(&*s.cert)
        .args(["-connect", &s.tls.to_string()])
        .stdin(std::fs::File::open(&*request).unwrap())
        .output()
        .unwrap();
    let answer = &out.stdout;
    assert!(answer.len() >= 32 && answer[..2] == [0x01, 0x01] && answer[8..20] == tid, "s_client got {answer:02x?}");
    let m = s.metrics();
    assert_eq!(metric_sum(&m, "stunedge_stream_answers_total", &["transport=\"tcp\""]), 3.0, "{m}");
    assert_eq!(metric_sum(&m, "stunedge_stream_answers_total", &["transport=\"tls\""]), 13.0, "{m}");
    assert_eq!(metric_sum(&m, "stunedge_tls_handshakes_total", &["version=\"1.3\""]), 4.0, "{m}");
    assert_eq!(metric_sum(&m, "stunedge_tls_handshakes_total", &["version=\"1.2\""]), 1.0, "{m}");
    // The stream threads' handler counters are exported like a worker's (published every 50 ms).
    let requests = || metric_sum(&s.metrics(), "stunedge_requests_total", &["worker=\"stream0\""]);
    wait_until(|| requests() == 16.0, "the stream thread's request counter");
}

#[test]
fn bytes_that_are_not_stun_or_too_long_close_the_connection() {
    if !ready("stream::bytes_that_are_not_stun_or_too_long_close_the_connection") {
        return;
    }
    let s = Server::start("framing", "");
    for (hex, reason) in [
        (hex_of(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"), "not_stun"),
        // "GE" is a ChannelData header (first byte 0x47, RFC 7983's 64–79) of 0x5420 bytes.
        (hex_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "too_large"),
        ("16030100c8".to_string(), "not_stun"), // a TLS ClientHello on the TCP port
        ("0001fffc2112a442".to_string(), "too_large"),
        ("00010000deadbeef".to_string(), "bad_header"), // RFC 3489 classic: no stream framing
    ] {
        let before = s.closed("tcp", reason);
        let out = s.client("garbage", s.tcp, &["--bytes", &hex, "--wait", "3"]);
        assert!(out["closed_after"].as_f64().is_some_and(|t| t < 1.0), "{hex}: {out}");
        wait_until(|| s.closed("tcp", reason) == before + 1.0, &format!("{reason} counted"));
    }
}

/// RFC 8489 §6.2.2: the server does not close before every request it read has its answer —
/// a client that sends three requests and shuts its sending side (`printf … | nc`) gets all
/// three, then the close.
#[test]
fn a_half_closed_connection_gets_every_answer_before_the_close() {
    if !ready("stream::a_half_closed_connection_gets_every_answer_before_the_close") {
        return;
    }
    let s = Server::start("half-close", "");
    let out = s.client("half-close", s.tcp, &["--count", "3", "--wait", "3"]);
    assert_eq!(out["answered"], 3, "{out}");
    assert!(out["closed_after"].as_f64().is_some_and(|t| t < 1.0), "{out}");
    wait_until(|| s.closed("tcp", "client") == 1.0, "the close counted");
}

#[test]
fn a_burst_is_answered_in_order_and_a_fast_client_is_read_at_its_rate() {
    if !ready("stream::a_burst_is_answered_in_order_and_a_fast_client_is_read_at_its_rate") {
        return;
    }
    let fast = Server::start("burst", "messages_per_second = 1000000\nmessage_burst = 1000000\n");
    let out = fast.client("burst", fast.tcp, &["--count", "10000", "--wait", "20"]);
    assert_eq!((out["answered"].as_u64(), out["in_order"].as_bool()), (Some(10_000), Some(true)), "{out}");
    // Over TLS too: rustls decrypts more than a connection's input holds at once; what it holds
    // is taken as the answers go out, not left until the socket is readable again.
    let tls = fast.client("burst", fast.tls, &["--count", "5000", "--wait", "20"]);
    assert_eq!((tls["answered"].as_u64(), tls["in_order"].as_bool()), (Some(5_000), Some(true)), "{tls}");
    // 10 at once, then 50/s: 100 requests take about 1.8 s, all answered; after 0.5 s at most
    // 10 + 25 (+ slack) were.
    let slow = Server::start("rate", "messages_per_second = 50\nmessage_burst = 10\n");
    let early = slow.client("burst", slow.tcp, &["--count", "100", "--wait", "0.5"]);
    let n = early["answered"].as_u64().unwrap();
    assert!((10..=45).contains(&n), "{n} answered in 0.5 s at 10 + 50/s: {early}");
    let all = slow.client("burst", slow.tcp, &["--count", "100", "--wait", "6"]);
    assert_eq!(all["answered"], 100, "nothing lost, only slowed: {all}");
    assert!(all["seconds"].as_f64().unwrap() >= 1.4, "read at its rate: {all}");
}

/// A handshake that ends and fails in the same read (the client's Finished and a bad record in
/// one segment) leaves no handshake counted: with `max_handshakes = 4`, six of them, then a
/// good client is still served.
#[test]
fn a_handshake_that_ends_and_fails_at_once_is_not_left_counted() {
    if !ready("stream::a_handshake_that_ends_and_fails_at_once_is_not_left_counted") {
        return;
    }
    let s = Server::start("handshake-leak", "max_handshakes = 4\n");
    let out = s.client("bad-after-finished", s.tls, &["--count", "6"]);
    assert_eq!(out["closed"], 6, "{out}");
    let good = s.client("pipelined", s.tls, &[]);
    assert_eq!(good["ok"], serde_json::json!([true, true, true]), "{good}");
    let m = s.metrics();
    assert_eq!(metric_sum(&m, "stunedge_stream_tls_handshakes_in_progress", &[]), 0.0, "{m}");
    assert_eq!(metric_sum(&m, "stunedge_stream_refused_total", &["reason=\"handshake_cap\""]), 0.0, "{m}");
    assert_eq!(s.closed("tls", "tls_error"), 6.0, "{m}");
}

#[test]
fn handshakes_first_messages_and_idle_connections_time_out() {
    if !ready("stream::handshakes_first_messages_and_idle_connections_time_out") {
        return;
    }
    let limits = "handshake_timeout = 1.0\nfirst_message_timeout = 1.0\nidle_timeout = 1.5\n";
    let s = Server::start("timeouts", limits);
    // A TLS client that never sends its ClientHello.
    let out = s.client("silent", s.tls, &["--wait", "4"]);
    let t = out["closed_after"].as_f64().unwrap_or_else(|| panic!("never closed: {out}"));
    assert!((0.9..2.5).contains(&t), "{out}");
    // Slowloris: 5 bytes of a header, then nothing.
    // It never spoke: reset, leaving no TIME_WAIT behind.
    let out = s.client("silent", s.tcp, &["--send", "0001000021", "--wait", "4"]);
    let t = out["closed_after"].as_f64().unwrap_or_else(|| panic!("never closed: {out}"));
    assert!((0.9..2.5).contains(&t), "{out}");
    assert_eq!(out["closed_by"], "reset", "{out}");
    // One answer, then idle: a graceful close.
    let out = s.client("idle-after-one", s.tcp, &["--wait", "4"]);
    assert_eq!(out["answered"], true, "{out}");
    let t = out["closed_after"].as_f64().unwrap_or_else(|| panic!("never closed: {out}"));
    assert!((1.4..3.0).contains(&t), "{out}");
    assert_eq!(out["closed_by"], "eof", "{out}");
    wait_until(|| s.closed("tls", "handshake_timeout") == 1.0, "handshake_timeout counted");
    assert_eq!(s.closed("tcp", "first_message_timeout"), 1.0);
    assert_eq!(s.closed("tcp", "idle"), 1.0);
    let m = s.metrics();
    assert_eq!(metric_sum(&m, "stunedge_tls_handshake_failures_total", &["reason=\"timeout\""]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "stunedge_stream_connections", &[]), 0.0, "{m}");
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_a_bad_one_out() {
    if !ready("stream::sighup_swaps_the_certificate_for_new_connections_and_keeps_a_bad_one_out") {
        return;
    }
    let mut s = Server::start("reload", "");
    let _config = &s.config;
    let before = s.client("certificate", s.tls, &[]);
    let signal = Scratch::new("reload-signal", "");
    std::fs::remove_file(&*signal).unwrap();
    let (cert, key, tls) = (s.cert.to_path_buf(), s.key.to_path_buf(), s.tls);
    let ca = s.cert.to_path_buf();
    let pair = std::thread::spawn(move || {
        let out = Command::new("python3")
            .arg(CLIENT)
            .args(["reload-pair", &tls.to_string(), "--tls", "--name", "stun.test", "--ca"])
            .arg(&ca)
            .arg("--signal-file")
            .arg(&*signal)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (serde_json::from_slice::<Value>(&out.stdout).unwrap(), signal)
    });
    let signal_path = std::env::temp_dir().join(format!("stunedge-test-{}-reload-signal", std::process::id()));
    wait_until(|| signal_path.exists(), "the first connection is up");
    // A new certificate in the same files (the client's CA file is that file, so a new
    // connection verifies against the new one).
    let (new_cert, new_key) = certificate("reload-new");
    std::fs::copy(&*new_cert, &cert).unwrap();
    std::fs::copy(&*new_key, &key).unwrap();
    s.running.signal(libc::SIGHUP);
    wait_until(|| s.running.stderr().contains("configuration reloaded"), "the reload");
    std::fs::remove_file(&signal_path).unwrap();
    let (pair, _signal) = pair.join().unwrap();
    assert_eq!(pair["before"], true, "{pair}");
    assert_eq!(pair["old_still_answers"], true, "the established session answers on: {pair}");
    assert_eq!(pair["old_sha256"], before["sha256"], "{pair}");
    let after = s.client("certificate", s.tls, &[]);
    assert_ne!(after["sha256"], before["sha256"], "new connections get the new certificate");
    // A broken certificate: the reload fails, naming the field, and the running one stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    s.running.signal(libc::SIGHUP);
    wait_until(|| s.running.stderr().contains("reload failed"), "the refused reload");
    let log = s.running.stderr();
    assert!(log.contains("stream.certificate"), "{log}");
    std::fs::copy(&*new_cert, &cert).unwrap(); // for the client's CA file
    let still = s.client("certificate", s.tls, &[]);
    assert_eq!(still["sha256"], after["sha256"], "{log}");
}

/// The per-prefix and global caps, from non-loopback addresses in a namespace of their own
/// (loopback is exempt from the per-prefix cap).
#[test]
fn in_a_namespace_the_caps_per_prefix_and_overall_refuse_the_excess() {
    let test = "stream::in_a_namespace_the_caps_per_prefix_and_overall_refuse_the_excess";
    if !ready(test) {
        return;
    }
    if let Some(why) = crate::support::netns_unavailable(&["ip", "curl"]) {
        return skip(test, &why);
    }
    struct Netns(String, Option<std::process::Child>);
    impl Drop for Netns {
        fn drop(&mut self) {
            if let Some(child) = &mut self.1 {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let ns = format!("stunedge-stream-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip(&["netns", "add", &ns]);
    let mut lab = Netns(ns.clone(), None);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.1/24", "dev", "lo"]);
    let text = "[server]\nlisten = [\"10.77.0.1:3478\"]\n[stream]\ntcp = [\"10.77.0.1:3478\"]\n\
                max_connections = 5\nmax_connections_per_prefix = 3\n[admin]\nlisten = \"10.77.0.1:9478\"\n";
    let config = write_config("caps.toml", text);
    // `ip netns exec` execs stunedge itself: the child is the server.
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_stunedge"), "serve", "-c", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    lab.1 = Some(child);
    let metrics = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "http://10.77.0.1:9478/metrics"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(|| metrics().contains("stunedge_stream_connections"), "the server in the namespace");
    let run = |sources: &str, count: &str| -> Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", CLIENT, "many", "10.77.0.1:3478", "--count", count])
            .args(["--source", sources])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let refused =
        |reason: &str| metric_sum(&metrics(), "stunedge_stream_refused_total", &[&format!("reason=\"{reason}\"")]);
    // Five from one address (held open together): three served, its /32's cap; two refused.
    let one = run("10.77.0.2", "5");
    assert_eq!((one["answered"].as_u64(), one["refused"].as_u64()), (Some(3), Some(2)), "{one}");
    assert_eq!(refused("prefix_cap"), 2.0);
    wait_until(|| metric_sum(&metrics(), "stunedge_stream_connections", &[]) == 0.0, "the closes");
    // Eight from four addresses: five served (the global cap), three refused.
    let spread = run("10.77.0.3,10.77.0.4,10.77.0.5,10.77.0.6", "8");
    assert_eq!((spread["answered"].as_u64(), spread["refused"].as_u64()), (Some(5), Some(3)), "{spread}");
    assert_eq!(refused("global_cap"), 3.0);
    assert_eq!(refused("prefix_cap"), 2.0);
    drop(config);
}

/// `[limit] deny` closes a denied source's connections on accept, over TCP and TLS, counted
/// `denied`, while other sources are served; `stream.cpus` pins the stream thread.
#[test]
fn a_denied_source_is_refused_on_accept_and_the_stream_thread_is_pinned() {
    if !ready("stream::a_denied_source_is_refused_on_accept_and_the_stream_thread_is_pinned") {
        return;
    }
    let s = Server::start("deny", "cpus = [0]\n[limit]\ndeny = [\"127.0.0.2\"]\n");
    let many = |addr: SocketAddr, source: &str, count: &str| {
        let v = s.client("many", addr, &["--source", source, "--count", count]);
        (v["answered"].as_u64().unwrap(), v["refused"].as_u64().unwrap())
    };
    assert_eq!(many(s.tcp, "127.0.0.2", "2"), (0, 2));
    assert_eq!(many(s.tls, "127.0.0.2", "1"), (0, 1));
    assert_eq!(many(s.tcp, "127.0.0.1", "2"), (2, 0));
    assert_eq!(many(s.tls, "127.0.0.3", "1"), (1, 0));
    let m = s.metrics();
    for (transport, n) in [("tcp", 2.0), ("tls", 1.0)] {
        let labels = [format!("transport=\"{transport}\""), "reason=\"denied\"".to_string()];
        assert_eq!(metric_sum(&m, "stunedge_stream_refused_total", &[&labels[0], &labels[1]]), n, "{m}");
    }
    // The stream thread runs on CPU 0 only.
    let tasks = format!("/proc/{}/task", s.running.pid());
    let thread = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|t| t.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "stunedge-stream"))
        .unwrap_or_else(|| panic!("no stream thread in {tasks}"));
    let status = std::fs::read_to_string(thread.join("status")).unwrap();
    let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(str::trim);
    assert_eq!(allowed, Some("0"), "{status}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_until(done: impl FnMut() -> bool, what: &str) {
    crate::support::wait_for(what, Duration::from_secs(10), done);
}

/// A flood of silent connections (1,500 held open against a cap of 1,000, from loopback, which
/// the per-prefix cap exempts): the cap holds, the oldest silent ones make room (`evicted`), a
/// client that speaks is still answered over TCP and TLS during the flood, the server's
/// resident memory stays within the documented bound, and once the first-message timeout has
/// closed the flood nothing is left open.
#[test]
fn a_flood_of_silent_connections_is_capped_and_clients_that_speak_are_still_answered() {
    if !ready("stream::a_flood_of_silent_connections_is_capped_and_clients_that_speak_are_still_answered") {
        return;
    }
    let limits = "max_connections = 1000\nfirst_message_timeout = 3.0\nhandshake_timeout = 3.0\n";
    let s = Server::start("flood", limits);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.running.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok()).unwrap()
    };
    let before = rss();
    let (tcp, client) = (s.tcp, CLIENT);
    let flood = std::thread::spawn(move || {
        let out = Command::new("python3")
            .args([client, "keep", &tcp.to_string(), "--count", "1500", "--hold", "2.0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    });
    wait_until(|| s.closed("tcp", "evicted") >= 400.0, "the flood to pass the cap");
    let open = metric_sum(&s.metrics(), "stunedge_stream_connections", &[]);
    assert!(open <= 1000.0, "{open} open over a cap of 1000");
    let during = rss();
    for addr in [s.tcp, s.tls] {
        let speak = s.client("pipelined", addr, &[]);
        assert_eq!(speak["ok"], serde_json::json!([true, true, true]), "answered during the flood: {speak}");
    }
    let flood = flood.join().unwrap();
    assert_eq!(flood["opened"], 1500, "{flood}");
    // 1,000 connections × (4 KB of buffers at most, plus bookkeeping) over what it had.
    assert!(during.saturating_sub(before) < 16 * 1024, "VmRSS {before} → {during} kB during the flood");
    wait_until(|| metric_sum(&s.metrics(), "stunedge_stream_connections", &[]) == 0.0, "the flood closed");
    let m = s.metrics();
    let closed = metric_sum(&m, "stunedge_stream_closed_total", &["transport=\"tcp\""]);
    let accepted = metric_sum(&m, "stunedge_stream_accepted_total", &["transport=\"tcp\""]);
    assert_eq!(closed, accepted, "{m}");
    assert!(s.closed("tcp", "evicted") >= 500.0, "{m}");
}

/// `configs/stream.toml` passes `check-config` once certificate files are where it names them
/// (the example's paths rewritten to test certificates: no key is committed).
#[test]
fn the_committed_example_checks_with_a_certificate_in_place() {
    if !ready("stream::the_committed_example_checks_with_a_certificate_in_place") {
        return;
    }
    let (cert, key) = certificate("example");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/stream.toml")).unwrap();
    assert!(text.contains("/etc/stunedge/tls/fullchain.pem") && text.contains("/etc/stunedge/tls/privkey.pem"));
    let text = text
        .replace("/etc/stunedge/tls/fullchain.pem", cert.to_str().unwrap())
        .replace("/etc/stunedge/tls/privkey.pem", key.to_str().unwrap());
    let config = Scratch::new("stream-example.toml", &text);
    let out = Command::new(env!("CARGO_BIN_EXE_stunedge")).arg("check-config").arg(&*config).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The key of another certificate is refused, naming the field.
    let (_, other_key) = certificate("example-other");
    let mismatched =
        Scratch::new("stream-example-bad.toml", &text.replace(key.to_str().unwrap(), other_key.to_str().unwrap()));
    let out = Command::new(env!("CARGO_BIN_EXE_stunedge")).arg("check-config").arg(&*mismatched).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stream.private_key") && err.contains("does not go with stream.certificate"), "{err}");
}
