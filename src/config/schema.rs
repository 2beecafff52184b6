//! The TOML schema: one struct per section, every field with its default and the doc comment
//! that `--print-config` prints above it. Fields are typed (addresses, enums), so serde rejects a
//! bad value while parsing, with the reason validation used to give and the parser's location.
//! What serde cannot check (duplicates, ranges, fields that depend on each other) is left to
//! [`Config::validate`](super::Config::validate); nothing here reads files.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::{Algorithm, Mechanism, Policy};
use crate::io::uring::{SendMode, TaskRun};
use crate::lb::{HashKey, NoBackend, ProbeSettings};
use crate::limit::{Cidr, Mode, Params};

/// One field's documentation, for `--print-config`.
pub(super) struct FieldDoc {
    pub(super) key: &'static str,
    pub(super) doc: &'static [&'static str],
    pub(super) value: toml::Value,
}

macro_rules! section {
    ($(#[doc = $sdoc:literal])* $name:ident $key:literal {
        $( $(#[doc = $doc:literal])* $(#[serde($($serde:tt)*)])* $field:ident : $ty:ty = $default:expr, )*
    }) => {
        $(#[doc = $sdoc])*
        // PartialEq only: `[limit]` has f64 fields.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* $(#[serde($($serde)*)])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            pub(super) const KEY: &'static str = $key;
            pub(super) const DOC: &'static [&'static str] = &[$($sdoc),*];

            /// Each field's key, doc comment and value, in declaration order. The section is
            /// serialised as a whole so that the fields' serde attributes apply.
            pub(super) fn fields(&self) -> Vec<FieldDoc> {
                let mut table = match toml::Value::try_from(self) {
                    Ok(toml::Value::Table(table)) => table,
                    other => unreachable!("a config section serialises to a TOML table, not {other:?}"),
                };
                vec![$( FieldDoc {
                    key: stringify!($field),
                    doc: &[$($doc),*],
                    value: table.remove(stringify!($field)).expect("every field of a section is serialised"),
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
        #[serde(deserialize_with = "listen_addrs")]
        listen: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 3478)), SocketAddr::from(([0u16; 8], 3478))],
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
        backend: BackendChoice = BackendChoice::Auto,
        /// How the io_uring backend sends answers: "sqe" (one SEND submission per answer with
        /// the address in it, SENDMSG where PKTINFO is needed, submitted with the next wait) or
        /// "sendmmsg" (one sendmmsg(2) per socket per loop turn). See bench/results for the
        /// measurements behind the default.
        uring_send: SendMode = SendMode::Sendmmsg,
        /// When the kernel runs a ring's completion work: "defer" (IORING_SETUP_DEFER_TASKRUN,
        /// Linux 6.1: only while the worker waits for completions) or "coop"
        /// (IORING_SETUP_COOP_TASKRUN, 5.19: at the worker's next entry into the kernel, without
        /// interrupting it). Both with SINGLE_ISSUER. "coop" measured faster in most runs
        /// (median 1.08×; bench/results/2026-11-26-levers.md).
        uring_taskrun: TaskRun = TaskRun::Coop,
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
    pub policy: Policy,
    /// "long-term" or "short-term"; `auth.mechanism` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Mechanism>,
}

section! {
    /// Authentication (RFC 8489 §9). Off by default: a public STUN server answers everyone.
    /// Users and secrets can live here or, better, in `credentials_file` (mode 0600).
    /// SIGHUP reloads this section (and the credentials file) without restarting workers.
    Auth "auth" {
        /// Policy of every listener not named in `listeners`: "none" (credentials are not
        /// checked), "optional" (checked when a request carries them: 401 when wrong, an unsigned
        /// answer when absent) or "required" (every request must authenticate).
        policy: Policy = Policy::None,
        /// "long-term" (REALM/NONCE challenge, static users and TURN REST users; what TURN
        /// clients speak) or "short-term" (USERNAME + password, no challenge; ICE-style).
        mechanism: Mechanism = Mechanism::LongTerm,
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
        password_algorithms: Vec<Algorithm> = vec![Algorithm::Sha256, Algorithm::Md5],
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
        /// `"<unix expiry>:<user>"` (or the expiry alone) with password
        /// base64(HMAC-SHA1(secret, username)). List several to rotate; any of them is accepted.
        rest_secrets: Vec<String> = Vec::new(),
    }
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
        #[serde(deserialize_with = "ip_addrs")]
        alternate_ips: Vec<IpAddr> = Vec::new(),
        /// The alternate port (not the primary's). 0 picks a free one (tests).
        alternate_port: u16 = 3479,
    }
}

section! {
    /// The reflection defence. A spoofed request makes this server answer the address it
    /// forged, so each answer is counted against budgets of the prefixes it goes to (per answer
    /// class: Binding successes, and errors with challenges), limited in size relative to its
    /// request, and some sources are dropped unread. A budget is a rate per IPv4 /32 or IPv6 /128
    /// times a multiplier per enclosing prefix; an answer passes when every level has room. Over
    /// budget, a prefix receives at most rate × (1 + (hard_cap − 1) ÷ leak) answers per second
    /// however hard it is attacked (1000 Binding successes per /32 at the defaults).
    /// Reloadable with SIGHUP, except `table_size`.
    Limit "limit" {
        /// "enforce" (over-budget answers are dropped, or leaked, see `leak`), "dry-run" (decide
        /// and count as enforce would, as would_leak and would_drop, but answer everything: to
        /// size the budgets on live traffic first) or "off" (no rate limit; the amplification cap
        /// and the deny lists still apply; check-config warns).
        mode: Mode = Params::default().mode,
        /// Binding success answers per second to one IPv4 /32 or IPv6 /128 (1..=10000000). A
        /// client needs a few per minute (keepalives, ICE gathering), so 400 only limits floods;
        /// lower it on nodes that serve few clients per address.
        rate: u32 = Params::default().rate,
        /// Error and challenge answers (400, 401, 420, 438) per second to one /32 or /128
        /// (1..=10000000). A client needs one challenge per nonce lifetime; errors are what junk
        /// and spoofed challenges get, and challenges are the largest answers, hence 20.
        error_rate: u32 = Params::default().error_rate,
        /// Seconds of budget a prefix may use at once after being idle, and the time constant
        /// over which its count decays (0.1..=60). Longer forgives bursts (a NAT waking many
        /// clients) but lets an attack start with a larger burst; 2.5 s covers a client's ICE
        /// gathering at a busy NAT.
        burst_seconds: f64 = Params::default().burst_seconds,
        /// Multipliers of `rate` and `error_rate` for the enclosing IPv4 /24, /20 and /18: each
        /// at least 1, none smaller than the one before (a wider prefix never has a smaller
        /// budget). They stop an attack spread over a victim's network; the defaults give a /24
        /// 12800 successes per second, carrier-grade NATs included. Raise them for large
        /// NAT pools, or allowlist those (`allow`).
        ipv4_multipliers: [u32; 3] = Params::default().ipv4_multipliers,
        /// Multipliers for the enclosing IPv6 /64, /56 and /48, with the same rules. Smaller
        /// than IPv4's: a /64 is one subscriber's LAN, a /48 one site.
        ipv6_multipliers: [u32; 3] = Params::default().ipv6_multipliers,
        /// Over budget, one request in `leak` still gets the minimal answer (0..=100; 0: never),
        /// so a real client behind an attacked prefix keeps getting through; the leak has its
        /// own budget (see `hard_cap`). 2: every other request past the budget.
        leak: u32 = Params::default().leak,
        /// A prefix never receives more answers than requests at `hard_cap` × its rate would
        /// earn it (1..=100): the leak's budget is rate × (hard_cap − 1) ÷ leak, so what a victim
        /// receives stops growing with the attack. 1: no leak at all; 4 holds a victim at
        /// 2.5 × the rate with the default `leak`.
        hard_cap: u32 = Params::default().hard_cap,
        /// The largest answer ÷ request size ratio (0: no cap; otherwise 1..=100). A longer
        /// answer is trimmed (SOFTWARE first) or, if it still does not fit, dropped; the bare
        /// Binding success (32 bytes IPv4, 44 IPv6) is always allowed. 3 lets a 20-byte request
        /// get 60 bytes: enough for every answer of the default configuration; check-config
        /// warns when `server.software`, `server.response_origin` or a long-term challenge needs
        /// more.
        max_amplification: f64 = Params::default().max_amplification,
        /// The same on RFC 5780 listeners (0, or 1..=100), whose answers carry MAPPED-ADDRESS,
        /// RESPONSE-ORIGIN and OTHER-ADDRESS: 68 bytes (IPv4) or 116 (IPv6) for a 20-byte
        /// request, 5.8 × it, hence 6.
        rfc5780_max_amplification: f64 = Params::default().rfc5780_max_amplification,
        /// A request carrying a valid long-term nonce skips the rate limit: the nonce is bound
        /// to the source address and port, so the source has proved it receives there.
        exempt_nonce: bool = Params::default().exempt_nonce,
        /// Requests from 127.0.0.0/8 and ::1 skip the rate limit: the kernel never accepts them
        /// from a network interface, so they come from this host (health checks, tests).
        exempt_loopback: bool = Params::default().exempt_loopback,
        /// Prefixes with a budget of their own, `allow_rate` answers per second per entry,
        /// outside the per-prefix budgets (monitoring, a large NAT pool you know), e.g.
        /// `["198.51.100.0/24", "2001:db8:1::/48"]`; a bare address is a /32 or /128.
        #[serde(deserialize_with = "cidrs")]
        allow: Vec<Cidr> = Params::default().allow,
        /// The budget of one `allow` entry, answers per second (1..=10000000).
        allow_rate: u32 = Params::default().allow_rate,
        /// Sources dropped before parsing, written as `allow` is (counted as denied_listed).
        #[serde(deserialize_with = "cidrs")]
        deny: Vec<Cidr> = Params::default().deny,
        /// Also drop sources that cannot send real traffic: port 0, 0.0.0.0/8, multicast,
        /// 240.0.0.0/4, ::, ff00::/8, and this server's own address and listening ports (a
        /// spoofed loop between two servers).
        deny_bogons: bool = Params::default().deny_bogons,
        /// Keys in the table of recent load, shared by every worker (15..=268435456; rounded up
        /// to a power of two of 15-key lines of 128 bytes: the default 491520 is 4 MiB). Each
        /// prefix level a request touches is a key; when full, the lightest keys give way, so a
        /// flood of random sources never evicts a limited victim. Only a restart resizes it.
        table_size: usize = Params::default().table_size,
    }
}

/// One TURN backend, in `turn_lb.backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnBackend {
    /// Its name: the `backend` label of its metrics and the key that carries its health and
    /// counters across reloads. 1 to 64 characters of letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Its UDP TURN addresses, `"IP:port"`: one IPv4, one IPv6, or one of each. Each address is
    /// probed, and chosen for clients of its family, on its own.
    #[serde(deserialize_with = "listen_addrs")]
    pub udp: Vec<SocketAddr>,
    /// Its TURN-over-TCP addresses (`turn:…?transport=tcp`; stream.tcp listeners redirect
    /// there): at most one per family of `udp`. Empty: no TCP clients are sent to it. Each is
    /// probed with a TCP connect; while it is down, neither is any TCP client of its family.
    #[serde(default, deserialize_with = "listen_addrs")]
    pub tcp: Vec<SocketAddr>,
    /// Its TURN-over-TLS addresses (`turns:`; stream.tls listeners redirect there), as `tcp`
    /// (probed with a TCP connect too: no TLS handshake).
    /// Browsers drop the name after a redirect: its certificate must carry this IP address
    /// as a subject alternative name (docs/stream.md).
    #[serde(default, deserialize_with = "listen_addrs")]
    pub tls: Vec<SocketAddr>,
    /// Its share of the clients relative to the others (1..=1000).
    #[serde(default = "one")]
    pub weight: u32,
    /// Give it no new clients (its existing relays keep working: the balancer holds no state
    /// about them). Reload with SIGHUP to drain or undrain.
    #[serde(default)]
    pub drain: bool,
}

fn one() -> u32 {
    1
}

/// How `[turn_lb]` authenticates Allocates (`turn_lb.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbAuth {
    /// The 300 goes out before any challenge, unsigned.
    None,
    /// A 401 challenge first; the 300 is signed.
    LongTerm,
}

/// What the health probe sends (`turn_lb.probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeName {
    /// An Allocate without credentials, expecting 401.
    Allocate,
    /// An Allocate with the probe user's credentials, expecting a success.
    AllocateAuth,
    /// A Binding request.
    Binding,
}

