//! `stunedge-flood`: the reflection lab's traffic (`scripts/reflect-lab.sh`). Spoofed floods
//! (`victim`, `random`: raw IPv4 sockets, so root or CAP_NET_RAW) and well-behaved clients
//! (`legit`, `cgnat`: bound UDP sockets on addresses the lab made local). Each run is bounded
//! by `--duration` and prints one JSON line of what it did. Exit status: 0 after a run, 2 on
//! bad arguments or when its sockets cannot be set up. Whether the numbers are good is the
//! caller's judgement.
//!
//! ```text
//! stunedge-flood victim --server 10.99.0.1:3478 --sources 10.99.1.0/24 --rate 100000 --duration 10
//! stunedge-flood random --server 10.99.0.1:3478 --sources 10.128.0.0/9 --rate 100000 --duration 12
//! stunedge-flood legit  --server 10.99.0.1:3478 --sources 10.99.2.0/24 --clients 100 --duration 15
//! stunedge-flood cgnat  --server 10.99.0.1:3478 --source 10.99.3.1 --users 2000 --duration 30
//! stunedge-flood stream --server 127.0.0.1:3478 --tls 127.0.0.1:5349 --idle 10000 --duration 60 --hold 90
//! ```
//!
//! `stream` (connection floods on the TCP/TLS plane, `scripts/bench-stream.sh`) needs a file
//! descriptor per connection: raise `ulimit -n` first. SIGTERM ends its flood early (then the
//! hold, if any).

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stunedge::client::Retransmit;
use stunedge::limit::Cidr;
use stunedge_bench::flood::clients::{self, ClientConfig, MAX_SOCKETS, Plan};
use stunedge_bench::flood::raw::{self, FloodConfig, Sources};
use stunedge_bench::flood::stream::{self, StreamFloodConfig};
use stunedge_bench::flood::{Rng, V4Prefix};

#[derive(Parser, Debug)]
#[command(name = "stunedge-flood", version, about = "Reflection-lab traffic: spoofed floods and well-behaved clients")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Binding requests "from" random hosts and ports of a victim's prefix (raw socket).
    Victim(FloodArgs),
    /// Binding requests from every address of a large prefix once, scattered (raw socket):
    /// as many distinct sources as datagrams, up to the prefix's size.
    Random(FloodArgs),
    /// K clients running RFC 8489 §6.2.1 transactions from bound sockets.
    Legit(LegitArgs),
    /// N users behind one IPv4 address: a Binding every interval and ICE-like bursts.
    Cgnat(CgnatArgs),
    /// Connection floods on a STUN-over-TCP/TLS server: idle connections, slowloris, half-open
    /// TLS handshakes (loopback sources 127.0.1.x).
    Stream(StreamArgs),
}

#[derive(Args, Debug)]
struct StreamArgs {
    /// The server's TCP listener, "IP:port" (loopback).
    #[arg(long, short)]
    server: SocketAddr,
    /// Its TLS listener (the handshake group; without it that group is not run).
    #[arg(long)]
    tls: Option<SocketAddr>,
    /// Idle connections: one Binding answered, then nothing.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Slowloris connections: a Binding request one byte at a time.
    #[arg(long, default_value_t = 500)]
    slowloris: usize,
    /// Seconds between a slowloris connection's bytes.
    #[arg(long, default_value_t = 2.0)]
    slowloris_interval: f64,
    /// Handshake-flood connections to --tls: half send a partial ClientHello, half nothing.
    #[arg(long, default_value_t = 500)]
    handshake: usize,
    /// Seconds before a closed slot is reopened (during the flood).
    #[arg(long, default_value_t = 1.0)]
    retry: f64,
    /// Source addresses 127.0.1.1, .2, … the connections are spread over.
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// Connects in progress at once at most.
    #[arg(long, default_value_t = 256)]
    max_connecting: usize,
    /// Seconds the flood runs (SIGTERM ends it earlier).
    #[arg(long, short, default_value_t = 30.0)]
    duration: f64,
    /// Seconds to then wait, sending nothing, for the server to close every connection; 0:
    /// close them here at once.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// A file to write "ready" to once every idle connection's Binding was answered.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Args, Debug)]
struct Common {
    /// The server, an IPv4 "IP:port".
    #[arg(long, short)]
    server: SocketAddr,
    /// Seconds to send (floods) or to start transactions (clients).
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seed of the random choices (default: a fresh one; the report names it).
    #[arg(long)]
    seed: Option<u64>,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Args, Debug)]
