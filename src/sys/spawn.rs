//! Starting processes: resolve the program, build its environment and fd
//! plan, fork and exec. Children and readiness probes alike go through
//! `raw::ExecPlan::spawn`, the one spawn routine (the post-fork part).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};
use thiserror::Error;

use super::identity::RunAs;
use super::preload;
use super::raw::ExecPlan;
pub use super::raw::{ExecReport, Forked, Gate};
use crate::protocol::activation::{self, ChildEnv, FIRST_FD, PassedSocket};

/// Why a program could not be started, with the shell's exit status for it.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("not executable: {0}")]
    NotExecutable(String),
    #[error("cannot execute {0}: {1}")]
    Exec(String, io::Error),
    #[error("working directory {0}: {1}")]
    Directory(String, io::Error),
    #[error("--env-file {0}: {1}")]
    EnvFile(String, String),
}

impl SpawnError {
    /// 127 not found, 126 found but not executable: as the shell reports it.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound(_) => 127,
            SpawnError::Exec(_, e) if e.kind() == io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// The program the way `execvp` would find it, checked for execute permission.
pub fn resolve_program(program: &OsStr, cwd: Option<&Path>) -> Result<PathBuf, SpawnError> {
    let shown = || program.to_string_lossy().into_owned();
    let executable = |p: &Path| access(p, AccessFlags::X_OK).is_ok() && p.is_file();
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        let full = match cwd {
            Some(dir) if path.is_relative() => dir.join(&path),
            _ => path.clone(),
        };
        if !full.exists() {
            return Err(SpawnError::NotFound(shown()));
        }
        return if executable(&full) { Ok(path) } else { Err(SpawnError::NotExecutable(shown())) };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut found_not_executable = false;
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
        found_not_executable |= candidate.is_file();
    }
    if found_not_executable {
        Err(SpawnError::NotExecutable(shown()))
    } else {
        Err(SpawnError::NotFound(shown()))
    }
}

/// What one generation runs (DESIGN.md §1, "releases"): resolved when it
/// starts, so that a `current` symlink swapped to a new release, then a
/// reload, runs the new release; and kept, so that `hotswap rollback` can
/// run it again whatever the symlink says by then.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    /// The working directory, symlinks resolved (`--chdir`, else `$PWD`).
    pub dir: Option<PathBuf>,
    /// The program, as an absolute path with symlinks resolved.
    pub program: PathBuf,
    /// What `--env-file` said then.
    pub env: Vec<(String, String)>,
}

/// What every generation's children share.
pub struct Spawner {
    pub command: Vec<OsString>,
    /// `--chdir`, else `$PWD` as the user sees it: resolved anew for every
    /// generation (`resolve_release`), so a swapped `current` symlink is followed.
    pub cwd: Option<PathBuf>,
    /// `--env-file`: read anew for every generation.
    pub env_file: Option<PathBuf>,
    /// The bind shim every child gets, unless `--intercept-bind off`.
    pub intercept: Option<Intercept>,
    /// `--watchdog`, in microseconds, for the children's `WATCHDOG_USEC`.
    pub watchdog_usec: Option<u64>,
    /// `--user`/`--group`: who the children run as.
    pub run_as: Option<RunAs>,
}

/// What a child needs to have its binds claimed (DESIGN.md §7).
#[derive(Clone, Debug)]
pub struct Intercept {
    /// The preload library's file, appended to the child's `LD_PRELOAD`.
    pub library: PathBuf,
    /// The claim socket, `@name` (`HOTSWAP_CLAIM`).
    pub claim: String,
}

impl Spawner {
    /// What a generation starting now runs: the working directory and the
    /// program with symlinks resolved, the env file read.
    ///
    /// # Errors
    /// The directory or the program is gone, or the env file is unreadable
    /// or has a malformed line (named): that generation fails to start.
    pub fn resolve_release(&self) -> Result<Release, SpawnError> {
        let dir = match &self.cwd {
            Some(dir) => Some(
                std::fs::canonicalize(dir)
                    .map_err(|e| SpawnError::Directory(dir.display().to_string(), e))?,
            ),
            None => None,
        };
        let found = resolve_program(&self.command[0], dir.as_deref())?;
        let absolute = match &dir {
            Some(dir) if found.is_relative() => dir.join(&found),
            _ => found,
        };
        let program = std::fs::canonicalize(&absolute)
            .map_err(|e| SpawnError::Exec(self.command[0].to_string_lossy().into_owned(), e))?;
        let env = match &self.env_file {
            Some(path) => read_env_file(path)?,
            None => Vec::new(),
        };
        Ok(Release { dir, program, env })
    }

