//! The amplification table (issue 15, test 6): for every kind of request and both address
//! families, the answer ÷ request size ratio stays under the documented cap — 3× by default, 6×
//! on RFC 5780 listeners, the bare Binding success (32 / 44 bytes) excepted — with the longest
//! SOFTWARE and REALM the configuration accepts and RESPONSE-ORIGIN on. Runs the configured
//! handler (sans-IO) on hand-built requests; prints the table.

use std::net::SocketAddr;

use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, Rfc5780Role, Role, handle};

use crate::support::{binding_request, hex};

/// The longest SOFTWARE and REALM `check-config` accepts: 127 characters.
fn configured(auth: bool) -> HandlerConfig {
    let long = "x".repeat(127);
    let auth = if auth {
        format!(
            "[auth]\npolicy = \"required\"\nrealm = \"{long}\"\nnonce_secret = \"0123456789abcdef-amp\"\n\
                 long_term_users = {{ alice = \"x\" }}\n"
        )
    } else {
        String::new()
    };
    let text = format!(
        "[server]\nlisten = [\"192.0.2.1:3478\", \"[2001:db8::1]:3478\"]\nsoftware = \"{long}\"\n\
         response_origin = true\n{auth}"
    );
    let settings = Config::from_toml(&text, "amplification").unwrap().validate(&[0]).unwrap();
    assert_eq!(settings.limit.rules.params().max_amplification, 3.0, "the default cap");
    settings.handlers[0].clone()
}

/// The same listener in RFC 5780 mode (primary role of a group on .1/.2, ports 3478/3479).
fn rfc5780(config: &HandlerConfig, v4: bool) -> HandlerConfig {
    let addrs: [SocketAddr; 4] = if v4 {
        ["192.0.2.1:3478", "192.0.2.2:3478", "192.0.2.1:3479", "192.0.2.2:3479"].map(|a| a.parse().unwrap())
    } else {
        ["[2001:db8::1]:3478", "[2001:db8::2]:3478", "[2001:db8::1]:3479", "[2001:db8::2]:3479"]
            .map(|a| a.parse().unwrap())
    };
    HandlerConfig {
        rfc5780: Some(Rfc5780Role { addrs, listeners: [0, 1, 2, 3], role: Role::PRIMARY }),
        ..config.clone()
    }
}

/// What one request got: its size, the answer's size (0: dropped) and the drop reason.
fn ask(config: &HandlerConfig, request: &[u8], v4: bool) -> (usize, usize, String) {
    let (src, local) = if v4 {
        ("203.0.113.9:40000".parse().unwrap(), "192.0.2.1:3478".parse().unwrap())
    } else {
        ("[2001:db8:ffff::9]:40000".parse().unwrap(), "[2001:db8::1]:3478".parse().unwrap())
    };
    let meta = Meta { src, local, now: 1_790_000_000, clock_ms: 1 };
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..request.len()].copy_from_slice(request);
    match handle(&mut buf, request.len(), &meta, config, &mut Stats::default()) {
        Action::Reply { len, .. } => (request.len(), len, String::new()),
        Action::Drop(reason) => (request.len(), 0, reason.name().to_string()),
    }
}

#[test]
fn every_answer_is_under_the_cap() {
    let tid = [9; 12];
    let plain = configured(false);
    let auth = configured(true);
    let software = {
        let mut attr = hex("80 22 00 20");
        attr.extend_from_slice(&[b'c'; 32]);
        attr
    };
    let classic = hex("00 01 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    let fingerprinted = {
        // FINGERPRINT over the header (with its length) and nothing else (RFC 8489 §14.7).
        let mut r = binding_request(tid, &hex("80 28 00 04 00 00 00 00"));
        let crc = crc32fast::hash(&r[..20]) ^ 0x5354_554E;
        r[24..28].copy_from_slice(&crc.to_be_bytes());
        r
    };
    let mut padding = hex("00 26 00 40");
    padding.extend_from_slice(&[0; 64]);
    // (kind, listener, request, must it be answered)
    let mut rows: Vec<(&str, bool, Vec<u8>, bool)> = vec![
        ("plain", false, binding_request(tid, &[]), true),
        ("FINGERPRINT", false, fingerprinted, true),
        ("SOFTWARE in the request", false, binding_request(tid, &software), true),
        ("classic (RFC 3489)", false, classic, true),
        ("400 (Allocate)", false, hex(&format!("00 03 00 00 21 12 a4 42 {}", "09 ".repeat(12))), true),
        ("420 (unknown attribute)", false, binding_request(tid, &hex("7f 01 00 00")), true),
        ("401 to a bare request", true, binding_request(tid, &[]), false),
    ];
    // A request large enough for the challenge with a 127-character realm.
    let mut big = hex("80 22 00 b4");
    big.extend_from_slice(&[b'c'; 180]);
    rows.push(("401 to a 204-byte request", true, binding_request(tid, &big), true));
    let rfc5780_rows: Vec<(&str, Vec<u8>)> = vec![
        ("RFC 5780 plain", binding_request(tid, &[])),
        ("RFC 5780 CHANGE-REQUEST", binding_request(tid, &hex("00 03 00 04 00 00 00 06"))),
        ("RFC 5780 RESPONSE-PORT", binding_request(tid, &hex("00 27 00 04 13 88 00 00"))),
        ("RFC 5780 PADDING", binding_request(tid, &padding)),
    ];

    let mut table = String::from(
        "| request | family | request bytes | answer bytes | ratio | cap |\n| --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut check = |kind: &str, config: &HandlerConfig, request: &[u8], v4: bool, must: bool, cap: f64| {
        let (req, ans, reason) = ask(config, request, v4);
        let bare = if v4 { 32 } else { 44 };
        let ratio = ans as f64 / req as f64;
        let family = if v4 { "IPv4" } else { "IPv6" };
        let shown = if ans == 0 { format!("dropped ({reason})") } else { ans.to_string() };
        table.push_str(&format!("| {kind} | {family} | {req} | {shown} | {ratio:.2} | {cap} |\n"));
        assert!(ans <= bare || ratio <= cap, "{kind} {family}: {ans} bytes for {req} ({ratio:.2}× > {cap}×)");
        if must {
            assert!(ans > 0, "{kind} {family}: not answered ({reason})");
        } else if ans == 0 {
            assert_eq!(reason, "amplification_cap", "{kind} {family}");
        }
    };
    for v4 in [true, false] {
        for (kind, with_auth, request, must) in &rows {
            let config = if *with_auth { &auth } else { &plain };
            check(kind, config, request, v4, *must, 3.0);
        }
        for (kind, request) in &rfc5780_rows {
            check(kind, &rfc5780(&plain, v4), request, v4, true, 6.0);
        }
    }
    eprintln!("{table}");
}
