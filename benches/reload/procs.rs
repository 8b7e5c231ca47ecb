//! The processes the bench starts and what it reads of them. [`Proc`] is the guard the
//! standalone server lives in (stopped and reaped by pid when dropped), its stderr and hotswap's
//! collected, with their arrival times, by the test harness's `StderrLog`. [`Server`] starts the
//! example server (or an app that binds its own port) alone; [`Hotswap`] starts it (or any app,
//! with any flags) under hotswap through the test harness (the one way to start hotswap and kill
//! its tree) and times reloads from those lines and the children's own ([`ChildLine`]);
//! [`on_interrupt`] stops everything on SIGINT, SIGTERM or SIGHUP. [`Usage`] and [`CpuSnapshot`]
//! read RSS, CPU time and fds from /proc; [`build_server`] builds the example server the bench
//! runs.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hotswap::protocol::control::{ReloadResult, Reply};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, SysconfVar, sysconf};

use crate::WAIT;
use crate::support::{self, Launch, StderrLog, hotswap_bin, path_str, pids_in, stat_fields};

// ------------------------------------------------------------------------------------------
// Guards and the interrupt thread

/// A process the bench started. Dropping it stops it (`drop_signal`, then SIGKILL after 3 s)
/// and reaps it, so nothing outlives the bench even when it panics.
pub struct Proc {
    child: Child,
    name: String,
    drop_signal: Signal,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin and stdout on /dev/null and its stderr collected (and echoed if
    /// `verbose`).
    ///
    /// No parent-death signal: the guards stop every process by pid when the bench exits,
    /// panics, or gets SIGINT, SIGTERM or SIGHUP; only a SIGKILLed bench leaves its processes
    /// running.
    pub fn spawn(
        mut cmd: Command,
        name: &str,
        drop_signal: Signal,
        verbose: bool,
    ) -> (Proc, Arc<StderrLog>) {
        park_if_stopping();
        for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // A group of its own: a Ctrl-C in the terminal reaches only the bench, which then stops
        // everything in order (see `on_interrupt`).
        cmd.process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let proc = Proc { child, name: name.to_string(), drop_signal, status: None };
        live().push(Live::Child { pid: proc.pid(), signal: drop_signal });
        let stderr = StderrLog::capture(stderr, format!("{name} {}", proc.pid()), verbose);
        (proc, stderr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
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
        forget(self.pid());
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
    pub fn stop(&mut self, sig: Signal, timeout: Duration) -> Option<ExitStatus> {
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

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.stop(self.drop_signal, Duration::from_secs(3));
        }
    }
}

/// What the bench has started and not yet reaped, for `on_interrupt`.
pub enum Live {
    /// A child of ours and the signal that stops it.
    Child { pid: i32, signal: Signal },
    /// A PM2 daemon: `pm2 kill` with this PM2_HOME stops it and its apps.
    Pm2 { pm2: PathBuf, home: PathBuf },
}

/// `pid` needs no stopping any more.
fn forget(pid: i32) {
    live().retain(|l| !matches!(l, Live::Child { pid: p, .. } if *p == pid));
}

/// Once `on_interrupt` is stopping everything and about to exit, starts nothing more: never
/// returns then.
fn park_if_stopping() {
    while stopping() {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Set once `on_interrupt` began stopping everything.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn stopping() -> bool {
    STOPPING.load(SeqCst)
}

pub fn live() -> MutexGuard<'static, Vec<Live>> {
    static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT, SIGTERM or SIGHUP, stops everything the bench started, then exits 130. Call it
/// first thing in `main`: the handlers are in place when it returns.
///
/// The bench stays alive meanwhile, so the stderr pipes of its children stay open: hotswap must
/// still be able to log while it stops its own children. Handlers (tokio's, registered through
/// a safe API; they only wake the thread that waits here) rather than a blocked mask and
/// sigwait: children inherit a mask, and std's `Command` leaves it as it is, but exec resets
/// handlers.
pub fn on_interrupt() {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime for the signal handlers");
    let [mut int, mut term, mut hup] = {
        let _in = rt.enter();
        [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()]
            .map(|kind| signal(kind).expect("install a signal handler"))
    };
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let sig = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => Signal::SIGINT,
                    _ = term.recv() => Signal::SIGTERM,
                    _ = hup.recv() => Signal::SIGHUP,
                }
            });
            eprintln!("\nreload bench: {}: stopping everything it started", sig.as_str());
            stop_everything();
            std::process::exit(130);
        })
        .expect("spawn the interrupt thread");
}

