//! The detection table (`--only detection`): for each runtime of [`RUNTIMES`], how long after
//! the app starts waiting on its socket hotswap logs `gen N ready`, and what its looking at the
//! starting tree in /proc (DESIGN.md §4, `auto`) costs.
//!
//! Each runtime runs under hotswap with `HOTSWAP_LOG=debug` and no load, for `--detect-starts`
//! reloads; each reload is one start (generation 1 is not counted: it includes hotswap's own
//! start and the first claim of the port). Per start, from the lines as the bench's stderr
//! reader received them (the app's lines and hotswap's come through the same pipe, read by the
//! same thread):
//!
//! - latency: the app's own line ([`Runtime::marker`]) → hotswap's `gen N ready after` line;
//!   negative when hotswap said ready first;
//! - looks: the `looked at pid P's tree … in Nus` lines for the new child up to that ready line;
//! - hotswap's CPU time from the HUP to the moment the bench read the ready line.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::WAIT;
use crate::apps::{RUNTIMES, Runtime};
use crate::cli::Opts;
use crate::procs::{Bins, ChildLine, Hotswap, free_ports, tcp_entries};
use crate::report::{markdown_grid, ms, p50_max, quantile};
use crate::scenarios::ready_how;
use crate::support::pids_in;

/// One runtime's starts.
pub struct Detection {
    pub runtime: Runtime,
    pub starts: Vec<Start>,
    /// Why it was skipped, or stopped before its last start.
    pub problem: Option<String>,
}

/// One start (a reload) of a runtime.
pub struct Start {
    /// The app's line → hotswap's ready line, in ms; negative: hotswap said ready first.
    pub latency_ms: f64,
    /// HUP → the app's line: the app's own start.
    pub boot: Duration,
    /// HUP → hotswap's ready line.
    pub ready: Duration,
    /// Looks at the new child's tree until it was seen ready, the last one included.
    pub looks: usize,
    /// What each look cost (hotswap's own measure), ordinary and deep ones apart.
    pub look_us: Vec<u64>,
    pub deep_us: Vec<u64>,
    /// hotswap's CPU time, HUP → the bench read the ready line.
    pub cpu_ns: u64,
    /// How the ready line says it was seen (`epoll`, `poll`, …).
    pub how: String,
}

/// Runs every runtime in turn, printing a line as each is done.
pub fn run_all(bins: &Bins, opts: &Opts) -> Vec<Detection> {
    RUNTIMES
        .iter()
        .map(|&runtime| {
            let d = run_one(runtime, bins, opts);
            progress(&d);
            d
        })
        .collect()
}

fn progress(d: &Detection) {
    let lat: Vec<f64> = d.starts.iter().map(|s| s.latency_ms).collect();
    println!(
        "  detection {:<24} {:>2} starts, app's line → ready p50 {}, looks p50 {}{}",
        d.runtime.name(),
        d.starts.len(),
        fquantile(&lat, 0.5).map_or("–".into(), signed_ms),
        uquantile(&d.starts.iter().map(|s| s.looks as u64).collect::<Vec<_>>(), 0.5)
            .map_or("–".into(), |n| n.to_string()),
        d.problem.as_ref().map_or(String::new(), |p| format!("; {p}"))
    );
}

fn run_one(runtime: Runtime, bins: &Bins, opts: &Opts) -> Detection {
    let mut d = Detection { runtime, starts: Vec::new(), problem: None };
    let port = free_ports(1)[0];
    let run = match runtime.run(port, bins, &opts.venv) {
        Ok(run) => run,
        Err(why) => {
            d.problem = Some(format!("skipped: {why}"));
            return d;
        }
    };
    let launch = run.launch(&[("HOTSWAP_LOG", "debug")], opts.verbose);
    let hs = match Hotswap::launch(launch, run.line) {
        Ok(hs) => hs,
        Err(line) => {
            d.problem = Some(format!("generation 1 failed: {line}"));
            return d;
        }
    };
    for generation in 2..=opts.detect_starts as u64 + 1 {
        match one_start(&hs, generation, run.line) {
            Ok(start) => d.starts.push(start),
            Err(e) => {
                d.problem = Some(e);
                break;
            }
        }
    }
    hs.stop();
    d
}