section! {
    /// TURN load balancing: Allocate requests are answered with 300 (Try Alternate) and an
    /// ALTERNATE-SERVER naming one of `backends` (RFC 8489 §10, RFC 8656 §7.2): the client's
    /// backend by weighted rendezvous hashing over the healthy, non-draining backends of its
    /// address family, the same on every core and on every node with the same `seed` and
    /// backends. Binding is always answered here. Refresh, CreatePermission and ChannelBind get
    /// 437 (Allocation Mismatch); Send indications and ChannelData are dropped. The backends are
    /// probed from one thread (`probe`). Off by default; reloadable with SIGHUP (a bad reload
    /// keeps the running pool). docs/turn-lb.md explains it, configs/turn-lb.toml is an example.
    TurnLb "turn_lb" {
        /// Redirect Allocates on the listeners in `listeners`. Without it TURN requests get 400.
        enabled: bool = false,
        /// The listen addresses (as written in `server.listen`) that redirect; empty: all of them.
        #[serde(deserialize_with = "listen_addrs")]
        listeners: Vec<SocketAddr> = Vec::new(),
        /// "none": the 300 goes out before any challenge and unsigned, as coturn's
        /// `alternate-server` sends it (libwebrtc, Firefox, libnice and turnutils_uclient accept
        /// it; RFC 8489 §14.8 asks for a signed one). "long-term": the Allocate is challenged
        /// (401 with this node's stateless nonce), checked against `auth.long_term_users` or
        /// `auth.rest_secrets`, and the 300 is signed with MESSAGE-INTEGRITY(-SHA256). Costs the
        /// client one more round trip.
        auth: LbAuth = LbAuth::None,
        /// What identifies a client: "src_ip" (its IP address: all of a client's allocations go
        /// to one backend) or "src_ip_port" (address and port: spreads the users of one
        /// carrier-grade NAT address over the backends).
        hash_key: HashKey = HashKey::SourceIp,
        /// The prefix length IPv6 client addresses are cut to before hashing (0..=128): a /64 is
        /// one subnet, whose privacy addresses then share a backend.
        ipv6_prefix: u8 = crate::lb::DEFAULT_IPV6_PREFIX,
        /// The fleet's hash seed (any text; empty: a built-in one). Every node that must send a
        /// client to the same backend needs the same seed and backends; changing it moves most
        /// clients (only new allocations: existing relays are not affected).
        seed: String = String::new(),
        /// An Allocate when no backend of its family is up: "reject" (508 Insufficient
        /// Capacity: the client moves on to its next TURN server at once) or "drop".
        on_no_backend: NoBackend = NoBackend::Reject,
        /// Add the chosen backend's address of the other family as a second ALTERNATE-SERVER
        /// (RFC 8489 §10's SHOULD) when it has one that is up; left out when the amplification
        /// cap needs the room.
        other_family: bool = true,
        /// The health probe: "allocate" (an unauthenticated Allocate: 401 means up, 403
        /// draining), "allocate-auth" (an Allocate with `probe_username`: a success means up;
        /// the allocation is released at once) or "binding" (a Binding request; wrong for
        /// backends run with coturn's --no-stun). A backend's `tcp` and `tls` addresses are
        /// probed too, with a TCP connect (no TLS handshake), on the same interval, timeout,
        /// rise and fall.
        probe: ProbeName = ProbeName::Allocate,
        /// Seconds between two probes of one backend address, jittered by ±10 % (0.1..=3600).
        /// Keep it above 0.1 s per backend: coturn limits unauthenticated requests to 10 per
        /// second per source by default.
        probe_interval: f64 = ProbeSettings::default().interval.as_secs_f64(),
        /// Seconds a probe waits for its answer (0.01..=60, less than `probe_interval`).
        probe_timeout: f64 = ProbeSettings::default().timeout.as_secs_f64(),
        /// Passed probes in a row that bring a down backend back (1..=100).
        rise: u32 = ProbeSettings::default().rise,
        /// Failed probes in a row that take a backend down (1..=100). A dead backend stops
        /// getting clients within fall × probe_interval + probe_timeout seconds.
        fall: u32 = ProbeSettings::default().fall,
        /// The "allocate-auth" probe's user.
        probe_username: String = String::new(),
        /// The "allocate-auth" probe user's password (or set `probe_rest_secret`).
        probe_password: String = String::new(),
        /// A TURN REST secret the "allocate-auth" probe derives its password from
        /// (`<expiry>:<probe_username>`, RFC 7635-style), instead of `probe_password`.
        probe_rest_secret: String = String::new(),
        /// The backends, e.g. `[{ name = "turn-a", udp = ["192.0.2.10:3478",
        /// "[2001:db8::10]:3478"] }, { name = "turn-b", udp = ["192.0.2.11:3478"], weight = 2,
        /// drain = false }]`. Never this server's own addresses (a loop).
        backends: Vec<TurnBackend> = Vec::new(),
    }
}

