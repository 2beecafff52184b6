//! Every counter stunedge keeps, as plain integers: why a datagram was dropped ([`DropReason`]),
//! what was received, answered and sent ([`Counter`]), the batch histograms, and a backend's
//! [`Tally`] of one loop turn. A worker bumps its own [`Stats`] (no atomics, no sharing on the
//! packet path) and publishes them once per loop turn into its own cache-padded [`WorkerSlot`]
//! with relaxed stores; readers (logs, tests, the Prometheus exporter) sum the slots
//! at scrape time.
//!
//! The leaf every room may use: this module imports nothing from the rest of the crate.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Declares a field-less enum whose variants each carry a `snake_case` name, with `ALL` (every
/// variant, in index order) and `name()`. Written once for [`DropReason`] and [`Counter`].
macro_rules! named {
    ($(#[doc = $edoc:literal])* $enum:ident {
        $( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*
    }) => {
        $(#[doc = $edoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum $enum {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $enum {
            /// Every variant, in index order.
            pub const ALL: &'static [$enum] = &[$( $enum::$variant, )*];

            /// The `snake_case` name (a metric label value, a log key).
            pub const fn name(self) -> &'static str {
                match self { $( $enum::$variant => $name, )* }
            }
        }
    };
}

named! {
    /// Why a datagram is not answered. Each has a counter.
    DropReason {
        /// Fewer than 20 bytes.
        TooShort => "too_short",
        /// The top two bits are not zero (RFC 8489 §5): not a STUN message.
        NotStun => "not_stun",
        /// The length field is not a multiple of 4 or disagrees with the datagram size.
        BadLength => "bad_length",
        /// Larger than the receive buffer (or than the handler's largest request).
        Truncated => "truncated",
        /// An RFC 3489 classic message while classic support is off.
        ClassicDisabled => "classic_disabled",
        /// FINGERPRINT present but wrong, malformed or not last (RFC 8489 §7.3: discard).
        BadFingerprint => "bad_fingerprint",
        /// A Binding indication: a keepalive, never answered (RFC 8489 §6.3.2).
        BindingIndication => "binding_indication",
        /// An indication of another method.
        Indication => "indication",
        /// A success or error response: a server never answers those.
        Response => "response",
        /// The response would not fit the buffer (cannot happen with the io buffer size;
        /// counted rather than trusted).
        ResponseTooLarge => "response_too_large",
        /// The source is on the configured deny list (`limit.deny`).
        DeniedListed => "denied_listed",
        /// Source port 0: nothing can be sent to it (`limit.deny_bogons`).
        DeniedPortZero => "denied_port_zero",
        /// A source address that cannot send real traffic: 0.0.0.0/8, multicast, 240.0.0.0/4,
        /// ::, ff00::/8 (`limit.deny_bogons`).
        DeniedBogon => "denied_bogon",
        /// The server's own listening address as the source: a spoofed loop.
        DeniedOwnAddress => "denied_own_address",
        /// Over the response rate limit of the answer's destination prefix, and not leaked.
        RateLimited => "rate_limited",
        /// Even trimmed, the answer would pass the amplification cap (`limit.max_amplification`).
        AmplificationCap => "amplification_cap",
        /// TURN ChannelData on a balancing listener (`[turn_lb]`): the balancer holds no channels.
        ChannelData => "channel_data",
        /// A TURN Send indication on a balancing listener: the balancer holds no allocations.
        TurnSend => "turn_send",
        /// An Allocate with no backend of its family up, and `turn_lb.on_no_backend = "drop"`.
        NoBackend => "no_backend",
    }
}

named! {
    /// What kind of answer a request gets, for the response rate limit (each has its own budget).
    AnswerClass {
        /// A Binding success.
        Success => "success",
        /// An error, a challenge or a redirect: 300, 400, 401, 420, 437, 438, 508.
        Error => "error",
    }
}

