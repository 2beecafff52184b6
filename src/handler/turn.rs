//! TURN requests on a balancing listener (`[turn_lb]`, RFC 8656 §7.2, RFC 8489 §10): an
//! Allocate is answered with 300 (Try Alternate) naming the client's backend in
//! ALTERNATE-SERVER (and that backend's address of the other family), or 508 / nothing when no
//! backend of its family is up; Refresh, CreatePermission and ChannelBind get 437 (Allocation
//! Mismatch: this server holds no allocation); other methods 400. In long-term mode an Allocate
//! is challenged first and the 300 is signed (RFC 8489 §14.8). Every answer goes through
//! [`reply`]: the error class's rate limit and the amplification cap (which drops the second
//! ALTERNATE-SERVER first). Cold: Binding never comes here.

use super::gather::Gathered;
use super::listener::HandlerConfig;
use super::respond::{Request, Stale, Trim, bad_request, challenge, error, finish, reply};
use super::{Action, Meta};
use crate::auth::{Mechanism, Policy, Verdict};
use crate::counters::{Counter, DropReason, Stats};
use crate::lb::{Balancer, NoBackend, Redirect};
use crate::stun::attr::AlternateServer;
use crate::stun::message::ParseError;
use crate::stun::registry::{
    ERR_ALLOCATION_MISMATCH, ERR_INSUFFICIENT_CAPACITY, ERR_TRY_ALTERNATE, ERR_UNKNOWN_ATTRIBUTE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
};
use crate::stun::{Class, Message, MessageType, MessageWriter, WriteError};

/// Why a datagram whose header is not STUN is dropped: on a balancing listener, a TURN
/// ChannelData header (channel numbers 0x4000..=0x4FFF, RFC 8656 §12) is `channel_data`;
/// otherwise the header fault's reason.
#[cold]
#[inline(never)]
pub(super) fn not_stun(fault: ParseError, datagram: &[u8], config: &HandlerConfig) -> DropReason {
    if config.turn.is_some() && datagram.len() >= 4 && datagram[0] & 0xF0 == 0x40 {
        DropReason::ChannelData
    } else {
        fault.into()
    }
}

/// Why an indication of `method` is dropped: a Send indication on a balancing listener is
/// `turn_send`, a Binding indication (a keepalive) `binding_indication`, any other `indication`.
#[cold]
#[inline(never)]
pub(super) fn indication(method: u16, config: &HandlerConfig) -> DropReason {
    match method {
        METHOD_BINDING => DropReason::BindingIndication,
        METHOD_SEND if config.turn.is_some() => DropReason::TurnSend,
        _ => DropReason::Indication,
    }
}

/// Answers the TURN request `buf[..len]` (a request of `method`, not Binding, with the magic
/// cookie; `draw` its rate-limit leak draw) on a listener that balances with `lb`.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn answer(
    buf: &mut [u8],
    len: usize,
    method: u16,
    draw: u64,
    lb: &Balancer,
    meta: &Meta,
    config: &HandlerConfig,
    stats: &mut Stats,
) -> Action {
    let mut request = Request { method, classic: false, len, fingerprint: false, signer: None, routable: false, draw };
    let datagram = &buf[..len];
    let Ok(message) = Message::parse(datagram) else {
        return bad_request(buf, &request, meta, config, stats);
    };
    let allocate = request.method == METHOD_ALLOCATE;
    let mut gathered = Gathered::default();
    if let Err(reason) = gathered.walk(&message, false, allocate && lb.auth.is_some(), config) {
        return Action::Drop(reason);
    }
    request.fingerprint = gathered.fingerprint;
    // RFC 8489 §6.3: authentication first (Allocates only: nothing else is served here).
    if let (true, Some(authenticator), Some(presented)) = (allocate, &lb.auth, &gathered.presented) {
        let by = (Mechanism::LongTerm, &**authenticator);
        match authenticator.verify(Mechanism::LongTerm, Policy::Required, presented, datagram, meta.src, meta.now) {
            Verdict::Authenticated(signer) => {
                stats.bump(Counter::RequestsAuthenticated);
                request.signer = Some(signer);
                request.routable = true;
            }
            Verdict::Anonymous | Verdict::Unauthenticated => {
                return challenge(buf, &request, Stale::No, by, meta, config, stats);
            }
            Verdict::BadRequest => return bad_request(buf, &request, meta, config, stats),
            Verdict::StaleNonce(signer) => {
                request.signer = Some(signer);
                return challenge(buf, &request, Stale::Yes, by, meta, config, stats);
            }
        }
    }
    if gathered.too_many_unknown {
        return bad_request(buf, &request, meta, config, stats);
    }
    if let Some(unknown) = &gathered.unknown {
        return reply(buf, &request, meta, config, stats, Counter::Responses420, |b, trim| {
            error(b, &request, ERR_UNKNOWN_ATTRIBUTE, "Unknown Attribute", Some(unknown), config, trim)
        });
    }
    match request.method {
        METHOD_ALLOCATE => match lb.redirect_over(meta.src, config.transport) {
            Some(to) => {
                let action = reply(buf, &request, meta, config, stats, Counter::Responses300, |b, trim| {
                    try_alternate(b, &request, &to, config, trim)
                });
                if let Action::Reply { .. } = action {
                    lb.state.entries[to.index].count_redirect();
                }
                action
            }
            None if lb.on_no_backend == NoBackend::Drop => Action::Drop(DropReason::NoBackend),
            None => reply(buf, &request, meta, config, stats, Counter::Responses508, |b, trim| {
                error(b, &request, ERR_INSUFFICIENT_CAPACITY, "Insufficient Capacity", None, config, trim)
            }),
        },
        METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
            reply(buf, &request, meta, config, stats, Counter::Responses437, |b, trim| {
                error(b, &request, ERR_ALLOCATION_MISMATCH, "Allocation Mismatch", None, config, trim)
            })
        }
        _ => bad_request(buf, &request, meta, config, stats),
    }
}

