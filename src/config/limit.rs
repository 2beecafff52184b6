//! The `[limit]` section: its ranges and the rules between its fields, the [`Params`] it
//! stands for and the limiter ([`limit::Limit`]) every listener gets, and the warnings for
//! settings that make an answer to a small request larger than the amplification cap allows
//! (`server.software`, `server.response_origin`, a long-term challenge's `auth.realm` and
//! `auth.password_algorithms`). The sizes come from the wire format; whether an answer fits is
//! [`limit::Limit::room`]'s rule, the one the handler applies.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::error::invalid;
use super::{Config, ConfigError, Limit, Rfc5780Plan};
use crate::auth::Mechanism;
use crate::auth::nonce::NONCE_LEN;
use crate::handler::ListenerAuth;
use crate::limit::table::LIMIT;
use crate::limit::{self, AnswerClass, BARE_SUCCESS, IPV4_LEVELS, IPV6_LEVELS, Mode, Params, Rules, Shared};
use crate::stun::header::padded;
use crate::stun::registry::{ATTR_HEADER_LEN, HEADER_LEN};

/// `rate`, `error_rate` and `allow_rate`, answers per second.
const RATES: RangeInclusive<u64> = 1..=10_000_000;

impl Limit {
    /// The section as the limiter's parameters, field for field (unchecked: that is
    /// [`Config::validate`]'s).
    pub fn params(&self) -> Params {
        // Destructured, so that a field added to either side without the other does not build.
        let Limit {
            mode,
            rate,
            error_rate,
            burst_seconds,
            ipv4_multipliers,
            ipv6_multipliers,
            leak,
            hard_cap,
            max_amplification,
            rfc5780_max_amplification,
            exempt_nonce,
            exempt_loopback,
            allow,
            allow_rate,
            deny,
            deny_bogons,
            table_size,
        } = self.clone();
        Params {
            mode,
            rate,
            error_rate,
            burst_seconds,
            ipv4_multipliers,
            ipv6_multipliers,
            leak,
            hard_cap,
            max_amplification,
            rfc5780_max_amplification,
            exempt_nonce,
            exempt_loopback,
            allow,
            allow_rate,
            deny,
            deny_bogons,
            table_size,
        }
    }
}

impl Config {
    /// Validates `[limit]` and builds the limiter: one table of `limit.table_size` keys for the
    /// whole server, and rules that know every port it listens on (`server.listen`, and the
    /// RFC 5780 alternate port when `rfc5780` has groups). `auth` is each listener's
    /// authentication, for the size of its challenge.
    pub(super) fn validate_limit(
        &self,
        listen: &[SocketAddr],
        rfc5780: &[Rfc5780Plan],
        auth: &[Option<ListenerAuth>],
        warnings: &mut Vec<String>,
    ) -> Result<limit::Limit, ConfigError> {
        let params = self.limit.params();
        check(&params)?;
        if params.mode == Mode::Off {
            warnings.push(
                "limit.mode = \"off\": reflection defence off: this node answers any spoofed source at full rate"
                    .into(),
            );
        }
        let mut own_ports: Vec<u16> = listen.iter().map(SocketAddr::port).collect();
        if !rfc5780.is_empty() {
            own_ports.push(self.rfc5780.alternate_port);
        }
        // Port 0 (a free port, in tests) is not known until bound; sources on port 0 are bogons.
        own_ports.retain(|&port| port != 0);
        own_ports.sort_unstable();
        own_ports.dedup();
        // A one-line stand-in: the server allocates the real table (`table_size`) once, at start
        // (`worker::Server::start`), so that `check-config` and every reload allocate nothing.
        let shared = Arc::new(Shared::new(0));
        let limit = limit::Limit::new(Arc::new(Rules::new(params, own_ports)), shared);
        self.amplification_warnings(listen, rfc5780, auth, &limit, warnings);
        Ok(limit)
    }

