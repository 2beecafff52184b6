//! The decision's unit tests: literal request bytes (RFC 5769's transaction ID), byte-exact
//! answers, and property tests that no input panics.

use super::*;
use crate::stun::attr::{
    ChangedAddress, MappedAddress, OtherAddress, Software, SourceAddress, UnknownAttributes, XorMappedAddress,
};
use crate::stun::attr::{ErrorCode, ResponseOrigin};
use crate::stun::integrity::Check;
use crate::stun::integrity::check_fingerprint;
use crate::stun::registry::{ATTR_CHANGE_REQUEST, ATTR_FINGERPRINT, MAGIC_COOKIE};
use crate::stun::registry::{ATTR_PADDING, ATTR_RESPONSE_PORT};
use crate::stun::registry::{ATTR_SOFTWARE, METHOD_ALLOCATE};
use crate::stun::{MessageType, MessageWriter};
use proptest::prelude::*;

/// RFC 5769's transaction ID.
pub(super) const TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

pub(super) fn meta(src: &str) -> Meta {
    let src: SocketAddr = src.parse().unwrap();
    let local = if src.is_ipv4() { "192.0.2.10:3478" } else { "[2001:db8::10]:3478" };
    Meta { src, local: local.parse().unwrap(), now: 0, clock_ms: 1 }
}

fn classic_on() -> HandlerConfig {
    HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() }
}

/// A request with the RFC 5769 transaction ID and the given raw attributes.
pub(super) fn request(message_type: u16, attrs: &[(u16, &[u8])], fingerprint: bool) -> ([u8; BUFFER_SIZE], usize) {
    let mut buf = [0u8; BUFFER_SIZE];
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&TID);
    let mut w = MessageWriter::new(&mut buf, MessageType::from_u16(message_type), &key).unwrap();
    for (t, v) in attrs {
        w.add_raw(*t, v).unwrap();
    }
    if fingerprint {
        w.add_fingerprint().unwrap();
    }
    let n = w.finish();
    (buf, n)
}

pub(super) fn run(buf: &mut [u8], len: usize, m: &Meta, config: &HandlerConfig) -> (Action, Stats) {
    let mut stats = Stats::default();
    let action = handle(buf, len, m, config, &mut stats);
    (action, stats)
}

#[test]
fn binding_answer_is_byte_exact() {
    let (mut buf, n) = request(0x0001, &[], false);
    let (action, stats) = run(&mut buf, n, &meta("192.0.2.1:32853"), &classic_on());
    assert_eq!(action, Action::Reply { len: 32, route: Route::BACK });
    // RFC 5769 §2.2's XOR-MAPPED-ADDRESS for 192.0.2.1:32853.
    let mut expected = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    expected.extend_from_slice(&TID);
    expected.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    assert_eq!(&buf[..32], &expected[..]);
    assert_eq!(stats.get(Counter::RequestsBinding), 1);
    assert_eq!(stats.get(Counter::ResponsesSuccess), 1);
}

#[test]
fn binding_answer_ipv6_matches_rfc5769() {
    let (mut buf, n) = request(0x0001, &[], false);
    let m = meta("[2001:db8:1234:5678:11:2233:4455:6677]:32853");
    assert_eq!(run(&mut buf, n, &m, &classic_on()).0, Action::Reply { len: 44, route: Route::BACK });
    let value = [
        0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2,
        0xb9, 0xd9,
    ];
    assert_eq!(&buf[20..24], &[0x00, 0x20, 0x00, 0x14]);
    assert_eq!(&buf[24..44], &value);
}

#[test]
fn fingerprint_software_and_origin() {
    let (mut buf, n) = request(0x0001, &[(ATTR_SOFTWARE, b"client")], true);
    let config = HandlerConfig {
        software: "edge".into(),
        response_origin: true,
        rfc3489_classic: true,
        auth: None,
        rfc5780: None,
        limit: Default::default(),
        turn: None,
        transport: Default::default(),
    };
    let m = meta("198.51.100.7:4000");
    let Action::Reply { len, .. } = run(&mut buf, n, &m, &config).0 else { panic!("no reply") };
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(msg.transaction_id().0, TID);
    assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(m.src))));
    assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin(m.local))));
    assert_eq!(msg.get::<Software>(), Some(Ok(Software(b"edge"))));
    assert_eq!(check_fingerprint(&msg), Check::Valid);
    assert_eq!(len, 20 + 12 + 12 + 8 + 8);
}

