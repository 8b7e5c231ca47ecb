//! The examples in `examples/`, run as their READMEs say, and reloaded under load with not one
//! failed request: Node (its own `listen(PORT)`, and fd 3 with readiness), Python (gunicorn,
//! uvicorn, the standard library), Go and Rust. And the README's first command, run exactly as
//! written on a fresh copy of the repository.
//!
//! The outside programs come from `.ci/run deps`: node, python3, go (Debian's `golang-go`), and
//! gunicorn and uvicorn in the repository's `.venv`. A missing one fails its test, with the
//! command that installs it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::load::{LoadConfig, Target, spawn_in_thread};
use crate::support::service::*;
use crate::support::tools::{repo, tool, venv_tool};
use crate::support::{Hotswap, Launch, free_port, http_get, path_str, port_is_closed};

/// Reloads `svc` `reloads` times with HUP while the load client runs (new-connection and
/// keep-alive clients), waiting each time until the new generation took over, the old one is
/// gone and the new one has answered; then checks that not one request failed and that each
/// generation answered in turn. `generations`: whether the app sends `X-Generation`.
fn reload_under_load(svc: &Service, reloads: u64, generations: bool) {
    let load = spawn_in_thread(LoadConfig {
        new_conn_workers: 3,
        keepalive_workers: 3,
        // Only a safety cap: the load is stopped after the reloads.
        duration: Duration::from_secs(120),
        ..LoadConfig::new(Target::Tcp(svc.addr))
    });
    let mut ok = wait_for_ok(&load, 0, 50);
    let mut pids = Vec::new();
    for new in 2..=reloads + 1 {
        let switch = svc.hup_and_wait(new, new - 1);
        pids.push(switch.old_pids);
        ok = wait_for_ok(&load, ok, 50);
    }
    let report = load.stop_and_finish();
    assert_no_failures(&report, &format!("load across {reloads} reloads"));
    if generations {
        let expected: Vec<u64> = (1..=reloads + 1).collect();
        assert_eq!(report.generation_order, expected, "{}", report.summary());
    } else {
        assert!(report.pids().len() as u64 > reloads, "{}", report.summary());
    }
    for old in pids.into_iter().flatten() {
        assert!(!crate::support::pid_alive(old as i32), "retired pid {old} is still alive");
    }
}

/// `examples/node/app.js` as most Node apps are: it calls `listen(PORT)` itself, has no
/// hotswap code, and runs under `hotswap -- node app.js` with no flag at all. The bind() shim
/// hands it hotswap's socket for the port; readiness is seen in /proc.
#[test]
fn node_app_that_listens_on_its_own_port() {
    let port = free_port();
    let app = repo("examples/node/app.js");
    let node = tool("node", "nodejs");
    let hs = Hotswap::start(&["--", &node, &app], &[("PORT", &port.to_string())]);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    // `hotswap -- node app.js` is called `app`.
    let ctl = path_str(&hs.dir().join("hotswap/app.sock"));
    let svc = Service { hs, ctl, addr: ([127, 0, 0, 1], port).into() };
    assert_eq!(svc.status().name, "app");
    reload_under_load(&svc, 3, false);
}

/// `examples/node/server.js`: fd 3, readiness by `process.send('ready')`, the careful drain.
#[test]
fn node_server_on_fd_3() {
    let node = tool("node", "nodejs");
    let svc = Service::start(&[], &[&node, &repo("examples/node/server.js")], &[]);
    reload_under_load(&svc, 3, true);
}

/// The same server announcing readiness on `HOTSWAP_READY_FD` instead.
#[test]
fn node_server_on_fd_3_ready_by_fd() {
    let node = tool("node", "nodejs");
    let env = [("READY_VIA", "fd")];
    let svc = Service::start(&["--ready", "fd"], &[&node, &repo("examples/node/server.js")], &env);
    reload_under_load(&svc, 2, true);
}

/// `gunicorn wsgi:app` as is: gunicorn reads LISTEN_FDS and sends READY=1 itself.
#[test]
fn python_gunicorn() {
    let chdir = repo("examples/python");
    let gunicorn = venv_tool("gunicorn");
    let svc = Service::start(&["--chdir", &chdir], &[&gunicorn, "-w", "2", "wsgi:app"], &[]);
    reload_under_load(&svc, 3, true);
}

/// uvicorn on fd 3 (`python3 asgi.py`), the app saying READY=1 at its lifespan startup and
/// stopping to accept before uvicorn's own shutdown.
#[test]
fn python_uvicorn() {
    let chdir = repo("examples/python");
    let python = venv_tool("python");
    let svc = Service::start(&["--chdir", &chdir], &[&python, "asgi.py"], &[]);
    reload_under_load(&svc, 3, true);
}

/// `python3 stdlib_server.py`: fd 3 and READY=1 with the standard library alone.
#[test]
fn python_standard_library() {
    let python = tool("python3", "python3");
    let svc = Service::start(&[], &[&python, &repo("examples/python/stdlib_server.py")], &[]);
    reload_under_load(&svc, 3, true);
}

/// `examples/go`: built here with `go build` (standard library only, no network), then fd 3
/// through `net.FileListener` and READY=1 on NOTIFY_SOCKET.
#[test]
fn go_server() {
    let go = tool("go", "golang-go");
    let out = tempfile::tempdir().expect("tempdir");
    let bin = out.path().join("server");
    // The build cache outlives the test, in target/: the second build takes a moment.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(repo("examples/go"))
        .env("GOCACHE", &cache)
        .env("GOPATH", out.path().join("gopath"))
        .env("GOFLAGS", "-mod=readonly")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(built.status.success(), "go build: {}", describe(&built));
    let svc = Service::start(&[], &[&path_str(&bin)], &[]);
    reload_under_load(&svc, 3, true);
}

