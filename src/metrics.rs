//! The Prometheus exporter: one table (`METRICS`) declares every exported metric, its help,
//! its labels and where its samples come from (the workers' counters in [`crate::counters`],
//! the kernel's per-socket drop counters, the reload record). At scrape time the [`Exporter`]
//! sums nothing on the packet path: it reads each worker's published slot and walks the table.
//! A new metric is one row here (plus its [`Counter`] when it counts something new).
//!
//! Must not put shared atomics or locks on the packet path: workers only publish their own
//! slot; everything here runs on the admin thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::counters::{BATCH_NANOS_BUCKETS, BATCH_SIZE_BUCKETS, Counter, DropReason, Stats, WorkerSlot};

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

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Where a metric's samples come from at scrape time.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// One sample (1), labelled with the binary's version.
    Version,
    /// One sample (1), labelled with the data-plane backend.
    Backend,
    /// One sample: the number of workers.
    Workers,
    /// Per worker, one sample: the counter's value.
    Counter(Counter),
    /// Per worker, one sample per entry: the entry's label values (after `worker`, in the
    /// row's label order) and the counter it reads.
    Counters(&'static [(&'static [&'static str], Counter)]),
    /// Per worker, one sample per [`DropReason`].
    Drops,
    /// Per worker socket: the kernel's receive drop counter (/proc/net/udp).
    KernelDrops,
    /// Per worker: the batch-size histogram, its sum the datagrams received.
    BatchSizes,
    /// Per worker: the batch-duration histogram, its sum the time spent, in seconds.
    BatchDurations,
    /// Reloads by result (`success`, `failure`).
    Reloads,
    /// When the configuration last loaded, unix seconds.
    LastReloadTime,
    /// Whether the last reload succeeded (1) or not (0).
    LastReloadOk,
}

impl Source {
    const fn kind(self) -> Kind {
        match self {
            Source::Version | Source::Backend | Source::Workers | Source::LastReloadTime | Source::LastReloadOk => {
                Kind::Gauge
            }
            Source::BatchSizes | Source::BatchDurations => Kind::Histogram,
            Source::Counter(_) | Source::Counters(_) | Source::Drops | Source::KernelDrops | Source::Reloads => {
                Kind::Counter
            }
        }
    }
}

/// One exported metric.
#[derive(Debug)]
struct Row {
    name: &'static str,
    help: &'static str,
    /// Label names, in sample order (per-worker metrics start with `worker`).
    labels: &'static [&'static str],
    source: Source,
}

const fn row(name: &'static str, help: &'static str, labels: &'static [&'static str], source: Source) -> Row {
    Row { name, help, labels, source }
}

