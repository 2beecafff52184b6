//! The real server, started in-process on 127.0.0.1 and ::1 (ephemeral ports, two workers
//! sharing each port through SO_REUSEPORT): byte-exact answers, every drop reason counted, and
//! a flood of junk that neither crashes it nor costs a valid answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stunedge::config::{Config, Settings};
use stunedge::counters::{Counter, Stats};
use stunedge::handler::DropReason;
use stunedge::worker::Server;

use crate::support::{binding_request, client_for, exchange, expected_answer, hex, recv_from};

/// The backends every loopback test runs on: mmsg always, io_uring where this kernel allows it
/// (otherwise the test's io_uring part is skipped through `support::skip`: in CI that fails it).
pub(crate) fn backends() -> Vec<&'static str> {
    let mut all = vec!["mmsg"];
    if crate::support::io_uring_available(&crate::support::current_test()) {
        // "io_uring-sqe": the io_uring backend sending one SQE per answer; "-coop":
        // with io.uring_taskrun = "coop" instead of "defer".
        all.extend(["io_uring", "io_uring-sqe", "io_uring-coop", "io_uring-sqe-coop"]);
    }
    all
}

/// A test that runs `$each(backend)` for every backend of [`backends`].
macro_rules! every_backend {
    ($name:ident, $each:ident) => {
        #[test]
        fn $name() {
            for backend in backends() {
                $each(backend);
            }
        }
    };
}

/// Settings listening on 127.0.0.1 and ::1 (ephemeral ports) with `server` lines added to
/// `[server]` and the given backend.
fn settings(server: &str, backend: &str) -> Settings {
    settings_full("[\"127.0.0.1:0\", \"[::1]:0\"]", server, backend, "")
}

/// Settings with the given listen list, `[server]` lines, backend name of [`backends`] and extra
/// `[io]` lines, validated against this thread's CPU mask.
fn settings_full(listen: &str, server: &str, backend: &str, io: &str) -> Settings {
    let allowed: Vec<usize> = core_affinity::get_core_ids().unwrap().into_iter().map(|c| c.id).collect();
    Config::from_toml(&settings_text(listen, server, backend, io), "test").unwrap().validate(&allowed).unwrap()
}

/// The TOML for [`settings_full`].
fn settings_text(listen: &str, server: &str, backend: &str, io: &str) -> String {
    format!("[server]\nlisten = {listen}\n{server}\n[io]\n{}{io}\n", io_lines(backend))
}

/// The `[io]` lines that select a backend name of [`backends`].
pub(crate) fn io_lines(backend: &str) -> String {
    let (backend, send, taskrun) = match backend {
        "io_uring-sqe" => ("io_uring", "sqe", "defer"),
        "io_uring-coop" => ("io_uring", "sendmmsg", "coop"),
        "io_uring-sqe-coop" => ("io_uring", "sqe", "coop"),
        other => (other, "sendmmsg", "defer"),
    };
    format!("backend = \"{backend}\"\nuring_send = \"{send}\"\nuring_taskrun = \"{taskrun}\"\n")
}

