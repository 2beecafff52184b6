//! The typed TOML configuration: every field has a default and a doc comment (which
//! `--print-config` turns into the commented default file, `configs/stunedge.toml`), unknown
//! fields are errors, and [`Config::validate`] turns it into [`Settings`] or an error that names
//! the field and the bad value. Read at start (and on reload), never on the packet path.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::auth::{Algorithm, AuthSettings, Authenticator, Mechanism, Policy};
use crate::handler::{HandlerConfig, ListenerAuth};
use crate::stun::attr::{MAX_TEXT, MAX_USERNAME};

/// One field's documentation, for `--print-config`.
struct FieldDoc {
    key: &'static str,
    doc: &'static [&'static str],
    value: toml::Value,
}

macro_rules! section {
    ($(#[doc = $sdoc:literal])* $name:ident $key:literal {
        $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr, )*
    }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            const KEY: &'static str = $key;
            const DOC: &'static [&'static str] = &[$($sdoc),*];

            fn fields(&self) -> Vec<FieldDoc> {
                vec![$( FieldDoc {
                    key: stringify!($field),
                    doc: &[$($doc),*],
                    value: toml::Value::try_from(&self.$field).expect("config values are TOML"),
                }, )*]
            }
        }
    };
}

section! {
    /// What the server listens on and what it puts in answers.
    Server "server" {
        /// UDP addresses to listen on, as `"IP:port"`. `"0.0.0.0:3478"` and `"[::]:3478"` take every
        /// IPv4 and IPv6 address; replies leave from the address each request was sent to.
        /// Port 0 picks a free port (tests).
        listen: Vec<String> = vec!["0.0.0.0:3478".into(), "[::]:3478".into()],
        /// SOFTWARE attribute added to every answer (RFC 8489 §14.14); empty adds none. Fewer
        /// than 128 characters. Each byte here is a byte of amplification: keep it short.
        software: String = String::new(),
        /// Add RESPONSE-ORIGIN (RFC 5780 §7.3; SOURCE-ADDRESS for RFC 3489 clients) to Binding
        /// answers: 12 bytes (IPv4) or 24 (IPv6) more per answer.
        response_origin: bool = false,
        /// Answer RFC 3489 "classic" Binding requests (no magic cookie) with MAPPED-ADDRESS.
        /// When false they are dropped and counted as classic_disabled.
        rfc3489_classic: bool = true,
    }
}

section! {
    /// The data plane: worker threads, batching and socket buffers.
    Io "io" {
        /// Data-plane backend: "auto" (io_uring where this kernel and sandbox allow it,
        /// otherwise mmsg, with one log line saying why), "io_uring" (refuse to start without
        /// it), or "mmsg" (recvmmsg/sendmmsg, works everywhere).
        backend: String = "auto".into(),
        /// How the io_uring backend sends answers: "sqe" (one SEND submission per answer with
        /// the address in it, SENDMSG where PKTINFO is needed, submitted with the next wait) or
        /// "sendmmsg" (one sendmmsg(2) per socket per loop turn). See bench/results for the
        /// measurements behind the default.
        uring_send: String = "sendmmsg".into(),
        /// When the kernel runs a ring's completion work: "defer" (IORING_SETUP_DEFER_TASKRUN,
        /// Linux 6.1: only while the worker waits for completions) or "coop"
        /// (IORING_SETUP_COOP_TASKRUN, 5.19: at the worker's next entry into the kernel, without
        /// interrupting it). Both with SINGLE_ISSUER. "coop" measured faster in most runs
        /// (median 1.08×; bench/results/2026-11-26-levers.md).
        uring_taskrun: String = "coop".into(),
        /// Steer each datagram to the worker on the CPU that received it (an
        /// SO_ATTACH_REUSEPORT_CBPF program), instead of SO_REUSEPORT's hash of the addresses.
        /// Use it when NIC queues (RSS) and their IRQs are pinned to the same CPUs as the
        /// workers, one queue per worker CPU: each packet then stays on one CPU from the NIC to
        /// the answer. Without that alignment it can pile the load onto few workers.
        cpu_steering: bool = false,
        /// CPUs to run one pinned worker each on. Empty: every CPU this process may run on
        /// (its affinity mask, as `nproc` counts them, so taskset and cpusets are respected).
        cpus: Vec<usize> = Vec::new(),
        /// Datagrams received with one recvmmsg and answered with one sendmmsg (1..=1024).
        batch_size: usize = 32,
        /// SO_RCVBUF of each socket, in bytes (the kernel caps it at net.core.rmem_max unless
        /// running as root, and doubles it for bookkeeping). 4096..=1073741824.
        socket_recv_buffer: usize = 4 * 1024 * 1024,
        /// SO_SNDBUF of each socket, in bytes (capped at net.core.wmem_max unless root).
        /// 4096..=1073741824.
        socket_send_buffer: usize = 4 * 1024 * 1024,
    }
}

