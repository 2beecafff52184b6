//! The decision for one datagram, sans-IO: given the receive buffer, the datagram's length, its
//! source and the local address it arrived on, either write the response in place over the
//! request and say how long it is, or name why the datagram is dropped. No sockets, no clocks,
//! no allocation (proved by a counting-allocator test), no panics on any input.
//!
//! Policy (RFC 8489 §6.3, RFC 3489 §9.2):
//! - Binding request → success with XOR-MAPPED-ADDRESS (classic: MAPPED-ADDRESS), plus
//!   RESPONSE-ORIGIN (classic: SOURCE-ADDRESS) when configured, SOFTWARE when configured, and
//!   FINGERPRINT when the request carried one.
//! - Credentials, when the listener asks for them ([`ListenerAuth`], RFC 8489 §9): checked
//!   before anything else about the request; 400 / 401 (long-term: with REALM, NONCE and
//!   PASSWORD-ALGORITHMS) / 438 with a fresh NONCE; every answer to an authenticated request is
//!   signed with MESSAGE-INTEGRITY(-SHA256) before FINGERPRINT.
//! - Unknown comprehension-required attributes → 420 with UNKNOWN-ATTRIBUTES. On a listener
//!   outside RFC 5780 mode, CHANGE-REQUEST, RESPONSE-PORT and PADDING count as unknown (RFC 5780
//!   §6.1: a server without an alternate address and port answers CHANGE-REQUEST with 420),
//!   except an all-zero CHANGE-REQUEST in an RFC 3489 classic request, which asks for nothing
//!   and which legacy clients send with every request.
//! - RFC 5780 mode (a [`NatRole`] on the listener): Binding answers carry XOR-MAPPED-ADDRESS,
//!   MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS (classic: MAPPED-ADDRESS, SOURCE-ADDRESS,
//!   CHANGED-ADDRESS); CHANGE-REQUEST picks the socket the answer leaves from and RESPONSE-PORT
//!   the port it goes to ([`Route`]); PADDING pads the answer, never past the request's size;
//!   PADDING with RESPONSE-PORT, a malformed CHANGE-REQUEST or RESPONSE-PORT, or a RESPONSE-PORT
//!   of 0, is 400.
//! - Broken attribute framing, other methods (TURN and the rest), or more than
//!   [`MAX_UNKNOWN`] distinct unknown attributes → 400.
//! - Anything else is dropped and counted under a [`DropReason`]: too short, not STUN, bad
//!   length, classic when disabled, bad FINGERPRINT, indications, responses.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{Authenticator, Mechanism, Policy, Presented, Signer, Verdict};
use crate::metrics::{Counter, Stats};
use crate::stun::attr::{
    Attribute, ChangeRequest, ChangedAddress, MAX_UNKNOWN, MappedAddress, Nonce, OtherAddress, Realm, ResponseOrigin,
    ResponsePort, Software, SourceAddress, UnknownAttributes, XorMappedAddress,
};
use crate::stun::integrity::{Check, check_fingerprint_attribute};
use crate::stun::message::{COOKIE_OFFSET, ParseError, check_header};
use crate::stun::registry::{
    ATTR_CHANGE_REQUEST, ATTR_FINGERPRINT, ATTR_PADDING, ATTR_PASSWORD_ALGORITHMS, ATTR_RESPONSE_PORT, ERR_BAD_REQUEST,
    ERR_STALE_NONCE, ERR_UNAUTHENTICATED, ERR_UNKNOWN_ATTRIBUTE, MAGIC_COOKIE, METHOD_BINDING,
    is_comprehension_required, is_known_attribute,
};
use crate::stun::{Class, Message, MessageType, MessageWriter, WriteError};

/// The receive buffer size every backend uses: the largest datagram accepted (a larger one is
/// dropped as [`DropReason::Truncated`]) with room to answer it in place.
pub const BUFFER_SIZE: usize = 2048;

/// The largest request answered: the whole buffer. The answer is written over the request
/// from its first byte and is bounded on its own (see the assertion at the end of this file),
/// so a request of any size up to the buffer leaves room for it. RFC 5780 clients pad requests
/// past the MTU on purpose (coturn's `turnutils_natdiscovery -P` sends 1524 bytes).
pub const MAX_REQUEST: usize = BUFFER_SIZE;

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// Why a datagram is not answered. Each has a counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$( DropReason::$variant, )*];

            /// The reason's name, `snake_case` (a metric label value).
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }
        }
    };
}

drop_reasons! {
    /// Fewer than 20 bytes.
    TooShort => "too_short",
    /// The top two bits are not zero (RFC 8489 §5): not a STUN message.
    NotStun => "not_stun",
    /// The length field is not a multiple of 4 or disagrees with the datagram size.
    BadLength => "bad_length",
    /// Larger than the receive buffer (or than [`MAX_REQUEST`]).
    Truncated => "truncated",
    /// An RFC 3489 classic message while classic support is off.
    ClassicDisabled => "classic_disabled",
    /// FINGERPRINT present but wrong, malformed or not last (RFC 8489 §7.3: discard).
    BadFingerprint => "bad_fingerprint",
    /// A Binding indication: a keepalive, never answered (RFC 8489 §6.3.2).
    BindingIndication => "binding_indication",
    /// An indication of another method.
    Indication => "indication",
    /// A success or error response: a server never answers those.
    Response => "response",
    /// The response would not fit the buffer (cannot happen with [`BUFFER_SIZE`]; counted
    /// rather than trusted).
    ResponseTooLarge => "response_too_large",
}

