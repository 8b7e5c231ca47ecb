//! Scripted scenarios with a virtual clock, and random event sequences
//! checked against the architecture invariants. No process is started.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

const TERM: i32 = 15;
const USR1: i32 = 10;

fn config() -> Config {
    Config {
        instances: 1,
        ready_timeout: Duration::from_secs(60),
        ready_delay: None,
        drain_timeout: Duration::from_secs(30),
        stop_signal: TERM,
        restart: Restart::OnFailure,
        detect: false,
        rolling: false,
        watchdog: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drives a Supervisor the way the driver does: performs `Spawn` at once
/// with made-up pids, and keeps every action for the test to look at.
struct Harness {
    sup: Supervisor,
    now: Instant,
    next_pid: Pid,
    /// (generation, instance, pid) of every spawn.
    spawned: Vec<(GenId, u32, Pid)>,
    /// Answer the next `Spawn` with `SpawnFailed` (an exec that failed).
    fail_next_spawn: bool,
    config: Config,
}

impl Harness {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        Harness {
            sup: Supervisor::new(config.clone(), now),
            config,
            now,
            next_pid: 100,
            spawned: Vec::new(),
            fail_next_spawn: false,
        }
    }

    /// Everything the supervisor asked for since the last call.
    fn actions(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(action) = self.sup.poll_action() {
            if let Action::Spawn { generation, instance } = action {
                if std::mem::take(&mut self.fail_next_spawn) {
                    let status = Some(ExitStatus::Exited(127));
                    let reason = "command not found: app".to_string();
                    let failed = Event::SpawnFailed { generation, instance, status, reason };
                    self.sup.handle(self.now, failed);
                    out.push(action);
                    continue;
                }
                let pid = self.next_pid;
                self.next_pid += 1;
                self.spawned.push((generation, instance, pid));
                self.sup.handle(self.now, Event::Spawned { generation, instance, pid });
            }
            out.push(action);
        }
        out
    }

    fn event(&mut self, event: Event) -> Vec<Action> {
        self.sup.handle(self.now, event);
        self.actions()
    }

    /// Moves the clock, firing the timer as the driver would.
    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        if self.sup.poll_timeout().is_some_and(|at| at <= self.now) {
            self.sup.handle_timeout(self.now);
        }
        self.actions()
    }

    fn sup_rolling(&self) -> bool {
        self.config.rolling
    }

    fn instances(&self) -> u32 {
        self.config.instances
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) -> Vec<Action> {
        self.event(Event::Exited { pid, status })
    }

    fn ready(&mut self, pid: Pid) -> Vec<Action> {
        self.event(Event::Ready { pid, via: Via::Notify })
    }

    /// Starts generation 1 and makes it ready.
    fn serving(config: Config) -> Self {
        let mut h = Harness::new(config);
        h.actions();
        let pids: Vec<Pid> = h.spawned.iter().map(|s| s.2).collect();
        for pid in pids {
            h.ready(pid);
        }
        h
    }
}

fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(notice) => Some(notice.to_string()),
            _ => None,
        })
        .collect()
}

/// The actions that change something outside: no logs, no `Settled`
/// (which only stops readiness watching; tested on its own).
fn without_logs(actions: Vec<Action>) -> Vec<Action> {
    actions.into_iter().filter(|a| !matches!(a, Action::Log(_) | Action::Settled { .. })).collect()
}

fn spawn(generation: GenId, instance: u32) -> Action {
    Action::Spawn { generation, instance }
}

fn term(pid: Pid) -> Action {
    Action::Stop { pid, signal: TERM }
}

fn upstream_ready(status: &str) -> Action {
    Action::Upstream(Upstream::Ready { status: status.to_string() })
}

// ---- start ----

#[test]
fn start_spawns_generation_one_and_reports_ready_once() {
    let mut h = Harness::new(config());
    let actions = h.actions();
    assert_eq!(without_logs(actions.clone()), vec![spawn(1, 0)]);
    assert_eq!(logs(&actions), vec!["gen 1 started (pids 100)"]);
    assert_eq!(h.sup.snapshot().serving(), None, "not serving before ready");

    let actions = h.advance(ms(40));
    assert!(actions.is_empty(), "nothing happens while waiting: {actions:?}");
    let actions = h.ready(100);
    assert_eq!(logs(&actions), vec!["gen 1 ready after 40ms (READY=1)"]);
    assert_eq!(without_logs(actions), vec![upstream_ready("gen 1 serving (pids 100)")]);
    assert_eq!(h.sup.snapshot().serving(), Some(1));
    assert!(h.ready(100).is_empty(), "a second READY=1 changes nothing");
}

#[test]
fn no_timer_while_everything_is_steady() {
    let h = Harness::serving(config());
    assert_eq!(h.sup.poll_timeout(), None, "steady state must not wake hotswap");
}

#[test]
fn several_instances_take_over_only_when_all_are_ready() {
    let mut h = Harness::new(Config { instances: 3, ..config() });
    let actions = h.actions();
    assert_eq!(without_logs(actions.clone()), vec![spawn(1, 0), spawn(1, 1), spawn(1, 2)]);
    assert_eq!(logs(&actions), vec!["gen 1 started (pids 100,101,102)"]);
    assert_eq!(h.ready(100), vec![Action::Settled { pid: 100 }], "one ready is not enough");
    assert_eq!(h.ready(102), vec![Action::Settled { pid: 102 }]);
    let actions = h.ready(101);
    assert_eq!(without_logs(actions), vec![upstream_ready("gen 1 serving (pids 100,101,102)")]);
}

#[test]
fn ready_delay_mode_declares_readiness_itself() {
    let mut h = Harness::new(Config { ready_delay: Some(ms(500)), ..config() });
    h.actions();
    assert_eq!(h.sup.poll_timeout(), Some(h.now + ms(500)));
    assert!(h.advance(ms(499)).is_empty());
    let actions = h.advance(ms(1));
    assert_eq!(logs(&actions), vec!["gen 1 ready after 500ms (ready delay passed)"]);
}

// ---- a child exits under each restart policy ----

#[test]
fn on_failure_restarts_a_crashed_child_with_backoff() {
    let mut h = Harness::serving(config());
    let actions = h.exit(100, ExitStatus::Exited(1));
    assert_eq!(
        logs(&actions),
        vec![
            "gen 1 instance 0 (pid 100) exited with status 1",
            "gen 1 instance 0 restarting in 100ms"
        ]
    );
    assert!(h.advance(ms(99)).is_empty());
    let actions = h.advance(ms(1));
    assert_eq!(logs(&actions), vec!["gen 1 instance 0 restarted (pid 101)"]);
    assert_eq!(without_logs(actions), vec![spawn(1, 0)]);
    // A second quick crash waits twice as long.
    let actions = h.exit(101, ExitStatus::Signaled(11));
    assert_eq!(logs(&actions)[1], "gen 1 instance 0 restarting in 200ms");
    assert_eq!(without_logs(h.advance(ms(200))), vec![spawn(1, 0)]);
    assert_eq!(h.sup.snapshot().children[0].restarts, 2);
}

