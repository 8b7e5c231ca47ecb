//! A hotswap serving on a loopback port with a private control socket, for the tests of
//! reloads (reload, readiness, rollback, drain, notify, control, forward_signals): reloads driven
//! by HUP or `hotswap reload`, and the log lines that mark each step of a reload.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use hotswap::protocol::control::{ChildState, Reply, Status};
use nix::sys::signal::Signal;

use crate::support::load::{LoadConfig, LoadHandle, Target, spawn_in_thread};
use crate::support::{Hotswap, Response, example_bin, http_get, path_str};
pub use crate::support::{WAIT, pids_in, wait_until};

/// The example server's path.
pub fn server() -> String {
    path_str(&example_bin("server"))
}

/// `examples/node/server.js`.
pub fn node_server() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node/server.js");
    assert!(path.is_file(), "{} is missing", path.display());
    path_str(&path)
}

/// A command that runs the example server with flags chosen by `HOTSWAP_GENERATION`:
/// `per_generation` lists (generation, flags); any other generation gets `default` flags.
/// The shell `exec`s the server, so the child's pid is the server's.
pub fn server_by_generation(per_generation: &[(u64, &str)], default: &str) -> Vec<String> {
    let mut script = String::from("case \"$HOTSWAP_GENERATION\" in ");
    for (generation, flags) in per_generation {
        script += &format!("{generation}) exec \"$0\" {flags} ;; ");
    }
    script += &format!("*) exec \"$0\" {default} ;; esac");
    vec!["sh".into(), "-c".into(), script, server()]
}

/// A hotswap serving on 127.0.0.1 (a port the kernel chose) with its control socket at
/// `{dir}/ctl.sock`.
pub struct Service {
    pub hs: Hotswap,
    /// The control socket's path.
    pub ctl: String,
    /// The listening socket hotswap owns.
    pub addr: SocketAddr,
}

impl Service {
    /// Starts `hotswap --control {dir}/ctl.sock -l 127.0.0.1:0 OPTIONS -- COMMAND` and waits
    /// until generation 1 is ready.
    pub fn start(options: &[&str], command: &[&str], env: &[(&str, &str)]) -> Service {
        let svc = Service::spawn(options, command, env);
        let line = svc.wait_any(0, &["gen 1 ready after ", "gen 1 failed"]);
        assert!(line.contains("gen 1 ready after "), "generation 1 did not become ready: {line}");
        svc
    }

    /// [`Service::start`] without waiting for readiness: returns once generation 1 has been
    /// spawned (so the control socket answers) and the socket's address is known.
    pub fn spawn(options: &[&str], command: &[&str], env: &[(&str, &str)]) -> Service {
        Service::spawn_via(crate::support::hotswap_bin(), options, command, env)
    }

    /// [`Service::start`] with the hotswap binary at `program` (a copy, say).
    pub fn start_via(program: PathBuf, options: &[&str], command: &[&str]) -> Service {
        let svc = Service::spawn_via(program, options, command, &[]);
        let line = svc.wait_any(0, &["gen 1 ready after ", "gen 1 failed"]);
        assert!(line.contains("gen 1 ready after "), "generation 1 did not become ready: {line}");
        svc
    }

    fn spawn_via(
        program: PathBuf,
        options: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let mut args = vec!["--control", "{dir}/ctl.sock", "-l", "127.0.0.1:0"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let args = args.iter().map(|a| a.to_string()).collect();
        let hs = crate::support::Launch::via(program, args).env(env).start();
        let ctl = path_str(&hs.dir().join("ctl.sock"));
        // The control socket is bound before the first spawn.
        hs.wait_for_stderr("gen 1 started (pids ", WAIT);
        let mut svc = Service { hs, ctl, addr: "127.0.0.1:1".parse().unwrap() };
        let status = svc.status();
        // One address (under --balance reuseport, one socket per instance on it).
        let socket = status.sockets.first().unwrap_or_else(|| panic!("no socket: {status:#?}"));
        let same = status.sockets.iter().all(|s| s.address == socket.address);
        assert!(same, "not one address in {status:#?}");
        svc.addr = socket.address.parse().unwrap_or_else(|e| panic!("{socket:?}: {e}"));
        svc
    }

    /// `hotswap ARGS --control CTL` (run to completion, at most 20s).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--control", &self.ctl]);
        self.hs.run_cli(&all)
    }

