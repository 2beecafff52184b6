//! `stunedge probe`: the arguments, the mode they select ([`ProbeMode`], checked before anything
//! is sent), and the text or one-line JSON output of each mode. The STUN transactions themselves
//! are [`crate::client`]'s.

use std::fmt;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::{EXIT_CONFIG, fail};
use crate::client::{self, Credentials, ProbeError, Retransmit, json, nat};

/// `stunedge probe`'s arguments.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ProbeArgs {
    /// The server: `host`, `host:port`, `v6`, `[v6]` or `[v6]:port` (port 3478 when absent).
    pub server: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Initial retransmission timeout in milliseconds (RFC 8489 RTO), 1 to 60000.
    #[arg(long, default_value_t = 500)]
    pub rto_ms: u64,
    /// Requests sent before giving up (Rc), 1 to 20.
    #[arg(long, default_value_t = 7)]
    pub retries: u32,
    /// USERNAME for authenticated Binding (short-term unless --long-term); the password comes
    /// from --password-file, --password or the STUNEDGE_PASSWORD environment variable.
    #[arg(long)]
    pub username: Option<String>,
    /// Password for --username. Other users can read it in `ps`: prefer --password-file or
    /// STUNEDGE_PASSWORD.
    #[arg(long, requires = "username", conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password for --username from the first line of FILE (its newline stripped).
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Use long-term credentials (answer the server's 401 challenge).
    #[arg(long, requires = "username")]
    pub long_term: bool,
    /// Run the RFC 5780 mapping and filtering tests and print both behaviours and the NAT
    /// type (the server must run RFC 5780: answer with OTHER-ADDRESS, honour CHANGE-REQUEST).
    #[arg(long, conflicts_with_all = ["keepalive", "lifetime", "candidates", "username"])]
    pub nat: bool,
    /// Send a Binding every SECONDS from one socket, keeping its NAT binding alive; print
    /// the first mapping, every change and every unanswered request.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["lifetime", "candidates", "username"])]
    pub keepalive: Option<f64>,
    /// With --keepalive: stop after N requests (default: until interrupted).
    #[arg(long, value_name = "N", requires = "keepalive")]
    pub count: Option<u64>,
    /// Measure how long the NAT keeps an idle binding (RFC 5780 §4.6; needs RFC 5780's
    /// RESPONSE-PORT on the server): idle times double until a binding dies, then a binary
    /// search. Takes about three times the lifetime.
    #[arg(long, conflicts_with_all = ["candidates", "username"])]
    pub lifetime: bool,
    /// With --lifetime: give up above this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0, requires = "lifetime")]
    pub lifetime_max: f64,
    /// With --lifetime: the precision of the result, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, requires = "lifetime")]
    pub lifetime_precision: f64,
    /// Gather host candidates (this host's addresses) and server-reflexive candidates and
    /// print them as SDP a=candidate lines with RFC 8445 priorities.
    #[arg(long, conflicts_with = "username")]
    pub candidates: bool,
}

/// The environment variable `--username` takes its password from when neither `--password` nor
/// `--password-file` is given.
pub const PASSWORD_ENV: &str = "STUNEDGE_PASSWORD";

impl ProbeArgs {
    /// The retransmission schedule: `--rto-ms` and `--retries` (their ranges are checked by
    /// [`ProbeMode::try_from`]).
    pub fn retransmit(&self) -> Retransmit {
        Retransmit { rto: Duration::from_millis(self.rto_ms), rc: self.retries, ..Default::default() }
    }

    /// These arguments with `password` filled in for `--username`: from `--password`, else the
    /// first line of `--password-file`, else `env` (the value of [`PASSWORD_ENV`]). A file that
    /// cannot be read is an error naming it; a missing or empty password is left to
    /// [`ProbeMode::try_from`].
    pub fn with_password(mut self, env: Option<String>) -> Result<ProbeArgs, String> {
        if self.username.is_none() || self.password.is_some() {
            return Ok(self);
        }
        self.password = match &self.password_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("--password-file {}: cannot read: {e}", file.display()))?;
                let line = text.split('\n').next().unwrap_or("");
                Some(line.strip_suffix('\r').unwrap_or(line).to_string())
            }
            None => env,
        };
        Ok(self)
    }
}

