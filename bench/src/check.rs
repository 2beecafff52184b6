//! The load generator's answer checker, its correctness oracle: whether an answer is a valid
//! Binding success for a request this generator sent from a given socket, decided from the
//! answer's bytes alone. Matching the answer to an outstanding request (duplicates, late
//! answers, answers from elsewhere) is the generator's job ([`crate::load`]).

use std::net::SocketAddr;

use stunedge::stun::attr::{MappedAddress, XorMappedAddress};
use stunedge::stun::integrity::{Check, check_fingerprint, check_integrity_sha1};
use stunedge::stun::{Class, Message, MessageType};

use crate::requests::{CLASSIC_MARKER, Credentials, Kind, Tag};

/// Why an answer is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invalid {
    /// Not a well-formed STUN message.
    Malformed,
    /// An error response (e.g. 400 or 420).
    ErrorResponse,
    /// Another message type than Binding success.
    WrongType,
    /// A transaction ID this generator did not send (or on another socket).
    UnknownTransaction,
    /// A second answer to the same request.
    Duplicate,
    /// The reflexive address is not the sending socket's own address.
    WrongAddress,
    /// No (XOR-)MAPPED-ADDRESS, or one that does not decode.
    MissingAddress,
    /// Classic answer to a modern request or the reverse.
    WrongVersion,
    /// FINGERPRINT present and wrong.
    BadFingerprint,
    /// The request had FINGERPRINT, the answer has none.
    MissingFingerprint,
    /// MESSAGE-INTEGRITY present and wrong for the configured password.
    BadIntegrity,
    /// From an address other than the server's.
    WrongSource,
}

impl Invalid {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub(crate) const ALL: [Invalid; 12] = [
        Invalid::Malformed,
        Invalid::ErrorResponse,
        Invalid::WrongType,
        Invalid::UnknownTransaction,
        Invalid::Duplicate,
        Invalid::WrongAddress,
        Invalid::MissingAddress,
        Invalid::WrongVersion,
        Invalid::BadFingerprint,
        Invalid::MissingFingerprint,
        Invalid::BadIntegrity,
        Invalid::WrongSource,
    ];

    /// `snake_case` name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::ErrorResponse => "error_response",
            Invalid::WrongType => "wrong_type",
            Invalid::UnknownTransaction => "unknown_transaction",
            Invalid::Duplicate => "duplicate",
            Invalid::WrongAddress => "wrong_address",
            Invalid::MissingAddress => "missing_address",
            Invalid::WrongVersion => "wrong_version",
            Invalid::BadFingerprint => "bad_fingerprint",
            Invalid::MissingFingerprint => "missing_fingerprint",
            Invalid::BadIntegrity => "bad_integrity",
            Invalid::WrongSource => "wrong_source",
        }
    }
}

