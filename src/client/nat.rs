//! NAT behaviour discovery and the client's other long-running modes: RFC 5780 §4.3 mapping
//! and §4.4 filtering tests with the classic RFC 3489 name, keepalives that report mapping
//! changes, the binding-lifetime measurement of §4.6, and ICE candidates (RFC 8445 §5.1).
//! Blocking, one request at a time, retransmitted on the RFC 8489 §6.2.1 schedule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Answer, ProbeError, Retransmit, random_tid, transact, transact_split};
use crate::stun::attr::{ChangeRequest, ChangedAddress, MappedAddress, OtherAddress, ResponsePort, XorMappedAddress};
use crate::stun::{Class, Message};

/// A NAT's mapping or filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The same for every remote address and port.
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// RFC 4787's name, kebab-case (JSON value).
    pub const fn name(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// The RFC 3489 classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatType {
    /// No NAT, no filtering.
    OpenInternet,
    /// No NAT, but a firewall filters unsolicited answers (RFC 3489 "symmetric UDP firewall").
    Firewall,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Mapping depends on the destination.
    Symmetric,
    /// The server never answered.
    UdpBlocked,
}

impl NatType {
    /// The classic name.
    pub const fn name(self) -> &'static str {
        match self {
            NatType::OpenInternet => "open internet",
            NatType::Firewall => "symmetric UDP firewall",
            NatType::FullCone => "full cone",
            NatType::RestrictedCone => "restricted cone",
            NatType::PortRestrictedCone => "port-restricted cone",
            NatType::Symmetric => "symmetric",
            NatType::UdpBlocked => "UDP blocked",
        }
    }

    /// From the test results: `mapping` is `None` when there is no NAT.
    pub fn classify(mapping: Option<Behaviour>, filtering: Behaviour) -> NatType {
        match (mapping, filtering) {
            (None, Behaviour::EndpointIndependent) => NatType::OpenInternet,
            (None, _) => NatType::Firewall,
            (Some(Behaviour::EndpointIndependent), Behaviour::EndpointIndependent) => NatType::FullCone,
            (Some(Behaviour::EndpointIndependent), Behaviour::AddressDependent) => NatType::RestrictedCone,
            (Some(Behaviour::EndpointIndependent), Behaviour::AddressAndPortDependent) => NatType::PortRestrictedCone,
            (Some(_), _) => NatType::Symmetric,
        }
    }
}

/// What `probe --nat` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// The server asked.
    pub server: SocketAddr,
    /// Its OTHER-ADDRESS (`None` when it never answered).
    pub other: Option<SocketAddr>,
    /// The local address of the mapping test's socket.
    pub local: SocketAddr,
    /// The reflexive address of mapping test I.
    pub mapped: Option<SocketAddr>,
    /// Mapping behaviour; `None` without a NAT or without an answer.
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour; `None` without an answer.
    pub filtering: Option<Behaviour>,
    /// The classic name.
    pub nat_type: NatType,
}

impl NatReport {
    /// One JSON object: `server`, `other_address`, `local`, `mapped`, `behind_nat`, `mapping`,
    /// `filtering`, `nat_type`, in that order (`null` for what is unknown).
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json {
            server: SocketAddr,
            other_address: Option<SocketAddr>,
            local: SocketAddr,
            mapped: Option<SocketAddr>,
            behind_nat: bool,
            mapping: Option<&'static str>,
            filtering: Option<&'static str>,
            nat_type: &'static str,
        }
        super::json::line(&Json {
            server: self.server,
            other_address: self.other,
            local: self.local,
            mapped: self.mapped,
            behind_nat: self.mapped.is_some_and(|m| m != self.local),
            mapping: self.mapping.map(Behaviour::name),
            filtering: self.filtering.map(Behaviour::name),
            nat_type: self.nat_type.name(),
        })
    }
}

