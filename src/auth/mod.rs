//! Authentication, sans-IO (RFC 8489 §9): short-term credentials (a static username → password
//! table), long-term credentials (static users and TURN REST API ephemeral users, keys by MD5
//! or SHA-256 per PASSWORD-ALGORITHM, USERHASH), stateless nonces, and the downgrade checks of
//! §9.2.4. Time is a parameter; nothing here does I/O, reads a clock or allocates per request.
//! Per-user HMAC states are keyed once when the configuration is loaded, so a request costs one
//! HMAC finalisation; TURN REST users, whose keys depend on the username, cost one key
//! derivation more. MAC comparisons are constant-time. Secrets never reach `Debug` output.
#![forbid(unsafe_code)]

pub mod base64;
pub mod bearer;
pub mod keys;
pub mod nonce;

use std::collections::HashMap;
use std::net::SocketAddr;

use hmac::Hmac;
use sha1::Sha1;

use crate::stun::integrity::{Check, mac_sha1, verify_sha1, verify_sha256};
use crate::stun::message::RawAttribute;
use crate::stun::registry::{
    ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_NONCE, ATTR_PASSWORD_ALGORITHM,
    ATTR_PASSWORD_ALGORITHMS, ATTR_REALM, ATTR_USERHASH, ATTR_USERNAME,
};
use crate::stun::{MessageWriter, WriteError};
pub use keys::{Algorithm, KeyedMacs, RawKey};
use nonce::{FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY, NONCE_LEN, NonceKey, Validity};

/// Whether a listener asks for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Never checked (integrity attributes are ignored, as for any public STUN server).
    None,
    /// Checked when the request carries them; a request without them is answered unsigned.
    Optional,
    /// Every request must authenticate.
    Required,
}

/// Which credential mechanism a listener uses (RFC 8489 §9.1 or §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// USERNAME + password, no challenge (ICE connectivity checks).
    ShortTerm,
    /// REALM / NONCE challenge, then username + password.
    LongTerm,
}

/// The validated credential configuration an [`Authenticator`] is built from.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// REALM for long-term credentials.
    pub realm: String,
    /// Secret nonces are MACed with; shared by every node that must accept each other's nonces.
    pub nonce_secret: Vec<u8>,
    /// How long a nonce stays valid, in seconds.
    pub nonce_lifetime: u32,
    /// PASSWORD-ALGORITHMS offered, in preference order; empty: none offered (MD5 only, the
    /// cookie's "Password algorithms" bit clear).
    pub password_algorithms: Vec<Algorithm>,
    /// Accept USERHASH for static long-term users (sets the "Username anonymity" bit).
    pub userhash: bool,
    /// Short-term users: (username, password).
    pub short_term: Vec<(String, String)>,
    /// Long-term users: (username, password).
    pub long_term: Vec<(String, String)>,
    /// TURN REST API shared secrets; any of them may have signed a username (rotation).
    pub rest_secrets: Vec<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |users: &[(String, String)]| users.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>();
        f.debug_struct("AuthSettings")
            .field("realm", &self.realm)
            .field("nonce_secret", &"<redacted>")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("password_algorithms", &self.password_algorithms)
            .field("userhash", &self.userhash)
            .field("short_term_users", &names(&self.short_term))
            .field("long_term_users", &names(&self.long_term))
            .field("rest_secrets", &self.rest_secrets.len())
            .finish()
    }
}

/// The authentication attributes of a request, gathered in the handler's one attribute walk
/// (which already applies the after-MESSAGE-INTEGRITY rule of RFC 8489 §14.5).
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// USERNAME value.
    pub username: Option<&'a [u8]>,
    /// USERHASH value.
    pub userhash: Option<&'a [u8]>,
    /// REALM value.
    pub realm: Option<&'a [u8]>,
    /// NONCE value.
    pub nonce: Option<&'a [u8]>,
    /// PASSWORD-ALGORITHM value.
    pub password_algorithm: Option<&'a [u8]>,
    /// PASSWORD-ALGORITHMS value.
    pub password_algorithms: Option<&'a [u8]>,
    /// MESSAGE-INTEGRITY.
    pub integrity: Option<RawAttribute<'a>>,
    /// MESSAGE-INTEGRITY-SHA256.
    pub integrity_sha256: Option<RawAttribute<'a>>,
}

