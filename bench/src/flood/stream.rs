//! Stream floods (`stunedge-flood stream`, run by `scripts/bench-stream.sh`): what a client
//! with many sockets can do to a STUN-over-TCP/TLS plane without sending much, in three groups
//! of connection slots, all from loopback source addresses (127.0.1.1, .2, …; the server
//! exempts loopback from its per-prefix caps, so only its global caps and timeouts apply):
//!
//! - **idle**: connect, send one Binding request, read its answer, then nothing: each holds a
//!   connection until the server's `idle_timeout`;
//! - **slowloris**: connect and send a Binding request one byte every interval, never a whole
//!   message in time (the server's `first_message_timeout` closes it);
//! - **handshake**: connect to the TLS port and send the first bytes of a ClientHello (even
//!   slots) or nothing (odd slots): the server's `handshake_timeout` closes it, or its
//!   `max_handshakes` refuses it at once.
//!
//! While the flood runs, a slot the server closed (or that failed to connect) is reopened after
//! `retry`, as an attacker would; at most `max_connecting` connects are in progress at once.
//! When it ends (`duration`, or SIGTERM through `stop`) it either closes everything at once
//! (`hold` zero) or sends nothing more and waits up to `hold` for the server to close every
//! connection itself, reporting how long that took. One thread, one epoll instance; bounded by
//! `duration + hold`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use stunedge::io::epoll::{Epoll, Event, HANGUP, READ, WRITE};

/// A Binding request (RFC 8489 §5) with a fixed transaction ID.
const BINDING: [u8; 20] = [
    0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, b's', b't', b'r', b'e', b'a', b'm', b'f', b'l', b'o', b'o', b'd',
    b'!',
];

/// The first 48 bytes of a TLS 1.2 ClientHello record that announces 512 bytes: a server
/// waits for the rest (RFC 8446 §5.1, §4.1.2).
const PARTIAL_CLIENT_HELLO: [u8; 48] = [
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, legacy version, length 512
    0x01, 0x00, 0x01, 0xFC, // ClientHello, length 508
    0x03, 0x03, // legacy_version TLS 1.2
    0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, // random …
    0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, // … random
    0x20, 0xA5, 0xA5, 0xA5, 0xA5, // session id length 32, its first bytes
];

/// A connection closed by the server this soon after it opened was refused at once (a cap),
/// not timed out.
const REFUSED_WITHIN: Duration = Duration::from_millis(500);
/// A connect that has not finished after this long is abandoned (and retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often slots' timers are looked at.
const TICK: Duration = Duration::from_millis(20);

/// What to flood.
#[derive(Debug, Clone)]
pub struct StreamFloodConfig {
    /// The server's TCP listener.
    pub tcp: SocketAddr,
    /// Its TLS listener (the handshake group; none without it).
    pub tls: Option<SocketAddr>,
    /// Idle connections.
    pub idle: usize,
    /// Slowloris connections.
    pub slowloris: usize,
    /// Seconds between a slowloris connection's bytes.
    pub slowloris_interval: Duration,
    /// Handshake-flood connections.
    pub handshake: usize,
    /// A closed slot is reopened this long after it closed.
    pub retry: Duration,
    /// Source addresses 127.0.1.1, .2, … the slots are spread over.
    pub sources: usize,
    /// Connects in progress at once at most.
    pub max_connecting: usize,
    /// How long the flood runs.
    pub duration: Duration,
    /// After the flood: wait this long for the server to close every connection (zero: close
    /// them here at once).
    pub hold: Duration,
    /// Set (by SIGTERM) to end the flood early.
    pub stop: Arc<AtomicBool>,
    /// Written ("ready") once every idle slot has had its Binding answered.
    pub ready_file: Option<PathBuf>,
}

/// One group's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    /// Slots.
    pub slots: usize,
    /// Connections established.
    pub connects: u64,
    /// Connects that failed or timed out.
    pub connect_errors: u64,
    /// Connections the server closed or reset while the flood ran.
    pub closed_by_server: u64,
    /// Of those, closed within 0.5 s of opening (refused by a cap, not timed out).
    pub refused_at_once: u64,
    /// Idle group: Binding answers read (a 0x0101 header).
    pub answered: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Open when the flood ended.
    pub open_at_end: usize,
}

