//! The bench's command line: the options after `cargo bench --bench reload --`, their defaults
//! and the usage text. A bad argument prints the usage and exits 2; `--help` prints it and
//! exits 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone)]
pub struct Opts {
    pub duration: Duration,
    pub reloads: usize,
    pub clients: usize,
    pub instances: u32,
    pub scale_sockets: usize,
    pub scale_instances: u32,
    pub scale_reloads: usize,
    pub pairs: usize,
    pub short: Duration,
    pub spread: Vec<u32>,
    pub spawn_reloads: usize,
    pub idle: Duration,
    pub boots: usize,
    pub boot_delay: Duration,
    pub pm2: bool,
    pub detect_starts: usize,
    pub venv: PathBuf,
    pub only: Option<Vec<String>>,
    pub write: bool,
    pub verbose: bool,
    pub readme: bool,
    pub out: PathBuf,
}

const USAGE: &str = "\
cargo bench --bench reload [-- OPTIONS]
  --duration DUR          load per scenario and mode [5s]
  --reloads K             reloads per scenario and mode, spaced evenly [5]
  --clients N             concurrent clients (each mode uses N workers of its kind) [8]
  --instances N           the multi-instance hotswap row [2]
  --scale-sockets N       listening sockets of the socket scale point, 0 skips it [100]
  --scale-instances N     instances of the many-instance rows of the instances group (under
                          load, and idle for HUP → every instance spawned), 0 skips them [64]
  --scale-reloads N       consecutive reloads of the reload scale point, 0 skips it [1000]
  --pairs N               interleaved direct/hotswap pairs per load mode for the throughput
                          ratio (its median and spread), 0 skips them [5]
  --short DUR             load per run of the pairs and of the spread group [2s]
  --spread N,...          instance counts of the spread group [2,4]
  --spawn-reloads N       idle SIGHUPs that time HUP → every instance spawned at
                          --scale-instances [5]
  --idle DUR              idle window in which hotswap's CPU time is sampled [2s]
  --boots N               standalone starts that measure the server's own boot time [20]
  --boot-delay DUR        the server's --boot-delay in the load rows, to play a slower app [0s]
  --no-pm2                skip the PM2 scenario even when pm2 is on PATH
  --detect-starts N       reloads per runtime in the detection table [10]
  --venv DIR              the venv with gunicorn and uvicorn, for the detection table [.venv at
                          the repository root]; a runtime whose program is missing is skipped
  --only GROUP,...        run only these [all]:
                            load        direct, naive restart and hotswap rows
                            unmodified  an unmodified Node app under hotswap with no flags, the
                                        same app restarted naively, and python3 -m http.server
                                        (no SIGTERM handler) under hotswap with no flags and
                                        with --stop-signal INT
                            detection   readiness detection latency per runtime (Node, http.server,
                                        gunicorn sync and gthread, uvicorn, tokio, accept loop)
                            pairs       the throughput ratio hotswap ÷ direct: --pairs runs of
                                        each, interleaved (direct, hotswap, direct, …), --reloads
                                        SIGHUPs in each hotswap run, both load modes
                            instances   under load with --reloads SIGHUPs, both modes: -n 4,
                                        -n 4 --rolling, -n 4 --balance reuseport, and
                                        -n --scale-instances; then that many instances idle:
                                        HUP → every instance spawned, and the reload's cost
                                        beyond the server's own boot
                            spread      each instance's share of the requests (and of the
                                        keep-alive connections), --balance shared vs reuseport,
                                        for each --spread count, both modes, no reload
                            pm2, sockets, reloads
  --no-write              do not write docs/bench/results.md and reload.svg
  --out DIR               where to write them [docs/bench]
  --readme                also copy the table into README.md, between its bench-table markers
  --verbose               echo every line the servers and hotswap log";

/// What `--only` can name.
const GROUPS: [&str; 9] = [
    "load",
    "pairs",
    "unmodified",
    "detection",
    "pm2",
    "sockets",
    "instances",
    "spread",
    "reloads",
];

pub fn parse_opts() -> Opts {
    let mut o = Opts {
        duration: Duration::from_secs(5),
        reloads: 5,
        clients: 8,
        instances: 2,
        scale_sockets: 100,
        scale_instances: 64,
        scale_reloads: 1000,
        pairs: 5,
        short: Duration::from_secs(2),
        spread: vec![2, 4],
        spawn_reloads: 5,
        idle: Duration::from_secs(2),
        boots: 20,
        boot_delay: Duration::ZERO,
        pm2: true,
        detect_starts: 10,
        venv: Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
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
            "--pairs" => o.pairs = num(&value("--pairs")),
            "--short" => o.short = dur(&value("--short")),
            "--spread" => {
                o.spread = value("--spread").split(',').map(|n| num::<u32>(n).max(1)).collect();
            }
            "--spawn-reloads" => o.spawn_reloads = num::<usize>(&value("--spawn-reloads")).max(1),
            "--idle" => o.idle = dur(&value("--idle")),
            "--boots" => o.boots = num::<usize>(&value("--boots")).max(1),
            "--boot-delay" => o.boot_delay = dur(&value("--boot-delay")),
            "--no-pm2" => o.pm2 = false,
            "--detect-starts" => o.detect_starts = num::<usize>(&value("--detect-starts")).max(1),
            "--venv" => o.venv = PathBuf::from(value("--venv")),
            "--only" => {
                let list: Vec<String> = value("--only").split(',').map(str::to_string).collect();
                if let Some(g) = list.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    die(&format!("--only: unknown group {g:?}"));
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

impl Opts {
    /// Whether `--only` (absent: everything) names `group`.
    pub fn want(&self, group: &str) -> bool {
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
