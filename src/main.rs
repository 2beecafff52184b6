//! The `stunedge` command: `serve`, `check-config`, `--print-config`. Parses arguments, loads
//! and validates the configuration, sets up logging and signals, and runs the server. Errors
//! in configuration or start-up print one line and exit with status 2. SIGHUP re-reads the
//! configuration file and swaps in the new answer and authentication settings; a bad file keeps
//! the running configuration and logs why.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use stunedge::admin::{Admin, Health};
use stunedge::config::{Config, Settings};
use stunedge::metrics::ReloadStats;
use stunedge::worker::{Server, unix_now};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for configuration and start-up errors.
const EXIT_CONFIG: u8 = 2;

/// How often counters are logged at debug level.
const STATS_EVERY: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(name = "stunedge", version, about = "A STUN edge server: per-core workers answering Binding requests")]
struct Cli {
    /// Print the default configuration, every field commented, and exit.
    #[arg(long)]
    print_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (UDP 3478 on every IPv4 and IPv6 address unless configured otherwise).
    Serve {
        /// TOML configuration file; without it the embedded defaults are used.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Ask a STUN server for this host's reflexive address (RFC 8489 Binding, with §6.2.1
    /// retransmissions); exit 0 with the address, 1 with the reason when it fails.
    Probe {
        /// The server: `host`, `host:port` or `[v6]:port` (port 3478 when absent).
        server: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Initial retransmission timeout in milliseconds (RFC 8489 RTO).
        #[arg(long, default_value_t = 500)]
        rto_ms: u64,
        /// Requests sent before giving up (Rc).
        #[arg(long, default_value_t = 7)]
        retries: u32,
        /// USERNAME for authenticated Binding (short-term unless --long-term).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Password for --username.
        #[arg(long, requires = "username")]
        password: Option<String>,
        /// Use long-term credentials (answer the server's 401 challenge).
        #[arg(long, requires = "username")]
        long_term: bool,
        /// Run the RFC 5780 mapping and filtering tests and print both behaviours and the NAT
        /// type (the server must run RFC 5780: answer with OTHER-ADDRESS, honour CHANGE-REQUEST).
        #[arg(long, conflicts_with_all = ["keepalive", "lifetime", "candidates", "username"])]
        nat: bool,
        /// Send a Binding every SECONDS from one socket, keeping its NAT binding alive; print
        /// the first mapping, every change and every unanswered request.
        #[arg(long, value_name = "SECONDS", conflicts_with_all = ["lifetime", "candidates", "username"])]
        keepalive: Option<f64>,
        /// With --keepalive: stop after N requests (default: until interrupted).
        #[arg(long, value_name = "N", requires = "keepalive")]
        count: Option<u64>,
        /// Measure how long the NAT keeps an idle binding (RFC 5780 §4.6; needs RFC 5780's
        /// RESPONSE-PORT on the server): idle times double until a binding dies, then a binary
        /// search. Takes about three times the lifetime.
        #[arg(long, conflicts_with_all = ["candidates", "username"])]
        lifetime: bool,
        /// With --lifetime: give up above this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 600.0, requires = "lifetime")]
        lifetime_max: f64,
        /// With --lifetime: the precision of the result, seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0, requires = "lifetime")]
        lifetime_precision: f64,
        /// Gather host candidates (this host's addresses) and server-reflexive candidates and
        /// print them as SDP a=candidate lines with RFC 8445 priorities.
        #[arg(long, conflicts_with = "username")]
        candidates: bool,
    },
    /// Check a configuration file and exit: 0 when valid, 2 with the reason when not.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{}", Config::default().to_commented_toml());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Probe {
            server,
            json,
            rto_ms,
            retries,
            username,
            password,
            long_term,
            nat,
            keepalive,
            count,
            lifetime,
            lifetime_max,
            lifetime_precision,
            candidates,
        }) => {
            let credentials = username.zip(password).map(|(username, password)| {
                if long_term {
                    stunedge::client::Credentials::LongTerm { username, password }
                } else {
                    stunedge::client::Credentials::ShortTerm { username, password }
                }
            });
            let retransmit = stunedge::client::Retransmit {
                rto: Duration::from_millis(rto_ms.max(1)),
                rc: retries.max(1),
                ..Default::default()
            };
            let mode = if nat {
                ProbeMode::Nat
            } else if let Some(every) = keepalive {
                match seconds("--keepalive", every) {
                    Ok(every) => ProbeMode::Keepalive(every, count),
                    Err(code) => return code,
                }
            } else if lifetime {
                match (seconds("--lifetime-max", lifetime_max), seconds("--lifetime-precision", lifetime_precision)) {
                    (Ok(max), Ok(precision)) => ProbeMode::Lifetime { max, precision },
                    (Err(code), _) | (_, Err(code)) => return code,
                }
            } else if candidates {
                ProbeMode::Candidates
            } else {
                ProbeMode::Binding(credentials)
            };
            probe(&server, json, mode, &retransmit)
        }
        Some(Command::CheckConfig { file }) => match load(Some(file.clone())) {
            Ok(settings) => {
                for warning in &settings.warnings {
                    eprintln!("stunedge: warning: {warning}");
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        None => {
            let _ = Cli::command().print_help();
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// What `stunedge probe` does.
enum ProbeMode {
    /// One Binding, with optional credentials.
    Binding(Option<stunedge::client::Credentials>),
    /// RFC 5780 mapping and filtering tests.
    Nat,
    /// Keepalives every interval, optionally a given number of them.
    Keepalive(Duration, Option<u64>),
    /// Binding lifetime measurement.
    Lifetime { max: Duration, precision: Duration },
    /// ICE candidates.
    Candidates,
}

/// A positive, finite number of seconds from the command line.
fn seconds(flag: &str, value: f64) -> Result<Duration, ExitCode> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        eprintln!("stunedge probe: {flag} {value}: must be a number of seconds above 0 and at most 86400");
        Err(ExitCode::from(EXIT_CONFIG))
    }
}

/// `stunedge probe`: resolves the server and runs the mode.
fn probe(server: &str, json: bool, mode: ProbeMode, retransmit: &stunedge::client::Retransmit) -> ExitCode {
    let Some(addr) = stunedge::client::resolve(server) else {
        eprintln!("stunedge probe: cannot resolve {server:?} (use host, host:port or [v6]:port)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let outcome = match mode {
        ProbeMode::Binding(credentials) => return probe_binding(addr, json, credentials.as_ref(), retransmit),
        ProbeMode::Nat => stunedge::client::nat::discover(addr, retransmit).map(|report| {
            println!("{}", if json { report.json() } else { report.to_string() });
        }),
        ProbeMode::Keepalive(every, count) => stunedge::client::nat::keepalive(addr, every, count, retransmit, |e| {
            if json {
                println!("{}", e.json());
            } else {
                let mapped = e.mapped.map_or("no answer".to_string(), |m| format!("mapped {m}"));
                println!("{:8.3} s  {mapped}{}", e.at.as_secs_f64(), if e.changed { "  (changed)" } else { "" });
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
        })
        .map(|changes| {
            if !json {
                println!("{changes} mapping change{}", if changes == 1 { "" } else { "s" });
            }
        }),
        ProbeMode::Lifetime { max, precision } => {
            let mut trials = Vec::new();
            stunedge::client::nat::binding_lifetime(addr, precision, max, retransmit, |idle, alive| {
                if !json {
                    println!("idle {:7.2} s: binding {}", idle.as_secs_f64(), if alive { "alive" } else { "expired" });
                }
                trials.push(format!("{{\"idle_s\": {:.3}, \"alive\": {alive}}}", idle.as_secs_f64()));
            })
            .map(|range| match (range, json) {
                (Some((alive, dead)), false) => {
                    println!("binding lifetime: between {:.2} s and {:.2} s", alive.as_secs_f64(), dead.as_secs_f64())
                }
                (None, false) => println!("binding lifetime: more than {:.2} s", max.as_secs_f64()),
                (range, true) => println!(
                    "{{\"server\": \"{addr}\", \"lifetime_min_s\": {:.3}, \"lifetime_max_s\": {}, \"trials\": [{}]}}",
                    range.map_or(max, |r| r.0).as_secs_f64(),
                    range.map_or("null".to_string(), |r| format!("{:.3}", r.1.as_secs_f64())),
                    trials.join(", ")
                ),
            })
        }
        ProbeMode::Candidates => stunedge::client::nat::candidates(addr, retransmit).map(|list| {
            if json {
                let items: Vec<String> = list.iter().map(|c| c.json()).collect();
                println!("[{}]", items.join(", "));
            } else {
                for c in &list {
                    println!("{}", c.sdp());
                }
            }
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(addr, json, &e),
    }
}

/// Prints a probe failure (and the JSON error object in JSON mode); exit 1.
fn fail(addr: std::net::SocketAddr, json: bool, e: &stunedge::client::ProbeError) -> ExitCode {
    if json {
        println!("{{\"server\": \"{addr}\", \"error\": \"{}\"}}", e.to_string().replace('"', "'"));
    }
    eprintln!("stunedge probe: {addr}: {e}");
    ExitCode::FAILURE
}

/// One Binding (with retransmissions and optional credentials), printed as text or JSON.
fn probe_binding(
    addr: std::net::SocketAddr,
    json: bool,
    credentials: Option<&stunedge::client::Credentials>,
    retransmit: &stunedge::client::Retransmit,
) -> ExitCode {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = match std::net::UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stunedge probe: cannot open a UDP socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    match stunedge::client::binding(&socket, addr, credentials, retransmit) {
        Ok(b) => {
            if json {
                println!(
                    "{{\"server\": \"{addr}\", \"local\": \"{}\", \"mapped\": \"{}\", \"rtt_ms\": {:.3}, \"attempts\": {}, \"authenticated\": {}}}",
                    b.local,
                    b.mapped,
                    b.rtt.as_secs_f64() * 1e3,
                    b.attempts,
                    b.authenticated
                );
            } else {
                println!(
                    "mapped address {} (from {}, server {addr}, rtt {:.2} ms, {} request{}{})",
                    b.mapped,
                    b.local,
                    b.rtt.as_secs_f64() * 1e3,
                    b.attempts,
                    if b.attempts == 1 { "" } else { "s" },
                    if b.authenticated { ", authenticated" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(addr, json, &e),
    }
}

/// SIGHUP: re-reads the file, and on success swaps every listener's answer and authentication
/// settings into the running workers. Anything wrong keeps the running configuration.
fn reload_config(server: &Server, path: Option<&std::path::Path>, running: &Settings) -> bool {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: started without a configuration file");
        return false;
    };
    let new = match Config::from_file(path).and_then(|c| c.validate(&allowed_cpus())) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            return false;
        }
    };
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    if new.listen != running.listen || new.nat != running.nat {
        tracing::error!(
            "reload failed, keeping the running configuration: server.listen or [rfc5780] changed; restart to apply"
        );
        return false;
    }
    if new.cpus != running.cpus
        || new.backend != running.backend
        || new.batch_size != running.batch_size
        || new.admin_listen != running.admin_listen
        || new.drain != running.drain
    {
        tracing::warn!("[io] and [admin] changes take effect only after a restart");
    }
    match server.reload(new.handlers) {
        Ok(()) => {
            tracing::info!("configuration reloaded from {}", path.display());
            true
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}

/// The CPUs this process may run on (its affinity mask).
fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

fn load(path: Option<PathBuf>) -> Result<Settings, ExitCode> {
    let config = match &path {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    };
    config.and_then(|c| c.validate(&allowed_cpus())).map_err(|e| {
        eprintln!("stunedge: config error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let settings = match load(path.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_max_level(settings.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }

    // Signal handlers first: a SIGTERM that arrives while (or just after) workers start must
    // stop them cleanly, not kill the process. SIGINT stops at once; SIGTERM drains first
    // (admin.drain_seconds). A second signal of either kind ends the process at once.
    let stop = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [(signal_hook::consts::SIGINT, &stop), (signal_hook::consts::SIGTERM, &term)] {
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register_conditional_shutdown(signal, 1, term.clone()))
            .and_then(|_| signal_hook::flag::register(signal, flag.clone()));
        if let Err(e) = registered {
            eprintln!("stunedge: cannot install signal handler: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        eprintln!("stunedge: cannot install signal handler: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut server = match Server::start(&settings) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("stunedge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let reloads = Arc::new(ReloadStats::new(unix_now()));
    let health = Arc::new(Health::default());
    let _admin = match settings.admin_listen {
        Some(addr) => match Admin::start(addr, server.exporter(reloads.clone()), health.clone()) {
            Ok(admin) => {
                tracing::info!(listen = %admin.local_addr(), "admin endpoint: /metrics /healthz /readyz");
                Some(admin)
            }
            Err(e) => {
                eprintln!("stunedge: cannot listen on admin.listen {addr}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = addrs.join(", "),
        workers = server.cpus().len(),
        backend = server.backend().name(),
        "stunedge {} serving",
        env!("CARGO_PKG_VERSION")
    );

    let mut last_stats = Instant::now();
    let mut failed = false;
    let mut drain_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if server.any_worker_exited() && !stop.load(Ordering::Relaxed) {
            health.set_workers_running(false);
            tracing::error!("a worker thread ended unexpectedly; stopping");
            failed = true;
            break;
        }
        if term.load(Ordering::Relaxed) && drain_until.is_none() {
            health.start_draining();
            drain_until = Some(Instant::now() + settings.drain);
            if !settings.drain.is_zero() {
                tracing::info!(
                    "SIGTERM: draining for {} s (/readyz answers 503), then stopping",
                    settings.drain.as_secs()
                );
            }
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        if reload.swap(false, Ordering::Relaxed) {
            let ok = reload_config(&server, path.as_deref(), &settings);
            reloads.record(ok, unix_now());
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            for (cpu, stats) in server.cpus().iter().zip(server.worker_stats()) {
                tracing::debug!(worker = cpu, "counters: {stats}");
            }
        }
    }
    server.stop();
    let panicked = server.join();
    tracing::info!("stopped; totals: {}", server.stats());
    if failed || panicked > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