    /// Warnings where the configuration makes an answer to a small request larger than the
    /// cap of its listener (RFC 5780 listeners have their own): SOFTWARE (trimmed first),
    /// RESPONSE-ORIGIN, and the long-term 401 challenge (dropped when it does not fit without
    /// SOFTWARE).
    fn amplification_warnings(
        &self,
        listen: &[SocketAddr],
        rfc5780: &[Rfc5780Plan],
        auth: &[Option<ListenerAuth>],
        limit: &limit::Limit,
        warnings: &mut Vec<String>,
    ) {
        let p = limit.rules.params();
        let software = &self.server.software;
        let software = if software.is_empty() { 0 } else { attribute(software.len()) };
        for rfc in [false, true] {
            let members: Vec<usize> =
                (0..listen.len()).filter(|&i| rfc5780.iter().any(|g| g.primary == i) == rfc).collect();
            if members.is_empty() {
                continue;
            }
            let (field, ratio) = if rfc {
                ("limit.rfc5780_max_amplification", p.rfc5780_max_amplification)
            } else {
                ("limit.max_amplification", p.max_amplification)
            };
            if ratio == 0.0 {
                warnings.push(format!("{field} = 0: no amplification cap; a spoofed request gets its whole answer"));
                continue;
            }
            // The warning for an answer of `size` bytes to a `family` source that a bare
            // request may not get: what makes it that large, and what smaller requests get.
            let over = |answer: &str, size: usize, family: usize, cause: &str, gets: &str| {
                let smallest = (HEADER_LEN..=size).find(|&n| limit.room(n, family, rfc) >= size)?;
                (smallest > HEADER_LEN).then(|| {
                    format!(
                        "{answer} is {size} bytes ({cause}): requests under {smallest} bytes get {gets} with \
                         {field} = {ratio} (a bare {HEADER_LEN}-byte request needs {})",
                        // The ratio it needs, rounded up to a tenth: size × 10 ÷ 20.
                        size.div_ceil(2) as f64 / 10.0
                    )
                })
            };
            for (family, name) in ["IPv4", "IPv6"].into_iter().enumerate() {
                if !members.iter().any(|&i| limit::family(listen[i].ip()) == family) {
                    continue;
                }
                // Past XOR-MAPPED-ADDRESS (the bare success's one address attribute): RFC 5780's
                // MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS, or RESPONSE-ORIGIN when
                // configured.
                let address = BARE_SUCCESS[family] - HEADER_LEN;
                let origin = if self.server.response_origin && !rfc { address } else { 0 };
                let bare = BARE_SUCCESS[family] + if rfc { 3 * address } else { origin };
                let answer = format!("a Binding success to {name}");
                if software > 0 {
                    let cause = format!("server.software adds {software}");
                    warnings.extend(over(&answer, bare + software, family, &cause, "it without SOFTWARE"));
                }
                if origin > 0 {
                    let cause = format!("server.response_origin adds {origin}");
                    warnings.extend(over(&answer, bare, family, &cause, "it without RESPONSE-ORIGIN"));
                }
            }
            if members.iter().any(|&i| auth[i].as_ref().is_some_and(|a| a.mechanism == Mechanism::LongTerm)) {
                let (realm, algorithms) = (&self.auth.realm, self.auth.password_algorithms.len());
                // Header, ERROR-CODE with an empty reason, REALM, NONCE, PASSWORD-ALGORITHMS (4
                // bytes per algorithm, none with parameters).
                let challenge = HEADER_LEN
                    + attribute(4)
                    + attribute(realm.len())
                    + attribute(NONCE_LEN)
                    + if algorithms == 0 { 0 } else { attribute(4 * algorithms) };
                let cause = format!("auth.realm {realm:?}, {algorithms} password_algorithms");
                // Larger than an address-carrying answer of either family: the family is moot.
                let warning = over("a 401 challenge", challenge, 0, &cause, "no challenge").or_else(|| {
                    let cause = format!("{cause}, server.software adds {software}");
                    over("a 401 challenge", challenge + software, 0, &cause, "it without SOFTWARE")
                });
                warnings.extend(warning);
            }
        }
    }
}