    /// `hotswap status --json`, parsed.
    pub fn status(&self) -> Status {
        parse_status(&self.cli(&["status", "--json"]))
    }

    /// The first stderr line at index >= `from` that contains any of `patterns`.
    pub fn wait_any(&self, from: usize, patterns: &[&str]) -> String {
        self.hs.wait_for_any(from, patterns, WAIT)
    }

    /// Index of the first stderr line at index >= `from` containing `pattern` (waits for it).
    pub fn wait_index(&self, from: usize, pattern: &str) -> usize {
        self.hs.wait_for_stderr_after(from, pattern, WAIT);
        index_of(&self.hs.stderr().lines(), from, pattern).expect("the line just seen")
    }

    /// Whether a stderr line at index >= `from` contains `pattern`.
    pub fn logged_after(&self, from: usize, pattern: &str) -> bool {
        index_of(&self.hs.stderr().lines(), from, pattern).is_some()
    }

    /// Sends HUP and waits until generation `new` took over and generation `old` is gone.
    pub fn hup_and_wait(&self, new: u64, old: u64) -> Switch {
        let from = self.hs.stderr().line_count();
        self.hs.signal(Signal::SIGHUP);
        self.wait_switch(from, new, old)
    }

    /// Waits (from stderr index `from`) for generation `new` to start and be ready and for
    /// generation `old` to retire and be gone, in that order.
    pub fn wait_switch(&self, from: usize, new: u64, old: u64) -> Switch {
        let started_at = self.wait_index(from, &format!("gen {new} started (pids "));
        let ready_at = self.wait_index(started_at, &format!("gen {new} ready after "));
        let retiring_at = self.wait_index(from, &format!("gen {old} retiring (pids "));
        let gone_at = self.wait_index(from, &format!("gen {old} gone, drained after "));
        let lines = self.hs.stderr().lines();
        assert!(
            started_at < ready_at && ready_at < retiring_at && retiring_at < gone_at,
            "gen {new} started/ready and gen {old} retiring/gone out of order: lines \
             {started_at}, {ready_at}, {retiring_at}, {gone_at} of {lines:#?}"
        );
        Switch {
            new_pids: pids_in(&lines[started_at]),
            old_pids: pids_in(&lines[retiring_at]),
            ready_after: duration_after(&lines[ready_at], "ready after "),
            drained_after: duration_after(&lines[gone_at], "drained after "),
            ready_at,
            retiring_at,
            gone_at,
        }
    }

    /// `GET /` over a fresh connection; panics on any failure or a non-200 status.
    pub fn get(&self) -> Response {
        let r = http_get(self.addr, "/").unwrap_or_else(|e| panic!("GET {}: {e}", self.addr));
        assert_eq!(r.status, 200, "GET {}: {r:?}", self.addr);
        r
    }

    /// The generation that answers `GET /` now.
    pub fn generation(&self) -> u64 {
        let r = self.get();
        r.generation().unwrap_or_else(|| panic!("no X-Generation in {r:?}"))
    }

    /// The `version=` of the body of a fresh `GET /` (the release fixtures print one).
    pub fn version(&self) -> String {
        let body = self.get().body;
        body.split_whitespace()
            .find_map(|f| f.strip_prefix("version="))
            .unwrap_or_else(|| panic!("no version in {body:?}"))
            .to_string()
    }

    /// `n` fresh-connection requests; panics unless every one is answered by `generation`.
    pub fn assert_all_answered_by(&self, generation: u64, n: usize) {
        for i in 0..n {
            let r = self.get();
            assert_eq!(
                r.generation(),
                Some(generation),
                "request {i} of {n} should be answered by gen {generation}: {r:?}"
            );
        }
    }

    /// Starts the load client against this service (stop it with `stop_and_finish`).
    pub fn load(&self) -> LoadHandle {
        spawn_in_thread(LoadConfig {
            new_conn_workers: 3,
            keepalive_workers: 3,
            // Only a safety cap: the tests stop the load themselves.
            duration: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            ..LoadConfig::new(Target::Tcp(self.addr))
        })
    }
}

/// Waits until `load` has had `n` more ok responses than `since` (and returns the new count).
pub fn wait_for_ok(load: &LoadHandle, since: u64, n: u64) -> u64 {
    wait_until(&format!("{n} more ok responses from the load client"), WAIT, || {
        let ok = load.ok_so_far();
        (ok >= since + n).then_some(ok)
    })
}

