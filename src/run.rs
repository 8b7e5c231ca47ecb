//! Run mode: validate, take the sockets, claim the control socket, then
//! hand everything to the driver; clean up what was created on the way out.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cli::{Balance, OnOff, RunArgs};
use crate::core;
use crate::driver::handoff::{DriverState, Handoff};
use crate::driver::{self, Service};
use crate::protocol::activation;
use crate::sys::control::{self, BindError};
use crate::sys::identity::{self, IdentityError, RunAs};
use crate::sys::paths;
use crate::sys::process;
use crate::sys::sockets::{self, ListenError, SocketOptions, Sockets};
use crate::sys::spawn::{Intercept, SpawnError, Spawner, read_env_file, resolve_program};
use crate::sys::upstream::UpstreamSocket;
use crate::sys::{claims, preload, reexec};

/// Anything that stops hotswap from starting: bad input, exit code 2.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("missing command: put it after --, as in: hotswap --listen :8080 -- ./server")]
    NoCommand,
    #[error(transparent)]
    Command(#[from] SpawnError),
    #[error("--chdir {0}: not a directory")]
    NoDirectory(PathBuf),
    #[error("--watch {0}: no such file or directory")]
    NoWatchPath(PathBuf),
    #[error("--name {0:?}: must not contain '/' or be empty")]
    BadName(String),
    #[error("LISTEN_FDS: {0}")]
    Activation(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Control(#[from] BindError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Runs the service; returns hotswap's exit code.
pub fn run(args: RunArgs) -> i32 {
    let mut cleanup = Cleanup::default();
    let resumed = match reexec::take().map(resume) {
        None => None,
        Some(Ok(handoff)) => Some(handoff),
        Some(Err(e)) => {
            // The children run on, unsupervised: nothing better is left.
            let _ = writeln!(std::io::stderr(), "hotswap: cannot resume after USR2: {e}");
            return 1;
        }
    };
    match start(args, &mut cleanup, resumed) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "hotswap: {e}");
            2
        }
    }
}

/// The state a USR2 handed over; when this binary cannot read it, the
/// previous binary runs again on it (and this returns only if that fails).
fn resume(taken: std::io::Result<reexec::Resume>) -> Result<Handoff, String> {
    let resume = taken.map_err(|e| e.to_string())?;
    Handoff::parse(&resume.state).map_err(|e| {
        tracing::error!("USR2: cannot resume ({e}): the previous binary takes it back");
        format!("{e}; the previous binary: {}", resume.fall_back())
    })
}

/// What a fresh start opens, and a resumed one is handed.
struct Opened {
    sockets: Sockets,
    control: std::os::unix::net::UnixListener,
    claims: Option<std::os::unix::net::UnixListener>,
    notify_dir: PathBuf,
    binary: PathBuf,
    driver: Option<DriverState>,
}