impl fmt::Display for NatReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(mapped) = self.mapped else {
            return write!(f, "NAT type: {} (no answer from {})", self.nat_type.name(), self.server);
        };
        writeln!(f, "mapped address {mapped} (local {}, server {})", self.local, self.server)?;
        if let Some(other) = self.other {
            writeln!(f, "server's other address {other}")?;
        }
        match self.mapping {
            None => writeln!(f, "mapping: none (no NAT)")?,
            Some(m) => writeln!(f, "mapping: {}", m.name())?,
        }
        if let Some(filtering) = self.filtering {
            writeln!(f, "filtering: {}", filtering.name())?;
        }
        write!(f, "NAT type: {}", self.nat_type.name())
    }
}

/// A Binding request with CHANGE-REQUEST `change` (when either flag is set) and
/// RESPONSE-PORT `response_port`, with FINGERPRINT.
fn request(tid: [u8; 12], change: ChangeRequest, response_port: Option<u16>) -> Vec<u8> {
    super::binding_request(tid, |w| {
        if change.change_ip || change.change_port {
            w.add(&change)?;
        }
        if let Some(port) = response_port {
            w.add(&ResponsePort(port))?;
        }
        Ok(())
    })
}

/// What one Binding answer says.
#[derive(Debug, Clone, Copy)]
struct Reflexive {
    mapped: SocketAddr,
    other: Option<SocketAddr>,
    /// The datagram's real source.
    from: SocketAddr,
}

fn parse(answer: &Answer) -> Result<Reflexive, ProbeError> {
    let msg = Message::parse(&answer.bytes).map_err(|_| ProbeError::BadResponse("unparsable"))?;
    if msg.message_type().class == Class::ErrorResponse {
        let error = msg.get::<crate::stun::attr::ErrorCode>().and_then(Result::ok);
        return Err(ProbeError::ErrorResponse {
            code: error.map_or(0, |e| e.code),
            reason: error.map_or(String::new(), |e| e.reason.to_string()),
        });
    }
    let mapped = match (msg.get::<XorMappedAddress>(), msg.get::<MappedAddress>()) {
        (Some(Ok(a)), _) => a.0,
        (_, Some(Ok(a))) => a.0,
        _ => return Err(ProbeError::BadResponse("no mapped address")),
    };
    let other = match (msg.get::<OtherAddress>(), msg.get::<ChangedAddress>()) {
        (Some(Ok(a)), _) => Some(a.0),
        (_, Some(Ok(a))) => Some(a.0),
        _ => None,
    };
    // The datagram's source, not RESPONSE-ORIGIN, is what a NAT filters on.
    Ok(Reflexive { mapped, other, from: answer.from })
}