/// The 300: ERROR-CODE (its reason phrase left out when trimming), ALTERNATE-SERVER of the
/// client's family, then the other family's when there is one and nothing is trimmed, then
/// SOFTWARE, MESSAGE-INTEGRITY (long-term mode) and FINGERPRINT as every answer ends.
fn try_alternate(
    buf: &mut [u8],
    request: &Request<'_>,
    to: &Redirect,
    config: &HandlerConfig,
    trim: Trim,
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::over(buf, MessageType::new(request.method, Class::ErrorResponse))?;
    w.add_error(ERR_TRY_ALTERNATE, if trim == Trim::None { "Try Alternate" } else { "" })?;
    w.add(&AlternateServer(to.addr))?;
    if let (Some(other), true) = (to.other, trim < Trim::All) {
        w.add(&AlternateServer(other))?;
    }
    finish(w, request, config, trim)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::super::tests::{TID, meta, request, run};
    use super::super::{Action, BUFFER_SIZE, HandlerConfig};
    use crate::auth::keys::long_term_key;
    use crate::auth::{Algorithm, AuthSettings, Authenticator};
    use crate::counters::{Counter, DropReason};
    use crate::lb::{BackendAddr, Balancer, Health, KeyRule, NoBackend, ProbeSettings};
    use crate::stun::attr::{AlternateServer, ErrorCode, Nonce, Realm};
    use crate::stun::integrity::{Check, check_fingerprint, check_integrity_sha1};
    use crate::stun::registry::{
        ATTR_ALTERNATE_SERVER, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, MAGIC_COOKIE,
    };
    use crate::stun::{Message, MessageType, MessageWriter};

    const ALLOCATE: u16 = 0x0003;
    const TRANSPORT: (u16, &[u8]) = (ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);

    fn balancer() -> Balancer {
        let addrs = [("a", "192.0.2.50:3478"), ("a", "[2001:db8::50]:3478"), ("b", "192.0.2.51:3478")];
        let backends: Vec<BackendAddr> = addrs.iter().map(|(n, a)| BackendAddr::new(n, a.parse().unwrap())).collect();
        Balancer::new(&backends, [7; 16], KeyRule::default(), ProbeSettings::default(), None).unwrap()
    }

    fn balancing(lb: Balancer) -> HandlerConfig {
        HandlerConfig { turn: Some(Arc::new(lb)), ..HandlerConfig::default() }
    }

    fn alternates(answer: &[u8]) -> Vec<SocketAddr> {
        let m = Message::parse(answer).unwrap();
        m.attributes()
            .filter(|a| a.attr_type == ATTR_ALTERNATE_SERVER)
            .map(|a| {
                use crate::stun::attr::Attribute as _;
                AlternateServer::decode(a.value, &m.cookie_and_id()).unwrap().0
            })
            .collect()
    }

    fn code(answer: &[u8]) -> u16 {
        Message::parse(answer).unwrap().get::<ErrorCode>().unwrap().unwrap().code
    }

    #[test]
    fn an_allocate_is_redirected_to_its_backend_with_the_other_family_too() {
        let config = balancing(balancer());
        let lb = config.turn.clone().unwrap();
        let m = meta("192.0.2.1:40000");
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], true);
        let (action, stats) = run(&mut buf, n, &m, &config);
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let answer = &buf[..len];
        assert_eq!(MessageType::from_u16(u16::from_be_bytes([answer[0], answer[1]])).method, ALLOCATE);
        assert_eq!(&answer[8..20], &TID);
        assert_eq!(code(answer), 300);
        let expected = lb.redirect(m.src).unwrap();
        assert_eq!(alternates(answer), [expected.addr, expected.other.unwrap()]);
        assert!(expected.addr.is_ipv4(), "the request's family first");
        assert_eq!(check_fingerprint(&Message::parse(answer).unwrap()), Check::Valid);
        assert_eq!(stats.get(Counter::Responses300), 1);
        assert_eq!(stats.get(Counter::RequestsOther), 1);
        assert_eq!(lb.state.entries[expected.index].redirects(), 1);
        // The same client from another worker (another Stats) and port: the same backend.
        let (mut again, n) = request(ALLOCATE, &[TRANSPORT], false);
        let Action::Reply { len, .. } = run(&mut again, n, &meta("192.0.2.1:40001"), &config).0 else { panic!() };
        assert_eq!(alternates(&again[..len])[0], expected.addr);
        assert_eq!(Message::parse(&again[..len]).unwrap().attribute(crate::stun::registry::ATTR_FINGERPRINT), None);
    }

    #[test]
    fn ipv6_clients_get_ipv6_backends_and_508_or_nothing_when_none_is_up() {
        let lb = balancer();
        let config = balancing(lb);
        let m = meta("[2001:db8:9::1]:40000");
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], false);
        let Action::Reply { len, .. } = run(&mut buf, n, &m, &config).0 else { panic!() };
        let alt = alternates(&buf[..len]);
        assert_eq!(alt[0], "[2001:db8::50]:3478".parse::<SocketAddr>().unwrap());
        let lb = config.turn.as_ref().unwrap();
        lb.state.entries[1].set_health(Health::Down);
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], false);
        let (action, stats) = run(&mut buf, n, &m, &config);
        let Action::Reply { len, .. } = action else { panic!() };
        assert_eq!(code(&buf[..len]), 508);
        assert_eq!(stats.get(Counter::Responses508), 1);
        let mut dropping = balancer();
        dropping.on_no_backend = NoBackend::Drop;
        dropping.state.entries[1].set_health(Health::Draining);
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], false);
        let (action, stats) = run(&mut buf, n, &m, &balancing(dropping));
        assert_eq!(action, Action::Drop(DropReason::NoBackend));
        assert_eq!(stats.drops(DropReason::NoBackend), 1);
    }

    #[test]
    fn other_turn_requests_get_437_and_send_and_channel_data_are_dropped() {
        let config = balancing(balancer());
        let m = meta("192.0.2.1:40000");
        for method in [0x0004u16, 0x0008, 0x0009] {
            let (mut buf, n) = request(method, &[], false);
            let (action, stats) = run(&mut buf, n, &m, &config);
            let Action::Reply { len, .. } = action else { panic!() };
            assert_eq!(code(&buf[..len]), 437, "method {method:#x}");
            assert_eq!(stats.get(Counter::Responses437), 1);
        }
        let (mut buf, n) = request(0x000A, &[], false); // Connect: not served here
        let Action::Reply { len, .. } = run(&mut buf, n, &m, &config).0 else { panic!() };
        assert_eq!(code(&buf[..len]), 400);
        let (mut buf, n) = request(0x0016, &[], false); // Send indication
        assert_eq!(run(&mut buf, n, &m, &config).0, Action::Drop(DropReason::TurnSend));
        let mut channel = [0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
        let (action, stats) = run(&mut channel, 8, &m, &config);
        assert_eq!(action, Action::Drop(DropReason::ChannelData));
        assert_eq!(stats.drops(DropReason::ChannelData), 1);
        // Without a balancer: as before.
        let plain = HandlerConfig::default();
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], false);
        let Action::Reply { len, .. } = run(&mut buf, n, &m, &plain).0 else { panic!() };
        assert_eq!(code(&buf[..len]), 400);
        assert_eq!(run(&mut channel, 8, &m, &plain).0, Action::Drop(DropReason::TooShort));
        let (mut buf, n) = request(0x0016, &[], false);
        assert_eq!(run(&mut buf, n, &m, &plain).0, Action::Drop(DropReason::Indication));
        // Binding on a balancing listener is answered as always.
        let (mut buf, n) = request(0x0001, &[], false);
        assert_eq!(run(&mut buf, n, &m, &config).0, Action::Reply { len: 32, route: super::super::Route::BACK });
    }

    #[test]
    fn the_amplification_cap_drops_the_second_address_then_the_reason() {
        let params = crate::limit::Params { mode: crate::limit::Mode::Off, ..crate::limit::Params::default() };
        let config = super::super::tests::defended(params, balancing(balancer()));
        // A bare 20-byte Allocate may get 60 bytes: 20 + ERROR-CODE 8 + ALTERNATE-SERVER 12.
        let (mut buf, n) = request(ALLOCATE, &[], false);
        let (action, stats) = run(&mut buf, n, &meta("192.0.2.1:40000"), &config);
        assert_eq!(action, Action::Reply { len: 40, route: super::super::Route::BACK });
        assert_eq!(alternates(&buf[..40]).len(), 1);
        assert_eq!(Message::parse(&buf[..40]).unwrap().get::<ErrorCode>().unwrap().unwrap().reason, "");
        assert_eq!(stats.get(Counter::Responses300), 1);
    }

    fn long_term() -> (HandlerConfig, Arc<Authenticator>) {
        let settings = AuthSettings {
            realm: "example.org".into(),
            nonce_secret: b"0123456789abcdef".to_vec(),
            nonce_lifetime: 600,
            password_algorithms: vec![],
            long_term: vec![("alice".into(), "wonderland".into())],
            ..AuthSettings::default()
        };
        let authenticator = Arc::new(Authenticator::new(&settings));
        let mut lb = balancer();
        lb.auth = Some(authenticator.clone());
        (balancing(lb), authenticator)
    }

    #[test]
    fn long_term_mode_challenges_then_signs_the_300() {
        let (config, _) = long_term();
        let m = meta("192.0.2.1:40000");
        let (mut buf, n) = request(ALLOCATE, &[TRANSPORT], true);
        let Action::Reply { len, .. } = run(&mut buf, n, &m, &config).0 else { panic!() };
        let challenge = Message::parse(&buf[..len]).unwrap();
        assert_eq!(challenge.get::<ErrorCode>().unwrap().unwrap().code, 401);
        let nonce = challenge.get::<Nonce>().unwrap().unwrap().0.to_vec();
        let realm = challenge.get::<Realm>().unwrap().unwrap().0.to_vec();
        assert_eq!(realm, b"example.org");

        let key = long_term_key(Algorithm::Md5, b"alice", &realm, b"wonderland");
        let mut signed = [0u8; BUFFER_SIZE];
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        id[4..].copy_from_slice(&TID);
        let mut w = MessageWriter::new(&mut signed, MessageType::from_u16(ALLOCATE), &id).unwrap();
        w.add_raw(TRANSPORT.0, TRANSPORT.1).unwrap();
        w.add_raw(ATTR_USERNAME, b"alice").unwrap();
        w.add_raw(ATTR_REALM, &realm).unwrap();
        w.add_raw(ATTR_NONCE, &nonce).unwrap();
        w.add_integrity_sha1(key.as_bytes()).unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        let (action, stats) = run(&mut signed, n, &m, &config);
        let Action::Reply { len, .. } = action else { panic!("{action:?}") };
        let answer = Message::parse(&signed[..len]).unwrap();
        assert_eq!(answer.get::<ErrorCode>().unwrap().unwrap().code, 300);
        assert_eq!(check_integrity_sha1(&answer, key.as_bytes()), Check::Valid, "the 300 is signed");
        assert_eq!(check_fingerprint(&answer), Check::Valid);
        assert_eq!(stats.get(Counter::RequestsAuthenticated), 1);
        // A wrong password is challenged again, never redirected.
        let wrong = long_term_key(Algorithm::Md5, b"alice", &realm, b"looking-glass");
        let mut w = MessageWriter::new(&mut signed, MessageType::from_u16(ALLOCATE), &id).unwrap();
        w.add_raw(ATTR_USERNAME, b"alice").unwrap();
        w.add_raw(ATTR_REALM, &realm).unwrap();
        w.add_raw(ATTR_NONCE, &nonce).unwrap();
        w.add_integrity_sha1(wrong.as_bytes()).unwrap();
        let n = w.finish();
        let Action::Reply { len, .. } = run(&mut signed, n, &m, &config).0 else { panic!() };
        assert_eq!(code(&signed[..len]), 401);
    }
}
