//! The supervisor: generations of children, readiness, retirement, restarts.
//!
//! Pure: it takes `now` and events, and queues actions. It never reads the
//! clock and makes no syscalls, so every path is unit-tested without processes.
//!
//! # Calling contract
//!
//! - `now` never goes back between calls (the driver passes a monotonic clock).
//! - After every `handle` or `handle_timeout`, drain `poll_action` until it
//!   returns `None`, then read `poll_timeout`: it changes only through those
//!   two calls, never by itself.
//! - `handle` may be called while actions are being drained (the driver
//!   answers a `Spawn` with `Spawned` at once); the new actions queue behind
//!   the ones not yet taken, so the order stays the order of decisions.
//! - `Spawn` must be answered with exactly one `Spawned` or `SpawnFailed`,
//!   and every `Spawned` pid with exactly one `Exited` once it is reaped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::handoff::{self, Stamp, stamp};
use super::timers::{Timer, Timers};
use super::types::*;
use super::waiters::Waiters;

/// First delay before restarting a crashed child; doubles per quick crash.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long before crashing restarts with the first delay again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What the service as a whole is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// Generations start, serve and retire. `reload_pending`: a reload asked
    /// for while a generation was starting runs once that one ends.
    /// `failed_starts`: generations that failed before any served, for the
    /// retry backoff (0 once one has served).
    Running { reload_pending: bool, failed_starts: u32 },
    /// Nothing serves and nothing starts: the first generation failed
    /// `attempt` times, the next starts at `Timer::Retry`.
    Retrying { attempt: u32 },
    /// Exit with `code` once the last child is gone. `graceful` is false
    /// after QUIT: children are killed, not drained.
    Stopping { code: i32, graceful: bool },
}

/// Where a generation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum GenPhase {
    /// Spawned; waiting for every instance to be ready (`Timer::ReadyTimeout`).
    Starting,
    /// The generation that serves. At most one.
    Serving,
    /// Told to stop (replaced, failed, or hotswap stopping); gone when its last child is.
    Retiring {
        #[serde(with = "stamp")]
        since: Instant,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Generation {
    phase: GenPhase,
    #[serde(with = "stamp")]
    started_at: Instant,
    /// Restart counts per instance, for the backoff.
    restarts: BTreeMap<u32, u32>,
    /// A rollback: the earlier generation whose release this one runs
    /// (None: its own, resolved when it starts).
    #[serde(default)]
    release: Option<GenId>,
    /// `Spawn`s asked for and not answered yet: the generation is not gone
    /// before they are, or their children would belong to nothing.
    spawning: u32,
    /// Started by a `--rolling` reload: its instances come one at a time,
    /// each replacing the old one of its slot as soon as it is ready.
    rolling: bool,
}

/// Where a child is in its life (deadlines live in the timer table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildPhase {
    /// Spawned, not ready yet.
    Starting,
    /// Said (or was seen to be) ready.
    Ready,
    /// Sent the stop signal; its process group gets SIGKILL at `Timer::Kill`.
    Draining,
    /// SIGKILL sent to its process group; waiting to reap it.
    Killed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Child {
    generation: GenId,
    instance: u32,
    #[serde(with = "stamp")]
    started_at: Instant,
    phase: ChildPhase,
    status: Option<String>,
    restarts: u32,
    /// An explicit signal held back until its tree is seen taking connections (`detect`).
    signalled: Option<Via>,
    /// What went wrong for it that would explain an early exit (a refused bind).
    trouble: Option<String>,
    /// Sockets of its own its tree was seen listening on.
    own_listeners: Vec<String>,
    /// It was spawned to replace this child of the same instance (over
    /// `--max-memory`, silent past `--watchdog`), which serves until it is ready.
    replaces: Option<Pid>,
}

/// The last reload's result, for `hotswap status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    /// The generation the reload started.
    pub generation: GenId,
    /// None when it took over.
    pub failure: Option<FailReason>,
    /// From the reload's start to its takeover or failure.
    pub duration: Duration,
}

/// A generation as `hotswap status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationState {
    /// Waiting for its instances to be ready.
    Starting,
    /// Serving.
    Serving,
    /// Draining, failed or stopped; gone when its last child is.
    Retiring,
}

/// One generation in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationSnapshot {
    /// Its number.
    pub id: GenId,
    /// Where it is in its life.
    pub state: GenerationState,
    /// When its first instance was asked for.
    pub started_at: Instant,
    /// The generation whose release it runs (itself, unless a rollback).
    pub release: GenId,
}

/// One child in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSnapshot {
    /// Its pid (also its process group id).
    pub pid: Pid,
    /// The generation it belongs to.
    pub generation: GenId,
    /// Its instance number, 0..instances.
    pub instance: u32,
    /// Where it is in its life.
    pub state: ChildPhase,
    /// When it was spawned.
    pub started_at: Instant,
    /// How often its instance was restarted before it.
    pub restarts: u32,
    /// The last `STATUS=` it sent.
    pub status: Option<String>,
}

/// Everything the supervisor knows, for `hotswap status` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every generation that still has children or is starting or serving, oldest first.
    pub generations: Vec<GenerationSnapshot>,
    /// Every child not yet reaped, by pid.
    pub children: Vec<ChildSnapshot>,
    /// Instances waiting out their restart backoff: (generation, instance).
    pub restarting: Vec<(GenId, u32)>,
    /// The last reload's result.
    pub last_reload: Option<LastReload>,
    /// Whether hotswap is stopping.
    pub stopping: bool,
}

impl Snapshot {
    /// The serving generation, if one serves.
    pub fn serving(&self) -> Option<GenId> {
        self.generations.iter().find(|g| g.state == GenerationState::Serving).map(|g| g.id)
    }
}

/// Everything the supervisor knows, to hand over across a re-exec of hotswap
/// (`Supervisor::export`, `Supervisor::import`).
#[derive(Serialize, Deserialize)]
struct State {
    mode: Mode,
    generations: BTreeMap<GenId, Generation>,
    children: BTreeMap<Pid, Child>,
    timers: Vec<(Timer, Stamp)>,
    next_generation: GenId,
    last_reload: Option<LastReload>,
    warned: BTreeSet<String>,
    sockets_broken: Option<(String, Stamp)>,
    replacing: Vec<((GenId, u32), Pid)>,
    #[serde(default)]
    previous_release: Option<GenId>,
}

