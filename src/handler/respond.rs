//! The answers, written in place over the request: Binding success, 400, 420 and the 401/438
//! challenges, each ending with the same tail ([`finish`]: SOFTWARE, the integrity attribute,
//! FINGERPRINT). Error answers are `#[cold]` so that the Binding path keeps its inlining.

use super::listener::HandlerConfig;
use super::{Action, Meta, Route};
use crate::auth::{Authenticator, Mechanism, Signer};
use crate::counters::{AnswerClass, Counter, DropReason, LimitAction, Stats};
use crate::limit::family;
use crate::stun::attr::{
    MappedAddress, Nonce, Realm, ResponseOrigin, Software, SourceAddress, UnknownAttributes, XorMappedAddress,
};
use crate::stun::registry::{ATTR_PASSWORD_ALGORITHMS, ERR_BAD_REQUEST, ERR_STALE_NONCE, ERR_UNAUTHENTICATED};
use crate::stun::{Class, MessageType, MessageWriter, WriteError};

/// What the request needs from the response, read before the response overwrites it.
pub(super) struct Request<'s> {
    pub(super) method: u16,
    pub(super) classic: bool,
    /// The request's length: the cap on a PADDING-ed answer.
    pub(super) len: usize,
    /// The request carried a (valid) FINGERPRINT, so the answer carries one too.
    pub(super) fingerprint: bool,
    /// The request authenticated: every answer is signed with its key.
    pub(super) signer: Option<Signer<'s>>,
    /// The request proved it can receive at its source: it authenticated with a valid
    /// long-term nonce, which is bound to the source address (RFC 8489 §9.2).
    pub(super) routable: bool,
    /// Bits of the transaction ID, for the rate limit's leak draw (read before the answer
    /// overwrites them).
    pub(super) draw: u64,
}

/// What an answer leaves out to fit the amplification cap, or because it is a leak: first
/// SOFTWARE (and error reason phrases), then everything optional (RESPONSE-ORIGIN; RFC 5780
/// answers keep their attributes and route: they lose SOFTWARE only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Trim {
    None,
    Software,
    All,
}

/// Answers with `write` (given how much to trim), counted under `counter`, after the
/// reflection defence has had its say: the response rate limit of the answer's class and
/// destination prefix (pass, leak a minimal answer, or drop), then the amplification cap (trim
/// optional attributes until the answer fits, else drop). Counts the decision and the bytes in
/// and out. An answer that does not fit the buffer is dropped (it cannot happen: see the
/// bound at the end of `handler/mod.rs`).
#[inline(always)]
pub(super) fn reply(
    buf: &mut [u8],
    request: &Request<'_>,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
    counter: Counter,
    write: impl Fn(&mut [u8], Trim) -> Result<usize, WriteError>,
) -> Action {
    let class = if counter == Counter::ResponsesSuccess { AnswerClass::Success } else { AnswerClass::Error };
    let family = family(meta.src.ip());
    let limit = &config.limit;
    let decision = limit.decide(class, meta.src.ip(), request.routable, meta.clock_ms, request.draw);
    if limit.enabled() {
        stats.limit_decision(family, class, decision.action, decision.level);
        if decision.log {
            stats.sample_limited(meta.src.ip(), decision.level, class);
        }
    }
    let trim = match decision.action {
        LimitAction::Drop => {
            stats.class_bytes(family, class, request.len, 0);
            return Action::Drop(DropReason::RateLimited);
        }
        LimitAction::Leak => Trim::All,
        _ => Trim::None,
    };
    let room = limit.room(request.len, family, config.rfc5780.is_some());
    let len = match write(buf, trim) {
        Ok(len) if len <= room => len,
        Ok(_) => match trim_to_fit(buf, &write, trim, room) {
            Ok(len) => {
                stats.trimmed(family, class);
                len
            }
            Err(reason) => {
                stats.class_bytes(family, class, request.len, 0);
                return Action::Drop(reason);
            }
        },
        Err(_) => return Action::Drop(DropReason::ResponseTooLarge),
    };
    stats.bump(counter);
    stats.class_bytes(family, class, request.len, len);
    Action::Reply { len, route: Route::BACK }
}

/// Writes the answer again with more left out until it fits `room`: SOFTWARE (and reason
/// phrases), then everything optional; the answer's length, or why it is dropped. Cold: an
/// answer over the cap is a configuration worth a `check-config` warning, or an attack.
#[cold]
#[inline(never)]
fn trim_to_fit(
    buf: &mut [u8],
    write: &impl Fn(&mut [u8], Trim) -> Result<usize, WriteError>,
    mut trim: Trim,
    room: usize,
) -> Result<usize, DropReason> {
    while trim != Trim::All {
        trim = if trim == Trim::None { Trim::Software } else { Trim::All };
        match write(buf, trim) {
            Ok(len) if len <= room => return Ok(len),
            Ok(_) => {}
            Err(_) => return Err(DropReason::ResponseTooLarge),
        }
    }
    Err(DropReason::AmplificationCap)
}