/// Every exported metric, in exposition order. [`Exporter::families`] walks this table; a test
/// checks that every [`Counter`] is exported by some row.
const METRICS: &[Row] = &[
    row("stunedge_build_info", "Version of the running binary (always 1).", &["version"], Source::Version),
    row("stunedge_io_backend_info", "Data-plane backend in use (always 1).", &["backend"], Source::Backend),
    row("stunedge_workers", "Worker threads (one per CPU).", &[], Source::Workers),
    row(
        "stunedge_received_datagrams_total",
        "UDP datagrams received.",
        &["worker"],
        Source::Counter(Counter::ReceivedDatagrams),
    ),
    row(
        "stunedge_received_bytes_total",
        "UDP payload bytes received (an oversize datagram counts its real size).",
        &["worker"],
        Source::Counter(Counter::ReceivedBytes),
    ),
    row(
        "stunedge_sent_datagrams_total",
        "UDP datagrams sent (answers).",
        &["worker"],
        Source::Counter(Counter::SentDatagrams),
    ),
    row("stunedge_sent_bytes_total", "UDP payload bytes sent.", &["worker"], Source::Counter(Counter::SentBytes)),
    row(
        "stunedge_requests_total",
        "STUN requests by method (Binding or other).",
        &["worker", "method"],
        Source::Counters(&[(&["binding"], Counter::RequestsBinding), (&["other"], Counter::RequestsOther)]),
    ),
    row(
        "stunedge_classic_requests_total",
        "Of the requests, RFC 3489 classic ones (no magic cookie).",
        &["worker"],
        Source::Counter(Counter::RequestsClassic),
    ),
    row(
        "stunedge_responses_total",
        "Responses sent by class (success, error) and error code (empty for success).",
        &["worker", "class", "code"],
        Source::Counters(&[
            (&["success", ""], Counter::ResponsesSuccess),
            (&["error", "400"], Counter::Responses400),
            (&["error", "401"], Counter::Responses401),
            (&["error", "420"], Counter::Responses420),
            (&["error", "438"], Counter::Responses438),
        ]),
    ),
    row("stunedge_dropped_total", "Datagrams not answered, by reason.", &["worker", "reason"], Source::Drops),
    row(
        "stunedge_auth_total",
        "Authentication outcomes: authenticated, rejected (401), stale_nonce (438).",
        &["worker", "outcome"],
        Source::Counters(&[
            (&["authenticated"], Counter::RequestsAuthenticated),
            (&["rejected"], Counter::Responses401),
            (&["stale_nonce"], Counter::Responses438),
        ]),
    ),
    row(
        "stunedge_rfc5780_answers_total",
        "RFC 5780 answers: sent from another address (changed), to another port (response_port), padded.",
        &["worker", "kind"],
        Source::Counters(&[
            (&["changed"], Counter::Rfc5780Changed),
            (&["response_port"], Counter::Rfc5780ResponsePort),
            (&["padded"], Counter::Rfc5780Padded),
        ]),
    ),
    row(
        "stunedge_send_errors_total",
        "Answers the kernel refused to send, by errno.",
        &["worker", "errno"],
        Source::Counters(&[
            (&["EAGAIN"], Counter::SendErrorsEagain),
            (&["ENOBUFS"], Counter::SendErrorsEnobufs),
            (&["EPERM"], Counter::SendErrorsEperm),
            (&["other"], Counter::SendErrorsOther),
        ]),
    ),
    row(
        "stunedge_receive_errors_total",
        "Receive calls or completions that failed.",
        &["worker"],
        Source::Counter(Counter::ReceiveErrors),
    ),
    row(
        "stunedge_kernel_receive_drops_total",
        "Datagrams the kernel dropped before stunedge read them (socket buffer full), per socket.",
        &["worker", "listener"],
        Source::KernelDrops,
    ),
    row(
        "stunedge_batches_total",
        "Batches processed (one receive call or io_uring turn with data).",
        &["worker"],
        Source::Counter(Counter::Batches),
    ),
    row("stunedge_batch_size", "Datagrams per batch.", &["worker"], Source::BatchSizes),
    row(
        "stunedge_batch_duration_seconds",
        "Time to process a batch, first datagram to answers handed to the kernel.",
        &["worker"],
        Source::BatchDurations,
    ),
    row(
        "stunedge_send_slots_full_total",
        "io_uring: answers dropped because every send slot was busy.",
        &["worker"],
        Source::Counter(Counter::SendSlotsFull),
    ),
    row(
        "stunedge_multishot_rearms_total",
        "io_uring: multishot receives re-armed after the kernel ended them.",
        &["worker"],
        Source::Counter(Counter::MultishotRearms),
    ),
    row(
        "stunedge_buffer_ring_exhausted_total",
        "io_uring: multishot receives ended because the buffer ring was empty.",
        &["worker"],
        Source::Counter(Counter::BufferRingExhausted),
    ),
    row(
        "stunedge_cq_overflow_total",
        "io_uring: completions the completion queue could not hold.",
        &["worker"],
        Source::Counter(Counter::CqOverflow),
    ),
    row("stunedge_config_reloads_total", "Configuration reloads (SIGHUP) by result.", &["result"], Source::Reloads),
    row(
        "stunedge_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully.",
        &[],
        Source::LastReloadTime,
    ),
    row(
        "stunedge_config_last_reload_successful",
        "Whether the last reload succeeded (1) or kept the old configuration (0).",
        &[],
        Source::LastReloadOk,
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

/// One sample of `row`: `values` are its label values in the row's label order.
fn sample(row: &Row, values: &[&str], value: f64) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels(row, values));
    if row.source.kind() == Kind::Gauge {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    } else {
        let mut c = proto::Counter::default();
        c.set_value(value);
        m.set_counter(c);
    }
    m
}

fn labels(row: &Row, values: &[&str]) -> Vec<proto::LabelPair> {
    debug_assert_eq!(row.labels.len(), values.len(), "{}", row.name);
    row.labels
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut l = proto::LabelPair::default();
            l.set_name(name.to_string());
            l.set_value(value.to_string());
            l
        })
        .collect()
}