named! {
    /// What the response rate limit decided for one answer.
    LimitAction {
        /// Within the prefix's budget.
        Pass => "pass",
        /// Not counted against a budget: the request proved it can receive at its source (a
        /// valid nonce), or comes from the host itself (loopback).
        Exempt => "exempt",
        /// Within the budget of the allowlist entry it is in.
        Allowlisted => "allowlisted",
        /// Over budget, answered anyway with the minimal answer (one in `leak`).
        Leak => "leak",
        /// Over budget, dropped.
        Drop => "drop",
        /// Dry run: would have been leaked (answered in full).
        WouldLeak => "would_leak",
        /// Dry run: would have been dropped (answered in full).
        WouldDrop => "would_drop",
    }
}

/// Address families, as the limit counters index them: IPv4 then IPv6.
pub const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
/// The levels a limit can trip at, per family: the four prefix lengths, then the allowlist.
pub const LIMIT_LEVELS: [[&str; 5]; 2] = [["32", "24", "20", "18", "allow"], ["128", "64", "56", "48", "allow"]];
const CLASSES: usize = AnswerClass::ALL.len();
const ACTIONS: usize = LimitAction::ALL.len();
const LEVELS: usize = LIMIT_LEVELS[0].len();
/// Per family and class: the actions, the levels, then bytes in, bytes out, trimmed answers.
const PER_CLASS: usize = ACTIONS + LEVELS + 3;
const LIMIT: usize = FAMILIES.len() * CLASSES * PER_CLASS;

/// Where one (family, class) pair's limit counters start in [`Stats`].
#[inline]
const fn limit_base(family: usize, class: AnswerClass) -> usize {
    (family * CLASSES + class as usize) * PER_CLASS
}

named! {
    /// A counter (the per-reason drop counters are indexed by [`DropReason`] instead).
    Counter {
        /// Datagrams received.
        ReceivedDatagrams => "received_datagrams",
        /// Bytes received (UDP payload).
        ReceivedBytes => "received_bytes",
        /// Datagrams sent.
        SentDatagrams => "sent_datagrams",
        /// Bytes sent (UDP payload).
        SentBytes => "sent_bytes",
        /// Replies the kernel refused with EAGAIN (send queue full); each is lost.
        SendErrorsEagain => "send_errors_eagain",
        /// Replies the kernel refused with ENOBUFS.
        SendErrorsEnobufs => "send_errors_enobufs",
        /// Replies the kernel refused with EPERM (a firewall rule, usually).
        SendErrorsEperm => "send_errors_eperm",
        /// Replies the kernel refused with another errno.
        SendErrorsOther => "send_errors_other",
        /// Receive calls that failed with an error other than "would block".
        ReceiveErrors => "receive_errors",
        /// Batches processed (one receive call, or one io_uring turn, that returned datagrams).
        Batches => "batches",
        /// io_uring: answers dropped because every send slot was in flight.
        SendSlotsFull => "send_slots_full",
        /// io_uring: multishot receives re-armed after the kernel ended them.
        MultishotRearms => "multishot_rearms",
        /// io_uring: multishot receives ended because the buffer ring was empty.
        BufferRingExhausted => "buffer_ring_exhausted",
        /// io_uring: completions the completion queue could not hold at once.
        CqOverflow => "cq_overflow",
        /// Binding requests (RFC 8489/5389 and classic).
        RequestsBinding => "requests_binding",
        /// Requests of other methods (answered 400, or on a balancing listener 300, 437 or 508).
        RequestsOther => "requests_other",
        /// Of all requests, those without the magic cookie (RFC 3489 classic).
        RequestsClassic => "requests_classic",
        /// Binding success responses.
        ResponsesSuccess => "responses_success",
        /// 400 Bad Request responses.
        Responses400 => "responses_400",
        /// 420 Unknown Attribute responses.
        Responses420 => "responses_420",
        /// 401 Unauthenticated responses (challenges and rejected credentials).
        Responses401 => "responses_401",
        /// 438 Stale Nonce responses.
        Responses438 => "responses_438",
        /// 300 Try Alternate responses: Allocates redirected to a TURN backend (`[turn_lb]`).
        Responses300 => "responses_300",
        /// 437 Allocation Mismatch responses: Refresh, CreatePermission and ChannelBind on a
        /// balancing listener, which holds no allocations.
        Responses437 => "responses_437",
        /// 508 Insufficient Capacity responses: Allocates with no backend of their family up.
        Responses508 => "responses_508",
        /// Requests whose credentials were checked and accepted (their answers are signed).
        RequestsAuthenticated => "requests_authenticated",
        /// RFC 5780: answers sent from another socket (CHANGE-REQUEST).
        Rfc5780Changed => "rfc5780_changed",
        /// RFC 5780: answers sent to another port (RESPONSE-PORT).
        Rfc5780ResponsePort => "rfc5780_response_port",
        /// RFC 5780: answers carrying PADDING.
        Rfc5780Padded => "rfc5780_padded",
        /// Time spent processing batches (from the first datagram of a batch to its answers
        /// handed to the kernel), in nanoseconds: the histogram's sum.
        BatchNanoseconds => "batch_nanoseconds",
    }
}

