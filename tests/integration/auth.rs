//! Authentication end to end through the handler (sans-IO, with a fixed clock): every
//! acceptance and rejection path of RFC 8489 §9.1.3 and §9.2.4. Requests are built and signed
//! here by hand (the `hmac`, `md-5` and `crc32fast` crates directly, not stunedge's writer), so a
//! shared mistake cannot make both sides agree.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use stunedge::config::Config;
use stunedge::counters::{Counter, Stats};
use stunedge::handler::{Action, DropReason, HandlerConfig, Meta, Rfc5780Role, handle};
use stunedge::stun::attr::{ErrorCode, Nonce, Realm};
use stunedge::stun::integrity::{Check, check_fingerprint, check_integrity_sha1, check_integrity_sha256};
use stunedge::stun::registry::*;
use stunedge::stun::{Class, Message};

use crate::support::COOKIE;

pub(crate) const NOW: u64 = 1_790_000_000;
pub(crate) const REALM: &str = "example.org";
pub(crate) const SECRET: &str = "0123456789abcdef-fleet";

/// These tests walk RFC 8489 §9's paths, many requests from one client and challenges to bare
/// 20-byte requests: the reflection defence (its error budget, the 3× cap that a bare request's
/// 401 does not fit) is tested in `amplification.rs` and the limiter's own tests, not here.
pub(crate) const NO_LIMIT: &str = "[limit]\nmode = \"off\"\nmax_amplification = 0\n";

/// The `[auth]` section every test here uses, with `policy` and `mechanism` filled in, after
/// [`NO_LIMIT`] (so that what a test appends still lands in `[auth]`).
pub(crate) fn auth_section(policy: &str, mechanism: &str) -> String {
    format!(
        "{NO_LIMIT}[auth]\npolicy = \"{policy}\"\nmechanism = \"{mechanism}\"\nrealm = \"{REALM}\"\n\
         nonce_secret = \"{SECRET}\"\nlong_term_users = {{ alice = \"wonderland\" }}\n\
         short_term_users = {{ bob = \"builder\" }}\nrest_secrets = [\"north-secret\", \"old-secret\"]\n"
    )
}

pub(crate) fn handler(policy: &str, mechanism: &str) -> HandlerConfig {
    let text = format!("[server]\nlisten = [\"127.0.0.1:3478\"]\n{}", auth_section(policy, mechanism));
    Config::from_toml(&text, "test").unwrap().validate(&[0]).unwrap().handlers.remove(0)
}