/// One listener's authentication override, in `auth.listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerAuthConfig {
    /// The listen address this applies to, exactly as written in `server.listen`.
    pub listen: String,
    /// "none", "optional" or "required".
    pub policy: String,
    /// "long-term" or "short-term"; `auth.mechanism` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
}

section! {
    /// Authentication (RFC 8489 §9). Off by default: a public STUN server answers everyone.
    /// Users and secrets can live here or, better, in `credentials_file` (mode 0600).
    /// SIGHUP reloads this section (and the credentials file) without restarting workers.
    Auth "auth" {
        /// Policy of every listener not named in `listeners`: "none" (credentials are not
        /// checked), "optional" (checked when a request carries them: 401 when wrong, an unsigned
        /// answer when absent) or "required" (every request must authenticate).
        policy: String = "none".into(),
        /// "long-term" (REALM/NONCE challenge, static users and TURN REST users; what TURN
        /// clients speak) or "short-term" (USERNAME + password, no challenge; ICE-style).
        mechanism: String = "long-term".into(),
        /// Per-listener overrides, e.g.
        /// `[{ listen = "0.0.0.0:3479", policy = "required", mechanism = "short-term" }]`;
        /// `listen` must be one of `server.listen`.
        listeners: Vec<ListenerAuthConfig> = Vec::new(),
        /// REALM of long-term credentials (RECOMMENDED: the provider's domain name). Fewer than
        /// 128 characters, no `"` or `\`. Part of every key: changing it invalidates them all.
        realm: String = "stunedge".into(),
        /// Seconds a nonce stays valid (10..=86400). Expired nonces get 438 and a fresh one.
        nonce_lifetime: u64 = 600,
        /// Secret that nonces are MACed with, at least 16 bytes. Every node of a fleet that
        /// must accept each other's nonces needs the same one. Empty: a random secret for this
        /// process (nonces are then valid only here, until restart).
        nonce_secret: String = String::new(),
        /// PASSWORD-ALGORITHMS offered in challenges, in preference order: "sha256", "md5".
        /// Empty offers none (RFC 5389 behaviour, MD5 keys only) and saves 12 bytes per challenge.
        password_algorithms: Vec<String> = vec!["sha256".into(), "md5".into()],
        /// Accept USERHASH (anonymous usernames, RFC 8489 §14.4) for `long_term_users`.
        userhash: bool = true,
        /// A TOML file with any of `nonce_secret`, `short_term_users`, `long_term_users`,
        /// `rest_secrets` (merged with the ones here; a user in both is an error). A relative
        /// path is relative to this configuration file. A warning is logged when others can
        /// read it.
        credentials_file: String = String::new(),
        /// Short-term users: `{ "alice" = "password" }`.
        short_term_users: BTreeMap<String, String> = BTreeMap::new(),
        /// Long-term users: `{ "alice" = "password" }`. Keys are derived at load time.
        long_term_users: BTreeMap<String, String> = BTreeMap::new(),
        /// TURN REST API shared secrets (coturn `static-auth-secret`): usernames
        /// `"<unix expiry>:<user>"` with password base64(HMAC-SHA1(secret, username)). List
        /// several to rotate; any of them is accepted.
        rest_secrets: Vec<String> = Vec::new(),
    }
}