#[test]
fn no_fingerprint_unless_asked() {
    let (mut buf, n) = request(0x0001, &[], false);
    let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.1.1.1:1"), &classic_on()).0 else { panic!() };
    assert_eq!(check_fingerprint(&Message::parse(&buf[..len]).unwrap()), Check::Absent);
}

#[test]
fn classic_request_gets_mapped_address() {
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    buf[4..20].copy_from_slice(&[9; 16]);
    let config = HandlerConfig { response_origin: true, ..classic_on() };
    let (action, stats) = run(&mut buf, 20, &meta("192.0.2.1:32853"), &config);
    assert_eq!(action, Action::Reply { len: 44, route: Route::BACK });
    assert_eq!(&buf[..4], &[0x01, 0x01, 0x00, 0x18]);
    assert_eq!(&buf[4..20], &[9; 16], "the 128-bit classic transaction ID is kept");
    assert_eq!(&buf[20..32], &[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1]);
    assert_eq!(&buf[32..36], &[0x00, 0x04, 0x00, 0x08], "SOURCE-ADDRESS");
    assert_eq!(stats.get(Counter::RequestsClassic), 1);

    buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    let (action, _) = run(&mut buf, 20, &meta("192.0.2.1:32853"), &HandlerConfig::default());
    assert_eq!(action, Action::Drop(DropReason::ClassicDisabled));
}

#[test]
fn unknown_comprehension_required_gets_420() {
    let (mut buf, n) =
        request(0x0001, &[(0x0023, b"x"), (0x8050, b"optional"), (0x0023, b"again"), (0x7001, b"")], true);
    let (action, stats) = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on());
    let Action::Reply { len, .. } = action else { panic!("{action:?}") };
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.message_type(), MessageType::BINDING_ERROR);
    assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420);
    assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[0x0023, 0x7001]);
    assert_eq!(check_fingerprint(&msg), Check::Valid);
    assert_eq!(stats.get(Counter::Responses420), 1);
}

#[test]
fn change_request_gets_420_without_an_alternate_address() {
    for flags in [[0, 0, 0, 0], [0, 0, 0, 4], [0, 0, 0, 6]] {
        let (mut buf, n) = request(0x0001, &[(ATTR_CHANGE_REQUEST, &flags)], false);
        let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420, "{flags:?}");
        assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[ATTR_CHANGE_REQUEST]);
    }
    // An RFC 3489 classic request with an all-zero CHANGE-REQUEST asks for nothing: answered.
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
    buf[4..20].copy_from_slice(&[9; 16]);
    buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]);
    assert_eq!(
        run(&mut buf, 28, &meta("192.0.2.1:32853"), &classic_on()).0,
        Action::Reply { len: 32, route: Route::BACK }
    );
    // … but one asking for a change gets 420.
    buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
    buf[4..20].copy_from_slice(&[9; 16]);
    buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 2]);
    let Action::Reply { len, .. } = run(&mut buf, 28, &meta("192.0.2.1:32853"), &classic_on()).0 else { panic!() };
    assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 420);
}

/// A listener in RFC 5780 mode with role `role` of a group on 192.0.2.10/.11, ports 3478/3479.
fn rfc5780_on(role: u8) -> HandlerConfig {
    let addrs =
        ["192.0.2.10:3478", "192.0.2.11:3478", "192.0.2.10:3479", "192.0.2.11:3479"].map(|a| a.parse().unwrap());
    let role = Role::ALL[usize::from(role)];
    HandlerConfig { rfc5780: Some(Rfc5780Role { addrs, listeners: [0, 5, 6, 7], role }), ..classic_on() }
}

