//! Every `unsafe` block in hotswap, and nothing else.
//!
//! Inventory:
//! 1. `ExecPlan`'s `Send`/`Sync`: its raw pointers point into its own buffers.
//! 2. `ExecPlan::spawn`: `clone(CLONE_VM)` on a stack of its own, without
//!    waiting for the child's exec: the child runs beside hotswap in its
//!    memory, on a `ChildStart` and a stack that its `ExecReport` holds
//!    until the child has exec'd or exited (end of file on the report
//!    pipe; a report dropped earlier leaks them rather than free them under
//!    the child). In the child, `child_main` and `exec_child` make system
//!    calls only through `direct` (inline `syscall`/`svc`, x86-64 and
//!    arm64): no libc function, so no `errno`, which the child would share
//!    with hotswap's main thread, no allocation, no lock; `direct::die`
//!    reports a failed exec from the child. `Gate` holds children before
//!    exec until a whole batch is spawned.
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
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// The child's cgroup directory and its `cgroup.procs`: the child makes
    /// the cgroup and moves itself there before exec, so nothing it starts
    /// is ever outside it (and hotswap spends no time on it meanwhile).
    cgroup: Option<(CString, CString)>,
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
            cgroup: None,
            identity: None,
        })
    }

    /// The child gets each `(hotswap's fd, its number)` of `map` at that
    /// number (the sockets at 3, 4, …).
    pub fn with_fds_at(mut self, map: Vec<(RawFd, RawFd)>) -> Self {
        self.fd_map = map;
        self
    }

    /// The child makes the cgroup `dir` (its parent must exist) and enters
    /// it before exec. Fails with `InvalidInput` for a path with a NUL byte.
    pub fn into_cgroup(mut self, dir: &Path) -> io::Result<Self> {
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        self.cgroup = Some((cstr(dir)?, cstr(&dir.join("cgroup.procs"))?));
        Ok(self)
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
    /// and stderr shared with hotswap, and returns at once with its pid: the
    /// child runs beside hotswap, in hotswap's memory (`clone(CLONE_VM)` on a
    /// stack of its own: nothing is copied, and hotswap's pages do not turn
    /// copy-on-write), and hotswap does not wait for its exec, so that 64
    /// instances are spawned in the time of one each. With a `gate`, the
    /// child waits before exec until the gate opens (`Gate` is dropped): a
    /// generation's children do not take the CPU from hotswap while it
    /// spawns the rest, and they do not queue on the kernel's cgroup
    /// migration lock ahead of its next fork.
    ///
    /// The child reports a failed exec on the returned `ExecReport` (its
    /// errno, then it exits 127 if the program was not found, else 126); end
    /// of file means exec succeeded. The memory the child runs on is held by
    /// that report until then.
    pub fn spawn(self, gate: Option<&Gate>) -> io::Result<Forked> {
        let cwd = match &self.cwd {
            Some(dir) => Some(
                CString::new(dir.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            ),
            None => None,
        };
        let devnull = dev_null()?;
        let (report, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut start = Box::new(ChildStart {
            plan: self,
            parent: std::process::id() as libc::pid_t,
            devnull: devnull.as_raw_fd(),
            report: report_write.as_raw_fd(),
            gate: gate.map(|g| (g.read.as_raw_fd(), g.write.as_raw_fd())),
            cwd,
        });
        let stack = ChildStack::new()?;
        let top = stack.top();
        // Every signal blocked across the clone: one aimed at the new child
        // before it has reset its dispositions would run hotswap's handler
        // in it (tokio's, which writes to hotswap's own signal pipe). The
        // child unblocks once its dispositions are default; hotswap at once.
        let all = nix::sys::signal::SigSet::all();
        let old_mask = all.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_SETMASK)?;
        let arg: *mut ChildStart = &mut *start;
        // SAFETY: the child runs `child_main` on `stack`, then `exec_child`,
        // which makes raw system calls only (`direct`: no libc function, so
        // no `errno`, no lock, no allocation) on the `ChildStart` and its
        // stack, and never returns (execve or exit_group). It shares
        // hotswap's memory (CLONE_VM) while hotswap runs on: what it uses is
        // on the heap, owned by the `ExecReport` returned below, which frees
        // it only once the child has exec'd or exited (its end of the report
        // pipe closed), and nothing else writes it meanwhile. Its fds and
        // signal dispositions are its own copies (no CLONE_FILES,
        // CLONE_SIGHAND); its signal mask is this thread's, all blocked.
        let pid = unsafe {
            libc::clone(
                child_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                arg.cast(),
            )
        };
        let forked = io::Error::last_os_error();
        old_mask.thread_set_mask()?;
        if pid < 0 {
            return Err(forked);
        }
        // The child makes its group too; whichever runs first, a signal to
        // the group right after spawn finds it. EACCES: it has exec'd already.
        let _ =
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(pid), nix::unistd::Pid::from_raw(pid));
        drop(report_write);
        let lent = Some(Lent { _start: start, _stack: stack });
        Ok(Forked { pid: pid as u32, exec_report: ExecReport { pipe: report, lent } })
    }

    /// The child's side of `spawn`: everything between clone and exec.
    ///
    /// # Safety
    ///
    /// Only in the child of `spawn`'s clone, once, on its own stack. It makes
    /// only raw system calls (`direct`), which touch no thread-local state
    /// (the child shares hotswap's main thread's), on memory the plan owns
    /// or its own stack, and never returns: no destructor runs, nothing is
    /// allocated or locked.
    unsafe fn exec_child(&mut self, start: ChildFds) -> ! {
        use direct::{call, die};
        let report = start.report;
        // SAFETY: per this function's contract: each call is a system call
        // on fds open in this process and memory the plan or this stack owns.
        unsafe {
            let _ = call(libc::SYS_setpgid, [0, 0, 0, 0]);
            if let Err(e) = call(libc::SYS_dup3, [start.devnull as usize, 0, 0, 0]) {
                die(report, Stage::Stdin, e);
            }
            if !start.cwd.is_null() {
                if let Err(e) = call(libc::SYS_chdir, [start.cwd as usize, 0, 0, 0]) {
                    die(report, Stage::Directory, e);
                }
            }
            // The gate: its write end closed here (this child must not hold
            // it open), then wait for end of file, once hotswap has spawned
            // the whole batch; a second at most, whatever holds it (the gate
            // only saves time). Every signal is blocked: no EINTR.
            if let Some((read, write)) = start.gate {
                let _ = call(libc::SYS_close, [write as usize, 0, 0, 0]);
                let mut gate = libc::pollfd { fd: read, events: libc::POLLIN, revents: 0 };
                let most = libc::timespec { tv_sec: GATE_WAIT_SECONDS, tv_nsec: 0 };
                // ppoll with no signal mask: its fifth argument (the mask's size) is unused.
                let wait =
                    [&mut gate as *mut libc::pollfd as usize, 1, &most as *const _ as usize, 0];
                let _ = call(libc::SYS_ppoll, wait);
                let _ = call(libc::SYS_close, [read as usize, 0, 0, 0]);
            }
            // Before it can start anything: into its cgroup ("0" is the writer itself).
            if let Some((dir, procs)) = &self.cgroup {
                let at = libc::AT_FDCWD as usize;
                let made = call(libc::SYS_mkdirat, [at, dir.as_ptr() as usize, 0o755, 0]);
                if let Err(e) = made.or_else(|e| if e == libc::EEXIST { Ok(0) } else { Err(e) }) {
                    die(report, Stage::Cgroup, e);
                }
                let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
                let fd = match call(libc::SYS_openat, [at, procs.as_ptr() as usize, flags, 0]) {
                    Ok(fd) => fd,
                    Err(e) => die(report, Stage::Cgroup, e),
                };
                if let Err(e) = call(libc::SYS_write, [fd, b"0".as_ptr() as usize, 1, 0]) {
                    die(report, Stage::Cgroup, e);
                }
                let _ = call(libc::SYS_close, [fd, 0, 0, 0]);
            }
            // Then the privileges go, groups before the user (after setuid
            // there is no right to change them). The system calls change this
            // thread alone, which is all the child has (glibc's wrappers
            // would signal hotswap's threads to change theirs).
            if let Some(id) = &self.identity {
                let groups = [id.groups.len(), id.groups.as_ptr() as usize, 0, 0];
                let gid = id.gid as usize;
                let uid = id.uid as usize;
                let dropped = call(libc::SYS_setgroups, groups)
                    .and_then(|_| call(libc::SYS_setresgid, [gid, gid, gid, 0]))
                    .and_then(|_| call(libc::SYS_setresuid, [uid, uid, uid, 0]));
                if let Err(e) = dropped {
                    die(report, Stage::Credentials, e);
                }
            }
            // dup3 leaves the new number open across exec; one already in
            // place only needs its close-on-exec flag cleared.
            for &(from, to) in &self.fd_map {
                let kept = if from == to {
                    call(libc::SYS_fcntl, [to as usize, libc::F_SETFD as usize, 0, 0])
                } else {
                    call(libc::SYS_dup3, [from as usize, to as usize, 0, 0])
                };
                if let Err(e) = kept {
                    die(report, Stage::Fds, e);
                }
            }
            for &fd in &self.keep_fds {
                if let Err(e) = call(libc::SYS_fcntl, [fd as usize, libc::F_SETFD as usize, 0, 0]) {
                    die(report, Stage::Fds, e);
                }
            }
            // Dispositions first, then the mask (all blocked since before
            // the clone): a signal sent to the child meanwhile meets the
            // default action, never hotswap's handler. Every disposition
            // goes back to default (hotswap handles some and ignores others;
            // handlers revert at exec by themselves, ignored ones do not),
            // except SIGPIPE: ignored, as systemd starts services, so a child
            // whose log reader went away gets EPIPE, not death. 32 and 33
            // are glibc's own (thread cancellation, set*id), which hotswap
            // never changes: they stay as hotswap was given them.
            for sig in 1..=LAST_SIGNAL {
                if ![libc::SIGKILL, libc::SIGSTOP, 32, 33].contains(&sig) {
                    let _ = direct::set_disposition(sig, libc::SIG_DFL);
                }
            }
            let _ = direct::set_disposition(libc::SIGPIPE, libc::SIG_IGN);
            let empty: u64 = 0;
            let unblock = [libc::SIG_SETMASK as usize, &empty as *const u64 as usize, 0, 8];
            let _ = call(libc::SYS_rt_sigprocmask, unblock);
            if self.dies_with_parent {
                let deathsig = [libc::PR_SET_PDEATHSIG as usize, libc::SIGKILL as usize, 0, 0];
                let _ = call(libc::SYS_prctl, deathsig);
                // hotswap died before the prctl: nobody would kill us later.
                if call(libc::SYS_getppid, [0; 4]) != Ok(start.parent as usize) {
                    direct::exit(1);
                }
            }
            if self.set_listen_pid {
                let digits_at = LISTEN_PID.len();
                let pid = call(libc::SYS_getpid, [0; 4]).unwrap_or(0) as u32;
                let len = write_decimal(&mut self.listen_pid[digits_at..], pid);
                self.listen_pid[digits_at + len] = 0;
                let slot = self.envp.len() - 2;
                self.envp[slot] = self.listen_pid.as_ptr().cast();
            }
            let exec = [
                self.path.as_ptr() as usize,
                self.argv_ptrs.as_ptr() as usize,
                self.envp.as_ptr() as usize,
                0,
            ];
            let errno = call(libc::SYS_execve, exec).err().unwrap_or(libc::ENOEXEC);
            die(report, Stage::Exec, errno)
        }
    }
}