/// The credentials file's contents (`auth.credentials_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CredentialsFile {
    nonce_secret: String,
    short_term_users: BTreeMap<String, String>,
    long_term_users: BTreeMap<String, String>,
    rest_secrets: Vec<String>,
}

section! {
    /// RFC 5780 NAT behaviour discovery: off unless `alternate_ips` names an address. Then the
    /// one `server.listen` address of each alternate IP's family is the primary, and stunedge
    /// listens on all four of primary/alternate IP × primary/alternate port; answers carry
    /// OTHER-ADDRESS and RESPONSE-ORIGIN, and CHANGE-REQUEST, RESPONSE-PORT and PADDING are
    /// honoured. Answers grow to 68 bytes (IPv4) / 116 (IPv6) for a 20-byte request: only
    /// turn it on for nodes meant for NAT discovery. Without it, CHANGE-REQUEST gets 420.
    Rfc5780 "rfc5780" {
        /// The alternate IP addresses, at most one per address family, e.g. `["192.0.2.2"]`.
        /// Each needs exactly one `server.listen` address of its family, on a concrete IP (not
        /// `0.0.0.0` or `[::]`) other than itself.
        alternate_ips: Vec<String> = Vec::new(),
        /// The alternate port (not the primary's). 0 picks a free one (tests).
        alternate_port: u16 = 3479,
    }
}

section! {
    /// The admin HTTP endpoint (/metrics, /healthz, /readyz) and the stop sequence.
    Admin "admin" {
        /// Address of the admin endpoint, `"IP:port"`. Keep it off public addresses: it is
        /// unauthenticated. Empty: no admin endpoint (no metrics, no health checks).
        listen: String = "127.0.0.1:9478".into(),
        /// Seconds to keep answering after SIGTERM while /readyz says 503, so load balancers
        /// and health-checking DNS move traffic away before the node stops (0..=3600). SIGINT,
        /// or a second SIGTERM, stops at once.
        drain_seconds: u64 = 0,
    }
}

section! {
    /// Logging (to stderr).
    Log "log" {
        /// One of "error", "warn", "info", "debug", "trace". At "debug" each worker's counters
        /// (including every drop reason) are logged every 10 seconds.
        level: String = "info".into(),
    }
}

/// The whole configuration file. Every section and field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: Server,
    /// `[io]`
    pub io: Io,
    /// `[auth]`
    pub auth: Auth,
    /// `[rfc5780]`
    pub rfc5780: Rfc5780,
    /// `[admin]`
    pub admin: Admin,
    /// `[log]`
    pub log: Log,
    /// The file this was read from (for the permission check of secrets).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// A configuration problem: which field, what value, what is wrong. One line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line` for syntax and type errors found while parsing; empty otherwise.
    pub location: String,
    /// Which field: a path (`io.batch_size`, `server.listen[1]`), or a file name.
    pub field: String,
    /// The offending value, as written (empty when not applicable).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.field, self.value, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError { location: String::new(), field: field.into(), value: value.to_string(), reason: reason.into() }
}

/// Which data-plane backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when [`crate::io::uring::probe`] succeeds, else mmsg.
    Auto,
    /// io_uring or nothing.
    IoUring,
    /// recvmmsg / sendmmsg.
    Mmsg,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen addresses, in order, without duplicates.
    pub listen: Vec<SocketAddr>,
    /// Data-plane backend.
    pub backend: BackendChoice,
    /// How the io_uring backend sends.
    pub uring_send: crate::io::uring::SendMode,
    /// How the io_uring rings run completion work.
    pub uring_taskrun: crate::io::uring::TaskRun,
    /// Attach the CPU-steering reuseport program.
    pub cpu_steering: bool,
    /// CPUs to pin one worker each to.
    pub cpus: Vec<usize>,
    /// Datagrams per receive/send batch.
    pub batch_size: usize,
    /// SO_RCVBUF request.
    pub socket_recv_buffer: usize,
    /// SO_SNDBUF request.
    pub socket_send_buffer: usize,
    /// How each listener answers, in `listen` order (reloadable).
    pub handlers: Vec<HandlerConfig>,
    /// RFC 5780 groups: each adds three sockets to its primary listen address.
    pub nat: Vec<NatPlan>,
    /// Log level.
    pub log_level: tracing::Level,
    /// Admin endpoint address; `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// How long to drain after SIGTERM.
    pub drain: std::time::Duration,
    /// Things worth a warning that are not errors (world-readable secrets, a random nonce
    /// secret), logged once logging is up.
    pub warnings: Vec<String>,
}

