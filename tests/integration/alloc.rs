//! Zero allocations on the packet path: a counting global allocator (per thread, so parallel
//! tests do not disturb it) wraps parse → handle → respond for every kind of outcome.

// The one place in tests that needs `unsafe`: a GlobalAlloc impl cannot be written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge::worker::Server;

use crate::support::{binding_request, hex, recv_from};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Every allocation in the process, on any thread (for the steady-state server test, which runs
/// alone so that no other test's allocations count).
static ALL_THREADS: AtomicU64 = AtomicU64::new(0);

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
    ALL_THREADS.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator unchanged; the counter is a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn counter_sees_allocations() {
    // The instrument itself must be able to fail.
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(64));
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn handler_never_allocates() {
    let tid = [7u8; 12];
    let fingerprinted = hex("00 01 00 08 21 12 a4 42 07 07 07 07 07 07 07 07 07 07 07 07 80 28 00 04 00 00 00 00");
    let mut with_fp = fingerprinted.clone();
    // Fix the FINGERPRINT value so the request is valid.
    let crc = crc32(&with_fp[..20]) ^ 0x5354_554E;
    with_fp[24..28].copy_from_slice(&crc.to_be_bytes());
    let inputs: Vec<Vec<u8>> = vec![
        binding_request(tid, &[]),
        with_fp,
        fingerprinted,                                                      // bad FINGERPRINT: dropped
        binding_request(tid, &hex("00 23 00 01 78 00 00 00")),              // 420
        binding_request(tid, &hex("80 22 00 10 78 78 78 78")),              // overrun: 400
        hex("00 03 00 00 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c"), // Allocate: 400
        hex("00 01 00 00 00 00 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c"), // classic
        vec![0xFF; 40],                                                     // not STUN
        vec![0; 7],                                                         // too short
    ];
    let config = HandlerConfig {
        software: "stunedge".into(),
        response_origin: true,
        rfc3489_classic: true,
        auth: None,
        rfc5780: None,
        limit: Default::default(),
        turn: None,
        transport: Default::default(),
    };
    let metas = [
        Meta {
            src: "203.0.113.9:40000".parse().unwrap(),
            local: "192.0.2.1:3478".parse().unwrap(),
            now: 0,
            clock_ms: 1,
        },
        Meta {
            src: "[2001:db8::9]:40000".parse().unwrap(),
            local: "[2001:db8::1]:3478".parse::<SocketAddr>().unwrap(),
            now: 0,
            clock_ms: 1,
        },
    ];
    let mut buffers: Vec<[u8; BUFFER_SIZE]> = vec![[0u8; BUFFER_SIZE]; inputs.len() * metas.len()];
    let mut stats = Stats::default();
    let mut replies = 0;
    let before = allocations();
    for (i, (input, meta)) in inputs.iter().flat_map(|x| metas.iter().map(move |m| (x, m))).enumerate() {
        let buf = &mut buffers[i];
        buf[..input.len()].copy_from_slice(input);
        if let Action::Reply { .. } = handle(buf, input.len(), meta, &config, &mut stats) {
            replies += 1;
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "the packet path allocated");
    assert_eq!(replies, 12, "six inputs are answered, for two address families");
    assert_eq!(stats.total_drops(), 6);
}

#[test]
fn turn_balancer_answers_never_allocate() {
    use stunedge::lb::{BackendAddr, Balancer, Health, KeyRule, ProbeSettings};
    let backends: Vec<BackendAddr> = [("a", "192.0.2.50:3478"), ("a", "[2001:db8::50]:3478"), ("b", "192.0.2.51:3478")]
        .iter()
        .map(|(name, a)| BackendAddr::new(name, a.parse().unwrap()))
        .collect();
    let balancer = Balancer::new(&backends, [1; 16], KeyRule::default(), ProbeSettings::default(), None).unwrap();
    let config = HandlerConfig { turn: Some(std::sync::Arc::new(balancer)), ..HandlerConfig::default() };
    let lb = config.turn.clone().unwrap();
    let tid = [5; 12];
    let allocate = |method: &str| {
        hex(&format!("{method} 00 08 21 12 a4 42 05 05 05 05 05 05 05 05 05 05 05 05 00 19 00 04 11 00 00 00"))
    };
    let inputs: Vec<Vec<u8>> = vec![
        allocate("00 03"),              // Allocate: 300
        allocate("00 04"),              // Refresh: 437
        allocate("00 16"),              // Send indication: dropped
        hex("40 00 00 04 01 02 03 04"), // ChannelData: dropped
        binding_request(tid, &[]),      // Binding: answered in place
    ];
    let meta = Meta {
        src: "203.0.113.9:40000".parse().unwrap(),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
    let mut buffers: Vec<[u8; BUFFER_SIZE]> = vec![[0u8; BUFFER_SIZE]; 2 * inputs.len()];
    let mut stats = Stats::default();
    let mut replies = 0;
    let before = allocations();
    for (i, input) in inputs.iter().chain(&inputs).enumerate() {
        if i == inputs.len() {
            // The second round with every backend down: 508.
            lb.state.entries.iter().for_each(|e| {
                e.set_health(Health::Down);
            });
        }
        let buf = &mut buffers[i];
        buf[..input.len()].copy_from_slice(input);
        if let Action::Reply { .. } = handle(buf, input.len(), &meta, &config, &mut stats) {
            replies += 1;
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "the TURN answers allocated");
    assert_eq!(replies, 6, "300/508, 437 and Binding, twice");
    assert_eq!(stats.total_drops(), 4);
    assert_eq!(stats.get(stunedge::counters::Counter::Responses300), 1);
    assert_eq!(stats.get(stunedge::counters::Counter::Responses508), 1);
}

#[test]
fn rfc5780_answers_never_allocate() {
    use stunedge::handler::Rfc5780Role;
    let tid = [7; 12];
    let addrs = ["192.0.2.1:3478", "192.0.2.2:3478", "192.0.2.1:3479", "192.0.2.2:3479"].map(|a| a.parse().unwrap());
    let config = HandlerConfig {
        rfc5780: Some(Rfc5780Role { addrs, listeners: [0, 1, 2, 3], role: stunedge::handler::Role::PRIMARY }),
        rfc3489_classic: true,
        ..HandlerConfig::default()
    };
    let mut padded = hex("00 26 00 40");
    padded.extend_from_slice(&[0; 64]);
    let inputs: Vec<Vec<u8>> = vec![
        binding_request(tid, &[]),
        binding_request(tid, &hex("00 03 00 04 00 00 00 06")), // change IP and port
        binding_request(tid, &hex("00 27 00 04 13 88 00 00")), // RESPONSE-PORT
        binding_request(tid, &padded),                         // PADDING
        binding_request(tid, &hex("00 03 00 02 00 06 00 00")), // malformed: 400
        hex("00 01 00 08 00 00 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 03 00 04 00 00 00 04"), // classic
    ];
    let meta = Meta { src: "203.0.113.9:40000".parse().unwrap(), local: addrs[0], now: 0, clock_ms: 1 };
    let mut buffers: Vec<[u8; BUFFER_SIZE]> = vec![[0u8; BUFFER_SIZE]; inputs.len()];
    let mut stats = Stats::default();
    let mut replies = 0;
    let before = allocations();
    for (i, input) in inputs.iter().enumerate() {
        let buf = &mut buffers[i];
        buf[..input.len()].copy_from_slice(input);
        if let Action::Reply { .. } = handle(buf, input.len(), &meta, &config, &mut stats) {
            replies += 1;
        }
    }
    assert_eq!(allocations() - before, 0, "the RFC 5780 packet path allocated");
    assert_eq!(replies, inputs.len(), "every input is answered");
    assert_eq!(stats.get(stunedge::counters::Counter::Rfc5780Changed), 2, "{stats}");
    assert_eq!(stats.get(stunedge::counters::Counter::Rfc5780Padded), 1, "{stats}");
}

#[test]
fn authentication_never_allocates() {
    use crate::auth::{NOW, REALM, Sign, handler, md5_key, request, rest_password};
    use stunedge::stun::registry::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
    let long = handler("required", "long-term");
    let short = handler("required", "short-term");
    let meta = Meta {
        src: "203.0.113.9:40000".parse().unwrap(),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: NOW,
        clock_ms: 1,
    };
    let nonce = long.auth.as_ref().unwrap().authenticator.nonce_for(meta.src, NOW);
    let key = md5_key("alice", REALM, "wonderland");
    let lt = |user: &str, key: &[u8]| {
        let attrs: Vec<(u16, &[u8])> =
            vec![(ATTR_USERNAME, user.as_bytes()), (ATTR_REALM, REALM.as_bytes()), (ATTR_NONCE, &nonce)];
        request([5; 12], &attrs, Sign::Sha1(key), true)
    };
    let rest_user = format!("{}:carol", NOW + 60);
    let rest_key = md5_key(&rest_user, REALM, &rest_password("north-secret", &rest_user));
    let inputs: Vec<(&HandlerConfig, Vec<u8>, u64)> = vec![
        (&short, request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"builder"), true), NOW), // success
        (&short, request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha256(b"builder"), false), NOW), // success
        (&short, request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"wrong"), false), NOW),  // 401
        (&short, request([1; 12], &[], Sign::Unsigned, false), NOW),                               // 400
        (&long, request([1; 12], &[], Sign::Unsigned, false), NOW),                                // 401 challenge
        (&long, lt("alice", &key), NOW),                                                           // success
        (&long, lt("alice", &key), NOW + 3600),                                                    // 438
        (&long, lt(&rest_user, &rest_key), NOW),                                                   // REST success
        (&long, lt("mallory", &key), NOW),                                                         // 401
    ];
    let mut buffers: Vec<[u8; BUFFER_SIZE]> = vec![[0u8; BUFFER_SIZE]; inputs.len()];
    let mut stats = Stats::default();
    let mut replies = 0;
    let before = allocations();
    for (i, (config, input, now)) in inputs.iter().enumerate() {
        let buf = &mut buffers[i];
        buf[..input.len()].copy_from_slice(input);
        let meta = Meta { now: *now, ..meta };
        if let Action::Reply { .. } = handle(buf, input.len(), &meta, config, &mut stats) {
            replies += 1;
        }
    }
    assert_eq!(allocations() - before, 0, "the authenticated packet path allocated");
    assert_eq!(replies, inputs.len(), "every input is answered");
    // Two short-term, alice and the REST user; the 438 is not counted as authenticated.
    assert_eq!(stats.get(stunedge::counters::Counter::RequestsAuthenticated), 4, "{stats}");
}