/// How a request is signed.
#[derive(Clone, Copy)]
pub(crate) enum Sign<'a> {
    Unsigned,
    Sha1(&'a [u8]),
    Sha256(&'a [u8]),
    Both(&'a [u8]),
}

fn append(out: &mut Vec<u8>, attr_type: u16, value: &[u8]) {
    out.extend_from_slice(&attr_type.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Sets the header length as if an attribute of `value_len` bytes were appended.
fn set_len_for(out: &mut [u8], value_len: usize) {
    let len = (out.len() - 20 + 4 + value_len) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// A Binding request with `attrs`, signed as asked (RFC 8489 §14.5, §14.6), and FINGERPRINT.
pub(crate) fn request(tid: [u8; 12], attrs: &[(u16, &[u8])], sign: Sign<'_>, fingerprint: bool) -> Vec<u8> {
    let mut out = vec![0x00, 0x01, 0, 0];
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(&tid);
    for (t, v) in attrs {
        append(&mut out, *t, v);
    }
    if let Sign::Sha1(key) | Sign::Both(key) = sign {
        set_len_for(&mut out, 20);
        let mut mac = <Hmac<Sha1>>::new_from_slice(key).unwrap();
        mac.update(&out);
        append(&mut out, ATTR_MESSAGE_INTEGRITY, &mac.finalize().into_bytes());
    }
    if let Sign::Sha256(key) | Sign::Both(key) = sign {
        set_len_for(&mut out, 32);
        let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap();
        mac.update(&out);
        append(&mut out, ATTR_MESSAGE_INTEGRITY_SHA256, &mac.finalize().into_bytes());
    }
    if fingerprint {
        set_len_for(&mut out, 4);
        let crc = crc32fast::hash(&out) ^ 0x5354_554E;
        append(&mut out, ATTR_FINGERPRINT, &crc.to_be_bytes());
    }
    let len = (out.len() - 20) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// MD5(username ":" realm ":" password), computed here with the md-5 crate.
pub(crate) fn md5_key(user: &str, realm: &str, password: &str) -> Vec<u8> {
    Md5::digest(format!("{user}:{realm}:{password}")).to_vec()
}

fn sha256_key(user: &str, realm: &str, password: &str) -> Vec<u8> {
    Sha256::digest(format!("{user}:{realm}:{password}")).to_vec()
}

/// PASSWORD-ALGORITHMS as the default configuration offers it: SHA-256, then MD5.
pub(crate) const OFFERED: [u8; 8] = [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
const PA_SHA256: [u8; 4] = [0x00, 0x02, 0x00, 0x00];
const PA_MD5: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

fn client() -> std::net::SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

/// Runs the handler on `bytes` from `src` at `now`; returns the action, the answer and counters.
fn ask_from(config: &HandlerConfig, bytes: &[u8], src: std::net::SocketAddr, now: u64) -> (Action, Vec<u8>, Stats) {
    let mut buf = [0u8; 2048];
    buf[..bytes.len()].copy_from_slice(bytes);
    let meta = Meta { src, local: "192.0.2.1:3478".parse().unwrap(), now, clock_ms: 1 };
    let mut stats = Stats::default();
    let action = handle(&mut buf, bytes.len(), &meta, config, &mut stats);
    let answer = match action {
        Action::Reply { len, .. } => buf[..len].to_vec(),
        Action::Drop(_) => Vec::new(),
    };
    (action, answer, stats)
}

fn ask(config: &HandlerConfig, bytes: &[u8]) -> (Vec<u8>, Stats) {
    let (_, answer, stats) = ask_from(config, bytes, client(), NOW);
    assert!(!answer.is_empty(), "no answer: {stats}");
    (answer, stats)
}

fn code(answer: &[u8]) -> Option<u16> {
    Message::parse(answer).unwrap().get::<ErrorCode>().map(|e| e.unwrap().code)
}

/// Whether the answer is signed: "sha1", "sha256", or "" (asserting the signature verifies).
fn signature(answer: &[u8], key: &[u8]) -> &'static str {
    let msg = Message::parse(answer).unwrap();
    let sha1 = check_integrity_sha1(&msg, key);
    let sha256 = check_integrity_sha256(&msg, key);
    assert_ne!(sha1, Check::Invalid, "MESSAGE-INTEGRITY present but wrong");
    assert_ne!(sha256, Check::Invalid, "MESSAGE-INTEGRITY-SHA256 present but wrong");
    match (sha1, sha256) {
        (Check::Valid, Check::Absent) => "sha1",
        (Check::Absent, Check::Valid) => "sha256",
        (Check::Absent, Check::Absent) => "",
        _ => panic!("both integrity attributes in one answer"),
    }
}

fn unsigned(answer: &[u8]) -> bool {
    let msg = Message::parse(answer).unwrap();
    msg.value(ATTR_MESSAGE_INTEGRITY).is_none() && msg.value(ATTR_MESSAGE_INTEGRITY_SHA256).is_none()
}

/// The NONCE of a long-term challenge, after checking the challenge's shape.
pub(crate) fn challenge_nonce(answer: &[u8]) -> Vec<u8> {
    let msg = Message::parse(answer).unwrap();
    assert_eq!(msg.message_type().class, Class::ErrorResponse);
    assert_eq!(msg.get::<Realm>().unwrap().unwrap().0, REALM.as_bytes());
    assert_eq!(msg.value(ATTR_PASSWORD_ALGORITHMS), Some(&OFFERED[..]));
    assert!(unsigned(answer) || code(answer) == Some(438));
    let nonce = msg.get::<Nonce>().unwrap().unwrap().0.to_vec();
    assert_eq!(nonce.len(), 29);
    assert!(nonce.starts_with(b"obMatJos2"), "{:?}", String::from_utf8_lossy(&nonce));
    nonce
}

// ---------------------------------------------------------------- short-term (RFC 8489 §9.1.3)

#[test]
fn short_term_sha1_and_sha256() {
    let config = handler("required", "short-term");
    let user = (ATTR_USERNAME, &b"bob"[..]);
    let (answer, stats) = ask(&config, &request([1; 12], &[user], Sign::Sha1(b"builder"), true));
    assert_eq!(code(&answer), None);
    assert_eq!(signature(&answer, b"builder"), "sha1");
    assert_eq!(check_fingerprint(&Message::parse(&answer).unwrap()), Check::Valid, "FINGERPRINT after integrity");
    assert_eq!(stats.get(Counter::RequestsAuthenticated), 1);
    assert!(Message::parse(&answer).unwrap().value(ATTR_USERNAME).is_none(), "§9.1.3: no USERNAME in answers");

    let (answer, _) = ask(&config, &request([2; 12], &[user], Sign::Sha256(b"builder"), false));
    assert_eq!(signature(&answer, b"builder"), "sha256");
    // Both present: MESSAGE-INTEGRITY-SHA256 is the one checked and the one answered.
    let (answer, _) = ask(&config, &request([3; 12], &[user], Sign::Both(b"builder"), false));
    assert_eq!(signature(&answer, b"builder"), "sha256");
}

#[test]
fn short_term_rejections() {
    let config = handler("required", "short-term");
    let user = (ATTR_USERNAME, &b"bob"[..]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("wrong password", request([1; 12], &[user], Sign::Sha1(b"build3r"), false), 401),
        ("unknown user", request([1; 12], &[(ATTR_USERNAME, b"eve")], Sign::Sha1(b"builder"), false), 401),
        ("no credentials", request([1; 12], &[], Sign::Unsigned, false), 400),
        ("integrity without USERNAME", request([1; 12], &[], Sign::Sha1(b"builder"), false), 400),
        ("USERNAME without integrity", request([1; 12], &[user], Sign::Unsigned, false), 400),
        (
            "a long-term user's password",
            request([1; 12], &[(ATTR_USERNAME, b"alice")], Sign::Sha1(b"wonderland"), false),
            401,
        ),
    ];
    for (what, bytes, expected) in cases {
        let (answer, stats) = ask(&config, &bytes);
        assert_eq!(code(&answer), Some(expected), "{what}");
        assert!(unsigned(&answer), "{what}: §9.1.3 failures are never signed");
        let msg = Message::parse(&answer).unwrap();
        assert!(msg.value(ATTR_REALM).is_none() && msg.value(ATTR_NONCE).is_none(), "{what}: no challenge");
        assert_eq!(stats.get(Counter::RequestsAuthenticated), 0, "{what}");
    }
}

#[test]
fn optional_policy_answers_the_unauthenticated_and_rejects_the_wrong() {
    let config = handler("optional", "short-term");
    let (answer, stats) = ask(&config, &request([1; 12], &[], Sign::Unsigned, false));
    assert_eq!(code(&answer), None);
    assert!(unsigned(&answer));
    assert_eq!(stats.get(Counter::RequestsAuthenticated), 0);
    let (answer, _) = ask(&config, &request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"nope"), false));
    assert_eq!(code(&answer), Some(401));
    let (answer, _) = ask(&config, &request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"builder"), false));
    assert_eq!(signature(&answer, b"builder"), "sha1");

    let config = handler("optional", "long-term");
    let (answer, _) = ask(&config, &request([1; 12], &[], Sign::Unsigned, false));
    assert_eq!(code(&answer), None, "no challenge when credentials are optional");
}

#[test]
fn none_policy_ignores_integrity() {
    let config = handler("none", "short-term");
    assert!(config.auth.is_none());
    let (answer, stats) = ask(&config, &request([1; 12], &[(ATTR_USERNAME, b"x")], Sign::Sha1(b"anything"), false));
    assert_eq!(code(&answer), None);
    assert!(unsigned(&answer));
    assert_eq!(stats.get(Counter::RequestsAuthenticated), 0);
}

#[test]
fn tampering_and_attribute_order() {
    let config = handler("required", "short-term");
    let good = request([1; 12], &[(ATTR_USERNAME, b"bob"), (ATTR_SOFTWARE, b"client")], Sign::Sha1(b"builder"), true);
    // A byte covered by MESSAGE-INTEGRITY changed (and FINGERPRINT recomputed, as an attacker
    // would): 401.
    let mut tampered = request([1; 12], &[(ATTR_USERNAME, b"bob"), (ATTR_SOFTWARE, b"clienT")], Sign::Unsigned, false);
    let mi_at = good.len() - 8 - 24;
    tampered.truncate(mi_at);
    tampered.extend_from_slice(&good[mi_at..mi_at + 24]);
    set_len_for(&mut tampered, 4);
    let crc = crc32fast::hash(&tampered) ^ 0x5354_554E;
    append(&mut tampered, ATTR_FINGERPRINT, &crc.to_be_bytes());
    assert_eq!(code(&ask(&config, &tampered).0), Some(401));

    // An attribute appended after MESSAGE-INTEGRITY is ignored (RFC 8489 §14.5): still valid.
    let mut appended = request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"builder"), false);
    append(&mut appended, ATTR_SOFTWARE, b"added later");
    let len = appended.len();
    appended[2..4].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    let (answer, _) = ask(&config, &appended);
    assert_eq!(signature(&answer, b"builder"), "sha1");

    // MESSAGE-INTEGRITY after FINGERPRINT: FINGERPRINT is not last, the message is dropped.
    let mut late = request([1; 12], &[(ATTR_USERNAME, b"bob")], Sign::Unsigned, true);
    let mut mac = <Hmac<Sha1>>::new_from_slice(b"builder").unwrap();
    set_len_for(&mut late, 20);
    mac.update(&late);
    append(&mut late, ATTR_MESSAGE_INTEGRITY, &mac.finalize().into_bytes());
    let (action, _, stats) = ask_from(&config, &late, client(), NOW);
    assert_eq!(action, Action::Drop(DropReason::BadFingerprint));
    assert_eq!(stats.drops(DropReason::BadFingerprint), 1);
}

