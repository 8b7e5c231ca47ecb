//! Every `unsafe` block in hotswap, and nothing else.
//!
//! Inventory:
//! 1. `ExecPlan`'s `Send`/`Sync`: its raw pointers point into its own buffers.
//! 2. `ExecPlan::spawn`: `clone(CLONE_VM | CLONE_VFORK)` (posix_spawn's way:
//!    the child borrows hotswap's memory, hotswap waits for its exec),
//!    `child_main` and `exec_child` in the child, which calls
//!    only async-signal-safe functions (`setpgid`, `dup2`, `chdir`, `write`,
//!    `fcntl`, `signal`, `sigemptyset`, `pthread_sigmask`, `prctl`,
//!    `getppid`, `getpid`, `execve`, `_exit`, and the `setgroups`,
//!    `setresgid`, `setresuid` system calls): no allocation, no formatting,
//!    no logging, no locks; `fail` reports a failed exec from the child.
//! 3. `adopt_fd`: takes ownership of an fd nothing else owns yet (systemd's
//!    `LISTEN_FDS`, one received as `SCM_RIGHTS`, one `accept4` returned,
//!    one a re-exec of hotswap left open for it) and makes it close-on-exec.
//! 4. `pin_fd`: `dup3` onto a chosen fd number.
//! 5. `cloexec_from`: `close_range(CLOSE_RANGE_CLOEXEC)`, or `fcntl` per fd.
//! 6. `ignore_signal`: `signal(sig, SIG_IGN)`.
//! 7. `poll_now`: `poll()` on one fd with no wait, for the event bits nix
//!    does not name (`POLLRDHUP`).
//! 8. `replace_fd`: `dup3` of a new file onto an fd number already owned.
//! 9. `set_inherited`: `fcntl(F_SETFD)` on an fd number a tokio object owns,
//!    for a re-exec of hotswap.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use libc::c_char;

/// The highest signal number (`SIGRTMAX` on Linux, every architecture).
const LAST_SIGNAL: i32 = 64;

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// Everything a child needs, prepared before fork so that nothing is
/// allocated after it.
pub struct ExecPlan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _env: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the digits and a NUL, filled in by the child.
    listen_pid: [u8; 32],
    /// The last slot before the terminating null is the `LISTEN_PID=` entry.
    envp: Vec<*const c_char>,
    /// Fds the child keeps: their close-on-exec flag is cleared after fork.
    keep_fds: Vec<RawFd>,
    /// Fds the child gets at other numbers: (hotswap's, the child's). The
    /// child's numbers (3, 4, …) hold nothing else the child needs: in
    /// hotswap they are the sockets given at start, pinned there.
    fd_map: Vec<(RawFd, RawFd)>,
    cwd: Option<PathBuf>,
    /// Fill in `LISTEN_PID=` (children); helpers such as probes get none.
    set_listen_pid: bool,
    /// The child gets SIGKILL when hotswap dies (`PR_SET_PDEATHSIG`).
    dies_with_parent: bool,
    /// A cgroup's `cgroup.procs`, open for writing: the child moves itself
    /// there before exec, so nothing it starts is ever outside it.
    cgroup_procs: Option<RawFd>,
    /// `--user`/`--group`: who the child becomes after entering its cgroup.
    identity: Option<Identity>,
}

/// A user and groups to run a child as (`--user`, `--group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// The supplementary groups, replacing hotswap's own (`setgroups`).
    pub groups: Vec<libc::gid_t>,
}