/// The supervisor of one service: see the module documentation.
pub struct Supervisor {
    config: Config,
    mode: Mode,
    generations: BTreeMap<GenId, Generation>,
    children: BTreeMap<Pid, Child>,
    timers: Timers,
    waiters: Waiters,
    next_generation: GenId,
    last_reload: Option<LastReload>,
    /// Own listeners already warned about: one warning per address.
    warned: BTreeSet<String>,
    /// A socket the serving generation holds that does not listen, as the
    /// driver found it, and when: a generation started after that has the
    /// fresh socket that replaced it.
    sockets_broken: Option<(String, Instant)>,
    /// Spawns asked for to replace a serving child: (generation, instance) → that child.
    replacing: BTreeMap<(GenId, u32), Pid>,
    /// The release the generation before the serving one ran: where
    /// `hotswap rollback` goes.
    previous_release: Option<GenId>,
    actions: VecDeque<Action>,
}

impl Supervisor {
    /// A supervisor that starts generation 1 at `now`.
    ///
    /// Panics if `config.instances` is 0 (the command line refuses it).
    pub fn new(config: Config, now: Instant) -> Self {
        assert!(config.instances > 0, "at least one instance");
        let mut sup = Supervisor {
            config,
            mode: Mode::Running { reload_pending: false, failed_starts: 0 },
            generations: BTreeMap::new(),
            children: BTreeMap::new(),
            timers: Timers::default(),
            waiters: Waiters::default(),
            next_generation: 1,
            last_reload: None,
            warned: BTreeSet::new(),
            sockets_broken: None,
            replacing: BTreeMap::new(),
            previous_release: None,
            actions: VecDeque::new(),
        };
        sup.start_generation(now);
        sup
    }

    /// Until when systemd should wait for hotswap without timing it out
    /// (`EXTEND_TIMEOUT_USEC`, sd_notify(3)): while a generation starts,
    /// its ready deadline; while hotswap stops, its last drain deadline.
    /// None when no deadline of hotswap's own bounds what is under way.
    pub fn busy_until(&self) -> Option<Instant> {
        let deadline = |f: &dyn Fn(&Timer) -> bool| {
            self.timers.all().into_iter().filter(|(t, _)| f(t)).map(|(_, at)| at).max()
        };
        if let Mode::Stopping { .. } = self.mode {
            return deadline(&|t| matches!(t, Timer::Kill(_)));
        }
        let starting = self.starting()?;
        deadline(&|t| *t == Timer::ReadyTimeout(starting))
    }

    /// The generation whose release `generation` runs: its own, or, for a
    /// rollback, the earlier one's. The driver resolves a generation's
    /// release (working directory, program, env file) when it starts, and
    /// keeps it while [`Supervisor::releases_in_use`] names it.
    pub fn release_of(&self, generation: GenId) -> GenId {
        self.generations.get(&generation).and_then(|g| g.release).unwrap_or(generation)
    }

    /// The releases still needed: every known generation's, and the one a
    /// rollback would go back to.
    pub fn releases_in_use(&self) -> BTreeSet<GenId> {
        let live = self.generations.keys().map(|&g| self.release_of(g));
        live.chain(self.previous_release).collect()
    }

    /// Whether nothing is under way that cannot cross a re-exec of hotswap:
    /// no generation or child starting, no `reload --wait` client waiting, no
    /// action left to take. Draining children, restarts and other timers do cross.
    pub fn is_quiet(&self) -> bool {
        self.actions.is_empty()
            && self.waiters.is_empty()
            && self.starting().is_none()
            && self.replacing.is_empty()
            && !matches!(self.mode, Mode::Stopping { .. })
            && !self.children.values().any(|c| c.phase == ChildPhase::Starting)
    }

    /// The state, as JSON, with every instant as its offset from `now`.
    /// Call only when `is_quiet`.
    pub fn export(&self, now: Instant) -> String {
        let state = State {
            mode: self.mode,
            generations: self.generations.iter().map(|(&id, g)| (id, g.clone())).collect(),
            children: self.children.iter().map(|(&pid, c)| (pid, c.clone())).collect(),
            timers: self.timers.all().into_iter().map(|(t, at)| (t, Stamp(at))).collect(),
            next_generation: self.next_generation,
            last_reload: self.last_reload.clone(),
            warned: self.warned.clone(),
            sockets_broken: self.sockets_broken.clone().map(|(r, at)| (r, Stamp(at))),
            replacing: self.replacing.iter().map(|(&k, &v)| (k, v)).collect(),
            previous_release: self.previous_release,
        };
        handoff::at(now, || serde_json::to_string(&state).expect("the state serializes"))
    }

    /// The supervisor `export` described, under `config`. `exported_at` is
    /// the moment of the export on this process's clock (the driver measures
    /// it on `CLOCK_MONOTONIC`, which an exec does not reset), so every
    /// deadline stays where it was.
    ///
    /// # Errors
    /// The text is not an export of this version of hotswap.
    pub fn import(
        config: Config,
        exported: &str,
        exported_at: Instant,
    ) -> Result<Self, serde_json::Error> {
        let state: State = handoff::at(exported_at, || serde_json::from_str(exported))?;
        let mut timers = Timers::default();
        for (timer, Stamp(at)) in state.timers {
            timers.set(timer, at);
        }
        Ok(Supervisor {
            config,
            mode: state.mode,
            generations: state.generations,
            children: state.children,
            timers,
            waiters: Waiters::default(),
            next_generation: state.next_generation,
            last_reload: state.last_reload,
            warned: state.warned,
            sockets_broken: state.sockets_broken.map(|(r, Stamp(at))| (r, at)),
            replacing: state.replacing.into_iter().collect(),
            previous_release: state.previous_release,
            actions: VecDeque::new(),
        })
    }

