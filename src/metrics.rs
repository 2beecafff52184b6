//! The Prometheus exporter: one table (`METRICS`) declares every exported metric, its help,
//! its labels and where its samples come from (the workers' counters in [`crate::counters`],
//! the kernel's per-socket drop counters, the reload record, the rate limiter's shared table,
//! the TURN balancer's per-backend state, the XDP fast path's counters and attachments).
//! At scrape time the [`Exporter`] sums nothing on the packet path: it reads each worker's
//! published slot and walks the table.
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

use crate::counters::{
    AnswerClass, BATCH_NANOS_BUCKETS, BATCH_SIZE_BUCKETS, Counter, DropReason, FAMILIES, LIMIT_LEVELS, LimitAction,
    Stats, WorkerSlot,
};
use crate::lb::{self, Health, PROBE_MICROS_BUCKETS, ProbeResult, StreamResult};
use crate::limit::{Limit, TICK_MS};
use crate::xdp::{self, XdpView};

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
    /// Per worker, address family and answer class, one sample per [`LimitAction`].
    LimitDecisions,
    /// Per worker, family and class, one sample per level of [`LIMIT_LEVELS`].
    LimitedAt,
    /// Per worker, family and class: request bytes (`in`) and answer bytes (`out`).
    LimitBytes,
    /// Per worker, family and class: answers trimmed to fit the amplification cap.
    LimitTrimmed,
    /// One sample read from the limiter at scrape time; none without [`Exporter::with_limit`].
    Limiter(LimiterGauge),
    /// Read from the TURN balancer at scrape time; none without [`Exporter::with_turn_lb`] or
    /// when no listener balances.
    Turn(TurnSeries),
    /// Read from the XDP fast path at scrape time; none without [`Exporter::with_xdp`] or when
    /// it is not running.
    Xdp(XdpSeries),
    /// Read from the stream plane at scrape time; none without [`Exporter::with_stream`].
    Stream(StreamSeries),
}

/// What a [`Source::Stream`] row reads from the stream plane's [`StreamView`].
#[derive(Debug, Clone, Copy)]
enum StreamSeries {
    /// Per transport: open connections.
    Open,
    /// TLS handshakes in progress.
    Handshaking,
    /// Per transport: connections accepted (admitted).
    Accepted,
    /// Per transport and reason: connections refused at once.
    Refused,
    /// Per transport and reason: connections closed.
    Closed,
    /// Per transport: whole STUN messages read.
    Messages,
    /// Per transport: answers written.
    Answers,
    /// Per transport: ChannelData messages skipped.
    ChannelData,
    /// Per TLS version: handshakes completed.
    TlsHandshakes,
    /// Per reason: handshakes that failed.
    TlsFailures,
}

