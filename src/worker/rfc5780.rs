//! The RFC 5780 socket plan: each group adds three sockets (alternate IP, alternate port, both)
//! after the configured listen addresses, and every socket learns where its answer
//! configuration comes from ([`Origin`]): the configured listener it copies and its
//! [`Rfc5780Role`]. Claims the addresses so a port in use fails at start.

use std::net::{IpAddr, SocketAddr};

use super::StartError;
use crate::config::Rfc5780Plan;
use crate::handler::{HandlerConfig, Rfc5780Role, Role};
use crate::io::socket;

/// Where a socket's answer configuration comes from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    /// The configured listener it copies.
    config: usize,
    /// Its RFC 5780 role, if any.
    rfc5780: Option<Rfc5780Role>,
}

/// One answer configuration per socket: the configured listener's, with the RFC 5780 role.
pub(super) fn per_socket(configured: &[HandlerConfig], origins: &[Origin]) -> Vec<HandlerConfig> {
    origins.iter().map(|o| HandlerConfig { rfc5780: o.rfc5780, ..configured[o.config].clone() }).collect()
}

/// Adds the three RFC 5780 sockets of each group (alternate IP, alternate port, both) after
/// the configured addresses, claiming each, and gives every socket its origin.
pub(super) fn expand(
    mut addrs: Vec<SocketAddr>,
    plans: &[Rfc5780Plan],
) -> Result<(Vec<SocketAddr>, Vec<Origin>), StartError> {
    let mut origins: Vec<Origin> = (0..addrs.len()).map(|config| Origin { config, rfc5780: None }).collect();
    for plan in plans {
        let primary = addrs[plan.primary];
        let port = match plan.alternate_port {
            0 => free_alternate_port(primary, plan.alternate_ip)?,
            port => port,
        };
        let role_addrs = Role::ALL.map(|role| {
            SocketAddr::new(
                if role.alternate_ip() { plan.alternate_ip } else { primary.ip() },
                if role.alternate_port() { port } else { primary.port() },
            )
        });
        let mut listeners = [plan.primary as u16, 0, 0, 0];
        for role in [Role::ALT_IP, Role::ALT_PORT, Role::ALT_BOTH] {
            let addr = role_addrs[role.index()];
            socket::claim(addr).map_err(|error| StartError::Bind { addr, rfc5780: true, error })?;
            listeners[role.index()] = addrs.len() as u16;
            addrs.push(addr);
            origins.push(Origin { config: plan.primary, rfc5780: None });
        }
        for role in Role::ALL {
            let index = usize::from(listeners[role.index()]);
            origins[index].rfc5780 = Some(Rfc5780Role { addrs: role_addrs, listeners, role });
        }
    }
    Ok((addrs, origins))
}

/// A port free on both the primary and the alternate IP (`rfc5780.alternate_port = 0`).
fn free_alternate_port(primary: SocketAddr, alternate: IpAddr) -> Result<u16, StartError> {
    let mut last = std::io::Error::other("no free port");
    for _ in 0..64 {
        let any = SocketAddr::new(primary.ip(), 0);
        let candidate =
            socket::claim(any).map_err(|error| StartError::Bind { addr: any, rfc5780: false, error })?.port();
        if candidate == primary.port() {
            continue;
        }
        let both = [SocketAddr::new(alternate, primary.port()), SocketAddr::new(alternate, candidate)];
        match both.iter().try_for_each(|a| socket::claim(*a).map(drop)) {
            Ok(()) => return Ok(candidate),
            Err(e) => last = e,
        }
    }
    Err(StartError::NoAlternatePort { primary, alternate, error: last })
}
