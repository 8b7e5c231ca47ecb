//! The supervisor's vocabulary: what goes in (`Event`), what comes out
//! (`Action`), and the notable moments it reports (`Notice`).

use std::fmt;
use std::time::Duration;

/// A process id as the kernel gives it. The core never makes syscalls with it.
pub type Pid = u32;
/// A generation number: 1, 2, … strictly increasing; a failed one uses up its number.
pub type GenId = u64;
/// Identifies a `hotswap reload --wait` client for the duration of its request.
pub type WaiterId = u64;

/// How a process ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal of this number ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128+signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// What to do when a child of the serving generation exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Restart after a non-zero exit or a signal; a clean exit ends the instance.
    OnFailure,
    /// Restart whatever the exit.
    Always,
    /// Never restart; hotswap exits with the last child's status.
    Never,
}

/// The policy knobs the core needs; everything else about spawning is the driver's.
#[derive(Clone, Debug)]
pub struct Config {
    /// Children per generation (`--instances`), at least 1.
    pub instances: u32,
    /// A starting generation not ready by then is rolled back (`--ready-timeout`).
    pub ready_timeout: Duration,
    /// `--ready delay:DUR`: the core itself declares a child ready after this.
    pub ready_delay: Option<Duration>,
    /// A retiring child's process group gets SIGKILL after this (`--drain-timeout`).
    pub drain_timeout: Duration,
    /// Sent to a retiring child (`--stop-signal`), as a signal number.
    pub stop_signal: i32,
    /// What happens when a child of the serving generation exits (`--restart`).
    pub restart: Restart,
    /// `--ready auto`: a child seen taking connections from hotswap's sockets
    /// is ready, and an explicit signal from a tree that holds one of them
    /// counts only once the tree is also seen taking connections (gunicorn
    /// says `READY=1` seconds before a worker can accept). Otherwise only
    /// explicit signals count.
    pub detect: bool,
    /// `--rolling`: a reload replaces instances one at a time (new i ready,
    /// then old i retires) instead of the whole generation at once.
    pub rolling: bool,
    /// `--watchdog DUR`: a child that sent `WATCHDOG=1` once must send it
    /// again within this, or it is replaced.
    pub watchdog: Option<Duration>,
}

/// How a child was found ready.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Via {
    /// `READY=1` on its `NOTIFY_SOCKET`.
    Notify,
    /// A newline on `HOTSWAP_READY_FD`.
    Fd,
    /// `process.send('ready')` on `NODE_CHANNEL_FD`.
    Ipc,
    /// `--ready exec:CMD` exited 0.
    Probe,
    /// `--ready delay:DUR` passed.
    Delay,
    /// Seen taking connections (how, in words: "pid 12 accepting on [::]:3000 (epoll)").
    Seen(String),
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Notify => f.write_str("READY=1"),
            Via::Fd => f.write_str("HOTSWAP_READY_FD"),
            Via::Ipc => f.write_str("process.send('ready')"),
            Via::Probe => f.write_str("readiness probe passed"),
            Via::Delay => f.write_str("ready delay passed"),
            Via::Seen(how) => f.write_str(how),
        }
    }
}

/// What one look at a child's process tree in `/proc` saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// A process of the tree holds one of hotswap's sockets.
    pub holds: bool,
    /// How it was seen taking connections from one of hotswap's sockets.
    pub taking: Option<String>,
    /// Sockets of its own it listens on, not hotswap's (`127.0.0.1:3000`).
    pub own_listeners: Vec<String>,
    /// How it was seen taking connections from one of those.
    pub taking_elsewhere: Option<String>,
}

