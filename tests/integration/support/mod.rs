//! Shared harness for hotswap's integration tests: start the real binary, wait for conditions
//! with a deadline (never a bare sleep), inspect the process tree in /proc, talk HTTP, and make
//! sure nothing a test started outlives it.

pub mod load;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Timeout of every socket operation in `http_get` / `http_get_unix`.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `run_hotswap` lets a short-lived invocation run before killing it.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable that marks every process a `Hotswap` started (see its `Drop`).
/// Not `HOTSWAP_*`, which hotswap might keep from its children.
const GUARD_VAR: &str = "TEST_PROCESS_GUARD";

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
fn poll_until<T>(deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

/// A running hotswap under test; dropping it SIGKILLs hotswap and everything it started.
pub struct Hotswap {
    child: Child,
    exited: Option<ExitStatus>,
    stderr: Arc<Stderr>,
    token: String,
    dir: tempfile::TempDir,
}

/// hotswap's stderr lines so far, and whether the pipe has closed.
#[derive(Default)]
struct Stderr {
    lines: Mutex<Vec<String>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Hotswap {
    /// Spawns hotswap with `args` (including `--` and the child command) and extra `env`;
    /// `{dir}` in an arg or env value becomes this instance's private temp dir ([`Self::dir`]).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Hotswap {
        let dir = tempfile::tempdir().expect("create tempdir");
        let token = unique_token();
        let d = path_str(dir.path());
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = hotswap_command(&args);
        cmd.env(GUARD_VAR, &token)
            .env("XDG_RUNTIME_DIR", dir.path())
            .envs(env.iter().map(|(k, v)| (k, v.replace("{dir}", &d))))
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", hotswap_bin().display()));
        let pid = child.id();
        let stderr = Arc::new(Stderr::default());
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::Builder::new()
            .name(format!("hotswap-{pid}-stderr"))
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut raw = Vec::new();
                while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
                    let line = strip_ansi(&String::from_utf8_lossy(&raw));
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    eprintln!("[hotswap {pid}] {line}");
                    sink.lines.lock().unwrap().push(line);
                    raw.clear();
                }
                sink.closed.store(true, Ordering::SeqCst);
            })
            .expect("spawn stderr reader");
        Hotswap { child, exited: None, stderr, token, dir }
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

    /// All stderr lines so far (ANSI colours stripped).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines.lock().unwrap().clone()
    }

    /// How many stderr lines have arrived so far; an index for `wait_for_stderr_after`.
    pub fn stderr_len(&self) -> usize {
        self.stderr.lines.lock().unwrap().len()
    }

    /// The first stderr line since the start containing `pattern`; panics after `timeout`.
    pub fn wait_for_stderr(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_stderr_after(0, pattern, timeout)
    }

    /// The first stderr line with index >= `index` containing `pattern`; panics after `timeout`
    /// or as soon as stderr closes without one.
    pub fn wait_for_stderr_after(&self, index: usize, pattern: &str, timeout: Duration) -> String {
        let what = format!("a hotswap stderr line containing {pattern:?} (after line {index})");
        wait_until(&what, timeout, || {
            // Read `closed` first: lines pushed before it was set are then all visible.
            let closed = self.stderr.closed.load(Ordering::SeqCst);
            let lines = self.stderr.lines.lock().unwrap();
            let found = lines.iter().skip(index).find(|l| l.contains(pattern)).cloned();
            drop(lines);
            assert!(found.is_some() || !closed, "hotswap's stderr closed before {what}");
            found
        })
    }

    /// Waits for hotswap to exit and returns its status; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let child = &mut self.child;
        let status =
            wait_until("hotswap to exit", timeout, || child.try_wait().expect("try_wait hotswap"));
        self.exited = Some(status);
        status
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
        let mut victims = BTreeSet::new();
        if self.exited.is_none() {
            // Stop hotswap first so that it cannot start anything new, then its tree.
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGSTOP);
            victims.extend(self.descendants());
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
        // Processes that escaped the tree (double-forked, reparented after hotswap died) still
        // carry our token in their environment; repeat in case one was forking meanwhile.
        for _ in 0..10 {
            for &pid in &victims {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let escaped: Vec<i32> = pids_with_env(GUARD_VAR, &self.token)
                .into_iter()
                .filter(|p| !victims.contains(p))
                .collect();
            if escaped.is_empty() {
                break;
            }
            victims.extend(escaped);
        }
        if self.exited.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// A value unique to this `Hotswap` within this machine.
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A Command for hotswap: own process group, stdin null, no inherited LISTEN_*/NOTIFY_SOCKET/
/// HOTSWAP_* variables (a developer's shell or CI must not change what a test does), no colours.
fn hotswap_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(hotswap_bin());
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
    cmd.args(args).env("NO_COLOR", "1").process_group(0).stdin(Stdio::null());
    cmd
}

/// Runs a short-lived hotswap invocation (usage errors, `status`); kills it and panics after 20s.
pub fn run_hotswap(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = hotswap_command(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", hotswap_bin().display()));
    let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));
    let status = poll_until(Instant::now() + RUN_TIMEOUT, || child.try_wait().expect("try_wait"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`hotswap {}` still running after {RUN_TIMEOUT:?}; killed", args.join(" "));
    };
    let output = Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    for line in strip_ansi(&String::from_utf8_lossy(&output.stderr)).lines() {
        eprintln!("[hotswap {}] {line}", args.join(" "));
    }
    output
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
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let after = &text[text.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { pid, state, ppid, pgrp })
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
    let rest = &line[line.find("(pids ").expect("a started line") + 6..];
    rest[..rest.find(')').expect("closing parenthesis")]
        .parse()
        .unwrap_or_else(|e| panic!("no single pid in {line:?}: {e}"))
}

/// hotswap (`--control {dir}/ctl.sock` and `options`) in front of the example server with
/// `server_args`; waits until generation 1 is ready and returns it with the server's pid.
pub fn serve_example(options: &[&str], server_args: &[&str]) -> (Hotswap, u32) {
    const STARTUP: Duration = Duration::from_secs(15);
    let server = path_str(&example_bin("server"));
    let mut args = vec!["--control", "{dir}/ctl.sock"];
    args.extend_from_slice(options);
    args.extend(["--", server.as_str()]);
    args.extend_from_slice(server_args);
    let hs = Hotswap::start(&args, &[]);
    let started = hs.wait_for_stderr("gen 1 started (pids ", STARTUP);
    hs.wait_for_stderr("gen 1 ready", STARTUP);
    (hs, started_pid(&started))
}