/// How `[xdp]` attaches its program (`xdp.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// The driver's hook where the driver has one, else the generic one; a failure to attach
    /// is logged and the workers answer everything.
    Auto,
    /// The driver's hook (XDP_FLAGS_DRV_MODE) or a start-up error.
    Native,
    /// The generic hook (XDP_FLAGS_SKB_MODE, any interface, slower) or a start-up error.
    Generic,
}

section! {
    /// The XDP fast path: a BPF program on each listed interface answers the plain Binding
    /// request (no attributes, with the magic cookie: what browsers send) in the network
    /// driver's receive hook, with the same bytes the workers would send, before the kernel's
    /// UDP stack; everything else goes on to the workers untouched. Only the listen addresses
    /// of ports whose listeners all answer that request with the bare success are fast-pathed
    /// (no SOFTWARE, no RESPONSE-ORIGIN, no required credentials, no RFC 5780 mode). Off by default; needs
    /// CAP_BPF and CAP_NET_ADMIN. Restart to change.
    Xdp "xdp" {
        /// Interfaces to attach to, e.g. `["eth0"]`; empty: no XDP (the default).
        interfaces: Vec<String> = Vec::new(),
        /// "auto" (the driver's hook, else the generic one; if neither attaches, one log line
        /// says why and the workers answer everything), "native" or "generic" (that hook or a
        /// start-up error, exit 2).
        mode: XdpMode = XdpMode::Auto,
    }
}

