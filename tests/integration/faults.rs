//! Faults found by replaying public bug reports against hotswap (issue 9, DESIGN.md §2, §3,
//! §4): no signal kills hotswap by accident, nothing a generation starts outlives it, the
//! sockets stay healthy. One test per fault, each of which failed before its fix.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::support::service::{Service, index_of, server};
use crate::support::{
    Hotswap, Launch, WAIT, free_port, hotswap_bin, http_get, path_str, pid_alive, proc_stat,
    run_hotswap, wait_until,
};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faults").join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path_str(&path)
}

/// How hotswap runs: as root, where it gives each child a cgroup, or as `nobody`, where it
/// may not and follows the process tree, the process group and the environment instead.
#[derive(Clone, Copy, Debug)]
enum Tracking {
    Cgroup,
    Tree,
}

/// A runtime dir `nobody` owns (for the `Tree` runs); removed when dropped.
struct NobodyDir(tempfile::TempDir);

impl NobodyDir {
    fn new() -> NobodyDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(dir.path(), nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
        NobodyDir(dir)
    }
}

/// `hotswap ARGS` as root, or as `nobody` (setpriv) with a runtime dir of its own.
fn launch(tracking: Tracking, args: &[&str], rt: &NobodyDir) -> Launch {
    match tracking {
        Tracking::Cgroup => Launch::hotswap(args),
        Tracking::Tree => {
            let mut all: Vec<String> =
                ["--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from).to_vec();
            all.push(path_str(&hotswap_bin()));
            all.extend(args.iter().map(|a| a.to_string()));
            Launch::via("setpriv", all).env(&[("XDG_RUNTIME_DIR", &path_str(rt.0.path()))])
        }
    }
}

fn tracking_used(hs: &Hotswap, tracking: Tracking) {
    let pid = hs.pid();
    let cgroup = std::fs::read_dir("/sys/fs/cgroup/unified")
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name() == *format!("hotswap.{pid}")))
        .unwrap_or(false);
    match tracking {
        Tracking::Cgroup => {
            assert!(cgroup, "hotswap {pid} made no cgroup (is this root on cgroup v2?)")
        }
        Tracking::Tree => assert!(!cgroup, "hotswap {pid} as nobody made a cgroup"),
    }
}

/// Waits until no process other than hotswap carries the test's marker.
fn nothing_left(hs: &Hotswap, what: &str) {
    wait_until(what, WAIT, || hs.marked().is_empty().then_some(()));
}