/// `examples/server.rs`: tokio, listenfd, sd-notify.
#[test]
fn rust_server() {
    let svc = Service::start(&[], &[&server()], &[]);
    reload_under_load(&svc, 3, true);
}

/// How long the README's first command may take to build hotswap and the example server from
/// nothing (CI's fresh machine, 2 cores shared with the other tests): only a bound on a hang.
const BUILD_WAIT: Duration = Duration::from_secs(900);

/// The README's first command (its first `sh` block), run exactly as written by `sh` in a copy
/// of the repository, serves the example on 127.0.0.1:8080; the reload command the README
/// gives next works too. The copy holds the files git tracks or would track, as they are in the
/// work tree; it lives in `target/tmp/readme-clone`, whose own `target/` keeps the compiled
/// dependencies from one run to the next but never the programs the command must build.
#[test]
fn the_readmes_first_command_serves_the_example() {
    let readme = std::fs::read_to_string(repo("README.md")).expect("read README.md");
    let (command, rest) = first_sh_block(&readme);
    let reload = inline_code(rest)
        .into_iter()
        .find(|code| code.contains(" reload "))
        .unwrap_or_else(|| panic!("no `… reload …` after the README's first command"));
    let addr = ([127, 0, 0, 1], 8080).into();
    assert!(
        port_is_closed(addr),
        "the README's command serves on {addr}, which something else holds: stop it and rerun"
    );

    let clone = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-clone");
    copy_worktree(Path::new(env!("CARGO_MANIFEST_DIR")), &clone);
    forget_built_programs(&clone.join("target/debug"));

    let run_there = |text: &str| {
        // `sh -c TEXT` in the copy: TEXT exactly as the README has it.
        let launch = Launch::via("/bin/sh", vec!["-c".into(), text.to_string()]);
        // The copy's own target/, whatever the test run's is.
        Launch { cwd: Some(clone.clone()), ..launch }.env(&[("CARGO_TARGET_DIR", "target")])
    };
    let hs = run_there(&command).start();
    let line =
        hs.wait_for_any(0, &["gen 1 ready after ", "error:", "error[", "hotswap: "], BUILD_WAIT);
    assert!(line.contains("gen 1 ready after "), "the README's command failed: {line}");
    let response = http_get(addr, "/").expect("GET the README's example");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.generation(), Some(1), "{response:?}");

    // The reload the README gives next, in the same runtime directory.
    let runtime = path_str(hs.dir());
    let out = run_there(&reload).env(&[("XDG_RUNTIME_DIR", &runtime)]).run();
    assert_eq!(out.status.code(), Some(0), "`{reload}`: {}", describe(&out));
    let response = http_get(addr, "/").expect("GET after the reload");
    assert_eq!(response.generation(), Some(2), "{response:?}");
}

/// The first fenced `sh` block of `markdown` (its one line) and the text after it.
fn first_sh_block(markdown: &str) -> (String, &str) {
    let start = markdown.find("```sh\n").expect("a ```sh block in the README") + "```sh\n".len();
    let len = markdown[start..].find("```").expect("the end of the ```sh block");
    let lines: Vec<&str> = markdown[start..start + len].lines().collect();
    assert_eq!(lines.len(), 1, "the README's first command is one line: {lines:?}");
    (lines[0].to_string(), &markdown[start + len + 3..])
}

/// The `inline code` spans of the paragraph that starts `text`.
fn inline_code(text: &str) -> Vec<String> {
    let paragraph = text.trim_start().split("\n\n").next().unwrap_or("");
    paragraph.split('`').skip(1).step_by(2).map(|code| code.replace('\n', " ")).collect()
}

/// Makes `to` hold the files of the work tree at `from` that git tracks or would track (not
/// ignored), as they are now; a file whose content is unchanged keeps its time (so cargo
/// rebuilds only what changed), and files no longer there are removed, `target/` excepted.
fn copy_worktree(from: &Path, to: &Path) {
    let listed = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(from)
        .output()
        .expect("run git ls-files (the README test copies the work tree git knows)");
    assert!(listed.status.success(), "git ls-files: {}", describe(&listed));
    let files: Vec<PathBuf> = listed
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|name| from.join(name).is_file())
        .collect();
    for name in &files {
        let content = std::fs::read(from.join(name)).expect("read a tracked file");
        let dest = to.join(name);
        if std::fs::read(&dest).ok().as_ref() != Some(&content) {
            std::fs::create_dir_all(dest.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&dest, &content).expect("write the copy");
        }
        let mode = std::fs::metadata(from.join(name)).expect("stat").permissions();
        std::fs::set_permissions(&dest, mode).expect("chmod the copy");
    }
    let keep: std::collections::BTreeSet<PathBuf> = files.into_iter().collect();
    remove_others(to, to, &keep);
}

/// Removes the files under `dir` (relative to `root`) that are not in `keep`; `target/` stays.
fn remove_others(root: &Path, dir: &Path, keep: &std::collections::BTreeSet<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the copy").flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).expect("under root").to_path_buf();
        if relative == Path::new("target") {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_others(root, &path, keep);
        } else if !keep.contains(&relative) {
            std::fs::remove_file(&path).expect("remove a file the work tree no longer has");
        }
    }
}

/// Removes what a build leaves at the top of `target/debug` (the programs and libraries cargo
/// copies there) and its examples, keeping the compiled dependencies.
fn forget_built_programs(debug: &Path) {
    let Ok(entries) = std::fs::read_dir(debug) else { return };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_file() => std::fs::remove_file(entry.path()).expect("remove a program"),
            Ok(t) if t.is_dir() && entry.file_name() == "examples" => {
                std::fs::remove_dir_all(entry.path()).expect("remove the examples")
            }
            _ => {}
        }
    }
}