section! {
    /// STUN over TCP and TLS (RFC 8489 §6.2.2–6.2.3; docs/stream.md): the same answers as UDP,
    /// one per message on the client's connection, TURN Allocates redirected to each backend's
    /// `tcp` or `tls` address. Served by their own threads (never one per connection, never the
    /// UDP workers'), with every connection bounded: the caps and timeouts below, each refusal
    /// and close counted by reason. The reflection limits do not apply (a connection's source
    /// cannot be spoofed); the caps per source prefix do. Listeners, threads and limits need a
    /// restart; the certificate is re-read on SIGHUP (a bad one keeps the running one).
    Stream "stream" {
        /// TCP listeners, `"IP:port"` (e.g. `["0.0.0.0:3478", "[::]:3478"]`); empty: none.
        /// Authentication and TURN balancing follow the `server.listen` entry of the same address
        /// if there is one (auth.listeners and turn_lb.listeners may name these addresses too).
        #[serde(deserialize_with = "listen_addrs")]
        tcp: Vec<SocketAddr> = Vec::new(),
        /// TLS listeners, `"IP:port"` (e.g. `["0.0.0.0:5349", "[::]:5349"]`); empty: none.
        /// TLS 1.3 and 1.2; ALPN `stun.turn` / `stun.nat-discovery` echoed when offered, never
        /// required.
        #[serde(deserialize_with = "listen_addrs")]
        tls: Vec<SocketAddr> = Vec::new(),
        /// PEM certificate chain for `tls` (relative to this file's directory), leaf first.
        certificate: String = String::new(),
        /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `certificate`; mode 0600 in production.
        private_key: String = String::new(),
        /// Threads serving every stream listener (1 to 64).
        threads: usize = 1,
        /// CPUs the stream threads are pinned to, thread i on `cpus[i % len]`. Empty: not
        /// pinned (anywhere in this process's affinity mask, so beside the UDP workers). For a
        /// connection flood to take nothing from the UDP path, give them CPUs of their own and
        /// leave those out of `io.cpus`.
        cpus: Vec<usize> = Vec::new(),
        /// Open connections at most, TCP and TLS together; at the cap the oldest connection that
        /// has not sent a whole message yet makes room (`evicted`), else the new one is closed
        /// at once (`global_cap`). Each costs ~5 KB of kernel memory, plus up to
        /// 2 × `max_message_size` + 16 KiB of buffers here (TLS: its session's, up to ~20 KB more).
        max_connections: usize = 20_000,
        /// Of `max_connections`, TLS ones at most (each up to ~25 KB more with its session);
        /// above `max_connections` it is `max_connections`.
        max_tls_connections: usize = 8_000,
        /// Open connections per source /32 (IPv4) or /64 (IPv6); loopback is exempt.
        max_connections_per_prefix: usize = 64,
        /// TLS handshakes in progress per thread at most (each ~100 µs of CPU to finish).
        max_handshakes: usize = 256,
        /// Seconds a TLS handshake may take.
        handshake_timeout: f64 = 5.0,
        /// Seconds from the connection (TLS: the handshake's end) to the first whole message.
        first_message_timeout: f64 = 5.0,
        /// Seconds without a whole message after which a connection is closed.
        idle_timeout: f64 = 60.0,
        /// Messages per second per connection; past `message_burst` the connection is not read
        /// until it may go on (TCP pushes back; nothing is lost).
        messages_per_second: u32 = 20,
        /// Messages a connection may send at once before `messages_per_second` applies.
        message_burst: u32 = 64,
        /// The largest message in bytes (64 to 2048); a longer one closes the connection.
        max_message_size: usize = 2048,
    }
}

