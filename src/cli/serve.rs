//! `stunedge serve`: logging, signals, the server and its admin endpoint, and the loop that
//! watches them. SIGINT stops at once; SIGTERM drains for `admin.drain_seconds` first; a second
//! signal of either kind cuts the drain short and stops at once through the same path (the
//! totals are logged, exit status 1); a third ends the process at once (exit status 1), in case
//! stopping hangs. SIGHUP re-reads the configuration file and, when [`Settings::reload_plan`]
//! allows it, swaps in the new answer and authentication settings and the new `log.level`; a
//! bad file keeps the running configuration and logs why.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Registry, reload};

use super::{EXIT_CONFIG, allowed_cpus, fail, load};
use crate::admin::{Admin, Health};
use crate::config::{Config, Settings};
use crate::metrics::ReloadStats;
use crate::stream::Plane;
use crate::worker::{Server, unix_now};

/// How often counters are logged at debug level.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Where a reload sets the running log level.
type LevelHandle = reload::Handle<LevelFilter, Registry>;

/// The flags the stop signals set, counted on their own thread (`signals`): the first SIGINT
/// sets `stop`, the first SIGTERM `term` (drain, then stop); the second of either kind sets
/// `cut` and `stop` (skip the rest of the drain); the third ends the process at once with
/// status 1, the safety net for a stop that hangs.
struct StopSignals {
    stop: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flags = StopSignals {
            stop: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            cut: Arc::new(AtomicBool::new(false)),
        };
        // The handlers are in place when `new` returns; signals that arrive before the thread
        // reads them wait in its pipe.
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let (stop, term, cut) = (flags.stop.clone(), flags.term.clone(), flags.cut.clone());
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            let mut seen = 0u32;
            for signal in signals.forever() {
                seen += 1;
                match seen {
                    1 if signal == SIGINT => stop.store(true, Ordering::Relaxed),
                    1 => term.store(true, Ordering::Relaxed),
                    2 => {
                        cut.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                    _ => {
                        tracing::error!("a third stop signal: exiting at once");
                        std::process::exit(1);
                    }
                }
            }
        })?;
        Ok(flags)
    }
}