/// One RFC 5780 group as configured: a primary listen address and its alternate IP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatPlan {
    /// Index of the primary in [`Settings::listen`].
    pub primary: usize,
    /// The alternate IP address.
    pub alternate_ip: IpAddr,
    /// The alternate port; 0 = any free one.
    pub alternate_port: u16,
}

const BUFFER_RANGE: std::ops::RangeInclusive<usize> = 4096..=(1 << 30);

impl Config {
    /// Parses TOML text; `origin` names the source in errors (a file name).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let (line, field, value) = locate(text, span.start.min(text.len()));
                    if is_secret_field(&field) {
                        // Never echo a password or secret, not even a mistyped one.
                        let reason = redact_quoted(&message);
                        return ConfigError {
                            location: format!("{origin}:{line}"),
                            field,
                            value: String::new(),
                            reason,
                        };
                    }
                    ConfigError { location: format!("{origin}:{line}"), field, value, reason: message }
                }
                None => invalid(origin, "", message),
            }
        })
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), "", format!("cannot read: {e}")))?;
        let mut config = Config::from_toml(&text, &path.display().to_string())?;
        config.origin = Some(path.to_path_buf());
        Ok(config)
    }

    /// Checks every field; `allowed_cpus` is the process's affinity mask.
    pub fn validate(&self, allowed_cpus: &[usize]) -> Result<Settings, ConfigError> {
        let mut listen = Vec::new();
        if self.server.listen.is_empty() {
            return Err(invalid("server.listen", "[]", "at least one address is needed"));
        }
        for (i, text) in self.server.listen.iter().enumerate() {
            let field = format!("server.listen[{i}]");
            let addr: SocketAddr = text
                .parse()
                .map_err(|_| invalid(&field, format!("{text:?}"), "not an IP:port address (IPv6 as \"[::1]:3478\")"))?;
            if listen.contains(&addr) {
                return Err(invalid(&field, format!("{text:?}"), "listed twice"));
            }
            listen.push(addr);
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
            for (i, cpu) in self.io.cpus.iter().enumerate() {
                if !allowed_cpus.contains(cpu) {
                    return Err(invalid(
                        format!("io.cpus[{i}]"),
                        cpu,
                        format!("not a CPU this process may run on (allowed: {})", cpu_list(allowed_cpus)),
                    ));
                }
                if self.io.cpus[..i].contains(cpu) {
                    return Err(invalid(format!("io.cpus[{i}]"), cpu, "listed twice"));
                }
            }
            self.io.cpus.clone()
        };
        let backend = match self.io.backend.as_str() {
            "auto" => BackendChoice::Auto,
            "io_uring" => BackendChoice::IoUring,
            "mmsg" => BackendChoice::Mmsg,
            other => {
                return Err(invalid("io.backend", format!("{other:?}"), "must be \"auto\", \"io_uring\" or \"mmsg\""));
            }
        };
        let uring_send = match self.io.uring_send.as_str() {
            "sqe" => crate::io::uring::SendMode::Sqe,
            "sendmmsg" => crate::io::uring::SendMode::Sendmmsg,
            other => return Err(invalid("io.uring_send", format!("{other:?}"), "must be \"sqe\" or \"sendmmsg\"")),
        };
        let uring_taskrun = match self.io.uring_taskrun.as_str() {
            "defer" => crate::io::uring::TaskRun::Defer,
            "coop" => crate::io::uring::TaskRun::Coop,
            other => return Err(invalid("io.uring_taskrun", format!("{other:?}"), "must be \"defer\" or \"coop\"")),
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
        let log_level = self.log.level.parse().map_err(|_| {
            invalid("log.level", format!("{:?}", self.log.level), "must be error, warn, info, debug or trace")
        })?;
        let admin_listen = match self.admin.listen.as_str() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid("admin.listen", format!("{text:?}"), "not an IP:port address (empty disables the endpoint)")
            })?),
        };
        if self.admin.drain_seconds > 3600 {
            return Err(invalid("admin.drain_seconds", self.admin.drain_seconds, "must be between 0 and 3600"));
        }
        let mut warnings = Vec::new();
        if admin_listen.is_some_and(|a| !a.ip().is_loopback()) {
            warnings.push(format!(
                "admin.listen = {:?} is not a loopback address: the endpoint has no authentication",
                self.admin.listen
            ));
        }
        let auth = self.validate_auth(&listen, &mut warnings)?;
        let nat = self.validate_rfc5780(&listen)?;
        let handlers = auth
            .into_iter()
            .map(|auth| HandlerConfig {
                software: self.server.software.clone(),
                response_origin: self.server.response_origin,
                rfc3489_classic: self.server.rfc3489_classic,
                auth,
                rfc5780: None,
            })
            .collect();
        Ok(Settings {
            listen,
            backend,
            uring_send,
            uring_taskrun,
            cpu_steering: self.io.cpu_steering,
            cpus,
            batch_size: self.io.batch_size,
            socket_recv_buffer: self.io.socket_recv_buffer,
            socket_send_buffer: self.io.socket_send_buffer,
            handlers,
            nat,
            log_level,
            admin_listen,
            drain: std::time::Duration::from_secs(self.admin.drain_seconds),
            warnings,
        })
    }

    /// Validates `[rfc5780]`: each alternate IP pairs with the one concrete listen address of
    /// its family.
    fn validate_rfc5780(&self, listen: &[SocketAddr]) -> Result<Vec<NatPlan>, ConfigError> {
        let r = &self.rfc5780;
        let mut plans: Vec<NatPlan> = Vec::new();
        for (i, text) in r.alternate_ips.iter().enumerate() {
            let field = format!("rfc5780.alternate_ips[{i}]");
            let bad = |why: &str| invalid(&field, format!("{text:?}"), why);
            let ip: IpAddr = text.parse().map_err(|_| bad("not an IP address"))?;
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
            plans.push(NatPlan { primary, alternate_ip: ip, alternate_port: r.alternate_port });
        }
        Ok(plans)
    }

    /// Validates `[auth]` and the credentials file; returns each listener's authentication.
    fn validate_auth(
        &self,
        listen: &[SocketAddr],
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Option<ListenerAuth>>, ConfigError> {
        let a = &self.auth;
        let default_policy = parse_policy("auth.policy", &a.policy)?;
        let default_mechanism = parse_mechanism("auth.mechanism", &a.mechanism)?;
        let mut per_listener: Vec<(Policy, Mechanism)> = vec![(default_policy, default_mechanism); listen.len()];
        let mut named = vec![false; listen.len()];
        for (i, l) in a.listeners.iter().enumerate() {
            let field = format!("auth.listeners[{i}]");
            let addr: Option<SocketAddr> = l.listen.parse().ok();
            let Some(at) = listen.iter().position(|x| Some(*x) == addr) else {
                return Err(invalid(format!("{field}.listen"), format!("{:?}", l.listen), "not one of server.listen"));
            };
            if named[at] {
                return Err(invalid(format!("{field}.listen"), format!("{:?}", l.listen), "listed twice"));
            }
            named[at] = true;
            let mechanism = match &l.mechanism {
                Some(m) => parse_mechanism(&format!("{field}.mechanism"), m)?,
                None => default_mechanism,
            };
            per_listener[at] = (parse_policy(&format!("{field}.policy"), &l.policy)?, mechanism);
        }

        let realm = &a.realm;
        if realm.is_empty()
            || realm.chars().count() >= 128
            || realm.len() > MAX_TEXT
            || realm.chars().any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(invalid(
                "auth.realm",
                format!("{realm:?}"),
                "must be 1 to 127 characters without '\"', '\\' or control characters",
            ));
        }
        if !(10..=86_400).contains(&a.nonce_lifetime) {
            return Err(invalid("auth.nonce_lifetime", a.nonce_lifetime, "must be between 10 and 86400 seconds"));
        }
        let mut password_algorithms = Vec::new();
        for (i, name) in a.password_algorithms.iter().enumerate() {
            let field = format!("auth.password_algorithms[{i}]");
            let algorithm = match name.as_str() {
                "md5" => Algorithm::Md5,
                "sha256" => Algorithm::Sha256,
                _ => return Err(invalid(field, format!("{name:?}"), "must be \"sha256\" or \"md5\"")),
            };
            if password_algorithms.contains(&algorithm) {
                return Err(invalid(field, format!("{name:?}"), "listed twice"));
            }
            password_algorithms.push(algorithm);
        }

        // Secrets: from this file and from the credentials file, never both for one name.
        let mut file = CredentialsFile::default();
        if !a.credentials_file.is_empty() {
            let named = Path::new(&a.credentials_file);
            let path = match self.origin.as_deref().and_then(Path::parent) {
                Some(dir) if named.is_relative() => dir.join(named),
                _ => named.to_path_buf(),
            };
            let path = path.as_path();
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("auth.credentials_file", format!("{path:?}"), format!("cannot read: {e}")))?;
            file = toml::from_str(&text).map_err(|e| {
                let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                // The message names the key; values (secrets) are left out.
                ConfigError {
                    location: format!("{}:{line}", path.display()),
                    field: "auth.credentials_file".into(),
                    value: String::new(),
                    reason: redact_quoted(&e.message().replace('\n', " ")),
                }
            })?;
            if world_readable(path) {
                warnings.push(format!("{} holds secrets and others can read it; chmod 600 it", path.display()));
            }
        }
        let in_config = !a.nonce_secret.is_empty()
            || !a.short_term_users.is_empty()
            || !a.long_term_users.is_empty()
            || !a.rest_secrets.is_empty();
        if let (true, Some(origin)) = (in_config, &self.origin) {
            if world_readable(origin) {
                warnings.push(format!("{} holds secrets and others can read it; chmod 600 it", origin.display()));
            }
        }
        let short_term = merge_users("short_term_users", &a.short_term_users, &file.short_term_users)?;
        let long_term = merge_users("long_term_users", &a.long_term_users, &file.long_term_users)?;
        let mut rest_secrets = a.rest_secrets.clone();
        rest_secrets.extend(file.rest_secrets.iter().cloned());
        if rest_secrets.iter().any(String::is_empty) {
            return Err(invalid("auth.rest_secrets", "", "an empty secret is not a secret"));
        }
        let nonce_secret = match (a.nonce_secret.is_empty(), file.nonce_secret.is_empty()) {
            (false, false) => {
                return Err(invalid("auth.nonce_secret", "", "set both here and in the credentials file"));
            }
            (false, true) => a.nonce_secret.as_bytes().to_vec(),
            (true, false) => file.nonce_secret.as_bytes().to_vec(),
            (true, true) => Vec::new(),
        };
        if !nonce_secret.is_empty() && nonce_secret.len() < 16 {
            return Err(invalid("auth.nonce_secret", "", "must be at least 16 bytes"));
        }

        let any_long_term = per_listener.iter().any(|&(p, m)| p != Policy::None && m == Mechanism::LongTerm);
        for (i, &(policy, mechanism)) in per_listener.iter().enumerate() {
            if policy == Policy::None {
                continue;
            }
            let (users, name) = match mechanism {
                Mechanism::ShortTerm => (&short_term, "short_term_users"),
                Mechanism::LongTerm => (&long_term, "long_term_users"),
            };
            if users.is_empty() && rest_secrets.is_empty() {
                return Err(invalid(
                    "auth.policy",
                    format!("listener {}", listen[i]),
                    format!("authentication is on but there are no auth.{name} and no auth.rest_secrets"),
                ));
            }
        }
        if per_listener.iter().all(|&(p, _)| p == Policy::None) {
            return Ok(vec![None; listen.len()]);
        }
        let nonce_secret = if nonce_secret.is_empty() {
            if any_long_term {
                warnings.push(
                    "auth.nonce_secret is empty: nonces are valid only in this process; \
                     set one shared secret on every node of a fleet"
                        .into(),
                );
            }
            process_secret().to_vec()
        } else {
            nonce_secret
        };
        let settings = AuthSettings {
            realm: realm.clone(),
            nonce_secret,
            nonce_lifetime: a.nonce_lifetime as u32,
            password_algorithms,
            userhash: a.userhash,
            short_term,
            long_term,
            rest_secrets,
        };
        let authenticator = Arc::new(Authenticator::new(&settings));
        Ok(per_listener
            .into_iter()
            .map(|(policy, mechanism)| {
                (policy != Policy::None).then(|| ListenerAuth {
                    policy,
                    mechanism,
                    authenticator: authenticator.clone(),
                })
            })
            .collect())
    }

    /// The commented TOML that `stunedge --print-config` prints: every field with its doc
    /// comment and its value in `self` (the defaults, for the committed file).
    pub fn to_commented_toml(&self) -> String {
        let mut out = String::from(
            "# stunedge configuration. Every field is optional; the values below are the defaults.\n\
             # Generated by `stunedge --print-config`; CI checks that configs/stunedge.toml matches.\n",
        );
        let sections = [
            (Server::KEY, Server::DOC, self.server.fields()),
            (Io::KEY, Io::DOC, self.io.fields()),
            (Auth::KEY, Auth::DOC, self.auth.fields()),
            (Rfc5780::KEY, Rfc5780::DOC, self.rfc5780.fields()),
            (Admin::KEY, Admin::DOC, self.admin.fields()),
            (Log::KEY, Log::DOC, self.log.fields()),
        ];
        for (key, doc, fields) in sections {
            out.push('\n');
            for line in doc {
                let _ = writeln!(out, "#{line}");
            }
            let _ = writeln!(out, "[{key}]");
            for field in fields {
                for line in field.doc {
                    let _ = writeln!(out, "#{line}");
                }
                let _ = writeln!(out, "{} = {}", field.key, field.value);
            }
        }
        out
    }
}

