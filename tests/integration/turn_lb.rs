//! The TURN load balancer with real software on loopback (issue 16): Debian's coturn as the
//! backends, `turnutils_peer` as the peer and `turnutils_uclient` as the client, which follows
//! stunedge's 300 to a backend, allocates there and relays its packets. Each test has its own
//! 127.0.<n>.0/24 so that the backends' relay ports never collide between tests running at once.
//!
//! - the redirect and the relay, the same backend from a second process with the same seed, the
//!   redirect counter naming that backend;
//! - the spread over many client addresses in proportion to the weights, stable per address;
//! - failover when a backend dies and its return after `rise` probes, nobody else moving;
//! - drain by reload: no new clients, existing relays unaffected;
//! - long-term mode: 401, then a signed 300 uclient follows; the same 300 with its signature
//!   stripped (by a relay in this test) is refused by uclient;
//! - edges: IPv6, 437 for other TURN methods, 508 with no backend up, a config that lists the
//!   balancer itself refused;
//! - the authenticated health probe against coturn: up with the right password, down with a
//!   wrong one;
//! - over TCP and TLS (stunedge's stream listeners): uclient `-t` and `-t -S` redirected to the
//!   backend's TCP and TLS ports, relaying every packet;
//! - TCP health: a backend whose UDP address answers but whose TCP port is closed gets no
//!   Allocate over TCP (every one goes to the backend whose TCP port is up) and keeps its UDP
//!   clients; `stunedge_turn_backend_stream_up` shows which port is down.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stunedge::admin::http_get;
use stunedge::stun::attr::{AlternateServer, Attribute as _, ErrorCode};
use stunedge::stun::registry::{ATTR_ALTERNATE_SERVER, ATTR_MESSAGE_INTEGRITY, ATTR_REQUESTED_TRANSPORT};
use stunedge::stun::{Message, MessageType, MessageWriter};

use crate::cli::{Running, free_port, write_config};
use crate::support::{Scratch, tool_missing, wait_for};

/// A process this test started, killed (by its PID, through `Child`) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether coturn's server and tools are here (else the test skips, or fails in CI).
fn coturn_missing() -> bool {
    ["turnserver", "turnutils_uclient", "turnutils_peer"].iter().any(|tool| tool_missing(tool))
}

/// One coturn backend on `ip:port` with long-term user u:p in realm test.realm, relaying on
/// `ip` itself; answers once it answers a Binding request.
struct Backend {
    addr: SocketAddr,
    _process: Spawned,
    _db: Scratch,
}

fn backend(ip: &str, port: u16) -> Backend {
    backend_with(ip, port, &["--no-tls", "--no-tcp"])
}

/// [`backend`] with coturn's TCP and TLS listeners too: TCP on `port`, TLS on `tls_port` with
/// the certificate and key files given.
fn backend_with_streams(ip: &str, port: u16, tls_port: u16, cert: &Path, key: &Path) -> Backend {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    backend_with(ip, port, &["--tls-listening-port", &tls_port.to_string(), "--cert", cert, "--pkey", key])
}