/// The ranges of `[limit]`'s fields and the rules between them.
fn check(p: &Params) -> Result<(), ConfigError> {
    for (field, value, range) in [
        ("rate", u64::from(p.rate), RATES),
        ("error_rate", p.error_rate.into(), RATES),
        ("allow_rate", p.allow_rate.into(), RATES),
        ("leak", p.leak.into(), 0..=100),
        ("hard_cap", p.hard_cap.into(), 1..=100),
        ("table_size", p.table_size as u64, 15..=1 << 28),
    ] {
        within(field, value, range)?;
    }
    within("burst_seconds", p.burst_seconds, 0.1..=60.0)?;
    for (field, ratio) in
        [("max_amplification", p.max_amplification), ("rfc5780_max_amplification", p.rfc5780_max_amplification)]
    {
        // NaN and the infinities are outside the range too.
        if ratio != 0.0 && !(1.0..=100.0).contains(&ratio) {
            return Err(invalid(format!("limit.{field}"), ratio, "must be 0 (no cap) or between 1 and 100"));
        }
    }
    for (field, v4, multipliers, widest) in [
        ("ipv4_multipliers", true, p.ipv4_multipliers, IPV4_LEVELS[3]),
        ("ipv6_multipliers", false, p.ipv6_multipliers, IPV6_LEVELS[3]),
    ] {
        for (i, &m) in multipliers.iter().enumerate() {
            let element = || format!("limit.{field}[{i}]");
            if m == 0 {
                return Err(invalid(element(), m, "must be at least 1"));
            }
            if let Some(before) = i.checked_sub(1).map(|j| multipliers[j]).filter(|&before| m < before) {
                return Err(invalid(
                    element(),
                    m,
                    format!(
                        "must be at least limit.{field}[{}] = {before}: a wider prefix never has a smaller budget",
                        i - 1
                    ),
                ));
            }
        }
        // The widest prefix has the largest budget (the leak's included); the table must be
        // able to count a burst of it (a price of at least 1 per answer under the admission
        // limit of its 28-bit loads).
        let burst = AnswerClass::ALL
            .iter()
            .map(|&class| p.rate_at(class, v4, 3).max(p.leak_rate_at(class, v4, 3)))
            .fold(0.0, f64::max)
            * p.burst_seconds;
        if burst > LIMIT as f64 {
            return Err(invalid(
                format!("limit.{field}"),
                format!("{multipliers:?}"),
                format!(
                    "a /{widest} could burst {burst:.0} answers, more than the table counts ({LIMIT}); \
                     lower the multipliers, the rates or burst_seconds"
                ),
            ));
        }
    }
    // Every budget must allow at least one answer per burst: below that its price is over the
    // table's limit and the class (or the leak) would never pass.
    let leaks = p.leak > 0 && p.hard_cap > 1;
    let narrowest = [
        ("rate", Some(p.rate_at(AnswerClass::Success, true, 0))),
        ("error_rate", Some(p.rate_at(AnswerClass::Error, true, 0))),
        ("leak", leaks.then(|| p.leak_rate_at(AnswerClass::Error, true, 0))),
        ("allow_rate", Some(p.allow_rate.into())),
    ];
    for (field, rate) in narrowest.into_iter().filter_map(|(f, r)| Some((f, r?))) {
        let burst = rate * p.burst_seconds;
        if burst < 1.0 {
            return Err(invalid(
                format!("limit.{field}"),
                format!("{burst}"),
                "with limit.burst_seconds, less than one answer per burst: nothing would ever pass; \
                 raise it or burst_seconds",
            ));
        }
    }
    let allow_burst = f64::from(p.allow_rate) * p.burst_seconds;
    if allow_burst > LIMIT as f64 {
        return Err(invalid(
            "limit.allow_rate",
            p.allow_rate,
            format!("an allowlist entry could burst {allow_burst:.0} answers, more than the table counts ({LIMIT})"),
        ));
    }
    Ok(())
}

/// The bytes of an attribute with a value of `len` bytes.
const fn attribute(len: usize) -> usize {
    ATTR_HEADER_LEN + padded(len)
}