fn rfc5780_meta(role: u8) -> Meta {
    let local = rfc5780_on(role).rfc5780.unwrap().addrs[usize::from(role)];
    Meta { src: "198.51.100.7:4000".parse().unwrap(), local, now: 0, clock_ms: 1 }
}

#[test]
fn rfc5780_answers_carry_origin_other_and_both_mapped_addresses() {
    let (mut buf, n) = request(0x0001, &[], true);
    let (action, stats) = run(&mut buf, n, &rfc5780_meta(0), &rfc5780_on(0));
    let Action::Reply { len, route } = action else { panic!("{action:?}") };
    assert_eq!(route, Route::BACK, "no CHANGE-REQUEST: back the way it came");
    let msg = Message::parse(&buf[..len]).unwrap();
    let src: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(src))));
    assert_eq!(msg.get::<MappedAddress>(), Some(Ok(MappedAddress(src))));
    assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin("192.0.2.10:3478".parse().unwrap()))));
    assert_eq!(msg.get::<OtherAddress>(), Some(Ok(OtherAddress("192.0.2.11:3479".parse().unwrap()))));
    assert_eq!(check_fingerprint(&msg), Check::Valid);
    assert_eq!(len, 20 + 4 * 12 + 8, "68 bytes plus FINGERPRINT");
    assert_eq!(stats.get(Counter::Rfc5780Changed), 0);
}

#[test]
fn rfc5780_change_request_picks_the_socket() {
    // (role received on, flags) → (listener index, RESPONSE-ORIGIN, OTHER-ADDRESS)
    let cases = [
        (0, 4, Some(5), "192.0.2.11:3478", "192.0.2.11:3479"),
        (0, 2, Some(6), "192.0.2.10:3479", "192.0.2.11:3479"),
        (0, 6, Some(7), "192.0.2.11:3479", "192.0.2.11:3479"),
        (0, 0, None, "192.0.2.10:3478", "192.0.2.11:3479"),
        (3, 4, Some(6), "192.0.2.10:3479", "192.0.2.10:3478"),
        (3, 6, Some(0), "192.0.2.10:3478", "192.0.2.10:3478"),
        (1, 2, Some(7), "192.0.2.11:3479", "192.0.2.10:3479"),
    ];
    for (role, flags, via, origin, other) in cases {
        let (mut buf, n) = request(0x0001, &[(ATTR_CHANGE_REQUEST, &[0, 0, 0, flags])], false);
        let (action, stats) = run(&mut buf, n, &rfc5780_meta(role), &rfc5780_on(role));
        let Action::Reply { len, route } = action else { panic!("{action:?}") };
        assert_eq!(route, Route::new(via, None), "role {role} flags {flags}");
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin(origin.parse().unwrap()))));
        assert_eq!(msg.get::<OtherAddress>(), Some(Ok(OtherAddress(other.parse().unwrap()))));
        assert_eq!(stats.get(Counter::Rfc5780Changed), u64::from(via.is_some()));
    }
}

#[test]
fn rfc5780_classic_request_gets_changed_and_source_address() {
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
    buf[4..20].copy_from_slice(&[9; 16]);
    buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
    let (action, _) = run(&mut buf, 28, &rfc5780_meta(0), &rfc5780_on(0));
    let Action::Reply { len, route } = action else { panic!("{action:?}") };
    assert_eq!(route.via(), Some(7));
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.get::<SourceAddress>(), Some(Ok(SourceAddress("192.0.2.11:3479".parse().unwrap()))));
    assert_eq!(msg.get::<ChangedAddress>(), Some(Ok(ChangedAddress("192.0.2.11:3479".parse().unwrap()))));
    assert!(msg.get::<XorMappedAddress>().is_none(), "classic clients get MAPPED-ADDRESS only");
    assert!(msg.get::<MappedAddress>().is_some());
}