#[test]
fn on_failure_lets_a_clean_exit_end_hotswap() {
    let mut h = Harness::serving(config());
    let actions = h.exit(100, ExitStatus::Exited(0));
    assert_eq!(
        without_logs(actions),
        vec![Action::Upstream(Upstream::Stopping), Action::Exit { code: 0 }]
    );
}

#[test]
fn always_restarts_even_a_clean_exit() {
    let mut h = Harness::serving(Config { restart: Restart::Always, ..config() });
    h.exit(100, ExitStatus::Exited(0));
    assert_eq!(without_logs(h.advance(ms(100))), vec![spawn(1, 0)]);
}

#[test]
fn never_exits_with_the_childs_status() {
    let mut h = Harness::serving(Config { restart: Restart::Never, ..config() });
    let actions = h.exit(100, ExitStatus::Exited(3));
    assert_eq!(without_logs(actions).last(), Some(&Action::Exit { code: 3 }));

    let mut h = Harness::serving(Config { restart: Restart::Never, ..config() });
    let actions = h.exit(100, ExitStatus::Signaled(9));
    assert_eq!(without_logs(actions).last(), Some(&Action::Exit { code: 137 }));
}

#[test]
fn never_with_several_instances_waits_for_the_last_one() {
    let mut h = Harness::serving(Config { restart: Restart::Never, instances: 2, ..config() });
    assert!(without_logs(h.exit(100, ExitStatus::Exited(1))).is_empty());
    assert_eq!(
        without_logs(h.exit(101, ExitStatus::Exited(4))).last(),
        Some(&Action::Exit { code: 4 })
    );
}

#[test]
fn first_generation_failing_is_retried_with_backoff() {
    let mut h = Harness::new(config());
    h.actions();
    let actions = h.exit(100, ExitStatus::Exited(1));
    assert_eq!(logs(&actions)[0], "gen 1 failed: pid 100 exited with status 1 before it was ready");
    assert_eq!(logs(&actions)[2], "nothing serves yet: gen 2 starts in 100ms");
    assert!(h.advance(ms(99)).is_empty());
    let actions = h.advance(ms(1));
    assert_eq!(without_logs(actions), vec![spawn(2, 0)], "a failed generation uses up its number");
}

#[test]
fn first_generation_failing_under_never_exits_with_its_status() {
    let now = Instant::now();
    let mut sup = Supervisor::new(Config { restart: Restart::Never, ..config() }, now);
    assert_eq!(sup.poll_action(), Some(spawn(1, 0)));
    let status = Some(ExitStatus::Exited(127));
    let reason = "No such file or directory".to_string();
    sup.handle(now, Event::SpawnFailed { generation: 1, instance: 0, status, reason });
    let actions: Vec<Action> = std::iter::from_fn(|| sup.poll_action()).collect();
    assert_eq!(without_logs(actions).last(), Some(&Action::Exit { code: 127 }));
}

// ---- stop ----

#[test]
fn graceful_stop_drains_then_kills_the_group_at_the_timeout() {
    let mut h = Harness::serving(config());
    let actions = h.event(Event::Stop { graceful: true });
    assert_eq!(without_logs(actions), vec![Action::Upstream(Upstream::Stopping), term(100)]);
    assert_eq!(h.sup.snapshot().children[0].state, ChildPhase::Draining);
    assert!(h.advance(Duration::from_secs(29)).is_empty());
    let actions = h.advance(Duration::from_secs(1));
    assert_eq!(without_logs(actions), vec![Action::Kill { pid: 100 }]);
    assert_eq!(without_logs(h.exit(100, ExitStatus::Signaled(9))), vec![Action::Exit { code: 0 }]);
}

#[test]
fn graceful_stop_exits_as_soon_as_the_child_is_done() {
    let mut h = Harness::serving(config());
    h.event(Event::Stop { graceful: true });
    let actions = h.advance(Duration::from_secs(2));
    assert!(actions.is_empty());
    assert_eq!(without_logs(h.exit(100, ExitStatus::Exited(0))), vec![Action::Exit { code: 0 }]);
    assert_eq!(h.sup.poll_timeout(), None, "no kill left pending");
}

#[test]
fn quit_kills_at_once_and_a_second_stop_escalates() {
    let mut h = Harness::serving(config());
    let actions = h.event(Event::Stop { graceful: false });
    assert_eq!(
        without_logs(actions),
        vec![Action::Upstream(Upstream::Stopping), Action::Kill { pid: 100 }]
    );

    let mut h = Harness::serving(config());
    h.event(Event::Stop { graceful: true });
    assert!(h.event(Event::Stop { graceful: true }).is_empty(), "a second TERM changes nothing");
    assert_eq!(h.event(Event::Stop { graceful: false }), vec![Action::Kill { pid: 100 }]);
}

#[test]
fn stop_cancels_a_pending_restart() {
    let mut h = Harness::serving(config());
    h.exit(100, ExitStatus::Exited(1));
    let actions = h.event(Event::Stop { graceful: true });
    assert_eq!(without_logs(actions).last(), Some(&Action::Exit { code: 0 }));
    assert!(h.advance(Duration::from_secs(1)).is_empty());
}

// ---- reload ----

#[test]
fn reload_starts_a_new_generation_then_retires_the_old_one() {
    let mut h = Harness::serving(config());
    let actions = h.event(Event::Reload { waiter: None });
    assert_eq!(
        without_logs(actions),
        vec![
            Action::Upstream(Upstream::Reloading {
                status: "reloading: gen 2 starting, gen 1 serving".into()
            }),
            spawn(2, 0)
        ]
    );
    assert!(h.advance(ms(200)).is_empty(), "the old generation is not touched before ready");
    let actions = h.ready(101);
    assert_eq!(
        logs(&actions),
        vec!["gen 2 ready after 200ms (READY=1)", "gen 1 retiring (pids 100)"]
    );
    assert_eq!(without_logs(actions), vec![term(100), upstream_ready("gen 2 serving (pids 101)")]);
    let actions = h.advance(ms(300));
    assert!(actions.is_empty());
    let actions = h.exit(100, ExitStatus::Exited(0));
    assert_eq!(logs(&actions), vec!["gen 1 gone, drained after 300ms"]);
    assert_eq!(h.sup.snapshot().last_reload.unwrap().failure, None);
}

#[test]
fn reload_wait_client_sees_every_step_and_the_outcome() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(7) });
    let mut seen: Vec<String> = Vec::new();
    let mut collect = |actions: Vec<Action>| {
        for a in actions {
            match a {
                Action::Report { waiter: 7, notice } => seen.push(notice.to_string()),
                Action::Finish { waiter: 7, outcome } => seen.push(format!("{outcome:?}")),
                _ => {}
            }
        }
    };
    collect(h.advance(ms(10)));
    collect(h.ready(101));
    collect(h.exit(100, ExitStatus::Exited(0)));
    assert_eq!(
        seen,
        vec![
            "gen 2 ready after 10ms (READY=1)",
            "gen 1 retiring (pids 100)",
            "gen 1 gone, drained after 0ms",
            "TookOver { generation: 2 }",
        ]
    );
}