#[test]
fn oversized_values_are_bad_requests() {
    let long = vec![b'u'; 600];
    let config = handler("required", "short-term");
    let (answer, _) = ask(&config, &request([1; 12], &[(ATTR_USERNAME, &long)], Sign::Sha1(b"builder"), false));
    assert_eq!(code(&answer), Some(400));
    let config = handler("required", "long-term");
    let nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    let key = md5_key("alice", REALM, "wonderland");
    for (name, attrs) in [
        ("USERNAME", vec![(ATTR_USERNAME, &long[..]), (ATTR_REALM, REALM.as_bytes()), (ATTR_NONCE, &nonce[..])]),
        ("REALM", vec![(ATTR_USERNAME, &b"alice"[..]), (ATTR_REALM, &[b'r'; 800][..]), (ATTR_NONCE, &nonce[..])]),
        ("NONCE", vec![(ATTR_USERNAME, &b"alice"[..]), (ATTR_REALM, REALM.as_bytes()), (ATTR_NONCE, &[b'n'; 800][..])]),
        ("USERHASH", vec![(ATTR_USERHASH, &[7u8; 31][..]), (ATTR_REALM, REALM.as_bytes()), (ATTR_NONCE, &nonce[..])]),
    ] {
        let (answer, _) = ask(&config, &request([1; 12], &attrs, Sign::Sha1(&key), false));
        assert_eq!(code(&answer), Some(400), "oversized {name}");
    }
}

// ----------------------------------------------------------------- long-term (RFC 8489 §9.2.4)

/// A long-term request with USERNAME, REALM, NONCE and, when `algorithm` is given, both
/// PASSWORD-ALGORITHMS (as offered) and PASSWORD-ALGORITHM.
fn long_term(user: &str, realm: &str, nonce: &[u8], algorithm: Option<&[u8]>, sign: Sign<'_>) -> Vec<u8> {
    let mut attrs: Vec<(u16, &[u8])> =
        vec![(ATTR_USERNAME, user.as_bytes()), (ATTR_REALM, realm.as_bytes()), (ATTR_NONCE, nonce)];
    if let Some(a) = algorithm {
        attrs.push((ATTR_PASSWORD_ALGORITHMS, &OFFERED));
        attrs.push((ATTR_PASSWORD_ALGORITHM, a));
    }
    request([9; 12], &attrs, sign, true)
}

