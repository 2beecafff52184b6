//! Key derivation (RFC 8489 §9.1.1, §9.2.2, §14.4, §18.5.1) and the TURN REST API password
//! (coturn `use-auth-secret`). Credentials are used as the UTF-8 bytes configured: stunedge does
//! not apply the PRECIS OpaqueString profile (NFC and space mapping), which is the identity for
//! ASCII; keep non-ASCII credentials in NFC.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use super::base64;
use crate::stun::integrity::{mac_sha1, mac_sha256};

/// A long-term password algorithm (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5(username ":" realm ":" password), 16 bytes: the RFC 5389 key, and the default.
    Md5,
    /// SHA-256 of the same, 32 bytes.
    Sha256,
}

impl Algorithm {
    /// The PASSWORD-ALGORITHM number.
    pub const fn wire(self) -> u16 {
        match self {
            Algorithm::Md5 => crate::stun::registry::PASSWORD_ALGORITHM_MD5,
            Algorithm::Sha256 => crate::stun::registry::PASSWORD_ALGORITHM_SHA256,
        }
    }

    /// The algorithm with this number.
    pub const fn from_wire(value: u16) -> Option<Algorithm> {
        match value {
            crate::stun::registry::PASSWORD_ALGORITHM_MD5 => Some(Algorithm::Md5),
            crate::stun::registry::PASSWORD_ALGORITHM_SHA256 => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// Key bytes held inline (at most 32: an MD5 or SHA-256 key, or a 28-byte REST password).
#[derive(Clone, Copy)]
pub struct RawKey {
    bytes: [u8; 32],
    len: u8,
}

impl RawKey {
    /// A key from at most 32 bytes (longer input is cut to 32, which no caller produces).
    pub fn new(key: &[u8]) -> RawKey {
        let len = key.len().min(32);
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(&key[..len]);
        RawKey { bytes, len: len as u8 }
    }

    /// The key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for RawKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawKey(<{} bytes redacted>)", self.len)
    }
}

/// HMAC-SHA1 and HMAC-SHA256 states keyed once with one key: checking or signing a message
/// clones a state (a copy) and finalises it, with no key schedule per request.
#[derive(Clone)]
pub struct KeyedMacs {
    /// For MESSAGE-INTEGRITY.
    pub sha1: Hmac<Sha1>,
    /// For MESSAGE-INTEGRITY-SHA256.
    pub sha256: Hmac<Sha256>,
}

impl KeyedMacs {
    /// Both MACs keyed with `key`.
    pub fn new(key: &[u8]) -> KeyedMacs {
        KeyedMacs { sha1: mac_sha1(key), sha256: mac_sha256(key) }
    }
}

impl std::fmt::Debug for KeyedMacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedMacs(<redacted>)")
    }
}

/// The long-term key (RFC 8489 §9.2.2, §18.5.1): `algorithm(username ":" realm ":" password)`.
pub fn long_term_key(algorithm: Algorithm, username: &[u8], realm: &[u8], password: &[u8]) -> RawKey {
    fn digest<D: Digest>(parts: [&[u8]; 5]) -> impl AsRef<[u8]> {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        d.finalize()
    }
    let parts = [username, b":", realm, b":", password];
    match algorithm {
        Algorithm::Md5 => RawKey::new(digest::<Md5>(parts).as_ref()),
        Algorithm::Sha256 => RawKey::new(digest::<Sha256>(parts).as_ref()),
    }
}

/// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
pub fn userhash(username: &[u8], realm: &[u8]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update(username);
    d.update(b":");
    d.update(realm);
    d.finalize().into()
}

/// Length of a TURN REST password: base64 of an HMAC-SHA1.
pub const REST_PASSWORD_LEN: usize = base64::encoded_len(20);

/// The TURN REST API password for `username`: base64(HMAC-SHA1(secret, username)), with
/// `secret_mac` the secret's keyed HMAC-SHA1.
pub fn rest_password(secret_mac: &Hmac<Sha1>, username: &[u8]) -> [u8; REST_PASSWORD_LEN] {
    let mut mac = secret_mac.clone();
    mac.update(username);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; REST_PASSWORD_LEN];
    let _ = base64::encode(&tag, &mut out);
    out
}

/// The expiry time of a TURN REST username: `"<unix expiry>:<user>"`, or the expiry alone (the
/// REST API draft makes the user part optional, and coturn's `use-auth-secret` accepts it);
/// `None` when the name is in neither form.
pub fn rest_expiry(username: &[u8]) -> Option<u64> {
    let colon = username.iter().position(|&b| b == b':').unwrap_or(username.len());
    let digits = &username[..colon];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc8489_md5_example() {
        // RFC 8489 §9.2.2 works this one by hand.
        let key = long_term_key(Algorithm::Md5, b"user", b"realm", b"pass");
        assert_eq!(hex(key.as_bytes()), "8493fbc53ba582fb4c044c456bdc40eb");
        // python3 -c "import hashlib; print(hashlib.sha256(b'user:realm:pass').hexdigest())"
        let key = long_term_key(Algorithm::Sha256, b"user", b"realm", b"pass");
        assert_eq!(hex(key.as_bytes()), "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b");
    }

    #[test]
    fn rest_password_matches_openssl() {
        // printf '%s' 1790000000:alice | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
        let secret = mac_sha1(b"north-secret");
        assert_eq!(&rest_password(&secret, b"1790000000:alice"), b"QTXNF9z6M8qXK98UH4lp2rbYpLU=");
        assert_eq!(rest_expiry(b"1790000000:alice"), Some(1_790_000_000));
        assert_eq!(rest_expiry(b"alice:1790000000"), None);
        assert_eq!(rest_expiry(b":alice"), None);
        assert_eq!(rest_expiry(b"12345678901234567890:x"), None, "more digits than a u64 takes");
        assert_eq!(rest_expiry(b"1790000000"), Some(1_790_000_000), "the user part is optional");
        assert_eq!(rest_expiry(b"1790000000x"), None);
        assert_eq!(rest_expiry(b""), None);
    }
}
