//! Stateless nonces (RFC 8489 §9.2): `"obMatJos2"` + base64 of the 24 STUN Security Feature
//! bits (the "nonce cookie", §9.2.1), then base64 of a 4-byte expiry time and the first 8 bytes
//! of HMAC-SHA256(secret, feature bits ‖ expiry ‖ client IP ‖ client port). 29 characters.
//!
//! No table: any worker, and any node sharing the secret, checks any other's nonce. The MAC
//! binds the nonce to the client's transport address (§9.2.4: the same nonce only for the same
//! source IP and port) and to the feature bits, so an attacker who clears the "Password
//! algorithms" bit to force MD5 (a bid-down, §9.2.1) makes the nonce invalid.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::base64;

/// The nonce cookie's fixed prefix (RFC 8489 §9.2).
pub const COOKIE_PREFIX: &[u8; 9] = b"obMatJos2";
/// The nonce cookie: prefix and 4 base64 characters of feature bits.
pub const COOKIE_LEN: usize = 13;
/// STUN Security Feature bit 0, "Password algorithms" (RFC 8489 §18.1): the most significant bit
/// of the first of the three feature bytes.
pub const FEATURE_PASSWORD_ALGORITHMS: u8 = 0x80;
/// STUN Security Feature bit 1, "Username anonymity" (RFC 8489 §18.1).
pub const FEATURE_USERNAME_ANONYMITY: u8 = 0x40;

const EXPIRY_LEN: usize = 4;
const MAC_LEN: usize = 8;
const BODY_LEN: usize = EXPIRY_LEN + MAC_LEN;
/// Length of every nonce this server mints: 13 + base64 of 12 bytes. 32 bytes on the wire.
pub const NONCE_LEN: usize = COOKIE_LEN + base64::encoded_len(BODY_LEN);

/// Whether a nonce is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validity {
    /// Minted by a server with this secret, for this client address, not yet expired.
    Valid,
    /// Expired, minted for another address, minted with another secret, or not ours at all:
    /// the client gets a fresh one with 438 (RFC 8489 §9.2.4).
    Stale,
}

/// The feature bits of a nonce that starts with the nonce cookie; `None` when it does not
/// (an RFC 5389 server's nonce, or junk).
pub fn features(nonce: &[u8]) -> Option<u8> {
    let cookie = nonce.get(..COOKIE_LEN)?;
    if &cookie[..COOKIE_PREFIX.len()] != COOKIE_PREFIX {
        return None;
    }
    base64::decode_exact::<3>(&cookie[COOKIE_PREFIX.len()..]).map(|bits| bits[0])
}