#[test]
fn a_new_generation_that_exits_is_rolled_back_and_the_old_one_untouched() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(1) });
    let actions = h.exit(101, ExitStatus::Exited(1));
    let reason = FailReason::Exited { pid: 101, status: ExitStatus::Exited(1), cause: None };
    assert_eq!(
        without_logs(actions),
        vec![
            Action::Finish {
                waiter: 1,
                outcome: Outcome::RolledBack { generation: 2, reason: reason.clone() }
            },
            // What the failed generation claimed and gen 1 does not hold is closed.
            Action::PruneSockets { pids: vec![100] },
            upstream_ready(
                "reload to gen 2 failed: pid 101 exited with status 1 before it was ready; gen 1 still serving"
            ),
        ]
    );
    assert_eq!(h.sup.snapshot().serving(), Some(1));
    assert_eq!(h.sup.snapshot().last_reload.unwrap().failure, Some(reason));
    assert_eq!(h.sup.poll_timeout(), None);
}

#[test]
fn a_new_generation_not_ready_in_time_is_retired_like_an_old_one() {
    let mut h = Harness::serving(Config { ready_timeout: Duration::from_secs(2), ..config() });
    h.event(Event::Reload { waiter: None });
    let actions = h.advance(Duration::from_secs(2));
    assert_eq!(logs(&actions)[0], "gen 2 failed: not ready after 2s");
    assert_eq!(without_logs(actions)[0], term(101), "it may hold accepted connections: drain it");
    let actions = h.advance(Duration::from_secs(30));
    assert_eq!(without_logs(actions), vec![Action::Kill { pid: 101 }]);
    let actions = h.exit(101, ExitStatus::Signaled(9));
    assert_eq!(logs(&actions), vec!["gen 2 gone, drained after 30s"]);
    assert_eq!(h.sup.snapshot().serving(), Some(1));
    assert_eq!(h.sup.snapshot().children.len(), 1);
}

#[test]
fn a_late_ready_from_a_failed_generation_changes_nothing() {
    let mut h = Harness::serving(Config { ready_timeout: Duration::from_secs(2), ..config() });
    h.event(Event::Reload { waiter: None });
    h.advance(Duration::from_secs(2));
    assert!(h.ready(101).is_empty());
    assert_eq!(h.sup.snapshot().serving(), Some(1));
}

#[test]
fn hups_during_a_reload_coalesce_into_one_more() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(1) });
    for waiter in 2..=4 {
        let actions = h.event(Event::Reload { waiter: Some(waiter) });
        assert!(without_logs(actions).is_empty(), "no second generation while one is starting");
    }
    let actions = h.ready(101);
    let spawns: Vec<&Action> =
        actions.iter().filter(|a| matches!(a, Action::Spawn { .. })).collect();
    assert_eq!(spawns, vec![&spawn(3, 0)], "exactly one more reload");
    assert!(actions.iter().any(|a| matches!(a, Action::Upstream(Upstream::Reloading { .. }))));
    let actions = h.ready(102);
    assert!(!actions.iter().any(|a| matches!(a, Action::Spawn { .. })), "and no more than one");
    // Waiters 2..4 wait for gen 3 and see gen 2 drained as it retires.
    let finished: Vec<WaiterId> = h
        .exit(101, ExitStatus::Exited(0))
        .into_iter()
        .chain(h.exit(100, ExitStatus::Exited(0)))
        .filter_map(|a| match a {
            Action::Finish { waiter, outcome: Outcome::TookOver { .. } } => Some(waiter),
            _ => None,
        })
        .collect();
    assert_eq!(finished.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from([1, 2, 3, 4]));
}

#[test]
fn a_hup_during_a_failing_reload_still_runs_after_it() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    h.event(Event::Reload { waiter: None });
    let actions = h.exit(101, ExitStatus::Exited(1));
    assert!(actions.contains(&spawn(3, 0)), "{actions:?}");
}

#[test]
fn a_child_exiting_while_it_drains_is_never_signalled_again() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    h.ready(101);
    let actions = h.exit(100, ExitStatus::Exited(0));
    assert_eq!(without_logs(actions), vec![Action::PruneSockets { pids: vec![101] }]);
    assert!(h.advance(Duration::from_secs(60)).is_empty(), "no SIGKILL for a pid already gone");
}

#[test]
fn a_draining_child_that_crashes_is_not_restarted() {
    let mut h = Harness::serving(Config { restart: Restart::Always, ..config() });
    h.event(Event::Reload { waiter: None });
    h.ready(101);
    h.exit(100, ExitStatus::Signaled(6));
    assert!(h.advance(Duration::from_secs(60)).is_empty());
}

#[test]
fn a_crash_in_the_serving_generation_during_a_reload_still_restarts() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    h.exit(100, ExitStatus::Exited(1));
    assert_eq!(without_logs(h.advance(ms(100))), vec![spawn(1, 0)]);
}

#[test]
fn reload_during_stop_is_cancelled() {
    let mut h = Harness::serving(config());
    h.event(Event::Stop { graceful: true });
    let actions = h.event(Event::Reload { waiter: Some(9) });
    assert_eq!(actions, vec![Action::Finish { waiter: 9, outcome: Outcome::Cancelled }]);
}

#[test]
fn stop_during_a_reload_drains_both_generations() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(5) });
    let actions = without_logs(h.event(Event::Stop { graceful: true }));
    assert!(actions.contains(&term(100)) && actions.contains(&term(101)), "{actions:?}");
    assert!(actions.contains(&Action::Finish { waiter: 5, outcome: Outcome::Cancelled }));
    h.exit(100, ExitStatus::Exited(0));
    assert_eq!(h.exit(101, ExitStatus::Exited(0)).last(), Some(&Action::Exit { code: 0 }));
}

#[test]
fn forwarded_signals_reach_only_the_serving_generation() {
    let mut h = Harness::serving(Config { instances: 2, ..config() });
    h.event(Event::Reload { waiter: None });
    let actions = h.event(Event::Forward { signal: USR1 });
    assert_eq!(
        actions,
        vec![Action::Signal { pid: 100, signal: USR1 }, Action::Signal { pid: 101, signal: USR1 }]
    );
}

#[test]
fn status_lines_are_kept_per_child() {
    let mut h = Harness::serving(config());
    h.event(Event::Status { pid: 100, text: "warming caches".into() });
    assert_eq!(h.sup.snapshot().children[0].status.as_deref(), Some("warming caches"));
}

// ---- found by cargo mutants: behaviour no other test pinned ----

#[test]
fn only_spawned_and_unreaped_pids_are_children() {
    let mut h = Harness::serving(config());
    assert!(h.sup.is_child(100));
    assert!(!h.sup.is_child(4242), "an adopted orphan is no child");
    h.exit(100, ExitStatus::Exited(1));
    assert!(!h.sup.is_child(100), "reaped");
}

#[test]
fn a_reload_asked_for_during_a_failing_first_start_runs_at_once() {
    let mut h = Harness::new(config());
    h.actions();
    h.event(Event::Reload { waiter: None });
    let actions = h.exit(100, ExitStatus::Exited(1));
    assert!(actions.contains(&spawn(2, 0)), "no backoff before the asked-for reload: {actions:?}");
    // It still counts as a failed start: the next failure backs off longer.
    let actions = h.exit(101, ExitStatus::Exited(1));
    assert!(logs(&actions).contains(&"nothing serves yet: gen 3 starts in 200ms".to_string()));
}

