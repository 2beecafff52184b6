//! `stunedge-bench`: the load generator. Drives a STUN server with Binding requests from many
//! sockets on pinned threads (UDP, or with `--tcp` long-lived TCP connections carrying
//! pipelined requests), checks every answer, and reports rate, loss and latency. Exit
//! status: 0 when every answer was valid, 1 when any was invalid, 2 on bad arguments or when
//! the server never answered.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use stunedge_bench::load::{self, Config, Progress, Report};
use stunedge_bench::stream::{self, StreamReport};
use stunedge_bench::{Credentials, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "stunedge-bench",
    version,
    about = "STUN load generator: rate, loss and latency, every answer checked"
)]
struct Args {
    /// Server to load, "IP:port" (IPv6 as "[::1]:3478"; sources are then ::1). A server off
    /// loopback is loaded from the address the kernel picks for the route to it.
    #[arg(long, short)]
    server: SocketAddr,
    /// Generator threads (each pinned to the next CPU of --cpus when given).
    #[arg(long, short, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin threads to, e.g. "1" or "8-15" or "1,3". Threads wrap around the list.
    #[arg(long)]
    cpus: Option<String>,
    /// Sockets per thread (distinct source ports); with --tcp, connections per thread.
    #[arg(long, default_value_t = 64)]
    sockets: usize,
    /// Distinct IPv4 source addresses (127.0.0.1, .2, …) the sockets are spread over.
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// Seconds to send for.
    #[arg(long, short, default_value_t = 5.0)]
    duration: f64,
    /// Offered load in requests/s over all threads (open loop, paced); 0 = closed loop.
    #[arg(long, short, default_value_t = 0)]
    rate: u64,
    /// Closed loop: requests outstanding per socket. With --tcp: requests in flight per
    /// connection (pipelined), in both loops.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Datagrams per sendmmsg / recvmmsg (UDP only).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// STUN over TCP (RFC 8489 §6.2.2): long-lived connections, requests written back to
    /// back, answers cut from the stream by their header; every answer checked as over UDP
    /// (XOR-MAPPED-ADDRESS = the connection's local address). Latency from the write.
    #[arg(long)]
    tcp: bool,
    /// With --tcp: open a connection again when the server closes it (coturn resets STUN-only
    /// TCP connections a few seconds after they open); its requests in flight count as lost.
    #[arg(long, requires = "tcp")]
    reconnect: bool,
    /// Request mix, "kind=weight,…"; kinds: plain, fingerprint, software, integrity, ice, classic.
    #[arg(long, default_value = "plain")]
    mix: String,
    /// USERNAME for the integrity and ice kinds.
    #[arg(long)]
    username: Option<String>,
    /// Short-term password (MESSAGE-INTEGRITY key) for the integrity and ice kinds.
    #[arg(long)]
    password: Option<String>,
    /// Junk datagrams per 100 requests, interleaved with them (not STUN, too short, bad
    /// length, a response, a bad FINGERPRINT); a correct server answers none of them.
    #[arg(long, default_value_t = 0)]
    junk: u32,
    /// Milliseconds after which an unanswered request counts as lost.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Print the report as JSON on stdout (progress lines still go to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_cpus(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus: {part:?} is not a CPU number or range like 8-15");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("--cpus: no CPU listed".into());
    }
    Ok(cpus)
}

fn parse_mix(text: &str) -> Result<Vec<(Kind, u32)>, String> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let kind = Kind::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("--mix: unknown kind {name:?} (known: {})", names.join(", "))
        })?;
        let weight: u32 = weight.parse().map_err(|_| format!("--mix: weight {weight:?} of {name} is not a number"))?;
        if weight > 1000 {
            return Err(format!("--mix: weight {weight} of {name} is above 1000"));
        }
        if weight > 0 {
            mix.push((kind, weight));
        }
    }
    if mix.is_empty() {
        return Err("--mix: no kind with a weight above 0".into());
    }
    Ok(mix)
}

fn config(args: &Args) -> Result<Config, String> {
    if args.threads == 0 || args.threads > 255 {
        return Err(format!("--threads {}: must be between 1 and 255", args.threads));
    }
    if args.sockets == 0 || args.sockets > 65535 {
        return Err(format!("--sockets {}: must be between 1 and 65535", args.sockets));
    }
    if !(args.duration > 0.0 && args.duration <= 86400.0) {
        return Err(format!("--duration {}: must be above 0 and at most 86400 seconds", args.duration));
    }
    if args.batch == 0 || args.batch > 1024 {
        return Err(format!("--batch {}: must be between 1 and 1024", args.batch));
    }
    if args.sources == 0 || args.sources > 65000 {
        return Err(format!("--sources {}: must be between 1 and 65000", args.sources));
    }
    if args.sources > 1 && args.server.is_ipv6() {
        return Err("--sources: several source addresses need an IPv4 server (127.0.0.0/8)".into());
    }
    if args.tcp && args.junk > 0 {
        return Err("--junk: not with --tcp (junk ends a stream: there is no next message to find)".into());
    }
    if args.tcp && args.window > 4096 {
        return Err(format!("--window {}: at most 4096 with --tcp", args.window));
    }
    if args.junk > 1000 {
        return Err(format!("--junk {}: at most 1000 junk datagrams per 100 requests", args.junk));
    }
    if args.timeout_ms == 0 {
        return Err("--timeout-ms 0: must be above 0".into());
    }
    let cpus: Vec<Option<usize>> = match &args.cpus {
        Some(text) => {
            let list = parse_cpus(text)?;
            (0..args.threads).map(|t| Some(list[t % list.len()])).collect()
        }
        None => vec![None; args.threads],
    };
    let defaults = Credentials::default();
    Ok(Config {
        server: args.server,
        cpus,
        sockets: args.sockets,
        sources: args.sources,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        window: args.window,
        batch: args.batch,
        mix: parse_mix(&args.mix)?,
        credentials: Credentials {
            username: args.username.clone().unwrap_or(defaults.username),
            password: args.password.clone().unwrap_or(defaults.password),
        },
        timeout: Duration::from_millis(args.timeout_ms),
        junk_percent: args.junk,
    })
}