impl<'a> Presented<'a> {
    /// Records `attr` if it is an authentication attribute (the first of each type counts);
    /// returns whether it was one.
    #[inline]
    pub fn offer(&mut self, attr: RawAttribute<'a>) -> bool {
        let slot = match attr.attr_type {
            ATTR_USERNAME => &mut self.username,
            ATTR_USERHASH => &mut self.userhash,
            ATTR_REALM => &mut self.realm,
            ATTR_NONCE => &mut self.nonce,
            ATTR_PASSWORD_ALGORITHM => &mut self.password_algorithm,
            ATTR_PASSWORD_ALGORITHMS => &mut self.password_algorithms,
            ATTR_MESSAGE_INTEGRITY => {
                self.integrity.get_or_insert(attr);
                return true;
            }
            ATTR_MESSAGE_INTEGRITY_SHA256 => {
                self.integrity_sha256.get_or_insert(attr);
                return true;
            }
            _ => return false,
        };
        slot.get_or_insert(attr.value);
        true
    }

    fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug)]
pub enum Verdict<'s> {
    /// No credentials, and the policy lets the request through unauthenticated.
    Anonymous,
    /// Authenticated: sign the response with this.
    Authenticated(Signer<'s>),
    /// 400 Bad Request, unsigned: integrity without the attributes it needs, a failed
    /// PASSWORD-ALGORITHMS check, or an oversized value.
    BadRequest,
    /// 401 Unauthenticated, unsigned. Long-term: with REALM, NONCE, PASSWORD-ALGORITHMS.
    Unauthenticated,
    /// 438 Stale Nonce with a fresh NONCE; the integrity was right, so the answer is signed.
    StaleNonce(Signer<'s>),
}

/// The key a response is signed with, and which integrity attribute to use.
#[derive(Debug)]
pub struct Signer<'s> {
    key: Key<'s>,
    sha256: bool,
}

#[derive(Debug)]
enum Key<'s> {
    /// A static user's precomputed states.
    Keyed(&'s KeyedMacs),
    /// A key derived for this request (TURN REST users).
    Raw(RawKey),
}

impl Key<'_> {
    fn sha1(&self) -> Hmac<Sha1> {
        match self {
            Key::Keyed(macs) => macs.sha1.clone(),
            Key::Raw(key) => mac_sha1(key.as_bytes()),
        }
    }

    fn sha256(&self) -> Hmac<sha2::Sha256> {
        match self {
            Key::Keyed(macs) => macs.sha256.clone(),
            Key::Raw(key) => crate::stun::integrity::mac_sha256(key.as_bytes()),
        }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 when present, else MESSAGE-INTEGRITY (RFC 8489 §9.1.3,
    /// §9.2.4).
    fn verifies(&self, message: &[u8], presented: &Presented<'_>) -> bool {
        let check = match (&presented.integrity_sha256, &presented.integrity) {
            (Some(attr), _) => verify_sha256(self.sha256(), message, attr),
            (None, Some(attr)) => verify_sha1(self.sha1(), message, attr),
            (None, None) => Check::Absent,
        };
        check == Check::Valid
    }
}

impl Signer<'_> {
    /// The size of the attribute [`Signer::sign`] appends, header included.
    pub fn attribute_len(&self) -> usize {
        4 + if self.sha256 { crate::stun::integrity::SHA256_LEN } else { 20 }
    }

    /// Appends the integrity attribute; call it after every other attribute but FINGERPRINT.
    pub fn sign(&self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if self.sha256 {
            w.add_integrity_sha256_with(self.key.sha256(), crate::stun::integrity::SHA256_LEN)
        } else {
            w.add_integrity_sha1_with(self.key.sha1())
        }
    }
}

#[derive(Debug)]
struct LongTermUser {
    md5: KeyedMacs,
    sha256: KeyedMacs,
}

impl LongTermUser {
    fn macs(&self, algorithm: Algorithm) -> &KeyedMacs {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }
}