/// The longest a child waits at its spawn gate, in seconds.
const GATE_WAIT_SECONDS: libc::time_t = 1;

/// /dev/null, opened once, for every child's stdin.
fn dev_null() -> io::Result<&'static std::fs::File> {
    static DEV_NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(file) = DEV_NULL.get() {
        return Ok(file);
    }
    let file = std::fs::File::open("/dev/null")?;
    Ok(DEV_NULL.get_or_init(|| file))
}

/// The child's stack size: `exec_child` needs a few hundred bytes; this is
/// what glibc's `posix_spawn` gives it, doubled. Only the pages it touches
/// take memory.
const CHILD_STACK: usize = 64 * 1024;

/// A spawned child's stack: its own mapping, with an inaccessible page
/// below it, so that an overflow kills the child instead of writing over
/// hotswap's memory.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        let guard = 4096;
        let len = CHILD_STACK + guard;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new anonymous mapping at an address the kernel picks:
        // no memory that exists is touched.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made, which nothing uses.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Where the stack starts (it grows down), 16-byte aligned.
    fn top(&self) -> usize {
        (self.base as usize + self.len) & !15
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once: its `Lent` is
        // dropped only after the child that ran on it exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What the cloned child needs, passed to `child_main` by pointer.
struct ChildStart {
    plan: ExecPlan,
    parent: libc::pid_t,
    devnull: RawFd,
    report: RawFd,
    /// The gate's read and write ends, as numbered in the child's copy of the fd table.
    gate: Option<(RawFd, RawFd)>,
    cwd: Option<CString>,
}

/// What `exec_child` needs besides the plan, copied out of `ChildStart`.
#[derive(Clone, Copy)]
struct ChildFds {
    parent: libc::pid_t,
    devnull: RawFd,
    report: RawFd,
    gate: Option<(RawFd, RawFd)>,
    /// The working directory, NUL-terminated, or null.
    cwd: *const c_char,
}

/// The cloned child's entry point: runs `exec_child`, never returns.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the boxed `ChildStart` that `spawn` passed to clone,
    // kept alive by the child's `ExecReport` until this child has exec'd or
    // exited, and touched by nothing else meanwhile. We are the freshly
    // cloned child, as `exec_child` requires.
    unsafe {
        let start = &mut *arg.cast::<ChildStart>();
        let fds = ChildFds {
            parent: start.parent,
            devnull: start.devnull,
            report: start.report,
            gate: start.gate,
            cwd: start.cwd.as_ref().map_or(std::ptr::null(), |dir| dir.as_ptr()),
        };
        start.plan.exec_child(fds)
    }
}

