//! The limiter's decisions: budgets per level, leak and hard cap, exemptions, allow and deny
//! lists, the amplification room. Time is simulated: every call names its millisecond.

use super::*;

fn limit(params: Params) -> Limit {
    Limit::new(Arc::new(Rules::new(params, vec![3478, 3479])), Arc::new(Shared::new(1 << 16)))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn enforce() -> Params {
    Params { rate: 100, error_rate: 10, burst_seconds: 1.0, ..Params::default() }
}

/// Sends `n` requests from `src` spread evenly over `ms` milliseconds starting at `start`,
/// returning how many got each action.
fn run(l: &Limit, class: AnswerClass, src: impl Fn(u64) -> IpAddr, n: u64, start: u64, ms: u64) -> [u64; 7] {
    let mut out = [0; 7];
    for i in 0..n {
        let d = l.decide(class, src(i), false, start + i * ms / n, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        out[d.action as usize] += 1;
    }
    out
}

const PASS: usize = LimitAction::Pass as usize;
const LEAK: usize = LimitAction::Leak as usize;
const DROP: usize = LimitAction::Drop as usize;

#[test]
fn a_steady_client_under_its_rate_always_passes() {
    let l = limit(enforce());
    // 90/s for 20 s from one address, against 100/s.
    let got = run(&l, AnswerClass::Success, |_| ip("192.0.2.1"), 1800, 1, 20_000);
    assert_eq!(got[PASS], 1800, "{got:?}");
}

#[test]
fn a_burst_is_allowed_then_the_rate_holds() {
    let l = limit(Params { leak: 0, ..enforce() });
    // 1000 at once: the burst (rate × burst_seconds = 100) passes, the rest does not.
    let got = run(&l, AnswerClass::Success, |_| ip("192.0.2.1"), 1000, 1, 0);
    assert!((95..=100).contains(&got[PASS]), "{got:?}");
    assert_eq!(got[DROP], 1000 - got[PASS]);
    // Then a flood at 1000/s for 10 s passes about the rate (100/s).
    let l = limit(Params { leak: 0, ..enforce() });
    let got = run(&l, AnswerClass::Success, |_| ip("192.0.2.1"), 10_000, 1, 10_000);
    let passed = got[PASS] as f64;
    assert!((900.0..=1150.0).contains(&passed), "{got:?}");
}

#[test]
fn errors_have_the_smaller_budget_and_their_own() {
    let l = limit(Params { leak: 0, ..enforce() });
    let errors = run(&l, AnswerClass::Error, |_| ip("192.0.2.1"), 100, 1, 0);
    assert!((9..=10).contains(&errors[PASS]), "{errors:?}");
    let successes = run(&l, AnswerClass::Success, |_| ip("192.0.2.1"), 100, 1, 0);
    assert!(successes[PASS] >= 95, "the error budget is separate: {successes:?}");
}

#[test]
fn enclosing_prefixes_have_larger_budgets() {
    let l = limit(Params { leak: 0, ..enforce() });
    // 10,000 requests at once over the 256 addresses of one /24: each /32 is far under its
    // burst (40 each), but the /24's is 32 × 100.
    let got = run(&l, AnswerClass::Success, |i| IpAddr::V4([198, 51, 100, (i % 256) as u8].into()), 10_000, 1, 0);
    assert!((3150..=3200).contains(&got[PASS]), "{got:?}");
    let d = l.decide(AnswerClass::Success, ip("198.51.100.7"), false, 1, 0);
    assert_eq!((d.action, d.level), (LimitAction::Drop, 1), "limited at the /24");
    // Another /24 is untouched.
    assert_eq!(l.decide(AnswerClass::Success, ip("198.51.101.7"), false, 1, 0).action, LimitAction::Pass);
}

#[test]
fn ipv6_levels_and_the_mapped_form() {
    let l = limit(Params { leak: 0, ..enforce() });
    // Rotating addresses inside one /64 does not escape: /64 × 4.
    let got = run(
        &l,
        AnswerClass::Success,
        |i| IpAddr::V6(((0x2001_0db8_0000_0001_u128 << 64) | i as u128).into()),
        5000,
        1,
        0,
    );
    assert!((395..=400).contains(&got[PASS]), "{got:?}");
    // An IPv4-mapped IPv6 address shares the IPv4 address's budget.
    let l = limit(Params { leak: 0, ..enforce() });
    run(&l, AnswerClass::Success, |_| ip("192.0.2.9"), 200, 1, 0);
    assert_eq!(l.decide(AnswerClass::Success, ip("::ffff:192.0.2.9"), false, 1, 0).action, LimitAction::Drop);
}

/// The leak answers about one in `leak` of the limited requests, and the hard cap stops it
/// growing with the attack: the output plateaus.
#[test]
fn leak_then_plateau() {
    let output = |rate_per_s: u64| {
        let l = limit(enforce());
        let got = run(&l, AnswerClass::Success, |_| ip("203.0.113.5"), rate_per_s * 20, 1, 20_000);
        (got[PASS] + got[LEAK]) as f64 / 20.0
    };
    // 200/s (2 × the rate): 100 pass, and about half of the other 100 leak.
    let at_2x = output(200);
    assert!((135.0..=165.0).contains(&at_2x), "{at_2x}");
    // 4 × and far beyond: at most what 4 × the rate gives (100 + 300/2 = 250/s).
    let at_4x = output(400);
    let at_50x = output(5000);
    assert!(at_4x <= 265.0 && at_50x <= 265.0, "{at_4x} {at_50x}");
    assert!(at_50x >= 200.0, "the leak keeps serving at the cap: {at_50x}");
}

#[test]
fn no_leak_drops_everything_over_budget() {
    let l = limit(Params { leak: 0, ..enforce() });
    let got = run(&l, AnswerClass::Success, |_| ip("203.0.113.5"), 100_000, 1, 10_000);
    assert_eq!(got[LEAK], 0);
    assert!(got[PASS] <= 1150, "{got:?}");
}

#[test]
fn dry_run_decides_but_says_would() {
    let l = limit(Params { mode: Mode::DryRun, ..enforce() });
    let got = run(&l, AnswerClass::Success, |_| ip("203.0.113.5"), 1000, 1, 0);
    assert_eq!(got[LEAK] + got[DROP], 0);
    // 1000 at once: the burst (100) passes, half the rest draws a leak and the leak budget
    // (rate × (hard_cap − 1) ÷ leak = 150/s, burst 150) takes ~150 of them.
    let (would_leak, would_drop) = (got[LimitAction::WouldLeak as usize], got[LimitAction::WouldDrop as usize]);
    assert!((130..=155).contains(&would_leak) && would_drop > 700, "{got:?}");
    let off = limit(Params { mode: Mode::Off, ..enforce() });
    assert_eq!(run(&off, AnswerClass::Success, |_| ip("203.0.113.5"), 1000, 1, 0)[PASS], 1000);
}

#[test]
fn exemptions() {
    let l = limit(enforce());
    for _ in 0..1000 {
        assert_eq!(l.decide(AnswerClass::Success, ip("127.0.0.1"), false, 1, 0).action, LimitAction::Exempt);
        assert_eq!(l.decide(AnswerClass::Success, ip("::1"), false, 1, 0).action, LimitAction::Exempt);
        assert_eq!(l.decide(AnswerClass::Success, ip("192.0.2.1"), true, 1, 0).action, LimitAction::Exempt);
    }
    // Exempt answers do not use the prefix's budget.
    assert_eq!(l.decide(AnswerClass::Success, ip("192.0.2.1"), false, 1, 0).action, LimitAction::Pass);
    let strict = limit(Params { exempt_loopback: false, exempt_nonce: false, leak: 0, ..enforce() });
    let got = run(&strict, AnswerClass::Success, |_| ip("127.0.0.1"), 1000, 1, 0);
    assert!(got[DROP] > 800, "{got:?}");
    assert_eq!(strict.decide(AnswerClass::Success, ip("192.0.2.1"), true, 1, 0).action, LimitAction::Pass);
}

/// An allowlist entry has its own finite budget, and its traffic does not use the budgets of
/// the prefixes around it.
#[test]
fn allowlist_is_separate_and_finite() {
    let allow = vec!["198.51.100.0/28".parse().unwrap()];
    let l = limit(Params { allow, allow_rate: 1000, leak: 0, ..enforce() });
    let got = run(&l, AnswerClass::Success, |i| IpAddr::V4([198, 51, 100, (i % 16) as u8].into()), 5000, 1, 0);
    let allowed = got[LimitAction::Allowlisted as usize];
    assert!((990..=1000).contains(&allowed), "{got:?}");
    assert_eq!(got[DROP], 5000 - allowed, "finite: over its budget it is dropped");
    let d = l.decide(AnswerClass::Success, ip("198.51.100.1"), false, 1, 0);
    assert_eq!((d.action, d.level), (LimitAction::Drop, ALLOW_LEVEL));
    // The rest of the /24 still has its whole budget.
    let got = run(&l, AnswerClass::Success, |i| IpAddr::V4([198, 51, 100, 16 + (i % 200) as u8].into()), 3000, 1, 0);
    assert!(got[PASS] >= 3000 - 5, "{got:?}");
}

/// A flood from a million random sources neither frees a limited prefix nor limits anyone
/// else: the limited key keeps its load (Space-Saving), and one-off sources stay far under.
#[test]
fn a_random_source_flood_does_not_reset_the_victim() {
    // Sized by the rule of thumb (1.4 × peak requests/s ÷ rate = 14,000 keys) with room to spare.
    let l = Limit::new(Arc::new(Rules::new(Params { leak: 0, ..enforce() }, vec![])), Arc::new(Shared::new(1 << 16)));
    let victim = ip("203.0.113.77");
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    let (mut limited_random, mut victim_passed) = (0, 0);
    // One second: a million random sources, and the victim's prefix flooded (1 in 10).
    for i in 0..1_000_000u64 {
        let now = 1 + i / 1000;
        if i % 10 == 0 && l.decide(AnswerClass::Success, victim, false, now, 0).action == LimitAction::Pass {
            victim_passed += 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = IpAddr::V4(((x >> 16) as u32 | 0x0100_0000).into());
        if l.decide(AnswerClass::Success, src, false, now, 0).action == LimitAction::Drop {
            limited_random += 1;
        }
    }
    // The victim got its burst and one second of its rate (100 + 100), however hard the
    // random flood churned the table.
    assert!(victim_passed <= 210, "{victim_passed}");
    // Random sources are one-offs, but their /18s (16,384 of them, ~61 requests each here)
    // and the Space-Saving inheritance make a few look heavier: a handful of limits at most.
    assert!(limited_random < 1000, "{limited_random}");
}

#[test]
fn deny_list_and_bogons() {
    let l = limit(Params { deny: vec!["192.0.2.0/24".parse().unwrap()], ..enforce() });
    let local: SocketAddr = "198.51.100.1:3478".parse().unwrap();
    let denied = |src: &str| l.denied(src.parse().unwrap(), local);
    assert_eq!(denied("192.0.2.9:5000"), Some(DropReason::DeniedListed));
    assert_eq!(denied("203.0.113.1:0"), Some(DropReason::DeniedPortZero));
    for bogon in ["0.1.2.3:5000", "224.0.0.1:5000", "239.1.1.1:5000", "240.0.0.1:5000", "255.255.255.255:5000"] {
        assert_eq!(denied(bogon), Some(DropReason::DeniedBogon), "{bogon}");
    }
    assert_eq!(denied("[::]:5000"), Some(DropReason::DeniedBogon));
    assert_eq!(denied("[ff02::1]:5000"), Some(DropReason::DeniedBogon));
    assert_eq!(denied("[::ffff:224.0.0.1]:5000"), Some(DropReason::DeniedBogon));
    assert_eq!(denied("198.51.100.1:3479"), Some(DropReason::DeniedOwnAddress));
    assert_eq!(denied("198.51.100.1:40000"), None, "a client on the host itself is not denied");
    assert_eq!(l.denied("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:3478".parse().unwrap()), None);
    assert_eq!(denied("203.0.113.1:5000"), None);
    let off = limit(Params { deny_bogons: false, ..enforce() });
    assert_eq!(off.denied("203.0.113.1:0".parse().unwrap(), local), None);
}

#[test]
fn room_is_the_cap_but_never_below_the_bare_success() {
    let l = limit(enforce());
    assert_eq!(l.room(20, 0, false), 60);
    assert_eq!(l.room(100, 1, false), 300);
    assert_eq!(l.room(8, 0, false), 32, "bare IPv4 success");
    assert_eq!(l.room(8, 1, false), 44, "bare IPv6 success");
    assert_eq!(l.room(20, 1, true), 120, "RFC 5780: 6×");
    assert_eq!(limit(Params::off()).room(20, 0, false), usize::MAX);
}

/// The log throttle: one limited decision per period is marked, for the whole table.
#[test]
fn one_log_line_per_period() {
    let l = limit(Params { leak: 0, ..enforce() });
    let marked = |from_ms: u64| {
        (0..2000u64).filter(|i| l.decide(AnswerClass::Success, ip("203.0.113.5"), false, from_ms + i, 0).log).count()
    };
    assert_eq!(marked(1), 1);
    assert_eq!(marked(5_000), 0, "within 30 s of the last line");
    assert_eq!(marked(40_000), 1);
}

#[test]
fn never_panics_on_any_key() {
    let l = limit(enforce());
    for src in ["0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0.0.0.0"] {
        for now in [0, 1, u64::MAX / 2, u64::MAX] {
            for class in AnswerClass::ALL {
                let _ = l.decide(*class, ip(src), false, now, now);
            }
        }
    }
    assert_eq!(Limit::level_prefix(ip("203.0.113.77"), 1), "203.0.113.0/24");
    assert_eq!(Limit::level_prefix(ip("2001:db8:1:2:3::9"), 2), "2001:db8:1::/56");
    assert_eq!(Limit::level_prefix(ip("198.51.100.1"), ALLOW_LEVEL), "198.51.100.1 (allowlist entry)");
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::limit::table::CAPACITY;

    proptest! {
        /// Any address, class, time and draw: no panic, and the action is one `enforce` takes.
        #[test]
        fn any_request_gets_a_decision(
            requests in proptest::collection::vec((any::<u128>(), any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()), 1..200),
        ) {
            let l = limit(Params { rate: 1, error_rate: 1, ..enforce() });
            for (bits, v4, now, draw, error) in requests {
                let src = if v4 { IpAddr::V4((bits as u32).into()) } else { IpAddr::V6(bits.into()) };
                let class = if error { AnswerClass::Error } else { AnswerClass::Success };
                let d = l.decide(class, src, false, now, draw);
                prop_assert!(d.level <= ALLOW_LEVEL);
                prop_assert!(!matches!(d.action, LimitAction::WouldLeak | LimitAction::WouldDrop));
            }
        }

        /// Loads never pass the capacity, never go below zero, and a key's load never grows
        /// without being charged: decaying only shrinks.
        #[test]
        fn loads_stay_in_range_and_only_decay_between_charges(
            charges in proptest::collection::vec((0u128..64, 0u64..CAPACITY, 0u64..100_000), 1..300),
        ) {
            let t = Table::new(64);
            let d = Decay::new(50.0);
            let mut now = 0;
            for (bits, price, step) in charges {
                now += step;
                let k = t.key(1, bits);
                let before = t.load(k, now, &d);
                prop_assert!(before <= CAPACITY);
                let later = t.load(k, now + 1000, &d);
                prop_assert!(later <= before || before == 0, "{later} > {before}");
                t.add(k, price, now, &d);
                prop_assert!(t.load(k, now, &d) <= CAPACITY);
            }
        }
    }
}
