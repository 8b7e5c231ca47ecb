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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
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
    OnFailure,
    Always,
    Never,
}

/// The policy knobs the core needs; everything else about spawning is the driver's.
#[derive(Clone, Debug)]
pub struct Config {
    pub instances: u32,
    pub ready_timeout: Duration,
    /// `--ready delay:DUR`: the core itself declares a child ready after this.
    pub ready_delay: Option<Duration>,
    pub drain_timeout: Duration,
    pub stop_signal: i32,
    pub restart: Restart,
}

/// Inputs to the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// HUP or a control request; `waiter` wants the outcome.
    Reload { waiter: Option<WaiterId> },
    /// TERM/INT (graceful) or QUIT (not).
    Stop { graceful: bool },
    /// USR1/WINCH: pass on to the serving generation.
    Forward { signal: i32 },
    /// The answer to `Action::Spawn`.
    Spawned { generation: GenId, instance: u32, pid: Pid },
    /// The answer to `Action::Spawn` when no process could be started;
    /// `status` follows the shell (127 not found, 126 not executable).
    SpawnFailed { generation: GenId, instance: u32, status: ExitStatus, reason: String },
    /// A child (or its process tree) said it is ready.
    Ready { pid: Pid },
    /// A child's `STATUS=` line.
    Status { pid: Pid, text: String },
    /// A process hotswap reaped. Pids that are not children are ignored.
    Exited { pid: Pid, status: ExitStatus },
    /// A `reload --wait` client went away.
    WaiterGone { waiter: WaiterId },
}

/// Messages for systemd above hotswap (sd_notify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// `READY=1` with a `STATUS=` line.
    Ready {
        status: String,
    },
    /// `RELOADING=1` (the driver adds `MONOTONIC_USEC`).
    Reloading,
    Stopping,
}

/// Outputs of the supervisor, performed in order by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start instance `instance` of generation `generation`; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        generation: GenId,
        instance: u32,
    },
    /// A signal to the child process itself.
    Signal {
        pid: Pid,
        signal: i32,
    },
    /// SIGKILL to the child's whole process group (its pid is the group id).
    KillGroup {
        pgid: Pid,
    },
    Upstream(Upstream),
    /// Something worth a log line.
    Log(Notice),
    /// A step of a reload, for one `reload --wait` client.
    Report {
        waiter: WaiterId,
        notice: Notice,
    },
    /// The end of a reload for one `reload --wait` client.
    Finish {
        waiter: WaiterId,
        outcome: Outcome,
    },
    /// hotswap is done: every child is gone.
    Exit {
        code: i32,
    },
}

/// Why a generation failed to take over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    Exited { pid: Pid, status: ExitStatus },
    SpawnFailed { status: ExitStatus, reason: String },
    NotReady { after: Duration },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Exited { pid, status } => {
                write!(f, "pid {pid} {status} before it was ready")
            }
            FailReason::SpawnFailed { status, reason } => {
                write!(f, "could not start: {reason} (status {})", status.code())
            }
            FailReason::NotReady { after } => write!(f, "not ready after {}", fmt_duration(*after)),
        }
    }
}

/// How a reload ended, for a `reload --wait` client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    TookOver {
        generation: GenId,
    },
    RolledBack {
        generation: GenId,
        reason: FailReason,
    },
    /// hotswap is stopping; the reload will not happen.
    Cancelled,
}

/// Notable moments, each one log line (and a reload step for waiters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Started {
        generation: GenId,
        pids: Vec<Pid>,
    },
    Ready {
        generation: GenId,
        after: Duration,
    },
    Retiring {
        generation: GenId,
        pids: Vec<Pid>,
    },
    Drained {
        generation: GenId,
        after: Duration,
    },
    Failed {
        generation: GenId,
        reason: FailReason,
    },
    ChildExited {
        generation: GenId,
        instance: u32,
        pid: Pid,
        status: ExitStatus,
    },
    Restarting {
        generation: GenId,
        instance: u32,
        after: Duration,
    },
    Restarted {
        generation: GenId,
        instance: u32,
        pid: Pid,
    },
    /// No generation ever came up: the next one starts after a backoff.
    Retrying {
        generation: GenId,
        after: Duration,
    },
    Killing {
        generation: GenId,
        pid: Pid,
        after: Duration,
    },
    Stopping {
        pids: Vec<Pid>,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Started { generation, pids } => {
                write!(f, "gen {generation} started (pids {})", fmt_pids(pids))
            }
            Notice::Ready { generation, after } => {
                write!(f, "gen {generation} ready after {}", fmt_duration(*after))
            }
            Notice::Retiring { generation, pids } => {
                write!(f, "gen {generation} retiring (pids {})", fmt_pids(pids))
            }
            Notice::Drained { generation, after } => {
                write!(f, "gen {generation} gone, drained after {}", fmt_duration(*after))
            }
            Notice::Failed { generation, reason } => write!(f, "gen {generation} failed: {reason}"),
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
                "gen {generation} pid {pid} still running after {}: SIGKILL to its process group",
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
