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
//! - RFC 5780 mode (an [`Rfc5780Role`] on the listener): Binding answers carry XOR-MAPPED-ADDRESS,
//!   MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS (classic: MAPPED-ADDRESS, SOURCE-ADDRESS,
//!   CHANGED-ADDRESS); CHANGE-REQUEST picks the socket the answer leaves from and RESPONSE-PORT
//!   the port it goes to ([`Route`]); PADDING pads the answer, never past the request's size;
//!   PADDING with RESPONSE-PORT, a malformed CHANGE-REQUEST or RESPONSE-PORT, or a RESPONSE-PORT
//!   of 0, is 400.
//! - TURN on a listener that balances (`[turn_lb]`, `turn.rs`): Allocate → 300 (Try Alternate)
//!   to the client's backend, or 508 when none is up; Refresh, CreatePermission, ChannelBind →
//!   437; Send indications and ChannelData dropped. Checked before the listener's own
//!   authentication: the balancer has its own (none, or long-term with a signed 300).
//! - Broken attribute framing, other methods (TURN where nothing balances, and the rest), or
//!   more than [`MAX_UNKNOWN`] distinct unknown attributes → 400.
//! - Anything else is dropped and counted under a [`DropReason`]: too short, not STUN, bad
//!   length, classic when disabled, bad FINGERPRINT, indications, responses.

//!
//! Layout: this file is the entry point and the order of the checks; `gather` walks the
//! attributes once; `respond` writes the answers; `rfc5780` is NAT behaviour discovery;
//! `listener` is the per-listener configuration; `turn` the TURN balancer's answers. Every
//! answer passes the reflection defence in `respond::reply`.
//!
//! Must not touch sockets, threads, clocks or the allocator: the time is [`Meta::now`].

mod gather;
mod listener;
mod respond;
mod rfc5780;
#[cfg(test)]
mod tests;
mod turn;

use std::net::SocketAddr;

pub use self::listener::{HandlerConfig, ListenerAuth, Rfc5780Role, Role};
pub use crate::counters::DropReason;
pub use crate::io::BUFFER_SIZE;

use self::gather::Gathered;
use self::respond::{Request, Stale, bad_request, binding_success, challenge, error, reply};
use crate::auth::{Mechanism, Verdict};
use crate::counters::{Counter, Stats};
use crate::stun::attr::MAX_UNKNOWN;
use crate::stun::header::is_classic;
use crate::stun::message::{ParseError, check_header};
use crate::stun::registry::{ERR_UNKNOWN_ATTRIBUTE, METHOD_BINDING};
use crate::stun::{Class, Message};

/// The largest request answered: the whole buffer. The answer is written over the request
/// from its first byte and is bounded on its own (see the assertion at the end of this file),
/// so a request of any size up to the buffer leaves room for it. RFC 5780 clients pad requests
/// past the MTU on purpose (coturn's `turnutils_natdiscovery -P` sends 1524 bytes).
pub const MAX_REQUEST: usize = BUFFER_SIZE;