const COUNTERS: usize = Counter::ALL.len();
const DROPS: usize = DropReason::ALL.len();

/// Upper bounds of the batch-size histogram's buckets (datagrams per batch); one more bucket
/// (+Inf) follows.
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Upper bounds of the batch-duration histogram's buckets, in nanoseconds; +Inf follows.
pub const BATCH_NANOS_BUCKETS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const SIZE_SLOTS: usize = BATCH_SIZE_BUCKETS.len() + 1;
const HIST: usize = SIZE_SLOTS + BATCH_NANOS_BUCKETS.len() + 1;

/// Answers the kernel refused, by errno (each is a lost answer). EAGAIN and ENOBUFS mean a full
/// send queue; EPERM usually a firewall rule; anything else (EINVAL, unreachable…) is "other".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendErrors {
    /// EAGAIN / EWOULDBLOCK.
    pub again: u64,
    /// ENOBUFS.
    pub nobufs: u64,
    /// EPERM.
    pub perm: u64,
    /// Any other errno.
    pub other: u64,
}

impl SendErrors {
    /// Counts `n` answers lost to `errno`.
    #[inline]
    pub fn count(&mut self, errno: i32, n: u64) {
        match errno {
            libc::EAGAIN => self.again += n,
            libc::ENOBUFS => self.nobufs += n,
            libc::EPERM => self.perm += n,
            _ => self.other += n,
        }
    }

    /// Adds another tally.
    #[inline]
    pub fn add(&mut self, o: SendErrors) {
        self.again += o.again;
        self.nobufs += o.nobufs;
        self.perm += o.perm;
        self.other += o.other;
    }

    /// All of them.
    #[inline]
    pub fn total(&self) -> u64 {
        self.again + self.nobufs + self.perm + self.other
    }
}

/// What a backend did in one batch (mmsg) or loop turn (io_uring): the one type both backends
/// fill and [`Stats::record`] takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Datagrams received.
    pub received_datagrams: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Answers the kernel sent.
    pub sent_datagrams: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Answers lost to send errors (EAGAIN, ENOBUFS, EPERM…), by errno.
    pub send_errors: SendErrors,
    /// io_uring: answers dropped because every send slot was in flight.
    pub send_slots_full: u64,
    /// io_uring: multishot receives re-armed because the kernel ended them.
    pub rearms: u64,
    /// io_uring: of those, ended because the buffer ring was empty (ENOBUFS).
    pub buffer_exhausted: u64,
    /// Receive calls or completions that failed.
    pub receive_errors: u64,
    /// io_uring: completions the kernel had to drop or buffer because the completion queue
    /// was full.
    pub cq_overflow: u64,
}

