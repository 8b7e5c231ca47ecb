//! The scenarios, each run yielding one [`Row`] of the table: the server alone (direct), the
//! server stopped and started again (naive), the server under hotswap with SIGHUP reloads,
//! unmodified apps that bind their own port (a Node app under hotswap with no flags and
//! restarted naively; Python's http.server, which has no SIGTERM handler, under hotswap), the
//! PM2 cluster when pm2 is installed, the instance rows (`-n 4` whole, `--rolling`, `--balance
//! reuseport`, and `-n 64` under load, then `-n 64` idle: HUP → every instance spawned), and
//! the scale points (many sockets, a thousand reloads in a row with idle CPU and RSS samples).
//! Besides the rows: the throughput ratio over interleaved direct/hotswap pairs ([`Pairs`]) and
//! each instance's share of the load per balance mode ([`Spread`]). [`run_all`] runs what the
//! options ask for, in the order the table is meant to be read in.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::WAIT;
use crate::apps::Runtime;
use crate::cli::Opts;
use crate::load::{self, LoadConfig, LoadReport, Target};
use crate::procs::{
    Bins, Hotswap, Live, Reload, Server, Usage, env_var, free_ports, live, on_path, socket_fds,
    started_pids, tcp_entries,
};
use crate::report::{ms, p50_max, quantile};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    NewConn,
    KeepAlive,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::NewConn => "new conn",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

/// How a hotswap row replaces and balances its instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// hotswap's defaults: a whole generation at once, every instance on one shared socket.
    Plain,
    /// `--rolling`: one instance at a time, each ready before the next starts.
    Rolling,
    /// `--balance reuseport`: one SO_REUSEPORT socket per instance slot.
    Reuseport,
}

impl Variant {
    /// hotswap's flags for it.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &[],
            Variant::Rolling => &["--rolling"],
            Variant::Reuseport => &["--balance", "reuseport"],
        }
    }

    /// The balance mode it runs: `shared` or `reuseport`.
    pub fn balance(self) -> &'static str {
        match self {
            Variant::Reuseport => "reuseport",
            Variant::Plain | Variant::Rolling => "shared",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    Direct,
    Naive,
    Hotswap {
        instances: u32,
        sockets: usize,
        variant: Variant,
    },
    Pm2 {
        instances: u32,
    },
    /// An app that binds its own port, under hotswap with no flags, or restarted naively.
    Unmodified(Unmodified),
}

/// The apps of the `unmodified` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmodified {
    /// `hotswap -- node app.js`, PORT set, no flag.
    Node,
    /// The same app stopped (SIGTERM, wait for its exit) and started again.
    NodeNaive,
    /// `hotswap -- python3 -m http.server P --bind 127.0.0.1` (through `sh -c 'exec … >&2'`, so
    /// that its `Serving HTTP on` line reaches the bench): no SIGTERM handler.
    HttpServer,
    /// The same with `--stop-signal INT`: Python turns SIGINT into KeyboardInterrupt, on which
    /// `python3 -m http.server` closes its server and exits.
    HttpServerInt,
}

impl Scenario {
    /// hotswap's defaults with `instances` instances and `sockets` sockets.
    pub fn hotswap(instances: u32, sockets: usize) -> Scenario {
        Scenario::Hotswap { instances, sockets, variant: Variant::Plain }
    }

    fn label(&self) -> String {
        match self {
            Scenario::Direct => "direct".into(),
            Scenario::Naive => "naive restart".into(),
            Scenario::Hotswap { instances, sockets, variant } => {
                let mut l = "hotswap".to_string();
                if *instances > 1 {
                    l += &format!(" -n {instances}");
                }
                if !variant.flags().is_empty() {
                    l += &format!(" {}", variant.flags().join(" "));
                }
                if *sockets > 1 {
                    l += &format!(", {sockets} sockets");
                }
                l
            }
            Scenario::Pm2 { instances } => format!("pm2 cluster -i {instances}"),
            Scenario::Unmodified(Unmodified::Node) => "unmodified Node app, no flags".into(),
            Scenario::Unmodified(Unmodified::NodeNaive) => {
                "unmodified Node app, naive restart".into()
            }
            Scenario::Unmodified(Unmodified::HttpServer) => {
                "http.server (no SIGTERM handler), no flags".into()
            }
            Scenario::Unmodified(Unmodified::HttpServerInt) => {
                "http.server, --stop-signal INT".into()
            }
        }
    }
}

