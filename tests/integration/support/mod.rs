//! Shared harness for hotswap's integration tests: start the real binary, wait for conditions
//! with a deadline (never a bare sleep), inspect the process tree in /proc, talk HTTP, and make
//! sure nothing a test started outlives it.

pub mod load;
pub mod service;
pub mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The bound of every wait in the tests (for a log line, an exit, a state): long enough never to
/// be reached when the code works, even on a loaded machine; it only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// Where a test bounds how long something takes and no event marks the moment to compare with,
/// the bound is this many times what it takes on a quiet machine: a loaded 2-core CI runner is
/// slower, and a bound that fails there says nothing about the code. Where an event exists (a log
/// line, an exit, a timer of the child's or the client's own), tests assert the order of events
/// instead.
pub const GENEROUS: u32 = 5;

/// Timeout of every socket operation in `http_get` / `http_get_unix`.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Launch::run`] lets a short-lived invocation run before killing it.
const RUN_TIMEOUT: Duration = WAIT;

/// The environment variable that marks every process a [`Launch`] started (see
/// [`Hotswap`]'s `Drop`). Not `HOTSWAP_*`, which hotswap might keep from its children. A wrapper
/// that passes on only the variables it is told to (`systemd-socket-activate -E`) must name it.
pub const GUARD_VAR: &str = "TEST_PROCESS_GUARD";

/// The hotswap binary Cargo built for this test run.
pub fn hotswap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotswap"))
}

