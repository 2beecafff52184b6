//! The reflection defence, sans-IO: response rate limiting keyed on the prefix an answer goes
//! to, leak and hard cap, the amplification cap, and the allow and deny lists. The handler asks
//! [`Limit::denied`] before parsing a datagram, [`Limit::decide`] once it knows what class of
//! answer it would send, and [`Limit::room`] for the largest answer it may send. Time is a
//! parameter (a millisecond clock the worker reads once per batch). Nothing here allocates,
//! locks or makes a system call per packet; the [`Table`] is allocated once and shared by all
//! workers (SO_REUSEPORT spreads one victim over every worker by source port, so per-worker
//! tables would give a victim one budget per worker).
//!
//! The budgets ([`Params`]): an answer class ([`AnswerClass`]: Binding success, or errors and
//! challenges) has a rate per IPv4 /32 and IPv6 /128, multiplied for the enclosing prefixes
//! (IPv4 /24, /20, /18; IPv6 /64, /56, /48, [`IPV4_LEVELS`], [`IPV6_LEVELS`]); an answer passes
//! when every level has room, and then counts at every level. A prefix may burst
//! `burst_seconds` × its rate after being idle. Over budget, one request in `leak` gets the
//! minimal answer, from a separate leak budget sized so that a prefix never receives more
//! than it would at `hard_cap` × its rate of requests: the reflected output plateaus, however
//! large the attack. See docs/reflection.md for the numbers and how they behave under attack.

pub mod prefix;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use self::prefix::{Cidr, CidrError, PrefixSet};
use self::prefix::{canonical_bits, mask};
pub use self::table::{Decay, Table};
use self::table::{Key, LIMIT};
use crate::counters::DropReason;
pub use crate::counters::{AnswerClass, LimitAction};

/// The prefix lengths an IPv4 destination is limited at, narrowest first.
pub const IPV4_LEVELS: [u8; 4] = [32, 24, 20, 18];
/// The prefix lengths an IPv6 destination is limited at, narrowest first.
pub const IPV6_LEVELS: [u8; 4] = [128, 64, 56, 48];
/// The level index [`Decision::level`] names for the allowlist budget.
pub const ALLOW_LEVEL: usize = 4;
/// Milliseconds per tick of the table's clock.
pub const TICK_MS: u64 = 16;
/// The smallest Binding success: header and XOR-MAPPED-ADDRESS (IPv4, IPv6). Always allowed.
pub const BARE_SUCCESS: [usize; 2] = [32, 44];

/// What the limiter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Limit: over-budget answers are leaked or dropped.
    #[default]
    Enforce,
    /// Decide and count as `enforce` would (`would_leak`, `would_drop`), but answer everything.
    DryRun,
    /// No rate limiting (the amplification cap and the deny list still apply).
    Off,
}

impl Mode {
    /// Its name in the configuration and the `stunedge_limit_mode` metric.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
            Mode::Off => "off",
        }
    }
}

/// Every knob of the reflection defence, as configured (`[limit]`; the defaults are
/// [`Params::default`]). Checked by the configuration, turned into [`Rules`] by [`Rules::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Enforce, dry-run or off.
    pub mode: Mode,
    /// Binding success answers per second to one IPv4 /32 or IPv6 /128.
    pub rate: u32,
    /// Error and challenge answers (400, 401, 420, 438) per second to one /32 or /128.
    pub error_rate: u32,
    /// After an idle spell a prefix may receive `burst_seconds` × its rate at once; also the
    /// time constant of the decay.
    pub burst_seconds: f64,
    /// Multipliers of the rates for IPv4 /24, /20 and /18.
    pub ipv4_multipliers: [u32; 3],
    /// Multipliers of the rates for IPv6 /64, /56 and /48.
    pub ipv6_multipliers: [u32; 3],
    /// Over budget, answer one request in `leak` with the minimal answer (0: never).
    pub leak: u32,
    /// A prefix never receives more answers than it would at `hard_cap` × its rate of
    /// requests (at least 1).
    pub hard_cap: u32,
    /// The largest answer ÷ request size ratio (0: no cap). The bare Binding success is
    /// always allowed.
    pub max_amplification: f64,
    /// The same on RFC 5780 listeners (their answers carry OTHER-ADDRESS and RESPONSE-ORIGIN).
    pub rfc5780_max_amplification: f64,
    /// A request that authenticated with a valid long-term nonce (bound to its source) skips
    /// the per-prefix budget.
    pub exempt_nonce: bool,
    /// Requests from 127.0.0.0/8 and ::1 (which the kernel never accepts from a network
    /// interface) skip the per-prefix budget.
    pub exempt_loopback: bool,
    /// Prefixes with their own, separate budget of `allow_rate` answers per second per entry;
    /// they do not count towards enclosing prefixes.
    pub allow: Vec<Cidr>,
    /// The budget of one allowlist entry, answers per second.
    pub allow_rate: u32,
    /// Sources dropped before parsing.
    pub deny: Vec<Cidr>,
    /// Also drop sources that cannot send real traffic: port 0, 0.0.0.0/8, multicast,
    /// 240.0.0.0/4, ::, ff00::/8, and the server's own listening addresses.
    pub deny_bogons: bool,
    /// The table's size in keys (rounded up to a power of two of 8-key, 64-byte lines).
    pub table_size: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            mode: Mode::Enforce,
            rate: 400,
            error_rate: 20,
            burst_seconds: 2.5,
            ipv4_multipliers: [32, 256, 768],
            ipv6_multipliers: [4, 16, 64],
            leak: 2,
            hard_cap: 4,
            max_amplification: 3.0,
            rfc5780_max_amplification: 6.0,
            exempt_nonce: true,
            exempt_loopback: true,
            allow: Vec::new(),
            allow_rate: 4000,
            deny: Vec::new(),
            deny_bogons: true,
            table_size: 524_288,
        }
    }
}