/// Inputs to the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// HUP or a control request.
    Reload {
        /// The `reload --wait` client that wants the outcome, if any.
        waiter: Option<WaiterId>,
    },
    /// `hotswap rollback`: a new generation from the release the previous
    /// serving generation ran (DESIGN.md §1).
    Rollback {
        /// The `rollback --wait` client that wants the outcome, if any.
        waiter: Option<WaiterId>,
    },
    /// TERM/INT or QUIT.
    Stop {
        /// True for TERM/INT (drain), false for QUIT (kill at once).
        graceful: bool,
    },
    /// USR1/WINCH: pass on to the serving generation.
    Forward {
        /// The signal's number.
        signal: i32,
    },
    /// The answer to `Action::Spawn`: the child runs.
    Spawned {
        /// As in the `Spawn` it answers.
        generation: GenId,
        /// As in the `Spawn` it answers.
        instance: u32,
        /// The new child's pid, also its process group id.
        pid: Pid,
    },
    /// The answer to `Action::Spawn` when no process could be started.
    SpawnFailed {
        /// As in the `Spawn` it answers.
        generation: GenId,
        /// As in the `Spawn` it answers.
        instance: u32,
        /// The shell's status for a failed exec (127 not found, 126 not
        /// executable); None when hotswap could not prepare the child.
        status: Option<ExitStatus>,
        /// One line for the log and the reload report.
        reason: String,
    },
    /// A child (or its process tree) said it is ready.
    Ready {
        /// The child it is about.
        pid: Pid,
        /// Which way.
        via: Via,
    },
    /// A look at a starting child's process tree.
    Observed {
        /// The child it is about.
        pid: Pid,
        /// What was seen.
        seen: Seen,
    },
    /// A process of a child's tree asked hotswap to bind an address for it,
    /// and the kernel refused hotswap too.
    BindFailed {
        /// The child whose tree asked.
        pid: Pid,
        /// The address (`127.0.0.1:3000`).
        addr: String,
        /// The kernel's error (`Address already in use`).
        error: String,
    },
    /// A child's `STATUS=` line.
    Status {
        /// The child it is about.
        pid: Pid,
        /// The text after `STATUS=`.
        text: String,
    },
    /// A child whose exec failed was reaped (it never ran the program):
    /// `status` follows the shell (127 not found, 126 not executable).
    ExecFailed {
        /// The child.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
        /// One line: the program and the kernel's error.
        reason: String,
    },
    /// A process hotswap reaped. Pids that are not children are ignored.
    Exited {
        /// The reaped pid.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// The driver checked the sockets (after children exited, before their
    /// exits are handled): whether one the serving generation holds does not
    /// listen, and why.
    SocketsChecked {
        /// None when every socket listens.
        broken: Option<String>,
    },
    /// A child sent `WATCHDOG=1` (or `WATCHDOG=trigger`: replace it now).
    Watchdog {
        /// The child it is about.
        pid: Pid,
        /// `WATCHDOG=trigger`.
        trigger: bool,
    },
    /// A child's process tree uses more memory than `--max-memory`.
    OverMemory {
        /// The child it is about.
        pid: Pid,
        /// Its tree's resident memory, in bytes.
        rss: u64,
        /// `--max-memory`, in bytes.
        limit: u64,
    },
    /// A `reload --wait` client went away.
    WaiterGone {
        /// The client.
        waiter: WaiterId,
    },
}

/// Messages for systemd above hotswap (sd_notify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// `READY=1` with a `STATUS=` line.
    Ready {
        /// The `STATUS=` text.
        status: String,
    },
    /// `RELOADING=1` (the driver adds `MONOTONIC_USEC`) with a `STATUS=` line.
    Reloading {
        /// The `STATUS=` text.
        status: String,
    },
    /// `STOPPING=1`.
    Stopping,
    /// A `STATUS=` line alone: the serving pids changed (an instance restarted or replaced).
    Status {
        /// The `STATUS=` text.
        status: String,
    },
}

/// Outputs of the supervisor, performed in order by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a child; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        /// Its generation (`HOTSWAP_GENERATION`).
        generation: GenId,
        /// Its instance (`HOTSWAP_INSTANCE`), 0..instances.
        instance: u32,
    },
    /// The stop signal to a retiring child: drain and exit. What the child
    /// started and leaves behind is part of it until it is gone too.
    Stop {
        /// The child.
        pid: Pid,
        /// `--stop-signal`.
        signal: i32,
    },
    /// A signal forwarded to the child process itself (USR1, WINCH).
    Signal {
        /// The child.
        pid: Pid,
        /// The signal's number.
        signal: i32,
    },
    /// SIGKILL to the child and everything it started: its cgroup, or its
    /// process group, process tree and the orphans of its tree.
    Kill {
        /// The child.
        pid: Pid,
    },
    /// The child's start is over (ready, retiring or killed): stop watching
    /// its readiness (sampling `/proc`, running its probe).
    Settled {
        /// The child.
        pid: Pid,
    },
    /// A reload is over (the old generation is gone): close the sockets
    /// claimed at a child's `bind()` that none of these serving children
    /// holds, so a port the new code dropped stops queueing connections.
    PruneSockets {
        /// The serving generation's children, all ready.
        pids: Vec<Pid>,
    },
    /// A message for systemd above hotswap.
    Upstream(Upstream),
    /// Something worth a log line.
    Log(Notice),
    /// A step of a reload, for one `reload --wait` client.
    Report {
        /// The client.
        waiter: WaiterId,
        /// The step.
        notice: Notice,
    },
    /// The end of a reload for one `reload --wait` client.
    Finish {
        /// The client.
        waiter: WaiterId,
        /// How the reload ended.
        outcome: Outcome,
    },
    /// hotswap is done: every child is gone.
    Exit {
        /// hotswap's exit status.
        code: i32,
    },
}

