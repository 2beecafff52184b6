//! How one listener answers: the per-listener configuration the decision reads
//! ([`HandlerConfig`]), its authentication ([`ListenerAuth`]) and, in RFC 5780 mode, its place
//! among the four sockets of its group ([`Rfc5780Role`], [`Role`]). Built by the configuration
//! and the worker's RFC 5780 socket plan; read-only here; replaced whole on reload.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{Authenticator, Mechanism, Policy};
use crate::lb::{Balancer, Transport};
use crate::limit::Limit;

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
    pub rfc5780: Option<Rfc5780Role>,
    /// The reflection defence: deny lists, the response rate limit, the amplification cap.
    /// The default limits nothing (the configuration's defaults do: `[limit]`).
    pub limit: Limit,
    /// TURN load balancing: Allocates are redirected to a backend with 300, other TURN
    /// requests get 437; `None`: TURN requests get 400 (`[turn_lb]`).
    pub turn: Option<Arc<Balancer>>,
    /// The transport the listener serves: a TURN redirect names the backend's address for it.
    /// Stream listeners (TCP, TLS) answer back on their connection only and carry no reflection
    /// limits (`limit` off: a connection's source cannot be spoofed).
    pub transport: Transport,
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

/// One of the four sockets of an RFC 5780 group (§6): on the primary or the alternate IP
/// address × the primary or the alternate port. Also what a CHANGE-REQUEST asks to flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Role(u8);

impl Role {
    /// Primary IP, primary port.
    pub const PRIMARY: Role = Role(0);
    /// Alternate IP, primary port ("change IP").
    pub const ALT_IP: Role = Role(1);
    /// Primary IP, alternate port ("change port").
    pub const ALT_PORT: Role = Role(2);
    /// Alternate IP and port ("change IP and port"; OTHER-ADDRESS, RFC 5780 §7.4).
    pub const ALT_BOTH: Role = Role(3);
    /// The four roles, in index order.
    pub const ALL: [Role; 4] = [Role::PRIMARY, Role::ALT_IP, Role::ALT_PORT, Role::ALT_BOTH];

    /// The role that flips the IP address when `ip`, and the port when `port`.
    #[inline]
    pub const fn new(ip: bool, port: bool) -> Role {
        Role(ip as u8 | (port as u8) << 1)
    }

    /// On the alternate IP address.
    #[inline]
    pub const fn alternate_ip(self) -> bool {
        self.0 & 1 != 0
    }

    /// On the alternate port.
    #[inline]
    pub const fn alternate_port(self) -> bool {
        self.0 & 2 != 0
    }

    /// The index into a group's per-role arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// This role with the IP address and port flipped where `change` flips them.
    #[inline]
    pub const fn changed(self, change: Role) -> Role {
        Role(self.0 ^ change.0)
    }
}

/// A listener's place in an RFC 5780 group: the four sockets' addresses and listener indexes
/// (indexed by [`Role::index`]), and which one this listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5780Role {
    /// Each role's address.
    pub addrs: [SocketAddr; 4],
    /// Each role's listener index (the order of a worker's sockets).
    pub listeners: [u16; 4],
    /// This listener's role.
    pub role: Role,
}

impl Rfc5780Role {
    /// OTHER-ADDRESS: where answers to "change IP and port" come from (RFC 5780 §7.4).
    pub fn other(&self) -> SocketAddr {
        self.addrs[self.role.changed(Role::ALT_BOTH).index()]
    }
}
