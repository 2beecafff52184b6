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

struct Sock {
    listener: Listener,
    ring: Box<[Slot]>,
    /// Oldest sequence not yet answered or lost.
    head: u64,
    /// Next sequence to send.
    tail: u64,
    in_flight: usize,
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
        }
    }
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
            socks.push(Sock {
                listener,
                ring: vec![Slot { seq: 0, sent_ns: 0, state: SlotState::Free }; RING].into(),
                head: 0,
                tail: 0,
                in_flight: 0,
            });
        }
        per_thread.push(socks);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(t, socks)| {
            let config = config.clone();
            let progress = progress[t].clone();
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || {
                    if let Some(cpu) = config.cpus[t] {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    Worker::new(&config, t, socks, start).run(&progress)
                })
                .expect("spawn generator thread")
        })
        .collect();
    let tallies: Vec<Tally> = handles.into_iter().map(|h| h.join().expect("generator thread panicked")).collect();
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
    start: Instant,
    duration_ns: u64,
    timeout_ns: u64,
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
    interval: Histogram<u64>,
}

impl Worker {
    fn new(config: &Config, thread: usize, socks: Vec<Sock>, start: Instant) -> Worker {
        let mut pattern = Vec::new();
        for (kind, weight) in &config.mix {
            pattern.extend(std::iter::repeat_n(*kind, *weight as usize));
        }
        let threads = config.cpus.len() as u64;
        // Spread the total rate; the first threads take the remainder.
        let rate = if config.rate == 0 {
            0
        } else {
            config.rate / threads + u64::from((thread as u64) < config.rate % threads)
        };
        Worker {
            thread,
            server: config.server,
            socks,
            start,
            duration_ns: config.duration.as_nanos() as u64,
            timeout_ns: config.timeout.as_nanos() as u64,
            rate,
            window: config.window.clamp(1, RING),
            pattern,
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
            interval: new_histogram(),
        }
    }

    fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_nanos() as u64
    }

    fn run(mut self, progress: &Progress) -> Tally {
        while Instant::now() < self.start {
            std::hint::spin_loop();
        }
        let mut last_expire = 0;
        let mut last_publish = 0;
        let mut last_interval = 0;
        let mut turn_start = self.now_ns();
        loop {
            let now = turn_start;
            let sending = now < self.duration_ns;
            let mut work = if sending { self.send_due(now) } else { 0 };
            work += self.receive_all();
            if now - last_expire >= 1_000_000 || !sending {
                self.expire(now);
                last_expire = now;
            }
            if now - last_publish >= 100_000_000 {
                self.publish(progress);
                last_publish = now;
            }
            if now - last_interval >= 1_000_000_000 {
                let p99 = if self.interval.is_empty() { 0 } else { self.interval.value_at_quantile(0.99) };
                progress.p99_ns.store(p99, Ordering::Relaxed);
                self.interval.reset();
                last_interval = now;
            }
            let in_flight: usize = self.socks.iter().map(|s| s.in_flight).sum();
            if !sending && (in_flight == 0 || now >= self.duration_ns + self.timeout_ns) {
                break;
            }
            let end = self.now_ns();
            if work == 0 {
                self.tally.idle_ns += end - turn_start;
            } else {
                self.tally.busy_ns += end - turn_start;
            }
            turn_start = end;
        }
        // Whatever is still outstanding after the drain is lost.
        for s in &mut self.socks {
            while s.head < s.tail {
                let slot = &mut s.ring[(s.head % RING as u64) as usize];
                if slot.state == SlotState::Outstanding {
                    slot.state = SlotState::Lost;
                    self.tally.lost += 1;
                }
                s.head += 1;
            }
            s.in_flight = 0;
        }
        self.publish(progress);
        self.tally
    }

    fn publish(&self, progress: &Progress) {
        progress.sent.store(self.tally.sent, Ordering::Relaxed);
        progress.valid.store(self.tally.valid, Ordering::Relaxed);
        progress.invalid.store(self.tally.invalid.iter().sum(), Ordering::Relaxed);
        progress.lost.store(self.tally.lost, Ordering::Relaxed);
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
                let room = RING - (self.socks[s].tail - self.socks[s].head) as usize;
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
                let sock = &self.socks[s];
                let room = RING - (sock.tail - sock.head) as usize;
                let n = (self.window.saturating_sub(sock.in_flight)).min(batch).min(room);
                if n > 0 {
                    sent += self.send_batch(s, n, |_| now);
                }
            }
        }
        sent
    }

    /// Builds and sends `n` requests on socket `s`; `sent_at(k)` is the k-th one's time.
    fn send_batch(&mut self, s: usize, n: usize, sent_at: impl Fn(usize) -> u64) -> usize {
        if n == 0 {
            return 0;
        }
        let sock = &mut self.socks[s];
        for k in 0..n {
            let seq = sock.tail + k as u64;
            let kind = self.pattern[(seq as usize) % self.pattern.len()];
            let tag = Tag { thread: self.thread as u8, socket: s as u16, seq, kind: kind.index() };
            let len = write_request(kind, tag.to_tid(), &self.credentials, self.send.buffer_mut(k))
                .expect("requests fit the buffer");
            self.send.queue_to(k, len, self.server);
            sock.ring[(seq % RING as u64) as usize] = Slot { seq, sent_ns: sent_at(k), state: SlotState::Outstanding };
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
            sock.ring[((sock.tail + k as u64) % RING as u64) as usize].state = SlotState::Free;
        }
        sock.tail += ok as u64;
        sock.in_flight += ok;
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
                let now = self.now_ns();
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
        let tag = match outcome {
            Ok(tag) if usize::from(tag.socket) == s && usize::from(tag.thread) == self.thread => tag,
            Ok(_) => return self.invalid(Invalid::UnknownTransaction),
            Err(e) => return self.invalid(e),
        };
        let sock = &mut self.socks[s];
        let slot = &mut sock.ring[(tag.seq % RING as u64) as usize];
        if slot.seq != tag.seq || tag.seq >= sock.tail {
            // The slot was reused: this answer is older than RING requests ago.
            if tag.seq < sock.head {
                self.tally.late += 1;
            } else {
                self.invalid(Invalid::UnknownTransaction);
            }
            return;
        }
        match slot.state {
            SlotState::Outstanding => {
                slot.state = SlotState::Answered;
                sock.in_flight -= 1;
                let latency = now.saturating_sub(slot.sent_ns).max(1);
                let _ = self.tally.histogram.record(latency);
                let _ = self.interval.record(latency);
                self.tally.valid += 1;
            }
            SlotState::Lost => self.tally.late += 1,
            SlotState::Answered => self.invalid(Invalid::Duplicate),
            SlotState::Free => self.invalid(Invalid::UnknownTransaction),
        }
    }

    fn invalid(&mut self, why: Invalid) {
        self.tally.invalid[why as usize] += 1;
    }

    /// Advances each socket's head over answered requests and counts timed-out ones lost.
    fn expire(&mut self, now: u64) {
        for sock in &mut self.socks {
            while sock.head < sock.tail {
                let slot = &mut sock.ring[(sock.head % RING as u64) as usize];
                match slot.state {
                    SlotState::Outstanding if now.saturating_sub(slot.sent_ns) > self.timeout_ns => {
                        slot.state = SlotState::Lost;
                        sock.in_flight -= 1;
                        self.tally.lost += 1;
                    }
                    SlotState::Outstanding => break,
                    _ => {}
                }
                sock.head += 1;
            }
        }
    }
}
