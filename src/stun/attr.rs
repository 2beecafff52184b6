//! Typed attribute values: decode from and encode into the value bytes of one attribute. Each
//! type names its attribute type constant, the RFC section, and the length rules it enforces,
//! so a value that decodes is one stunedge can act on. No allocation; strings borrow the datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{CookieAndId, padded};
use super::registry::*;

/// Why an attribute value cannot be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrError {
    /// The value's length is not one the RFC allows for this attribute.
    BadLength,
    /// An address family other than 0x01 (IPv4) or 0x02 (IPv6).
    BadFamily,
    /// A value the RFC forbids (an error class outside 3–6, a number ≥ 100, …).
    BadValue,
    /// Text that is not UTF-8.
    NotUtf8,
}

/// A typed attribute.
pub trait Attribute<'a>: Sized {
    /// The attribute type this value belongs to.
    const TYPE: u16;
    /// Decodes a value (without padding). `key` is bytes 4..20 of the message header.
    fn decode(value: &'a [u8], key: &CookieAndId) -> Result<Self, AttrError>;
    /// The encoded value's length, without padding.
    fn value_len(&self) -> usize;
    /// Encodes into `out`, which is exactly [`Attribute::value_len`] bytes long.
    fn encode(&self, out: &mut [u8], key: &CookieAndId);
}

/// Address family values (RFC 8489 §14.1).
pub const FAMILY_IPV4: u8 = 0x01;
/// Address family IPv6.
pub const FAMILY_IPV6: u8 = 0x02;

/// The encoded length of an address value (RFC 8489 §14.1): 8 for IPv4, 20 for IPv6.
#[inline]
pub const fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Encodes an address value, XOR-ed with `xor` (all zero for plain addresses). `out` must be
/// [`address_len`] bytes. Whole-word XORs: this runs once per answer.
#[inline]
fn encode_address(addr: &SocketAddr, out: &mut [u8], xor: &CookieAndId) {
    let port = addr.port() ^ u16::from_be_bytes([xor[0], xor[1]]);
    out[..4].copy_from_slice(&[0, if addr.is_ipv4() { FAMILY_IPV4 } else { FAMILY_IPV6 }, 0, 0]);
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            let key = u32::from_be_bytes([xor[0], xor[1], xor[2], xor[3]]);
            out[4..8].copy_from_slice(&(u32::from(ip) ^ key).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out[4..20].copy_from_slice(&(u128::from(ip) ^ u128::from_be_bytes(*xor)).to_be_bytes());
        }
    }
}

/// Decodes an address value, XOR-ed with `xor` (all zero for plain addresses).
#[inline]
fn decode_address(value: &[u8], xor: &CookieAndId) -> Result<SocketAddr, AttrError> {
    if value.len() < 4 {
        return Err(AttrError::BadLength);
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ u16::from_be_bytes([xor[0], xor[1]]);
    match (value[1], value.len()) {
        (FAMILY_IPV4, 8) => {
            let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
            let key = u32::from_be_bytes([xor[0], xor[1], xor[2], xor[3]]);
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip ^ key)), port))
        }
        (FAMILY_IPV6, 20) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            let ip = u128::from_be_bytes(ip) ^ u128::from_be_bytes(*xor);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        (FAMILY_IPV4 | FAMILY_IPV6, _) => Err(AttrError::BadLength),
        _ => Err(AttrError::BadFamily),
    }
}

const NO_XOR: CookieAndId = [0; 16];

macro_rules! address_attribute {
    ($(#[doc = $doc:literal])* $name:ident, $attr:ident, xor = $xor:literal) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attribute<'a> for $name {
            const TYPE: u16 = $attr;
            #[inline]
            fn decode(value: &'a [u8], key: &CookieAndId) -> Result<Self, AttrError> {
                decode_address(value, if $xor { key } else { &NO_XOR }).map($name)
            }
            #[inline]
            fn value_len(&self) -> usize {
                address_len(&self.0)
            }
            #[inline]
            fn encode(&self, out: &mut [u8], key: &CookieAndId) {
                encode_address(&self.0, out, if $xor { key } else { &NO_XOR })
            }
        }
    };
}

