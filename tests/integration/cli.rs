//! The `stunedge` binary itself: serving with a config file and with no config at all,
//! interop with coturn's `turnutils_stunclient`, clean stop on SIGTERM/SIGINT, exit code 2 with
//! a one-line error for a bad config or a port in use, `check-config`, and `--print-config`
//! against the committed configs/stunedge.toml.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binding_request, client_for, expected_answer, tool_missing};

const BIN: &str = env!("CARGO_BIN_EXE_stunedge");

/// A free UDP port on both loopbacks (bound and released; the kernel will not hand it out
/// again at once).
pub(crate) fn free_port() -> u16 {
    loop {
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if UdpSocket::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// A `stunedge` process, its log (stderr) going to a file that can be read while it runs.
pub(crate) struct Running {
    child: Child,
    log: crate::support::Scratch,
    /// Files the process reads while it runs (its config, for SIGHUP), removed with it.
    kept: Vec<crate::support::Scratch>,
}

impl Running {
    pub(crate) fn start(args: &[&str]) -> Running {
        Running::start_env(args, &[])
    }

    /// Starts with extra environment variables.
    pub(crate) fn start_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = write_config(&format!("stderr-{n}.log"), "");
        let file = std::fs::File::create(&log).unwrap();
        let child =
            Command::new(BIN).args(args).envs(env.iter().copied()).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Running { child, log, kept: Vec::new() }
    }

    /// Keeps `file` until this process is dropped (a config it re-reads on SIGHUP).
    pub(crate) fn keep(&mut self, file: crate::support::Scratch) {
        self.kept.push(file);
    }

    /// Waits until `addr` answers a Binding request with the minimal answer.
    pub(crate) fn wait_ready(&mut self, addr: SocketAddr) {
        let answer = self.wait_answering(addr);
        let client = client_for(addr);
        let expected = expected_answer(client.local_addr().unwrap(), [3; 12]);
        assert_eq!(crate::support::exchange(&client, addr, &binding_request([3; 12], &[])), expected);
        assert!(!answer.is_empty());
    }

    /// Waits until `addr` answers a Binding request at all (an authenticating listener answers
    /// 401); returns that answer. The request carries a SOFTWARE attribute, as real clients'
    /// do: a bare 20-byte request is too small for a challenge under the 3× amplification cap.
    pub(crate) fn wait_answering(&mut self, addr: SocketAddr) -> Vec<u8> {
        let client = client_for(addr);
        client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let request = binding_request(
            [3; 12],
            &crate::support::hex("80 22 00 10 72 65 61 64 69 6e 65 73 73 2d 70 72 6f 62 65 21"),
        );
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("stunedge exited early with {status}: {}", self.stderr());
            }
            client.send_to(&request, addr).unwrap();
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("{addr} never answered");
    }

    /// The process id (for /proc/<pid>/status and /proc/<pid>/fd).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub(crate) fn signal(&self, signal: libc::c_int) {
        // kill(2) through the libc crate would need `unsafe`; the kill command does not.
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    pub(crate) fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "stunedge did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything logged so far.
    pub(crate) fn stderr(&mut self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config file for a test. A server config without an `[admin]` section gets an
/// ephemeral admin port, so tests running in parallel never collide on the default 9478.
/// The file is removed when the returned guard drops.
pub(crate) fn write_config(name: &str, text: &str) -> crate::support::Scratch {
    crate::support::Scratch::new(name, &with_admin(text))
}

/// `text`, with an ephemeral admin port when it is a server config without an `[admin]`
/// section.
pub(crate) fn with_admin(text: &str) -> String {
    if text.contains("[server]") && !text.contains("[admin]") {
        format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
    } else {
        text.to_string()
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `turnutils_stunclient` against `server` and returns the reflexive address it prints.
fn stunclient(server: SocketAddr) -> SocketAddr {
    let out = Command::new("turnutils_stunclient")
        .args(["-p", &server.port().to_string(), &server.ip().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "turnutils_stunclient failed: {text}");
    // "0: : IPv4. UDP reflexive addr: 127.0.0.1:39336"; IPv6 is printed without brackets.
    let addr = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in: {text}"))
        .trim();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap())
}

#[test]
fn turnutils_stunclient_gets_its_own_address() {
    if tool_missing("turnutils_stunclient") {
        return;
    }
    let port = free_port();
    let config = write_config(
        "interop.toml",
        &format!("[server]\nlisten = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\n[io]\ncpus = []\n"),
    );
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    server.wait_ready(v4);
    server.wait_ready(v6);
    for (target, ip) in [(v4, "127.0.0.1"), (v6, "::1")] {
        let reflexive = stunclient(target);
        assert_eq!(reflexive.ip().to_string(), ip, "reflexive address from {target}");
        assert_ne!(reflexive.port(), 0);
        assert_ne!(reflexive.port(), port, "the client's port, not the server's");
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(1)), 0);
    let log = server.stderr();
    assert!(log.contains("responses_success="), "totals are logged on stop: {log}");
}

#[test]
fn default_config_serves_port_3478_on_both_families() {
    let busy = stunedge::io::socket::claim("0.0.0.0:3478".parse().unwrap()).is_err()
        || stunedge::io::socket::claim("[::]:3478".parse().unwrap()).is_err();
    if busy {
        let why = "UDP port 3478 is in use on this machine; the default config needs it";
        crate::support::skip(&crate::support::current_test(), why);
        return;
    }
    let mut server = Running::start(&["serve"]);
    server.wait_ready("127.0.0.1:3478".parse().unwrap());
    server.wait_ready("[::1]:3478".parse().unwrap());
    // A second instance must refuse the port rather than share it through SO_REUSEPORT.
    let second = run(&["serve"]);
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("cannot listen on 0.0.0.0:3478"), "{err}");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(1)), 0);
}

