//! [`Config::validate`]: the checks serde cannot make while parsing (duplicates, ranges, CPUs
//! this process may use, fields that depend on each other, RFC 5780's address pairing), turning a
//! [`Config`] into the [`Settings`] the server runs with. `[auth]` is checked in `auth.rs`,
//! `[limit]` in `limit.rs`, `[turn_lb]` in `turn_lb.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::auth::world_readable;
use super::error::invalid;
use super::{Config, ConfigError, LbAuth, Rfc5780Plan, Settings};
use crate::auth::bearer::MetricsToken;
use crate::handler::HandlerConfig;
use crate::stun::attr::MAX_TEXT;

const BUFFER_RANGE: std::ops::RangeInclusive<usize> = 4096..=(1 << 30);

impl Config {
    /// Checks every field; `allowed_cpus` is the process's affinity mask. An error in a
    /// configuration read from a file ([`Config::origin`]) names the file, as parse errors do
    /// (`file.toml: io.batch_size = 0: …`; the line is no longer known after parsing), unless it
    /// already names a place of its own (the credentials file's `file:line`).
    pub fn validate(&self, allowed_cpus: &[usize]) -> Result<Settings, ConfigError> {
        self.validate_fields(allowed_cpus).map_err(|mut e| {
            if let (true, Some(origin)) = (e.location.is_empty(), &self.origin) {
                e.location = origin.display().to_string();
            }
            e
        })
    }

    /// [`Config::validate`] without the file name.
    fn validate_fields(&self, allowed_cpus: &[usize]) -> Result<Settings, ConfigError> {
        let listen = &self.server.listen;
        if listen.is_empty() {
            return Err(invalid("server.listen", "[]", "at least one address is needed"));
        }
        for (i, addr) in listen.iter().enumerate() {
            if listen[..i].contains(addr) {
                return Err(invalid(format!("server.listen[{i}]"), format!("\"{addr}\""), "listed twice"));
            }
        }
        let software = &self.server.software;
        if software.chars().count() >= 128 || software.len() > MAX_TEXT {
            return Err(invalid("server.software", format!("{software:?}"), "must be fewer than 128 characters"));
        }

        let cpus = if self.io.cpus.is_empty() {
            if allowed_cpus.is_empty() {
                return Err(invalid("io.cpus", "[]", "this process's CPU affinity mask could not be read; list CPUs"));
            }
            allowed_cpus.to_vec()
        } else {
            check_cpus("io.cpus", &self.io.cpus, allowed_cpus)?;
            self.io.cpus.clone()
        };
        if !(1..=1024).contains(&self.io.batch_size) {
            return Err(invalid("io.batch_size", self.io.batch_size, "must be between 1 and 1024"));
        }
        for (field, value) in [
            ("io.socket_recv_buffer", self.io.socket_recv_buffer),
            ("io.socket_send_buffer", self.io.socket_send_buffer),
        ] {
            if !BUFFER_RANGE.contains(&value) {
                return Err(invalid(field, value, "must be between 4096 and 1073741824 bytes"));
            }
        }
        if self.admin.drain_seconds > 3600 {
            return Err(invalid("admin.drain_seconds", self.admin.drain_seconds, "must be between 0 and 3600"));
        }
        let mut warnings = Vec::new();
        let metrics_token = self.metrics_token(&mut warnings)?;
        if let Some(admin) = self.admin.listen.filter(|a| !a.ip().is_loopback()) {
            if metrics_token.is_none() {
                warnings.push(format!(
                    "admin.listen = \"{admin}\" is not a loopback address and admin.metrics_token_file is empty: \
                     anyone who can reach it can read /metrics"
                ));
            }
        }
        let lb_long_term = self.turn_lb.enabled && self.turn_lb.auth == LbAuth::LongTerm;
        // Answer settings for every address at once: `server.listen`, then the stream listeners
        // on other addresses (auth.listeners and turn_lb.listeners may name either).
        let all: Vec<SocketAddr> = listen.iter().copied().chain(self.stream_only_addrs(listen)).collect();
        let (auth, authenticator) = self.validate_auth(&all, lb_long_term, &mut warnings)?;
        let rfc5780 = self.validate_rfc5780(listen)?;
        let limit = self.validate_limit(listen, &rfc5780, &auth[..listen.len()], &mut warnings)?;
        let turn = self.validate_turn_lb(&all, &rfc5780, authenticator, &mut warnings)?;
        let mut handlers: Vec<HandlerConfig> = auth
            .into_iter()
            .enumerate()
            .map(|(i, auth)| HandlerConfig {
                software: self.server.software.clone(),
                response_origin: self.server.response_origin,
                rfc3489_classic: self.server.rfc3489_classic,
                auth,
                rfc5780: None,
                limit: limit.clone(),
                turn: turn.as_ref().filter(|(_, on)| on[i]).map(|(balancer, _)| balancer.clone()),
                transport: crate::lb::Transport::Udp,
            })
            .collect();
        let stream = self.validate_stream(&all, &handlers, &limit, allowed_cpus)?;
        handlers.truncate(listen.len());
        let xdp = self.validate_xdp(listen, &handlers, &rfc5780, &mut warnings)?;
        Ok(Settings {
            listen: listen.clone(),
            backend: self.io.backend,
            uring_send: self.io.uring_send,
            uring_taskrun: self.io.uring_taskrun,
            cpu_steering: self.io.cpu_steering,
            cpus,
            batch_size: self.io.batch_size,
            socket_recv_buffer: self.io.socket_recv_buffer,
            socket_send_buffer: self.io.socket_send_buffer,
            handlers,
            rfc5780,
            limit,
            log_level: self.log.level.into(),
            admin_listen: self.admin.listen,
            metrics_token,
            drain: std::time::Duration::from_secs(self.admin.drain_seconds),
            xdp,
            stream,
            warnings,
        })
    }