struct FloodArgs {
    #[command(flatten)]
    common: Common,
    /// The spoofed sources' IPv4 prefix, at most a /8.
    #[arg(long)]
    sources: Cidr,
    /// Datagrams per second; 0: as fast as this machine sends.
    #[arg(long, short, default_value_t = 10_000)]
    rate: u64,
    /// Datagrams per sendmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Args, Debug)]
struct LegitArgs {
    #[command(flatten)]
    common: Common,
    /// The clients' IPv4 prefix (a local route): client i binds its (i mod size)-th host,
    /// skipping the network and last addresses.
    #[arg(long)]
    sources: Cidr,
    /// Clients (sockets).
    #[arg(long, short = 'k', default_value_t = 100)]
    clients: usize,
    /// Seconds between one client's transactions.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Initial retransmission timeout, milliseconds (RFC 8489: 500).
    #[arg(long, default_value_t = 500)]
    rto_ms: u64,
    /// Requests per transaction (Rc, RFC 8489: 7).
    #[arg(long, default_value_t = 7)]
    rc: u32,
    /// After the last request wait Rm × RTO (RFC 8489: 16).
    #[arg(long, default_value_t = 16)]
    rm: u32,
}

#[derive(Args, Debug)]
struct CgnatArgs {
    #[command(flatten)]
    common: Common,
    /// The one address every user shares.
    #[arg(long)]
    source: IpAddr,
    /// Users (sockets, distinct ports).
    #[arg(long, short = 'n', default_value_t = 2000)]
    users: usize,
    /// Seconds between one user's Bindings (NAT keepalive).
    #[arg(long, default_value_t = 25.0)]
    interval: f64,
    /// Mean seconds between one user's ICE-like bursts (3–5 requests within 100 ms); 0: none.
    #[arg(long, default_value_t = 60.0)]
    burst_every: f64,
    /// Milliseconds after which a request (each is sent once) counts as unanswered.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s <= 3600.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("--{what} {s}: must be above 0 and at most 3600 seconds"))
    }
}

fn server_v4(common: &Common) -> Result<SocketAddrV4, String> {
    match common.server {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err("--server: the lab is IPv4 (raw IPv4 sockets, IPv4 local routes)".into()),
    }
}

/// The `i`-th client address of `prefix`: its hosts in order, without the network and last
/// addresses (for prefixes of more than two).
fn host(prefix: &V4Prefix, i: usize) -> IpAddr {
    let size = prefix.size();
    let offset = if size > 2 { 1 + i as u64 % (size - 2) } else { i as u64 % size };
    IpAddr::V4(prefix.at(offset))
}

fn pin(common: &Common) {
    if let Some(cpu) = common.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
}