impl From<ParseError> for DropReason {
    /// The drop reason of a header fault. An attribute overrun in a message whose header is
    /// valid is a length that disagrees with the datagram too, but a request with one is
    /// answered 400 (RFC 8489 §6.3) before this mapping is asked.
    fn from(e: ParseError) -> DropReason {
        match e {
            ParseError::TooShort => DropReason::TooShort,
            ParseError::NotStun => DropReason::NotStun,
            ParseError::UnalignedLength | ParseError::LengthMismatch | ParseError::AttributeOverrun => {
                DropReason::BadLength
            }
        }
    }
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
    /// A monotonic millisecond clock shared by all workers (the rate limit's time), read once
    /// per batch.
    pub clock_ms: u64,
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

/// The checks in order: size, header, class; the attribute walk; then (RFC 8489 §6.3)
/// authentication, unknown attributes, the method; then the answer.
fn decide(buf: &mut [u8], len: usize, meta: &Meta, config: &HandlerConfig, stats: &mut Stats) -> Action {
    if len > MAX_REQUEST || len > buf.len() {
        return Action::Drop(DropReason::Truncated);
    }
    // The deny list and bogon sources: dropped before anything is parsed.
    if let Some(reason) = config.limit.denied(meta.src, meta.local) {
        return Action::Drop(reason);
    }
    let datagram = &buf[..len];
    let message_type = match check_header(datagram) {
        Ok(t) => t,
        Err(e) => return Action::Drop(turn::not_stun(e, datagram, config)),
    };
    let classic = is_classic(datagram);
    if classic && !config.rfc3489_classic {
        return Action::Drop(DropReason::ClassicDisabled);
    }
    match (message_type.class, message_type.method) {
        (Class::Request, _) => {}
        (Class::Indication, METHOD_BINDING) => return Action::Drop(DropReason::BindingIndication),
        (Class::Indication, method) => return Action::Drop(turn::indication(method, config)),
        (Class::SuccessResponse | Class::ErrorResponse, _) => return Action::Drop(DropReason::Response),
    }
    stats.bump(if message_type.method == METHOD_BINDING { Counter::RequestsBinding } else { Counter::RequestsOther });
    if classic {
        stats.bump(Counter::RequestsClassic);
    }

    // The transaction ID (classic: all 16 bytes after the type and length), folded.
    let word = |at: usize| u64::from_be_bytes(datagram[at..at + 8].try_into().unwrap_or_default());
    let draw = word(4) ^ word(12).rotate_left(32);
    let mut request =
        Request { method: message_type.method, classic, len, fingerprint: false, signer: None, routable: false, draw };
    if let (false, false, Some(lb)) = (request.method == METHOD_BINDING, classic, &config.turn) {
        // TURN on a balancing listener: its own authentication, before the listener's.
        return turn::answer(buf, len, request.method, draw, lb, meta, config, stats);
    }
    let Ok(message) = Message::parse(datagram) else {
        // The header is valid, the attributes are not: RFC 8489 §6.3 says 400.
        return bad_request(buf, &request, meta, config, stats);
    };
    let mut gathered = Gathered::default();
    if let Err(reason) = gathered.walk(&message, classic, config.auth.is_some(), config) {
        return Action::Drop(reason);
    }
    request.fingerprint = gathered.fingerprint;

    // RFC 8489 §6.3: authentication first, then unknown attributes, then the method.
    if let (Some(auth), Some(presented)) = (&config.auth, &gathered.presented) {
        let verdict = auth.authenticator.verify(auth.mechanism, auth.policy, presented, datagram, meta.src, meta.now);
        match verdict {
            Verdict::Anonymous => {}
            Verdict::Authenticated(signer) => {
                stats.bump(Counter::RequestsAuthenticated);
                request.signer = Some(signer);
                // A long-term request authenticates with a valid nonce bound to its source.
                request.routable = auth.mechanism == Mechanism::LongTerm;
            }
            Verdict::BadRequest => return bad_request(buf, &request, meta, config, stats),
            Verdict::Unauthenticated => {
                return challenge(buf, &request, Stale::No, (auth.mechanism, &auth.authenticator), meta, config, stats);
            }
            Verdict::StaleNonce(signer) => {
                request.signer = Some(signer);
                return challenge(
                    buf,
                    &request,
                    Stale::Yes,
                    (auth.mechanism, &auth.authenticator),
                    meta,
                    config,
                    stats,
                );
            }
        }
    }

    if gathered.too_many_unknown {
        // More than MAX_UNKNOWN distinct unknown types: a 420 could not list them all.
        return bad_request(buf, &request, meta, config, stats);
    }
    if let Some(unknown) = &gathered.unknown {
        return reply(buf, &request, meta, config, stats, Counter::Responses420, |b, trim| {
            error(b, &request, ERR_UNKNOWN_ATTRIBUTE, "Unknown Attribute", Some(unknown), config, trim)
        });
    }
    if request.method != METHOD_BINDING {
        return bad_request(buf, &request, meta, config, stats);
    }
    if let (Some(group), Some(asked)) = (&config.rfc5780, &gathered.rfc5780) {
        return rfc5780::success(buf, &request, asked, group, meta, config, stats);
    }
    reply(buf, &request, meta, config, stats, Counter::ResponsesSuccess, |b, trim| {
        binding_success(b, &request, meta, config, trim)
    })
}

// The largest answer: header, XOR-MAPPED-ADDRESS and RESPONSE-ORIGIN for IPv6 (24 each), the
// longest SOFTWARE, FINGERPRINT; or an error with a 420 list. It must fit any receive buffer.
const _: () =
    assert!(20 + 24 + 24 + 4 + crate::stun::attr::MAX_TEXT + 8 + 4 + 4 + 24 + 4 + 2 * MAX_UNKNOWN <= BUFFER_SIZE);