address_attribute!(/// MAPPED-ADDRESS (RFC 8489 §14.1); the answer to RFC 3489 classic clients.
    MappedAddress, ATTR_MAPPED_ADDRESS, xor = false);
address_attribute!(/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the reflexive address, XOR-ed with the
    /// magic cookie (port, IPv4) or cookie + transaction ID (IPv6).
    XorMappedAddress, ATTR_XOR_MAPPED_ADDRESS, xor = true);
address_attribute!(/// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress, ATTR_XOR_PEER_ADDRESS, xor = true);
address_attribute!(/// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XorRelayedAddress, ATTR_XOR_RELAYED_ADDRESS, xor = true);
address_attribute!(/// ALTERNATE-SERVER (RFC 8489 §14.15).
    AlternateServer, ATTR_ALTERNATE_SERVER, xor = false);
address_attribute!(/// RESPONSE-ORIGIN (RFC 5780 §7.3): the address the response was sent from.
    ResponseOrigin, ATTR_RESPONSE_ORIGIN, xor = false);
address_attribute!(/// OTHER-ADDRESS (RFC 5780 §7.4): the server's alternate address and port.
    OtherAddress, ATTR_OTHER_ADDRESS, xor = false);
address_attribute!(/// SOURCE-ADDRESS (RFC 3489 §11.2.5): classic twin of RESPONSE-ORIGIN.
    SourceAddress, ATTR_SOURCE_ADDRESS, xor = false);
address_attribute!(/// CHANGED-ADDRESS (RFC 3489 §11.2.3): classic twin of OTHER-ADDRESS.
    ChangedAddress, ATTR_CHANGED_ADDRESS, xor = false);

macro_rules! bytes_attribute {
    ($(#[doc = $doc:literal])* $name:ident, $attr:ident, min = $min:expr, max = $max:expr, utf8 = $utf8:literal) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> $name<'a> {
            /// The value as text, when it is UTF-8.
            pub fn as_str(&self) -> Option<&'a str> {
                std::str::from_utf8(self.0).ok()
            }
        }

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: u16 = $attr;
            #[inline]
            fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
                if !($min..=$max).contains(&value.len()) {
                    return Err(AttrError::BadLength);
                }
                if $utf8 && std::str::from_utf8(value).is_err() {
                    return Err(AttrError::NotUtf8);
                }
                Ok($name(value))
            }
            #[inline]
            fn value_len(&self) -> usize {
                self.0.len()
            }
            #[inline]
            fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

/// Longest USERNAME, in bytes (RFC 8489 §14.3).
pub const MAX_USERNAME: usize = 513;
/// Longest REALM, NONCE and SOFTWARE, in bytes: 127 characters of up to 6 bytes, rounded as the
/// RFC does (RFC 8489 §14.9, §14.10, §14.14).
pub const MAX_TEXT: usize = 763;

bytes_attribute!(/// USERNAME (RFC 8489 §14.3): UTF-8, at most 513 bytes.
    Username, ATTR_USERNAME, min = 0, max = MAX_USERNAME, utf8 = true);
bytes_attribute!(/// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm), 32 bytes.
    Userhash, ATTR_USERHASH, min = 32, max = 32, utf8 = false);
bytes_attribute!(/// REALM (RFC 8489 §14.9): UTF-8, fewer than 128 characters.
    Realm, ATTR_REALM, min = 0, max = MAX_TEXT, utf8 = true);
bytes_attribute!(/// NONCE (RFC 8489 §14.10): fewer than 128 characters.
    Nonce, ATTR_NONCE, min = 0, max = MAX_TEXT, utf8 = true);
bytes_attribute!(/// SOFTWARE (RFC 8489 §14.14): UTF-8, fewer than 128 characters.
    Software, ATTR_SOFTWARE, min = 0, max = MAX_TEXT, utf8 = true);
bytes_attribute!(/// ALTERNATE-DOMAIN (RFC 8489 §14.16): the TLS server name of ALTERNATE-SERVER.
    AlternateDomain, ATTR_ALTERNATE_DOMAIN, min = 1, max = 255, utf8 = false);
bytes_attribute!(/// PADDING (RFC 5780 §7.6): any bytes, only its length matters.
    Padding, ATTR_PADDING, min = 0, max = u16::MAX as usize, utf8 = false);
bytes_attribute!(/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): 16 to 32 bytes, a multiple of 4.
    /// The multiple-of-4 rule is checked by [`check_sha256_len`].
    MessageIntegritySha256, ATTR_MESSAGE_INTEGRITY_SHA256, min = 16, max = 32, utf8 = false);

/// Whether a MESSAGE-INTEGRITY-SHA256 value length is allowed (RFC 8489 §14.6).
#[inline]
pub const fn check_sha256_len(len: usize) -> bool {
    len >= 16 && len <= 32 && len.is_multiple_of(4)
}

macro_rules! fixed_attribute {
    ($(#[doc = $doc:literal])* $name:ident, $attr:ident, $ty:ty, $len:literal) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $ty);

        impl<'a> Attribute<'a> for $name {
            const TYPE: u16 = $attr;
            #[inline]
            fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
                let bytes: [u8; $len] = value.try_into().map_err(|_| AttrError::BadLength)?;
                Ok($name(<$ty>::from_be_bytes(bytes)))
            }
            #[inline]
            fn value_len(&self) -> usize {
                $len
            }
            #[inline]
            fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
                out.copy_from_slice(&self.0.to_be_bytes())
            }
        }
    };
}

