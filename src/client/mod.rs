//! The STUN client: Binding transactions with RFC 8489 §6.2.1 retransmission over UDP, optional
//! short-term or long-term credentials (401 → retry with REALM and NONCE, 438 → retry with the
//! new NONCE), and clear errors for timeouts and ICMP unreachable. Used by `stunedge probe`.
//! Blocking and allocation-tolerant: this is a tool, never the server's packet path, and it
//! shares no code path with the server that the server does not need.

pub(crate) mod json;
pub mod nat;

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::auth::keys::{Algorithm, long_term_key};
use crate::stun::attr::{
    ErrorCode, MappedAddress, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Software, Username, XorMappedAddress,
};
use crate::stun::integrity::{Check, check_integrity_sha1, check_integrity_sha256};
use crate::stun::registry::{ATTR_PASSWORD_ALGORITHM, ATTR_PASSWORD_ALGORITHMS, MAGIC_COOKIE};
use crate::stun::{Class, Message, MessageType, MessageWriter};

/// Retransmission parameters (RFC 8489 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Initial retransmission timeout (RFC default 500 ms).
    pub rto: Duration,
    /// Requests sent in all (Rc, default 7).
    pub rc: u32,
    /// After the last request, wait `rm` × RTO for an answer (Rm, default 16).
    pub rm: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit { rto: Duration::from_millis(500), rc: 7, rm: 16 }
    }
}

impl Retransmit {
    /// When each request goes out, from the first, and when the transaction times out: with the
    /// defaults 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s, timeout at 39.5 s (§6.2.1's example).
    pub fn schedule(&self) -> (Vec<Duration>, Duration) {
        let mut sends = Vec::with_capacity(self.rc as usize);
        let mut at = Duration::ZERO;
        let mut rto = self.rto;
        for _ in 0..self.rc.max(1) {
            sends.push(at);
            at += rto;
            rto *= 2;
        }
        let last = *sends.last().unwrap_or(&Duration::ZERO);
        (sends, last + self.rto * self.rm)
    }
}

/// Credentials for an authenticated Binding.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// USERNAME + MESSAGE-INTEGRITY keyed with the password.
    ShortTerm {
        /// USERNAME.
        username: String,
        /// The password.
        password: String,
    },
    /// Answer the server's 401 challenge (realm and nonce) with these.
    LongTerm {
        /// USERNAME.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ShortTerm { username, .. } => write!(f, "ShortTerm({username:?}, <password>)"),
            Credentials::LongTerm { username, .. } => write!(f, "LongTerm({username:?}, <password>)"),
        }
    }
}

/// A successful Binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The server-reflexive address (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).
    pub mapped: SocketAddr,
    /// The local address the request left from.
    pub local: SocketAddr,
    /// Round-trip time of the answered request.
    pub rtt: Duration,
    /// Requests sent in the last transaction (1 when the first was answered).
    pub attempts: u32,
    /// Whether the answer was signed and checked with the credentials.
    pub authenticated: bool,
}

/// Why a Binding failed.
#[derive(Debug)]
pub enum ProbeError {
    /// No answer before the transaction timed out.
    Timeout {
        /// How long it waited.
        after: Duration,
        /// Requests sent.
        attempts: u32,
    },
    /// ICMP port or host unreachable (nothing listens there).
    Unreachable(io::Error),
    /// Another socket error.
    Io(io::Error),
    /// The server answered with an error response.
    ErrorResponse {
        /// The code, e.g. 401.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A success response without a mapped address, or failing its integrity check.
    BadResponse(&'static str),
    /// An RFC 5780 answer that came from another address than the one CHANGE-REQUEST asked
    /// for: the server does not honour it, and NAT tests would mean nothing.
    Misrouted {
        /// What was asked ("change IP and port", "change port").
        asked: &'static str,
        /// Where the answer should have come from.
        expected: SocketAddr,
        /// Where it came from.
        from: SocketAddr,
    },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Timeout { after, attempts } => {
                write!(f, "no answer after {:.1} s and {attempts} requests", after.as_secs_f64())
            }
            ProbeError::Unreachable(e) => write!(f, "unreachable: nothing answers there ({e})"),
            ProbeError::Io(e) => write!(f, "socket error: {e}"),
            ProbeError::ErrorResponse { code, reason } => {
                // The registered name when the server sent no reason phrase (stunedge sends
                // none with 401 and 438, to keep challenges small).
                let name = crate::stun::registry::error_code(*code).map_or("", |r| r.name);
                let text = if reason.is_empty() { name } else { reason.as_str() };
                write!(f, "error response {code} ({text})")
            }
            ProbeError::BadResponse(why) => write!(f, "bad response: {why}"),
            ProbeError::Misrouted { asked, expected, from } => write!(
                f,
                "asked for \"{asked}\" but the answer came from {from}, not {expected}: the server does not honour CHANGE-REQUEST"
            ),
        }
    }
}

