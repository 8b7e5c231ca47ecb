//! A new generation that fails is rolled back (issue #3): `reload --wait` exits 1 naming the
//! reason, the old generation serves throughout without a failed request, `status` records it,
//! and the next reload works (the failed generation used up its number).

use std::time::{Duration, Instant};

use hotswap::protocol::control::LastReloadResult;

use crate::support::pid_alive;
use crate::support::service::*;

/// Runs a failing reload to generation 2 under load; returns the reason `reload --wait` gave.
/// `only_old_answers`: whether generation 2 never accepts a connection (so every answer must
/// be generation 1's, not just the answers after the rollback).
fn rolled_back_reload(
    svc: &Service,
    expected_reason: &str,
    min_duration: Duration,
    only_old_answers: bool,
) {
    let old_pid = svc.get().pid().expect("X-Pid");
    let load = svc.load();
    wait_for_ok(&load, 0, 50);
    let from = svc.hs.stderr().line_count();

    let began = Instant::now();
    let out = svc.cli(&["reload", "--wait"]);
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(1), "reload --wait: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gen 2 rolled back") && stderr.contains(expected_reason),
        "reload --wait should name the reason {expected_reason:?}: {}",
        describe(&out)
    );
    let failed = svc.hs.wait_for_stderr_after(from, "gen 2 failed: ", WAIT);
    assert!(failed.contains(expected_reason), "{failed}");
    let started = svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT);
    let new_pids = pids_in(&started);
    // The failed generation is retired: its process ends, and generation 1 is untouched.
    wait_until("the failed generation's processes to end", WAIT, || {
        new_pids.iter().all(|p| !pid_alive(*p as i32)).then_some(())
    });
    assert!(!svc.logged_after(from, "gen 1 retiring"), "gen 1 was retired");
    assert!(pid_alive(old_pid as i32));

    // The old generation still serves, and the load never noticed.
    let ok = load.ok_so_far();
    wait_for_ok(&load, ok, 50);
    let report = load.stop_and_finish();
    assert_no_failures(&report, "load across a rolled-back reload");
    if only_old_answers {
        assert_eq!(report.generations(), [1], "{}", report.summary());
        assert_eq!(report.pids().into_iter().collect::<Vec<_>>(), [old_pid]);
    }
    svc.assert_all_answered_by(1, 20);
    assert_eq!(svc.get().pid(), Some(old_pid));

    let status = svc.status();
    assert_eq!(status.generation, Some(1), "{status:#?}");
    let last = status.last_reload.as_ref().expect("last_reload after a reload");
    assert_eq!((last.generation, last.result), (2, LastReloadResult::RolledBack), "{status:#?}");
    let reason = last.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(expected_reason), "last_reload.reason: {status:#?}");
    // From generation 2's start to its failure: within the time `reload --wait` waited.
    let duration = Duration::from_millis(last.duration_ms);
    assert!(min_duration <= duration && duration <= took, "{duration:?}, waited {took:?}");
    assert!(status.children.iter().all(|c| c.generation == 1 && c.pid == old_pid), "{status:#?}");
}

/// Generation 2 exits with status 1 at start.
#[test]
fn a_generation_that_exits_at_start_is_rolled_back() {
    let command = server_by_generation(&[(2, "--exit-at-start 1")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&[], &command, &[]);
    rolled_back_reload(&svc, "exited with status 1", Duration::ZERO, true);

    // The next reload works, and it is generation 3: the failed one used up its number.
    let switch = svc.hup_and_wait(3, 1);
    assert_eq!(svc.get().pid().map(|p| vec![p]), Some(switch.new_pids));
    let status = svc.status();
    assert_eq!(status.generation, Some(3), "{status:#?}");
    let last = status.last_reload.as_ref().expect("last_reload");
    assert_eq!(
        (last.generation, last.result, last.reason.as_deref()),
        (3, LastReloadResult::Ok, None)
    );
}

/// Generation 2 runs but never says it is ready: rolled back at `--ready-timeout`.
#[test]
fn a_generation_that_never_becomes_ready_is_rolled_back() {
    let command = server_by_generation(&[(2, "--ready none")], "--ready notify");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&["--ready", "notify", "--ready-timeout", "2s"], &command, &[]);
    let begin = std::time::Instant::now();
    // Generation 2 accepts connections while it starts, so both generations may answer until
    // the rollback; generation 2 then drains like any retiring generation.
    rolled_back_reload(&svc, "not ready after 2s", Duration::from_secs(2), false);
    assert!(begin.elapsed() >= Duration::from_secs(2), "rolled back before the ready timeout");
}