/// Checks one answer received on a socket bound to `local`; returns the request's tag.
pub fn check_answer(bytes: &[u8], local: SocketAddr, credentials: &Credentials) -> Result<Tag, Invalid> {
    let msg = Message::parse(bytes).map_err(|_| Invalid::Malformed)?;
    match msg.message_type() {
        MessageType::BINDING_SUCCESS => {}
        t if t.class == Class::ErrorResponse => return Err(Invalid::ErrorResponse),
        _ => return Err(Invalid::WrongType),
    }
    let tag = Tag::from_tid(msg.transaction_id().0);
    let kind = *Kind::ALL.get(usize::from(tag.kind)).ok_or(Invalid::UnknownTransaction)?;
    let mapped = if kind == Kind::Classic {
        if !msg.is_classic() || bytes[4..8] != CLASSIC_MARKER {
            return Err(Invalid::WrongVersion);
        }
        msg.get::<MappedAddress>().and_then(Result::ok).map(|a| a.0)
    } else {
        if msg.is_classic() {
            return Err(Invalid::WrongVersion);
        }
        msg.get::<XorMappedAddress>().and_then(Result::ok).map(|a| a.0)
    };
    match mapped {
        None => return Err(Invalid::MissingAddress),
        Some(addr) if addr != local => return Err(Invalid::WrongAddress),
        Some(_) => {}
    }
    match check_fingerprint(&msg) {
        Check::Invalid => return Err(Invalid::BadFingerprint),
        Check::Absent if kind.has_fingerprint() => return Err(Invalid::MissingFingerprint),
        _ => {}
    }
    if check_integrity_sha1(&msg, credentials.password.as_bytes()) == Check::Invalid {
        return Err(Invalid::BadIntegrity);
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::write_request;
    use stunedge::counters::Stats;
    use stunedge::handler::{Action, BUFFER_SIZE, HandlerConfig, Meta, handle};
    use stunedge::stun::MessageWriter;
    use stunedge::stun::attr::Software;
    use stunedge::stun::registry::{ATTR_FINGERPRINT, ATTR_XOR_MAPPED_ADDRESS, MAGIC_COOKIE};

    /// The tag every test request carries.
    fn tag(kind: Kind) -> Tag {
        Tag { thread: 0, socket: 7, seq: 42, kind: kind.index() }
    }

    fn v4() -> SocketAddr {
        "127.0.0.9:5555".parse().unwrap()
    }

    fn v6() -> SocketAddr {
        "[2001:db8::9]:5555".parse().unwrap()
    }

    fn check(bytes: &[u8], local: SocketAddr) -> Result<Tag, Invalid> {
        check_answer(bytes, local, &Credentials::default())
    }

    /// stunedge's own answer (the sans-IO handler) to a request of `kind` from `local`.
    fn stunedge_answer(kind: Kind, local: SocketAddr) -> Vec<u8> {
        let mut buf = [0u8; BUFFER_SIZE];
        let n = write_request(kind, tag(kind).to_tid(), &Credentials::default(), &mut buf).unwrap();
        let meta = Meta { src: local, local: "127.0.0.1:3478".parse().unwrap(), now: 0, clock_ms: 1 };
        let config = HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() };
        let Action::Reply { len, .. } = handle(&mut buf, n, &meta, &config, &mut Stats::default()) else { panic!() };
        buf[..len].to_vec()
    }

    fn answered(kind: Kind, local: SocketAddr, edit: impl Fn(&mut [u8], usize)) -> Result<Tag, Invalid> {
        let mut buf = stunedge_answer(kind, local);
        let len = buf.len();
        edit(&mut buf, len);
        check(&buf, local).inspect(|t| assert_eq!(*t, tag(kind)))
    }

    /// An answer of `message_type` to a request of `kind` (its cookie or classic marker and
    /// transaction ID), with the attributes `build` writes: for answers stunedge does not give
    /// (signed ones, broken ones).
    fn built(kind: Kind, message_type: MessageType, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&if kind == Kind::Classic { CLASSIC_MARKER } else { MAGIC_COOKIE.to_be_bytes() });
        key[4..].copy_from_slice(&tag(kind).to_tid());
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, message_type, &key).unwrap();
        build(&mut w);
        let n = w.finish();
        buf[..n].to_vec()
    }

    /// A Binding success with XOR-MAPPED-ADDRESS `local`, MESSAGE-INTEGRITY keyed with
    /// `password` and, with `fingerprint`, FINGERPRINT.
    fn signed(kind: Kind, local: SocketAddr, password: &str, fingerprint: bool) -> Vec<u8> {
        built(kind, MessageType::BINDING_SUCCESS, |w| {
            w.add(&XorMappedAddress(local)).unwrap();
            w.add_integrity_sha1(password.as_bytes()).unwrap();
            if fingerprint {
                w.add_fingerprint().unwrap();
            }
        })
    }

    #[test]
    fn stunedge_answers_pass_every_check() {
        let local: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        for kind in Kind::ALL {
            assert!(answered(kind, local, |_, _| {}).is_ok(), "{kind:?}");
        }
        let v6: SocketAddr = "[::1]:5555".parse().unwrap();
        assert!(answered(Kind::Fingerprint, v6, |_, _| {}).is_ok());
    }

    #[test]
    fn broken_answers_are_caught() {
        let local: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        // Flip a bit of the XOR-MAPPED port: wrong address, and the FINGERPRINT no longer matches.
        assert_eq!(answered(Kind::Plain, local, |b, _| b[27] ^= 1), Err(Invalid::WrongAddress));
        assert_eq!(answered(Kind::Fingerprint, local, |b, len| b[len - 1] ^= 1), Err(Invalid::BadFingerprint));
        // Drop the FINGERPRINT (shorten the length field by 8).
        assert_eq!(answered(Kind::Fingerprint, local, |b, _| b[3] -= 8), Err(Invalid::Malformed));
        assert_eq!(answered(Kind::Plain, local, |b, _| b[1] = 0x11), Err(Invalid::ErrorResponse));
        assert_eq!(answered(Kind::Plain, local, |b, _| b[4] = 0), Err(Invalid::WrongVersion));
        assert_eq!(answered(Kind::Plain, local, |b, _| b[19] = 200), Err(Invalid::UnknownTransaction));
        assert_eq!(answered(Kind::Plain, local, |b, _| b[0] = 0xFF), Err(Invalid::Malformed));
    }

    /// Every kind, over IPv4, IPv6 and a v4-mapped IPv6 socket, and the answers the generator
    /// expects for signed requests (stunedge answers unsigned unless credentials are configured).
    #[test]
    fn valid_answers_of_every_kind_pass() {
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:5555".parse().unwrap();
        for local in [v4(), v6(), mapped] {
            for kind in Kind::ALL {
                assert_eq!(check(&stunedge_answer(kind, local), local), Ok(tag(kind)), "{kind:?} {local}");
            }
            assert_eq!(
                check(&signed(Kind::Integrity, local, "VOkJxbRl1RmTxUk/WvJxBt", false), local),
                Ok(tag(Kind::Integrity))
            );
            assert_eq!(check(&signed(Kind::Ice, local, "VOkJxbRl1RmTxUk/WvJxBt", true), local), Ok(tag(Kind::Ice)));
        }
        // The tag is handed back whole, for the generator to match.
        let t = Tag { thread: 3, socket: 513, seq: 0x0102_0304_0506_0708, kind: Kind::Software.index() };
        let mut buf = [0u8; BUFFER_SIZE];
        let n = write_request(Kind::Software, t.to_tid(), &Credentials::default(), &mut buf).unwrap();
        let meta = Meta { src: v4(), local: "127.0.0.1:3478".parse().unwrap(), now: 0, clock_ms: 1 };
        let Action::Reply { len, .. } = handle(&mut buf, n, &meta, &HandlerConfig::default(), &mut Stats::default())
        else {
            panic!()
        };
        assert_eq!(check(&buf[..len], v4()), Ok(t));
    }

    /// The checker knows the transaction ID only through what the answer says about itself: a
    /// kind byte out of range, or one that disagrees with the answer, or (IPv6, FINGERPRINT,
    /// MESSAGE-INTEGRITY) a value computed over the ID. Any other change yields another tag,
    /// which the generator matches against its outstanding requests.
    #[test]
    fn wrong_transaction_ids_are_caught() {
        let kind_byte = 19; // 8 (header) + 11 (tag.kind)
        let seq_low = 18; // 8 + 10 (last byte of tag.seq)
        let thread = 8;
        for bad in [6, 7, 0x80, 0xFF] {
            assert_eq!(answered(Kind::Plain, v4(), |b, _| b[kind_byte] = bad), Err(Invalid::UnknownTransaction));
        }
        let as_kind = |kind: Kind| move |b: &mut [u8], _| b[kind_byte] = kind.index();
        assert_eq!(answered(Kind::Plain, v4(), as_kind(Kind::Fingerprint)), Err(Invalid::MissingFingerprint));
        assert_eq!(answered(Kind::Plain, v4(), as_kind(Kind::Ice)), Err(Invalid::MissingFingerprint));
        assert_eq!(answered(Kind::Plain, v4(), as_kind(Kind::Classic)), Err(Invalid::WrongVersion));
        assert_eq!(answered(Kind::Classic, v4(), as_kind(Kind::Plain)), Err(Invalid::WrongVersion));

        // IPv4 XOR-MAPPED-ADDRESS depends on the cookie only: another sequence number is another tag.
        let mut answer = stunedge_answer(Kind::Plain, v4());
        answer[seq_low] ^= 1;
        assert_eq!(check(&answer, v4()), Ok(Tag { seq: 43, ..tag(Kind::Plain) }));
        // IPv6 XOR-MAPPED-ADDRESS is XOR-ed with the transaction ID too.
        let mut answer = stunedge_answer(Kind::Plain, v6());
        answer[seq_low] ^= 1;
        assert_eq!(check(&answer, v6()), Err(Invalid::WrongAddress));
        // FINGERPRINT and MESSAGE-INTEGRITY cover the header.
        let mut answer = stunedge_answer(Kind::Fingerprint, v4());
        answer[thread] ^= 1;
        assert_eq!(check(&answer, v4()), Err(Invalid::BadFingerprint));
        let mut answer = signed(Kind::Integrity, v4(), &Credentials::default().password, false);
        answer[thread] ^= 1;
        assert_eq!(check(&answer, v4()), Err(Invalid::BadIntegrity));
    }

    #[test]
    fn wrong_reflexive_addresses_are_caught() {
        let other_port: SocketAddr = "127.0.0.9:5556".parse().unwrap();
        let other_ip: SocketAddr = "127.0.0.10:5555".parse().unwrap();
        let other_v6: SocketAddr = "[2001:db8::a]:5555".parse().unwrap();
        for kind in Kind::ALL {
            let answer = stunedge_answer(kind, v4());
            for local in [other_port, other_ip, v6()] {
                assert_eq!(check(&answer, local), Err(Invalid::WrongAddress), "{kind:?} {local}");
            }
            let answer = stunedge_answer(kind, v6());
            for local in [other_v6, v4()] {
                assert_eq!(check(&answer, local), Err(Invalid::WrongAddress), "{kind:?} {local}");
            }
        }
        // The right address in the wrong attribute is no address.
        let success = MessageType::BINDING_SUCCESS;
        let mapped_only = built(Kind::Plain, success, |w| w.add(&MappedAddress(v4())).unwrap());
        assert_eq!(check(&mapped_only, v4()), Err(Invalid::MissingAddress));
        let xor_only = built(Kind::Classic, success, |w| w.add(&XorMappedAddress(v4())).unwrap());
        assert_eq!(check(&xor_only, v4()), Err(Invalid::MissingAddress));
        assert_eq!(check(&built(Kind::Plain, success, |_| {}), v4()), Err(Invalid::MissingAddress));
        // An XOR-MAPPED-ADDRESS that does not decode (family 0x09).
        let undecodable =
            built(Kind::Plain, success, |w| w.add_raw(ATTR_XOR_MAPPED_ADDRESS, &[0, 9, 0, 1, 1, 2, 3, 4]).unwrap());
        assert_eq!(check(&undecodable, v4()), Err(Invalid::MissingAddress));
    }

    #[test]
    fn wrong_class_or_method_is_caught() {
        for (message_type, why) in [
            (0x0001, Invalid::WrongType),     // Binding request
            (0x0011, Invalid::WrongType),     // Binding indication
            (0x0103, Invalid::WrongType),     // Allocate success (RFC 8656)
            (0x0102, Invalid::WrongType),     // method 0x002, success
            (0x0111, Invalid::ErrorResponse), // Binding error
            (0x0113, Invalid::ErrorResponse), // Allocate error
        ] {
            let set = |b: &mut [u8], _| b[..2].copy_from_slice(&u16::to_be_bytes(message_type));
            assert_eq!(answered(Kind::Plain, v4(), set), Err(why), "{message_type:#06x}");
        }
        let error = built(Kind::Plain, MessageType::BINDING_ERROR, |w| w.add_error(400, "Bad Request").unwrap());
        assert_eq!(check(&error, v4()), Err(Invalid::ErrorResponse));
    }

    #[test]
    fn broken_fingerprints_are_caught() {
        for kind in [Kind::Fingerprint, Kind::Ice] {
            let answer = if kind == Kind::Ice {
                signed(kind, v4(), &Credentials::default().password, true)
            } else {
                stunedge_answer(kind, v4())
            };
            // Each bit of the CRC matters.
            for bit in 0..32 {
                let mut broken = answer.clone();
                broken[answer.len() - 1 - bit / 8] ^= 1 << (bit % 8);
                assert_eq!(check(&broken, v4()), Err(Invalid::BadFingerprint), "{kind:?} bit {bit}");
            }
            // Requested but left out.
            let unsigned = if kind == Kind::Ice {
                signed(kind, v4(), &Credentials::default().password, false)
            } else {
                built(kind, MessageType::BINDING_SUCCESS, |w| w.add(&XorMappedAddress(v4())).unwrap())
            };
            assert_eq!(check(&unsigned, v4()), Err(Invalid::MissingFingerprint), "{kind:?}");
        }
        // Not requested, but present: still checked.
        let mut answer = built(Kind::Plain, MessageType::BINDING_SUCCESS, |w| {
            w.add(&XorMappedAddress(v4())).unwrap();
            w.add_fingerprint().unwrap();
        });
        assert_eq!(check(&answer, v4()), Ok(tag(Kind::Plain)));
        let last = answer.len() - 1;
        answer[last] ^= 0x80;
        assert_eq!(check(&answer, v4()), Err(Invalid::BadFingerprint));
        // A FINGERPRINT of the wrong length, and one that is not last.
        let short = built(Kind::Fingerprint, MessageType::BINDING_SUCCESS, |w| {
            w.add(&XorMappedAddress(v4())).unwrap();
            w.add_raw(ATTR_FINGERPRINT, &[1, 2]).unwrap();
        });
        assert_eq!(check(&short, v4()), Err(Invalid::BadFingerprint));
        let not_last = built(Kind::Fingerprint, MessageType::BINDING_SUCCESS, |w| {
            w.add(&XorMappedAddress(v4())).unwrap();
            w.add_fingerprint().unwrap();
            w.add(&Software(b"after")).unwrap();
        });
        assert_eq!(check(&not_last, v4()), Err(Invalid::BadFingerprint));
    }

    #[test]
    fn broken_message_integrity_is_caught() {
        let password = Credentials::default().password;
        for kind in [Kind::Plain, Kind::Integrity, Kind::Ice] {
            let fingerprint = kind == Kind::Ice;
            // Signed with another password (FINGERPRINT, when there, still right).
            let answer = signed(kind, v4(), "not the password", fingerprint);
            assert_eq!(check(&answer, v4()), Err(Invalid::BadIntegrity), "{kind:?}");
            if fingerprint {
                continue;
            }
            // Each byte of the HMAC matters (no FINGERPRINT after it to catch the change first).
            let answer = signed(kind, v4(), &password, false);
            let mac = answer.len() - 20;
            for at in mac..answer.len() {
                let mut broken = answer.clone();
                broken[at] ^= 0x01;
                assert_eq!(check(&broken, v4()), Err(Invalid::BadIntegrity), "{kind:?} byte {at}");
            }
        }
        // MESSAGE-INTEGRITY is checked where present, not required where requested: stunedge
        // answers a signed request unsigned when it has no credentials configured.
        let unsigned =
            built(Kind::Integrity, MessageType::BINDING_SUCCESS, |w| w.add(&XorMappedAddress(v4())).unwrap());
        assert_eq!(check(&unsigned, v4()), Ok(tag(Kind::Integrity)));
    }

    #[test]
    fn truncated_answers_are_caught() {
        let mut answers: Vec<(Kind, Vec<u8>)> = Kind::ALL.iter().map(|&k| (k, stunedge_answer(k, v4()))).collect();
        answers.push((Kind::Ice, signed(Kind::Ice, v4(), &Credentials::default().password, true)));
        for (kind, answer) in &answers {
            for len in 0..answer.len() {
                assert_eq!(check(&answer[..len], v4()), Err(Invalid::Malformed), "{kind:?} cut to {len}");
            }
            // Bytes after the message are no better.
            let mut longer = answer.clone();
            longer.extend_from_slice(&[0; 4]);
            assert_eq!(check(&longer, v4()), Err(Invalid::Malformed), "{kind:?} + 4");
        }
        // Cut at an attribute boundary with the length field to match: what was cut is missing.
        let cut = |mut answer: Vec<u8>, by: usize| {
            answer.truncate(answer.len() - by);
            let body = (answer.len() - 20) as u16;
            answer[2..4].copy_from_slice(&body.to_be_bytes());
            answer
        };
        assert_eq!(check(&cut(stunedge_answer(Kind::Plain, v4()), 12), v4()), Err(Invalid::MissingAddress));
        assert_eq!(check(&cut(stunedge_answer(Kind::Fingerprint, v4()), 8), v4()), Err(Invalid::MissingFingerprint));
        let ice = signed(Kind::Ice, v4(), &Credentials::default().password, true);
        assert_eq!(check(&cut(ice, 8), v4()), Err(Invalid::MissingFingerprint));
    }

    #[test]
    fn classic_and_modern_answers_do_not_mix() {
        // A classic answer carries the request's marker where the cookie would be.
        let other_marker = |b: &mut [u8], _| b[4..8].copy_from_slice(&[0x00, 0x00, 0x5e, 0xda]);
        assert_eq!(answered(Kind::Classic, v4(), other_marker), Err(Invalid::WrongVersion));
        let cookie = |b: &mut [u8], _| b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(answered(Kind::Classic, v4(), cookie), Err(Invalid::WrongVersion));
        // A modern request answered classic-style (the cookie replaced by the marker).
        let marker = |b: &mut [u8], _| b[4..8].copy_from_slice(&CLASSIC_MARKER);
        assert_eq!(answered(Kind::Plain, v4(), marker), Err(Invalid::WrongVersion));
    }
}
