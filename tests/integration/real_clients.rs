//! Regression fixtures: the requests real ICE stacks sent in the browser lab
//! (`tests/data/real-clients.txt`, tabulated in docs/real-clients.md), answered by the handler
//! with the default configuration, as a production node would: Chromium's attribute-less
//! Binding request gets the 32-byte XOR-MAPPED-ADDRESS success, libnice's RFC 3489 request the
//! MAPPED-ADDRESS one; their Allocates get 400 without `[turn_lb]` and a 300 naming the
//! backend with it, within the amplification cap and the rate limit's defaults.

use std::net::SocketAddr;

use stunedge::config::Config;
use stunedge::counters::{Counter, Stats};
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
use stunedge::stun::attr::{AlternateServer, ErrorCode, MappedAddress, XorMappedAddress};
use stunedge::stun::{Message, MessageType};

/// The fixtures: (name, request bytes).
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("../data/real-clients.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            (name.to_string(), bytes)
        })
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    fixtures().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no fixture {name}")).1
}

/// The handler of the default configuration on one listener, plus `extra` TOML.
fn config(extra: &str) -> HandlerConfig {
    let text = format!("[server]\nlisten = [\"203.0.113.10:3478\"]\n{extra}");
    Config::from_toml(&text, "real-clients").unwrap().validate(&[0]).unwrap().handlers.remove(0)
}

/// Answers `request` from a client behind 203.0.113.1:49764; the answer's bytes and the stats.
fn answer(request: &[u8], config: &HandlerConfig) -> (Vec<u8>, Stats) {
    let meta = Meta {
        src: "203.0.113.1:49764".parse().unwrap(),
        local: "203.0.113.10:3478".parse().unwrap(),
        now: 1_764_547_200,
        clock_ms: 1,
    };
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..request.len()].copy_from_slice(request);
    let mut stats = Stats::default();
    match handle(&mut buf, request.len(), &meta, config, &mut stats) {
        Action::Reply { len, .. } => (buf[..len].to_vec(), stats),
        Action::Drop(reason) => panic!("dropped: {reason:?}"),
    }
}

#[test]
fn every_fixture_parses_and_is_a_request() {
    let all = fixtures();
    assert_eq!(all.len(), 4);
    for (name, bytes) in all {
        assert_eq!(bytes.len() % 4, 0, "{name}");
        assert_eq!(usize::from(u16::from_be_bytes([bytes[2], bytes[3]])) + 20, bytes.len(), "{name}");
        let kind = MessageType::from_u16(u16::from_be_bytes([bytes[0], bytes[1]]));
        assert!(kind.method == 0x001 || kind.method == 0x003, "{name}");
    }
}

#[test]
fn chromiums_binding_request_gets_the_minimal_success() {
    let request = fixture("chromium-binding");
    let (answer, stats) = answer(&request, &config(""));
    assert_eq!(answer.len(), 32, "header + XOR-MAPPED-ADDRESS");
    assert_eq!(&answer[..2], &[0x01, 0x01]);
    assert_eq!(&answer[4..20], &request[4..20], "cookie and transaction ID echoed");
    let m = Message::parse(&answer).unwrap();
    assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, "203.0.113.1:49764".parse::<SocketAddr>().unwrap());
    assert_eq!(stats.get(Counter::ResponsesSuccess), 1);
}

#[test]
fn libnices_classic_request_gets_mapped_address() {
    let request = fixture("libnice-binding-classic");
    let (answer, stats) = answer(&request, &config(""));
    assert_eq!(answer.len(), 32);
    assert_eq!(&answer[4..20], &request[4..20], "the 16-byte classic transaction ID echoed");
    let m = Message::parse(&answer).unwrap();
    assert_eq!(m.get::<MappedAddress>().unwrap().unwrap().0, "203.0.113.1:49764".parse::<SocketAddr>().unwrap());
    assert_eq!(stats.get(Counter::RequestsClassic), 1);
    // With classic support off (it is on by default), libnice's discovery goes unanswered.
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..request.len()].copy_from_slice(&request);
    let meta = Meta {
        src: "203.0.113.1:49764".parse().unwrap(),
        local: "203.0.113.10:3478".parse().unwrap(),
        now: 0,
        clock_ms: 1,
    };
    let off = config("rfc3489_classic = false\n");
    let action = handle(&mut buf, request.len(), &meta, &off, &mut Stats::default());
    assert_eq!(action, Action::Drop(stunedge::counters::DropReason::ClassicDisabled));
}

#[test]
fn allocates_get_400_without_a_balancer_and_a_300_within_the_cap_with_one() {
    let turn = "[turn_lb]\nenabled = true\nbackends = [{ name = \"relay\", udp = [\"203.0.113.20:3478\"] }]\n";
    for name in ["chromium-allocate", "libnice-allocate"] {
        let request = fixture(name);
        let (plain, _) = answer(&request, &config(""));
        assert_eq!(Message::parse(&plain).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400, "{name}");
        let (redirect, stats) = answer(&request, &config(turn));
        let m = Message::parse(&redirect).unwrap();
        assert_eq!(m.get::<ErrorCode>().unwrap().unwrap().code, 300, "{name}");
        assert_eq!(m.get::<AlternateServer>().unwrap().unwrap().0, "203.0.113.20:3478".parse::<SocketAddr>().unwrap());
        assert!(redirect.len() <= 3 * request.len(), "{name}: {} bytes for {}", redirect.len(), request.len());
        assert_eq!(stats.get(Counter::Responses300), 1);
    }
}