/// Runs the mode; the report as one JSON line.
fn run(mode: Mode) -> Result<String, String> {
    let line = |r: Result<String, serde_json::Error>| r.map_err(|e| e.to_string());
    match mode {
        Mode::Victim(a) => flood(a, Sources::Victim),
        Mode::Random(a) => flood(a, Sources::Distinct),
        Mode::Legit(a) => {
            let duration = seconds("duration", a.common.duration)?;
            let prefix = V4Prefix::new(a.sources)?;
            if a.clients == 0 || a.clients > MAX_SOCKETS || a.rc == 0 || a.rto_ms == 0 {
                return Err(format!("--clients 1..={MAX_SOCKETS}, --rc and --rto-ms above 0"));
            }
            let seed = a.common.seed.unwrap_or_else(Rng::fresh_seed);
            let plan = Plan::periodic(a.clients, seconds("interval", a.interval)?, duration, &mut Rng::new(seed));
            let config = ClientConfig {
                mode: "legit",
                server: SocketAddr::V4(server_v4(&a.common)?),
                addresses: (0..a.clients).map(|i| host(&prefix, i)).collect(),
                plan,
                retransmit: Retransmit { rto: Duration::from_millis(a.rto_ms), rc: a.rc, rm: a.rm },
                duration,
                seed,
            };
            pin(&a.common);
            line(serde_json::to_string(&clients::run(&config).map_err(|e| e.to_string())?))
        }
        Mode::Stream(a) => {
            let hold = if a.hold == 0.0 { Duration::ZERO } else { seconds("hold", a.hold)? };
            let loopback = |addr: &SocketAddr| addr.ip().is_loopback();
            if !loopback(&a.server) || !a.tls.as_ref().is_none_or(loopback) {
                return Err("--server and --tls: loopback addresses (the sources are 127.0.1.x)".into());
            }
            if a.sources == 0 || a.sources > 65_000 || a.max_connecting == 0 {
                return Err("--sources 1..=65000, --max-connecting above 0".into());
            }
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).map_err(|e| e.to_string())?;
            let config = StreamFloodConfig {
                tcp: a.server,
                tls: a.tls,
                idle: a.idle,
                slowloris: a.slowloris,
                slowloris_interval: seconds("slowloris-interval", a.slowloris_interval)?,
                handshake: a.handshake,
                retry: seconds("retry", a.retry)?,
                sources: a.sources,
                max_connecting: a.max_connecting,
                duration: seconds("duration", a.duration)?,
                hold,
                stop,
                ready_file: a.ready_file,
            };
            if let Some(cpu) = a.cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            line(serde_json::to_string(&stream::run(&config).map_err(|e| e.to_string())?))
        }
        Mode::Cgnat(a) => {
            let duration = seconds("duration", a.common.duration)?;
            if a.users == 0 || a.users > MAX_SOCKETS || a.timeout_ms == 0 {
                return Err(format!("--users 1..={MAX_SOCKETS}, --timeout-ms above 0"));
            }
            let burst_every =
                if a.burst_every == 0.0 { Duration::ZERO } else { seconds("burst-every", a.burst_every)? };
            let seed = a.common.seed.unwrap_or_else(Rng::fresh_seed);
            let mut rng = Rng::new(seed);
            let plan = Plan::cgnat(a.users, seconds("interval", a.interval)?, burst_every, duration, &mut rng);
            let config = ClientConfig {
                mode: "cgnat",
                server: SocketAddr::V4(server_v4(&a.common)?),
                addresses: vec![a.source; a.users],
                plan,
                // Each request once: an unanswered one is reported, not hidden by a retry.
                retransmit: Retransmit { rto: Duration::from_millis(a.timeout_ms), rc: 1, rm: 1 },
                duration,
                seed,
            };
            pin(&a.common);
            line(serde_json::to_string(&clients::run(&config).map_err(|e| e.to_string())?))
        }
    }
}

fn flood(a: FloodArgs, sources: Sources) -> Result<String, String> {
    if a.batch == 0 || a.batch > 1024 {
        return Err(format!("--batch {}: 1 to 1024", a.batch));
    }
    let config = FloodConfig {
        server: server_v4(&a.common)?,
        prefix: V4Prefix::new(a.sources)?,
        sources,
        rate: a.rate,
        duration: seconds("duration", a.common.duration)?,
        batch: a.batch,
        seed: a.common.seed.unwrap_or_else(Rng::fresh_seed),
    };
    pin(&a.common);
    let report = raw::flood(&config).map_err(|e| format!("raw socket: {e} (needs root or CAP_NET_RAW)"))?;
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run(Cli::parse().mode) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stunedge-flood: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hosts_skip_the_network_and_last_addresses() {
        let p = V4Prefix::new("10.99.2.0/30".parse().unwrap()).unwrap();
        let hosts: Vec<String> = (0..3).map(|i| host(&p, i).to_string()).collect();
        assert_eq!(hosts, ["10.99.2.1", "10.99.2.2", "10.99.2.1"]);
        let one = V4Prefix::new("10.99.3.1/32".parse().unwrap()).unwrap();
        assert_eq!(host(&one, 5).to_string(), "10.99.3.1");
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(seconds("duration", 0.0).is_err());
        assert!(seconds("duration", f64::NAN).is_err());
        let cli = Cli::try_parse_from(["f", "victim", "-s", "[::1]:3478", "--sources", "10.0.0.0/8"]).unwrap();
        assert!(run(cli.mode).unwrap_err().contains("IPv4"));
        let cli = Cli::try_parse_from(["f", "random", "-s", "10.0.0.1:3478", "--sources", "0.0.0.0/4"]).unwrap();
        assert!(run(cli.mode).unwrap_err().contains("at most a /8"));
    }
}