/// What `stunedge probe` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeMode {
    /// One Binding, with optional credentials.
    Binding(Option<Credentials>),
    /// RFC 5780 mapping and filtering tests.
    Nat,
    /// Keepalives every interval, optionally a given number of them.
    Keepalive(Duration, Option<u64>),
    /// Binding lifetime measurement.
    Lifetime {
        /// Give up above this.
        max: Duration,
        /// The precision of the result.
        precision: Duration,
    },
    /// ICE candidates.
    Candidates,
}

/// An argument out of its range, or missing: `--keepalive 0: must be a number of seconds above 0
/// and at most 86400`, `--retries 0: must be between 1 and 20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArgument {
    /// The flag, e.g. `--keepalive`.
    pub flag: &'static str,
    /// The value given, as written back (empty when the value is missing or secret).
    pub value: String,
    /// What it must be.
    pub must: &'static str,
}

impl fmt::Display for BadArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.flag, self.must)
        } else {
            write!(f, "{} {}: {}", self.flag, self.value, self.must)
        }
    }
}

impl std::error::Error for BadArgument {}

/// A positive, finite number of seconds from the command line.
fn seconds(flag: &'static str, value: f64) -> Result<Duration, BadArgument> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(BadArgument {
            flag,
            value: value.to_string(),
            must: "must be a number of seconds above 0 and at most 86400",
        })
    }
}

/// `--rto-ms` and `--retries` in range. The upper bounds keep the doubling RTO far from
/// overflowing (60 s × 2^19 is about a year).
fn retransmit_errors(args: &ProbeArgs) -> Vec<BadArgument> {
    let mut bad = Vec::new();
    if !(1..=60_000).contains(&args.rto_ms) {
        bad.push(BadArgument { flag: "--rto-ms", value: args.rto_ms.to_string(), must: "must be between 1 and 60000" });
    }
    if !(1..=20).contains(&args.retries) {
        bad.push(BadArgument { flag: "--retries", value: args.retries.to_string(), must: "must be between 1 and 20" });
    }
    bad
}

impl TryFrom<&ProbeArgs> for ProbeMode {
    /// Every argument out of range, in the order of `--help` (never empty).
    type Error = Vec<BadArgument>;

    /// The mode the flags select (clap has already refused conflicting ones), with `--rto-ms`,
    /// `--retries`, the password for `--username` (see [`ProbeArgs::with_password`]) and the
    /// seconds arguments checked.
    fn try_from(args: &ProbeArgs) -> Result<ProbeMode, Vec<BadArgument>> {
        let mut bad = retransmit_errors(args);
        if args.username.is_some() && args.password.as_deref().is_none_or(str::is_empty) {
            let must = if args.password_file.is_some() {
                "the file's first line is empty: no password"
            } else {
                "needs a password: --password-file FILE, --password or the STUNEDGE_PASSWORD environment variable"
            };
            bad.push(BadArgument { flag: "--username", value: String::new(), must });
        }
        let mode = ProbeMode::select(args);
        match mode {
            Ok(mode) if bad.is_empty() => Ok(mode),
            Ok(_) => Err(bad),
            Err(more) => Err(bad.into_iter().chain(more).collect()),
        }
    }
}

impl ProbeMode {
    /// The mode the flags select, with its seconds arguments checked.
    fn select(args: &ProbeArgs) -> Result<ProbeMode, Vec<BadArgument>> {
        Ok(if args.nat {
            ProbeMode::Nat
        } else if let Some(every) = args.keepalive {
            ProbeMode::Keepalive(seconds("--keepalive", every).map_err(|e| vec![e])?, args.count)
        } else if args.lifetime {
            match (
                seconds("--lifetime-max", args.lifetime_max),
                seconds("--lifetime-precision", args.lifetime_precision),
            ) {
                (Ok(max), Ok(precision)) => ProbeMode::Lifetime { max, precision },
                (max, precision) => return Err(max.err().into_iter().chain(precision.err()).collect()),
            }
        } else if args.candidates {
            ProbeMode::Candidates
        } else {
            let credentials = args.username.clone().zip(args.password.clone()).map(|(username, password)| {
                if args.long_term {
                    Credentials::LongTerm { username, password }
                } else {
                    Credentials::ShortTerm { username, password }
                }
            });
            ProbeMode::Binding(credentials)
        })
    }
}

