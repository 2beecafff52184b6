//! The admin HTTP endpoint, on its own thread (never on a worker): `/metrics` (Prometheus text
//! exposition from the [`Exporter`], behind an optional bearer token), `/healthz` (the process is
//! alive), `/readyz` (every worker is running and the node is not draining; 503 otherwise).
//! Listens on loopback by default. Reads the workers' published counters; never touches the
//! packet path.
//!
//! It is bounded, so that clients holding connections cannot slow `/healthz` down (and get a
//! healthy node killed by its liveness probe) or grow the process: one event-loop thread over
//! non-blocking sockets and poll(2) (idle and slowloris connections occupy a slot, never a
//! thread), at most [`MAX_CONNECTIONS`] open connections (a new one evicts the oldest that is
//! still sending its request), the whole request head within [`HEAD_TIMEOUT`] of the accept and
//! [`MAX_HEAD`] bytes (431 beyond), GET and HEAD only (405 otherwise, 400 with a body), one
//! request per connection (`Connection: close`), and a response the client must take within
//! [`WRITE_TIMEOUT`]; unsent bytes wait for POLLOUT, the loop never blocks on a client.
//!
//! The request-head parser ([`parse_head`]) and the answers ([`answer`]) are sans-IO and
//! unit-tested below; the loop only moves bytes and keeps time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::auth::bearer::MetricsToken;
use crate::io::mmsg::wait_readable;
use crate::metrics::Exporter;

/// Most client connections open at once. A new connection beyond it evicts the oldest one that
/// is still sending its request (or, when every slot is writing an answer, the oldest of all),
/// so that connections an attacker holds cannot lock out the kubelet's `/healthz`.
pub const MAX_CONNECTIONS: usize = 256;

/// The whole request head must arrive within this long of the accept (slowloris); the
/// connection is closed otherwise.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest request head (request line and headers, with the blank line that ends them); a
/// larger one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// The client must take the whole response within this long of the request; the connection is
/// closed otherwise.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections accepted per loop turn: the connections already open get their turn between
/// batches, and a flood cannot evict a just-accepted request before it is read.
const ACCEPTS_PER_TURN: usize = 64;

/// Longest poll wait: a dropped [`Admin`] stops within this.
const TICK: Duration = Duration::from_millis(200);

/// After an accept error other than "nothing to accept" (EMFILE, ENOBUFS): how long the
/// listener is left out of the poll set, so that the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listen backlog (capped by `net.core.somaxconn`): a burst of connections waits in the
/// kernel, not in this process.
const BACKLOG: i32 = 1024;

/// The content type of `/metrics`: Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/readyz` reports, set by the main thread.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    workers_running: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health { draining: AtomicBool::new(false), workers_running: AtomicBool::new(true) }
    }
}

impl Health {
    /// From now on `/readyz` answers 503 (SIGTERM: load balancers move traffic away).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether draining has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Records whether every worker thread is still running.
    pub fn set_workers_running(&self, running: bool) {
        self.workers_running.store(running, Ordering::Relaxed);
    }

    /// Ready: workers running and not draining.
    pub fn ready(&self) -> bool {
        self.workers_running.load(Ordering::Relaxed) && !self.draining()
    }
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: the GET answer's head, no body.
    Head,
}

/// A parsed request head: what the answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// GET or HEAD.
    pub method: Method,
    /// The target's path (without the query).
    pub path: &'a str,
    /// The credentials of an `Authorization: Bearer …` header.
    pub bearer: Option<&'a [u8]>,
}

/// Why a request head is refused; each maps to one status code ([`HeadError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not an HTTP/1.x request head: 400.
    Malformed,
    /// A body announced (Content-Length other than 0, or Transfer-Encoding): 400.
    Body,
    /// A method other than GET and HEAD: 405.
    MethodNotAllowed,
    /// No end of the head within [`MAX_HEAD`] bytes: 431.
    TooLarge,
}