    /// Starts one child of `release` with `sockets` (hotswap's fd, and how
    /// to name it) at fds 3, 4, … in order, `extra_env` and the `extra_fds`
    /// it names, in the cgroup `cgroup` (which the child makes). Returns
    /// once it is forked, with its pid (also its process group id) and its
    /// `ExecReport`, without waiting for its exec; with a `gate`, the child
    /// execs only once the gate opens.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        &self,
        release: &Release,
        generation: u64,
        instance: u32,
        sockets: &[(RawFd, PassedSocket)],
        extra_env: Vec<(String, String)>,
        extra_fds: &[RawFd],
        cgroup: Option<&Path>,
        gate: Option<&Gate>,
    ) -> Result<Forked, SpawnError> {
        let program = &self.command[0];
        let path = &release.program;
        let passed: Vec<PassedSocket> = sockets.iter().map(|(_, s)| s.clone()).collect();
        let env = ChildEnv { sockets: &passed, generation, instance, extra: extra_env };
        // The env file's variables over hotswap's own; the shell's PWD names the release.
        let mut base: Vec<(OsString, OsString)> = own_env()
            .iter()
            .filter(|(k, _)| !release.env.iter().any(|(key, _)| k == key.as_str()) && k != "PWD")
            .cloned()
            .collect();
        base.extend(release.env.iter().map(|(k, v)| (k.into(), v.into())));
        base.extend(release.dir.iter().map(|d| ("PWD".into(), d.clone().into_os_string())));
        let mut env = env.build(base);
        if let Some(intercept) = &self.intercept {
            let at = env.iter().position(|(k, _)| k == "LD_PRELOAD");
            let existing = at.map(|at| env.remove(at).1);
            let value = preload::ld_preload(existing.as_deref(), &intercept.library);
            env.push(("LD_PRELOAD".into(), value));
            env.push(("HOTSWAP_CLAIM".into(), intercept.claim.clone().into()));
        }
        if let Some(usec) = self.watchdog_usec {
            env.push(("WATCHDOG_USEC".into(), usec.to_string().into()));
        }
        if let Some(run_as) = &self.run_as {
            env.retain(|(k, _)| !run_as.env.iter().any(|(key, _)| k == key.as_str()));
            env.extend(run_as.env.iter().map(|(k, v)| (k.into(), v.into())));
        }
        let fd_map: Vec<(RawFd, RawFd)> =
            sockets.iter().zip(FIRST_FD..).map(|((fd, _), at)| (*fd, at)).collect();
        let shown = || program.to_string_lossy().into_owned();
        let plan =
            ExecPlan::new(path, self.command.clone(), env, extra_fds.to_vec(), release.dir.clone())
                .map_err(|e| SpawnError::Exec(shown(), e))?;
        let mut plan =
            plan.with_fds_at(fd_map).run_as(self.run_as.as_ref().map(|r| r.identity.clone()));
        if let Some(dir) = cgroup {
            plan = plan.into_cgroup(dir).map_err(|e| SpawnError::Exec(shown(), e))?;
        }
        plan.spawn(gate).map_err(|e| SpawnError::Exec(shown(), e))
    }
}

/// hotswap's own environment, read once: it never changes it, and reading
/// it for each of 64 instances was a sixth of a generation's spawn time.
fn own_env() -> &'static [(OsString, OsString)] {
    static ENV: std::sync::OnceLock<Vec<(OsString, OsString)>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| std::env::vars_os().collect())
}

/// Starts `/bin/sh -c COMMAND` for `--ready exec:` with `HOTSWAP_PID=<child>`,
/// in a process group of its own and killed if hotswap dies, so that a
/// probe that hangs can be killed as a whole and never outlives hotswap.
pub fn spawn_probe(command: &str, child: u32) -> Result<Forked, SpawnError> {
    let shell = Path::new("/bin/sh");
    let argv = vec!["sh".into(), "-c".into(), command.into()];
    let mut env = activation::inheritable(std::env::vars_os());
    env.push(("HOTSWAP_PID".into(), child.to_string().into()));
    let exec_error = |e| SpawnError::Exec("/bin/sh".into(), e);
    let plan = ExecPlan::new(shell, argv, env, Vec::new(), None).map_err(exec_error)?;
    plan.helper().spawn(None).map_err(exec_error)
}

/// The variables of the env file at `path`.
///
/// # Errors
/// It cannot be read, or a line is malformed (`line N: why`).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, SpawnError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpawnError::EnvFile(shown.clone(), e.to_string()))?;
    crate::protocol::envfile::parse(&text).map_err(|e| SpawnError::EnvFile(shown, e.to_string()))
}
