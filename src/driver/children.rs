//! The one place that knows what the driver holds for each child: its
//! readiness channels and its `exec:` probe. Removing a child's entry at
//! reap cleans all of it in one step.

use std::collections::HashMap;

use tokio::task::JoinHandle;

use crate::sys::channels::{self, Watch};
use crate::sys::process::{self, Pid};
use crate::sys::spawn::{ExecReport, Forked};

/// A child's `--ready exec:` probe.
#[derive(Debug, Default)]
enum Probe {
    /// Not probing (another readiness mode, or done).
    #[default]
    Idle,
    /// A probe process runs (its own process group).
    Running(Pid),
    /// The last probe failed; the task wakes the driver for the next.
    Waiting(JoinHandle<()>),
}

/// What the driver holds for one child.
#[derive(Default)]
struct ChildIo {
    /// Readers of its channels, held for their `Drop`: it closes and removes the channels.
    _channels: Option<Watch>,
    probe: Probe,
    /// It was sent the stop signal: what it leaves behind drains with it.
    retiring: bool,
    /// Where it reports a failed exec (read once it has exited), holding
    /// the memory it runs on until its exec.
    exec_report: Option<ExecReport>,
}

impl Drop for ChildIo {
    fn drop(&mut self) {
        match std::mem::take(&mut self.probe) {
            Probe::Idle => {}
            // A probe must not outlive its child: kill its whole group.
            Probe::Running(pid) => {
                let _ = process::kill_group(pid);
            }
            Probe::Waiting(task) => task.abort(),
        }
    }
}

/// What a reaped pid was.
#[derive(Debug)]
pub enum Reaped {
    /// A child: everything held for it is released.
    Child {
        /// Why its exec failed, if it did (then it never ran the program).
        exec_error: Option<std::io::Error>,
    },
    /// The probe of `child`.
    Probe {
        /// The child it probed.
        child: Pid,
    },
    /// Neither (an adopted orphan, or an unknown pid).
    Other,
}

/// A child as a re-exec of hotswap hands it over (DESIGN.md §2, USR2).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    /// The child.
    pub pid: Pid,
    /// It was sent the stop signal.
    pub retiring: bool,
    /// Its readiness channels, still open.
    pub channels: Option<channels::Handed>,
}

/// Every child's I/O, by pid, and every running probe's child.
#[derive(Default)]
pub struct Children {
    by_pid: HashMap<Pid, ChildIo>,
    probes: HashMap<Pid, Pid>,
    /// Each probe's exec report, until the probe is reaped (a probe killed
    /// early may still run on the memory its report holds).
    probe_reports: HashMap<Pid, ExecReport>,
}

impl Children {
    /// A child was spawned, with the pipe on which it reports a failed exec
    /// (its channels' readers follow, `watch`, once its batch is spawned).
    pub fn add(&mut self, pid: Pid, exec_report: ExecReport) {
        let io = ChildIo {
            _channels: None,
            probe: Probe::Idle,
            retiring: false,
            exec_report: Some(exec_report),
        };
        self.by_pid.insert(pid, io);
    }

    /// `pid`'s channels are listened to from now on.
    pub fn watch(&mut self, pid: Pid, channels: Watch) {
        if let Some(io) = self.by_pid.get_mut(&pid) {
            io._channels = Some(channels);
        }
    }

    /// What a re-exec of hotswap hands over. Only when no child starts:
    /// probes and exec reports do not cross.
    pub fn hand_over(&self) -> Vec<Handed> {
        let channels = |io: &ChildIo| io._channels.as_ref().map(|w| w.hand_over().clone());
        let handed = |(&pid, io): (&Pid, &ChildIo)| Handed {
            pid,
            retiring: io.retiring,
            channels: channels(io),
        };
        self.by_pid.iter().map(handed).collect()
    }

    /// A child the previous hotswap process handed over.
    pub fn take_back(&mut self, pid: Pid, retiring: bool, channels: Option<Watch>) {
        let io = ChildIo { _channels: channels, probe: Probe::Idle, retiring, exec_report: None };
        self.by_pid.insert(pid, io);
    }