impl Tally {
    /// Adds another tally.
    #[inline]
    pub fn add(&mut self, o: Tally) {
        self.received_datagrams += o.received_datagrams;
        self.received_bytes += o.received_bytes;
        self.sent_datagrams += o.sent_datagrams;
        self.sent_bytes += o.sent_bytes;
        self.send_errors.add(o.send_errors);
        self.send_slots_full += o.send_slots_full;
        self.rearms += o.rearms;
        self.buffer_exhausted += o.buffer_exhausted;
        self.receive_errors += o.receive_errors;
        self.cq_overflow += o.cq_overflow;
    }
}

/// One worker's counters: plain integers, owned by that worker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    counters: [u64; COUNTERS],
    drops: [u64; DROPS],
    /// Histogram buckets (not cumulative): batch sizes, then batch durations.
    hist: [u64; HIST],
    /// Per family and answer class: rate-limit actions, limiting levels, bytes in and out,
    /// trimmed answers.
    limit: [u64; LIMIT],
    /// A limited answer the worker should log (at most one per log period for the whole
    /// table): its destination, the level index that was over, its class. Not published.
    limited_sample: Option<(IpAddr, usize, AnswerClass)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { counters: [0; COUNTERS], drops: [0; DROPS], hist: [0; HIST], limit: [0; LIMIT], limited_sample: None }
    }
}

/// Index of the first bucket whose bound is ≥ `value` (the last, +Inf, when none is).
#[inline]
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.iter().position(|&b| value <= b).unwrap_or(bounds.len())
}

impl Stats {
    /// Adds one.
    #[inline]
    pub fn bump(&mut self, counter: Counter) {
        self.counters[counter as usize] += 1;
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.counters[counter as usize] += n;
    }

