//! Bad input (DESIGN.md §1): exit code 2, one clear line on stderr naming the culprit (clap's
//! "try --help" hint may follow), and nothing started — no `started` line, no process left.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::support::{free_port, path_str, pids_with_env, port_is_closed, run_hotswap};

/// One invocation that must be refused, with its own temp dir and a marker in its environment
/// that every process it might have started would inherit.
struct Refusal {
    dir: tempfile::TempDir,
    marker: String,
}

impl Refusal {
    fn new() -> Refusal {
        let dir = tempfile::tempdir().expect("create tempdir");
        let marker = format!("{}-{}", std::process::id(), path_str(dir.path()));
        Refusal { dir, marker }
    }

    fn dir(&self) -> String {
        path_str(self.dir.path())
    }

    /// Runs `hotswap --control DIR/ctl.sock ARGS` (`{dir}` replaced) to its end.
    fn run(&self, args: &[&str]) -> Output {
        let control = format!("{}/ctl.sock", self.dir());
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &self.dir())).collect();
        let mut full = vec!["--control", control.as_str()];
        full.extend(args.iter().map(String::as_str));
        let dir = self.dir();
        run_hotswap(&full, &[("XDG_RUNTIME_DIR", &dir), ("BAD_INPUT_MARKER", &self.marker)])
    }

    /// Asserts exit code 2, a first stderr line containing every one of `culprit`, nothing on
    /// stderr but that line and clap's hint, and that no child was started or left running.
    fn assert_refused(&self, out: &Output, culprit: &[&str]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "exit status {}; stderr:\n{stderr}", out.status);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let first = lines.first().unwrap_or_else(|| panic!("nothing on stderr"));
        for needle in culprit {
            assert!(
                first.to_lowercase().contains(&needle.to_lowercase()),
                "first stderr line {first:?} does not name {needle:?}"
            );
        }
        for extra in &lines[1..] {
            assert!(
                extra.contains("--help") || extra.starts_with("Usage:"),
                "more than one line of error on stderr: {extra:?}\nwhole stderr:\n{stderr}"
            );
        }
        self.assert_nothing_started(out);
    }

    /// Asserts that no child was started or left running, and no control socket left behind.
    fn assert_nothing_started(&self, out: &Output) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(" started "), "a generation was started:\n{stderr}");
        let left = pids_with_env("BAD_INPUT_MARKER", &self.marker);
        assert!(left.is_empty(), "processes left running after a refused start: {left:?}");
        let control = self.dir.path().join("ctl.sock");
        assert!(!control.exists(), "control socket {} left behind", control.display());
    }
}

#[test]
fn an_unparsable_address_is_named() {
    let r = Refusal::new();
    let out = r.run(&["--listen", "nonsense", "--", "sleep", "30"]);
    r.assert_refused(&out, &["nonsense"]);
}

#[test]
fn a_port_out_of_range_is_named() {
    let r = Refusal::new();
    let out = r.run(&["--listen", "127.0.0.1:70000", "--", "sleep", "30"]);
    r.assert_refused(&out, &["127.0.0.1:70000", "port out of range"]);
}

#[test]
fn an_address_in_use_is_named() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a listener to hold");
    let addr = held.local_addr().unwrap();
    let r = Refusal::new();
    let out = r.run(&["--listen", &addr.to_string(), "--", "sleep", "30"]);
    r.assert_refused(&out, &["address in use", &addr.to_string()]);
    // The holder is untouched: it still takes connections.
    std::net::TcpStream::connect(addr).expect("the held listener still accepts");
}

#[test]
fn a_failed_start_removes_the_unix_socket_it_created() {
    // The unix socket is bound first; the second address then fails. The file created for the
    // first must not be left behind (DESIGN.md §1: removed at exit).
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a listener to hold");
    let addr = held.local_addr().unwrap();
    let r = Refusal::new();
    let out = r.run(&["-l", "unix:{dir}/app.sock", "-l", &addr.to_string(), "--", "sleep", "30"]);
    r.assert_refused(&out, &["address in use", &addr.to_string()]);
    let file = r.dir.path().join("app.sock");
    assert!(!file.exists(), "{} left behind by a start that failed", file.display());
}

#[test]
fn a_missing_command_is_refused() {
    let port = free_port();
    let r = Refusal::new();
    let out = r.run(&["-l", &port.to_string()]);
    r.assert_refused(&out, &["command"]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(port_is_closed(addr), "port {port} is open after a refused start");
}

#[test]
fn a_command_not_found_is_named() {
    let r = Refusal::new();
    let out = r.run(&["-l", "127.0.0.1:0", "--", "no-such-cmd-xyz", "arg"]);
    r.assert_refused(&out, &["command not found: no-such-cmd-xyz"]);
}

#[test]
fn a_command_that_is_not_executable_is_named() {
    let r = Refusal::new();
    let script = r.dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = path_str(&script);
    let out = r.run(&["-l", "127.0.0.1:0", "--", &script]);
    r.assert_refused(&out, &["not executable", &script]);
}

#[test]
fn a_duration_without_unit_is_named() {
    let r = Refusal::new();
    let out = r.run(&["--drain-timeout", "30", "-l", "127.0.0.1:0", "--", "sleep", "30"]);
    r.assert_refused(&out, &["--drain-timeout", "30"]);
}

#[test]
fn an_unknown_signal_is_named() {
    let r = Refusal::new();
    let out = r.run(&["--stop-signal", "NOPE", "-l", "127.0.0.1:0", "--", "sleep", "30"]);
    r.assert_refused(&out, &["--stop-signal", "NOPE"]);
}

/// clap's usage errors (an option hotswap does not have) exit 2 too, naming the option; clap
/// adds a tip and the usage to its line.
#[test]
fn an_unknown_option_exits_2() {
    let r = Refusal::new();
    let out = r.run(&["--no-such-option", "-l", "127.0.0.1:0", "--", "sleep", "30"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status {}; stderr:\n{stderr}", out.status);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("'--no-such-option'"), "first stderr line {first:?}");
    r.assert_nothing_started(&out);
}

#[test]
fn a_valid_command_line_does_start() {
    // The control case for the marker check above: the same kind of invocation, valid, does start
    // a child carrying the marker (so "no process left" above is not vacuous). `--restart never`
    // with a child that exits 5: hotswap ends with 5.
    let r = Refusal::new();
    let out = r.run(&[
        "-l",
        "127.0.0.1:0",
        "--ready",
        "delay:10ms",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "tr '\\0' '\\n' < /proc/$$/environ | grep -q \"^BAD_INPUT_MARKER=$BAD_INPUT_MARKER$\" && exit 5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gen 1 started"), "no child was started:\n{stderr}");
    assert_eq!(out.status.code(), Some(5), "the child did not see the marker; stderr:\n{stderr}");
}
