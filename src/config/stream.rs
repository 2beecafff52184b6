//! The `[stream]` section: STUN over TCP and TLS. Checks the listeners, the limits and the
//! certificate (read, parsed, its key matched), and gives each stream listener the answer
//! settings of the UDP listener with the same address, if any (the caller builds them for
//! every address at once: `server.listen` then the stream-only ones).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::invalid;
use super::{Config, ConfigError, StreamLimits, StreamPlan, TlsIdentity};
use crate::handler::HandlerConfig;
use crate::lb::Transport;

/// The largest `stream.max_message_size`: the UDP receive buffer, where every answer is built.
const MAX_MESSAGE: usize = crate::io::BUFFER_SIZE;

impl Config {
    /// The stream listeners not already in `listen`, in order (TCP then TLS, without
    /// duplicates): the caller builds answer settings for `listen` and these together.
    pub(super) fn stream_only_addrs(&self, listen: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in self.stream.tcp.iter().chain(&self.stream.tls) {
            if !listen.contains(a) && !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }

    /// The stream plane from `[stream]`; `handlers` are the answer settings of `all`
    /// (`server.listen` then [`Config::stream_only_addrs`]); `limit` the reflection defence,
    /// whose deny lists the stream listeners apply to connections; `allowed_cpus` the CPUs
    /// `stream.cpus` may name.
    pub(super) fn validate_stream(
        &self,
        all: &[SocketAddr],
        handlers: &[HandlerConfig],
        limit: &crate::limit::Limit,
        allowed_cpus: &[usize],
    ) -> Result<StreamPlan, ConfigError> {
        let s = &self.stream;
        super::validate::check_cpus("stream.cpus", &s.cpus, allowed_cpus)?;
        let mut listeners = Vec::new();
        for (kind, list, transport) in [("tcp", &s.tcp, Transport::Tcp), ("tls", &s.tls, Transport::Tls)] {
            for (i, addr) in list.iter().enumerate() {
                let field = format!("stream.{kind}[{i}]");
                // Port 0 (a free port each, tests) is never the same listener twice.
                if addr.port() != 0 && listeners.iter().any(|(a, _)| a == addr) {
                    return Err(invalid(field, format!("\"{addr}\""), "listed twice (in stream.tcp or stream.tls)"));
                }
                listeners.push((*addr, transport));
            }
        }
        let positive = |field: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(value)
            } else {
                Err(invalid(format!("stream.{field}"), value, format!("must be between 1 and {max}")))
            }
        };
        let seconds = |field: &str, value: f64| {
            if value.is_finite() && (0.1..=3600.0).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(invalid(format!("stream.{field}"), value, "must be between 0.1 and 3600 seconds"))
            }
        };
        let max_connections = positive("max_connections", s.max_connections, 1_000_000)?;
        let limits = StreamLimits {
            max_connections,
            // Caps above max_connections are max_connections.
            max_tls_connections: positive("max_tls_connections", s.max_tls_connections, 1_000_000)?
                .min(max_connections),
            max_per_prefix: positive("max_connections_per_prefix", s.max_connections_per_prefix, 1_000_000)?
                .min(max_connections),
            max_handshakes: positive("max_handshakes", s.max_handshakes, 100_000)?,
            handshake_timeout: seconds("handshake_timeout", s.handshake_timeout)?,
            first_message_timeout: seconds("first_message_timeout", s.first_message_timeout)?,
            idle_timeout: seconds("idle_timeout", s.idle_timeout)?,
            messages_per_second: positive("messages_per_second", s.messages_per_second as usize, 1_000_000)? as u32,
            message_burst: positive("message_burst", s.message_burst as usize, 1_000_000)? as u32,
            max_message: if (64..=MAX_MESSAGE).contains(&s.max_message_size) {
                s.max_message_size
            } else {
                return Err(invalid(
                    "stream.max_message_size",
                    s.max_message_size,
                    format!("must be between 64 and {MAX_MESSAGE} bytes"),
                ));
            },
        };
        let threads = positive("threads", s.threads, 64)?;
        let tls = if s.tls.is_empty() { None } else { Some(self.tls_identity()?) };
        let handlers = listeners
            .iter()
            .map(|(addr, transport)| {
                let at = all.iter().position(|a| a == addr).unwrap_or(0);
                let base = handlers.get(at).cloned().unwrap_or_default();
                HandlerConfig { rfc5780: None, limit: Default::default(), transport: *transport, ..base }
            })
            .collect();
        Ok(StreamPlan { listeners, handlers, threads, cpus: s.cpus.clone(), limits, tls, deny: limit.clone() })
    }

    /// `stream.certificate` and `stream.private_key`, read (relative to the configuration
    /// file's directory), parsed and checked to belong together.
    fn tls_identity(&self) -> Result<TlsIdentity, ConfigError> {
        let s = &self.stream;
        let resolve = |field: &str, named: &str| {
            if named.is_empty() {
                return Err(invalid(format!("stream.{field}"), "\"\"", "stream.tls is set: a PEM file is needed"));
            }
            let named = Path::new(named);
            Ok(match self.origin.as_deref().and_then(Path::parent) {
                Some(dir) if named.is_relative() => dir.join(named),
                _ => named.to_path_buf(),
            })
        };
        let cert_path = resolve("certificate", &s.certificate)?;
        let key_path = resolve("private_key", &s.private_key)?;
        let read = |field: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| invalid(format!("stream.{field}"), format!("{path:?}"), format!("cannot read: {e}")))
        };
        let (cert_pem, key_pem) = (read("certificate", &cert_path)?, read("private_key", &key_path)?);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<_, _>>().map_err(|e| {
                invalid("stream.certificate", format!("{cert_path:?}"), format!("not PEM certificates: {e}"))
            })?;
        if chain.is_empty() {
            return Err(invalid("stream.certificate", format!("{cert_path:?}"), "holds no CERTIFICATE block"));
        }
        // Never echo the key's bytes: only the file and what is wrong.
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid("stream.private_key", format!("{key_path:?}"), format!("no PEM private key: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            invalid(
                "stream.private_key",
                format!("{key_path:?}"),
                format!("does not go with stream.certificate {cert_path:?}: {e}"),
            )
        })?;
        Ok(TlsIdentity { key: Arc::new(certified), certificate: cert_path })
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::check;
    use crate::lb::Transport;

    #[test]
    fn off_by_default() {
        let s = check("[server]\nlisten = [\"192.0.2.1:3478\"]\n").unwrap();
        assert!(s.stream.listeners.is_empty() && s.stream.tls.is_none());
        assert_eq!(s.stream.threads, 1);
        assert!(s.stream.cpus.is_empty(), "not pinned unless asked");
        assert_eq!(s.stream.limits.max_connections, 20_000);
    }

    #[test]
    fn the_stream_threads_take_their_cpus_and_the_deny_lists() {
        let s = check(
            "[server]\nlisten = [\"192.0.2.1:3478\"]\n[limit]\ndeny = [\"198.51.100.0/24\"]\n\
             [stream]\ntcp = [\"192.0.2.1:3478\"]\nthreads = 3\ncpus = [3, 1]\n",
        )
        .unwrap();
        assert_eq!(s.stream.cpus, [3, 1]);
        let local = "192.0.2.1:3478".parse().unwrap();
        assert!(s.stream.deny.denied("198.51.100.7:40000".parse().unwrap(), local).is_some());
        assert!(s.stream.deny.denied("203.0.113.7:40000".parse().unwrap(), local).is_none());
    }

    #[test]
    fn a_tcp_listener_takes_the_udp_listeners_settings_without_limits() {
        let s = check(
            "[server]\nlisten = [\"192.0.2.1:3478\"]\nsoftware = \"edge\"\n\
             [stream]\ntcp = [\"192.0.2.1:3478\", \"192.0.2.1:3480\"]\n",
        )
        .unwrap();
        assert_eq!(s.stream.listeners.len(), 2);
        assert_eq!(s.stream.listeners[1], ("192.0.2.1:3480".parse().unwrap(), Transport::Tcp));
        for h in &s.stream.handlers {
            assert_eq!(h.software, "edge");
            assert_eq!(h.transport, Transport::Tcp);
            assert!(!h.limit.enabled(), "no reflection limits on a stream");
        }
        assert!(s.handlers[0].limit.enabled(), "UDP keeps them");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, expected) in [
            ("tls = [\"192.0.2.1:5349\"]\n", "stream.certificate = \"\": stream.tls is set"),
            ("tcp = [\"192.0.2.1:1\"]\ntls = [\"192.0.2.1:1\"]\n", "stream.tls[0] = \"192.0.2.1:1\": listed twice"),
            ("threads = 0\n", "stream.threads = 0: must be between 1 and 64"),
            ("max_tls_connections = 0\n", "stream.max_tls_connections = 0: must be between 1 and 1000000"),
            ("idle_timeout = 0.0\n", "stream.idle_timeout = 0: must be between 0.1 and 3600 seconds"),
            ("max_message_size = 4096\n", "stream.max_message_size = 4096: must be between 64 and 2048 bytes"),
            ("cpus = [1, 7]\n", "stream.cpus[1] = 7: not a CPU this process may run on (allowed: 0-3)"),
            ("cpus = [2, 2]\n", "stream.cpus[1] = 2: listed twice"),
            (
                "tls = [\"192.0.2.1:5349\"]\ncertificate = \"/nonexistent/c.pem\"\nprivate_key = \"/nonexistent/k.pem\"\n",
                "stream.certificate = \"/nonexistent/c.pem\": cannot read",
            ),
        ] {
            let e =
                check(&format!("[server]\nlisten = [\"192.0.2.1:3478\"]\n[stream]\n{text}")).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