fixed_attribute!(/// FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554E.
    Fingerprint, ATTR_FINGERPRINT, u32, 4);
fixed_attribute!(/// PRIORITY (RFC 8445 §16.1).
    Priority, ATTR_PRIORITY, u32, 4);
fixed_attribute!(/// ICE-CONTROLLED (RFC 8445 §16.1): the agent's tie-breaker.
    IceControlled, ATTR_ICE_CONTROLLED, u64, 8);
fixed_attribute!(/// ICE-CONTROLLING (RFC 8445 §16.1): the agent's tie-breaker.
    IceControlling, ATTR_ICE_CONTROLLING, u64, 8);
fixed_attribute!(/// LIFETIME (RFC 8656 §18.2), seconds.
    Lifetime, ATTR_LIFETIME, u32, 4);

/// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1, 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageIntegrity(pub [u8; 20]);

impl<'a> Attribute<'a> for MessageIntegrity {
    const TYPE: u16 = ATTR_MESSAGE_INTEGRITY;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        value.try_into().map(MessageIntegrity).map_err(|_| AttrError::BadLength)
    }
    fn value_len(&self) -> usize {
        20
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        out.copy_from_slice(&self.0)
    }
}

/// ERROR-CODE (RFC 8489 §14.8): a code 300–699 and a UTF-8 reason phrase (< 128 characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode<'a> {
    /// The code, e.g. 420.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl<'a> Attribute<'a> for ErrorCode<'a> {
    const TYPE: u16 = ATTR_ERROR_CODE;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        if value.len() < 4 || value.len() > 4 + MAX_TEXT {
            return Err(AttrError::BadLength);
        }
        let class = u16::from(value[2] & 0x07);
        let number = u16::from(value[3]);
        if !(3..=6).contains(&class) || number >= 100 {
            return Err(AttrError::BadValue);
        }
        let reason = std::str::from_utf8(&value[4..]).map_err(|_| AttrError::NotUtf8)?;
        Ok(ErrorCode { code: class * 100 + number, reason })
    }
    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        out[0] = 0;
        out[1] = 0;
        // Class is the hundreds digit in 3 bits, number the rest (RFC 8489 §14.8).
        out[2] = ((self.code / 100) & 0x07) as u8;
        out[3] = (self.code % 100) as u8;
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// The most attribute types one UNKNOWN-ATTRIBUTES value holds here.
pub const MAX_UNKNOWN: usize = 16;

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): the comprehension-required types not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownAttributes {
    types: [u16; MAX_UNKNOWN],
    len: usize,
}

impl UnknownAttributes {
    /// An empty list.
    pub const fn new() -> Self {
        UnknownAttributes { types: [0; MAX_UNKNOWN], len: 0 }
    }

