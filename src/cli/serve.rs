//! `stunedge serve`: logging, signals, the server and its admin endpoint, and the loop that
//! watches them. SIGINT stops at once; SIGTERM drains for `admin.drain_seconds` first; a second
//! signal of either kind ends the process. SIGHUP re-reads the configuration file and, when
//! [`Settings::reload_plan`] allows it, swaps in the new answer and authentication settings; a
//! bad file keeps the running configuration and logs why.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{EXIT_CONFIG, allowed_cpus, fail, load};
use crate::admin::{Admin, Health};
use crate::config::{Config, Settings};
use crate::metrics::ReloadStats;
use crate::worker::{Server, unix_now};

/// How often counters are logged at debug level.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Runs the server until a signal stops it (or a worker ends unexpectedly: exit status 1).
pub(super) fn serve(path: Option<PathBuf>) -> ExitCode {
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
            return fail(EXIT_CONFIG, format_args!("stunedge: cannot install signal handler: {e}"));
        }
    }
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        return fail(EXIT_CONFIG, format_args!("stunedge: cannot install signal handler: {e}"));
    }
    let mut server = match Server::start(&settings) {
        Ok(server) => server,
        Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge: {e}")),
    };
    let reloads = Arc::new(ReloadStats::new(unix_now()));
    let health = Arc::new(Health::default());
    let admin = match settings.admin_listen {
        Some(addr) => match Admin::start_with_token(
            addr,
            server.exporter(reloads.clone()),
            health.clone(),
            settings.metrics_token.clone(),
        ) {
            Ok(admin) => {
                tracing::info!(listen = %admin.local_addr(), "admin endpoint: /metrics /healthz /readyz");
                Some(admin)
            }
            Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge: cannot listen on admin.listen {addr}: {e}")),
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
            let ok = reload_config(&server, admin.as_ref(), path.as_deref(), &settings);
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

/// SIGHUP: re-reads the file, and on success swaps every listener's answer and authentication
/// settings into the running workers, and the `/metrics` token into the admin endpoint.
/// Anything wrong keeps the running configuration.
fn reload_config(server: &Server, admin: Option<&Admin>, path: Option<&Path>, running: &Settings) -> bool {
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
    let plan = match running.reload_plan(&new) {
        Ok(plan) => plan,
        Err(refused) => {
            tracing::error!("reload failed, keeping the running configuration: {refused}");
            return false;
        }
    };
    if let Some(warning) = plan.warning() {
        tracing::warn!("{warning}");
    }
    match server.reload(new.handlers) {
        Ok(()) => {
            if let Some(admin) = admin {
                admin.set_metrics_token(new.metrics_token);
            }
            tracing::info!("configuration reloaded from {}", path.display());
            true
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}