/// One row of the table.
pub struct Row {
    pub scenario: Scenario,
    pub label: String,
    pub mode: Option<Mode>,
    pub load: Option<LoadReport>,
    pub reloads: Vec<Reload>,
    /// hotswap's usage at the end of the row (peak RSS, CPU time).
    pub usage: Option<Usage>,
    pub notes: Vec<String>,
    /// The load's configured duration.
    duration: Duration,
    /// p50 and p99 latency of the ok requests.
    pub latency: Option<(Duration, Duration)>,
    /// p99 latency of the ok requests in flight during a reload.
    pub latency_in_reloads: Option<Duration>,
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
    pub fn rate(&self) -> Option<f64> {
        Some(self.load.as_ref()?.ok as f64 / self.duration.as_secs_f64().max(1e-9))
    }

    /// Each reload's cost beyond the new children's own boot.
    pub fn overheads(&self) -> Vec<Duration> {
        self.reloads.iter().filter_map(Reload::overhead).collect()
    }
}

/// What a run yields besides the rows of the table.
#[derive(Default)]
pub struct Extras {
    /// The throughput ratio over interleaved pairs, per load mode.
    pub pairs: Vec<Pairs>,
    /// `-n --scale-instances` idle: HUP → every instance spawned, and the standalone boots.
    pub spawn: Option<SpawnIdle>,
    /// Each instance's share of the load, per instance count, balance mode and load mode.
    pub spread: Vec<Spread>,
    /// 1,000 reloads in a row.
    pub scale: Option<ReloadScale>,
}

/// The instances of the `--rolling` and `--balance reuseport` rows, and of the plain row
/// they are set beside.
pub const VARIANT_INSTANCES: u32 = 4;