impl HeadError {
    /// The status code it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed | HeadError::Body => 400,
            HeadError::MethodNotAllowed => 405,
            HeadError::TooLarge => 431,
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete (and still
/// within [`MAX_HEAD`]), the request once the blank line that ends it has arrived. Bytes after
/// the head are ignored (bodies are refused, and one request is served per connection).
pub fn parse_head(buf: &[u8]) -> Result<Option<Request<'_>>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = head_end(window) else {
        return if buf.len() >= MAX_HEAD { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&window[..end]).map_err(|_| HeadError::Malformed)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') => {
            return Err(HeadError::MethodNotAllowed);
        }
        _ => return Err(HeadError::Malformed),
    };
    let mut bearer = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") && value != "0" || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return Err(HeadError::Body);
        }
        if name.eq_ignore_ascii_case("authorization") {
            // RFC 9110 §11.1: the scheme is case-insensitive.
            bearer = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, credentials)| credentials.trim_matches(' ').as_bytes());
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Some(Request { method, path, bearer }))
}

/// Where the head in `buf` ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole response (head and, except for HEAD, body) to a parsed request head. `metrics`
/// renders the exposition; it is called only for an authorised GET or HEAD of `/metrics`.
pub fn answer(
    parsed: Result<Request<'_>, HeadError>,
    token: Option<&MetricsToken>,
    health: &Health,
    metrics: impl FnOnce() -> String,
) -> Vec<u8> {
    const TEXT: &str = "text/plain";
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            let (body, extra) = match e {
                HeadError::Malformed => ("bad request\n", ""),
                HeadError::Body => ("request bodies are not accepted\n", ""),
                HeadError::MethodNotAllowed => ("method not allowed\n", "Allow: GET, HEAD\r\n"),
                HeadError::TooLarge => ("request head too large\n", ""),
            };
            return response(e.status(), TEXT, extra, body, false);
        }
    };
    let head_only = request.method == Method::Head;
    match request.path {
        "/metrics" => {
            if token.is_some_and(|t| !request.bearer.is_some_and(|b| t.matches(b))) {
                let challenge = "WWW-Authenticate: Bearer realm=\"stunedge\"\r\n";
                return response(401, TEXT, challenge, "unauthorized\n", head_only);
            }
            response(200, METRICS_CONTENT_TYPE, "", &metrics(), head_only)
        }
        "/healthz" => response(200, TEXT, "", "ok\n", head_only),
        "/readyz" if health.ready() => response(200, TEXT, "", "ready\n", head_only),
        "/readyz" if health.draining() => response(503, TEXT, "", "draining\n", head_only),
        "/readyz" => response(503, TEXT, "", "a worker stopped\n", head_only),
        _ => response(404, TEXT, "", "not found\n", head_only),
    }
}

/// An HTTP/1.1 response that closes the connection; `extra` is further header lines (each
/// ending in CRLF).
fn response(status: u16, content_type: &str, extra: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Whether a connection needs more turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Open,
    Done,
}

/// Where a connection is: reading its request head, or writing its response.
#[derive(Debug)]
enum State {
    /// Bytes of the head so far (empty, and not allocated, while the client sends nothing).
    Reading { head: Vec<u8> },
    /// The response, how much of it has been sent, and by when the rest must be.
    Writing { out: Vec<u8>, sent: usize, deadline: Instant },
}

/// One client connection of the event loop.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    accepted: Instant,
    state: State,
}

impl Conn {
    /// When the connection is closed if it has not finished.
    fn deadline(&self) -> Instant {
        match self.state {
            State::Reading { .. } => self.accepted + HEAD_TIMEOUT,
            State::Writing { deadline, .. } => deadline,
        }
    }

    /// The poll events it waits for.
    fn events(&self) -> libc::c_short {
        match self.state {
            State::Reading { .. } => libc::POLLIN,
            State::Writing { .. } => libc::POLLOUT,
        }
    }