fn parse_policy(field: &str, value: &str) -> Result<Policy, ConfigError> {
    match value {
        "none" => Ok(Policy::None),
        "optional" => Ok(Policy::Optional),
        "required" => Ok(Policy::Required),
        _ => Err(invalid(field, format!("{value:?}"), "must be \"none\", \"optional\" or \"required\"")),
    }
}

fn parse_mechanism(field: &str, value: &str) -> Result<Mechanism, ConfigError> {
    match value {
        "long-term" => Ok(Mechanism::LongTerm),
        "short-term" => Ok(Mechanism::ShortTerm),
        _ => Err(invalid(field, format!("{value:?}"), "must be \"long-term\" or \"short-term\"")),
    }
}

/// Users from the config and the credentials file, checked: names 1..=513 bytes without control
/// characters, passwords not empty, no name in both. Errors name the user, never the password.
fn merge_users(
    key: &str,
    here: &BTreeMap<String, String>,
    file: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(here.len() + file.len());
    for (name, password) in here.iter().chain(file) {
        let field = format!("auth.{key}");
        if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
            return Err(invalid(
                field,
                format!("{name:?}"),
                "user names are 1 to 513 bytes without control characters",
            ));
        }
        if password.is_empty() {
            return Err(invalid(field, format!("{name:?}"), "empty password"));
        }
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(invalid(field, format!("{name:?}"), "defined both in the config and in the credentials file"));
        }
        out.push((name.clone(), password.clone()));
    }
    Ok(out)
}

