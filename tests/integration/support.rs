//! Helpers shared by the integration tests. Requests and expected answers are built here by
//! hand, byte by byte, not with the codec under test.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

pub(crate) const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// RFC-style hex (spaces and newlines allowed) to bytes.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// A Binding request: header with the cookie and `tid`, then the given raw attribute bytes.
pub(crate) fn binding_request(tid: [u8; 12], attrs: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, 0x01];
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(&tid);
    out.extend_from_slice(attrs);
    out
}

/// The XOR-MAPPED-ADDRESS attribute (type, length, value) for `addr`, computed by hand.
pub(crate) fn xor_mapped(addr: SocketAddr, tid: [u8; 12]) -> Vec<u8> {
    let mut key = COOKIE.to_vec();
    key.extend_from_slice(&tid);
    let port = addr.port() ^ 0x2112;
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (1, ip.octets().to_vec()),
        IpAddr::V6(ip) => (2, ip.octets().to_vec()),
    };
    let mut out = vec![0x00, 0x20, 0x00, 4 + ip.len() as u8, 0x00, family];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend(ip.iter().zip(&key).map(|(a, k)| a ^ k));
    out
}

/// The whole expected minimal answer to `binding_request(tid, [])` from `addr`.
pub(crate) fn expected_answer(addr: SocketAddr, tid: [u8; 12]) -> Vec<u8> {
    let attr = xor_mapped(addr, tid);
    let mut out = vec![0x01, 0x01];
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(&tid);
    out.extend_from_slice(&attr);
    out
}

/// A UDP client socket on the loopback of `server`'s family, with a receive timeout.
pub(crate) fn client_for(server: SocketAddr) -> UdpSocket {
    let bind = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket
}

/// Sends `request` to `server` and returns the answer (panics after the timeout).
pub(crate) fn exchange(socket: &UdpSocket, server: SocketAddr, request: &[u8]) -> Vec<u8> {
    socket.send_to(request, server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = recv_from(socket, &mut buf).expect("an answer within 2 s");
    assert_eq!(from, server, "the answer comes from the address the request went to");
    buf[..n].to_vec()
}

/// `recv_from`, retried when interrupted (EINTR), as any robust client does; std's `recv_from`
/// does not retry by itself. Seen now and then in this test process, with no signal delivered
/// (strace shows none): most likely the io_uring probe that `Server::start` runs on the test
/// thread, whose ring teardown leaves task work for that thread, which interrupts its next
/// blocking call (SO_RCVTIMEO sockets return EINTR rather than restarting). The server's own
/// loops retry EINTR everywhere.
pub(crate) fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Whether this run is CI's (`CI` set, as `.ci/run` and every CI service set it): there nothing
/// may skip (docs/architecture.md, invariant 7).
pub(crate) fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The file every skip is appended to: `$STUNEDGE_SKIP_LOG` (scripts/ci.sh sets it and prints
/// a summary from it at the end), else `skipped.log` in Cargo's target tmpdir.
pub(crate) fn skip_log() -> std::path::PathBuf {
    std::env::var_os("STUNEDGE_SKIP_LOG")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log"))
}

/// The one way a test (or part of one) skips: in CI it panics, so the test fails naming what
/// could not run and why; elsewhere it prints `SKIPPED: <test>: <why>` and appends that line to
/// [`skip_log`]. The caller returns (or leaves out the part) after it.
#[track_caller]
pub(crate) fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test} cannot run, and CI must not skip it: {why}");
    }
    let line = format!("SKIPPED: {test}: {why}");
    // Straight to stderr, past the test harness's capture: a skip shows even when the test passes.
    let _ = writeln!(std::io::stderr(), "{line}");
    let log = skip_log();
    let appended =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("(could not append to the skip log {}: {e})", log.display());
    }
}

/// Whether `tool` is an executable file on `PATH`.
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file())).unwrap_or(false)
}

/// The running test's name, as the test harness names its thread (`module::test`).
pub(crate) fn current_test() -> String {
    std::thread::current().name().unwrap_or("an unnamed test").to_string()
}

/// Whether an external tool is missing, in which case the running test is skipped through
/// [`skip`] (in CI that fails it).
pub(crate) fn tool_missing(tool: &str) -> bool {
    let found = on_path(tool);
    if !found {
        skip(&current_test(), &format!("{tool} is not installed (scripts/install-test-deps.sh names its package)"));
    }
    !found
}

/// Why a lab of network namespaces (the NAT lab, the reflection lab) cannot run here, if it
/// cannot: not root, one of `tools` not installed, or `ip netns add` failing. Each lab asks once
/// per test binary.
pub(crate) fn netns_unavailable(tools: &[&str]) -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if !root {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    if let Some(tool) = tools.iter().find(|tool| !on_path(tool)) {
        return Some(format!("{tool} is not installed (scripts/install-test-deps.sh names its package)"));
    }
    // A name of its own per call: labs in different test modules probe at the same time.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("lab-probe-{}-{n}", std::process::id());
    let ip = |verb: &str| std::process::Command::new("ip").args(["netns", verb, &name]).output();
    let made = ip("add").is_ok_and(|o| o.status.success());
    let _ = ip("del");
    (!made).then(|| "cannot create a network namespace (ip netns add failed)".into())
}

/// Whether io_uring can run here; if not, `test`'s io_uring part is skipped through [`skip`]
/// (in CI that fails it). `STUNEDGE_DISABLE_IO_URING` counts as "cannot".
pub(crate) fn io_uring_available(test: &str) -> bool {
    match stunedge::io::uring::probe() {
        Ok(()) => true,
        Err(why) => {
            skip(test, &format!("its io_uring backend cannot run: {why}"));
            false
        }
    }
}

/// A file of one test in the system temp dir (`stunedge-test-<pid>-<name>`), removed when
/// dropped, so that a test run leaves nothing behind (a panicking test's too: drops run while
/// it unwinds).
#[derive(Debug)]
pub(crate) struct Scratch(std::path::PathBuf);

impl Scratch {
    /// Writes `text` to a new scratch file named after `name`.
    pub(crate) fn new(name: &str, text: &str) -> Scratch {
        let scratch = Scratch(std::env::temp_dir().join(format!("stunedge-test-{}-{name}", std::process::id())));
        scratch.rewrite(text);
        scratch
    }

    /// Replaces the file's contents (a test that reloads a changed file).
    pub(crate) fn rewrite(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The sum of the samples of metric `name` in a Prometheus text exposition whose labels contain
/// every one of `labels` (e.g. `family="ipv4"`); 0 when there is none.
pub(crate) fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `ready` every 20 ms until it holds, failing the test after `within` with `what`.
pub(crate) fn wait_for(what: &str, within: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One CPU-heavy lab at a time in this test binary (the reflection lab's floods, the fleet lab,
/// the browser lab): on a 2-CPU machine two at once starve each other's timing and rates.
pub(crate) fn heavy_lab() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