fn addr_of(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn reload_and_wait(hs: &Hotswap, new: u64) {
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    hs.wait_for_stderr_after(from, &format!("gen {new} ready after "), WAIT);
    hs.wait_for_stderr_after(from, &format!("gen {} gone, drained after ", new - 1), WAIT);
}

// ---- 1, 2: signals ----

/// A deploy script that waits for `--pid-file` and then sends HUP at once: a reload, never a
/// death (HUP is blocked from hotswap's first instruction until its handler runs).
#[test]
fn a_hup_the_moment_the_pid_file_appears_is_a_reload() {
    for attempt in 0..25 {
        let mut hs = Hotswap::start(
            &["--pid-file", "{dir}/app.pid", "-l", "127.0.0.1:0", "--", &server()],
            &[],
        );
        let pid_file = hs.dir().join("app.pid");
        // Spin rather than poll every 10 ms: a deploy script's `while [ ! -e ]` is this quick,
        // and the moment right after the file appears is the one that matters.
        let deadline = std::time::Instant::now() + WAIT;
        while !pid_file.exists() {
            assert!(std::time::Instant::now() < deadline, "no pid file");
            std::hint::spin_loop();
        }
        hs.signal(Signal::SIGHUP);
        let line = hs.wait_for_any(0, &["gen 2 ready after ", "gen 2 failed"], WAIT);
        assert!(line.contains("gen 2 ready"), "attempt {attempt}: {line}");
        hs.signal(Signal::SIGTERM);
        assert_eq!(hs.wait_exit(WAIT).code(), Some(0), "attempt {attempt}");
        assert!(!pid_file.exists(), "attempt {attempt}: a stale pid file");
    }
}

// ---- 3, 4, 5: everything a generation starts ends with it ----

/// A master that starts its worker with setsid and exits on SIGTERM without stopping it:
/// after a reload only the new generation answers; after the stop nothing is left.
#[test]
fn a_worker_that_left_the_process_group_ends_with_its_generation() {
    for tracking in [Tracking::Cgroup, Tracking::Tree] {
        let rt = NobodyDir::new();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let master = fixture("setsid_master.py");
        let args = ["-l", &listen, "--", "/usr/bin/python3", &master];
        let mut hs = launch(tracking, &args, &rt).start();
        hs.wait_for_stderr("gen 1 ready after ", WAIT);
        tracking_used(&hs, tracking);
        let worker_line = hs.wait_for_stderr("worker ", WAIT);
        let old_worker: i32 = worker_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_ne!(proc_stat(old_worker).unwrap().pgrp, proc_stat(old_worker).unwrap().ppid);
        reload_and_wait(&hs, 2);
        assert!(!pid_alive(old_worker), "{tracking:?}: gen 1's worker outlived gen 1");
        for i in 0..20 {
            let r = http_get(addr_of(port), "/").expect("GET");
            assert_eq!(r.generation(), Some(2), "{tracking:?}: request {i} answered by {r:?}");
        }
        hs.signal(Signal::SIGTERM);
        assert_eq!(hs.wait_exit(WAIT).code(), Some(0));
        nothing_left(&hs, &format!("{tracking:?}: nothing left after the stop"));
    }
}

/// A worker that ignores the stop signal after its master exited still ends at the drain
/// deadline: the generation is gone only then.
#[test]
fn a_left_behind_worker_that_ignores_term_is_killed_at_the_drain_deadline() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let master = fixture("setsid_master.py");
    let args = ["-l", &listen, "--drain-timeout", "1s", "--", "/usr/bin/python3", &master];
    let hs = Hotswap::start(&args, &[("WORKER_IGNORES_TERM", "1")]);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let old_worker: i32 =
        hs.wait_for_stderr("worker ", WAIT).split(' ').nth(1).unwrap().parse().unwrap();
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    let killing = hs.wait_for_stderr_after(from, "still running after 1s: SIGKILL", WAIT);
    let gone = hs.wait_for_stderr_after(from, "gen 1 gone, drained after ", WAIT);
    let lines = hs.stderr().lines();
    assert!(index_of(&lines, from, &killing) < index_of(&lines, from, &gone), "{lines:#?}");
    assert!(!pid_alive(old_worker), "the worker outlived the drain deadline");
}

/// A child that double-forks a daemon and exits 0 is a failed start; the daemon goes with
/// it, every time, so daemons never pile up.
#[test]
fn a_daemonizing_child_leaves_no_daemon_behind() {
    for tracking in [Tracking::Cgroup, Tracking::Tree] {
        let rt = NobodyDir::new();
        let daemon = fixture("daemonize.py");
        let args = ["-l", "127.0.0.1:0", "--ready", "notify", "--", "/usr/bin/python3", &daemon];
        let hs = launch(tracking, &args, &rt).start();
        hs.wait_for_stderr("gen 3 failed", WAIT);
        tracking_used(&hs, tracking);
        // Lines from the daemon and from hotswap share one pipe and may run together, and a
        // daemon's line may come after hotswap's about its start.
        let daemons_logged = || -> Vec<i32> {
            hs.stderr()
                .lines()
                .iter()
                .filter_map(|l| {
                    let digits: String = l
                        .strip_prefix("daemon ")?
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    digits.parse().ok()
                })
                .collect()
        };
        let daemons = wait_until(&format!("{tracking:?}: three daemons"), WAIT, || {
            Some(daemons_logged()).filter(|d| d.len() >= 3)
        });
        let lines = hs.stderr().lines();
        for daemon in &daemons[..3] {
            let what = format!("{tracking:?}: daemon {daemon} killed with its start");
            wait_until(&what, WAIT, || (!pid_alive(*daemon)).then_some(()));
        }
        assert!(
            lines.iter().filter(|l| l.contains("left 1 process(es) running: killed")).count() >= 3,
            "{tracking:?}: named each time: {lines:#?}"
        );
        drop(hs);
    }
}