    /// Whether `child` runs its own program (not hotswap's clone of itself,
    /// which holds copies of every fd hotswap has, any more). True for a
    /// child a previous hotswap process handed over: it was not starting.
    pub fn exec_done(&mut self, child: Pid) -> bool {
        match self.by_pid.get_mut(&child).map(|io| io.exec_report.as_mut()) {
            Some(Some(report)) => report.exec_done(),
            Some(None) => true,
            None => false,
        }
    }

    /// Frees the memory of every child and probe that is past its exec.
    pub fn release_executed(&mut self) {
        let reports = self.by_pid.values_mut().filter_map(|io| io.exec_report.as_mut());
        for report in reports.chain(self.probe_reports.values_mut()).filter(|r| r.lends()) {
            report.settled();
        }
    }

    /// `child` was sent the stop signal.
    pub fn retire(&mut self, child: Pid) {
        if let Some(io) = self.by_pid.get_mut(&child) {
            io.retiring = true;
        }
    }

    /// Whether `child` was sent the stop signal.
    pub fn is_retiring(&self, child: Pid) -> bool {
        self.by_pid.get(&child).is_some_and(|io| io.retiring)
    }

    /// Whether `pid` is a running probe.
    pub fn is_probe(&self, pid: Pid) -> bool {
        self.probes.contains_key(&pid)
    }

    /// Whether `child` is known and has no probe running or pending.
    pub fn may_probe(&self, child: Pid) -> bool {
        self.by_pid.get(&child).is_some_and(|io| matches!(io.probe, Probe::Idle))
    }

    /// `probe` runs for `child`.
    pub fn probe_running(&mut self, child: Pid, probe: Forked) {
        let pid = probe.pid;
        self.probe_reports.insert(pid, probe.exec_report);
        match self.by_pid.get_mut(&child) {
            Some(io) => {
                io.probe = Probe::Running(pid);
                self.probes.insert(pid, child);
            }
            None => {
                let _ = process::kill_group(pid);
            }
        }
    }

    /// `child`'s last probe failed; `task` will ask for the next.
    pub fn probe_waiting(&mut self, child: Pid, task: JoinHandle<()>) {
        match self.by_pid.get_mut(&child) {
            Some(io) => io.probe = Probe::Waiting(task),
            None => task.abort(),
        }
    }

    /// `child`'s retry wait is over: true if it still waits for a probe.
    pub fn retry_due(&mut self, child: Pid) -> bool {
        match self.by_pid.get_mut(&child) {
            Some(io) if matches!(io.probe, Probe::Waiting(_)) => {
                io.probe = Probe::Idle;
                true
            }
            _ => false,
        }
    }

    /// `child`'s probe is done for good (it passed, or will not run again).
    pub fn probe_done(&mut self, child: Pid) {
        if let Some(io) = self.by_pid.get_mut(&child) {
            io.probe = Probe::Idle;
        }
    }

    /// `child`'s start is over: its probe, if any, is no longer needed.
    pub fn settled(&mut self, child: Pid) {
        if let Some(io) = self.by_pid.get_mut(&child) {
            let probe = std::mem::take(&mut io.probe);
            if let Probe::Running(pid) = probe {
                self.probes.remove(&pid);
                let _ = process::kill_group(pid);
            } else if let Probe::Waiting(task) = probe {
                task.abort();
            }
        }
    }

    /// Routes a reaped pid, releasing what was held for it.
    pub fn reaped(&mut self, pid: Pid) -> Reaped {
        self.probe_reports.remove(&pid);
        if let Some(child) = self.probes.remove(&pid) {
            if let Some(io) = self.by_pid.get_mut(&child) {
                io.probe = Probe::Idle;
            }
            return Reaped::Probe { child };
        }
        match self.by_pid.remove(&pid) {
            Some(mut io) => {
                if let Probe::Running(probe) = io.probe {
                    self.probes.remove(&probe);
                }
                let exec_error = io.exec_report.as_mut().and_then(ExecReport::exec_error);
                drop(io);
                Reaped::Child { exec_error }
            }
            None => Reaped::Other,
        }
    }
}