#[test]
fn rfc5780_response_port_and_padding() {
    let (mut buf, n) = request(0x0001, &[(ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0])], false);
    let (action, stats) = run(&mut buf, n, &rfc5780_meta(0), &rfc5780_on(0));
    let Action::Reply { route, .. } = action else { panic!("{action:?}") };
    assert_eq!((route.via(), route.port()), (None, Some(5000)));
    assert_eq!(stats.get(Counter::Rfc5780ResponsePort), 1);

    // PADDING: the answer is padded, but never past the request's size (a small request
    // gets no PADDING at all: the unpadded answer is already larger).
    for (asked, expect_padding) in [(400usize, true), (4, false), (0, false)] {
        let value = vec![0u8; asked];
        let (mut buf, n) = request(0x0001, &[(ATTR_PADDING, &value)], true);
        let (action, stats) = run(&mut buf, n, &rfc5780_meta(0), &rfc5780_on(0));
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(check_fingerprint(&msg), Check::Valid);
        let padding = msg.attributes().find(|a| a.attr_type == ATTR_PADDING);
        assert_eq!(padding.is_some(), expect_padding, "asked {asked}");
        assert_eq!(stats.get(Counter::Rfc5780Padded), u64::from(expect_padding));
        if let Some(p) = padding {
            assert!(len <= n, "padded answer {len} bytes > request {n} bytes");
            assert!(p.value.len() <= asked && p.value.len() % 4 == 0);
            assert!(len + 4 > n, "padded as far as the request's size allows ({len} of {n})");
        }
    }

    // PADDING with RESPONSE-PORT, or malformed values: 400 (RFC 5780 §6.1).
    let bad: [&[(u16, &[u8])]; 4] = [
        &[(ATTR_PADDING, &[0; 8]), (ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0])],
        &[(ATTR_CHANGE_REQUEST, &[0, 4])],
        &[(ATTR_RESPONSE_PORT, &[0x13, 0x88])],
        &[(ATTR_RESPONSE_PORT, &[0, 0, 0, 0])],
    ];
    for attrs in bad {
        let (mut buf, n) = request(0x0001, attrs, false);
        let (action, stats) = run(&mut buf, n, &rfc5780_meta(0), &rfc5780_on(0));
        let Action::Reply { len, route } = action else { panic!("{action:?}") };
        assert_eq!(route, Route::BACK);
        assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
        assert_eq!(stats.get(Counter::Responses400), 1);
    }
}

#[test]
fn routes_pack_and_unpack() {
    for via in [None, Some(0), Some(1), Some(7), Some(65534)] {
        for port in [None, Some(1), Some(3478), Some(65535)] {
            let r = Route::new(via, port);
            assert_eq!((r.via(), r.port()), (via, port));
        }
    }
    assert_eq!(Route::default(), Route::BACK);
    assert_eq!(std::mem::size_of::<Action>(), 16, "two registers: returned without memory");
}

#[test]
fn rfc5780_attributes_get_420_outside_rfc5780_mode() {
    for (t, v) in [(ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0][..]), (ATTR_PADDING, &[0; 8][..])] {
        let (mut buf, n) = request(0x0001, &[(t, v)], false);
        let Action::Reply { len, route } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
        assert_eq!(route, Route::BACK);
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420);
        assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[t]);
    }
}

#[test]
fn unknown_optional_and_known_required_are_fine() {
    let (mut buf, n) = request(0x0001, &[(0x8050, b"x"), (0x0024, &[0, 0, 0, 1]), (0x0025, b"")], false);
    assert!(matches!(run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0, Action::Reply { len: 32, .. }));
}

#[test]
fn unknown_after_integrity_is_ignored() {
    let (mut buf, n) = request(0x0001, &[(0x0008, &[0; 20]), (0x0023, b"late")], false);
    assert_eq!(run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0, Action::Reply { len: 32, route: Route::BACK });
}

#[test]
fn too_many_unknown_gets_400() {
    let types: Vec<u16> = (0..=MAX_UNKNOWN as u16).map(|i| 0x7000 + i).collect();
    let attrs: Vec<(u16, &[u8])> = types.iter().map(|t| (*t, &b""[..])).collect();
    let (mut buf, n) = request(0x0001, &attrs, false);
    let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
    assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
}

