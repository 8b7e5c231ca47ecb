//! What a child receives (DESIGN.md §3): exactly its sockets and named fds, `LISTEN_PID` equal to
//! its own pid, `LISTEN_FDNAMES`, the other wrappers' variables, none of hotswap's own activation
//! variables, its own process group and a clean signal state; and hotswap under systemd's socket
//! activation (`systemd-socket-activate`) with no `--listen` of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::support::{
    GUARD_VAR, Hotswap, Launch, WAIT, environ, example_bin, free_port, hotswap_bin, http_get,
    path_str, proc_stat, started_pid, wait_until,
};

/// The Python stdlib child that reports its activation environment over HTTP on fd 3.
fn check_env_py() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_env.py");
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path_str(&path)
}

/// The open fd numbers of `pid`.
fn open_fds(pid: u32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits until `pid` has exec'ed `program` (before that, /proc shows hotswap's fds and env).
fn wait_exec(pid: u32, program: &str) {
    wait_until(&format!("pid {pid} to exec {program}"), WAIT, || {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|&b| b == 0).next()?;
        Path::new(std::str::from_utf8(argv0).ok()?).file_name()?.eq(program).then_some(())
    });
}

/// `KEY=VALUE` lines of a response body.
fn body_fields(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `bash -c 'exec 7</dev/null 9</dev/null; exec "$0" "$@"' PROGRAM ARGS…`: PROGRAM inherits
/// stray fds 7 and 9, as from a careless shell or CI runner.
fn with_stray_fds(program: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["-c".to_string(), r#"exec 7</dev/null 9</dev/null; exec "$0" "$@""#.into()];
    v.push(program.to_string());
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

#[test]
fn the_stray_fd_wrapper_hands_fds_7_and_9_down() {
    // The premise of the next test: what the wrapper execs really holds fds 7 and 9.
    let out = Command::new("bash")
        .args(with_stray_fds("/bin/ls", &["/proc/self/fd"]))
        .output()
        .expect("run bash");
    let fds: BTreeSet<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(fds.contains(&7) && fds.contains(&9), "fds of the exec'ed program: {fds:?}");
}

#[test]
fn a_child_gets_its_sockets_and_named_fds_only_and_a_clean_environment() {
    let port = free_port();
    let hotswap = path_str(&hotswap_bin());
    let web = format!("web=127.0.0.1:{port}");
    let mut args = with_stray_fds(
        &hotswap,
        &["--control", "{dir}/ctl.sock", "-l", &web, "-l", "admin=unix:{dir}/admin.sock"],
    );
    // `sleep` opens no fd of its own, so its fd table is exactly what hotswap passed. It never
    // announces readiness; within the 60s ready timeout generation 1 just stays starting.
    args.extend(["--", "sleep", "60"].map(String::from));
    let hotswap_env = [
        ("LISTEN_PID", "1"),
        ("LISTEN_FDS", "5"),
        ("LISTEN_FDNAMES", "a:b:c:d:e"),
        ("LISTEN_PIDFDID", "123"),
        ("NOTIFY_SOCKET", "/nonexistent"),
    ];
    let hs = Launch::via("bash", args).env(&hotswap_env).start();
    let child = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    wait_exec(child, "sleep");
    let dir = path_str(hs.dir());

    let env = environ(child);
    let var = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(var("LISTEN_PID"), Some(child.to_string().as_str()), "LISTEN_PID");
    assert_eq!(var("LISTEN_FDS"), Some("2"), "LISTEN_FDS");
    assert_eq!(var("LISTEN_FDNAMES"), Some("web:admin"), "LISTEN_FDNAMES");
    assert_eq!(var("LISTEN_PIDFDID"), None, "hotswap's LISTEN_PIDFDID reached the child");
    assert_eq!(var("HOTSWAP_GENERATION"), Some("1"));
    assert_eq!(var("HOTSWAP_INSTANCE"), Some("0"));
    let starter = format!("127.0.0.1:{port}=3;{dir}/admin.sock=4");
    assert_eq!(var("SERVER_STARTER_PORT"), Some(starter.as_str()), "SERVER_STARTER_PORT");
    assert_eq!(var("EINHORN_FD_COUNT"), Some("2"));
    assert_eq!(var("EINHORN_FD_0"), Some("3"));
    assert_eq!(var("EINHORN_FD_1"), Some("4"));
    let notify = var("NOTIFY_SOCKET").expect("the child has a NOTIFY_SOCKET of its own");
    assert_ne!(notify, "/nonexistent", "hotswap's own NOTIFY_SOCKET reached the child");
    assert!(notify.starts_with(&dir), "NOTIFY_SOCKET {notify} is not under {dir}");
    let meta = std::fs::metadata(notify).expect("the child's NOTIFY_SOCKET exists");
    assert!(meta.file_type().is_socket(), "NOTIFY_SOCKET {notify} is not a socket");

    // Exactly stdio, the two sockets, and the fds its environment names.
    let named: Vec<i32> = ["HOTSWAP_READY_FD", "NODE_CHANNEL_FD"]
        .iter()
        .map(|k| {
            let v = var(k).unwrap_or_else(|| panic!("{k} missing in --ready auto"));
            v.parse().unwrap_or_else(|_| panic!("{k}={v}"))
        })
        .collect();
    let expected: BTreeSet<i32> =
        [0, 1, 2, 3, 4].into_iter().chain(named.iter().copied()).collect();
    let fds = open_fds(child);
    assert_eq!(fds, expected, "the child's fds (named by its environment: {named:?})");
    for stray in [7, 9] {
        assert!(
            !fds.contains(&stray) || named.contains(&stray),
            "fd {stray}, which hotswap inherited, reached the child: {fds:?}"
        );
    }
    let fd3 = std::fs::read_link(format!("/proc/{child}/fd/3")).unwrap();
    assert!(path_str(&fd3).starts_with("socket:"), "fd 3 is {}", fd3.display());

    // Its own process group, an empty signal mask, SIGPIPE ignored as systemd starts services
    // (DESIGN.md §3), every other disposition default although hotswap ignores several.
    let stat = proc_stat(child as i32).expect("child alive");
    assert_eq!(stat.pgrp, child as i32, "the child's process group");
    assert_eq!(sig_set(child, "SigBlk"), 0, "the child's blocked signals");
    let ignored = sig_set(child, "SigIgn");
    assert_eq!(ignored & SIGPIPE_BIT, SIGPIPE_BIT, "SIGPIPE is ignored in the child");
    let inherited = ignored_by_a_sibling() & !SIGPIPE_BIT;
    assert_eq!(
        ignored & !SIGPIPE_BIT,
        inherited,
        "the child ignores signals ({ignored:#x}) hotswap was not given"
    );
}

/// SIGPIPE's bit in a /proc signal set.
const SIGPIPE_BIT: u64 = 1 << (libc::SIGPIPE - 1);

/// A signal set field of `/proc/<pid>/status` (`SigBlk`, `SigIgn`, …).
fn sig_set(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let prefix = format!("{field}:");
    let line = text.lines().find(|l| l.starts_with(&prefix)).expect("field in status");
    u64::from_str_radix(line[prefix.len()..].trim(), 16).expect("hex signal set")
}

/// The signals ignored in a program started exactly as hotswap is (through the stray-fd wrapper,
/// in its own process group): what hotswap inherits, and may legitimately pass on (`nohup`).
/// Some environments hand test processes ignored real-time signals, so this is not always 0.
fn ignored_by_a_sibling() -> u64 {
    let out = Command::new("bash")
        .args(with_stray_fds("grep", &["SigIgn", "/proc/self/status"]))
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .expect("run grep through the wrapper");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().strip_prefix("SigIgn:").expect("a SigIgn line").trim();
    u64::from_str_radix(hex, 16).expect("hex signal set")
}

/// Starts hotswap with `listens` in front of the Python fixture; waits for it to be ready.
fn python_child(listens: &[&str]) -> (Hotswap, u32) {
    let script = check_env_py();
    let mut args = vec!["--control", "{dir}/ctl.sock"];
    for l in listens {
        args.extend(["--listen", l]);
    }
    args.extend(["--", "python3", script.as_str()]);
    let hs = Hotswap::start(&args, &[]);
    let pid = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    hs.wait_for_stderr("gen 1 ready", WAIT);
    (hs, pid)
}

/// GETs the fixture's report over 127.0.0.1:`port` and checks what every child must see.
fn python_report(port: u16, pid: u32) -> BTreeMap<String, String> {
    let response = http_get(([127, 0, 0, 1], port).into(), "/").expect("GET the fixture");
    assert_eq!(response.status, 200, "{response:?}");
    let fields = body_fields(&response.body);
    let field = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(field("pid"), Some(pid.to_string().as_str()), "report: {fields:?}");
    assert_eq!(field("listen_pid_ok"), Some("true"), "LISTEN_PID != os.getpid(): {fields:?}");
    fields
}

#[test]
fn a_python_child_sees_its_own_pid_and_the_socket_names() {
    let port = free_port();
    let web = format!("web=127.0.0.1:{port}");
    let (hs, pid) = python_child(&[&web, "admin=unix:{dir}/admin.sock"]);
    let fields = python_report(port, pid);
    assert_eq!(fields.get("listen_fds").map(String::as_str), Some("2"), "{fields:?}");
    assert_eq!(fields.get("listen_fdnames").map(String::as_str), Some("web:admin"), "{fields:?}");
    let notify = fields.get("notify_socket").expect("notify_socket reported");
    let dir = path_str(hs.dir());
    assert!(notify.starts_with(&dir), "the child's NOTIFY_SOCKET {notify} is not hotswap's");
}

#[test]
fn an_unnamed_socket_is_called_unknown() {
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let (_hs, pid) = python_child(&[&web, "admin=unix:{dir}/admin.sock"]);
    let fields = python_report(port, pid);
    let names = fields.get("listen_fdnames").map(String::as_str);
    assert_eq!(names, Some("unknown:admin"), "{fields:?}");
}

/// `systemd-socket-activate -l 127.0.0.1:PORT [--fdname=NAME] hotswap --control … ARGS…`. It
/// binds the port, waits for the first connection, then execs hotswap with LISTEN_FDS=1.
fn socket_activated(port: u16, fdname: Option<&str>, hotswap_args: &[&str]) -> Hotswap {
    let mut args = vec!["-l".to_string(), format!("127.0.0.1:{port}")];
    if let Some(name) = fdname {
        args.push(format!("--fdname={name}"));
    }
    // It passes on only PATH, HOME, TERM and what -E names.
    for var in ["XDG_RUNTIME_DIR", "NO_COLOR", GUARD_VAR] {
        args.extend(["-E".to_string(), var.to_string()]);
    }
    args.push(path_str(&hotswap_bin()));
    args.extend(["--control", "{dir}/ctl.sock"].map(String::from));
    args.extend(hotswap_args.iter().map(|s| s.to_string()));
    let hs = Launch::via("/usr/bin/systemd-socket-activate", args).start();
    hs.wait_for_stderr(&format!("Listening on 127.0.0.1:{port}"), WAIT);
    hs
}

#[test]
fn under_systemd_socket_activation_no_listen_is_needed() {
    let port = free_port();
    let server = path_str(&example_bin("server"));
    let hs = socket_activated(port, Some("web"), &["--", &server]);
    // The first connection makes systemd-socket-activate exec hotswap; it waits in the backlog.
    let response = http_get(([127, 0, 0, 1], port).into(), "/").expect("GET through the chain");
    let child = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.pid(), Some(child), "answered by hotswap's child: {response:?}");
    hs.wait_for_stderr(&format!("fd 3: 127.0.0.1:{port} (web)"), WAIT);
    let env = environ(child);
    assert_eq!(env.get("LISTEN_FDNAMES").map(String::as_str), Some("web"), "child's names");
    assert_eq!(env.get("LISTEN_FDS").map(String::as_str), Some("1"), "child's LISTEN_FDS");
    assert_eq!(env.get("LISTEN_PID"), Some(&child.to_string()), "child's LISTEN_PID");
    // The socket systemd-socket-activate bound is the one the child holds, at fd 3.
    let listener_inode = std::fs::read_link(format!("/proc/{}/fd/3", hs.pid())).unwrap();
    let child_inode = std::fs::read_link(format!("/proc/{child}/fd/3")).unwrap();
    assert_eq!(listener_inode, child_inode, "hotswap's fd 3 and the child's fd 3");
}

#[test]
fn under_systemd_socket_activation_a_python_child_sees_the_fdname() {
    let port = free_port();
    let script = check_env_py();
    let hs = socket_activated(port, Some("web"), &["--", "python3", &script]);
    let response = http_get(([127, 0, 0, 1], port).into(), "/").expect("GET through the chain");
    let child = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    assert_eq!(response.status, 200, "{response:?}");
    let fields = body_fields(&response.body);
    assert_eq!(fields.get("pid"), Some(&child.to_string()), "{fields:?}");
    assert_eq!(fields.get("listen_pid_ok").map(String::as_str), Some("true"), "{fields:?}");
    assert_eq!(fields.get("listen_fds").map(String::as_str), Some("1"), "{fields:?}");
    assert_eq!(fields.get("listen_fdnames").map(String::as_str), Some("web"), "{fields:?}");
}

#[test]
fn under_systemd_socket_activation_an_unnamed_socket_is_unknown() {
    let port = free_port();
    let hs = socket_activated(port, None, &["--", "sleep", "60"]);
    // Connect to trigger the exec; nobody answers (sleep), so do not wait for a response.
    let _trigger = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let child = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    wait_exec(child, "sleep");
    let env = environ(child);
    assert_eq!(env.get("LISTEN_FDNAMES").map(String::as_str), Some("unknown"), "child's names");
    assert_eq!(env.get("LISTEN_PID"), Some(&child.to_string()), "child's LISTEN_PID");
}

#[test]
fn inherited_sockets_come_first_then_listen_ones() {
    let port = free_port();
    let hs = socket_activated(
        port,
        Some("web"),
        &["-l", "admin=unix:{dir}/admin.sock", "--", "sleep", "60"],
    );
    let _trigger = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let child = started_pid(&hs.wait_for_stderr("gen 1 started (pids ", WAIT));
    wait_exec(child, "sleep");
    let env = environ(child);
    let var = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(var("LISTEN_FDS"), Some("2"), "child's LISTEN_FDS");
    assert_eq!(var("LISTEN_FDNAMES"), Some("web:admin"), "child's names, in fd order");
    let dir = path_str(hs.dir());
    let starter = format!("127.0.0.1:{port}=3;{dir}/admin.sock=4");
    assert_eq!(var("SERVER_STARTER_PORT"), Some(starter.as_str()), "SERVER_STARTER_PORT");
    // fd 3 is the very socket systemd-socket-activate bound and passed to hotswap.
    let inherited = std::fs::read_link(format!("/proc/{}/fd/3", hs.pid())).unwrap();
    let childs = std::fs::read_link(format!("/proc/{child}/fd/3")).unwrap();
    assert_eq!(inherited, childs, "hotswap's inherited fd 3 and the child's fd 3");
    hs.wait_for_stderr(&format!("fd 3: 127.0.0.1:{port} (web)"), WAIT);
    hs.wait_for_stderr(&format!("fd 4: {dir}/admin.sock (admin)"), WAIT);
}

#[test]
fn a_hotswap_started_with_signals_blocked_still_hears_them_and_its_children_start_clean() {
    // A parent that blocks signals hands its mask down through exec (std's Command keeps it
    // too). hotswap must still hear HUP and TERM, and its children must start unblocked.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = path_str(&example_bin("server"));
    let hotswap = path_str(&hotswap_bin());
    let block_then_exec = "import os, signal, sys\n\
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1})\n\
        os.execv(sys.argv[1], sys.argv[1:])";
    let args: Vec<String> = ["-c", block_then_exec, &hotswap, "--control", "{dir}/ctl.sock"]
        .into_iter()
        .chain(["-l", &listen, "--", &server])
        .map(String::from)
        .collect();
    let mut hs = Launch::via("python3", args).start();
    hs.wait_for_stderr("gen 1 ready", WAIT);
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let first = http_get(addr, "/").expect("gen 1 answers").pid().expect("X-Pid");
    assert_eq!(sig_set(first, "SigBlk"), 0, "the child starts with no signal blocked");

    hs.signal(Signal::SIGHUP);
    hs.wait_for_stderr("gen 1 gone", WAIT);
    let second = http_get(addr, "/").expect("gen 2 answers").pid().expect("X-Pid");
    assert_ne!(first, second, "HUP reached hotswap: a new generation answers");
    assert_eq!(sig_set(second, "SigBlk"), 0);

    hs.signal(Signal::SIGTERM);
    let status = hs.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0));
}
