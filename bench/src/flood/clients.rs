//! Well-behaved clients, from real bound UDP sockets (any address of a prefix the lab made
//! local with `ip route add local PREFIX dev lo` can be bound): the traffic the reflection
//! defence must keep answering while it limits a flood.
//!
//! A [`Plan`] lists when each transaction starts and on which socket; [`run`] carries them out
//! in one thread (non-blocking sockets, poll(2), a timer heap), retransmitting on RFC 8489
//! §6.2.1's schedule ([`Retransmit`]: with the defaults at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s,
//! giving up at 39.5 s). A transaction succeeds at its first valid answer: a Binding success
//! for that transaction on that socket, from the server, whose XOR-MAPPED-ADDRESS is the
//! socket's own address ([`check_answer`]). Transactions start only during the duration; the
//! ones in flight then run to their end.
//!
//! - `legit` ([`Plan::periodic`]): K clients, each starting a transaction every interval.
//! - `cgnat` ([`Plan::cgnat`]): N users on one address (distinct ports), each a Binding every
//!   interval (25 s, a random phase) and now and then an ICE-like burst (3–5 requests within
//!   100 ms), each request sent once (`rc = 1`): every unanswered one is reported.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;
use stunedge::client::Retransmit;
use stunedge::io::mmsg::wait_readable;

use super::Rng;
use crate::check::{Invalid, check_answer};
use crate::requests::{Credentials, Kind, Tag, write_request};

/// One transaction's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Start {
    /// When, from the run's start, in nanoseconds.
    pub at_ns: u64,
    /// The socket it uses (an index into [`ClientConfig::addresses`]).
    pub socket: u32,
    /// Part of an ICE-like burst (reported apart).
    pub burst: bool,
}

/// When transactions start, sorted by time.
#[derive(Debug, Clone, Default)]
pub struct Plan(pub Vec<Start>);

/// Requests in an ICE-like burst: 3 to 5 …
const BURST_REQUESTS: std::ops::RangeInclusive<u64> = 3..=5;
/// … within this many nanoseconds.
const BURST_WINDOW_NS: u64 = 100_000_000;

impl Plan {
    /// `sockets` clients, each starting a transaction every `interval` from a random phase in
    /// the first interval, until `duration`.
    pub fn periodic(sockets: usize, interval: Duration, duration: Duration, rng: &mut Rng) -> Plan {
        let (interval, end) = (interval.as_nanos().max(1) as u64, duration.as_nanos() as u64);
        let mut starts = Vec::new();
        for socket in 0..sockets as u32 {
            let mut at = rng.below(interval);
            while at < end {
                starts.push(Start { at_ns: at, socket, burst: false });
                at += interval;
            }
        }
        starts.sort_unstable();
        Plan(starts)
    }

    /// [`Plan::periodic`] for `users` plus, for each user, ICE-like bursts at random times
    /// (a Poisson process, one every `burst_every` on average; none when zero).
    pub fn cgnat(users: usize, interval: Duration, burst_every: Duration, duration: Duration, rng: &mut Rng) -> Plan {
        let mut plan = Plan::periodic(users, interval, duration, rng);
        let (mean, end) = (burst_every.as_nanos() as f64, duration.as_nanos() as u64);
        if mean > 0.0 {
            for socket in 0..users as u32 {
                let mut at = 0u64;
                loop {
                    at += (-(1.0 - rng.unit()).ln() * mean) as u64;
                    if at >= end {
                        break;
                    }
                    let n = BURST_REQUESTS.start() + rng.below(BURST_REQUESTS.end() - BURST_REQUESTS.start() + 1);
                    for _ in 0..n {
                        let t = at + rng.below(BURST_WINDOW_NS);
                        if t < end {
                            plan.0.push(Start { at_ns: t, socket, burst: true });
                        }
                    }
                }
            }
        }
        plan.0.sort_unstable();
        plan
    }
}

/// One client run.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "legit" or "cgnat", for the report.
    pub mode: &'static str,
    /// The server.
    pub server: SocketAddr,
    /// One socket per entry, bound to that address (port chosen by the kernel).
    pub addresses: Vec<IpAddr>,
    /// The transactions.
    pub plan: Plan,
    /// The retransmission schedule.
    pub retransmit: Retransmit,
    /// Transactions start only before this.
    pub duration: Duration,
    /// The seed the plan was drawn with (reported).
    pub seed: u64,
}