/// What a reload's log lines said.
#[derive(Debug)]
pub struct Switch {
    pub new_pids: Vec<u32>,
    pub old_pids: Vec<u32>,
    pub ready_after: Duration,
    pub drained_after: Duration,
    /// Stderr indexes of the `gen N ready`, `gen M retiring` and `gen M gone` lines.
    pub ready_at: usize,
    pub retiring_at: usize,
    pub gone_at: usize,
}

/// Index of the first line at index >= `from` containing `pattern`.
pub fn index_of(lines: &[String], from: usize, pattern: &str) -> Option<usize> {
    lines.iter().enumerate().skip(from).find(|(_, l)| l.contains(pattern)).map(|(i, _)| i)
}

/// The duration after `marker` in `line`: `35ms`, `2s`, `1.5s`.
pub fn duration_after(line: &str, marker: &str) -> Duration {
    let text = line
        .split_once(marker)
        .map(|(_, rest)| rest.split([' ', ',']).next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"));
    parse_duration(text).unwrap_or_else(|| panic!("duration {text:?} in {line:?}"))
}

/// `35ms`, `2s`, `1.5s`, `2m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * unit))
}

/// The output of `hotswap status --json`: exit code 0 and a [`Status`] on stdout.
pub fn parse_status(out: &Output) -> Status {
    assert_eq!(out.status.code(), Some(0), "hotswap status --json: {}", describe(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not a Status ({e}): {}", describe(out)))
}

/// Sends `request` (one JSON line) on the control socket `ctl` and reads the replies up to the
/// last one: a result, an acceptance, a status or an error.
pub fn control_exchange(ctl: &str, request: &str) -> Vec<Reply> {
    let mut socket = UnixStream::connect(ctl).unwrap_or_else(|e| panic!("connect to {ctl}: {e}"));
    socket.set_read_timeout(Some(WAIT)).expect("set_read_timeout");
    writeln!(socket, "{request}").expect("send the request");
    let mut replies = Vec::new();
    for line in BufReader::new(socket).lines() {
        let line = line.unwrap_or_else(|e| panic!("read a reply from {ctl}: {e}"));
        let reply = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let last = !matches!(reply, Reply::Step { .. });
        replies.push(reply);
        if last {
            return replies;
        }
    }
    panic!("{ctl} closed after {replies:?}, before a final reply")
}

/// The state of child `pid` in `status`, if it is there.
pub fn state_of(status: &Status, pid: u32) -> Option<ChildState> {
    status.children.iter().find(|c| c.pid == pid).map(|c| c.state)
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every non-2xx/failed request is an error; prints the load's summary on failure.
pub fn assert_no_failures(report: &crate::support::load::LoadReport, context: &str) {
    assert_eq!(report.failed(), 0, "{context}: failed requests: {}", report.summary());
    assert!(report.ok > 0, "{context}: no request succeeded: {}", report.summary());
}

/// Sequential fresh-connection GETs until `stop()` is true (checked before each request);
/// returns (time since `t0`, generation, pid) of each response. Panics on any failure.
pub fn sample_until(
    svc: &Service,
    t0: Instant,
    mut stop: impl FnMut() -> bool,
) -> Vec<(Duration, u64, u32)> {
    let mut samples = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !stop() {
        assert!(Instant::now() < deadline, "sampling ran past {WAIT:?}");
        let r = svc.get();
        let generation = r.generation().unwrap_or_else(|| panic!("no X-Generation in {r:?}"));
        let pid = r.pid().unwrap_or_else(|| panic!("no X-Pid in {r:?}"));
        samples.push((t0.elapsed(), generation, pid));
    }
    samples
}

/// `gen 1: 120 answers from 0ms to 950ms; gen 2: …`: samples of [`sample_until`] in short.
pub fn summarize(samples: &[(Duration, u64, u32)]) -> String {
    let mut per_gen: std::collections::BTreeMap<u64, (usize, Duration, Duration)> =
        Default::default();
    for &(at, generation, _) in samples {
        let e = per_gen.entry(generation).or_insert((0, at, at));
        e.0 += 1;
        e.1 = e.1.min(at);
        e.2 = e.2.max(at);
    }
    let parts: Vec<String> = per_gen
        .iter()
        .map(|(g, (n, first, last))| format!("gen {g}: {n} answers from {first:?} to {last:?}"))
        .collect();
    format!("{} samples; {}", samples.len(), parts.join("; "))
}
