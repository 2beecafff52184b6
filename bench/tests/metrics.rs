//! The exported metrics agree with the load generator: run the server in-process with its admin
//! endpoint, offer a mixed load with junk for a second, then compare `/metrics` with the
//! generator's own report (sent, answered, junk) and check the exposition with `promtool`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stunedge::admin::{Admin, Health, http_get};
use stunedge::config::Config;
use stunedge::counters::Counter;
use stunedge::metrics::ReloadStats;
use stunedge::worker::Server;
use stunedge_bench::Kind;
use stunedge_bench::load::{self, Progress};

/// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"` strings).
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|want| rest.contains(want))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// The cumulative buckets of histogram `name` (`name{...,le="B"} N` lines), summed over its
/// label sets, by upper bound in ascending order.
fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let mut by_le: Vec<(f64, u64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        let count = line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() as u64;
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += count,
            None => by_le.push((le, count)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(!by_le.is_empty(), "no {name} buckets");
    by_le
}

/// The integration tests' `support::skip`, for this test binary: in CI (`CI` set) nothing may
/// skip, so it panics with the reason; elsewhere it prints `SKIPPED: <test>: <why>` and appends
/// that line to `$STUNEDGE_SKIP_LOG` (else `skipped.log` in Cargo's target tmpdir), which
/// scripts/ci.sh summarises.
fn skip(test: &str, why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{test} cannot run, and CI must not skip it: {why}");
    let line = format!("SKIPPED: {test}: {why}");
    // Straight to stderr, past the test harness's capture: a skip shows even when the test passes.
    let _ = writeln!(std::io::stderr(), "{line}");
    let log = std::env::var_os("STUNEDGE_SKIP_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log"));
    let appended =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("(could not append to the skip log {}: {e})", log.display());
    }
}

#[test]
fn metrics_agree_with_the_load_generators_counts() {
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[io]\nbackend = \"mmsg\"\ncpus = [{cpu}]\n");
    let settings = Config::from_toml(&text, "test").unwrap().validate(&[cpu]).unwrap();
    let server = Server::start(&settings).unwrap();
    let admin = Admin::start(
        "127.0.0.1:0".parse().unwrap(),
        server.exporter(Arc::new(ReloadStats::new(0))),
        Arc::new(Health::default()),
    )
    .unwrap();
    let config = load::Config {
        server: server.local_addrs()[0],
        cpus: vec![None],
        sockets: 2,
        sources: 1,
        duration: Duration::from_millis(800),
        rate: 0,
        window: 8,
        batch: 8,
        mix: vec![(Kind::Plain, 2), (Kind::Fingerprint, 1), (Kind::Classic, 1), (Kind::Integrity, 1)],
        credentials: Default::default(),
        timeout: Duration::from_secs(1),
        junk_percent: 20,
    };
    let report = load::run(&config, &[Arc::new(Progress::default())]).unwrap();
    assert!(report.sent > 1000, "the load ran: {report:?}");
    assert_eq!((report.invalid, report.lost), (0, 0), "{report:?}");
    // Workers publish once per loop turn: wait until the server has counted everything.
    let expected_in = report.sent + report.junk_sent;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().get(Counter::ReceivedDatagrams) < expected_in && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = http_get(admin.local_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let m = |name, labels: &[&str]| total(&body, name, labels) as u64;
    assert_eq!(m("stunedge_received_datagrams_total", &[]), expected_in);
    // The junk with a bad FINGERPRINT has a valid request header: counted as a request, then
    // dropped.
    let bad_fingerprint = m("stunedge_dropped_total", &["reason=\"bad_fingerprint\""]);
    assert!(bad_fingerprint > 0);
    assert_eq!(m("stunedge_requests_total", &["method=\"binding\""]), report.sent + bad_fingerprint);
    assert_eq!(m("stunedge_responses_total", &["class=\"success\""]), report.valid);
    assert_eq!(m("stunedge_sent_datagrams_total", &[]), report.received);
    assert_eq!(m("stunedge_dropped_total", &[]), report.junk_sent);
    assert!(m("stunedge_classic_requests_total", &[]) > 0);
    assert_eq!(m("stunedge_batch_size_count", &[]), m("stunedge_batches_total", &[]));
    assert_eq!(m("stunedge_batch_size_sum", &[]), expected_in);
    // The sum above is the received counter, exported again; the buckets are counted apart.
    // Each bucket's batches hold between (previous bound + 1) and (its bound) datagrams each
    // (the +Inf bucket at most io.batch_size's ceiling, 1024), so the generator's own count
    // must lie between what the buckets allow at the least and at the most.
    let (mut least, mut most, mut below, mut previous) = (0, 0, 0, 0);
    for (le, cumulative) in buckets(&body, "stunedge_batch_size_bucket") {
        let batches = cumulative - below;
        let bound = if le.is_infinite() { 1024 } else { le as u64 };
        least += batches * (previous + 1);
        most += batches * bound;
        (below, previous) = (cumulative, bound);
    }
    assert_eq!(below, m("stunedge_batches_total", &[]), "the +Inf bucket counts every batch");
    assert!(
        (least..=most).contains(&expected_in),
        "batch sizes allow {least}..={most} datagrams, {expected_in} were sent"
    );
    assert_eq!(m("stunedge_batch_duration_seconds_count", &[]), m("stunedge_batches_total", &[]));
    assert_eq!(m("stunedge_send_errors_total", &[]), 0);
    assert_eq!(m("stunedge_io_backend_info", &["backend=\"mmsg\""]), 1);

    // promtool's linter accepts the exposition (names, units, HELP/TYPE).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
        }
        Err(e) => skip(
            "metrics_agree_with_the_load_generators_counts (its promtool part)",
            &format!("promtool cannot run ({e}; package prometheus)"),
        ),
    }
}