    /// Reads what has arrived (answering a complete head) or writes what the socket takes,
    /// without blocking. `scratch` is at least [`MAX_HEAD`] bytes.
    fn advance(
        &mut self,
        scratch: &mut [u8],
        serve: &mut dyn FnMut(Result<Request<'_>, HeadError>) -> Vec<u8>,
    ) -> Progress {
        if let State::Reading { head } = &mut self.state {
            loop {
                // Never more than MAX_HEAD bytes in all: parse_head refuses a head that long.
                let room = MAX_HEAD - head.len();
                let n = match self.stream.read(&mut scratch[..room]) {
                    Ok(0) => return Progress::Done,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Open,
                    Err(_) => return Progress::Done,
                };
                head.extend_from_slice(&scratch[..n]);
                let parsed = match parse_head(head) {
                    Ok(None) => continue,
                    Ok(Some(request)) => Ok(request),
                    Err(e) => Err(e),
                };
                let out = serve(parsed);
                self.state = State::Writing { out, sent: 0, deadline: Instant::now() + WRITE_TIMEOUT };
                break;
            }
        }
        let State::Writing { out, sent, .. } = &mut self.state else { return Progress::Open };
        while *sent < out.len() {
            match self.stream.write(&out[*sent..]) {
                Ok(0) => return Progress::Done,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Open,
                Err(_) => return Progress::Done,
            }
        }
        Progress::Done
    }
}

/// Which connection to close to make room for a new one: the oldest still reading its head
/// (idle or slow), else the oldest of all.
fn eviction_victim(conns: &[Conn]) -> Option<usize> {
    let reading = |c: &&Conn| matches!(c.state, State::Reading { .. });
    let oldest = |(_, c): &(usize, &Conn)| c.accepted;
    conns
        .iter()
        .enumerate()
        .filter(|(_, c)| reading(c))
        .min_by_key(oldest)
        .or_else(|| conns.iter().enumerate().min_by_key(oldest))
        .map(|(i, _)| i)
}

/// Milliseconds for poll(2), rounded up (a deadline is never polled past by a rounding).
fn poll_ms(wait: Duration) -> i32 {
    i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
}

/// The event loop: until `stop`, accepts, reads heads, answers through `serve`, writes, and
/// closes connections past their deadline. Counts of evictions and timeouts go to the debug log.
fn event_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    serve: &mut dyn FnMut(Result<Request<'_>, HeadError>) -> Vec<u8>,
) {
    let mut conns: Vec<Conn> = Vec::with_capacity(MAX_CONNECTIONS);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
    let mut scratch = vec![0u8; MAX_HEAD];
    let mut accept_paused_until: Option<Instant> = None;
    let (mut evicted, mut timed_out) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let before = conns.len();
        conns.retain(|c| c.deadline() > now);
        timed_out += (before - conns.len()) as u64;
        if accept_paused_until.is_some_and(|t| now >= t) {
            accept_paused_until = None;
        }

        fds.clear();
        // A negative fd is ignored by poll(2): the listener sits out an accept backoff.
        let listen_fd = if accept_paused_until.is_some() { -1 } else { listener.as_raw_fd() };
        fds.push(libc::pollfd { fd: listen_fd, events: libc::POLLIN, revents: 0 });
        fds.extend(conns.iter().map(|c| libc::pollfd { fd: c.stream.as_raw_fd(), events: c.events(), revents: 0 }));
        let wake = conns.iter().map(Conn::deadline).chain(accept_paused_until).min();
        let wait = wake.map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
        if let Err(e) = wait_readable(&mut fds, poll_ms(wait)) {
            tracing::warn!(error = %e, "admin endpoint: poll failed");
            std::thread::sleep(TICK);
            continue;
        }

        // Backwards, so that swap_remove moves only connections already handled this turn.
        for i in (0..conns.len()).rev() {
            if fds[i + 1].revents != 0 && conns[i].advance(&mut scratch, serve) == Progress::Done {
                conns.swap_remove(i);
            }
        }

        if fds[0].revents == 0 {
            continue;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "admin endpoint: accept failed");
                    accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    break;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut conn = Conn { stream, accepted: Instant::now(), state: State::Reading { head: Vec::new() } };
            // A client usually sends its request with the handshake: answer it now, without a
            // slot if it completes.
            if conn.advance(&mut scratch, serve) == Progress::Done {
                continue;
            }
            if conns.len() >= MAX_CONNECTIONS {
                if let Some(victim) = eviction_victim(&conns) {
                    conns.swap_remove(victim);
                    evicted += 1;
                }
            }
            conns.push(conn);
        }
    }
    tracing::debug!(evicted, timed_out, "admin endpoint stopped");
}

