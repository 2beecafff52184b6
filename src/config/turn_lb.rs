//! The `[turn_lb]` section: its ranges, the backends (names, addresses, never this server's
//! own), the probe and its credentials, and the [`Balancer`] it builds. The balancer built here
//! has a fresh health state; the running server carries the live one over on reload
//! ([`Balancer::rebased`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::invalid;
use super::schema::{LbAuth, ProbeName, Written as _};
use super::{Config, ConfigError, Rfc5780Plan};
use crate::auth::Authenticator;
use crate::lb::{BackendAddr, Balancer, KeyRule, PoolError, ProbeKind, ProbeSecret, ProbeSettings, Seed};

/// At most this many backend addresses (each probed every `probe_interval`).
pub(super) const MAX_BACKEND_ADDRS: usize = 512;

/// What [`Config::validate_turn_lb`] gives when the section is on: the balancer and, per
/// listen address, whether it redirects.
type TurnPlan = (Arc<Balancer>, Vec<bool>);

impl Config {
    /// Validates `[turn_lb]`; the balancer and, per listen address, whether it redirects.
    /// `None` when the section is off. `authenticator` is `[auth]`'s, built when
    /// `turn_lb.auth = "long-term"`.
    pub(super) fn validate_turn_lb(
        &self,
        listen: &[SocketAddr],
        rfc5780: &[Rfc5780Plan],
        authenticator: Option<Arc<Authenticator>>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<TurnPlan>, ConfigError> {
        let t = &self.turn_lb;
        if !t.enabled {
            return Ok(None);
        }
        let mut on = vec![t.listeners.is_empty(); listen.len()];
        for (i, addr) in t.listeners.iter().enumerate() {
            let field = format!("turn_lb.listeners[{i}]");
            let Some(at) = listen.iter().position(|l| l == addr) else {
                return Err(invalid(field, format!("\"{addr}\""), "not one of server.listen"));
            };
            if on[at] {
                return Err(invalid(field, format!("\"{addr}\""), "listed twice"));
            }
            on[at] = true;
        }
        if t.seed.len() > 256 {
            return Err(invalid("turn_lb.seed", "", "must be at most 256 bytes"));
        }
        let probe = self.probe_settings()?;
        if t.backends.is_empty() {
            return Err(invalid("turn_lb.backends", "[]", "turn_lb is enabled but has no backends"));
        }

        let own = own_addresses(listen, rfc5780);
        let mut addrs: Vec<BackendAddr> = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        for (i, b) in t.backends.iter().enumerate() {
            let field = format!("turn_lb.backends[{i}]");
            let name_ok = (1..=64).contains(&b.name.len())
                && b.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{:?}", b.name),
                    "must be 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if t.backends[..i].iter().any(|o| o.name == b.name) {
                return Err(invalid(format!("{field}.name"), format!("{:?}", b.name), "used by another backend"));
            }
            if !(1..=1000).contains(&b.weight) {
                return Err(invalid(
                    format!("{field}.weight"),
                    b.weight,
                    "must be between 1 and 1000 (drain a backend that should get no clients)",
                ));
            }
            if b.udp.is_empty() || b.udp.len() > 2 || (b.udp.len() == 2 && b.udp[0].is_ipv4() == b.udp[1].is_ipv4()) {
                return Err(invalid(
                    format!("{field}.udp"),
                    format!("{:?}", b.udp.iter().map(ToString::to_string).collect::<Vec<_>>()),
                    "must be one IPv4 address, one IPv6 address, or one of each",
                ));
            }
            for (j, &addr) in b.udp.iter().enumerate() {
                let field = format!("{field}.udp[{j}]");
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                let ip = addr.ip();
                if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255; 4]) {
                    return Err(invalid(field, format!("\"{addr}\""), "must be a unicast address and a port, not 0"));
                }
                if let Some(why) = own.is_own(addr) {
                    return Err(invalid(
                        field,
                        format!("\"{addr}\""),
                        format!(
                            "is this server's own address ({why}): a client sent there would be redirected in a loop"
                        ),
                    ));
                }
                let mut stream = [None; 2];
                for (k, list) in [&b.tcp, &b.tls].into_iter().enumerate() {
                    stream[k] = list.iter().find(|a| a.is_ipv4() == addr.is_ipv4()).copied();
                }
                addrs.push(BackendAddr { name: b.name.clone(), addr, weight: b.weight, drain: b.drain, stream });
                fields.push(field);
            }
            for (kind, list) in [("tcp", &b.tcp), ("tls", &b.tls)] {
                let shown = || format!("{:?}", list.iter().map(ToString::to_string).collect::<Vec<_>>());
                let families_ok = list.iter().enumerate().all(|(j, a)| {
                    list[..j].iter().all(|o| o.is_ipv4() != a.is_ipv4())
                        && b.udp.iter().any(|u| u.is_ipv4() == a.is_ipv4())
                });
                if !families_ok {
                    return Err(invalid(
                        format!("{field}.{kind}"),
                        shown(),
                        "must be at most one address per family, each of a family `udp` has (it gets clients only while that address is up too)",
                    ));
                }
                for (j, a) in list.iter().enumerate() {
                    let ip = a.ip();
                    if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
                        return Err(invalid(
                            format!("{field}.{kind}[{j}]"),
                            format!("\"{a}\""),
                            "must be a unicast address and a port, not 0",
                        ));
                    }
                }
            }
        }
        if addrs.len() > MAX_BACKEND_ADDRS {
            return Err(invalid(
                "turn_lb.backends",
                addrs.len(),
                format!("at most {MAX_BACKEND_ADDRS} backend addresses"),
            ));
        }
        if addrs.iter().all(|a| a.drain) {
            warnings.push("turn_lb: every backend is drained: every Allocate gets the on_no_backend answer".into());
        }
        let rule = KeyRule { hash_key: t.hash_key, ipv6_prefix: t.ipv6_prefix };
        let mut balancer = Balancer::new(&addrs, seed(&t.seed), rule, probe, None).map_err(|e| match e {
            PoolError::Duplicate { second, .. } => {
                invalid(&fields[second], format!("\"{}\"", addrs[second].addr), "listed by two backends")
            }
            PoolError::ZeroWeight { index } => invalid(&fields[index], 0, "weight 0"),
            PoolError::Ipv6Prefix(len) => invalid("turn_lb.ipv6_prefix", len, "must be between 0 and 128"),
        })?;
        balancer.auth = match t.auth {
            LbAuth::None => None,
            LbAuth::LongTerm => Some(authenticator.ok_or_else(|| {
                invalid("turn_lb.auth", "\"long-term\"", "needs auth.long_term_users or auth.rest_secrets")
            })?),
        };
        balancer.on_no_backend = t.on_no_backend;
        balancer.other_family = t.other_family;
        Ok(Some((Arc::new(balancer), on)))
    }

    /// `probe`, its timing and its credentials.
    fn probe_settings(&self) -> Result<ProbeSettings, ConfigError> {
        let t = &self.turn_lb;
        if !(0.1..=3600.0).contains(&t.probe_interval) {
            return Err(invalid("turn_lb.probe_interval", t.probe_interval, "must be between 0.1 and 3600 seconds"));
        }
        if !(0.01..=60.0).contains(&t.probe_timeout) || t.probe_timeout >= t.probe_interval {
            return Err(invalid(
                "turn_lb.probe_timeout",
                t.probe_timeout,
                "must be between 0.01 and 60 seconds and less than turn_lb.probe_interval",
            ));
        }
        for (field, value) in [("turn_lb.rise", t.rise), ("turn_lb.fall", t.fall)] {
            if !(1..=100).contains(&value) {
                return Err(invalid(field, value, "must be between 1 and 100"));
            }
        }
        let credentials = [
            ("turn_lb.probe_username", &t.probe_username),
            ("turn_lb.probe_password", &t.probe_password),
            ("turn_lb.probe_rest_secret", &t.probe_rest_secret),
        ];
        let kind = match t.probe {
            ProbeName::AllocateAuth => {
                if t.probe_username.is_empty() || t.probe_username.len() > 256 {
                    return Err(invalid(
                        "turn_lb.probe_username",
                        format!("{:?}", t.probe_username),
                        "probe = \"allocate-auth\" needs a user name of 1 to 256 bytes",
                    ));
                }
                let secret = match (t.probe_password.is_empty(), t.probe_rest_secret.is_empty()) {
                    (false, true) => ProbeSecret::Password(t.probe_password.clone()),
                    (true, false) => ProbeSecret::RestSecret(t.probe_rest_secret.clone()),
                    _ => {
                        return Err(invalid(
                            "turn_lb.probe_password",
                            "",
                            "probe = \"allocate-auth\" needs exactly one of probe_password and probe_rest_secret",
                        ));
                    }
                };
                ProbeKind::AllocateAuth { username: t.probe_username.clone(), secret }
            }
            other => {
                if let Some((field, _)) = credentials.iter().find(|(_, v)| !v.is_empty()) {
                    return Err(invalid(
                        *field,
                        "",
                        format!("only used by probe = \"allocate-auth\", not \"{}\"", other.written()),
                    ));
                }
                if other == ProbeName::Binding { ProbeKind::Binding } else { ProbeKind::Allocate }
            }
        };
        Ok(ProbeSettings {
            kind,
            interval: Duration::from_secs_f64(t.probe_interval),
            timeout: Duration::from_secs_f64(t.probe_timeout),
            rise: t.rise,
            fall: t.fall,
        })
    }
}