#[test]
fn other_methods_get_400() {
    let (mut buf, n) = request(MessageType::new(METHOD_ALLOCATE, Class::Request).to_u16(), &[], false);
    let (action, stats) = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on());
    let Action::Reply { len, .. } = action else { panic!() };
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.message_type(), MessageType::new(METHOD_ALLOCATE, Class::ErrorResponse));
    assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap(), ErrorCode { code: 400, reason: "Bad Request" });
    assert_eq!(stats.get(Counter::RequestsOther), 1);
    assert_eq!(stats.get(Counter::Responses400), 1);
}

#[test]
fn broken_attributes_get_400() {
    let (mut buf, n) = request(0x0001, &[(ATTR_SOFTWARE, b"abcdefgh")], false);
    buf[23] = 200; // SOFTWARE length runs past the message
    let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
    assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
}

#[test]
fn drops_are_named() {
    let m = meta("10.0.0.1:9");
    // A request of the given type and attributes, then changed by `edit`.
    let edited = |message_type: u16, attrs: &[(u16, &[u8])], fp: bool, edit: fn(&mut Vec<u8>)| {
        let (b, n) = request(message_type, attrs, fp);
        let mut v = b[..n].to_vec();
        edit(&mut v);
        v
    };
    let keep: fn(&mut Vec<u8>) = |_| {};
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0; 19], DropReason::TooShort),
        (edited(0x0001, &[], false, |v| v[0] = 0x80), DropReason::NotStun),
        (edited(0x0001, &[], false, |v| v.push(0)), DropReason::BadLength),
        (edited(0x0001, &[], false, |v| v[3] = 2), DropReason::BadLength),
        (edited(0x0011, &[], false, keep), DropReason::BindingIndication),
        (edited(0x0016, &[], false, keep), DropReason::Indication),
        (edited(0x0101, &[], false, keep), DropReason::Response),
        (edited(0x0111, &[], false, keep), DropReason::Response),
        (edited(0x0001, &[], true, |v| *v.last_mut().unwrap() ^= 1), DropReason::BadFingerprint),
        (
            edited(0x0001, &[(ATTR_FINGERPRINT, &[0; 4]), (ATTR_SOFTWARE, b"x")], false, keep),
            DropReason::BadFingerprint,
        ),
        (vec![0; MAX_REQUEST + 4], DropReason::Truncated),
    ];
    for (bytes, reason) in cases {
        let mut buf = vec![0u8; BUFFER_SIZE.max(bytes.len())];
        buf[..bytes.len()].copy_from_slice(&bytes);
        let (action, stats) = run(&mut buf, bytes.len(), &m, &classic_on());
        assert_eq!(action, Action::Drop(reason), "{bytes:02x?}");
        assert_eq!(stats.drops(reason), 1);
        assert_eq!(stats.get(Counter::ResponsesSuccess), 0);
    }
}

proptest! {
    #[test]
    fn never_panics_and_replies_parse(bytes in proptest::collection::vec(any::<u8>(), 0..600), force_cookie: bool) {
        let mut buf = [0u8; BUFFER_SIZE];
        buf[..bytes.len()].copy_from_slice(&bytes);
        if force_cookie && bytes.len() >= 20 {
            buf[..2].copy_from_slice(&[0, 1]);
            buf[2..4].copy_from_slice(&(((bytes.len() - 20) & !3) as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        }
        let len = if force_cookie && bytes.len() >= 20 { 20 + ((bytes.len() - 20) & !3) } else { bytes.len() };
        let (action, _) = run(&mut buf, len, &meta("[::1]:5"), &classic_on());
        if let Action::Reply { len, .. } = action {
            let msg = Message::parse(&buf[..len]).expect("replies are well-formed");
            prop_assert!(matches!(msg.message_type().class, Class::SuccessResponse | Class::ErrorResponse));
        }
    }

    #[test]
    fn any_binding_request_round_trips(port: u16, ip: [u8; 4], tid: [u8; 12], fp: bool, sw in "[a-z]{0,20}") {
        let mut buf = [0u8; BUFFER_SIZE];
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&tid);
        let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &key).unwrap();
        w.add(&Software(sw.as_bytes())).unwrap();
        if fp { w.add_fingerprint().unwrap(); }
        let n = w.finish();
        let src = SocketAddr::from((ip, port));
        let m = Meta { src, local: "10.0.0.1:3478".parse().unwrap(), now: 0, clock_ms: 1 };
        let (action, _) = run(&mut buf, n, &m, &classic_on());
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let msg = Message::parse(&buf[..len]).unwrap();
        prop_assert_eq!(msg.transaction_id().0, tid);
        prop_assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(src))));
        prop_assert_eq!(check_fingerprint(&msg) == Check::Valid, fp);
    }
}