impl Params {
    /// Everything off: no limit, no cap, no deny list (the bare handler's behaviour; what a
    /// [`Limit::default`] has).
    pub fn off() -> Params {
        Params {
            mode: Mode::Off,
            max_amplification: 0.0,
            rfc5780_max_amplification: 0.0,
            deny_bogons: false,
            ..Params::default()
        }
    }

    /// The budget, answers per second, of `class` at `level` of a family (`v4`).
    pub fn rate_at(&self, class: AnswerClass, v4: bool, level: usize) -> f64 {
        let base = match class {
            AnswerClass::Success => self.rate,
            AnswerClass::Error => self.error_rate,
        } as f64;
        let multipliers = if v4 { self.ipv4_multipliers } else { self.ipv6_multipliers };
        base * if level == 0 { 1 } else { multipliers[level - 1] } as f64
    }

    /// The leak budget of `class` at `level`: what fills the gap between the rate and what the
    /// prefix would get at `hard_cap` × the rate of requests, one answer in `leak`.
    pub fn leak_rate_at(&self, class: AnswerClass, v4: bool, level: usize) -> f64 {
        if self.leak == 0 {
            return 0.0;
        }
        self.rate_at(class, v4, level) * (self.hard_cap.max(1) - 1) as f64 / self.leak as f64
    }
}

/// The cost of one answer at a level with budget `rate`: a key at the table's [`LIMIT`] is over,
/// and a steady `rate` settles exactly there. Rounded up: errors lean towards limiting.
fn price(rate: f64, burst_seconds: f64) -> u64 {
    let burst = rate * burst_seconds;
    // Less than one answer per burst (or NaN): never passes (the configuration refuses it).
    if burst.is_nan() || burst < 1.0 { LIMIT + 1 } else { ((LIMIT as f64 / burst).ceil() as u64).max(1) }
}

/// Namespaces within a prefix's line: each class's budget and leak budget, the allowlist.
const NS_BUDGET: u8 = 0;
const NS_LEAK: u8 = 2;
const NS_ALLOW: u8 = 4;

/// [`Params`] turned into what the packet path reads: prices, the decay, the prefix sets.
/// Immutable; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct Rules {
    params: Params,
    decay: Decay,
    /// `[class][family][level]`.
    prices: [[[u64; 4]; 2]; 2],
    leak_prices: [[[u64; 4]; 2]; 2],
    allow_price: u64,
    allow: PrefixSet,
    deny: PrefixSet,
    /// The server's listening ports: a request from one of them, at the address it was sent
    /// to, is the server talking to itself (a spoofed loop).
    own_ports: Vec<u16>,
}

