//! The typed TOML configuration: every field has a default and a doc comment (which
//! `--print-config` turns into the commented default file, `configs/stunedge.toml`), unknown
//! fields are errors, and [`Config::validate`] turns it into [`Settings`] or an error that names
//! the field and the bad value. Read at start (and on reload), never on the packet path.
//!
//! - `schema`: the sections, their defaults and docs; typed fields reject bad values while parsing.
//! - `validate`: what serde cannot check, into [`Settings`]; `auth`: the `[auth]` section and
//!   the credentials file; `limit`: the `[limit]` section, the limiter it builds and the
//!   amplification warnings.
//! - `print`: `--print-config`; `error`: [`ConfigError`] and where a parser error is.
//! - `reload`: what a SIGHUP may change ([`Settings::reload_plan`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::handler::HandlerConfig;

mod auth;
mod error;
mod limit;
mod print;
mod reload;
mod schema;
mod stream;
mod turn_lb;
mod validate;
mod xdp;

pub use error::ConfigError;
pub use reload::{RefusedReload, ReloadPlan};
pub use schema::{
    Admin, Auth, BackendChoice, Io, LbAuth, Limit, ListenerAuthConfig, Log, LogLevel, ProbeName, Rfc5780, Server,
    Stream, TurnBackend, TurnLb, Xdp, XdpMode,
};

use error::invalid;

/// The whole configuration file. Every section and field is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// `[limit]`
    pub limit: Limit,
    /// `[turn_lb]`
    pub turn_lb: TurnLb,
    /// `[xdp]`
    pub xdp: Xdp,
    /// `[stream]`
    pub stream: Stream,
    /// `[admin]`
    pub admin: Admin,
    /// `[log]`
    pub log: Log,
    /// The file this was read from (for the permission check of secrets).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
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
    pub rfc5780: Vec<Rfc5780Plan>,
    /// The reflection defence every handler holds a clone of: the rules of `[limit]` and a
    /// table of `limit.table_size` keys (a reload keeps the running server's table).
    pub limit: crate::limit::Limit,
    /// Log level.
    pub log_level: tracing::Level,
    /// Admin endpoint address; `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token `/metrics` requires (`admin.metrics_token_file`; reloadable).
    pub metrics_token: Option<crate::auth::bearer::MetricsToken>,
    /// How long to drain after SIGTERM.
    pub drain: std::time::Duration,
    /// The XDP fast path: where and how to attach, and the listen addresses it may answer.
    pub xdp: XdpPlan,
    /// STUN over TCP and TLS (`[stream]`).
    pub stream: StreamPlan,
    /// Things worth a warning that are not errors (world-readable secrets, a random nonce
    /// secret), logged once logging is up.
    pub warnings: Vec<String>,
}

/// The XDP fast path as configured (`[xdp]`): off when `interfaces` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpPlan {
    /// The interfaces to attach to, in order, without duplicates.
    pub interfaces: Vec<String>,
    /// How to attach.
    pub mode: Option<XdpMode>,
    /// The listen addresses on the UDP ports whose every listener answers the plain Binding
    /// request with the bare success: the only destinations the program may answer (in
    /// `server.listen` order, without duplicates).
    pub listen: Vec<SocketAddr>,
}

/// The stream plane (`[stream]`): its listeners, their answer settings, its limits and the
/// TLS identity.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    /// Every stream listener: its address and transport (TCP or TLS), TCP ones first.
    pub listeners: Vec<(SocketAddr, crate::lb::Transport)>,
    /// Each listener's answer settings, in `listeners` order (no reflection limits, no RFC
    /// 5780 mode; the transport set).
    pub handlers: Vec<HandlerConfig>,
    /// Threads.
    pub threads: usize,
    /// CPUs to pin thread i to (`cpus[i % len]`); empty: not pinned.
    pub cpus: Vec<usize>,
    /// Caps and timeouts.
    pub limits: StreamLimits,
    /// The certificate and key, when there are TLS listeners.
    pub tls: Option<TlsIdentity>,
    /// The reflection defence of `[limit]`, for its deny lists only: a denied source's
    /// connection is closed on accept (`denied`).
    pub deny: crate::limit::Limit,
}

/// The stream plane's caps and timeouts (`[stream]`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamLimits {
    /// Open connections at most (TCP and TLS).
    pub max_connections: usize,
    /// Open TLS connections at most.
    pub max_tls_connections: usize,
    /// Open connections per source /32 or /64 (loopback exempt).
    pub max_per_prefix: usize,
    /// TLS handshakes in progress per thread.
    pub max_handshakes: usize,
    /// A TLS handshake's time.
    pub handshake_timeout: std::time::Duration,
    /// From the connection (TLS: its handshake's end) to the first whole message.
    pub first_message_timeout: std::time::Duration,
    /// Without a whole message.
    pub idle_timeout: std::time::Duration,
    /// Messages per second per connection.
    pub messages_per_second: u32,
    /// Messages at once before the rate applies.
    pub message_burst: u32,
    /// The largest message in bytes.
    pub max_message: usize,
}

/// A TLS certificate chain and its key, checked to match, and where they were read from.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// The chain and the signing key.
    pub key: std::sync::Arc<rustls::sign::CertifiedKey>,
    /// The certificate file.
    pub certificate: PathBuf,
}

/// One RFC 5780 group as configured: a primary listen address and its alternate IP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5780Plan {
    /// Index of the primary in [`Settings::listen`].
    pub primary: usize,
    /// The alternate IP address.
    pub alternate_ip: IpAddr,
    /// The alternate port; 0 = any free one.
    pub alternate_port: u16,
}

impl Config {
    /// Parses TOML text; `origin` names the source in errors (a file name).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| error::parse_error(text, origin, &e))
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), "", format!("cannot read: {e}")))?;
        let mut config = Config::from_toml(&text, &path.display().to_string())?;
        config.origin = Some(path.to_path_buf());
        Ok(config)
    }
}