/// Latency of successful transactions, from the first request to the first valid answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// What the clients saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientReport {
    /// "legit" or "cgnat".
    pub mode: &'static str,
    /// The server.
    pub server: String,
    /// Sockets (clients or users).
    pub sockets: usize,
    /// Distinct source addresses among them.
    pub addresses: usize,
    /// Seconds transactions were started for.
    pub duration_s: f64,
    /// Seconds the run took (the last transactions included).
    pub elapsed_s: f64,
    /// Transactions started.
    pub started: u64,
    /// Of those, in ICE-like bursts.
    pub burst_started: u64,
    /// Transactions that got a valid answer.
    pub succeeded: u64,
    /// Transactions that gave up unanswered.
    pub failed: u64,
    /// `succeeded` ÷ `started` (1 when none started).
    pub success_ratio: f64,
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Of those, retransmissions.
    pub retransmissions: u64,
    /// `succeeded_after[k]`: transactions answered after k + 1 requests had been sent.
    pub succeeded_after: Vec<u64>,
    /// Datagrams received.
    pub answers: u64,
    /// Valid answers to a transaction already answered (to a retransmission).
    pub duplicates: u64,
    /// Valid answers to a transaction that had given up.
    pub late: u64,
    /// Datagrams for no transaction of this run (a flood's answer to a spoofed copy of this
    /// socket's address and port, say): not judged.
    pub foreign: u64,
    /// Answers to this run's transactions that failed a check.
    pub invalid: u64,
    /// Those by reason.
    pub invalid_by_kind: BTreeMap<&'static str, u64>,
    /// Requests the kernel refused.
    pub send_errors: u64,
    /// Latency of the successful transactions.
    pub latency_ms: LatencyMs,
    /// The seed the plan was drawn with.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Tx {
    socket: u32,
    start_ns: u64,
    /// Requests sent so far.
    sent: u32,
    state: State,
}

/// The run in progress.
struct Run<'a> {
    config: &'a ClientConfig,
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    /// When each request goes out, from the transaction's start; then when it gives up.
    sends: Vec<u64>,
    give_up: u64,
    txs: Vec<Tx>,
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    open: usize,
    latencies_us: Vec<u64>,
    report: ClientReport,
    credentials: Credentials,
}

/// The largest number of sockets: a transaction ID names its socket in 16 bits ([`Tag`]).
pub const MAX_SOCKETS: usize = 1 << 16;

/// Runs the plan; fails only when a socket cannot be set up.
pub fn run(config: &ClientConfig) -> io::Result<ClientReport> {
    if config.addresses.is_empty() || config.addresses.len() > MAX_SOCKETS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("1 to {MAX_SOCKETS} sockets")));
    }
    let mut sockets = Vec::with_capacity(config.addresses.len());
    let mut locals = Vec::with_capacity(config.addresses.len());
    for ip in &config.addresses {
        let socket = UdpSocket::bind(SocketAddr::new(*ip, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}: {e} (is its prefix a local route?)")))?;
        socket.set_nonblocking(true)?;
        locals.push(socket.local_addr()?);
        sockets.push(socket);
    }
    let (sends, give_up) = config.retransmit.schedule();
    let mut distinct = config.addresses.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut run = Run {
        config,
        sockets,
        locals,
        sends: sends.iter().map(|d| d.as_nanos() as u64).collect(),
        give_up: give_up.as_nanos() as u64,
        txs: Vec::with_capacity(config.plan.0.len()),
        timers: BinaryHeap::new(),
        open: 0,
        latencies_us: Vec::new(),
        report: ClientReport {
            mode: config.mode,
            server: config.server.to_string(),
            sockets: config.addresses.len(),
            addresses: distinct.len(),
            duration_s: config.duration.as_secs_f64(),
            succeeded_after: vec![0; sends.len()],
            seed: config.seed,
            ..ClientReport::default()
        },
        credentials: Credentials::default(),
    };
    run.run();
    Ok(run.finish())
}

