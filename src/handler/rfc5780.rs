//! RFC 5780 NAT behaviour discovery in the decision: what a request asks for
//! ([`Rfc5780Request`]: CHANGE-REQUEST, RESPONSE-PORT, PADDING, gathered only on listeners in
//! RFC 5780 mode) and the answer (§6.1): sent from the socket CHANGE-REQUEST picks, to the port
//! RESPONSE-PORT names, with both mapped-address forms, RESPONSE-ORIGIN and OTHER-ADDRESS,
//! PADDING-ed up to the request's size at most. Cold: kept out of the plain Binding path.

use std::cell::Cell;

use super::listener::{HandlerConfig, Rfc5780Role, Role};
use super::respond::{Request, bad_request, finish, finish_len, reply};
use super::{Action, MAX_REQUEST, Meta, Route};
use crate::counters::{Counter, Stats};
use crate::stun::attr::{
    Attribute, ChangeRequest, ChangedAddress, MappedAddress, OtherAddress, ResponseOrigin, ResponsePort, SourceAddress,
    XorMappedAddress,
};
use crate::stun::registry::{ATTR_CHANGE_REQUEST, ATTR_PADDING, ATTR_RESPONSE_PORT};
use crate::stun::{MessageType, MessageWriter};

/// What an RFC 5780 request asks for.
#[derive(Debug, Default)]
pub(super) struct Rfc5780Request {
    /// The IP address and port to flip ("change IP", "change port").
    change: Role,
    response_port: Option<u16>,
    /// The PADDING value's length.
    padding: Option<usize>,
    /// A CHANGE-REQUEST or RESPONSE-PORT of the wrong length, or a RESPONSE-PORT of 0.
    malformed: bool,
}

impl Rfc5780Request {
    /// Records one of CHANGE-REQUEST, RESPONSE-PORT or PADDING.
    pub(super) fn offer(&mut self, attr_type: u16, value: &[u8]) {
        let key = [0; 16]; // none of the three is XOR-ed
        match attr_type {
            ATTR_CHANGE_REQUEST => match ChangeRequest::decode(value, &key) {
                Ok(c) => self.change = Role::new(c.change_ip, c.change_port),
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

/// A Binding success in RFC 5780 mode (§6.1). PADDING with RESPONSE-PORT, or a malformed
/// CHANGE-REQUEST or RESPONSE-PORT, is 400.
#[cold]
#[inline(never)]
pub(super) fn success(
    buf: &mut [u8],
    request: &Request<'_>,
    asked: &Rfc5780Request,
    group: &Rfc5780Role,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    if asked.malformed || (asked.padding.is_some() && asked.response_port.is_some()) {
        return bad_request(buf, request, meta, config, stats);
    }
    let target = group.role.changed(asked.change);
    let origin = group.addrs[target.index()];
    let other = group.other();
    // Whether the answer as last written was padded. A leak, or an answer over the cap, loses
    // SOFTWARE but never the RFC 5780 attributes or its route: a NAT discovery client reads
    // both (an answer from the wrong address, or without OTHER-ADDRESS, would mislead it), so
    // one that does not fit even so is dropped.
    let padded = Cell::new(false);
    let action = reply(buf, request, meta, config, stats, Counter::ResponsesSuccess, |b, trim| {
        padded.set(false);
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
        if let Some(wanted) = asked.padding {
            // Never larger than the request: room left after the PADDING header and the tail.
            let room = request.len.saturating_sub(w.len() + 4 + finish_len(request, config, trim));
            let pad = wanted.min(room) & !3;
            if pad > 0 {
                w.add_raw(ATTR_PADDING, &ZEROS[..pad])?;
                padded.set(true);
            }
        }
        finish(w, request, config, trim)
    });
    let Action::Reply { len, .. } = action else { return action };
    let via = (asked.change != Role::PRIMARY).then(|| group.listeners[target.index()]);
    if padded.get() {
        stats.bump(Counter::Rfc5780Padded);
    }
    if via.is_some() {
        stats.bump(Counter::Rfc5780Changed);
    }
    if asked.response_port.is_some() {
        stats.bump(Counter::Rfc5780ResponsePort);
    }
    Action::Reply { len, route: Route::new(via, asked.response_port) }
}

/// PADDING's source of zeros: no answer is padded past the largest request.
static ZEROS: [u8; MAX_REQUEST] = [0; MAX_REQUEST];
