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

/// The signals hotswap handles (DESIGN.md §2).
pub const HANDLED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// Signals whose default action would end hotswap and that it has no use
/// for (SIGPIPE is ignored by Rust's runtime already). The real-time
/// signals from `SIGRTMIN` on are ignored too.
const UNUSED: [Signal; 8] = [
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

/// Blocks exactly the handled signals, from hotswap's first instruction
/// until the runtime's handlers exist: a HUP sent the moment the pid file
/// or the control socket appears waits, and is then a reload, never a
/// death. Every other signal is unblocked: a mask inherited from hotswap's
/// parent would make it deaf.
pub fn block_handled_signals() -> io::Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in HANDLED {
        set.add(sig);
    }
    set.thread_set_mask().map_err(io::Error::from)
}

/// Unblocks everything: once the handlers are installed, pending signals
/// are delivered to them. Also for a client command, which handles none.
pub fn unblock_all_signals() -> io::Result<()> {
    nix::sys::signal::SigSet::empty().thread_set_mask().map_err(io::Error::from)
}

/// Ignores every signal hotswap neither handles nor forwards, so none of
/// them can end it by accident.
pub fn ignore_unused_signals() -> io::Result<()> {
    for sig in UNUSED {
        super::raw::ignore_signal(sig as i32)?;
    }
    for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        super::raw::ignore_signal(sig)?;
    }
    Ok(())
}

/// The process's umask (read by setting it and setting it back: call
/// while hotswap is single-threaded).
pub fn umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let mask = umask(Mode::empty());
    umask(mask);
    mask.bits()
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
/// `before_reap` sees each exited pid while it is still a zombie, before it
/// is reaped: its pid cannot be reused yet, so for a child hotswap spawned
/// its process group id still names only its own workers, and whatever the
/// child started can be killed with certainty (`tracking`).
pub fn reap_all(mut before_reap: impl FnMut(Pid)) -> Vec<(Pid, Exit)> {
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
        before_reap(pid.as_raw() as Pid);
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
