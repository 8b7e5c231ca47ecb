//! Each readiness mode gates the switch (issue #3): while a new generation starts, the old one
//! keeps answering; once the new one says it is ready — and not before — the old one retires,
//! drains and stops answering.

use std::time::{Duration, Instant};

use hotswap::protocol::control::ChildState;
use nix::sys::signal::Signal;

use crate::support::pid_alive;
use crate::support::service::*;

/// How long the new generation of most tests below takes to become ready.
const BOOT: Duration = Duration::from_secs(1);

/// Reloads `svc` (serving generation 1), samples `GET /` while generation 2 starts, and checks
/// that the switch waited for readiness: generation 1 still answered past the middle of
/// generation 2's `boot`, hotswap saw generation 2 ready no sooner than `min_ready`, retired
/// generation 1 only then, and afterwards only generation 2 answers.
fn assert_old_serves_until_new_is_ready(svc: &Service, boot: Duration, min_ready: Duration) {
    assert_eq!(svc.generation(), 1);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT);
    let t0 = Instant::now();
    let samples = sample_until(svc, t0, || svc.logged_after(from, "gen 2 ready after "));
    let switch = svc.wait_switch(from, 2, 1);

    let late_old = samples.iter().filter(|(at, g, _)| *g == 1 && *at >= boot / 2).count();
    assert!(
        late_old > 0,
        "generation 1 stopped answering in the first half of generation 2's {boot:?} start: \
         {}",
        summarize(&samples)
    );
    assert!(
        samples.iter().all(|(_, g, _)| *g == 1 || *g == 2),
        "unexpected generation: {}",
        summarize(&samples)
    );
    assert!(
        switch.ready_after >= min_ready,
        "generation 2 counted as ready after {:?}, before it could have said so ({min_ready:?})",
        switch.ready_after
    );
    // Gone: generation 1's processes have exited and only generation 2 answers.
    for pid in &switch.old_pids {
        assert!(!pid_alive(*pid as i32), "gen 1 pid {pid} still alive after `gen 1 gone`");
    }
    svc.assert_all_answered_by(2, 20);
    let pid = svc.get().pid().expect("X-Pid");
    assert_eq!(vec![pid], switch.new_pids, "answering pid vs `gen 2 started` line");
}

#[test]
fn notify_mode_waits_for_ready_1() {
    let svc = Service::start(
        &["--ready", "notify"],
        &[&server(), "--ready", "notify", "--boot-delay", "1s"],
        &[],
    );
    assert_old_serves_until_new_is_ready(&svc, BOOT, Duration::from_millis(950));
}

#[test]
fn fd_mode_waits_for_a_newline_on_the_ready_fd() {
    let svc = Service::start(
        &["--ready", "fd"],
        &[&server(), "--ready", "fd", "--boot-delay", "1s"],
        &[],
    );
    assert_old_serves_until_new_is_ready(&svc, BOOT, Duration::from_millis(950));
}

/// A Node app that only calls `process.send('ready')`, as PM2's `wait_ready` apps do.
#[test]
fn ipc_mode_waits_for_process_send_ready() {
    let env = [("READY_VIA", "ipc"), ("BOOT_DELAY_MS", "1000")];
    let svc = Service::start(&["--ready", "ipc"], &["/usr/bin/node", &node_server()], &env);
    assert_old_serves_until_new_is_ready(&svc, BOOT, Duration::from_millis(950));
}

/// `delay:1s` with an app that says nothing: ready 1s after the start, not sooner (the app
/// starts accepting after 900ms, so generation 1 alone answers before that).
#[test]
fn delay_mode_waits_for_the_delay() {
    let svc = Service::start(
        &["--ready", "delay:1s"],
        &[&server(), "--ready", "none", "--boot-delay", "900ms"],
        &[],
    );
    assert_old_serves_until_new_is_ready(&svc, Duration::from_millis(900), BOOT);
}

/// `auto` with an app that offers every signal: the first one counts.
#[test]
fn auto_mode_takes_the_first_signal() {
    let svc = Service::start(&[], &[&server(), "--boot-delay", "1s"], &[]);
    assert_old_serves_until_new_is_ready(&svc, BOOT, Duration::from_millis(950));
}

/// `exec:CMD`: the probe decides. Each child here waits for the file `ok.<its pid>` before it
/// even starts serving, and the probe checks the same file, so the test alone decides when a
/// generation becomes ready; every probe run leaves a line in `probes.<pid>`.
#[test]
fn exec_mode_switches_only_when_the_probe_passes() {
    let probe = "exec:echo run >> {dir}/probes.$HOTSWAP_PID; test -e {dir}/ok.$HOTSWAP_PID";
    let script = "while ! test -e \"$1/ok.$$\"; do sleep 0.02; done; exec \"$0\" --ready none";
    let server = server();
    let svc = Service::spawn(&["--ready", probe], &["sh", "-c", script, &server, "{dir}"], &[]);
    let dir = svc.hs.dir().to_path_buf();
    let probes_of = |pid: u32| {
        std::fs::read_to_string(dir.join(format!("probes.{pid}")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let wait_for_probes = |pid: u32, n: usize| {
        wait_until(&format!("{n} probe runs for pid {pid}"), WAIT, || {
            (probes_of(pid) >= n).then_some(())
        })
    };

    let first = pids_in(&svc.hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    wait_for_probes(first[0], 2);
    assert!(!svc.logged_after(0, "gen 1 ready"), "gen 1 ready before its probe passed");
    std::fs::write(dir.join(format!("ok.{}", first[0])), "").unwrap();
    svc.hs.wait_for_stderr("gen 1 ready after ", WAIT);
    assert_eq!(svc.generation(), 1);

    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    let second = pids_in(&svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT));
    let t0 = Instant::now();
    // Three failed probes (the first at once, then one every 250ms or so): generation 1 serves
    // alone and hotswap has not switched.
    let samples = sample_until(&svc, t0, || probes_of(second[0]) >= 3);
    assert!(samples.iter().all(|(_, g, _)| *g == 1), "{}", summarize(&samples));
    assert!(!samples.is_empty());
    assert!(!svc.logged_after(from, "gen 2 ready"), "gen 2 ready before its probe passed");
    assert!(!svc.logged_after(from, "gen 1 retiring"), "gen 1 retired before gen 2 was ready");
    let status = svc.status();
    assert_eq!(status.generation, Some(1), "{status:#?}");
    assert_eq!(state_of(&status, first[0]), Some(ChildState::Ready), "{status:#?}");
    assert_eq!(state_of(&status, second[0]), Some(ChildState::Starting), "{status:#?}");

    let held = t0.elapsed();
    std::fs::write(dir.join(format!("ok.{}", second[0])), "").unwrap();
    let switch = svc.wait_switch(from, 2, 1);
    // The log rounds durations over 1s to a tenth of a second.
    assert!(
        switch.ready_after + Duration::from_millis(100) >= held,
        "ready after {:?}, but the probe was held back for {held:?}",
        switch.ready_after
    );
    assert_eq!(switch.old_pids, first);
    assert!(!pid_alive(first[0] as i32), "gen 1 pid still alive after `gen 1 gone`");
    svc.assert_all_answered_by(2, 20);
}