/// The stream plane's counters (src/stream/ fills this at scrape time: the plane sits above
/// this room, so the type lives here).
#[derive(Debug, Clone, Default)]
pub struct StreamView {
    /// Per transport (`tcp`, `tls`) with a listener.
    pub transports: Vec<TransportCounts>,
    /// TLS handshakes in progress.
    pub handshaking: u64,
    /// Completed handshakes by version label (`1.3`, `1.2`).
    pub tls_handshakes: Vec<(&'static str, u64)>,
    /// Failed handshakes by reason.
    pub tls_failures: Vec<(&'static str, u64)>,
    /// Each stream thread's handler counters, labelled like a worker (`stream0`, ...).
    pub stats: Vec<(String, Stats)>,
}

/// One transport's connection counters in a [`StreamView`].
#[derive(Debug, Clone, Default)]
pub struct TransportCounts {
    /// `tcp` or `tls`.
    pub transport: &'static str,
    /// Open now.
    pub open: u64,
    /// Admitted.
    pub accepted: u64,
    /// Whole messages read.
    pub messages: u64,
    /// Answers written.
    pub answers: u64,
    /// ChannelData skipped.
    pub channel_data: u64,
    /// Refused by reason (every reason, zeros included).
    pub refused: Vec<(&'static str, u64)>,
    /// Closed by reason (every reason, zeros included).
    pub closed: Vec<(&'static str, u64)>,
}

/// What a [`Source::Xdp`] row reads from the fast path.
#[derive(Debug, Clone, Copy)]
enum XdpSeries {
    /// One sample per (family, reason) of the program's counters: `answered` (XDP_TX) or why
    /// the frame was passed to the kernel.
    Packets,
    /// One sample (1) per attachment, labelled with the interface and its mode.
    Attached,
}

/// What a [`Source::Turn`] row reads from the balancer's live state. A backend address's
/// state is its health, except that one drained by the configuration is `draining` whatever
/// its probes say ([`turn_state`]).
#[derive(Debug, Clone, Copy)]
enum TurnSeries {
    /// Per backend address: 1 when it gets new clients, else 0.
    Up,
    /// Per backend address, one sample per [`Health`]: 1 for its state, 0 for the others.
    State,
    /// Per backend address: the 300s that named it.
    Redirects,
    /// Per backend address, one sample per [`ProbeResult`].
    Probes,
    /// Per backend address: the probe round-trip histogram, in seconds.
    ProbeDurations,
    /// One sample per [`Health`]: the backend addresses in that state.
    Backends,
    /// Per TCP or TLS address of a backend address: 1 while its connect probes accept it (up,
    /// or not probed yet), else 0.
    StreamUp,
    /// Per TCP or TLS address of a backend address, one sample per [`StreamResult`].
    StreamProbes,
}

/// What a [`Source::Limiter`] row reads from the limiter.
#[derive(Debug, Clone, Copy)]
enum LimiterGauge {
    /// The table's size in keys.
    Capacity,
    /// Keys whose decayed load is above zero now (walks the whole table).
    Occupied,
    /// The table's memory.
    Bytes,
    /// The mode (1, labelled with its name).
    Mode,
    /// The configured `max_amplification` (0: no cap).
    MaxAmplification,
}

impl Source {
    const fn kind(self) -> Kind {
        match self {
            Source::Version
            | Source::Backend
            | Source::Workers
            | Source::LastReloadTime
            | Source::LastReloadOk
            | Source::Limiter(_)
            | Source::Turn(TurnSeries::Up | TurnSeries::State | TurnSeries::Backends | TurnSeries::StreamUp)
            | Source::Xdp(XdpSeries::Attached)
            | Source::Stream(StreamSeries::Open | StreamSeries::Handshaking) => Kind::Gauge,
            Source::BatchSizes | Source::BatchDurations | Source::Turn(TurnSeries::ProbeDurations) => Kind::Histogram,
            Source::Counter(_)
            | Source::Counters(_)
            | Source::Drops
            | Source::KernelDrops
            | Source::Reloads
            | Source::LimitDecisions
            | Source::LimitedAt
            | Source::LimitBytes
            | Source::LimitTrimmed
            | Source::Turn(TurnSeries::Redirects | TurnSeries::Probes | TurnSeries::StreamProbes)
            | Source::Xdp(XdpSeries::Packets)
            | Source::Stream(_) => Kind::Counter,
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
            (&["error", "300"], Counter::Responses300),
            (&["error", "437"], Counter::Responses437),
            (&["error", "508"], Counter::Responses508),
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
    row(
        "stunedge_limit_decisions_total",
        "Response rate limit decisions per answer, by destination family and answer class: pass (within the \
         prefix's budget), exempt (valid nonce or loopback, not counted), allowlisted (within its allowlist \
         entry's budget), leak (over budget, minimal answer), drop (over budget, not answered), would_leak and \
         would_drop (dry run: what enforce would do; answered in full).",
        &["worker", "family", "class", "action"],
        Source::LimitDecisions,
    ),
    row(
        "stunedge_limit_limited_total",
        "Answers over a rate limit (leaked, dropped, or would-be in a dry run), by the level over budget: the \
         prefix length (IPv4 32, 24, 20, 18; IPv6 128, 64, 56, 48) or the allowlist entry (allow).",
        &["worker", "family", "class", "level"],
        Source::LimitedAt,
    ),
    row(
        "stunedge_limit_bytes_total",
        "UDP payload bytes of requests given an answer class (direction in) and of their answers (out, 0 when \
         not answered); sum(rate(out)) / sum(rate(in)) is the amplification ratio.",
        &["worker", "family", "class", "direction"],
        Source::LimitBytes,
    ),
    row(
        "stunedge_limit_trimmed_total",
        "Answers whose optional attributes were left out to fit the amplification cap.",
        &["worker", "family", "class"],
        Source::LimitTrimmed,
    ),
    row(
        "stunedge_limit_table_capacity",
        "Keys the shared rate-limit table holds.",
        &[],
        Source::Limiter(LimiterGauge::Capacity),
    ),
    row(
        "stunedge_limit_table_occupied",
        "Keys of the rate-limit table with a load above zero (counted at scrape time).",
        &[],
        Source::Limiter(LimiterGauge::Occupied),
    ),
    row("stunedge_limit_table_bytes", "Memory of the rate-limit table.", &[], Source::Limiter(LimiterGauge::Bytes)),
    row(
        "stunedge_limit_mode",
        "Response rate limit mode: enforce, dry-run or off (always 1).",
        &["mode"],
        Source::Limiter(LimiterGauge::Mode),
    ),
    row(
        "stunedge_limit_max_amplification",
        "Largest answer / request size ratio allowed (limit.max_amplification; 0: no cap).",
        &[],
        Source::Limiter(LimiterGauge::MaxAmplification),
    ),
    row(
        "stunedge_turn_backend_up",
        "TURN backend address gets new clients (1: its health accepts and the configuration does not drain it).",
        &["backend", "address"],
        Source::Turn(TurnSeries::Up),
    ),
    row(
        "stunedge_turn_backend_state",
        "TURN backend address state (1 for the current one): unknown (not probed yet), up, down, draining \
         (drained by the configuration or answering its probe with 403).",
        &["backend", "address", "state"],
        Source::Turn(TurnSeries::State),
    ),
    row(
        "stunedge_turn_redirects_total",
        "Allocates redirected (300 with ALTERNATE-SERVER) to the TURN backend address.",
        &["backend", "address"],
        Source::Turn(TurnSeries::Redirects),
    ),
    row(
        "stunedge_turn_backend_probes_total",
        "Health probes of the TURN backend address by result: ok, draining (403), timeout, unexpected \
         (another answer), send_error.",
        &["backend", "address", "result"],
        Source::Turn(TurnSeries::Probes),
    ),
    row(
        "stunedge_turn_backend_probe_duration_seconds",
        "Round-trip time of the TURN backend address's answered health probes.",
        &["backend", "address"],
        Source::Turn(TurnSeries::ProbeDurations),
    ),
    row(
        "stunedge_turn_backends",
        "TURN backend addresses by state (as stunedge_turn_backend_state).",
        &["state"],
        Source::Turn(TurnSeries::Backends),
    ),
    row(
        "stunedge_turn_backend_stream_up",
        "TURN backend's TCP or TLS address passes its TCP connect probes (1: up or not probed yet). Clients over \
         that transport go to it only while its backend address is also up (stunedge_turn_backend_up).",
        &["backend", "address", "transport"],
        Source::Turn(TurnSeries::StreamUp),
    ),
    row(
        "stunedge_turn_backend_stream_probes_total",
        "TCP connect probes of the TURN backend's TCP or TLS address by result: ok, refused, timeout, error, \
         local_error (no probe could be made here; the state is left as it was). No TLS handshake is made.",
        &["backend", "address", "transport", "result"],
        Source::Turn(TurnSeries::StreamProbes),
    ),
    row(
        "stunedge_stream_connections",
        "Open STUN-over-TCP/TLS connections by transport.",
        &["transport"],
        Source::Stream(StreamSeries::Open),
    ),
    row(
        "stunedge_stream_tls_handshakes_in_progress",
        "TLS handshakes in progress on the stream listeners.",
        &[],
        Source::Stream(StreamSeries::Handshaking),
    ),
    row(
        "stunedge_stream_accepted_total",
        "Stream connections admitted, by transport.",
        &["transport"],
        Source::Stream(StreamSeries::Accepted),
    ),
    row(
        "stunedge_stream_refused_total",
        "Stream connections closed at once on accept, by transport and reason: global_cap \
         (stream.max_connections), tls_cap (stream.max_tls_connections), prefix_cap \
         (stream.max_connections_per_prefix), handshake_cap (stream.max_handshakes), denied \
         ([limit] deny), fd_limit (out of file descriptors: accepting pauses), error (the socket \
         could not be set up).",
        &["transport", "reason"],
        Source::Stream(StreamSeries::Refused),
    ),
    row(
        "stunedge_stream_closed_total",
        "Stream connections closed, by transport and reason: client (it closed or reset), idle, \
         handshake_timeout, first_message_timeout, not_stun, bad_header, too_large (framing: the stream cannot \
         go on), tls_error, write_stall (it does not read its answers), io_error, stopped (the server stopped), \
         evicted (at stream.max_connections, the oldest connection without a whole message made room).",
        &["transport", "reason"],
        Source::Stream(StreamSeries::Closed),
    ),
    row(
        "stunedge_stream_messages_total",
        "Whole STUN messages read from stream connections, by transport.",
        &["transport"],
        Source::Stream(StreamSeries::Messages),
    ),
    row(
        "stunedge_stream_answers_total",
        "Answers written to stream connections, by transport.",
        &["transport"],
        Source::Stream(StreamSeries::Answers),
    ),
    row(
        "stunedge_stream_channel_data_total",
        "TURN ChannelData messages skipped on stream connections (the edge holds no channel), by transport.",
        &["transport"],
        Source::Stream(StreamSeries::ChannelData),
    ),
    row(
        "stunedge_tls_handshakes_total",
        "TLS handshakes completed on the stream listeners, by protocol version.",
        &["version"],
        Source::Stream(StreamSeries::TlsHandshakes),
    ),
    row(
        "stunedge_tls_handshake_failures_total",
        "TLS handshakes that failed, by reason: protocol (a TLS error or alert), timeout \
         (stream.handshake_timeout), closed (the client went away), evicted (made room at stream.max_connections).",
        &["reason"],
        Source::Stream(StreamSeries::TlsFailures),
    ),
    row(
        "stunedge_xdp_packets_total",
        "Frames the XDP fast path saw, by family (ipv4, ipv6, none: not IP) and reason: answered (sent back \
         by the program with XDP_TX, never reaching the workers), or why it passed the frame to the kernel and \
         so to the workers (destination: not a fast-pathed listen address and port; has_attributes, not_binding_request: the workers \
         answer; limited, listed: over its rate-limit budget or in an allow or deny list, the workers' limiter \
         decides; bad_checksum, too_short, ...: the kernel or the workers drop it).",
        &["family", "reason"],
        Source::Xdp(XdpSeries::Packets),
    ),
    row(
        "stunedge_xdp_attached",
        "XDP fast path attachments (always 1): the interface and the mode it runs in (native, generic).",
        &["interface", "mode"],
        Source::Xdp(XdpSeries::Attached),
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
    /// The reflection defence (read at scrape time: a reload may change its rules) and the
    /// millisecond clock its table runs on.
    limit: Option<(CurrentLimit, fn() -> u64)>,
    /// The TURN balancer as now configured (read once per scrape: a reload may replace it).
    turn: Option<CurrentTurn>,
    /// The XDP fast path's counters and attachments (read once per scrape: a drain detaches it).
    xdp: Option<CurrentXdp>,
    stream: Option<CurrentStream>,
    descs: Vec<Desc>,
}

/// Where the exporter finds the running limiter: its rules change with each reload, its table
/// stays.
struct CurrentLimit(Box<dyn Fn() -> Limit + Send + Sync>);

impl std::fmt::Debug for CurrentLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentLimit")
    }
}

/// Where the exporter finds the running TURN balancer: a reload may replace or remove it.
struct CurrentTurn(Box<dyn Fn() -> Option<Arc<lb::Balancer>> + Send + Sync>);

impl std::fmt::Debug for CurrentTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentTurn")
    }
}

/// Where the exporter finds the XDP fast path: `None` while it is not running.
struct CurrentXdp(Box<dyn Fn() -> Option<XdpView> + Send + Sync>);

/// Reads the stream plane's counters.
struct CurrentStream(Box<dyn Fn() -> StreamView + Send + Sync>);

impl std::fmt::Debug for CurrentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentStream")
    }
}

impl std::fmt::Debug for CurrentXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentXdp")
    }
}