/// `target/<profile>/examples/<name>`; panics if it is missing or older than its source.
pub fn example_bin(name: &str) -> PathBuf {
    let hotswap = hotswap_bin();
    let dir = hotswap.parent().expect("hotswap binary has a parent dir");
    let bin = dir.join("examples").join(name);
    let hint = format!(
        "build it with `cargo build --example {name}` (or run plain `cargo test`, which builds \
         examples; `cargo test --test integration` does not)"
    );
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("example binary {} not found ({e}): {hint}", bin.display()));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    if let Ok(edited) = std::fs::metadata(&src).and_then(|m| m.modified()) {
        assert!(
            edited <= built,
            "example binary {} is older than {}: {hint}",
            bin.display(),
            src.display()
        );
    }
    bin
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Calls `f` every 10ms until it returns `Some`, or returns `None` once `deadline` has passed.
pub fn poll_until<T>(deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 10ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(Instant::now() + timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// A running hotswap under test, started by [`Launch::start`]; dropping it SIGKILLs hotswap and
/// everything it started. The one way tests and the bench start a long-running hotswap.
pub struct Hotswap {
    child: Child,
    exited: Option<ExitStatus>,
    stderr: Arc<StderrLog>,
    token: String,
    dir: tempfile::TempDir,
}

/// How to start hotswap: by itself, or through a program that execs it in its own place, keeping
/// the pid (bash, `systemd-socket-activate`, python3, setpriv). Build it with [`Launch::hotswap`]
/// or [`Launch::via`], override fields with struct-update syntax, then [`start`](Self::start) it
/// (a long-running hotswap) or [`run`](Self::run) it to its end (a client command, a refusal).
///
/// Either way it runs in a process group of its own, with stdin on /dev/null, `NO_COLOR`, none of
/// the test's own LISTEN_*/NOTIFY_SOCKET/WATCHDOG_USEC/HOTSWAP_* variables (a developer's shell
/// or CI must not change what a test does), a private temp dir as `XDG_RUNTIME_DIR` and as
/// `{dir}` in `args` and `env` values, and [`GUARD_VAR`] set to a token of its own: whatever
/// carries the token when the test is done with it is SIGKILLed, escaped daemons included.
pub struct Launch {
    /// hotswap itself, or the program that execs it.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set after the variables above, so these win.
    pub env: Vec<(String, String)>,
    /// Echo every stderr line to the test's stderr as `[hotswap PID] …` and pass stdout through.
    /// Off (the bench, unless `--verbose`): the lines are only kept, stdout goes to /dev/null.
    pub echo: bool,
    /// Close the read end of hotswap's stderr pipe at once, as a log reader that died would:
    /// every line hotswap writes then meets EPIPE ([`Launch::start`] only).
    pub broken_stderr: bool,
    /// The working directory (and `PWD`) hotswap starts in; the test's own when None.
    pub cwd: Option<PathBuf>,
    /// stdout is a pipe whose reader is gone: every write to it meets EPIPE or SIGPIPE, as
    /// under `hotswap … | logger` once logger died ([`Launch::start`] only).
    pub broken_stdout: bool,
}

impl Launch {
    /// `hotswap ARGS`.
    pub fn hotswap(args: &[&str]) -> Launch {
        Launch::via(hotswap_bin(), args.iter().map(|a| a.to_string()).collect())
    }

    /// `PROGRAM ARGS`, where PROGRAM ends up exec'ing hotswap ([`hotswap_bin`]) in its place.
    pub fn via(program: impl Into<PathBuf>, args: Vec<String>) -> Launch {
        Launch {
            program: program.into(),
            args,
            env: Vec::new(),
            echo: true,
            broken_stderr: false,
            cwd: None,
            broken_stdout: false,
        }
    }

    /// Adds `env` to the environment.
    pub fn env(mut self, env: &[(&str, &str)]) -> Launch {
        self.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The command line, for messages.
    fn shown(&self) -> String {
        let name = self.program.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        format!("{name} {}", self.args.join(" "))
    }

    /// The command, its private temp dir and guard token.
    fn command(&self) -> (Command, tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("create tempdir");
        let token = unique_token();
        let d = path_str(dir.path());
        let mut cmd = Command::new(&self.program);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("LISTEN_")
                || k.starts_with("HOTSWAP_")
                || k == "NOTIFY_SOCKET"
                || k == "WATCHDOG_USEC"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.args(self.args.iter().map(|a| a.replace("{dir}", &d)))
            .env(GUARD_VAR, &token)
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v.replace("{dir}", &d))))
            .process_group(0)
            .stdin(Stdio::null());
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd).env("PWD", cwd);
        }
        (cmd, dir, token)
    }

    /// Starts it; it runs until the test stops it or drops the [`Hotswap`].
    pub fn start(self) -> Hotswap {
        let (mut cmd, dir, token) = self.command();
        cmd.stdout(if self.echo { Stdio::inherit() } else { Stdio::null() });
        if self.broken_stdout {
            cmd.stdout(Stdio::piped());
        }
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.shown()));
        drop(child.stdout.take());
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = if self.broken_stderr {
            drop(pipe);
            StderrLog::closed()
        } else {
            StderrLog::capture(pipe, format!("hotswap {}", child.id()), self.echo)
        };
        Hotswap { child, exited: None, stderr, token, dir }
    }

    /// Runs it to its end and returns its output; SIGKILLs it and panics after 20s. Panics too
    /// if it left anything running (nothing hotswap starts may outlive it, DESIGN.md §2), once
    /// that is SIGKILLed.
    pub fn run(self) -> Output {
        let (mut cmd, _dir, token) = self.command();
        let shown = self.shown();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
        let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));
        let status =
            poll_until(Instant::now() + RUN_TIMEOUT, || child.try_wait().expect("try_wait"));
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            kill_marked(&token, BTreeSet::new());
            panic!("`{shown}` still running after {RUN_TIMEOUT:?}; killed");
        };
        let left = pids_with_env(GUARD_VAR, &token);
        kill_marked(&token, BTreeSet::new());
        let output =
            Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
        for line in strip_ansi(&String::from_utf8_lossy(&output.stderr)).lines() {
            eprintln!("[{shown}] {line}");
        }
        assert!(left.is_empty(), "`{shown}` exited ({status}) and left pids {left:?} running");
        output
    }
}