#[test]
fn port_in_use_is_a_one_line_error_with_exit_2() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let config = write_config("busy.toml", &format!("[server]\nlisten = [\"{addr}\"]\n"));
    let out = run(&["serve", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
}

#[test]
fn bad_configs_name_the_field_and_exit_2() {
    let cases = [
        ("[io]\nbatch_size = 0\n", "io.batch_size = 0"),
        ("[server]\nlisten = [\"localhost:3478\"]\n", "server.listen[0] = \"localhost:3478\""),
        ("[server]\nlisten = [\"127.0.0.1:1\"]\nsofware = \"x\"\n", "unknown field `sofware`"),
        ("[io]\ncpus = [4096]\n", "io.cpus[0] = 4096"),
        ("[log]\nlevel = 3\n", ".toml:2: log.level = 3: invalid type"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write_config(&format!("bad{i}.toml"), text);
        for args in [vec!["serve", "-c", path.to_str().unwrap()], vec!["check-config", path.to_str().unwrap()]] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?} on {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
    let out = run(&["serve", "-c", "/nonexistent/stunedge.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/stunedge.toml: cannot read"));
}

#[test]
fn check_config_accepts_the_committed_examples() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["stunedge.toml", "auth.toml", "rfc5780.toml", "turn-lb.toml"] {
        let out = run(&["check-config", &format!("{root}/configs/{file}")]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
    }
}

#[test]
fn print_config_matches_the_committed_file() {
    let out = run(&["--print-config"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/stunedge.toml")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "configs/stunedge.toml drifted: regenerate with `stunedge --print-config > configs/stunedge.toml`"
    );
}

#[test]
fn no_arguments_prints_help_and_exits_2() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: stunedge"));
}

#[test]
fn io_uring_forced_unavailable_falls_back_or_refuses() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let auto = write_config("auto.toml", &format!("[server]\nlisten = [\"{addr}\"]\n[io]\nbackend = \"auto\"\n"));
    let mut server =
        Running::start_env(&["serve", "-c", auto.to_str().unwrap()], &[("STUNEDGE_DISABLE_IO_URING", "1")]);
    server.wait_ready(addr);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(1)), 0);
    let log = server.stderr();
    assert!(log.contains("io_uring unavailable (disabled by the STUNEDGE_DISABLE_IO_URING environment variable); using the mmsg backend"), "{log}");
    assert!(log.contains("backend=\"mmsg\""), "{log}");

    let forced =
        write_config("forced.toml", &format!("[server]\nlisten = [\"{addr}\"]\n[io]\nbackend = \"io_uring\"\n"));
    let out = Command::new(BIN)
        .args(["serve", "-c", forced.to_str().unwrap()])
        .env("STUNEDGE_DISABLE_IO_URING", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("io.backend = \"io_uring\", but io_uring is unavailable"), "{err}");
}