fn start(
    args: RunArgs,
    cleanup: &mut Cleanup,
    resumed: Option<Handoff>,
) -> Result<i32, StartError> {
    let cwd = match &args.chdir {
        Some(dir) if !dir.is_dir() && resumed.is_none() => {
            return Err(StartError::NoDirectory(dir.clone()));
        }
        Some(dir) => Some(dir.clone()),
        None => pwd(),
    };
    let Some(program) = args.command.first() else { return Err(StartError::NoCommand) };
    // A resumed hotswap checks nothing that changed since: its children run.
    if resumed.is_none() {
        if let Some(missing) = args.watch.iter().find(|p| !p.exists()) {
            return Err(StartError::NoWatchPath(missing.clone()));
        }
        resolve_program(program, cwd.as_deref())?;
        if let Some(path) = &args.env_file {
            read_env_file(path)?;
        }
    }
    let run_as = identity::resolve(args.user.as_deref(), args.group.as_deref())?;
    let handed_name = resumed.as_ref().and_then(|h| h.name.clone());
    let name = match handed_name.or_else(|| args.name.clone()) {
        Some(name) => name,
        None => Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if name.is_empty() || name.contains('/') {
        return Err(StartError::BadName(name));
    }

    let control_path = args.control.clone().unwrap_or_else(|| paths::control_socket(&name));
    let options = SocketOptions {
        slots: match args.balance {
            Balance::Shared => 1,
            Balance::Reuseport => args.instances,
        },
        backlog: args.backlog,
        reuse_port: args.reuse_port,
        // The documented default, applied explicitly: bind() alone gives 0777 & ~umask.
        socket_mode: args.socket_mode.unwrap_or(0o666 & !process::umask()),
    };
    let opened = match resumed {
        None => open_fresh(&args, &name, &control_path, options, run_as.as_ref(), cleanup)?,
        Some(handoff) => take_back(handoff, &control_path, cleanup)?,
    };
    let intercept = match (&opened.claims, args.intercept_bind) {
        (Some(_), OnOff::On) => match install_preload(&name, run_as.as_ref(), cleanup) {
            Ok(intercept) => Some(intercept),
            Err(e) => {
                tracing::warn!(
                    "no bind() interception: {e}; apps that bind their own port will meet \
                     EADDRINUSE at the next reload"
                );
                None
            }
        },
        _ => None,
    };
    if let Some(path) = &args.pid_file {
        write_pid_file(path).map_err(|e| StartError::Io(path.display().to_string(), e))?;
        cleanup.pid_file = Some(path.clone());
    }
    let upstream =
        std::env::var("NOTIFY_SOCKET").ok().and_then(|value| match UpstreamSocket::open(&value) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={value:?} ignored: {e}");
                None
            }
        });

    let service = Service {
        name,
        binary: opened.binary,
        core: core::Config {
            instances: args.instances,
            ready_timeout: args.ready_timeout,
            ready_delay: match args.ready {
                crate::config::ReadyMode::Delay(d) => Some(d),
                _ => None,
            },
            drain_timeout: args.drain_timeout,
            stop_signal: args.stop_signal,
            restart: args.restart.into(),
            detect: args.ready == crate::config::ReadyMode::Auto,
            rolling: args.rolling,
            watchdog: args.watchdog,
        },
        ready: args.ready,
        spawner: Spawner {
            command: args.command,
            cwd,
            env_file: args.env_file,
            run_as,
            intercept,
            watchdog_usec: args.watchdog.map(|d| d.as_micros() as u64),
        },
        max_memory: args.max_memory,
        watch: args.watch,
        sockets: opened.sockets,
        claims: opened.claims,
        socket_options: options,
        notify_dir: opened.notify_dir,
        control: Some(opened.control),
        upstream,
        fd_store: crate::protocol::notify::fd_store_offered(
            std::env::var("FDSTORE").ok().as_deref(),
        ),
        own_watchdog: crate::protocol::notify::own_watchdog(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Io("tokio runtime".into(), e))?;
    runtime
        .block_on(driver::run(service, opened.driver))
        .map_err(|e| StartError::Io("event loop".into(), e))
}

/// A fresh start: the sockets (at fds 3..), the runtime directory, the
/// control socket, the notify directory, the claim socket.
fn open_fresh(
    args: &RunArgs,
    name: &str,
    control_path: &Path,
    options: SocketOptions,
    run_as: Option<&RunAs>,
    cleanup: &mut Cleanup,
) -> Result<Opened, StartError> {
    // The sockets come first, so they sit at fds 3.. before anything else opens an fd.
    let var = |k: &str| std::env::var(k).ok();
    let inherited = activation::parse_inherited(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
    .map_err(StartError::Activation)?;
    let listeners = sockets::open_all(&inherited, &args.listen, options)?;
    cleanup.files.extend(listeners.iter().filter_map(|l| l.created_file.clone()));
    prepare_process()?;
    let runtime_dir = paths::prepare_runtime_dir()
        .map_err(|e| StartError::Io(paths::runtime_dir().display().to_string(), e))?;
    for stale in paths::clean_stale(&runtime_dir) {
        tracing::info!("removed {}, left by a hotswap that is gone", stale.display());
    }
    let control = control::bind(control_path)?;
    cleanup.files.push(control_path.to_path_buf());
    let notify_dir = notify_dir(name, run_as)?;
    cleanup.dirs.push(notify_dir.clone());
    let claims = match args.intercept_bind {
        OnOff::On => match claims::listen_on(&paths::claim_socket(name)) {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(
                    "no bind() interception: claim socket: {e}; apps that bind their own port \
                     will meet EADDRINUSE at the next reload"
                );
                None
            }
        },
        OnOff::Off => None,
    };
    // Once nothing can fail any more: bad input is one line.
    for l in &listeners {
        let (Some(index), Some(passed)) = (l.listen_index, &l.passed) else { continue };
        let fd = activation::FIRST_FD + index as i32;
        match l.slot {
            None => tracing::info!("fd {fd}: {} ({})", l.local, passed.name),
            Some(slot) => {
                tracing::info!("fd {fd} of instance {slot}: {} ({})", l.local, passed.name)
            }
        }
    }
    // Where USR2 finds the binary, however it is replaced meanwhile.
    let binary = std::env::current_exe()
        .map_err(|e| StartError::Io("the path of hotswap's own binary".into(), e))?;
    Ok(Opened {
        sockets: Sockets::new(listeners),
        control,
        claims,
        notify_dir,
        binary,
        driver: None,
    })
}

