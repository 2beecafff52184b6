//! Real WebRTC clients in the NAT lab (issue 17): headless Chromium (Debian's `chromium`, driven
//! by `chromium-driver` and python3-selenium, `tests/browser/gather.py`) and libnice (a C harness
//! built here from `tests/browser/nice_gather.c`) gather their candidates through stunedge from
//! behind the lab's real NATs (`scripts/natlab.sh --plain --admin`: stunedge as a production node
//! answers, its metrics readable). `tests/browser/in-lab.sh` runs the client while tcpdump
//! records the STUN traffic, then saves the NAT's conntrack table and stunedge's /metrics.
//!
//! Asserted for each of the four NAT types: Chromium's `typ srflx` candidate is the NAT's
//! external mapping as conntrack reports it (not as stunedge says); every Binding request it
//! sent was answered with a success, none with an error, nothing was dropped, the rate limit at
//! its defaults passed every answer; the same over IPv6 (NAT66). libnice's srflx candidate
//! likewise. With `--turn`, both follow stunedge's 300 to a coturn relay and gather a
//! `typ relay` candidate on it, and a call between two peer connections that may use relay
//! candidates only connects through that relay behind a symmetric NAT. What the clients send (size, attributes, retransmission
//! schedule) is checked against the table in docs/real-clients.md, whose requests are also the
//! handler's regression fixtures (`tests/data/real-clients/`). Needs root, iproute2, nftables,
//! conntrack, tcpdump, curl, coturn, chromium, chromium-driver, python3-selenium, a C compiler,
//! pkg-config and libnice-dev: skipped outside CI without them, saying which.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{current_test, metric_sum, skip};

const BIN: &str = env!("CARGO_BIN_EXE_stunedge");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The server's and the NAT's public addresses in the lab.
const SERVER_V4: &str = "203.0.113.10";
const SERVER_V6: &str = "2001:db8:113::10";
const NAT_V4: &str = "203.0.113.1";
const NAT_V6: &str = "2001:db8:113::1";
const RELAY: &str = "203.0.113.20";

/// Why the lab cannot run real clients here, if it cannot (asked once per test binary).
fn unavailable() -> Option<String> {
    static VERDICT: OnceLock<Option<String>> = OnceLock::new();
    VERDICT
        .get_or_init(|| {
            let tools = ["ip", "nft", "conntrack", "tcpdump", "curl", "turnserver", "chromium", "chromedriver", "cc"];
            if let Some(why) = crate::support::netns_unavailable(&tools) {
                return Some(why);
            }
            let selenium = Command::new("/usr/bin/python3").args(["-c", "import selenium"]).output();
            if !selenium.is_ok_and(|o| o.status.success()) {
                return Some("python3-selenium is not installed for /usr/bin/python3".into());
            }
            let nice = Command::new("pkg-config").args(["--exists", "nice"]).status();
            if !nice.is_ok_and(|s| s.success()) {
                return Some("libnice-dev (pkg-config nice) is not installed".into());
            }
            None
        })
        .clone()
}

/// The libnice harness, built once per test binary.
fn nice_gather() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nice_gather");
            let flags = Command::new("pkg-config").args(["--cflags", "--libs", "nice"]).output().unwrap();
            let flags = String::from_utf8(flags.stdout).unwrap();
            let built = Command::new("cc")
                .args(["-O2", "-Wall", "-Wextra", "-Werror"])
                .arg(format!("{ROOT}/tests/browser/nice_gather.c"))
                .args(flags.split_whitespace())
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            assert!(built.status.success(), "nice_gather.c: {}", String::from_utf8_lossy(&built.stderr));
            out
        })
        .clone()
}

/// What one client did in the lab.
struct Run {
    /// The client's stdout.
    out: String,
    conntrack: String,
    metrics: String,
    /// The captured STUN/TURN datagrams (tests/browser/pcap_summary.py), in order.
    capture: Vec<Value>,
}