/// The reflection defence in the decision: the limiter of `params` on a 4,096-key table.
pub(super) fn defended(params: crate::limit::Params, config: HandlerConfig) -> HandlerConfig {
    use crate::limit::{Limit, Rules, Shared};
    let limit = Limit::new(std::sync::Arc::new(Rules::new(params, vec![3478])), std::sync::Arc::new(Shared::new(4096)));
    HandlerConfig { limit, ..config }
}

#[test]
fn denied_sources_are_dropped_before_parsing() {
    let config = defended(crate::limit::Params::default(), classic_on());
    for (src, reason) in [
        ("224.0.0.9:4000", DropReason::DeniedBogon),
        ("203.0.113.9:0", DropReason::DeniedPortZero),
        ("192.0.2.10:3478", DropReason::DeniedOwnAddress),
    ] {
        // Not even STUN: the deny list comes first.
        let mut buf = [0xFFu8; BUFFER_SIZE];
        let (action, stats) = run(&mut buf, 40, &meta(src), &config);
        assert_eq!(action, Action::Drop(reason), "{src}");
        assert_eq!(stats.drops(reason), 1);
    }
    let (mut buf, n) = request(0x0001, &[], false);
    assert!(matches!(run(&mut buf, n, &meta("203.0.113.9:4000"), &config).0, Action::Reply { len: 32, .. }));
}

/// Over budget: dropped, or leaked as the minimal answer (no SOFTWARE, no RESPONSE-ORIGIN,
/// FINGERPRINT only because the request had one); counted by class, action and level.
#[test]
fn over_budget_answers_leak_minimal_or_drop() {
    let params = crate::limit::Params { rate: 10, burst_seconds: 1.0, ..crate::limit::Params::default() };
    let config = defended(params, HandlerConfig { software: "edge".into(), response_origin: true, ..classic_on() });
    let m = meta("203.0.113.9:4000");
    let mut total = Stats::default();
    let mut sizes = std::collections::BTreeMap::new();
    for i in 0..200u32 {
        let (mut buf, n) = request(0x0001, &[], false);
        buf[8..12].copy_from_slice(&i.to_be_bytes()); // distinct transactions
        let (action, stats) = run(&mut buf, n, &m, &config);
        total.merge(&stats);
        let key = match action {
            Action::Reply { len, route } => {
                assert_eq!(route, Route::BACK);
                len
            }
            Action::Drop(reason) => {
                assert_eq!(reason, DropReason::RateLimited);
                0
            }
        };
        *sizes.entry(key).or_insert(0) += 1;
    }
    use crate::counters::{AnswerClass, LimitAction};
    let count = |a| total.limit_decisions(0, AnswerClass::Success, a);
    // The burst (10) in full: header, XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE "edge".
    assert_eq!(sizes.get(&52), Some(&count(LimitAction::Pass)));
    assert!((9..=10).contains(&count(LimitAction::Pass)), "{sizes:?}");
    // Leaks: header and XOR-MAPPED-ADDRESS only, within the leak budget (15/s, burst 15).
    assert_eq!(sizes.get(&32).copied().unwrap_or(0), count(LimitAction::Leak));
    assert!((10..=15).contains(&count(LimitAction::Leak)), "{sizes:?}");
    assert_eq!(sizes[&0], count(LimitAction::Drop));
    assert_eq!(total.drops(DropReason::RateLimited), count(LimitAction::Drop));
    assert_eq!(total.limited_at(0, AnswerClass::Success, 0), count(LimitAction::Leak) + count(LimitAction::Drop));
    let (bytes_in, bytes_out) = total.bytes_of(0, AnswerClass::Success);
    assert_eq!(bytes_in, 200 * 20);
    assert_eq!(bytes_out, 52 * count(LimitAction::Pass) + 32 * count(LimitAction::Leak));
}

