//! The supervisor: generations of children, readiness, retirement, restarts.
//!
//! Pure: it takes `now` and events, and queues actions. It never reads the
//! clock and makes no syscalls, so every path is unit-tested without processes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::types::*;

/// First delay before restarting a crashed child; doubles per quick crash.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long before crashing restarts with the first delay again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Spawned, waiting for every instance to be ready until `deadline`.
    Starting { deadline: Instant },
    /// The generation that serves. At most one.
    Serving,
    /// Told to stop (replaced, failed, or hotswap stopping); gone when its last child is.
    Retiring { since: Instant },
}

#[derive(Debug)]
struct Generation {
    id: GenId,
    phase: Phase,
    started_at: Instant,
    /// Restart counts per instance, for the backoff.
    restarts: BTreeMap<u32, u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    /// Not asked to stop.
    No,
    /// Sent the stop signal; SIGKILL to its group at this instant.
    Until(Instant),
    /// SIGKILL sent to its group.
    Killed,
}

#[derive(Debug)]
struct Child {
    generation: GenId,
    instance: u32,
    started_at: Instant,
    ready: bool,
    drain: Drain,
    status: Option<String>,
    restarts: u32,
}

#[derive(Debug)]
struct PendingRestart {
    generation: GenId,
    instance: u32,
    at: Instant,
}

/// A `reload --wait` client: which generation it waits for, then which old one to see drained.
#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    /// None: the next generation to start.
    generation: Option<GenId>,
    /// Set once `generation` took over and `old` is draining.
    old: Option<GenId>,
}

/// The last reload's result, for `hotswap status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastReload {
    pub generation: GenId,
    pub failure: Option<FailReason>,
    pub duration: Duration,
}

/// How a child looks from outside, for `hotswap status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    Starting,
    Ready,
    Draining,
    Killed,
}

impl ChildState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Ready => "ready",
            ChildState::Draining => "draining",
            ChildState::Killed => "killed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ChildSnapshot {
    pub pid: Pid,
    pub generation: GenId,
    pub instance: u32,
    pub state: ChildState,
    pub started_at: Instant,
    pub restarts: u32,
    pub status: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The serving generation.
    pub generation: Option<GenId>,
    pub children: Vec<ChildSnapshot>,
    pub last_reload: Option<LastReload>,
    pub stopping: bool,
}

pub struct Supervisor {
    config: Config,
    gens: Vec<Generation>,
    children: BTreeMap<Pid, Child>,
    restarts: Vec<PendingRestart>,
    next_gen: GenId,
    /// A reload asked for while one was running: start another when it ends.
    reload_pending: bool,
    /// The first generation never came up: try a new one at this instant.
    retry_at: Option<Instant>,
    /// Consecutive generations that failed while none was serving.
    failures: u32,
    waiters: Vec<Waiter>,
    /// Set once stopping: hotswap exits with this code when the last child is gone.
    exit_code: Option<i32>,
    last_reload: Option<LastReload>,
    actions: VecDeque<Action>,
}

