//! The bearer token that guards `/metrics` off loopback (`admin.metrics_token_file`): kept as
//! its SHA-256 digest and compared in constant time. Sans-IO: the configuration reads the file;
//! the admin endpoint asks [`MetricsToken::matches`].

use std::fmt;

use sha2::{Digest, Sha256};

/// The bearer token `/metrics` requires (`admin.metrics_token_file`), kept as its SHA-256
/// digest: a presented token is hashed and the digests compared in constant time, so neither
/// the token's bytes nor its length show in the time an answer takes. `Debug` never prints it.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// The token `token` (the file's contents without surrounding whitespace).
    pub fn new(token: &[u8]) -> MetricsToken {
        MetricsToken(Sha256::digest(token).into())
    }

    /// Whether `presented` is the token (constant time in its contents).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.iter().zip(&self.0).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token_and_never_shows_it() {
        let token = MetricsToken::new(b"s3cret");
        assert!(token.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3cret-and-more"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "MetricsToken(<redacted>)");
    }
}