/// One reload with no load: HUP, hotswap's CPU time until the bench reads the ready line, then
/// the app's own line and the old generation gone (so that the next start is alone).
fn one_start(hs: &Hotswap, generation: u64, child: ChildLine) -> Result<Start, String> {
    let log = hs.log();
    let from = log.line_count();
    let ready = format!("gen {generation} ready after ");
    let failed = format!("gen {generation} failed");
    let before = hs.usage();
    let t0 = Instant::now();
    hs.signal(Signal::SIGHUP);
    let first = log.wait(from, WAIT, |lines| {
        lines
            .iter()
            .find(|(_, l)| l.contains(&ready) || l.contains(&failed))
            .map(|(_, l)| l.clone())
    });
    let after = hs.usage();
    match first {
        Some(l) if l.contains(&ready) => {}
        Some(l) => return Err(l),
        None => return Err(format!("no `gen {generation} ready` within {WAIT:?}")),
    }
    let started = format!("gen {generation} started (pids ");
    let gone = format!("gen {} gone", generation - 1);
    let lines = log
        .wait(from, WAIT, |lines| {
            let has = |needle: &str| lines.iter().any(|(_, l)| l.contains(needle));
            let (_, s) = lines.iter().find(|(_, l)| l.contains(&started))?;
            let pid = *pids_in(s).first()?;
            (has(&child.needle(pid)) && has(&gone)).then(|| lines.to_vec())
        })
        .ok_or_else(|| {
            format!("gen {generation}: the app's own line or `gen {} gone` missing", generation - 1)
        })?;
    analyse(&lines, generation, child, t0, after.cpu_ns.saturating_sub(before.cpu_ns))
}

/// The start's numbers from the lines logged since the HUP at `t0`.
fn analyse(
    lines: &[(Instant, String)],
    generation: u64,
    child: ChildLine,
    t0: Instant,
    cpu_ns: u64,
) -> Result<Start, String> {
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|(_, l)| l.contains(needle))
            .ok_or_else(|| format!("gen {generation}: no line with {needle:?}"))
    };
    let pids = pids_in(&lines[pos(&format!("gen {generation} started (pids "))?].1);
    let app = pos(&child.needle(pids[0]))?;
    let ready = pos(&format!("gen {generation} ready after "))?;
    let (t_app, t_ready) = (lines[app].0, lines[ready].0);
    let latency_ms = if t_ready >= t_app {
        (t_ready - t_app).as_secs_f64() * 1e3
    } else {
        -(t_app - t_ready).as_secs_f64() * 1e3
    };
    let tags: Vec<String> = pids.iter().map(|p| format!("looked at pid {p}'s tree")).collect();
    let mut start = Start {
        latency_ms,
        boot: t_app.saturating_duration_since(t0),
        ready: t_ready.saturating_duration_since(t0),
        looks: 0,
        look_us: Vec::new(),
        deep_us: Vec::new(),
        cpu_ns,
        how: ready_how(&lines[ready].1),
    };
    for (_, l) in &lines[..ready] {
        let Some(rest) = tags.iter().find_map(|t| l.split_once(t.as_str()).map(|(_, r)| r)) else {
            continue;
        };
        start.looks += 1;
        let us = rest
            .split_once(" in ")
            .and_then(|(_, r)| r.split_once("us")?.0.parse::<u64>().ok())
            .unwrap_or(0);
        if rest.starts_with(" (deep)") {
            start.deep_us.push(us);
        } else {
            start.look_us.push(us);
        }
    }
    Ok(start)
}

fn fquantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((q * v.len().saturating_sub(1) as f64).round() as usize).copied()
}

fn uquantile(v: &[u64], q: f64) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get((q * v.len().saturating_sub(1) as f64).round() as usize).copied()
}

/// `+12.3 ms`, `-0.21 ms`.
fn signed_ms(m: f64) -> String {
    let sign = if m < 0.0 { "-" } else { "+" };
    format!("{sign}{}", ms(Duration::from_secs_f64(m.abs() / 1e3)))
}

const HEADER: [&str; 10] = [
    "runtime",
    "seen as (expected)",
    "starts",
    "app's line → ready p50 (max)",
    "looks until ready p50 (max)",
    "µs per look p50 (deep p50)",
    "hotswap CPU per start p50 (max)",
    "HUP → app's line p50",
    "HUP → ready p50",
    "notes",
];