/// Runs the scenarios `opts` asks for and prints a line as each row is done: the load rows
/// (after an unreported warm-up), the interleaved pairs, the unmodified apps, pm2, the socket
/// scale point, the instance rows and the idle spawn of many instances, the spread, and 1,000
/// reloads in a row. What is not a row of the table comes back in [`Extras`].
pub fn run_all(bins: &Bins, opts: &Opts) -> (Vec<Row>, Extras) {
    let mut rows: Vec<Row> = Vec::new();
    let mut extras = Extras::default();
    let mut push = |row: Row| {
        progress(&row);
        rows.push(row);
    };
    let modes = [Mode::NewConn, Mode::KeepAlive];
    if opts.want("load") {
        // Warm-up (CPU frequency, page cache, the loopback path), not reported.
        let warm_up = Opts { duration: Duration::from_secs(1), ..opts.clone() };
        for mode in modes {
            run_direct(bins, mode, &warm_up);
        }
        // Scenarios interleaved within each mode, so that a drift in the machine's load hits
        // direct and hotswap alike; the table groups them by scenario afterwards.
        for mode in modes {
            push(run_direct(bins, mode, opts));
            push(run_naive(bins, mode, opts));
            push(run_hotswap(bins, mode, 1, 1, Variant::Plain, opts));
            if opts.instances > 1 {
                push(run_hotswap(bins, mode, opts.instances, 1, Variant::Plain, opts));
            }
        }
    }
    if opts.want("pairs") && opts.pairs > 0 {
        extras.pairs = modes.iter().map(|m| run_pairs(bins, *m, opts)).collect();
    }
    if opts.want("unmodified") {
        for mode in modes {
            for app in [
                Unmodified::Node,
                Unmodified::NodeNaive,
                Unmodified::HttpServer,
                Unmodified::HttpServerInt,
            ] {
                if let Some(row) = run_unmodified(bins, app, mode, opts) {
                    push(row);
                }
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
            if let Some(row) = pm2.as_ref().and_then(|p| run_pm2(p, mode, opts.instances, opts)) {
                push(row);
            }
        }
    }
    if opts.want("sockets") && opts.scale_sockets > 0 {
        push(run_hotswap(bins, Mode::NewConn, 1, opts.scale_sockets, Variant::Plain, opts));
    }
    if opts.want("instances") {
        for mode in modes {
            for variant in [Variant::Plain, Variant::Rolling, Variant::Reuseport] {
                push(run_hotswap(bins, mode, VARIANT_INSTANCES, 1, variant, opts));
            }
            if opts.scale_instances > 0 {
                push(run_hotswap(bins, mode, opts.scale_instances, 1, Variant::Plain, opts));
            }
        }
        if opts.scale_instances > 0 {
            let s = run_spawn_idle(bins, opts.scale_instances, opts);
            println!("  {}: {}", s.row.label, s.row.notes.join("; "));
            extras.spawn = Some(s);
        }
    }
    if opts.want("spread") {
        for &n in &opts.spread {
            for mode in [Mode::KeepAlive, Mode::NewConn] {
                for variant in [Variant::Plain, Variant::Reuseport] {
                    extras.spread.push(run_spread(bins, n, variant, mode, opts));
                }
            }
        }
    }
    extras.scale = (opts.want("reloads") && opts.scale_reloads > 0).then(|| {
        let s = run_reload_scale(bins, opts.scale_reloads, opts);
        println!("  {}: {}", s.row.label, s.row.notes.join("; "));
        s
    });
    (rows, extras)
}

/// The progress line of a finished row, and the first failures the load client kept.
fn progress(r: &Row) {
    let l = r.load.as_ref();
    println!(
        "  {:<42} {:<10} {:>8} requests, {:>6} failed, {:>8.0} req/s",
        r.label,
        r.mode.map_or("", Mode::name),
        l.map_or(0, LoadReport::total),
        l.map_or(0, LoadReport::failed),
        r.rate().unwrap_or_default()
    );
    for sample in l.map_or(&[][..], |l| &l.samples[..]) {
        println!("      first failures: {sample}");
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
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
    let report = load::run_blocking(load_config(local(port), mode, opts));
    server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
    let mut row = Row::new(Scenario::Direct, Some(mode));
    row.set_load(report, opts.duration);
    row
}

fn run_naive(bins: &Bins, mode: Mode, opts: &Opts) -> Row {
    let port = free_ports(1)[0];
    let start = || Server::start(&bins.server, port, opts.boot_delay, opts.verbose);
    naive_restarts(Scenario::Naive, start, local(port), mode, opts)
}

/// The server `start` starts (waiting for its ready line), under load on `addr`, stopped
/// (SIGTERM, wait for its exit) and started again K times, as `systemctl restart` does.
fn naive_restarts(
    scenario: Scenario,
    start: impl Fn() -> (Server, Duration),
    addr: SocketAddr,
    mode: Mode,
    opts: &Opts,
) -> Row {
    let (mut server, _) = start();
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
        let (next, boot) = start();
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
    drop(server.stderr);
    let mut row = Row::new(scenario, Some(mode));
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    row
}

/// K SIGHUPs of `hs`, spaced evenly, under load on `addr`.
fn hups_under_load(
    hs: &mut Hotswap,
    addr: SocketAddr,
    mode: Mode,
    opts: &Opts,
) -> (LoadReport, Vec<Reload>) {
    let t_load = Instant::now();
    let handle = load::spawn_in_thread(load_config(addr, mode, opts));
    let mut reloads = Vec::new();
    for at in schedule(opts, t_load) {
        sleep_until(at);
        reloads.push(hs.hup());
    }
    (handle.finish(), reloads)
}

fn run_hotswap(
    bins: &Bins,
    mode: Mode,
    instances: u32,
    sockets: usize,
    variant: Variant,
    opts: &Opts,
) -> Row {
    let addrs: Vec<SocketAddr> = free_ports(sockets).into_iter().map(local).collect();
    let mut hs =
        Hotswap::start(bins, &addrs, instances, variant.flags(), opts.boot_delay, opts.verbose);
    let (report, reloads) = hups_under_load(&mut hs, addrs[0], mode, opts);
    // Let the last reload's tail (reaping, closing the old children's channels) settle.
    std::thread::sleep(Duration::from_millis(300));
    let mut row = Row::new(Scenario::Hotswap { instances, sockets, variant }, Some(mode));
    if sockets > 1 {
        // Every socket still answers after the reloads.
        let answered = addrs.iter().filter(|a| http_ok(**a)).count();
        row.notes.push(format!("{answered}/{sockets} sockets answer after the reloads"));
    }
    let usage = hs.usage();
    let spawned: Vec<Duration> = reloads.iter().filter_map(|r| r.spawned).collect();
    let pids = report.pids().len();
    row.notes.push(match variant {
        Variant::Rolling => format!(
            "HUP → the last instance spawned (each once the one before is ready) {}; boot: \
             the {instances} instances' own boots summed; {pids} pids answered; hotswap fds {}",
            p50_max(&spawned),
            usage.fds
        ),
        _ => format!(
            "HUP → every instance spawned {}; {pids} pids answered; hotswap fds {}",
            p50_max(&spawned),
            usage.fds
        ),
    });
    hs.stop();
    row.usage = Some(usage);
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    row
}

/// A row of the `unmodified` group; None (and a line saying why) when the app cannot run here.
fn run_unmodified(bins: &Bins, app: Unmodified, mode: Mode, opts: &Opts) -> Option<Row> {
    let scenario = Scenario::Unmodified(app);
    let runtime = match app {
        Unmodified::Node | Unmodified::NodeNaive => Runtime::Node,
        Unmodified::HttpServer | Unmodified::HttpServerInt => Runtime::HttpServer,
    };
    let port = free_ports(1)[0];
    let mut run = match runtime.run(port, bins, &opts.venv) {
        Ok(run) => run,
        Err(why) => {
            println!("{}: skipped ({why})", scenario.label());
            return None;
        }
    };
    let what = match runtime {
        Runtime::Node => "Node app (tests/fixtures/unmodified/app.js)",
        _ => "Python's http.server",
    };
    let not_direct = format!("{what}: ÷ direct does not apply");
    if app == Unmodified::NodeNaive {
        let start = || Server::spawn(run.alone(), "node", run.line, opts.verbose);
        let mut row = naive_restarts(scenario, start, run.addr, mode, opts);
        row.notes.push(not_direct);
        row.notes.push("ready: the new node's `listening` line".into());
        return Some(row);
    }
    if app == Unmodified::HttpServerInt {
        run.flags.extend(["--stop-signal".to_string(), "INT".to_string()]);
    }
    let mut hs = match Hotswap::launch(run.launch(&[], opts.verbose), run.line) {
        Ok(hs) => hs,
        Err(line) => {
            println!("{}: not run, generation 1 failed: {line}", scenario.label());
            return None;
        }
    };
    let from = hs.log().line_count();
    let (report, reloads) = hups_under_load(&mut hs, run.addr, mode, opts);
    let usage = hs.usage();
    let mut row = Row::new(scenario, Some(mode));
    row.notes.push(not_direct);
    row.notes.push(format!("seen taking connections: {}", seen_as(&hs.log().lines()[from..])));
    let spawned: Vec<Duration> = reloads.iter().filter_map(|r| r.spawned).collect();
    row.notes.push(format!(
        "HUP → spawned {}; boot: `gen N started` → the app's {} line; hotswap fds {}; TCP \
         table (what a deep look reads) {} entries at the end",
        p50_max(&spawned),
        match runtime {
            Runtime::Node => "`listening`",
            _ => "`Serving HTTP on`",
        },
        usage.fds,
        tcp_entries()
    ));
    if runtime == Runtime::HttpServer && mode == Mode::KeepAlive {
        row.notes.push("http.server answers HTTP/1.0 and closes every connection".into());
    }
    hs.stop();
    row.usage = Some(usage);
    row.reloads = reloads;
    row.set_load(report, opts.duration);
    Some(row)
}

/// How the `gen N ready after …` lines among `lines` say the children were seen taking
/// connections, with how often: `epoll ×5`.
pub fn seen_as(lines: &[String]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for l in lines.iter().filter(|l| l.contains(" ready after ")) {
        let how = ready_how(l);
        match kinds.iter_mut().find(|(k, _)| *k == how) {
            Some((_, n)) => *n += 1,
            None => kinds.push((how, 1)),
        }
    }
    if kinds.is_empty() {
        return "–".into();
    }
    kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
}

/// The way a `gen N ready after 212ms (pid 1234 accepting on [::]:3000 (epoll))` line says the
/// child was seen: `epoll`, `accept`, `poll`, `select`, `recv`, `holding a connection`, or the
/// signal it sent (`READY=1`).
pub fn ready_how(line: &str) -> String {
    let why = line.split_once(" (").map_or("", |(_, w)| w.trim_end_matches(')'));
    if why.ends_with("(epoll") {
        return "epoll".into();
    }
    if let Some((_, rest)) = why.split_once("waiting in ") {
        return rest.split(' ').next().unwrap_or(rest).to_string();
    }
    if why.contains("holding a connection") {
        return "holding a connection".into();
    }
    why.to_string()
}

/// One GET / on a fresh connection; true on a 200.
fn http_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
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

// ------------------------------------------------------------------------------------------
// The throughput ratio over interleaved pairs

/// The throughput ratio hotswap ÷ direct in one load mode, from `--pairs` pairs of short runs
/// interleaved (direct, hotswap, direct, hotswap, …), so that a drift in the machine's load
/// hits both alike.
pub struct Pairs {
    pub mode: Mode,
    /// ok req/s of each pair, (direct, hotswap), in the order they ran.
    pub rates: Vec<(f64, f64)>,
    /// Failed and all requests over the hotswap runs.
    pub failed: u64,
    pub total: u64,
    /// Failed requests over the direct runs.
    pub direct_failed: u64,
    /// SIGHUPs in each hotswap run, and the load of each run.
    pub reloads: usize,
    pub duration: Duration,
}

impl Pairs {
    /// hotswap ÷ direct of each pair, in the order they ran.
    pub fn ratios(&self) -> Vec<f64> {
        self.rates.iter().map(|(d, h)| h / d.max(1e-9)).collect()
    }
}

fn run_pairs(bins: &Bins, mode: Mode, opts: &Opts) -> Pairs {
    let short = Opts { duration: opts.short, ..opts.clone() };
    // Warm-up, not reported.
    run_direct(bins, mode, &Opts { duration: Duration::from_secs(1), ..opts.clone() });
    let mut p = Pairs {
        mode,
        rates: Vec::new(),
        failed: 0,
        total: 0,
        direct_failed: 0,
        reloads: opts.reloads,
        duration: opts.short,
    };
    for i in 1..=opts.pairs {
        let d = run_direct(bins, mode, &short);
        let h = run_hotswap(bins, mode, 1, 1, Variant::Plain, &short);
        let (dr, hr) = (d.rate().unwrap_or_default(), h.rate().unwrap_or_default());
        let hl = h.load.as_ref();
        let failed = hl.map_or(0, LoadReport::failed);
        p.failed += failed;
        p.total += hl.map_or(0, LoadReport::total);
        p.direct_failed += d.load.as_ref().map_or(0, LoadReport::failed);
        println!(
            "  pair {i}/{} {:<10} direct {dr:>8.0} req/s, hotswap {hr:>8.0} req/s ({failed} \
             failed), ratio {:.3}",
            opts.pairs,
            mode.name(),
            hr / dr.max(1e-9)
        );
        p.rates.push((dr, hr));
    }
    p
}

// ------------------------------------------------------------------------------------------
// Each instance's share of the load

/// How one hotswap with `instances` instances spread a load over them, no reload.
pub struct Spread {
    pub instances: u32,
    pub variant: Variant,
    pub mode: Mode,
    /// ok requests each instance answered (by the `HOTSWAP_INSTANCE` of the pid in `X-Pid`).
    pub requests: Vec<u64>,
    /// Keep-alive: the connections each instance held halfway through the load (its socket
    /// fds beyond those it held before the load).
    pub conns: Option<Vec<usize>>,
    /// ok requests from a pid that is none of generation 1's instances (a restarted one).
    pub other: u64,
    pub failed: u64,
    pub total: u64,
}

fn run_spread(bins: &Bins, n: u32, variant: Variant, mode: Mode, opts: &Opts) -> Spread {
    let addr = local(free_ports(1)[0]);
    let hs = Hotswap::start(bins, &[addr], n, variant.flags(), opts.boot_delay, opts.verbose);
    let pids = started_pids(&hs.log().lines(), 1);
    // pid → instance, from the environment hotswap gave it.
    let instance_of: Vec<(u32, usize)> = pids
        .iter()
        .filter_map(|p| Some((*p, env_var(*p, "HOTSWAP_INSTANCE")?.parse().ok()?)))
        .collect();
    let before: Vec<usize> = pids.iter().map(|p| socket_fds(*p)).collect();
    let short = Opts { duration: opts.short, ..opts.clone() };
    let handle = load::spawn_in_thread(load_config(addr, mode, &short));
    std::thread::sleep(opts.short / 2);
    let mid: Vec<usize> = pids.iter().map(|p| socket_fds(*p)).collect();
    let report = handle.finish();
    hs.stop();
    let mut s = Spread {
        instances: n,
        variant,
        mode,
        requests: vec![0; n as usize],
        conns: None,
        other: 0,
        failed: report.failed(),
        total: report.total(),
    };
    for (pid, ok) in &report.by_pid {
        match instance_of.iter().find(|(p, _)| p == pid) {
            Some((_, i)) if *i < s.requests.len() => s.requests[*i] += ok,
            _ => s.other += ok,
        }
    }
    if mode == Mode::KeepAlive {
        let mut conns = vec![0; n as usize];
        for ((pid, b), m) in pids.iter().zip(&before).zip(&mid) {
            if let Some((_, i)) = instance_of.iter().find(|(p, _)| p == pid) {
                if let Some(c) = conns.get_mut(*i) {
                    *c += m.saturating_sub(*b);
                }
            }
        }
        s.conns = Some(conns);
    }
    let shares: Vec<String> = s
        .requests
        .iter()
        .map(|r| format!("{:.0}%", *r as f64 * 100.0 / report.ok.max(1) as f64))
        .collect();
    println!(
        "  spread -n {n} --balance {:<9} {:<10} {:>8} requests, {} failed; shares {}",
        variant.balance(),
        mode.name(),
        s.total,
        s.failed,
        shares.join(" ")
    );
    s
}

// ------------------------------------------------------------------------------------------
// Many instances idle: HUP → every instance spawned

/// `-n N` at idle, `--spawn-reloads` SIGHUPs one after the other: how long until hotswap has
/// spawned every instance of the new generation, and what the reload costs beyond the
/// server's own boot, measured standalone between the reloads.
pub struct SpawnIdle {
    pub row: Row,
    pub instances: u32,
    /// HUP → the first line of the first new instance (it runs the server by then).
    pub first_line: Vec<Duration>,
    /// hotswap's own CPU time over each whole reload (spawns, readiness looks, retiring,
    /// reaping), from schedstat.
    pub cpu: Vec<Duration>,
    /// The server's own boot standalone (spawn → its `ready` line), sorted.
    pub boots: Vec<Duration>,
}

impl SpawnIdle {
    /// HUP → `gen N started (pids …)`, each reload.
    pub fn spawned(&self) -> Vec<Duration> {
        self.row.reloads.iter().filter_map(|r| r.spawned).collect()
    }

    /// HUP → `gen N ready`, each reload.
    pub fn ready(&self) -> Vec<Duration> {
        self.row.reloads.iter().filter_map(|r| r.ready).collect()
    }
}

fn run_spawn_idle(bins: &Bins, n: u32, opts: &Opts) -> SpawnIdle {
    let port = free_ports(1)[0];
    let mut hs = Hotswap::start(bins, &[local(port)], n, &[], Duration::ZERO, opts.verbose);
    let boot_port = free_ports(1)[0];
    let boots_each = opts.boots.div_ceil(opts.spawn_reloads);
    let (mut reloads, mut first_line, mut boots, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.spawn_reloads {
        // Idle: the last generation gone and reaped, its children's exits logged.
        std::thread::sleep(Duration::from_millis(300));
        let from = hs.log().line_count();
        let cpu_before = hs.usage().cpu_ns;
        let r = hs.hup();
        cpu.push(Duration::from_nanos(hs.usage().cpu_ns.saturating_sub(cpu_before)));
        let generation = hs.generation();
        let first = hs.log().wait(from, Duration::ZERO, |lines| {
            let texts: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
            let pids = started_pids(&texts, generation);
            let needles: Vec<String> = pids.iter().map(|p| format!("server[{p}]:")).collect();
            lines.iter().find(|(_, l)| needles.iter().any(|n| l.contains(n))).map(|(at, _)| *at)
        });
        first_line.extend(first.map(|at| at.saturating_duration_since(r.at)));
        reloads.push(r);
        // The server's own boot, standalone, on the same machine in the same state.
        for _ in 0..boots_each {
            if boots.len() < opts.boots {
                let (mut server, boot) =
                    Server::start(&bins.server, boot_port, Duration::ZERO, opts.verbose);
                server.proc.stop(Signal::SIGTERM, Duration::from_secs(10));
                boots.push(boot);
            }
        }
    }
    boots.sort();
    std::thread::sleep(Duration::from_millis(300));
    let usage = hs.usage();
    hs.stop();
    let mut row = Row::new(Scenario::hotswap(n, 1), None);
    row.label = format!("hotswap -n {n}, idle");
    row.reloads = reloads;
    row.usage = Some(usage);
    let mut s = SpawnIdle { row, instances: n, first_line, cpu, boots };
    let (ready, boot) = (quantile(&s.ready(), 0.5), quantile(&s.boots, 0.5));
    let beyond = match (ready, boot) {
        (Some(r), Some(b)) => format!("{:+.1} ms", (r.as_secs_f64() - b.as_secs_f64()) * 1e3),
        _ => "–".into(),
    };
    let note = format!(
        "no load, {} SIGHUPs; HUP → every instance spawned {}; HUP → the first new instance's \
         first line {}; the server's own boot standalone: p50 {} ({} starts); HUP → ready p50 \
         minus that boot: {beyond}; hotswap's own CPU per reload {}; hotswap fds {}",
        s.row.reloads.len(),
        p50_max(&s.spawned()),
        p50_max(&s.first_line),
        boot.map_or("–".into(), ms),
        s.boots.len(),
        p50_max(&s.cpu),
        usage.fds
    );
    s.row.notes.push(note);
    s
}

// ------------------------------------------------------------------------------------------
// The reload scale point

/// Scale point: N consecutive reloads through the control socket, with idle windows before
/// and after; RSS and fd count at the start and the end.
pub struct ReloadScale {
    pub row: Row,
    pub before: Usage,
    /// After the first 10 reloads.
    pub warm: Usage,
    pub after: Usage,
    /// (reloads done, usage) at the start, after 10 and at each tenth.
    pub samples: Vec<(usize, Usage)>,
    pub idle: Vec<Idle>,
    pub idle_window: Duration,
    pub took: Duration,
    /// The server's own boot, standalone (spawn → its `ready` line), sorted.
    pub boots: Vec<Duration>,
}

/// hotswap's CPU use over one idle window.
#[derive(Clone, Copy)]
pub struct Idle {
    pub ticks: u64,
    pub cpu_ns: u64,
    pub switches: u64,
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
    let mut hs = Hotswap::start(bins, &[local(port)], 1, &[], Duration::ZERO, opts.verbose);
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
    let served = http_ok(local(port));
    hs.stop();
    let mut row = Row::new(Scenario::hotswap(1, 1), None);
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
        match self.cmd(args).output() {
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
    let addr = local(port);
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
        reloads.push(Reload { gone: ok.then_some(t0.elapsed()), ..Reload::asked(t0) });
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
