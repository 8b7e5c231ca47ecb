//! The control socket (issue #3, DESIGN.md §6): peer uid check, one hotswap per socket path
//! (a stale one is taken over), `status` in JSON and as a table, and `reload`'s exit codes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hotswap::protocol::control::{
    ChildState, ChildStatus, LastReloadResult, ReloadResult, Reply, SocketStatus,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::service::*;
use crate::support::{Hotswap, Launch, hotswap_bin, path_str, pid_alive, run_hotswap};

/// Runs `setpriv --reuid=65534 --regid=65534 --clear-groups hotswap ARGS` to its end.
fn run_as_nobody(args: &[&str]) -> Output {
    let mut argv = ["--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from).to_vec();
    argv.push(path_str(&hotswap_bin()));
    argv.extend(args.iter().map(|a| a.to_string()));
    Launch::via("setpriv", argv).run()
}

/// A client running as another uid (nobody) reaches the socket but is refused: exit 4,
/// "permission denied", a log line in hotswap, and its reload does not happen.
#[test]
fn a_request_from_another_uid_is_refused() {
    let svc = Service::start(&[], &[&server()], &[]);
    // hotswap made the socket 0600 in our 0700 temp dir; open both up so that only hotswap's
    // own uid check stands in the way.
    std::fs::set_permissions(svc.hs.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&svc.ctl, std::fs::Permissions::from_mode(0o666)).unwrap();

    // Each a few times: a refusal must be reliable, not won in a race.
    let commands = [&["status"][..], &["status", "--json"], &["reload", "--wait"]];
    for command in commands.iter().cycle().take(30) {
        let from = svc.hs.stderr().line_count();
        let mut args = command.to_vec();
        args.extend_from_slice(&["--control", &svc.ctl]);
        let out = run_as_nobody(&args);
        assert_eq!(out.status.code(), Some(4), "{command:?} as nobody: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("permission denied"), "{command:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{command:?} printed something: {}", describe(&out));
        let refused = svc.hs.wait_for_stderr_after(from, "control request refused", WAIT);
        assert!(refused.contains("uid 65534"), "{refused}");
    }
    // Root is still served, and nobody's reload did not happen.
    let status = svc.status();
    assert_eq!(status.generation, Some(1), "{status:#?}");
    assert!(!svc.logged_after(0, "gen 2 started"), "the refused reload ran");
    assert_eq!(svc.generation(), 1);
}

/// A second hotswap with the same `--control` path refuses to start (exit 2) while the first
/// runs; once the first is SIGKILLed, leaving its socket file behind, a new one takes over.
#[test]
fn one_hotswap_per_control_socket_and_a_stale_one_is_taken_over() {
    let first = Service::start(&[], &[&server()], &[]);
    let ctl = first.ctl.clone();
    let server = server();

    let mut second = Hotswap::start(&["--control", &ctl, "-l", "127.0.0.1:0", "--", &server], &[]);
    let status = second.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "second hotswap on {ctl}: {status}");
    let refusal = second.wait_for_stderr("another hotswap is running", WAIT);
    assert!(refusal.contains(&ctl), "{refusal}");
    assert!(!second.stderr().lines().iter().any(|l| l.contains("gen 1 started")));
    // The first is unaffected.
    assert_eq!(first.status().pid, first.hs.pid() as u32);
    assert_eq!(first.generation(), 1);

    // SIGKILL the first (and, by pid, the children it can no longer stop).
    let children = first.hs.descendants();
    first.hs.signal(Signal::SIGKILL);
    for pid in &children {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    wait_until("the first hotswap and its children to die", WAIT, || {
        (!pid_alive(first.hs.pid()) && children.iter().all(|p| !pid_alive(*p))).then_some(())
    });
    assert!(std::path::Path::new(&ctl).exists(), "the stale socket file should still be there");

    let third = Hotswap::start(&["--control", &ctl, "-l", "127.0.0.1:0", "--", &server], &[]);
    third.wait_for_stderr("gen 1 ready after ", WAIT);
    let status = parse_status(&run_hotswap(&["status", "--json", "--control", &ctl], &[]));
    assert_eq!(status.pid, third.pid() as u32, "{status:#?}");
    drop(first);
}

/// Now as a Unix time in seconds, as `status --json` writes times.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// hotswap turns its monotonic child start times into Unix times; they may be off by this much.
const CLOCK_SLACK: f64 = 1.0;

/// `status --json` has every documented field, with the values the test knows: the service's
/// name, pid, binary and socket, the child with its state, restarts, the connection it holds open
/// and the STATUS= it sent; after a reload, `last_reload` describes it as the log did.
#[test]
fn status_json_describes_the_service() {
    let before = unix_now();
    let svc = Service::start(&["--name", "web"], &[&server()], &[]);
    let pid = svc.get().pid().expect("X-Pid");

    // A keep-alive connection the child has accepted and answered, still open.
    let mut held = TcpStream::connect(svc.addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = held.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let s = svc.status();
    let asked = unix_now();
    assert_eq!(s.name, "web", "{s:#?}");
    assert_eq!(s.pid, svc.hs.pid() as u32, "{s:#?}");
    assert!(before <= s.started_at && s.started_at <= asked, "started_at: {s:#?}");
    assert_eq!(s.binary, path_str(&hotswap_bin()), "{s:#?}");
    let socket = SocketStatus {
        fd: Some(3),
        name: "unknown".into(),
        address: svc.addr.to_string(),
        origin: "listen".into(),
        problem: None,
    };
    assert_eq!(s.sockets, std::slice::from_ref(&socket), "an unnamed --listen socket");
    assert_eq!(s.generation, Some(1), "{s:#?}");
    let [c] = &s.children[..] else { panic!("not one child: {s:#?}") };
    let child_started = c.started_at;
    assert!(
        s.started_at - CLOCK_SLACK <= child_started && child_started <= asked + CLOCK_SLACK,
        "the child's started_at: {s:#?}"
    );
    let expected = ChildStatus {
        pid,
        generation: 1,
        instance: 0,
        state: ChildState::Ready,
        started_at: child_started,
        restarts: 0,
        connections: 1,
        status: Some("serving gen 1".into()),
    };
    assert_eq!(*c, expected, "the child, holding the keep-alive connection: {s:#?}");
    assert_eq!(s.last_reload, None, "no reload yet: {s:#?}");
    drop(held);

    let from = svc.hs.stderr().line_count();
    let reload_began = unix_now();
    let began = Instant::now();
    let out = svc.cli(&["reload", "--wait"]);
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ready = svc.hs.wait_for_stderr_after(from, "gen 2 ready after ", WAIT);
    let second = pids_in(&svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT));
    let after = svc.status();
    assert_eq!(
        (after.name.as_str(), after.pid, after.started_at, &after.binary, &after.sockets[..]),
        ("web", s.pid, s.started_at, &s.binary, &[socket][..]),
        "what a reload does not change"
    );
    assert_eq!(after.generation, Some(2), "{after:#?}");
    let [c] = &after.children[..] else { panic!("gen 1 should be gone: {after:#?}") };
    assert!(
        reload_began - CLOCK_SLACK <= c.started_at && c.started_at <= unix_now() + CLOCK_SLACK,
        "gen 2's started_at: {after:#?}"
    );
    let expected = ChildStatus {
        pid: second[0],
        generation: 2,
        instance: 0,
        state: ChildState::Ready,
        started_at: c.started_at,
        restarts: 0,
        connections: 0,
        status: Some("serving gen 2".into()),
    };
    assert_eq!(*c, expected, "gen 2's child, no connection yet: {after:#?}");
    let last = after.last_reload.as_ref().expect("last_reload after a reload");
    assert_eq!(
        (last.generation, last.result, last.reason.as_deref()),
        (2, LastReloadResult::Ok, None),
        "{after:#?}"
    );
    // The new generation's start to ready, as the log line said (it rounds past 1s to 0.1s),
    // and no longer than the client waited.
    let duration = Duration::from_millis(last.duration_ms);
    let logged = duration_after(&ready, "ready after ");
    assert!(duration.abs_diff(logged) <= Duration::from_millis(50), "{duration:?} vs {ready}");
    assert!(duration <= took, "duration_ms {duration:?}, but reload --wait took {took:?}");
    assert_eq!(svc.get().pid(), Some(second[0]));
}

/// The human table names the service and shows each child with its pid, generation and state,
/// the draining one included.
#[test]
fn status_table_shows_the_children() {
    let command = server_by_generation(&[(1, "--ignore-term")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&["--name", "web", "--drain-timeout", "20s"], &command, &[]);
    let first = svc.get().pid().expect("X-Pid");
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    // Generation 1 ignores SIGTERM, so it stays draining until the test ends.
    svc.wait_index(from, "gen 1 retiring (pids ");
    let second = pids_in(&svc.hs.stderr().lines()[svc.wait_index(from, "gen 2 started")])[0];

    let out = svc.cli(&["status"]);
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("web"), "{table}");
    assert!(table.contains(&svc.hs.pid().to_string()), "{table}");
    let row = |pid: u32| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for pid {pid} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let old = row(first);
    assert!(old.contains(&"1".to_string()) && old.contains(&"draining".to_string()), "{table}");
    let new = row(second);
    assert!(new.contains(&"2".to_string()) && new.contains(&"ready".to_string()), "{table}");
    // The same states in JSON.
    let status = svc.status();
    assert_eq!(state_of(&status, first), Some(ChildState::Draining), "{status:#?}");
    assert_eq!(state_of(&status, second), Some(ChildState::Ready), "{status:#?}");
}

/// `reload` and `status` for a service that does not run exit 2, by path, by name and with
/// nothing running at all; so do their usage errors.
#[test]
fn reload_and_status_of_no_such_service_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = path_str(&dir.path().join("nope.sock"));
    let xdg = path_str(dir.path());
    let refused: [&[&str]; 13] = [
        &["reload", "--control", &missing],
        &["reload", "--wait", "--control", &missing],
        &["reload", "nosuchservice"],
        &["reload"],
        &["status", "--control", &missing],
        &["status", "--json", "--control", &missing],
        &["status", "nosuchservice"],
        &["status"],
        // Usage errors.
        &["reload", "--no-such-option"],
        &["reload", "--wait", "--timeout", "soon", "--control", &missing],
        &["reload", "one", "two"],
        &["status", "--no-such-option"],
        &["status", "--timeout", "1s"],
    ];
    for args in refused {
        let out = run_hotswap(args, &[("XDG_RUNTIME_DIR", &xdg)]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
        assert!(out.stdout.is_empty(), "{args:?} printed something: {}", describe(&out));
    }
}

/// Without `--control`, `status` and `reload` find a service by its name, or the only one
/// running; with several running and no name they refuse (exit 2) and name them.
#[test]
fn the_service_is_found_by_name_or_as_the_only_one() {
    let shared = tempfile::tempdir().unwrap();
    let xdg = path_str(shared.path());
    let env = [("XDG_RUNTIME_DIR", xdg.as_str())];
    // No --control: each takes $XDG_RUNTIME_DIR/hotswap/NAME.sock.
    let start = |name: &str| {
        let hs =
            Hotswap::start(&["--name", name, "--ready", "delay:10ms", "--", "sleep", "60"], &env);
        hs.wait_for_stderr("gen 1 ready after ", WAIT);
        hs
    };
    let status = |args: &[&str]| run_hotswap(args, &env);

    let alpha = start("alpha");
    let only = parse_status(&status(&["status", "--json"]));
    assert_eq!((only.name.as_str(), only.pid), ("alpha", alpha.pid() as u32), "the only one");
    let out = run_hotswap(&["reload", "--wait"], &env);
    assert_eq!(out.status.code(), Some(0), "reload of the only one: {}", describe(&out));

    let beta = start("beta");
    let out = status(&["status"]);
    assert_eq!(out.status.code(), Some(2), "two running, no name: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alpha") && stderr.contains("beta"), "{}", describe(&out));
    let out = run_hotswap(&["reload"], &env);
    assert_eq!(out.status.code(), Some(2), "reload, two running, no name: {}", describe(&out));
    for (name, hs) in [("alpha", &alpha), ("beta", &beta)] {
        let by_name = parse_status(&status(&["status", name, "--json"]));
        assert_eq!((by_name.name.as_str(), by_name.pid), (name, hs.pid() as u32));
    }
    assert_eq!(parse_status(&status(&["status", "alpha", "--json"])).generation, Some(2));
}

/// `--pid-file PATH` (DESIGN.md §1) finds the hotswap of that pid, even with its control socket
/// outside the runtime directory; a pid file that holds no pid, or the pid of a process that is
/// gone or is not a hotswap, is one line and exit 2.
#[test]
fn the_service_is_found_by_its_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = path_str(&dir.path().join("runtime"));
    let env = [("XDG_RUNTIME_DIR", xdg.as_str())];
    let pid_file = path_str(&dir.path().join("app.pid"));
    let control = path_str(&dir.path().join("elsewhere.sock"));
    let args = ["--pid-file", &pid_file, "--control", &control, "--ready", "delay:10ms"];
    let mut argv = args.to_vec();
    argv.extend(["--", "sleep", "60"]);
    let hs = Hotswap::start(&argv, &env);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);

    let found = parse_status(&run_hotswap(&["status", "--json", "--pid-file", &pid_file], &env));
    assert_eq!(found.pid, hs.pid() as u32, "the hotswap of the pid file");
    let out = run_hotswap(&["reload", "--wait", "--pid-file", &pid_file], &env);
    assert_eq!(out.status.code(), Some(0), "reload by pid file: {}", describe(&out));
    let again = parse_status(&run_hotswap(&["status", "--json", "--pid-file", &pid_file], &env));
    assert_eq!(again.generation, Some(2), "the reload reached it");

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path_str(&path)
    };
    // A process that is not a hotswap: this test's own.
    let not_hotswap = write("other.pid", &format!("{}\n", std::process::id()));
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let cases = [
        (write("garbage.pid", "hello\n"), "not a pid"),
        (write("gone.pid", &gone_pid.to_string()), "no process"),
        (not_hotswap, "answers on no control socket"),
        (path_str(&dir.path().join("missing.pid")), "missing.pid"),
    ];
    for (path, says) in cases {
        let out = run_hotswap(&["status", "--pid-file", &path], &env);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("--pid-file"), "{path}: {stderr}");
    }
    let out = run_hotswap(&["status", "--pid-file", &pid_file, "--control", &control], &env);
    assert_eq!(out.status.code(), Some(2), "--pid-file with --control: {}", describe(&out));
}