/// The table with its caption, as markdown.
pub fn table(ds: &[Detection], opts: &Opts, tcp_before: usize) -> String {
    let dash = || "–".to_string();
    let rows: Vec<Vec<String>> = ds
        .iter()
        .map(|d| {
            let s = &d.starts;
            let mut c = vec![d.runtime.name().to_string()];
            if s.is_empty() {
                c.push(format!("– ({})", d.runtime.expected()));
                c.push("0".into());
                c.extend((0..6).map(|_| dash()));
            } else {
                let mut kinds: Vec<(String, usize)> = Vec::new();
                for x in s {
                    match kinds.iter_mut().find(|(k, _)| *k == x.how) {
                        Some((_, n)) => *n += 1,
                        None => kinds.push((x.how.clone(), 1)),
                    }
                }
                let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                c.push(format!("{} ({})", kinds.join(", "), d.runtime.expected()));
                c.push(s.len().to_string());
                let lat: Vec<f64> = s.iter().map(|x| x.latency_ms).collect();
                let max = lat.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                c.push(format!(
                    "{} ({})",
                    fquantile(&lat, 0.5).map_or_else(dash, signed_ms),
                    signed_ms(max)
                ));
                let looks: Vec<u64> = s.iter().map(|x| x.looks as u64).collect();
                c.push(format!(
                    "{} ({})",
                    uquantile(&looks, 0.5).unwrap_or(0),
                    looks.iter().max().unwrap_or(&0)
                ));
                let us: Vec<u64> = s.iter().flat_map(|x| x.look_us.iter().copied()).collect();
                let deep: Vec<u64> = s.iter().flat_map(|x| x.deep_us.iter().copied()).collect();
                c.push(format!(
                    "{} ({})",
                    uquantile(&us, 0.5).map_or_else(dash, |u| u.to_string()),
                    uquantile(&deep, 0.5).map_or_else(dash, |u| u.to_string())
                ));
                let cpu: Vec<Duration> = s.iter().map(|x| Duration::from_nanos(x.cpu_ns)).collect();
                c.push(p50_max(&cpu));
                let boot: Vec<Duration> = s.iter().map(|x| x.boot).collect();
                c.push(quantile(&boot, 0.5).map_or_else(dash, ms));
                let ready: Vec<Duration> = s.iter().map(|x| x.ready).collect();
                c.push(quantile(&ready, 0.5).map_or_else(dash, ms));
            }
            c.push(d.problem.clone().unwrap_or_default());
            c
        })
        .collect();
    let mut md = markdown_grid(&HEADER, &rows);
    md += &format!(
        "\nEach runtime under hotswap with `HOTSWAP_LOG=debug` and no load, {} reloads \
         (each reload is a start; generation 1 is not counted: it includes hotswap's own start \
         and the first claim of the port). **app's line → ready**: from the arrival of the \
         app's own line (below) to the arrival of hotswap's `gen N ready` line, both read from \
         the same stderr pipe by the same thread; negative: hotswap said ready before the app's \
         line arrived. **looks until ready**: hotswap's looks at the new child's tree (its \
         `looked at pid P's tree … in Nus` debug lines) up to and including the one that saw \
         it taking connections; **µs per look**: hotswap's own measure of each look (deep \
         looks, every eighth, also read the network tables whole: /proc/net/tcp and tcp6 held \
         {tcp_before} entries before the first runtime and {} after the last; the look after a \
         deep one comes ten times its cost later, at least). **hotswap CPU per start**: \
         hotswap's CPU time (`/proc/PID/task/*/schedstat`) from the HUP to the moment the bench \
         read the ready line: the spawn, the looks, the logging. **seen as**: how the ready \
         lines say the app was seen, and in brackets how it should be. hotswap looks 2, 6, 14, \
         30 and 62 ms after the spawn, then every 50 ms (src/driver/sampler.rs): an app that \
         starts waiting later than that is seen up to 50 ms after it does.\n\n",
        opts.detect_starts,
        tcp_entries()
    );
    md += "The runtimes, and the app's own line taken as the moment it starts waiting on the \
           socket:\n\n";
    for r in RUNTIMES {
        md += &format!("- **{}**: {}; the moment: {}.\n", r.name(), r.shown(), r.marker());
    }
    md
}