/// A readiness probe that hangs runs in a process group of its own and is killed when its
/// generation's start ends (rolled back) and when hotswap stops.
#[test]
fn a_hung_probe_is_killed_with_its_start_and_with_hotswap() {
    let probe = "exec:test -e {dir}/ok || exec sleep 40";
    let dir_marker = "{dir}/ok";
    let svc_args =
        ["--ready", probe, "--ready-timeout", "1s", "-l", "127.0.0.1:0", "--", &server()];
    let mut hs = Hotswap::start(&svc_args, &[]);
    let ok = PathBuf::from(dir_marker.replace("{dir}", &path_str(hs.dir())));
    std::fs::write(&ok, "").unwrap();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    std::fs::remove_file(&ok).unwrap();
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    let sleeping = || -> Vec<i32> {
        hs.marked()
            .into_iter()
            .filter(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep\0"))
            })
            .collect()
    };
    let probe_pid = wait_until("the hung probe", WAIT, || sleeping().first().copied());
    let pgrp = proc_stat(probe_pid).unwrap().pgrp;
    assert_ne!(pgrp, hs.pid(), "the probe runs in hotswap's own process group");
    assert_eq!(pgrp, probe_pid, "the probe is the leader of a group of its own");
    hs.wait_for_stderr_after(from, "gen 2 failed: not ready after 1s", WAIT);
    wait_until("the hung probe killed with its start", WAIT, || {
        sleeping().is_empty().then_some(())
    });
    // Once more, and stop hotswap while the probe hangs.
    hs.signal(Signal::SIGHUP);
    wait_until("another hung probe", WAIT, || sleeping().first().copied());
    hs.signal(Signal::SIGTERM);
    assert_eq!(hs.wait_exit(WAIT).code(), Some(0));
    nothing_left(&hs, "the probe killed with hotswap");
}

// ---- 6, 7: the sockets stay healthy ----

/// An old generation that calls shutdown() on the shared listening socket at SIGTERM: with
/// the bind shim the call is a no-op; without it, hotswap makes the socket listen again
/// before it reports the takeover, and the new generation serves.
#[test]
fn a_child_that_shuts_the_shared_tcp_socket_down_does_not_break_it() {
    for intercept in ["on", "off"] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let app = fixture("shutdown_on_term.py");
        let args = [
            "-l",
            &listen,
            "--intercept-bind",
            intercept,
            "--control",
            "{dir}/ctl.sock",
            "--",
            "python3",
            &app,
        ];
        let hs = Hotswap::start(&args, &[]);
        hs.wait_for_stderr("gen 1 ready after ", WAIT);
        let ctl = path_str(&hs.dir().join("ctl.sock"));
        let out = hs.run_cli(&["reload", "--wait", "--control", &ctl]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{intercept}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = hs.stderr().lines();
        let shut = lines.iter().any(|l| l.contains("shut the listening socket down"));
        assert!(shut, "{intercept}: the old generation called shutdown(): {lines:#?}");
        if intercept == "off" {
            assert!(lines.iter().any(|l| l.contains("listens again")), "{lines:#?}");
        }
        for i in 0..10 {
            let r = http_get(addr_of(port), "/")
                .unwrap_or_else(|e| panic!("{intercept}: GET {i}: {e}"));
            assert_eq!(r.generation(), Some(2), "{intercept}: {r:?}");
        }
        if intercept == "on" {
            let lines = hs.stderr().lines();
            assert!(
                !lines.iter().any(|l| l.contains("accept: ")),
                "shutdown() was a no-op: {lines:#?}"
            );
        }
    }
}