    /// Reads `admin.metrics_token_file` (relative to the configuration file's directory).
    /// Errors name the field and the file, never the token.
    fn metrics_token(&self, warnings: &mut Vec<String>) -> Result<Option<MetricsToken>, ConfigError> {
        const FIELD: &str = "admin.metrics_token_file";
        let named = Path::new(&self.admin.metrics_token_file);
        if named.as_os_str().is_empty() {
            return Ok(None);
        }
        let path = match self.origin.as_deref().and_then(Path::parent) {
            Some(dir) if named.is_relative() => dir.join(named),
            _ => named.to_path_buf(),
        };
        let shown = format!("{path:?}");
        let bytes = std::fs::read(&path).map_err(|e| invalid(FIELD, &shown, format!("cannot read: {e}")))?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(invalid(FIELD, &shown, "the file is empty; it must hold the token"));
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(invalid(
                FIELD,
                &shown,
                "the token must be one word of printable ASCII (no spaces, control or non-ASCII characters)",
            ));
        }
        if world_readable(&path) {
            warnings.push(format!("{} holds the metrics token and others can read it; chmod 600 it", path.display()));
        }
        Ok(Some(MetricsToken::new(token)))
    }

    /// Validates `[rfc5780]`: each alternate IP pairs with the one concrete listen address of
    /// its family.
    fn validate_rfc5780(&self, listen: &[SocketAddr]) -> Result<Vec<Rfc5780Plan>, ConfigError> {
        let r = &self.rfc5780;
        let mut plans: Vec<Rfc5780Plan> = Vec::new();
        for (i, &ip) in r.alternate_ips.iter().enumerate() {
            let field = format!("rfc5780.alternate_ips[{i}]");
            let bad = |why: &str| invalid(&field, format!("\"{ip}\""), why);
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(bad("must be a unicast address of this host, not a wildcard"));
            }
            let same_family: Vec<usize> = (0..listen.len()).filter(|&k| listen[k].is_ipv4() == ip.is_ipv4()).collect();
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let [primary] = same_family[..] else {
                return Err(bad(&format!(
                    "needs exactly one {family} address in server.listen (the primary), found {}",
                    same_family.len()
                )));
            };
            let p = listen[primary];
            if p.ip().is_unspecified() {
                return Err(bad(&format!(
                    "the primary server.listen[{primary}] = \"{p}\" is a wildcard; RFC 5780 mode needs a concrete IP"
                )));
            }
            if p.ip() == ip {
                return Err(bad(&format!("is the primary address itself (server.listen[{primary}])")));
            }
            if plans.iter().any(|q| q.primary == primary) {
                return Err(bad(&format!("a second {family} alternate address")));
            }
            if r.alternate_port != 0 && r.alternate_port == p.port() {
                return Err(invalid(
                    "rfc5780.alternate_port",
                    r.alternate_port,
                    format!("must differ from the primary's port (server.listen[{primary}])"),
                ));
            }
            plans.push(Rfc5780Plan { primary, alternate_ip: ip, alternate_port: r.alternate_port });
        }
        Ok(plans)
    }
}