/// Polls the published counters until `done` holds (workers publish once per loop turn).
pub(crate) fn wait_for(server: &Server, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

every_backend!(answers_byte_exact_on_ipv4_and_ipv6, answers_byte_exact);

fn answers_byte_exact(backend: &str) {
    let server = Server::start(&settings("", backend)).unwrap();
    assert!(backend.starts_with(server.backend().name()), "{backend}");
    let addrs: Vec<SocketAddr> = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert!(addrs.iter().all(|a| a.port() != 0));
    for addr in addrs {
        // Several sockets: SO_REUSEPORT spreads them across the workers.
        for i in 0..8u8 {
            let client = client_for(addr);
            let tid = [i; 12];
            let answer = exchange(&client, addr, &binding_request(tid, &[]));
            assert_eq!(answer, expected_answer(client.local_addr().unwrap(), tid), "via {addr}");
        }
    }
    let stats = wait_for(&server, |s| s.get(Counter::ResponsesSuccess) == 16 && s.get(Counter::SentDatagrams) == 16);
    assert_eq!(stats.get(Counter::ResponsesSuccess), 16);
    assert_eq!(stats.get(Counter::SentDatagrams), 16);
    assert_eq!(stats.total_drops(), 0);
}

every_backend!(classic_fingerprint_software_and_origin, classic_fingerprint_software_and_origin_on);

fn classic_fingerprint_software_and_origin_on(backend: &str) {
    let server = Server::start(&settings("software = \"edge\"\nresponse_origin = true\n", backend)).unwrap();
    let addr = server.local_addrs()[0];
    let client = client_for(addr);
    let me = client.local_addr().unwrap();

    // RFC 3489 classic: MAPPED-ADDRESS and SOURCE-ADDRESS, then SOFTWARE; 16-byte ID kept.
    let classic = hex("00 01 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    let answer = exchange(&client, addr, &classic);
    let mut expected = hex("01 01 00 20 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 00 01 00 08 00 01");
    expected.extend_from_slice(&me.port().to_be_bytes());
    expected.extend_from_slice(&[127, 0, 0, 1]);
    expected.extend_from_slice(&hex("00 04 00 08 00 01"));
    expected.extend_from_slice(&addr.port().to_be_bytes());
    expected.extend_from_slice(&[127, 0, 0, 1]);
    expected.extend_from_slice(b"\x80\x22\x00\x04edge");
    assert_eq!(answer, expected);

    // A request with FINGERPRINT gets one back; RESPONSE-ORIGIN names the server's address.
    let tid = [0x42; 12];
    let mut request = binding_request(tid, &hex("80 28 00 04 00 00 00 00"));
    let crc = crc32fast::hash(&request[..20]) ^ 0x5354_554E;
    request[24..28].copy_from_slice(&crc.to_be_bytes());
    let answer = exchange(&client, addr, &request);
    let msg = stunedge::stun::Message::parse(&answer).unwrap();
    assert_eq!(stunedge::stun::integrity::check_fingerprint(&msg), stunedge::stun::Check::Valid);
    assert_eq!(msg.get::<stunedge::stun::attr::ResponseOrigin>(), Some(Ok(stunedge::stun::attr::ResponseOrigin(addr))));
    assert_eq!(answer.len(), 20 + 12 + 12 + 8 + 8);
}

every_backend!(wildcard_listener_replies_from_the_address_asked, wildcard_replies);

fn wildcard_replies(backend: &str) {
    // 0.0.0.0: the reply must leave from 127.0.0.2 when the request went to 127.0.0.2.
    let server = Server::start(&settings_full("[\"0.0.0.0:0\"]", "response_origin = true", backend, "")).unwrap();
    let port = server.local_addrs()[0].port();
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let target: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let client = client_for(target);
        let answer = exchange(&client, target, &binding_request([1; 12], &[]));
        let msg = stunedge::stun::Message::parse(&answer).unwrap();
        assert_eq!(
            msg.get::<stunedge::stun::attr::ResponseOrigin>(),
            Some(Ok(stunedge::stun::attr::ResponseOrigin(target)))
        );
    }
}

every_backend!(junk_is_counted_by_reason_and_never_costs_an_answer, junk_flood);

fn junk_flood(backend: &str) {
    let server = Server::start(&settings("", backend)).unwrap();
    let addr = server.local_addrs()[0];
    let client = client_for(addr);
    let tid = [9; 12];
    let junk: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::TooShort),
        (vec![0x00, 0x01, 0x00], DropReason::TooShort),
        (binding_request(tid, &[])[..19].to_vec(), DropReason::TooShort),
        (vec![0xC0; 64], DropReason::NotStun),
        (b"GET / HTTP/1.1\r\nHost: stun\r\n\r\n".to_vec(), DropReason::NotStun),
        (
            {
                let mut r = binding_request(tid, &[]);
                r[3] = 8;
                r
            },
            DropReason::BadLength,
        ),
        (
            {
                let mut r = binding_request(tid, &hex("80 22 00 04 61 62 63 64"));
                r[3] = 6;
                r
            },
            DropReason::BadLength,
        ),
        (vec![0u8; 3000], DropReason::Truncated),
        (hex("00 11 00 00 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c"), DropReason::BindingIndication),
        (hex("01 01 00 00 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c"), DropReason::Response),
        (binding_request(tid, &hex("80 28 00 04 de ad be ef")), DropReason::BadFingerprint),
    ];
    // One at a time: each named datagram must raise exactly its own reason's counter by one,
    // and nothing else's (the random flood below produces every reason anyway).
    for (bytes, reason) in &junk {
        let before = server.stats();
        client.send_to(bytes, addr).unwrap();
        let received = before.get(Counter::ReceivedDatagrams) + 1;
        let after = wait_for(&server, |s| s.get(Counter::ReceivedDatagrams) == received);
        assert_eq!(after.get(Counter::ReceivedDatagrams), received, "{backend}: {bytes:02x?} not received; {after}");
        assert_eq!(
            after.drops(*reason),
            before.drops(*reason) + 1,
            "{backend}: {reason:?} not counted for {bytes:02x?}; {after}"
        );
        assert_eq!(after.total_drops(), before.total_drops() + 1, "{backend}: {bytes:02x?} counted twice; {after}");
    }
    // Attribute overrun with a valid header is answered 400, not dropped.
    let answer = exchange(&client, addr, &binding_request(tid, &hex("80 22 00 20 61 62 63 64")));
    assert_eq!(&answer[..2], &[0x01, 0x11]);
    // Random bytes (deterministic xorshift), then a valid request must still be answered.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
        client.send_to(&bytes, addr).unwrap();
    }
    let answer = exchange(&client, addr, &binding_request(tid, &[]));
    // Answers to random junk may arrive first (a random datagram can be a valid request), so
    // read until ours.
    let mut answer = answer;
    while answer.get(8..20) != Some(&tid[..]) {
        let mut buf = [0u8; 2048];
        let (n, _) = recv_from(&client, &mut buf).expect("the valid request is answered");
        answer = buf[..n].to_vec();
    }
    assert_eq!(answer, expected_answer(client.local_addr().unwrap(), tid));

    let stats = wait_for(&server, |s| s.get(Counter::ReceivedDatagrams) >= (junk.len() + 2002) as u64);
    assert_eq!(stats.get(Counter::ReceivedDatagrams), (junk.len() + 2002) as u64, "{stats}");
    assert!(stats.get(Counter::Responses400) >= 1);
    assert!(!server.any_worker_exited());
}