#[test]
fn long_term_challenge_then_sha256_and_md5() {
    let config = handler("required", "long-term");
    let (first, stats) = ask(&config, &request([1; 12], &[], Sign::Unsigned, false));
    assert_eq!(code(&first), Some(401));
    assert_eq!(stats.get(Counter::Responses401), 1);
    let nonce = challenge_nonce(&first);
    // "Password algorithms" and "Username anonymity" (USERHASH is on by default).
    assert_eq!(&nonce[..13], b"obMatJos2wAAA");
    // Header 20 + ERROR-CODE 8 (empty reason) + REALM 16 + NONCE 36 + PASSWORD-ALGORITHMS 12.
    assert_eq!(first.len(), 92);

    let key = sha256_key("alice", REALM, "wonderland");
    let (answer, stats) = ask(&config, &long_term("alice", REALM, &nonce, Some(&PA_SHA256), Sign::Sha256(&key)));
    assert_eq!(code(&answer), None);
    assert_eq!(signature(&answer, &key), "sha256");
    assert_eq!(stats.get(Counter::RequestsAuthenticated), 1);
    // SHA-256 negotiated but the request signed with MESSAGE-INTEGRITY: still answered with -SHA256.
    let (answer, _) = ask(&config, &long_term("alice", REALM, &nonce, Some(&PA_SHA256), Sign::Sha1(&key)));
    assert_eq!(signature(&answer, &key), "sha256");

    // An RFC 5389 client: neither PASSWORD-ALGORITHM(S), so MD5 and MESSAGE-INTEGRITY.
    let md5 = md5_key("alice", REALM, "wonderland");
    let (answer, _) = ask(&config, &long_term("alice", REALM, &nonce, None, Sign::Sha1(&md5)));
    assert_eq!(signature(&answer, &md5), "sha1");
    // MD5 chosen explicitly.
    let (answer, _) = ask(&config, &long_term("alice", REALM, &nonce, Some(&PA_MD5), Sign::Sha1(&md5)));
    assert_eq!(signature(&answer, &md5), "sha256");
}

#[test]
fn long_term_rejections() {
    let config = handler("required", "long-term");
    let nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    let md5 = md5_key("alice", REALM, "wonderland");
    let other_realm = md5_key("alice", "example.net", "wonderland");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("wrong password", long_term("alice", REALM, &nonce, None, Sign::Sha1(&md5_key("alice", REALM, "x"))), 401),
        ("wrong realm", long_term("alice", "example.net", &nonce, None, Sign::Sha1(&other_realm)), 401),
        ("unknown user", long_term("mallory", REALM, &nonce, None, Sign::Sha1(&md5)), 401),
        (
            "missing NONCE",
            request([1; 12], &[(ATTR_USERNAME, b"alice"), (ATTR_REALM, REALM.as_bytes())], Sign::Sha1(&md5), false),
            400,
        ),
        (
            "missing REALM",
            request([1; 12], &[(ATTR_USERNAME, b"alice"), (ATTR_NONCE, &nonce)], Sign::Sha1(&md5), false),
            400,
        ),
        (
            "missing USERNAME and USERHASH",
            request([1; 12], &[(ATTR_REALM, REALM.as_bytes()), (ATTR_NONCE, &nonce)], Sign::Sha1(&md5), false),
            400,
        ),
        (
            "unknown PASSWORD-ALGORITHM",
            long_term("alice", REALM, &nonce, Some(&[0x00, 0x03, 0x00, 0x00]), Sign::Sha1(&md5)),
            400,
        ),
        (
            "PASSWORD-ALGORITHM with parameters",
            long_term("alice", REALM, &nonce, Some(&[0x00, 0x01, 0x00, 0x04]), Sign::Sha1(&md5)),
            400,
        ),
        (
            // A man in the middle removed SHA-256 from the offer: the echoed list does not match.
            "downgraded PASSWORD-ALGORITHMS",
            request(
                [1; 12],
                &[
                    (ATTR_USERNAME, b"alice"),
                    (ATTR_REALM, REALM.as_bytes()),
                    (ATTR_NONCE, &nonce),
                    (ATTR_PASSWORD_ALGORITHMS, &PA_MD5),
                    (ATTR_PASSWORD_ALGORITHM, &PA_MD5),
                ],
                Sign::Sha1(&md5),
                false,
            ),
            400,
        ),
        (
            "PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS",
            request(
                [1; 12],
                &[
                    (ATTR_USERNAME, b"alice"),
                    (ATTR_REALM, REALM.as_bytes()),
                    (ATTR_NONCE, &nonce),
                    (ATTR_PASSWORD_ALGORITHM, &PA_MD5),
                ],
                Sign::Sha1(&md5),
                false,
            ),
            400,
        ),
    ];
    for (what, bytes, expected) in cases {
        let (answer, stats) = ask(&config, &bytes);
        assert_eq!(code(&answer), Some(expected), "{what}");
        assert!(unsigned(&answer), "{what}");
        let msg = Message::parse(&answer).unwrap();
        if expected == 401 {
            challenge_nonce(&answer);
        } else {
            assert!(msg.value(ATTR_REALM).is_none() && msg.value(ATTR_NONCE).is_none(), "{what}: §9.2.4 400");
        }
        assert_eq!(stats.get(Counter::RequestsAuthenticated), 0, "{what}");
    }
}