/// Checks a list of CPUs (`field`): each one this process may run on, none twice.
pub(super) fn check_cpus(field: &str, list: &[usize], allowed_cpus: &[usize]) -> Result<(), ConfigError> {
    for (i, cpu) in list.iter().enumerate() {
        if !allowed_cpus.contains(cpu) {
            return Err(invalid(
                format!("{field}[{i}]"),
                cpu,
                format!("not a CPU this process may run on (allowed: {})", cpu_list(allowed_cpus)),
            ));
        }
        if list[..i].contains(cpu) {
            return Err(invalid(format!("{field}[{i}]"), cpu, "listed twice"));
        }
    }
    Ok(())
}

/// "0-3,6" style rendering of a CPU list.
fn cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if cpus[i] == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{}", cpus[i]);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::BackendChoice;
    use super::*;

    pub(in crate::config) fn check(text: &str) -> Result<Settings, ConfigError> {
        Config::from_toml(text, "test.toml")?.validate(&[0, 1, 2, 3])
    }

    #[test]
    fn rfc5780_pairs_each_alternate_with_its_family_primary() {
        let ok = check(
            "[server]\nlisten = [\"192.0.2.1:3478\", \"[2001:db8::1]:3478\"]\n\
             [rfc5780]\nalternate_ips = [\"2001:db8::2\", \"192.0.2.2\"]\n",
        )
        .unwrap();
        assert_eq!(
            ok.rfc5780,
            [
                Rfc5780Plan { primary: 1, alternate_ip: "2001:db8::2".parse().unwrap(), alternate_port: 3479 },
                Rfc5780Plan { primary: 0, alternate_ip: "192.0.2.2".parse().unwrap(), alternate_port: 3479 },
            ]
        );
        assert!(check("").unwrap().rfc5780.is_empty(), "off by default");
        let err = |listen: &str, rfc: &str| {
            check(&format!("[server]\nlisten = {listen}\n[rfc5780]\n{rfc}\n")).unwrap_err().to_string()
        };
        let one = "[\"192.0.2.1:3478\"]";
        assert_eq!(
            err(one, "alternate_ips = [\"nope\"]"),
            "test.toml:4: rfc5780.alternate_ips[0] = \"nope\": not an IP address"
        );
        assert_eq!(
            err("[\"0.0.0.0:3478\"]", "alternate_ips = [\"192.0.2.2\"]"),
            "rfc5780.alternate_ips[0] = \"192.0.2.2\": the primary server.listen[0] = \"0.0.0.0:3478\" is a wildcard; RFC 5780 mode needs a concrete IP"
        );
        assert_eq!(
            err("[\"192.0.2.1:3478\", \"192.0.2.3:3478\"]", "alternate_ips = [\"192.0.2.2\"]"),
            "rfc5780.alternate_ips[0] = \"192.0.2.2\": needs exactly one IPv4 address in server.listen (the primary), found 2"
        );
        assert_eq!(
            err(one, "alternate_ips = [\"2001:db8::2\"]"),
            "rfc5780.alternate_ips[0] = \"2001:db8::2\": needs exactly one IPv6 address in server.listen (the primary), found 0"
        );
        assert_eq!(
            err(one, "alternate_ips = [\"192.0.2.1\"]"),
            "rfc5780.alternate_ips[0] = \"192.0.2.1\": is the primary address itself (server.listen[0])"
        );
        assert_eq!(
            err(one, "alternate_ips = [\"192.0.2.2\", \"192.0.2.4\"]"),
            "rfc5780.alternate_ips[1] = \"192.0.2.4\": a second IPv4 alternate address"
        );
        assert_eq!(
            err(one, "alternate_ips = [\"192.0.2.2\"]\nalternate_port = 3478"),
            "rfc5780.alternate_port = 3478: must differ from the primary's port (server.listen[0])"
        );
        assert_eq!(
            err(one, "alternate_ips = [\"0.0.0.0\"]"),
            "rfc5780.alternate_ips[0] = \"0.0.0.0\": must be a unicast address of this host, not a wildcard"
        );
    }

    #[test]
    fn defaults_validate() {
        let s = check("").unwrap();
        assert_eq!(s.listen, ["0.0.0.0:3478".parse().unwrap(), "[::]:3478".parse().unwrap()]);
        assert_eq!(s.cpus, [0, 1, 2, 3]);
        assert_eq!(s.batch_size, 32);
        assert!(s.handlers.iter().all(|h| h.rfc3489_classic && h.auth.is_none()));
        assert_eq!(s.log_level, tracing::Level::INFO);
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = check("[io]\nbatch_size = 0\n").unwrap_err();
        assert_eq!(e.to_string(), "io.batch_size = 0: must be between 1 and 1024");
        let e = check("[server]\nlisten = [\"127.0.0.1:1\", \"nonsense\"]\n").unwrap_err();
        assert_eq!(e.field, "server.listen[1]");
        assert_eq!(e.value, "\"nonsense\"");
        let e = check("[io]\ncpus = [1, 9]\n").unwrap_err();
        assert_eq!(e.to_string(), "io.cpus[1] = 9: not a CPU this process may run on (allowed: 0-3)");
        let e = check("[io]\ncpus = [1, 1]\n").unwrap_err();
        assert_eq!(e.field, "io.cpus[1]");
        let e = check("[io]\nbackend = \"dpdk\"\n").unwrap_err();
        assert_eq!(e.to_string(), "test.toml:2: io.backend = \"dpdk\": must be \"auto\", \"io_uring\" or \"mmsg\"");
        assert_eq!(check("[io]\nbackend = \"mmsg\"\n").unwrap().backend, BackendChoice::Mmsg);
        let e = check("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert_eq!(e.field, "log.level");
        let e = check("[io]\nsocket_recv_buffer = 1\n").unwrap_err();
        assert_eq!(e.field, "io.socket_recv_buffer");
        let e = check(&format!("[server]\nsoftware = \"{}\"\n", "x".repeat(128))).unwrap_err();
        assert_eq!(e.field, "server.software");
        let e = check("[server]\nlisten = []\n").unwrap_err();
        assert_eq!(e.field, "server.listen");
    }

    #[test]
    fn typed_fields_keep_their_messages() {
        let cases = [
            ("[io]\nuring_send = \"sqe2\"\n", "test.toml:2: io.uring_send = \"sqe2\": must be \"sqe\" or \"sendmmsg\""),
            (
                "[io]\nuring_taskrun = \"now\"\n",
                "test.toml:2: io.uring_taskrun = \"now\": must be \"defer\" or \"coop\"",
            ),
            (
                "[log]\nlevel = \"loud\"\n",
                "test.toml:2: log.level = \"loud\": must be error, warn, info, debug or trace",
            ),
            (
                "[admin]\nlisten = \"nowhere\"\n",
                "test.toml:2: admin.listen = \"nowhere\": not an IP:port address (empty disables the endpoint)",
            ),
            (
                "[server]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "server.listen[1] = \"127.0.0.1:1\": listed twice",
            ),
            (
                "[server]\nlisten = [\"localhost:3478\"]\n",
                "test.toml:2: server.listen[0] = \"localhost:3478\": not an IP:port address (IPv6 as \"[::1]:3478\")",
            ),
            ("[log]\nlevel = 3\n", "test.toml:2: log.level = 3: invalid type: integer `3`, expected a string"),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n",
                "test.toml:2: server.listen = \"127.0.0.1:1\": invalid type: string \"127.0.0.1:1\", expected a sequence",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(check(text).unwrap_err().to_string(), expected, "{text}");
        }
        let s = check("[admin]\nlisten = \"\"\n[log]\nlevel = \"DEBUG\"\n").unwrap();
        assert_eq!(s.admin_listen, None);
        assert_eq!(s.log_level, tracing::Level::DEBUG, "tracing's parser, as before: any case");
        let s = check("[admin]\nlisten = \"0.0.0.0:9478\"\n").unwrap();
        assert_eq!(
            s.warnings,
            ["admin.listen = \"0.0.0.0:9478\" is not a loopback address and admin.metrics_token_file is \
                 empty: anyone who can reach it can read /metrics"]
        );
    }

    #[test]
    fn unknown_fields_and_types_are_errors_with_line() {
        let e = check("[io]\nbatch_size = 8\nbach_size = 9\n").unwrap_err();
        assert_eq!(e.location, "test.toml:3");
        assert_eq!(e.field, "io.bach_size");
        assert!(e.reason.contains("unknown field `bach_size`"), "{e}");
        let e = check("[io]\nbatch_size = \"many\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:2: io.batch_size = \"many\": invalid type: string \"many\", expected usize"
        );
        let e = check("[bogus]\n").unwrap_err();
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn errors_of_a_file_name_it() {
        let mut config = Config::from_toml("[io]\nbatch_size = 0\n", "conf/stunedge.toml").unwrap();
        assert_eq!(
            config.validate(&[0]).unwrap_err().to_string(),
            "io.batch_size = 0: must be between 1 and 1024",
            "text without a file: no place to name"
        );
        config.origin = Some("conf/stunedge.toml".into());
        let e = config.validate(&[0]).unwrap_err();
        assert_eq!(e.location, "conf/stunedge.toml");
        assert_eq!(e.to_string(), "conf/stunedge.toml: io.batch_size = 0: must be between 1 and 1024");
    }

    #[test]
    fn metrics_token_file_is_read_and_never_echoed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("stunedge-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let config = |file: &std::path::Path| {
            format!("[admin]\nlisten = \"0.0.0.0:9478\"\nmetrics_token_file = {:?}\n", file.display().to_string())
        };
        let good = write("good", "  s3cret-Token_1\n");
        let s = check(&config(&good)).unwrap();
        assert!(s.warnings.is_empty(), "off loopback with a token: no warning ({:?})", s.warnings);
        let token = s.metrics_token.as_ref().unwrap();
        assert!(token.matches(b"s3cret-Token_1"));
        assert!(!format!("{s:?}").contains("s3cret"));

        let missing = dir.join("missing");
        let e = check(&config(&missing)).unwrap_err();
        assert_eq!(e.field, "admin.metrics_token_file");
        assert!(e.to_string().contains(&missing.display().to_string()) && e.reason.starts_with("cannot read"), "{e}");
        for (name, text, reason) in [
            ("empty", "\n \n", "the file is empty; it must hold the token"),
            ("spaced", "s3cret token\n", "the token must be one word of printable ASCII"),
            ("two-lines", "s3cret\ntoken\n", "the token must be one word of printable ASCII"),
        ] {
            let e = check(&config(&write(name, text))).unwrap_err();
            assert_eq!(e.field, "admin.metrics_token_file", "{name}");
            assert!(e.reason.starts_with(reason), "{name}: {e}");
            assert!(e.to_string().contains(name) && !e.to_string().contains("s3cret"), "{name}: {e}");
        }
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = check(&config(&good)).unwrap();
        assert_eq!(
            s.warnings,
            [format!("{} holds the metrics token and others can read it; chmod 600 it", good.display())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[]), "");
    }
}