/// Mints and checks nonces with one secret.
#[derive(Clone)]
pub struct NonceKey {
    mac: Hmac<Sha256>,
    lifetime: u32,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl NonceKey {
    /// A key from the shared secret; nonces live `lifetime` seconds.
    pub fn new(secret: &[u8], lifetime: u32) -> NonceKey {
        NonceKey { mac: crate::stun::integrity::mac_sha256(secret), lifetime }
    }

    fn tag(&self, features: u8, expiry: u32, client: SocketAddr) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&[features, 0, 0]);
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    /// A nonce for `client`, valid until `now` + lifetime (unix seconds; saturates in 2106).
    pub fn mint(&self, features: u8, client: SocketAddr, now: u64) -> [u8; NONCE_LEN] {
        let expiry = u32::try_from(now.saturating_add(u64::from(self.lifetime))).unwrap_or(u32::MAX);
        let tag = self.tag(features, expiry, client).finalize().into_bytes();
        let mut body = [0u8; BODY_LEN];
        body[..EXPIRY_LEN].copy_from_slice(&expiry.to_be_bytes());
        body[EXPIRY_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        let mut out = [0u8; NONCE_LEN];
        out[..COOKIE_PREFIX.len()].copy_from_slice(COOKIE_PREFIX);
        // Both fit by construction of NONCE_LEN; a None here would leave zeros, never panic.
        let _ = base64::encode(&[features, 0, 0], &mut out[COOKIE_PREFIX.len()..COOKIE_LEN]);
        let _ = base64::encode(&body, &mut out[COOKIE_LEN..]);
        out
    }

    /// Checks a nonce a request carried from `client` at `now`. The MAC comparison is
    /// constant-time.
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now: u64) -> Validity {
        if nonce.len() != NONCE_LEN {
            return Validity::Stale;
        }
        let (Some(features), Some(body)) = (features(nonce), base64::decode_exact::<BODY_LEN>(&nonce[COOKIE_LEN..]))
        else {
            return Validity::Stale;
        };
        let expiry = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if u64::from(expiry) < now {
            return Validity::Stale;
        }
        match self.tag(features, expiry, client).verify_truncated_left(&body[EXPIRY_LEN..]) {
            Ok(()) => Validity::Valid,
            Err(_) => Validity::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    fn client() -> SocketAddr {
        "198.51.100.4:50000".parse().unwrap()
    }

    #[test]
    fn minted_nonces_check_and_carry_the_cookie() {
        let key = NonceKey::new(b"fleet secret of 32 bytes or so..", 600);
        let nonce = key.mint(FEATURE_PASSWORD_ALGORITHMS, client(), NOW);
        assert_eq!(&nonce[..COOKIE_LEN], b"obMatJos2gAAA", "bit 0 is the top bit of the first byte");
        assert_eq!(features(&nonce), Some(FEATURE_PASSWORD_ALGORITHMS));
        assert!(nonce.iter().all(|c| c.is_ascii_graphic() && *c != b'"' && *c != b'\\'), "qdtext only");
        assert_eq!(key.check(&nonce, client(), NOW), Validity::Valid);
        assert_eq!(key.check(&nonce, client(), NOW + 600), Validity::Valid);
        assert_eq!(key.check(&nonce, client(), NOW + 601), Validity::Stale, "expired");
        assert_eq!(key.check(&nonce, "198.51.100.4:50001".parse().unwrap(), NOW), Validity::Stale, "other port");
        assert_eq!(key.check(&nonce, "198.51.100.5:50000".parse().unwrap(), NOW), Validity::Stale, "other IP");
        let other = NonceKey::new(b"another secret", 600);
        assert_eq!(other.check(&nonce, client(), NOW), Validity::Stale, "other secret");
        // A second key with the same secret (another process, another node) accepts it.
        let twin = NonceKey::new(b"fleet secret of 32 bytes or so..", 60);
        assert_eq!(twin.check(&nonce, client(), NOW), Validity::Valid);
    }

    #[test]
    fn tampering_is_caught() {
        let key = NonceKey::new(b"s", 600);
        let nonce = key.mint(FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY, client(), NOW);
        assert_eq!(&nonce[..COOKIE_LEN], b"obMatJos2wAAA");
        // Clearing the password-algorithms bit (a bid-down) invalidates the nonce.
        let mut downgraded = nonce;
        downgraded[9..13].copy_from_slice(b"QAAA");
        assert_eq!(features(&downgraded), Some(FEATURE_USERNAME_ANONYMITY));
        assert_eq!(key.check(&downgraded, client(), NOW), Validity::Stale);
        // Pushing the expiry out invalidates it too.
        let mut later = nonce;
        later[COOKIE_LEN] = if later[COOKIE_LEN] == b'B' { b'C' } else { b'B' };
        assert_eq!(key.check(&later, client(), NOW), Validity::Stale);
        for bad in [&b""[..], b"obMatJos2", &nonce[..NONCE_LEN - 1], b"obMatJos2AAAA%%%%%%%%%%%%%%%%"] {
            assert_eq!(key.check(bad, client(), NOW), Validity::Stale);
        }
        assert_eq!(features(b"plain-rfc5389-nonce"), None);
    }

    #[test]
    fn ipv6_clients() {
        let key = NonceKey::new(b"s", 10);
        let c6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let nonce = key.mint(0, c6, NOW);
        assert_eq!(&nonce[..COOKIE_LEN], b"obMatJos2AAAA");
        assert_eq!(key.check(&nonce, c6, NOW), Validity::Valid);
        assert_eq!(key.check(&nonce, client(), NOW), Validity::Stale);
    }
}
