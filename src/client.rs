//! `hotswap reload` and `hotswap status`: talk to a running hotswap.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{ReloadArgs, StatusArgs, Target};
use crate::protocol::control::{ReloadResult, Reply, Request, Status};
use crate::sys::control::{self, ClientError};
use crate::sys::paths;

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
        Err(e) => fail(&e),
    }
}

pub fn status(args: StatusArgs) -> i32 {
    let path = match control_path(&args.target) {
        Ok(path) => path,
        Err(e) => return fail(&e),
    };
    let mut status = None;
    let result =
        control::request(&path, &Request::Status, Some(Duration::from_secs(10)), |reply| {
            if let Reply::Status(s) = reply {
                status = Some(s);
            }
            false
        });
    if let Err(e) = result {
        return fail(&e);
    }
    let Some(status) = status else {
        return fail(&ClientError::Protocol("hotswap sent no status".into()));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status serializes"));
    } else {
        print!("{}", table(&status));
    }
    0
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("hotswap: {e}");
    e.exit_code()
}

/// The control socket to talk to: `--control`, the one of NAME, or the only one running.
fn control_path(target: &Target) -> Result<PathBuf, ClientError> {
    if let Some(path) = &target.control {
        return Ok(path.clone());
    }
    if let Some(name) = &target.name {
        return Ok(paths::control_socket(name));
    }
    let dir = paths::runtime_dir();
    let sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match sockets.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ClientError::Protocol(format!(
            "no hotswap is running (nothing in {})",
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

fn table(s: &Status) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let age = |t: f64| {
        humantime::format_duration(Duration::from_secs((now - t).max(0.0) as u64)).to_string()
    };
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