#[test]
fn stop_ends_workers_within_a_second() {
    for backend in backends() {
        let mut server = Server::start(&settings("", backend)).unwrap();
        let started = Instant::now();
        server.stop();
        assert_eq!(server.join(), 0, "no worker panicked");
        assert!(started.elapsed() < Duration::from_secs(1), "{backend}: {:?}", started.elapsed());
    }
}

#[test]
fn io_uring_sustains_a_burst_larger_than_its_buffer_ring() {
    // More datagrams in flight than the 1024 provided buffers: multishot receives end with
    // ENOBUFS and are re-armed; whatever the kernel kept is answered, nothing stalls.
    for backend in backends().into_iter().filter(|b| b.starts_with("io_uring")) {
        burst(backend);
    }
}

/// The kernel's drop counter summed over the sockets bound to `addr` (IPv4), from /proc/net/udp.
fn socket_drops(addr: SocketAddr) -> u64 {
    let local = format!("0100007F:{:04X}", addr.port());
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Sockets of the burst's one worker: enough that one wait can fill its whole buffer ring.
const BURST_LISTENERS: u8 = 64;
/// Datagrams sent to each of them.
const BURST_PER_LISTENER: u16 = 400;

fn burst(backend: &str) {
    // The buffer ring must run out, certainly, on every variant. So: one worker, whose one ring
    // takes the whole burst; and many sockets, because a multishot receive posts at most 32
    // datagrams per run of its task work (the kernel's MULTISHOT_MAX_RETRY) and the "defer"
    // variants run it once per wait: 64 sockets × 32 > 1024 buffers. The sending thread shares
    // the worker's CPU, so the socket queues fill while the worker waits for the CPU (measured:
    // 100 to 2,000 exhaustions per variant and run; unpinned with one socket, none at all with
    // "defer", and some runs without any with "coop").
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let listen: Vec<String> = (1..=BURST_LISTENERS).map(|i| format!("\"127.0.0.{i}:0\"")).collect();
    let listen = format!("[{}]", listen.join(", "));
    let server = Server::start(&settings_full(&listen, "", backend, &format!("cpus = [{cpu}]"))).unwrap();
    let addrs = server.local_addrs().to_vec();
    let addr = addrs[0];
    let sender = client_for(addr);
    assert!(core_affinity::set_for_current(core_affinity::CoreId { id: cpu }));
    for i in 0..BURST_PER_LISTENER {
        for (l, to) in addrs.iter().enumerate() {
            let mut tid = [0; 12];
            tid[0] = l as u8;
            tid[1..3].copy_from_slice(&i.to_be_bytes());
            let _ = sender.send_to(&binding_request(tid, &[]), to);
        }
    }
    // After the burst the server still answers. The burst may have filled the server's
    // socket buffer, and a datagram that arrives then is dropped by the kernel before stunedge
    // sees it; so the probe is retransmitted, as every STUN client does (every 100 ms here),
    // and a stalled server still fails it (no answer within 2 s).
    let client = client_for(addr);
    let drops_before = socket_drops(addr);
    client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let request = binding_request([0xEE; 12], &[]);
    let started = Instant::now();
    let mut sent = 0;
    let answer = loop {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{backend}: no answer in 2 s, {sent} probes: {}",
            server.stats()
        );
        client.send_to(&request, addr).unwrap();
        sent += 1;
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = recv_from(&client, &mut buf) {
            break buf[..n].to_vec();
        }
    };
    eprintln!(
        "burst ({backend}): answered after {sent} probe(s), {:?}; kernel drops on the server sockets during the probes: {}",
        started.elapsed(),
        socket_drops(addr) - drops_before
    );
    assert_eq!(answer, expected_answer(client.local_addr().unwrap(), [0xEE; 12]));
    let stats = wait_for(&server, |s| {
        s.get(Counter::SentDatagrams) + s.send_errors() + s.get(Counter::SendSlotsFull)
            == s.get(Counter::ResponsesSuccess)
    });
    // Every answer was sent or counted as lost on the way out; nothing is stuck in a slot.
    assert_eq!(
        stats.get(Counter::SentDatagrams) + stats.send_errors() + stats.get(Counter::SendSlotsFull),
        stats.get(Counter::ResponsesSuccess),
        "{stats}"
    );
    assert!(stats.get(Counter::ReceivedDatagrams) > 1024, "{stats}");
    // The point of the test: the ring did run out, and every receive that ended was re-armed.
    assert!(stats.get(Counter::BufferRingExhausted) >= 1, "{backend}: the buffer ring never ran out: {stats}");
    assert!(stats.get(Counter::MultishotRearms) >= stats.get(Counter::BufferRingExhausted), "{backend}: {stats}");
    // One send slot per receive buffer: an answer is never dropped for want of a slot.
    assert_eq!(stats.get(Counter::SendSlotsFull), 0, "{stats}");
    eprintln!("burst: {stats}");
    assert!(!server.any_worker_exited());
}