#[test]
fn the_first_generation_backs_off_longer_each_time() {
    let mut h = Harness::new(config());
    h.actions();
    let mut waits = Vec::new();
    for pid in 100..104 {
        let actions = h.exit(pid, ExitStatus::Exited(1));
        let line = logs(&actions).into_iter().find(|l| l.starts_with("nothing serves yet"));
        waits.push(line.unwrap_or_default().rsplit(' ').next().unwrap_or_default().to_string());
        h.advance(Duration::from_secs(10));
    }
    assert_eq!(waits, ["100ms", "200ms", "400ms", "800ms"]);
}

#[test]
fn a_stop_leaves_only_the_kills_of_draining_children() {
    let mut h = Harness::serving(config());
    h.exit(100, ExitStatus::Exited(1));
    h.event(Event::Stop { graceful: true });
    assert_eq!(h.sup.poll_timeout(), None, "the pending restart is gone");

    // A child draining from a reload before the stop is still killed at its deadline.
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    h.ready(101);
    h.advance(Duration::from_secs(10));
    h.event(Event::Stop { graceful: true });
    let actions = h.advance(Duration::from_secs(20));
    assert!(actions.contains(&Action::Kill { pid: 100 }), "{actions:?}");
}

#[test]
fn a_clean_exit_does_not_end_hotswap_while_a_sibling_restarts() {
    let mut h = Harness::serving(Config { instances: 2, ..config() });
    h.exit(100, ExitStatus::Exited(1));
    let actions = h.exit(101, ExitStatus::Exited(0));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Exit { .. } | Action::Upstream(Upstream::Stopping))),
        "instance 0 is about to restart: {actions:?}"
    );
}

#[test]
fn sockets_are_pruned_after_a_reload_only_with_every_serving_instance_up() {
    let mut h = Harness::serving(Config { instances: 2, ..config() });
    h.event(Event::Reload { waiter: None });
    h.ready(102);
    h.ready(103);
    h.exit(100, ExitStatus::Exited(0));
    let actions = h.exit(101, ExitStatus::Exited(0));
    assert!(actions.contains(&Action::PruneSockets { pids: vec![102, 103] }), "{actions:?}");

    // A serving instance restarting when the old generation goes: nothing is pruned.
    let mut h = Harness::serving(Config { instances: 2, ..config() });
    h.event(Event::Reload { waiter: None });
    h.ready(102);
    h.ready(103);
    h.exit(102, ExitStatus::Exited(1));
    h.exit(100, ExitStatus::Exited(0));
    let actions = h.exit(101, ExitStatus::Exited(0));
    assert!(!actions.iter().any(|a| matches!(a, Action::PruneSockets { .. })), "{actions:?}");
}

#[test]
fn an_exec_that_failed_after_the_fork_rolls_the_reload_back_naming_it() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(3) });
    let (status, reason) =
        (ExitStatus::Exited(126), "cannot execute app: Permission denied".to_string());
    let actions = h.event(Event::ExecFailed { pid: 101, status, reason });
    assert_eq!(
        logs(&actions)[0],
        "gen 2 failed: could not start: cannot execute app: Permission denied (status 126)"
    );
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Finish { waiter: 3, outcome: Outcome::RolledBack { .. } }
        ))
    );
    // In the serving generation it is a crash like any other: restarted with backoff.
    let mut h = Harness::serving(config());
    let (status, reason) =
        (ExitStatus::Exited(127), "cannot execute app: No such file".to_string());
    let actions = h.event(Event::ExecFailed { pid: 100, status, reason });
    assert!(
        logs(&actions).contains(&"gen 1 instance 0 restarting in 100ms".to_string()),
        "{actions:?}"
    );
}

#[test]
fn a_child_is_known_by_its_generation_and_start() {
    let mut h = Harness::serving(config());
    h.advance(ms(5));
    h.event(Event::Reload { waiter: None });
    assert_eq!(h.sup.generation_of(100), Some(1));
    assert_eq!(h.sup.generation_of(101), Some(2));
    assert_eq!(h.sup.generation_of(999), None);
    assert_eq!(h.sup.started_at(101), Some(h.now));
    assert!(h.sup.started_at(100) < h.sup.started_at(101));
    assert_eq!(h.sup.started_at(999), None);
}

#[test]
fn a_dead_socket_fails_the_report_until_a_later_generation_takes_over() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: Some(1) });
    h.advance(ms(5));
    h.ready(101);
    let broken = Some("unix:/run/a.sock does not listen".to_string());
    h.event(Event::SocketsChecked { broken: broken.clone() });
    let actions = h.exit(100, ExitStatus::Exited(0));
    let reason = "unix:/run/a.sock does not listen".to_string();
    assert!(
        actions.contains(&Action::Finish {
            waiter: 1,
            outcome: Outcome::NotListening { generation: 2, reason }
        }),
        "{actions:?}"
    );
    // A generation started after the replacement holds the fresh socket: whole again.
    h.advance(ms(5));
    h.event(Event::Reload { waiter: Some(2) });
    h.ready(102);
    let actions = h.exit(101, ExitStatus::Exited(0));
    assert!(
        actions
            .contains(&Action::Finish { waiter: 2, outcome: Outcome::TookOver { generation: 3 } }),
        "{actions:?}"
    );
}

#[test]
fn the_state_crosses_a_re_exec_with_its_deadlines() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    assert!(!h.sup.is_quiet(), "a generation starting cannot cross");
    h.advance(ms(5));
    h.ready(101);
    assert!(h.sup.is_quiet(), "a draining generation can");
    h.advance(Duration::from_secs(10));
    let exported = h.sup.export(h.now);
    // The new process runs 50ms later and knows when the export was.
    let exported_at = h.now;
    h.now += ms(50);
    h.sup = Supervisor::import(config(), &exported, exported_at).unwrap();
    assert_eq!(h.sup.snapshot().serving(), Some(2));
    assert_eq!(h.sup.generation_of(100), Some(1));
    assert_eq!(h.sup.started_at(101), Some(exported_at - ms(10_005)));
    // The drain deadline is where it was: 30s after the TERM, not 30s after the import.
    assert!(h.advance(ms(19_900)).is_empty());
    let actions = h.advance(ms(50));
    assert!(actions.contains(&Action::Kill { pid: 100 }), "{actions:?}");
    let actions = h.exit(100, ExitStatus::Signaled(9));
    assert_eq!(logs(&actions), vec!["gen 1 gone, drained after 30s"]);
    // And the next reload is generation 3.
    h.event(Event::Reload { waiter: None });
    assert_eq!(h.spawned.last().map(|s| s.0), Some(3));
}

#[test]
fn a_stopping_supervisor_is_not_quiet() {
    let mut h = Harness::serving(config());
    assert!(h.sup.is_quiet());
    h.event(Event::Stop { graceful: true });
    assert!(!h.sup.is_quiet());
}

#[test]
fn a_restarted_instance_ready_again_updates_systemds_status() {
    let mut h = Harness::serving(config());
    h.exit(100, ExitStatus::Exited(1));
    h.advance(ms(100));
    let actions = h.ready(101);
    let status = "gen 1 serving (pids 101)".to_string();
    assert!(actions.contains(&Action::Upstream(Upstream::Status { status })), "{actions:?}");
}