/// Children spawned while a gate is closed wait before exec until it opens
/// (the `Gate` is dropped): a pipe whose write end only hotswap holds
/// (each child closes its copy), so its read end gives end of file then.
pub struct Gate {
    read: OwnedFd,
    write: OwnedFd,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> io::Result<Gate> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Gate { read, write })
    }
}

/// What a spawned child was doing when it failed, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
enum Stage {
    Exec = 0,
    Stdin = 1,
    Directory = 2,
    Cgroup = 3,
    Credentials = 4,
    Fds = 5,
}

impl Stage {
    fn from_report(n: i32) -> Option<Stage> {
        [Stage::Exec, Stage::Stdin, Stage::Directory, Stage::Cgroup, Stage::Credentials, Stage::Fds]
            .into_iter()
            .find(|s| *s as i32 == n)
    }

    /// What failed, for a message; None for the exec itself.
    fn doing(self) -> Option<&'static str> {
        match self {
            Stage::Exec => None,
            Stage::Stdin => Some("stdin from /dev/null"),
            Stage::Directory => Some("its working directory"),
            Stage::Cgroup => Some("entering its cgroup"),
            Stage::Credentials => Some("taking its user and groups"),
            Stage::Fds => Some("passing its fds"),
        }
    }
}

/// The memory a spawned child runs on until its exec: its `ChildStart`
/// (the plan) and its stack.
struct Lent {
    _start: Box<ChildStart>,
    _stack: ChildStack,
}