    /// Takes one event. Every mode answers every event: the table below has
    /// no catch-all arm, so a new mode or event does not compile until each
    /// of its cases is decided.
    pub fn handle(&mut self, now: Instant, event: Event) {
        use Mode::*;
        match (self.mode, event) {
            (Running { reload_pending, failed_starts }, Event::Reload { waiter }) => {
                if let Some(id) = waiter {
                    self.waiters.add(id);
                }
                if self.starting().is_some() {
                    // Coalesce: one more reload after this one, so the newest code wins.
                    if !reload_pending {
                        self.mode = Running { reload_pending: true, failed_starts };
                    }
                } else {
                    self.start_generation(now);
                }
            }
            (Retrying { attempt }, Event::Reload { waiter }) => {
                if let Some(id) = waiter {
                    self.waiters.add(id);
                }
                self.timers.cancel(Timer::Retry);
                self.mode = Running { reload_pending: false, failed_starts: attempt };
                self.start_generation(now);
            }
            (Stopping { .. }, Event::Reload { waiter } | Event::Rollback { waiter }) => {
                if let Some(waiter) = waiter {
                    self.push(Action::Finish { waiter, outcome: Outcome::Cancelled });
                }
            }
            (Running { .. }, Event::Rollback { waiter }) => {
                let refused = match (self.starting(), self.previous_release) {
                    (Some(g), _) => {
                        Some(format!("gen {g} is starting: roll back once that reload is over"))
                    }
                    (None, None) => Some("no earlier release has served".to_string()),
                    (None, Some(release)) => {
                        if let Some(id) = waiter {
                            self.waiters.add(id);
                        }
                        self.start_generation_from(now, Some(release));
                        None
                    }
                };
                if let Some(reason) = refused {
                    self.refuse_rollback(waiter, reason);
                }
            }
            (Retrying { .. }, Event::Rollback { waiter }) => {
                self.refuse_rollback(waiter, "nothing serves yet".to_string())
            }

            (Running { .. } | Retrying { .. }, Event::Stop { graceful }) => {
                self.begin_stop(now, graceful, 0)
            }
            (Stopping { code, graceful: was_graceful }, Event::Stop { graceful }) => {
                // A second TERM changes nothing; QUIT escalates a graceful stop.
                if was_graceful && !graceful {
                    self.mode = Stopping { code, graceful: false };
                    self.kill_all();
                }
            }

            (Running { .. }, Event::Forward { signal }) => {
                for pid in self.serving_pids() {
                    self.push(Action::Signal { pid, signal });
                }
            }
            // Nothing serves: nobody to forward to.
            (Retrying { .. } | Stopping { .. }, Event::Forward { .. }) => {}

            // The generation's phase decides, whatever the mode.
            (
                Running { .. } | Retrying { .. } | Stopping { .. },
                Event::Spawned { generation, instance, pid },
            ) => self.on_spawned(now, generation, instance, pid),
            (
                Running { .. } | Retrying { .. } | Stopping { .. },
                Event::SpawnFailed { generation, instance, status, reason },
            ) => self.on_spawn_failed(now, generation, instance, status, reason),
            (Running { .. } | Retrying { .. }, Event::Ready { pid, via }) => {
                self.on_signal(now, pid, via)
            }
            (Running { .. } | Retrying { .. }, Event::Observed { pid, seen }) => {
                self.on_observed(now, pid, seen)
            }
            // Every child drains while stopping: readiness no longer matters.
            (Stopping { .. }, Event::Ready { .. } | Event::Observed { .. }) => {}
            (
                Running { .. } | Retrying { .. } | Stopping { .. },
                Event::BindFailed { pid, addr, error },
            ) => {
                if let Some(child) = self.children.get_mut(&pid) {
                    child.trouble.get_or_insert(format!("bind {addr}: {error}"));
                }
            }

            (Running { .. } | Retrying { .. } | Stopping { .. }, Event::Status { pid, text }) => {
                if let Some(child) = self.children.get_mut(&pid) {
                    child.status = Some(text);
                }
            }
            (Running { .. } | Retrying { .. } | Stopping { .. }, Event::Exited { pid, status }) => {
                self.on_exited(now, pid, status, None)
            }
            (
                Running { .. } | Retrying { .. } | Stopping { .. },
                Event::ExecFailed { pid, status, reason },
            ) => self.on_exited(now, pid, status, Some(reason)),
            (Running { .. } | Retrying { .. } | Stopping { .. }, Event::WaiterGone { waiter }) => {
                self.waiters.remove(waiter)
            }
            (Running { .. }, Event::Watchdog { pid, trigger: true }) => {
                self.replace_child(now, pid, "asked to be replaced (WATCHDOG=trigger)".into())
            }
            (Running { .. }, Event::Watchdog { pid, trigger: false }) => {
                if let (Some(every), true) =
                    (self.config.watchdog, self.children.contains_key(&pid))
                {
                    self.timers.set(Timer::Watchdog(pid), now + every);
                }
            }
            (Running { .. }, Event::OverMemory { pid, rss, limit }) => {
                let why = format!(
                    "uses {} MiB, over --max-memory {} MiB",
                    rss / (1 << 20),
                    limit / (1 << 20)
                );
                self.replace_child(now, pid, why)
            }
            // Nothing serves, or hotswap stops: nothing to replace.
            (
                Retrying { .. } | Stopping { .. },
                Event::Watchdog { .. } | Event::OverMemory { .. },
            ) => {}
            (
                Running { .. } | Retrying { .. } | Stopping { .. },
                Event::SocketsChecked { broken },
            ) => {
                if let Some(reason) = broken {
                    self.sockets_broken = Some((reason, now));
                }
            }
        }
    }

    /// Fires every timer due at `now`, in deadline order. Call when
    /// `poll_timeout` has passed; calling early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.on_timer(now, timer);
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should be called next; None at steady state.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// True once hotswap has decided to exit (it does when the last child is gone).
    pub fn is_stopping(&self) -> bool {
        matches!(self.mode, Mode::Stopping { .. })
    }

    /// Whether `pid` is a child hotswap spawned (and has not yet reaped).
    pub fn is_child(&self, pid: Pid) -> bool {
        self.children.contains_key(&pid)
    }

    /// The instance of child `pid`, if it is one.
    pub fn instance_of(&self, pid: Pid) -> Option<u32> {
        self.children.get(&pid).map(|c| c.instance)
    }