impl Run<'_> {
    fn run(&mut self) {
        let mut polls: Vec<libc::pollfd> =
            self.sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let start = Instant::now();
        let end = self.config.duration.as_nanos() as u64;
        // A hard bound, whatever happens: the last start's transaction has ended by then.
        let deadline = end + self.give_up + 1_000_000_000;
        let plan = &self.config.plan.0;
        let mut next = 0;
        loop {
            let now = start.elapsed().as_nanos() as u64;
            while next < plan.len() && plan[next].at_ns <= now && plan[next].at_ns < end {
                self.begin(plan[next]);
                next += 1;
            }
            while let Some(&Reverse((at, seq))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                self.due(seq as usize);
            }
            let planned = next < plan.len() && plan[next].at_ns < end;
            if (!planned && self.open == 0) || now >= deadline {
                break;
            }
            let wake = [plan.get(next).filter(|_| planned).map(|s| s.at_ns), self.timers.peek().map(|t| t.0.0)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + 100_000_000);
            let wait_ms = wake.saturating_sub(now).div_ceil(1_000_000).min(100) as i32;
            if wait_readable(&mut polls, wait_ms).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            for (s, p) in polls.iter().enumerate() {
                if p.revents != 0 {
                    self.receive(s, start);
                }
            }
        }
        self.report.elapsed_s = start.elapsed().as_secs_f64();
    }

    /// Starts a transaction: its first request now, its next step on the timer heap.
    fn begin(&mut self, start: Start) {
        let seq = self.txs.len() as u64;
        self.txs.push(Tx { socket: start.socket, start_ns: start.at_ns, sent: 0, state: State::Open });
        self.open += 1;
        self.report.started += 1;
        self.report.burst_started += u64::from(start.burst);
        self.due(seq as usize);
    }

    /// A transaction's timer: the next request, or giving up after the last.
    fn due(&mut self, seq: usize) {
        let tx = self.txs[seq];
        if tx.state != State::Open {
            return;
        }
        if (tx.sent as usize) < self.sends.len() {
            self.send(seq);
            self.txs[seq].sent += 1;
            let next = self.sends.get(tx.sent as usize + 1).copied().unwrap_or(self.give_up);
            self.timers.push(Reverse((tx.start_ns + next, seq as u64)));
        } else {
            self.txs[seq].state = State::Failed;
            self.open -= 1;
            self.report.failed += 1;
        }
    }

    fn send(&mut self, seq: usize) {
        let tx = self.txs[seq];
        let tag = Tag { thread: 0, socket: tx.socket as u16, seq: seq as u64, kind: Kind::Plain.index() };
        let mut buf = [0u8; 64];
        let len = write_request(Kind::Plain, tag.to_tid(), &self.credentials, &mut buf).expect("20 bytes fit");
        self.report.requests_sent += 1;
        self.report.retransmissions += u64::from(tx.sent > 0);
        if self.sockets[tx.socket as usize].send_to(&buf[..len], self.config.server).is_err() {
            self.report.send_errors += 1;
        }
    }

    /// Reads everything waiting on socket `s`.
    fn receive(&mut self, s: usize, start: Instant) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = match self.sockets[s].recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Anything else (ECONNREFUSED from an ICMP error): this
                // socket's turn ends; the transaction's timer handles the silence.
                Err(_) => return,
            };
            self.report.answers += 1;
            self.answer(s, &buf[..n], from, start.elapsed().as_nanos() as u64);
        }
    }

    /// Judges one datagram received on socket `s`.
    fn answer(&mut self, s: usize, bytes: &[u8], from: SocketAddr, now: u64) {
        let Some(tid) = bytes.get(8..20) else {
            self.report.foreign += 1;
            return;
        };
        let tag = Tag::from_tid(tid.try_into().expect("12 bytes"));
        let seq = tag.seq as usize;
        let ours = tag.thread == 0
            && tag.kind == Kind::Plain.index()
            && usize::from(tag.socket) == s
            && self.txs.get(seq).is_some_and(|tx| tx.socket as usize == s);
        if !ours {
            self.report.foreign += 1;
            return;
        }
        let checked = if from == self.config.server {
            check_answer(bytes, self.locals[s], &self.credentials).map(|_| ())
        } else {
            Err(Invalid::WrongSource)
        };
        if let Err(why) = checked {
            self.report.invalid += 1;
            *self.report.invalid_by_kind.entry(why.name()).or_default() += 1;
            return;
        }
        let tx = &mut self.txs[seq];
        match tx.state {
            State::Open => {
                tx.state = State::Succeeded;
                self.open -= 1;
                self.report.succeeded += 1;
                self.report.succeeded_after[tx.sent.max(1) as usize - 1] += 1;
                self.latencies_us.push(now.saturating_sub(tx.start_ns) / 1000);
            }
            State::Succeeded => self.report.duplicates += 1,
            State::Failed => self.report.late += 1,
        }
    }

    fn finish(mut self) -> ClientReport {
        let r = &mut self.report;
        r.success_ratio = if r.started == 0 { 1.0 } else { r.succeeded as f64 / r.started as f64 };
        self.latencies_us.sort_unstable();
        let at = |q: f64| {
            let l = &self.latencies_us;
            l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        r.latency_ms = LatencyMs { p50: at(0.5), p99: at(0.99), max: at(1.0) };
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stunedge::counters::Stats;
    use stunedge::handler::{Action, HandlerConfig, Meta, handle};

    #[test]
    fn periodic_plans_start_every_interval_from_a_phase() {
        let mut rng = Rng::new(3);
        let plan = Plan::periodic(10, Duration::from_secs(1), Duration::from_secs(5), &mut rng);
        assert_eq!(plan.0.len(), 50);
        assert!(plan.0.windows(2).all(|w| w[0].at_ns <= w[1].at_ns), "sorted");
        for s in 0..10 {
            let times: Vec<u64> = plan.0.iter().filter(|t| t.socket == s).map(|t| t.at_ns).collect();
            assert_eq!(times.len(), 5);
            assert!(times[0] < 1_000_000_000);
            assert!(times.windows(2).all(|w| w[1] - w[0] == 1_000_000_000));
        }
    }

    #[test]
    fn cgnat_plans_add_bursts_of_three_to_five() {
        let mut rng = Rng::new(4);
        let (users, every) = (2000, Duration::from_secs(60));
        let plan = Plan::cgnat(users, Duration::from_secs(25), every, Duration::from_secs(30), &mut rng);
        let keepalives = plan.0.iter().filter(|s| !s.burst).count();
        assert!((2000..=4000).contains(&keepalives), "one or two per user in 30 s: {keepalives}");
        let bursts = plan.0.iter().filter(|s| s.burst).count() as f64;
        // 2000 users × 0.5 bursts × 4 requests on average.
        assert!((3000.0..5000.0).contains(&bursts), "{bursts}");
        assert!(plan.0.iter().all(|s| s.at_ns < 30_000_000_000 && (s.socket as usize) < users));
    }

    /// A loopback server (stunedge's sans-IO handler) that loses the first request of every
    /// odd transaction: the client retransmits those, and the counts add up.
    #[test]
    fn transactions_retransmit_and_check_the_mapped_address() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = server.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answering = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut seen = std::collections::HashSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, from)) = server.recv_from(&mut buf) else { continue };
                    let tid: [u8; 12] = buf[8..20].try_into().unwrap();
                    // Odd transactions: the first request is lost.
                    if Tag::from_tid(tid).seq % 2 == 1 && seen.insert(tid) {
                        continue;
                    }
                    let meta = Meta { src: from, local: addr, now: 0, clock_ms: 1 };
                    let Action::Reply { len, .. } =
                        handle(&mut buf, n, &meta, &HandlerConfig::default(), &mut Stats::default())
                    else {
                        panic!("stunedge answers a Binding request")
                    };
                    server.send_to(&buf[..len], from).unwrap();
                }
            })
        };
        let mut rng = Rng::new(5);
        let config = ClientConfig {
            mode: "legit",
            server: addr,
            addresses: vec!["127.0.0.1".parse().unwrap(); 3],
            plan: Plan::periodic(3, Duration::from_millis(100), Duration::from_millis(400), &mut rng),
            retransmit: Retransmit { rto: Duration::from_millis(30), rc: 3, rm: 2 },
            duration: Duration::from_millis(400),
            seed: 5,
        };
        let report = run(&config).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        answering.join().unwrap();
        assert_eq!(report.started, 12, "{report:?}");
        assert_eq!(report.succeeded, 12, "{report:?}");
        assert_eq!(report.succeeded_after, [6, 6, 0], "{report:?}");
        assert_eq!(report.invalid, 0, "{report:?}");
        assert_eq!(report.requests_sent, 18, "{report:?}");
        assert_eq!(report.success_ratio, 1.0);
    }
}