/// A `reload --wait` that hotswap's stop cuts short exits 1: the reload will not happen.
#[test]
fn reload_wait_cancelled_by_a_stop_exits_1() {
    let command = server_by_generation(&[(2, "--boot-delay 3s")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut svc = Service::start(&[], &command, &[]);
    let from = svc.hs.stderr().line_count();
    let out = std::thread::scope(|s| {
        let client = s.spawn(|| svc.cli(&["reload", "--wait"]));
        // Its waiter is attached to generation 2 once that starts; it is still booting.
        svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT);
        svc.hs.signal(Signal::SIGTERM);
        client.join().expect("the client thread")
    });
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reload cancelled"), "{}", describe(&out));
    assert!(!svc.logged_after(from, "gen 2 ready"), "gen 2 became ready: nothing was cut short");
    assert_eq!(svc.hs.wait_exit(WAIT).code(), Some(0), "hotswap's own exit after TERM");
}

/// The control socket's wire protocol (DESIGN.md §6), spoken directly: `reload` with `wait`
/// streams each step then the result, `reload` alone is accepted, `status` answers a status.
#[test]
fn the_control_protocol_streams_steps_then_the_result() {
    let svc = Service::start(&[], &[&server()], &[]);
    let replies = control_exchange(&svc.ctl, r#"{"cmd":"reload","wait":true}"#);
    let (last, steps) = replies.split_last().expect("replies");
    assert_eq!(
        *last,
        Reply::Done { result: ReloadResult::TookOver, generation: Some(2), reason: None },
        "{replies:?}"
    );
    let steps: Vec<&str> = steps
        .iter()
        .map(|r| match r {
            Reply::Step { step } => step.as_str(),
            other => panic!("not a step before the result: {other:?} in {replies:?}"),
        })
        .collect();
    let expected =
        ["gen 2 started (pids ", "gen 2 ready after ", "gen 1 retiring (pids ", "gen 1 gone"];
    assert_eq!(steps.len(), expected.len(), "{steps:?}");
    for (step, start) in steps.iter().zip(expected) {
        assert!(step.starts_with(start), "{step:?} should start with {start:?}: {steps:?}");
    }

    let replies = control_exchange(&svc.ctl, r#"{"cmd":"reload"}"#);
    assert_eq!(replies, [Reply::Accepted { accepted: true }]);
    svc.hs.wait_for_stderr("gen 3 ready after ", WAIT);

    let replies = control_exchange(&svc.ctl, r#"{"cmd":"status"}"#);
    let [Reply::Status(status)] = &replies[..] else { panic!("{replies:?}") };
    assert_eq!((status.pid, status.generation), (svc.hs.pid() as u32, Some(3)), "{status:#?}");
}

/// `reload --wait --timeout 1s` gives up after 1s (exit 3) on a generation that needs 3s, before
/// that generation is ready; the reload goes on and completes.
#[test]
fn reload_wait_timeout_exits_3_and_the_reload_goes_on() {
    let command = server_by_generation(&[(2, "--boot-delay 3s")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&[], &command, &[]);
    let from = svc.hs.stderr().line_count();
    let began = Instant::now();
    let out = svc.cli(&["reload", "--wait", "--timeout", "1s"]);
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("after 1s; the reload goes on"), "{}", describe(&out));
    assert!(took >= Duration::from_millis(950), "returned after {took:?}, before its 1s timeout");
    // The client returned before the generation it waited for was ready.
    assert!(!svc.logged_after(from, "gen 2 ready"), "gen 2 was ready before the timeout");
    let switch = svc.wait_switch(from, 2, 1);
    assert!(switch.ready_after >= Duration::from_millis(2900), "{switch:?}");
    assert_eq!(svc.generation(), 2);
}