/// A scratch directory removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `client` (`chromium` or `libnice`, with `args`) in a lab emulating `nat` with natlab.sh
/// `flags`; `drop` makes the NAT drop every request to port 3478. `None` when skipped.
fn lab(nat: &str, flags: &[&str], drop: bool, client: &str, args: &[&str]) -> Option<Run> {
    if let Some(why) = unavailable() {
        skip(&current_test(), &format!("the browser lab ({nat}) cannot run: {why}"));
        return None;
    }
    let dir = Dir(std::env::temp_dir().join(format!(
        "stunedge-test-{}-browser-{}",
        std::process::id(),
        current_test().replace("::", "-")
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let nice = if client == "libnice" { nice_gather() } else { PathBuf::new() };
    let _one = crate::support::heavy_lab();
    let out = Command::new(format!("{ROOT}/scripts/natlab.sh"))
        .args(["--bin", BIN, "--plain", "--admin"])
        .args(flags)
        .args([nat, "--", "env"])
        .arg(format!("NICE_GATHER={}", nice.display()))
        .arg(format!("DROP={}", u8::from(drop)))
        .arg(format!("{ROOT}/tests/browser/in-lab.sh"))
        .arg(&dir.0)
        .arg(client)
        .args(args)
        .output()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.0.join(name)).unwrap_or_default();
    let status = format!(
        "natlab {nat} {flags:?} {client}: {}\n{}{}\nclient: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        read("client.out"),
        read("client.err")
    );
    // With the NAT dropping everything the client gathers no srflx candidate and may say so.
    assert!(drop || out.status.success(), "{status}");
    let summary = Command::new("/usr/bin/python3")
        .arg(format!("{ROOT}/tests/browser/pcap_summary.py"))
        .arg(dir.0.join("capture.pcap"))
        .output()
        .unwrap();
    assert!(summary.status.success(), "pcap_summary: {}", String::from_utf8_lossy(&summary.stderr));
    let capture =
        String::from_utf8(summary.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    Some(Run { out: read("client.out"), conntrack: read("conntrack.txt"), metrics: read("metrics.txt"), capture })
}

/// Chromium's candidates through `servers` (an `iceServers` JSON list), gathering for at most
/// `timeout` seconds.
fn chromium(nat: &str, flags: &[&str], drop: bool, servers: &str, timeout: &str) -> Option<(Run, Vec<Candidate>)> {
    let run = lab(nat, flags, drop, "chromium", &[servers, timeout])?;
    let json: Value = serde_json::from_str(run.out.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.out));
    let candidates =
        json["candidates"].as_array().unwrap().iter().filter_map(|c| Candidate::parse(c.as_str()?)).collect();
    Some((run, candidates))
}

/// libnice's candidates (`a=candidate:` lines).
fn libnice(nat: &str, flags: &[&str], drop: bool, args: &[&str]) -> Option<(Run, Vec<Candidate>)> {
    let run = lab(nat, flags, drop, "libnice", args)?;
    let candidates = run.out.lines().filter_map(|l| Candidate::parse(l.strip_prefix("a=")?)).collect();
    Some((run, candidates))
}

/// One ICE candidate: transport, type and address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    transport: String,
    kind: String,
    addr: Option<SocketAddr>,
}

impl Candidate {
    /// `candidate:FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE ...`; an mDNS
    /// host name has no address.
    fn parse(line: &str) -> Option<Candidate> {
        let f: Vec<&str> = line.strip_prefix("candidate:")?.split_whitespace().collect();
        let typ = f.iter().position(|&w| w == "typ")?;
        let addr = format!("{}:{}", bracket(f.get(4)?), f.get(5)?).parse().ok();
        Some(Candidate { transport: f.get(2)?.to_lowercase(), kind: f.get(typ + 1)?.to_string(), addr })
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() }
}

/// The UDP candidates of `kind`.
fn of_kind(candidates: &[Candidate], kind: &str) -> Vec<SocketAddr> {
    candidates.iter().filter(|c| c.kind == kind && c.transport == "udp").filter_map(|c| c.addr).collect()
}

/// The NAT's external mappings toward `server` port 3478, from its conntrack table: each entry's
/// reply direction is `src=SERVER dst=NAT_ADDRESS sport=3478 dport=MAPPED_PORT`.
fn mappings(conntrack: &str, server: &str) -> Vec<SocketAddr> {
    conntrack
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value =
                |key: &str, nth: usize| words.iter().filter_map(|w| w.strip_prefix(key)).nth(nth).map(str::to_string);
            // The second src=/dst=/sport=/dport= group is the reply direction.
            (value("src=", 1)? == server && value("sport=", 1)? == "3478")
                .then(|| format!("{}:{}", bracket(&value("dst=", 1)?), value("dport=", 1)?).parse().ok())?
        })
        .collect()
}