/// The exported state of backend address `index` of `balancer`: its health, or `draining`
/// when the configuration drains it (it then gets no new clients whatever its probes say).
fn turn_state(balancer: &lb::Balancer, index: usize) -> Health {
    let drained = balancer.pool.backends().get(index).is_some_and(|b| b.drain);
    if drained { Health::Draining } else { balancer.state.entries[index].health() }
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

/// The samples of a per-class limit row: for each worker, address family ([`FAMILIES`]) and
/// [`AnswerClass`], `values(stats, family, class)` gives the values of the row's labels after
/// `worker`, `family` and `class` (`N` of them) and each sample's value.
fn per_class<const N: usize>(
    row: &Row,
    per_worker: &[(String, Stats)],
    values: impl Fn(&Stats, usize, AnswerClass) -> Vec<([&'static str; N], u64)>,
) -> Vec<proto::Metric> {
    let mut out = Vec::new();
    for (w, s) in per_worker {
        for (f, family) in FAMILIES.iter().enumerate() {
            for class in AnswerClass::ALL {
                for (rest, value) in values(s, f, *class) {
                    let mut all = vec![w.as_str(), family, class.name()];
                    all.extend_from_slice(&rest);
                    out.push(sample(row, &all, value as f64));
                }
            }
        }
    }
    out
}

/// The samples of a [`Source::Turn`] row from `balancer`'s live state, per backend address
/// in pool order (`backend` and `address` labels first), per TCP or TLS address (the same, the
/// address being the stream address, then `transport`) or, for [`TurnSeries::Backends`], per
/// state.
fn turn_samples(row: &Row, series: TurnSeries, balancer: &lb::Balancer) -> Vec<proto::Metric> {
    let entries = &balancer.state.entries;
    match series {
        TurnSeries::Backends => {
            return Health::ALL
                .iter()
                .map(|h| {
                    let n = (0..entries.len()).filter(|&i| turn_state(balancer, i) == *h).count();
                    sample(row, &[h.name()], n as f64)
                })
                .collect();
        }
        TurnSeries::StreamUp | TurnSeries::StreamProbes => {
            let mut out = Vec::new();
            for s in balancer.state.streams.iter().flatten().flatten() {
                let address = s.addr.to_string();
                let id = [s.name.as_str(), address.as_str(), s.transport.label()];
                if let TurnSeries::StreamUp = series {
                    out.push(sample(row, &id, if s.health().accepts() { 1.0 } else { 0.0 }));
                    continue;
                }
                for r in StreamResult::ALL {
                    out.push(sample(row, &[id[0], id[1], id[2], r.name()], s.probes(r) as f64));
                }
            }
            return out;
        }
        _ => {}
    }
    let bounds: Vec<f64> = PROBE_MICROS_BUCKETS.iter().map(|b| *b as f64 / 1e6).collect();
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let address = e.addr.to_string();
        let id = [e.name.as_str(), address.as_str()];
        match series {
            TurnSeries::Up => out.push(sample(row, &id, if turn_state(balancer, i).accepts() { 1.0 } else { 0.0 })),
            TurnSeries::State => {
                let state = turn_state(balancer, i);
                for h in Health::ALL {
                    out.push(sample(row, &[id[0], id[1], h.name()], if h == state { 1.0 } else { 0.0 }));
                }
            }
            TurnSeries::Redirects => out.push(sample(row, &id, e.redirects() as f64)),
            TurnSeries::Probes => {
                for r in ProbeResult::ALL {
                    out.push(sample(row, &[id[0], id[1], r.name()], e.probes(r) as f64));
                }
            }
            TurnSeries::ProbeDurations => {
                let (counts, sum_micros) = e.probe_micros();
                out.push(histogram(row, &id, &counts, &bounds, sum_micros as f64 / 1e6));
            }
            TurnSeries::Backends | TurnSeries::StreamUp | TurnSeries::StreamProbes => {} // above
        }
    }
    out
}

/// The samples of a [`Source::Xdp`] row from `view`: every (family, reason) pair, zeros
/// included (a rate over a series that appears late loses its first increase), or one per
/// attachment.
fn xdp_samples(row: &Row, series: XdpSeries, view: &XdpView) -> Vec<proto::Metric> {
    match series {
        XdpSeries::Packets => xdp::Family::ALL
            .iter()
            .flat_map(|f| {
                xdp::Reason::ALL
                    .iter()
                    .map(move |r| sample(row, &[f.label(), r.label()], view.counters.get(*f, *r) as f64))
            })
            .collect(),
        XdpSeries::Attached => view.attached.iter().map(|(name, mode)| sample(row, &[name, mode], 1.0)).collect(),
    }
}

/// The samples of a [`Source::Stream`] row from `view`.
fn stream_samples(row: &Row, series: StreamSeries, view: &StreamView) -> Vec<proto::Metric> {
    let per = |f: fn(&TransportCounts) -> u64| {
        view.transports.iter().map(|t| sample(row, &[t.transport], f(t) as f64)).collect::<Vec<_>>()
    };
    let by_reason = |f: fn(&TransportCounts) -> &[(&'static str, u64)]| {
        view.transports
            .iter()
            .flat_map(|t| f(t).iter().map(move |(reason, n)| sample(row, &[t.transport, reason], *n as f64)))
            .collect::<Vec<_>>()
    };
    match series {
        StreamSeries::Open => per(|t| t.open),
        StreamSeries::Handshaking => vec![sample(row, &[], view.handshaking as f64)],
        StreamSeries::Accepted => per(|t| t.accepted),
        StreamSeries::Refused => by_reason(|t| &t.refused),
        StreamSeries::Closed => by_reason(|t| &t.closed),
        StreamSeries::Messages => per(|t| t.messages),
        StreamSeries::Answers => per(|t| t.answers),
        StreamSeries::ChannelData => per(|t| t.channel_data),
        StreamSeries::TlsHandshakes => view.tls_handshakes.iter().map(|(v, n)| sample(row, &[v], *n as f64)).collect(),
        StreamSeries::TlsFailures => view.tls_failures.iter().map(|(r, n)| sample(row, &[r], *n as f64)).collect(),
    }
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
        Exporter { slots, cpus, backend, sockets, reloads, limit: None, turn: None, xdp: None, stream: None, descs }
    }

    /// Also exports the rate limiter's table and settings (`stunedge_limit_table_*`,
    /// `stunedge_limit_mode`, `stunedge_limit_max_amplification`; absent without it).
    /// `clock_ms` is the millisecond clock the workers give the limiter (`worker::clock_ms`),
    /// read at scrape time to decay the table's loads for `stunedge_limit_table_occupied`;
    /// `current` gives the running limiter at scrape time (its rules as last reloaded).
    pub fn with_limit(self, current: impl Fn() -> Limit + Send + Sync + 'static, clock_ms: fn() -> u64) -> Exporter {
        Exporter { limit: Some((CurrentLimit(Box::new(current)), clock_ms)), ..self }
    }

    /// Also exports the TURN balancer's per-backend state (`stunedge_turn_backend_*`,
    /// `stunedge_turn_redirects_total`, `stunedge_turn_backends`): `current` gives the balancer
    /// as now configured at scrape time, `None` when no listener balances (the rows are then
    /// absent, as they are without this call).
    pub fn with_turn_lb(self, current: impl Fn() -> Option<Arc<lb::Balancer>> + Send + Sync + 'static) -> Exporter {
        Exporter { turn: Some(CurrentTurn(Box::new(current))), ..self }
    }

    /// Also exports the XDP fast path's counters (`stunedge_xdp_packets_total`) and attachments
    /// (`stunedge_xdp_attached`): `current` gives them at scrape time, `None` when the fast path
    /// is not running (the rows are then absent, as they are without this call).
    pub fn with_xdp(self, current: impl Fn() -> Option<XdpView> + Send + Sync + 'static) -> Exporter {
        Exporter { xdp: Some(CurrentXdp(Box::new(current))), ..self }
    }

    /// Also exports the stream plane's counters (`stunedge_stream_*`, `stunedge_tls_*`) and its
    /// threads' handler counters (as workers `stream0`, ...): `current` gives them at scrape time.
    pub fn with_stream(self, current: impl Fn() -> StreamView + Send + Sync + 'static) -> Exporter {
        Exporter { stream: Some(CurrentStream(Box::new(current))), ..self }
    }

    /// Every metric family with samples, read now. A row without samples (the limiter's,
    /// without [`Exporter::with_limit`]; the balancer's, without a balancer; the fast path's,
    /// while it is not running) is left out: the text format has no empty family.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut per_worker: Vec<(String, Stats)> =
            self.cpus.iter().zip(self.slots.iter()).map(|(cpu, slot)| (cpu.to_string(), slot.read())).collect();
        let stream = self.stream.as_ref().map(|current| (current.0)());
        if let Some(view) = &stream {
            per_worker.extend(view.stats.iter().cloned());
        }
        // Once per scrape, so that every TURN row describes the same pool across a reload.
        let turn = self.turn.as_ref().and_then(|current| (current.0)());
        // Once per scrape too: one read of the per-CPU counter map for both rows.
        let xdp = self.xdp.as_ref().and_then(|current| (current.0)());
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
                f.set_metric(match row.source {
                    Source::Stream(series) => {
                        stream.as_ref().map(|v| stream_samples(row, series, v)).unwrap_or_default()
                    }
                    _ => self.samples(row, &per_worker, turn.as_deref(), xdp.as_ref()),
                });
                f
            })
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }

    /// The samples of one row, from the workers' counters `per_worker` (worker label, stats),
    /// the running TURN balancer `turn` and the XDP fast path's `xdp`.
    fn samples(
        &self,
        row: &Row,
        per_worker: &[(String, Stats)],
        turn: Option<&lb::Balancer>,
        xdp: Option<&XdpView>,
    ) -> Vec<proto::Metric> {
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
            Source::LimitDecisions => per_class(row, per_worker, |s, f, c| {
                LimitAction::ALL.iter().map(|a| ([a.name()], s.limit_decisions(f, c, *a))).collect()
            }),
            Source::LimitedAt => per_class(row, per_worker, |s, f, c| {
                LIMIT_LEVELS[f].iter().enumerate().map(|(level, name)| ([*name], s.limited_at(f, c, level))).collect()
            }),
            Source::LimitBytes => per_class(row, per_worker, |s, f, c| {
                let (request, answer) = s.bytes_of(f, c);
                vec![(["in"], request), (["out"], answer)]
            }),
            Source::LimitTrimmed => per_class(row, per_worker, |s, f, c| vec![([], s.trimmed_count(f, c))]),
            Source::Limiter(gauge) => {
                let Some((current, clock_ms)) = &self.limit else { return Vec::new() };
                let limit = (current.0)();
                let table = &limit.shared.table;
                let params = limit.rules.params();
                vec![match gauge {
                    LimiterGauge::Capacity => sample(row, &[], table.capacity() as f64),
                    LimiterGauge::Occupied => {
                        sample(row, &[], table.occupied(clock_ms() / TICK_MS, limit.rules.decay()) as f64)
                    }
                    LimiterGauge::Bytes => sample(row, &[], table.bytes() as f64),
                    LimiterGauge::Mode => sample(row, &[params.mode.name()], 1.0),
                    LimiterGauge::MaxAmplification => sample(row, &[], params.max_amplification),
                }]
            }
            Source::Turn(series) => turn.map(|b| turn_samples(row, series, b)).unwrap_or_default(),
            Source::Xdp(series) => xdp.map(|v| xdp_samples(row, series, v)).unwrap_or_default(),
            Source::Stream(_) => Vec::new(), // read in `families`, once per scrape
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

    use crate::limit::{ALLOW_LEVEL, Mode, Params, Rules, Shared};

    /// An exporter over two workers, CPUs 3 and 5: worker 3 published `stats`, worker 5 nothing.
    fn exporter(stats: &Stats) -> Exporter {
        let slots: Arc<[WorkerSlot]> = (0..2).map(|_| WorkerSlot::default()).collect();
        slots[0].publish(stats);
        let sockets = vec![SocketInfo { worker: 3, listener: "127.0.0.1:3478".parse().unwrap(), inode: 1 }];
        Exporter::new(slots, vec![3, 5], "mmsg", sockets, Arc::new(ReloadStats::new(100)))
    }

    /// The names of the rows, without the limiter's unless `limiter`, without the TURN
    /// balancer's unless `turn`, without the XDP fast path's unless `xdp`.
    fn declared(limiter: bool, turn: bool, xdp: bool, stream: bool) -> Vec<String> {
        METRICS
            .iter()
            .filter(|row| limiter || !matches!(row.source, Source::Limiter(_)))
            .filter(|row| turn || !matches!(row.source, Source::Turn(_)))
            .filter(|row| xdp || !matches!(row.source, Source::Xdp(_)))
            .filter(|row| stream || !matches!(row.source, Source::Stream(_)))
            .map(|row| row.name.to_string())
            .collect()
    }

    /// A balancer over five backend addresses, one per exported state: `a` up, with two
    /// redirects and three probes (answered in 300 µs and 2 s, one timeout); `b` (IPv6) down;
    /// `c` drained by the configuration although its probes pass; `d` answering 403; `e` not
    /// probed yet. `a` has a TCP address, down after one connect and three refusals, and a
    /// TLS address not probed yet; `b` a TCP address, up after two connects, a timeout and an
    /// error.
    fn balancer() -> Arc<lb::Balancer> {
        let backends = [
            ("a", "192.0.2.1:3478", false),
            ("b", "[2001:db8::2]:3478", false),
            ("c", "192.0.2.3:3478", true),
            ("d", "192.0.2.4:3479", false),
            ("e", "192.0.2.5:3478", false),
        ]
        .map(|(name, addr, drain)| lb::BackendAddr {
            drain,
            stream: match name {
                "a" => [Some("192.0.2.1:3478".parse().unwrap()), Some("192.0.2.1:5349".parse().unwrap())],
                "b" => [Some("[2001:db8::2]:443".parse().unwrap()), None],
                _ => [None; 2],
            },
            ..lb::BackendAddr::new(name, addr.parse().unwrap())
        });
        let b = lb::Balancer::new(
            &backends,
            *b"0123456789abcdef",
            lb::KeyRule::default(),
            lb::ProbeSettings::default(),
            None,
        )
        .unwrap();
        let e = &b.state.entries;
        e[0].set_health(Health::Up);
        e[0].count_redirect();
        e[0].count_redirect();
        e[0].count_probe(ProbeResult::Ok, Some(std::time::Duration::from_micros(300)));
        e[0].count_probe(ProbeResult::Ok, Some(std::time::Duration::from_secs(2)));
        e[0].count_probe(ProbeResult::Timeout, None);
        e[1].set_health(Health::Down);
        e[2].set_health(Health::Up);
        e[3].set_health(Health::Draining);
        e[3].count_probe(ProbeResult::Draining, Some(std::time::Duration::from_millis(20)));
        let streams = &b.state.streams;
        let (a_tcp, b_tcp) = (streams[0][0].as_ref().unwrap(), streams[1][0].as_ref().unwrap());
        a_tcp.set_health(Health::Down);
        for r in [StreamResult::Ok, StreamResult::Refused, StreamResult::Refused, StreamResult::Refused] {
            a_tcp.count_probe(r);
        }
        b_tcp.set_health(Health::Up);
        for r in [StreamResult::Ok, StreamResult::Timeout, StreamResult::Error, StreamResult::Ok] {
            b_tcp.count_probe(r);
        }
        Arc::new(b)
    }

    /// A fast path attached to `eth0` (native) and `veth1` (generic) that answered 7 IPv4 and 2
    /// IPv6 Binding requests and passed 3 IPv4 frames over budget, 1 listed IPv6 source and 5
    /// ARP frames (not IP).
    fn xdp_view() -> XdpView {
        use xdp::{Family, Reason};
        let mut counters = xdp::Counters::default();
        for (family, reason, n) in [
            (Family::V4, Reason::Answered, 7),
            (Family::V6, Reason::Answered, 2),
            (Family::V4, Reason::Limited, 3),
            (Family::V6, Reason::Listed, 1),
            (Family::None, Reason::NotIp, 5),
        ] {
            counters.0[family as usize][reason as usize] = n;
        }
        XdpView { counters, attached: vec![("eth0".into(), "native"), ("veth1".into(), "generic")] }
    }

    /// A limiter in dry-run mode with a 16-line table that has answered one IPv4 client at
    /// 1000 ms (one key at each of the four prefix levels).
    fn limit() -> Limit {
        let params = Params { mode: Mode::DryRun, max_amplification: 2.5, table_size: 150, ..Params::default() };
        let limit = Limit::new(Arc::new(Rules::new(params, vec![3478])), Arc::new(Shared::new(150)));
        let decision = limit.decide(AnswerClass::Success, "192.0.2.1".parse().unwrap(), false, 1000, 0);
        assert_eq!(decision.action, LimitAction::Pass);
        limit
    }

    /// A limiter source that always gives `limit`.
    fn fixed(limit: Limit) -> impl Fn() -> Limit + Send + Sync + 'static {
        move || limit.clone()
    }

    #[test]
    fn exporter_emits_exactly_the_declared_metrics_and_passes_a_registry() {
        let mut a = Stats::default();
        a.record(&crate::counters::Tally { received_datagrams: 7, ..Default::default() }, 3_000);
        a.record(&crate::counters::Tally { received_datagrams: 600, ..Default::default() }, 20_000_000);
        a.dropped(DropReason::NotStun);
        let e = exporter(&a);
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(false, false, false, false), "the optional rows are left out without their sources");
        let e = e.with_limit(fixed(limit()), || 1000);
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, false, false, false));
        let e = e.with_turn_lb(|| None);
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, false, false, false), "no listener balances: no TURN rows");
        let lb = balancer();
        let e = e.with_turn_lb(move || Some(lb.clone()));
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, true, false, false));
        let e = e.with_xdp(|| None);
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, true, false, false), "the fast path is not running: no XDP rows");
        let e = e.with_xdp(|| Some(xdp_view()));
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, true, true, false));
        let e = e.with_stream(stream_view);
        let names: Vec<String> = e.families().iter().map(|f| f.get_name().to_string()).collect();
        assert_eq!(names, declared(true, true, true, true));
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
        assert!(text.contains("stunedge_stream_connections{transport=\"tls\"} 3"), "{text}");
        assert!(text.contains("stunedge_stream_refused_total{transport=\"tcp\",reason=\"prefix_cap\"} 2"), "{text}");
        assert!(text.contains("stunedge_tls_handshake_failures_total{reason=\"timeout\"} 4"), "{text}");
        // The stream threads' handler counters are a worker's series.
        assert!(text.contains("stunedge_received_datagrams_total{worker=\"stream0\"} 5"), "{text}");
    }

    /// A stream plane with a TCP listener (2 refused for their prefix) and a TLS one (3 open,
    /// 4 handshakes timed out), one thread whose handler counted 5 messages.
    fn stream_view() -> StreamView {
        let mut stats = Stats::default();
        stats.record(&crate::counters::Tally { received_datagrams: 5, ..Default::default() }, 1_000);
        StreamView {
            transports: vec![
                TransportCounts {
                    transport: "tcp",
                    refused: vec![("prefix_cap", 2)],
                    closed: vec![("client", 1)],
                    ..TransportCounts::default()
                },
                TransportCounts { transport: "tls", open: 3, accepted: 3, ..TransportCounts::default() },
            ],
            handshaking: 1,
            tls_handshakes: vec![("1.3", 3)],
            tls_failures: vec![("timeout", 4)],
            stats: vec![("stream0".into(), stats)],
        }
    }

    /// The per-class limit rows: every worker × family × class × action, level or direction,
    /// each sample with its row's labels, the values the worker counted, and nothing else.
    #[test]
    fn limit_rows_carry_every_label_set_and_the_workers_counts() {
        let mut s = Stats::default();
        for _ in 0..3 {
            s.limit_decision(0, AnswerClass::Success, LimitAction::Pass, 0);
        }
        s.limit_decision(1, AnswerClass::Error, LimitAction::Drop, 1);
        s.limit_decision(0, AnswerClass::Success, LimitAction::WouldDrop, ALLOW_LEVEL);
        s.class_bytes(0, AnswerClass::Success, 20, 32);
        s.class_bytes(0, AnswerClass::Success, 28, 44);
        s.class_bytes(1, AnswerClass::Error, 100, 0);
        s.trimmed(1, AnswerClass::Error);
        let e = exporter(&s);
        let text = e.render();
        for line in [
            r#"stunedge_limit_decisions_total{worker="3",family="ipv4",class="success",action="pass"} 3"#,
            r#"stunedge_limit_decisions_total{worker="3",family="ipv6",class="error",action="drop"} 1"#,
            r#"stunedge_limit_decisions_total{worker="3",family="ipv4",class="success",action="would_drop"} 1"#,
            r#"stunedge_limit_decisions_total{worker="5",family="ipv4",class="success",action="pass"} 0"#,
            r#"stunedge_limit_limited_total{worker="3",family="ipv6",class="error",level="64"} 1"#,
            r#"stunedge_limit_limited_total{worker="3",family="ipv4",class="success",level="allow"} 1"#,
            r#"stunedge_limit_limited_total{worker="3",family="ipv4",class="success",level="32"} 0"#,
            r#"stunedge_limit_bytes_total{worker="3",family="ipv4",class="success",direction="in"} 48"#,
            r#"stunedge_limit_bytes_total{worker="3",family="ipv4",class="success",direction="out"} 76"#,
            r#"stunedge_limit_bytes_total{worker="3",family="ipv6",class="error",direction="in"} 100"#,
            r#"stunedge_limit_bytes_total{worker="3",family="ipv6",class="error",direction="out"} 0"#,
            r#"stunedge_limit_trimmed_total{worker="3",family="ipv6",class="error"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        // Per row: (samples, their sum, the label values each family may take at the 4th label).
        let levels: Vec<&str> = LIMIT_LEVELS.iter().flatten().copied().collect();
        let actions: Vec<&str> = LimitAction::ALL.iter().map(|a| a.name()).collect();
        let expected: [(&str, usize, f64, Vec<&str>); 4] = [
            ("stunedge_limit_decisions_total", 2 * 2 * 2 * 7, 5.0, actions),
            ("stunedge_limit_limited_total", 2 * 2 * 2 * 5, 2.0, levels),
            ("stunedge_limit_bytes_total", 2 * 2 * 2 * 2, 48.0 + 76.0 + 100.0, vec!["in", "out"]),
            ("stunedge_limit_trimmed_total", 2 * 2 * 2, 1.0, vec![]),
        ];
        let families = e.families();
        for (name, samples, sum, fourth) in expected {
            let row = METRICS.iter().find(|r| r.name == name).unwrap();
            let family = families.iter().find(|f| f.get_name() == name).unwrap();
            assert_eq!(family.get_field_type(), MetricType::COUNTER, "{name}");
            let metrics = family.get_metric();
            assert_eq!(metrics.len(), samples, "{name}");
            assert_eq!(metrics.iter().map(|m| m.get_counter().get_value()).sum::<f64>(), sum, "{name}");
            let mut label_sets: Vec<Vec<&str>> = metrics
                .iter()
                .map(|m| {
                    let names: Vec<&str> = m.get_label().iter().map(|l| l.get_name()).collect();
                    assert_eq!(names, row.labels, "{name}");
                    m.get_label().iter().map(|l| l.get_value()).collect()
                })
                .collect();
            for values in &label_sets {
                assert!(FAMILIES.contains(&values[1]) && ["success", "error"].contains(&values[2]), "{values:?}");
                if let Some(v) = values.get(3) {
                    assert!(fourth.contains(v), "{name}: {values:?}");
                }
                if name == "stunedge_limit_limited_total" {
                    let f = FAMILIES.iter().position(|f| *f == values[1]).unwrap();
                    assert!(LIMIT_LEVELS[f].contains(&values[3]), "a level of the other family: {values:?}");
                }
            }
            label_sets.sort();
            label_sets.dedup();
            assert_eq!(label_sets.len(), samples, "{name}: every label set once");
        }
    }

    /// The limiter's gauges: present with [`Exporter::with_limit`], the table read at the
    /// given clock's time.
    #[test]
    fn limiter_gauges_read_the_table_and_settings_at_scrape_time() {
        let text = exporter(&Stats::default()).render();
        assert!(!text.contains("stunedge_limit_table") && !text.contains("stunedge_limit_mode"), "{text}");
        assert!(!text.starts_with("# encoding failed"), "{text}");

        let now = exporter(&Stats::default()).with_limit(fixed(limit()), || 1000).render();
        for line in [
            "stunedge_limit_table_capacity 256",
            "stunedge_limit_table_occupied 4",
            "stunedge_limit_table_bytes 2048",
            r#"stunedge_limit_mode{mode="dry-run"} 1"#,
            "stunedge_limit_max_amplification 2.5",
            "# TYPE stunedge_limit_table_occupied gauge",
        ] {
            assert!(now.lines().any(|l| l == line), "{line} missing from\n{now}");
        }
        // An hour later (1440 time constants of 2.5 s) every load has decayed to nothing.
        let later = exporter(&Stats::default()).with_limit(fixed(limit()), || 1000 + 3_600_000).render();
        assert!(later.lines().any(|l| l == "stunedge_limit_table_occupied 0"), "{later}");
        let off = exporter(&Stats::default()).with_limit(fixed(Limit::default()), || 1).render();
        assert!(off.lines().any(|l| l == r#"stunedge_limit_mode{mode="off"} 1"#), "{off}");
        assert!(off.lines().any(|l| l == "stunedge_limit_max_amplification 0"), "{off}");
    }

    /// The balancer's rows: every sample, with its value, and nothing else.
    #[test]
    fn turn_rows_carry_each_backend_addresses_state_and_counters() {
        let without = exporter(&Stats::default()).with_turn_lb(|| None).render();
        assert!(!without.contains("stunedge_turn_"), "{without}");
        assert!(!exporter(&Stats::default()).render().contains("stunedge_turn_"));

        let lb = balancer();
        let text = exporter(&Stats::default()).with_turn_lb(move || Some(lb.clone())).render();
        // (backend, address, state, redirects, probe results ok/draining/timeout, histogram
        // cumulative counts at the 10 finite bounds then +Inf, sum in seconds)
        type Expected = (&'static str, &'static str, &'static str, u64, [u64; 3], [u64; 11], &'static str);
        let backends: [Expected; 5] = [
            ("a", "192.0.2.1:3478", "up", 2, [2, 0, 1], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2], "2.0003"),
            ("b", "[2001:db8::2]:3478", "down", 0, [0; 3], [0; 11], "0"),
            ("c", "192.0.2.3:3478", "draining", 0, [0; 3], [0; 11], "0"),
            ("d", "192.0.2.4:3479", "draining", 0, [0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], "0.02"),
            ("e", "192.0.2.5:3478", "unknown", 0, [0; 3], [0; 11], "0"),
        ];
        let bounds = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.1", "0.5", "+Inf"];
        let mut expected = Vec::new();
        for (name, address, state, redirects, probes, buckets, sum) in backends {
            let id = format!(r#"backend="{name}",address="{address}""#);
            let up = u8::from(state == "up" || state == "unknown");
            expected.push(format!("stunedge_turn_backend_up{{{id}}} {up}"));
            for h in ["unknown", "up", "down", "draining"] {
                expected.push(format!(r#"stunedge_turn_backend_state{{{id},state="{h}"}} {}"#, u8::from(h == state)));
            }
            expected.push(format!("stunedge_turn_redirects_total{{{id}}} {redirects}"));
            let results = ["ok", "draining", "timeout", "unexpected", "send_error"];
            for (result, n) in results.iter().zip(probes.iter().chain(&[0, 0])) {
                expected.push(format!(r#"stunedge_turn_backend_probes_total{{{id},result="{result}"}} {n}"#));
            }
            for (le, n) in bounds.iter().zip(buckets) {
                expected.push(format!(r#"stunedge_turn_backend_probe_duration_seconds_bucket{{{id},le="{le}"}} {n}"#));
            }
            expected.push(format!("stunedge_turn_backend_probe_duration_seconds_sum{{{id}}} {sum}"));
            expected.push(format!("stunedge_turn_backend_probe_duration_seconds_count{{{id}}} {}", buckets[10]));
        }
        for (state, n) in [("unknown", 1), ("up", 1), ("down", 1), ("draining", 2)] {
            expected.push(format!(r#"stunedge_turn_backends{{state="{state}"}} {n}"#));
        }
        // (backend, stream address, transport, up, probes ok/refused/timeout/error/local_error)
        let streams = [
            ("a", "192.0.2.1:3478", "tcp", 0, [1, 3, 0, 0, 0]),
            ("a", "192.0.2.1:5349", "tls", 1, [0; 5]),
            ("b", "[2001:db8::2]:443", "tcp", 1, [2, 0, 1, 1, 0]),
        ];
        for (name, address, transport, up, probes) in streams {
            let id = format!(r#"backend="{name}",address="{address}",transport="{transport}""#);
            expected.push(format!("stunedge_turn_backend_stream_up{{{id}}} {up}"));
            for (result, n) in ["ok", "refused", "timeout", "error", "local_error"].iter().zip(probes) {
                expected.push(format!(r#"stunedge_turn_backend_stream_probes_total{{{id},result="{result}"}} {n}"#));
            }
        }
        let mut got: Vec<&str> = text.lines().filter(|l| l.starts_with("stunedge_turn_")).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "{text}");
        for (name, kind) in [
            ("stunedge_turn_backend_up", "gauge"),
            ("stunedge_turn_backend_state", "gauge"),
            ("stunedge_turn_redirects_total", "counter"),
            ("stunedge_turn_backend_probes_total", "counter"),
            ("stunedge_turn_backend_probe_duration_seconds", "histogram"),
            ("stunedge_turn_backends", "gauge"),
            ("stunedge_turn_backend_stream_up", "gauge"),
            ("stunedge_turn_backend_stream_probes_total", "counter"),
        ] {
            let line = format!("# TYPE {name} {kind}");
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    /// A reload that replaces or removes the balancer shows at the next scrape.
    #[test]
    fn turn_rows_follow_the_balancer_as_now_configured() {
        let current: Arc<std::sync::Mutex<Option<Arc<lb::Balancer>>>> = Arc::new(std::sync::Mutex::new(None));
        let e = exporter(&Stats::default()).with_turn_lb({
            let current = current.clone();
            move || current.lock().unwrap().clone()
        });
        assert!(!e.render().contains("stunedge_turn_"));
        *current.lock().unwrap() = Some(balancer());
        assert!(e.render().lines().any(|l| l == r#"stunedge_turn_backends{state="draining"} 2"#));
        *current.lock().unwrap() = None;
        assert!(!e.render().contains("stunedge_turn_"));
    }

    /// The fast path's rows: every (family, reason) pair, zeros included, and one gauge per
    /// attachment; nothing else.
    #[test]
    fn xdp_rows_carry_every_family_and_reason_and_each_attachment() {
        let without = exporter(&Stats::default()).with_xdp(|| None).render();
        assert!(!without.contains("stunedge_xdp_"), "{without}");
        assert!(!exporter(&Stats::default()).render().contains("stunedge_xdp_"));

        let text = exporter(&Stats::default()).with_xdp(|| Some(xdp_view())).render();
        let mut expected = Vec::new();
        for family in ["none", "ipv4", "ipv6"] {
            for reason in [
                "answered",
                "disabled",
                "not_ip",
                "not_udp",
                "fragment",
                "ip_options",
                "destination",
                "too_short",
                "not_stun",
                "not_binding_request",
                "has_attributes",
                "length_mismatch",
                "bad_checksum",
                "zero_checksum",
                "bad_ip_checksum",
                "bogon",
                "grow_failed",
                "limited",
                "listed",
                "bad_fingerprint",
            ] {
                let n = match (family, reason) {
                    ("ipv4", "answered") => 7,
                    ("ipv6", "answered") => 2,
                    ("ipv4", "limited") => 3,
                    ("ipv6", "listed") => 1,
                    ("none", "not_ip") => 5,
                    _ => 0,
                };
                expected.push(format!(r#"stunedge_xdp_packets_total{{family="{family}",reason="{reason}"}} {n}"#));
            }
        }
        expected.push(r#"stunedge_xdp_attached{interface="eth0",mode="native"} 1"#.to_string());
        expected.push(r#"stunedge_xdp_attached{interface="veth1",mode="generic"} 1"#.to_string());
        let mut got: Vec<&str> = text.lines().filter(|l| l.starts_with("stunedge_xdp_")).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "{text}");
        for line in ["# TYPE stunedge_xdp_packets_total counter", "# TYPE stunedge_xdp_attached gauge"] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    /// A fast path that starts, or detaches (draining), shows at the next scrape: detached, its
    /// counters stay and its attachment rows go; stopped, both go.
    #[test]
    fn xdp_rows_follow_the_fast_path_as_now_running() {
        let current: Arc<std::sync::Mutex<Option<XdpView>>> = Arc::new(std::sync::Mutex::new(None));
        let e = exporter(&Stats::default()).with_xdp({
            let current = current.clone();
            move || current.lock().unwrap().clone()
        });
        assert!(!e.render().contains("stunedge_xdp_"));
        *current.lock().unwrap() = Some(xdp_view());
        let text = e.render();
        assert!(text.lines().any(|l| l == r#"stunedge_xdp_packets_total{family="ipv4",reason="answered"} 7"#));
        assert_eq!(text.lines().filter(|l| l.starts_with("stunedge_xdp_attached{")).count(), 2, "{text}");
        current.lock().unwrap().as_mut().unwrap().attached.clear();
        let text = e.render();
        assert!(text.lines().any(|l| l == r#"stunedge_xdp_packets_total{family="ipv6",reason="listed"} 1"#));
        assert!(!text.contains("stunedge_xdp_attached"), "{text}");
        *current.lock().unwrap() = None;
        assert!(!e.render().contains("stunedge_xdp_"));
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
                // `per_class` fills these three first.
                Source::LimitDecisions | Source::LimitedAt | Source::LimitBytes | Source::LimitTrimmed => {
                    assert_eq!(row.labels[..3], ["worker", "family", "class"], "{}", row.name);
                }
                // `turn_samples` fills these two first, except for the per-state count.
                Source::Turn(TurnSeries::Backends) => assert_eq!(row.labels, ["state"], "{}", row.name),
                Source::Turn(_) => assert_eq!(row.labels[..2], ["backend", "address"], "{}", row.name),
                _ => {}
            }
        }
        for c in Counter::ALL {
            assert!(exported.contains(c), "{c:?} is counted but exported by no row of METRICS");
        }
    }
}