impl Rules {
    /// The rules of `params` on a server listening on `own_ports`.
    pub fn new(params: Params, own_ports: Vec<u16>) -> Rules {
        let tau_ticks = params.burst_seconds * 1000.0 / TICK_MS as f64;
        let mut prices = [[[0; 4]; 2]; 2];
        let mut leak_prices = [[[0; 4]; 2]; 2];
        for (c, class) in AnswerClass::ALL.iter().enumerate() {
            for (f, v4) in [true, false].into_iter().enumerate() {
                for level in 0..4 {
                    prices[c][f][level] = price(params.rate_at(*class, v4, level), params.burst_seconds);
                    leak_prices[c][f][level] = price(params.leak_rate_at(*class, v4, level), params.burst_seconds);
                }
            }
        }
        Rules {
            decay: Decay::new(tau_ticks),
            prices,
            leak_prices,
            allow_price: price(params.allow_rate as f64, params.burst_seconds),
            allow: PrefixSet::new(&params.allow),
            deny: PrefixSet::new(&params.deny),
            own_ports,
            params,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The decay (for the occupancy the exporter reports).
    pub fn decay(&self) -> &Decay {
        &self.decay
    }
}

/// The shared, long-lived part: the table and the log throttle. Created once per server and
/// kept across reloads.
#[derive(Debug)]
pub struct Shared {
    /// The load table.
    pub table: Table,
    /// The tick of the last "limited" log line (0: none yet).
    last_log: AtomicU64,
}

impl Shared {
    /// A table of `entries` keys.
    pub fn new(entries: usize) -> Shared {
        Shared { table: Table::new(entries), last_log: AtomicU64::new(0) }
    }
}

/// The limiter one listener uses: the rules (reloadable) and the shared table.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The rules.
    pub rules: Arc<Rules>,
    /// The table and log throttle, shared by every listener and worker.
    pub shared: Arc<Shared>,
}

impl Default for Limit {
    /// Everything off ([`Params::off`]), with a one-line table.
    fn default() -> Limit {
        Limit { rules: Arc::new(Rules::new(Params::off(), Vec::new())), shared: Arc::new(Shared::new(0)) }
    }
}

/// The limiter's answer for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: LimitAction,
    /// For a leak or a drop (also would-be ones), the level that was over budget (an index
    /// into [`IPV4_LEVELS`] / [`IPV6_LEVELS`], or [`ALLOW_LEVEL`]).
    pub level: usize,
    /// Whether this decision should be logged: the first limited answer after the log
    /// period, for the whole table (at most one line per [`LOG_PERIOD_MS`]).
    pub log: bool,
}

/// At most one "limited" log line per this many milliseconds, for the whole table.
pub const LOG_PERIOD_MS: u64 = 30_000;

impl Decision {
    const fn new(action: LimitAction) -> Decision {
        Decision { action, level: 0, log: false }
    }
}

/// The family index of an address: 0 for IPv4 (and IPv4-mapped IPv6), 1 for IPv6.
#[inline]
pub fn family(ip: IpAddr) -> usize {
    usize::from(!canonical_bits(ip).1)
}

impl Limit {
    /// The limiter with `rules` on `shared`.
    pub fn new(rules: Arc<Rules>, shared: Arc<Shared>) -> Limit {
        Limit { rules, shared }
    }