#[test]
fn stale_nonces_get_438_signed_with_a_fresh_nonce() {
    let config = handler("required", "long-term");
    let nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    let md5 = md5_key("alice", REALM, "wonderland");
    let bytes = long_term("alice", REALM, &nonce, None, Sign::Sha1(&md5));

    // Expired (default lifetime 600 s).
    let (_, answer, stats) = ask_from(&config, &bytes, client(), NOW + 601);
    assert_eq!(code(&answer), Some(438));
    assert_eq!(stats.get(Counter::Responses438), 1);
    assert_eq!(signature(&answer, &md5), "sha1", "the request authenticated, so the 438 is signed");
    let fresh = challenge_nonce(&answer);
    assert_ne!(fresh, nonce);
    let retry = long_term("alice", REALM, &fresh, None, Sign::Sha1(&md5));
    let (_, answer, _) = ask_from(&config, &retry, client(), NOW + 601);
    assert_eq!(code(&answer), None, "the fresh nonce works");

    // Minted for another client address (same IP, other port; other IP).
    for other in ["198.51.100.7:40001", "198.51.100.8:40000"] {
        let (_, answer, _) = ask_from(&config, &bytes, other.parse().unwrap(), NOW);
        assert_eq!(code(&answer), Some(438), "nonce replayed from {other}");
    }
    // A nonce from a server with another secret, and one that is not ours at all.
    for foreign in [&b"obMatJos2wAAAAAAAAAAAAAAAAAAAAAA"[..], b"an-rfc5389-style-nonce"] {
        let (answer, _) = ask(&config, &long_term("alice", REALM, foreign, None, Sign::Sha1(&md5)));
        assert_eq!(code(&answer), Some(438));
    }
    // Wrong password and a stale nonce: 401 comes first (§9.2.4 order), never a signed 438.
    let wrong = long_term("alice", REALM, &nonce, None, Sign::Sha1(&md5_key("alice", REALM, "x")));
    let (_, answer, _) = ask_from(&config, &wrong, client(), NOW + 601);
    assert_eq!(code(&answer), Some(401));
}

#[test]
fn cleared_password_algorithms_bit_is_caught() {
    let config = handler("required", "long-term");
    let mut nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    // The bid-down of §9.2.1: clear the "Password algorithms" bit so the server would skip the
    // PASSWORD-ALGORITHMS checks. The nonce's MAC covers the bits: the request is refused.
    nonce[9..13].copy_from_slice(b"QAAA");
    let md5 = md5_key("alice", REALM, "wonderland");
    let (answer, _) = ask(&config, &long_term("alice", REALM, &nonce, None, Sign::Sha1(&md5)));
    assert_eq!(code(&answer), Some(438));
}

