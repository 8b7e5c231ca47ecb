//! The reload benchmark: what hotswap costs and what it saves, side by side in one run.
//!
//! ```text
//! cargo bench --bench reload                       # defaults: about 5 minutes on 2 cores
//! cargo bench --bench reload -- --duration 10s --reloads 20 --clients 32
//! ```
//!
//! One after the other, on the same machine, with the same load client (tests/integration/support/load.rs)
//! and the same example server (examples/server.rs, built here in the bench's profile):
//!
//! - **direct**: the server alone on the port (the ceiling; no reload);
//! - **naive**: the server stopped (SIGTERM, wait for its exit) and started again K times, what
//!   `systemctl restart` does;
//! - **hotswap**: the server under hotswap, K SIGHUP reloads; then with `-n 2` instances;
//! - **unmodified** (issue 8): an unmodified Node app (tests/fixtures/unmodified/app.js, binds PORT
//!   itself) under `hotswap --` with no flag, K SIGHUP reloads; the same app restarted naively;
//!   and `python3 -m http.server`, which has no SIGTERM handler, under `hotswap --`;
//! - **pm2** (only when `node` and `pm2` are on PATH): benches/pm2/server.js in PM2 cluster mode,
//!   K `pm2 reload`s;
//!
//! each in two load modes (a new connection per request; keep-alive); then
//!
//! - **pairs** (issue 11): the throughput ratio hotswap ÷ direct as the median of `--pairs`
//!   (5) interleaved pairs of short runs (direct, hotswap, direct, hotswap, …; `--short` 2 s
//!   each, `--reloads` SIGHUPs in each hotswap run), with its spread (min–max, IQR), both modes:
//!   a table of its own, and the ratio goal is judged on it;
//! - **instances** (issue 11): under load with K reloads, both modes, `-n 4`, `-n 4 --rolling`,
//!   `-n 4 --balance reuseport` and `-n 64` (failed requests, reload times, throughput); then
//!   `-n 64` idle, `--spawn-reloads` SIGHUPs: HUP → every instance spawned (the arrival of
//!   hotswap's `gen N started (pids …)` line) against the 10 ms target, and HUP → ready minus
//!   the server's own boot, measured standalone between the reloads;
//! - **spread** (issue 11): each instance's share of the requests (by the `HOTSWAP_INSTANCE`
//!   of the pid that answered) and of the keep-alive connections, `--balance shared` vs
//!   `reuseport`, for `-n 2` and `-n 4`, both modes, no reload: a table of its own;
//!
//! and the scale points: 100 listening sockets, 1,000 consecutive reloads (RSS and fds before
//! and after), with an idle window in which hotswap must use no CPU; and a last table,
//! **detection** (run first, printed last): for seven runtimes, how long after the app starts
//! waiting on its socket hotswap sees it ready, and what its looking in /proc costs.
//!
//! It measures and prints; it asserts nothing. It writes `docs/bench/results.md` and
//! `docs/bench/reload.svg` (`--no-write` to skip). Every process it starts is stopped and reaped
//! by pid when it is done with it: by guards on exit and panic, and by a handler on SIGINT,
//! SIGTERM and SIGHUP. Only a SIGKILLed bench leaves its processes running.
//!
//! Modules: `cli` (options), `procs` (the processes and /proc), `scenarios` (the rows),
//! `apps` (the unmodified apps and how each runs), `detect` (the detection table), `report`
//! (the table, the goals, results.md), `plot` (reload.svg).

// The integration tests' harness, shared as it is: the bench starts hotswap and kills its tree,
// reads /proc and runs the load client through it, and uses only that part of it (the tests use
// the rest, and their binary is where every item of it must be used).
#[allow(dead_code)]
#[path = "../../tests/integration/support/mod.rs"]
mod support;

mod apps;
mod cli;
mod detect;
mod plot;
mod procs;
mod report;
mod scenarios;

use std::time::Duration;

use support::load;

/// How long any one wait of the bench (a readiness line, a reload, an exit) may take.
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    procs::on_interrupt();
    // Once `on_interrupt` is stopping everything, what fails in the main thread because of it
    // (hotswap gone, its control socket closed) is no news: wait quietly for the exit.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        while procs::stopping() {
            std::thread::sleep(Duration::from_secs(60));
        }
        default_hook(info)
    }));
    let opts = cli::parse_opts();
    let mut info = report::machine();
    println!("reload bench — {}", info.join("; "));
    println!(
        "settings: --duration {:?} --reloads {} --clients {} --instances {} --scale-sockets {} --scale-instances {} --scale-reloads {} --pairs {} --short {:?} --spread {} --spawn-reloads {} --idle {:?} --boot-delay {:?} --detect-starts {} --venv {}",
        opts.duration,
        opts.reloads,
        opts.clients,
        opts.instances,
        opts.scale_sockets,
        opts.scale_instances,
        opts.scale_reloads,
        opts.pairs,
        opts.short,
        opts.spread.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        opts.spawn_reloads,
        opts.idle,
        opts.boot_delay,
        opts.detect_starts,
        opts.venv.display()
    );
    let bins = procs::build_server();
    let cpu_before = procs::CpuSnapshot::now();
    // The detection table first: the load rows leave thousands of TIME_WAIT sockets behind,
    // which make hotswap's deep looks slower (they read the TCP table whole).
    let detection = opts.want("detection").then(|| {
        let tcp = procs::tcp_entries();
        detect::table(&detect::run_all(&bins, &opts), &opts, tcp)
    });
    let (mut rows, extras) = scenarios::run_all(&bins, &opts);

    // Group by scenario, in the order they first ran (the sort is stable).
    let first: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    rows.sort_by_key(|r| first.iter().position(|l| *l == r.label));
    let direct = report::direct_rates(&rows);
    let mut table_rows: Vec<Vec<String>> = rows.iter().map(|r| report::cells(r, &direct)).collect();
    table_rows.extend(extras.spawn.as_ref().map(|s| report::cells(&s.row, &direct)));
    table_rows.extend(extras.scale.as_ref().map(|s| report::cells(&s.row, &direct)));
    let table = report::markdown_table(&table_rows);
    let mut others = Vec::new();
    if !extras.pairs.is_empty() {
        others.push((
            "Throughput ratio, interleaved direct/hotswap pairs".to_string(),
            report::pairs_table(&extras.pairs),
        ));
    }
    if !extras.spread.is_empty() {
        others.push((
            "Each instance's share of the load, no reload".to_string(),
            report::spread_table(&extras.spread),
        ));
    }
    let goals = report::goals(&rows, &extras);

    if !table_rows.is_empty() {
        println!();
        print!("{table}");
    }
    for (title, t) in &others {
        println!("\n{title}:\n");
        print!("{t}");
    }
    println!();
    for g in &goals {
        println!("- {g}");
    }
    if let Some(d) = &detection {
        println!("\nDetection latency per runtime:\n");
        print!("{d}");
    }
    let other = cpu_before.other_share();
    info.push(format!(
        "other processes' share of the CPUs during the run: {:.0}% (load average at the end: {})",
        other * 100.0,
        report::loadavg()
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
        report::write_results(&rows, &opts, &info, &table, &others, &goals, detection.as_deref());
    }
}