/// The captured requests of message type `ty` (e.g. "0x0001") sent to `to` (an IP address).
fn requests<'a>(run: &'a Run, ty: &str, to: &str) -> Vec<&'a Value> {
    run.capture.iter().filter(|d| d["type"] == ty && d["dst"].as_str().unwrap_or("").contains(to)).collect()
}

/// Every Binding request the client sent to `server` got a success answer with its transaction
/// ID, none an error; stunedge dropped nothing and its rate limit passed every answer.
fn all_answered(run: &Run, server: &str) {
    let sent = requests(run, "0x0001", server);
    assert!(!sent.is_empty(), "no Binding request captured: {:?}", run.capture);
    for request in &sent {
        let answered = run.capture.iter().any(|d| d["type"] == "0x0101" && d["tid"] == request["tid"]);
        assert!(answered, "request {} not answered: {:?}", request["tid"], run.capture);
    }
    assert!(run.capture.iter().all(|d| d["type"] != "0x0111"), "a Binding error answer: {:?}", run.capture);
    let m = &run.metrics;
    assert!(metric_sum(m, "stunedge_requests_total", &["method=\"binding\""]) >= sent.len() as f64, "{m}");
    assert_eq!(metric_sum(m, "stunedge_dropped_total", &[]), 0.0, "nothing dropped: {m}");
    assert_eq!(metric_sum(m, "stunedge_responses_total", &["class=\"error\""]), 0.0, "no error answered: {m}");
    for action in ["drop", "leak", "would_drop", "would_leak"] {
        let limited = metric_sum(m, "stunedge_limit_decisions_total", &[&format!("action=\"{action}\"")]);
        assert_eq!(limited, 0.0, "the rate limit's defaults never limit a browser ({action}): {m}");
    }
}

/// The `iceServers` list naming stunedge as the TURN server (the lab's relay's user u:p).
fn turn_servers() -> String {
    format!("[{{\"urls\": \"turn:{SERVER_V4}:3478\", \"username\": \"u\", \"credential\": \"p\"}}]")
}

/// Chromium behind `nat` gathers one srflx candidate: the NAT's mapping.
fn chromium_behind(nat: &str) {
    let servers = format!("[{{\"urls\": \"stun:{SERVER_V4}:3478\"}}]");
    let Some((run, candidates)) = chromium(nat, &[], false, &servers, "10") else { return };
    let srflx = of_kind(&candidates, "srflx");
    let mapped = mappings(&run.conntrack, SERVER_V4);
    assert_eq!(srflx.len(), 1, "{candidates:?}");
    assert_eq!(srflx, mapped, "the srflx candidate is the NAT's mapping (conntrack: {})", run.conntrack);
    assert_eq!(srflx[0].ip().to_string(), NAT_V4);
    all_answered(&run, SERVER_V4);
    // What Chromium sends (docs/real-clients.md): 20 bytes, no attribute, the magic cookie.
    for request in requests(&run, "0x0001", SERVER_V4) {
        assert_eq!(request["len"], 20, "{request}");
        assert_eq!(request["attrs"], Value::Array(vec![]), "{request}");
        assert_eq!(&request["hex"].as_str().unwrap()[8..16], "2112a442", "{request}");
    }
}

