//! The admin HTTP endpoint, on its own thread (never on a worker): `/metrics` (Prometheus text
//! exposition from the [`Exporter`]), `/healthz` (the process is alive), `/readyz` (every worker
//! is running and the node is not draining; 503 otherwise). Served by `tiny_http`; listens on
//! loopback by default. Reads the workers' published counters; never touches the packet path.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};

use crate::metrics::Exporter;

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

/// The running admin endpoint; stops (within 200 ms) when dropped.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn text(body: String, status: u16, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        response.add_header(h);
    }
    response
}

impl Admin {
    /// Binds `addr` and starts serving on a thread named `stunedge-admin`.
    pub fn start(addr: SocketAddr, exporter: Exporter, health: Arc<Health>) -> io::Result<Admin> {
        let server = Server::http(addr).map_err(|e| io::Error::other(e.to_string()))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("stunedge-admin".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let request = match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin endpoint: receive failed");
                        continue;
                    }
                };
                let response = match (request.method(), request.url().split('?').next().unwrap_or("")) {
                    (Method::Get | Method::Head, "/metrics") => {
                        text(exporter.render(), 200, "text/plain; version=0.0.4; charset=utf-8")
                    }
                    (Method::Get | Method::Head, "/healthz") => text("ok\n".into(), 200, "text/plain"),
                    (Method::Get | Method::Head, "/readyz") => {
                        if health.ready() {
                            text("ready\n".into(), 200, "text/plain")
                        } else if health.draining() {
                            text("draining\n".into(), 503, "text/plain")
                        } else {
                            text("a worker stopped\n".into(), 503, "text/plain")
                        }
                    }
                    (Method::Get | Method::Head, _) => text("not found\n".into(), 404, "text/plain"),
                    _ => text("method not allowed\n".into(), 405, "text/plain"),
                };
                if let Err(e) = request.respond(response) {
                    tracing::debug!(error = %e, "admin endpoint: client went away");
                }
            }
        })?;
        Ok(Admin { addr, stop, thread: Some(thread) })
    }

    /// The address it listens on (port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A minimal HTTP/1.0 GET against an admin endpoint (for tests, scripts and health probes):
/// returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
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
