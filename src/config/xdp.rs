//! The `[xdp]` section: interface names, the attach mode, and which listen addresses the fast
//! path may answer. The program answers only the plain Binding request, with the bare success, so
//! a port's listen addresses are fast-pathed only when every listener on it would send exactly
//! those bytes: no
//! SOFTWARE, no RESPONSE-ORIGIN, no required credentials, no RFC 5780 mode (a listener with
//! optional credentials answers an unauthenticated request plainly, and so qualifies).

use std::net::SocketAddr;

use super::error::invalid;
use super::{Config, ConfigError, Rfc5780Plan, XdpPlan};
use crate::auth::Policy;
use crate::handler::HandlerConfig;

impl Config {
    /// Validates `[xdp]` against the listeners' answer configurations.
    pub(super) fn validate_xdp(
        &self,
        listen: &[SocketAddr],
        handlers: &[HandlerConfig],
        rfc5780: &[Rfc5780Plan],
        warnings: &mut Vec<String>,
    ) -> Result<XdpPlan, ConfigError> {
        let x = &self.xdp;
        for (i, name) in x.interfaces.iter().enumerate() {
            let field = format!("xdp.interfaces[{i}]");
            let valid = (1..=15).contains(&name.len())
                && name != "."
                && name != ".."
                && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if !valid {
                return Err(invalid(
                    field,
                    format!("{name:?}"),
                    "not an interface name (1 to 15 bytes, no '/', ':' or spaces)",
                ));
            }
            if x.interfaces[..i].contains(name) {
                return Err(invalid(field, format!("{name:?}"), "listed twice"));
            }
        }
        if x.interfaces.is_empty() {
            return Ok(XdpPlan::default());
        }
        let plain = |h: &HandlerConfig| {
            h.software.is_empty()
                && !h.response_origin
                && h.auth.as_ref().is_none_or(|a| a.policy == Policy::Optional)
                && h.rfc5780.is_none()
        };
        let rfc5780_ports: Vec<u16> = rfc5780.iter().map(|p| listen[p.primary].port()).collect();
        let port_plain = |port: u16| {
            // Port 0 (a free port picked at start, tests) cannot be matched by the program.
            port != 0
                && !rfc5780_ports.contains(&port)
                && listen.iter().zip(handlers).filter(|(l, _)| l.port() == port).all(|(_, h)| plain(h))
        };
        let mut fast: Vec<SocketAddr> = Vec::new();
        for addr in listen.iter().filter(|a| port_plain(a.port())) {
            if !fast.contains(addr) {
                fast.push(*addr);
            }
        }
        if fast.len() > crate::xdp::MAX_LISTEN {
            return Err(invalid(
                "xdp.interfaces",
                format!("{:?}", x.interfaces),
                format!(
                    "the fast path answers on at most {} listen addresses, and {} qualify",
                    crate::xdp::MAX_LISTEN,
                    fast.len()
                ),
            ));
        }
        if fast.is_empty() {
            warnings.push(
                "xdp.interfaces is set but no listen port answers plainly (SOFTWARE, RESPONSE-ORIGIN, required \
                 credentials or RFC 5780 mode on every one): the XDP program will answer nothing"
                    .into(),
            );
        }
        Ok(XdpPlan { interfaces: x.interfaces.clone(), mode: Some(x.mode), listen: fast })
    }
}

#[cfg(test)]
mod tests {
    use super::super::XdpMode;
    use super::super::validate::tests::check;

    #[test]
    fn off_by_default() {
        let s = check("[server]\nlisten = [\"192.0.2.1:3478\"]\n").unwrap();
        assert!(s.xdp.interfaces.is_empty() && s.xdp.listen.is_empty() && s.xdp.mode.is_none());
    }

    #[test]
    fn only_plain_ports_are_fast_pathed() {
        let s = check(
            "[server]\nlisten = [\"192.0.2.1:3478\", \"[2001:db8::1]:3478\", \"192.0.2.1:3479\", \"192.0.2.1:3480\"]\n\
             [auth]\nlisteners = [{ listen = \"192.0.2.1:3479\", policy = \"required\" }, \
             { listen = \"192.0.2.1:3480\", policy = \"optional\" }]\nlong_term_users = { a = \"b\" }\n\
             [xdp]\ninterfaces = [\"eth0\", \"eth1\"]\nmode = \"generic\"\n",
        )
        .unwrap();
        assert_eq!(s.xdp.interfaces, ["eth0", "eth1"]);
        assert_eq!(s.xdp.mode, Some(XdpMode::Generic));
        let fast: Vec<String> = s.xdp.listen.iter().map(ToString::to_string).collect();
        assert_eq!(fast, ["192.0.2.1:3478", "[2001:db8::1]:3478", "192.0.2.1:3480"], "3479 requires credentials");
        let software =
            check("[server]\nlisten = [\"192.0.2.1:3478\"]\nsoftware = \"x\"\n[xdp]\ninterfaces = [\"eth0\"]\n")
                .unwrap();
        assert!(software.xdp.listen.is_empty());
        assert!(
            software.warnings.iter().any(|w| w.contains("the XDP program will answer nothing")),
            "{:?}",
            software.warnings
        );
        let rfc5780 = check(
            "[server]\nlisten = [\"192.0.2.1:3478\"]\n[rfc5780]\nalternate_ips = [\"192.0.2.2\"]\n[xdp]\ninterfaces = [\"eth0\"]\n",
        )
        .unwrap();
        assert!(rfc5780.xdp.listen.is_empty());
    }

    #[test]
    fn a_port_with_one_listener_that_is_not_plain_is_not_fast_pathed_on_any_address() {
        // The kernel gives 192.0.2.1:3478's requests to that socket, not the wildcard's: XDP
        // must leave the whole port alone, or it would answer what needs credentials.
        let s = check(
            "[server]\nlisten = [\"0.0.0.0:3478\", \"192.0.2.1:3478\", \"[::]:3478\", \"0.0.0.0:3480\"]\n\
             [auth]\nlisteners = [{ listen = \"192.0.2.1:3478\", policy = \"required\" }]\n\
             long_term_users = { a = \"b\" }\n[xdp]\ninterfaces = [\"eth0\"]\n",
        )
        .unwrap();
        let fast: Vec<String> = s.xdp.listen.iter().map(ToString::to_string).collect();
        assert_eq!(fast, ["0.0.0.0:3480"]);
    }

    #[test]
    fn bad_names_and_modes_name_the_field() {
        for (text, expected) in [
            ("interfaces = [\"\"]\n", "xdp.interfaces[0] = \"\": not an interface name"),
            ("interfaces = [\"a/b\"]\n", "xdp.interfaces[0] = \"a/b\": not an interface name"),
            ("interfaces = [\"averyveryverylongname\"]\n", "not an interface name"),
            ("interfaces = [\"eth0\", \"eth0\"]\n", "xdp.interfaces[1] = \"eth0\": listed twice"),
            ("mode = \"driver\"\n", "must be \"auto\", \"native\" or \"generic\""),
        ] {
            let e = check(&format!("[server]\nlisten = [\"192.0.2.1:3478\"]\n[xdp]\n{text}")).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
