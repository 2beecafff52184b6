//! RFC 5780 mode on loopback: 127.0.0.1 is the primary address, 127.0.0.2 the alternate, each
//! with a primary and an alternate port. Every one of the four sockets answers; CHANGE-REQUEST
//! makes the answer leave from the socket it names (checked on the datagram's real source
//! address, not only on RESPONSE-ORIGIN); RESPONSE-PORT sends it to another port of the client;
//! OTHER-ADDRESS always names the socket with both changed. On every backend.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use stunedge::config::Config;
use stunedge::counters::Counter;
use stunedge::stun::attr::{OtherAddress, ResponseOrigin, XorMappedAddress};
use stunedge::stun::{Message, MessageType};
use stunedge::worker::Server;

use crate::support::{binding_request, recv_from};

/// A server in RFC 5780 mode on 127.0.0.1 / 127.0.0.2 (free ports) with `backend`.
pub(crate) fn start(backend: &str) -> Server {
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[rfc5780]\nalternate_ips = [\"127.0.0.2\"]\nalternate_port = 0\n\
         [io]\ncpus = [{cpu}]\n{}",
        crate::loopback::io_lines(backend)
    );
    Server::start(&Config::from_toml(&text, "test").unwrap().validate(&[cpu]).unwrap()).unwrap()
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket
}

/// CHANGE-REQUEST with the given flags (4 = change IP, 2 = change port).
fn change_request(flags: u8) -> Vec<u8> {
    vec![0x00, 0x03, 0x00, 0x04, 0, 0, 0, flags]
}

#[test]
fn every_socket_answers_and_change_request_picks_the_source() {
    for backend in crate::loopback::backends() {
        let server = start(backend);
        let a = server.local_addrs().to_vec();
        assert_eq!(a.len(), 4, "{a:?}");
        let (primary, alt_ip, alt_port, both) = (a[0], a[1], a[2], a[3]);
        assert_eq!(alt_ip, SocketAddr::new("127.0.0.2".parse().unwrap(), primary.port()));
        assert_eq!(alt_port, SocketAddr::new(primary.ip(), both.port()));
        assert_eq!(both.ip(), alt_ip.ip());
        assert_ne!(both.port(), primary.port());
        let mut changed = 0;
        for (role, target) in a.iter().enumerate() {
            for flags in [0u8, 2, 4, 6] {
                let c = client();
                let tid = [role as u8 * 16 + flags; 12];
                c.send_to(&binding_request(tid, &change_request(flags)), target).unwrap();
                let mut buf = [0u8; 1024];
                let (n, from) = recv_from(&c, &mut buf).unwrap_or_else(|e| panic!("{backend}: {target} {flags}: {e}"));
                // Role bits: 1 = alternate IP, 2 = alternate port; flags 4 = change IP, 2 = port.
                let expect = a[role ^ usize::from(flags >> 2 & 1) ^ usize::from(flags & 2)];
                assert_eq!(from, expect, "{backend}: request to {target} with flags {flags}");
                let msg = Message::parse(&buf[..n]).unwrap();
                assert_eq!(msg.message_type(), MessageType::BINDING_SUCCESS);
                assert_eq!(msg.transaction_id().0, tid);
                assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(c.local_addr().unwrap()))));
                assert_eq!(msg.get::<ResponseOrigin>(), Some(Ok(ResponseOrigin(expect))));
                assert_eq!(msg.get::<OtherAddress>(), Some(Ok(OtherAddress(a[role ^ 3]))));
                changed += u64::from(flags != 0);
            }
        }
        // Sends are counted when they complete (a later loop turn in the SQE mode): wait for all.
        let stats = crate::loopback::wait_for(&server, |s| {
            s.get(Counter::Rfc5780Changed) == changed && s.get(Counter::SentDatagrams) == 16
        });
        assert_eq!(stats.get(Counter::Rfc5780Changed), changed, "{backend}");
        assert_eq!(stats.get(Counter::ResponsesSuccess), 16, "{backend}");
        assert_eq!(stats.get(Counter::SentDatagrams), 16, "{backend}");
    }
}