/// The reflection defence on the packet path: deny checks, every rate-limit outcome (pass,
/// leak, drop, allowlisted, exempt), trimming and the amplification cap, across thousands of
/// sources (new keys taking table slots) — no allocation.
#[test]
fn the_reflection_defence_never_allocates() {
    use std::sync::Arc;
    use stunedge::counters::{AnswerClass, LimitAction};
    use stunedge::limit::{Limit, Params, Rules, Shared};
    let params = Params {
        rate: 5,
        burst_seconds: 1.0,
        allow: vec!["198.51.100.0/24".parse().unwrap()],
        deny: vec!["192.0.2.128/25".parse().unwrap()],
        ..Params::default()
    };
    let limit = Limit::new(Arc::new(Rules::new(params, vec![3478])), Arc::new(Shared::new(1 << 12)));
    let config = HandlerConfig { software: "x".repeat(60), response_origin: true, limit, ..HandlerConfig::default() };
    let local: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let sources: Vec<SocketAddr> = (0..4000u32)
        .map(|i| match i % 5 {
            0 => SocketAddr::from(([203, 0, 113, 9], 40000)), // one flooded /32
            1 => SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 40000)), // many new keys
            2 => SocketAddr::from(([198, 51, 100, i as u8], 40000)), // allowlisted
            3 => SocketAddr::from(([192, 0, 2, 200], 40000)), // denied
            _ => format!("[2001:db8::{i:x}]:40000").parse().unwrap(),
        })
        .collect();
    let request = binding_request([3; 12], &[]);
    let mut buf = [0u8; BUFFER_SIZE];
    let mut stats = Stats::default();
    let before = allocations();
    for (i, src) in sources.iter().enumerate() {
        buf[..request.len()].copy_from_slice(&request);
        buf[8] = i as u8;
        let meta = Meta { src: *src, local, now: 0, clock_ms: 1 + i as u64 / 8 };
        let _ = handle(&mut buf, request.len(), &meta, &config, &mut stats);
    }
    assert_eq!(allocations() - before, 0, "the reflection defence allocated");
    for action in [LimitAction::Pass, LimitAction::Leak, LimitAction::Drop, LimitAction::Allowlisted] {
        assert!(stats.limit_decisions(0, AnswerClass::Success, action) > 0, "no {action:?}: {stats}");
    }
    assert!(stats.trimmed_count(0, AnswerClass::Success) > 0, "{stats}");
    assert!(stats.drops(stunedge::counters::DropReason::DeniedListed) > 0, "{stats}");
}

