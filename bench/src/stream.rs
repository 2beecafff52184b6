//! The load generator's TCP mode (`stunedge-bench --tcp`): T threads, each owning many
//! long-lived TCP connections to the server (distinct source ports, optionally distinct 127.x
//! source addresses), driven by one epoll instance per thread. STUN over TCP has no framing of
//! its own (RFC 8489 §6.2.2): requests are written back to back, answers are read as a byte
//! stream and cut by their header (20 bytes + the length field).
//!
//! Closed loop (`rate = 0`): each connection keeps `window` requests in flight, pipelined: as
//! answers come back the connection is topped up with one write. Open loop (`rate > 0`): the
//! thread's share of `rate` is spread round robin over its connections, at most `window` in
//! flight on each (a request due on a full connection is counted `not_sent`). Latency is from
//! the request's write to its answer's read (with `--rate` a request is written at most ~1 ms
//! after its scheduled time: epoll's timeout is in milliseconds).
//!
//! Every answer gets the UDP mode's checks ([`crate::check::check_answer`]): Binding success,
//! a transaction ID this thread sent on this connection, and XOR-MAPPED-ADDRESS (MAPPED-ADDRESS
//! for classic requests) equal to the connection's own local address; then matched to its
//! request (duplicates, late answers). A request unanswered after `timeout` is lost. Bytes that
//! cannot be a STUN header (top bits set, or a length beyond the read buffer) end the
//! connection: there is no way to find the next message (counted `malformed` and in
//! `framing_errors`). A connection the server closes is counted in `closed_by_server`, and its
//! requests in flight lost; with `reconnect` it is opened again at once (while sending), for
//! servers that close busy connections (coturn 4.6.1 resets a STUN-only TCP connection about
//! 3 s after it opened, however busy).
//!
//! Buffers are allocated when the connections are opened; the steady state allocates nothing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use stunedge::io::epoll::{Epoll, Event, HANGUP, READ, WRITE};

use crate::check::{Invalid, check_answer};
use crate::load::{self, Config, Progress, Report, Tally, new_histogram};
use crate::requests::{Credentials, Kind, Tag, write_request};

/// A STUN message header: type, length, magic cookie, transaction ID (RFC 8489 §5).
const HEADER: usize = 20;
/// Bytes of answers read at once per connection; an answer longer than this is a framing
/// error (stunedge's are at most `stream.max_message_size`, 2,048 bytes by default).
const INPUT: usize = 8192;
/// The largest request the generator writes (the ICE kind, 120 bytes, with room to spare).
const MAX_REQUEST: usize = 256;
/// Time to connect each connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The TCP mode's result: the UDP mode's report (`sockets` are connections; `junk_sent` and
/// `send_errors` stay 0) and what only a stream has.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// The fields the UDP mode reports.
    #[serde(flatten)]
    pub report: Report,
    /// "tcp".
    pub transport: &'static str,
    /// Requests in flight per connection at most.
    pub window: usize,
    /// Connections the server closed (or reset) during the run.
    pub closed_by_server: u64,
    /// Connections closed here because the server's bytes could not be a STUN message.
    pub framing_errors: u64,
    /// Connections opened again after the server closed them (`reconnect`).
    pub reconnects: u64,
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

struct Conn {
    stream: TcpStream,
    local: SocketAddr,
    /// The address it was opened from (and is reopened from).
    source: std::net::IpAddr,
    /// Requests by sequence number modulo its length (a power of two ≥ the window).
    ring: Box<[Slot]>,
    /// Oldest sequence not yet answered or lost.
    head: u64,
    /// Next sequence to send.
    tail: u64,
    in_flight: usize,
    /// Answer bytes read and not yet processed (at most one partial answer between turns).
    input: Box<[u8]>,
    filled: usize,
    /// Request bytes not yet taken by the socket.
    output: Vec<u8>,
    open: bool,
    /// The events it is registered for.
    interest: u32,
}

/// Opens a connection from `source` to `server`: TCP_NODELAY, non-blocking.
fn open(source: std::net::IpAddr, server: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    let stream: TcpStream = socket.into();
    let local = stream.local_addr()?;
    Ok((stream, SocketAddr::new(local.ip().to_canonical(), local.port())))
}

