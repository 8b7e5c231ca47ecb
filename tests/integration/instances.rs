//! Many instances (issue 11, DESIGN.md §1, §2, §4): whole-generation and rolling reloads
//! under load, a rollout stopped midway, and one instance replaced when it grows past
//! `--max-memory` or goes silent past `--watchdog`.

use std::collections::BTreeSet;
use std::time::Duration;

use hotswap::protocol::control::ChildState;

use crate::support::service::*;

/// `sh -c SCRIPT server`: the example server, run as the script decides per generation and
/// instance (`$0` is the server).
fn scripted(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into(), server()]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Four instances answer, each its own pid; a whole-generation reload and a rolling one
/// under load lose nothing.
#[test]
fn four_instances_reload_whole_and_rolling_without_a_failed_request() {
    for rolling in [false, true] {
        let mut options = vec!["-n", "4"];
        if rolling {
            options.push("--rolling");
        }
        let svc = Service::start(&options, &[&server()], &[]);
        let load = svc.load();
        let mut ok = wait_for_ok(&load, 0, 200);
        let pids: BTreeSet<u32> = (0..200).filter_map(|_| svc.get().pid()).collect();
        assert_eq!(pids.len(), 4, "rolling={rolling}: four distinct pids answer: {pids:?}");
        for generation in [2u64, 3] {
            let from = svc.hs.stderr().line_count();
            svc.hs.signal(nix::sys::signal::Signal::SIGHUP);
            svc.wait_index(from, &format!("gen {generation} ready after "));
            svc.wait_index(from, &format!("gen {} gone, drained after ", generation - 1));
            if rolling {
                // One at a time: instance i is ready before instance i+1 starts.
                for i in 0..3 {
                    let ready = svc
                        .wait_index(from, &format!("gen {generation} instance {i} ready after "));
                    let next = svc
                        .wait_index(from, &format!("gen {generation} instance {} started", i + 1));
                    assert!(ready < next, "instance {i} ready before instance {} starts", i + 1);
                }
            }
            ok = wait_for_ok(&load, ok, 100);
        }
        let report = load.stop_and_finish();
        assert_eq!(report.failed(), 0, "rolling={rolling}: {}", report.summary());
        let status = svc.status();
        assert_eq!(status.generation, Some(3));
        let gens: BTreeSet<u64> = status.children.iter().map(|c| c.generation).collect();
        assert_eq!(gens, BTreeSet::from([3]), "{status:#?}");
    }
}