/// Sends every live child its stop signal and `pm2 kill`s every PM2 daemon, then reaps the
/// children, SIGKILLing those still there after 3 s.
fn stop_everything() {
    STOPPING.store(true, SeqCst);
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
    let deadline = Instant::now() + Duration::from_secs(3);
    while !children.is_empty() && Instant::now() < deadline {
        children.retain(|pid| {
            let r = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
            matches!(r, Ok(WaitStatus::StillAlive))
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in children {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
    }
}

// ------------------------------------------------------------------------------------------
// Stderr lines

/// The time of the first line of `log` from index `from` on that contains `needle`.
fn wait_for(log: &StderrLog, from: usize, needle: &str, timeout: Duration) -> Option<Instant> {
    log.wait(from, timeout, |lines| find(lines, needle).map(|(at, _)| at))
}

fn find<'a>(lines: &'a [(Instant, String)], needle: &str) -> Option<(Instant, &'a str)> {
    lines.iter().find(|(_, l)| l.contains(needle)).map(|(at, l)| (*at, l.as_str()))
}

/// When hotswap logged `gen G started (pids …)`, and when the last of those children logged
/// its own line (`child`: the example server's `ready`, an app's `listening`); None until all
/// of them are there.
fn started_and_ready(
    lines: &[(Instant, String)],
    generation: u64,
    child: ChildLine,
) -> Option<(Instant, Instant)> {
    let (t_started, l) = find(lines, &format!("gen {generation} started (pids "))?;
    let mut t_child = t_started;
    for pid in pids_in(l) {
        t_child = t_child.max(find(lines, &child.needle(pid))?.0);
    }
    Some((t_started, t_child))
}

/// A `--rolling` reload to `generation`: when hotswap logged the start of its last instance
/// (`gen G instance I started (pid P)`), and the instances' own boots summed (each from its
/// `started` line to the child's own line: one instance boots at a time). None until every
/// started instance's child logged its line. Call it once `gen G ready after` is there.
fn rolled_and_booted(
    lines: &[(Instant, String)],
    generation: u64,
    child: ChildLine,
) -> Option<(Instant, Duration)> {
    let prefix = format!("gen {generation} instance ");
    let mut last = None;
    let mut boots = Duration::ZERO;
    for (at, l) in lines {
        let Some(rest) = l.split_once(&prefix).map(|(_, r)| r) else { continue };
        let Some((_, pid)) = rest.split_once(" started (pid ") else { continue };
        let pid: u32 = pid.trim_end_matches(')').parse().ok()?;
        boots += find(lines, &child.needle(pid))?.0.saturating_duration_since(*at);
        last = Some(*at);
    }
    Some((last?, boots))
}

/// The pids a generation's `gen G started (pids …)` line among `lines` lists, in the order
/// hotswap gives them.
pub fn started_pids(lines: &[String], generation: u64) -> Vec<u32> {
    let needle = format!("gen {generation} started (pids ");
    lines.iter().find(|l| l.contains(&needle)).map(|l| pids_in(l)).unwrap_or_default()
}

/// The line a child writes on stderr once it serves: the moment its own start is over.
#[derive(Clone, Copy, Debug)]
pub enum ChildLine {
    /// A line containing `{0}PID{1}`, with the pid hotswap spawned (`server[`, `]: ready`).
    Pid(&'static str, &'static str),
    /// A line containing this text (the app names no pid, or not the one hotswap spawned: one
    /// instance only, and only lines logged after the start was asked for are looked at).
    Text(&'static str),
}

impl ChildLine {
    /// The example server's `server[PID]: ready…`.
    pub const SERVER: ChildLine = ChildLine::Pid("server[", "]: ready");

    /// What the line of the child `pid` contains.
    pub fn needle(self, pid: u32) -> String {
        match self {
            ChildLine::Pid(before, after) => format!("{before}{pid}{after}"),
            ChildLine::Text(text) => text.to_string(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The example server and hotswap

/// The example server, standalone on `port`.
pub struct Server {
    pub proc: Proc,
    pub stderr: Arc<StderrLog>,
}

impl Server {
    /// Starts it and waits for its `ready` line; also returns how long that took.
    pub fn start(bin: &Path, port: u16, boot_delay: Duration, verbose: bool) -> (Server, Duration) {
        let mut cmd = Command::new(bin);
        cmd.arg("--port").arg(port.to_string());
        cmd.arg("--boot-delay").arg(format!("{}ms", boot_delay.as_millis()));
        Server::spawn(cmd, "server", ChildLine::SERVER, verbose)
    }

    /// Starts `cmd` (a server that binds its own port: the example server, an unmodified app)
    /// and waits for its `ready` line; also returns how long that took.
    pub fn spawn(cmd: Command, name: &str, ready: ChildLine, verbose: bool) -> (Server, Duration) {
        let t0 = Instant::now();
        let (proc, stderr) = Proc::spawn(cmd, name, Signal::SIGKILL, verbose);
        let needle = ready.needle(proc.pid() as u32);
        let at = wait_for(&stderr, 0, &needle, WAIT).unwrap_or_else(|| {
            panic!("{name} (pid {}) never logged {needle:?}: {:?}", proc.pid(), stderr.lines())
        });
        (Server { proc, stderr }, at - t0)
    }
}

/// hotswap with the example server under it, started by the test harness: dropping it kills
/// hotswap and its whole tree.
pub struct Hotswap {
    hs: support::Hotswap,
    control: PathBuf,
    generation: u64,
    /// The line each child logs once it serves.
    child: ChildLine,
    /// Started with `--rolling`: a reload logs each instance's start (`gen N instance I
    /// started (pid P)`), not one `gen N started (pids …)` line.
    rolling: bool,
}

impl Hotswap {
    /// Starts `hotswap --listen … -n N FLAGS -- server` (FLAGS: `--rolling`, `--balance
    /// reuseport`, …) and waits for generation 1 to be ready.
    pub fn start(
        bin: &Bins,
        addrs: &[SocketAddr],
        instances: u32,
        flags: &[&str],
        boot_delay: Duration,
        verbose: bool,
    ) -> Hotswap {
        let mut args: Vec<String> = Vec::new();
        for a in addrs {
            args.extend(["--listen".to_string(), a.to_string()]);
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        let instances = instances.to_string();
        let server = path_str(&bin.server);
        let boot_delay = format!("{}ms", boot_delay.as_millis());
        args.extend(
            [
                "--instances",
                &instances,
                "--control",
                "{dir}/control.sock",
                "--drain-timeout",
                "10s",
            ]
            .map(String::from),
        );
        args.extend(
            ["--name", "bench", "--", &server, "--boot-delay", &boot_delay].map(String::from),
        );
        let launch = Launch { echo: verbose, ..Launch::via(hotswap_bin(), args) };
        let mut hs = Hotswap::launch(launch, ChildLine::SERVER)
            .unwrap_or_else(|e| panic!("hotswap's first generation never became ready: {e}"));
        hs.rolling = flags.contains(&"--rolling");
        hs
    }

    /// Starts hotswap as `launch` says (any flags, any app; its children log `child` once they
    /// serve) and waits for generation 1 to be ready. Err: generation 1 failed or was not
    /// ready in time (the line, or every line so far); hotswap and its tree are killed then.
    pub fn launch(launch: Launch, child: ChildLine) -> Result<Hotswap, String> {
        park_if_stopping();
        let hs = launch.start();
        // On an interrupt, SIGQUIT: hotswap's fast stop SIGKILLs every child's group and exits.
        live().push(Live::Child { pid: hs.pid(), signal: Signal::SIGQUIT });
        let control = hs.dir().join("control.sock");
        let hs = Hotswap { hs, control, generation: 1, child, rolling: false };
        let first = hs.hs.stderr().wait(0, WAIT, |lines| {
            find(lines, "gen 1 ready after ")
                .or_else(|| find(lines, "gen 1 failed"))
                .map(|(_, l)| l.to_string())
        });
        match first {
            Some(l) if l.contains("gen 1 ready after ") => Ok(hs),
            Some(l) => Err(l),
            None => Err(format!("no `gen 1 ready` within {WAIT:?}: {:?}", hs.hs.stderr().lines())),
        }
    }

    /// Sends `sig` to hotswap (its pid only).
    pub fn signal(&self, sig: Signal) {
        self.hs.signal(sig);
    }

    /// The generation the last reload asked for (1 before any).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// hotswap's stderr so far, its children's included, each line with its arrival time.
    pub fn log(&self) -> &StderrLog {
        self.hs.stderr()
    }

    pub fn usage(&self) -> Usage {
        Usage::of(self.hs.pid()).expect("hotswap's /proc entry")
    }

    /// SIGHUP, then waits for the new generation to be ready and the old one gone, timing each
    /// step from the stderr lines (and the new children's own `ready` lines).
    pub fn hup(&mut self) -> Reload {
        let from = self.hs.stderr().line_count();
        let (new, old) = (self.generation + 1, self.generation);
        self.generation = new;
        let t0 = Instant::now();
        self.hs.signal(Signal::SIGHUP);
        let ready = format!("gen {new} ready after");
        let failed = format!("gen {new} failed");
        let gone = format!("gen {old} gone");
        let (child, rolling) = (self.child, self.rolling);
        let r = self.hs.stderr().wait(from, WAIT, |lines| {
            if let Some((_, l)) = find(lines, &failed) {
                return Some(Err(l.to_string()));
            }
            // The ready line first: a rollout has logged every instance's start by then.
            let t_ready = find(lines, &ready)?.0;
            let (t_spawned, boot) = if rolling {
                rolled_and_booted(lines, new, child)?
            } else {
                let (t_started, t_child) = started_and_ready(lines, new, child)?;
                (t_started, t_child - t_started)
            };
            let t_gone = find(lines, &gone)?.0;
            Some(Ok(Reload {
                at: t0,
                ready: Some(t_ready - t0),
                gone: Some(t_gone - t0),
                boot: Some(boot),
                spawned: Some(t_spawned.saturating_duration_since(t0)),
            }))
        });
        match r {
            Some(Ok(r)) => r,
            Some(Err(line)) => {
                eprintln!("reload bench: reload to gen {new} failed: {line}");
                Reload::asked(t0)
            }
            None => panic!("reload to gen {new} did not finish within {WAIT:?}"),
        }
    }

    /// A reload through the control socket (`{"cmd":"reload","wait":true}`), timed from the
    /// request to each step line as it arrives on the socket.
    pub fn reload_wait(&mut self) -> Reload {
        let from = self.hs.stderr().line_count();
        let mut sock = UnixStream::connect(&self.control).expect("connect to the control socket");
        sock.set_read_timeout(Some(WAIT)).expect("set_read_timeout");
        let t0 = Instant::now();
        sock.write_all(b"{\"cmd\":\"reload\",\"wait\":true}\n").expect("write reload request");
        let mut r = Reload::asked(t0);
        for line in BufReader::new(sock).lines() {
            let line = line.expect("read from the control socket");
            let at = Instant::now() - t0;
            let reply: Reply = serde_json::from_str(&line).expect("a control reply");
            match reply {
                Reply::Step { step } => {
                    if step.contains(" ready after ") {
                        r.ready = Some(at);
                    } else if step.contains(" gone") {
                        r.gone = Some(at);
                    }
                }
                Reply::Done { result, generation, .. } => {
                    if result != ReloadResult::TookOver && !stopping() {
                        eprintln!("reload bench: reload ended {line}");
                    }
                    if let Some(g) = generation {
                        self.generation = g;
                        // The new child's own boot, from hotswap's stderr as in `hup`.
                        let child = self.child;
                        let timing = self
                            .hs
                            .stderr()
                            .wait(from, Duration::from_secs(2), |l| started_and_ready(l, g, child));
                        if let Some((t_started, t_child)) = timing {
                            r.boot = Some(t_child - t_started);
                            r.spawned = Some(t_started.saturating_duration_since(t0));
                        }
                    }
                    break;
                }
                _ => panic!("unexpected control reply {line}"),
            }
        }
        r
    }

    /// Graceful stop (SIGTERM): hotswap drains its children and exits; killed, with its tree,
    /// if it takes longer than 15 s.
    pub fn stop(mut self) {
        self.hs.signal(Signal::SIGTERM);
        if self.hs.exit_within(Duration::from_secs(15)).is_none() {
            eprintln!("reload bench: hotswap (pid {}) ignored SIGTERM, killing it", self.hs.pid());
        }
    }
}

impl Drop for Hotswap {
    fn drop(&mut self) {
        // `self.hs` is dropped right after: it kills hotswap and its whole tree, and reaps it.
        forget(self.hs.pid());
    }
}

/// One reload, timed from the moment it was asked for (SIGHUP, SIGTERM, `pm2 reload`).
#[derive(Clone, Copy, Debug)]
pub struct Reload {
    pub at: Instant,
    /// → the new generation is ready (naive: the restarted server said ready).
    pub ready: Option<Duration>,
    /// → the old generation is gone (naive: the old server exited).
    pub gone: Option<Duration>,
    /// The new children's own part: from their spawn (hotswap's `started` line; naive: the
    /// spawn call) to their `ready` line, the last of them for several instances.
    pub boot: Option<Duration>,
    /// hotswap: → its `started` line, logged once every instance is spawned (`--rolling`: the
    /// last instance's `started` line, after the others were ready; its `boot` is then the
    /// instances' boots summed).
    pub spawned: Option<Duration>,
}

impl Reload {
    /// Asked for at `at`, nothing timed yet.
    pub fn asked(at: Instant) -> Reload {
        Reload { at, ready: None, gone: None, boot: None, spawned: None }
    }

    /// What the reload cost beyond the child's own boot.
    pub fn overhead(&self) -> Option<Duration> {
        Some(self.ready?.saturating_sub(self.boot?))
    }

    /// The reload window: from the request to the later of ready and gone.
    pub fn end(&self) -> Instant {
        self.at + self.ready.unwrap_or_default().max(self.gone.unwrap_or_default())
    }
}

// ------------------------------------------------------------------------------------------
// /proc readers

/// What /proc says about a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss_kib: u64,
    /// Peak RSS (VmHWM).
    pub hwm_kib: u64,
    /// RSS split: anonymous memory (heap, stacks: hotswap's own) and file pages (its binary's
    /// code and the shared libraries', counted in every process that maps them).
    pub anon_kib: u64,
    pub file_kib: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pub pss_kib: u64,
    /// Size of the heap and other private data mappings (VmData).
    pub data_kib: u64,
    /// Resident pages of hotswap's own executable (part of `file_kib`).
    pub exe_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Time on CPU from schedstat, over all threads.
    pub cpu_ns: u64,
    /// Context switches (voluntary + involuntary), over all threads: wakeups.
    pub switches: u64,
    pub fds: usize,
    pub threads: usize,
}

impl Usage {
    pub fn of(pid: i32) -> Option<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| kib_field(&status, name).unwrap_or(0);
        let f = stat_numbers(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
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
                .and_then(|s| kib_field(&s, "Pss:"))
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
    pub fn cpu_ms(&self) -> f64 {
        self.cpu_ticks as f64 * 1000.0 / clock_ticks()
    }

    /// `4.08 MiB / 3.1 ms (0 ticks)`: peak RSS, CPU time from schedstat (ns resolution) and
    /// utime + stime in clock ticks.
    pub fn cell(&self) -> String {
        format!(
            "{:.2} MiB / {:.1} ms ({} ticks)",
            self.hwm_kib as f64 / 1024.0,
            self.cpu_ns as f64 / 1e6,
            self.cpu_ticks
        )
    }
}

/// The value of `key` in `pid`'s environment as it was exec'ed (`HOTSWAP_INSTANCE`).
pub fn env_var(pid: u32, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string)
    })
}

/// How many of `pid`'s fds are sockets (listening, connected, its own channels): its
/// connections are what it holds beyond what it held before the load.
pub fn socket_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// The number after `name` on the first line that starts with it (`VmRSS:   3648 kB` → 3648).
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
}

/// The numbers of /proc/PID/stat after the command name, from the state (field 3) on; a field
/// that is not a number (the state) reads as 0.
fn stat_numbers(stat: &str) -> Option<Vec<u64>> {
    Some(stat_fields(stat)?.into_iter().map(|x| x.parse().unwrap_or(0)).collect())
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

/// Entries of /proc/net/tcp and tcp6: this network namespace's TCP sockets, TIME_WAIT included
/// (a load with a new connection per request leaves thousands). hotswap's deep looks at a
/// starting tree read these tables whole.
pub fn tcp_entries() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|t| std::fs::read_to_string(t).map_or(0, |s| s.lines().count().saturating_sub(1)))
        .sum()
}

/// Clock ticks per second (the unit of utime and stime), 100 if sysconf cannot tell.
fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU time of the whole machine and of this bench's process tree, to tell how much of the
/// machine other processes took while the bench ran.
pub struct CpuSnapshot {
    at: Instant,
    /// Busy ticks of all CPUs (/proc/stat: everything but idle and iowait).
    busy: u64,
    /// This process and its reaped children (which include hotswap's, reaped by hotswap).
    own: u64,
}

impl CpuSnapshot {
    pub fn now() -> CpuSnapshot {
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
        let f = stat_numbers(&me).unwrap_or_default();
        // utime, stime, cutime, cstime: fields 14-17, i.e. 11-14 after the command name.
        let own = f.get(11..15).map_or(0, |v| v.iter().sum());
        CpuSnapshot { at: Instant::now(), busy, own }
    }

    /// The share of all CPUs that processes outside this bench used since `self`.
    pub fn other_share(&self) -> f64 {
        let now = CpuSnapshot::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = now.at.duration_since(self.at).as_secs_f64() * clock_ticks() * cores;
        let other = now.busy.saturating_sub(self.busy).saturating_sub(now.own - self.own);
        other as f64 / wall.max(1.0)
    }
}

// ------------------------------------------------------------------------------------------
// Binaries, ports, PATH

pub struct Bins {
    pub server: PathBuf,
}

/// Builds the example server in the profile this bench was built in (`target/release` under
/// `cargo bench`) with the cargo that runs us, so it is always there and fresh.
pub fn build_server() -> Bins {
    let hotswap = hotswap_bin();
    let dir = hotswap.parent().expect("hotswap has a parent dir").to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("release").to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let profile_args: Vec<&str> = match profile.as_str() {
        "debug" => vec![],
        "release" => vec!["--release"],
        other => vec!["--profile", other],
    };
    let mut cmd = Command::new(&cargo);
    cmd.arg("build").arg("--quiet").arg("--manifest-path").arg(&manifest);
    cmd.args(&profile_args).args(["--example", "server"]);
    let shown: String = profile_args.iter().map(|a| format!(" {a}")).collect();
    println!("building the example server first: {cargo} build{shown} --example server");
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(status.success(), "building the example server failed: {status}");
    let server = dir.join("examples").join("server");
    assert!(server.exists(), "{} is missing after the build", server.display());
    Bins { server }
}

pub fn free_ports(n: usize) -> Vec<u16> {
    // All bound at once, so they are distinct.
    let ls: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    ls.iter().map(|l| l.local_addr().expect("local_addr").port()).collect()
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