/// How one listener answers: what goes into answers and whether credentials are checked.
/// Built from the config (one per listen address); read-only; replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct HandlerConfig {
    /// SOFTWARE value; empty means no SOFTWARE attribute.
    pub software: String,
    /// Add RESPONSE-ORIGIN (classic: SOURCE-ADDRESS) to Binding responses.
    pub response_origin: bool,
    /// Answer RFC 3489 classic requests (no magic cookie).
    pub rfc3489_classic: bool,
    /// Credential checks; `None` checks nothing (integrity attributes are ignored).
    pub auth: Option<ListenerAuth>,
    /// RFC 5780 NAT behaviour discovery: this listener's place among the four sockets; `None`
    /// outside RFC 5780 mode.
    pub nat: Option<NatRole>,
}

/// Role bit: the socket is on the alternate IP address.
pub const ALT_IP: u8 = 1;
/// Role bit: the socket is on the alternate port.
pub const ALT_PORT: u8 = 2;

/// A listener's place in an RFC 5780 group: the four sockets on the primary and alternate IP
/// address × the primary and alternate port (RFC 5780 §6), and which one it is. Roles index
/// the arrays: bit [`ALT_IP`] set = alternate IP, bit [`ALT_PORT`] set = alternate port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRole {
    /// Each role's address.
    pub addrs: [SocketAddr; 4],
    /// Each role's listener index (the order of a worker's sockets).
    pub listeners: [u16; 4],
    /// This listener's role.
    pub role: u8,
}

impl NatRole {
    /// OTHER-ADDRESS: where answers to "change IP and port" come from (RFC 5780 §7.4).
    pub fn other(&self) -> SocketAddr {
        self.addrs[usize::from(self.role ^ (ALT_IP | ALT_PORT))]
    }
}

/// A listener's authentication: policy, mechanism and the shared credentials.
#[derive(Debug, Clone)]
pub struct ListenerAuth {
    /// Optional or required (a `None` policy is no `ListenerAuth` at all).
    pub policy: Policy,
    /// Short-term or long-term credentials.
    pub mechanism: Mechanism,
    /// Users, secrets and the nonce key.
    pub authenticator: Arc<Authenticator>,
}

/// Where a datagram came from, where it arrived, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The sender: the reflexive address reported back.
    pub src: SocketAddr,
    /// The local address and port the datagram was sent to; the reply leaves from it.
    pub local: SocketAddr,
    /// Unix time in seconds (nonce expiry), read once per batch by the worker.
    pub now: u64,
}

/// Where an answer goes when it does not simply go back: RFC 5780's CHANGE-REQUEST (send from
/// another of the worker's sockets) and RESPONSE-PORT (send to another port of the source's IP
/// address). The default sends it back to the source from the address it came to. Packed in
/// 32 bits so that [`Action`] stays two registers wide on the Binding path: the low half is the
/// socket index + 1 (0: the receiving socket), the high half the port (0: the source port; a
/// RESPONSE-PORT of 0 is refused with 400, as nothing can be sent to port 0).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Route(u32);

impl Route {
    /// Back to the source, from the socket it came to.
    pub const BACK: Route = Route(0);

    /// From socket `via` (an index into the worker's sockets; at most 65534) and to `port`.
    pub const fn new(via: Option<u16>, port: Option<u16>) -> Route {
        let via = match via {
            Some(v) if v < u16::MAX => v as u32 + 1,
            _ => 0,
        };
        let port = match port {
            Some(p) => p as u32,
            None => 0,
        };
        Route(via | port << 16)
    }

    /// The socket to send from, when not the receiving one.
    pub const fn via(self) -> Option<u16> {
        match self.0 & 0xFFFF {
            0 => None,
            v => Some(v as u16 - 1),
        }
    }

    /// The port to send to, when not the source port.
    pub const fn port(self) -> Option<u16> {
        match self.0 >> 16 {
            0 => None,
            p => Some(p as u16),
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("via", &self.via()).field("port", &self.port()).finish()
    }
}

/// The decision for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the first `len` bytes of the buffer back to the source, from the local address,
    /// unless `route` says otherwise.
    Reply {
        /// Response length in bytes.
        len: usize,
        /// Another socket or port (RFC 5780 mode only).
        route: Route,
    },
    /// Send nothing.
    Drop(DropReason),
}

/// Handles one datagram: `buf[..len]` is the datagram, all of `buf` may be overwritten with the
/// response. Counts the outcome in `stats`.
#[inline]
pub fn handle(buf: &mut [u8], len: usize, meta: &Meta, config: &HandlerConfig, stats: &mut Stats) -> Action {
    let action = decide(buf, len, meta, config, stats);
    if let Action::Drop(reason) = action {
        stats.dropped(reason);
    }
    action
}

/// What the request needs from the response, read before the response overwrites it.
struct Request<'s> {
    method: u16,
    classic: bool,
    /// The request's length: the cap on a PADDING-ed answer.
    len: usize,
    /// The request carried a (valid) FINGERPRINT, so the answer carries one too.
    fingerprint: bool,
    /// The request authenticated: every answer is signed with its key.
    signer: Option<Signer<'s>>,
}