impl Supervisor {
    /// A supervisor that starts generation 1 right away.
    pub fn new(config: Config, now: Instant) -> Self {
        assert!(config.instances > 0, "at least one instance");
        let mut sup = Supervisor {
            config,
            gens: Vec::new(),
            children: BTreeMap::new(),
            restarts: Vec::new(),
            next_gen: 1,
            reload_pending: false,
            retry_at: None,
            failures: 0,
            waiters: Vec::new(),
            exit_code: None,
            last_reload: None,
            actions: VecDeque::new(),
        };
        sup.start_generation(now);
        sup
    }

    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Reload { waiter } => self.on_reload(now, waiter),
            Event::Stop { graceful } => self.begin_stop(now, graceful, 0),
            Event::Forward { signal } => {
                let pids = self.pids_of(self.serving());
                for pid in pids {
                    self.actions.push_back(Action::Signal { pid, signal });
                }
            }
            Event::Spawned { generation, instance, pid } => {
                self.on_spawned(now, generation, instance, pid)
            }
            Event::SpawnFailed { generation, instance, status, reason } => {
                self.on_spawn_failed(now, generation, instance, status, reason)
            }
            Event::Ready { pid } => self.on_ready(now, pid),
            Event::Status { pid, text } => {
                if let Some(child) = self.children.get_mut(&pid) {
                    child.status = Some(text);
                }
            }
            Event::Exited { pid, status } => self.on_exited(now, pid, status),
            Event::WaiterGone { waiter } => self.waiters.retain(|w| w.id != waiter),
        }
    }

    /// Call when `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(delay) = self.config.ready_delay {
            let due: Vec<Pid> = self
                .children
                .iter()
                .filter(|(_, c)| !c.ready && c.drain == Drain::No && c.started_at + delay <= now)
                .map(|(pid, _)| *pid)
                .collect();
            for pid in due {
                self.on_ready(now, pid);
            }
        }
        if let Some(generation) = self.starting().filter(|&g| self.deadline_of(g) <= now) {
            let after = self.config.ready_timeout;
            self.fail_generation(now, generation, FailReason::NotReady { after });
        }
        let overdue: Vec<Pid> = self
            .children
            .iter()
            .filter(|(_, c)| matches!(c.drain, Drain::Until(at) if at <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in overdue {
            let child = self.children.get_mut(&pid).expect("listed above");
            child.drain = Drain::Killed;
            let (generation, after) = (child.generation, self.config.drain_timeout);
            self.log(Notice::Killing { generation, pid, after });
            self.actions.push_back(Action::KillGroup { pgid: pid });
        }
        let (due, later): (Vec<_>, Vec<_>) = self.restarts.drain(..).partition(|r| r.at <= now);
        self.restarts = later;
        for r in due {
            self.actions
                .push_back(Action::Spawn { generation: r.generation, instance: r.instance });
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.start_generation(now);
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let starting = self.starting().map(|g| self.deadline_of(g));
        let ready_delays = self.config.ready_delay.into_iter().flat_map(|delay| {
            self.children
                .values()
                .filter(|c| !c.ready && c.drain == Drain::No)
                .map(move |c| c.started_at + delay)
        });
        let kills = self.children.values().filter_map(|c| match c.drain {
            Drain::Until(at) => Some(at),
            _ => None,
        });
        let restarts = self.restarts.iter().map(|r| r.at);
        starting
            .into_iter()
            .chain(ready_delays)
            .chain(kills)
            .chain(restarts)
            .chain(self.retry_at)
            .min()
    }

    /// True once hotswap has decided to exit (it does when the last child is gone).
    pub fn is_stopping(&self) -> bool {
        self.exit_code.is_some()
    }

    /// Whether `pid` is a child hotswap spawned (and has not yet reaped).
    pub fn is_child(&self, pid: Pid) -> bool {
        self.children.contains_key(&pid)
    }

    pub fn snapshot(&self) -> Snapshot {
        let children = self
            .children
            .iter()
            .map(|(&pid, c)| ChildSnapshot {
                pid,
                generation: c.generation,
                instance: c.instance,
                state: match c.drain {
                    Drain::No if c.ready => ChildState::Ready,
                    Drain::No => ChildState::Starting,
                    Drain::Until(_) => ChildState::Draining,
                    Drain::Killed => ChildState::Killed,
                },
                started_at: c.started_at,
                restarts: c.restarts,
                status: c.status.clone(),
            })
            .collect();
        Snapshot {
            generation: self.serving(),
            children,
            last_reload: self.last_reload.clone(),
            stopping: self.is_stopping(),
        }
    }

    // ---- inputs ----

    fn on_reload(&mut self, now: Instant, waiter: Option<WaiterId>) {
        if self.is_stopping() {
            if let Some(id) = waiter {
                self.actions.push_back(Action::Finish { waiter: id, outcome: Outcome::Cancelled });
            }
            return;
        }
        if let Some(id) = waiter {
            self.waiters.push(Waiter { id, generation: None, old: None });
        }
        if self.starting().is_some() {
            // Coalesce: one more reload after this one, so the newest code wins.
            self.reload_pending = true;
        } else {
            self.retry_at = None;
            self.start_generation(now);
        }
    }

    fn on_spawned(&mut self, now: Instant, generation: GenId, instance: u32, pid: Pid) {
        let restarts = self
            .generation(generation)
            .and_then(|g| g.restarts.get(&instance).copied())
            .unwrap_or(0);
        self.children.insert(
            pid,
            Child {
                generation,
                instance,
                started_at: now,
                ready: false,
                drain: Drain::No,
                status: None,
                restarts,
            },
        );
        match self.generation(generation).map(|g| g.phase) {
            Some(Phase::Starting { .. }) => {
                let pids = self.pids_of(Some(generation));
                if pids.len() == self.config.instances as usize {
                    self.report(generation, Notice::Started { generation, pids });
                }
            }
            Some(Phase::Serving) => self.log(Notice::Restarted { generation, instance, pid }),
            // Its generation ended while the spawn was under way.
            Some(Phase::Retiring { .. }) | None => self.retire_child(now, pid),
        }
    }

    fn on_spawn_failed(
        &mut self,
        now: Instant,
        generation: GenId,
        instance: u32,
        status: ExitStatus,
        reason: String,
    ) {
        match self.generation(generation).map(|g| g.phase) {
            Some(Phase::Starting { .. }) => {
                self.fail_generation(now, generation, FailReason::SpawnFailed { status, reason })
            }
            Some(Phase::Serving) => self.on_crash(now, generation, instance, status, now),
            Some(Phase::Retiring { .. }) | None => {}
        }
    }

    fn on_ready(&mut self, now: Instant, pid: Pid) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        if child.ready || child.drain != Drain::No {
            return;
        }
        child.ready = true;
        let generation = child.generation;
        if self.starting() == Some(generation) {
            let ready =
                self.children.values().filter(|c| c.generation == generation && c.ready).count();
            if ready == self.config.instances as usize {
                self.take_over(now, generation);
            }
        }
    }

    fn on_exited(&mut self, now: Instant, pid: Pid, status: ExitStatus) {
        let Some(child) = self.children.remove(&pid) else {
            return;
        };
        // A stop begun below queues its own Exit when nothing is left.
        let was_stopping = self.is_stopping();
        let generation = child.generation;
        match self.generation(generation).map(|g| g.phase) {
            Some(Phase::Starting { .. }) => {
                self.fail_generation(now, generation, FailReason::Exited { pid, status })
            }
            Some(Phase::Serving) => {
                let instance = child.instance;
                self.log(Notice::ChildExited { generation, instance, pid, status });
                self.on_crash(now, generation, instance, status, child.started_at);
            }
            Some(Phase::Retiring { .. }) | None => {}
        }
        self.forget_if_gone(now, generation);
        if was_stopping && self.children.is_empty() {
            let code = self.exit_code.expect("stopping");
            self.actions.push_back(Action::Exit { code });
        }
    }

    /// A child of the serving generation exited on its own.
    fn on_crash(
        &mut self,
        now: Instant,
        generation: GenId,
        instance: u32,
        status: ExitStatus,
        started_at: Instant,
    ) {
        let restart = match self.config.restart {
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
            Restart::Never => false,
        };
        if restart {
            let g = self.generation_mut(generation).expect("serving generation exists");
            let count = g.restarts.entry(instance).or_insert(0);
            if now.duration_since(started_at) >= STABLE_AFTER {
                *count = 0;
            }
            let after = backoff(*count);
            *count += 1;
            self.restarts.push(PendingRestart { generation, instance, at: now + after });
            self.log(Notice::Restarting { generation, instance, after });
        } else if self.is_idle(generation) && self.starting().is_none() {
            // Nothing left to serve and nothing coming: exit with the child's status.
            self.begin_stop(now, true, status.code());
        }
    }

    // ---- transitions ----

    fn start_generation(&mut self, now: Instant) {
        let generation = self.next_gen;
        self.next_gen += 1;
        let deadline = now + self.config.ready_timeout;
        self.gens.push(Generation {
            id: generation,
            phase: Phase::Starting { deadline },
            started_at: now,
            restarts: BTreeMap::new(),
        });
        if self.serving().is_some() {
            self.actions.push_back(Action::Upstream(Upstream::Reloading));
        }
        for waiter in self.waiters.iter_mut().filter(|w| w.generation.is_none()) {
            waiter.generation = Some(generation);
        }
        for instance in 0..self.config.instances {
            self.actions.push_back(Action::Spawn { generation, instance });
        }
    }

    /// Every instance of `generation` is ready: it serves now, the old one retires.
    fn take_over(&mut self, now: Instant, generation: GenId) {
        let old = self.serving();
        let g = self.generation_mut(generation).expect("starting generation exists");
        g.phase = Phase::Serving;
        let after = now.duration_since(g.started_at);
        self.failures = 0;
        self.report(generation, Notice::Ready { generation, after });
        if let Some(old) = old {
            self.last_reload = Some(LastReload { generation, failure: None, duration: after });
            let pids = self.pids_of(Some(old));
            self.report(generation, Notice::Retiring { generation: old, pids });
            for waiter in self.waiters.iter_mut().filter(|w| w.generation == Some(generation)) {
                waiter.old = Some(old);
            }
            self.retire_generation(now, old);
        } else {
            self.finish(generation, Outcome::TookOver { generation });
        }
        let pids = self.pids_of(Some(generation));
        let status = format!("gen {generation} serving (pids {})", fmt_pids(&pids));
        self.actions.push_back(Action::Upstream(Upstream::Ready { status }));
        self.start_pending_reload(now);
    }

    /// `generation` did not come up: retire it; the serving generation, if any, goes on untouched.
    fn fail_generation(&mut self, now: Instant, generation: GenId, reason: FailReason) {
        // Spawns of this generation not yet performed are moot.
        self.actions
            .retain(|a| !matches!(a, Action::Spawn { generation: g, .. } if *g == generation));
        self.log(Notice::Failed { generation, reason: reason.clone() });
        let started_at = self.generation(generation).expect("failing generation exists").started_at;
        self.finish(generation, Outcome::RolledBack { generation, reason: reason.clone() });
        self.retire_generation(now, generation);
        if let Some(serving) = self.serving() {
            self.last_reload = Some(LastReload {
                generation,
                failure: Some(reason.clone()),
                duration: now.duration_since(started_at),
            });
            let status =
                format!("reload to gen {generation} failed: {reason}; gen {serving} still serving");
            self.actions.push_back(Action::Upstream(Upstream::Ready { status }));
            self.start_pending_reload(now);
            return;
        }
        // Nothing serves yet: the service is not up.
        match self.config.restart {
            Restart::Never => {
                let code = match reason {
                    FailReason::Exited { status, .. } | FailReason::SpawnFailed { status, .. } => {
                        status.code()
                    }
                    FailReason::NotReady { .. } => 1,
                };
                self.begin_stop(now, true, code);
            }
            Restart::OnFailure | Restart::Always => {
                if self.reload_pending {
                    self.start_pending_reload(now);
                } else {
                    let after = backoff(self.failures);
                    self.failures += 1;
                    self.retry_at = Some(now + after);
                    self.log(Notice::Retrying { generation: self.next_gen, after });
                }
            }
        }
    }

    fn start_pending_reload(&mut self, now: Instant) {
        if self.reload_pending && !self.is_stopping() {
            self.reload_pending = false;
            self.start_generation(now);
        }
    }

    /// Stop-signal to every child of `generation`, SIGKILL to their groups at drain timeout.
    fn retire_generation(&mut self, now: Instant, generation: GenId) {
        if let Some(g) = self.generation_mut(generation) {
            g.phase = Phase::Retiring { since: now };
        }
        self.restarts.retain(|r| r.generation != generation);
        for pid in self.pids_of(Some(generation)) {
            self.retire_child(now, pid);
        }
        self.forget_if_gone(now, generation);
    }

    fn retire_child(&mut self, now: Instant, pid: Pid) {
        let child = self.children.get_mut(&pid).expect("retiring a known child");
        if child.drain == Drain::No {
            child.drain = Drain::Until(now + self.config.drain_timeout);
            let signal = self.config.stop_signal;
            self.actions.push_back(Action::Signal { pid, signal });
        }
    }

    /// A retiring generation with no child left is gone.
    fn forget_if_gone(&mut self, now: Instant, generation: GenId) {
        let Some(g) = self.generation(generation) else {
            return;
        };
        let Phase::Retiring { since } = g.phase else {
            return;
        };
        if self.children.values().any(|c| c.generation == generation) {
            return;
        }
        self.gens.retain(|g| g.id != generation);
        let after = now.duration_since(since);
        self.log(Notice::Drained { generation, after });
        let done: Vec<(WaiterId, GenId)> = self
            .waiters
            .iter()
            .filter(|w| w.old == Some(generation))
            .map(|w| (w.id, w.generation.expect("a waiter with an old generation has a new one")))
            .collect();
        for (waiter, new) in done {
            let notice = Notice::Drained { generation, after };
            self.actions.push_back(Action::Report { waiter, notice });
            self.actions.push_back(Action::Finish {
                waiter,
                outcome: Outcome::TookOver { generation: new },
            });
        }
        self.waiters.retain(|w| w.old != Some(generation));
    }

    fn begin_stop(&mut self, now: Instant, graceful: bool, code: i32) {
        if self.is_stopping() {
            if !graceful {
                self.kill_all();
            }
            return;
        }
        self.exit_code = Some(code);
        // Spawns not yet performed are moot.
        self.actions.retain(|a| !matches!(a, Action::Spawn { .. }));
        self.actions.push_back(Action::Upstream(Upstream::Stopping));
        self.log(Notice::Stopping { pids: self.children.keys().copied().collect() });
        self.restarts.clear();
        self.retry_at = None;
        self.reload_pending = false;
        for waiter in std::mem::take(&mut self.waiters) {
            self.actions
                .push_back(Action::Finish { waiter: waiter.id, outcome: Outcome::Cancelled });
        }
        for g in &mut self.gens {
            if !matches!(g.phase, Phase::Retiring { .. }) {
                g.phase = Phase::Retiring { since: now };
            }
        }
        if graceful {
            let pids: Vec<Pid> = self.children.keys().copied().collect();
            for pid in pids {
                self.retire_child(now, pid);
            }
        } else {
            self.kill_all();
        }
        if self.children.is_empty() {
            self.actions.push_back(Action::Exit { code });
        }
    }

    fn kill_all(&mut self) {
        for (&pid, child) in self.children.iter_mut() {
            if child.drain != Drain::Killed {
                child.drain = Drain::Killed;
                self.actions.push_back(Action::KillGroup { pgid: pid });
            }
        }
    }

    // ---- helpers ----

    fn log(&mut self, notice: Notice) {
        self.actions.push_back(Action::Log(notice));
    }

    /// Log a step of `generation`'s reload and tell the clients waiting for it.
    fn report(&mut self, generation: GenId, notice: Notice) {
        for waiter in self.waiters.iter().filter(|w| w.generation == Some(generation)) {
            let notice = notice.clone();
            self.actions.push_back(Action::Report { waiter: waiter.id, notice });
        }
        self.log(notice);
    }

    /// End the reload of `generation` for the clients that wait only for that.
    fn finish(&mut self, generation: GenId, outcome: Outcome) {
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.generation == Some(generation));
        self.waiters = rest;
        for waiter in done {
            let outcome = outcome.clone();
            self.actions.push_back(Action::Finish { waiter: waiter.id, outcome });
        }
    }

    fn generation(&self, generation: GenId) -> Option<&Generation> {
        self.gens.iter().find(|g| g.id == generation)
    }

    fn generation_mut(&mut self, generation: GenId) -> Option<&mut Generation> {
        self.gens.iter_mut().find(|g| g.id == generation)
    }

    fn serving(&self) -> Option<GenId> {
        self.gens.iter().find(|g| g.phase == Phase::Serving).map(|g| g.id)
    }

    fn starting(&self) -> Option<GenId> {
        self.gens.iter().find(|g| matches!(g.phase, Phase::Starting { .. })).map(|g| g.id)
    }

    fn deadline_of(&self, generation: GenId) -> Instant {
        match self.generation(generation).map(|g| g.phase) {
            Some(Phase::Starting { deadline }) => deadline,
            other => unreachable!("gen {generation} is not starting: {other:?}"),
        }
    }

    fn pids_of(&self, generation: Option<GenId>) -> Vec<Pid> {
        let Some(generation) = generation else {
            return Vec::new();
        };
        self.children
            .iter()
            .filter(|(_, c)| c.generation == generation)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// No child of `generation` runs and none is about to be restarted.
    fn is_idle(&self, generation: GenId) -> bool {
        !self.children.values().any(|c| c.generation == generation)
            && !self.restarts.iter().any(|r| r.generation == generation)
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_START.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX)
}