/// `limit.<field>` must be in `range`.
fn within<T: PartialOrd + Display>(field: &str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(format!("limit.{field}"), value, format!("must be between {} and {}", range.start(), range.end())))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::super::validate::tests::check;
    use super::*;
    use crate::counters::DropReason;

    /// Long-term authentication on every listener, without the random-secret warning.
    const LONG_TERM: &str = "[auth]\npolicy = \"required\"\nlong_term_users = { alice = \"wonderland\" }\nnonce_secret = \"0123456789abcdef\"\n";

    fn warnings(text: &str) -> Vec<String> {
        check(text).unwrap().warnings
    }

    #[test]
    fn the_defaults_are_the_limiters() {
        assert_eq!(Config::default().limit.params(), Params::default());
        let s = check("").unwrap();
        assert_eq!(*s.limit.rules.params(), Params::default());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // One table and one set of rules for every listener.
        assert!(
            s.handlers
                .iter()
                .all(|h| Arc::ptr_eq(&h.limit.rules, &s.limit.rules) && Arc::ptr_eq(&h.limit.shared, &s.limit.shared))
        );
        assert_eq!(s.limit.shared.table.capacity(), 8, "a stand-in: the server allocates the table");
        let s = check("[limit]\ntable_size = 15\nmode = \"dry-run\"\nmax_amplification = 4\n").unwrap();
        assert_eq!(s.limit.rules.params().table_size, 15);
        assert_eq!(s.limit.rules.params().mode, Mode::DryRun);
        assert_eq!(s.limit.rules.params().max_amplification, 4.0, "an integer is a ratio too");
    }

    #[test]
    fn own_ports_are_every_listening_port() {
        let s = check(
            "[server]\nlisten = [\"192.0.2.1:3478\", \"[2001:db8::1]:4000\"]\n\
             [rfc5780]\nalternate_ips = [\"192.0.2.2\"]\nalternate_port = 3490\n",
        )
        .unwrap();
        let local: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let from = |port: u16| s.handlers[0].limit.denied(SocketAddr::new(local.ip(), port), local);
        for port in [3478, 4000, 3490] {
            assert_eq!(from(port), Some(DropReason::DeniedOwnAddress), "{port}");
        }
        assert_eq!(from(3479), None);
    }

    #[test]
    fn bad_values_name_the_field_and_the_value() {
        let cases = [
            ("rate = 0", "limit.rate = 0: must be between 1 and 10000000"),
            ("error_rate = 10000001", "limit.error_rate = 10000001: must be between 1 and 10000000"),
            ("allow_rate = 0", "limit.allow_rate = 0: must be between 1 and 10000000"),
            ("leak = 101", "limit.leak = 101: must be between 0 and 100"),
            ("hard_cap = 0", "limit.hard_cap = 0: must be between 1 and 100"),
            ("table_size = 14", "limit.table_size = 14: must be between 15 and 268435456"),
            ("table_size = 268435457", "limit.table_size = 268435457: must be between 15 and 268435456"),
            ("burst_seconds = 0.05", "limit.burst_seconds = 0.05: must be between 0.1 and 60"),
            ("burst_seconds = nan", "limit.burst_seconds = NaN: must be between 0.1 and 60"),
            ("max_amplification = 0.5", "limit.max_amplification = 0.5: must be 0 (no cap) or between 1 and 100"),
            (
                "rfc5780_max_amplification = inf",
                "limit.rfc5780_max_amplification = inf: must be 0 (no cap) or between 1 and 100",
            ),
            ("ipv4_multipliers = [0, 1, 1]", "limit.ipv4_multipliers[0] = 0: must be at least 1"),
            (
                "ipv6_multipliers = [4, 2, 8]",
                "limit.ipv6_multipliers[1] = 2: must be at least limit.ipv6_multipliers[0] = 4: a wider prefix \
                 never has a smaller budget",
            ),
            (
                "ipv4_multipliers = [1, 1, 4000000000]",
                "limit.ipv4_multipliers = [1, 1, 4000000000]: a /18 could burst 6000000000000 answers, more than \
                 the table counts (134217727); lower the multipliers, the rates or burst_seconds",
            ),
            // Parser errors: the line, the element, the text.
            ("mode = \"on\"", "test.toml:2: limit.mode = \"on\": must be \"enforce\", \"dry-run\" or \"off\""),
            (
                "deny = [\"192.0.2.1\", \"192.0.2.1/33\"]",
                "test.toml:2: limit.deny[1] = \"192.0.2.1/33\": the prefix length must be 0..=32",
            ),
            (
                "allow = [\"nope\"]",
                "test.toml:2: limit.allow[0] = \"nope\": is not an IP address or prefix (\"192.0.2.0/24\")",
            ),
            (
                "allow = [\"2001:db8::/32\", \"192.0.2.1/24\"]",
                "test.toml:2: limit.allow[1] = \"192.0.2.1/24\": has bits set past /24; did you mean \
                 \"192.0.2.0/24\"?",
            ),
            (
                "ipv4_multipliers = [1, 2]",
                "test.toml:2: limit.ipv4_multipliers = [1, 2]: invalid length 2, expected an array of length 3",
            ),
            ("rate = -1", "test.toml:2: limit.rate = -1: invalid value: integer `-1`, expected u32"),
            (
                "error_rate = 5\nburst_seconds = 0.1",
                "limit.error_rate = 0.5: with limit.burst_seconds, less than one answer per burst: nothing would \
                 ever pass; raise it or burst_seconds",
            ),
            (
                "allow_rate = 10000000\nburst_seconds = 60\nipv4_multipliers = [1, 1, 1]\nipv6_multipliers = [1, 1, 1]\n\
                 rate = 1000",
                "limit.allow_rate = 10000000: an allowlist entry could burst 600000000 answers, more than the table \
                 counts (134217727)",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(check(&format!("[limit]\n{line}\n")).unwrap_err().to_string(), expected, "{line}");
        }
        // The edges are in (but the largest table: 4 GiB).
        let edges = "[limit]\nrate = 10000000\nburst_seconds = 0.1\nleak = 0\nhard_cap = 100\ntable_size = 15\n\
                     max_amplification = 1\nrfc5780_max_amplification = 100\nipv4_multipliers = [1, 1, 1]\n\
                     ipv6_multipliers = [1, 1, 1]\n";
        check(edges).unwrap();
    }

    #[test]
    fn off_and_uncapped_are_worth_a_warning() {
        assert_eq!(
            warnings("[limit]\nmode = \"off\"\n"),
            ["limit.mode = \"off\": reflection defence off: this node answers any spoofed source at full rate"]
        );
        assert_eq!(
            warnings("[limit]\nmax_amplification = 0\nrfc5780_max_amplification = 0\n"),
            ["limit.max_amplification = 0: no amplification cap; a spoofed request gets its whole answer"],
            "no RFC 5780 listener: its cap does not apply"
        );
        assert!(warnings("[limit]\nmode = \"dry-run\"\n").is_empty());
    }

    #[test]
    fn a_challenge_over_the_cap_is_named_with_its_numbers() {
        assert_eq!(
            warnings(LONG_TERM),
            ["a 401 challenge is 88 bytes (auth.realm \"stunedge\", 2 password_algorithms): requests under 30 \
                 bytes get no challenge with limit.max_amplification = 3 (a bare 20-byte request needs 4.4)"]
        );
        assert!(warnings(&format!("{LONG_TERM}[limit]\nmax_amplification = 4.4\n")).is_empty());
        // Without PASSWORD-ALGORITHMS it fits 4 ×; SOFTWARE then is what does not.
        assert_eq!(
            warnings(&format!(
                "{LONG_TERM}password_algorithms = []\n[server]\nsoftware = \"stunedge 1.0\"\n\
                 [limit]\nmax_amplification = 4\n"
            )),
            ["a 401 challenge is 92 bytes (auth.realm \"stunedge\", 0 password_algorithms, server.software adds \
                 16): requests under 23 bytes get it without SOFTWARE with limit.max_amplification = 4 (a bare \
                 20-byte request needs 4.6)"]
        );
        // Short-term 401s carry nothing more than the error.
        let short_term =
            "[auth]\npolicy = \"required\"\nmechanism = \"short-term\"\nshort_term_users = { a = \"b\" }\n";
        assert!(warnings(short_term).is_empty());
        // Only listeners that challenge count: none here is long-term.
        let other = "[auth]\nlisteners = [{ listen = \"0.0.0.0:3478\", policy = \"required\", mechanism = \
                     \"short-term\" }]\nshort_term_users = { a = \"b\" }\n";
        assert!(warnings(other).is_empty());
    }

    #[test]
    fn software_and_response_origin_over_the_cap_are_named_per_family() {
        let software = format!("[server]\nsoftware = \"{}\"\n", "x".repeat(24));
        assert_eq!(
            warnings(&software),
            ["a Binding success to IPv6 is 72 bytes (server.software adds 28): requests under 24 bytes get it \
                 without SOFTWARE with limit.max_amplification = 3 (a bare 20-byte request needs 3.6)"],
            "IPv4's 60 bytes fit"
        );
        assert!(warnings(&format!("{software}listen = [\"0.0.0.0:3478\"]\n")).is_empty(), "no IPv6 listener");
        assert_eq!(
            warnings("[server]\nresponse_origin = true\n"),
            ["a Binding success to IPv6 is 68 bytes (server.response_origin adds 24): requests under 23 bytes \
                 get it without RESPONSE-ORIGIN with limit.max_amplification = 3 (a bare 20-byte request needs 3.4)"]
        );
        assert_eq!(
            warnings("[server]\nresponse_origin = true\nsoftware = \"stunedge\"\n[limit]\nmax_amplification = 2\n"),
            [
                "a Binding success to IPv4 is 56 bytes (server.software adds 12): requests under 28 bytes get it \
                 without SOFTWARE with limit.max_amplification = 2 (a bare 20-byte request needs 2.8)",
                "a Binding success to IPv4 is 44 bytes (server.response_origin adds 12): requests under 22 bytes \
                 get it without RESPONSE-ORIGIN with limit.max_amplification = 2 (a bare 20-byte request needs 2.2)",
                "a Binding success to IPv6 is 80 bytes (server.software adds 12): requests under 40 bytes get it \
                 without SOFTWARE with limit.max_amplification = 2 (a bare 20-byte request needs 4)",
                "a Binding success to IPv6 is 68 bytes (server.response_origin adds 24): requests under 34 bytes \
                 get it without RESPONSE-ORIGIN with limit.max_amplification = 2 (a bare 20-byte request needs 3.4)",
            ]
        );
    }

    #[test]
    fn rfc5780_listeners_are_held_to_their_own_cap() {
        let rfc = "[server]\nlisten = [\"192.0.2.1:3478\"]\nsoftware = \"stunedge\"\n\
                   [rfc5780]\nalternate_ips = [\"192.0.2.2\"]\n";
        assert!(warnings(rfc).is_empty(), "68 + 12 bytes, within 6 × 20");
        assert!(warnings(&format!("{rfc}{LONG_TERM}")).is_empty(), "88 + 12 bytes, within 6 × 20");
        assert_eq!(
            warnings(&format!("{rfc}{LONG_TERM}[limit]\nrfc5780_max_amplification = 4\nmax_amplification = 1\n")),
            ["a 401 challenge is 88 bytes (auth.realm \"stunedge\", 2 password_algorithms): requests under 22 \
                 bytes get no challenge with limit.rfc5780_max_amplification = 4 (a bare 20-byte request needs 4.4)"],
            "the plain cap has no listener here; SOFTWARE fits an RFC 5780 answer (80 bytes)"
        );
        assert_eq!(
            warnings(&format!("{rfc}[limit]\nrfc5780_max_amplification = 0\n")),
            ["limit.rfc5780_max_amplification = 0: no amplification cap; a spoofed request gets its whole answer"]
        );
    }
}