/// Whether users other than the owner may read `path` (mode bits o+r).
fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// A random nonce secret for this process, read once from the kernel's generator (reloads keep
/// it, so nonces survive a SIGHUP).
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        use std::io::Read;
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret));
        if read.is_err() {
            // No /dev/urandom: fall back to the std hasher's per-process random keys.
            use std::hash::{BuildHasher, Hasher};
            for chunk in secret.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(chunk.as_ptr() as usize);
                chunk.copy_from_slice(&h.finish().to_ne_bytes());
            }
        }
        secret
    })
}

/// Whether a field path holds passwords or secrets (its values are never echoed in errors).
fn is_secret_field(field: &str) -> bool {
    field.starts_with("auth.") && (field.contains("secret") || field.contains("users"))
}

/// `message` with the text of every double-quoted string replaced by `…`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

/// The line number, field path (`section.key`) and value text of the TOML line holding byte
/// `at`, so parse errors name the field as validation errors do.
fn locate(text: &str, at: usize) -> (usize, String, String) {
    let line = text[..at].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("").trim();
    let section = text[..at]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match line_text.split_once('=') {
        Some((key, value)) => {
            let key = key.trim();
            let field = section.map_or_else(|| key.to_string(), |s| format!("{s}.{key}"));
            (line, field, value.trim().to_string())
        }
        None => (line, line_text.to_string(), String::new()),
    }
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
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, ConfigError> {
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
            ok.nat,
            [
                NatPlan { primary: 1, alternate_ip: "2001:db8::2".parse().unwrap(), alternate_port: 3479 },
                NatPlan { primary: 0, alternate_ip: "192.0.2.2".parse().unwrap(), alternate_port: 3479 },
            ]
        );
        assert!(check("").unwrap().nat.is_empty(), "off by default");
        let err = |listen: &str, rfc: &str| {
            check(&format!("[server]\nlisten = {listen}\n[rfc5780]\n{rfc}\n")).unwrap_err().to_string()
        };
        let one = "[\"192.0.2.1:3478\"]";
        assert_eq!(err(one, "alternate_ips = [\"nope\"]"), "rfc5780.alternate_ips[0] = \"nope\": not an IP address");
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
    fn printed_config_parses_back_to_defaults() {
        let text = Config::default().to_commented_toml();
        assert_eq!(Config::from_toml(&text, "printed").unwrap(), Config::default());
        // Every field carries its doc comment.
        assert!(text.contains("# Datagrams received with one recvmmsg"));
        assert!(text.contains("listen = [\"0.0.0.0:3478\", \"[::]:3478\"]"));
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
        assert_eq!(e.to_string(), "io.backend = \"dpdk\": must be \"auto\", \"io_uring\" or \"mmsg\"");
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
    fn auth_errors_name_the_field_and_never_a_secret() {
        let e = check("[auth]\npolicy = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.policy = \"sometimes\": must be \"none\", \"optional\" or \"required\"");
        let e = check("[auth]\nrest_secrets = \"hunter2-rest\"\n").unwrap_err();
        assert_eq!(e.field, "auth.rest_secrets");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = check("[auth.long_term_users]\nalice = 7\nbob = \"hunter2\"\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = check("[auth]\npolicy = \"required\"\nlong_term_users = { alice = \"\" }\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.long_term_users = \"alice\": empty password");
        let e = check("[auth]\npolicy = \"required\"\n").unwrap_err();
        assert!(e.reason.contains("no auth.long_term_users and no auth.rest_secrets"), "{e}");
        let e = check("[auth]\nnonce_secret = \"short\"\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.nonce_secret: must be at least 16 bytes");
        let e = check("[auth]\npassword_algorithms = [\"sha256\", \"sha1\"]\n").unwrap_err();
        assert_eq!(e.field, "auth.password_algorithms[1]");
        let e = check("[auth]\nlisteners = [{ listen = \"10.0.0.1:1\", policy = \"required\" }]\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.listeners[0].listen = \"10.0.0.1:1\": not one of server.listen");
        let e = check("[auth]\nrealm = \"a\\\"b\"\n").unwrap_err();
        assert_eq!(e.field, "auth.realm");
        let e = check("[auth]\nnonce_lifetime = 5\n").unwrap_err();
        assert_eq!(e.field, "auth.nonce_lifetime");
        // Debug output of validated settings never shows a password.
        let s = check("[auth]\npolicy = \"required\"\nlong_term_users = { alice = \"hunter2\" }\n").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            redact_quoted("invalid type: string \"x\", expected \"y\""),
            "invalid type: string \"…\", expected \"…\""
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[]), "");
    }
}