/// A unix listener shut down cannot listen again: `reload --wait` says so (exit 1) instead of
/// reporting a takeover, and the next reload gets a fresh socket and works.
#[test]
fn a_shut_down_unix_socket_fails_the_reload_and_is_replaced_for_the_next() {
    let app = fixture("shutdown_on_term.py");
    let args = [
        "-l",
        "unix:{dir}/app.sock",
        "--intercept-bind",
        "off",
        "--control",
        "{dir}/ctl.sock",
        "--",
        "python3",
        &app,
    ];
    let hs = Hotswap::start(&args, &[("UNIX", "1")]);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let ctl = path_str(&hs.dir().join("ctl.sock"));
    let sock = hs.dir().join("app.sock");
    let out = hs.run_cli(&["reload", "--wait", "--control", &ctl]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("app.sock") && stderr.contains("cannot listen again"), "{stderr}");
    // A generation started after the replacement holds the fresh socket: that reload is whole.
    let out = hs.run_cli(&["reload", "--wait", "--control", &ctl]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = crate::support::http_get_unix(&sock, "/").expect("GET over the fresh socket");
    assert!(r.generation() >= Some(3), "{r:?}");
}

/// A Node generation leaves the shared socket non-blocking; once no child holds it, it is
/// blocking again, so a plain blocking accept() loop that follows does not crash-loop.
#[test]
fn o_nonblock_does_not_outlive_the_generation_that_set_it() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let node = fixture("node_fd3.js");
    let blocking = fixture("blocking_accept.py");
    // The first instance runs Node; every restart runs the blocking program.
    let script = format!(
        "if [ -e {{dir}}/node-ran ]; then exec python3 {blocking}; else touch {{dir}}/node-ran; exec node {node}; fi"
    );
    let hs = Hotswap::start(&["-l", &listen, "--", "sh", "-c", &script], &[]);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let node_pid = http_get(addr_of(port), "/").expect("GET").pid().unwrap();
    let fd3 = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", hs.pid())).unwrap();
    assert!(octal_flags(&fd3) & libc::O_NONBLOCK as u32 != 0, "Node made it non-blocking: {fd3}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(node_pid as i32), Signal::SIGKILL).unwrap();
    hs.wait_for_stderr("restarted (pid ", WAIT);
    hs.wait_for_stderr("blocking accept in pid", WAIT);
    for i in 0..10 {
        let r = http_get(addr_of(port), "/").unwrap_or_else(|e| panic!("GET {i}: {e}"));
        assert_eq!(r.status, 200);
    }
    let lines = hs.stderr().lines();
    assert!(
        !lines.iter().any(|l| l.contains("accept: ")),
        "EAGAIN in the blocking program: {lines:#?}"
    );
}

fn octal_flags(fdinfo: &str) -> u32 {
    let flags = fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
    u32::from_str_radix(flags, 8).unwrap()
}

// ---- 8, 9, 10, 11 ----

/// A runtime directory deep enough that the control socket fits but a child's notify socket
/// would not: every generation still starts and signals readiness.
#[test]
fn a_deep_runtime_dir_does_not_break_the_notify_sockets() {
    let base = tempfile::tempdir().unwrap();
    // `<deep>/hotswap/server.sock` fits in 107 bytes; `<deep>/hotswap/server.PID.notify/1.0.1` not.
    let mut deep = base.path().to_path_buf();
    while path_str(&deep.join("hotswap/server.sock")).len() < 100 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let rt = path_str(&deep);
    let launch = Launch::hotswap(&["--ready", "notify", "-l", "127.0.0.1:0", "--", &server()]);
    let hs = launch.env(&[("XDG_RUNTIME_DIR", &rt)]).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    assert!(hs.stderr().lines().iter().any(|l| l.contains("is too long for a unix socket path")));
    reload_and_wait(&hs, 2);
    // Deeper still: not even the control socket fits. One line, exit 2, nothing left.
    deep.push("x".repeat(20));
    std::fs::create_dir_all(&deep).unwrap();
    let out = run_hotswap(
        &["-l", "127.0.0.1:0", "--", &server()],
        &[("XDG_RUNTIME_DIR", &path_str(&deep))],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("longer than a unix socket path can be"), "{stderr}");
}

/// hotswap's stdout is a pipe whose reader died: a generation's start script that writes to
/// stdout gets EPIPE (SIGPIPE is ignored in children, as systemd starts services) and goes on.
#[test]
fn a_child_survives_the_death_of_the_log_reader() {
    let script = format!("echo starting; echo starting again; exec {} --ready all", server());
    let launch = Launch {
        broken_stdout: true,
        ..Launch::hotswap(&["-l", "127.0.0.1:0", "--", "sh", "-c", &script])
    };
    let hs = launch.start();
    let line =
        hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed", "killed by signal"], WAIT);
    assert!(line.contains("gen 1 ready after "), "{line}");
    reload_and_wait(&hs, 2);
}

/// After hotswap is SIGKILLed, its control socket and notify directory stay behind; the next
/// hotswap removes them, and a bare `hotswap status` is not fooled by them.
#[test]
fn stale_files_of_a_killed_hotswap_are_removed_at_the_next_start() {
    let rt = tempfile::tempdir().unwrap();
    let rt_path = path_str(rt.path());
    let env = [("XDG_RUNTIME_DIR", rt_path.as_str())];
    let first = Hotswap::start(&["--name", "gone", "-l", "127.0.0.1:0", "--", &server()], &env);
    first.wait_for_stderr("gen 1 ready after ", WAIT);
    let dir = rt.path().join("hotswap");
    let stale_sock = dir.join("gone.sock");
    let stale_notify = dir.join(format!("gone.{}.notify", first.pid()));
    assert!(stale_sock.exists() && stale_notify.exists());
    drop(first); // SIGKILL, as the harness does
    let second = Hotswap::start(&["--name", "here", "-l", "127.0.0.1:0", "--", &server()], &env);
    second.wait_for_stderr("gen 1 ready after ", WAIT);
    assert!(!stale_sock.exists(), "{} left", stale_sock.display());
    assert!(!stale_notify.exists(), "{} left", stale_notify.display());
    let out = run_hotswap(&["status", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"name\": \"here\""));
}

/// `--socket-mode` defaults to what it says: 0666 & ~umask (0644 under umask 022), not the
/// 0777 & ~umask that bind() alone gives.
#[test]
fn a_unix_socket_gets_the_documented_default_mode() {
    let script = format!("umask 022; exec {} \"$@\"", path_str(&hotswap_bin()));
    let args: Vec<String> = ["-c", &script, "sh", "-l", "unix:{dir}/app.sock", "--", &server()]
        .map(String::from)
        .to_vec();
    let hs = Launch::via("sh", args).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let mode = std::fs::metadata(hs.dir().join("app.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{mode:o}");
}

// ---- the soak ----

/// 200 reloads of a child that each time starts a setsid worker, a daemon and a probe that
/// leaves a process behind: afterwards hotswap's fds and RSS are flat, no zombie is left, and
/// no process of an old generation is alive.
#[test]
fn soak_200_reloads_leave_nothing_behind() {
    let script = format!("setsid sleep 1000 & (sleep 1000 &) ; exec {} --ready notify", server());
    let svc = Service::start(&["--ready", "exec:sleep 1000 & true"], &["sh", "-c", &script], &[]);
    let hs = &svc.hs;
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", hs.pid())).unwrap().count();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", hs.pid())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap()
    };
    // Warm up: the allocator settles in the first reloads.
    for generation in 2..=11 {
        reload_and_wait(hs, generation);
    }
    let (fds_before, rss_before) = (fds(), rss());
    for generation in 12..=201 {
        reload_and_wait(hs, generation);
    }
    // A moment after a reload an fd or two may still be in flight (a claim, an exited
    // child's pipes not yet read), then as now: flat means no more than the count before.
    let settled = crate::support::poll_until(std::time::Instant::now() + WAIT, || {
        (fds() <= fds_before).then_some(())
    });
    assert!(settled.is_some(), "hotswap's fds: {fds_before} before, {} after", fds());
    let rss_after = rss();
    assert!(
        rss_after <= rss_before + 512,
        "hotswap's RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(crate::support::zombies_of(hs.pid()).is_empty(), "zombies left");
    let old: Vec<i32> = hs
        .marked()
        .into_iter()
        .filter(|&p| {
            crate::support::environ(p as u32).get("HOTSWAP_GENERATION").map(String::as_str)
                != Some("201")
        })
        .collect();
    assert!(old.is_empty(), "processes of old generations alive: {old:?}");
}