section! {
    /// The admin HTTP endpoint (/metrics, /healthz, /readyz) and the stop sequence.
    Admin "admin" {
        /// Address of the admin endpoint, `"IP:port"`. Keep it off public addresses; off
        /// loopback, set metrics_token_file (a warning says so when it is empty). Empty: no
        /// admin endpoint (no metrics, no health checks).
        #[serde(with = "admin_listen")]
        listen: Option<SocketAddr> = Some(SocketAddr::from(([127, 0, 0, 1], 9478))),
        /// File holding a bearer token that /metrics then requires (`Authorization: Bearer
        /// <token>`, else 401); /healthz and /readyz stay open for probes. The file holds the
        /// token alone (printable ASCII, no spaces; surrounding whitespace and the final newline
        /// are ignored); mode 0600, a warning when others can read it. A relative path is taken
        /// from the configuration file's directory. Read at start and on every reload (SIGHUP),
        /// so a rotated token takes effect with a reload. Prometheus: `authorization: {
        /// credentials_file: <the same file> }`. Empty: /metrics needs no token.
        metrics_token_file: String = String::new(),
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
        level: LogLevel = LogLevel::Info,
    }
}

/// Which data-plane backend to run (`io.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when [`crate::io::uring::probe`] succeeds, else mmsg.
    Auto,
    /// io_uring or nothing.
    IoUring,
    /// recvmmsg / sendmmsg.
    Mmsg,
}

