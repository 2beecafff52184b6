//! The load generator engine: T threads, each pinned to a CPU and owning many UDP sockets
//! (distinct source ports, optionally distinct 127.x source addresses so SO_REUSEPORT hashing
//! spreads the load), sending with sendmmsg and receiving with recvmmsg in batches through
//! stunedge's own `io::mmsg` batch.
//!
//! Open loop (`rate > 0`): request k of a thread is *scheduled* at k / rate, and its latency is
//! measured from that scheduled time, so a stalled server (or generator) shows up as latency
//! instead of silently lowering the offered load (no coordinated omission). Closed loop
//! (`rate = 0`): each socket keeps `window` requests outstanding; latency is from the real send.
//!
//! Every answer is checked ([`crate::check::check_answer`]): success class and Binding method,
//! a transaction ID this generator sent (it encodes thread, socket, sequence and kind, see
//! [`crate::requests::Tag`]), the reflexive address equal to the sending socket's own address
//! (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS for classic requests), FINGERPRINT and
//! MESSAGE-INTEGRITY when present (FINGERPRINT required when the request had one); then matched
//! to the request it answers on that socket (duplicates, wrong source). A request
//! unanswered after `timeout` is lost; an answer after that is late.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use stunedge::io::mmsg::MmsgBatch;
use stunedge::io::socket::{self, Listener, SocketOptions};

use crate::check::{Invalid, check_answer};
use crate::requests::{Credentials, Kind, Tag, write_request};

/// Requests remembered per socket; a socket never has more outstanding than this.
const RING: usize = 4096;

/// How the load is offered and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server under test.
    pub server: SocketAddr,
    /// One generator thread per entry, pinned to that CPU (`None`: not pinned).
    pub cpus: Vec<Option<usize>>,
    /// Sockets per thread.
    pub sockets: usize,
    /// Distinct source addresses (127.0.0.1, .2, …) the sockets are spread over (IPv4 only).
    pub sources: usize,
    /// How long requests are sent.
    pub duration: Duration,
    /// Requests per second over all threads; 0 = closed loop.
    pub rate: u64,
    /// Closed loop: requests outstanding per socket.
    pub window: usize,
    /// Datagrams per sendmmsg / recvmmsg.
    pub batch: usize,
    /// Request kinds and their weights.
    pub mix: Vec<(Kind, u32)>,
    /// Credentials for the `integrity` and `ice` kinds.
    pub credentials: Credentials,
    /// Unanswered after this long: lost.
    pub timeout: Duration,
    /// Junk datagrams sent per 100 requests, interleaved with them on the same sockets (never
    /// answered by a correct server; any answer to one counts as invalid).
    pub junk_percent: u32,
}

/// Junk the generator interleaves with requests, one kind after the other: not STUN (top bits
/// set), too short, a valid header whose length overruns the datagram, a Binding success
/// response, and a Binding request whose FINGERPRINT is wrong. A server drops every one.
fn write_junk(which: u64, buf: &mut [u8]) -> usize {
    let request = |buf: &mut [u8]| {
        buf[..8].copy_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42]);
        buf[8..20].copy_from_slice(&[0xEE; 12]);
        buf[20..28].copy_from_slice(&[0x80, 0x28, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]);
    };
    match which % 5 {
        0 => {
            buf[..40].fill(0xC3);
            40
        }
        1 => {
            buf[..10].fill(0x00);
            10
        }
        2 => {
            request(buf);
            buf[3] = 0x40; // says 64 bytes of attributes, carries 8
            28
        }
        3 => {
            request(buf);
            buf[0..2].copy_from_slice(&[0x01, 0x01]);
            buf[3] = 0;
            20
        }
        _ => {
            request(buf);
            28
        }
    }
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Server address.
    pub server: String,
    /// "open" (paced) or "closed" (window).
    pub mode: &'static str,
    /// Offered rate, requests/s (open loop; 0 for closed).
    pub target_rate: u64,
    /// Generator threads.
    pub threads: usize,
    /// Sockets over all threads.
    pub sockets: usize,
    /// Seconds requests were sent for.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Answers that passed every check.
    pub valid: u64,
    /// Answers that failed a check.
    pub invalid: u64,
    /// Failed checks by kind.
    pub invalid_by_kind: BTreeMap<&'static str, u64>,
    /// Requests unanswered after the timeout.
    pub lost: u64,
    /// Answers that came after their request was counted lost.
    pub late: u64,
    /// Requests the kernel refused to send.
    pub send_errors: u64,
    /// Open loop: requests due but not sent because the socket had `RING` outstanding.
    pub not_sent: u64,
    /// Junk datagrams sent (`--junk`).
    pub junk_sent: u64,
    /// Valid answers per second.
    pub rate: f64,
    /// Latency of valid answers.
    pub latency: Latency,
    /// Fraction of the generator threads' time spent with nothing to send or receive.
    pub generator_idle: f64,
}