/// A rolling reload whose third instance fails stops there: two instances run the new
/// generation, two the old; `status` shows the mix; `reload --wait` exits 1; no request fails.
#[test]
fn a_rolling_reload_that_fails_at_the_third_instance_leaves_the_mix_serving() {
    let script = "if [ \"$HOTSWAP_GENERATION\" = 2 ] && [ \"$HOTSWAP_INSTANCE\" = 2 ]; \
                  then exec \"$0\" --exit-at-start 3; else exec \"$0\"; fi";
    let command = scripted(script);
    let svc = Service::start(&["-n", "4", "--rolling"], &as_strs(&command), &[]);
    let load = svc.load();
    wait_for_ok(&load, 0, 100);
    let out = svc.cli(&["reload", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rollout stopped after 2 instance(s)"), "{stderr}");
    let status = svc.status();
    let mut mix: Vec<(u32, u64)> = status
        .children
        .iter()
        .filter(|c| c.state == ChildState::Ready)
        .map(|c| (c.instance, c.generation))
        .collect();
    mix.sort();
    assert_eq!(mix, [(0, 2), (1, 2), (2, 1), (3, 1)], "{status:#?}");
    let last = status.last_reload.expect("last_reload");
    assert!(last.reason.as_deref().is_some_and(|r| r.contains("exited with status 3")), "{last:?}");
    let ok = load.ok_so_far();
    let load_ok = wait_for_ok(&load, ok, 100);
    let report = load.stop_and_finish();
    assert!(load_ok > ok);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let gens: BTreeSet<u64> = report.by_generation.keys().copied().collect();
    assert!(
        gens.contains(&1) && gens.contains(&2),
        "both generations answer: {}",
        report.summary()
    );
}

/// An instance whose tree grows past `--max-memory` is replaced: a new one starts, is
/// ready, then the old one drains; no request fails.
#[test]
fn an_instance_over_max_memory_is_replaced_without_a_failed_request() {
    // Only the first child runs the hog (200 MiB, touched); its replacement does not.
    let script = "if [ ! -e \"$MARK\" ]; then touch \"$MARK\"; \
                  python3 -c 'import time; x = b\"x\" * (200 << 20); time.sleep(1000)' & fi; \
                  exec \"$0\"";
    let command = scripted(script);
    let svc =
        Service::start(&["--max-memory", "100M"], &as_strs(&command), &[("MARK", "{dir}/hogged")]);
    let first = svc.get().pid().unwrap();
    let load = svc.load();
    wait_for_ok(&load, 0, 50);
    let replacing = svc.hs.wait_for_stderr("over --max-memory 100 MiB: replacing it", WAIT);
    assert!(replacing.contains(&format!("(pid {first}) uses ")), "{replacing}");
    let replaced = svc.hs.wait_for_stderr("gen 1 instance 0 replaced: pid ", WAIT);
    let new: u32 =
        replaced.split("pid ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_ne!(new, first);
    wait_until("the old instance gone", WAIT, || {
        (!crate::support::pid_alive(first as i32)).then_some(())
    });
    let ok = load.ok_so_far();
    wait_for_ok(&load, ok, 50);
    let report = load.stop_and_finish();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.pids().contains(&new), "the replacement answers: {}", report.summary());
    assert_eq!(svc.get().pid(), Some(new));
}

/// A child that enabled the watchdog (WATCHDOG=1) and then goes silent is replaced.
#[test]
fn a_child_that_stops_sending_watchdog_is_replaced() {
    // The first child pings three times (systemd-notify from its own tree), then stops.
    let script = "if [ ! -e \"$MARK\" ]; then touch \"$MARK\"; \
                  (for i in 1 2 3; do systemd-notify WATCHDOG=1; sleep 0.2; done) & fi; \
                  exec \"$0\"";
    let command = scripted(script);
    let svc =
        Service::start(&["--watchdog", "1s"], &as_strs(&command), &[("MARK", "{dir}/pinged")]);
    let first = svc.get().pid().unwrap();
    let env = crate::support::environ(first);
    assert_eq!(env.get("WATCHDOG_USEC").map(String::as_str), Some("1000000"));
    let replacing = svc.hs.wait_for_stderr("sent no WATCHDOG=1 for 1s: replacing it", WAIT);
    assert!(replacing.contains(&format!("(pid {first})")), "{replacing}");
    svc.hs.wait_for_stderr("gen 1 instance 0 replaced: pid ", WAIT);
    // The replaced one drains (it may take one more connection as it stops), then goes.
    wait_until("the replaced child gone", WAIT, || {
        (!crate::support::pid_alive(first as i32)).then_some(())
    });
    let after = svc.get().pid().unwrap();
    assert_ne!(after, first);
    // The replacement never enabled the watchdog: it is left alone.
    let from = svc.hs.stderr().line_count();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!svc.logged_after(from, "replacing it"), "a child that never pinged is not watched");
}

/// `--balance reuseport`: one SO_REUSEPORT socket per instance slot, all hotswap's; instance i
/// of every generation gets slot i's socket at fd 3, and reloads under load lose nothing.
#[test]
fn balance_reuseport_gives_each_instance_slot_its_own_socket() {
    let svc = Service::start(&["-n", "2", "--balance", "reuseport"], &[&server()], &[]);
    let status = svc.status();
    let slots: Vec<&str> = status.sockets.iter().map(|s| s.origin.as_str()).collect();
    assert_eq!(slots, ["listen, instance 0", "listen, instance 1"], "{status:#?}");
    let fd3 = |pid: u32| std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
    let by_instance = |status: &hotswap::protocol::control::Status| {
        let mut v: Vec<(u32, std::path::PathBuf)> =
            status.children.iter().map(|c| (c.instance, fd3(c.pid))).collect();
        v.sort();
        v
    };
    let first = by_instance(&status);
    assert_ne!(first[0].1, first[1].1, "each instance its own socket: {first:?}");
    let load = svc.load();
    let mut ok = wait_for_ok(&load, 0, 100);
    for generation in [2u64, 3] {
        let from = svc.hs.stderr().line_count();
        svc.hs.signal(nix::sys::signal::Signal::SIGHUP);
        svc.wait_index(from, &format!("gen {} gone, drained after ", generation - 1));
        ok = wait_for_ok(&load, ok, 100);
    }
    let report = load.stop_and_finish();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(by_instance(&svc.status()), first, "instance i of every generation: slot i");
}

/// `--watch`: five quick writes under the watched folder are one reload, writes under
/// node_modules none; no request fails.
#[test]
fn watch_reloads_once_for_a_burst_of_writes() {
    let watched = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(watched.path().join("node_modules/x")).unwrap();
    let path = crate::support::path_str(watched.path());
    let svc = Service::start(&["--watch", &path], &[&server()], &[]);
    let load = svc.load();
    let ok = wait_for_ok(&load, 0, 50);
    let from = svc.hs.stderr().line_count();
    for i in 0..5 {
        std::fs::write(watched.path().join(format!("file{i}.js")), format!("v{i}")).unwrap();
    }
    svc.wait_index(from, "gen 1 gone, drained after ");
    let ok = wait_for_ok(&load, ok, 50);
    // Quiet now; and what lands in node_modules is no reason to reload.
    std::fs::write(watched.path().join("node_modules/x/index.js"), "x").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    wait_for_ok(&load, ok, 20);
    let report = load.stop_and_finish();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let lines = svc.hs.stderr().lines();
    let started: Vec<&String> = lines.iter().filter(|l| l.contains(" started (pids ")).collect();
    assert_eq!(started.len(), 2, "generation 1 and exactly one reload: {lines:#?}");
    assert_eq!(svc.status().generation, Some(2));
    let bad = crate::support::run_hotswap(&["--watch", "/nonexistent/x", "--", &server()], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--watch /nonexistent/x"));
}

/// A soak of 1,000 whole-generation reloads of four instances: afterwards hotswap's fds are
/// back where they were, its RSS within 1 MiB of what it was after the warm-up, no zombie is
/// left, and exactly the last generation's four children run.
#[test]
fn soak_1000_reloads_of_four_instances_leaves_nothing_behind() {
    let svc = Service::start(&["-n", "4"], &[&server()], &[]);
    let pid = svc.hs.pid();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let rss_kib = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap()
    };
    let reload = |generation: u64| {
        let from = svc.hs.stderr().line_count();
        svc.hs.signal(nix::sys::signal::Signal::SIGHUP);
        svc.wait_index(from, &format!("gen {generation} ready after "));
        svc.wait_index(from, &format!("gen {} gone, drained after ", generation - 1));
    };
    // Warm up: the allocator settles in the first reloads.
    for generation in 2..=11 {
        reload(generation);
    }
    let (fds_before, rss_before) = (fds(), rss_kib());
    let last = 1011;
    for generation in 12..=last {
        reload(generation);
    }
    // An fd may still be in flight a moment after a reload (a reaped child's channel readers
    // close theirs at their next turn): flat means no more than the count before.
    let settled = crate::support::poll_until(std::time::Instant::now() + WAIT, || {
        (fds() <= fds_before).then_some(())
    });
    assert!(settled.is_some(), "hotswap's fds: {fds_before} before, {} after", fds());
    let rss_after = rss_kib();
    eprintln!("soak: fds {fds_before} → {}, RSS {rss_before} → {rss_after} KiB", fds());
    assert!(rss_after <= rss_before + 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    assert!(crate::support::zombies_of(pid).is_empty(), "zombies left");
    let status = svc.status();
    assert_eq!(status.children.len(), 4, "{status:#?}");
    assert!(status.children.iter().all(|c| c.generation == last), "{status:#?}");
    let marked = svc.hs.marked();
    assert_eq!(marked.len(), 4, "only the last generation's children run: {marked:?}");
}