/// Why a generation failed to take over.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailReason {
    /// A child exited before it was ready.
    Exited {
        /// The child.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
        /// What hotswap saw that explains it, if anything (a refused bind).
        cause: Option<String>,
    },
    /// No process could be started (see `Event::SpawnFailed`).
    SpawnFailed {
        /// As in `Event::SpawnFailed`.
        status: Option<ExitStatus>,
        /// As in `Event::SpawnFailed`.
        reason: String,
    },
    /// Not every instance was ready within `--ready-timeout`.
    NotReady {
        /// The `--ready-timeout`.
        after: Duration,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Exited { pid, status, cause: None } => {
                write!(f, "pid {pid} {status} before it was ready")
            }
            FailReason::Exited { pid, status, cause: Some(cause) } => {
                write!(f, "pid {pid} {status} before it was ready ({cause})")
            }
            FailReason::SpawnFailed { status: Some(status), reason } => {
                write!(f, "could not start: {reason} (status {})", status.code())
            }
            FailReason::SpawnFailed { status: None, reason } => {
                write!(f, "could not start: {reason}")
            }
            FailReason::NotReady { after } => write!(f, "not ready after {}", fmt_duration(*after)),
        }
    }
}

/// How a reload ended, for a `reload --wait` client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new generation serves and the old one is gone.
    TookOver {
        /// The new generation.
        generation: GenId,
    },
    /// The new generation failed; the old one serves on.
    RolledBack {
        /// The generation that failed.
        generation: GenId,
        /// Why.
        reason: FailReason,
    },
    /// The new generation serves and the old one is gone, but a socket does
    /// not listen (a child shut it down): not a takeover to report as done.
    NotListening {
        /// The new generation.
        generation: GenId,
        /// Which socket, and what hotswap did about it.
        reason: String,
    },
    /// A `--rolling` reload stopped at an instance that failed: the
    /// instances before it run the new generation, the rest the old one.
    Stopped {
        /// The new generation.
        generation: GenId,
        /// How many instances it replaced (0..replaced run it).
        replaced: u32,
        /// Why the next one failed.
        reason: FailReason,
    },
    /// hotswap is stopping; the reload will not happen.
    Cancelled,
    /// A rollback that cannot start: nothing to roll back to, or a reload
    /// is under way.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What a [`Notice`] is about, for structured logs (`--log-format json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The generation it is about.
    pub generation: Option<GenId>,
    /// The instance, when one.
    pub instance: Option<u32>,
    /// The child, when one.
    pub pid: Option<Pid>,
}

impl Notice {
    /// The generation, instance and child this notice is about.
    pub fn subject(&self) -> Subject {
        use Notice::*;
        let generation = |g: &GenId| Subject { generation: Some(*g), ..Subject::default() };
        let child = |g: &GenId, i: Option<u32>, p: Pid| Subject {
            generation: Some(*g),
            instance: i,
            pid: Some(p),
        };
        match self {
            Started { generation: g, .. }
            | RollingBack { generation: g, .. }
            | Ready { generation: g, .. }
            | NeverReady { generation: g }
            | Retiring { generation: g, .. }
            | Drained { generation: g, .. }
            | Failed { generation: g, .. }
            | Retrying { generation: g, .. }
            | RolloutStopped { generation: g, .. } => generation(g),
            Restarting { generation: g, instance, .. }
            | InstanceReady { generation: g, instance, .. } => {
                Subject { instance: Some(*instance), ..generation(g) }
            }
            OwnListener { generation: g, pid, .. } | Killing { generation: g, pid, .. } => {
                child(g, None, *pid)
            }
            ChildExited { generation: g, instance, pid, .. }
            | Restarted { generation: g, instance, pid }
            | InstanceStarted { generation: g, instance, pid }
            | Replacing { generation: g, instance, pid, .. }
            | ReplaceFailed { generation: g, instance, pid, .. } => child(g, Some(*instance), *pid),
            Replaced { generation: g, instance, new, .. } => child(g, Some(*instance), *new),
            RollbackRefused { .. } | Stopping { .. } => Subject::default(),
        }
    }
}