fn decide(buf: &mut [u8], len: usize, meta: &Meta, config: &HandlerConfig, stats: &mut Stats) -> Action {
    if len > MAX_REQUEST || len > buf.len() {
        return Action::Drop(DropReason::Truncated);
    }
    let datagram = &buf[..len];
    let message_type = match check_header(datagram) {
        Ok(t) => t,
        Err(ParseError::TooShort) => return Action::Drop(DropReason::TooShort),
        Err(ParseError::NotStun) => return Action::Drop(DropReason::NotStun),
        Err(_) => return Action::Drop(DropReason::BadLength),
    };
    let cookie = u32::from_be_bytes([
        datagram[COOKIE_OFFSET],
        datagram[COOKIE_OFFSET + 1],
        datagram[COOKIE_OFFSET + 2],
        datagram[COOKIE_OFFSET + 3],
    ]);
    let classic = cookie != MAGIC_COOKIE;
    if classic && !config.rfc3489_classic {
        return Action::Drop(DropReason::ClassicDisabled);
    }
    match (message_type.class, message_type.method) {
        (Class::Request, _) => {}
        (Class::Indication, METHOD_BINDING) => return Action::Drop(DropReason::BindingIndication),
        (Class::Indication, _) => return Action::Drop(DropReason::Indication),
        (Class::SuccessResponse | Class::ErrorResponse, _) => return Action::Drop(DropReason::Response),
    }
    stats.bump(if message_type.method == METHOD_BINDING { Counter::RequestsBinding } else { Counter::RequestsOther });
    if classic {
        stats.bump(Counter::RequestsClassic);
    }

    let mut request = Request { method: message_type.method, classic, len, fingerprint: false, signer: None };
    let Ok(message) = Message::parse(datagram) else {
        // The header is valid, the attributes are not: RFC 8489 §6.3 says 400.
        return bad_request(buf, &request, config, stats);
    };
    let mut unknown = UnknownAttributes::new();
    let mut too_many_unknown = false;
    let mut presented = Presented::default();
    let auth = config.auth.as_ref();
    let mut discovery = Discovery::default();
    for attr in message.attributes() {
        if attr.attr_type == ATTR_FINGERPRINT {
            if check_fingerprint_attribute(&message, &attr) != Check::Valid {
                return Action::Drop(DropReason::BadFingerprint);
            }
            request.fingerprint = true;
        } else if auth.is_some() && presented.offer(attr) {
            // Gathered for the credential check below.
        } else if matches!(attr.attr_type, ATTR_CHANGE_REQUEST | ATTR_RESPONSE_PORT | ATTR_PADDING) {
            if config.nat.is_some() {
                discovery.offer(attr.attr_type, attr.value);
            } else if !(classic && attr.attr_type == ATTR_CHANGE_REQUEST && attr.value == [0, 0, 0, 0]) {
                too_many_unknown |= !unknown.insert(attr.attr_type);
            }
        } else if is_comprehension_required(attr.attr_type) && !is_known_attribute(attr.attr_type) {
            too_many_unknown |= !unknown.insert(attr.attr_type);
        }
    }

    // RFC 8489 §6.3: authentication first, then unknown attributes, then the method.
    if let Some(auth) = auth {
        let verdict = auth.authenticator.verify(auth.mechanism, auth.policy, &presented, datagram, meta.src, meta.now);
        match verdict {
            Verdict::Anonymous => {}
            Verdict::Authenticated(signer) => {
                stats.bump(Counter::RequestsAuthenticated);
                request.signer = Some(signer);
            }
            Verdict::BadRequest => return bad_request(buf, &request, config, stats),
            Verdict::Unauthenticated => return challenge(buf, &request, Stale::No, auth, meta, config, stats),
            Verdict::StaleNonce(signer) => {
                request.signer = Some(signer);
                return challenge(buf, &request, Stale::Yes, auth, meta, config, stats);
            }
        }
    }

    if too_many_unknown {
        // More than MAX_UNKNOWN distinct unknown types: a 420 could not list them all.
        return bad_request(buf, &request, config, stats);
    }
    if !unknown.is_empty() {
        return reply(buf, stats, Counter::Responses420, |b| {
            error(b, &request, ERR_UNKNOWN_ATTRIBUTE, "Unknown Attribute", Some(&unknown), config)
        });
    }
    if request.method != METHOD_BINDING {
        return bad_request(buf, &request, config, stats);
    }
    if let Some(nat) = &config.nat {
        return discovery_success(buf, &request, &discovery, nat, meta, config, stats);
    }
    reply(buf, stats, Counter::ResponsesSuccess, |b| binding_success(b, &request, meta, config))
}

#[inline]
fn reply(
    buf: &mut [u8],
    stats: &mut Stats,
    counter: Counter,
    write: impl FnOnce(&mut [u8]) -> Result<usize, WriteError>,
) -> Action {
    match write(buf) {
        Ok(len) => {
            stats.bump(counter);
            Action::Reply { len, route: Route::BACK }
        }
        Err(_) => Action::Drop(DropReason::ResponseTooLarge),
    }
}

/// What an RFC 5780 request asks for (gathered only on listeners in RFC 5780 mode).
#[derive(Debug, Default)]
struct Discovery {
    /// Role bits to flip: [`ALT_IP`] for "change IP", [`ALT_PORT`] for "change port".
    change: u8,
    response_port: Option<u16>,
    /// The PADDING value's length.
    padding: Option<usize>,
    /// A CHANGE-REQUEST or RESPONSE-PORT of the wrong length, or a RESPONSE-PORT of 0.
    malformed: bool,
}

impl Discovery {
    fn offer(&mut self, attr_type: u16, value: &[u8]) {
        let key = [0; 16]; // none of the three is XOR-ed
        match attr_type {
            ATTR_CHANGE_REQUEST => match ChangeRequest::decode(value, &key) {
                Ok(c) => self.change = if c.change_ip { ALT_IP } else { 0 } | if c.change_port { ALT_PORT } else { 0 },
                Err(_) => self.malformed = true,
            },
            ATTR_RESPONSE_PORT => match ResponsePort::decode(value, &key) {
                Ok(ResponsePort(0)) | Err(_) => self.malformed = true,
                Ok(p) => self.response_port = Some(p.0),
            },
            _ => self.padding = Some(value.len()),
        }
    }
}