impl std::error::Error for ProbeError {}

/// The STUN port when a server is named without one (RFC 8489 §18.6).
pub const DEFAULT_PORT: u16 = 3478;

/// A server named as `host`, `host:port`, `IPv4`, `IPv4:port`, `IPv6`, `[IPv6]` or
/// `[IPv6]:port`; port 3478 when none is given. Resolves host names (the first address wins).
/// The error is the resolver's (`failed to lookup address information: …`) or the parser's.
pub fn resolve(server: &str) -> io::Result<SocketAddr> {
    use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if let Some(ip) = server.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return match ip.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT)),
            Err(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, "not an IPv6 address in brackets")),
        };
    }
    let with_port = if server.contains(':') { server.to_string() } else { format!("{server}:{DEFAULT_PORT}") };
    with_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
}

/// A transaction still unanswered after its first requests: the third request has gone out
/// unanswered (or, with fewer than three, one RTO has passed after the last). Reported once per
/// transaction to the callback of [`binding_with_notice`], so a command line can say why it
/// waits; [`binding`] reports nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// The server asked.
    pub server: SocketAddr,
    /// Requests sent so far.
    pub sent: u32,
    /// Time since the first request.
    pub elapsed: Duration,
    /// When, from the first request, the transaction gives up.
    pub timeout: Duration,
}

pub(crate) fn random_tid() -> [u8; 12] {
    use std::io::Read;
    let mut tid = [0u8; 12];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut tid)).is_err() {
        // No /dev/urandom: the clock's nanoseconds and the process ID are unique enough for a
        // transaction ID (it is matched, not secret).
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        tid[..8].copy_from_slice(&(t as u64).to_le_bytes());
        tid[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    tid
}

/// What the request carries for authentication.
enum Sign<'a> {
    None,
    /// The first request of a long-term exchange, which asks for the challenge: no credentials
    /// yet (RFC 8489 §9.2.3.1), but SOFTWARE, so that the request is large enough for the
    /// challenge under an amplification cap (stunedge's default 3× drops the 96-byte challenge
    /// to a bare 28-byte request; with SOFTWARE the request is 48 bytes).
    Challenge,
    ShortTerm {
        username: &'a str,
        password: &'a str,
    },
    LongTerm {
        username: &'a str,
        key: Vec<u8>,
        realm: Vec<u8>,
        nonce: Vec<u8>,
        algorithms: Option<Vec<u8>>,
    },
}

/// The SOFTWARE the client names where it sends one.
const SOFTWARE: &str = concat!("stunedge ", env!("CARGO_PKG_VERSION"));

/// A Binding request with transaction ID `tid`: `attributes` writes what goes before
/// FINGERPRINT, which ends every request the client sends.
pub(crate) fn binding_request(
    tid: [u8; 12],
    attributes: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), crate::stun::WriteError>,
) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid);
    // The buffer holds any request built here: errors cannot happen, but are not unwrapped.
    let n = (|| -> Result<usize, crate::stun::WriteError> {
        let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &key)?;
        attributes(&mut w)?;
        w.add_fingerprint()?;
        Ok(w.finish())
    })()
    .unwrap_or(0);
    buf[..n].to_vec()
}