/// The running admin endpoint; stops (within 200 ms) when dropped.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    token: Arc<Mutex<Option<MetricsToken>>>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` and starts serving on a thread named `stunedge-admin`, `/metrics` without a
    /// token.
    pub fn start(addr: SocketAddr, exporter: Exporter, health: Arc<Health>) -> io::Result<Admin> {
        Admin::start_with_token(addr, exporter, health, None)
    }

    /// [`Admin::start`], with `/metrics` requiring `token` as a bearer token when it is `Some`
    /// (from the start: there is no moment when it is open).
    pub fn start_with_token(
        addr: SocketAddr,
        exporter: Exporter,
        health: Arc<Health>,
        token: Option<MetricsToken>,
    ) -> io::Result<Admin> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let token = Arc::new(Mutex::new(token));
        let (flag, shared) = (stop.clone(), token.clone());
        let thread = std::thread::Builder::new().name("stunedge-admin".into()).spawn(move || {
            let mut serve = |parsed: Result<Request<'_>, HeadError>| {
                let token = shared.lock().unwrap_or_else(PoisonError::into_inner);
                answer(parsed, token.as_ref(), &health, || exporter.render())
            };
            event_loop(&listener, &flag, &mut serve);
        })?;
        Ok(Admin { addr, stop, token, thread: Some(thread) })
    }

    /// The address it listens on (port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the token `/metrics` requires (a reload); `None` opens it.
    pub fn set_metrics_token(&self, token: Option<MetricsToken>) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }
}

/// A non-blocking listening socket on `addr` (SO_REUSEADDR, as std's own, so that a restart
/// does not wait for TIME_WAIT), with a [`BACKLOG`] for bursts.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A minimal HTTP/1.0 GET against an admin endpoint (for tests, scripts and health probes):
/// returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    http_get_with(addr, path, &[])
}

