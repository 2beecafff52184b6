//! The NAT lab (`scripts/natlab.sh`): real Linux NATs in network namespaces, stunedge in RFC
//! 5780 mode behind them, and `stunedge probe` in the client namespace. `--nat` must name each
//! of the four classic NAT types; `--keepalive` must report the new mapping after the NAT's
//! conntrack table is flushed; `--lifetime` must find the NAT's UDP timeout; `--candidates`
//! must list the private host address and the NAT's public one. And RFC 5780 mode over IPv6, in
//! a namespace of its own with two IPv6 addresses. Needs root, iproute2, nft and conntrack:
//! skipped (saying why) without them, except in CI, which installs them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stunedge");

/// Why the lab cannot run here, if it cannot. Asked once per test binary: the tests run in
/// parallel, and concurrent probes with one namespace name raced (one `ip netns add` failed
/// because another test's probe held the name), which reported a working lab as missing.
fn unavailable() -> Option<String> {
    static VERDICT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERDICT.get_or_init(|| crate::support::netns_unavailable(&["ip", "nft", "conntrack"])).clone()
}

/// Runs `shell` (sh -c) in the client namespace of a lab emulating `nat`; returns its stdout.
fn lab(nat: &str, extra: &[&str], shell: &str) -> Option<String> {
    if let Some(why) = unavailable() {
        crate::support::skip(&crate::support::current_test(), &format!("the NAT lab ({nat}) cannot run: {why}"));
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/natlab.sh");
    let out =
        Command::new(script).args(["--bin", BIN]).args(extra).args([nat, "--", "sh", "-c", shell]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "natlab {nat}: {}\n{stdout}\n{stderr}", out.status);
    Some(stdout)
}

/// A `"key": value` field of a one-line JSON object (values here have no commas or quotes).
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 4..];
    rest[..rest.find([',', '}']).unwrap()].trim_matches('"')
}

const PROBE: &str = "\"$STUNEDGE\" probe --rto-ms 100 --retries 3";

fn classify(nat: &str, mapping: &str, filtering: &str, name: &str) {
    let Some(out) = lab(nat, &[], &format!("{PROBE} --nat --json \"$SERVER\"")) else { return };
    assert_eq!(field(&out, "nat_type"), name, "{out}");
    assert_eq!(field(&out, "mapping"), mapping, "{out}");
    assert_eq!(field(&out, "filtering"), filtering, "{out}");
    assert_eq!(field(&out, "behind_nat"), "true", "{out}");
    assert_eq!(field(&out, "other_address"), "203.0.113.11:3479", "{out}");
    assert!(field(&out, "mapped").starts_with("203.0.113.1:"), "{out}");
    assert!(field(&out, "local").starts_with("10.99.0.2:"), "{out}");
}

#[test]
fn full_cone() {
    classify("full-cone", "endpoint-independent", "endpoint-independent", "full cone");
}

#[test]
fn restricted_cone() {
    classify("restricted-cone", "endpoint-independent", "address-dependent", "restricted cone");
}

#[test]
fn port_restricted_cone() {
    classify("port-restricted-cone", "endpoint-independent", "address-and-port-dependent", "port-restricted cone");
}

#[test]
fn symmetric() {
    classify("symmetric", "address-and-port-dependent", "address-and-port-dependent", "symmetric");
}

#[test]
fn keepalive_reports_the_new_mapping_after_a_conntrack_flush() {
    // Keepalives every 200 ms for 3 s; the NAT forgets every mapping after 1.5 s. A symmetric
    // NAT picks a new random port for the next packet: the mapping changes exactly then.
    let shell = format!(
        "{PROBE} --keepalive 0.2 --count 15 --json \"$SERVER\" & sleep 1.5; \
         ip netns exec \"$NAT_NS\" conntrack -F >/dev/null 2>&1; wait $!"
    );
    let Some(out) = lab("symmetric", &[], &shell) else { return };
    let events: Vec<&str> = out.lines().collect();
    assert_eq!(events.len(), 2, "the first mapping and one change: {out}");
    assert_eq!(field(events[0], "changed"), "false");
    assert_eq!(field(events[1], "changed"), "true", "{out}");
    assert_ne!(field(events[0], "mapped"), field(events[1], "mapped"));
    let at: f64 = field(events[1], "at_s").parse().unwrap();
    assert!((1.5..3.2).contains(&at), "the change is seen after the flush: {out}");
}

#[test]
fn lifetime_finds_the_nat_udp_timeout() {
    // conntrack forgets an idle UDP mapping after 3 s in this lab.
    let shell = format!("{PROBE} --lifetime --lifetime-max 20 --lifetime-precision 0.5 --json \"$SERVER\"");
    let Some(out) = lab("port-restricted-cone", &["--udp-timeout", "3"], &shell) else { return };
    let min: f64 = field(&out, "lifetime_min_s").parse().unwrap();
    let max: f64 = field(&out, "lifetime_max_s").parse().unwrap();
    assert!(min >= 2.0 && max <= 3.6 && max - min <= 0.5 + 1e-9, "{out}");
}