/// Notable moments, each one log line (and a reload step for waiters).
/// Tests and the benchmark wait for these lines: their `Display` is an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Every instance of a generation was spawned.
    Started {
        /// The generation.
        generation: GenId,
        /// Its children.
        pids: Vec<Pid>,
    },
    /// A rollback: the generation runs an earlier generation's release.
    RollingBack {
        /// The new generation.
        generation: GenId,
        /// The generation whose release it runs.
        release: GenId,
    },
    /// A rollback could not start.
    RollbackRefused {
        /// Why.
        reason: String,
    },
    /// Every instance of a generation is ready: it serves.
    Ready {
        /// The generation.
        generation: GenId,
        /// Since it started.
        after: Duration,
        /// How its last child was found ready.
        via: Via,
    },
    /// The first generation was not ready in time: what would make it so.
    NeverReady {
        /// The generation.
        generation: GenId,
    },
    /// A child listens on a socket of its own, where hotswap cannot hand it on.
    OwnListener {
        /// Its generation.
        generation: GenId,
        /// The child whose tree listens.
        pid: Pid,
        /// The address (`127.0.0.1:3000`).
        addr: String,
    },
    /// The old generation got the stop signal.
    Retiring {
        /// The generation.
        generation: GenId,
        /// Its children.
        pids: Vec<Pid>,
    },
    /// A retiring generation's last child is gone.
    Drained {
        /// The generation.
        generation: GenId,
        /// Since it began to retire.
        after: Duration,
    },
    /// A starting generation was rolled back.
    Failed {
        /// The generation.
        generation: GenId,
        /// Why.
        reason: FailReason,
    },
    /// A child of the serving generation exited on its own.
    ChildExited {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The child.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// A crashed instance will be started again.
    Restarting {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The backoff.
        after: Duration,
    },
    /// A crashed instance was started again.
    Restarted {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The new child.
        pid: Pid,
    },
    /// No generation ever came up: the next one starts after a backoff.
    Retrying {
        /// The next generation's number.
        generation: GenId,
        /// The backoff.
        after: Duration,
    },
    /// `--rolling`: one instance of a new generation was spawned.
    InstanceStarted {
        /// The generation.
        generation: GenId,
        /// The instance.
        instance: u32,
        /// The new child.
        pid: Pid,
    },
    /// `--rolling`: one instance of a new generation is ready and serves; the
    /// one it replaces retires.
    InstanceReady {
        /// The generation.
        generation: GenId,
        /// The instance.
        instance: u32,
        /// Since it was spawned.
        after: Duration,
        /// How it was found ready.
        via: Via,
        /// The children it replaces.
        retiring: Vec<Pid>,
    },
    /// A `--rolling` reload stopped at a failed instance.
    RolloutStopped {
        /// The new generation.
        generation: GenId,
        /// Instances it replaced before that.
        replaced: u32,
        /// Why the next one failed.
        reason: FailReason,
    },
    /// A serving child is to be replaced by a fresh one of the same instance.
    Replacing {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The child replaced.
        pid: Pid,
        /// Why (over `--max-memory`, silent past `--watchdog`).
        why: String,
    },
    /// The replacement is ready; the replaced child retires.
    Replaced {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The child replaced.
        old: Pid,
        /// The replacement.
        new: Pid,
    },
    /// A replacement did not come up; the child it was for serves on.
    ReplaceFailed {
        /// Its generation.
        generation: GenId,
        /// Its instance.
        instance: u32,
        /// The replacement.
        pid: Pid,
        /// Why.
        reason: FailReason,
    },
    /// A draining child outlived `--drain-timeout`.
    Killing {
        /// Its generation.
        generation: GenId,
        /// The child.
        pid: Pid,
        /// The drain timeout.
        after: Duration,
    },
    /// hotswap stops.
    Stopping {
        /// The children it stops.
        pids: Vec<Pid>,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Started { generation, pids } => {
                write!(f, "gen {generation} started (pids {})", fmt_pids(pids))
            }
            Notice::Ready { generation, after, via } => {
                write!(f, "gen {generation} ready after {} ({via})", fmt_duration(*after))
            }
            Notice::NeverReady { generation } => write!(
                f,
                "gen {generation} never said it was ready and was never seen taking connections \
                 on hotswap's sockets: have it send READY=1 to $NOTIFY_SOCKET or write a line \
                 to $HOTSWAP_READY_FD, or give --ready delay:DUR"
            ),
            Notice::OwnListener { generation, pid, addr } => write!(
                f,
                "gen {generation} pid {pid} listens on {addr} itself, not on a socket hotswap \
                 owns: the next generation will meet EADDRINUSE there. Take the socket from \
                 fd 3 (LISTEN_FDS), or run hotswap with --listen {addr}"
            ),
            Notice::Retiring { generation, pids } => {
                write!(f, "gen {generation} retiring (pids {})", fmt_pids(pids))
            }
            Notice::Drained { generation, after } => {
                write!(f, "gen {generation} gone, drained after {}", fmt_duration(*after))
            }
            Notice::Failed { generation, reason } => write!(f, "gen {generation} failed: {reason}"),
            Notice::RollingBack { generation, release } => {
                write!(f, "rollback: gen {generation} runs the release of gen {release}")
            }
            Notice::RollbackRefused { reason } => write!(f, "rollback refused: {reason}"),
            Notice::ChildExited { generation, instance, pid, status } => {
                write!(f, "gen {generation} instance {instance} (pid {pid}) {status}")
            }
            Notice::Restarting { generation, instance, after } => {
                write!(
                    f,
                    "gen {generation} instance {instance} restarting in {}",
                    fmt_duration(*after)
                )
            }
            Notice::Killing { generation, pid, after } => write!(
                f,
                "gen {generation} pid {pid} still running after {}: SIGKILL to it and all it started",
                fmt_duration(*after)
            ),
            Notice::Stopping { pids } if pids.is_empty() => write!(f, "stopping"),
            Notice::Stopping { pids } => write!(f, "stopping (pids {})", fmt_pids(pids)),
            Notice::Retrying { generation, after } => {
                write!(f, "nothing serves yet: gen {generation} starts in {}", fmt_duration(*after))
            }
            Notice::Restarted { generation, instance, pid } => {
                write!(f, "gen {generation} instance {instance} restarted (pid {pid})")
            }
            Notice::InstanceStarted { generation, instance, pid } => {
                write!(f, "gen {generation} instance {instance} started (pid {pid})")
            }
            Notice::InstanceReady { generation, instance, after, via, retiring } => {
                write!(
                    f,
                    "gen {generation} instance {instance} ready after {} ({via})",
                    fmt_duration(*after)
                )?;
                match retiring.as_slice() {
                    [] => Ok(()),
                    pids => write!(f, "; retiring pids {}", fmt_pids(pids)),
                }
            }
            Notice::RolloutStopped { generation, replaced, reason } => write!(
                f,
                "rollout of gen {generation} stopped after {replaced} instance(s): {reason}"
            ),
            Notice::Replacing { generation, instance, pid, why } => {
                write!(f, "gen {generation} instance {instance} (pid {pid}) {why}: replacing it")
            }
            Notice::Replaced { generation, instance, old, new } => write!(
                f,
                "gen {generation} instance {instance} replaced: pid {new} serves, pid {old} retiring"
            ),
            Notice::ReplaceFailed { generation, instance, pid, reason } => write!(
                f,
                "gen {generation} instance {instance}: replacement pid {pid} failed ({reason}); the old one serves on"
            ),
        }
    }
}

/// `12,13,14`
pub fn fmt_pids(pids: &[Pid]) -> String {
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    list.join(",")
}

/// `212ms`, `2s`, `1.5s`: short and exact enough for logs.
pub fn fmt_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