#[test]
fn systemd_is_asked_to_wait_until_hotswaps_own_deadline_of_a_start_a_reload_or_a_stop() {
    let config = Config { ready_timeout: Duration::from_secs(60), ..config() };
    let mut h = Harness::new(config);
    let start = h.now;
    h.actions();
    assert_eq!(h.sup.busy_until(), Some(start + Duration::from_secs(60)), "the first start");
    h.advance(ms(10));
    h.ready(100);
    assert_eq!(h.sup.busy_until(), None, "serving, nothing under way");
    h.event(Event::Reload { waiter: None });
    assert_eq!(h.sup.busy_until(), Some(h.now + Duration::from_secs(60)), "a reload");
    h.advance(ms(10));
    h.ready(101);
    assert_eq!(h.sup.busy_until(), None);
    // The old generation drains; a graceful stop waits for every drain deadline.
    h.advance(Duration::from_secs(10));
    h.event(Event::Stop { graceful: true });
    let old_drain = start + ms(20) + Duration::from_secs(30);
    assert_eq!(h.sup.busy_until(), Some((h.now + Duration::from_secs(30)).max(old_drain)));
}

#[test]
fn rollback_runs_the_release_the_previous_serving_generation_ran() {
    let mut h = Harness::serving(config());
    // Nothing served before generation 1: nothing to roll back to.
    let actions = h.event(Event::Rollback { waiter: Some(1) });
    let reason = "no earlier release has served".to_string();
    assert!(actions.contains(&Action::Finish { waiter: 1, outcome: Outcome::Refused { reason } }));
    assert_eq!(logs(&actions), vec!["rollback refused: no earlier release has served"]);
    h.event(Event::Reload { waiter: None });
    h.ready(101);
    h.exit(100, ExitStatus::Exited(0));
    assert_eq!(h.sup.release_of(2), 2);
    // Generation 3 runs generation 1's release, with a reload's report.
    let actions = h.event(Event::Rollback { waiter: Some(2) });
    assert_eq!(logs(&actions)[0], "rollback: gen 3 runs the release of gen 1");
    assert_eq!(h.sup.release_of(3), 1);
    assert_eq!(h.sup.releases_in_use(), BTreeSet::from([1, 2]));
    h.ready(102);
    let actions = h.exit(101, ExitStatus::Exited(0));
    let took_over = Outcome::TookOver { generation: 3 };
    assert!(actions.contains(&Action::Finish { waiter: 2, outcome: took_over }), "{actions:?}");
    // Rolling back again goes to what generation 2 ran: a rollback is undone by a rollback.
    h.event(Event::Rollback { waiter: None });
    assert_eq!(h.sup.release_of(4), 2);
    assert_eq!(h.sup.releases_in_use(), BTreeSet::from([1, 2]));
}

#[test]
fn rollback_is_refused_while_a_reload_starts_and_cancelled_while_stopping() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    h.ready(101);
    h.event(Event::Reload { waiter: None });
    let actions = h.event(Event::Rollback { waiter: Some(1) });
    let refused = actions.iter().any(|a| {
        matches!(a, Action::Finish { waiter: 1, outcome: Outcome::Refused { reason } }
            if reason.contains("gen 3 is starting"))
    });
    assert!(refused, "{actions:?}");
    h.event(Event::Stop { graceful: true });
    let actions = h.event(Event::Rollback { waiter: Some(2) });
    assert!(actions.contains(&Action::Finish { waiter: 2, outcome: Outcome::Cancelled }));
}

#[test]
fn a_notice_names_the_generation_instance_and_child_it_is_about() {
    let ready = Notice::Ready { generation: 2, after: ms(5), via: Via::Notify };
    assert_eq!(ready.subject(), Subject { generation: Some(2), instance: None, pid: None });
    let restarting = Notice::Restarting { generation: 3, instance: 1, after: ms(100) };
    assert_eq!(restarting.subject(), Subject { generation: Some(3), instance: Some(1), pid: None });
    let exited =
        Notice::ChildExited { generation: 4, instance: 2, pid: 77, status: ExitStatus::Exited(1) };
    assert_eq!(exited.subject(), Subject { generation: Some(4), instance: Some(2), pid: Some(77) });
    let killing = Notice::Killing { generation: 5, pid: 78, after: ms(1) };
    assert_eq!(killing.subject(), Subject { generation: Some(5), instance: None, pid: Some(78) });
    let replaced = Notice::Replaced { generation: 6, instance: 0, old: 1, new: 2 };
    assert_eq!(replaced.subject().pid, Some(2), "the new child");
    assert_eq!(Notice::Stopping { pids: vec![1] }.subject(), Subject::default());
}

#[test]
fn explicit_modes_are_not_told_the_auto_remedies() {
    let mut h = Harness::new(Config { ready_timeout: Duration::from_secs(2), ..config() });
    h.actions();
    let lines = logs(&h.advance(Duration::from_secs(2)));
    assert_eq!(lines[0], "gen 1 failed: not ready after 2s");
    assert!(!lines.iter().any(|l| l.contains("never said it was ready")), "{lines:?}");
}

#[test]
fn log_words_for_edge_values() {
    assert_eq!(Notice::Stopping { pids: vec![] }.to_string(), "stopping");
    assert_eq!(Notice::Stopping { pids: vec![4, 5] }.to_string(), "stopping (pids 4,5)");
    let shown: Vec<String> = [0, 999, 1000, 1500, 60_000].map(|n| fmt_duration(ms(n))).to_vec();
    assert_eq!(shown, ["0ms", "999ms", "1s", "1.5s", "60s"]);
}

// ---- many instances: rolling reloads, replacing one instance ----

fn stops(actions: &[Action]) -> Vec<Pid> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