#[test]
fn chromium_gathers_the_mapping_of_a_full_cone_nat() {
    chromium_behind("full-cone");
}

#[test]
fn chromium_gathers_the_mapping_of_a_restricted_cone_nat() {
    chromium_behind("restricted-cone");
}

#[test]
fn chromium_gathers_the_mapping_of_a_port_restricted_cone_nat() {
    chromium_behind("port-restricted-cone");
}

#[test]
fn chromium_gathers_the_mapping_of_a_symmetric_nat() {
    chromium_behind("symmetric");
}

#[test]
fn chromium_gathers_ipv6_and_ipv4_mappings_through_nat66() {
    let servers = format!("[{{\"urls\": \"stun:{SERVER_V4}:3478\"}}, {{\"urls\": \"stun:[{SERVER_V6}]:3478\"}}]");
    let Some((run, candidates)) = chromium("port-restricted-cone", &["--ipv6"], false, &servers, "10") else {
        return;
    };
    let srflx = of_kind(&candidates, "srflx");
    let v6: Vec<SocketAddr> = srflx.iter().copied().filter(SocketAddr::is_ipv6).collect();
    assert_eq!(v6, mappings(&run.conntrack, SERVER_V6), "{candidates:?}\n{}", run.conntrack);
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].ip().to_string(), NAT_V6);
    let v4: Vec<SocketAddr> = srflx.iter().copied().filter(SocketAddr::is_ipv4).collect();
    assert_eq!(v4, mappings(&run.conntrack, SERVER_V4));
    all_answered(&run, SERVER_V6);
    all_answered(&run, SERVER_V4);
    assert!(metric_sum(&run.metrics, "stunedge_limit_decisions_total", &["family=\"ipv6\"", "action=\"pass\""]) >= 1.0);
}

#[test]
fn libnice_gathers_the_mapping_with_a_classic_request() {
    let Some((run, candidates)) = libnice("port-restricted-cone", &[], false, &[SERVER_V4, "3478"]) else { return };
    assert_eq!(run.out.lines().last(), Some("done"), "{}", run.out);
    let srflx = of_kind(&candidates, "srflx");
    assert_eq!(srflx, mappings(&run.conntrack, SERVER_V4), "{candidates:?}\n{}", run.conntrack);
    assert_eq!(srflx.len(), 1);
    all_answered(&run, SERVER_V4);
    // libnice 0.1.21 discovers with an RFC 3489 request (no magic cookie), answered with
    // MAPPED-ADDRESS: why server.rfc3489_classic stays on by default (docs/real-clients.md).
    for request in requests(&run, "0x0001", SERVER_V4) {
        assert_eq!(request["len"], 20, "{request}");
        assert_ne!(&request["hex"].as_str().unwrap()[8..16], "2112a442", "{request}");
    }
    assert!(metric_sum(&run.metrics, "stunedge_classic_requests_total", &[]) >= 1.0);
}

