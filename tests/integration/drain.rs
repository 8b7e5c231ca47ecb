//! Retiring a generation (issue #3): a child that ignores the stop signal is SIGKILLed with its
//! whole process group at `--drain-timeout`, leaving no zombie; the stop signal is configurable.

use std::time::Duration;

use crate::support::service::*;
use crate::support::{GENEROUS, pid_alive, proc_stat, zombies_of};

/// The `worker pid N` line a server started with `--spawn-worker` prints.
fn worker_pid(svc: &Service) -> i32 {
    let line = svc.hs.wait_for_stderr("worker pid ", WAIT);
    let (_, rest) = line.split_once("worker pid ").expect("matched above");
    rest.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn a_child_ignoring_the_stop_signal_is_killed_with_its_group_at_drain_timeout() {
    let command = server_by_generation(&[(1, "--ignore-term --spawn-worker")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let drain = Duration::from_secs(1);
    let svc = Service::start(&["--drain-timeout", "1s"], &command, &[]);
    let child = svc.get().pid().expect("X-Pid") as i32;
    let worker = worker_pid(&svc);
    let stat = proc_stat(worker).expect("the worker runs");
    assert_eq!(stat.pgrp, child, "the fixture's worker should be in its parent's process group");
    assert_ne!(worker, child);

    let switch = svc.hup_and_wait(2, 1);
    assert_eq!(switch.old_pids, [child as u32]);
    let lines = svc.hs.stderr().lines();
    let kill_line =
        format!("gen 1 pid {child} still running after 1s: SIGKILL to it and all it started");
    let killed_at = index_of(&lines, switch.retiring_at, &kill_line)
        .unwrap_or_else(|| panic!("no {kill_line:?} after the retiring line: {lines:#?}"));
    assert!(killed_at < switch.gone_at, "{lines:#?}");
    // Killed at the drain timeout: not before (a wait happened), and not much later (no event
    // marks "much later", so the bound is GENEROUS).
    assert!(
        switch.drained_after >= drain - Duration::from_millis(50)
            && switch.drained_after < drain * GENEROUS,
        "drained after {:?}, expected about the {drain:?} drain timeout",
        switch.drained_after
    );

    // Child and worker are dead and reaped: no zombie left under hotswap.
    assert!(!pid_alive(child), "gen 1 pid {child} survived");
    wait_until("the worker to die and every zombie to be reaped", WAIT, || {
        (!pid_alive(worker) && zombies_of(svc.hs.pid()).is_empty()).then_some(())
    });
    assert!(
        proc_stat(worker).is_none(),
        "worker {worker} exists (unreaped): {:?}",
        proc_stat(worker)
    );
    svc.assert_all_answered_by(2, 10);
}

/// `--stop-signal INT`: the retiring child gets SIGINT (which this one handles by exiting),
/// not SIGTERM (which it ignores), so it is gone before the drain timeout: no SIGKILL.
#[test]
fn the_stop_signal_is_configurable() {
    let script = "trap '' TERM; \
                  trap 'echo \"gen $HOTSWAP_GENERATION got INT\" >&2; exit 0' INT; \
                  while :; do sleep 0.05; done";
    let svc = Service::start(
        &["--stop-signal", "INT", "--drain-timeout", "10s", "--ready", "delay:100ms"],
        &["sh", "-c", script],
        &[],
    );
    let switch = svc.hup_and_wait(2, 1);
    let lines = svc.hs.stderr().lines();
    let got_int = index_of(&lines, 0, "gen 1 got INT").expect("gen 1 never got SIGINT");
    assert!(got_int < switch.gone_at, "gone before it got SIGINT: {lines:#?}");
    // Gone before the drain timer fired: it would have logged the SIGKILL it sends.
    assert!(!svc.logged_after(0, "SIGKILL"), "gen 1 was killed instead");
    assert!(switch.drained_after < Duration::from_secs(10), "{switch:?}");
    assert!(!svc.logged_after(0, "gen 2 got INT"), "the new generation got the stop signal");
    assert!(!pid_alive(switch.old_pids[0] as i32));
}