/// [`http_get`] with extra header lines (`"Authorization: Bearer …"`).
pub fn http_get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((reply.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP reply: {head:?}")))?;
    Ok((status, body.to_string()))
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<'_> {
        Request { method: Method::Get, path, bearer: None }
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn incomplete_heads_wait_complete_ones_parse() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(parse_head(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse_head(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Some(get("/healthz"))));
        // Bare LF line ends (RFC 9112 §2.2 allows a server to accept them), and bytes after the head.
        assert_eq!(parse_head(b"GET /readyz HTTP/1.0\n\nleftover"), Ok(Some(get("/readyz"))));
        assert_eq!(parse_head(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Ok(Some(get("/metrics"))));
        let head = parse_head(b"HEAD /healthz HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.method, Method::Head);
    }

    #[test]
    fn head_size_is_limited() {
        let mut long = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        long.resize(MAX_HEAD - 1, b'a');
        assert_eq!(parse_head(&long), Ok(None), "one byte short of the limit, still waiting");
        long.push(b'a');
        assert_eq!(parse_head(&long), Err(HeadError::TooLarge));
        // A head that ends just within the limit is served.
        long.truncate(MAX_HEAD - 4);
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&long), Ok(Some(get("/healthz"))));
        // One byte more and its end is beyond the limit.
        long.insert(40, b'a');
        assert_eq!(parse_head(&long), Err(HeadError::TooLarge));
        assert!(
            text(&answer(Err(HeadError::TooLarge), None, &Health::default(), String::new)).starts_with("HTTP/1.1 431 ")
        );
    }

    #[test]
    fn only_get_and_head_without_a_body() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"] {
            let head = format!("{method} /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
            assert_eq!(parse_head(head.as_bytes()), Err(HeadError::MethodNotAllowed), "{method}");
        }
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), Err(HeadError::Body));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"), Err(HeadError::Body));
        assert_eq!(parse_head(b"GET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), Ok(Some(get("/x"))));
        let out = answer(Err(HeadError::MethodNotAllowed), None, &Health::default(), String::new);
        assert!(text(&out).starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{}", text(&out));
        assert!(text(&out).contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn malformed_heads_are_400() {
        for head in [
            &b"GET /healthz\r\n\r\n"[..],
            b"GET  /healthz HTTP/1.1\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/2.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ] {
            assert_eq!(parse_head(head), Err(HeadError::Malformed), "{head:?}");
        }
    }

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        let parse = |h: &'static [u8]| parse_head(h).unwrap().unwrap().bearer;
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n"), Some(&b"s3cret"[..]));
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nauthorization:bearer  s3cret \r\n\r\n"), Some(&b"s3cret"[..]));
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nAuthorization: Basic czNjcmV0\r\n\r\n"), None);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn metrics_needs_the_token_when_one_is_set_probes_never_do() {
        let health = Health::default();
        let token = MetricsToken::new(b"s3cret");
        let with = |bearer: Option<&'static [u8]>, path: &'static str, token: Option<&MetricsToken>| {
            let request = Request { method: Method::Get, path, bearer };
            String::from_utf8(answer(Ok(request), token, &health, || "stunedge_workers 1\n".into())).unwrap()
        };
        let ok = with(Some(b"s3cret"), "/metrics", Some(&token));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("Content-Type: {METRICS_CONTENT_TYPE}\r\n")));
        assert!(ok.ends_with("Connection: close\r\n\r\nstunedge_workers 1\n"), "{ok}");
        for bearer in [None, Some(&b"wrong"[..]), Some(&b""[..])] {
            let refused = with(bearer, "/metrics", Some(&token));
            assert!(refused.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{refused}");
            assert!(refused.contains("WWW-Authenticate: Bearer realm=\"stunedge\"\r\n"));
            assert!(!refused.contains("stunedge_workers"));
        }
        assert!(with(None, "/metrics", None).starts_with("HTTP/1.1 200 "));
        assert!(with(None, "/healthz", Some(&token)).starts_with("HTTP/1.1 200 "));
        assert!(with(None, "/readyz", Some(&token)).starts_with("HTTP/1.1 200 "));
        assert!(with(None, "/nope", Some(&token)).starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn readyz_follows_health_and_head_has_no_body() {
        let health = Health::default();
        let ask = |method, path| {
            String::from_utf8(answer(Ok(Request { method, path, bearer: None }), None, &health, String::new)).unwrap()
        };
        assert!(ask(Method::Get, "/readyz").ends_with("\r\n\r\nready\n"));
        let head = ask(Method::Head, "/readyz");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 6\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        health.set_workers_running(false);
        assert!(ask(Method::Get, "/readyz").ends_with("\r\n\r\na worker stopped\n"));
        health.start_draining();
        let draining = ask(Method::Get, "/readyz");
        assert!(draining.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && draining.ends_with("draining\n"));
        assert!(ask(Method::Get, "/healthz").starts_with("HTTP/1.1 200 "));
    }

    #[test]
    fn eviction_picks_the_oldest_connection_still_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t0 = Instant::now();
        let mut conns: Vec<Conn> = (0..3u64)
            .map(|i| Conn {
                stream: listener.accept().unwrap().0,
                accepted: t0 + Duration::from_secs(i),
                state: State::Reading { head: Vec::new() },
            })
            .collect();
        conns.swap(0, 2);
        assert_eq!(eviction_victim(&conns), Some(2), "the oldest");
        conns[2].state = State::Writing { out: Vec::new(), sent: 0, deadline: t0 };
        assert_eq!(eviction_victim(&conns), Some(1), "the oldest still reading, not one answering");
        for c in &mut conns {
            c.state = State::Writing { out: Vec::new(), sent: 0, deadline: t0 };
        }
        assert_eq!(eviction_victim(&conns), Some(2), "all answering: the oldest of all");
        assert_eq!(eviction_victim(&[]), None);
    }

    #[test]
    fn poll_waits_round_up() {
        assert_eq!(poll_ms(Duration::ZERO), 0);
        assert_eq!(poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_ms(Duration::from_millis(200)), 200);
        assert_eq!(poll_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