    /// Counts one dropped datagram.
    #[inline]
    pub fn dropped(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// A counter's value.
    #[inline]
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    /// Datagrams dropped for `reason`.
    #[inline]
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Counts one rate-limit decision for an answer of `class` to a `family` source (0: IPv4,
    /// 1: IPv6); for limited ones, also the `level` that was over.
    #[inline]
    pub fn limit_decision(&mut self, family: usize, class: AnswerClass, action: LimitAction, level: usize) {
        let base = limit_base(family, class);
        self.limit[base + action as usize] += 1;
        if !matches!(action, LimitAction::Pass | LimitAction::Exempt | LimitAction::Allowlisted) {
            self.limit[base + ACTIONS + level.min(LEVELS - 1)] += 1;
        }
    }

    /// Counts the bytes of a request classified as `class` and of its answer (0 when none).
    #[inline]
    pub fn class_bytes(&mut self, family: usize, class: AnswerClass, request: usize, answer: usize) {
        let base = limit_base(family, class) + ACTIONS + LEVELS;
        self.limit[base] += request as u64;
        self.limit[base + 1] += answer as u64;
    }

    /// Counts an answer whose optional attributes were trimmed to fit the amplification cap.
    #[inline]
    pub fn trimmed(&mut self, family: usize, class: AnswerClass) {
        self.limit[limit_base(family, class) + ACTIONS + LEVELS + 2] += 1;
    }

    /// Records a limited answer for the worker to log.
    #[cold]
    pub fn sample_limited(&mut self, dst: IpAddr, level: usize, class: AnswerClass) {
        self.limited_sample = Some((dst, level, class));
    }

    /// The limited answer to log, if one was recorded since the last call.
    #[inline]
    pub fn take_limited_sample(&mut self) -> Option<(IpAddr, usize, AnswerClass)> {
        self.limited_sample.take()
    }

    /// Rate-limit decisions of `action` for `class` answers to `family`.
    pub fn limit_decisions(&self, family: usize, class: AnswerClass, action: LimitAction) -> u64 {
        self.limit[limit_base(family, class) + action as usize]
    }

    /// Limited (leaked, dropped, would-be) answers of `class` to `family` by the level over.
    pub fn limited_at(&self, family: usize, class: AnswerClass, level: usize) -> u64 {
        self.limit[limit_base(family, class) + ACTIONS + level]
    }

    /// Bytes of requests classified as `class` from `family` and of their answers.
    pub fn bytes_of(&self, family: usize, class: AnswerClass) -> (u64, u64) {
        let base = limit_base(family, class) + ACTIONS + LEVELS;
        (self.limit[base], self.limit[base + 1])
    }

    /// Answers of `class` to `family` trimmed to fit the amplification cap.
    pub fn trimmed_count(&self, family: usize, class: AnswerClass) -> u64 {
        self.limit[limit_base(family, class) + ACTIONS + LEVELS + 2]
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Records what a backend did in one batch or turn, and the `nanos` spent on it: the
    /// traffic counters, and when it received anything, one batch with its size and duration.
    #[inline]
    pub fn record(&mut self, t: &Tally, nanos: u64) {
        if t.received_datagrams > 0 {
            self.bump(Counter::Batches);
            self.hist[bucket(&BATCH_SIZE_BUCKETS, t.received_datagrams)] += 1;
            self.hist[SIZE_SLOTS + bucket(&BATCH_NANOS_BUCKETS, nanos)] += 1;
            self.add(Counter::BatchNanoseconds, nanos);
        }
        self.add(Counter::ReceivedDatagrams, t.received_datagrams);
        self.add(Counter::ReceivedBytes, t.received_bytes);
        self.add(Counter::SentDatagrams, t.sent_datagrams);
        self.add(Counter::SentBytes, t.sent_bytes);
        self.add(Counter::SendErrorsEagain, t.send_errors.again);
        self.add(Counter::SendErrorsEnobufs, t.send_errors.nobufs);
        self.add(Counter::SendErrorsEperm, t.send_errors.perm);
        self.add(Counter::SendErrorsOther, t.send_errors.other);
        self.add(Counter::SendSlotsFull, t.send_slots_full);
        self.add(Counter::MultishotRearms, t.rearms);
        self.add(Counter::BufferRingExhausted, t.buffer_exhausted);
        self.add(Counter::ReceiveErrors, t.receive_errors);
        self.add(Counter::CqOverflow, t.cq_overflow);
    }

    /// Batches per batch-size bucket (not cumulative; the last is +Inf).
    pub fn batch_sizes(&self) -> &[u64] {
        &self.hist[..SIZE_SLOTS]
    }

    /// Batches per duration bucket (not cumulative; the last is +Inf).
    pub fn batch_durations(&self) -> &[u64] {
        &self.hist[SIZE_SLOTS..]
    }

    /// Answers lost to send errors, whatever the errno.
    pub fn send_errors(&self) -> u64 {
        [Counter::SendErrorsEagain, Counter::SendErrorsEnobufs, Counter::SendErrorsEperm, Counter::SendErrorsOther]
            .iter()
            .map(|c| self.get(*c))
            .sum()
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.counters.iter_mut().zip(other.counters) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
        for (a, b) in self.hist.iter_mut().zip(other.hist) {
            *a += b;
        }
        for (a, b) in self.limit.iter_mut().zip(other.limit) {
            *a += b;
        }
    }
}

impl fmt::Display for Stats {
    /// Non-zero counters as `name=value` pairs, for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let named = Counter::ALL.iter().map(|c| (c.name(), "", self.get(*c)));
        let drops = DropReason::ALL.iter().map(|r| ("dropped_", r.name(), self.drops(*r)));
        for (name, suffix, value) in named.chain(drops).filter(|(_, _, v)| *v != 0) {
            write!(f, "{}{name}{suffix}={value}", if first { "" } else { " " })?;
            first = false;
        }
        if first {
            write!(f, "(all zero)")?;
        }
        Ok(())
    }
}

/// Where one worker publishes its counters: written by that worker only (relaxed stores, once
/// per batch), read by anyone. Cache-padded so workers never share a line.
#[derive(Debug)]
pub struct WorkerSlot {
    counters: CachePadded<Published>,
}

/// A [`WorkerSlot`]'s atomics: the counters, drops, histograms and limit counters of [`Stats`].
type Published = ([AtomicU64; COUNTERS], [AtomicU64; DROPS], [AtomicU64; HIST], [AtomicU64; LIMIT]);

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot {
            counters: CachePadded::new((
                std::array::from_fn(|_| AtomicU64::new(0)),
                std::array::from_fn(|_| AtomicU64::new(0)),
                std::array::from_fn(|_| AtomicU64::new(0)),
                std::array::from_fn(|_| AtomicU64::new(0)),
            )),
        }
    }
}

