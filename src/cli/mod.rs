//! The `stunedge` command line: the argument types, the dispatch to `serve`, `probe`,
//! `check-config` and `--print-config`, and the exit statuses: 0 on success, 1 when a probe
//! fails, the server stops on a failure, or a second SIGINT or SIGTERM stopped it (the drain cut
//! short; the totals are still logged) or a third ended it at once, 2 for a bad configuration,
//! bad arguments or a server that cannot start. The binary (`src/main.rs`) only parses arguments and calls [`run`];
//! everything here is reachable from tests. Configuration rules live in [`crate::config`], the
//! server in [`crate::worker`], the probe client in [`crate::client`].

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, Settings};

mod probe;
mod serve;

pub use probe::{BadArgument, PASSWORD_ENV, ProbeArgs, ProbeMode};

/// Exit status for configuration, argument and start-up errors.
pub const EXIT_CONFIG: u8 = 2;

/// The command line.
#[derive(Parser, Debug)]
#[command(name = "stunedge", version, about = "A STUN edge server: per-core workers answering Binding requests")]
pub struct Cli {
    /// Print the default configuration, every field commented, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// The subcommand; without one (and without `--print-config`), help and exit status 2.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (UDP 3478 on every IPv4 and IPv6 address unless configured otherwise).
    Serve {
        /// TOML configuration file; without it the embedded defaults are used.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Ask a STUN server for this host's reflexive address (RFC 8489 Binding, with §6.2.1
    /// retransmissions); exit 0 with the address, 1 with the reason when it fails.
    Probe(ProbeArgs),
    /// Check a configuration file and exit: 0 when valid, 2 with the reason when not.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
}

/// Runs the parsed command line; returns the process's exit status.
pub fn run(cli: Cli) -> ExitCode {
    if cli.print_config {
        print!("{}", Config::default().to_commented_toml());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Serve { config }) => serve::serve(config),
        Some(Command::Probe(args)) => probe::probe(args),
        Some(Command::CheckConfig { file }) => check_config(file),
        None => {
            let _ = Cli::command().print_help();
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Prints `message` as one line on stderr; returns exit status `code`.
pub fn fail(code: u8, message: impl Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

/// `stunedge check-config FILE`: the warnings on stderr, `FILE: ok` on stdout.
fn check_config(file: PathBuf) -> ExitCode {
    match load(Some(file.clone())) {
        Ok(settings) => {
            for warning in &settings.warnings {
                eprintln!("stunedge: warning: {warning}");
            }
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The CPUs this process may run on (its affinity mask).
fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

/// Reads (or, without a file, defaults) and validates the configuration; on an error, prints it
/// and gives the exit status.
fn load(path: Option<PathBuf>) -> Result<Settings, ExitCode> {
    let config = match &path {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    };
    config
        .and_then(|c| c.validate(&allowed_cpus()))
        .map_err(|e| fail(EXIT_CONFIG, format_args!("stunedge: config error: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["stunedge", "serve", "-c", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Serve { config: Some(p) }) if p == std::path::Path::new("x.toml")));
        let cli = Cli::try_parse_from(["stunedge", "check-config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
        assert!(Cli::try_parse_from(["stunedge", "probe", "h", "--password", "p"]).is_err(), "needs --username");
        assert!(Cli::try_parse_from(["stunedge", "probe", "h", "--password-file", "f"]).is_err(), "needs --username");
        let both = ["stunedge", "probe", "h", "--username", "u", "--password", "p", "--password-file", "f"];
        assert!(Cli::try_parse_from(both).is_err(), "--password and --password-file exclude each other");
    }
}