/// Runs the server until a signal stops it (or a worker ends unexpectedly: exit status 1).
pub(super) fn serve(path: Option<PathBuf>) -> ExitCode {
    let mut settings = match load(path.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The level sits in a reloadable filter in front of the formatter, so SIGHUP can change it.
    let (filter, levels) = reload::Layer::new(LevelFilter::from_level(settings.log_level));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }

    // Signal handlers first: a SIGTERM that arrives while (or just after) workers start must
    // stop them cleanly, not kill the process. SIGINT stops at once; SIGTERM drains first
    // (admin.drain_seconds); a second signal cuts the drain short; a third exits at once.
    let StopSignals { stop, term, cut } = match StopSignals::install() {
        Ok(flags) => flags,
        Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge: cannot install signal handler: {e}")),
    };
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        return fail(EXIT_CONFIG, format_args!("stunedge: cannot install signal handler: {e}"));
    }
    let mut server = match Server::start(&settings) {
        Ok(server) => server,
        Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge: {e}")),
    };
    let stream = match Plane::start(&settings.stream) {
        Ok(plane) => plane,
        Err(e) => {
            server.stop();
            server.join();
            return fail(EXIT_CONFIG, format_args!("stunedge: {e}"));
        }
    };
    let reloads = Arc::new(ReloadStats::new(unix_now()));
    let health = Arc::new(Health::default());
    let exporter = match &stream {
        Some(plane) => server.exporter(reloads.clone()).with_stream(plane.viewer()),
        None => server.exporter(reloads.clone()),
    };
    let admin = match settings.admin_listen {
        Some(addr) => match Admin::start_with_token(addr, exporter, health.clone(), settings.metrics_token.clone()) {
            Ok(admin) => {
                tracing::info!(listen = %admin.local_addr(), "admin endpoint: /metrics /healthz /readyz");
                Some(admin)
            }
            Err(e) => return fail(EXIT_CONFIG, format_args!("stunedge: cannot listen on admin.listen {addr}: {e}")),
        },
        None => None,
    };
    let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
    if let Some(plane) = &stream {
        let streams: Vec<String> = plane.local_addrs().iter().map(|(a, t)| format!("{}://{a}", t.label())).collect();
        tracing::info!(listen = streams.join(", "), "stream listeners (TCP, TLS)");
    }
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
        // The whole rate-limit table once a minute (1,200 turns of 50 ms).
        server.sweep_limit(1200);
        server.tick_xdp();
        if stream.as_ref().is_some_and(Plane::any_exited) && !stop.load(Ordering::Relaxed) {
            health.set_workers_running(false);
            tracing::error!("a stream thread ended unexpectedly; stopping");
            failed = true;
            break;
        }
        if server.any_worker_exited() && !stop.load(Ordering::Relaxed) {
            health.set_workers_running(false);
            tracing::error!("a worker thread ended unexpectedly; stopping");
            failed = true;
            break;
        }
        if term.load(Ordering::Relaxed) && drain_until.is_none() {
            health.start_draining();
            // The workers answer what is left: the XDP program is detached first.
            server.detach_xdp();
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
            let ok = reload_config(&server, stream.as_ref(), admin.as_ref(), path.as_deref(), &mut settings, &levels);
            reloads.record(ok, unix_now());
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            for (cpu, stats) in server.cpus().iter().zip(server.worker_stats()) {
                tracing::debug!(worker = cpu, "counters: {stats}");
            }
        }
    }
    if cut.load(Ordering::Relaxed) {
        tracing::warn!("a second stop signal: stopping now (a third exits at once)");
    }
    server.stop();
    if let Some(plane) = stream {
        plane.stop();
    }
    let panicked = server.join();
    tracing::info!("stopped; totals: {}", server.stats());
    // Status 1 also for a stop a second signal hurried (the drain cut short), even one that came
    // while the workers were stopping.
    let cut = cut.load(Ordering::Relaxed);
    if failed || cut || panicked > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// SIGHUP: re-reads the file, and on success swaps every listener's answer and authentication
/// settings into the running workers, the `/metrics` token into the admin endpoint, and sets a
/// changed `log.level` (recorded in `running`). Anything wrong keeps the running configuration.
fn reload_config(
    server: &Server,
    stream: Option<&Plane>,
    admin: Option<&Admin>,
    path: Option<&Path>,
    running: &mut Settings,
    levels: &LevelHandle,
) -> bool {
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
    let old_level = running.log_level;
    if let Some(level) = plan.log_level {
        if let Err(e) = set_level(levels, old_level, level) {
            tracing::error!("reload failed, keeping the running configuration: log.level cannot be changed: {e}");
            return false;
        }
    }
    let listeners = new.handlers.len();
    match server.reload(new.handlers) {
        Ok(()) => {
            server.reload_xdp(&new.xdp, new.limit.rules.params());
            if let Some(plane) = stream {
                plane.reload(&new.stream);
            }
            running.log_level = new.log_level;
            if let Some(admin) = admin {
                admin.set_metrics_token(new.metrics_token);
            }
            tracing::info!("configuration reloaded from {}", path.display());
            tracing::debug!(
                listeners,
                "every worker takes the new answer and authentication settings at its next turn"
            );
            true
        }
        Err(e) => {
            if plan.log_level.is_some() {
                let _ = set_level(levels, new.log_level, old_level);
            }
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}

/// Sets the log level from `old` to `new`, and says so at info level: after the change when it
/// is more verbose, before it otherwise, so the line shows whenever either level shows info.
fn set_level(levels: &LevelHandle, old: tracing::Level, new: tracing::Level) -> Result<(), reload::Error> {
    let announce = || tracing::info!("log.level changed to {}", new.as_str().to_ascii_lowercase());
    if new > old {
        levels.reload(LevelFilter::from_level(new))?;
        announce();
    } else {
        announce();
        levels.reload(LevelFilter::from_level(new))?;
    }
    Ok(())
}
