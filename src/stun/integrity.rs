//! FINGERPRINT (CRC-32 XOR 0x5354554E), MESSAGE-INTEGRITY (HMAC-SHA1) and
//! MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256), computed and checked as RFC 8489 §14.5–14.7 say: over
//! the message up to the attribute, with the header's length field set as if the attribute were
//! the last one. MAC comparisons are constant-time (the `hmac` crate's `verify_*`).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::attr::check_sha256_len;
use super::header::LENGTH_OFFSET;
use super::message::{Message, RawAttribute};
use super::registry::{
    ATTR_FINGERPRINT, ATTR_HEADER_LEN, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, FINGERPRINT_XOR,
    HEADER_LEN,
};

/// HMAC-SHA1 length, the MESSAGE-INTEGRITY value length.
pub const SHA1_LEN: usize = 20;
/// HMAC-SHA256 length, the longest MESSAGE-INTEGRITY-SHA256 value.
pub const SHA256_LEN: usize = 32;

/// The outcome of checking an integrity or fingerprint attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// The attribute is not in the message.
    Absent,
    /// Present and correct.
    Valid,
    /// Present and wrong (or malformed, or FINGERPRINT not last).
    Invalid,
}

/// Feeds the bytes an integrity attribute at `attr_offset` covers, with the length field
/// replaced by the length the message has when that attribute (`value_len` bytes) ends it.
/// When the length field already says so (the attribute is last, as FINGERPRINT always is and
/// as the writer arranges), the covered bytes go in as one slice: for the short messages of STUN
/// one call instead of three is most of the cost.
#[inline]
fn feed(message: &[u8], attr_offset: usize, value_len: usize, mut update: impl FnMut(&[u8])) {
    let adjusted = ((attr_offset + ATTR_HEADER_LEN + value_len - HEADER_LEN) as u16).to_be_bytes();
    if message[LENGTH_OFFSET..LENGTH_OFFSET + 2] == adjusted {
        update(&message[..attr_offset]);
    } else {
        update(&message[..LENGTH_OFFSET]);
        update(&adjusted);
        update(&message[LENGTH_OFFSET + 2..attr_offset]);
    }
}

/// The FINGERPRINT value for a FINGERPRINT attribute placed at `attr_offset` of `message`
/// (only bytes before `attr_offset` are read).
pub fn fingerprint(message: &[u8], attr_offset: usize) -> u32 {
    let mut crc = super::crc32::Crc32::new();
    feed(message, attr_offset, 4, |b| crc.update(b));
    crc.finalize() ^ FINGERPRINT_XOR
}

/// The MESSAGE-INTEGRITY value for an attribute placed at `attr_offset`, with `mac` already
/// keyed (a clone of a precomputed state: one finalisation, no key schedule).
pub fn integrity_sha1(mut mac: Hmac<Sha1>, message: &[u8], attr_offset: usize) -> [u8; SHA1_LEN] {
    feed(message, attr_offset, SHA1_LEN, |b| mac.update(b));
    mac.finalize().into_bytes().into()
}

/// The full 32-byte MESSAGE-INTEGRITY-SHA256 value for an attribute of `value_len` bytes
/// (16..=32; a shorter value is the leading bytes) placed at `attr_offset`.
pub fn integrity_sha256(
    mut mac: Hmac<Sha256>,
    message: &[u8],
    attr_offset: usize,
    value_len: usize,
) -> [u8; SHA256_LEN] {
    feed(message, attr_offset, value_len, |b| mac.update(b));
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 keyed with `key` (the key schedule: do it once per key and clone the result).
pub fn mac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // HMAC accepts keys of every length; the error arm cannot be taken.
    <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// HMAC-SHA256 keyed with `key`.
pub fn mac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Checks FINGERPRINT: it must be the last attribute, 4 bytes, and match.
pub fn check_fingerprint(message: &Message<'_>) -> Check {
    match message.attribute(ATTR_FINGERPRINT) {
        Some(attr) => check_fingerprint_attribute(message, &attr),
        None => Check::Absent,
    }
}

/// Checks a FINGERPRINT attribute already found in `message` (saves a second attribute walk).
pub fn check_fingerprint_attribute(message: &Message<'_>, attr: &RawAttribute<'_>) -> Check {
    let bytes = message.as_bytes();
    let Ok(value) = <[u8; 4]>::try_from(attr.value) else {
        return Check::Invalid;
    };
    if attr.offset + ATTR_HEADER_LEN + 4 != bytes.len() {
        return Check::Invalid;
    }
    if u32::from_be_bytes(value) == fingerprint(bytes, attr.offset) { Check::Valid } else { Check::Invalid }
}

/// Checks MESSAGE-INTEGRITY with `key` (the short-term password, or the long-term key).
pub fn check_integrity_sha1(message: &Message<'_>, key: &[u8]) -> Check {
    match message.attribute(ATTR_MESSAGE_INTEGRITY) {
        Some(attr) => verify_sha1(mac_sha1(key), message.as_bytes(), &attr),
        None => Check::Absent,
    }
}

/// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated to 16..=32 bytes, RFC 8489 §14.6).
pub fn check_integrity_sha256(message: &Message<'_>, key: &[u8]) -> Check {
    match message.attribute(ATTR_MESSAGE_INTEGRITY_SHA256) {
        Some(attr) => verify_sha256(mac_sha256(key), message.as_bytes(), &attr),
        None => Check::Absent,
    }
}

/// Checks a MESSAGE-INTEGRITY attribute already found in `message` with a keyed MAC. The
/// comparison is constant-time.
pub fn verify_sha1(mut mac: Hmac<Sha1>, message: &[u8], attr: &RawAttribute<'_>) -> Check {
    if attr.value.len() != SHA1_LEN {
        return Check::Invalid;
    }
    feed(message, attr.offset, SHA1_LEN, |b| mac.update(b));
    if mac.verify_slice(attr.value).is_ok() { Check::Valid } else { Check::Invalid }
}

/// Checks a MESSAGE-INTEGRITY-SHA256 attribute already found in `message` with a keyed MAC
/// (constant-time; a truncated value is compared with the MAC's leading bytes).
pub fn verify_sha256(mut mac: Hmac<Sha256>, message: &[u8], attr: &RawAttribute<'_>) -> Check {
    if !check_sha256_len(attr.value.len()) {
        return Check::Invalid;
    }
    feed(message, attr.offset, attr.value.len(), |b| mac.update(b));
    if mac.verify_truncated_left(attr.value).is_ok() { Check::Valid } else { Check::Invalid }
}