#[test]
fn cpu_steering_sends_each_datagram_to_the_worker_on_its_cpu() {
    let allowed: Vec<usize> = core_affinity::get_core_ids().unwrap().into_iter().map(|c| c.id).collect();
    if allowed.len() < 2 {
        let why = format!("CPU steering needs two CPUs to tell workers apart; this process has {}", allowed.len());
        crate::support::skip(&crate::support::current_test(), &why);
        return;
    }
    for backend in backends() {
        // The mask read before this thread pinned itself below.
        let io = format!("cpu_steering = true\ncpus = [{}, {}]", allowed[0], allowed[1]);
        let text = settings_text("[\"127.0.0.1:0\"]", "", backend, &io);
        let server = Server::start(&Config::from_toml(&text, "test").unwrap().validate(&allowed).unwrap()).unwrap();
        let addr = server.local_addrs()[0];
        // On loopback the receive path runs on the sending CPU, so pinning this thread picks
        // the CPU each datagram is processed on; without steering the 4-tuple hash would spread
        // these 20 source ports over both workers.
        for (index, cpu) in server.cpus().to_vec().into_iter().enumerate() {
            let before = server.worker_stats()[index].get(Counter::ReceivedDatagrams);
            assert!(core_affinity::set_for_current(core_affinity::CoreId { id: cpu }));
            for i in 0..20u8 {
                let client = client_for(addr);
                let answer = exchange(&client, addr, &binding_request([i; 12], &[]));
                assert_eq!(answer, expected_answer(client.local_addr().unwrap(), [i; 12]));
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while server.worker_stats()[index].get(Counter::ReceivedDatagrams) < before + 20
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(
                server.worker_stats()[index].get(Counter::ReceivedDatagrams),
                before + 20,
                "{backend}: worker on CPU {cpu}"
            );
        }
        let total: u64 = server.worker_stats().iter().map(|s| s.get(Counter::ReceivedDatagrams)).sum();
        assert_eq!(total, 40, "{backend}: nothing went to the other worker");
    }
}

every_backend!(an_oversize_datagram_counts_its_real_size, oversize_bytes);

/// `received_bytes` counts what arrived, not what fit the buffer: a 3,000-byte datagram (cut
/// to the 2,048-byte buffer and dropped as truncated) counts 3,000 bytes.
fn oversize_bytes(backend: &str) {
    let server = Server::start(&settings("", backend)).unwrap();
    let addr = server.local_addrs()[0];
    let client = client_for(addr);
    client.send_to(&[0u8; 3000], addr).unwrap();
    let request = binding_request([4; 12], &[]);
    assert_eq!(exchange(&client, addr, &request), expected_answer(client.local_addr().unwrap(), [4; 12]));
    let stats = wait_for(&server, |s| s.get(Counter::ReceivedDatagrams) >= 2);
    assert_eq!(stats.drops(DropReason::Truncated), 1, "{backend}: {stats}");
    assert_eq!(stats.get(Counter::ReceivedBytes), 3000 + request.len() as u64, "{backend}: {stats}");
}