    /// When child `pid` was spawned, if it is one.
    pub fn started_at(&self, pid: Pid) -> Option<Instant> {
        self.children.get(&pid).map(|c| c.started_at)
    }

    /// The generation of child `pid`, if it is one.
    pub fn generation_of(&self, pid: Pid) -> Option<GenId> {
        self.children.get(&pid).map(|c| c.generation)
    }

    /// Every generation and child as they stand.
    pub fn snapshot(&self) -> Snapshot {
        let generations = self
            .generations
            .iter()
            .map(|(&id, g)| GenerationSnapshot {
                id,
                state: match g.phase {
                    GenPhase::Starting => GenerationState::Starting,
                    GenPhase::Serving => GenerationState::Serving,
                    GenPhase::Retiring { .. } => GenerationState::Retiring,
                },
                started_at: g.started_at,
                release: g.release.unwrap_or(id),
            })
            .collect();
        let children = self
            .children
            .iter()
            .map(|(&pid, c)| ChildSnapshot {
                pid,
                generation: c.generation,
                instance: c.instance,
                state: c.phase,
                started_at: c.started_at,
                restarts: c.restarts,
                status: c.status.clone(),
            })
            .collect();
        let restarting = self.timers.restarts();
        Snapshot {
            generations,
            children,
            restarting,
            last_reload: self.last_reload.clone(),
            stopping: self.is_stopping(),
        }
    }