/// Live counters one thread publishes for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Valid answers.
    pub valid: AtomicU64,
    /// Invalid answers.
    pub invalid: AtomicU64,
    /// Lost requests.
    pub lost: AtomicU64,
    /// 99th-percentile latency over the last second, nanoseconds.
    pub p99_ns: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Outstanding,
    Answered,
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    sent_ns: u64,
    state: SlotState,
}

/// The requests of one socket (or, in the TCP mode, one connection) by sequence number modulo
/// the ring's length, a power of two.
pub(crate) struct Ring {
    slots: Box<[Slot]>,
    /// Oldest sequence not yet answered or lost.
    pub(crate) head: u64,
    /// Next sequence to send.
    pub(crate) tail: u64,
    pub(crate) in_flight: usize,
}

impl Ring {
    /// An empty ring of `len` slots (a power of two).
    pub(crate) fn new(len: usize) -> Ring {
        assert!(len.is_power_of_two(), "ring length {len} is not a power of two");
        Ring {
            slots: vec![Slot { seq: 0, sent_ns: 0, state: SlotState::Free }; len].into(),
            head: 0,
            tail: 0,
            in_flight: 0,
        }
    }

    fn index(&self, seq: u64) -> usize {
        (seq & (self.slots.len() as u64 - 1)) as usize
    }

    /// Requests that can be sent before the ring runs onto one not yet answered or lost.
    pub(crate) fn room(&self) -> usize {
        self.slots.len() - (self.tail - self.head) as usize
    }

    /// Records request `seq` as sent at `sent_ns` (the caller advances `tail` and `in_flight`).
    pub(crate) fn sent(&mut self, seq: u64, sent_ns: u64) {
        let i = self.index(seq);
        self.slots[i] = Slot { seq, sent_ns, state: SlotState::Outstanding };
    }

    /// Forgets request `seq`, recorded but never sent.
    pub(crate) fn unsent(&mut self, seq: u64) {
        let i = self.index(seq);
        self.slots[i].state = SlotState::Free;
    }

    /// Matches a valid answer to request `seq`, read at `now`, and counts it: valid (with its
    /// latency), late, a duplicate or an unknown transaction.
    pub(crate) fn answer(&mut self, seq: u64, now: u64, tally: &mut Tally) {
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        if slot.seq != seq || seq >= self.tail {
            // The slot was reused: this answer is older than the ring.
            if seq < self.head {
                tally.late += 1;
            } else {
                tally.invalid(Invalid::UnknownTransaction);
            }
            return;
        }
        match slot.state {
            SlotState::Outstanding => {
                slot.state = SlotState::Answered;
                self.in_flight -= 1;
                tally.valid(now.saturating_sub(slot.sent_ns).max(1));
            }
            SlotState::Lost => tally.late += 1,
            SlotState::Answered => tally.invalid(Invalid::Duplicate),
            SlotState::Free => tally.invalid(Invalid::UnknownTransaction),
        }
    }

    /// Advances the head over answered requests and counts timed-out ones lost.
    pub(crate) fn expire(&mut self, now: u64, timeout_ns: u64, tally: &mut Tally) {
        while self.head < self.tail {
            let i = self.index(self.head);
            let slot = &mut self.slots[i];
            match slot.state {
                SlotState::Outstanding if now.saturating_sub(slot.sent_ns) > timeout_ns => {
                    slot.state = SlotState::Lost;
                    self.in_flight -= 1;
                    tally.lost += 1;
                }
                SlotState::Outstanding => break,
                _ => {}
            }
            self.head += 1;
        }
    }

    /// Counts every request still outstanding lost.
    pub(crate) fn lose_all(&mut self, tally: &mut Tally) {
        while self.head < self.tail {
            let i = self.index(self.head);
            let slot = &mut self.slots[i];
            if slot.state == SlotState::Outstanding {
                slot.state = SlotState::Lost;
                tally.lost += 1;
            }
            self.head += 1;
        }
        self.in_flight = 0;
    }
}

