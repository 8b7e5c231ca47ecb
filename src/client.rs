//! `hotswap reload`, `status` and `list`: talk to running hotswaps through their control sockets.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{ListArgs, ReloadArgs, StatusArgs, Target};
use crate::protocol::control::{ChildState, ReloadResult, Reply, Request, Status};
use crate::sys::control::{self, ClientError};
use crate::sys::{paths, procfs};

/// How long `status`, and `list` for each service (all at once), wait for an answer: a hotswap
/// that does not answer in that time (stopped, or overwhelmed) is an error; `list` names it on
/// stderr and lists the others.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit codes: 0 took over, 1 rolled back, 2 usage or no such service,
/// 3 `--timeout` passed first, 4 permission denied.
/// `rollback`: the same, for a generation from the previous release.
pub fn reload(args: ReloadArgs, rollback: bool) -> i32 {
    let path = match control_path(&args.target) {
        Ok(path) => path,
        Err(e) => return fail(&e),
    };
    let mut outcome = None;
    let what = if rollback { "rollback" } else { "reload" };
    let request = match rollback {
        false => Request::Reload { wait: args.wait },
        true => Request::Rollback { wait: args.wait },
    };
    let result = control::request(&path, &request, args.timeout, |reply| match reply {
        Reply::Step { step } => {
            println!("{step}");
            true
        }
        Reply::Accepted { .. } => {
            println!("{what} requested");
            outcome = Some(0);
            false
        }
        Reply::Done { result, generation, reason } => {
            let generation = generation.map(|g| format!("gen {g} ")).unwrap_or_default();
            let reason = reason.unwrap_or_default();
            outcome = Some(match result {
                ReloadResult::TookOver => {
                    println!("{generation}took over");
                    0
                }
                ReloadResult::RolledBack => {
                    eprintln!("hotswap: {what} failed, {generation}rolled back: {reason}");
                    1
                }
                ReloadResult::Stopped => {
                    eprintln!("hotswap: {generation}{reason}");
                    1
                }
                ReloadResult::NotListening => {
                    eprintln!("hotswap: {generation}took over, but {reason}");
                    1
                }
                ReloadResult::Cancelled => {
                    eprintln!("hotswap: {what} cancelled: {reason}");
                    1
                }
                ReloadResult::Refused => {
                    eprintln!("hotswap: rollback refused: {reason}");
                    1
                }
            });
            false
        }
        _ => true,
    });
    match result {
        Ok(()) => outcome.unwrap_or(2),
        Err(e @ ClientError::Timeout(_)) => {
            eprintln!("hotswap: {e}; the {what} goes on");
            e.exit_code()
        }
        Err(e) => fail(&e),
    }
}

pub fn status(args: StatusArgs) -> i32 {
    let path = match control_path(&args.target) {
        Ok(path) => path,
        Err(e) => return fail(&e),
    };
    let status = match ask_status(&path, STATUS_TIMEOUT) {
        Ok(status) => status,
        Err(e) => return fail(&e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status serializes"));
    } else {
        print!("{}", table(&status));
    }
    0
}

/// Every service of this user: the control sockets in the runtime directory that answer, in the
/// order of their names.
/// Exit code 0, or 1 when one that is alive did not answer (named on stderr; the rest are listed).
pub fn list(args: ListArgs) -> i32 {
    let sockets = control_sockets(&paths::runtime_dir());
    // Asked all at once: one slow service does not hold up the others.
    let answers: Vec<Result<Status, ClientError>> = std::thread::scope(|scope| {
        let asking: Vec<_> = sockets
            .iter()
            .map(|path| scope.spawn(move || ask_status(path, STATUS_TIMEOUT)))
            .collect();
        asking.into_iter().map(|t| t.join().expect("a status thread")).collect()
    });
    let mut statuses = Vec::new();
    let mut code = 0;
    for answer in answers {
        match answer {
            Ok(status) => statuses.push(status),
            Err(e) if is_stale(&e) => {}
            Err(e) => {
                eprintln!("hotswap: {e}");
                code = 1;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses).expect("status serializes"));
    } else {
        print!("{}", list_table(&statuses, now()));
    }
    code
}

/// Asks the hotswap at `path` for its status.
fn ask_status(path: &Path, timeout: Duration) -> Result<Status, ClientError> {
    let mut status = None;
    control::request(path, &Request::Status, Some(timeout), |reply| {
        if let Reply::Status(s) = reply {
            status = Some(*s);
        }
        false
    })?;
    status.ok_or_else(|| ClientError::Protocol("hotswap sent no status".into()))
}

/// Whether `e` says that nobody listens at the socket any more: a hotswap that was killed
/// (SIGKILL) left its socket file behind, or one that just stopped removed it.
fn is_stale(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable(_, e)
        if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
}

/// The `*.sock` files in `dir`, sorted.
fn control_sockets(dir: &Path) -> Vec<PathBuf> {
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    sockets.sort_unstable();
    sockets
}

/// Whether something listens at the unix socket `path` (a connection refused is a stale file;
/// any other error is left for the request to report).
fn is_live(path: &Path) -> bool {
    match UnixStream::connect(path) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound),
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// `d` to the second, as `2h 3m 4s`.
fn age(now: f64, since: f64) -> String {
    humantime::format_duration(Duration::from_secs((now - since).max(0.0) as u64)).to_string()
}

/// `hotswap list`'s table: one line per service.
fn list_table(statuses: &[Status], now: f64) -> String {
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            let draining = s.children.iter().filter(|c| c.state != ChildState::Ready).count();
            let children = match draining {
                0 => s.children.len().to_string(),
                n => format!("{} ({n} not ready)", s.children.len()),
            };
            let last_reload = s.last_reload.as_ref().map_or("-".to_string(), |r| {
                format!("gen {} {} after {}ms", r.generation, r.result, r.duration_ms)
            });
            [
                s.name.clone(),
                s.pid.to_string(),
                s.generation.map_or("-".to_string(), |g| g.to_string()),
                children,
                age(now, s.started_at),
                last_reload,
            ]
        })
        .collect();
    let header = ["NAME", "PID", "GEN", "CHILDREN", "UPTIME", "LAST RELOAD"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("hotswap: {e}");
    e.exit_code()
}