#[test]
fn candidates_are_the_host_and_the_nat() {
    let Some(out) = lab("full-cone", &[], &format!("{PROBE} --candidates \"$SERVER\"")) else { return };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let host: Vec<&str> = lines[0].split(' ').collect();
    let srflx: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(&host[1..5], ["1", "udp", "2130706431", "10.99.0.2"], "{out}");
    assert_eq!(&host[6..], ["typ", "host"]);
    assert_eq!(&srflx[1..5], ["1", "udp", "1694498815", "203.0.113.1"], "{out}");
    assert_eq!(&srflx[6..8], ["typ", "srflx"]);
    assert_eq!(srflx[9], "10.99.0.2");
    assert_eq!(srflx[11], host[5], "rport is the host candidate's port");
    assert_eq!(srflx[5], host[5], "a full-cone NAT keeps the port");
}

/// A network namespace deleted (and its server stopped) on drop.
struct Namespace {
    name: String,
    server: Option<std::process::Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Runs `args` inside namespace `ns`; returns (success, stdout, stderr).
fn in_namespace(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// RFC 5780 mode over IPv6, end to end: a namespace whose loopback has 2001:db8::1 and ::2 (the
/// host's own addresses are untouched), stunedge in RFC 5780 mode on both, `probe --nat` in the
/// same namespace. No NAT there: "open internet", with OTHER-ADDRESS on the alternate address
/// and port, and the filtering tests' changed answers coming from the IPv6 addresses asked for;
/// coturn's `turnutils_natdiscovery` (bound to 2001:db8::1 with `-L`: unbound, it would pick a
/// different source address per destination and call that a mapping change) agrees.
#[test]
fn rfc5780_over_ipv6_in_a_namespace() {
    if let Some(why) = unavailable() {
        crate::support::skip(&crate::support::current_test(), &format!("the IPv6 namespace cannot be made: {why}"));
        return;
    }
    let name = format!("natlab-v6-{}", std::process::id());
    let mut ns = Namespace { name: name.clone(), server: None };
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip(&["netns", "add", &name]);
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    ip(&["-n", &name, "-6", "addr", "add", "2001:db8::1/128", "dev", "lo"]);
    ip(&["-n", &name, "-6", "addr", "add", "2001:db8::2/128", "dev", "lo"]);
    let config = crate::cli::write_config(
        "rfc5780-v6.toml",
        "[server]\nlisten = [\"[2001:db8::1]:3478\"]\n[rfc5780]\nalternate_ips = [\"2001:db8::2\"]\n\
         alternate_port = 3479\n[admin]\nlisten = \"\"\n",
    );
    let server = Command::new("ip")
        .args(["netns", "exec", &name, BIN, "serve", "-c", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ns.server = Some(server);
    let started = std::time::Instant::now();
    while !in_namespace(&name, &[BIN, "probe", "--rto-ms", "50", "--retries", "2", "[2001:db8::1]:3478"]).0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "stunedge did not answer in {name}");
    }
    let probe = [BIN, "probe", "--nat", "--json", "--rto-ms", "100", "--retries", "3", "[2001:db8::1]:3478"];
    let (ok, out, err) = in_namespace(&name, &probe);
    assert!(ok, "{out}{err}");
    assert_eq!(field(&out, "nat_type"), "open internet", "{out}");
    assert_eq!(field(&out, "other_address"), "[2001:db8::2]:3479", "{out}");
    assert_eq!(field(&out, "filtering"), "endpoint-independent", "{out}");
    assert_eq!(field(&out, "mapping"), "null", "{out}");
    assert_eq!(field(&out, "behind_nat"), "false", "{out}");
    assert!(field(&out, "mapped").starts_with("[2001:db8::"), "{out}");
    if crate::support::tool_missing("turnutils_natdiscovery") {
        return;
    }
    let coturn = ["timeout", "30", "turnutils_natdiscovery", "-m", "-f", "-L", "2001:db8::1", "2001:db8::1"];
    let (ok, out, err) = in_namespace(&name, &coturn);
    let text = out + &err;
    assert!(ok, "{text}");
    assert!(text.contains("NAT with Endpoint Independent Mapping!"), "{text}");
    assert!(text.contains("NAT with Endpoint Independent Filtering!"), "{text}");
    assert!(text.contains("Other addr: : 2001:db8::2:3479"), "{text}");
    assert!(text.contains("Response origin: : 2001:db8::2:3479"), "changed answer from the alternate: {text}");
}