#[test]
fn userhash_identifies_static_users() {
    let config = handler("required", "long-term");
    let nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    let hash = Sha256::digest(format!("alice:{REALM}"));
    let key = sha256_key("alice", REALM, "wonderland");
    let attrs = |h: &[u8]| -> Vec<u8> {
        let attrs: Vec<(u16, &[u8])> = vec![
            (ATTR_USERHASH, h),
            (ATTR_REALM, REALM.as_bytes()),
            (ATTR_NONCE, &nonce),
            (ATTR_PASSWORD_ALGORITHMS, &OFFERED),
            (ATTR_PASSWORD_ALGORITHM, &PA_SHA256),
        ];
        request([4; 12], &attrs, Sign::Sha256(&key), false)
    };
    let (answer, _) = ask(&config, &attrs(&hash));
    assert_eq!(signature(&answer, &key), "sha256");
    let (answer, _) = ask(&config, &attrs(&[0u8; 32]));
    assert_eq!(code(&answer), Some(401), "unknown USERHASH");
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST API password, computed here.
pub(crate) fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let tag = mac.finalize().into_bytes();
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in tag.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn turn_rest_credentials_with_rotation_and_expiry() {
    let config = handler("required", "long-term");
    let nonce = challenge_nonce(&ask(&config, &request([1; 12], &[], Sign::Unsigned, false)).0);
    // The hand-made base64 agrees with the worked example `openssl dgst` gave (see
    // src/auth/keys.rs), so this is not the code under test agreeing with itself.
    assert_eq!(rest_password("north-secret", "1790000000:alice"), "QTXNF9z6M8qXK98UH4lp2rbYpLU=");
    for secret in ["north-secret", "old-secret"] {
        let user = format!("{}:carol", NOW + 3600);
        let key = md5_key(&user, REALM, &rest_password(secret, &user));
        let (answer, _) = ask(&config, &long_term(&user, REALM, &nonce, None, Sign::Sha1(&key)));
        assert_eq!(code(&answer), None, "secret {secret}");
        assert_eq!(signature(&answer, &key), "sha1");
        // SHA-256 keys from the same REST password.
        let key = sha256_key(&user, REALM, &rest_password(secret, &user));
        let (answer, _) = ask(&config, &long_term(&user, REALM, &nonce, Some(&PA_SHA256), Sign::Sha256(&key)));
        assert_eq!(signature(&answer, &key), "sha256");
    }
    // The user part is optional (the REST API draft; coturn's use-auth-secret accepts it).
    let bare = (NOW + 3600).to_string();
    let key = md5_key(&bare, REALM, &rest_password("north-secret", &bare));
    let (answer, _) = ask(&config, &long_term(&bare, REALM, &nonce, None, Sign::Sha1(&key)));
    assert_eq!(code(&answer), None, "a REST username that is only the expiry");
    assert_eq!(signature(&answer, &key), "sha1");
    let bare_expired = (NOW - 1).to_string();
    let key = md5_key(&bare_expired, REALM, &rest_password("north-secret", &bare_expired));
    let (answer, _) = ask(&config, &long_term(&bare_expired, REALM, &nonce, None, Sign::Sha1(&key)));
    assert_eq!(code(&answer), Some(401), "an expired bare REST username");
    let expired = format!("{}:carol", NOW - 1);
    let key = md5_key(&expired, REALM, &rest_password("north-secret", &expired));
    let (answer, _) = ask(&config, &long_term(&expired, REALM, &nonce, None, Sign::Sha1(&key)));
    assert_eq!(code(&answer), Some(401), "expired REST username");
    let user = format!("{}:carol", NOW + 3600);
    let key = md5_key(&user, REALM, &rest_password("retired-secret", &user));
    let (answer, _) = ask(&config, &long_term(&user, REALM, &nonce, None, Sign::Sha1(&key)));
    assert_eq!(code(&answer), Some(401), "a secret no longer configured");

    // Short-term with a REST user: the REST password is the key.
    let config = handler("required", "short-term");
    let password = rest_password("old-secret", &user);
    let bytes = request([5; 12], &[(ATTR_USERNAME, user.as_bytes())], Sign::Sha1(password.as_bytes()), false);
    assert_eq!(signature(&ask(&config, &bytes).0, password.as_bytes()), "sha1");
}

#[test]
fn answers_after_authentication_are_signed_even_when_errors() {
    let config = handler("required", "short-term");
    // An unknown comprehension-required attribute: 420, signed (the request authenticated).
    let bytes = request([1; 12], &[(ATTR_USERNAME, b"bob"), (0x0023, b"x")], Sign::Sha1(b"builder"), false);
    let (answer, stats) = ask(&config, &bytes);
    assert_eq!(code(&answer), Some(420));
    assert_eq!(signature(&answer, b"builder"), "sha1");
    assert_eq!(stats.get(Counter::Responses420), 1);
}

// ------------------------------------------------------------------- through the real server

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::cli::{Running, free_port, write_config};
use crate::support::{client_for, exchange, tool_missing};

/// Starts `stunedge serve` with `text` as its config file.
fn serve(name: &str, text: &str) -> (Running, crate::support::Scratch) {
    let path = write_config(name, text);
    let running = Running::start(&["serve", "-c", path.to_str().unwrap()]);
    (running, path)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The 401 a long-term listener answers an empty request with, from `client`; returns its nonce.
fn challenge_from(client: &UdpSocket, server: SocketAddr) -> Vec<u8> {
    let answer = exchange(client, server, &request([1; 12], &[], Sign::Unsigned, false));
    assert_eq!(code(&answer), Some(401));
    challenge_nonce(&answer)
}

/// alice's MD5-keyed request with `nonce`.
fn alice(nonce: &[u8], password: &str) -> Vec<u8> {
    long_term("alice", REALM, nonce, None, Sign::Sha1(&md5_key("alice", REALM, password)))
}

#[test]
fn a_nonce_from_one_process_authenticates_at_another_with_the_same_secret() {
    let (a_port, b_port, c_port) = (free_port(), free_port(), free_port());
    let config = |port: u16, secret: &str| {
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n{}", auth_section("required", "long-term"))
            .replace(SECRET, secret)
    };
    let (mut a, _config) = serve("fleet-a.toml", &config(a_port, SECRET));
    let (mut b, _config) = serve("fleet-b.toml", &config(b_port, SECRET));
    let (mut c, _config) = serve("fleet-c.toml", &config(c_port, "a-different-secret-entirely"));
    for (server, port) in [(&mut a, a_port), (&mut b, b_port), (&mut c, c_port)] {
        server.wait_answering(loopback(port));
    }
    let client = client_for(loopback(a_port));
    let nonce = challenge_from(&client, loopback(a_port));
    let key = md5_key("alice", REALM, "wonderland");
    let answer = exchange(&client, loopback(b_port), &alice(&nonce, "wonderland"));
    assert_eq!(code(&answer), None, "process B accepts process A's nonce");
    assert_eq!(signature(&answer, &key), "sha1");
    let answer = exchange(&client, loopback(c_port), &alice(&nonce, "wonderland"));
    assert_eq!(code(&answer), Some(438), "a process with another secret does not");
    // From another client address, A's nonce is stale at B too.
    let other = client_for(loopback(b_port));
    assert_eq!(code(&exchange(&other, loopback(b_port), &alice(&nonce, "wonderland"))), Some(438));
}

#[test]
fn per_listener_policy() {
    let (open, locked, ice) = (free_port(), free_port(), free_port());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{open}\", \"127.0.0.1:{locked}\", \"127.0.0.1:{ice}\"]\n{}\
         listeners = [{{ listen = \"127.0.0.1:{locked}\", policy = \"required\" }}, \
         {{ listen = \"127.0.0.1:{ice}\", policy = \"required\", mechanism = \"short-term\" }}]\n",
        auth_section("none", "long-term")
    );
    let (mut server, _config) = serve("listeners.toml", &text);
    server.wait_answering(loopback(open));
    let client = client_for(loopback(open));
    let plain = request([1; 12], &[], Sign::Unsigned, false);
    assert_eq!(code(&exchange(&client, loopback(open), &plain)), None);
    assert_eq!(code(&exchange(&client, loopback(locked), &plain)), Some(401));
    assert_eq!(code(&exchange(&client, loopback(ice), &plain)), Some(400));
    let ice_request = request([2; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(b"builder"), true);
    assert_eq!(signature(&exchange(&client, loopback(ice), &ice_request), b"builder"), "sha1");
}

#[test]
fn rest_credentials_computed_by_openssl() {
    if tool_missing("openssl") {
        return;
    }
    let port = free_port();
    let (mut server, _config) = serve(
        "rest.toml",
        &format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n{}", auth_section("required", "long-term")),
    );
    server.wait_answering(loopback(port));
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let user = format!("{expiry}:carol");
    // The recipe a web backend runs to hand a client its credentials.
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$1\" | openssl dgst -sha1 -hmac \"$2\" -binary | base64",
            "sh",
            &user,
            "old-secret",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let password = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(password.len(), 28);
    let client = client_for(loopback(port));
    let nonce = challenge_from(&client, loopback(port));
    let key = md5_key(&user, REALM, &password);
    let answer = exchange(&client, loopback(port), &long_term(&user, REALM, &nonce, None, Sign::Sha1(&key)));
    assert_eq!(code(&answer), None);
    assert_eq!(signature(&answer, &key), "sha1");
}

/// Polls until `check` holds (SIGHUP is handled within ~50 ms; workers pick the new
/// configuration up at their next loop turn).
fn eventually(what: &str, check: impl FnMut() -> bool) {
    crate::support::wait_for(what, Duration::from_secs(5), check);
}

#[test]
fn sighup_reloads_credentials_without_losing_a_packet_and_keeps_them_on_a_bad_file() {
    let port = free_port();
    let creds = write_config("reload-credentials.toml", "[long_term_users]\nalice = \"wonderland\"\n");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[log]\nlevel = \"debug\"\n{NO_LIMIT}[auth]\npolicy = \"required\"\n\
         realm = \"{REALM}\"\nnonce_secret = \"{SECRET}\"\ncredentials_file = \"{}\"\n",
        creds.display()
    );
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (mut server, _config) = serve("reload.toml", &text);
    server.wait_answering(loopback(port));
    assert!(server.stderr().contains("holds secrets and others can read it"), "{}", server.stderr());
    let client = client_for(loopback(port));
    let nonce = challenge_from(&client, loopback(port));
    assert_eq!(code(&exchange(&client, loopback(port), &alice(&nonce, "wonderland"))), None);

    // A steady stream of plain requests while the reload happens: every one is answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = client_for(loopback(port));
            let (mut sent, mut answered) = (0u32, 0u32);
            let mut buf = [0u8; 256];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                socket.send_to(&request([8; 12], &[], Sign::Unsigned, false), loopback(port)).unwrap();
                sent += 1;
                if socket.recv_from(&mut buf).is_ok() {
                    answered += 1;
                }
            }
            (sent, answered)
        })
    };
    std::fs::write(&creds, "[long_term_users]\nalice = \"looking-glass\"\n").unwrap();
    server.signal(libc::SIGHUP);
    eventually("the new password works", || {
        code(&exchange(&client, loopback(port), &alice(&nonce, "looking-glass"))).is_none()
    });
    assert_eq!(code(&exchange(&client, loopback(port), &alice(&nonce, "wonderland"))), Some(401), "old password");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, answered) = stream.join().unwrap();
    assert!(sent > 10, "the stream ran ({sent} requests)");
    assert_eq!(answered, sent, "no request lost across the reload");

    // A broken file: the running credentials stay, the log says why.
    std::fs::write(&creds, "[long_term_users]\nalice = \n").unwrap();
    server.signal(libc::SIGHUP);
    eventually("the failed reload is logged", || {
        server.stderr().contains("reload failed, keeping the running configuration")
    });
    assert!(server.alive());
    assert_eq!(code(&exchange(&client, loopback(port), &alice(&nonce, "looking-glass"))), None);

    // Nothing secret was ever logged, even at debug level.
    let log = server.stderr();
    for secret in ["wonderland", "looking-glass", SECRET] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// The Python that has aioice (Debian's python3-aioice installs it for /usr/bin/python3).