/// `stunedge probe`: reads the password, checks the mode, resolves the server and runs the mode.
pub(super) fn probe(args: ProbeArgs) -> ExitCode {
    let args = match args.with_password(std::env::var(PASSWORD_ENV).ok()) {
        Ok(args) => args,
        Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge probe: {e}")),
    };
    let args = &args;
    let mode = match ProbeMode::try_from(args) {
        Ok(mode) => mode,
        Err(bad) => {
            for e in &bad {
                eprintln!("stunedge probe: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let addr = match client::resolve(&args.server) {
        Ok(addr) => addr,
        Err(e) => {
            return fail(
                EXIT_CONFIG,
                format_args!(
                    "stunedge probe: cannot resolve {:?}: {e} (use host, host:port, [v6] or [v6]:port)",
                    args.server
                ),
            );
        }
    };
    let (json, retransmit) = (args.json, &args.retransmit());
    let outcome = match mode {
        ProbeMode::Binding(credentials) => return binding(addr, json, credentials.as_ref(), retransmit),
        ProbeMode::Nat => nat::discover(addr, retransmit).map(|report| {
            println!("{}", if json { report.json() } else { report.to_string() });
        }),
        ProbeMode::Keepalive(every, count) => nat::keepalive(addr, every, count, retransmit, |e| {
            if json {
                println!("{}", e.json());
            } else {
                let mapped = e.mapped.map_or("no answer".to_string(), |m| format!("mapped {m}"));
                println!("{:8.3} s  {mapped}{}", e.at.as_secs_f64(), if e.changed { "  (changed)" } else { "" });
            }
            let _ = std::io::stdout().flush();
        })
        .map(|changes| {
            if !json {
                println!("{changes} mapping change{}", if changes == 1 { "" } else { "s" });
            }
        }),
        ProbeMode::Lifetime { max, precision } => lifetime(addr, json, max, precision, retransmit),
        ProbeMode::Candidates => nat::candidates(addr, retransmit).map(|list| {
            if json {
                let items: Vec<String> = list.iter().map(nat::Candidate::json).collect();
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
        Err(e) => failed(addr, json, &e),
    }
}

/// `--lifetime`: each trial as it ends (text), then the range found.
fn lifetime(
    addr: SocketAddr,
    json: bool,
    max: Duration,
    precision: Duration,
    retransmit: &Retransmit,
) -> Result<(), ProbeError> {
    let mut trials = Vec::new();
    let range = nat::binding_lifetime(addr, precision, max, retransmit, |idle, alive| {
        if !json {
            println!("idle {:7.2} s: binding {}", idle.as_secs_f64(), if alive { "alive" } else { "expired" });
        }
        trials.push(Trial { idle_s: idle.as_secs_f64(), alive });
    })?;
    match (range, json) {
        (Some((alive, dead)), false) => {
            println!("binding lifetime: between {:.2} s and {:.2} s", alive.as_secs_f64(), dead.as_secs_f64());
        }
        (None, false) => println!("binding lifetime: more than {:.2} s", max.as_secs_f64()),
        (range, true) => println!(
            "{}",
            json::line(&LifetimeJson {
                server: addr,
                lifetime_min_s: range.map_or(max, |r| r.0).as_secs_f64(),
                lifetime_max_s: range.map(|r| r.1.as_secs_f64()),
                trials,
            })
        ),
    }
    Ok(())
}

/// One Binding (with retransmissions and optional credentials), printed as text or JSON.
fn binding(addr: SocketAddr, json: bool, credentials: Option<&Credentials>, retransmit: &Retransmit) -> ExitCode {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return fail(1, format_args!("stunedge probe: cannot open a UDP socket: {e}")),
    };
    // On stderr, so that stdout stays one JSON object with --json.
    let mut still_waiting = |s: &client::Silence| {
        eprintln!(
            "stunedge probe: no answer from {} yet ({} request{} sent); retrying until {:?} after the first",
            s.server,
            s.sent,
            if s.sent == 1 { "" } else { "s" },
            s.timeout
        );
    };
    match client::binding_with_notice(&socket, addr, credentials, retransmit, &mut still_waiting) {
        Ok(b) => {
            if json {
                println!("{}", json::line(&BindingJson::new(addr, &b)));
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
        Err(e) => failed(addr, json, &e),
    }
}

/// Prints a probe failure (and, in JSON mode, an error object on stdout); exit status 1.
fn failed(addr: SocketAddr, json: bool, e: &ProbeError) -> ExitCode {
    if json {
        println!("{}", json::line(&ErrorJson { server: addr, error: e.to_string() }));
    }
    fail(1, format_args!("stunedge probe: {addr}: {e}"))
}

/// `probe --json`'s answer to one Binding.
#[derive(Serialize)]
struct BindingJson {
    server: SocketAddr,
    local: SocketAddr,
    mapped: SocketAddr,
    rtt_ms: f64,
    attempts: u32,
    authenticated: bool,
}

impl BindingJson {
    fn new(server: SocketAddr, b: &client::Binding) -> BindingJson {
        BindingJson {
            server,
            local: b.local,
            mapped: b.mapped,
            rtt_ms: b.rtt.as_secs_f64() * 1e3,
            attempts: b.attempts,
            authenticated: b.authenticated,
        }
    }
}

/// `probe --lifetime --json`: the lifetime is at least `lifetime_min_s` and below
/// `lifetime_max_s` (`null`: no binding died within `--lifetime-max`).
#[derive(Serialize)]
struct LifetimeJson {
    server: SocketAddr,
    lifetime_min_s: f64,
    lifetime_max_s: Option<f64>,
    trials: Vec<Trial>,
}

/// One idle trial of `--lifetime`.
#[derive(Serialize)]
struct Trial {
    idle_s: f64,
    alive: bool,
}

/// `probe --json`'s failure: the server and the error's text.
#[derive(Serialize)]
struct ErrorJson {
    server: SocketAddr,
    error: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(line: &[&str]) -> ProbeArgs {
        let cli = Cli::try_parse_from([&["stunedge", "probe"], line].concat()).unwrap();
        match cli.command {
            Some(Command::Probe(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn mode(line: &[&str]) -> Result<ProbeMode, String> {
        ProbeMode::try_from(&args(line))
            .map_err(|bad| bad.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn modes_from_flags() {
        assert_eq!(mode(&["h"]), Ok(ProbeMode::Binding(None)));
        assert_eq!(
            mode(&["h", "--username", "u", "--password", "p", "--long-term"]),
            Ok(ProbeMode::Binding(Some(Credentials::LongTerm { username: "u".into(), password: "p".into() })))
        );
        assert_eq!(mode(&["h", "--nat"]), Ok(ProbeMode::Nat));
        assert_eq!(mode(&["h", "--candidates"]), Ok(ProbeMode::Candidates));
        assert_eq!(
            mode(&["h", "--keepalive", "0.5", "--count", "3"]),
            Ok(ProbeMode::Keepalive(Duration::from_millis(500), Some(3)))
        );
        assert_eq!(
            mode(&["h", "--lifetime"]),
            Ok(ProbeMode::Lifetime { max: Duration::from_secs(600), precision: Duration::from_secs(1) })
        );
        let retransmit = args(&["h", "--rto-ms", "50", "--retries", "4"]).retransmit();
        assert_eq!((retransmit.rto, retransmit.rc), (Duration::from_millis(50), 4));
    }

    #[test]
    fn rto_and_retries_must_be_in_range() {
        assert_eq!(mode(&["h", "--rto-ms", "0"]), Err("--rto-ms 0: must be between 1 and 60000".into()));
        assert_eq!(mode(&["h", "--retries", "0"]), Err("--retries 0: must be between 1 and 20".into()));
        assert_eq!(
            mode(&["h", "--nat", "--rto-ms", "0", "--retries", "21"]),
            Err("--rto-ms 0: must be between 1 and 60000\n--retries 21: must be between 1 and 20".into()),
            "in every mode, both reported"
        );
        assert_eq!(
            mode(&["h", "--rto-ms", "60001", "--keepalive", "0"]),
            Err("--rto-ms 60001: must be between 1 and 60000\n\
                 --keepalive 0: must be a number of seconds above 0 and at most 86400"
                .into())
        );
        assert!(mode(&["h", "--rto-ms", "1", "--retries", "1"]).is_ok());
        assert!(mode(&["h", "--rto-ms", "60000", "--retries", "20"]).is_ok());
    }

    #[test]
    fn the_password_comes_from_the_flag_the_file_or_the_environment() {
        let short = |password: &str| {
            Ok(ProbeMode::Binding(Some(Credentials::ShortTerm { username: "u".into(), password: password.into() })))
        };
        let with = |line: &[&str], env: Option<&str>| {
            let args = args(line).with_password(env.map(String::from))?;
            ProbeMode::try_from(&args).map_err(|bad| bad.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        };
        assert_eq!(with(&["h", "--username", "u", "--password", "p"], Some("env")), short("p"), "the flag wins");
        assert_eq!(with(&["h", "--username", "u"], Some("env")), short("env"));
        assert_eq!(with(&["h"], Some("env")), Ok(ProbeMode::Binding(None)), "no --username: not used");
        let file = std::env::temp_dir().join(format!("stunedge-probe-password-{}", std::process::id()));
        std::fs::write(&file, "s3cret\r\nsecond line\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(with(&["h", "--username", "u", "--password-file", path], Some("env")), short("s3cret"));
        std::fs::write(&file, "s3cret").unwrap();
        assert_eq!(with(&["h", "--username", "u", "--password-file", path], None), short("s3cret"), "no newline");
        std::fs::write(&file, "\nx\n").unwrap();
        assert_eq!(
            with(&["h", "--username", "u", "--password-file", path], None),
            Err("--username: the file's first line is empty: no password".into())
        );
        std::fs::remove_file(&file).unwrap();
        let e = with(&["h", "--username", "u", "--password-file", path], None).unwrap_err();
        assert!(e.starts_with(&format!("--password-file {path}: cannot read: No such file")), "{e}");
        assert_eq!(
            with(&["h", "--username", "u"], None),
            Err("--username: needs a password: --password-file FILE, --password or the STUNEDGE_PASSWORD environment variable".into())
        );
    }

    #[test]
    fn seconds_must_be_above_0_and_at_most_a_day() {
        assert_eq!(
            mode(&["h", "--keepalive", "0"]),
            Err("--keepalive 0: must be a number of seconds above 0 and at most 86400".into())
        );
        assert_eq!(
            mode(&["h", "--keepalive=-1"]),
            Err("--keepalive -1: must be a number of seconds above 0 and at most 86400".into())
        );
        assert_eq!(
            mode(&["h", "--keepalive", "NaN"]),
            Err("--keepalive NaN: must be a number of seconds above 0 and at most 86400".into())
        );
        assert_eq!(
            mode(&["h", "--lifetime", "--lifetime-max", "86401"]),
            Err("--lifetime-max 86401: must be a number of seconds above 0 and at most 86400".into())
        );
        assert_eq!(
            mode(&["h", "--lifetime", "--lifetime-precision", "inf"]),
            Err("--lifetime-precision inf: must be a number of seconds above 0 and at most 86400".into())
        );
        assert_eq!(
            mode(&["h", "--lifetime", "--lifetime-max=0", "--lifetime-precision=-1"]),
            Err("--lifetime-max 0: must be a number of seconds above 0 and at most 86400\n\
                 --lifetime-precision -1: must be a number of seconds above 0 and at most 86400"
                .into()),
            "both are reported"
        );
        assert!(mode(&["h", "--keepalive", "86400"]).is_ok());
    }

    #[test]
    fn json_lines() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let b = client::Binding {
            mapped: a("203.0.113.1:6000"),
            local: a("10.0.0.2:5000"),
            rtt: Duration::from_micros(1500),
            attempts: 2,
            authenticated: false,
        };
        assert_eq!(
            json::line(&BindingJson::new(a("192.0.2.1:3478"), &b)),
            "{\"server\": \"192.0.2.1:3478\", \"local\": \"10.0.0.2:5000\", \"mapped\": \"203.0.113.1:6000\", \
             \"rtt_ms\": 1.500, \"attempts\": 2, \"authenticated\": false}"
        );
        let lifetime = LifetimeJson {
            server: a("192.0.2.1:3478"),
            lifetime_min_s: 2.0,
            lifetime_max_s: None,
            trials: vec![Trial { idle_s: 1.0, alive: true }, Trial { idle_s: 2.5, alive: false }],
        };
        assert_eq!(
            json::line(&lifetime),
            "{\"server\": \"192.0.2.1:3478\", \"lifetime_min_s\": 2.000, \"lifetime_max_s\": null, \
             \"trials\": [{\"idle_s\": 1.000, \"alive\": true}, {\"idle_s\": 2.500, \"alive\": false}]}"
        );
        let error = ErrorJson { server: a("192.0.2.1:3478"), error: "error 401 \"Unauthorized\"".into() };
        assert_eq!(
            json::line(&error),
            "{\"server\": \"192.0.2.1:3478\", \"error\": \"error 401 \\\"Unauthorized\\\"\"}"
        );
    }
}