/// `log.level`, written in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Start, stop, reloads (the default).
    Info,
    /// Each worker's counters every 10 seconds.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    const ALL: [LogLevel; 5] = [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace];
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> tracing::Level {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// A setting written as one of a few names.
pub(super) trait Written: Copy {
    /// The name as written in the file.
    fn written(self) -> &'static str;
}

/// A TOML string turned into a `T` by `parse`; a string it rejects is the error `reason`.
///
/// The conversion runs inside the deserializer's `deserialize_str` call (as a visitor), not after
/// it: only errors raised there carry the span of the value itself, so that an error in an array
/// names the element (`server.listen[1]`), not the whole array.
struct Text<T> {
    parse: fn(&str) -> Option<T>,
    reason: Reason,
}

/// Why a string was rejected.
#[derive(Clone, Copy)]
enum Reason {
    /// As written.
    Says(&'static str),
    /// Not one of these names: `must be "a", "b" or "c"`.
    OneOf(&'static [&'static str]),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Says(text) => f.write_str(text),
            Reason::OneOf(names) => {
                f.write_str("must be ")?;
                for (i, name) in names.iter().enumerate() {
                    let sep = match i {
                        0 => "",
                        _ if i + 1 == names.len() => " or ",
                        _ => ", ",
                    };
                    write!(f, "{sep}\"{name}\"")?;
                }
                Ok(())
            }
        }
    }
}

impl<T> Clone for Text<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Text<T> {}

impl<'de, T> Visitor<'de> for Text<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What serde says for a String field, so type errors read as they did before typing.
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).ok_or_else(|| E::custom(self.reason))
    }
}

impl<'de, T> DeserializeSeed<'de> for Text<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

/// A TOML string turned into a `T` by its [`FromStr`](std::str::FromStr), whose error (which
/// names the text) is the reason. A visitor, like [`Text`], so that errors name the element.
struct Parsed<T>(PhantomData<fn() -> T>);

impl<T> Clone for Parsed<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Parsed<T> {}