#[test]
fn response_port_sends_the_answer_to_another_port() {
    for backend in crate::loopback::backends() {
        let server = start(backend);
        let primary = server.local_addrs()[0];
        let (asker, receiver) = (client(), client());
        let port = receiver.local_addr().unwrap().port();
        let mut attr = vec![0x00, 0x27, 0x00, 0x04];
        attr.extend_from_slice(&port.to_be_bytes());
        attr.extend_from_slice(&[0, 0]);
        let tid = [7; 12];
        asker.send_to(&binding_request(tid, &attr), primary).unwrap();
        let mut buf = [0u8; 1024];
        let (n, from) = recv_from(&receiver, &mut buf).unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(from, primary);
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(msg.transaction_id().0, tid);
        // The mapped address is still the asker's: RESPONSE-PORT only redirects the answer.
        assert_eq!(msg.get::<XorMappedAddress>(), Some(Ok(XorMappedAddress(asker.local_addr().unwrap()))));
        asker.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(recv_from(&asker, &mut buf).is_err(), "{backend}: the asker gets nothing");
        let stats = crate::loopback::wait_for(&server, |s| s.get(Counter::Rfc5780ResponsePort) == 1);
        assert_eq!(stats.get(Counter::Rfc5780ResponsePort), 1, "{backend}");
    }
}

/// Runs a coturn tool (bounded by `timeout`) and returns what it printed.
fn coturn(tool: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("timeout").arg("30").arg(tool).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tool} {args:?} failed ({}): {text}", out.status);
    text
}

/// The addresses a coturn tool printed after `label` (e.g. "Response origin: : ").
fn printed(text: &str, label: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split(label).nth(1)).map(|a| a.trim().to_string()).collect()
}

/// Debian's coturn tools against the real binary in RFC 5780 mode: `turnutils_natdiscovery`
/// runs RFC 5780's mapping and filtering tests (with and without 1500 bytes of PADDING), and
/// `turnutils_stunclient` its RFC 5780 exchange (CHANGE-REQUEST with RESPONSE-PORT, then with
/// PADDING). On loopback there is no NAT: both tests must say "endpoint independent".
#[test]
fn coturn_natdiscovery_and_stunclient_against_rfc5780_mode() {
    if crate::support::tool_missing("turnutils_natdiscovery") || crate::support::tool_missing("timeout") {
        return;
    }
    let (port, alt) = (crate::cli::free_port(), crate::cli::free_port());
    let config = crate::cli::write_config(
        "rfc5780.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[rfc5780]\nalternate_ips = [\"127.0.0.2\"]\nalternate_port = {alt}\n"
        ),
    );
    let mut server = crate::cli::Running::start(&["serve", "-c", config.to_str().unwrap()]);
    let primary: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    server.wait_answering(primary);
    let other = format!("127.0.0.2:{alt}");
    let port_arg = port.to_string();
    for padding in [false, true] {
        let mut args = vec!["-m", "-f", "-p", &port_arg];
        if padding {
            args.push("-P");
        }
        args.push("127.0.0.1");
        let text = coturn("turnutils_natdiscovery", &args);
        assert!(text.contains("NAT with Endpoint Independent Mapping!"), "{text}");
        assert!(text.contains("NAT with Endpoint Independent Filtering!"), "{text}");
        assert!(printed(&text, "Other addr: : ").contains(&other), "{text}");
        // Mapping test II goes to the alternate IP; filtering test II asks for both changed.
        let origins = printed(&text, "Response origin: : ");
        for origin in [primary.to_string(), format!("127.0.0.2:{port}"), other.clone()] {
            assert!(origins.contains(&origin), "no answer from {origin}: {text}");
        }
    }
    let text = coturn("turnutils_stunclient", &["-p", &port_arg, "127.0.0.1"]);
    assert_eq!(text.matches("RFC 5780 response").count(), 3, "{text}");
    assert!(printed(&text, "Response origin: : ").contains(&other), "{text}");
    assert!(server.alive(), "{}", server.stderr());
}