impl Hotswap {
    /// `hotswap ARGS` with extra `env` (see [`Launch`]).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Hotswap {
        Launch::hotswap(args).env(env).start()
    }

    /// Live processes, other than hotswap, that carry this launch's guard token.
    pub fn marked(&self) -> Vec<i32> {
        pids_with_env(GUARD_VAR, &self.token).into_iter().filter(|&p| p != self.pid()).collect()
    }

    /// hotswap's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A private temp dir, also hotswap's `XDG_RUNTIME_DIR`; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `sig` to hotswap (only to its pid, not its group).
    pub fn signal(&self, sig: Signal) {
        assert!(self.exited.is_none(), "signal {sig} to hotswap, which has already exited");
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.pid()));
    }

    /// Its stderr so far, each line with the moment it was read.
    pub fn stderr(&self) -> &StderrLog {
        &self.stderr
    }

    /// The first stderr line since the start containing `pattern`; panics after `timeout`.
    pub fn wait_for_stderr(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_stderr_after(0, pattern, timeout)
    }

    /// The first stderr line with index >= `index` containing `pattern`; panics after `timeout`
    /// or as soon as stderr closes without one.
    pub fn wait_for_stderr_after(&self, index: usize, pattern: &str, timeout: Duration) -> String {
        self.wait_for_any(index, &[pattern], timeout)
    }

    /// The first stderr line with index >= `index` containing any of `patterns`; panics after
    /// `timeout` or as soon as stderr closes without one.
    pub fn wait_for_any(&self, index: usize, patterns: &[&str], timeout: Duration) -> String {
        let found = self.stderr.wait(index, timeout, |lines| {
            lines.iter().map(|(_, l)| l).find(|l| patterns.iter().any(|p| l.contains(p))).cloned()
        });
        found.unwrap_or_else(|| {
            let why = match self.stderr.is_closed() {
                true => "hotswap's stderr closed".to_string(),
                false => format!("timed out after {timeout:?}"),
            };
            panic!(
                "{why} waiting for a stderr line containing one of {patterns:?} (after line \
                 {index}); hotswap's children: {}",
                describe_children(self.pid())
            )
        })
    }

    /// Waits for hotswap to exit and returns its status; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.exit_within(timeout)
            .unwrap_or_else(|| panic!("hotswap still running after {timeout:?}"))
    }

    /// Waits for hotswap to exit and returns its status, or `None` if it still runs after
    /// `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let child = &mut self.child;
            self.exited = poll_until(Instant::now() + timeout, || {
                child.try_wait().expect("try_wait hotswap")
            });
        }
        self.exited
    }

    /// Live pids whose parent chain leads to hotswap (its children, their children, ...).
    pub fn descendants(&self) -> Vec<i32> {
        descendants_of(self.pid())
    }

    /// [`run_hotswap`] with this instance's `XDG_RUNTIME_DIR` (for `status`/`reload` by name).
    pub fn run_cli(&self, args: &[&str]) -> Output {
        run_hotswap(args, &[("XDG_RUNTIME_DIR", &path_str(self.dir()))])
    }
}