/// What the flood did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamFloodReport {
    /// "stream".
    pub mode: &'static str,
    /// The idle group.
    pub idle: GroupReport,
    /// The slowloris group.
    pub slowloris: GroupReport,
    /// The handshake group.
    pub handshake: GroupReport,
    /// Seconds from the start until every idle slot had its answer (-1: never).
    pub idle_ready_s: f64,
    /// Most connections open at once.
    pub peak_open: usize,
    /// Seconds the flood ran.
    pub flood_s: f64,
    /// Connections open when the hold began.
    pub hold_open: usize,
    /// Of those, closed by the server during the hold.
    pub hold_closed_by_server: usize,
    /// Seconds from the hold's start to the server's last close (or the hold's end).
    pub hold_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Idle,
    Slowloris,
    Handshake,
}

enum State {
    /// To (re)open at this time.
    Waiting(Instant),
    Connecting(Socket, Instant),
    Open {
        socket: Socket,
        since: Instant,
        next_byte: Instant,
        sent: usize,
    },
    /// Not to be reopened (the hold, or no TLS listener).
    Done,
}

struct Slot {
    group: Group,
    /// Index within its group.
    index: usize,
    source: IpAddr,
    state: State,
    answered: bool,
}

/// Runs the flood; the report of what it did.
pub fn run(config: &StreamFloodConfig) -> io::Result<StreamFloodReport> {
    let start = Instant::now();
    let mut slots = Vec::new();
    let groups =
        [(Group::Idle, config.idle), (Group::Slowloris, config.slowloris), (Group::Handshake, config.handshake)];
    for (group, n) in groups {
        for index in 0..n {
            let k = slots.len();
            let source =
                IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 1)) + (k % config.sources.max(1)) as u32));
            let state =
                if group == Group::Handshake && config.tls.is_none() { State::Done } else { State::Waiting(start) };
            slots.push(Slot { group, index, source, state, answered: false });
        }
    }
    let mut flood = Flood {
        config,
        epoll: Epoll::new(1024)?,
        slots,
        connecting: 0,
        open: 0,
        report: StreamFloodReport { mode: "stream", idle_ready_s: -1.0, ..StreamFloodReport::default() },
        idle_answered: 0,
    };
    flood.report.idle.slots = config.idle;
    flood.report.slowloris.slots = config.slowloris;
    flood.report.handshake.slots = config.handshake;
    if config.idle == 0 {
        flood.signal_ready(start);
    }
    let mut events = Vec::with_capacity(1024);
    let mut last_tick = start;
    // The flood.
    while start.elapsed() < config.duration && !config.stop.load(Ordering::Relaxed) {
        flood.epoll.wait(&mut events, TICK.as_millis() as i32)?;
        for &Event { token, events: ready } in &events {
            flood.ready(token as usize, ready, true, start);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            flood.tick(last_tick);
        }
        flood.report.peak_open = flood.report.peak_open.max(flood.open);
    }
    flood.report.flood_s = start.elapsed().as_secs_f64();
    // The end: stop every connect and timer; count what is open.
    for slot in &mut flood.slots {
        if let State::Open { .. } = slot.state {
            match slot.group {
                Group::Idle => flood.report.idle.open_at_end += 1,
                Group::Slowloris => flood.report.slowloris.open_at_end += 1,
                Group::Handshake => flood.report.handshake.open_at_end += 1,
            }
        } else {
            slot.state = State::Done;
        }
    }
    flood.connecting = 0;
    flood.report.hold_open = flood.open;
    let hold_start = Instant::now();
    if !config.hold.is_zero() {
        // The hold: nothing written; the server's timeouts close what is left.
        while flood.open > 0 && hold_start.elapsed() < config.hold {
            flood.epoll.wait(&mut events, 100)?;
            for &Event { token, events: ready } in &events {
                flood.ready(token as usize, ready, false, start);
            }
        }
        flood.report.hold_closed_by_server = flood.report.hold_open - flood.open;
        flood.report.hold_s = hold_start.elapsed().as_secs_f64();
    }
    Ok(flood.report)
}

struct Flood<'a> {
    config: &'a StreamFloodConfig,
    epoll: Epoll,
    slots: Vec<Slot>,
    connecting: usize,
    open: usize,
    report: StreamFloodReport,
    idle_answered: usize,
}