impl WorkerSlot {
    /// Publishes the owner's counters (a plain store each; only the owner writes).
    #[inline]
    pub fn publish(&self, stats: &Stats) {
        for (slot, v) in self.counters.0.iter().zip(stats.counters) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.counters.1.iter().zip(stats.drops) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.counters.2.iter().zip(stats.hist) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.counters.3.iter().zip(stats.limit) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The last published counters.
    pub fn read(&self) -> Stats {
        let mut s = Stats::default();
        for (v, slot) in s.counters.iter_mut().zip(&self.counters.0) {
            *v = slot.load(Ordering::Relaxed);
        }
        for (v, slot) in s.drops.iter_mut().zip(&self.counters.1) {
            *v = slot.load(Ordering::Relaxed);
        }
        for (v, slot) in s.hist.iter_mut().zip(&self.counters.2) {
            *v = slot.load(Ordering::Relaxed);
        }
        for (v, slot) in s.limit.iter_mut().zip(&self.counters.3) {
            *v = slot.load(Ordering::Relaxed);
        }
        s
    }
}

/// The sum over every worker's slot.
pub fn sum(slots: &[WorkerSlot]) -> Stats {
    let mut total = Stats::default();
    for slot in slots {
        total.merge(&slot.read());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_sum() {
        let slots: Vec<WorkerSlot> = (0..2).map(|_| WorkerSlot::default()).collect();
        let mut a = Stats::default();
        a.bump(Counter::ReceivedDatagrams);
        a.dropped(DropReason::NotStun);
        let mut b = Stats::default();
        b.add(Counter::ReceivedDatagrams, 4);
        slots[0].publish(&a);
        slots[1].publish(&b);
        let total = sum(&slots);
        assert_eq!(total.get(Counter::ReceivedDatagrams), 5);
        assert_eq!(total.drops(DropReason::NotStun), 1);
        assert_eq!(total.total_drops(), 1);
        assert_eq!(total.to_string(), "received_datagrams=5 dropped_not_stun=1");
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn a_tally_lands_in_its_counters_and_histograms() {
        let mut errors = SendErrors::default();
        errors.count(libc::EAGAIN, 2);
        errors.count(libc::EINVAL, 1);
        let turn = Tally {
            received_datagrams: 7,
            received_bytes: 140,
            sent_datagrams: 4,
            sent_bytes: 128,
            send_errors: errors,
            send_slots_full: 1,
            ..Tally::default()
        };
        let mut twice = turn;
        twice.add(turn);
        let mut s = Stats::default();
        s.record(&twice, 3_000);
        s.record(&Tally { receive_errors: 1, ..Tally::default() }, 9_999_999);
        assert_eq!(s.get(Counter::Batches), 1, "a turn that received nothing is no batch");
        assert_eq!(s.get(Counter::ReceivedDatagrams), 14);
        assert_eq!(s.get(Counter::SentBytes), 256);
        assert_eq!(s.get(Counter::SendErrorsEagain), 4);
        assert_eq!(s.get(Counter::SendErrorsOther), 2);
        assert_eq!(s.send_errors(), 6);
        assert_eq!(s.get(Counter::SendSlotsFull), 2);
        assert_eq!(s.get(Counter::ReceiveErrors), 1);
        assert_eq!(s.get(Counter::BatchNanoseconds), 3_000);
        assert_eq!(s.batch_sizes()[bucket(&BATCH_SIZE_BUCKETS, 14)], 1);
        assert_eq!(s.batch_durations()[bucket(&BATCH_NANOS_BUCKETS, 3_000)], 1);
        assert_eq!(s.batch_sizes().iter().sum::<u64>(), 1);
    }
}