impl ExecPlan {
    /// `path` is the resolved program, `env` everything but `LISTEN_PID`
    /// (added in the child when `set_listen_pid`). Fails with `InvalidInput`
    /// when a string holds a NUL byte.
    pub fn new(
        path: &Path,
        argv: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        keep_fds: Vec<RawFd>,
        cwd: Option<PathBuf>,
    ) -> io::Result<Self> {
        let cstr = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let path = cstr(path.as_os_str().to_owned().into_vec())?;
        let argv = argv.into_iter().map(|a| cstr(a.into_vec())).collect::<io::Result<Vec<_>>>()?;
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend(v.into_vec());
                cstr(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null()); // the LISTEN_PID slot, set in the child
        envp.push(std::ptr::null());
        let mut listen_pid = [0u8; 32];
        listen_pid[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        Ok(ExecPlan {
            path,
            _argv: argv,
            argv_ptrs,
            _env: env,
            listen_pid,
            envp,
            keep_fds,
            fd_map: Vec::new(),
            cwd,
            set_listen_pid: true,
            dies_with_parent: false,
            cgroup_procs: None,
            identity: None,
        })
    }

    /// The child gets each `(hotswap's fd, its number)` of `map` at that
    /// number (the sockets at 3, 4, …).
    pub fn with_fds_at(mut self, map: Vec<(RawFd, RawFd)>) -> Self {
        self.fd_map = map;
        self
    }

    /// The child enters the cgroup whose `cgroup.procs` is `fd` before exec.
    /// `fd` must stay open until `spawn` returns.
    pub fn into_cgroup(mut self, fd: RawFd) -> Self {
        self.cgroup_procs = Some(fd);
        self
    }

    /// The child drops to `identity` before exec: its groups, then its
    /// group, then its user, so it keeps none of hotswap's.
    pub fn run_as(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity;
        self
    }

    /// A helper process rather than a child: no `LISTEN_PID`, and SIGKILL
    /// when hotswap dies, so it never outlives it (probes).
    pub fn helper(mut self) -> Self {
        self.set_listen_pid = false;
        self.dies_with_parent = true;
        self
    }

    /// Starts a child in its own process group, stdin from /dev/null, stdout
    /// and stderr shared with hotswap, the way `posix_spawn` does: `clone`
    /// with `CLONE_VM | CLONE_VFORK`, so the child borrows hotswap's memory
    /// (nothing is copied, and hotswap's pages do not turn copy-on-write,
    /// which made 64 forks in a row cost ~2 ms each) and hotswap resumes
    /// once the child has called `execve`. The child reports a failed exec
    /// on the pipe whose read end comes back (4 bytes of errno, then it
    /// exits 127 if the program was not found, else 126); end of file means
    /// exec succeeded.
    pub fn spawn(mut self) -> io::Result<Forked> {
        let cwd = match &self.cwd {
            Some(dir) => Some(
                CString::new(dir.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            ),
            None => None,
        };
        let devnull = std::fs::File::open("/dev/null")?;
        let (report, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let parent = std::process::id() as libc::pid_t;
        // Every signal blocked across the fork: one aimed at the new child
        // before it has reset its dispositions would run hotswap's handler
        // in it (tokio's, which writes to hotswap's own signal pipe). The
        // child unblocks once its dispositions are default; the parent at once.
        let all = nix::sys::signal::SigSet::all();
        let old_mask = all.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_SETMASK)?;
        let mut start = ChildStart {
            plan: &mut self,
            parent,
            devnull: devnull.as_raw_fd(),
            report: report_write.as_raw_fd(),
            cwd,
        };
        // The child's own stack, in hotswap's memory; it grows down from the end.
        let mut stack = vec![0u8; CHILD_STACK];
        let top = stack.as_mut_ptr().wrapping_add(CHILD_STACK) as usize & !15;
        // SAFETY: the child runs only `child_main` on its own stack, then
        // `exec_child`, which makes async-signal-safe calls on memory
        // prepared before the clone and never returns (execve or _exit).
        // It shares hotswap's memory (CLONE_VM) but hotswap's thread is
        // suspended until the child has exec'd or exited (CLONE_VFORK), so
        // `start` and `stack` outlive its use of them; a lock another thread
        // holds (`--watch`'s watcher; hotswap runs tokio's current-thread
        // runtime) is never taken by the child. Without CLONE_FILES,
        // CLONE_FS or CLONE_SIGHAND, its fds, working directory and signal
        // dispositions are its own copies.
        let pid = unsafe {
            libc::clone(
                child_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut start as *mut ChildStart<'_>).cast(),
            )
        };
        let forked = io::Error::last_os_error();
        drop(stack);
        old_mask.thread_set_mask()?;
        if pid < 0 {
            return Err(forked);
        }
        // The child makes its group too; whichever runs first, a signal to
        // the group right after spawn finds it. EACCES: it has exec'd already.
        let _ =
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(pid), nix::unistd::Pid::from_raw(pid));
        drop(report_write);
        Ok(Forked { pid: pid as u32, exec_report: report })
    }

    /// The child's side of `spawn`: everything between fork and exec.
    ///
    /// # Safety
    ///
    /// Only in the child of `fork`, once. It calls only async-signal-safe
    /// functions (`setpgid`, `dup2`, `chdir`, `write`, `fcntl`, `signal`,
    /// `sigemptyset`, `pthread_sigmask`, `prctl`, `getppid`, `getpid`,
    /// `execve`, `_exit`, and the raw `setgroups`, `setresgid`, `setresuid`
    /// system calls) on memory the plan owns or its own stack, and never
    /// returns: no destructor runs, nothing is allocated or locked.
    unsafe fn exec_child(
        &mut self,
        parent: libc::pid_t,
        devnull: RawFd,
        report: RawFd,
        cwd: Option<&std::ffi::CStr>,
    ) -> ! {
        // SAFETY: per this function's contract; each call below is
        // async-signal-safe and touches only the plan, the stack and fds
        // that are open in this process.
        unsafe {
            libc::setpgid(0, 0);
            if libc::dup2(devnull, 0) == -1 {
                fail(report, 126);
            }
            if let Some(dir) = &cwd {
                if libc::chdir(dir.as_ptr()) == -1 {
                    fail(report, 126);
                }
            }
            // Before it can start anything: into its cgroup ("0" is the writer itself).
            if let Some(fd) = self.cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(report, 126);
                }
            }
            // Then the privileges go, groups before the user (after setuid
            // there is no right to change them). Raw system calls: glibc's
            // wrappers may signal other threads to change theirs too, a
            // machinery a forked child must not enter; it has one thread.
            if let Some(id) = &self.identity {
                let groups = libc::syscall(
                    libc::SYS_setgroups,
                    id.groups.len() as libc::size_t,
                    id.groups.as_ptr(),
                );
                let gid = libc::syscall(libc::SYS_setresgid, id.gid, id.gid, id.gid);
                let uid = libc::syscall(libc::SYS_setresuid, id.uid, id.uid, id.uid);
                if groups == -1 || gid == -1 || uid == -1 {
                    fail(report, 126);
                }
            }
            // dup2 leaves the new number open across exec; one already in
            // place only needs its close-on-exec flag cleared.
            for &(from, to) in &self.fd_map {
                let kept = if from == to {
                    libc::fcntl(to, libc::F_SETFD, 0)
                } else {
                    libc::dup2(from, to)
                };
                if kept == -1 {
                    fail(report, 126);
                }
            }
            for &fd in &self.keep_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    fail(report, 126);
                }
            }
            // Dispositions first, then the mask (all blocked since before
            // the fork): a signal sent to the child meanwhile meets the
            // default action, never hotswap's handler. Every
            // disposition goes back to default (hotswap handles some and
            // ignores others; handlers revert at exec by themselves, ignored
            // ones do not), except SIGPIPE: ignored, as systemd starts
            // services, so a child whose log reader went away gets EPIPE,
            // not death. glibc refuses its own two (32, 33): harmless.
            for sig in 1..=LAST_SIGNAL {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            if self.dies_with_parent {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                // hotswap died before the prctl: nobody would kill us later.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            if self.set_listen_pid {
                let digits_at = LISTEN_PID.len();
                let pid = libc::getpid() as u32;
                let len = write_decimal(&mut self.listen_pid[digits_at..], pid);
                self.listen_pid[digits_at + len] = 0;
                let slot = self.envp.len() - 2;
                self.envp[slot] = self.listen_pid.as_ptr().cast();
            }
            libc::execve(self.path.as_ptr(), self.argv_ptrs.as_ptr(), self.envp.as_ptr());
            let not_found = *libc::__errno_location() == libc::ENOENT;
            fail(report, if not_found { 127 } else { 126 })
        }
    }
}