/// The control socket to talk to: `--control`, the hotswap of `--pid-file`, the one of NAME, or
/// the only one running (stale socket files, left by a hotswap that was killed, do not count).
fn control_path(target: &Target) -> Result<PathBuf, ClientError> {
    if let Some(path) = &target.control {
        return Ok(path.clone());
    }
    if let Some(pid_file) = &target.pid_file {
        return control_of_pid_file(pid_file);
    }
    if let Some(name) = &target.name {
        return Ok(paths::control_socket(name));
    }
    let dir = paths::runtime_dir();
    let sockets: Vec<PathBuf> = control_sockets(&dir).into_iter().filter(|p| is_live(p)).collect();
    match sockets.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ClientError::Protocol(format!(
            "no hotswap is running (no live control socket in {})",
            dir.display()
        ))),
        _ => {
            let names: Vec<String> = sockets
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            Err(ClientError::Protocol(format!(
                "several services run, name one: {}",
                names.join(", ")
            )))
        }
    }
}

/// The control socket of the hotswap whose pid `pid_file` holds: the unix sockets that process
/// listens on, then those in the runtime directory, asked in turn until one answers with that pid.
fn control_of_pid_file(pid_file: &Path) -> Result<PathBuf, ClientError> {
    let shown = pid_file.display();
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| ClientError::Protocol(format!("--pid-file {shown}: {e}")))?;
    let pid: u32 = text.trim().parse().map_err(|_| {
        ClientError::Protocol(format!("--pid-file {shown}: not a pid: {:?}", text.trim()))
    })?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(ClientError::Protocol(format!(
            "--pid-file {shown}: no process {pid} (a hotswap that was killed left its pid file)"
        )));
    }
    let mut candidates = procfs::unix_listeners(pid);
    candidates.extend(control_sockets(&paths::runtime_dir()));
    let answers = |path: &PathBuf| {
        ask_status(path, Duration::from_secs(2)).is_ok_and(|status| status.pid == pid)
    };
    candidates.into_iter().find(answers).ok_or_else(|| {
        ClientError::Protocol(format!(
            "--pid-file {shown}: process {pid} answers on no control socket (not a hotswap, or \
             not one of this user's: name its socket with --control)"
        ))
    })
}

fn table(s: &Status) -> String {
    let now = now();
    let age = |t: f64| age(now, t);
    let generation = s.generation.map(|g| g.to_string()).unwrap_or_else(|| "none yet".into());
    let mut out = format!(
        "{}: pid {}, up {}, serving generation {generation}\n",
        s.name,
        s.pid,
        age(s.started_at)
    );
    for socket in &s.sockets {
        let fd = socket.fd.map_or("bind".to_string(), |fd| format!("fd {fd}"));
        out += &format!("  {fd:<6}  {}  ({}, {})\n", socket.address, socket.name, socket.origin);
    }
    out += &format!(
        "\n  {:>8}  {:>4}  {:>4}  {:<9} {:>10}  {:>8}  {:>5}  STATUS\n",
        "PID", "GEN", "INST", "STATE", "UPTIME", "RESTARTS", "CONNS"
    );
    for c in &s.children {
        out += &format!(
            "  {:>8}  {:>4}  {:>4}  {:<9} {:>10}  {:>8}  {:>5}  {}\n",
            c.pid,
            c.generation,
            c.instance,
            c.state,
            age(c.started_at),
            c.restarts,
            c.connections,
            c.status.as_deref().unwrap_or("")
        );
    }
    if s.generations.iter().any(|g| g.release.is_some()) {
        out += "\n";
        for g in &s.generations {
            let release = g.release.as_deref().unwrap_or("(hotswap's working directory)");
            let again =
                g.release_of.map(|r| format!(", the release of gen {r}")).unwrap_or_default();
            out += &format!("  gen {} {}: {release}{again}\n", g.id, g.state);
        }
    }
    if let Some(r) = &s.last_reload {
        let reason = r.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        out += &format!(
            "\n  last reload: gen {} {} after {}ms{reason}\n",
            r.generation, r.result, r.duration_ms
        );
    }
    out
}