/// The fleet seed from `turn_lb.seed`: the first 16 bytes of its SHA-256 (domain-separated), so
/// any text works and every node with the same text agrees.
fn seed(text: &str) -> Seed {
    let digest = Sha256::new().chain_update(b"stunedge turn_lb seed\0").chain_update(text.as_bytes()).finalize();
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&digest[..16]);
    seed
}

/// The addresses clients reach this server on: the listen addresses and the RFC 5780 sockets,
/// and, for a wildcard listen address, every local address with its port.
struct Own {
    exact: Vec<SocketAddr>,
    wildcard_ports: Vec<(bool, u16)>,
    local: Vec<IpAddr>,
}

fn own_addresses(listen: &[SocketAddr], rfc5780: &[Rfc5780Plan]) -> Own {
    let mut exact: Vec<SocketAddr> = listen.iter().map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())).collect();
    for plan in rfc5780 {
        let p = listen[plan.primary];
        exact.push(SocketAddr::new(plan.alternate_ip, p.port()));
        if plan.alternate_port != 0 {
            exact.push(SocketAddr::new(p.ip(), plan.alternate_port));
            exact.push(SocketAddr::new(plan.alternate_ip, plan.alternate_port));
        }
    }
    let wildcard_ports: Vec<(bool, u16)> =
        listen.iter().filter(|a| a.ip().is_unspecified()).map(|a| (a.is_ipv4(), a.port())).collect();
    // The host's addresses matter only behind a wildcard; without them loopback still counts.
    let local = if wildcard_ports.is_empty() {
        Vec::new()
    } else {
        crate::io::ifaddrs::interface_addresses().map(|l| l.into_iter().map(|a| a.ip).collect()).unwrap_or_default()
    };
    Own { exact, wildcard_ports, local }
}