impl Drop for Hotswap {
    fn drop(&mut self) {
        let mut tree = BTreeSet::new();
        if self.exited.is_none() {
            // Stop hotswap first so that it cannot start anything new, then its tree.
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGSTOP);
            tree.extend(self.descendants());
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
        kill_marked(&self.token, tree);
        if self.exited.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// SIGKILLs `pids` and every process whose environment carries `token` (processes that escaped
/// the tree: double-forked, reparented after hotswap died), repeating in case one was forking.
fn kill_marked(token: &str, mut pids: BTreeSet<i32>) {
    for _ in 0..10 {
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let escaped: Vec<i32> =
            pids_with_env(GUARD_VAR, token).into_iter().filter(|p| !pids.contains(p)).collect();
        if escaped.is_empty() {
            break;
        }
        pids.extend(escaped);
    }
}

/// The lines a process writes on stderr (ANSI colours stripped), each with the moment it was
/// read, collected by a thread of its own until the pipe closes.
pub struct StderrLog {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<(Instant, String)>,
    closed: bool,
}

impl StderrLog {
    /// Reads `pipe` on a thread of its own; `echo`: prints each line as `[label] line`.
    pub fn capture(pipe: impl Read + Send + 'static, label: String, echo: bool) -> Arc<StderrLog> {
        let log = Arc::new(StderrLog { state: Mutex::default(), grew: Condvar::new() });
        let sink = log.clone();
        std::thread::Builder::new()
            .name(format!("{label} stderr"))
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut raw = Vec::new();
                while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
                    let at = Instant::now();
                    let line = strip_ansi(&String::from_utf8_lossy(&raw));
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    sink.state.lock().unwrap().lines.push((at, line));
                    sink.grew.notify_all();
                    raw.clear();
                }
                sink.state.lock().unwrap().closed = true;
                sink.grew.notify_all();
            })
            .expect("spawn stderr reader");
        log
    }

    /// A log of a pipe closed before anything was read.
    fn closed() -> Arc<StderrLog> {
        let state = LogState { lines: Vec::new(), closed: true };
        Arc::new(StderrLog { state: Mutex::new(state), grew: Condvar::new() })
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many lines have arrived so far: an index for the waits that look at later lines.
    pub fn line_count(&self) -> usize {
        self.state().lines.len()
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// When the first line equal to `line` arrived.
    pub fn arrived(&self, line: &str) -> Option<Instant> {
        self.state().lines.iter().find(|(_, l)| l == line).map(|(at, _)| *at)
    }

    /// Whether the pipe has closed (no line will come any more).
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Calls `f` with the lines from index `from` on, again each time one arrives, until it
    /// returns `Some`; `None` once `timeout` has passed or the pipe has closed first.
    pub fn wait<T>(
        &self,
        from: usize,
        timeout: Duration,
        mut f: impl FnMut(&[(Instant, String)]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(v) = f(&state.lines[from.min(state.lines.len())..]) {
                return Some(v);
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state =
                self.grew.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// A value unique to this launch within this machine.
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs a short-lived `hotswap ARGS` (usage errors, `status`, `reload`) with extra `env` to its
/// end (see [`Launch::run`]).
pub fn run_hotswap(args: &[&str], env: &[(&str, &str)]) -> Output {
    Launch::hotswap(args).env(env).run()
}

/// Reads `r` to its end on a thread of its own.
fn read_in_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `X-Pid` header: the pid of the server process that answered.
    pub fn pid(&self) -> Option<u32> {
        self.header("x-pid")?.parse().ok()
    }

    /// The `X-Generation` header: hotswap's generation of the server that answered.
    pub fn generation(&self) -> Option<u64> {
        self.header("x-generation")?.parse().ok()
    }
}

/// `GET path` over TCP with `Connection: close` (blocking, 10s timeouts).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    exchange(s, path)
}

/// `GET req_path` over the unix socket `socket` (`@name`: abstract) with `Connection: close`.
pub fn http_get_unix(socket: &Path, req_path: &str) -> std::io::Result<Response> {
    exchange(connect_unix(socket)?, req_path)
}

/// Connects to a unix stream socket, a path or `@name`, with 10s timeouts (even for connect,
/// which blocks while the listener's backlog is full).
pub fn connect_unix(socket: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, sockopt,
    };
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let timeout = nix::sys::time::TimeVal::new(HTTP_TIMEOUT.as_secs() as _, 0);
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    let addr = match socket.as_os_str().as_bytes().strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(socket)?,
    };
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

/// Writes a GET and reads until the response is complete (or the server closes).
fn exchange(mut s: impl Read + Write, path: &str) -> std::io::Result<Response> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk)?;
        raw.extend_from_slice(&chunk[..n]);
        match parse_response(&raw, n == 0) {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Parses `raw`: `Ok(None)` while more bytes are needed; incomplete at `eof` is an error.
fn parse_response(raw: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let incomplete = |what: &str| match eof {
        true => Err(format!("connection closed in the response {what} after {} bytes", raw.len())),
        false => Ok(None),
    };
    let Some(split) = find(raw, b"\r\n\r\n") else { return incomplete("head") };
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let response = Response { status, headers, body: String::new() };
    let body = if response.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let Some(eol) = find(rest, b"\r\n") else { return incomplete("chunk size") };
            let size_text = String::from_utf8_lossy(&rest[..eol]);
            let hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break body;
            }
            if rest.len() < size + 2 {
                return incomplete("chunk");
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return incomplete("body");
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { body: String::from_utf8_lossy(&body).into_owned(), ..response }))
}

/// The index of the first occurrence of `pat` in `hay`.
fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    hay.windows(pat.len()).position(|w| w == pat)
}

/// One process as seen in /proc/<pid>/stat.
#[derive(Clone, Copy, Debug)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses /proc/<pid>/stat; `None` if the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&text)?;
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    Some(ProcStat { pid, state, ppid, pgrp })
}

/// The fields of a /proc/PID/stat line after the command name, which is in parentheses and may
/// itself hold spaces and parentheses: `[0]` is the state (field 3 in proc(5)), `[1]` the ppid,
/// `[2]` the process group, `[11]` and `[12]` utime and stime, and so on.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect())
}

/// Every process currently in /proc.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter_map(proc_stat).collect()
}

