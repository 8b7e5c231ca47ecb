//! Stopping and crashing (DESIGN.md §2): SIGTERM drains a request in flight and cleans up, SIGQUIT
//! kills at once, `--restart never` passes the child's status on, `--restart on-failure` brings a
//! crashed child back without refusing a connection, and orphans are reaped (subreaper).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hotswap::protocol::control::Status;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    Launch, WAIT, example_bin, free_port, http_get, path_str, pid_alive, port_is_closed, proc_stat,
    run_hotswap, serve_example, wait_until, zombies_of,
};

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Connects to `addr` and sends `GET path` with `Connection: close`, without reading.
fn send_request(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    s
}

/// Reads until the server closes; the status code of the response, or why there is none.
fn read_status(mut s: TcpStream) -> Result<u16, String> {
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if raw.is_empty() => return Err(format!("read: {e}")),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&raw);
    let status_line = text.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response, got {} bytes: {text:?}", raw.len()))
}

/// The sockets in process `pid`'s fd table, by inode.
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:").map(str::to_string))
        .collect()
}

/// Sends `GET path` to the server `pid` on `port` and waits until the server has accepted the
/// connection: a socket is in its fd table that was not before (one still in the accept queue
/// is in nobody's). The test makes no other connection meanwhile.
fn send_accepted_request(pid: u32, port: u16, path: &str) -> TcpStream {
    let before = socket_inodes(pid);
    let stream = send_request(local(port), path);
    wait_until(&format!("pid {pid} to accept the connection"), WAIT, || {
        socket_inodes(pid).difference(&before).next().map(drop)
    });
    stream
}

#[test]
fn sigterm_drains_the_request_in_flight_then_cleans_up() {
    graceful_stop(Signal::SIGTERM);
}

#[test]
fn sigint_drains_the_request_in_flight_then_cleans_up() {
    graceful_stop(Signal::SIGINT);
}

/// `sig` (TERM or INT) makes hotswap drain a request in flight, exit 0 and clean up.
fn graceful_stop(sig: Signal) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (mut hs, child) =
        serve_example(&["--pid-file", "{dir}/hotswap.pid", "--listen", &listen], &[]);
    let pid_file = hs.dir().join("hotswap.pid");
    let written = std::fs::read_to_string(&pid_file).expect("the pid file is written");
    assert_eq!(written.trim(), hs.pid().to_string(), "the pid file's content");

    let in_flight = send_accepted_request(child, port, "/?delay=1500");
    let stop_sent = Instant::now();
    hs.signal(sig);
    assert_eq!(read_status(in_flight), Ok(200), "the request in flight when {sig} came");
    let status = hs.wait_exit(WAIT);
    assert!(stop_sent.elapsed() >= Duration::from_millis(1000), "hotswap did not wait for it");
    assert_eq!(status.code(), Some(0), "hotswap's exit after {sig}: {status}");
    assert!(!pid_alive(child as i32), "the child {child} outlived hotswap");
    assert!(port_is_closed(local(port)), "127.0.0.1:{port} still accepts after hotswap exited");
    assert!(!pid_file.exists(), "the pid file {} is left behind", pid_file.display());
}

#[test]
fn sigquit_kills_at_once() {
    let port = free_port();
    let (mut hs, child) = serve_example(&["--listen", &format!("127.0.0.1:{port}")], &[]);
    // The child's own timer would answer after 8s; a graceful stop would wait for it.
    let in_flight = send_accepted_request(child, port, "/?delay=8000");
    hs.signal(Signal::SIGQUIT);
    let status = hs.wait_exit(WAIT);
    let result = read_status(in_flight);
    assert!(
        result.is_err(),
        "the request in flight was answered ({result:?}): SIGQUIT waited for the child's timer"
    );
    assert_eq!(status.code(), Some(0), "hotswap's exit after SIGQUIT: {status}");
    assert!(!pid_alive(child as i32), "the child {child} is still running after SIGQUIT");
    assert!(port_is_closed(local(port)), "127.0.0.1:{port} still accepts");
}

