//! Every counter stunedge keeps and every Prometheus metric it exports, declared in one place.
//! A worker bumps plain `u64`s in its own [`Stats`] (no atomics, no sharing on the packet path)
//! and publishes them once per loop turn into its own cache-padded [`WorkerSlot`] with relaxed
//! stores; readers (logs, tests, the [`Exporter`], a prometheus `Collector`) read the slots at
//! scrape time and label them by worker. Nothing here is shared between workers.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::handler::DropReason;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// A counter (the per-reason drop counters are indexed by [`DropReason`] instead).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$( Counter::$variant, )*];

            /// The counter's name, `snake_case`.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }
        }
    };
}

counters! {
    /// Datagrams received.
    DatagramsIn => "datagrams_in",
    /// Bytes received (UDP payload).
    BytesIn => "bytes_in",
    /// Datagrams sent.
    DatagramsOut => "datagrams_out",
    /// Bytes sent (UDP payload).
    BytesOut => "bytes_out",
    /// Replies the kernel refused with EAGAIN (send queue full); each is lost.
    SendErrorsEagain => "send_errors_eagain",
    /// Replies the kernel refused with ENOBUFS.
    SendErrorsEnobufs => "send_errors_enobufs",
    /// Replies the kernel refused with EPERM (a firewall rule, usually).
    SendErrorsEperm => "send_errors_eperm",
    /// Replies the kernel refused with another errno.
    SendErrorsOther => "send_errors_other",
    /// Receive calls that failed with an error other than "would block".
    RecvErrors => "recv_errors",
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
    /// Requests of other methods (answered 400).
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
    /// Requests whose credentials were checked and accepted (their answers are signed).
    RequestsAuthenticated => "requests_authenticated",
    /// RFC 5780: answers sent from another socket (CHANGE-REQUEST).
    DiscoveryChanged => "rfc5780_changed",
    /// RFC 5780: answers sent to another port (RESPONSE-PORT).
    DiscoveryResponsePort => "rfc5780_response_port",
    /// RFC 5780: answers carrying PADDING.
    DiscoveryPadded => "rfc5780_padded",
    /// Time spent processing batches (from the first datagram of a batch to its answers
    /// handed to the kernel), in nanoseconds: the histogram's sum.
    BatchNanoseconds => "batch_nanoseconds",
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

/// One worker's counters: plain integers, owned by that worker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    counters: [u64; COUNTERS],
    drops: [u64; DROPS],
    /// Histogram buckets (not cumulative): batch sizes, then batch durations.
    hist: [u64; HIST],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { counters: [0; COUNTERS], drops: [0; DROPS], hist: [0; HIST] }
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

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Records one batch: its size and the nanoseconds spent on it (batch count and datagram
    /// total are the `Batches` and `DatagramsIn` counters, kept by the caller).
    #[inline]
    pub fn observe_batch(&mut self, datagrams: u64, nanos: u64) {
        self.hist[bucket(&BATCH_SIZE_BUCKETS, datagrams)] += 1;
        self.hist[SIZE_SLOTS + bucket(&BATCH_NANOS_BUCKETS, nanos)] += 1;
        self.counters[Counter::BatchNanoseconds as usize] += nanos;
    }

    /// Batches per batch-size bucket (not cumulative; the last is +Inf).
    pub fn batch_sizes(&self) -> &[u64] {
        &self.hist[..SIZE_SLOTS]
    }

    /// Batches per duration bucket (not cumulative; the last is +Inf).
    pub fn batch_durations(&self) -> &[u64] {
        &self.hist[SIZE_SLOTS..]
    }

    /// Counts send errors by errno.
    #[inline]
    pub fn send_errors_add(&mut self, e: crate::io::SendErrors) {
        self.add(Counter::SendErrorsEagain, e.again);
        self.add(Counter::SendErrorsEnobufs, e.nobufs);
        self.add(Counter::SendErrorsEperm, e.perm);
        self.add(Counter::SendErrorsOther, e.other);
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
    counters: CachePadded<([AtomicU64; COUNTERS], [AtomicU64; DROPS], [AtomicU64; HIST])>,
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot {
            counters: CachePadded::new((
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

/// Configuration reloads, written by the main thread, read at scrape time.
#[derive(Debug, Default)]
pub struct ReloadStats {
    successes: AtomicU64,
    failures: AtomicU64,
    last_success_unix: AtomicU64,
    last_ok: AtomicBool,
}

impl ReloadStats {
    /// A fresh record: the start-up load counts as the last success, at `now` (unix seconds).
    pub fn new(now: u64) -> ReloadStats {
        let r = ReloadStats::default();
        r.last_success_unix.store(now, Ordering::Relaxed);
        r.last_ok.store(true, Ordering::Relaxed);
        r
    }

    /// Records one reload's outcome.
    pub fn record(&self, ok: bool, now: u64) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
            self.last_success_unix.store(now, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_ok.store(ok, Ordering::Relaxed);
    }
}

/// One worker's socket for one listen address, for the kernel's per-socket drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// The worker's CPU.
    pub worker: usize,
    /// The listen address.
    pub listener: SocketAddr,
    /// The socket's inode (as /proc/net/udp lists it).
    pub inode: u64,
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every exported metric: name, help, type and label names. [`Exporter::families`] emits
/// exactly these (a test checks both directions).
const METRICS: &[(&str, &str, Kind, &[&str])] = &[
    ("stunedge_build_info", "Version of the running binary (always 1).", Kind::Gauge, &["version"]),
    ("stunedge_io_backend_info", "Data-plane backend in use (always 1).", Kind::Gauge, &["backend"]),
    ("stunedge_workers", "Worker threads (one per CPU).", Kind::Gauge, &[]),
    ("stunedge_received_datagrams_total", "UDP datagrams received.", Kind::Counter, &["worker"]),
    ("stunedge_received_bytes_total", "UDP payload bytes received.", Kind::Counter, &["worker"]),
    ("stunedge_sent_datagrams_total", "UDP datagrams sent (answers).", Kind::Counter, &["worker"]),
    ("stunedge_sent_bytes_total", "UDP payload bytes sent.", Kind::Counter, &["worker"]),
    ("stunedge_requests_total", "STUN requests by method (Binding or other).", Kind::Counter, &["worker", "method"]),
    (
        "stunedge_classic_requests_total",
        "Of the requests, RFC 3489 classic ones (no magic cookie).",
        Kind::Counter,
        &["worker"],
    ),
    (
        "stunedge_responses_total",
        "Responses sent by class (success, error) and error code (empty for success).",
        Kind::Counter,
        &["worker", "class", "code"],
    ),
    ("stunedge_dropped_total", "Datagrams not answered, by reason.", Kind::Counter, &["worker", "reason"]),
    (
        "stunedge_auth_total",
        "Authentication outcomes: authenticated, rejected (401), stale_nonce (438).",
        Kind::Counter,
        &["worker", "outcome"],
    ),
    (
        "stunedge_rfc5780_answers_total",
        "RFC 5780 answers: sent from another address (changed), to another port (response_port), padded.",
        Kind::Counter,
        &["worker", "kind"],
    ),
    (
        "stunedge_send_errors_total",
        "Answers the kernel refused to send, by errno.",
        Kind::Counter,
        &["worker", "errno"],
    ),
    ("stunedge_receive_errors_total", "Receive calls or completions that failed.", Kind::Counter, &["worker"]),
    (
        "stunedge_kernel_receive_drops_total",
        "Datagrams the kernel dropped before stunedge read them (socket buffer full), per socket.",
        Kind::Counter,
        &["worker", "listener"],
    ),
    (
        "stunedge_batches_total",
        "Batches processed (one receive call or io_uring turn with data).",
        Kind::Counter,
        &["worker"],
    ),
    ("stunedge_batch_size", "Datagrams per batch.", Kind::Histogram, &["worker"]),
    (
        "stunedge_batch_duration_seconds",
        "Time to process a batch, first datagram to answers handed to the kernel.",
        Kind::Histogram,
        &["worker"],
    ),
    (
        "stunedge_send_slots_full_total",
        "io_uring: answers dropped because every send slot was busy.",
        Kind::Counter,
        &["worker"],
    ),
    (
        "stunedge_multishot_rearms_total",
        "io_uring: multishot receives re-armed after the kernel ended them.",
        Kind::Counter,
        &["worker"],
    ),
    (
        "stunedge_buffer_ring_exhausted_total",
        "io_uring: multishot receives ended because the buffer ring was empty.",
        Kind::Counter,
        &["worker"],
    ),
    (
        "stunedge_cq_overflow_total",
        "io_uring: completions the completion queue could not hold.",
        Kind::Counter,
        &["worker"],
    ),
    ("stunedge_config_reloads_total", "Configuration reloads (SIGHUP) by result.", Kind::Counter, &["result"]),
    (
        "stunedge_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully.",
        Kind::Gauge,
        &[],
    ),
    (
        "stunedge_config_last_reload_successful",
        "Whether the last reload succeeded (1) or kept the old configuration (0).",
        Kind::Gauge,
        &[],
    ),
];

/// Reads the workers' slots and the kernel's socket counters at scrape time and turns them into
/// Prometheus metric families, labelled by worker CPU. Also a prometheus [`Collector`].
#[derive(Debug)]
pub struct Exporter {
    slots: Arc<[WorkerSlot]>,
    cpus: Vec<usize>,
    backend: &'static str,
    sockets: Vec<SocketInfo>,
    reloads: Arc<ReloadStats>,
    descs: Vec<Desc>,
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut l = proto::LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn sample(labels: &[(&str, &str)], value: f64, kind: &Kind) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels.iter().map(|(n, v)| label(n, v)).collect());
    match kind {
        Kind::Gauge => {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        _ => {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
    }
    m
}

fn histogram(labels: &[(&str, &str)], counts: &[u64], bounds: &[f64], sum: f64) -> proto::Metric {
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    for (count, bound) in counts.iter().zip(bounds) {
        cumulative += count;
        let mut b = proto::Bucket::default();
        b.set_cumulative_count(cumulative);
        b.set_upper_bound(*bound);
        buckets.push(b);
    }
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    let mut m = proto::Metric::default();
    m.set_label(labels.iter().map(|(n, v)| label(n, v)).collect());
    m.set_histogram(h);
    m
}

/// The kernel's drop counter of every UDP socket, by inode (/proc/net/udp and udp6: the last
/// column). Missing files give an empty map.
fn kernel_drops() -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let (Some(inode), Some(drops)) = (fields.get(9), fields.get(12)) {
                if let (Ok(inode), Ok(drops)) = (inode.parse(), drops.parse()) {
                    out.insert(inode, drops);
                }
            }
        }
    }
    out
}

impl Exporter {
    /// An exporter over the workers' `slots` (one per CPU in `cpus`, same order).
    pub fn new(
        slots: Arc<[WorkerSlot]>,
        cpus: Vec<usize>,
        backend: &'static str,
        sockets: Vec<SocketInfo>,
        reloads: Arc<ReloadStats>,
    ) -> Exporter {
        let descs = METRICS
            .iter()
            .map(|(name, help, _, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new())
                    .unwrap_or_else(|e| unreachable!("metric table entry {name} is valid: {e}"))
            })
            .collect();
        Exporter { slots, cpus, backend, sockets, reloads, descs }
    }

    /// Every metric family, read now.
    pub fn families(&self) -> Vec<MetricFamily> {
        let per_worker: Vec<(String, Stats)> =
            self.cpus.iter().zip(self.slots.iter()).map(|(cpu, slot)| (cpu.to_string(), slot.read())).collect();
        let mut families: Vec<MetricFamily> = Vec::with_capacity(METRICS.len());
        let mut family = |name: &str, metrics: Vec<proto::Metric>| {
            let (_, help, kind, _) =
                METRICS.iter().find(|m| m.0 == name).unwrap_or_else(|| unreachable!("{name} is in METRICS"));
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(match kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge => MetricType::GAUGE,
                Kind::Histogram => MetricType::HISTOGRAM,
            });
            f.set_metric(metrics);
            families.push(f);
        };
        // Per worker, one sample per entry: the `worker` label, then the entry's labels.
        let split = |entries: &[(&[(&str, &str)], Counter)]| -> Vec<proto::Metric> {
            per_worker
                .iter()
                .flat_map(|(w, s)| {
                    entries.iter().map(move |(labels, c)| {
                        let mut all = vec![("worker", w.as_str())];
                        all.extend_from_slice(labels);
                        sample(&all, s.get(*c) as f64, &Kind::Counter)
                    })
                })
                .collect()
        };
        // One sample per worker, labelled by worker only.
        let each = |c: Counter| split(&[(&[], c)]);

        family("stunedge_build_info", vec![sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0, &Kind::Gauge)]);
        family("stunedge_io_backend_info", vec![sample(&[("backend", self.backend)], 1.0, &Kind::Gauge)]);
        family("stunedge_workers", vec![sample(&[], self.cpus.len() as f64, &Kind::Gauge)]);
        family("stunedge_received_datagrams_total", each(Counter::DatagramsIn));
        family("stunedge_received_bytes_total", each(Counter::BytesIn));
        family("stunedge_sent_datagrams_total", each(Counter::DatagramsOut));
        family("stunedge_sent_bytes_total", each(Counter::BytesOut));
        family(
            "stunedge_requests_total",
            split(&[
                (&[("method", "binding")], Counter::RequestsBinding),
                (&[("method", "other")], Counter::RequestsOther),
            ]),
        );
        family("stunedge_classic_requests_total", each(Counter::RequestsClassic));
        family(
            "stunedge_responses_total",
            split(&[
                (&[("class", "success"), ("code", "")], Counter::ResponsesSuccess),
                (&[("class", "error"), ("code", "400")], Counter::Responses400),
                (&[("class", "error"), ("code", "401")], Counter::Responses401),
                (&[("class", "error"), ("code", "420")], Counter::Responses420),
                (&[("class", "error"), ("code", "438")], Counter::Responses438),
            ]),
        );
        let mut drops = Vec::new();
        for (w, s) in &per_worker {
            for r in DropReason::ALL {
                drops.push(sample(&[("worker", w), ("reason", r.name())], s.drops(*r) as f64, &Kind::Counter));
            }
        }
        family("stunedge_dropped_total", drops);
        family(
            "stunedge_auth_total",
            split(&[
                (&[("outcome", "authenticated")], Counter::RequestsAuthenticated),
                (&[("outcome", "rejected")], Counter::Responses401),
                (&[("outcome", "stale_nonce")], Counter::Responses438),
            ]),
        );
        family(
            "stunedge_rfc5780_answers_total",
            split(&[
                (&[("kind", "changed")], Counter::DiscoveryChanged),
                (&[("kind", "response_port")], Counter::DiscoveryResponsePort),
                (&[("kind", "padded")], Counter::DiscoveryPadded),
            ]),
        );
        family(
            "stunedge_send_errors_total",
            split(&[
                (&[("errno", "EAGAIN")], Counter::SendErrorsEagain),
                (&[("errno", "ENOBUFS")], Counter::SendErrorsEnobufs),
                (&[("errno", "EPERM")], Counter::SendErrorsEperm),
                (&[("errno", "other")], Counter::SendErrorsOther),
            ]),
        );
        family("stunedge_receive_errors_total", each(Counter::RecvErrors));
        let kernel = kernel_drops();
        let socket_drops = self
            .sockets
            .iter()
            .map(|s| {
                let labels = [("worker", s.worker.to_string()), ("listener", s.listener.to_string())];
                let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
                sample(&labels, kernel.get(&s.inode).copied().unwrap_or(0) as f64, &Kind::Counter)
            })
            .collect();
        family("stunedge_kernel_receive_drops_total", socket_drops);
        family("stunedge_batches_total", each(Counter::Batches));
        // Finite bounds only: the encoder writes the +Inf bucket from the sample count.
        let size_bounds: Vec<f64> = BATCH_SIZE_BUCKETS.iter().map(|b| *b as f64).collect();
        let time_bounds: Vec<f64> = BATCH_NANOS_BUCKETS.iter().map(|b| *b as f64 / 1e9).collect();
        family(
            "stunedge_batch_size",
            per_worker
                .iter()
                .map(|(w, s)| {
                    histogram(&[("worker", w)], s.batch_sizes(), &size_bounds, s.get(Counter::DatagramsIn) as f64)
                })
                .collect(),
        );
        family(
            "stunedge_batch_duration_seconds",
            per_worker
                .iter()
                .map(|(w, s)| {
                    let sum = s.get(Counter::BatchNanoseconds) as f64 / 1e9;
                    histogram(&[("worker", w)], s.batch_durations(), &time_bounds, sum)
                })
                .collect(),
        );
        family("stunedge_send_slots_full_total", each(Counter::SendSlotsFull));
        family("stunedge_multishot_rearms_total", each(Counter::MultishotRearms));
        family("stunedge_buffer_ring_exhausted_total", each(Counter::BufferRingExhausted));
        family("stunedge_cq_overflow_total", each(Counter::CqOverflow));
        let r = &self.reloads;
        family(
            "stunedge_config_reloads_total",
            vec![
                sample(&[("result", "success")], r.successes.load(Ordering::Relaxed) as f64, &Kind::Counter),
                sample(&[("result", "failure")], r.failures.load(Ordering::Relaxed) as f64, &Kind::Counter),
            ],
        );
        family(
            "stunedge_config_last_reload_success_timestamp_seconds",
            vec![sample(&[], r.last_success_unix.load(Ordering::Relaxed) as f64, &Kind::Gauge)],
        );
        family(
            "stunedge_config_last_reload_successful",
            vec![sample(&[], if r.last_ok.load(Ordering::Relaxed) { 1.0 } else { 0.0 }, &Kind::Gauge)],
        );
        families
    }

    /// The Prometheus text exposition of [`Exporter::families`].
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.families(), &mut out) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_emits_exactly_the_declared_metrics_and_passes_a_registry() {
        let slots: Arc<[WorkerSlot]> = (0..2).map(|_| WorkerSlot::default()).collect();
        let mut a = Stats::default();
        a.add(Counter::DatagramsIn, 7);
        a.observe_batch(7, 3_000);
        a.observe_batch(600, 20_000_000);
        a.dropped(DropReason::NotStun);
        slots[0].publish(&a);
        let sockets = vec![SocketInfo { worker: 3, listener: "127.0.0.1:3478".parse().unwrap(), inode: 1 }];
        let e = Exporter::new(slots, vec![3, 5], "mmsg", sockets, Arc::new(ReloadStats::new(100)));
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        let declared: Vec<String> = METRICS.iter().map(|m| m.0.to_string()).collect();
        assert_eq!(names, declared);
        let registry = prometheus::Registry::new();
        registry.register(Box::new(e)).unwrap();
        let gathered = registry.gather();
        assert_eq!(gathered.len(), METRICS.len());
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &gathered, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("stunedge_received_datagrams_total{worker=\"3\"} 7"), "{text}");
        assert!(text.contains("stunedge_dropped_total{worker=\"3\",reason=\"not_stun\"} 1"), "{text}");
        assert!(text.contains("stunedge_batch_size_bucket{worker=\"3\",le=\"8\"} 1"), "{text}");
        assert!(text.contains("stunedge_batch_size_bucket{worker=\"3\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("stunedge_batch_duration_seconds_bucket{worker=\"3\",le=\"0.000005\"} 1"), "{text}");
        assert!(text.contains("stunedge_io_backend_info{backend=\"mmsg\"} 1"), "{text}");
        assert!(text.contains("stunedge_config_last_reload_success_timestamp_seconds 100"), "{text}");
    }

    #[test]
    fn publish_and_sum() {
        let slots: Vec<WorkerSlot> = (0..2).map(|_| WorkerSlot::default()).collect();
        let mut a = Stats::default();
        a.bump(Counter::DatagramsIn);
        a.dropped(DropReason::NotStun);
        let mut b = Stats::default();
        b.add(Counter::DatagramsIn, 4);
        slots[0].publish(&a);
        slots[1].publish(&b);
        let total = sum(&slots);
        assert_eq!(total.get(Counter::DatagramsIn), 5);
        assert_eq!(total.drops(DropReason::NotStun), 1);
        assert_eq!(total.total_drops(), 1);
        assert_eq!(total.to_string(), "datagrams_in=5 dropped_not_stun=1");
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