impl<'de, T: std::str::FromStr<Err: fmt::Display>> Visitor<'de> for Parsed<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(|e: T::Err| {
            let message = e.to_string();
            // The configuration error shows the value already: leave out the parser's quote of it.
            let quoted = format!("\"{text}\"");
            E::custom(message.strip_prefix(&quoted).map_or(&*message, |rest| rest.trim_start_matches(':').trim_start()))
        })
    }
}

impl<'de, T: std::str::FromStr<Err: fmt::Display>> DeserializeSeed<'de> for Parsed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

/// A TOML array of strings, each turned into an item by the seed `S` ([`Text`] or [`Parsed`]).
struct List<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for List<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<S::Value>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self.0)? {
            out.push(item);
        }
        Ok(out)
    }
}

/// `s.parse()`, as an `Option`.
fn parsed<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

fn listen_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let each =
        Text { parse: parsed::<SocketAddr>, reason: Reason::Says("not an IP:port address (IPv6 as \"[::1]:3478\")") };
    d.deserialize_seq(List(each))
}

fn ip_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    d.deserialize_seq(List(Text { parse: parsed::<IpAddr>, reason: Reason::Says("not an IP address") }))
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    d.deserialize_seq(List(Parsed(PhantomData)))
}

/// `admin.listen`: an address, or `""` for none.
mod admin_listen {
    use super::*;

    pub(super) fn serialize<S: Serializer>(listen: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match listen {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        d.deserialize_str(Text {
            parse: |s| if s.is_empty() { Some(None) } else { parsed(s).map(Some) },
            reason: Reason::Says("not an IP:port address (empty disables the endpoint)"),
        })
    }
}

/// Serde for an enum written as one of a few names; any other string is an error that lists
/// them (`must be "a", "b" or "c"`). The impls live here, not beside the types (in `auth` and `io`),
/// because the names and the messages are the configuration file's.
macro_rules! choice {
    ($ty:ty, { $($variant:path = $name:literal),+ $(,)? }) => {
        impl Written for $ty {
            fn written(self) -> &'static str {
                match self {
                    $($variant => $name,)+
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.written())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(Text {
                    parse: |s| match s {
                        $($name => Some($variant),)+
                        _ => None,
                    },
                    reason: Reason::OneOf(&[$($name),+]),
                })
            }
        }
    };
}

choice!(BackendChoice, {
    BackendChoice::Auto = "auto",
    BackendChoice::IoUring = "io_uring",
    BackendChoice::Mmsg = "mmsg",
});

choice!(SendMode, {
    SendMode::Sqe = "sqe",
    SendMode::Sendmmsg = "sendmmsg",
});

choice!(TaskRun, {
    TaskRun::Defer = "defer",
    TaskRun::Coop = "coop",
});

choice!(Policy, {
    Policy::None = "none",
    Policy::Optional = "optional",
    Policy::Required = "required",
});

choice!(Mechanism, {
    Mechanism::LongTerm = "long-term",
    Mechanism::ShortTerm = "short-term",
});

choice!(Mode, {
    Mode::Enforce = "enforce",
    Mode::DryRun = "dry-run",
    Mode::Off = "off",
});

choice!(LbAuth, {
    LbAuth::None = "none",
    LbAuth::LongTerm = "long-term",
});

choice!(HashKey, {
    HashKey::SourceIp = "src_ip",
    HashKey::SourceAddress = "src_ip_port",
});

choice!(NoBackend, {
    NoBackend::Reject = "reject",
    NoBackend::Drop = "drop",
});

choice!(ProbeName, {
    ProbeName::Allocate = "allocate",
    ProbeName::AllocateAuth = "allocate-auth",
    ProbeName::Binding = "binding",
});

choice!(XdpMode, {
    XdpMode::Auto = "auto",
    XdpMode::Native = "native",
    XdpMode::Generic = "generic",
});

choice!(Algorithm, {
    Algorithm::Sha256 = "sha256",
    Algorithm::Md5 = "md5",
});

impl Written for LogLevel {
    fn written(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.written())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // tracing's own parser, as before typing: it also takes "INFO" and "1".."5".
        d.deserialize_str(Text {
            parse: |s| {
                let level = s.parse::<tracing::Level>().ok()?;
                LogLevel::ALL.into_iter().find(|&l| tracing::Level::from(l) == level)
            },
            reason: Reason::Says("must be error, warn, info, debug or trace"),
        })
    }
}