    // ---- inputs ----

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        use Mode::*;
        match (self.mode, timer) {
            (Running { .. }, Timer::ReadyTimeout(generation)) => {
                let after = self.config.ready_timeout;
                self.fail_generation(now, generation, FailReason::NotReady { after });
            }
            // Retiring a generation cancels its ready timeout.
            (Retrying { .. } | Stopping { .. }, Timer::ReadyTimeout(_)) => {}
            (Running { .. } | Retrying { .. }, Timer::ReadyDelay(pid)) => {
                self.on_ready(now, pid, Via::Delay)
            }
            (Stopping { .. }, Timer::ReadyDelay(_)) => {}
            (Running { .. } | Retrying { .. } | Stopping { .. }, Timer::Kill(pid)) => {
                let child = self.children.get_mut(&pid).expect("a kill timer is for a live child");
                child.phase = ChildPhase::Killed;
                let (generation, after) = (child.generation, self.config.drain_timeout);
                self.log(Notice::Killing { generation, pid, after });
                self.push(Action::Kill { pid });
            }
            (Running { .. }, Timer::Restart { generation, instance }) => {
                self.spawn(generation, instance)
            }
            // A restart is cancelled when its generation retires or hotswap stops.
            (Retrying { .. } | Stopping { .. }, Timer::Restart { .. }) => {}
            (Retrying { attempt }, Timer::Retry) => {
                self.mode = Running { reload_pending: false, failed_starts: attempt };
                self.start_generation(now);
            }
            (Running { .. } | Stopping { .. }, Timer::Retry) => {}
            (Running { .. }, Timer::Watchdog(pid)) => {
                let every = self.config.watchdog.unwrap_or_default();
                let why = format!("sent no WATCHDOG=1 for {}", fmt_duration(every));
                self.replace_child(now, pid, why)
            }
            (Retrying { .. } | Stopping { .. }, Timer::Watchdog(_)) => {}
            (Running { .. } | Retrying { .. } | Stopping { .. }, Timer::ReplaceTimeout(pid)) => {
                let after = self.config.ready_timeout;
                self.replacement_failed(now, pid, FailReason::NotReady { after });
                self.end_child(now, pid);
            }
        }
    }

    fn on_spawned(&mut self, now: Instant, generation: GenId, instance: u32, pid: Pid) {
        self.answered(generation);
        let g = self.generations.get(&generation);
        let restarts = g.and_then(|g| g.restarts.get(&instance).copied()).unwrap_or(0);
        let (phase, rolling) = (g.map(|g| g.phase), g.is_some_and(|g| g.rolling));
        let replaces = match phase {
            Some(GenPhase::Serving) => self.replacing.remove(&(generation, instance)),
            _ => None,
        };
        self.children.insert(
            pid,
            Child {
                generation,
                instance,
                started_at: now,
                phase: ChildPhase::Starting,
                status: None,
                restarts,
                signalled: None,
                trouble: None,
                own_listeners: Vec::new(),
                replaces,
            },
        );
        if !matches!(phase, Some(GenPhase::Retiring { .. }) | None) {
            if let Some(delay) = self.config.ready_delay {
                self.timers.set(Timer::ReadyDelay(pid), now + delay);
            }
        }
        match phase {
            Some(GenPhase::Starting) if rolling => {
                self.report(generation, Notice::InstanceStarted { generation, instance, pid })
            }
            Some(GenPhase::Starting) => {
                // One instance at a time: a generation that fails spawns no more.
                if instance + 1 < self.config.instances {
                    self.spawn(generation, instance + 1);
                } else {
                    let pids = self.pids_of(Some(generation));
                    self.report(generation, Notice::Started { generation, pids });
                }
            }
            Some(GenPhase::Serving) if replaces.is_some() => {
                self.timers.set(Timer::ReplaceTimeout(pid), now + self.config.ready_timeout);
            }
            Some(GenPhase::Serving) => self.log(Notice::Restarted { generation, instance, pid }),
            // Its generation ended while the spawn was under way.
            Some(GenPhase::Retiring { .. }) => self.end_child(now, pid),
            None => unreachable!("a generation with a spawn outstanding is kept"),
        }
    }

    fn on_spawn_failed(
        &mut self,
        now: Instant,
        generation: GenId,
        instance: u32,
        status: Option<ExitStatus>,
        reason: String,
    ) {
        self.answered(generation);
        match self.generations.get(&generation).map(|g| g.phase) {
            Some(GenPhase::Starting) => {
                self.fail_generation(now, generation, FailReason::SpawnFailed { status, reason })
            }
            Some(GenPhase::Serving) => {
                let status = status.unwrap_or(ExitStatus::Exited(1));
                self.on_crash(now, generation, instance, status, now)
            }
            Some(GenPhase::Retiring { .. }) => self.forget_if_gone(now, generation),
            None => {}
        }
    }

    /// An explicit signal: `READY=1`, the ready fd, IPC, a probe.
    fn on_signal(&mut self, now: Instant, pid: Pid, via: Via) {
        let Some(child) = self.children.get_mut(&pid) else { return };
        if child.phase != ChildPhase::Starting {
            return;
        }
        let alone = !self.config.detect || matches!(via, Via::Probe | Via::Delay | Via::Seen(_));
        if alone {
            self.on_ready(now, pid, via);
        } else {
            // The next look decides (the driver looks at once): a tree that
            // holds one of hotswap's sockets must be seen taking connections
            // too. An earlier look does not count: it may predate the bind.
            child.signalled = Some(via);
        }
    }

    fn on_observed(&mut self, now: Instant, pid: Pid, seen: Seen) {
        let Some(child) = self.children.get_mut(&pid) else { return };
        let generation = child.generation;
        let mut new = Vec::new();
        for addr in seen.own_listeners {
            if !child.own_listeners.contains(&addr) {
                child.own_listeners.push(addr.clone());
                new.push(addr);
            }
        }
        let phase = child.phase;
        let held_back = if seen.holds { None } else { child.signalled.take() };
        for addr in new {
            if self.warned.insert(addr.clone()) {
                self.log(Notice::OwnListener { generation, pid, addr });
            }
        }
        if phase != ChildPhase::Starting {
            return;
        }
        let taking = match (seen.taking, seen.holds) {
            (Some(how), _) => Some(how),
            // A program that binds its own port (no shim) serves on it.
            (None, false) => seen.taking_elsewhere,
            (None, true) => None,
        };
        match (taking, held_back) {
            (Some(how), _) if self.config.detect => self.on_ready(now, pid, Via::Seen(how)),
            (_, Some(via)) => self.on_ready(now, pid, via),
            (_, None) => {}
        }
    }

    fn on_ready(&mut self, now: Instant, pid: Pid, via: Via) {
        let Some(child) = self.children.get_mut(&pid) else { return };
        if child.phase != ChildPhase::Starting {
            return;
        }
        child.phase = ChildPhase::Ready;
        child.signalled = None;
        let (generation, instance, replaces) = (child.generation, child.instance, child.replaces);
        let started_at = child.started_at;
        self.timers.cancel(Timer::ReadyDelay(pid));
        self.push(Action::Settled { pid });
        let g = &self.generations[&generation];
        match g.phase {
            GenPhase::Starting if g.rolling => {
                let after = now.duration_since(started_at);
                self.rolling_step(now, generation, instance, after, via)
            }
            GenPhase::Starting => {
                let ready = self
                    .children
                    .values()
                    .filter(|c| c.generation == generation && c.phase == ChildPhase::Ready)
                    .count();
                if ready == self.config.instances as usize {
                    self.take_over(now, generation, via);
                }
            }
            GenPhase::Serving => {
                self.timers.cancel(Timer::ReplaceTimeout(pid));
                if let Some(old) = replaces.filter(|old| self.children.contains_key(old)) {
                    self.log(Notice::Replaced { generation, instance, old, new: pid });
                    self.end_child(now, old);
                }
                let pids = self.pids_of(Some(generation));
                let status = format!("gen {generation} serving (pids {})", fmt_pids(&pids));
                self.push(Action::Upstream(Upstream::Status { status }));
            }
            GenPhase::Retiring { .. } => {}
        }
    }

    /// `--rolling`: instance `instance` of `generation` is ready: the one it
    /// replaces retires, and the next instance starts (or the rollout is done).
    fn rolling_step(
        &mut self,
        now: Instant,
        generation: GenId,
        instance: u32,
        after: Duration,
        via: Via,
    ) {
        let retiring: Vec<Pid> = self
            .children
            .iter()
            .filter(|(_, c)| {
                c.instance == instance
                    && c.generation != generation
                    && matches!(c.phase, ChildPhase::Starting | ChildPhase::Ready)
                    && self.generations[&c.generation].phase == GenPhase::Serving
            })
            .map(|(&pid, _)| pid)
            .collect();
        let notice = Notice::InstanceReady {
            generation,
            instance,
            after,
            via: via.clone(),
            retiring: retiring.clone(),
        };
        self.report(generation, notice);
        for pid in retiring {
            self.end_child(now, pid);
        }
        // An old instance that crashed and waits to restart is replaced too.
        self.timers.cancel_where(|t| {
            matches!(t, Timer::Restart { generation: g, instance: i } if *g != generation && *i == instance)
        });
        if instance + 1 < self.config.instances {
            self.timers.set(Timer::ReadyTimeout(generation), now + self.config.ready_timeout);
            self.spawn(generation, instance + 1);
        } else {
            self.take_over(now, generation, via);
        }
    }

    /// A child is gone; `exec_failed` says why when it never ran the program.
    fn on_exited(
        &mut self,
        now: Instant,
        pid: Pid,
        status: ExitStatus,
        exec_failed: Option<String>,
    ) {
        let Some(child) = self.children.remove(&pid) else { return };
        self.cancel_child_timers(pid);
        // A stop begun below queues its own Exit when nothing is left.
        let was_stopping = self.is_stopping();
        let generation = child.generation;
        match self.generations.get(&generation).map(|g| g.phase) {
            Some(GenPhase::Starting) => {
                let reason = match exec_failed {
                    Some(reason) => FailReason::SpawnFailed { status: Some(status), reason },
                    None => {
                        let cause = self.cause_of_exit(&child);
                        FailReason::Exited { pid, status, cause }
                    }
                };
                self.fail_generation(now, generation, reason)
            }
            Some(GenPhase::Serving)
                if child.replaces.is_some() && child.phase == ChildPhase::Starting =>
            {
                let reason = FailReason::Exited { pid, status, cause: None };
                self.replacement_failed_for(&child, pid, reason);
                // The child it was to replace died meanwhile: the instance restarts.
                if child.replaces.is_some_and(|old| !self.children.contains_key(&old)) {
                    self.on_crash(now, generation, child.instance, status, child.started_at);
                }
            }
            // Retired while its generation serves on (replaced, or by a rolling
            // reload): an exit it was asked for, no crash.
            Some(GenPhase::Serving)
                if matches!(child.phase, ChildPhase::Draining | ChildPhase::Killed) => {}
            Some(GenPhase::Serving) => {
                let instance = child.instance;
                self.log(Notice::ChildExited { generation, instance, pid, status });
                // A replacement on its way takes its place: no restart next to it.
                let replacement = self.children.values_mut().find(|c| c.replaces == Some(pid));
                let coming = match replacement {
                    Some(r) => {
                        r.replaces = None;
                        true
                    }
                    None => self.replacing.remove(&(generation, instance)).is_some(),
                };
                if !coming {
                    self.on_crash(now, generation, instance, status, child.started_at);
                }
            }
            Some(GenPhase::Retiring { .. }) | None => {}
        }
        self.forget_if_gone(now, generation);
        if let Mode::Stopping { code, .. } = self.mode {
            if was_stopping && self.children.is_empty() {
                self.push(Action::Exit { code });
            }
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
            let g = self.generations.get_mut(&generation).expect("serving generation exists");
            let count = g.restarts.entry(instance).or_insert(0);
            if now.duration_since(started_at) >= STABLE_AFTER {
                *count = 0;
            }
            let after = backoff(*count);
            *count += 1;
            self.timers.set(Timer::Restart { generation, instance }, now + after);
            self.log(Notice::Restarting { generation, instance, after });
        } else if self.nothing_serves_or_comes() {
            // Nothing left to serve and nothing coming: exit with the child's status.
            let _ = generation;
            self.begin_stop(now, true, status.code());
        }
    }

    // ---- transitions ----

    fn start_generation(&mut self, now: Instant) {
        self.start_generation_from(now, None)
    }

    /// `release`: a rollback, to that generation's release.
    fn start_generation_from(&mut self, now: Instant, release: Option<GenId>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.generations.insert(
            generation,
            Generation {
                phase: GenPhase::Starting,
                started_at: now,
                restarts: BTreeMap::new(),
                release,
                spawning: 0,
                // Rolling means replacing: the very first generation starts whole.
                rolling: self.config.rolling && self.serving().is_some(),
            },
        );
        self.timers.set(Timer::ReadyTimeout(generation), now + self.config.ready_timeout);
        if let Some(serving) = self.serving() {
            let status = format!("reloading: gen {generation} starting, gen {serving} serving");
            self.push(Action::Upstream(Upstream::Reloading { status }));
        }
        self.waiters.attach(generation);
        if let Some(release) = release {
            self.report(generation, Notice::RollingBack { generation, release });
        }
        // Instance 0 now; each next one once the previous is spawned (or,
        // rolling, once it is ready).
        self.spawn(generation, 0);
    }

    /// Every instance of `generation` is ready: it serves now, the old ones retire.
    fn take_over(&mut self, now: Instant, generation: GenId, via: Via) {
        let olds: Vec<GenId> = self
            .generations
            .iter()
            .filter(|(id, g)| **id != generation && g.phase == GenPhase::Serving)
            .map(|(&id, _)| id)
            .collect();
        let g = self.generations.get_mut(&generation).expect("starting generation exists");
        g.phase = GenPhase::Serving;
        let started_at = g.started_at;
        let after = now.duration_since(started_at);
        self.timers.cancel(Timer::ReadyTimeout(generation));
        // A generation started after the socket was replaced has the fresh one.
        if self.sockets_broken.as_ref().is_some_and(|(_, at)| started_at > *at) {
            self.sockets_broken = None;
        }
        if let Mode::Running { reload_pending, .. } = self.mode {
            self.mode = Mode::Running { reload_pending, failed_starts: 0 };
        }
        self.report(generation, Notice::Ready { generation, after, via });
        // What served until now is what a rollback goes back to.
        if let Some(&old) = olds.last() {
            self.previous_release = Some(self.release_of(old));
        }
        if olds.is_empty() {
            let finished = self.waiters.finish(generation, &Outcome::TookOver { generation });
            self.actions.extend(finished);
        } else {
            self.last_reload = Some(LastReload { generation, failure: None, duration: after });
            for &old in &olds {
                // A rollout retired them one by one already: only the rest is news.
                let pids: Vec<Pid> = self
                    .pids_of(Some(old))
                    .into_iter()
                    .filter(|p| {
                        matches!(self.children[p].phase, ChildPhase::Starting | ChildPhase::Ready)
                    })
                    .collect();
                if !pids.is_empty() {
                    self.report(generation, Notice::Retiring { generation: old, pids });
                }
            }
            self.waiters.took_over(generation);
            for old in olds {
                self.retire_generation(now, old);
            }
        }
        let pids = self.pids_of(Some(generation));
        let status = format!("gen {generation} serving (pids {})", fmt_pids(&pids));
        self.push(Action::Upstream(Upstream::Ready { status }));
        self.start_pending_reload(now);
    }

    /// `generation` did not come up: retire it; the serving generation, if any, goes on untouched.
    fn fail_generation(&mut self, now: Instant, generation: GenId, reason: FailReason) {
        let replaced = self
            .children
            .values()
            .filter(|c| c.generation == generation && c.phase == ChildPhase::Ready)
            .count() as u32;
        if self.generations[&generation].rolling && replaced > 0 {
            return self.stop_rollout(now, generation, replaced, reason);
        }
        self.log(Notice::Failed { generation, reason: reason.clone() });
        let started_at = self.generations[&generation].started_at;
        let outcome = Outcome::RolledBack { generation, reason: reason.clone() };
        let finished = self.waiters.finish(generation, &outcome);
        self.actions.extend(finished);
        self.retire_generation(now, generation);
        if let Some(serving) = self.serving() {
            self.last_reload = Some(LastReload {
                generation,
                failure: Some(reason.clone()),
                duration: now.duration_since(started_at),
            });
            let status =
                format!("reload to gen {generation} failed: {reason}; gen {serving} still serving");
            self.push(Action::Upstream(Upstream::Ready { status }));
            self.start_pending_reload(now);
            return;
        }
        // Nothing serves yet: the service is not up.
        let Mode::Running { reload_pending, failed_starts } = self.mode else {
            unreachable!("a generation fails only while running")
        };
        if self.config.detect && matches!(reason, FailReason::NotReady { .. }) {
            self.log(Notice::NeverReady { generation });
        }
        match self.config.restart {
            Restart::Never => {
                let code = match reason {
                    FailReason::Exited { status, .. } => status.code(),
                    FailReason::SpawnFailed { status, .. } => status.map_or(1, ExitStatus::code),
                    FailReason::NotReady { .. } => 1,
                };
                self.begin_stop(now, true, code);
            }
            Restart::OnFailure | Restart::Always if reload_pending => {
                self.mode =
                    Mode::Running { reload_pending: false, failed_starts: failed_starts + 1 };
                self.start_generation(now);
            }
            Restart::OnFailure | Restart::Always => {
                let after = backoff(failed_starts);
                self.mode = Mode::Retrying { attempt: failed_starts + 1 };
                self.timers.set(Timer::Retry, now + after);
                self.log(Notice::Retrying { generation: self.next_generation, after });
            }
        }
    }

    /// A `--rolling` reload failed after `replaced` instances took over:
    /// they stay, the failed one retires, the rest of the old generation
    /// serves on. Both generations serve, instance by instance.
    fn stop_rollout(&mut self, now: Instant, generation: GenId, replaced: u32, reason: FailReason) {
        self.log(Notice::RolloutStopped { generation, replaced, reason: reason.clone() });
        let g = self.generations.get_mut(&generation).expect("a rolling generation");
        g.phase = GenPhase::Serving;
        let started_at = g.started_at;
        self.timers.cancel(Timer::ReadyTimeout(generation));
        let outcome = Outcome::Stopped { generation, replaced, reason: reason.clone() };
        let finished = self.waiters.finish(generation, &outcome);
        self.actions.extend(finished);
        let failed: Vec<Pid> = self
            .children
            .iter()
            .filter(|(_, c)| c.generation == generation && c.phase == ChildPhase::Starting)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in failed {
            self.end_child(now, pid);
        }
        self.last_reload = Some(LastReload {
            generation,
            failure: Some(reason.clone()),
            duration: now.duration_since(started_at),
        });
        let status =
            format!("rollout of gen {generation} stopped after {replaced} instance(s): {reason}");
        self.push(Action::Upstream(Upstream::Ready { status }));
        self.start_pending_reload(now);
    }

    /// Replaces serving child `pid` by a fresh child of the same instance:
    /// the new one starts, and once it is ready the old one retires.
    fn replace_child(&mut self, now: Instant, pid: Pid, why: String) {
        let Some(child) = self.children.get(&pid) else { return };
        let (generation, instance) = (child.generation, child.instance);
        let serving = self.generations[&generation].phase == GenPhase::Serving;
        let busy = self.replacing.contains_key(&(generation, instance))
            || self.children.values().any(|c| c.replaces == Some(pid));
        if child.phase != ChildPhase::Ready || !serving || busy {
            return;
        }
        let _ = now;
        self.timers.cancel(Timer::Watchdog(pid));
        self.log(Notice::Replacing { generation, instance, pid, why });
        self.replacing.insert((generation, instance), pid);
        self.spawn(generation, instance);
    }

    fn refuse_rollback(&mut self, waiter: Option<WaiterId>, reason: String) {
        self.log(Notice::RollbackRefused { reason: reason.clone() });
        if let Some(waiter) = waiter {
            self.push(Action::Finish { waiter, outcome: Outcome::Refused { reason } });
        }
    }

    fn start_pending_reload(&mut self, now: Instant) {
        if let Mode::Running { reload_pending: true, failed_starts } = self.mode {
            self.mode = Mode::Running { reload_pending: false, failed_starts };
            self.start_generation(now);
        }
    }

    /// Stop-signal to every child of `generation`, SIGKILL to their groups at drain timeout.
    fn retire_generation(&mut self, now: Instant, generation: GenId) {
        let g = self.generations.get_mut(&generation).expect("retiring a known generation");
        if !matches!(g.phase, GenPhase::Retiring { .. }) {
            g.phase = GenPhase::Retiring { since: now };
        }
        self.replacing.retain(|(g, _), _| *g != generation);
        self.timers.cancel(Timer::ReadyTimeout(generation));
        self.timers.cancel_where(
            |t| matches!(t, Timer::Restart { generation: g, .. } if *g == generation),
        );
        for pid in self.pids_of(Some(generation)) {
            self.end_child(now, pid);
        }
        self.forget_if_gone(now, generation);
    }

    /// A child whose generation ended: drained (stop signal, SIGKILL at the
    /// drain timeout), or killed at once after QUIT.
    fn end_child(&mut self, now: Instant, pid: Pid) {
        if matches!(self.mode, Mode::Stopping { graceful: false, .. }) {
            return self.kill_child(pid);
        }
        let child = self.children.get_mut(&pid).expect("ending a known child");
        match child.phase {
            ChildPhase::Starting | ChildPhase::Ready => {
                if child.phase == ChildPhase::Starting {
                    self.actions.push_back(Action::Settled { pid });
                }
                child.phase = ChildPhase::Draining;
                self.timers.cancel(Timer::ReadyDelay(pid));
                self.timers.cancel(Timer::Watchdog(pid));
                self.timers.cancel(Timer::ReplaceTimeout(pid));
                self.timers.set(Timer::Kill(pid), now + self.config.drain_timeout);
                let signal = self.config.stop_signal;
                self.push(Action::Stop { pid, signal });
            }
            ChildPhase::Draining | ChildPhase::Killed => {}
        }
    }

    fn kill_child(&mut self, pid: Pid) {
        let child = self.children.get_mut(&pid).expect("killing a known child");
        if child.phase == ChildPhase::Starting {
            self.actions.push_back(Action::Settled { pid });
        }
        if child.phase != ChildPhase::Killed {
            child.phase = ChildPhase::Killed;
            self.timers.cancel(Timer::Kill(pid));
            self.timers.cancel(Timer::ReadyDelay(pid));
            self.push(Action::Kill { pid });
        }
    }

    /// A retiring generation with no child left is gone.
    fn forget_if_gone(&mut self, now: Instant, generation: GenId) {
        let Some(g) = self.generations.get(&generation) else { return };
        let GenPhase::Retiring { since } = g.phase else { return };
        if g.spawning > 0 || self.children.values().any(|c| c.generation == generation) {
            return;
        }
        self.generations.remove(&generation);
        let after = now.duration_since(since);
        self.log(Notice::Drained { generation, after });
        let broken = self.sockets_broken.as_ref().map(|(reason, _)| reason.as_str());
        let oldest = self.generations.keys().next().copied();
        let drained = self.waiters.drained(generation, after, oldest, broken);
        self.actions.extend(drained);
        // Only with every serving instance up: one that is restarting may
        // claim its sockets again in a moment.
        let pids = self.serving_pids();
        let all_up = pids.len() == self.config.instances as usize
            && !self.children.values().any(|c| c.phase == ChildPhase::Starting);
        if all_up && !self.is_stopping() {
            self.push(Action::PruneSockets { pids });
        }
    }

    fn begin_stop(&mut self, now: Instant, graceful: bool, code: i32) {
        self.mode = Mode::Stopping { code, graceful };
        self.push(Action::Upstream(Upstream::Stopping));
        self.log(Notice::Stopping { pids: self.children.keys().copied().collect() });
        // Only the kills of draining children stay: nothing starts or restarts now.
        self.timers.cancel_where(|t| !matches!(t, Timer::Kill(_)));
        let cancelled = self.waiters.cancel_all();
        self.actions.extend(cancelled);
        self.replacing.clear();
        let ids: Vec<GenId> = self.generations.keys().copied().collect();
        for generation in ids {
            self.retire_generation(now, generation);
        }
        if self.children.is_empty() {
            self.push(Action::Exit { code });
        }
    }

    fn kill_all(&mut self) {
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        for pid in pids {
            self.kill_child(pid);
        }
    }

    // ---- helpers ----

    fn spawn(&mut self, generation: GenId, instance: u32) {
        let g = self.generations.get_mut(&generation).expect("spawning into a known generation");
        g.spawning += 1;
        self.push(Action::Spawn { generation, instance });
    }

    /// A `Spawn` of `generation` was answered.
    fn answered(&mut self, generation: GenId) {
        if let Some(g) = self.generations.get_mut(&generation) {
            g.spawning = g.spawning.saturating_sub(1);
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn log(&mut self, notice: Notice) {
        self.push(Action::Log(notice));
    }

    /// Log a step of `generation`'s reload and tell the clients waiting for it.
    fn report(&mut self, generation: GenId, notice: Notice) {
        let reports = self.waiters.report(generation, &notice);
        self.actions.extend(reports);
        self.log(notice);
    }

    /// Why a starting child may have exited: a bind refused to it, or a
    /// serving child that holds the port itself (EADDRINUSE for the new one).
    fn cause_of_exit(&self, child: &Child) -> Option<String> {
        if let Some(trouble) = &child.trouble {
            return Some(trouble.clone());
        }
        let serving = self.serving()?;
        let holder = self
            .children
            .iter()
            .find(|(_, c)| c.generation == serving && !c.own_listeners.is_empty())?;
        Some(format!(
            "gen {serving} pid {} listens on {} itself, so a new generation cannot bind it",
            holder.0,
            holder.1.own_listeners.join(", ")
        ))
    }

    /// The newest serving generation (after a stopped rollout, two serve).
    fn serving(&self) -> Option<GenId> {
        self.generations.iter().rev().find(|(_, g)| g.phase == GenPhase::Serving).map(|(&id, _)| id)
    }

    /// The children that serve: ready, of a serving generation or of one
    /// rolling in, instance by instance.
    fn serving_pids(&self) -> Vec<Pid> {
        self.children
            .iter()
            .filter(|(_, c)| {
                let g = &self.generations[&c.generation];
                c.phase == ChildPhase::Ready
                    && (g.phase == GenPhase::Serving
                        || (g.phase == GenPhase::Starting && g.rolling))
            })
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// No child serves or starts, no restart is pending, no generation starts.
    fn nothing_serves_or_comes(&self) -> bool {
        self.serving_pids().is_empty()
            && self.starting().is_none()
            && !self.timers.any(|t| matches!(t, Timer::Restart { .. }))
            && !self.children.values().any(|c| {
                c.phase == ChildPhase::Starting
                    && self.generations[&c.generation].phase == GenPhase::Serving
            })
    }

    fn cancel_child_timers(&mut self, pid: Pid) {
        for timer in [
            Timer::Kill(pid),
            Timer::ReadyDelay(pid),
            Timer::Watchdog(pid),
            Timer::ReplaceTimeout(pid),
        ] {
            self.timers.cancel(timer);
        }
    }

    /// A replacement did not come up: the child it was for serves on.
    fn log_replace_failed(
        &mut self,
        generation: GenId,
        instance: u32,
        pid: Pid,
        reason: FailReason,
    ) {
        self.log(Notice::ReplaceFailed { generation, instance, pid, reason });
    }

    fn replacement_failed(&mut self, _now: Instant, pid: Pid, reason: FailReason) {
        if let Some(child) = self.children.get(&pid) {
            let (generation, instance) = (child.generation, child.instance);
            self.log_replace_failed(generation, instance, pid, reason);
        }
    }

    fn replacement_failed_for(&mut self, child: &Child, pid: Pid, reason: FailReason) {
        self.log_replace_failed(child.generation, child.instance, pid, reason);
    }

    fn starting(&self) -> Option<GenId> {
        self.generations.iter().find(|(_, g)| g.phase == GenPhase::Starting).map(|(&id, _)| id)
    }

    fn pids_of(&self, generation: Option<GenId>) -> Vec<Pid> {
        let Some(generation) = generation else { return Vec::new() };
        self.children
            .iter()
            .filter(|(_, c)| c.generation == generation)
            .map(|(pid, _)| *pid)
            .collect()
    }
}

/// The wait before restart `attempt` (0-based): 100 ms doubling, at most 10 s.
fn backoff(attempt: u32) -> Duration {
    BACKOFF_START.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX)
}