/// A Binding success in RFC 5780 mode (§6.1): sent from the socket CHANGE-REQUEST picks, to
/// the port RESPONSE-PORT names, with RESPONSE-ORIGIN (that socket's address), OTHER-ADDRESS
/// and both mapped-address forms; PADDING-ed up to the request's size at most.
#[cold]
#[inline(never)]
fn discovery_success(
    buf: &mut [u8],
    request: &Request<'_>,
    discovery: &Discovery,
    nat: &NatRole,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    if discovery.malformed || (discovery.padding.is_some() && discovery.response_port.is_some()) {
        return bad_request(buf, request, config, stats);
    }
    let target = nat.role ^ discovery.change;
    let origin = nat.addrs[usize::from(target)];
    let other = nat.other();
    let mut padded = false;
    let action = reply(buf, stats, Counter::ResponsesSuccess, |b| {
        let mut w = MessageWriter::over(b, MessageType::BINDING_SUCCESS)?;
        if request.classic {
            w.add(&MappedAddress(meta.src))?;
            w.add(&SourceAddress(origin))?;
            w.add(&ChangedAddress(other))?;
        } else {
            w.add(&XorMappedAddress(meta.src))?;
            w.add(&MappedAddress(meta.src))?;
            w.add(&ResponseOrigin(origin))?;
            w.add(&OtherAddress(other))?;
        }
        if let Some(asked) = discovery.padding {
            // Never larger than the request: room left after the PADDING header and the tail.
            let room = request.len.saturating_sub(w.len() + 4 + finish_len(request, config));
            let pad = asked.min(room) & !3;
            if pad > 0 {
                w.add_raw(ATTR_PADDING, &ZEROS[..pad])?;
                padded = true;
            }
        }
        finish(w, request, config)
    });
    let Action::Reply { len, .. } = action else { return action };
    let via = (discovery.change != 0).then(|| nat.listeners[usize::from(target)]);
    if padded {
        stats.bump(Counter::DiscoveryPadded);
    }
    if via.is_some() {
        stats.bump(Counter::DiscoveryChanged);
    }
    if discovery.response_port.is_some() {
        stats.bump(Counter::DiscoveryResponsePort);
    }
    Action::Reply { len, route: Route::new(via, discovery.response_port) }
}

/// PADDING's source of zeros: no answer is padded past the largest request.
static ZEROS: [u8; MAX_REQUEST] = [0; MAX_REQUEST];

/// The bytes [`finish`] will add.
fn finish_len(request: &Request<'_>, config: &HandlerConfig) -> usize {
    let software = if config.software.is_empty() { 0 } else { 4 + config.software.len().next_multiple_of(4) };
    let integrity = request.signer.as_ref().map_or(0, Signer::attribute_len);
    let fingerprint = if request.fingerprint { 8 } else { 0 };
    software + integrity + fingerprint
}

/// 400 Bad Request: broken attribute framing, a method this edge does not serve, or more
/// unknown attributes than a 420 can list. Cold: kept out of the Binding path's code.
#[cold]
#[inline(never)]
fn bad_request(buf: &mut [u8], request: &Request<'_>, config: &HandlerConfig, stats: &mut Stats) -> Action {
    reply(buf, stats, Counter::Responses400, |b| error(b, request, ERR_BAD_REQUEST, "Bad Request", None, config))
}

/// Which challenge: 438 for a request that authenticated with a nonce no longer valid, 401
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    Yes,
    No,
}

/// 401 (no or wrong credentials) or, when the request authenticated with an expired nonce, 438
/// signed with its key (RFC 8489 §9.2.4). Long-term challenges carry REALM, a fresh NONCE and
/// PASSWORD-ALGORITHMS; short-term 401s carry nothing more (§9.1.3). The reason phrase is empty:
/// every byte of a challenge is a byte of reflection.
#[cold]
#[inline(never)]
fn challenge(
    buf: &mut [u8],
    request: &Request<'_>,
    stale: Stale,
    auth: &ListenerAuth,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    let (code, counter) = match stale {
        Stale::Yes => (ERR_STALE_NONCE, Counter::Responses438),
        Stale::No => (ERR_UNAUTHENTICATED, Counter::Responses401),
    };
    reply(buf, stats, counter, |b| {
        let mut w = MessageWriter::over(b, MessageType::new(request.method, Class::ErrorResponse))?;
        w.add_error(code, "")?;
        if auth.mechanism == Mechanism::LongTerm {
            let authenticator = &auth.authenticator;
            w.add(&Realm(authenticator.realm()))?;
            w.add(&Nonce(&authenticator.nonce_for(meta.src, meta.now)))?;
            if let Some(algorithms) = authenticator.password_algorithms() {
                w.add_raw(ATTR_PASSWORD_ALGORITHMS, algorithms)?;
            }
        }
        finish(w, request, config)
    })
}

#[inline]
fn binding_success(
    buf: &mut [u8],
    request: &Request<'_>,
    meta: &Meta,
    config: &HandlerConfig,
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::over(buf, MessageType::BINDING_SUCCESS)?;
    if request.classic {
        // RFC 3489 §11.2.1: classic clients read MAPPED-ADDRESS (no XOR).
        w.add(&MappedAddress(meta.src))?;
        if config.response_origin {
            w.add(&SourceAddress(meta.local))?;
        }
    } else {
        w.add(&XorMappedAddress(meta.src))?;
        if config.response_origin {
            w.add(&ResponseOrigin(meta.local))?;
        }
    }
    finish(w, request, config)
}