fn build(tid: [u8; 12], sign: &Sign<'_>) -> Vec<u8> {
    binding_request(tid, |w| {
        match sign {
            Sign::None => {}
            Sign::Challenge => w.add(&Software(SOFTWARE.as_bytes()))?,
            Sign::ShortTerm { username, password } => {
                w.add(&Username(username.as_bytes()))?;
                w.add_integrity_sha1(password.as_bytes())?;
            }
            Sign::LongTerm { username, key, realm, nonce, algorithms } => {
                w.add(&Username(username.as_bytes()))?;
                w.add(&Realm(realm))?;
                w.add(&Nonce(nonce))?;
                if let Some(list) = algorithms {
                    w.add_raw(ATTR_PASSWORD_ALGORITHMS, list)?;
                    w.add_raw(ATTR_PASSWORD_ALGORITHM, &[0, 2, 0, 0])?;
                    w.add_integrity_sha256(key, 32)?;
                } else {
                    w.add_integrity_sha1(key)?;
                }
            }
        }
        Ok(())
    })
}

/// An answer to one transaction.
pub(crate) struct Answer {
    /// The whole message.
    pub(crate) bytes: Vec<u8>,
    /// Where it came from.
    pub(crate) from: SocketAddr,
    /// Time since the last request went out.
    pub(crate) rtt: Duration,
    /// Requests sent.
    pub(crate) attempts: u32,
}

/// One transaction: sends `request` on the schedule (to `to`, or on the connected socket when
/// `None`) until an answer with its transaction ID arrives, from any address.
pub(crate) fn transact(
    socket: &UdpSocket,
    to: Option<SocketAddr>,
    request: &[u8],
    tid: [u8; 12],
    retransmit: &Retransmit,
) -> Result<Answer, ProbeError> {
    transact_split(socket, to, socket, request, tid, retransmit, &mut |_, _, _| {})
}

/// [`transact`] with the requests sent from `sender` and the answer awaited on `receiver`
/// (RFC 5780 §4.6: the lifetime test asks from one socket for an answer to another); calls
/// `silence(sent, elapsed, timeout)` once when the transaction is still unanswered at the time
/// [`Silence`] describes.
pub(crate) fn transact_split(
    sender: &UdpSocket,
    to: Option<SocketAddr>,
    receiver: &UdpSocket,
    request: &[u8],
    tid: [u8; 12],
    retransmit: &Retransmit,
    silence: &mut dyn FnMut(u32, Duration, Duration),
) -> Result<Answer, ProbeError> {
    let (sends, timeout) = retransmit.schedule();
    // When the third request goes out; with fewer, one RTO after the last.
    let mut notice_at =
        Some(sends.get(2).copied().unwrap_or_else(|| sends.last().copied().unwrap_or_default() + retransmit.rto));
    let start = Instant::now();
    let mut sent = 0u32;
    let mut last_send = start;
    let mut buf = [0u8; 2048];
    loop {
        let now = start.elapsed();
        if let Some(&due) = sends.get(sent as usize) {
            if now >= due {
                match to {
                    Some(to) => sender.send_to(request, to),
                    None => sender.send(request),
                }
                .map_err(classify)?;
                sent += 1;
                last_send = Instant::now();
                continue;
            }
        }
        let mut next = sends.get(sent as usize).copied().unwrap_or(timeout);
        if now >= timeout {
            return Err(ProbeError::Timeout { after: now, attempts: sent });
        }
        if let Some(at) = notice_at {
            if now >= at {
                notice_at = None;
                silence(sent, now, timeout);
            } else {
                next = next.min(at);
            }
        }
        receiver.set_read_timeout(Some((next - now).max(Duration::from_millis(1)))).map_err(ProbeError::Io)?;
        match receiver.recv_from(&mut buf) {
            Ok((n, from)) => {
                let Ok(msg) = Message::parse(&buf[..n]) else { continue };
                if msg.transaction_id().0 != tid || msg.message_type().method != crate::stun::registry::METHOD_BINDING {
                    continue; // a stray or late answer to something else
                }
                return Ok(Answer { bytes: buf[..n].to_vec(), from, rtt: last_send.elapsed(), attempts: sent });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(classify(e)),
        }
    }
}

fn classify(e: io::Error) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => ProbeError::Unreachable(e),
        _ => ProbeError::Io(e),
    }
}