/// Opens the connections (all before any thread starts, so a refused one fails cleanly) and
/// runs the load; `progress` gets one slot per thread. With `reconnect`, a connection the
/// server closes is opened again while requests are being sent.
pub fn run(config: &Config, reconnect: bool, progress: &[Arc<Progress>]) -> io::Result<StreamReport> {
    assert_eq!(progress.len(), config.cpus.len());
    if config.junk_percent > 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "junk closes a stream: not with --tcp"));
    }
    let window = config.window.max(1);
    let ring = window.next_power_of_two().max(16);
    let mut per_thread = Vec::new();
    for t in 0..config.cpus.len() {
        let mut conns = Vec::with_capacity(config.sockets);
        for s in 0..config.sockets {
            let source = load::source_ip(config, t * config.sockets + s)?;
            let (stream, local) = open(source, config.server).map_err(|e| {
                io::Error::new(e.kind(), format!("connection {} of thread {t} to {}: {e}", s + 1, config.server))
            })?;
            conns.push(Conn {
                stream,
                local,
                source,
                ring: vec![Slot { seq: 0, sent_ns: 0, state: SlotState::Free }; ring].into(),
                head: 0,
                tail: 0,
                in_flight: 0,
                input: vec![0; INPUT].into(),
                filled: 0,
                output: Vec::with_capacity(window * MAX_REQUEST),
                open: true,
                interest: READ,
            });
        }
        per_thread.push(conns);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(t, conns)| {
            let config = config.clone();
            let progress = progress[t].clone();
            std::thread::Builder::new()
                .name(format!("bench-tcp-{t}"))
                .spawn(move || {
                    if let Some(cpu) = config.cpus[t] {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    Worker::new(&config, t, conns, start, reconnect).and_then(|w| w.run(&progress))
                })
                .expect("spawn generator thread")
        })
        .collect();
    let mut tallies = Vec::new();
    let (mut closed_by_server, mut framing_errors, mut reconnects) = (0, 0, 0);
    for h in handles {
        let w = h.join().expect("generator thread panicked")?;
        closed_by_server += w.closed_by_server;
        framing_errors += w.framing_errors;
        reconnects += w.reconnects;
        tallies.push(w.tally);
    }
    Ok(StreamReport {
        report: load::report(config, &tallies),
        transport: "tcp",
        window,
        closed_by_server,
        framing_errors,
        reconnects,
    })
}

/// What one thread counted.
struct Done {
    tally: Tally,
    closed_by_server: u64,
    framing_errors: u64,
    reconnects: u64,
}

struct Worker {
    thread: usize,
    server: SocketAddr,
    reconnect: bool,
    reconnects: u64,
    conns: Vec<Conn>,
    epoll: Epoll,
    start: Instant,
    duration_ns: u64,
    timeout_ns: u64,
    /// Requests per second for this thread (0: closed loop).
    rate: u64,
    window: usize,
    pattern: Vec<Kind>,
    credentials: Credentials,
    tally: Tally,
    closed_by_server: u64,
    framing_errors: u64,
    /// Open loop: requests scheduled so far, and the connection the next one goes to.
    scheduled: u64,
    next_conn: usize,
    /// Connections given requests this turn (open loop), to write once each.
    dirty: Vec<usize>,
    interval: Histogram<u64>,
}

impl Worker {
    fn new(config: &Config, thread: usize, conns: Vec<Conn>, start: Instant, reconnect: bool) -> io::Result<Worker> {
        let mut pattern = Vec::new();
        for (kind, weight) in &config.mix {
            pattern.extend(std::iter::repeat_n(*kind, *weight as usize));
        }
        let threads = config.cpus.len() as u64;
        let rate = if config.rate == 0 {
            0
        } else {
            config.rate / threads + u64::from((thread as u64) < config.rate % threads)
        };
        let epoll = Epoll::new(conns.len().clamp(1, 1024))?;
        for (i, c) in conns.iter().enumerate() {
            epoll.add(&c.stream, i as u64, READ)?;
        }
        Ok(Worker {
            thread,
            server: config.server,
            reconnect,
            reconnects: 0,
            dirty: Vec::with_capacity(conns.len()),
            conns,
            epoll,
            start,
            duration_ns: config.duration.as_nanos() as u64,
            timeout_ns: config.timeout.as_nanos() as u64,
            rate,
            window: config.window.max(1),
            pattern,
            credentials: config.credentials.clone(),
            tally: Tally::new(),
            closed_by_server: 0,
            framing_errors: 0,
            scheduled: 0,
            next_conn: 0,
            interval: new_histogram(),
        })
    }

    fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_nanos() as u64
    }

    fn run(mut self, progress: &Progress) -> io::Result<Done> {
        while Instant::now() < self.start {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut events: Vec<Event> = Vec::with_capacity(1024);
        let (mut last_expire, mut last_publish, mut last_interval) = (0, 0, 0);
        let mut turn_start = self.now_ns();
        loop {
            let now = turn_start;
            let sending = now < self.duration_ns;
            let mut work = if sending { self.send_due(now) } else { 0 };
            let wait_ms = if !sending {
                5
            } else if self.rate > 0 {
                // Until the next request is due, rounded up.
                let next_ns = ((u128::from(self.scheduled + 1) * 1_000_000_000) / u128::from(self.rate)) as u64;
                next_ns.saturating_sub(self.now_ns()).div_ceil(1_000_000).min(5) as i32
            } else {
                5
            };
            self.epoll.wait(&mut events, wait_ms)?;
            for &Event { token, events: ready } in &events {
                work += self.ready(token as usize, ready);
            }
            let now = self.now_ns();
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
            let in_flight: usize = self.conns.iter().map(|c| c.in_flight).sum();
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
        for c in &mut self.conns {
            lose_all(c, &mut self.tally);
        }
        self.publish(progress);
        Ok(Done {
            tally: self.tally,
            closed_by_server: self.closed_by_server,
            framing_errors: self.framing_errors,
            reconnects: self.reconnects,
        })
    }

    fn publish(&self, progress: &Progress) {
        progress.sent.store(self.tally.sent, Ordering::Relaxed);
        progress.valid.store(self.tally.valid, Ordering::Relaxed);
        progress.invalid.store(self.tally.invalid.iter().sum(), Ordering::Relaxed);
        progress.lost.store(self.tally.lost, Ordering::Relaxed);
    }

    /// Queues and writes what is due now; returns the number of requests queued.
    fn send_due(&mut self, now: u64) -> usize {
        let mut sent = 0;
        if self.rate > 0 {
            let due = (u128::from(now) * u128::from(self.rate) / 1_000_000_000) as u64;
            while self.scheduled < due {
                let i = self.next_conn;
                self.next_conn = (i + 1) % self.conns.len();
                self.scheduled += 1;
                let c = &self.conns[i];
                if !c.open || c.in_flight >= self.window || (c.tail - c.head) as usize >= c.ring.len() {
                    self.tally.not_sent += 1;
                    continue;
                }
                if c.output.is_empty() {
                    self.dirty.push(i);
                }
                self.queue(i, 1, now);
                sent += 1;
            }
            while let Some(i) = self.dirty.pop() {
                self.flush(i);
            }
        } else {
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                let room = c.ring.len() - (c.tail - c.head) as usize;
                let n = self.window.saturating_sub(c.in_flight).min(room);
                if c.open && n > 0 {
                    self.queue(i, n, now);
                    self.flush(i);
                    sent += n;
                }
            }
        }
        sent
    }

    /// Appends `n` requests to connection `i`'s output, sent at `now`.
    fn queue(&mut self, i: usize, n: usize, now: u64) {
        let c = &mut self.conns[i];
        let mut buf = [0u8; MAX_REQUEST];
        for _ in 0..n {
            let seq = c.tail;
            let kind = self.pattern[(seq as usize) % self.pattern.len()];
            let tag = Tag { thread: self.thread as u8, socket: i as u16, seq, kind: kind.index() };
            let len = write_request(kind, tag.to_tid(), &self.credentials, &mut buf).expect("requests fit the buffer");
            c.output.extend_from_slice(&buf[..len]);
            let slot = (seq % c.ring.len() as u64) as usize;
            c.ring[slot] = Slot { seq, sent_ns: now, state: SlotState::Outstanding };
            c.tail += 1;
            c.in_flight += 1;
        }
        self.tally.sent += n as u64;
    }

    /// Writes connection `i`'s output as far as the socket takes it; waits for writability
    /// when some is left.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let mut at = 0;
        while at < c.output.len() {
            match c.stream.write(&c.output[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(i, false),
            }
        }
        c.output.drain(..at);
        let interest = if c.output.is_empty() { READ } else { READ | WRITE };
        if interest != c.interest {
            c.interest = interest;
            let _ = self.epoll.modify(&c.stream, i as u64, interest);
        }
    }

    /// Handles connection `i`'s readiness; returns the number of answers read.
    fn ready(&mut self, i: usize, events: u32) -> usize {
        if !self.conns.get(i).is_some_and(|c| c.open) {
            return 0;
        }
        if events & WRITE != 0 {
            self.flush(i);
        }
        if events & (READ | HANGUP) == 0 {
            return 0;
        }
        let mut answers = 0;
        // Read until the socket is empty: answers are cut out of the buffer after each read.
        loop {
            let c = &mut self.conns[i];
            if !c.open {
                return answers;
            }
            let read = c.stream.read(&mut c.input[c.filled..]);
            match read {
                Ok(0) => {
                    self.close(i, false);
                    return answers;
                }
                Ok(n) => {
                    c.filled += n;
                    let room_left = c.filled < c.input.len();
                    answers += self.process(i);
                    if room_left {
                        return answers;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return answers,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(i, false);
                    return answers;
                }
            }
        }
    }

    /// Cuts the whole answers out of connection `i`'s input; returns how many.
    fn process(&mut self, i: usize) -> usize {
        let now = self.now_ns();
        let mut input = std::mem::take(&mut self.conns[i].input);
        let filled = self.conns[i].filled;
        let (mut at, mut answers) = (0, 0);
        while filled - at >= HEADER {
            let len = HEADER + usize::from(u16::from_be_bytes([input[at + 2], input[at + 3]]));
            // STUN messages start with two zero bits (RFC 8489 §5), and none of ours is longer
            // than the buffer: anything else loses the framing.
            if input[at] & 0xC0 != 0 || len > input.len() {
                self.conns[i].input = input;
                self.invalid(Invalid::Malformed);
                self.close(i, true);
                return answers;
            }
            if filled - at < len {
                break;
            }
            self.answer(i, &input[at..at + len], now);
            at += len;
            answers += 1;
        }
        input.copy_within(at..filled, 0);
        let c = &mut self.conns[i];
        c.input = input;
        c.filled = filled - at;
        answers
    }

    fn answer(&mut self, i: usize, bytes: &[u8], now: u64) {
        self.tally.received += 1;
        let tag = match check_answer(bytes, self.conns[i].local, &self.credentials) {
            Ok(tag) if usize::from(tag.socket) == i && usize::from(tag.thread) == self.thread => tag,
            Ok(_) => return self.invalid(Invalid::UnknownTransaction),
            Err(e) => return self.invalid(e),
        };
        let c = &mut self.conns[i];
        let slot = &mut c.ring[(tag.seq % c.ring.len() as u64) as usize];
        if slot.seq != tag.seq || tag.seq >= c.tail {
            // The slot was reused: this answer is older than the ring.
            if tag.seq < c.head {
                self.tally.late += 1;
            } else {
                self.invalid(Invalid::UnknownTransaction);
            }
            return;
        }
        match slot.state {
            SlotState::Outstanding => {
                slot.state = SlotState::Answered;
                c.in_flight -= 1;
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

    /// Closes connection `i`: by the server (EOF, reset), or here on a framing error. Its
    /// requests in flight are lost.
    fn close(&mut self, i: usize, framing: bool) {
        let sending = self.now_ns() < self.duration_ns;
        let c = &mut self.conns[i];
        if !c.open {
            return;
        }
        c.open = false;
        let _ = self.epoll.delete(&c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        lose_all(c, &mut self.tally);
        c.output.clear();
        c.filled = 0;
        if framing {
            self.framing_errors += 1;
            return;
        }
        self.closed_by_server += 1;
        if self.reconnect && sending {
            let Ok((stream, local)) = open(c.source, self.server) else { return };
            if self.epoll.add(&stream, i as u64, READ).is_ok() {
                (c.stream, c.local, c.open, c.interest) = (stream, local, true, READ);
                self.reconnects += 1;
            }
        }
    }

    /// Advances each connection's head over answered requests and counts timed-out ones lost.
    fn expire(&mut self, now: u64) {
        for c in &mut self.conns {
            while c.head < c.tail {
                let len = c.ring.len() as u64;
                let slot = &mut c.ring[(c.head % len) as usize];
                match slot.state {
                    SlotState::Outstanding if now.saturating_sub(slot.sent_ns) > self.timeout_ns => {
                        slot.state = SlotState::Lost;
                        c.in_flight -= 1;
                        self.tally.lost += 1;
                    }
                    SlotState::Outstanding => break,
                    _ => {}
                }
                c.head += 1;
            }
        }
    }
}

/// Counts every request still in flight on `c` lost.
fn lose_all(c: &mut Conn, tally: &mut Tally) {
    while c.head < c.tail {
        let len = c.ring.len() as u64;
        let slot = &mut c.ring[(c.head % len) as usize];
        if slot.state == SlotState::Outstanding {
            slot.state = SlotState::Lost;
            tally.lost += 1;
        }
        c.head += 1;
    }
    c.in_flight = 0;
}