#[test]
fn auto_picks_io_uring_where_the_kernel_has_it() {
    if !crate::support::io_uring_available(&crate::support::current_test()) {
        return;
    }
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = write_config("auto-uring.toml", &format!("[server]\nlisten = [\"{addr}\"]\n"));
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.wait_ready(addr);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(1)), 0);
    let log = server.stderr();
    assert!(log.contains("backend=\"io_uring\""), "{log}");
}

#[test]
fn sighup_reload_applies_a_new_log_level() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = |level: &str| format!("[server]\nlisten = [\"{addr}\"]\n[log]\nlevel = \"{level}\"\n");
    let config = write_config("log-level.toml", &text("info"));
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.wait_ready(addr);
    let until = |what: &str, server: &mut Running, check: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check(&server.stderr()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {}", server.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let debug_lines = |log: &str| log.lines().filter(|l| l.contains(" DEBUG ")).count();
    let reloads = |log: &str| log.matches("configuration reloaded from").count();

    config.rewrite(&with_admin(&text("debug")));
    server.signal(libc::SIGHUP);
    // The reload's info line and its debug line are two writes: wait for both, not the first.
    until("the reload at debug", &mut server, &|log| reloads(log) == 1 && debug_lines(log) >= 1);
    let log = server.stderr();
    assert!(debug_lines(&log) >= 1, "a debug line once the level is debug: {log}");
    assert!(log.contains("log.level changed to debug"), "{log}");

    // Back to info: said at info, and debug lines stop (the running level was recorded, so the
    // reload sees a change).
    config.rewrite(&with_admin(&text("info")));
    server.signal(libc::SIGHUP);
    until("the reload back to info", &mut server, &|log| reloads(log) == 2);
    let log = server.stderr();
    assert!(log.contains("log.level changed to info"), "{log}");
    let before = debug_lines(&log);
    server.signal(libc::SIGHUP);
    until("a third reload", &mut server, &|log| reloads(log) == 3);
    let log = server.stderr();
    assert_eq!(debug_lines(&log), before, "no debug line at info: {log}");
    assert_eq!(log.matches("log.level changed").count(), 2, "an unchanged level is not announced: {log}");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(2)), 0);
}

#[test]
fn a_second_sigterm_cuts_the_drain_short_and_logs_the_totals() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = write_config(
        "drain-cut.toml",
        &format!("[server]\nlisten = [\"{addr}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\ndrain_seconds = 30\n"),
    );
    let mut server = Running::start(&["serve", "-c", config.to_str().unwrap()]);
    server.wait_ready(addr);
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("SIGTERM: draining for 30 s") {
        assert!(Instant::now() < deadline, "no drain: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.alive(), "draining, not stopped");
    let cut = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(3)), 1, "status 1: the drain was cut short");
    assert!(cut.elapsed() < Duration::from_secs(3));
    let log = server.stderr();
    assert!(log.contains("stopped; totals: ") && log.contains("responses_success="), "totals logged: {log}");
    assert!(log.contains("a second stop signal: stopping now"), "{log}");
}

#[test]
fn check_config_names_the_file_in_validation_errors() {
    let path = write_config("batch0.toml", "[io]\nbatch_size = 0\n");
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("stunedge: config error: {}: io.batch_size = 0: must be between 1 and 1024\n", path.display())
    );
    assert!(out.stdout.is_empty());
}