fn python_with_aioice() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        std::process::Command::new(py).args(["-c", "import aioice"]).output().is_ok_and(|o| o.status.success())
    })
}

#[test]
fn interop_with_aioice() {
    let Some(python) = python_with_aioice() else {
        let why = "aioice is not installed for python3 (package python3-aioice)";
        crate::support::skip(&crate::support::current_test(), why);
        return;
    };
    let (long, short) = (free_port(), free_port());
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{long}\", \"127.0.0.1:{short}\"]\n{}\
         listeners = [{{ listen = \"127.0.0.1:{short}\", policy = \"required\", mechanism = \"short-term\" }}]\n",
        auth_section("required", "long-term")
    );
    let (mut server, _config) = serve("aioice.toml", &text);
    server.wait_answering(loopback(long));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/aioice_auth.py");
    let out = std::process::Command::new(python)
        .args([script, "127.0.0.1", &long.to_string(), &short.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aioice interop failed:\n{text}");
    assert_eq!(text.matches("ok: ").count(), 3, "{text}");
}

/// Request and answer sizes of every kind of response, computed through the handler with the
/// default configuration (realm "stunedge", both password algorithms, IPv4 client unless said):
/// The amplification table of docs/authentication.md must list exactly these rows.
#[test]
fn amplification_table_in_the_docs_is_measured() {
    let section = |policy: &str, mechanism: &str, extra: &str| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:3478\"]\n[auth]\npolicy = \"{policy}\"\nmechanism = \"{mechanism}\"\n\
             nonce_secret = \"{SECRET}\"\nlong_term_users = {{ alice = \"wonderland\" }}\n\
             short_term_users = {{ bob = \"builder\" }}\n{extra}{NO_LIMIT}"
        );
        Config::from_toml(&text, "test").unwrap().validate(&[0]).unwrap().handlers.remove(0)
    };
    let off = section("none", "long-term", "");
    let long = section("required", "long-term", "");
    let long_small = section("required", "long-term", "password_algorithms = []\n");
    let short = section("required", "short-term", "");
    let v6: std::net::SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let plain = request([1; 12], &[], Sign::Unsigned, false);
    let nonce = {
        let (_, answer, _) = ask_from(&long, &plain, client(), NOW);
        Message::parse(&answer).unwrap().get::<Nonce>().unwrap().unwrap().0.to_vec()
    };
    let md5 = md5_key("alice", "stunedge", "wonderland");
    let lt = |sign| {
        let attrs: Vec<(u16, &[u8])> = vec![(ATTR_USERNAME, b"alice"), (ATTR_REALM, b"stunedge"), (ATTR_NONCE, &nonce)];
        request([2; 12], &attrs, sign, false)
    };
    let st = |password: &'static [u8]| request([3; 12], &[(ATTR_USERNAME, b"bob")], Sign::Sha1(password), false);
    // RFC 5780 mode: a group on 192.0.2.1 / 192.0.2.2 (IPv6: 2001:db8::1 / ::2), ports 3478 / 3479.
    let nat = |ips: [&str; 2]| {
        let at = |ip: &str, port: u16| std::net::SocketAddr::new(ip.parse().unwrap(), port);
        let addrs = [at(ips[0], 3478), at(ips[1], 3478), at(ips[0], 3479), at(ips[1], 3479)];
        HandlerConfig {
            rfc5780: Some(Rfc5780Role { addrs, listeners: [0, 1, 2, 3], role: stunedge::handler::Role::PRIMARY }),
            ..off.clone()
        }
    };
    let (nat4, nat6) = (nat(["192.0.2.1", "192.0.2.2"]), nat(["2001:db8::1", "2001:db8::2"]));
    let change = request([4; 12], &[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 6])], Sign::Unsigned, false);
    let padded = request([5; 12], &[(ATTR_PADDING, &[0; 1500])], Sign::Unsigned, false);
    // The second field is a fixed ceiling on the answer's size: the size measured when the table
    // was last checked by hand (docs/authentication.md). Regenerating the docs cannot raise it;
    // an answer that grows fails here until someone decides the growth is worth it.
    // (row, answer ceiling, handler, request, client address, time)
    type Row<'a> = (&'a str, usize, &'a HandlerConfig, Vec<u8>, std::net::SocketAddr, u64);
    let rows: Vec<Row<'_>> = vec![
        ("Binding, no authentication", 32, &off, plain.clone(), client(), NOW),
        ("Binding, no authentication, IPv6 client", 44, &off, plain.clone(), v6, NOW),
        (
            "Binding with FINGERPRINT, no authentication",
            40,
            &off,
            request([1; 12], &[], Sign::Unsigned, true),
            client(),
            NOW,
        ),
        ("long-term 401 challenge (REALM, NONCE, PASSWORD-ALGORITHMS)", 88, &long, plain.clone(), client(), NOW),
        ("long-term 401 challenge, `password_algorithms = []`", 76, &long_small, plain.clone(), client(), NOW),
        ("long-term 401, wrong password", 88, &long, lt(Sign::Sha1(b"not the key")), client(), NOW),
        ("long-term 438 Stale Nonce (signed)", 112, &long, lt(Sign::Sha1(&md5)), client(), NOW + 3600),
        ("long-term success (MD5 key, MESSAGE-INTEGRITY)", 56, &long, lt(Sign::Sha1(&md5)), client(), NOW),
        ("short-term 400, no credentials", 40, &short, plain.clone(), client(), NOW),
        ("short-term 401, wrong password", 28, &short, st(b"nope"), client(), NOW),
        ("short-term success (MESSAGE-INTEGRITY)", 56, &short, st(b"builder"), client(), NOW),
        ("RFC 5780 mode Binding", 68, &nat4, plain.clone(), client(), NOW),
        ("RFC 5780 mode Binding, IPv6", 116, &nat6, plain.clone(), v6, NOW),
        ("RFC 5780 mode, CHANGE-REQUEST", 68, &nat4, change, client(), NOW),
        ("RFC 5780 mode, PADDING of 1500 bytes", 1524, &nat4, padded, client(), NOW),
    ];
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/authentication.md")).unwrap();
    let mut table = String::new();
    for (what, ceiling, config, bytes, src, now) in rows {
        let (_, answer, _) = ask_from(config, &bytes, src, now);
        assert!(!answer.is_empty(), "{what}: no answer");
        assert!(
            answer.len() <= ceiling,
            "{what}: a {}-byte answer, above its fixed ceiling of {ceiling}",
            answer.len()
        );
        let row = format!(
            "| {what} | {} | {} | {:.2}× |",
            bytes.len(),
            answer.len(),
            answer.len() as f64 / bytes.len() as f64
        );
        table.push_str(&row);
        table.push('\n');
    }
    for row in table.lines() {
        assert!(
            doc.contains(row),
            "docs/authentication.md's amplification table lacks (or has stale) row:\n{row}\nwhole table:\n{table}"
        );
    }
}