#[test]
fn restart_never_exits_with_the_childs_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let control = path_str(&dir.path().join("ctl.sock"));
    let server = path_str(&example_bin("server"));
    let args = [
        "--control",
        &control,
        "--restart",
        "never",
        "-l",
        "127.0.0.1:0",
        "--",
        &server,
        "--exit-at-start",
        "3",
    ];
    let out = run_hotswap(&args, &[("XDG_RUNTIME_DIR", &path_str(dir.path()))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gen 1 started"), "the child was not started:\n{stderr}");
    assert_eq!(out.status.code(), Some(3), "hotswap's exit status; stderr:\n{stderr}");
}

#[test]
fn restart_never_exits_with_128_plus_the_signal_that_killed_the_child() {
    // SIGUSR2, which the example server does not handle, kills it as well as SIGKILL does.
    for sig in [Signal::SIGKILL, Signal::SIGUSR2] {
        let (mut hs, child) = serve_example(&["--restart", "never", "-l", "127.0.0.1:0"], &[]);
        kill(Pid::from_raw(child as i32), sig).expect("kill the child");
        let status = hs.wait_exit(WAIT);
        assert_eq!(status.code(), Some(128 + sig as i32), "hotswap's exit after {sig}: {status}");
    }
}

#[test]
fn a_crashed_child_is_restarted_and_the_port_never_refuses() {
    let port = free_port();
    // A slow boot widens the window in which no child is ready to accept.
    let (hs, first) =
        serve_example(&["--listen", &format!("127.0.0.1:{port}")], &["--boot-delay", "500ms"]);
    let before = http_get(local(port), "/").expect("GET before the crash");
    assert_eq!(before.pid(), Some(first), "{before:?}");

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the child");
    let exited = hs.wait_for_stderr(&format!("(pid {first})"), WAIT);
    assert!(exited.contains("warning"), "the crash is not a warning: {exited:?}");
    let after_crash = hs.stderr().line_count();
    // Now no child accepts; the listening socket, held by hotswap, must still take connections.
    let during = send_request(local(port), "/");
    let served_at_connect = hs.stderr().lines()[after_crash..]
        .iter()
        .any(|l| l.contains("server[") && l.contains("ready"));
    assert!(!served_at_connect, "the replacement was already ready: the window was not tested");

    hs.wait_for_stderr("instance 0 restarting in", WAIT);
    let status = read_status(during);
    assert_eq!(status, Ok(200), "the connection made while no child was ready");
    let after = http_get(local(port), "/").expect("GET after the restart");
    assert_eq!(after.status, 200, "{after:?}");
    let second = after.pid().expect("X-Pid");
    assert_ne!(second, first, "the same pid answers after it was killed");
    assert!(hs.descendants().contains(&(second as i32)), "pid {second} is not hotswap's child");
}

#[test]
fn an_orphaned_grandchild_is_reaped() {
    let (hs, _child) = serve_example(&["-l", "127.0.0.1:0"], &["--spawn-orphan"]);
    let line = hs.wait_for_stderr("orphan pid ", WAIT);
    let orphan: i32 = line[line.find("orphan pid ").unwrap() + 11..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no pid in {line:?}: {e}"));
    // Its shell parent has exited: it belongs to hotswap now, not to init.
    if let Some(stat) = proc_stat(orphan) {
        assert_eq!(stat.ppid, hs.pid(), "orphan {orphan} was re-parented elsewhere: {stat:?}");
    }
    // Once it exits, only hotswap can reap it; a zombie would keep /proc/<pid> (state Z).
    wait_until(&format!("orphan {orphan} to be reaped"), WAIT, || {
        proc_stat(orphan).is_none().then_some(())
    });
    assert!(zombies_of(hs.pid()).is_empty(), "zombies under hotswap: {:?}", zombies_of(hs.pid()));
}

#[test]
fn a_closed_stderr_does_not_stop_hotswap_or_orphan_its_children() {
    // `hotswap … | logger` where logger died: every later log line meets EPIPE.
    let server = path_str(&example_bin("server"));
    let args = ["--control", "{dir}/ctl.sock", "--listen", "127.0.0.1:0", "--", &server];
    let mut hs = Launch { broken_stderr: true, ..Launch::hotswap(&args) }.start();
    let control = path_str(&hs.dir().join("ctl.sock"));
    // The pid of the only child once `generation` serves alone.
    let serving = |generation: u64| {
        let out = run_hotswap(&["status", "--control", &control, "--json"], &[]);
        let status: Status = serde_json::from_slice(&out.stdout).ok()?;
        let [child] = &status.children[..] else { return None };
        (status.generation == Some(generation)).then_some(child.pid as i32)
    };
    let first = wait_until("gen 1 serving", WAIT, || serving(1));

    let reload = run_hotswap(&["reload", "--control", &control, "--wait"], &[]);
    assert_eq!(reload.status.code(), Some(0), "reload with stderr closed: {reload:?}");
    let second = wait_until("gen 2 serving alone", WAIT, || serving(2));
    assert!(!pid_alive(first), "gen 1's child {first} drained and gone");
    hs.signal(Signal::SIGTERM);
    let exit = hs.wait_exit(WAIT);
    assert_eq!(exit.code(), Some(0), "a clean stop, not a panic (101)");
    assert!(!pid_alive(second), "gen 2's child {second} outlived hotswap");
}
