//! TLS for the stream listeners (RFC 8489 §6.2.3): rustls with the ring provider, TLS 1.3 and
//! 1.2, the configured certificate for every client (browsers send no SNI after a redirect,
//! so there is nothing to choose by). ALPN (RFC 7443: `stun.turn`, `stun.nat-discovery`) is
//! echoed when the client offers one of them and never required: rustls fails a handshake
//! whose offered protocols miss the server's list, so the ClientHello is read first
//! ([`rustls::server::Acceptor`]) and one of two configurations chosen.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocols stunedge speaks (RFC 7443).
pub const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// The two server configurations of one certificate.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    /// For a client that offers one of [`ALPN`].
    alpn: Arc<ServerConfig>,
    /// For every other client (no ALPN, or others only).
    plain: Arc<ServerConfig>,
}

/// Always the one certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl TlsConfigs {
    /// The configurations serving `key`.
    pub fn new(key: &Arc<CertifiedKey>) -> Result<TlsConfigs, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, rustls::Error> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(key.clone())));
            config.alpn_protocols = alpn;
            Ok(Arc::new(config))
        };
        Ok(TlsConfigs { alpn: build(ALPN.iter().map(|p| p.to_vec()).collect())?, plain: build(Vec::new())? })
    }

    /// The configuration for a client that offered `offered` (its ALPN list, if any).
    pub fn choose<'a>(&self, mut offered: Option<impl Iterator<Item = &'a [u8]>>) -> Arc<ServerConfig> {
        let ours = offered.as_mut().is_some_and(|list| list.any(|p| ALPN.contains(&p)));
        if ours { self.alpn.clone() } else { self.plain.clone() }
    }
}