fn print_table(r: &Report, stream: Option<&StreamReport>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "server          {} ({}{} loop{})",
        r.server,
        if stream.is_some() { "TCP, " } else { "" },
        r.mode,
        if r.mode == "open" { format!(", {} req/s offered", r.target_rate) } else { String::new() }
    );
    match stream {
        Some(s) => {
            let _ = writeln!(
                out,
                "load            {} threads, {} connections × window {}, {:.1} s",
                r.threads, r.sockets, s.window, r.duration_s
            );
        }
        None => {
            let _ =
                writeln!(out, "load            {} threads, {} sockets, {:.1} s", r.threads, r.sockets, r.duration_s);
        }
    }
    let _ = writeln!(out, "sent            {}", r.sent);
    let _ = writeln!(out, "received        {}", r.received);
    let _ = writeln!(out, "valid           {}  ({:.0} /s)", r.valid, r.rate);
    let _ = writeln!(
        out,
        "invalid         {}{}",
        r.invalid,
        if r.invalid_by_kind.is_empty() { String::new() } else { format!("  {:?}", r.invalid_by_kind) }
    );
    let _ = writeln!(
        out,
        "lost            {}  ({:.4} %)",
        r.lost,
        if r.sent > 0 { 100.0 * r.lost as f64 / r.sent as f64 } else { 0.0 }
    );
    let _ = writeln!(out, "late            {}", r.late);
    let _ = writeln!(out, "send errors     {}", r.send_errors);
    if r.junk_sent > 0 {
        let _ = writeln!(out, "junk sent       {} (interleaved; none may be answered)", r.junk_sent);
    }
    if r.not_sent > 0 {
        let _ = writeln!(out, "not sent        {} (sockets full: the server is far behind)", r.not_sent);
    }
    let l = &r.latency;
    let _ = writeln!(
        out,
        "latency µs      p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    let _ = writeln!(out, "generator idle  {:.1} %", 100.0 * r.generator_idle);
    if let Some(s) = stream {
        let _ = writeln!(out, "closed by server {}", s.closed_by_server);
        let _ = writeln!(out, "framing errors  {}", s.framing_errors);
        if s.reconnects > 0 {
            let _ = writeln!(out, "reconnects      {}", s.reconnects);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stunedge-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let progress: Vec<Arc<Progress>> = config.cpus.iter().map(|_| Arc::new(Progress::default())).collect();
    let watcher = (!args.quiet).then(|| {
        let progress = progress.clone();
        let total = config.duration + config.timeout;
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut last_valid = 0u64;
            while started.elapsed() < total {
                std::thread::sleep(Duration::from_secs(1));
                let sum = |f: fn(&Progress) -> &std::sync::atomic::AtomicU64| -> u64 {
                    progress.iter().map(|p| f(p).load(Ordering::Relaxed)).sum()
                };
                let (sent, valid, invalid, lost) =
                    (sum(|p| &p.sent), sum(|p| &p.valid), sum(|p| &p.invalid), sum(|p| &p.lost));
                let p99 = progress.iter().map(|p| p.p99_ns.load(Ordering::Relaxed)).max().unwrap_or(0);
                eprintln!(
                    "[{:>3.0}s] {:>9} valid/s  sent {sent}  invalid {invalid}  lost {lost}  p99 {:.1} µs",
                    started.elapsed().as_secs_f64(),
                    valid - last_valid,
                    p99 as f64 / 1000.0
                );
                last_valid = valid;
            }
        })
    });
    let outcome = if args.tcp {
        stream::run(&config, args.reconnect, &progress).map(|s| (s.report.clone(), Some(s)))
    } else {
        load::run(&config, &progress).map(|r| (r, None))
    };
    let (report, stream) = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stunedge-bench: cannot set up {}: {e}", if args.tcp { "connections" } else { "sockets" });
            return ExitCode::from(2);
        }
    };
    drop(watcher);
    if args.json {
        let json = match &stream {
            Some(s) => serde_json::to_string_pretty(s),
            None => serde_json::to_string_pretty(&report),
        };
        println!("{}", json.expect("report serialises"));
    } else {
        print_table(&report, stream.as_ref());
    }
    if report.received == 0 {
        eprintln!("stunedge-bench: no answer at all from {} — is a STUN server listening there?", config.server);
        return ExitCode::from(2);
    }
    if report.invalid > 0 {
        eprintln!("stunedge-bench: {} invalid answers: {:?}", report.invalid, report.invalid_by_kind);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_mixes() {
        assert_eq!(parse_cpus("1,3-5").unwrap(), [1, 3, 4, 5]);
        assert!(parse_cpus("5-3").is_err());
        assert!(parse_cpus("x").is_err());
        assert_eq!(parse_mix("plain=3,fingerprint").unwrap(), [(Kind::Plain, 3), (Kind::Fingerprint, 1)]);
        assert!(parse_mix("nope=1").unwrap_err().contains("unknown kind"));
        assert!(parse_mix("plain=0").is_err());
    }
}
