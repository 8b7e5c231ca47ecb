//! Signals to children, subreaping, and reaping every exit.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid as NixPid;

/// A process id, as the kernel gives it.
pub type Pid = u32;

/// How a reaped process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal of this number ended it.
    Signal(i32),
}

/// Orphaned grandchildren are re-parented to hotswap, which reaps them,
/// instead of to init.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Unblocks every signal in hotswap itself: a supervisor started with HUP or
/// TERM blocked (its parent's mask is inherited) would never hear them. Call
/// before the runtime starts a thread.
pub fn unblock_all_signals() -> io::Result<()> {
    nix::sys::signal::SigSet::empty().thread_set_mask().map_err(io::Error::from)
}

/// Sends `signal` to one process. A process already gone is not an error.
pub fn signal(pid: Pid, signal: i32) -> io::Result<()> {
    let sig = Signal::try_from(signal).map_err(io::Error::from)?;
    match kill(NixPid::from_raw(pid as i32), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// SIGKILL to a whole process group. An empty group is not an error.
pub fn kill_group(pgid: Pid) -> io::Result<()> {
    match killpg(NixPid::from_raw(pgid as i32), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reaps every process that has exited, children and adopted orphans alike.
///
/// For a child hotswap spawned (`is_child`), the rest of its process group
/// is killed *before* the child is reaped: while it is a zombie its pid
/// cannot be reused, so the group id still names only its own workers.
/// A child's process group never outlives the child.
pub fn reap_all(is_child: impl Fn(Pid) -> bool) -> Vec<(Pid, Exit)> {
    let mut reaped = Vec::new();
    loop {
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, peek) {
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => break, // StillAlive: nothing more has exited
            },
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children at all
        };
        if is_child(pid.as_raw() as Pid) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                reaped.push((pid.as_raw() as Pid, Exit::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                reaped.push((pid.as_raw() as Pid, Exit::Signal(sig as i32)))
            }
            Ok(_) | Err(_) => {}
        }
    }
    reaped
}