/// One histogram sample of `row` from non-cumulative bucket `counts` (the last is +Inf) and
/// the finite `bounds`.
fn histogram(row: &Row, values: &[&str], counts: &[u64], bounds: &[f64], sum: f64) -> proto::Metric {
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    // Finite bounds only: the encoder writes the +Inf bucket from the sample count.
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
    m.set_label(labels(row, values));
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
            .map(|row| {
                let labels = row.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(row.name.to_string(), row.help.to_string(), labels, HashMap::new())
                    .unwrap_or_else(|e| unreachable!("metric table row {} is valid: {e}", row.name))
            })
            .collect();
        Exporter { slots, cpus, backend, sockets, reloads, descs }
    }

    /// Every metric family, read now.
    pub fn families(&self) -> Vec<MetricFamily> {
        let per_worker: Vec<(String, Stats)> =
            self.cpus.iter().zip(self.slots.iter()).map(|(cpu, slot)| (cpu.to_string(), slot.read())).collect();
        METRICS
            .iter()
            .map(|row| {
                let mut f = MetricFamily::default();
                f.set_name(row.name.to_string());
                f.set_help(row.help.to_string());
                f.set_field_type(match row.source.kind() {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Histogram => MetricType::HISTOGRAM,
                });
                f.set_metric(self.samples(row, &per_worker));
                f
            })
            .collect()
    }

    /// The samples of one row, from the workers' counters `per_worker` (worker label, stats).
    fn samples(&self, row: &Row, per_worker: &[(String, Stats)]) -> Vec<proto::Metric> {
        let r = &self.reloads;
        match row.source {
            Source::Version => vec![sample(row, &[env!("CARGO_PKG_VERSION")], 1.0)],
            Source::Backend => vec![sample(row, &[self.backend], 1.0)],
            Source::Workers => vec![sample(row, &[], self.cpus.len() as f64)],
            Source::Counter(c) => per_worker.iter().map(|(w, s)| sample(row, &[w], s.get(c) as f64)).collect(),
            Source::Counters(entries) => per_worker
                .iter()
                .flat_map(|(w, s)| {
                    entries.iter().map(move |(values, c)| {
                        let mut all = vec![w.as_str()];
                        all.extend_from_slice(values);
                        sample(row, &all, s.get(*c) as f64)
                    })
                })
                .collect(),
            Source::Drops => per_worker
                .iter()
                .flat_map(|(w, s)| DropReason::ALL.iter().map(move |r| sample(row, &[w, r.name()], s.drops(*r) as f64)))
                .collect(),
            Source::KernelDrops => {
                let kernel = kernel_drops();
                self.sockets
                    .iter()
                    .map(|s| {
                        let drops = kernel.get(&s.inode).copied().unwrap_or(0);
                        sample(row, &[&s.worker.to_string(), &s.listener.to_string()], drops as f64)
                    })
                    .collect()
            }
            Source::BatchSizes => {
                let bounds: Vec<f64> = BATCH_SIZE_BUCKETS.iter().map(|b| *b as f64).collect();
                per_worker
                    .iter()
                    .map(|(w, s)| {
                        histogram(row, &[w], s.batch_sizes(), &bounds, s.get(Counter::ReceivedDatagrams) as f64)
                    })
                    .collect()
            }
            Source::BatchDurations => {
                let bounds: Vec<f64> = BATCH_NANOS_BUCKETS.iter().map(|b| *b as f64 / 1e9).collect();
                per_worker
                    .iter()
                    .map(|(w, s)| {
                        let sum = s.get(Counter::BatchNanoseconds) as f64 / 1e9;
                        histogram(row, &[w], s.batch_durations(), &bounds, sum)
                    })
                    .collect()
            }
            Source::Reloads => vec![
                sample(row, &["success"], r.successes.load(Ordering::Relaxed) as f64),
                sample(row, &["failure"], r.failures.load(Ordering::Relaxed) as f64),
            ],
            Source::LastReloadTime => vec![sample(row, &[], r.last_success_unix.load(Ordering::Relaxed) as f64)],
            Source::LastReloadOk => {
                vec![sample(row, &[], if r.last_ok.load(Ordering::Relaxed) { 1.0 } else { 0.0 })]
            }
        }
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
        a.record(&crate::counters::Tally { received_datagrams: 7, ..Default::default() }, 3_000);
        a.record(&crate::counters::Tally { received_datagrams: 600, ..Default::default() }, 20_000_000);
        a.dropped(DropReason::NotStun);
        slots[0].publish(&a);
        let sockets = vec![SocketInfo { worker: 3, listener: "127.0.0.1:3478".parse().unwrap(), inode: 1 }];
        let e = Exporter::new(slots, vec![3, 5], "mmsg", sockets, Arc::new(ReloadStats::new(100)));
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        let declared: Vec<String> = METRICS.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(names, declared);
        let registry = prometheus::Registry::new();
        registry.register(Box::new(e)).unwrap();
        let gathered = registry.gather();
        assert_eq!(gathered.len(), METRICS.len());
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &gathered, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("stunedge_received_datagrams_total{worker=\"3\"} 607"), "{text}");
        assert!(text.contains("stunedge_dropped_total{worker=\"3\",reason=\"not_stun\"} 1"), "{text}");
        assert!(text.contains("stunedge_batch_size_bucket{worker=\"3\",le=\"8\"} 1"), "{text}");
        assert!(text.contains("stunedge_batch_size_bucket{worker=\"3\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("stunedge_batch_duration_seconds_bucket{worker=\"3\",le=\"0.000005\"} 1"), "{text}");
        assert!(text.contains("stunedge_io_backend_info{backend=\"mmsg\"} 1"), "{text}");
        assert!(text.contains("stunedge_config_last_reload_success_timestamp_seconds 100"), "{text}");
    }

    #[test]
    fn every_counter_is_exported_and_every_row_is_labelled_consistently() {
        let mut exported: Vec<Counter> = vec![Counter::BatchNanoseconds]; // the duration histogram's sum
        for row in METRICS {
            match row.source {
                Source::Counter(c) => {
                    assert_eq!(row.labels, ["worker"], "{}", row.name);
                    exported.push(c);
                }
                Source::Counters(entries) => {
                    assert_eq!(row.labels[0], "worker", "{}", row.name);
                    for (values, c) in entries {
                        assert_eq!(values.len() + 1, row.labels.len(), "{}", row.name);
                        exported.push(*c);
                    }
                }
                _ => {}
            }
        }
        for c in Counter::ALL {
            assert!(exported.contains(c), "{c:?} is counted but exported by no row of METRICS");
        }
    }
}