/// One Binding from `socket` to `to`; `Ok(None)` when it timed out.
fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    change: ChangeRequest,
    retransmit: &Retransmit,
) -> Result<Option<Reflexive>, ProbeError> {
    let tid = random_tid();
    match transact(socket, Some(to), &request(tid, change, None), tid, retransmit) {
        Ok(answer) => parse(&answer).map(Some),
        Err(ProbeError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The local IP address the kernel would send to `server` from (no packet is sent).
pub fn local_ip_towards(server: SocketAddr) -> Result<IpAddr, ProbeError> {
    let probe = UdpSocket::bind(unspecified(server)).map_err(ProbeError::Io)?;
    probe.connect(server).map_err(super::classify)?;
    Ok(probe.local_addr().map_err(ProbeError::Io)?.ip())
}

/// The wildcard address of `server`'s family, port 0.
fn unspecified(server: SocketAddr) -> SocketAddr {
    let ip = if server.is_ipv4() { IpAddr::from(Ipv4Addr::UNSPECIFIED) } else { IpAddr::from(Ipv6Addr::UNSPECIFIED) };
    SocketAddr::new(ip, 0)
}

/// A fresh socket on the address the kernel would use towards `server`.
fn fresh_socket(server: SocketAddr) -> Result<UdpSocket, ProbeError> {
    UdpSocket::bind(SocketAddr::new(local_ip_towards(server)?, 0)).map_err(ProbeError::Io)
}

/// The RFC 5780 §4.3 mapping tests and §4.4 filtering tests against `server`, which must run
/// RFC 5780 (answer with OTHER-ADDRESS). The filtering tests use a second, fresh socket, so
/// the mapping tests' traffic to the alternate address cannot open the filter for them.
pub fn discover(server: SocketAddr, retransmit: &Retransmit) -> Result<NatReport, ProbeError> {
    let socket = fresh_socket(server)?;
    let local = socket.local_addr().map_err(ProbeError::Io)?;
    let none = ChangeRequest::default();
    // Mapping test I.
    let Some(first) = ask(&socket, server, none, retransmit)? else {
        return Ok(NatReport {
            server,
            other: None,
            local,
            mapped: None,
            mapping: None,
            filtering: None,
            nat_type: NatType::UdpBlocked,
        });
    };
    let other = first.other.ok_or(ProbeError::BadResponse(
        "no OTHER-ADDRESS in the answer: the server does not run RFC 5780 NAT discovery",
    ))?;
    let behind_nat = first.mapped != local;
    let mapping = if behind_nat {
        // Test II: the alternate IP, the primary port.
        let second = ask(&socket, SocketAddr::new(other.ip(), server.port()), none, retransmit)?
            .ok_or(ProbeError::BadResponse("no answer from the server's alternate address (mapping test II)"))?;
        if second.mapped == first.mapped {
            Some(Behaviour::EndpointIndependent)
        } else {
            // Test III: the alternate IP and port.
            let third = ask(&socket, other, none, retransmit)?
                .ok_or(ProbeError::BadResponse("no answer from the server's other address (mapping test III)"))?;
            Some(if third.mapped == second.mapped {
                Behaviour::AddressDependent
            } else {
                Behaviour::AddressAndPortDependent
            })
        }
    } else {
        None
    };

    // Filtering tests, on a fresh socket (a fresh mapping).
    let socket = fresh_socket(server)?;
    ask(&socket, server, none, retransmit)?.ok_or(ProbeError::BadResponse("no answer to filtering test I"))?;
    let both = ChangeRequest { change_ip: true, change_port: true };
    let filtering = match ask(&socket, server, both, retransmit)? {
        Some(answer) => {
            expect_from(&answer, other, "change IP and port")?;
            Behaviour::EndpointIndependent
        }
        None => {
            let port_only = ChangeRequest { change_ip: false, change_port: true };
            match ask(&socket, server, port_only, retransmit)? {
                Some(answer) => {
                    expect_from(&answer, SocketAddr::new(server.ip(), other.port()), "change port")?;
                    Behaviour::AddressDependent
                }
                None => Behaviour::AddressAndPortDependent,
            }
        }
    };
    Ok(NatReport {
        server,
        other: Some(other),
        local,
        mapped: Some(first.mapped),
        mapping,
        filtering: Some(filtering),
        nat_type: NatType::classify(mapping, filtering),
    })
}

/// A changed answer must come from the socket asked for, or the server is not honouring
/// CHANGE-REQUEST and the test would mean nothing.
fn expect_from(answer: &Reflexive, expected: SocketAddr, asked: &'static str) -> Result<(), ProbeError> {
    if answer.from == expected { Ok(()) } else { Err(ProbeError::Misrouted { asked, expected, from: answer.from }) }
}

/// One keepalive result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveEvent {
    /// Time since the first request.
    pub at: Duration,
    /// The reflexive address, `None` when the request went unanswered.
    pub mapped: Option<SocketAddr>,
    /// The mapping differs from the previous answer's.
    pub changed: bool,
}

impl KeepaliveEvent {
    /// One JSON object: `at_s` (seconds, three decimals), `mapped` (`null` when unanswered),
    /// `changed`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json {
            at_s: f64,
            mapped: Option<SocketAddr>,
            changed: bool,
        }
        super::json::line(&Json { at_s: self.at.as_secs_f64(), mapped: self.mapped, changed: self.changed })
    }
}