/// A child just spawned by `ExecPlan::spawn`.
#[derive(Debug)]
pub struct Forked {
    /// Its pid, also its process group id.
    pub pid: u32,
    pub exec_report: ExecReport,
}

/// The read end of the pipe on which a spawned child reports a failed exec
/// (4 bytes of errno; end of file once exec succeeded), and the memory it
/// runs on until then.
pub struct ExecReport {
    pipe: OwnedFd,
    lent: Option<Lent>,
}

impl std::fmt::Debug for ExecReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecReport").field("pipe", &self.pipe).finish_non_exhaustive()
    }
}

impl ExecReport {
    /// Whether it still holds memory the child may run on.
    pub fn lends(&self) -> bool {
        self.lent.is_some()
    }

    /// Whether the child is past its exec, or gone: its end of the pipe is
    /// closed (at exec, close-on-exec; or at exit). Frees the memory it ran
    /// on once so.
    pub fn settled(&mut self) -> bool {
        self.settle() & libc::POLLHUP != 0
    }

    /// Whether the child has executed its program: settled, and no errno
    /// came (a failed exec writes one first).
    pub fn exec_done(&mut self) -> bool {
        let events = self.settle();
        events & libc::POLLHUP != 0 && events & libc::POLLIN == 0
    }

    /// The pipe's events now; frees the lent memory once it hangs up.
    fn settle(&mut self) -> i16 {
        let events = poll_now(self.pipe.as_fd(), libc::POLLIN).unwrap_or(0);
        if events & libc::POLLHUP != 0 {
            self.lent = None;
        }
        events
    }