/// The child's stack size: `exec_child` needs a few hundred bytes; this is
/// what glibc's `posix_spawn` gives it, doubled.
const CHILD_STACK: usize = 64 * 1024;

/// What the cloned child needs, passed to `child_main` by pointer.
struct ChildStart<'a> {
    plan: &'a mut ExecPlan,
    parent: libc::pid_t,
    devnull: RawFd,
    report: RawFd,
    cwd: Option<CString>,
}

/// The cloned child's entry point: runs `exec_child`, never returns.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildStart` that `spawn` passed to clone, alive
    // while hotswap waits for this child to exec (CLONE_VFORK); nothing else
    // touches it meanwhile. We are the freshly cloned child, as `exec_child`
    // requires; everything stays owned by hotswap, which frees it.
    unsafe {
        let start = &mut *arg.cast::<ChildStart<'_>>();
        let cwd = start.cwd.as_deref();
        start.plan.exec_child(start.parent, start.devnull, start.report, cwd)
    }
}

/// A child just forked by `ExecPlan::spawn`.
#[derive(Debug)]
pub struct Forked {
    /// Its pid, also its process group id.
    pub pid: u32,
    /// Read end of the pipe on which it reports a failed exec: 4 bytes of
    /// errno, or end of file once exec succeeded.
    pub exec_report: OwnedFd,
}

/// In the child: reports errno on `report` and exits with `code`.
///
/// # Safety
///
/// Only in a forked child: `write` and `_exit` are async-signal-safe.
unsafe fn fail(report: RawFd, code: i32) -> ! {
    // SAFETY: reads this thread's errno and writes 4 bytes from the stack
    // to an open fd; _exit ends the child without running anything else.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(report, (&errno as *const i32).cast(), 4);
        libc::_exit(code)
    }
}