    /// Adds a type unless present; `false` when the list is full.
    pub fn insert(&mut self, attr_type: u16) -> bool {
        if self.types().contains(&attr_type) {
            return true;
        }
        if self.len == MAX_UNKNOWN {
            return false;
        }
        self.types[self.len] = attr_type;
        self.len += 1;
        true
    }

    /// The listed types.
    pub fn types(&self) -> &[u16] {
        &self.types[..self.len]
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for UnknownAttributes {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Attribute<'a> for UnknownAttributes {
    const TYPE: u16 = ATTR_UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        if !value.len().is_multiple_of(2) || value.len() / 2 > MAX_UNKNOWN {
            return Err(AttrError::BadLength);
        }
        let mut list = UnknownAttributes::new();
        for pair in value.chunks_exact(2) {
            list.insert(u16::from_be_bytes([pair[0], pair[1]]));
        }
        Ok(list)
    }
    fn value_len(&self) -> usize {
        2 * self.len
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.types()) {
            chunk.copy_from_slice(&t.to_be_bytes());
        }
    }
}

/// CHANGE-REQUEST (RFC 5780 §7.2, RFC 3489 §11.2.4): flags A (0x4, change IP) and B (0x2,
/// change port) in a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeRequest {
    /// Send the response from the alternate IP address.
    pub change_ip: bool,
    /// Send the response from the alternate port.
    pub change_port: bool,
}

const CHANGE_IP: u32 = 0x4;
const CHANGE_PORT: u32 = 0x2;

impl<'a> Attribute<'a> for ChangeRequest {
    const TYPE: u16 = ATTR_CHANGE_REQUEST;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        let bytes: [u8; 4] = value.try_into().map_err(|_| AttrError::BadLength)?;
        let flags = u32::from_be_bytes(bytes);
        Ok(ChangeRequest { change_ip: flags & CHANGE_IP != 0, change_port: flags & CHANGE_PORT != 0 })
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        let flags = if self.change_ip { CHANGE_IP } else { 0 } | if self.change_port { CHANGE_PORT } else { 0 };
        out.copy_from_slice(&flags.to_be_bytes());
    }
}

/// RESPONSE-PORT (RFC 5780 §7.5): a port, then two bytes of padding, in a 4-byte value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponsePort(pub u16);

impl<'a> Attribute<'a> for ResponsePort {
    const TYPE: u16 = ATTR_RESPONSE_PORT;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        if value.len() != 4 {
            return Err(AttrError::BadLength);
        }
        Ok(ResponsePort(u16::from_be_bytes([value[0], value[1]])))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): an algorithm number and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm<'a> {
    /// `PASSWORD_ALGORITHM_MD5` or `PASSWORD_ALGORITHM_SHA256`, or another registered value.
    pub algorithm: u16,
    /// Parameters (none for MD5 and SHA-256).
    pub params: &'a [u8],
}