    /// Whether rate limiting is on (`enforce` or `dry-run`): its decisions are counted.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.rules.params.mode != Mode::Off
    }

    /// Why a datagram from `src`, received on `local`, is dropped before it is parsed: the
    /// configured deny list, or (with `deny_bogons`) a source that cannot send real traffic.
    #[inline]
    pub fn denied(&self, src: SocketAddr, local: SocketAddr) -> Option<DropReason> {
        let rules = &*self.rules;
        if rules.params.deny_bogons {
            if src.port() == 0 {
                return Some(DropReason::DeniedPortZero);
            }
            let (b, v4) = canonical_bits(src.ip());
            let bogon = if v4 {
                // 0.0.0.0/8 ("this network"), 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved,
                // and the limited broadcast address): RFC 6890.
                let top = (b >> 24) as u8;
                top == 0 || top >= 224
            } else {
                // :: (unspecified) and ff00::/8 (multicast): RFC 4291.
                b == 0 || b >> 120 == 0xFF
            };
            if bogon {
                return Some(DropReason::DeniedBogon);
            }
            if src.ip().to_canonical() == local.ip().to_canonical() && rules.own_ports.contains(&src.port()) {
                return Some(DropReason::DeniedOwnAddress);
            }
        }
        if !rules.deny.is_empty() && rules.deny.contains(src.ip()) {
            return Some(DropReason::DeniedListed);
        }
        None
    }

    /// The largest answer allowed to a request of `request_len` bytes from a `family`
    /// ([`family`]) source, on an RFC 5780 listener or not: `max_amplification` × the
    /// request, but never less than the bare Binding success.
    #[inline]
    pub fn room(&self, request_len: usize, family: usize, rfc5780: bool) -> usize {
        let p = &self.rules.params;
        let ratio = if rfc5780 { p.rfc5780_max_amplification } else { p.max_amplification };
        if ratio <= 0.0 {
            return usize::MAX;
        }
        ((ratio * request_len as f64) as usize).max(BARE_SUCCESS[family])
    }

    /// Whether an answer of `class` may go to `src` at `now_ms` (the worker's millisecond
    /// clock). `routable`: the request proved it can receive at its source (a valid nonce).
    /// `draw`: bits that differ between requests (the transaction ID), mixed with the table's
    /// random key for the 1-in-`leak` draw.
    #[inline(always)]
    pub fn decide(&self, class: AnswerClass, src: IpAddr, routable: bool, now_ms: u64, draw: u64) -> Decision {
        if self.rules.params.mode == Mode::Off {
            return Decision::new(LimitAction::Pass);
        }
        self.decide_on(class, src, routable, now_ms, draw)
    }

    /// [`Limit::decide`] when rate limiting is on: out of line, so that a listener with it off
    /// pays one comparison.
    #[inline(never)]
    fn decide_on(&self, class: AnswerClass, src: IpAddr, routable: bool, now_ms: u64, draw: u64) -> Decision {
        let rules = &*self.rules;
        let p = &rules.params;
        let (bits, v4) = canonical_bits(src);
        if (routable && p.exempt_nonce) || (p.exempt_loopback && is_loopback(bits, v4)) {
            return Decision::new(LimitAction::Exempt);
        }
        let table = &self.shared.table;
        let now = now_ms / TICK_MS;
        let c = class as usize;
        let f = usize::from(!v4);
        if !rules.allow.is_empty() {
            if let Some(entry) = rules.allow.lookup(src) {
                let (network, _) = canonical_bits(entry.addr());
                let key =
                    table.key(0x1_0000 | (f as u64) << 8 | entry.prefix_len() as u64, network).namespaced(NS_ALLOW);
                if self.admit(&[key], &[rules.allow_price], now).is_ok() {
                    return Decision::new(LimitAction::Allowlisted);
                }
                return self.limited(LimitAction::Drop, ALLOW_LEVEL, now);
            }
        }
        let (levels, width) = if v4 { (&IPV4_LEVELS, 32) } else { (&IPV6_LEVELS, 128) };
        let keys: [Key; 4] =
            std::array::from_fn(|i| table.key((f as u64) << 8 | levels[i] as u64, bits & mask(levels[i], width)));
        let budget = keys.map(|k| k.namespaced(NS_BUDGET + c as u8));
        let Err(level) = self.admit(&budget, &rules.prices[c][f], now) else {
            return Decision::new(LimitAction::Pass);
        };
        // Over budget at `level`: one in `leak`, within the leak budget, gets a minimal answer.
        let leaked = p.leak > 0
            && table.hash(0x2_0000, (draw ^ now) as u128).is_multiple_of(p.leak as u64)
            && self.admit(&keys.map(|k| k.namespaced(NS_LEAK + c as u8)), &rules.leak_prices[c][f], now).is_ok();
        self.limited(if leaked { LimitAction::Leak } else { LimitAction::Drop }, level, now)
    }

    /// A limited decision at `level`, turned into its dry-run twin when not enforcing, and
    /// marked for logging when the log period has passed (one CAS, only on limited answers).
    fn limited(&self, action: LimitAction, level: usize, now: u64) -> Decision {
        let action = match (self.rules.params.mode, action) {
            (Mode::DryRun, LimitAction::Leak) => LimitAction::WouldLeak,
            (Mode::DryRun, _) => LimitAction::WouldDrop,
            _ => action,
        };
        let last = &self.shared.last_log;
        let then = last.load(Ordering::Relaxed);
        let log = (then == 0 || now >= then + LOG_PERIOD_MS / TICK_MS)
            && last.compare_exchange(then, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok();
        Decision { action, level, log }
    }

    /// Knot's two phases over every level (one level for an allowlist entry): read-only, stop
    /// at the first level over budget (so a limited prefix writes nothing); then, when all have
    /// room, charge them all. The level over budget is the error.
    #[inline]
    fn admit<const N: usize>(&self, keys: &[Key; N], prices: &[u64; N], now: u64) -> Result<(), usize> {
        let (table, decay) = (&self.shared.table, &self.rules.decay);
        let mut probes = [None; N];
        for (level, slot) in probes.iter_mut().enumerate() {
            let probe = table.probe(keys[level], now, decay);
            if probe.load + prices[level] > LIMIT {
                return Err(level);
            }
            *slot = Some(probe);
        }
        for (level, probe) in probes.into_iter().enumerate() {
            if let Some(probe) = probe {
                table.charge(keys[level], probe, prices[level], now, decay);
            }
        }
        Ok(())
    }

    /// The prefix that `level` of `src` names, for a log line.
    pub fn level_prefix(src: IpAddr, level: usize) -> String {
        let (bits, v4) = canonical_bits(src);
        let (levels, width) = if v4 { (&IPV4_LEVELS, 32) } else { (&IPV6_LEVELS, 128) };
        let Some(&len) = levels.get(level) else { return format!("{src} (allowlist entry)") };
        let network = bits & mask(len, width);
        let ip = if v4 { IpAddr::V4((network as u32).into()) } else { IpAddr::V6(network.into()) };
        format!("{ip}/{len}")
    }
}

/// 127.0.0.0/8 or ::1.
#[inline]
fn is_loopback(bits: u128, v4: bool) -> bool {
    if v4 { bits >> 24 == 127 } else { bits == 1 }
}

#[cfg(test)]
mod tests;