/// Sends a Binding every `interval` from one socket (keeping its NAT binding alive) and calls
/// `report` with the first answer, every mapping change and every unanswered request; stops
/// after `count` requests when given. Returns the number of mapping changes seen.
pub fn keepalive(
    server: SocketAddr,
    interval: Duration,
    count: Option<u64>,
    retransmit: &Retransmit,
    mut report: impl FnMut(&KeepaliveEvent),
) -> Result<u64, ProbeError> {
    let socket = fresh_socket(server)?;
    let start = Instant::now();
    let mut last: Option<SocketAddr> = None;
    let mut changes = 0;
    let mut sent = 0u64;
    while count.is_none_or(|c| sent < c) {
        let due = start + interval * u32::try_from(sent).unwrap_or(u32::MAX);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        sent += 1;
        let mapped = ask(&socket, server, ChangeRequest::default(), retransmit)?.map(|r| r.mapped);
        let changed = matches!((last, mapped), (Some(a), Some(b)) if a != b);
        changes += u64::from(changed);
        if sent == 1 || changed || mapped.is_none() {
            report(&KeepaliveEvent { at: start.elapsed(), mapped, changed });
        }
        if mapped.is_some() {
            last = mapped;
        }
    }
    Ok(changes)
}

/// Whether a binding survives `idle` without traffic (RFC 5780 §4.6): socket X makes a
/// binding, stays silent for `idle`, then socket Y asks the server (RESPONSE-PORT) to answer
/// to X's mapped port. X hears it only if the binding is still there.
pub fn binding_alive_after(server: SocketAddr, idle: Duration, retransmit: &Retransmit) -> Result<bool, ProbeError> {
    let x = fresh_socket(server)?;
    let first = ask(&x, server, ChangeRequest::default(), retransmit)?
        .ok_or(ProbeError::BadResponse("no answer to the lifetime test's first request"))?;
    std::thread::sleep(idle);
    let y = fresh_socket(server)?;
    let tid = random_tid();
    let request = request(tid, ChangeRequest::default(), Some(first.mapped.port()));
    // Y sends on the schedule; X listens for the answer.
    match transact_split(&y, Some(server), &x, &request, tid, retransmit, &mut |_, _, _| {}) {
        Ok(_) => Ok(true),
        Err(ProbeError::Timeout { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The binding lifetime to within `precision`, up to `max` (RFC 5780 §4.6): idle times double
/// from `precision` until a binding dies, then a binary search between the last one that
/// survived and the first that did not. `Ok(None)`: still alive after `max`. Each trial uses
/// fresh sockets, so it takes about the trial's idle time.
pub fn binding_lifetime(
    server: SocketAddr,
    precision: Duration,
    max: Duration,
    retransmit: &Retransmit,
    mut trial: impl FnMut(Duration, bool),
) -> Result<Option<(Duration, Duration)>, ProbeError> {
    let precision = precision.max(Duration::from_millis(10));
    let mut alive = Duration::ZERO;
    let mut dead = None;
    let mut idle = precision;
    while dead.is_none() {
        let t = idle.min(max);
        let ok = binding_alive_after(server, t, retransmit)?;
        trial(t, ok);
        if ok {
            alive = t;
            if t >= max {
                return Ok(None);
            }
            idle *= 2;
        } else {
            dead = Some(t);
        }
    }
    let mut dead = dead.unwrap_or(max);
    while dead - alive > precision {
        let mid = alive + (dead - alive) / 2;
        let ok = binding_alive_after(server, mid, retransmit)?;
        trial(mid, ok);
        if ok {
            alive = mid;
        } else {
            dead = mid;
        }
    }
    Ok(Some((alive, dead)))
}

/// An ICE candidate (RFC 8445 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Same for candidates of the same type from the same base and server (§5.1.1.3).
    pub foundation: u32,
    /// `host` or `srflx`.
    pub kind: &'static str,
    /// The candidate's transport address.
    pub addr: SocketAddr,
    /// Its base (the host address it was gathered from); equal to `addr` for host candidates.
    pub base: SocketAddr,
    /// RFC 8445 §5.1.2.1 priority.
    pub priority: u32,
}

/// Type preferences of RFC 8445 §5.1.2.2.
pub const TYPE_PREFERENCE_HOST: u32 = 126;
/// Server-reflexive.
pub const TYPE_PREFERENCE_SRFLX: u32 = 100;
/// Relayed (never gathered here: stunedge is not a TURN server).
pub const TYPE_PREFERENCE_RELAY: u32 = 0;

/// priority = 2^24 × type preference + 2^8 × local preference + (256 − component ID).
pub const fn priority(type_preference: u32, local_preference: u32, component: u32) -> u32 {
    (type_preference << 24) + (local_preference << 8) + (256 - component)
}

impl Candidate {
    /// The SDP `a=candidate` line (RFC 8839 §5.1), component 1, UDP.
    pub fn sdp(&self) -> String {
        let mut line = format!(
            "a=candidate:{} 1 udp {} {} {} typ {}",
            self.foundation,
            self.priority,
            self.addr.ip(),
            self.addr.port(),
            self.kind
        );
        if self.kind != "host" {
            line += &format!(" raddr {} rport {}", self.base.ip(), self.base.port());
        }
        line
    }

    /// One JSON object: `foundation` (a string, as in SDP), `component`, `transport`, `type`,
    /// `address`, `base`, `priority`, `sdp`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json {
            foundation: String,
            component: u8,
            transport: &'static str,
            #[serde(rename = "type")]
            kind: &'static str,
            address: SocketAddr,
            base: SocketAddr,
            priority: u32,
            sdp: String,
        }
        super::json::line(&Json {
            foundation: self.foundation.to_string(),
            component: 1,
            transport: "udp",
            kind: self.kind,
            address: self.addr,
            base: self.base,
            priority: self.priority,
            sdp: self.sdp(),
        })
    }
}

/// Host candidates from the interfaces' addresses of `server`'s family (up, not link-local;
/// loopback only when the server itself is on loopback — RFC 8445 §5.1.1.1 leaves loopback
/// out), each with a socket, then a server-reflexive candidate for each whose mapped address
/// differs from it. Local preference: 65535 for the first address, one less for each next.
pub fn candidates(server: SocketAddr, retransmit: &Retransmit) -> Result<Vec<Candidate>, ProbeError> {
    let addresses = crate::io::ifaddrs::interface_addresses().map_err(ProbeError::Io)?;
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    };
    let mut ips: Vec<IpAddr> = addresses
        .iter()
        .filter(|a| a.up && a.ip.is_ipv4() == server.is_ipv4() && usable(&a.ip))
        .filter(|a| !a.loopback || server.ip().is_loopback())
        .map(|a| a.ip)
        .collect();
    ips.dedup();
    let mut out = Vec::new();
    let mut foundations: Vec<(&'static str, IpAddr)> = Vec::new();
    let mut foundation = |kind: &'static str, ip: IpAddr| -> u32 {
        let at = foundations.iter().position(|f| *f == (kind, ip)).unwrap_or_else(|| {
            foundations.push((kind, ip));
            foundations.len() - 1
        });
        at as u32 + 1
    };
    let mut reflexive = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let local_preference = 65535u32.saturating_sub(i as u32);
        let socket = UdpSocket::bind(SocketAddr::new(*ip, 0)).map_err(ProbeError::Io)?;
        let base = socket.local_addr().map_err(ProbeError::Io)?;
        out.push(Candidate {
            foundation: foundation("host", *ip),
            kind: "host",
            addr: base,
            base,
            priority: priority(TYPE_PREFERENCE_HOST, local_preference, 1),
        });
        // An address that cannot reach the server yields no server-reflexive candidate.
        if let Ok(Some(answer)) = ask(&socket, server, ChangeRequest::default(), retransmit) {
            if answer.mapped != base && !reflexive.contains(&answer.mapped) {
                reflexive.push(answer.mapped);
                out.push(Candidate {
                    foundation: foundation("srflx", *ip),
                    kind: "srflx",
                    addr: answer.mapped,
                    base,
                    priority: priority(TYPE_PREFERENCE_SRFLX, local_preference, 1),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_one_line_with_the_documented_keys() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut report = NatReport {
            server: a("192.0.2.1:3478"),
            other: Some(a("192.0.2.2:3479")),
            local: a("10.0.0.2:5000"),
            mapped: Some(a("203.0.113.1:6000")),
            mapping: Some(Behaviour::EndpointIndependent),
            filtering: Some(Behaviour::AddressDependent),
            nat_type: NatType::RestrictedCone,
        };
        assert_eq!(
            report.json(),
            "{\"server\": \"192.0.2.1:3478\", \"other_address\": \"192.0.2.2:3479\", \"local\": \"10.0.0.2:5000\", \
             \"mapped\": \"203.0.113.1:6000\", \"behind_nat\": true, \"mapping\": \"endpoint-independent\", \
             \"filtering\": \"address-dependent\", \"nat_type\": \"restricted cone\"}"
        );
        report = NatReport {
            other: None,
            mapped: None,
            mapping: None,
            filtering: None,
            nat_type: NatType::UdpBlocked,
            ..report
        };
        assert_eq!(
            report.json(),
            "{\"server\": \"192.0.2.1:3478\", \"other_address\": null, \"local\": \"10.0.0.2:5000\", \"mapped\": null, \
             \"behind_nat\": false, \"mapping\": null, \"filtering\": null, \"nat_type\": \"UDP blocked\"}"
        );
        let event =
            KeepaliveEvent { at: Duration::from_millis(1500), mapped: Some(a("[2001:db8::1]:5000")), changed: true };
        assert_eq!(event.json(), "{\"at_s\": 1.500, \"mapped\": \"[2001:db8::1]:5000\", \"changed\": true}");
        let event = KeepaliveEvent { mapped: None, changed: false, ..event };
        assert_eq!(event.json(), "{\"at_s\": 1.500, \"mapped\": null, \"changed\": false}");
        let candidate = Candidate {
            foundation: 1,
            kind: "srflx",
            addr: a("203.0.113.1:6000"),
            base: a("10.0.0.2:5000"),
            priority: priority(TYPE_PREFERENCE_SRFLX, 65535, 1),
        };
        assert_eq!(
            candidate.json(),
            "{\"foundation\": \"1\", \"component\": 1, \"transport\": \"udp\", \"type\": \"srflx\", \
             \"address\": \"203.0.113.1:6000\", \"base\": \"10.0.0.2:5000\", \"priority\": 1694498815, \
             \"sdp\": \"a=candidate:1 1 udp 1694498815 203.0.113.1 6000 typ srflx raddr 10.0.0.2 rport 5000\"}"
        );
    }

    #[test]
    fn classic_names() {
        use Behaviour::*;
        assert_eq!(NatType::classify(None, EndpointIndependent), NatType::OpenInternet);
        assert_eq!(NatType::classify(None, AddressDependent), NatType::Firewall);
        assert_eq!(NatType::classify(Some(EndpointIndependent), EndpointIndependent), NatType::FullCone);
        assert_eq!(NatType::classify(Some(EndpointIndependent), AddressDependent), NatType::RestrictedCone);
        assert_eq!(NatType::classify(Some(EndpointIndependent), AddressAndPortDependent), NatType::PortRestrictedCone);
        assert_eq!(NatType::classify(Some(AddressDependent), EndpointIndependent), NatType::Symmetric);
        assert_eq!(NatType::classify(Some(AddressAndPortDependent), AddressAndPortDependent), NatType::Symmetric);
    }

    #[test]
    fn rfc8445_priorities_and_sdp() {
        // RFC 8445 §5.1.2.1 with the recommended preferences: host 126, one address (65535).
        assert_eq!(priority(TYPE_PREFERENCE_HOST, 65535, 1), 2_130_706_431);
        assert_eq!(priority(TYPE_PREFERENCE_SRFLX, 65535, 1), 1_694_498_815);
        assert_eq!(priority(TYPE_PREFERENCE_RELAY, 65535, 1), 16_777_215);
        assert_eq!(priority(TYPE_PREFERENCE_HOST, 65535, 2), 2_130_706_430);
        let c = Candidate {
            foundation: 2,
            kind: "srflx",
            addr: "203.0.113.1:40000".parse().unwrap(),
            base: "10.0.1.2:5000".parse().unwrap(),
            priority: priority(TYPE_PREFERENCE_SRFLX, 65535, 1),
        };
        assert_eq!(c.sdp(), "a=candidate:2 1 udp 1694498815 203.0.113.1 40000 typ srflx raddr 10.0.1.2 rport 5000");
        let h = Candidate { kind: "host", addr: c.base, ..c.clone() };
        assert_eq!(h.sdp(), "a=candidate:2 1 udp 1694498815 10.0.1.2 5000 typ host");
    }
}