/// Credentials and nonce key, built once per configuration load; shared read-only by workers.
pub struct Authenticator {
    realm: Box<[u8]>,
    nonces: NonceKey,
    features: u8,
    /// PASSWORD-ALGORITHMS value offered in challenges (empty: not offered).
    algorithms: Box<[u8]>,
    short_term: HashMap<Box<[u8]>, KeyedMacs>,
    long_term: HashMap<Box<[u8]>, LongTermUser>,
    /// USERHASH → username, for static long-term users when USERHASH is on.
    userhashes: HashMap<[u8; 32], Box<[u8]>>,
    rest: Box<[Hmac<Sha1>]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &String::from_utf8_lossy(&self.realm))
            .field("features", &self.features)
            .field("short_term_users", &self.short_term.len())
            .field("long_term_users", &self.long_term.len())
            .field("rest_secrets", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Derives every key and HMAC state. Costs a few key schedules per user: done at load, never
    /// per request.
    pub fn new(settings: &AuthSettings) -> Authenticator {
        let realm: Box<[u8]> = settings.realm.as_bytes().into();
        let mut algorithms = Vec::new();
        for a in &settings.password_algorithms {
            algorithms.extend_from_slice(&a.wire().to_be_bytes());
            algorithms.extend_from_slice(&[0, 0]);
        }
        let mut features = 0;
        if !algorithms.is_empty() {
            features |= FEATURE_PASSWORD_ALGORITHMS;
        }
        if settings.userhash && !settings.long_term.is_empty() {
            features |= FEATURE_USERNAME_ANONYMITY;
        }
        let short_term =
            settings.short_term.iter().map(|(u, p)| (u.as_bytes().into(), KeyedMacs::new(p.as_bytes()))).collect();
        let key =
            |a, u: &str, p: &str| KeyedMacs::new(keys::long_term_key(a, u.as_bytes(), &realm, p.as_bytes()).as_bytes());
        let long_term = settings
            .long_term
            .iter()
            .map(|(u, p)| {
                (
                    u.as_bytes().into(),
                    LongTermUser { md5: key(Algorithm::Md5, u, p), sha256: key(Algorithm::Sha256, u, p) },
                )
            })
            .collect();
        let userhashes = if features & FEATURE_USERNAME_ANONYMITY != 0 {
            settings
                .long_term
                .iter()
                .map(|(u, _)| (keys::userhash(u.as_bytes(), &realm), u.as_bytes().into()))
                .collect()
        } else {
            HashMap::new()
        };
        Authenticator {
            nonces: NonceKey::new(&settings.nonce_secret, settings.nonce_lifetime),
            realm,
            features,
            algorithms: algorithms.into(),
            short_term,
            long_term,
            userhashes,
            rest: settings.rest_secrets.iter().map(|s| mac_sha1(s.as_bytes())).collect(),
        }
    }

    /// The REALM value.
    pub fn realm(&self) -> &[u8] {
        &self.realm
    }

    /// The PASSWORD-ALGORITHMS value challenges carry, when algorithms are offered.
    pub fn password_algorithms(&self) -> Option<&[u8]> {
        if self.algorithms.is_empty() { None } else { Some(&self.algorithms) }
    }

    /// A fresh nonce for `client`.
    pub fn nonce_for(&self, client: SocketAddr, now: u64) -> [u8; NONCE_LEN] {
        self.nonces.mint(self.features, client, now)
    }

    /// Checks a request's credentials: `message` is the whole request, `presented` what the
    /// handler's walk found in it, `client` its source, `now` unix seconds.
    pub fn verify<'s>(
        &'s self,
        mechanism: Mechanism,
        policy: Policy,
        presented: &Presented<'_>,
        message: &[u8],
        client: SocketAddr,
        now: u64,
    ) -> Verdict<'s> {
        if policy == Policy::None {
            return Verdict::Anonymous;
        }
        match mechanism {
            Mechanism::ShortTerm => self.verify_short_term(policy, presented, message, now),
            Mechanism::LongTerm => self.verify_long_term(policy, presented, message, client, now),
        }
    }

    /// RFC 8489 §9.1.3, in its order.
    fn verify_short_term<'s>(&'s self, policy: Policy, p: &Presented<'_>, message: &[u8], now: u64) -> Verdict<'s> {
        if policy == Policy::Optional && !p.has_integrity() && p.username.is_none() {
            return Verdict::Anonymous;
        }
        let (true, Some(username)) = (p.has_integrity(), p.username) else {
            return Verdict::BadRequest;
        };
        if username.len() > crate::stun::attr::MAX_USERNAME {
            return Verdict::BadRequest;
        }
        let sha256 = p.integrity_sha256.is_some();
        let key = match self.short_term.get(username) {
            Some(macs) => Some(Key::Keyed(macs)).filter(|k| k.verifies(message, p)),
            None => self.rest_key(username, now, p, message, RawKey::new),
        };
        match key {
            Some(key) => Verdict::Authenticated(Signer { key, sha256 }),
            None => Verdict::Unauthenticated,
        }
    }

    /// RFC 8489 §9.2.4, in its order.
    fn verify_long_term<'s>(
        &'s self,
        policy: Policy,
        p: &Presented<'_>,
        message: &[u8],
        client: SocketAddr,
        now: u64,
    ) -> Verdict<'s> {
        if !p.has_integrity() {
            return if policy == Policy::Optional { Verdict::Anonymous } else { Verdict::Unauthenticated };
        }
        let (Some(realm), Some(nonce)) = (p.realm, p.nonce) else {
            return Verdict::BadRequest;
        };
        if p.username.is_none() && p.userhash.is_none() {
            return Verdict::BadRequest;
        }
        // Length limits (RFC 8489 §14.3, §14.4, §14.9, §14.10) before any value is used.
        let text = crate::stun::attr::MAX_TEXT;
        if p.username.is_some_and(|u| u.len() > crate::stun::attr::MAX_USERNAME)
            || p.userhash.is_some_and(|h| h.len() != 32)
            || realm.len() > text
            || nonce.len() > text
        {
            return Verdict::BadRequest;
        }
        let Some(algorithm) = self.negotiated_algorithm(p, nonce) else {
            return Verdict::BadRequest;
        };
        if realm != &*self.realm {
            return Verdict::Unauthenticated;
        }
        let username: &[u8] = match (p.userhash, p.username) {
            (Some(hash), _) => match <[u8; 32]>::try_from(hash).ok().and_then(|h| self.userhashes.get(&h)) {
                Some(name) => name,
                None => return Verdict::Unauthenticated,
            },
            (None, Some(name)) => name,
            (None, None) => return Verdict::BadRequest,
        };
        let key = match self.long_term.get(username) {
            Some(user) => Some(Key::Keyed(user.macs(algorithm))).filter(|k| k.verifies(message, p)),
            None => self.rest_key(username, now, p, message, |password| {
                keys::long_term_key(algorithm, username, &self.realm, password)
            }),
        };
        let Some(key) = key else {
            return Verdict::Unauthenticated;
        };
        // Respond with MESSAGE-INTEGRITY-SHA256 unless the request was processed as MD5 for want
        // of PASSWORD-ALGORITHM(S) (§9.2.4, last paragraph); a request signed with -SHA256 gets
        // -SHA256 either way (§9.1.4's matching rule).
        let sha256 = p.password_algorithm.is_some() || p.integrity_sha256.is_some();
        let signer = Signer { key, sha256 };
        match self.nonces.check(nonce, client, now) {
            Validity::Valid => Verdict::Authenticated(signer),
            Validity::Stale => Verdict::StaleNonce(signer),
        }
    }

    /// The password algorithm a long-term request is processed with, or `None` for a 400
    /// (RFC 8489 §9.2.4, third check: the bid-down protection).
    fn negotiated_algorithm(&self, p: &Presented<'_>, nonce: &[u8]) -> Option<Algorithm> {
        let bit_set = nonce::features(nonce).is_some_and(|f| f & FEATURE_PASSWORD_ALGORITHMS != 0);
        match (p.password_algorithm, p.password_algorithms) {
            (None, None) => Some(Algorithm::Md5),
            _ if !bit_set => Some(Algorithm::Md5),
            (Some(chosen), Some(offered)) => {
                // (2) the list is the one this server sends, byte for byte; (3) the choice is
                // on it (so it is one this server supports) and has no parameters.
                if offered != &*self.algorithms || chosen.len() != 4 || chosen[2..] != [0, 0] {
                    return None;
                }
                let wire = u16::from_be_bytes([chosen[0], chosen[1]]);
                let listed = offered.chunks_exact(4).any(|entry| entry[..2] == chosen[..2]);
                if listed { Algorithm::from_wire(wire) } else { None }
            }
            _ => None,
        }
    }

    /// Tries every TURN REST secret for a `"<expiry>:<user>"` username that has not expired:
    /// the first whose derived key (`derive(password)`) verifies the request wins.
    fn rest_key<'s>(
        &'s self,
        username: &[u8],
        now: u64,
        p: &Presented<'_>,
        message: &[u8],
        derive: impl Fn(&[u8]) -> RawKey,
    ) -> Option<Key<'s>> {
        if self.rest.is_empty() || keys::rest_expiry(username)? < now {
            return None;
        }
        self.rest.iter().find_map(|secret| {
            let key = Key::Raw(derive(&keys::rest_password(secret, username)));
            key.verifies(message, p).then_some(key)
        })
    }
}