struct Sock {
    listener: Listener,
    requests: Ring,
}

/// What one thread counted (also the TCP mode's, [`crate::stream`]).
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) valid: u64,
    pub(crate) invalid: [u64; Invalid::ALL.len()],
    pub(crate) lost: u64,
    pub(crate) late: u64,
    pub(crate) send_errors: u64,
    pub(crate) not_sent: u64,
    pub(crate) junk_sent: u64,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) idle_ns: u64,
    pub(crate) busy_ns: u64,
    /// Latencies since the last progress p99 (every second).
    interval: Histogram<u64>,
}

impl Tally {
    /// Nothing counted yet.
    pub(crate) fn new() -> Tally {
        Tally {
            sent: 0,
            received: 0,
            valid: 0,
            invalid: [0; Invalid::ALL.len()],
            lost: 0,
            late: 0,
            send_errors: 0,
            not_sent: 0,
            junk_sent: 0,
            histogram: new_histogram(),
            idle_ns: 0,
            busy_ns: 0,
            interval: new_histogram(),
        }
    }

    /// Counts an answer that failed a check.
    pub(crate) fn invalid(&mut self, why: Invalid) {
        self.invalid[why as usize] += 1;
    }

    /// Counts a valid answer and its latency.
    fn valid(&mut self, latency_ns: u64) {
        let _ = self.histogram.record(latency_ns);
        let _ = self.interval.record(latency_ns);
        self.valid += 1;
    }

    /// Publishes the counts for the progress line.
    fn publish(&self, progress: &Progress) {
        progress.sent.store(self.sent, Ordering::Relaxed);
        progress.valid.store(self.valid, Ordering::Relaxed);
        progress.invalid.store(self.invalid.iter().sum(), Ordering::Relaxed);
        progress.lost.store(self.lost, Ordering::Relaxed);
    }

    /// Publishes the p99 latency since the last call, and starts a new interval.
    fn publish_p99(&mut self, progress: &Progress) {
        let p99 = if self.interval.is_empty() { 0 } else { self.interval.value_at_quantile(0.99) };
        progress.p99_ns.store(p99, Ordering::Relaxed);
        self.interval.reset();
    }
}

/// A generator thread's time: nanoseconds since the start all threads share, how long requests
/// are sent, and how long their answers are waited for after that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    duration_ns: u64,
    timeout_ns: u64,
}

impl Clock {
    pub(crate) fn new(config: &Config, start: Instant) -> Clock {
        Clock { start, duration_ns: config.duration.as_nanos() as u64, timeout_ns: config.timeout.as_nanos() as u64 }
    }

    /// Nanoseconds since the start (0 before it).
    pub(crate) fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Whether requests are still sent at `now`.
    pub(crate) fn sending(&self, now: u64) -> bool {
        now < self.duration_ns
    }

