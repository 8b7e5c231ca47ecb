//! The reload benchmark: what hotswap costs and what it saves, side by side in one run.
//!
//! ```text
//! cargo bench --bench reload                       # defaults: well under 2 minutes on 2 cores
//! cargo bench --bench reload -- --duration 10s --reloads 20 --clients 32
//! ```
//!
//! One after the other, on the same machine, with the same load client (tests/support/load.rs)
//! and the same example server (examples/server.rs, built here in the bench's profile):
//!
//! - **direct**: the server alone on the port (the ceiling; no reload);
//! - **naive**: the server stopped (SIGTERM, wait for its exit) and started again K times, what
//!   `systemctl restart` does;
//! - **hotswap**: the server under hotswap, K SIGHUP reloads; then with `-n 2` instances;
//! - **pm2** (only when `node` and `pm2` are on PATH): benches/pm2/server.js in PM2 cluster mode,
//!   K `pm2 reload`s;
//!
//! each in two load modes (a new connection per request; keep-alive), then three scale points:
//! 100 listening sockets, 64 instances, 1,000 consecutive reloads (RSS and fds before and after),
//! with an idle window in which hotswap must use no CPU.
//!
//! It measures and prints; it asserts nothing. It writes `docs/bench/results.md` and
//! `docs/bench/reload.svg` (`--no-write` to skip). Every process it starts is stopped and reaped
//! by pid when it is done with it: by guards on panic, and by a handler on SIGINT, SIGTERM and
//! SIGHUP. hotswap also gets SIGQUIT (its fast stop) should the bench die without a word.

#[path = "../tests/support/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use load::{LoadConfig, LoadReport, Target};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any one wait of the bench (a readiness line, a reload, an exit) may take.
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------
// Options

#[derive(Clone)]
struct Opts {
    duration: Duration,
    reloads: usize,
    clients: usize,
    instances: u32,
    scale_sockets: usize,
    scale_instances: u32,
    scale_reloads: usize,
    idle: Duration,
    boots: usize,
    boot_delay: Duration,
    pm2: bool,
    only: Option<Vec<String>>,
    write: bool,
    verbose: bool,
    readme: bool,
    out: PathBuf,
}

const USAGE: &str = "\
cargo bench --bench reload [-- OPTIONS]
  --duration DUR          load per scenario and mode [5s]
  --reloads K             reloads per scenario and mode, spaced evenly [5]
  --clients N             concurrent clients (each mode uses N workers of its kind) [8]
  --instances N           the multi-instance hotswap row [2]
  --scale-sockets N       listening sockets of the socket scale point, 0 skips it [100]
  --scale-instances N     instances of the instance scale point, 0 skips it [64]
  --scale-reloads N       consecutive reloads of the reload scale point, 0 skips it [1000]
  --idle DUR              idle window in which hotswap's CPU time is sampled [2s]
  --boots N               standalone starts that measure the server's own boot time [20]
  --boot-delay DUR        the server's --boot-delay in the load rows, to play a slower app [0s]
  --no-pm2                skip the PM2 scenario even when pm2 is on PATH
  --only GROUP,...        run only these: load (direct, naive, hotswap rows), pm2, sockets,
                          instances, reloads [all]
  --no-write              do not write docs/bench/results.md and reload.svg
  --out DIR               where to write them [docs/bench]
  --readme                also copy the table into README.md, between its bench-table markers
  --verbose               echo every line the servers and hotswap log";

fn parse_opts() -> Opts {
    let mut o = Opts {
        duration: Duration::from_secs(5),
        reloads: 5,
        clients: 8,
        instances: 2,
        scale_sockets: 100,
        scale_instances: 64,
        scale_reloads: 1000,
        idle: Duration::from_secs(2),
        boots: 20,
        boot_delay: Duration::ZERO,
        pm2: true,
        only: None,
        write: true,
        verbose: false,
        readme: false,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match flag.as_str() {
            // cargo passes --bench to every bench binary.
            "--bench" => {}
            "--duration" => o.duration = dur(&value("--duration")),
            "--reloads" => o.reloads = num(&value("--reloads")),
            "--clients" => o.clients = num::<usize>(&value("--clients")).max(1),
            "--instances" => o.instances = num::<u32>(&value("--instances")).max(1),
            "--scale-sockets" => o.scale_sockets = num(&value("--scale-sockets")),
            "--scale-instances" => o.scale_instances = num(&value("--scale-instances")),
            "--scale-reloads" => o.scale_reloads = num(&value("--scale-reloads")),
            "--idle" => o.idle = dur(&value("--idle")),
            "--boots" => o.boots = num::<usize>(&value("--boots")).max(1),
            "--boot-delay" => o.boot_delay = dur(&value("--boot-delay")),
            "--no-pm2" => o.pm2 = false,
            "--only" => {
                let list: Vec<String> = value("--only").split(',').map(str::to_string).collect();
                for g in &list {
                    if !GROUPS.contains(&g.as_str()) {
                        die(&format!("--only: unknown group {g:?}"));
                    }
                }
                o.only = Some(list);
            }
            "--no-write" => o.write = false,
            "--out" => o.out = PathBuf::from(value("--out")),
            "--verbose" => o.verbose = true,
            "--readme" => o.readme = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument {arg:?}")),
        }
    }
    o
}

/// What `--only` can name.
const GROUPS: [&str; 5] = ["load", "pm2", "sockets", "instances", "reloads"];

impl Opts {
    fn want(&self, group: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|g| g == group))
    }
}

fn die(msg: &str) -> ! {
    eprintln!("reload bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn dur(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| die(&format!("bad duration {s:?}: {e}")))
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| die(&format!("bad number {s:?}")))
}

// ------------------------------------------------------------------------------------------
// Processes: every one is a `Proc`, stopped and reaped by pid when dropped.

/// A process the bench started. Dropping it stops it (`drop_signal`, then SIGKILL after 3 s)
/// and reaps it, so nothing outlives the bench even when it panics.
struct Proc {
    child: Child,
    name: String,
    drop_signal: Signal,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with a parent-death signal (`drop_signal`: the bench being killed stops it
    /// too), stdin and stdout on /dev/null, stderr piped into a [`Tap`].
    fn spawn(
        mut cmd: Command,
        name: &str,
        drop_signal: Signal,
        parent_death: bool,
        verbose: bool,
    ) -> (Proc, Tap) {
        if stopping() {
            // `on_interrupt` is stopping everything and about to exit: start nothing more.
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        let sig = drop_signal as libc::c_int;
        for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // A group of its own: a Ctrl-C in the terminal reaches only the bench, which then stops
        // everything in order (see `on_interrupt`).
        cmd.process_group(0);
        if parent_death {
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let proc = Proc { child, name: name.to_string(), drop_signal, status: None };
        live().push(Live::Child { pid: proc.pid(), signal: drop_signal });
        (proc, Tap::new(stderr, verbose))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// Reaps the process if it has exited.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                self.forget();
            }
        }
        self.status
    }

    /// Reaped: nothing left for `on_interrupt` to stop.
    fn forget(&self) {
        let pid = self.pid();
        live().retain(|l| !matches!(l, Live::Child { pid: p, .. } if *p == pid));
    }

    /// Waits (polling every 200 µs) until it exits or `timeout` passes.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Sends `sig` and waits for the exit; SIGKILL if it takes longer than `timeout`.
    fn stop(&mut self, sig: Signal, timeout: Duration) -> Option<ExitStatus> {
        self.signal(sig);
        if let Some(s) = self.wait_timeout(timeout) {
            return Some(s);
        }
        eprintln!("reload bench: {} (pid {}) ignored {sig}, killing it", self.name, self.pid());
        self.signal(Signal::SIGKILL);
        self.status = self.child.wait().ok();
        self.forget();
        None
    }
}

/// What the bench has started and not yet reaped, for `on_interrupt`.
enum Live {
    /// A child of ours and the signal that stops it.
    Child { pid: i32, signal: Signal },
    /// A PM2 daemon: `pm2 kill` with this PM2_HOME stops it and its apps.
    Pm2 { pm2: PathBuf, home: PathBuf },
}

/// Set once `on_interrupt` began stopping everything.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::SeqCst)
}

fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The write end of the pipe `on_signal` reports on.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let byte = sig as u8;
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: write(2) is async-signal-safe; it reads one byte from this frame.
    unsafe {
        libc::write(fd, (&raw const byte).cast(), 1);
    }
}

/// On SIGINT, SIGTERM or SIGHUP, stops everything the bench started, then exits 130. The
/// bench stays alive meanwhile, so the stderr pipes of its children stay open: hotswap must
/// still be able to log while it stops its own children. (A handler rather than a blocked
/// mask: children inherit a mask, not a handler.)
fn on_interrupt() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    use std::io::Read as _;
    use std::os::fd::IntoRawFd;
    let (mut rx, tx) = UnixStream::pair().expect("socketpair for signals");
    SIGNAL_PIPE.store(tx.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    let action =
        SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls write(2), which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.expect("install a signal handler");
    }
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            if rx.read_exact(&mut byte).is_err() {
                return;
            }
            let sig = Signal::try_from(i32::from(byte[0])).map_or("signal", |s| s.as_str());
            eprintln!("\nreload bench: {sig}: stopping everything it started");
            STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
            let entries = std::mem::take(&mut *live());
            let mut children = Vec::new();
            for entry in entries {
                match entry {
                    Live::Child { pid, signal } => {
                        let _ = kill(Pid::from_raw(pid), signal);
                        children.push(pid);
                    }
                    Live::Pm2 { pm2, home } => {
                        let _ = Command::new(pm2)
                            .arg("kill")
                            .env("PM2_HOME", home)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
            use nix::sys::wait::{WaitPidFlag, waitpid};
            let deadline = Instant::now() + Duration::from_secs(3);
            while !children.is_empty() && Instant::now() < deadline {
                children.retain(|pid| {
                    let r = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
                    matches!(r, Ok(nix::sys::wait::WaitStatus::StillAlive))
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            for pid in children {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
            }
            std::process::exit(130);
        })
        .expect("spawn the interrupt thread");
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.stop(self.drop_signal, Duration::from_secs(3));
        }
    }
}

/// The lines a process writes on stderr, each stamped when it was read.
#[derive(Clone)]
struct Tap {
    shared: Arc<(Mutex<TapLines>, Condvar)>,
}

#[derive(Default)]
struct TapLines {
    lines: Vec<(Instant, String)>,
    closed: bool,
}

impl Tap {
    fn new(stderr: ChildStderr, verbose: bool) -> Tap {
        let tap = Tap { shared: Arc::default() };
        let shared = tap.shared.clone();
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line).unwrap_or(0);
                    let at = Instant::now();
                    let (lock, cvar) = &*shared;
                    let mut g = lock.lock().unwrap();
                    if n == 0 {
                        g.closed = true;
                        cvar.notify_all();
                        return;
                    }
                    if verbose {
                        eprint!("  | {line}");
                    }
                    g.lines.push((at, line.trim_end().to_string()));
                    cvar.notify_all();
                }
            })
            .expect("spawn stderr reader");
        tap
    }

    fn len(&self) -> usize {
        self.shared.0.lock().unwrap().lines.len()
    }

    /// Calls `f` on the lines from index `from` each time one arrives, until it returns `Some`;
    /// None after `timeout` or when the pipe closed first.
    fn wait<T>(
        &self,
        from: usize,
        timeout: Duration,
        mut f: impl FnMut(&[(Instant, String)]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.shared;
        let mut g = lock.lock().unwrap();
        loop {
            if let Some(v) = f(&g.lines[from.min(g.lines.len())..]) {
                return Some(v);
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = cvar.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// The time of the first line from `from` on that contains `needle`.
    fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait(from, timeout, |lines| find(lines, needle).map(|(at, _)| at))
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.shared.0.lock().unwrap().lines.clone()
    }
}

fn find<'a>(lines: &'a [(Instant, String)], needle: &str) -> Option<(Instant, &'a str)> {
    lines.iter().find(|(_, l)| l.contains(needle)).map(|(at, l)| (*at, l.as_str()))
}

/// `… (pids 12,13)` → [12, 13].
fn pids_in(line: &str) -> Vec<i32> {
    let Some(rest) = line.split("(pids ").nth(1) else { return Vec::new() };
    rest.trim_end_matches(')').split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// The example server, standalone on `port`.
struct Server {
    proc: Proc,
    tap: Tap,
}

impl Server {
    fn start(bin: &Path, port: u16, boot_delay: Duration, verbose: bool) -> (Server, Duration) {
        let mut cmd = Command::new(bin);
        cmd.arg("--port").arg(port.to_string());
        cmd.arg("--boot-delay").arg(format!("{}ms", boot_delay.as_millis()));
        let t0 = Instant::now();
        let (proc, tap) = Proc::spawn(cmd, "server", Signal::SIGKILL, false, verbose);
        let ready = tap.wait_for(0, "]: ready", WAIT).unwrap_or_else(|| {
            panic!("the server on port {port} never said ready: {:?}", tap.all())
        });
        (Server { proc, tap }, ready - t0)
    }
}

/// hotswap with the example server under it.
struct Hotswap {
    proc: Option<Proc>,
    tap: Tap,
    control: PathBuf,
    generation: u64,
    _dir: tempfile::TempDir,
}

impl Hotswap {
    /// Starts `hotswap --listen … -n N -- server` and waits for generation 1 to be ready.
    fn start(
        bin: &Bins,
        addrs: &[SocketAddr],
        instances: u32,
        boot_delay: Duration,
        verbose: bool,
    ) -> Hotswap {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let mut cmd = Command::new(&bin.hotswap);
        for a in addrs {
            cmd.arg("--listen").arg(a.to_string());
        }
        cmd.arg("--instances").arg(instances.to_string());
        cmd.arg("--control").arg(&control);
        cmd.args(["--drain-timeout", "10s", "--name", "bench", "--"]).arg(&bin.server);
        cmd.arg("--boot-delay").arg(format!("{}ms", boot_delay.as_millis()));
        cmd.env("XDG_RUNTIME_DIR", dir.path());
        // SIGQUIT: hotswap's fast stop SIGKILLs every child's group before it exits.
        let (proc, tap) = Proc::spawn(cmd, "hotswap", Signal::SIGQUIT, true, verbose);
        let hs = Hotswap { proc: Some(proc), tap, control, generation: 1, _dir: dir };
        if hs.tap.wait_for(0, "gen 1 ready", WAIT).is_none() {
            panic!("hotswap's first generation never became ready: {:?}", hs.tap.all());
        }
        hs
    }

    fn pid(&self) -> i32 {
        self.proc.as_ref().expect("running").pid()
    }

    fn usage(&self) -> Usage {
        Usage::of(self.pid()).expect("hotswap's /proc entry")
    }

    /// SIGHUP, then waits for the new generation to be ready and the old one gone, timing each
    /// step from the stderr lines (and the new children's own `ready` lines).
    fn hup(&mut self) -> Reload {
        let from = self.tap.len();
        let (new, old) = (self.generation + 1, self.generation);
        self.generation = new;
        let t0 = Instant::now();
        self.proc.as_ref().expect("running").signal(Signal::SIGHUP);
        let started = format!("gen {new} started (pids ");
        let ready = format!("gen {new} ready after");
        let failed = format!("gen {new} failed");
        let gone = format!("gen {old} gone");
        let r = self.tap.wait(from, WAIT, |lines| {
            if let Some((_, l)) = find(lines, &failed) {
                return Some(Err(l.to_string()));
            }
            let (t_started, l) = find(lines, &started)?;
            let t_ready = find(lines, &ready)?.0;
            let t_gone = find(lines, &gone)?.0;
            let mut t_child = t_started;
            for pid in pids_in(l) {
                t_child = t_child.max(find(lines, &format!("server[{pid}]: ready"))?.0);
            }
            Some(Ok(Reload {
                at: t0,
                ready: Some(t_ready - t0),
                gone: Some(t_gone - t0),
                boot: Some(t_child - t_started),
                spawned: Some(t_started - t0),
            }))
        });
        match r {
            Some(Ok(r)) => r,
            Some(Err(line)) => {
                eprintln!("reload bench: reload to gen {new} failed: {line}");
                Reload { at: t0, ready: None, gone: None, boot: None, spawned: None }
            }
            None => panic!("reload to gen {new} did not finish within {WAIT:?}"),
        }
    }

    /// A reload through the control socket (`{"cmd":"reload","wait":true}`), timed from the
    /// request to each step line as it arrives on the socket.
    fn reload_wait(&mut self) -> Reload {
        let from = self.tap.len();
        let mut sock = UnixStream::connect(&self.control).expect("connect to the control socket");
        sock.set_read_timeout(Some(WAIT)).expect("set_read_timeout");
        let t0 = Instant::now();
        sock.write_all(b"{\"cmd\":\"reload\",\"wait\":true}\n").expect("write reload request");
        let mut r = Reload { at: t0, ready: None, gone: None, boot: None, spawned: None };
        for line in BufReader::new(sock).lines() {
            let line = line.expect("read from the control socket");
            let at = Instant::now() - t0;
            let v: serde_json::Value = serde_json::from_str(&line).expect("control reply is JSON");
            if let Some(step) = v.get("step").and_then(|s| s.as_str()) {
                if step.contains(" ready after ") {
                    r.ready = Some(at);
                } else if step.contains(" gone") {
                    r.gone = Some(at);
                }
            } else if let Some(result) = v.get("result").and_then(|s| s.as_str()) {
                if result != "took_over" && !stopping() {
                    eprintln!("reload bench: reload ended {line}");
                }
                if let Some(g) = v.get("generation").and_then(|g| g.as_u64()) {
                    self.generation = g;
                    // The new child's own boot, from hotswap's stderr as in `hup`.
                    let started = format!("gen {g} started (pids ");
                    let timing = self.tap.wait(from, Duration::from_secs(2), |lines| {
                        let (t_started, l) = find(lines, &started)?;
                        let mut t_child = t_started;
                        for pid in pids_in(l) {
                            t_child = t_child.max(find(lines, &format!("server[{pid}]: ready"))?.0);
                        }
                        Some((t_started, t_child))
                    });
                    if let Some((t_started, t_child)) = timing {
                        r.boot = Some(t_child - t_started);
                        r.spawned = Some(t_started.saturating_duration_since(t0));
                    }
                }
                break;
            } else {
                panic!("unexpected control reply {line}");
            }
        }
        r
    }

    /// Graceful stop (SIGTERM): hotswap drains its children and exits.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Signal::SIGTERM, Duration::from_secs(15));
        }
        self.kill_leftovers();
    }

    /// SIGKILLs any child hotswap started that is still there (only after hotswap is gone).
    fn kill_leftovers(&self) {
        for (_, line) in self.tap.all() {
            if line.contains(" started (pids ") {
                for pid in pids_in(&line) {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                    if comm.is_ok_and(|c| c.trim() == "server") {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

impl Drop for Hotswap {
    fn drop(&mut self) {
        // Dropping the Proc sends SIGQUIT (fast stop) and reaps hotswap.
        drop(self.proc.take());
        self.kill_leftovers();
    }
}

/// One reload, timed from the moment it was asked for (SIGHUP, SIGTERM, `pm2 reload`).
#[derive(Clone, Copy, Debug)]
struct Reload {
    at: Instant,
    /// → the new generation is ready (naive: the restarted server said ready).
    ready: Option<Duration>,
    /// → the old generation is gone (naive: the old server exited).
    gone: Option<Duration>,
    /// The new children's own part: from their spawn (hotswap's `started` line; naive: the
    /// spawn call) to their `ready` line, the last of them for several instances.
    boot: Option<Duration>,
    /// hotswap: → its `started` line, logged once every instance is spawned.
    spawned: Option<Duration>,
}

impl Reload {
    /// What the reload cost beyond the child's own boot.
    fn overhead(&self) -> Option<Duration> {
        Some(self.ready?.saturating_sub(self.boot?))
    }

    /// The reload window: from the request to the later of ready and gone.
    fn end(&self) -> Instant {
        self.at + self.ready.unwrap_or_default().max(self.gone.unwrap_or_default())
    }
}

/// What /proc says about a process.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_kib: u64,
    /// Peak RSS (VmHWM).
    hwm_kib: u64,
    /// RSS split: anonymous memory (heap, stacks: hotswap's own) and file pages (its binary's
    /// code and the shared libraries', counted in every process that maps them).
    anon_kib: u64,
    file_kib: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pss_kib: u64,
    /// Size of the heap and other private data mappings (VmData).
    data_kib: u64,
    /// Resident pages of hotswap's own executable (part of `file_kib`).
    exe_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Time on CPU from schedstat, over all threads.
    cpu_ns: u64,
    /// Context switches (voluntary + involuntary), over all threads: wakeups.
    switches: u64,
    fds: usize,
    threads: usize,
}

impl Usage {
    fn of(pid: i32) -> Option<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): state is field 3.
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        let (utime, stime) = (f.get(11)?, f.get(12)?);
        let mut u = Usage {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            data_kib: field("VmData:"),
            exe_kib: exe_rss_kib(pid),
            file_kib: field("RssFile:"),
            pss_kib: std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0),
            cpu_ticks: utime + stime,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count(),
            ..Usage::default()
        };
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            u.threads += 1;
            let p = task.path();
            if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
                u.cpu_ns += s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(p.join("status")) {
                for l in s.lines() {
                    if let Some(v) = l
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    {
                        u.switches += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        Some(u)
    }

    /// CPU time from utime + stime (clock-tick resolution, usually 10 ms).
    fn cpu_ms(&self) -> f64 {
        self.cpu_ticks as f64 * 1000.0 / clock_ticks() as f64
    }

    /// `4.08 MiB / 3.1 ms (0 ticks)`: peak RSS, CPU time from schedstat (ns resolution) and
    /// utime + stime in clock ticks.
    fn cell(&self) -> String {
        format!(
            "{:.2} MiB / {:.1} ms ({} ticks)",
            self.hwm_kib as f64 / 1024.0,
            self.cpu_ns as f64 / 1e6,
            self.cpu_ticks
        )
    }
}

/// Resident KiB of the mappings of the process's own executable, from /proc/PID/smaps.
fn exe_rss_kib(pid: i32) -> u64 {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else { return 0 };
    let exe = exe.to_string_lossy().into_owned();
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else { return 0 };
    let mut mine = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            mine = line.ends_with(exe.as_str());
        } else if mine && first == "Rss:" {
            kib += words.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    kib
}

fn clock_ticks() -> i64 {
    // SAFETY: sysconf reads a constant of the system; no memory of ours is involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t } else { 100 }
}

// ------------------------------------------------------------------------------------------
// Binaries

struct Bins {
    hotswap: PathBuf,
    server: PathBuf,
}

/// Builds the example server in the profile this bench was built in (`target/release` under
/// `cargo bench`) with the cargo that runs us, so it is always there and fresh.
fn build_server() -> Bins {
    let hotswap = PathBuf::from(env!("CARGO_BIN_EXE_hotswap"));
    let dir = hotswap.parent().expect("hotswap has a parent dir").to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("release").to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build").arg("--quiet").arg("--manifest-path").arg(&manifest);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.args(["--example", "server"]);
    let shown = match profile.as_str() {
        "debug" => String::new(),
        "release" => " --release".to_string(),
        other => format!(" --profile {other}"),
    };
    println!("building the example server first: {cargo} build{shown} --example server");
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(status.success(), "building the example server failed: {status}");
    let server = dir.join("examples").join("server");
    assert!(server.exists(), "{} is missing after the build", server.display());
    Bins { hotswap, server }
}

fn free_ports(n: usize) -> Vec<u16> {
    // All bound at once, so they are distinct.
    let ls: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    ls.iter().map(|l| l.local_addr().expect("local_addr").port()).collect()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

// ------------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    NewConn,
    KeepAlive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NewConn => "new conn",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scenario {
    Direct,
    Naive,
    Hotswap { instances: u32, sockets: usize },
    Pm2 { instances: u32 },
}

impl Scenario {
    fn label(&self) -> String {
        match self {
            Scenario::Direct => "direct".into(),
            Scenario::Naive => "naive restart".into(),
            Scenario::Hotswap { instances: 1, sockets: 1 } => "hotswap".into(),
            Scenario::Hotswap { instances, sockets: 1 } => format!("hotswap -n {instances}"),
            Scenario::Hotswap { instances: 1, sockets } => format!("hotswap, {sockets} sockets"),
            Scenario::Hotswap { instances, sockets } => {
                format!("hotswap -n {instances}, {sockets} sockets")
            }
            Scenario::Pm2 { instances } => format!("pm2 cluster -i {instances}"),
        }
    }
}

/// One row of the table.
struct Row {
    scenario: Scenario,
    label: String,
    mode: Option<Mode>,
    load: Option<LoadReport>,
    reloads: Vec<Reload>,
    /// hotswap's usage at the end of the row (peak RSS, CPU time).
    usage: Option<Usage>,
    /// Overheads when they are computed against the standalone boot, not in situ.
    overhead: Option<Vec<Duration>>,
    notes: Vec<String>,
    /// The load's configured duration.
    duration: Duration,
    /// p50 and p99 latency of the ok requests.
    latency: Option<(Duration, Duration)>,
    /// p99 latency of the ok requests in flight during a reload.
    latency_in_reloads: Option<Duration>,
}

impl Row {
    fn new(scenario: Scenario, mode: Option<Mode>) -> Row {
        Row {
            label: scenario.label(),
            scenario,
            mode,
            load: None,
            reloads: Vec::new(),
            usage: None,
            overhead: None,
            notes: Vec::new(),
            duration: Duration::ZERO,
            latency: None,
            latency_in_reloads: None,
        }
    }

    /// Reload windows relative to the load's start.
    fn windows(&self, started_at: Option<Instant>) -> Vec<(Duration, Duration)> {
        let Some(start) = started_at else {
            return Vec::new();
        };
        self.reloads
            .iter()
            .map(|r| {
                (r.at.saturating_duration_since(start), r.end().saturating_duration_since(start))
            })
            .collect()
    }

    /// Keeps the load's report (call it after `reloads` is set): the latency quantiles are
    /// taken now and the per-request data dropped, so the bench stays small. A large bench
    /// would make its own fork() slow, and with it every server start it times.
    fn set_load(&mut self, mut report: LoadReport, duration: Duration) {
        self.duration = duration;
        self.latency = Some((report.p50(), report.p99()));
        self.latency_in_reloads =
            report.latency_quantile_in(0.99, &self.windows(report.started_at));
        report.latencies = Vec::new();
        report.ok_requests = Vec::new();
        self.load = Some(report);
    }

    /// Ok responses per second of load (requests still in flight at the end finish after it,
    /// and a stuck one would stretch the run's wall time, so the configured duration is used).
    fn rate(&self) -> Option<f64> {
        Some(self.load.as_ref()?.ok as f64 / self.duration.as_secs_f64().max(1e-9))
    }

    fn overheads(&self) -> Vec<Duration> {
        match &self.overhead {
            Some(o) => o.clone(),
            None => self.reloads.iter().filter_map(Reload::overhead).collect(),
        }
    }
}

fn load_config(addr: SocketAddr, mode: Mode, opts: &Opts) -> LoadConfig {
    let (n, k) = match mode {
        Mode::NewConn => (opts.clients, 0),
        Mode::KeepAlive => (0, opts.clients),
    };
    LoadConfig {
        new_conn_workers: n,
        keepalive_workers: k,
        duration: opts.duration,
        max_requests: u64::MAX,
        request_timeout: Duration::from_secs(5),
        ..LoadConfig::new(Target::Tcp(addr))
    }
}

/// The moments of K reloads spaced evenly over the load: D·i/(K+1), i = 1..=K.
fn schedule(opts: &Opts, start: Instant) -> Vec<Instant> {
    let k = opts.reloads as u32;
    (1..=k).map(|i| start + opts.duration * i / (k + 1)).collect()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn run_direct(bins: &Bins, mode: Mode, opts: &Opts) -> Row {
    let port = free_ports(1)[0];
    let (mut server, _) = Server::start(&bins.server, port, opts.boot_delay, opts.verbose);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let report = load::run_blocking(load_config(addr, mode, opts));
    server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
    let mut row = Row::new(Scenario::Direct, Some(mode));
    row.set_load(report, opts.duration);
    row
}

fn run_naive(bins: &Bins, mode: Mode, opts: &Opts) -> Row {
    let port = free_ports(1)[0];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut server, _) = Server::start(&bins.server, port, opts.boot_delay, opts.verbose);
    let t_load = Instant::now();
    let handle = load::spawn_in_thread(load_config(addr, mode, opts));
    let mut reloads = Vec::new();
    for at in schedule(opts, t_load) {
        sleep_until(at);
        // What `systemctl restart` does: SIGTERM, wait for the exit, start again.
        let t0 = Instant::now();
        server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
        let gone = t0.elapsed();
        let spawned = Instant::now();
        let (next, boot) = Server::start(&bins.server, port, opts.boot_delay, opts.verbose);
        let ready = spawned + boot - t0;
        server = next;
        reloads.push(Reload {
            at: t0,
            ready: Some(ready),
            gone: Some(gone),
            boot: Some(boot),
            spawned: Some(spawned - t0),
        });
    }
    let report = handle.finish();
    server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
    drop(server.tap);
    let mut row = Row::new(Scenario::Naive, Some(mode));
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    row
}

fn run_hotswap(bins: &Bins, mode: Mode, instances: u32, sockets: usize, opts: &Opts) -> Row {
    let ports = free_ports(sockets);
    let addrs: Vec<SocketAddr> =
        ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let mut hs = Hotswap::start(bins, &addrs, instances, opts.boot_delay, opts.verbose);
    let t_load = Instant::now();
    let handle = load::spawn_in_thread(load_config(addrs[0], mode, opts));
    let mut reloads = Vec::new();
    for at in schedule(opts, t_load) {
        sleep_until(at);
        reloads.push(hs.hup());
    }
    let report = handle.finish();
    // Let the last reload's tail (reaping, closing the old children's channels) settle.
    std::thread::sleep(Duration::from_millis(300));
    let mut row = Row::new(Scenario::Hotswap { instances, sockets }, Some(mode));
    if sockets > 1 {
        // Every socket still answers after the reloads.
        let answered = addrs.iter().filter(|a| http_ok(**a)).count();
        row.notes.push(format!("{answered}/{sockets} sockets answer after the reloads"));
    }
    let usage = hs.usage();
    let spawned: Vec<Duration> = reloads.iter().filter_map(|r| r.spawned).collect();
    row.notes.push(format!(
        "HUP → every instance spawned {}; hotswap fds {}",
        p50_max(&spawned),
        usage.fds
    ));
    hs.stop();
    row.usage = Some(usage);
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    row
}

/// One GET / on a fresh connection; true on a 200.
fn http_ok(addr: SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// Scale point: N consecutive reloads through the control socket, with idle windows before
/// and after; RSS and fd count at the start and the end.
struct ReloadScale {
    row: Row,
    before: Usage,
    /// After the first 10 reloads.
    warm: Usage,
    after: Usage,
    /// (reloads done, usage) at the start, after 10 and at each tenth.
    samples: Vec<(usize, Usage)>,
    idle: Vec<Idle>,
    idle_window: Duration,
    took: Duration,
    /// The server's own boot, standalone (spawn → its `ready` line), sorted.
    boots: Vec<Duration>,
}

#[derive(Clone, Copy)]
struct Idle {
    ticks: u64,
    cpu_ns: u64,
    switches: u64,
}

fn measure_idle(hs: &Hotswap, window: Duration) -> Idle {
    // Let the last reload's tail (reaping, logging) settle first.
    std::thread::sleep(Duration::from_millis(300));
    let a = hs.usage();
    std::thread::sleep(window);
    let b = hs.usage();
    Idle {
        ticks: b.cpu_ticks - a.cpu_ticks,
        cpu_ns: b.cpu_ns.saturating_sub(a.cpu_ns),
        switches: b.switches.saturating_sub(a.switches),
    }
}

fn run_reload_scale(bins: &Bins, n: usize, opts: &Opts) -> ReloadScale {
    let port = free_ports(1)[0];
    let mut hs = Hotswap::start(
        bins,
        &[SocketAddr::from(([127, 0, 0, 1], port))],
        1,
        Duration::ZERO,
        opts.verbose,
    );
    let mut idle = vec![measure_idle(&hs, opts.idle)];
    let before = hs.usage();
    // Usage after 10 reloads (every code path touched once: "warm") and at each tenth.
    let marks: Vec<usize> = [10.min(n)].into_iter().chain((1..=10).map(|i| n * i / 10)).collect();
    let mut samples = vec![(0, before)];
    let t0 = Instant::now();
    let mut reloads = Vec::with_capacity(n);
    // The server's own boot measured standalone, interleaved with the reloads so that both
    // see the same machine: `--boots` starts spread evenly.
    let boot_every = (n / opts.boots).max(1);
    let boot_port = free_ports(1)[0];
    let mut boots = Vec::new();
    let mut boots_took = Duration::ZERO;
    for i in 1..=n {
        reloads.push(hs.reload_wait());
        if marks.contains(&i) && samples.last().is_none_or(|(j, _)| *j != i) {
            samples.push((i, hs.usage()));
        }
        if i % boot_every == 0 && boots.len() < opts.boots {
            let t = Instant::now();
            let (mut server, boot) =
                Server::start(&bins.server, boot_port, Duration::ZERO, opts.verbose);
            server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
            boots.push(boot);
            boots_took += t.elapsed();
        }
    }
    boots.sort();
    let took = t0.elapsed() - boots_took;
    // The last reload's tail (hotswap closing its end of our control connection) settles first.
    std::thread::sleep(Duration::from_millis(300));
    let after = hs.usage();
    if let Some(last) = samples.last_mut().filter(|(i, _)| *i == n) {
        last.1 = after;
    }
    idle.push(measure_idle(&hs, opts.idle));
    let served = http_ok(SocketAddr::from(([127, 0, 0, 1], port)));
    hs.stop();
    let mut row = Row::new(Scenario::Hotswap { instances: 1, sockets: 1 }, None);
    row.label = format!("hotswap, {n} reloads in a row");
    let boot_p50 = quantile(&boots, 0.5).unwrap_or_default();
    row.reloads = reloads;
    row.usage = Some(after);
    let warm = samples.get(1).map_or(before, |(_, u)| *u);
    row.notes.push(format!(
        "no load; the server's own boot standalone: p50 {} ({} starts); RSS {} → {} KiB ({} after 10), anonymous {} → {} KiB ({} after 10), fds {} → {}, {:.1} s in all{}",
        ms(boot_p50),
        boots.len(),
        before.rss_kib,
        after.rss_kib,
        warm.rss_kib,
        before.anon_kib,
        after.anon_kib,
        warm.anon_kib,
        before.fds,
        after.fds,
        took.as_secs_f64(),
        if served { "" } else { "; NOT answering afterwards" }
    ));
    ReloadScale { row, before, warm, after, samples, idle, idle_window: opts.idle, took, boots }
}

// ------------------------------------------------------------------------------------------
// PM2 (optional)

/// PM2 in cluster mode with benches/pm2/server.js, in a PM2_HOME of its own.
struct Pm2 {
    pm2: PathBuf,
    home: tempfile::TempDir,
    name: String,
    port: u16,
}

impl Pm2 {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.pm2);
        c.args(args)
            .env("PM2_HOME", self.home.path())
            .env("PORT", self.port.to_string())
            .stdin(Stdio::null())
            .process_group(0);
        c
    }

    fn run(&self, args: &[&str]) -> bool {
        let out = self.cmd(args).output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => {
                eprintln!(
                    "reload bench: pm2 {} failed: {}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                false
            }
            Err(e) => {
                eprintln!("reload bench: pm2 {}: {e}", args.join(" "));
                false
            }
        }
    }

    /// The pids PM2 knows: its daemon and every app process.
    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Ok(p) = std::fs::read_to_string(self.home.path().join("pm2.pid")) {
            pids.extend(p.trim().parse::<i32>().ok());
        }
        if let Ok(o) = self.cmd(&["jlist"]).output() {
            if let Ok(serde_json::Value::Array(apps)) = serde_json::from_slice(&o.stdout) {
                pids.extend(apps.iter().filter_map(|a| a.get("pid")?.as_i64()).map(|p| p as i32));
            }
        }
        pids.retain(|p| *p > 0);
        pids
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let home = self.home.path().to_path_buf();
        live().retain(|l| !matches!(l, Live::Pm2 { home: h, .. } if *h == home));
        let pids = self.pids();
        let _ = self.cmd(&["kill"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn run_pm2(pm2: &Path, mode: Mode, instances: u32, opts: &Opts) -> Option<Row> {
    let port = free_ports(1)[0];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pm2/server.js");
    let p = Pm2 {
        pm2: pm2.to_path_buf(),
        home: tempfile::tempdir().expect("tempdir"),
        name: format!("hotswap-bench-{}", std::process::id()),
        port,
    };
    let n = instances.to_string();
    live().push(Live::Pm2 { pm2: p.pm2.clone(), home: p.home.path().to_path_buf() });
    // --wait-ready: a new worker counts once it sent process.send('ready'); the old one then
    // gets SIGINT and --kill-timeout to finish.
    let started = p.run(&[
        "start",
        script.to_str()?,
        "--name",
        &p.name,
        "-i",
        &n,
        "--wait-ready",
        "--listen-timeout",
        "10000",
        "--kill-timeout",
        "5000",
    ]);
    let deadline = Instant::now() + WAIT;
    while started && !http_ok(addr) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !started || !http_ok(addr) {
        println!("pm2: skipped ({} mode: the app did not start under pm2)", mode.name());
        return None;
    }
    let t_load = Instant::now();
    let handle = load::spawn_in_thread(load_config(addr, mode, opts));
    let mut reloads = Vec::new();
    for at in schedule(opts, t_load) {
        sleep_until(at);
        let t0 = Instant::now();
        // `pm2 reload` returns once every instance was replaced (each new one ready first).
        let ok = p.run(&["reload", &p.name]);
        let took = t0.elapsed();
        reloads.push(Reload {
            at: t0,
            ready: None,
            gone: ok.then_some(took),
            boot: None,
            spawned: None,
        });
    }
    let report = handle.finish();
    let mut row = Row::new(Scenario::Pm2 { instances }, Some(mode));
    row.notes.push("Node server (benches/pm2/server.js), not the Rust one: ÷ direct does not apply; reload → old gone = `pm2 reload` duration".into());
    if let Some(daemon) = p.pids().first().and_then(|pid| Usage::of(*pid)) {
        row.notes.push(format!(
            "PM2 daemon peak RSS {:.1} MiB, CPU {:.0} ms",
            daemon.hwm_kib as f64 / 1024.0,
            daemon.cpu_ms()
        ));
    }
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    Some(row)
}

// ------------------------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else if m < 100.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.0} ms")
    }
}

fn quantile(v: &[Duration], q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort();
    Some(v[(q * (v.len() - 1) as f64).round() as usize])
}

/// `p50 (max)` of a list of durations, or `–`.
fn p50_max(v: &[Duration]) -> String {
    match (quantile(v, 0.5), v.iter().max()) {
        (Some(p), Some(m)) => format!("{} ({})", ms(p), ms(*m)),
        _ => "–".into(),
    }
}

fn failures(r: &LoadReport) -> String {
    if r.failed() == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = [
        ("refused", r.refused),
        ("reset", r.reset),
        ("timeout", r.timeout),
        ("non-2xx", r.non_2xx),
        ("other", r.other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    format!("**{}** ({})", r.failed(), kinds.join(", "))
}

const HEADER: [&str; 14] = [
    "scenario",
    "mode",
    "requests",
    "failed (kinds)",
    "ok req/s",
    "÷ direct",
    "p50",
    "p99",
    "p99 in reloads",
    "reload → ready p50 (max)",
    "beyond boot p50 (max)",
    "reload → old gone p50 (max)",
    "hotswap peak RSS / CPU",
    "notes",
];

fn cells(row: &Row, direct: &BTreeMap<&'static str, f64>) -> Vec<String> {
    let dash = || "–".to_string();
    let mut c = vec![row.label.clone(), row.mode.map_or("–", Mode::name).to_string()];
    match &row.load {
        Some(r) => {
            c.push(r.total().to_string());
            c.push(failures(r));
            let rate = row.rate().unwrap_or_default();
            c.push(format!("{rate:.0}"));
            let ratio = match (&row.scenario, row.mode.and_then(|m| direct.get(m.name()))) {
                (Scenario::Pm2 { .. }, _) => dash(),
                (_, Some(d)) if *d > 0.0 => format!("{:.3}", rate / d),
                _ => dash(),
            };
            c.push(ratio);
            let (p50, p99) = row.latency.unwrap_or_default();
            c.push(ms(p50));
            c.push(ms(p99));
            c.push(row.latency_in_reloads.map_or_else(dash, ms));
        }
        None => c.extend((0..7).map(|_| dash())),
    }
    let ready: Vec<Duration> = row.reloads.iter().filter_map(|r| r.ready).collect();
    let gone: Vec<Duration> = row.reloads.iter().filter_map(|r| r.gone).collect();
    c.push(p50_max(&ready));
    c.push(p50_max(&row.overheads()));
    c.push(p50_max(&gone));
    c.push(row.usage.map_or_else(dash, |u| u.cell()));
    c.push(if row.notes.is_empty() { String::new() } else { row.notes.join("; ") });
    c
}

fn markdown_table(rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([HEADER[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(HEADER.iter().map(|h| h.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// The goals of issue #4, each with where this run stands.
fn goals(rows: &[Row], scale: Option<&ReloadScale>) -> Vec<String> {
    let mut g = Vec::new();
    let hotswap_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Hotswap { .. }) && r.load.is_some())
        .collect();

    // 1. zero failed requests.
    let failed: Vec<String> = hotswap_rows
        .iter()
        .filter_map(|r| {
            let l = r.load.as_ref()?;
            (l.failed() > 0)
                .then(|| format!("{} {}: {}", r.label, r.mode.map_or("", Mode::name), failures(l)))
        })
        .collect();
    let total: u64 =
        hotswap_rows.iter().filter_map(|r| r.load.as_ref()).map(LoadReport::total).sum();
    g.push(if failed.is_empty() {
        format!(
            "zero failed requests with hotswap, both modes: **met** (0 of {total} requests failed)"
        )
    } else {
        format!("zero failed requests with hotswap, both modes: **missed**: {}", failed.join("; "))
    });

    // 2. throughput ratio.
    let direct: BTreeMap<&str, f64> = direct_rates(rows);
    let ratios: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| {
            r.scenario == (Scenario::Hotswap { instances: 1, sockets: 1 }) && r.load.is_some()
        })
        .filter_map(|r| {
            let m = r.mode?.name();
            Some((m.to_string(), r.rate()? / direct.get(m)?))
        })
        .collect();
    let list: Vec<String> = ratios.iter().map(|(m, x)| format!("{m} {x:.3}")).collect();
    let worst = ratios.iter().map(|(_, x)| *x).fold(f64::INFINITY, f64::min);
    g.push(if !ratios.is_empty() && worst >= 0.99 {
        format!(
            "req/s ratio to direct ≥ 0.99 (hotswap, one instance): **met** ({})",
            list.join(", ")
        )
    } else if !ratios.is_empty() {
        format!(
            "req/s ratio to direct ≥ 0.99 (hotswap, one instance): **missed by {:.3}** ({})",
            0.99 - worst,
            list.join(", ")
        )
    } else {
        "req/s ratio to direct ≥ 0.99: not measured".to_string()
    });

    // 3. RSS: judged with one instance; the peak with many is shown beside it.
    let instances = |r: &Row| match r.scenario {
        Scenario::Hotswap { instances, .. } => instances,
        _ => 0,
    };
    let single = rows
        .iter()
        .filter(|r| instances(r) == 1)
        .filter_map(|r| r.usage)
        .chain(scale.map(|s| s.after))
        .max_by_key(|u| u.hwm_kib);
    let many = rows
        .iter()
        .filter(|r| instances(r) > 1)
        .filter_map(|r| Some((instances(r), r.usage?)))
        .max_by_key(|(_, u)| u.hwm_kib);
    if let Some(top) = single {
        let mib = |k: u64| k as f64 / 1024.0;
        let mut split = format!(
            "peak {:.2} MiB with one instance; at the end of that run RSS {:.2} MiB = {:.2} MiB \
             anonymous (hotswap's own heap and stacks) + {:.2} MiB file pages, of which {:.2} MiB \
             hotswap's binary and {:.2} MiB libc, libm and the loader (shared with every process \
             that maps them); PSS {:.2} MiB",
            mib(top.hwm_kib),
            mib(top.rss_kib),
            mib(top.anon_kib),
            mib(top.file_kib),
            mib(top.exe_kib),
            mib(top.file_kib.saturating_sub(top.exe_kib)),
            mib(top.pss_kib)
        );
        if let Some((n, u)) = many {
            let _ = write!(
                split,
                "; with {n} instances peak {:.2} MiB ({:.2} MiB anonymous)",
                mib(u.hwm_kib),
                mib(u.anon_kib)
            );
        }
        g.push(if mib(top.hwm_kib) <= 4.0 {
            format!("hotswap RSS ≤ 4 MiB: **met** ({split})")
        } else {
            format!(
                "hotswap RSS ≤ 4 MiB: **missed by {:.2} MiB** ({split})",
                mib(top.hwm_kib) - 4.0
            )
        });
    }

    // 4. reload overhead.
    if let Some(s) = scale {
        let o = s.row.overheads();
        let p50 = quantile(&o, 0.5).unwrap_or_default();
        let p99 = quantile(&o, 0.99).unwrap_or_default();
        let under_load: Vec<Duration> = rows
            .iter()
            .filter(|r| {
                r.scenario == (Scenario::Hotswap { instances: 1, sockets: 1 }) && r.load.is_some()
            })
            .flat_map(Row::overheads)
            .collect();
        let ul = quantile(&under_load, 0.5).map_or("–".into(), ms);
        let verdict = if p50 <= Duration::from_millis(10) {
            "**met**".to_string()
        } else {
            format!("**missed by {}**", ms(p50 - Duration::from_millis(10)))
        };
        let ready: Vec<Duration> = s.row.reloads.iter().filter_map(|r| r.ready).collect();
        let (ready_p50, boot_p50) = (
            quantile(&ready, 0.5).unwrap_or_default(),
            quantile(&s.boots, 0.5).unwrap_or_default(),
        );
        let diff = (ready_p50.as_secs_f64() - boot_p50.as_secs_f64()) * 1000.0;
        g.push(format!(
            "reload overhead beyond the child's boot ≤ 10 ms, one instance: {verdict} (idle, in situ: \
             p50 {}, p99 {} over {} reloads; idle, the other way: HUP → ready p50 {} minus the \
             server's standalone boot p50 {} ({} starts) = {diff:+.2} ms; under load, in situ: p50 {ul})",
            ms(p50),
            ms(p99),
            o.len(),
            ms(ready_p50),
            ms(boot_p50),
            s.boots.len(),
        ));
    }
    let many = rows
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Hotswap { instances, .. } if instances > 2))
        .max_by_key(|r| match r.scenario {
            Scenario::Hotswap { instances, .. } => instances,
            _ => 0,
        });
    if let Some(r) = many {
        let pick = |f: fn(&Reload) -> Option<Duration>| {
            quantile(&r.reloads.iter().filter_map(f).collect::<Vec<_>>(), 0.5)
                .map_or("–".into(), ms)
        };
        g.push(format!(
            "reload overhead, {} (under load): HUP → ready p50 {}, beyond the children's boot p50 {}, \
             of which HUP → every instance spawned p50 {}: hotswap spawns the instances one after \
             another, and each spawn waits for that child's exec",
            r.label,
            pick(|x| x.ready),
            pick(Reload::overhead),
            pick(|x| x.spawned)
        ));
    }

    // 5. idle CPU, 6. flat RSS and fds.
    if let Some(s) = scale {
        let ticks: u64 = s.idle.iter().map(|i| i.ticks).sum();
        let ns: u64 = s.idle.iter().map(|i| i.cpu_ns).max().unwrap_or(0);
        let sw: u64 = s.idle.iter().map(|i| i.switches).max().unwrap_or(0);
        let what = format!(
            "{ticks} clock ticks over {} idle windows of {:?} (before and after the reloads); at most {:.3} ms on CPU and {sw} wakeups in one",
            s.idle.len(),
            s.idle_window,
            ns as f64 / 1e6
        );
        g.push(if ticks == 0 && sw == 0 {
            format!("no CPU while idle: **met** ({what})")
        } else if ticks == 0 {
            format!("no CPU while idle: **met** in ticks, but not silent ({what})")
        } else {
            format!("no CPU while idle: **missed** ({what})")
        });
        let (b, w, a) = (s.before, s.warm, s.after);
        // Flat: the same fds, and RSS within 1% of where it started.
        let growth = a.rss_kib.saturating_sub(b.rss_kib);
        let pct = growth as f64 * 100.0 / b.rss_kib.max(1) as f64;
        let verdict = match (a.fds <= b.fds, pct <= 1.0) {
            (true, true) => "**met**".to_string(),
            (fds_ok, _) => {
                let mut v = Vec::new();
                if !fds_ok {
                    v.push(format!("fds +{}", a.fds - b.fds));
                }
                if pct > 1.0 {
                    v.push(format!("RSS +{growth} KiB (+{pct:.1}%)"));
                }
                format!("**missed by {}**", v.join(", "))
            }
        };
        let series = |f: fn(&Usage) -> u64| {
            s.samples.iter().map(|(i, u)| format!("{i}: {}", f(u))).collect::<Vec<_>>().join(", ")
        };
        g.push(format!(
            "RSS and fds flat across {} reloads: {verdict} (fds {} → {}; RSS {} → {} KiB; \
             RSS KiB by reloads done: {}; of it anonymous: {}; heap mapping (VmData) {} KiB \
             after 10 reloads, {} KiB at the end; {:.1} s in all)",
            s.row.reloads.len(),
            b.fds,
            a.fds,
            b.rss_kib,
            a.rss_kib,
            series(|u| u.rss_kib),
            series(|u| u.anon_kib),
            w.data_kib,
            a.data_kib,
            s.took.as_secs_f64()
        ));
    }
    g
}

fn direct_rates(rows: &[Row]) -> BTreeMap<&'static str, f64> {
    rows.iter()
        .filter(|r| r.scenario == Scenario::Direct)
        .filter_map(|r| Some((r.mode?.name(), r.rate()?)))
        .collect()
}

fn machine() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    vec![
        format!("date: {}", utc_now()),
        format!("nproc: {}", std::thread::available_parallelism().map_or(0, |n| n.get())),
        format!("CPU: {model}; memory: {mem}"),
        format!("kernel: {}", read("/proc/sys/kernel/osrelease").trim()),
        format!("load average at start: {}", loadavg()),
    ]
}

/// CPU time of the whole machine and of this bench's process tree, to tell how much of the
/// machine other processes took while the bench ran.
struct CpuSnapshot {
    at: Instant,
    /// Busy ticks of all CPUs (/proc/stat: everything but idle and iowait).
    busy: u64,
    /// This process and its reaped children (which include hotswap's, reaped by hotswap).
    own: u64,
}

impl CpuSnapshot {
    fn now() -> CpuSnapshot {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let busy = cpu
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
            .map(|(_, v)| v)
            .sum();
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<u64> = me
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime, cstime: fields 14-17, i.e. 11-14 after the command name.
        let own = f.get(11..15).map_or(0, |v| v.iter().sum());
        CpuSnapshot { at: Instant::now(), busy, own }
    }

    /// The share of all CPUs that processes outside this bench used since `self`.
    fn other_share(&self) -> f64 {
        let now = CpuSnapshot::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = now.at.duration_since(self.at).as_secs_f64() * clock_ticks() as f64 * cores;
        let other = now.busy.saturating_sub(self.busy).saturating_sub(now.own - self.own);
        other as f64 / wall.max(1.0)
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `2026-11-21 06:41 UTC`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

// ------------------------------------------------------------------------------------------
// Plot

const README_BEGIN: &str = "<!-- bench-table:begin (cargo bench --bench reload -- --readme) -->";
const README_END: &str = "<!-- bench-table:end -->";

/// Replaces what is between the bench-table markers of README.md with `text`.
fn update_readme(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(a), Some(b)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        return Err(format!("no {README_BEGIN} … {README_END} markers"));
    };
    if b < a {
        return Err("the markers are in the wrong order".into());
    }
    let head = &readme[..a + README_BEGIN.len()];
    let new = format!("{head}\n{}\n{}", text.trim_end(), &readme[b..]);
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// One line of a plot panel.
struct Line {
    name: &'static str,
    color: plotters::style::RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
    /// Reload moments, drawn as thin verticals.
    marks: Vec<f64>,
}

fn plot(rows: &[Row], opts: &Opts, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "naive restart vs hotswap: {} clients, {} restarts/reloads in {:?} (thin verticals: the moment each was asked for)",
            opts.clients, opts.reloads, opts.duration
        ),
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let styles = [
        ("direct (no reload)", Scenario::Direct, RGBColor(150, 150, 150), 1),
        ("naive restart", Scenario::Naive, RGBColor(230, 120, 20), 2),
        ("hotswap", Scenario::Hotswap { instances: 1, sockets: 1 }, RGBColor(30, 90, 200), 2),
    ];
    // Whole buckets inside the load's duration (the last one is cut short).
    let whole = (opts.duration.as_millis() / load::BUCKET.as_millis()) as usize;
    let x_max = opts.duration.as_secs_f64();
    type Pick = fn(&load::Bucket) -> u64;
    let kinds: [(&str, Pick, f64); 2] = [
        ("ok req/s (per 100 ms bucket × 10)", |b| b.ok, 10.0),
        ("failed requests per 100 ms", |b| b.failed, 1.0),
    ];
    for (col, mode) in [Mode::NewConn, Mode::KeepAlive].into_iter().enumerate() {
        for (row_i, (what, pick, scale)) in kinds.iter().enumerate() {
            let lines: Vec<Line> = styles
                .iter()
                .filter(|(_, s, _, _)| row_i == 0 || *s != Scenario::Direct)
                .filter_map(|(name, scenario, color, width)| {
                    let r =
                        rows.iter().find(|r| &r.scenario == scenario && r.mode == Some(mode))?;
                    let l = r.load.as_ref()?;
                    let start = l.started_at?;
                    Some(Line {
                        name,
                        color: *color,
                        width: *width,
                        points: l
                            .timeline
                            .iter()
                            .take(whole)
                            .enumerate()
                            .map(|(i, b)| ((i as f64 + 0.5) * 0.1, pick(b) as f64 * scale))
                            .collect(),
                        marks: r
                            .reloads
                            .iter()
                            .map(|x| x.at.saturating_duration_since(start).as_secs_f64())
                            .collect(),
                    })
                })
                .collect();
            let y_max = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|(_, y)| *y))
                .fold(0.0f64, f64::max)
                .max(if row_i == 0 { 100.0 } else { 5.0 })
                * 1.1;
            let mut chart = ChartBuilder::on(&panels[row_i * 2 + col])
                .caption(format!("{} — {what}", mode.name()), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
            chart
                .configure_mesh()
                .x_desc("seconds since the load started")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for line in &lines {
                for m in &line.marks {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(*m, 0.0), (*m, y_max)],
                        line.color.mix(0.5).stroke_width(1),
                    )))?;
                }
                let style = line.color.stroke_width(line.width);
                chart
                    .draw_series(LineSeries::new(line.points.iter().copied(), style))?
                    .label(line.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

// ------------------------------------------------------------------------------------------

fn main() {
    on_interrupt();
    // Once `on_interrupt` is stopping everything, what fails in the main thread because of it
    // (hotswap gone, its control socket closed) is no news: wait quietly for the exit.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        while stopping() {
            std::thread::sleep(Duration::from_secs(60));
        }
        default_hook(info)
    }));
    let opts = parse_opts();
    let info = machine();
    println!("reload bench — {}", info.join("; "));
    println!(
        "settings: --duration {:?} --reloads {} --clients {} --instances {} --scale-sockets {} --scale-instances {} --scale-reloads {} --idle {:?} --boot-delay {:?}",
        opts.duration,
        opts.reloads,
        opts.clients,
        opts.instances,
        opts.scale_sockets,
        opts.scale_instances,
        opts.scale_reloads,
        opts.idle,
        opts.boot_delay
    );
    let bins = build_server();
    let cpu_before = CpuSnapshot::now();

    let mut rows: Vec<Row> = Vec::new();
    let progress = |r: &Row| {
        let l = r.load.as_ref();
        println!(
            "  {:<28} {:<10} {:>8} requests, {:>6} failed, {:>8.0} req/s",
            r.label,
            r.mode.map_or("", Mode::name),
            l.map_or(0, LoadReport::total),
            l.map_or(0, LoadReport::failed),
            r.rate().unwrap_or_default()
        );
        for sample in l.map_or(&[][..], |l| &l.samples[..]) {
            println!("      first failures: {sample}");
        }
    };
    let modes = [Mode::NewConn, Mode::KeepAlive];
    if opts.want("load") {
        // Warm-up (CPU frequency, page cache, the loopback path), not reported.
        let warm_up = Opts { duration: Duration::from_secs(1), ..opts.clone() };
        for mode in modes {
            run_direct(&bins, mode, &warm_up);
        }
        // Scenarios interleaved within each mode, so that a drift in the machine's load hits
        // direct and hotswap alike; the table groups them by scenario afterwards.
        for mode in modes {
            rows.push(run_direct(&bins, mode, &opts));
            progress(rows.last().expect("row"));
            rows.push(run_naive(&bins, mode, &opts));
            progress(rows.last().expect("row"));
            rows.push(run_hotswap(&bins, mode, 1, 1, &opts));
            progress(rows.last().expect("row"));
            if opts.instances > 1 {
                rows.push(run_hotswap(&bins, mode, opts.instances, 1, &opts));
                progress(rows.last().expect("row"));
            }
        }
    }
    if opts.want("pm2") {
        let pm2 = match (on_path("node"), on_path("pm2")) {
            _ if !opts.pm2 => {
                println!("pm2: skipped (--no-pm2)");
                None
            }
            (Some(_), Some(pm2)) => Some(pm2),
            _ => {
                println!("pm2: skipped (node and pm2 not on PATH)");
                None
            }
        };
        for mode in modes {
            if let Some(row) = pm2.as_ref().and_then(|p| run_pm2(p, mode, opts.instances, &opts)) {
                progress(&row);
                rows.push(row);
            }
        }
    }
    if opts.want("sockets") && opts.scale_sockets > 0 {
        rows.push(run_hotswap(&bins, Mode::NewConn, 1, opts.scale_sockets, &opts));
        progress(rows.last().expect("row"));
    }
    if opts.want("instances") && opts.scale_instances > 0 {
        rows.push(run_hotswap(&bins, Mode::NewConn, opts.scale_instances, 1, &opts));
        progress(rows.last().expect("row"));
    }
    let scale = (opts.want("reloads") && opts.scale_reloads > 0).then(|| {
        let s = run_reload_scale(&bins, opts.scale_reloads, &opts);
        println!("  {}: {}", s.row.label, s.row.notes.join("; "));
        s
    });

    // Group by scenario, in the order they first ran (the sort is stable).
    let first: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    rows.sort_by_key(|r| first.iter().position(|l| *l == r.label));
    let direct = direct_rates(&rows);
    let mut table_rows: Vec<Vec<String>> = rows.iter().map(|r| cells(r, &direct)).collect();
    if let Some(s) = &scale {
        table_rows.push(cells(&s.row, &direct));
    }
    let table = markdown_table(&table_rows);
    let goals = goals(&rows, scale.as_ref());

    println!();
    print!("{table}");
    println!();
    for g in &goals {
        println!("- {g}");
    }
    let mut info = info;
    let other = cpu_before.other_share();
    info.push(format!(
        "other processes' share of the CPUs during the run: {:.0}% (load average at the end: {})",
        other * 100.0,
        loadavg()
    ));
    if other > 0.10 {
        let warning = format!(
            "other processes used {:.0}% of the CPUs while this ran: throughputs, ratios and \
             latencies are noisy; rerun on a quiet machine for numbers to publish",
            other * 100.0
        );
        println!("\nnote: {warning}");
        info.push(format!("note: {warning}"));
    }

    if opts.write && opts.only.is_some() {
        println!("\n--only: a partial run, so {} is left as it is", opts.out.display());
    } else if opts.write {
        std::fs::create_dir_all(&opts.out).expect("create the output dir");
        let mut md = String::new();
        let _ = writeln!(md, "# hotswap reload benchmark: latest results\n");
        let _ = writeln!(
            md,
            "Written by `cargo bench --bench reload`; see the README's Benchmark section.\n"
        );
        for l in &info {
            let _ = writeln!(md, "- {l}");
        }
        let _ = writeln!(
            md,
            "- settings: {} clients, {:?} of load per row, {} reloads per row\n",
            opts.clients, opts.duration, opts.reloads,
        );
        md += &table;
        let _ = writeln!(md, "\n## Goals\n");
        for g in &goals {
            let _ = writeln!(md, "- {g}");
        }
        let _ = writeln!(md, "\n![requests per 100 ms, naive restart vs hotswap](reload.svg)");
        let md_path = opts.out.join("results.md");
        std::fs::write(&md_path, md).expect("write results.md");
        let svg_path = opts.out.join("reload.svg");
        match plot(&rows, &opts, &svg_path) {
            Ok(()) => println!("\nwrote {} and {}", md_path.display(), svg_path.display()),
            Err(e) => eprintln!("reload bench: plot failed: {e}"),
        }
        if opts.readme {
            let summary = format!(
                "{} ({}), {} clients, {:?} of load and {} reloads per row:",
                info.first().map_or("", |d| d.trim_start_matches("date: ")),
                info.iter()
                    .filter(|l| l.starts_with("nproc") || l.starts_with("kernel"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                opts.clients,
                opts.duration,
                opts.reloads
            );
            match update_readme(&format!("{summary}\n\n{table}")) {
                Ok(path) => println!("updated the table in {}", path.display()),
                Err(e) => eprintln!("reload bench: README not updated: {e}"),
            }
        }
    }
}