impl<'a> PasswordAlgorithm<'a> {
    /// Splits one algorithm entry off the front of `bytes`; returns it and the rest.
    fn split(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), AttrError> {
        if bytes.len() < 4 {
            return Err(AttrError::BadLength);
        }
        let algorithm = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let end = 4 + padded(len);
        if bytes.len() < end {
            return Err(AttrError::BadLength);
        }
        Ok((PasswordAlgorithm { algorithm, params: &bytes[4..4 + len] }, &bytes[end..]))
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithm<'a> {
    const TYPE: u16 = ATTR_PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        match PasswordAlgorithm::split(value)? {
            (alg, []) => Ok(alg),
            _ => Err(AttrError::BadLength),
        }
    }
    fn value_len(&self) -> usize {
        4 + padded(self.params.len())
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        out[..2].copy_from_slice(&self.algorithm.to_be_bytes());
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..4 + self.params.len()].copy_from_slice(self.params);
        out[4 + self.params.len()..].fill(0);
    }
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): the list of algorithms a server offers, kept as the
/// checked wire bytes (the downgrade check of §9.2.5 compares them byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithms<'a>(pub &'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    /// The listed algorithms.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (alg, tail) = PasswordAlgorithm::split(rest).ok()?;
            rest = tail;
            Some(alg)
        })
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithms<'a> {
    const TYPE: u16 = ATTR_PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _key: &CookieAndId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            rest = PasswordAlgorithm::split(rest)?.1;
        }
        Ok(PasswordAlgorithms(value))
    }
    fn value_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, out: &mut [u8], _key: &CookieAndId) {
        out.copy_from_slice(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<'a, A: Attribute<'a> + PartialEq + std::fmt::Debug>(a: A, key: &CookieAndId, buf: &'a mut [u8]) {
        let n = a.value_len();
        a.encode(&mut buf[..n], key);
        let back = A::decode(&buf[..n], key).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn addresses() {
        let key = [0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:1", "[::]:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            round_trip(XorMappedAddress(addr), &key, &mut [0; 20]);
            round_trip(MappedAddress(addr), &key, &mut [0; 20]);
        }
        assert_eq!(MappedAddress::decode(&[0, 3, 0, 1, 1, 2, 3, 4], &key), Err(AttrError::BadFamily));
        assert_eq!(MappedAddress::decode(&[0, 1, 0, 1, 1, 2, 3], &key), Err(AttrError::BadLength));
        assert_eq!(MappedAddress::decode(&[0, 2, 0, 1, 1, 2, 3, 4], &key), Err(AttrError::BadLength));
    }

    #[test]
    fn error_code_layout() {
        let mut buf = [0u8; 16];
        let e = ErrorCode { code: 420, reason: "Unknown Attr" };
        round_trip(e, &NO_XOR, &mut buf);
        assert_eq!(&buf[..4], &[0, 0, 4, 20]);
        assert_eq!(ErrorCode::decode(&[0, 0, 2, 0], &NO_XOR), Err(AttrError::BadValue));
        assert_eq!(ErrorCode::decode(&[0, 0, 4, 100], &NO_XOR), Err(AttrError::BadValue));
        assert_eq!(ErrorCode::decode(&[0, 0, 4], &NO_XOR), Err(AttrError::BadLength));
    }

    #[test]
    fn small_values() {
        round_trip(ChangeRequest { change_ip: true, change_port: false }, &NO_XOR, &mut [0; 4]);
        round_trip(ResponsePort(5000), &NO_XOR, &mut [0; 4]);
        round_trip(Fingerprint(0xDEAD_BEEF), &NO_XOR, &mut [0; 4]);
        let mut u = UnknownAttributes::new();
        assert!(u.insert(0x0023));
        assert!(u.insert(0x0023));
        assert!(u.insert(0x7000));
        assert_eq!(u.types(), &[0x0023, 0x7000]);
        round_trip(u, &NO_XOR, &mut [0; 4]);
        for t in 0..MAX_UNKNOWN as u16 - 2 {
            assert!(u.insert(0x100 + t));
        }
        assert!(!u.insert(0x7FFF));
        assert_eq!(Username::decode(&[0xFF], &NO_XOR), Err(AttrError::NotUtf8));
        assert_eq!(Userhash::decode(&[0; 31], &NO_XOR), Err(AttrError::BadLength));
        assert!(check_sha256_len(16) && check_sha256_len(32) && !check_sha256_len(18) && !check_sha256_len(36));
    }

    #[test]
    fn password_algorithms() {
        let wire = [0, 2, 0, 0, 0, 1, 0, 0];
        let algs = PasswordAlgorithms::decode(&wire, &NO_XOR).unwrap();
        let list: Vec<u16> = algs.iter().map(|a| a.algorithm).collect();
        assert_eq!(list, [PASSWORD_ALGORITHM_SHA256, PASSWORD_ALGORITHM_MD5]);
        assert_eq!(PasswordAlgorithms::decode(&wire[..6], &NO_XOR), Err(AttrError::BadLength));
        let one = PasswordAlgorithm::decode(&wire[..4], &NO_XOR).unwrap();
        assert_eq!(one.algorithm, PASSWORD_ALGORITHM_SHA256);
        assert_eq!(PasswordAlgorithm::decode(&wire, &NO_XOR), Err(AttrError::BadLength));
    }
}
