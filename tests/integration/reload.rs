//! Hot reload under load (issue #3): HUP after HUP, `hotswap reload --wait`, and HUPs that
//! arrive while a generation is still starting.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::load::{LoadConfig, Target, spawn_in_thread};
use crate::support::service::*;
use crate::support::{GENEROUS, pid_alive};

/// Five HUPs, one after the other, while new-connection and keep-alive clients hammer the
/// socket (half of them on a slow path, so requests are in flight when a generation retires):
/// not one request fails, and generations 1 to 6 answer in turn.
#[test]
fn five_hups_under_load_lose_no_request() {
    let svc = Service::start(&[], &[&server()], &[]);
    let target = Target::Tcp(svc.addr);
    let fast = spawn_in_thread(LoadConfig {
        new_conn_workers: 3,
        keepalive_workers: 3,
        duration: Duration::from_secs(30),
        ..LoadConfig::new(target.clone())
    });
    let slow = spawn_in_thread(LoadConfig {
        new_conn_workers: 2,
        keepalive_workers: 2,
        duration: Duration::from_secs(30),
        path: "/?delay=50".into(),
        ..LoadConfig::new(target)
    });
    let began = Instant::now();
    let mut fast_ok = wait_for_ok(&fast, 0, 50);
    let mut slow_ok = wait_for_ok(&slow, 0, 5);
    let mut retired = Vec::new();
    for generation in 2..=6 {
        let switch = svc.hup_and_wait(generation, generation - 1);
        retired.extend(switch.old_pids.iter().copied());
        // The old generation is gone: every answer from now on is the new one's.
        fast_ok = wait_for_ok(&fast, fast_ok, 50);
        slow_ok = wait_for_ok(&slow, slow_ok, 5);
    }
    let fast = fast.stop_and_finish();
    let slow = slow.stop_and_finish();
    assert_no_failures(&fast, "fast load across 5 HUPs");
    assert_no_failures(&slow, "slow (?delay=50) load across 5 HUPs");
    for report in [&fast, &slow] {
        assert_eq!(report.generation_order, [1, 2, 3, 4, 5, 6], "{}", report.summary());
    }
    // Each reload takes well under a second on a quiet machine.
    let bound = Duration::from_secs(4) * GENEROUS;
    assert!(began.elapsed() < bound, "5 reloads took {:?}", began.elapsed());
    for pid in retired {
        assert!(!pid_alive(pid as i32), "retired pid {pid} is still alive");
    }
    assert_eq!(svc.status().generation, Some(6));
}

/// `hotswap reload --wait` prints each step of the reload with the right pids, exits 0 when the
/// new generation took over, and no request fails meanwhile.
#[test]
fn reload_wait_reports_every_step_and_exits_0() {
    let svc = Service::start(&[], &[&server()], &[]);
    let load = svc.load();
    wait_for_ok(&load, 0, 50);
    for generation in [2u64, 3] {
        let old_pid = svc.get().pid().expect("X-Pid");
        let out = svc.cli(&["reload", "--wait"]);
        assert_eq!(out.status.code(), Some(0), "reload --wait: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        let old = generation - 1;
        let expected = [
            format!("gen {generation} started (pids "),
            format!("gen {generation} ready after "),
            format!("gen {old} retiring (pids {old_pid})"),
            format!("gen {old} gone, drained after "),
            format!("gen {generation} took over"),
        ];
        let mut at = 0;
        for step in &expected {
            let found = lines[at..].iter().position(|l| l.contains(step.as_str()));
            let Some(i) = found else {
                panic!("reload --wait output lacks {step:?} (in order): {stdout}")
            };
            at += i + 1;
        }
        let started = lines.iter().find(|l| l.contains(&expected[0])).expect("checked above");
        let new_pids = pids_in(started);
        // After `took over`, the old generation is gone and the new one serves.
        assert!(!pid_alive(old_pid as i32), "gen {old} pid {old_pid} still alive");
        let r = svc.get();
        assert_eq!(r.generation(), Some(generation), "{r:?}");
        assert_eq!(r.pid().map(|p| vec![p]), Some(new_pids), "{r:?} vs {stdout}");
    }
    let report = load.stop_and_finish();
    assert_no_failures(&report, "load across two `reload --wait`");
    assert_eq!(report.generation_order, [1, 2, 3], "{}", report.summary());
}

/// HUPs and `hotswap reload` requests that arrive while a slow generation is starting are
/// coalesced: exactly one more generation follows it, not one per request.
#[test]
fn reloads_during_a_slow_start_coalesce_into_one_more_generation() {
    // Generation 2 takes 2s to become ready; the others are quick.
    let command = server_by_generation(&[(2, "--boot-delay 2s")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&[], &command, &[]);
    let load = svc.load();
    wait_for_ok(&load, 0, 20);

    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT);
    // While generation 2 starts: three HUPs at once, then two control-socket reloads, which
    // hotswap handles as separate requests whatever the kernel does with the signals.
    for _ in 0..3 {
        svc.hs.signal(Signal::SIGHUP);
    }
    for _ in 0..2 {
        let out = svc.cli(&["reload"]);
        assert_eq!(out.status.code(), Some(0), "reload: {}", describe(&out));
    }
    assert!(
        !svc.logged_after(from, "gen 2 ready after "),
        "gen 2 was ready before all reload requests were sent; the test proves nothing"
    );

    let switch = svc.wait_switch(from, 2, 1);
    assert!(switch.ready_after >= Duration::from_millis(1900), "{switch:?}");
    // One more generation, started right when generation 2 took over.
    let third = svc.wait_switch(switch.ready_at, 3, 2);
    // A further pending reload would have started as generation 3 took over; the status query
    // is answered after that moment.
    let status = svc.status();
    assert_eq!(status.generation, Some(3), "{status:#?}");
    assert!(
        status.children.iter().all(|c| c.generation == 3),
        "only generation 3 should run: {status:#?}"
    );
    assert!(!svc.logged_after(0, "gen 4 started"), "a 4th generation started");
    assert_eq!(svc.get().pid().map(|p| vec![p]), Some(third.new_pids));

    let report = load.stop_and_finish();
    assert_no_failures(&report, "load across coalesced reloads");
    // Generation 2 serves alone only while generation 3 starts, so its first answer may well
    // complete after generation 3's first one: the answers begin with generation 1's and end
    // with generation 3's, and no other generation answered.
    let s = report.summary();
    assert_eq!(report.generations(), [1, 2, 3], "{s}");
    assert_eq!(report.generation_order.first(), Some(&1), "{s}");
    let last = report.generation_seen.iter().max_by_key(|(_, (_, last))| *last).map(|(g, _)| *g);
    assert_eq!(last, Some(3), "the last answers: {:?}; {s}", report.generation_seen);
}