#[test]
fn chromium_and_libnice_follow_the_turn_redirect_to_a_relay() {
    let servers = turn_servers();
    let Some((run, candidates)) = chromium("port-restricted-cone", &["--turn"], false, &servers, "10") else {
        return;
    };
    let relay = of_kind(&candidates, "relay");
    assert_eq!(relay.len(), 1, "{candidates:?}");
    assert_eq!(relay[0].ip().to_string(), RELAY, "the relay is on the backend stunedge chose");
    // Its Allocate got a 300 from stunedge, then went to the relay.
    let to_edge = requests(&run, "0x0003", &format!("{SERVER_V4}:3478"));
    assert!(!to_edge.is_empty(), "{:?}", run.capture);
    let redirected = run.capture.iter().any(|d| d["type"] == "0x0113" && d["tid"] == to_edge[0]["tid"]);
    assert!(redirected, "stunedge answered the Allocate with an error (the 300): {:?}", run.capture);
    assert!(!requests(&run, "0x0003", &format!("{RELAY}:3478")).is_empty());
    assert!(
        metric_sum(&run.metrics, "stunedge_turn_redirects_total", &["backend=\"relay\""]) >= 1.0,
        "{}",
        run.metrics
    );
    assert!(metric_sum(&run.metrics, "stunedge_responses_total", &["code=\"300\""]) >= 1.0);

    let Some((run, candidates)) =
        libnice("port-restricted-cone", &["--turn"], false, &[SERVER_V4, "3478", SERVER_V4, "3478", "u", "p"])
    else {
        return;
    };
    let relay = of_kind(&candidates, "relay");
    assert_eq!(relay.len(), 1, "{candidates:?}");
    assert_eq!(relay[0].ip().to_string(), RELAY);
    assert!(metric_sum(&run.metrics, "stunedge_turn_redirects_total", &["backend=\"relay\""]) >= 1.0);
}

#[test]
fn a_call_connects_through_the_relay_stunedge_chose_behind_a_symmetric_nat() {
    // Two peer connections in one page, relay candidates only: the data channel's packets go
    // through the coturn relay that stunedge's 300 named, behind the NAT that defeats srflx.
    let servers = turn_servers();
    let Some(run) = lab("symmetric", &["--turn"], false, "chromium-connect", &[&servers, "15"]) else { return };
    let json: Value = serde_json::from_str(run.out.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.out));
    assert_eq!(json["connected"], true, "{json}");
    assert_eq!(json["echo"], "echo:ping", "{json}");
    for side in ["local", "remote"] {
        let pair = json["pair"][side].as_str().unwrap_or_default();
        assert!(pair.starts_with(&format!("relay {RELAY}:")), "{side} candidate of the selected pair: {json}");
    }
    assert!(
        metric_sum(&run.metrics, "stunedge_turn_redirects_total", &["backend=\"relay\""]) >= 2.0,
        "{}",
        run.metrics
    );
}

/// The intervals between a client's retransmissions of its first request, in seconds.
fn retransmissions(run: &Run) -> Vec<f64> {
    let sent = requests(run, "0x0001", SERVER_V4);
    let tid = &sent.first().expect("a request")["tid"];
    let times: Vec<f64> = sent.iter().filter(|d| &d["tid"] == tid).map(|d| d["t"].as_f64().unwrap()).collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn without_answers_chromium_and_libnice_retransmit_on_their_documented_schedules() {
    // The NAT drops every request: each client repeats its one transaction, doubling the wait.
    let servers = format!("[{{\"urls\": \"stun:{SERVER_V4}:3478\"}}]");
    let Some((run, candidates)) = chromium("port-restricted-cone", &[], true, &servers, "8.5") else { return };
    assert!(of_kind(&candidates, "srflx").is_empty());
    let gaps = retransmissions(&run);
    // libwebrtc: RTO 250 ms, doubled each time (docs/real-clients.md): 0.25, 0.5, 1, 2, 4.
    let expected = [0.25, 0.5, 1.0, 2.0, 4.0];
    assert!(gaps.len() >= expected.len(), "{gaps:?}");
    for (gap, want) in gaps.iter().zip(expected) {
        assert!((gap - want).abs() < 0.15 + want * 0.1, "Chromium retransmits at {gaps:?}, expected {expected:?}");
    }
    let Some((run, _)) = libnice("port-restricted-cone", &[], true, &[SERVER_V4, "3478"]) else { return };
    let gaps = retransmissions(&run);
    // libnice: 500 ms, doubled; three transmissions in all.
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    for (gap, want) in gaps.iter().zip([0.5, 1.0]) {
        assert!((gap - want).abs() < 0.15 + want * 0.1, "libnice retransmits at {gaps:?}");
    }
}