/// What a child reported on its `exec_report` pipe, read once it has
/// exited: the errno of a failed exec, or None if exec succeeded.
pub fn exec_error(report: &OwnedFd) -> Option<io::Error> {
    let mut errno = [0u8; 4];
    match nix::unistd::read(report, &mut errno) {
        Ok(4) => Some(io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        _ => None,
    }
}

/// Ignores `sig` in hotswap (never in a child: the spawn resets it).
pub fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code, so no handler can run at
    // the wrong time; the call only changes the disposition.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The events `fd` has now among `events` (`poll()` with no wait), as raw
/// bits: nix's `PollFlags` drops `POLLRDHUP`, which is what a unix listener
/// shut down for reading shows.
pub fn poll_now(fd: std::os::fd::BorrowedFd<'_>, events: i16) -> io::Result<i16> {
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one pollfd on the stack, valid for the call; the fd is
    // borrowed, so it stays open while poll reads it; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pollfd.revents)
}

/// Writes `n` in decimal at the start of `buf`; returns the length. No allocation.
fn write_decimal(buf: &mut [u8], mut n: u32) -> usize {
    let mut tmp = [0u8; 10];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = tmp[len - 1 - i];
    }
    len
}

/// Takes ownership of `fd`, an fd the kernel handed hotswap that no Rust
/// object owns yet: one systemd passed, one received as `SCM_RIGHTS`, one
/// `accept4` returned, one a re-exec of hotswap left open. It becomes
/// close-on-exec, as every fd hotswap owns: a child gets only the fds its
/// spawn names, never one a previous hotswap handed over. Fails with
/// `EBADF` if it is not open.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd table; it fails with EBADF for a closed fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD only sets the close-on-exec flag of this open fd.
    if flags & libc::FD_CLOEXEC == 0
        && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open, and nothing else in this process owns it: by
    // the LISTEN_FDS protocol (adopted once, at start, before any other code
    // runs), or because the kernel installed it just now for the one caller
    // (SCM_RIGHTS, accept4), who passes it here at once; or by the resume
    // protocol (`sys::reexec`), whose fds are each named once in the state.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves `fd` to the number `target` (close-on-exec), closing whatever stray
/// fd was there and the fd's old number.
pub fn pin_fd(fd: &mut OwnedFd, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        return Ok(());
    }
    // SAFETY: both numbers are valid fd numbers; dup3 atomically replaces
    // `target`, which at start holds nothing or a stray inherited fd that no
    // Rust object owns.
    if unsafe { libc::dup3(fd.as_raw_fd(), target, libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup3 succeeded, so `target` is open and owned by nothing else;
    // the old OwnedFd is dropped (closed) by the assignment.
    *fd = unsafe { OwnedFd::from_raw_fd(target) };
    Ok(())
}

/// Makes the fd number `fd` owns refer to `new`'s file instead (close-on-
/// exec), atomically: the old file is released by this process (children
/// holding it keep it), and `new`'s own number is closed.
pub fn replace_fd(fd: &OwnedFd, new: OwnedFd) -> io::Result<()> {
    // SAFETY: both fds are open and owned; dup3 atomically closes the old
    // file at `fd`'s number and puts `new`'s file there, so `fd` keeps
    // owning exactly one open fd; `new` is then dropped (its number closed).
    if unsafe { libc::dup3(new.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears close-on-exec on the open fd `fd`, whoever owns it: a
/// re-exec of hotswap keeps the fds its successor resumes. Fails with
/// `EBADF` if it is not open.
pub fn set_inherited(fd: RawFd, inherit: bool) -> io::Result<()> {
    let flags = if inherit { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: F_SETFD only sets the fd's close-on-exec flag; it touches no
    // memory and cannot close or replace the file, so the Rust object that
    // owns the fd (a tokio listener, a channel reader) stays valid.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every fd from `first` up close-on-exec, so fds hotswap inherited
/// (shells and CI runners leak some) never reach a child.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fcntl per open fd.
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if fd >= first {
            // SAFETY: F_SETFD only sets a flag; EBADF (the directory's own fd, closed by now) is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_without_allocation() {
        let mut buf = [0u8; 10];
        for (n, s) in [(0, "0"), (7, "7"), (4194304, "4194304"), (u32::MAX, "4294967295")] {
            let len = write_decimal(&mut buf, n);
            assert_eq!(&buf[..len], s.as_bytes());
        }
    }
}