fn spawns(actions: &[Action]) -> Vec<(GenId, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { generation, instance } => Some((*generation, *instance)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rolling_reload_replaces_one_instance_at_a_time() {
    let mut h = Harness::serving(Config { instances: 3, rolling: true, ..config() });
    let actions = h.event(Event::Reload { waiter: Some(9) });
    assert_eq!(spawns(&actions), [(2, 0)], "one new instance at a time");
    assert_eq!(logs(&actions), ["gen 2 instance 0 started (pid 103)"]);
    let actions = h.ready(103);
    assert_eq!(stops(&actions), [100], "old instance 0 retires once new instance 0 is ready");
    assert_eq!(spawns(&actions), [(2, 1)]);
    assert_eq!(logs(&actions)[0], "gen 2 instance 0 ready after 0ms (READY=1); retiring pids 100");
    let actions = h.ready(104);
    assert_eq!((stops(&actions), spawns(&actions)), (vec![101], vec![(2, 2)]));
    let actions = h.ready(105);
    assert_eq!(stops(&actions), [102]);
    assert!(logs(&actions).contains(&"gen 2 ready after 0ms (READY=1)".to_string()), "{actions:?}");
    assert_eq!(h.sup.snapshot().serving(), Some(2));
    let mut finished = Vec::new();
    for pid in [100, 101, 102] {
        finished.extend(
            h.exit(pid, ExitStatus::Exited(0))
                .into_iter()
                .filter(|a| matches!(a, Action::Finish { .. })),
        );
    }
    assert_eq!(
        finished,
        [Action::Finish { waiter: 9, outcome: Outcome::TookOver { generation: 2 } }]
    );
}

#[test]
fn a_failed_instance_stops_the_rollout_with_the_mix_serving() {
    let mut h = Harness::serving(Config { instances: 4, rolling: true, ..config() });
    h.event(Event::Reload { waiter: Some(9) });
    h.ready(104);
    h.ready(105);
    let actions = h.exit(106, ExitStatus::Exited(1));
    let reason = FailReason::Exited { pid: 106, status: ExitStatus::Exited(1), cause: None };
    assert!(
        actions.contains(&Action::Finish {
            waiter: 9,
            outcome: Outcome::Stopped { generation: 2, replaced: 2, reason: reason.clone() }
        }),
        "{actions:?}"
    );
    assert!(stops(&actions).is_empty(), "instances 2 and 3 of gen 1 serve on");
    assert_eq!(
        logs(&actions)[0],
        "rollout of gen 2 stopped after 2 instance(s): pid 106 exited with status 1 before it was ready"
    );
    let snap = h.sup.snapshot();
    let serving: Vec<(GenId, u32)> = snap
        .children
        .iter()
        .filter(|c| c.state == ChildPhase::Ready)
        .map(|c| (c.generation, c.instance))
        .collect();
    assert_eq!(serving, [(1, 2), (1, 3), (2, 0), (2, 1)]);
    assert_eq!(snap.last_reload.unwrap().failure, Some(reason));
    // Signals go to every serving child, whatever its generation.
    let actions = h.event(Event::Forward { signal: USR1 });
    assert_eq!(actions.len(), 4);
    // The next rollout replaces each slot's child, whichever generation it is from.
    h.event(Event::Reload { waiter: None });
    let mut retired = Vec::new();
    for pid in 107..111 {
        retired.extend(stops(&h.ready(pid)));
    }
    assert_eq!(retired, [104, 105, 102, 103]);
    assert_eq!(h.sup.snapshot().serving(), Some(3));
}

#[test]
fn an_instance_over_max_memory_is_replaced_gracefully() {
    let mut h = Harness::serving(Config { instances: 2, ..config() });
    let (rss, limit) = (600 << 20, 500 << 20);
    let actions = h.event(Event::OverMemory { pid: 100, rss, limit });
    assert_eq!(
        logs(&actions)[0],
        "gen 1 instance 0 (pid 100) uses 600 MiB, over --max-memory 500 MiB: replacing it"
    );
    assert_eq!(spawns(&actions), [(1, 0)]);
    assert!(stops(&actions).is_empty(), "the old one serves until its replacement is ready");
    assert!(
        h.event(Event::OverMemory { pid: 100, rss, limit }).is_empty(),
        "one replacement at a time"
    );
    let actions = h.ready(102);
    assert_eq!(stops(&actions), [100]);
    assert_eq!(logs(&actions), ["gen 1 instance 0 replaced: pid 102 serves, pid 100 retiring"]);
    // A replacement that dies before it is ready changes nothing: no restart, the old serves on.
    h.event(Event::OverMemory { pid: 101, rss, limit });
    let actions = h.exit(103, ExitStatus::Exited(1));
    assert!(
        logs(&actions)[0].starts_with("gen 1 instance 1: replacement pid 103 failed"),
        "{actions:?}"
    );
    assert!(spawns(&actions).is_empty() && stops(&actions).is_empty(), "{actions:?}");
    assert!(h.sup.is_child(101));
}

#[test]
fn a_child_that_stops_sending_watchdog_is_replaced() {
    let mut h = Harness::serving(Config { watchdog: Some(Duration::from_secs(5)), ..config() });
    assert!(h.advance(Duration::from_secs(60)).is_empty(), "never pinged: not watched");
    h.event(Event::Watchdog { pid: 100, trigger: false });
    h.advance(Duration::from_secs(3));
    h.event(Event::Watchdog { pid: 100, trigger: false });
    assert!(h.advance(Duration::from_millis(4999)).is_empty(), "the last ping counts");
    let actions = h.advance(ms(1));
    assert_eq!(
        logs(&actions)[0],
        "gen 1 instance 0 (pid 100) sent no WATCHDOG=1 for 5s: replacing it"
    );
    assert_eq!(spawns(&actions), [(1, 0)]);
    let mut h = Harness::serving(Config { watchdog: Some(Duration::from_secs(5)), ..config() });
    let actions = h.event(Event::Watchdog { pid: 100, trigger: true });
    assert_eq!(spawns(&actions), [(1, 0)], "WATCHDOG=trigger: at once");
}

// ---- readiness: explicit signals and what /proc shows ----

fn seen(holds: bool, taking: Option<&str>) -> Seen {
    Seen { holds, taking: taking.map(str::to_string), ..Seen::default() }
}

fn auto() -> Config {
    Config { detect: true, ..config() }
}

#[test]
fn auto_an_unmodified_app_is_ready_once_seen_taking_connections() {
    let mut h = Harness::new(auto());
    h.actions();
    let actions = h.event(Event::Observed { pid: 100, seen: seen(true, None) });
    assert!(actions.is_empty(), "listen() alone is not readiness: {actions:?}");
    h.advance(ms(30));
    let how = "pid 100 accepting on [::]:3000 (epoll)";
    let actions = h.event(Event::Observed { pid: 100, seen: seen(true, Some(how)) });
    assert_eq!(logs(&actions), vec![format!("gen 1 ready after 30ms ({how})")]);
    assert!(actions.contains(&Action::Settled { pid: 100 }));
    assert_eq!(h.sup.snapshot().serving(), Some(1));
}

#[test]
fn auto_a_signal_from_a_tree_holding_our_socket_waits_until_it_takes_connections() {
    // gunicorn says READY=1 when its master has bound, seconds before a worker accepts.
    let mut h = Harness::new(auto());
    h.actions();
    h.event(Event::Observed { pid: 100, seen: seen(true, None) });
    assert!(h.ready(100).is_empty(), "held back");
    assert!(h.event(Event::Observed { pid: 100, seen: seen(true, None) }).is_empty());
    let actions =
        h.event(Event::Observed { pid: 100, seen: seen(true, Some("pid 101 waiting in select")) });
    assert_eq!(logs(&actions), vec!["gen 1 ready after 0ms (pid 101 waiting in select)"]);
}

#[test]
fn auto_a_signal_counts_alone_from_a_tree_without_our_sockets() {
    let mut h = Harness::new(auto());
    h.actions();
    assert!(h.ready(100).is_empty(), "not looked at yet: wait for the first look");
    let actions = h.event(Event::Observed { pid: 100, seen: seen(false, None) });
    assert_eq!(logs(&actions), vec!["gen 1 ready after 0ms (READY=1)"]);

    // A look before the signal does not count: the tree may have bound since.
    let mut h = Harness::new(auto());
    h.actions();
    h.event(Event::Observed { pid: 100, seen: seen(false, None) });
    assert!(h.ready(100).is_empty(), "waits for a look after the signal");
    let actions = h.event(Event::Observed { pid: 100, seen: seen(true, None) });
    assert!(actions.is_empty(), "it has bound since: wait until it takes connections");
}

#[test]
fn explicit_modes_trust_the_signal_and_ignore_what_proc_shows() {
    let mut h = Harness::new(config());
    h.actions();
    let actions = h.event(Event::Observed { pid: 100, seen: seen(true, Some("accepting")) });
    assert!(actions.is_empty(), "taking connections is not readiness under --ready notify");
    h.event(Event::Observed { pid: 100, seen: seen(true, None) });
    assert_eq!(logs(&h.ready(100)), vec!["gen 1 ready after 0ms (READY=1)"]);
}

#[test]
fn auto_a_program_serving_on_its_own_socket_is_ready_and_named_once() {
    let mut h = Harness::new(auto());
    h.actions();
    let own = || Seen {
        holds: false,
        taking: None,
        own_listeners: vec!["127.0.0.1:3000".into()],
        taking_elsewhere: Some("pid 100 waiting in accept on 127.0.0.1:3000".into()),
    };
    let actions = h.event(Event::Observed { pid: 100, seen: own() });
    let lines = logs(&actions);
    assert!(lines[0].starts_with("gen 1 pid 100 listens on 127.0.0.1:3000 itself"), "{lines:?}");
    assert!(lines[0].contains("--listen 127.0.0.1:3000"), "names the remedy: {lines:?}");
    assert_eq!(lines[1], "gen 1 ready after 0ms (pid 100 waiting in accept on 127.0.0.1:3000)");
    let actions = h.event(Event::Observed { pid: 100, seen: own() });
    assert!(logs(&actions).is_empty(), "one warning per address: {actions:?}");
    // The next generation meets EADDRINUSE; the reason says why.
    h.event(Event::Reload { waiter: Some(3) });
    h.event(Event::Observed { pid: 101, seen: seen(false, None) });
    let actions = h.exit(101, ExitStatus::Exited(1));
    let finished = actions.iter().find_map(|a| match a {
        Action::Finish { outcome: Outcome::RolledBack { reason, .. }, .. } => {
            Some(reason.to_string())
        }
        _ => None,
    });
    assert_eq!(
        finished.as_deref(),
        Some(
            "pid 101 exited with status 1 before it was ready (gen 1 pid 100 listens on \
             127.0.0.1:3000 itself, so a new generation cannot bind it)"
        )
    );
}

#[test]
fn a_refused_bind_explains_an_early_exit() {
    let mut h = Harness::serving(config());
    h.event(Event::Reload { waiter: None });
    let (addr, error) = ("0.0.0.0:80".to_string(), "Permission denied".to_string());
    h.event(Event::BindFailed { pid: 101, addr, error });
    let actions = h.exit(101, ExitStatus::Exited(1));
    assert_eq!(
        logs(&actions)[0],
        "gen 2 failed: pid 101 exited with status 1 before it was ready (bind 0.0.0.0:80: Permission denied)"
    );
}

#[test]
fn auto_a_first_generation_never_ready_is_told_what_would_make_it_so() {
    let mut h = Harness::new(Config { ready_timeout: Duration::from_secs(2), ..auto() });
    h.actions();
    h.event(Event::Observed { pid: 100, seen: seen(true, None) });
    let lines = logs(&h.advance(Duration::from_secs(2)));
    assert_eq!(lines[0], "gen 1 failed: not ready after 2s");
    assert!(lines[1].starts_with("gen 1 never said it was ready"), "{lines:?}");
    assert!(lines[1].contains("--ready delay:DUR"), "{lines:?}");
}

#[test]
fn a_starting_child_that_is_retired_is_settled_once() {
    let mut h = Harness::serving(Config { ready_timeout: Duration::from_secs(2), ..config() });
    h.event(Event::Reload { waiter: None });
    let actions = h.advance(Duration::from_secs(2));
    assert_eq!(actions.iter().filter(|a| **a == Action::Settled { pid: 101 }).count(), 1);
    let actions = h.advance(Duration::from_secs(30));
    assert!(
        !actions.contains(&Action::Settled { pid: 101 }),
        "killed after draining: settled before"
    );
}

// ---- invariants under random event sequences ----

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one random run has seen so far, checked after every step.
#[derive(Default)]
struct Record {
    /// Pids that exited: never signalled again.
    gone: BTreeSet<Pid>,
    /// `reload --wait` clients not yet finished.
    open_waiters: BTreeSet<WaiterId>,
    finished: BTreeSet<WaiterId>,
    exited: bool,
    /// Children whose start was declared over.
    settled: BTreeSet<Pid>,
    /// The children that were ready after the previous step.
    ready: BTreeSet<Pid>,
}

impl Record {
    fn check(&mut self, seed: u64, h: &Harness, actions: &[Action]) {
        for action in actions {
            assert!(!self.exited, "seed {seed}: {action:?} after Exit");
            match action {
                Action::Signal { pid, .. } | Action::Stop { pid, .. } | Action::Kill { pid } => {
                    assert!(
                        !self.gone.contains(pid) && h.sup.is_child(*pid),
                        "seed {seed}: {action:?} to a pid that is no child (any more)"
                    )
                }
                Action::Report { waiter, .. } => assert!(
                    self.open_waiters.contains(waiter),
                    "seed {seed}: {action:?} to a finished or unknown waiter"
                ),
                Action::Finish { waiter, .. } => {
                    assert!(
                        self.open_waiters.remove(waiter),
                        "seed {seed}: {action:?} to a finished or unknown waiter"
                    );
                    assert!(
                        self.finished.insert(*waiter),
                        "seed {seed}: waiter {waiter} finished twice"
                    );
                }
                Action::Settled { pid } => {
                    assert!(h.sup.is_child(*pid), "seed {seed}: {action:?} for no child");
                    assert!(self.settled.insert(*pid), "seed {seed}: {action:?} twice");
                }
                Action::Exit { .. } => self.exited = true,
                Action::PruneSockets { pids } => {
                    // Only serving children: ready, of a generation that is not retiring.
                    let snap = h.sup.snapshot();
                    for pid in pids {
                        let child = snap.children.iter().find(|c| c.pid == *pid);
                        let live = |g: GenId| {
                            snap.generations
                                .iter()
                                .any(|s| s.id == g && s.state != GenerationState::Retiring)
                        };
                        assert!(
                            child.is_some_and(|c| c.state == ChildPhase::Ready && live(c.generation)),
                            "seed {seed}: {action:?} names pid {pid}, no serving child"
                        );
                    }
                }
                Action::Spawn { .. } | Action::Upstream(_) | Action::Log(_) => {}
            }
        }
        let snap = h.sup.snapshot();
        if self.exited {
            assert!(snap.children.is_empty(), "seed {seed}: exited with children left: {snap:?}");
            assert!(self.open_waiters.is_empty(), "seed {seed}: exited with waiters left");
        }
        let count = |state| snap.generations.iter().filter(|g| g.state == state).count();
        // Two generations serve together only after a rolling reload stopped midway;
        // every instance is served by one child at most, whatever its generation.
        let serving_gens: BTreeSet<GenId> = snap
            .generations
            .iter()
            .filter(|g| g.state == GenerationState::Serving)
            .map(|g| g.id)
            .collect();
        if !h.sup_rolling() {
            assert!(serving_gens.len() <= 1, "seed {seed}: two serving: {snap:?}");
        }
        for instance in 0..h.instances() {
            let servers = snap
                .children
                .iter()
                .filter(|c| {
                    c.instance == instance
                        && c.state == ChildPhase::Ready
                        && serving_gens.contains(&c.generation)
                })
                .count();
            assert!(
                servers <= 1,
                "seed {seed}: instance {instance} served {servers} times: {snap:?}"
            );
        }
        assert!(count(GenerationState::Starting) <= 1, "seed {seed}: two starting: {snap:?}");
        if snap.stopping {
            assert_eq!(count(GenerationState::Serving), 0, "seed {seed}: serving while stopping");
            assert_eq!(count(GenerationState::Starting), 0, "seed {seed}: starting while stopping");
        }
        for child in &snap.children {
            let g = snap.generations.iter().find(|g| g.id == child.generation);
            g.unwrap_or_else(|| panic!("seed {seed}: child of a forgotten gen: {snap:?}"));
        }
        // A serving child of a live generation is told to stop only when another child
        // has just become ready for its instance (a replacement, a rolling reload's new one).
        for action in actions {
            let Action::Stop { pid, .. } = action else { continue };
            if !self.ready.contains(pid) {
                continue; // it never served: a failed start or replacement
            }
            let Some(child) = snap.children.iter().find(|c| c.pid == *pid) else { continue };
            let g = snap.generations.iter().find(|g| g.id == child.generation).unwrap();
            if g.state != GenerationState::Retiring && !snap.stopping {
                let replaced = snap.children.iter().any(|c| {
                    c.pid != child.pid
                        && c.instance == child.instance
                        && c.state == ChildPhase::Ready
                });
                assert!(
                    replaced,
                    "seed {seed}: {action:?} with nothing serving instance {}: {snap:?}",
                    child.instance
                );
            }
        }
        self.ready =
            snap.children.iter().filter(|c| c.state == ChildPhase::Ready).map(|c| c.pid).collect();
        if let Some(at) = h.sup.poll_timeout() {
            assert!(at > h.now, "seed {seed}: a timer due now was left unfired");
        }
    }
}

#[test]
fn invariants_hold_under_random_events() {
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let restart = [Restart::OnFailure, Restart::Always, Restart::Never][rng.below(3) as usize];
        let instances = 1 + rng.below(3) as u32;
        let ready_delay = (rng.below(4) == 0).then(|| ms(50 + rng.below(400)));
        let detect = rng.below(2) == 0;
        let rolling = rng.below(2) == 0;
        let watchdog = (rng.below(3) == 0).then(|| ms(100 + rng.below(500)));
        let mut h = Harness::new(Config {
            instances,
            ready_timeout: ms(500),
            ready_delay,
            drain_timeout: ms(800),
            restart,
            detect,
            rolling,
            watchdog,
            ..config()
        });
        let mut seen = Record::default();
        let first = h.actions();
        seen.check(seed, &h, &first);
        let mut next_waiter = 1;
        for _ in 0..250 {
            if seen.exited {
                break;
            }
            let live: Vec<Pid> = h.sup.snapshot().children.iter().map(|c| c.pid).collect();
            // Mostly a live child; sometimes one already reaped, or a pid never spawned.
            let any_pid = |rng: &mut Rng| match rng.below(5) {
                0 => seen.gone.iter().next().copied().unwrap_or(7),
                1 => 7 + rng.below(50) as Pid,
                _ if !live.is_empty() => live[rng.below(live.len() as u64) as usize],
                _ => 9999,
            };
            // Sometimes hotswap re-execs itself (USR2) when it may: nothing changes.
            if h.sup.is_quiet() && rng.below(8) == 0 {
                let exported = h.sup.export(h.now);
                h.sup = Supervisor::import(h.config.clone(), &exported, h.now).unwrap();
                assert_eq!(h.sup.export(h.now), exported, "seed {seed}");
            }
            let actions = match rng.below(21) {
                0 | 1 => {
                    let waiter = (rng.below(2) == 0).then(|| {
                        next_waiter += 1;
                        seen.open_waiters.insert(next_waiter);
                        next_waiter
                    });
                    h.event(Event::Reload { waiter })
                }
                18 => {
                    let waiter = (rng.below(2) == 0).then(|| {
                        next_waiter += 1;
                        seen.open_waiters.insert(next_waiter);
                        next_waiter
                    });
                    h.event(Event::Rollback { waiter })
                }
                2 if rng.below(8) == 0 => h.event(Event::Stop { graceful: rng.below(3) != 0 }),
                3 => h.event(Event::Forward { signal: USR1 }),
                4..=6 => {
                    let pid = any_pid(&mut rng);
                    h.ready(pid)
                }
                7 => {
                    let pid = any_pid(&mut rng);
                    h.event(Event::Status { pid, text: format!("step {pid}") })
                }
                8 if !live.is_empty() => {
                    let pid = live[rng.below(live.len() as u64) as usize];
                    seen.gone.insert(pid);
                    h.exit(pid, ExitStatus::Exited(rng.below(2) as i32))
                }
                9 => {
                    // A duplicate exit, or the exit of an adopted orphan: no child of ours.
                    let pid = seen.gone.iter().last().copied().unwrap_or(5);
                    let actions = h.exit(pid, ExitStatus::Signaled(9));
                    assert!(
                        actions.is_empty(),
                        "seed {seed}: exit of pid {pid} again: {actions:?}"
                    );
                    actions
                }
                10 => match seen.open_waiters.iter().next().copied() {
                    Some(waiter) => {
                        seen.open_waiters.remove(&waiter);
                        h.event(Event::WaiterGone { waiter })
                    }
                    None => h.advance(ms(10)),
                },
                11 => {
                    h.fail_next_spawn = true;
                    h.event(Event::Reload { waiter: None })
                }
                12 | 13 => {
                    let pid = any_pid(&mut rng);
                    let seen = Seen {
                        holds: rng.below(2) == 0,
                        taking: (rng.below(3) == 0).then(|| format!("pid {pid} accepting")),
                        own_listeners: (0..rng.below(2))
                            .map(|i| format!("127.0.0.1:{i}"))
                            .collect(),
                        taking_elsewhere: (rng.below(4) == 0).then(|| "elsewhere".to_string()),
                    };
                    h.event(Event::Observed { pid, seen })
                }
                16 => {
                    let pid = any_pid(&mut rng);
                    h.event(Event::Watchdog { pid, trigger: rng.below(4) == 0 })
                }
                17 => {
                    let pid = any_pid(&mut rng);
                    h.event(Event::OverMemory { pid, rss: 2 << 30, limit: 1 << 30 })
                }
                15 if !live.is_empty() => {
                    let pid = live[rng.below(live.len() as u64) as usize];
                    seen.gone.insert(pid);
                    let status = ExitStatus::Exited(126);
                    let reason = "cannot execute app: Permission denied".to_string();
                    h.event(Event::ExecFailed { pid, status, reason })
                }
                14 => {
                    let pid = any_pid(&mut rng);
                    let addr = "127.0.0.1:80".to_string();
                    h.event(Event::BindFailed { pid, addr, error: "Permission denied".into() })
                }
                _ => h.advance(ms(1 + rng.below(300))),
            };
            h.fail_next_spawn = false;
            seen.check(seed, &h, &actions);
        }
    }
}