/// Sends Binding requests to `server` from `socket` (connected to it here, so ICMP errors are
/// reported) until one is answered; handles the long-term challenge.
pub fn binding(
    socket: &UdpSocket,
    server: SocketAddr,
    credentials: Option<&Credentials>,
    retransmit: &Retransmit,
) -> Result<Binding, ProbeError> {
    binding_with_notice(socket, server, credentials, retransmit, &mut |_| {})
}

/// [`binding`], calling `on_silence` once in each transaction that goes unanswered for a while
/// ([`Silence`]); `stunedge probe` says on stderr that it is still waiting.
pub fn binding_with_notice(
    socket: &UdpSocket,
    server: SocketAddr,
    credentials: Option<&Credentials>,
    retransmit: &Retransmit,
    on_silence: &mut dyn FnMut(&Silence),
) -> Result<Binding, ProbeError> {
    let mut silence = |sent, elapsed, timeout| on_silence(&Silence { server, sent, elapsed, timeout });
    socket.connect(server).map_err(ProbeError::Io)?;
    let local = socket.local_addr().map_err(ProbeError::Io)?;
    let mut sign = match credentials {
        None => Sign::None,
        Some(Credentials::LongTerm { .. }) => Sign::Challenge,
        Some(Credentials::ShortTerm { username, password }) => Sign::ShortTerm { username, password },
    };
    // A long-term exchange takes at most: challenge, request, and one 438 retry.
    for _ in 0..3 {
        let tid = random_tid();
        let request = build(tid, &sign);
        let Answer { bytes: answer, rtt, attempts, .. } =
            transact_split(socket, None, socket, &request, tid, retransmit, &mut silence)?;
        let msg = Message::parse(&answer).map_err(|_| ProbeError::BadResponse("unparsable"))?;
        let key: Option<Vec<u8>> = match &sign {
            Sign::None | Sign::Challenge => None,
            Sign::ShortTerm { password, .. } => Some(password.as_bytes().to_vec()),
            Sign::LongTerm { key, .. } => Some(key.clone()),
        };
        if msg.message_type().class == Class::ErrorResponse {
            let error = msg.get::<ErrorCode>().and_then(Result::ok);
            let code = error.map_or(0, |e| e.code);
            if let (401 | 438, Some(Credentials::LongTerm { username, password })) = (code, credentials) {
                let realm = msg.get::<Realm>().and_then(Result::ok).map(|r| r.0.to_vec());
                let nonce = msg.get::<Nonce>().and_then(Result::ok).map(|n| n.0.to_vec());
                let retry_401 = code == 401 && matches!(sign, Sign::None | Sign::Challenge);
                let retry_438 = code == 438 && matches!(sign, Sign::LongTerm { .. });
                if let (Some(realm), Some(nonce), true) = (realm, nonce, retry_401 || retry_438) {
                    // RFC 8489 §9.2.5: echo PASSWORD-ALGORITHMS and pick SHA-256 when offered.
                    let offered = msg.get::<PasswordAlgorithms>().and_then(Result::ok);
                    let sha256 = offered.is_some_and(|l| l.iter().any(|a: PasswordAlgorithm<'_>| a.algorithm == 2));
                    let algorithm = if sha256 { Algorithm::Sha256 } else { Algorithm::Md5 };
                    let key = long_term_key(algorithm, username.as_bytes(), &realm, password.as_bytes());
                    sign = Sign::LongTerm {
                        username,
                        key: key.as_bytes().to_vec(),
                        realm,
                        nonce,
                        algorithms: if sha256 { offered.map(|l| l.0.to_vec()) } else { None },
                    };
                    continue;
                }
            }
            let reason = error.map_or(String::new(), |e| e.reason.to_string());
            return Err(ProbeError::ErrorResponse { code, reason });
        }
        let authenticated = match &key {
            None => false,
            Some(key) => {
                let checks = [check_integrity_sha256(&msg, key), check_integrity_sha1(&msg, key)];
                if checks.contains(&Check::Invalid) || !checks.contains(&Check::Valid) {
                    return Err(ProbeError::BadResponse("integrity check failed"));
                }
                true
            }
        };
        let mapped = match msg.get::<XorMappedAddress>() {
            Some(Ok(a)) => a.0,
            _ => match msg.get::<MappedAddress>() {
                Some(Ok(a)) => a.0,
                _ => return Err(ProbeError::BadResponse("no mapped address")),
            },
        };
        return Ok(Binding { mapped, local, rtt, attempts, authenticated });
    }
    Err(ProbeError::BadResponse("the server kept challenging"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let ok = |s: &str| resolve(s).unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(ok("192.0.2.1"), addr("192.0.2.1:3478"));
        assert_eq!(ok("192.0.2.1:19302"), addr("192.0.2.1:19302"));
        assert_eq!(ok("2001:db8::1"), addr("[2001:db8::1]:3478"));
        assert_eq!(ok("[2001:db8::1]:5349"), addr("[2001:db8::1]:5349"));
        assert_eq!(ok("::1"), addr("[::1]:3478"));
        assert_eq!(ok("[::1]"), addr("[::1]:3478"), "brackets without a port");
        assert_eq!(ok("[::1]:9"), addr("[::1]:9"));
        assert_eq!(ok("localhost").port(), 3478);
        assert_eq!(ok("localhost:9").port(), 9);
        assert_eq!(resolve("[192.0.2.1]").unwrap_err().to_string(), "not an IPv6 address in brackets");
        assert_eq!(resolve("[::1]:x").unwrap_err().to_string(), "invalid port value");
        // The resolver's reason is kept (its wording after the colon is the C library's).
        let e = resolve("nope.invalid").unwrap_err().to_string();
        assert!(e.starts_with("failed to lookup address information: "), "{e}");
        let e = resolve("no such host!").unwrap_err().to_string();
        assert!(e.starts_with("failed to lookup address information: "), "{e}");
    }

    #[test]
    fn silence_is_reported_once_when_the_third_request_goes_unanswered() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = silent.local_addr().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Sends at 0, 50, 150, 350 ms; gives up at 450 ms.
        let retransmit = Retransmit { rto: Duration::from_millis(50), rc: 4, rm: 2 };
        let mut seen = Vec::new();
        let result = binding_with_notice(&socket, server, None, &retransmit, &mut |s| seen.push(*s));
        assert!(matches!(result, Err(ProbeError::Timeout { attempts: 4, .. })), "{result:?}");
        assert_eq!(seen.len(), 1, "{seen:?}");
        let s = seen[0];
        assert_eq!((s.server, s.sent, s.timeout), (server, 3, Duration::from_millis(450)));
        assert!(s.elapsed >= Duration::from_millis(150) && s.elapsed < Duration::from_millis(350), "{s:?}");

        // One request: one RTO after it.
        let mut seen = Vec::new();
        let one = Retransmit { rto: Duration::from_millis(50), rc: 1, rm: 3 };
        let _ = binding_with_notice(&socket, server, None, &one, &mut |s| seen.push(*s));
        assert_eq!(seen.iter().map(|s| s.sent).collect::<Vec<_>>(), [1]);
        assert!(seen[0].elapsed >= Duration::from_millis(50));
    }

    #[test]
    fn rfc8489_schedule() {
        let (sends, timeout) = Retransmit::default().schedule();
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timeout.as_millis(), 39500);
        let (sends, timeout) = Retransmit { rto: Duration::from_millis(10), rc: 2, rm: 3 }.schedule();
        assert_eq!(sends, [Duration::ZERO, Duration::from_millis(10)]);
        assert_eq!(timeout, Duration::from_millis(40));
    }
}