    /// Why the child's exec failed, once it has exited (the step it failed
    /// at, when not the exec itself); None if it succeeded.
    pub fn exec_error(&mut self) -> Option<io::Error> {
        self.settled();
        let mut message = [0u8; 8];
        if nix::unistd::read(&self.pipe, &mut message).ok()? != 8 {
            return None;
        }
        let word = |at: usize| i32::from_ne_bytes(message[at..at + 4].try_into().expect("4 bytes"));
        let errno = io::Error::from_raw_os_error(word(0));
        match Stage::from_report(word(4)).and_then(Stage::doing) {
            Some(doing) => Some(io::Error::new(errno.kind(), format!("{doing}: {errno}"))),
            None => Some(errno),
        }
    }
}

impl Drop for ExecReport {
    /// A child that may still run on the lent memory keeps it: it is leaked
    /// rather than freed under the child (a report dropped before its child
    /// settled; never on the usual path, which frees it at settling).
    fn drop(&mut self) {
        if self.lent.is_some() && !self.settled() {
            std::mem::forget(self.lent.take());
        }
    }
}

/// System calls made directly, for the child that runs beside hotswap in its
/// memory: glibc's wrappers set `errno`, a thread-local variable that the
/// child shares with hotswap's main thread (it runs on that thread's
/// thread-local storage, as it has no other), where hotswap may be reading
/// its own. These return the kernel's error number instead.
mod direct {
    /// System call `n` with up to four arguments: its return value, or the
    /// error number it returned.
    ///
    /// # Safety
    ///
    /// The arguments are valid for system call `n` (pointers to memory that
    /// lives through the call, open fds).
    #[inline(always)]
    pub unsafe fn call(n: libc::c_long, args: [usize; 4]) -> Result<usize, i32> {
        let ret: isize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the `syscall` instruction with the kernel's x86-64 calling
        // convention (number in rax, arguments in rdi, rsi, rdx, r10; rcx and
        // r11 clobbered); memory the arguments point to is the caller's
        // promise. No stack is used, flags and other registers are kept.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `svc 0` with the kernel's arm64 calling convention (number
        // in x8, arguments and result in x0..x3); memory the arguments point
        // to is the caller's promise.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") args[0] as isize => ret,
                in("x1") args[1],
                in("x2") args[2],
                in("x3") args[3],
                options(nostack),
            );
        }
        // The kernel returns -4095..=-1 for an error number.
        if (-4095..0).contains(&ret) { Err(-ret as i32) } else { Ok(ret as usize) }
    }

    /// `struct sigaction` as `rt_sigaction` reads it on x86-64 and arm64
    /// (handler, flags, restorer, then a 64-bit mask), not glibc's.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }

    /// Sets `sig`'s disposition to `SIG_DFL` or `SIG_IGN`.
    ///
    /// # Safety
    ///
    /// Only for those two: no handler code is named.
    pub unsafe fn set_disposition(sig: i32, disposition: libc::sighandler_t) -> Result<usize, i32> {
        let action = KernelSigaction { handler: disposition, flags: 0, restorer: 0, mask: 0 };
        let args = [sig as usize, &action as *const KernelSigaction as usize, 0, 8];
        // SAFETY: the action lives on this stack through the call; no old action is read back.
        unsafe { call(libc::SYS_rt_sigaction, args) }
    }

    /// In the child: reports `errno` and the `stage` that failed on
    /// `report`, and exits 127 if exec found no program, else 126.
    ///
    /// # Safety
    ///
    /// Only in a spawned child, which ends here.
    pub unsafe fn die(report: i32, stage: super::Stage, errno: i32) -> ! {
        let message = [errno, stage as i32];
        let code =
            if matches!(stage, super::Stage::Exec) && errno == libc::ENOENT { 127 } else { 126 };
        // SAFETY: writes 8 bytes from this stack to an open fd.
        unsafe {
            let _ = call(libc::SYS_write, [report as usize, message.as_ptr() as usize, 8, 0]);
            exit(code)
        }
    }

    /// Ends the child with `code`, running nothing else (no atexit, no flush).
    ///
    /// # Safety
    ///
    /// Only in a spawned child.
    pub unsafe fn exit(code: i32) -> ! {
        loop {
            // SAFETY: exit_group takes no memory and does not return.
            let _ = unsafe { call(libc::SYS_exit_group, [code as usize, 0, 0, 0]) };
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("hotswap's spawn makes its system calls directly on x86-64 and arm64 only");

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
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: F_SETFD only sets the close-on-exec flag of this open fd.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(io::Error::last_os_error());
        }
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
