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
use std::time::{Duration, Instant};

use serde::Serialize;
use stunedge::io::epoll::{Epoll, Event, HANGUP, READ, WRITE};

use crate::check::{Invalid, check_answer};
use crate::load::{self, Clock, Config, Generator, Progress, Report, Ring, Tally};
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

struct Conn {
    stream: TcpStream,
    local: SocketAddr,
    /// The address it was opened from (and is reopened from).
    source: std::net::IpAddr,
    /// Its requests (a ring of a power of two ≥ the window).
    requests: Ring,
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
                requests: Ring::new(ring),
                input: vec![0; INPUT].into(),
                filled: 0,
                output: Vec::with_capacity(window * MAX_REQUEST),
                open: true,
                interest: READ,
            });
        }
        per_thread.push(conns);
    }
    let done =
        load::run_threads(config, "bench-tcp", per_thread, progress, move |config, t, conns, start, progress| {
            Worker::new(config, t, conns, start, reconnect).and_then(|w| w.run(progress))
        });
    let mut tallies = Vec::new();
    let (mut closed_by_server, mut framing_errors, mut reconnects) = (0, 0, 0);
    for w in done {
        let w = w?;
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
    clock: Clock,
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
    /// Reused by each turn's epoll wait.
    events: Vec<Event>,
}

impl Worker {
    fn new(config: &Config, thread: usize, conns: Vec<Conn>, start: Instant, reconnect: bool) -> io::Result<Worker> {
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
            clock: Clock::new(config, start),
            rate: load::thread_rate(config, thread),
            window: config.window.max(1),
            pattern: load::pattern(config),
            credentials: config.credentials.clone(),
            tally: Tally::new(),
            closed_by_server: 0,
            framing_errors: 0,
            scheduled: 0,
            next_conn: 0,
            events: Vec::with_capacity(1024),
        })
    }

    fn run(mut self, progress: &Progress) -> io::Result<Done> {
        self.clock.wait_start(false);
        let clock = self.clock;
        load::drive(&mut self, clock, progress)?;
        Ok(Done {
            tally: self.tally,
            closed_by_server: self.closed_by_server,
            framing_errors: self.framing_errors,
            reconnects: self.reconnects,
        })
    }

    /// Appends `n` requests to connection `i`'s output, sent at `now`.
    fn queue(&mut self, i: usize, n: usize, now: u64) {
        let c = &mut self.conns[i];
        let mut buf = [0u8; MAX_REQUEST];
        for _ in 0..n {
            let seq = c.requests.tail;
            let kind = self.pattern[(seq as usize) % self.pattern.len()];
            let tag = Tag { thread: self.thread as u8, socket: i as u16, seq, kind: kind.index() };
            let len = write_request(kind, tag.to_tid(), &self.credentials, &mut buf).expect("requests fit the buffer");
            c.output.extend_from_slice(&buf[..len]);
            c.requests.sent(seq, now);
            c.requests.tail += 1;
            c.requests.in_flight += 1;
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
        let now = self.clock.now_ns();
        let mut input = std::mem::take(&mut self.conns[i].input);
        let filled = self.conns[i].filled;
        let (mut at, mut answers) = (0, 0);
        while filled - at >= HEADER {
            let len = HEADER + usize::from(u16::from_be_bytes([input[at + 2], input[at + 3]]));
            // STUN messages start with two zero bits (RFC 8489 §5), and none of ours is longer
            // than the buffer: anything else loses the framing.
            if input[at] & 0xC0 != 0 || len > input.len() {
                self.conns[i].input = input;
                self.tally.invalid(Invalid::Malformed);
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
        match check_answer(bytes, self.conns[i].local, &self.credentials) {
            Ok(tag) if usize::from(tag.socket) == i && usize::from(tag.thread) == self.thread => {
                self.conns[i].requests.answer(tag.seq, now, &mut self.tally);
            }
            Ok(_) => self.tally.invalid(Invalid::UnknownTransaction),
            Err(e) => self.tally.invalid(e),
        }
    }

    /// Closes connection `i`: by the server (EOF, reset), or here on a framing error. Its
    /// requests in flight are lost.
    fn close(&mut self, i: usize, framing: bool) {
        let sending = self.clock.sending(self.clock.now_ns());
        let c = &mut self.conns[i];
        if !c.open {
            return;
        }
        c.open = false;
        let _ = self.epoll.delete(&c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        c.requests.lose_all(&mut self.tally);
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
}

impl Generator for Worker {
    const WAITS: bool = true;

    fn tally(&mut self) -> &mut Tally {
        &mut self.tally
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
                if !c.open || c.requests.in_flight >= self.window || c.requests.room() == 0 {
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
                let n = self.window.saturating_sub(c.requests.in_flight).min(c.requests.room());
                if c.open && n > 0 {
                    self.queue(i, n, now);
                    self.flush(i);
                    sent += n;
                }
            }
        }
        sent
    }

    /// Waits for readiness (at most until the next request is due while sending, rounded up to
    /// a millisecond, and 5 ms) and handles it.
    fn receive(&mut self, sending: bool) -> io::Result<usize> {
        let wait_ms = if !sending {
            5
        } else if self.rate > 0 {
            // Until the next request is due, rounded up.
            let next_ns = ((u128::from(self.scheduled + 1) * 1_000_000_000) / u128::from(self.rate)) as u64;
            next_ns.saturating_sub(self.clock.now_ns()).div_ceil(1_000_000).min(5) as i32
        } else {
            5
        };
        self.epoll.wait(&mut self.events, wait_ms)?;
        let mut answers = 0;
        for k in 0..self.events.len() {
            let Event { token, events: ready } = self.events[k];
            answers += self.ready(token as usize, ready);
        }
        Ok(answers)
    }

    fn each_ring(&mut self, mut f: impl FnMut(&mut Ring, &mut Tally)) {
        for c in &mut self.conns {
            f(&mut c.requests, &mut self.tally);
        }
    }
}