fn error(
    buf: &mut [u8],
    request: &Request<'_>,
    code: u16,
    reason: &str,
    unknown: Option<&UnknownAttributes>,
    config: &HandlerConfig,
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::over(buf, MessageType::new(request.method, Class::ErrorResponse))?;
    w.add_error(code, reason)?;
    if let Some(unknown) = unknown {
        w.add(unknown)?;
    }
    finish(w, request, config)
}

/// SOFTWARE when configured, the integrity attribute when the request authenticated, FINGERPRINT
/// when the request had one (RFC 8489 §7.3.1: a server that receives FINGERPRINT includes it),
/// then the length.
#[inline]
fn finish(mut w: MessageWriter<'_>, request: &Request<'_>, config: &HandlerConfig) -> Result<usize, WriteError> {
    if !config.software.is_empty() {
        w.add(&Software(config.software.as_bytes()))?;
    }
    if let Some(signer) = &request.signer {
        signer.sign(&mut w)?;
    }
    if request.fingerprint {
        w.add_fingerprint()?;
    }
    Ok(w.finish())
}

// The largest answer: header, XOR-MAPPED-ADDRESS and RESPONSE-ORIGIN for IPv6 (24 each), the
// longest SOFTWARE, FINGERPRINT; or an error with a 420 list. It must fit any receive buffer.
const _: () =
    assert!(20 + 24 + 24 + 4 + crate::stun::attr::MAX_TEXT + 8 + 4 + 4 + 24 + 4 + 2 * MAX_UNKNOWN <= BUFFER_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::attr::{ErrorCode, ResponseOrigin};
    use crate::stun::integrity::check_fingerprint;
    use crate::stun::registry::{ATTR_PADDING, ATTR_RESPONSE_PORT};
    use crate::stun::registry::{ATTR_SOFTWARE, METHOD_ALLOCATE};
    use proptest::prelude::*;

    /// RFC 5769's transaction ID.
    const TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    fn meta(src: &str) -> Meta {
        let src: SocketAddr = src.parse().unwrap();
        let local = if src.is_ipv4() { "192.0.2.10:3478" } else { "[2001:db8::10]:3478" };
        Meta { src, local: local.parse().unwrap(), now: 0 }
    }

    fn classic_on() -> HandlerConfig {
        HandlerConfig { rfc3489_classic: true, ..HandlerConfig::default() }
    }

    /// A request with the RFC 5769 transaction ID and the given raw attributes.
    fn request(message_type: u16, attrs: &[(u16, &[u8])], fingerprint: bool) -> ([u8; BUFFER_SIZE], usize) {
        let mut buf = [0u8; BUFFER_SIZE];
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&TID);
        let mut w = MessageWriter::new(&mut buf, MessageType::from_u16(message_type), &key).unwrap();
        for (t, v) in attrs {
            w.add_raw(*t, v).unwrap();
        }
        if fingerprint {
            w.add_fingerprint().unwrap();
        }
        let n = w.finish();
        (buf, n)
    }

    fn run(buf: &mut [u8], len: usize, m: &Meta, config: &HandlerConfig) -> (Action, Stats) {
        let mut stats = Stats::default();
        let action = handle(buf, len, m, config, &mut stats);
        (action, stats)
    }

    #[test]
    fn binding_answer_is_byte_exact() {
        let (mut buf, n) = request(0x0001, &[], false);
        let (action, stats) = run(&mut buf, n, &meta("192.0.2.1:32853"), &classic_on());
        assert_eq!(action, Action::Reply { len: 32, route: Route::BACK });
        // RFC 5769 §2.2's XOR-MAPPED-ADDRESS for 192.0.2.1:32853.
        let mut expected = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        expected.extend_from_slice(&TID);
        expected.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        assert_eq!(&buf[..32], &expected[..]);
        assert_eq!(stats.get(Counter::RequestsBinding), 1);
        assert_eq!(stats.get(Counter::ResponsesSuccess), 1);
    }

    #[test]
    fn binding_answer_ipv6_matches_rfc5769() {
        let (mut buf, n) = request(0x0001, &[], false);
        let m = meta("[2001:db8:1234:5678:11:2233:4455:6677]:32853");
        assert_eq!(run(&mut buf, n, &m, &classic_on()).0, Action::Reply { len: 44, route: Route::BACK });
        let value = [
            0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2,
            0xb9, 0xd9,
        ];
        assert_eq!(&buf[20..24], &[0x00, 0x20, 0x00, 0x14]);
        assert_eq!(&buf[24..44], &value);
    }

    #[test]
    fn fingerprint_software_and_origin() {
        let (mut buf, n) = request(0x0001, &[(ATTR_SOFTWARE, b"client")], true);
        let config = HandlerConfig {
            software: "edge".into(),
            response_origin: true,
            rfc3489_classic: true,
            auth: None,
            nat: None,
        };
        let m = meta("198.51.100.7:4000");
        let Action::Reply { len, .. } = run(&mut buf, n, &m, &config).0 else { panic!("no reply") };
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.message_type(), MessageType::BINDING_SUCCESS);
        assert_eq!(msg.transaction_id().0, TID);
        assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(m.src))));
        assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin(m.local))));
        assert_eq!(msg.get::<Software>(), Some(Ok(Software(b"edge"))));
        assert_eq!(check_fingerprint(&msg), Check::Valid);
        assert_eq!(len, 20 + 12 + 12 + 8 + 8);
    }

    #[test]
    fn no_fingerprint_unless_asked() {
        let (mut buf, n) = request(0x0001, &[], false);
        let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.1.1.1:1"), &classic_on()).0 else { panic!() };
        assert_eq!(check_fingerprint(&Message::parse(&buf[..len]).unwrap()), Check::Absent);
    }

    #[test]
    fn classic_request_gets_mapped_address() {
        let mut buf = [0u8; BUFFER_SIZE];
        buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]);
        buf[4..20].copy_from_slice(&[9; 16]);
        let config = HandlerConfig { response_origin: true, ..classic_on() };
        let (action, stats) = run(&mut buf, 20, &meta("192.0.2.1:32853"), &config);
        assert_eq!(action, Action::Reply { len: 44, route: Route::BACK });
        assert_eq!(&buf[..4], &[0x01, 0x01, 0x00, 0x18]);
        assert_eq!(&buf[4..20], &[9; 16], "the 128-bit classic transaction ID is kept");
        assert_eq!(&buf[20..32], &[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1]);
        assert_eq!(&buf[32..36], &[0x00, 0x04, 0x00, 0x08], "SOURCE-ADDRESS");
        assert_eq!(stats.get(Counter::RequestsClassic), 1);

        buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]);
        let (action, _) = run(&mut buf, 20, &meta("192.0.2.1:32853"), &HandlerConfig::default());
        assert_eq!(action, Action::Drop(DropReason::ClassicDisabled));
    }

    #[test]
    fn unknown_comprehension_required_gets_420() {
        let (mut buf, n) =
            request(0x0001, &[(0x0023, b"x"), (0x8050, b"optional"), (0x0023, b"again"), (0x7001, b"")], true);
        let (action, stats) = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on());
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.message_type(), MessageType::BINDING_ERROR);
        assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420);
        assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[0x0023, 0x7001]);
        assert_eq!(check_fingerprint(&msg), Check::Valid);
        assert_eq!(stats.get(Counter::Responses420), 1);
    }

    #[test]
    fn change_request_gets_420_without_an_alternate_address() {
        for flags in [[0, 0, 0, 0], [0, 0, 0, 4], [0, 0, 0, 6]] {
            let (mut buf, n) = request(0x0001, &[(ATTR_CHANGE_REQUEST, &flags)], false);
            let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
            let msg = Message::parse(&buf[..len]).unwrap();
            assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420, "{flags:?}");
            assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[ATTR_CHANGE_REQUEST]);
        }
        // An RFC 3489 classic request with an all-zero CHANGE-REQUEST asks for nothing: answered.
        let mut buf = [0u8; BUFFER_SIZE];
        buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
        buf[4..20].copy_from_slice(&[9; 16]);
        buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]);
        assert_eq!(
            run(&mut buf, 28, &meta("192.0.2.1:32853"), &classic_on()).0,
            Action::Reply { len: 32, route: Route::BACK }
        );
        // … but one asking for a change gets 420.
        buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
        buf[4..20].copy_from_slice(&[9; 16]);
        buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 2]);
        let Action::Reply { len, .. } = run(&mut buf, 28, &meta("192.0.2.1:32853"), &classic_on()).0 else { panic!() };
        assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 420);
    }

    /// A listener in RFC 5780 mode with role `role` of a group on 192.0.2.10/.11, ports 3478/3479.
    fn nat_on(role: u8) -> HandlerConfig {
        let addrs =
            ["192.0.2.10:3478", "192.0.2.11:3478", "192.0.2.10:3479", "192.0.2.11:3479"].map(|a| a.parse().unwrap());
        HandlerConfig { nat: Some(NatRole { addrs, listeners: [0, 5, 6, 7], role }), ..classic_on() }
    }

    fn nat_meta(role: u8) -> Meta {
        let local = nat_on(role).nat.unwrap().addrs[usize::from(role)];
        Meta { src: "198.51.100.7:4000".parse().unwrap(), local, now: 0 }
    }

    #[test]
    fn rfc5780_answers_carry_origin_other_and_both_mapped_addresses() {
        let (mut buf, n) = request(0x0001, &[], true);
        let (action, stats) = run(&mut buf, n, &nat_meta(0), &nat_on(0));
        let Action::Reply { len, route } = action else { panic!("{action:?}") };
        assert_eq!(route, Route::BACK, "no CHANGE-REQUEST: back the way it came");
        let msg = Message::parse(&buf[..len]).unwrap();
        let src: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(src))));
        assert_eq!(msg.get::<MappedAddress>(), Some(Ok(MappedAddress(src))));
        assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin("192.0.2.10:3478".parse().unwrap()))));
        assert_eq!(msg.get::<OtherAddress>(), Some(Ok(OtherAddress("192.0.2.11:3479".parse().unwrap()))));
        assert_eq!(check_fingerprint(&msg), Check::Valid);
        assert_eq!(len, 20 + 4 * 12 + 8, "68 bytes plus FINGERPRINT");
        assert_eq!(stats.get(Counter::DiscoveryChanged), 0);
    }

    #[test]
    fn rfc5780_change_request_picks_the_socket() {
        // (role received on, flags) → (listener index, RESPONSE-ORIGIN, OTHER-ADDRESS)
        let cases = [
            (0, 4, Some(5), "192.0.2.11:3478", "192.0.2.11:3479"),
            (0, 2, Some(6), "192.0.2.10:3479", "192.0.2.11:3479"),
            (0, 6, Some(7), "192.0.2.11:3479", "192.0.2.11:3479"),
            (0, 0, None, "192.0.2.10:3478", "192.0.2.11:3479"),
            (3, 4, Some(6), "192.0.2.10:3479", "192.0.2.10:3478"),
            (3, 6, Some(0), "192.0.2.10:3478", "192.0.2.10:3478"),
            (1, 2, Some(7), "192.0.2.11:3479", "192.0.2.10:3479"),
        ];
        for (role, flags, via, origin, other) in cases {
            let (mut buf, n) = request(0x0001, &[(ATTR_CHANGE_REQUEST, &[0, 0, 0, flags])], false);
            let (action, stats) = run(&mut buf, n, &nat_meta(role), &nat_on(role));
            let Action::Reply { len, route } = action else { panic!("{action:?}") };
            assert_eq!(route, Route::new(via, None), "role {role} flags {flags}");
            let msg = Message::parse(&buf[..len]).unwrap();
            assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin(origin.parse().unwrap()))));
            assert_eq!(msg.get::<OtherAddress>(), Some(Ok(OtherAddress(other.parse().unwrap()))));
            assert_eq!(stats.get(Counter::DiscoveryChanged), u64::from(via.is_some()));
        }
    }

    #[test]
    fn rfc5780_classic_request_gets_changed_and_source_address() {
        let mut buf = [0u8; BUFFER_SIZE];
        buf[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x08]);
        buf[4..20].copy_from_slice(&[9; 16]);
        buf[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
        let (action, _) = run(&mut buf, 28, &nat_meta(0), &nat_on(0));
        let Action::Reply { len, route } = action else { panic!("{action:?}") };
        assert_eq!(route.via(), Some(7));
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.get::<SourceAddress>(), Some(Ok(SourceAddress("192.0.2.11:3479".parse().unwrap()))));
        assert_eq!(msg.get::<ChangedAddress>(), Some(Ok(ChangedAddress("192.0.2.11:3479".parse().unwrap()))));
        assert!(msg.get::<XorMappedAddress>().is_none(), "classic clients get MAPPED-ADDRESS only");
        assert!(msg.get::<MappedAddress>().is_some());
    }

    #[test]
    fn rfc5780_response_port_and_padding() {
        let (mut buf, n) = request(0x0001, &[(ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0])], false);
        let (action, stats) = run(&mut buf, n, &nat_meta(0), &nat_on(0));
        let Action::Reply { route, .. } = action else { panic!("{action:?}") };
        assert_eq!((route.via(), route.port()), (None, Some(5000)));
        assert_eq!(stats.get(Counter::DiscoveryResponsePort), 1);

        // PADDING: the answer is padded, but never past the request's size (a small request
        // gets no PADDING at all: the unpadded answer is already larger).
        for (asked, expect_padding) in [(400usize, true), (4, false), (0, false)] {
            let value = vec![0u8; asked];
            let (mut buf, n) = request(0x0001, &[(ATTR_PADDING, &value)], true);
            let (action, stats) = run(&mut buf, n, &nat_meta(0), &nat_on(0));
            let Action::Reply { len, .. } = action else { panic!("{action:?}") };
            let msg = Message::parse(&buf[..len]).unwrap();
            assert_eq!(check_fingerprint(&msg), Check::Valid);
            let padding = msg.attributes().find(|a| a.attr_type == ATTR_PADDING);
            assert_eq!(padding.is_some(), expect_padding, "asked {asked}");
            assert_eq!(stats.get(Counter::DiscoveryPadded), u64::from(expect_padding));
            if let Some(p) = padding {
                assert!(len <= n, "padded answer {len} bytes > request {n} bytes");
                assert!(p.value.len() <= asked && p.value.len() % 4 == 0);
                assert!(len + 4 > n, "padded as far as the request's size allows ({len} of {n})");
            }
        }

        // PADDING with RESPONSE-PORT, or malformed values: 400 (RFC 5780 §6.1).
        let bad: [&[(u16, &[u8])]; 4] = [
            &[(ATTR_PADDING, &[0; 8]), (ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0])],
            &[(ATTR_CHANGE_REQUEST, &[0, 4])],
            &[(ATTR_RESPONSE_PORT, &[0x13, 0x88])],
            &[(ATTR_RESPONSE_PORT, &[0, 0, 0, 0])],
        ];
        for attrs in bad {
            let (mut buf, n) = request(0x0001, attrs, false);
            let (action, stats) = run(&mut buf, n, &nat_meta(0), &nat_on(0));
            let Action::Reply { len, route } = action else { panic!("{action:?}") };
            assert_eq!(route, Route::BACK);
            assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
            assert_eq!(stats.get(Counter::Responses400), 1);
        }
    }

    #[test]
    fn routes_pack_and_unpack() {
        for via in [None, Some(0), Some(1), Some(7), Some(65534)] {
            for port in [None, Some(1), Some(3478), Some(65535)] {
                let r = Route::new(via, port);
                assert_eq!((r.via(), r.port()), (via, port));
            }
        }
        assert_eq!(Route::default(), Route::BACK);
        assert_eq!(std::mem::size_of::<Action>(), 16, "two registers: returned without memory");
    }

    #[test]
    fn rfc5780_attributes_get_420_outside_rfc5780_mode() {
        for (t, v) in [(ATTR_RESPONSE_PORT, &[0x13, 0x88, 0, 0][..]), (ATTR_PADDING, &[0; 8][..])] {
            let (mut buf, n) = request(0x0001, &[(t, v)], false);
            let Action::Reply { len, route } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
            assert_eq!(route, Route::BACK);
            let msg = Message::parse(&buf[..len]).unwrap();
            assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code, 420);
            assert_eq!(msg.get::<UnknownAttributes>().unwrap().unwrap().types(), &[t]);
        }
    }

    #[test]
    fn unknown_optional_and_known_required_are_fine() {
        let (mut buf, n) = request(0x0001, &[(0x8050, b"x"), (0x0024, &[0, 0, 0, 1]), (0x0025, b"")], false);
        assert!(matches!(run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0, Action::Reply { len: 32, .. }));
    }

    #[test]
    fn unknown_after_integrity_is_ignored() {
        let (mut buf, n) = request(0x0001, &[(0x0008, &[0; 20]), (0x0023, b"late")], false);
        assert_eq!(
            run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0,
            Action::Reply { len: 32, route: Route::BACK }
        );
    }

    #[test]
    fn too_many_unknown_gets_400() {
        let types: Vec<u16> = (0..=MAX_UNKNOWN as u16).map(|i| 0x7000 + i).collect();
        let attrs: Vec<(u16, &[u8])> = types.iter().map(|t| (*t, &b""[..])).collect();
        let (mut buf, n) = request(0x0001, &attrs, false);
        let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
        assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
    }

    #[test]
    fn other_methods_get_400() {
        let (mut buf, n) = request(MessageType::new(METHOD_ALLOCATE, Class::Request).to_u16(), &[], false);
        let (action, stats) = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on());
        let Action::Reply { len, .. } = action else { panic!() };
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.message_type(), MessageType::new(METHOD_ALLOCATE, Class::ErrorResponse));
        assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap(), ErrorCode { code: 400, reason: "Bad Request" });
        assert_eq!(stats.get(Counter::RequestsOther), 1);
        assert_eq!(stats.get(Counter::Responses400), 1);
    }

    #[test]
    fn broken_attributes_get_400() {
        let (mut buf, n) = request(0x0001, &[(ATTR_SOFTWARE, b"abcdefgh")], false);
        buf[23] = 200; // SOFTWARE length runs past the message
        let Action::Reply { len, .. } = run(&mut buf, n, &meta("10.0.0.1:9"), &classic_on()).0 else { panic!() };
        assert_eq!(Message::parse(&buf[..len]).unwrap().get::<ErrorCode>().unwrap().unwrap().code, 400);
    }

    #[test]
    fn drops_are_named() {
        let m = meta("10.0.0.1:9");
        // A request of the given type and attributes, then changed by `edit`.
        let edited = |message_type: u16, attrs: &[(u16, &[u8])], fp: bool, edit: fn(&mut Vec<u8>)| {
            let (b, n) = request(message_type, attrs, fp);
            let mut v = b[..n].to_vec();
            edit(&mut v);
            v
        };
        let keep: fn(&mut Vec<u8>) = |_| {};
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (vec![0; 19], DropReason::TooShort),
            (edited(0x0001, &[], false, |v| v[0] = 0x80), DropReason::NotStun),
            (edited(0x0001, &[], false, |v| v.push(0)), DropReason::BadLength),
            (edited(0x0001, &[], false, |v| v[3] = 2), DropReason::BadLength),
            (edited(0x0011, &[], false, keep), DropReason::BindingIndication),
            (edited(0x0016, &[], false, keep), DropReason::Indication),
            (edited(0x0101, &[], false, keep), DropReason::Response),
            (edited(0x0111, &[], false, keep), DropReason::Response),
            (edited(0x0001, &[], true, |v| *v.last_mut().unwrap() ^= 1), DropReason::BadFingerprint),
            (
                edited(0x0001, &[(ATTR_FINGERPRINT, &[0; 4]), (ATTR_SOFTWARE, b"x")], false, keep),
                DropReason::BadFingerprint,
            ),
            (vec![0; MAX_REQUEST + 4], DropReason::Truncated),
        ];
        for (bytes, reason) in cases {
            let mut buf = vec![0u8; BUFFER_SIZE.max(bytes.len())];
            buf[..bytes.len()].copy_from_slice(&bytes);
            let (action, stats) = run(&mut buf, bytes.len(), &m, &classic_on());
            assert_eq!(action, Action::Drop(reason), "{bytes:02x?}");
            assert_eq!(stats.drops(reason), 1);
            assert_eq!(stats.get(Counter::ResponsesSuccess), 0);
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_replies_parse(bytes in proptest::collection::vec(any::<u8>(), 0..600), force_cookie: bool) {
            let mut buf = [0u8; BUFFER_SIZE];
            buf[..bytes.len()].copy_from_slice(&bytes);
            if force_cookie && bytes.len() >= 20 {
                buf[..2].copy_from_slice(&[0, 1]);
                buf[2..4].copy_from_slice(&(((bytes.len() - 20) & !3) as u16).to_be_bytes());
                buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let len = if force_cookie && bytes.len() >= 20 { 20 + ((bytes.len() - 20) & !3) } else { bytes.len() };
            let (action, _) = run(&mut buf, len, &meta("[::1]:5"), &classic_on());
            if let Action::Reply { len, .. } = action {
                let msg = Message::parse(&buf[..len]).expect("replies are well-formed");
                prop_assert!(matches!(msg.message_type().class, Class::SuccessResponse | Class::ErrorResponse));
            }
        }

        #[test]
        fn any_binding_request_round_trips(port: u16, ip: [u8; 4], tid: [u8; 12], fp: bool, sw in "[a-z]{0,20}") {
            let mut buf = [0u8; BUFFER_SIZE];
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(&tid);
            let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &key).unwrap();
            w.add(&Software(sw.as_bytes())).unwrap();
            if fp { w.add_fingerprint().unwrap(); }
            let n = w.finish();
            let src = SocketAddr::from((ip, port));
            let m = Meta { src, local: "10.0.0.1:3478".parse().unwrap(), now: 0 };
            let (action, _) = run(&mut buf, n, &m, &classic_on());
            let Action::Reply { len, .. } = action else { panic!("{action:?}") };
            let msg = Message::parse(&buf[..len]).unwrap();
            prop_assert_eq!(msg.transaction_id().0, tid);
            prop_assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(src))));
            prop_assert_eq!(check_fingerprint(&msg) == Check::Valid, fp);
        }
    }
}
