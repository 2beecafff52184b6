//! Every test vector of RFC 5769 ("Test Vectors for STUN", 2010): parsed, verified
//! (MESSAGE-INTEGRITY with the short-term password or the long-term key, FINGERPRINT), the XOR
//! addresses decoded and re-encoded, and the values our code computes compared with the RFC's.

use std::net::SocketAddr;

use md5::{Digest, Md5};
use stunedge::stun::attr::{IceControlled, Nonce, Priority, Realm, Software, Username, XorMappedAddress};
use stunedge::stun::integrity::{self, Check, check_fingerprint, check_integrity_sha1};
use stunedge::stun::registry::{ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stunedge::stun::{Attribute, Class, Message, MessageType, MessageWriter};

use crate::support::hex;

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// §2.1 Sample Request.
const REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// §2.2 Sample IPv4 Response.
const RESPONSE_V4: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// §2.3 Sample IPv6 Response.
const RESPONSE_V6: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// §2.4 Sample Request with Long-Term Authentication.
const LONG_TERM: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

/// The RFC's MESSAGE-INTEGRITY and FINGERPRINT values must be what our code computes over the
/// same bytes, and both checks must pass; a flipped bit must fail both.
fn check_computed_values(bytes: &[u8], key: &[u8]) {
    let msg = Message::parse(bytes).unwrap();
    let mi = msg.attribute(ATTR_MESSAGE_INTEGRITY).unwrap();
    assert_eq!(&integrity::integrity_sha1(integrity::mac_sha1(key), bytes, mi.offset)[..], mi.value);
    assert_eq!(check_integrity_sha1(&msg, key), Check::Valid);
    if let Some(fp) = msg.attribute(ATTR_FINGERPRINT) {
        assert_eq!(integrity::fingerprint(bytes, fp.offset).to_be_bytes(), fp.value);
        assert_eq!(check_fingerprint(&msg), Check::Valid);
    }
    let mut flipped = bytes.to_vec();
    flipped[21] ^= 0x01;
    let msg = Message::parse(&flipped).unwrap();
    assert_eq!(check_integrity_sha1(&msg, key), Check::Invalid);
    if msg.attribute(ATTR_FINGERPRINT).is_some() {
        assert_eq!(check_fingerprint(&msg), Check::Invalid);
    }
}

#[test]
fn sample_request() {
    let bytes = hex(REQUEST);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.message_type(), MessageType::BINDING_REQUEST);
    assert!(!msg.is_classic());
    assert_eq!(msg.get::<Software>(), Some(Ok(Software(b"STUN test client"))));
    assert_eq!(msg.get::<Priority>(), Some(Ok(Priority(0x6e0001ff))));
    assert_eq!(msg.get::<IceControlled>(), Some(Ok(IceControlled(0x932ff9b151263b36))));
    assert_eq!(msg.get::<Username>().unwrap().unwrap().as_str(), Some("evtj:h6vY"));
    check_computed_values(&bytes, PASSWORD);
    assert_eq!(check_integrity_sha1(&msg, b"wrong"), Check::Invalid);
}

fn check_response(text: &str, mapped: &str) {
    let bytes = hex(text);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.message_type(), MessageType::new(0x001, Class::SuccessResponse));
    let addr: SocketAddr = mapped.parse().unwrap();
    assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(addr))));
    assert_eq!(msg.get::<Software>(), Some(Ok(Software(b"test vector"))));
    check_computed_values(&bytes, PASSWORD);
    // Our encoder produces the RFC's XOR-MAPPED-ADDRESS value bytes exactly.
    let value = msg.value(XorMappedAddress::TYPE).unwrap();
    let mut out = vec![0u8; value.len()];
    XorMappedAddress(addr).encode(&mut out, &msg.cookie_and_id());
    assert_eq!(out, value);
}

#[test]
fn sample_ipv4_response() {
    check_response(RESPONSE_V4, "192.0.2.1:32853");
}

#[test]
fn sample_ipv6_response() {
    check_response(RESPONSE_V6, "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

#[test]
fn sample_long_term_request() {
    let bytes = hex(LONG_TERM);
    let msg = Message::parse(&bytes).unwrap();
    let username = msg.get::<Username>().unwrap().unwrap();
    assert_eq!(username.as_str(), Some("\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}"));
    assert_eq!(msg.get::<Nonce>().unwrap().unwrap().as_str(), Some("f//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(msg.get::<Realm>().unwrap().unwrap().as_str(), Some("example.org"));
    assert_eq!(check_fingerprint(&msg), Check::Absent);
    // Long-term key = MD5(username ":" realm ":" SASLprep(password)); "TheMatrIX" is already
    // SASLprep'd (RFC 5769 §2.4).
    let mut md5 = Md5::new();
    md5.update(username.0);
    md5.update(b":example.org:TheMatrIX");
    let key = md5.finalize();
    check_computed_values(&bytes, &key);

    // Re-encoded with our writer, the message comes out byte for byte (zero padding, as here).
    let mut buf = [0u8; 200];
    let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &msg.cookie_and_id()).unwrap();
    for t in [ATTR_USERNAME, ATTR_NONCE, ATTR_REALM] {
        w.add_raw(t, msg.value(t).unwrap()).unwrap();
    }
    w.add_integrity_sha1(&key).unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], &bytes[..]);
}
