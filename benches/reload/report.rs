//! What the bench prints and writes: the table's cells, the goals of issue #4 each with where
//! this run stands, the machine it ran on, and the files: `results.md` (and `reload.svg`
//! through `plot`) in the output directory, and with `--readme` the table between the
//! bench-table markers of README.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::Opts;
use crate::load::LoadReport;
use crate::plot::plot;
use crate::procs::{Reload, Usage};
use crate::scenarios::{Extras, Mode, Pairs, Row, Scenario, Spread, Unmodified};

// ------------------------------------------------------------------------------------------
// Cells

pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else if m < 100.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.0} ms")
    }
}

pub fn quantile(v: &[Duration], q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort();
    Some(v[(q * (v.len() - 1) as f64).round() as usize])
}

/// `p50 (max)` of a list of durations, or `–`.
pub fn p50_max(v: &[Duration]) -> String {
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
    "÷ direct (one run)",
    "p50",
    "p99",
    "p99 in reloads",
    "reload → ready p50 (max)",
    "beyond boot p50 (max)",
    "reload → old gone p50 (max)",
    "hotswap peak RSS / CPU",
    "notes",
];

/// One line of the table; `direct` holds the direct rows' rates by mode, for `÷ direct`.
pub fn cells(row: &Row, direct: &BTreeMap<&'static str, f64>) -> Vec<String> {
    let dash = || "–".to_string();
    let mut c = vec![row.label.clone(), row.mode.map_or("–", Mode::name).to_string()];
    match &row.load {
        Some(r) => {
            c.push(r.total().to_string());
            c.push(failures(r));
            let rate = row.rate().unwrap_or_default();
            c.push(format!("{rate:.0}"));
            let ratio = match (&row.scenario, row.mode.and_then(|m| direct.get(m.name()))) {
                (Scenario::Pm2 { .. } | Scenario::Unmodified(_), _) => dash(),
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
    c.push(row.notes.join("; "));
    c
}

/// The rows as a markdown table, each column padded to its widest cell.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    markdown_grid(&HEADER, rows)
}

/// `rows` under `header` as a markdown table, each column padded to its widest cell.
pub fn markdown_grid(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

pub fn direct_rates(rows: &[Row]) -> BTreeMap<&'static str, f64> {
    rows.iter()
        .filter(|r| r.scenario == Scenario::Direct)
        .filter_map(|r| Some((r.mode?.name(), r.rate()?)))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Goals

/// hotswap with one instance and one socket, under load.
fn plain_hotswap_under_load(r: &Row) -> bool {
    r.scenario == Scenario::hotswap(1, 1) && r.load.is_some()
}

/// The goals of issues #4 and #11, each with where this run stands.
pub fn goals(rows: &[Row], extras: &Extras) -> Vec<String> {
    let scale = extras.scale.as_ref();
    let mut g = Vec::new();
    let hotswap_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Hotswap { .. }) && r.load.is_some())
        .collect();

    // 1. zero failed requests: every hotswap row under load (with the example server), and
    // the hotswap runs of the pairs.
    let mut failed: Vec<String> = hotswap_rows
        .iter()
        .filter_map(|r| {
            let l = r.load.as_ref()?;
            (l.failed() > 0)
                .then(|| format!("{} {}: {}", r.label, r.mode.map_or("", Mode::name), failures(l)))
        })
        .collect();
    failed.extend(extras.pairs.iter().filter(|p| p.failed > 0).map(|p| {
        format!("the pairs' hotswap runs, {}: **{}** of {}", p.mode.name(), p.failed, p.total)
    }));
    let in_rows: u64 =
        hotswap_rows.iter().filter_map(|r| r.load.as_ref()).map(LoadReport::total).sum();
    let in_pairs: u64 = extras.pairs.iter().map(|p| p.total).sum();
    let seen = match (in_rows, in_pairs) {
        (r, 0) => format!("{r} requests"),
        (0, p) => format!("{p} requests in the pairs' hotswap runs"),
        (r, p) => format!("{r} requests in the rows, {p} in the pairs' hotswap runs"),
    };
    g.push(if in_rows + in_pairs == 0 {
        "zero failed requests with hotswap (the example server), both modes: not measured".into()
    } else if failed.is_empty() {
        format!("zero failed requests with hotswap, both modes: **met** (0 failed of {seen})")
    } else {
        format!(
            "zero failed requests with hotswap, both modes: **missed** ({seen}): {}",
            failed.join("; ")
        )
    });

    // Issue 8: unmodified apps, no flags.
    g.extend(unmodified_goals(rows));

    // 2. throughput ratio: the median of the interleaved pairs when they ran, else the one
    // run of each.
    g.push(if !extras.pairs.is_empty() {
        ratio_goal(&extras.pairs)
    } else {
        one_run_ratio_goal(rows)
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
        let under_load: Vec<Duration> =
            rows.iter().filter(|r| plain_hotswap_under_load(r)).flat_map(Row::overheads).collect();
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
    g.extend(spawn_goal(rows, extras));

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
        let verdict = if a.fds <= b.fds && pct <= 1.0 {
            "**met**".to_string()
        } else {
            let mut v = Vec::new();
            if a.fds > b.fds {
                v.push(format!("fds +{}", a.fds - b.fds));
            }
            if pct > 1.0 {
                v.push(format!("RSS +{growth} KiB (+{pct:.1}%)"));
            }
            format!("**missed by {}**", v.join(", "))
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

/// The `q` quantile of `v`, interpolated between the two nearest ranks (the median of an
/// even count is the mean of the middle two), or NaN when empty.
fn quantile_f(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let at = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// `0.993 (min–max 0.981–1.004, IQR 0.988–0.998)`.
fn ratio_summary(ratios: &[f64]) -> String {
    format!(
        "{:.3} (min–max {:.3}–{:.3}, IQR {:.3}–{:.3})",
        quantile_f(ratios, 0.5),
        quantile_f(ratios, 0.0),
        quantile_f(ratios, 1.0),
        quantile_f(ratios, 0.25),
        quantile_f(ratios, 0.75)
    )
}

/// req/s ratio to direct ≥ 0.99, judged on the median of the interleaved pairs, each mode.
fn ratio_goal(pairs: &[Pairs]) -> String {
    let list: Vec<String> =
        pairs.iter().map(|p| format!("{} {}", p.mode.name(), ratio_summary(&p.ratios()))).collect();
    let worst = pairs.iter().map(|p| quantile_f(&p.ratios(), 0.5)).fold(f64::INFINITY, f64::min);
    let p = &pairs[0];
    let what = format!(
        "req/s ratio to direct ≥ 0.99 (hotswap, one instance; median of {} interleaved \
         direct/hotswap pairs per mode, {:?} of load per run, {} SIGHUPs in each hotswap run)",
        p.rates.len(),
        p.duration,
        p.reloads
    );
    if worst >= 0.99 {
        format!("{what}: **met** ({})", list.join("; "))
    } else {
        format!("{what}: **missed by {:.3}** ({})", 0.99 - worst, list.join("; "))
    }
}

/// The same goal from the one direct and one hotswap row of each mode, when no pairs ran.
fn one_run_ratio_goal(rows: &[Row]) -> String {
    let direct = direct_rates(rows);
    let ratios: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| plain_hotswap_under_load(r))
        .filter_map(|r| {
            let m = r.mode?.name();
            Some((m.to_string(), r.rate()? / direct.get(m)?))
        })
        .collect();
    let list: Vec<String> = ratios.iter().map(|(m, x)| format!("{m} {x:.3}")).collect();
    let worst = ratios.iter().map(|(_, x)| *x).fold(f64::INFINITY, f64::min);
    let what = "req/s ratio to direct ≥ 0.99 (hotswap, one instance; ONE run of each, no pairs: \
                noisy)";
    if ratios.is_empty() {
        "req/s ratio to direct ≥ 0.99: not measured".to_string()
    } else if worst >= 0.99 {
        format!("{what}: **met** ({})", list.join(", "))
    } else {
        format!("{what}: **missed by {:.3}** ({})", 0.99 - worst, list.join(", "))
    }
}

/// HUP → every instance spawned ≤ 10 ms with many instances at idle, and what those reloads
/// cost beyond the server's own boot; the same instances under load beside it.
fn spawn_goal(rows: &[Row], extras: &Extras) -> Vec<String> {
    let mut g = Vec::new();
    let p50 = |v: &[Duration]| quantile(v, 0.5).map_or("–".into(), ms);
    if let Some(s) = &extras.spawn {
        let target = Duration::from_millis(10);
        let spawned = s.spawned();
        let verdict = match quantile(&spawned, 0.5) {
            Some(x) if x <= target => "✓ **met**".to_string(),
            Some(x) => format!("✗ **missed by {}**", ms(x - target)),
            None => "not measured".to_string(),
        };
        let ready = s.ready();
        let beyond = match (quantile(&ready, 0.5), quantile(&s.boots, 0.5)) {
            (Some(r), Some(b)) => format!("{:+.1} ms", (r.as_secs_f64() - b.as_secs_f64()) * 1e3),
            _ => "–".into(),
        };
        g.push(format!(
            "HUP → every instance spawned ≤ 10 ms, -n {} idle: {verdict} (measured p50 {}, max \
             {}, over {} SIGHUPs: from the signal to the arrival of hotswap's `gen N started \
             (pids …)` line; HUP → the first new instance's first line p50 {}; hotswap spawns \
             them one after the other on its main thread, each with its notify socket, ready \
             pipe, channel and cgroup, without waiting for each exec; they wait at a gate until \
             all are spawned, then exec and boot side by side; hotswap's own CPU over the whole \
             reload p50 {})",
            s.instances,
            p50(&spawned),
            spawned.iter().max().map_or("–".into(), |d| ms(*d)),
            spawned.len(),
            p50(&s.first_line),
            p50(&s.cpu),
        ));
        g.push(format!(
            "reload overhead beyond the server's own boot, -n {} idle: HUP → ready p50 {} minus \
             the server's standalone boot p50 {} ({} starts) = {beyond} (the {} children boot \
             side by side on {} cores while hotswap spawns the rest, each slower than one \
             alone)",
            s.instances,
            p50(&ready),
            p50(&s.boots),
            s.boots.len(),
            s.instances,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        ));
    }
    // The largest instance count under load, each mode.
    let instances = |r: &Row| match r.scenario {
        Scenario::Hotswap { instances, sockets: 1, variant: crate::scenarios::Variant::Plain } => {
            instances
        }
        _ => 0,
    };
    let top = rows.iter().filter(|r| r.load.is_some()).map(instances).max().unwrap_or(0);
    let under_load: Vec<String> = rows
        .iter()
        .filter(|r| r.load.is_some() && top > 2 && instances(r) == top)
        .map(|r| {
            let pick = |f: fn(&Reload) -> Option<Duration>| {
                p50(&r.reloads.iter().filter_map(f).collect::<Vec<_>>())
            };
            format!(
                "{}: HUP → every instance spawned p50 {}, HUP → ready p50 {}, beyond the last \
                 child's boot p50 {}",
                r.mode.map_or("", Mode::name),
                pick(|x| x.spawned),
                pick(|x| x.ready),
                pick(Reload::overhead)
            )
        })
        .collect();
    if !under_load.is_empty() {
        g.push(format!("-n {top} under load: {}", under_load.join("; ")));
    }
    g
}

// ------------------------------------------------------------------------------------------
// The pairs and spread tables

/// The interleaved pairs: per mode, the median rates and ratio, its spread, each pair's ratio.
pub fn pairs_table(pairs: &[Pairs]) -> String {
    let header = [
        "mode",
        "pairs",
        "load per run",
        "SIGHUPs per hotswap run",
        "direct ok req/s p50",
        "hotswap ok req/s p50",
        "hotswap ÷ direct p50",
        "min–max",
        "IQR",
        "each pair in order",
        "failed: hotswap, direct",
    ];
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            let r = p.ratios();
            let d: Vec<f64> = p.rates.iter().map(|x| x.0).collect();
            let h: Vec<f64> = p.rates.iter().map(|x| x.1).collect();
            vec![
                p.mode.name().to_string(),
                p.rates.len().to_string(),
                format!("{:?}", p.duration),
                p.reloads.to_string(),
                format!("{:.0}", quantile_f(&d, 0.5)),
                format!("{:.0}", quantile_f(&h, 0.5)),
                format!("**{:.3}**", quantile_f(&r, 0.5)),
                format!("{:.3}–{:.3}", quantile_f(&r, 0.0), quantile_f(&r, 1.0)),
                format!("{:.3}–{:.3}", quantile_f(&r, 0.25), quantile_f(&r, 0.75)),
                r.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "),
                format!("{} of {}, {}", p.failed, p.total, p.direct_failed),
            ]
        })
        .collect();
    markdown_grid(&header, &rows)
}

/// Each instance's share of the requests (and of the keep-alive connections), per instance
/// count, balance mode and load mode.
pub fn spread_table(spread: &[Spread]) -> String {
    let header = [
        "instances",
        "balance",
        "mode",
        "ok requests",
        "share of the requests, instance 0, 1, …",
        "largest share ÷ even share",
        "keep-alive connections held, instance 0, 1, …",
        "failed",
    ];
    let rows: Vec<Vec<String>> = spread
        .iter()
        .map(|s| {
            let ok: u64 = s.requests.iter().sum::<u64>() + s.other;
            let shares: Vec<f64> =
                s.requests.iter().map(|r| *r as f64 / ok.max(1) as f64).collect();
            let mut cells: Vec<String> =
                shares.iter().map(|x| format!("{:.1}%", x * 100.0)).collect();
            if s.other > 0 {
                cells.push(format!("other pids {:.1}%", s.other as f64 * 100.0 / ok as f64));
            }
            let largest = shares.iter().copied().fold(0.0, f64::max) * f64::from(s.instances);
            vec![
                s.instances.to_string(),
                s.variant.balance().to_string(),
                s.mode.name().to_string(),
                ok.to_string(),
                cells.join(" · "),
                format!("{largest:.2}"),
                s.conns.as_ref().map_or("–".into(), |c| {
                    c.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" · ")
                }),
                s.failed.to_string(),
            ]
        })
        .collect();
    markdown_grid(&header, &rows)
}

/// What the `unmodified` rows show: zero failed requests for the Node app with no flags (and
/// what its naive restart lost), and what the app with no SIGTERM handler loses, and why.
fn unmodified_goals(rows: &[Row]) -> Vec<String> {
    let of = |app: Unmodified| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.scenario == Scenario::Unmodified(app) && r.load.is_some())
            .collect()
    };
    let per_mode = |rs: &[&Row]| -> String {
        rs.iter()
            .filter_map(|r| {
                let l = r.load.as_ref()?;
                Some(format!(
                    "{}: {} of {} over {} reloads",
                    r.mode.map_or("", Mode::name),
                    failures(l),
                    l.total(),
                    r.reloads.len()
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let failed = |rs: &[&Row]| -> u64 {
        rs.iter().filter_map(|r| r.load.as_ref()).map(LoadReport::failed).sum()
    };
    let mut g = Vec::new();
    let (node, naive, http, int) = (
        of(Unmodified::Node),
        of(Unmodified::NodeNaive),
        of(Unmodified::HttpServer),
        of(Unmodified::HttpServerInt),
    );
    if !node.is_empty() {
        let verdict = if failed(&node) == 0 { "**met**" } else { "**missed**" };
        let mut line = format!(
            "zero failed requests, unmodified Node app under `hotswap --` with no flags, both \
             modes: {verdict} ({})",
            per_mode(&node)
        );
        if !naive.is_empty() {
            line += &format!("; the same app restarted naively: {}", per_mode(&naive));
        }
        g.push(line);
    }
    if !http.is_empty() {
        let mut line = format!(
            "an app with no SIGTERM handler (python3 -m http.server) under `hotswap --` with no \
             flags: {}",
            per_mode(&http)
        );
        if !int.is_empty() {
            line += &format!("; with `--stop-signal INT`: {}", per_mode(&int));
        }
        line += ". It is seen ready and reloads, but the stop signal kills it at once with the \
                 requests it had accepted and not answered yet (they fail as reset); the \
                 connections still waiting in the shared socket's queue are the new \
                 generation's. SIGINT does not save them either: http.server then exits at \
                 once, and its request threads are daemon threads, killed with it. The cure is \
                 in the app: a SIGTERM handler that stops accepting and lets the requests in \
                 flight finish";
        g.push(line);
    }
    g
}

// ------------------------------------------------------------------------------------------
// The machine

/// Date, core count, CPU model and memory, kernel, load average: one line each.
pub fn machine() -> Vec<String> {
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

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
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
// Files

/// Writes `results.md` (the machine, the settings, the table, the other tables under their
/// titles, the goals) and `reload.svg` into `opts.out`, and with `--readme` the table into
/// README.md.
pub fn write_results(
    rows: &[Row],
    opts: &Opts,
    info: &[String],
    table: &str,
    others: &[(String, String)],
    goals: &[String],
    detection: Option<&str>,
) {
    std::fs::create_dir_all(&opts.out).expect("create the output dir");
    let mut md = String::new();
    let _ = writeln!(md, "# hotswap reload benchmark: latest results\n");
    let _ = writeln!(
        md,
        "Written by `cargo bench --bench reload`; see the README's Benchmark section.\n"
    );
    for l in info {
        let _ = writeln!(md, "- {l}");
    }
    let _ = writeln!(
        md,
        "- settings: {} clients, {:?} of load per row, {} reloads per row\n",
        opts.clients, opts.duration, opts.reloads,
    );
    md += table;
    for (title, t) in others {
        let _ = writeln!(md, "\n## {title}\n");
        md += t;
    }
    let _ = writeln!(md, "\n## Goals\n");
    for g in goals {
        let _ = writeln!(md, "- {g}");
    }
    if let Some(d) = detection {
        let _ = writeln!(md, "\n## Detection latency per runtime\n");
        md += d;
    }
    let _ = writeln!(md, "\n![requests per 100 ms, naive restart vs hotswap](reload.svg)");
    let md_path = opts.out.join("results.md");
    std::fs::write(&md_path, md).expect("write results.md");
    let svg_path = opts.out.join("reload.svg");
    match plot(rows, opts, &svg_path) {
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
