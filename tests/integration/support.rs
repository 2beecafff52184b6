//! Helpers shared by the integration tests. Requests and expected answers are built here by
//! hand, byte by byte, not with the codec under test.

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

/// Whether an external tool is missing; in CI (CI set) a missing tool is a failure, elsewhere
/// the test prints why it is skipped.
pub(crate) fn tool_missing(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is not installed, and CI must not skip this test (.ci/run installs it)");
    }
    eprintln!("SKIPPED: {tool} is not installed (.ci/run shows the apt package); this test needs it");
    true
}