fn backend_with(ip: &str, port: u16, transports: &[&str]) -> Backend {
    let db = Scratch::new(&format!("coturn-{ip}-{port}.db"), "");
    let _ = std::fs::remove_file(&db);
    let relay_min = 20_000 + (port % 20) * 2_000;
    let process = Command::new("turnserver")
        .args(["-n", "--db"])
        .arg(&*db)
        .args(["-L", ip, "-E", ip, "-p", &port.to_string(), "--lt-cred-mech", "--user", "u:p", "-r", "test.realm"])
        .args(["--allow-loopback-peers", "--no-cli", "--no-dtls", "--log-file", "stdout"])
        .args(transports)
        .args(["--min-port", &relay_min.to_string(), "--max-port", &(relay_min + 1_999).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let b = Backend { addr, _process: Spawned(process), _db: db };
    wait_for(&format!("coturn on {addr}"), Duration::from_secs(10), || {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let request = crate::support::binding_request([9; 12], &[]);
        s.send_to(&request, addr).unwrap();
        let mut buf = [0u8; 256];
        s.recv_from(&mut buf).is_ok_and(|(n, _)| n >= 20 && buf[0] == 0x01 && buf[1] == 0x01)
    });
    b
}

/// turnutils_peer on `ip:port` (echoes what the relays send it).
fn peer(ip: &str, port: u16) -> Spawned {
    let process = Command::new("turnutils_peer")
        .args(["-L", ip, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer starts");
    std::thread::sleep(Duration::from_millis(200));
    Spawned(process)
}

/// Stops a stand-in backend's thread ([`fake_backend`], [`tcp_listening`]) when dropped.
struct Fake(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Fake {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stand-in TURN backend on `addr` for tests that need it alive but never relay through it:
/// answers every request with a 401 (what coturn answers an unauthenticated Allocate with), so
/// the health probe marks it up. Stops when the returned guard drops (at most 120 s).
fn fake_backend(addr: SocketAddr) -> Fake {
    let socket = UdpSocket::bind(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut buf = [0u8; 1500];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
            if n < 20 {
                continue;
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&buf[4..20]);
            let method = u16::from_be_bytes([buf[0], buf[1]]) & 0x3EEF;
            let mut out = [0u8; 64];
            let mut w = MessageWriter::new(&mut out, MessageType::from_u16(method | 0x0110), &id).unwrap();
            w.add_error(401, "").unwrap();
            let len = w.finish();
            let _ = socket.send_to(&out[..len], from);
        }
    });
    Fake(stop)
}

/// What one turnutils_uclient run did.
#[derive(Debug)]
struct Uclient {
    /// It saw "error 300 (Try Alternate)".
    redirected: bool,
    /// The last server it connected to (after a redirect: the backend).
    connected: Option<SocketAddr>,
    /// The relayed address the backend gave it.
    relay: Option<SocketAddr>,
    sent: u64,
    received: u64,
    success: bool,
    output: String,
}

/// Runs `turnutils_uclient` (user u:p) from `local` against `server`, relaying `messages`
/// packets to `peer`, with `extra` arguments; bounded to 30 s.
fn uclient(server: SocketAddr, local: &str, peer: SocketAddr, messages: usize, extra: &[&str]) -> Uclient {
    let mut args: Vec<String> = ["-v", "-u", "u", "-w", "p", "-c", "-m", "1", "-z", "5"].map(String::from).to_vec();
    args.extend(["-n".into(), messages.to_string(), "-L".into(), local.into()]);
    args.extend(["-e".into(), peer.ip().to_string(), "-r".into(), peer.port().to_string()]);
    args.extend(["-p".into(), server.port().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(server.ip().to_string());
    let out = Command::new("timeout").arg("30").arg("turnutils_uclient").args(&args).output().unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let after = |marker: &str| {
        output
            .lines()
            .rev()
            .filter_map(|l| l.split(marker).nth(1))
            .find_map(|rest| rest.split_whitespace().next()?.trim_end_matches(',').parse().ok())
    };
    let count = |marker: &str| -> u64 {
        output
            .lines()
            .filter_map(|l| l.split(marker).nth(1))
            .filter_map(|r| r.split(',').next()?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    };
    Uclient {
        redirected: output.contains("error 300"),
        connected: after("Connected to: "),
        relay: after("Received relay addr: "),
        sent: count("tot_send_msgs="),
        received: count("tot_recv_msgs="),
        success: out.status.success(),
        output,
    }
}

/// `stunedge serve` on `listen` with `[turn_lb]` fields `turn_lb` (and `rest` after it), its
/// admin endpoint on a free port; returns it, once it answers, and the admin address.
fn balancer(name: &str, listen: SocketAddr, turn_lb: &str, rest: &str) -> (Running, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let text = format!(
        "[server]\nlisten = [\"{listen}\"]\n[admin]\nlisten = \"{admin}\"\n[turn_lb]\nenabled = true\n{turn_lb}\n{rest}"
    );
    let config = write_config(name, &text);
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.keep(config);
    server.wait_answering(listen);
    wait_for("the admin endpoint", Duration::from_secs(5), || http_get(admin, "/healthz").is_ok());
    (server, admin)
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The TOML list of backends: (name, address, weight).
fn backends(list: &[(&str, SocketAddr, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(name, addr, weight)| format!("{{ name = \"{name}\", udp = [\"{addr}\"], weight = {weight} }}"))
        .collect();
    format!("backends = [{}]\n", items.join(", "))
}

/// One sample of the metric `series` (the full series text, labels included), 0 when absent.
fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics").unwrap();
    text.lines()
        .filter(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What an Allocate gets: the error code and the ALTERNATE-SERVER addresses.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: u16,
    alternates: Vec<SocketAddr>,
    signed: bool,
}

/// An unauthenticated request of `method` with REQUESTED-TRANSPORT UDP and FINGERPRINT.
fn request(method: u16) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    id[4..].copy_from_slice(&rand_tid());
    let mut w = MessageWriter::new(&mut buf, MessageType::from_u16(method), &id).unwrap();
    w.add_raw(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

/// What the answer `bytes` says.
fn answer(bytes: &[u8]) -> Answer {
    let m = Message::parse(bytes).unwrap();
    let key = m.cookie_and_id();
    Answer {
        code: m.get::<ErrorCode>().map_or(0, |e| e.unwrap().code),
        alternates: m
            .attributes()
            .filter(|a| a.attr_type == ATTR_ALTERNATE_SERVER)
            .map(|a| AlternateServer::decode(a.value, &key).unwrap().0)
            .collect(),
        signed: m.attribute(ATTR_MESSAGE_INTEGRITY).is_some(),
    }
}

/// An unauthenticated Allocate (REQUESTED-TRANSPORT UDP) of `method` sent from `from` to
/// `server`; its answer (retransmitted until one comes, within 2 s).
fn ask(from: &UdpSocket, server: SocketAddr, method: u16) -> Answer {
    let request = request(method);
    let mut buf = [0u8; 1500];
    from.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for _ in 0..10 {
        from.send_to(&request, server).unwrap();
        if let Ok((n, _)) = from.recv_from(&mut buf) {
            return answer(&buf[..n]);
        }
    }
    panic!("{server} never answered {method:#x} from {}", from.local_addr().unwrap());
}

/// An Allocate over a new TCP connection from `ip` (any port) to `server` (RFC 8489 §6.2.2:
/// the message as is, the answer read by its header's length); its answer and the
/// connection's source address.
fn ask_tcp(ip: IpAddr, server: SocketAddr) -> (Answer, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::for_address(server), socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    socket.connect_timeout(&server.into(), Duration::from_secs(2)).unwrap();
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let from = stream.local_addr().unwrap();
    stream.write_all(&request(0x0003)).unwrap();
    let mut buf = vec![0u8; 20];
    stream.read_exact(&mut buf).unwrap_or_else(|e| panic!("no answer over TCP from {from}: {e}"));
    buf.resize(20 + usize::from(u16::from_be_bytes([buf[2], buf[3]])), 0);
    stream.read_exact(&mut buf[20..]).unwrap();
    (answer(&buf), from)
}

/// A transaction ID from std's per-process random hash keys (each RandomState is new keys).
fn rand_tid() -> [u8; 12] {
    use std::hash::BuildHasher;
    let a = std::collections::hash_map::RandomState::new().hash_one(0u8).to_be_bytes();
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&a);
    tid[8..].copy_from_slice(&a[..4]);
    tid
}

/// The backend an Allocate from `ip` is sent to.
fn chosen(server: SocketAddr, ip: &str) -> SocketAddr {
    let s = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let answer = ask(&s, server, 0x0003);
    assert_eq!(answer.code, 300, "{answer:?}");
    answer.alternates[0]
}

#[test]
fn uclient_follows_the_redirect_and_relays_through_the_backend_a_second_node_also_picks() {
    if coturn_missing() {
        return;
    }
    let b1 = backend("127.0.16.2", free_port());
    let b2 = backend("127.0.16.3", free_port());
    let _peer = peer("127.0.16.4", 3480);
    let pool = backends(&[("b1", b1.addr, 1), ("b2", b2.addr, 1)]);
    let lb: SocketAddr = format!("127.0.16.1:{}", free_port()).parse().unwrap();
    let (mut server, admin) = balancer("lb-relay.toml", lb, &format!("seed = \"fleet\"\n{pool}"), "");
    let second: SocketAddr = format!("127.0.16.9:{}", free_port()).parse().unwrap();
    let (_other, _) = balancer("lb-relay-2.toml", second, &format!("seed = \"fleet\"\n{pool}"), "");

    let run = uclient(lb, "127.0.16.31", "127.0.16.4:3480".parse().unwrap(), 20, &[]);
    assert!(run.redirected, "{}", run.output);
    let to = run.connected.unwrap_or_else(|| panic!("no backend connected: {}", run.output));
    assert!(to == b1.addr || to == b2.addr, "connected to {to}: {}", run.output);
    assert_eq!(run.relay.map(|r| r.ip()), Some(to.ip()), "the relay is on the backend: {}", run.output);
    assert_eq!((run.sent, run.received), (20, 20), "every packet relayed: {}", run.output);
    assert!(run.success, "{}", run.output);
    // The same client address gets the same backend from the other node (same seed).
    assert_eq!(chosen(second, "127.0.16.31"), to);
    assert_eq!(chosen(lb, "127.0.16.31"), to, "and again from the first, from another port");
    let name = if to == b1.addr { "b1" } else { "b2" };
    let series = format!("stunedge_turn_redirects_total{{backend=\"{name}\",address=\"{to}\"}}");
    assert!(metric(admin, &series) >= 2.0, "{series}: {}", server.stderr());
    // Every 300 counted by the workers (published once per loop turn) named that backend.
    wait_for("the workers' 300s to match the redirects", Duration::from_secs(2), || {
        responses_300(admin) == metric(admin, &series)
    });
}

/// The 300s every worker counted.
fn responses_300(admin: SocketAddr) -> f64 {
    crate::support::metric_sum(&http_get(admin, "/metrics").unwrap().1, "stunedge_responses_total", &["code=\"300\""])
}

#[test]
fn many_clients_spread_by_weight_and_each_keeps_its_backend() {
    let a: SocketAddr = format!("127.0.17.2:{}", free_port()).parse().unwrap();
    let b: SocketAddr = format!("127.0.17.3:{}", free_port()).parse().unwrap();
    let (_a, _b) = (fake_backend(a), fake_backend(b));
    let lb: SocketAddr = format!("127.0.17.1:{}", free_port()).parse().unwrap();
    let fields = backends(&[("a", a, 1), ("b", b, 3)]);
    let (_server, _) = balancer("lb-spread.toml", lb, &fields, "");
    let clients: Vec<String> = (0..=255).map(|i| format!("127.0.18.{i}")).collect();
    let first: Vec<SocketAddr> = clients.iter().map(|ip| chosen(lb, ip)).collect();
    let to_b = first.iter().filter(|&&x| x == b).count() as f64 / first.len() as f64;
    // 256 clients, weight 3 of 4: 0.75 expected, σ ≈ 0.027; ±0.1 is 3.7σ.
    assert!((to_b - 0.75).abs() < 0.1, "{to_b} of the clients went to the weight-3 backend");
    for (ip, expected) in clients.iter().zip(&first).step_by(8) {
        assert_eq!(chosen(lb, ip), *expected, "{ip} moved");
    }
}

#[test]
fn a_dead_backends_clients_move_and_come_back_and_nobody_else_moves() {
    if coturn_missing() {
        return;
    }
    let port_a = free_port();
    let port_b = free_port();
    let b1 = backend("127.0.19.2", port_a);
    let b2 = backend("127.0.19.3", port_b);
    let lb: SocketAddr = format!("127.0.19.1:{}", free_port()).parse().unwrap();
    let fields = format!(
        "probe_interval = 0.2\nprobe_timeout = 0.1\nfall = 2\nrise = 2\n{}",
        backends(&[("b1", b1.addr, 1), ("b2", b2.addr, 1)])
    );
    let (mut server, admin) = balancer("lb-failover.toml", lb, &fields, "");
    let up = |name: &str, addr: SocketAddr| {
        metric(admin, &format!("stunedge_turn_backend_up{{backend=\"{name}\",address=\"{addr}\"}}"))
    };
    wait_for("both backends up", Duration::from_secs(5), || up("b1", b1.addr) == 1.0 && up("b2", b2.addr) == 1.0);
    let clients: Vec<String> = (1..=64).map(|i| format!("127.0.20.{i}")).collect();
    let before: Vec<SocketAddr> = clients.iter().map(|ip| chosen(lb, ip)).collect();
    assert!(before.contains(&b1.addr) && before.contains(&b2.addr), "{before:?}");

    let b2_addr = b2.addr;
    drop(b2);
    let killed = Instant::now();
    wait_for("b2 marked down", Duration::from_secs(5), || up("b2", b2_addr) == 0.0);
    // fall × interval + timeout = 0.5 s, plus the jitter and one interval of phase.
    assert!(killed.elapsed() < Duration::from_millis(1500), "b2 marked down after {:?}", killed.elapsed());
    for (ip, was) in clients.iter().zip(&before) {
        assert_eq!(chosen(lb, ip), b1.addr, "{ip} (was on {was}) is sent to the live backend");
    }
    assert!(server.stderr().contains("b2"), "the state change is logged: {}", server.stderr());

    let _b2_again = backend("127.0.19.3", port_b);
    wait_for("b2 back up", Duration::from_secs(5), || up("b2", b2_addr) == 1.0);
    let after: Vec<SocketAddr> = clients.iter().map(|ip| chosen(lb, ip)).collect();
    assert_eq!(after, before, "everyone is back where they were");
}

#[test]
fn a_drained_backend_gets_no_new_clients_and_its_relays_keep_working() {
    if coturn_missing() {
        return;
    }
    let b1 = backend("127.0.21.2", free_port());
    let b2 = backend("127.0.21.3", free_port());
    let _peer = peer("127.0.21.4", 3480);
    let lb: SocketAddr = format!("127.0.21.1:{}", free_port()).parse().unwrap();
    let pool = |drain_b2: bool| {
        format!(
            "backends = [{{ name = \"b1\", udp = [\"{}\"] }}, {{ name = \"b2\", udp = [\"{}\"], drain = {drain_b2} }}]\n",
            b1.addr, b2.addr
        )
    };
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let text = |drain: bool| {
        format!(
            "[server]\nlisten = [\"{lb}\"]\n[admin]\nlisten = \"{admin}\"\n[turn_lb]\nenabled = true\n{}",
            pool(drain)
        )
    };
    let config = write_config("lb-drain.toml", &text(false));
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.wait_answering(lb);
    // A client on b2, relaying for 4 s (400 packets, 10 ms apart) across the reload.
    let on_b2 = (1..=64).map(|i| format!("127.0.22.{i}")).find(|ip| chosen(lb, ip) == b2.addr).expect("someone on b2");
    let relaying = {
        let on_b2 = on_b2.clone();
        std::thread::spawn(move || uclient(lb, &on_b2, "127.0.21.4:3480".parse().unwrap(), 400, &["-z", "10"]))
    };
    std::thread::sleep(Duration::from_millis(500));
    config.rewrite(&text(true));
    server.signal(libc::SIGHUP);
    wait_for("the drain to apply", Duration::from_secs(5), || chosen(lb, &on_b2) == b1.addr);
    // One worker has the new pool; an idle one takes it at its next loop turn (≤ 200 ms).
    std::thread::sleep(Duration::from_millis(400));
    for i in 1..=64 {
        assert_eq!(chosen(lb, &format!("127.0.22.{i}")), b1.addr, "no new client goes to the drained backend");
    }
    let run = relaying.join().unwrap();
    assert_eq!(run.connected, Some(b2.addr), "{}", run.output);
    assert_eq!((run.sent, run.received), (400, 400), "the relay kept working: {}", run.output);
    assert!(
        metric(
            admin,
            &format!("stunedge_turn_backend_state{{backend=\"b2\",address=\"{}\",state=\"draining\"}}", b2.addr)
        ) == 1.0
    );
    drop(config);
}

/// A UDP relay between a client and `server` that, when `strip`, strips MESSAGE-INTEGRITY from
/// every 300 it passes back (FINGERPRINT recomputed): the forged redirect an on-path attacker
/// could send. Returns the address clients send to; runs for 60 s.
fn relay(ip: &str, server: SocketAddr, strip: bool) -> SocketAddr {
    let front = UdpSocket::bind((ip, 0)).unwrap();
    let back = UdpSocket::bind((ip, 0)).unwrap();
    let addr = front.local_addr().unwrap();
    front.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    back.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut client = None;
        let mut buf = [0u8; 2048];
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                client = Some(from);
                let _ = back.send_to(&buf[..n], server);
            }
            if let (Ok((n, _)), Some(to)) = (back.recv_from(&mut buf), client) {
                let stripped = if strip { strip_integrity(&buf[..n]) } else { None };
                let out = stripped.unwrap_or_else(|| buf[..n].to_vec());
                let _ = front.send_to(&out, to);
            }
        }
    });
    addr
}

/// A 300 rewritten without MESSAGE-INTEGRITY(-SHA256); `None` for anything else.
fn strip_integrity(answer: &[u8]) -> Option<Vec<u8>> {
    let m = Message::parse(answer).ok()?;
    if m.get::<ErrorCode>()?.ok()?.code != 300 {
        return None;
    }
    let mut buf = [0u8; 2048];
    let mut id = [0u8; 16];
    id.copy_from_slice(&answer[4..20]);
    let mut w =
        MessageWriter::new(&mut buf, MessageType::from_u16(u16::from_be_bytes([answer[0], answer[1]])), &id).ok()?;
    for a in m.attributes() {
        if !matches!(a.attr_type, 0x0008 | 0x001C | 0x8028) {
            w.add_raw(a.attr_type, a.value).ok()?;
        }
    }
    w.add_fingerprint().ok()?;
    let n = w.finish();
    Some(buf[..n].to_vec())
}

#[test]
fn long_term_mode_challenges_signs_and_an_unsigned_300_is_refused() {
    if coturn_missing() {
        return;
    }
    let b1 = backend("127.0.23.2", free_port());
    let _peer = peer("127.0.23.4", 3480);
    let lb: SocketAddr = format!("127.0.23.1:{}", free_port()).parse().unwrap();
    let auth = "[auth]\nrealm = \"test.realm\"\nnonce_secret = \"0123456789abcdef0123\"\n\
                long_term_users = { u = \"p\" }\n";
    let fields = format!("auth = \"long-term\"\n{}", backends(&[("b1", b1.addr, 1)]));
    let (_server, _) = balancer("lb-long-term.toml", lb, &fields, auth);
    let s = UdpSocket::bind("127.0.23.30:0").unwrap();
    assert_eq!(ask(&s, lb, 0x0003).code, 401, "challenged first");

    let run = uclient(lb, "127.0.23.31", "127.0.23.4:3480".parse().unwrap(), 20, &[]);
    assert!(run.redirected, "{}", run.output);
    assert_eq!(run.connected, Some(b1.addr), "{}", run.output);
    assert_eq!((run.sent, run.received), (20, 20), "{}", run.output);

    // Through a relay that passes everything: uclient follows (the relay itself is harmless)...
    let plain = uclient(relay("127.0.23.1", lb, false), "127.0.23.33", "127.0.23.4:3480".parse().unwrap(), 20, &[]);
    assert_eq!(plain.connected, Some(b1.addr), "{}", plain.output);
    assert_eq!(plain.received, 20, "{}", plain.output);
    // ...and through one that strips the 300's signature, it refuses the redirect.
    let stripping = relay("127.0.23.1", lb, true);
    let forged = uclient(stripping, "127.0.23.32", "127.0.23.4:3480".parse().unwrap(), 20, &[]);
    assert_ne!(forged.connected, Some(b1.addr), "an unsigned 300 after a 401 is not followed: {}", forged.output);
    assert_eq!(forged.received, 0, "{}", forged.output);
}

#[test]
fn ipv6_437_508_and_a_config_naming_the_balancer_itself() {
    let lb: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let v6_backend: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    // Nothing listens on the backend: probes time out, and after fall it is down.
    let fields = format!("probe_interval = 0.2\nprobe_timeout = 0.1\nfall = 1\n{}", backends(&[("v6", v6_backend, 1)]));
    let (_server, admin) = balancer("lb-edges.toml", lb, &fields, "");
    let s = UdpSocket::bind("[::1]:0").unwrap();
    wait_for("the dead backend marked down", Duration::from_secs(5), || {
        metric(admin, &format!("stunedge_turn_backend_up{{backend=\"v6\",address=\"{v6_backend}\"}}")) == 0.0
            && metric(admin, "stunedge_turn_backends{state=\"down\"}") == 1.0
    });
    assert_eq!(ask(&s, lb, 0x0003).code, 508, "no backend up");
    for method in [0x0004, 0x0008, 0x0009] {
        assert_eq!(ask(&s, lb, method).code, 437, "method {method:#x}");
    }

    // An IPv6 client gets the IPv6 address first, the IPv4 one after it.
    let lb2: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let (v4, v6): (SocketAddr, SocketAddr) =
        (format!("127.0.24.2:{}", free_port()).parse().unwrap(), format!("[::1]:{}", free_port()).parse().unwrap());
    let (_v4, _v6) = (fake_backend(v4), fake_backend(v6));
    let fields = format!("backends = [{{ name = \"dual\", udp = [\"{v4}\", \"{v6}\"] }}]\n");
    let (_dual, _) = balancer("lb-dual.toml", lb2, &fields, "");
    let answer = ask(&s, lb2, 0x0003);
    assert_eq!(answer.code, 300);
    assert_eq!(answer.alternates.len(), 2, "{answer:?}");
    assert_eq!(answer.alternates, [v6, v4]);
    assert!(!answer.signed);

    // A configuration that lists the balancer's own address is refused, naming it.
    let text = format!("[server]\nlisten = [\"{lb}\"]\n[turn_lb]\nenabled = true\n{}", backends(&[("self", lb, 1)]));
    let config = write_config("lb-self.toml", &text);
    let out =
        Command::new(env!("CARGO_BIN_EXE_stunedge")).args(["check-config", config.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("turn_lb.backends[0].udp[0]") && stderr.contains("own address"), "{stderr}");
}

#[test]
fn the_authenticated_probe_logs_in_to_coturn_and_a_wrong_password_takes_the_backend_down() {
    if coturn_missing() {
        return;
    }
    let b1 = backend("127.0.25.2", free_port());
    let state = |admin: SocketAddr, s: &str| {
        metric(admin, &format!("stunedge_turn_backend_state{{backend=\"b1\",address=\"{}\",state=\"{s}\"}}", b1.addr))
    };
    let probes = |admin: SocketAddr, result: &str| {
        metric(
            admin,
            &format!(
                "stunedge_turn_backend_probes_total{{backend=\"b1\",address=\"{}\",result=\"{result}\"}}",
                b1.addr
            ),
        )
    };
    let fields = |password: &str| {
        format!(
            "probe = \"allocate-auth\"\nprobe_username = \"u\"\nprobe_password = \"{password}\"\n\
             probe_interval = 0.2\nprobe_timeout = 0.1\nfall = 1\nrise = 1\n{}",
            backends(&[("b1", b1.addr, 1)])
        )
    };
    let (_good, admin) =
        balancer("lb-probe-auth.toml", format!("127.0.25.1:{}", free_port()).parse().unwrap(), &fields("p"), "");
    wait_for("three authenticated probes", Duration::from_secs(5), || probes(admin, "ok") >= 3.0);
    assert_eq!(state(admin, "up"), 1.0);
    let (_bad, admin) = balancer(
        "lb-probe-auth-bad.toml",
        format!("127.0.25.9:{}", free_port()).parse().unwrap(),
        &fields("wrong"),
        "",
    );
    wait_for("the backend down on a wrong password", Duration::from_secs(5), || state(admin, "down") == 1.0);
    assert!(probes(admin, "unexpected") >= 1.0);
}

/// TURN over TCP and TLS (issue 19): uclient's Allocate on stunedge's TCP listener is
/// redirected to the backend's TCP address, and on its TLS listener to the backend's TLS
/// address; uclient follows each 300 over the same transport to coturn and relays every packet.
#[test]
fn uclient_over_tcp_and_tls_follows_the_redirect_to_the_backends_port_for_that_transport() {
    if coturn_missing() || tool_missing("openssl") {
        return;
    }
    let (cert, key) = crate::stream::certificate("turn-streams");
    let (udp_port, tls_port) = (free_port(), free_tcp_port());
    let b1 = backend_with_streams("127.0.26.2", udp_port, tls_port, &cert, &key);
    let _peer = peer("127.0.26.4", 3480);
    let lb: SocketAddr = format!("127.0.26.1:{}", free_port()).parse().unwrap();
    let lb_tls: SocketAddr = format!("127.0.26.1:{}", free_tcp_port()).parse().unwrap();
    let backend_tls = SocketAddr::new(b1.addr.ip(), tls_port);
    let pool = format!(
        "backends = [{{ name = \"b1\", udp = [\"{0}\"], tcp = [\"{0}\"], tls = [\"{backend_tls}\"] }}]\n",
        b1.addr
    );
    let stream = format!(
        "[stream]\ntcp = [\"{lb}\"]\ntls = [\"{lb_tls}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (server, admin) = balancer("lb-streams.toml", lb, &pool, &stream);
    let _ = server;
    let tcp = uclient(lb, "127.0.26.31", "127.0.26.4:3480".parse().unwrap(), 20, &["-t"]);
    assert!(tcp.redirected, "{}", tcp.output);
    assert_eq!(tcp.connected, Some(b1.addr), "TCP follows to the backend's TCP address: {}", tcp.output);
    assert_eq!((tcp.sent, tcp.received), (20, 20), "every packet relayed: {}", tcp.output);
    let tls = uclient(lb_tls, "127.0.26.32", "127.0.26.4:3480".parse().unwrap(), 20, &["-t", "-S"]);
    assert!(tls.redirected, "{}", tls.output);
    assert_eq!(tls.connected, Some(backend_tls), "TLS follows to the backend's TLS address: {}", tls.output);
    assert_eq!((tls.sent, tls.received), (20, 20), "every packet relayed: {}", tls.output);
    let m = http_get(admin, "/metrics").unwrap().1;
    for t in ["tcp", "tls"] {
        let answers = crate::support::metric_sum(&m, "stunedge_stream_answers_total", &[&format!("transport=\"{t}\"")]);
        assert!(answers >= 1.0, "{t}: {m}");
    }
    let series = format!("stunedge_turn_redirects_total{{backend=\"b1\",address=\"{}\"}}", b1.addr);
    assert!(metric(admin, &series) >= 2.0, "both redirects counted for the backend: {m}");
}

/// A TCP listener on `addr` that accepts and closes every connection (the health probe's
/// connects) until the returned guard is dropped (120 s at most).
fn tcp_listening(addr: SocketAddr) -> (SocketAddr, Fake) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            while listener.accept().is_ok() {}
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (addr, Fake(stop))
}

/// TCP health: backend `a` answers its UDP probes but nothing listens on its TCP port; `b`
/// has both. Every Allocate over TCP, from 64 client addresses and two source ports each, is
/// redirected to `b`'s TCP address, while Allocates over UDP from the same addresses still
/// go to both; the TCP port's state is exported and its change logged.
#[test]
fn allocates_over_tcp_go_only_to_backends_whose_tcp_port_is_up_and_udp_ones_still_to_both() {
    let (a, b): (SocketAddr, SocketAddr) = (
        format!("127.0.27.2:{}", free_port()).parse().unwrap(),
        format!("127.0.27.3:{}", free_port()).parse().unwrap(),
    );
    let (_a, _b) = (fake_backend(a), fake_backend(b));
    // A port nothing listens on: bound, then closed.
    let a_tcp = std::net::TcpListener::bind("127.0.27.2:0").unwrap().local_addr().unwrap();
    let (b_tcp, _b_listening) = tcp_listening("127.0.27.3:0".parse().unwrap());
    let lb: SocketAddr = format!("127.0.27.1:{}", free_port()).parse().unwrap();
    let fields = format!(
        "probe_interval = 0.2\nprobe_timeout = 0.1\nfall = 2\nrise = 2\n\
         backends = [{{ name = \"a\", udp = [\"{a}\"], tcp = [\"{a_tcp}\"] }}, \
         {{ name = \"b\", udp = [\"{b}\"], tcp = [\"{b_tcp}\"] }}]\n"
    );
    let (mut server, admin) = balancer("lb-tcp-health.toml", lb, &fields, &format!("[stream]\ntcp = [\"{lb}\"]\n"));
    let stream_up = |name: &str, addr: SocketAddr| {
        metric(
            admin,
            &format!("stunedge_turn_backend_stream_up{{backend=\"{name}\",address=\"{addr}\",transport=\"tcp\"}}"),
        )
    };
    let up = |name: &str, addr: SocketAddr| {
        metric(admin, &format!("stunedge_turn_backend_up{{backend=\"{name}\",address=\"{addr}\"}}"))
    };
    let refused = format!(
        "stunedge_turn_backend_stream_probes_total{{backend=\"a\",address=\"{a_tcp}\",transport=\"tcp\",result=\"refused\"}}"
    );
    let answered = |name: &str, addr: SocketAddr| {
        metric(
            admin,
            &format!("stunedge_turn_backend_probes_total{{backend=\"{name}\",address=\"{addr}\",result=\"ok\"}}"),
        )
    };
    // Both UDP addresses answered their probes (not merely unprobed); a's TCP port was refused
    // more than once.
    wait_for("a's TCP port down, b's up, both UDP addresses probed", Duration::from_secs(5), || {
        stream_up("a", a_tcp) == 0.0
            && stream_up("b", b_tcp) == 1.0
            && metric(admin, &refused) >= 2.0
            && answered("a", a) >= 1.0
            && answered("b", b) >= 1.0
    });
    assert_eq!((up("a", a), up("b", b)), (1.0, 1.0), "both UDP addresses answer their probes");

    let mut udp_to_a = 0;
    for i in 1..=64u8 {
        let ip = IpAddr::from([127, 0, 28, i]);
        let mut ports = Vec::new();
        for _ in 0..2 {
            let (answer, from) = ask_tcp(ip, lb);
            assert_eq!(answer.code, 300, "{from}: {answer:?}");
            assert_eq!(answer.alternates, [b_tcp], "{from} is sent to b's TCP address");
            ports.push(from.port());
        }
        assert_ne!(ports[0], ports[1]);
        let to = chosen(lb, &ip.to_string());
        assert!(to == a || to == b, "{ip} over UDP: {to}");
        udp_to_a += usize::from(to == a);
    }
    // 64 addresses over two equal backends: none on a has probability 2^-64.
    assert!(udp_to_a > 0, "a still gets UDP clients");
    assert_eq!(stream_up("a", a_tcp), 0.0);
    let log = server.stderr();
    assert!(
        log.lines().any(|l| l.contains("TURN backend stream address down")
            && l.contains("backend=a ")
            && l.contains(&a_tcp.to_string())),
        "the TCP port's change is logged: {log}"
    );
}