/// Live (non-zombie) pids whose parent chain leads to `root`.
pub fn descendants_of(root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<ProcStat>> = BTreeMap::new();
    for p in all_processes() {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            queue.push(child.pid);
            if !matches!(child.state, 'Z' | 'X') {
                out.push(child.pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Children of `pid` that are zombies (exited, not yet reaped).
pub fn zombies_of(pid: i32) -> Vec<i32> {
    all_processes().into_iter().filter(|p| p.ppid == pid && p.state == 'Z').map(|p| p.pid).collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|p| !matches!(p.state, 'Z' | 'X'))
}

/// Live pids other than ours whose environment (as exec'ed) contains `key=value`.
pub fn pids_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle: Vec<u8> = format!("{key}={value}").into_bytes();
    all_processes()
        .into_iter()
        .filter(|p| p.pid != std::process::id() as i32 && !matches!(p.state, 'Z' | 'X'))
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_slice()))
        })
        .map(|p| p.pid)
        .collect()
}

/// `/proc/<pid>/environ` as a map; panics if a variable appears twice (which one a program
/// sees would depend on its libc).
pub fn environ(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/environ: {e}"));
    let mut env = BTreeMap::new();
    for kv in raw.split(|&b| b == 0).filter(|kv| !kv.is_empty()) {
        let kv = String::from_utf8_lossy(kv);
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        let earlier = env.insert(k.to_string(), v.to_string());
        assert!(
            earlier.is_none(),
            "{k} appears twice in pid {pid}'s environment: {earlier:?}, {v:?}"
        );
    }
    env
}

/// Whether connecting to `addr` is refused (nothing listens there).
pub fn port_is_closed(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// A path as a `String`, for building the `&[&str]` argument lists (panics if not UTF-8).
pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display())).to_string()
}

/// The pid in a `gen N started (pids PID)` line (one instance).
pub fn started_pid(line: &str) -> u32 {
    match pids_in(line)[..] {
        [pid] => pid,
        ref pids => panic!("not one pid in {line:?}: {pids:?}"),
    }
}

/// The pids in `… (pids 12,34)`.
pub fn pids_in(line: &str) -> Vec<u32> {
    let list = line
        .split_once("(pids ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no `(pids …)` in {line:?}"));
    list.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("pid {s:?} in {line:?}: {e}")))
        .collect()
}

/// hotswap (`--control {dir}/ctl.sock` and `options`) in front of the example server with
/// `server_args`; waits until generation 1 is ready and returns it with the server's pid.
pub fn serve_example(options: &[&str], server_args: &[&str]) -> (Hotswap, u32) {
    let server = path_str(&example_bin("server"));
    let mut args = vec!["--control", "{dir}/ctl.sock"];
    args.extend_from_slice(options);
    args.extend(["--", server.as_str()]);
    args.extend_from_slice(server_args);
    let hs = Hotswap::start(&args, &[]);
    let started = hs.wait_for_stderr("gen 1 started (pids ", WAIT);
    hs.wait_for_stderr("gen 1 ready", WAIT);
    (hs, started_pid(&started))
}

/// hotswap's children as the kernel sees them (pid, state, where it sleeps, what it runs), for
/// a timeout's message: a child stuck before its exec shows hotswap's own command line.
fn describe_children(hotswap: i32) -> String {
    let read = |path: String| std::fs::read_to_string(path).unwrap_or_default();
    let tasks = std::fs::read_dir(format!("/proc/{hotswap}/task")).into_iter().flatten();
    let children: Vec<String> = tasks
        .filter_map(|t| t.ok())
        .flat_map(|t| {
            read(format!("/proc/{hotswap}/task/{}/children", t.file_name().to_string_lossy()))
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let one = |pid: &String| {
        let stat = read(format!("/proc/{pid}/stat"));
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("?");
        let wchan = read(format!("/proc/{pid}/wchan"));
        let cmdline = read(format!("/proc/{pid}/cmdline")).replace('\0', " ");
        let stack =
            read(format!("/proc/{pid}/stack")).lines().take(4).collect::<Vec<_>>().join(" < ");
        format!("{pid} {state} wchan={wchan} [{}] {stack}", cmdline.trim())
    };
    children.iter().map(one).collect::<Vec<_>>().join("; ")
}