impl Own {
    /// Why `addr` is this server's, if it is.
    fn is_own(&self, addr: SocketAddr) -> Option<&'static str> {
        if self.exact.contains(&addr) {
            return Some("a listen address");
        }
        let ip = addr.ip();
        // A wildcard `[::]` socket also takes IPv4 unless IPV6_V6ONLY; count it for both.
        let wildcard = self.wildcard_ports.iter().any(|&(v4, port)| port == addr.port() && (v4 == ip.is_ipv4() || !v4));
        (wildcard && (ip.is_loopback() || self.local.contains(&ip)))
            .then_some("a local address on a wildcard listen port")
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::check;
    use crate::lb::{HashKey, Health, NoBackend};

    const BASE: &str = "[server]\nlisten = [\"127.0.0.21:3478\", \"[::1]:3478\"]\n[turn_lb]\nenabled = true\n";

    fn err(extra: &str) -> String {
        check(&format!("{BASE}{extra}")).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_pool_builds_a_balancer_on_the_listed_listeners() {
        let s = check(&format!(
            "{BASE}listeners = [\"[::1]:3478\"]\nhash_key = \"src_ip_port\"\nipv6_prefix = 56\nseed = \"fleet\"\n\
             on_no_backend = \"drop\"\nother_family = false\nprobe = \"binding\"\nprobe_interval = 0.5\n\
             probe_timeout = 0.2\nrise = 1\nfall = 5\n\
             backends = [{{ name = \"a\", udp = [\"127.0.0.22:3478\", \"[::1]:3479\"] }},\n\
             {{ name = \"b\", udp = [\"127.0.0.23:3478\"], weight = 3, drain = true }}]\n"
        ))
        .unwrap();
        let (a, b) = (&s.handlers[0], &s.handlers[1]);
        assert!(a.turn.is_none(), "not listed");
        let lb = b.turn.as_ref().unwrap();
        assert_eq!(lb.pool.backends().len(), 3);
        assert_eq!(lb.pool.backends()[2].weight, 3);
        assert!(lb.pool.backends()[2].drain);
        assert_eq!(lb.pool.rule().hash_key, HashKey::SourceAddress);
        assert_eq!(lb.pool.rule().ipv6_prefix, 56);
        assert_eq!(lb.on_no_backend, NoBackend::Drop);
        assert!(!lb.other_family && lb.auth.is_none());
        assert_eq!(lb.state.entries[1].name, "a");
        assert_eq!(lb.state.entries[1].health(), Health::Unknown);
        assert_eq!(lb.state.probe.rise, 1);
        assert_eq!(lb.state.probe.interval, std::time::Duration::from_millis(500));
        // The seed is a function of the text: the same text picks the same backends.
        let again = check(&format!(
            "{BASE}seed = \"fleet\"\nbackends = [{{ name = \"x\", udp = [\"127.0.0.22:3478\"] }}, \
             {{ name = \"y\", udp = [\"127.0.0.23:3478\"] }}]\n"
        ))
        .unwrap();
        let other_seed = check(&format!(
            "{BASE}seed = \"other\"\nbackends = [{{ name = \"x\", udp = [\"127.0.0.22:3478\"] }}, \
             {{ name = \"y\", udp = [\"127.0.0.23:3478\"] }}]\n"
        ))
        .unwrap();
        let (p, q) = (again.handlers[0].turn.as_ref().unwrap(), other_seed.handlers[0].turn.as_ref().unwrap());
        let clients = (0..64u8).map(|i| std::net::SocketAddr::from(([198, 51, 100, i], 5000)));
        let differ = clients.filter(|&c| p.redirect(c).unwrap().addr != q.redirect(c).unwrap().addr).count();
        assert!(differ > 10, "another seed moves clients: {differ}");
    }

    #[test]
    fn off_by_default_and_when_disabled() {
        let s = check("[server]\nlisten = [\"127.0.0.21:3478\"]\n").unwrap();
        assert!(s.handlers[0].turn.is_none());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("", "turn_lb.backends = []: turn_lb is enabled but has no backends"),
            (
                "backends = [{ name = \"a\", udp = [\"127.0.0.21:3478\"] }]\n",
                "turn_lb.backends[0].udp[0] = \"127.0.0.21:3478\": is this server's own address (a listen address)",
            ),
            (
                "backends = [{ name = \"a\", udp = [\"127.0.0.22:0\"] }]\n",
                "turn_lb.backends[0].udp[0] = \"127.0.0.22:0\": must be a unicast address",
            ),
            (
                "backends = [{ name = \"a\", udp = [\"127.0.0.22:1\", \"127.0.0.23:1\"] }]\n",
                "turn_lb.backends[0].udp = [\"127.0.0.22:1\", \"127.0.0.23:1\"]: must be one IPv4",
            ),
            (
                "backends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }, { name = \"a\", udp = [\"127.0.0.23:1\"] }]\n",
                "turn_lb.backends[1].name = \"a\": used by another backend",
            ),
            (
                "backends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }, { name = \"b\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.backends[1].udp[0] = \"127.0.0.22:1\": listed by two backends",
            ),
            (
                "backends = [{ name = \"a b\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.backends[0].name = \"a b\": must be 1 to 64",
            ),
            ("backends = [{ name = \"a\", udp = [\"127.0.0.22:1\"], weight = 0 }]\n", "turn_lb.backends[0].weight = 0"),
            (
                "listeners = [\"127.0.0.9:1\"]\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.listeners[0] = \"127.0.0.9:1\": not one of server.listen",
            ),
            (
                "probe_timeout = 3\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.probe_timeout = 3: must be between 0.01 and 60 seconds and less than",
            ),
            ("fall = 0\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n", "turn_lb.fall = 0"),
            (
                "probe = \"allocate-auth\"\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.probe_username = \"\": probe = \"allocate-auth\" needs a user name",
            ),
            (
                "probe_password = \"x\"\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.probe_password: only used by probe = \"allocate-auth\", not \"allocate\"",
            ),
            (
                "auth = \"long-term\"\nbackends = [{ name = \"a\", udp = [\"127.0.0.22:1\"] }]\n",
                "turn_lb.auth = \"long-term\": Allocates are to be authenticated but there are no",
            ),
            ("hash_key = \"ip\"\n", "must be \"src_ip\" or \"src_ip_port\""),
            ("on_no_backend = \"503\"\n", "must be \"reject\" or \"drop\""),
        ];
        for (extra, expected) in cases {
            let e = err(extra);
            assert!(e.contains(expected), "{extra:?}: {e}");
        }
    }

    #[test]
    fn a_wildcard_listener_makes_loopback_on_its_port_own() {
        let wild = "[server]\nlisten = [\"0.0.0.0:3478\"]\n[turn_lb]\nenabled = true\n";
        let e = check(&format!("{wild}backends = [{{ name = \"a\", udp = [\"127.0.0.1:3478\"] }}]\n")).unwrap_err();
        assert!(e.to_string().contains("a local address on a wildcard listen port"), "{e}");
        check(&format!("{wild}backends = [{{ name = \"a\", udp = [\"127.0.0.1:3479\"] }}]\n")).unwrap();
    }

    #[test]
    fn long_term_mode_takes_the_auth_sections_credentials() {
        let s = check(&format!(
            "{BASE}auth = \"long-term\"\nbackends = [{{ name = \"a\", udp = [\"127.0.0.22:1\"] }}]\n\
             [auth]\nrest_secrets = [\"s3cret\"]\nnonce_secret = \"0123456789abcdef\"\n"
        ))
        .unwrap();
        assert!(s.handlers[0].auth.is_none(), "Binding stays unauthenticated");
        assert!(s.handlers[0].turn.as_ref().unwrap().auth.is_some());
    }
}