    /// Waits for the start: spinning (`spin`) or sleeping a millisecond at a time.
    pub(crate) fn wait_start(&self, spin: bool) {
        while Instant::now() < self.start {
            if spin {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// A generator thread of either mode (UDP sockets here, TCP connections in [`crate::stream`]),
/// as [`drive`] runs it.
pub(crate) trait Generator {
    /// Whether [`Generator::receive`] waits for answers (then the turn's bookkeeping is done at
    /// the time after it; else at the turn's start).
    const WAITS: bool;
    fn tally(&mut self) -> &mut Tally;
    /// Sends what is due at `now`; returns the number of requests sent.
    fn send_due(&mut self, now: u64) -> usize;
    /// Handles what came back (`sending`: requests are still being sent); returns the number of
    /// datagrams or answers received.
    fn receive(&mut self, sending: bool) -> io::Result<usize>;
    /// Calls `f` with each socket's (connection's) ring and the thread's tally.
    fn each_ring(&mut self, f: impl FnMut(&mut Ring, &mut Tally));
}

/// The generator loop both modes share, on `clock`: turns (send what is due while sending,
/// receive) until the duration is over and every request is answered or the timeout after it
/// has passed; between turns, expires requests every millisecond (every turn once sending is
/// over), publishes progress every 100 ms and the p99 every second, and accounts each turn busy
/// or idle. What is still outstanding then is lost.
pub(crate) fn drive<G: Generator>(g: &mut G, clock: Clock, progress: &Progress) -> io::Result<()> {
    let (mut last_expire, mut last_publish, mut last_interval) = (0, 0, 0);
    let mut turn_start = clock.now_ns();
    loop {
        let sending = clock.sending(turn_start);
        let mut work = if sending { g.send_due(turn_start) } else { 0 };
        work += g.receive(sending)?;
        let now = if G::WAITS { clock.now_ns() } else { turn_start };
        if now - last_expire >= 1_000_000 || !sending {
            g.each_ring(|r, tally| r.expire(now, clock.timeout_ns, tally));
            last_expire = now;
        }
        if now - last_publish >= 100_000_000 {
            g.tally().publish(progress);
            last_publish = now;
        }
        if now - last_interval >= 1_000_000_000 {
            g.tally().publish_p99(progress);
            last_interval = now;
        }
        if !sending {
            let mut in_flight = 0;
            g.each_ring(|r, _| in_flight += r.in_flight);
            if in_flight == 0 || now >= clock.duration_ns + clock.timeout_ns {
                break;
            }
        }
        let end = clock.now_ns();
        let tally = g.tally();
        if work == 0 {
            tally.idle_ns += end - turn_start;
        } else {
            tally.busy_ns += end - turn_start;
        }
        turn_start = end;
    }
    // Whatever is still outstanding after the drain is lost.
    g.each_ring(|r, tally| r.lose_all(tally));
    g.tally().publish(progress);
    Ok(())
}

/// The request kinds a thread sends in turn: each of `config.mix` repeated by its weight.
pub(crate) fn pattern(config: &Config) -> Vec<Kind> {
    let mut pattern = Vec::new();
    for (kind, weight) in &config.mix {
        pattern.extend(std::iter::repeat_n(*kind, *weight as usize));
    }
    pattern
}

/// Thread `thread`'s share of `config.rate` (0: closed loop); the first threads take the
/// remainder.
pub(crate) fn thread_rate(config: &Config, thread: usize) -> u64 {
    let threads = config.cpus.len() as u64;
    if config.rate == 0 { 0 } else { config.rate / threads + u64::from((thread as u64) < config.rate % threads) }
}

/// Runs `work(config, t, sockets[t], start, progress[t])` on a thread `{name}-{t}` per entry of
/// `config.cpus`, pinned to that CPU; `start` is 20 ms from now, the same for all. Returns their
/// results in order.
pub(crate) fn run_threads<S, R>(
    config: &Config,
    name: &str,
    sockets: Vec<S>,
    progress: &[Arc<Progress>],
    work: impl Fn(&Config, usize, S, Instant, &Progress) -> R + Clone + Send + 'static,
) -> Vec<R>
where
    S: Send + 'static,
    R: Send + 'static,
{
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(t, sockets)| {
            let config = config.clone();
            let progress = progress[t].clone();
            let work = work.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{t}"))
                .spawn(move || {
                    if let Some(cpu) = config.cpus[t] {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    work(&config, t, sockets, start, &progress)
                })
                .expect("spawn generator thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("generator thread panicked")).collect()
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// The source address the kernel picks for the route to `server` (a connected UDP socket's
/// local address): answers carry it, so the generator binds to it.
fn route_source(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("a literal");
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// The source address of the `index`-th socket (over all threads): 127.0.0.1, .2, … up to
/// `config.sources` for a loopback IPv4 server, ::1 for a loopback IPv6 one, else the address
/// the kernel picks for the route to the server.
pub(crate) fn source_ip(config: &Config, index: usize) -> std::io::Result<IpAddr> {
    Ok(match config.server.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 1)) + (index % config.sources.max(1)) as u32))
        }
        IpAddr::V6(v6) if v6.is_loopback() => "::1".parse().expect("::1"),
        _ => route_source(config.server)?,
    })
}

/// Runs the load; `progress` gets one slot per thread (for the caller's progress line).
pub fn run(config: &Config, progress: &[Arc<Progress>]) -> std::io::Result<Report> {
    assert_eq!(progress.len(), config.cpus.len());
    // Bind every socket before any thread starts, so a bad address fails cleanly.
    // No SO_REUSEPORT: every socket must own its source port.
    let options = SocketOptions { reuse_port: false, recv_buffer: 4 << 20, send_buffer: 4 << 20 };
    let mut per_thread = Vec::new();
    for t in 0..config.cpus.len() {
        let mut socks = Vec::new();
        for s in 0..config.sockets {
            let index = t * config.sockets + s;
            // A loopback server is loaded from 127.0.0.1, .2, … (--sources); any other from the
            // address the kernel picks for the route to it (a lab's veth).
            let ip = source_ip(config, index)?;
            let listener = socket::bind(SocketAddr::new(ip, 0), &options)?;
            socks.push(Sock { listener, requests: Ring::new(RING) });
        }
        per_thread.push(socks);
    }
    let tallies = run_threads(config, "bench", per_thread, progress, |config, t, socks, start, progress| {
        Worker::new(config, t, socks, start).run(progress)
    });
    Ok(report(config, &tallies))
}

/// Sums the threads' tallies into the report (also the TCP mode's).
pub(crate) fn report(config: &Config, tallies: &[Tally]) -> Report {
    let mut histogram = new_histogram();
    let mut r = Report {
        server: config.server.to_string(),
        mode: if config.rate > 0 { "open" } else { "closed" },
        target_rate: config.rate,
        threads: config.cpus.len(),
        sockets: config.cpus.len() * config.sockets,
        duration_s: config.duration.as_secs_f64(),
        ..Report::default()
    };
    let mut invalid = [0u64; Invalid::ALL.len()];
    let (mut idle, mut busy) = (0u64, 0u64);
    for t in tallies {
        r.sent += t.sent;
        r.received += t.received;
        r.valid += t.valid;
        r.lost += t.lost;
        r.late += t.late;
        r.send_errors += t.send_errors;
        r.not_sent += t.not_sent;
        r.junk_sent += t.junk_sent;
        for (a, b) in invalid.iter_mut().zip(t.invalid) {
            *a += b;
        }
        histogram.add(&t.histogram).expect("same histogram bounds");
        idle += t.idle_ns;
        busy += t.busy_ns;
    }
    r.invalid = invalid.iter().sum();
    r.invalid_by_kind = Invalid::ALL.iter().zip(invalid).filter(|(_, n)| *n > 0).map(|(k, n)| (k.name(), n)).collect();
    r.rate = r.valid as f64 / r.duration_s;
    let us = |ns: u64| ns as f64 / 1000.0;
    if !histogram.is_empty() {
        r.latency = Latency {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        };
    }
    r.generator_idle = if idle + busy > 0 { idle as f64 / (idle + busy) as f64 } else { 0.0 };
    r
}

struct Worker {
    thread: usize,
    server: SocketAddr,
    socks: Vec<Sock>,
    clock: Clock,
    /// Requests per second for this thread (0: closed loop).
    rate: u64,
    window: usize,
    pattern: Vec<Kind>,
    credentials: Credentials,
    batch: usize,
    junk_percent: u64,
    /// Requests sent so far (all sockets), to interleave junk evenly.
    requests_so_far: u64,
    send: MmsgBatch,
    recv: MmsgBatch,
    tally: Tally,
    /// Open loop: requests scheduled so far.
    scheduled: u64,
    next_socket: usize,
}

impl Worker {
    fn new(config: &Config, thread: usize, socks: Vec<Sock>, start: Instant) -> Worker {
        Worker {
            thread,
            server: config.server,
            socks,
            clock: Clock::new(config, start),
            rate: thread_rate(config, thread),
            window: config.window.clamp(1, RING),
            pattern: pattern(config),
            credentials: config.credentials.clone(),
            batch: config.batch.max(1),
            junk_percent: u64::from(config.junk_percent),
            requests_so_far: 0,
            // Room for the junk interleaved with a full batch of requests.
            send: MmsgBatch::new(config.batch * (100 + config.junk_percent as usize).div_ceil(100)),
            recv: MmsgBatch::new(config.batch),
            tally: Tally::new(),
            scheduled: 0,
            next_socket: 0,
        }
    }

    fn run(mut self, progress: &Progress) -> Tally {
        self.clock.wait_start(true);
        let clock = self.clock;
        drive(&mut self, clock, progress).expect("a UDP turn does not fail");
        self.tally
    }

    /// Builds and sends `n` requests on socket `s`; `sent_at(k)` is the k-th one's time.
    fn send_batch(&mut self, s: usize, n: usize, sent_at: impl Fn(usize) -> u64) -> usize {
        if n == 0 {
            return 0;
        }
        let sock = &mut self.socks[s];
        for k in 0..n {
            let seq = sock.requests.tail + k as u64;
            let kind = self.pattern[(seq as usize) % self.pattern.len()];
            let tag = Tag { thread: self.thread as u8, socket: s as u16, seq, kind: kind.index() };
            let len = write_request(kind, tag.to_tid(), &self.credentials, self.send.buffer_mut(k))
                .expect("requests fit the buffer");
            self.send.queue_to(k, len, self.server);
            sock.requests.sent(seq, sent_at(k));
        }
        // Junk after the requests, in proportion to the requests sent so far.
        let due_junk = (self.requests_so_far + n as u64) * self.junk_percent / 100
            - self.requests_so_far * self.junk_percent / 100;
        let junk = (due_junk as usize).min(self.send.capacity() - n);
        for j in 0..junk {
            let len = write_junk(self.tally.junk_sent + j as u64, self.send.buffer_mut(n + j));
            self.send.queue_to(n + j, len, self.server);
        }
        self.requests_so_far += n as u64;
        let result = self.send.flush(sock.listener.socket.as_raw_fd());
        // Requests the kernel refused are not outstanding: they were never sent. sendmmsg
        // sends in order, so the refused ones are the last (junk goes after the requests).
        let ok = (result.sent_datagrams as usize).min(n);
        self.tally.junk_sent += (result.sent_datagrams as usize - ok) as u64;
        for k in ok..n {
            sock.requests.unsent(sock.requests.tail + k as u64);
        }
        sock.requests.tail += ok as u64;
        sock.requests.in_flight += ok;
        self.tally.sent += ok as u64;
        self.tally.send_errors += result.send_errors.total();
        ok
    }

    /// Drains every socket; returns the number of datagrams received.
    fn receive_all(&mut self) -> usize {
        let mut total = 0;
        for s in 0..self.socks.len() {
            loop {
                // A receive error (ECONNREFUSED from an ICMP port unreachable, say) ends this socket's turn.
                let n = self.recv.recv(self.socks[s].listener.socket.as_raw_fd()).unwrap_or_default();
                if n == 0 {
                    break;
                }
                let now = self.clock.now_ns();
                for i in 0..n {
                    self.answer(s, i, now);
                }
                total += n;
                if n < self.recv.capacity() {
                    break;
                }
            }
        }
        total
    }

    fn answer(&mut self, s: usize, i: usize, now: u64) {
        self.tally.received += 1;
        let local = self.socks[s].listener.local;
        let packet = self.recv.received(i);
        let outcome = if packet.src != Some(self.server) {
            Err(Invalid::WrongSource)
        } else {
            check_answer(&packet.buf[..packet.len], local, &self.credentials)
        };
        match outcome {
            Ok(tag) if usize::from(tag.socket) == s && usize::from(tag.thread) == self.thread => {
                self.socks[s].requests.answer(tag.seq, now, &mut self.tally);
            }
            Ok(_) => self.tally.invalid(Invalid::UnknownTransaction),
            Err(e) => self.tally.invalid(e),
        }
    }
}

impl Generator for Worker {
    const WAITS: bool = false;

    fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Sends what is due now; returns the number of requests sent.
    fn send_due(&mut self, now: u64) -> usize {
        let batch = self.batch;
        let mut sent = 0;
        if self.rate > 0 {
            let due = (u128::from(now) * u128::from(self.rate) / 1_000_000_000) as u64;
            // At most one batch per socket per turn, so receiving keeps up.
            for _ in 0..self.socks.len() {
                if self.scheduled >= due {
                    break;
                }
                let n = ((due - self.scheduled) as usize).min(batch);
                let s = self.next_socket;
                self.next_socket = (s + 1) % self.socks.len();
                let room = self.socks[s].requests.room();
                let n_ok = n.min(room);
                let first = self.scheduled;
                let rate = self.rate;
                sent += self.send_batch(s, n_ok, |k| {
                    ((u128::from(first + k as u64) * 1_000_000_000) / u128::from(rate)) as u64
                });
                self.tally.not_sent += (n - n_ok) as u64;
                self.scheduled += n as u64;
            }
        } else {
            for s in 0..self.socks.len() {
                let requests = &self.socks[s].requests;
                let n = (self.window.saturating_sub(requests.in_flight)).min(batch).min(requests.room());
                if n > 0 {
                    sent += self.send_batch(s, n, |_| now);
                }
            }
        }
        sent
    }

    fn receive(&mut self, _sending: bool) -> io::Result<usize> {
        Ok(self.receive_all())
    }

    fn each_ring(&mut self, mut f: impl FnMut(&mut Ring, &mut Tally)) {
        for sock in &mut self.socks {
            f(&mut sock.requests, &mut self.tally);
        }
    }
}