/// The Binding success outside RFC 5780 mode: XOR-MAPPED-ADDRESS (classic: MAPPED-ADDRESS) and,
/// when configured, RESPONSE-ORIGIN (classic: SOURCE-ADDRESS).
#[inline(always)]
pub(super) fn binding_success(
    buf: &mut [u8],
    request: &Request<'_>,
    meta: &Meta,
    config: &HandlerConfig,
    trim: Trim,
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::over(buf, MessageType::BINDING_SUCCESS)?;
    let origin = config.response_origin && trim < Trim::All;
    if request.classic {
        // RFC 3489 §11.2.1: classic clients read MAPPED-ADDRESS (no XOR).
        w.add(&MappedAddress(meta.src))?;
        if origin {
            w.add(&SourceAddress(meta.local))?;
        }
    } else {
        w.add(&XorMappedAddress(meta.src))?;
        if origin {
            w.add(&ResponseOrigin(meta.local))?;
        }
    }
    finish(w, request, config, trim)
}

/// An error response with `code` and `reason` (left out when trimming), and the 420's
/// UNKNOWN-ATTRIBUTES.
pub(super) fn error(
    buf: &mut [u8],
    request: &Request<'_>,
    code: u16,
    reason: &str,
    unknown: Option<&UnknownAttributes>,
    config: &HandlerConfig,
    trim: Trim,
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::over(buf, MessageType::new(request.method, Class::ErrorResponse))?;
    w.add_error(code, if trim == Trim::None { reason } else { "" })?;
    if let Some(unknown) = unknown {
        w.add(unknown)?;
    }
    finish(w, request, config, trim)
}

/// 400 Bad Request: broken attribute framing, a method this edge does not serve, or more
/// unknown attributes than a 420 can list. Cold: kept out of the Binding path's code.
#[cold]
#[inline(never)]
pub(super) fn bad_request(
    buf: &mut [u8],
    request: &Request<'_>,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    reply(buf, request, meta, config, stats, Counter::Responses400, |b, trim| {
        error(b, request, ERR_BAD_REQUEST, "Bad Request", None, config, trim)
    })
}

/// Which challenge: 438 for a request that authenticated with a nonce no longer valid, 401
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stale {
    Yes,
    No,
}

/// 401 (no or wrong credentials) or, when the request authenticated with an expired nonce, 438
/// signed with its key (RFC 8489 §9.2.4). Long-term challenges carry REALM, a fresh NONCE and
/// PASSWORD-ALGORITHMS; short-term 401s carry nothing more (§9.1.3). The reason phrase is empty:
/// every byte of a challenge is a byte of reflection.
#[cold]
#[inline(never)]
pub(super) fn challenge(
    buf: &mut [u8],
    request: &Request<'_>,
    stale: Stale,
    (mechanism, authenticator): (Mechanism, &Authenticator),
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    let (code, counter) = match stale {
        Stale::Yes => (ERR_STALE_NONCE, Counter::Responses438),
        Stale::No => (ERR_UNAUTHENTICATED, Counter::Responses401),
    };
    reply(buf, request, meta, config, stats, counter, |b, trim| {
        let mut w = MessageWriter::over(b, MessageType::new(request.method, Class::ErrorResponse))?;
        w.add_error(code, "")?;
        if mechanism == Mechanism::LongTerm {
            w.add(&Realm(authenticator.realm()))?;
            w.add(&Nonce(&authenticator.nonce_for(meta.src, meta.now)))?;
            if let Some(algorithms) = authenticator.password_algorithms() {
                w.add_raw(ATTR_PASSWORD_ALGORITHMS, algorithms)?;
            }
        }
        finish(w, request, config, trim)
    })
}

/// SOFTWARE when configured (and not trimmed), the integrity attribute when the request
/// authenticated, FINGERPRINT when the request had one (RFC 8489 §7.3.1: a server that receives
/// FINGERPRINT includes it), then the length.
#[inline(always)]
pub(super) fn finish(
    mut w: MessageWriter<'_>,
    request: &Request<'_>,
    config: &HandlerConfig,
    trim: Trim,
) -> Result<usize, WriteError> {
    if !config.software.is_empty() && trim == Trim::None {
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

/// The bytes [`finish`] will add.
pub(super) fn finish_len(request: &Request<'_>, config: &HandlerConfig, trim: Trim) -> usize {
    let software = if config.software.is_empty() || trim != Trim::None {
        0
    } else {
        4 + config.software.len().next_multiple_of(4)
    };
    let integrity = request.signer.as_ref().map_or(0, Signer::attribute_len);
    let fingerprint = if request.fingerprint { 8 } else { 0 };
    software + integrity + fingerprint
}