/// After a USR2: everything the previous process handed over, at the fds
/// it left open. Every other inherited fd is closed at the next exec.
fn take_back(
    handoff: Handoff,
    control_path: &Path,
    cleanup: &mut Cleanup,
) -> Result<Opened, StartError> {
    let io = |what: &str, e| StartError::Io(format!("resuming after USR2: {what}"), e);
    prepare_process()?;
    let sockets = Sockets::take_back(handoff.sockets).map_err(|e| io("sockets", e))?;
    cleanup.files.extend(sockets.iter().filter_map(|l| l.created_file.clone()));
    cleanup.files.push(control_path.to_path_buf());
    cleanup.dirs.push(handoff.notify_dir.clone());
    let control = match handoff.control {
        Some(fd) => reexec::take_back_listener(fd).map_err(|e| io("control socket", e))?,
        None => return Err(io("control socket", std::io::Error::other("not handed over"))),
    };
    let claims = match handoff.claims {
        Some(fd) => Some(reexec::take_back_listener(fd).map_err(|e| io("claim socket", e))?),
        None => None,
    };
    Ok(Opened {
        sockets,
        control,
        claims,
        notify_dir: handoff.notify_dir,
        binary: handoff.binary,
        driver: Some(handoff.driver),
    })
}

/// Subreaper, and the unused signals ignored.
fn prepare_process() -> Result<(), StartError> {
    process::become_subreaper().map_err(|e| StartError::Io("PR_SET_CHILD_SUBREAPER".into(), e))?;
    process::ignore_unused_signals().map_err(|e| StartError::Io("signals".into(), e))
}

/// The longest notify socket name, `<generation>.<instance>.<n>`, with room to spare.
const NOTIFY_NAME_MAX: usize = 40;

/// The directory of the children's notify sockets: in the runtime directory,
/// or, when a socket there would not fit `sun_path`, a short private one.
/// With `--user`, other users may pass through it (0711) to the one socket
/// each child owns; they still cannot list it. When the child's user cannot
/// reach the runtime directory (an `XDG_RUNTIME_DIR` of mode 0700), a short
/// private directory in /tmp serves instead.
fn notify_dir(name: &str, run_as: Option<&RunAs>) -> Result<PathBuf, StartError> {
    let dir = paths::notify_dir(name);
    let io = |dir: &Path, e| StartError::Io(dir.display().to_string(), e);
    let passable = |dir: &Path| match run_as {
        Some(_) => paths::set_mode(dir, 0o711).map_err(|e| io(dir, e)),
        None => Ok(()),
    };
    let reachable = run_as.is_none_or(|r| {
        let parent = dir.parent().unwrap_or(&dir);
        paths::reachable_by(parent, r.identity.uid, &r.identity.groups)
    });
    if paths::socket_fits(&dir, NOTIFY_NAME_MAX) && reachable {
        paths::private_dir(&dir).map_err(|e| io(&dir, e))?;
        passable(&dir)?;
        return Ok(dir);
    }
    let short = paths::short_private_dir().map_err(|e| {
        StartError::Io(format!("{} is too long for unix sockets", dir.display()), e)
    })?;
    passable(&short)?;
    tracing::info!(
        "notify sockets in {} ({} is too long for a unix socket path, or out of --user's reach)",
        short.display(),
        dir.display()
    );
    Ok(short)
}

/// The preload library's file, and how children find the claim socket. In
/// the runtime directory, unless `--user`'s user cannot reach it there:
/// then in a private directory in /tmp, removed at exit.
fn install_preload(
    name: &str,
    run_as: Option<&RunAs>,
    cleanup: &mut Cleanup,
) -> std::io::Result<Intercept> {
    let mut dir = paths::preload_dir();
    if let Some(r) = run_as {
        let parent = dir.parent().unwrap_or(&dir).to_path_buf();
        if !paths::reachable_by(&parent, r.identity.uid, &r.identity.groups) {
            let own = paths::short_private_dir()?;
            paths::set_mode(&own, 0o755)?;
            cleanup.dirs.push(own.clone());
            dir = own.join("lib");
        }
    }
    let library = preload::install(&dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let claim = paths::claim_socket(name);
    Ok(Intercept { library, claim: format!("@{claim}") })
}

/// `$PWD` as the user sees it (through symlinks), when it is where we are.
fn pwd() -> Option<PathBuf> {
    let pwd = PathBuf::from(std::env::var_os("PWD")?);
    let same = std::fs::canonicalize(&pwd).ok()? == std::env::current_dir().ok()?;
    same.then_some(pwd)
}

/// Written to a temporary name and renamed, so a reader never sees it half-written.
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// What hotswap created, removed when it exits however it exits.
#[derive(Default)]
struct Cleanup {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    pid_file: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Only our own: a successor may have written its pid there already.
        if let Some(path) = &self.pid_file {
            let ours = std::fs::read_to_string(path)
                .is_ok_and(|s| s.trim() == std::process::id().to_string());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
