//! USR1 and WINCH sent to hotswap are forwarded to the serving generation (issue #3,
//! DESIGN.md §2) — not to a generation that is still starting — and follow a reload.

use nix::sys::signal::Signal;

use crate::support::service::*;

/// A shell child that logs every USR1 and WINCH it gets; it is ready when the test creates
/// `{dir}/ok.<its pid>` (after it has set its traps).
const SCRIPT: &str = "trap 'echo \"gen $HOTSWAP_GENERATION pid $$ got USR1\" >&2' USR1; \
                      trap 'echo \"gen $HOTSWAP_GENERATION pid $$ got WINCH\" >&2' WINCH; \
                      echo \"gen $HOTSWAP_GENERATION pid $$ trapping\" >&2; \
                      while :; do sleep 0.05; done";

fn count(svc: &Service, pattern: &str) -> usize {
    svc.hs.stderr().lines().iter().filter(|l| l.contains(pattern)).count()
}

/// Sends `sig` to hotswap and waits for `pid` of `generation` to log that it got it.
fn forward(svc: &Service, sig: Signal, generation: u64, pid: u32) {
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(sig);
    let name = sig.as_str().trim_start_matches("SIG");
    svc.hs.wait_for_stderr_after(from, &format!("gen {generation} pid {pid} got {name}"), WAIT);
}

#[test]
fn usr1_and_winch_reach_the_serving_generation_only() {
    let probe = "exec:test -e {dir}/ok.$HOTSWAP_PID";
    let svc = Service::spawn(&["--ready", probe], &["sh", "-c", SCRIPT], &[]);
    let make_ready = |pid: u32| {
        std::fs::write(svc.hs.dir().join(format!("ok.{pid}")), "").expect("write ok file")
    };
    let first = pids_in(&svc.hs.wait_for_stderr("gen 1 started (pids ", WAIT))[0];
    svc.hs.wait_for_stderr(&format!("gen 1 pid {first} trapping"), WAIT);
    make_ready(first);
    svc.hs.wait_for_stderr("gen 1 ready after ", WAIT);
    forward(&svc, Signal::SIGUSR1, 1, first);
    forward(&svc, Signal::SIGWINCH, 1, first);

    // Generation 2 starting: the signals still go to generation 1 alone.
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    let second = pids_in(&svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT))[0];
    svc.hs.wait_for_stderr_after(from, &format!("gen 2 pid {second} trapping"), WAIT);
    forward(&svc, Signal::SIGUSR1, 1, first);
    forward(&svc, Signal::SIGWINCH, 1, first);
    assert_eq!(count(&svc, &format!("pid {first} got USR1")), 2);
    assert_eq!(count(&svc, &format!("pid {first} got WINCH")), 2);

    // Generation 2 takes over; from now on it gets them. Had it been sent the two signals
    // above, its traps (run within 50ms) would have logged them long before these.
    make_ready(second);
    svc.wait_switch(from, 2, 1);
    forward(&svc, Signal::SIGUSR1, 2, second);
    forward(&svc, Signal::SIGWINCH, 2, second);
    assert_eq!(count(&svc, &format!("pid {second} got USR1")), 1, "gen 2 got an earlier USR1");
    assert_eq!(count(&svc, &format!("pid {second} got WINCH")), 1, "gen 2 got an earlier WINCH");
    assert_eq!(count(&svc, &format!("pid {first} got")), 4, "gen 1 got a signal after it retired");
}
