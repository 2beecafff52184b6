//! Fuzz the whole sans-IO path: the codec views, every typed attribute decoder, the integrity
//! checks and the handler. The magic cookie and a consistent length are forced onto inputs of
//! 20 bytes or more, so the fuzzer spends its time in the attribute walker rather than being
//! turned away by the header checks; the first input byte picks classic mode instead and which
//! listener configuration answers: no authentication, short-term or long-term required (users,
//! TURN REST secrets, USERHASH), or RFC 5780 mode (CHANGE-REQUEST, RESPONSE-PORT, PADDING), so
//! the credential checks and the NAT-discovery answers see fuzzed attributes too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stunedge::config::Config;
use stunedge::counters::Stats;
use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, Rfc5780Role, handle};
use stunedge::stun::attr::*;
use stunedge::stun::integrity::{check_fingerprint, check_integrity_sha1, check_integrity_sha256};
use stunedge::stun::{MAGIC_COOKIE, Message};

/// The four listener configurations: auth off, short-term required, long-term required, and
/// RFC 5780 mode (auth off).
fn configs() -> &'static [HandlerConfig; 4] {
    static CONFIGS: OnceLock<[HandlerConfig; 4]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let config = |auth: &str| {
            let text = format!(
                "[server]\nlisten = [\"[2001:db8::2]:3478\"]\nsoftware = \"fuzz\"\nresponse_origin = true\n\
                 [auth]\n{auth}\nnonce_secret = \"fuzzing-nonce-secret\"\nlong_term_users = {{ u = \"p\" }}\n\
                 short_term_users = {{ u = \"p\" }}\nrest_secrets = [\"s\"]\n"
            );
            Config::from_toml(&text, "fuzz").unwrap().validate(&[0]).unwrap().handlers.remove(0)
        };
        let at = |a: &str| a.parse().unwrap();
        let addrs =
            [at("[2001:db8::2]:3478"), at("[2001:db8::3]:3478"), at("[2001:db8::2]:3479"), at("[2001:db8::3]:3479")];
        let group = Rfc5780Role { addrs, listeners: [0, 1, 2, 3], role: stunedge::handler::Role::PRIMARY };
        [
            config("policy = \"none\""),
            config("policy = \"required\"\nmechanism = \"short-term\""),
            config("policy = \"required\"\nmechanism = \"long-term\""),
            HandlerConfig { rfc5780: Some(group), ..config("policy = \"none\"") },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; BUFFER_SIZE];
    let len = data.len().min(BUFFER_SIZE);
    buf[..len].copy_from_slice(&data[..len]);
    let mut len = len;
    if len >= 20 {
        let body = (len - 20) & !3;
        len = 20 + body;
        buf[0] &= 0x3F;
        buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        if data[0] & 0x01 == 0 {
            buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        }
    }
    if let Ok(msg) = Message::parse(&buf[..len]) {
        let _ = msg.raw_attributes().count() + msg.attributes().count();
        let _ = msg.get::<MappedAddress>();
        let _ = msg.get::<XorMappedAddress>();
        let _ = msg.get::<Username>();
        let _ = msg.get::<Userhash>();
        let _ = msg.get::<ErrorCode>();
        let _ = msg.get::<UnknownAttributes>();
        let _ = msg.get::<ChangeRequest>();
        let _ = msg.get::<ResponsePort>();
        let _ = msg.get::<PasswordAlgorithm>();
        if let Some(Ok(list)) = msg.get::<PasswordAlgorithms>() {
            let _ = list.iter().count();
        }
        let _ = check_fingerprint(&msg);
        let _ = check_integrity_sha1(&msg, b"key");
        let _ = check_integrity_sha256(&msg, b"key");
    }
    let config = &configs()[usize::from(data.first().map_or(0, |b| (b >> 1) & 3))];
    let meta = Meta {
        src: "[2001:db8::1]:5".parse().unwrap(),
        local: "[2001:db8::2]:3478".parse().unwrap(),
        now: 1_790_000_000,
        clock_ms: 1,
    };
    let mut stats = Stats::default();
    let request_len = len;
    if let Action::Reply { len, route } = handle(&mut buf, len, &meta, config, &mut stats) {
        let reply = Message::parse(&buf[..len]).expect("every reply is a well-formed message");
        if let Some(padding) = reply.attributes().find(|a| a.attr_type == stunedge::stun::registry::ATTR_PADDING) {
            assert!(len <= request_len, "PADDING never makes an answer larger than its request");
            assert_eq!(padding.value.len() % 4, 0);
        }
        if config.rfc5780.is_none() {
            assert_eq!(route, Default::default(), "only RFC 5780 mode routes answers elsewhere");
        }
    }
});