/// CRC-32 (IEEE), bitwise: independent of the crate the codec uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The whole server on loopback, both backends: once warmed up, answering 20,000 requests
/// allocates nothing anywhere in the process. It must run alone (other tests allocate):
/// `scripts/ci.sh` runs it with `-- --ignored --test-threads=1`.
#[test]
#[ignore = "needs the process to itself; scripts/ci.sh runs it alone with --ignored --test-threads=1"]
fn server_steady_state_never_allocates() {
    // (io.backend, io.uring_send)
    let mut backends = vec![("mmsg", "sendmmsg")];
    if crate::support::io_uring_available("alloc::server_steady_state_never_allocates") {
        backends.extend([("io_uring", "sendmmsg"), ("io_uring", "sqe")]);
    }
    let allowed: Vec<usize> = core_affinity::get_core_ids().unwrap().into_iter().map(|c| c.id).collect();
    for (backend, send) in backends {
        // The rate limiter on the path too: loopback not exempt, every answer charged in the
        // shared table (inside a budget this one client cannot exceed).
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[io]\nbackend = \"{backend}\"\nuring_send = \"{send}\"\n\
             [limit]\nexempt_loopback = false\nrate = 100000\nipv4_multipliers = [1, 1, 1]\n"
        );
        let server = Server::start(&Config::from_toml(&text, "test").unwrap().validate(&allowed).unwrap()).unwrap();
        let addr = server.local_addrs()[0];
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let requests: Vec<Vec<u8>> = (0..64u8).map(|i| binding_request([i; 12], &[])).collect();
        let mut buf = [0u8; 512];
        let mut exchange = |n: usize| {
            for k in 0..n {
                client.send_to(&requests[k % requests.len()], addr).unwrap();
                let len = match recv_from(&client, &mut buf) {
                    Ok((len, _)) => len,
                    Err(e) => panic!("{backend}/{send}: request {k} not answered: {e}"),
                };
                assert_eq!(len, 32);
            }
        };
        exchange(2000);
        let before = ALL_THREADS.load(Ordering::Relaxed);
        exchange(20_000);
        let after = ALL_THREADS.load(Ordering::Relaxed);
        assert_eq!(after - before, 0, "{backend}/{send}: allocations while serving");
        let passed = server.stats().limit_decisions(
            0,
            stunedge::counters::AnswerClass::Success,
            stunedge::counters::LimitAction::Pass,
        );
        assert!(passed > 20_000, "{backend}/{send}: the rate limiter saw {passed} answers");
        drop(server);
    }
}