/// The amplification cap trims SOFTWARE first, then RESPONSE-ORIGIN, and drops what still
/// does not fit; the bare Binding success always fits.
#[test]
fn the_amplification_cap_trims_then_drops() {
    let software = "s".repeat(100);
    let config = defended(
        crate::limit::Params::default(),
        HandlerConfig { software: software.clone(), response_origin: true, ..classic_on() },
    );
    let answer = |src: &str, attrs: &[(u16, &[u8])]| {
        let (mut buf, n) = request(0x0001, attrs, false);
        let (action, stats) = run(&mut buf, n, &meta(src), &config);
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let msg = Message::parse(&buf[..len]).unwrap();
        let has = (msg.get::<Software>().is_some(), msg.get::<ResponseOrigin>().is_some());
        (
            n,
            len,
            has,
            stats.trimmed_count(crate::limit::family(meta(src).src.ip()), crate::counters::AnswerClass::Success),
        )
    };
    // 20-byte request, cap 60: IPv4 keeps RESPONSE-ORIGIN (44), IPv6 loses it too (68 > 60).
    assert_eq!(answer("203.0.113.9:4000", &[]), (20, 44, (false, true), 1));
    assert_eq!(answer("[2001:db8::9]:4000", &[]), (20, 44, (false, false), 1));
    // A request large enough (its own SOFTWARE) gets everything.
    let big = [b'c'; 120];
    assert_eq!(answer("203.0.113.9:4000", &[(ATTR_SOFTWARE, &big)]), (144, 148, (true, true), 0));
    // Off: no cap.
    let uncapped =
        defended(crate::limit::Params { max_amplification: 0.0, ..crate::limit::Params::default() }, config.clone());
    let (mut buf, n) = request(0x0001, &[], false);
    assert!(matches!(run(&mut buf, n, &meta("[2001:db8::9]:4000"), &uncapped).0, Action::Reply { len: 172, .. }));
    // An error that cannot fit: a 420 for an unknown attribute of a request of 24 bytes, with
    // SOFTWARE trimmed, fits; a 400 is never over (its reason phrase is trimmed first).
    let (mut buf, n) = request(0x0001, &[(0x7777, &[])], false);
    let (action, stats) = run(&mut buf, n, &meta("203.0.113.9:4000"), &config);
    let Action::Reply { len, .. } = action else { panic!("{action:?}") };
    assert!(len <= 3 * n, "{len} for {n}");
    assert_eq!(stats.get(Counter::Responses420), 1);
}

/// RFC 5780 answers have their own cap, and a leaked one loses SOFTWARE but keeps its RFC 5780
/// attributes and its route (a discovery client reads both).
#[test]
fn rfc5780_cap_and_leaks_keep_the_route() {
    let params = crate::limit::Params { rate: 1, burst_seconds: 1.0, leak: 1, ..crate::limit::Params::default() };
    let config = defended(params, HandlerConfig { software: "edge".into(), ..rfc5780_on(0) });
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20u32 {
        let (mut buf, n) = request(0x0001, &[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 6])], false);
        buf[8..12].copy_from_slice(&i.to_be_bytes());
        match run(&mut buf, n, &rfc5780_meta(0), &config).0 {
            Action::Reply { len, route } => {
                assert!(len <= 6 * n, "{len} for {n}");
                seen.insert((len, route.via()));
            }
            Action::Drop(reason) => assert_eq!(reason, DropReason::RateLimited),
        }
    }
    // The first: the whole answer with SOFTWARE from the changed socket; then leaks, without
    // SOFTWARE, from the changed socket too.
    assert_eq!(seen, [(68, Some(7)), (76, Some(7))].into_iter().collect(), "{seen:?}");
}