impl Flood<'_> {
    fn group(&mut self, group: Group) -> &mut GroupReport {
        match group {
            Group::Idle => &mut self.report.idle,
            Group::Slowloris => &mut self.report.slowloris,
            Group::Handshake => &mut self.report.handshake,
        }
    }

    fn signal_ready(&mut self, start: Instant) {
        self.report.idle_ready_s = start.elapsed().as_secs_f64();
        eprintln!("stunedge-flood: ready ({:.1} s)", self.report.idle_ready_s);
        if let Some(path) = &self.config.ready_file {
            let _ = std::fs::write(path, "ready\n");
        }
    }

    /// Timers: (re)opens, slowloris bytes, abandoned connects.
    fn tick(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let group = self.slots[i].group;
            match &mut self.slots[i].state {
                State::Waiting(at) if now >= *at && self.connecting < self.config.max_connecting => {
                    self.connect(i, now)
                }
                State::Connecting(_, since) if now - *since >= CONNECT_TIMEOUT => {
                    self.connecting -= 1;
                    self.group(group).connect_errors += 1;
                    self.slots[i].state = State::Waiting(now + self.config.retry);
                }
                State::Open { socket, next_byte, sent, .. } if group == Group::Slowloris && now >= *next_byte => {
                    let byte = BINDING[*sent % BINDING.len()];
                    if socket.write(&[byte]).is_ok_and(|n| n == 1) {
                        *sent += 1;
                        self.report.slowloris.bytes_sent += 1;
                    }
                    *next_byte += self.config.slowloris_interval;
                }
                _ => {}
            }
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let slot = &self.slots[i];
        let server = match slot.group {
            Group::Handshake => self.config.tls.unwrap_or(self.config.tcp),
            _ => self.config.tcp,
        };
        let started = (|| {
            let socket = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            socket.bind(&SocketAddr::new(slot.source, 0).into())?;
            match socket.connect(&server.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            self.epoll.add(&socket, i as u64, WRITE)?;
            Ok(socket)
        })();
        match started {
            Ok(socket) => {
                self.connecting += 1;
                self.slots[i].state = State::Connecting(socket, now);
            }
            Err(_) => {
                let group = slot.group;
                self.group(group).connect_errors += 1;
                self.slots[i].state = State::Waiting(now + self.config.retry);
            }
        }
    }

    /// Readiness of slot `i`; `flooding`: reopen what closes.
    fn ready(&mut self, i: usize, events: u32, flooding: bool, start: Instant) {
        let now = Instant::now();
        let group = self.slots[i].group;
        let retry = if flooding { State::Waiting(now + self.config.retry) } else { State::Done };
        match std::mem::replace(&mut self.slots[i].state, State::Done) {
            State::Connecting(socket, _) => {
                self.connecting -= 1;
                // Established (even if the server closed it at once: that shows on the read).
                if !matches!(socket.take_error(), Ok(None)) || events & (WRITE | READ) == 0 {
                    let _ = self.epoll.delete(&socket);
                    self.group(group).connect_errors += 1;
                    self.slots[i].state = retry;
                    return;
                }
                let _ = self.epoll.modify(&socket, i as u64, READ);
                self.group(group).connects += 1;
                self.open += 1;
                // What each group says first.
                let first: &[u8] = match group {
                    Group::Idle => &BINDING,
                    Group::Slowloris => &BINDING[..1],
                    Group::Handshake if self.slots[i].index.is_multiple_of(2) => &PARTIAL_CLIENT_HELLO,
                    Group::Handshake => &[],
                };
                let sent = if first.is_empty() { 0 } else { (&socket).write(first).unwrap_or(0) };
                self.group(group).bytes_sent += sent as u64;
                self.slots[i].state = State::Open {
                    socket,
                    since: now,
                    next_byte: now + self.config.slowloris_interval,
                    sent: if group == Group::Slowloris { sent } else { 0 },
                };
                if events & (READ | HANGUP) != 0 {
                    self.ready(i, events, flooding, start);
                }
            }
            State::Open { socket, since, next_byte, sent } => {
                let mut buf = [0u8; 512];
                let closed = loop {
                    match (&socket).read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            if group == Group::Idle && !self.slots[i].answered && n >= 2 && buf[..2] == [0x01, 0x01] {
                                self.slots[i].answered = true;
                                self.report.idle.answered += 1;
                                self.idle_answered += 1;
                                if self.idle_answered == self.config.idle {
                                    self.signal_ready(start);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break events & HANGUP != 0,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    let _ = self.epoll.delete(&socket);
                    self.open -= 1;
                    // During the hold, closes are counted apart (`hold_closed_by_server`).
                    if flooding {
                        let report = self.group(group);
                        report.closed_by_server += 1;
                        if now - since < REFUSED_WITHIN {
                            report.refused_at_once += 1;
                        }
                    }
                    self.slots[i].state = retry;
                } else {
                    self.slots[i].state = State::Open { socket, since, next_byte, sent };
                }
            }
            other => self.slots[i].state = other,
        }
    }
}
