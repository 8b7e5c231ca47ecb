//! `--user` and `--group` (issue 12, DESIGN.md §1): hotswap, as root, binds first (a port
//! below 1024, and the ports an app claims at its `bind()`), and the children run as the user
//! with that user's groups and none of hotswap's; they can still say they are ready.

use std::collections::BTreeMap;

use crate::support::service::*;
use crate::support::{GUARD_VAR, Launch, WAIT, http_get, path_str, pids_in, wait_until};

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: --user needs hotswap to run as root");
    }
    root
}

/// A free TCP port in `range` (below 1024) on 127.0.0.1. Each test has a range of its own:
/// tests run in parallel.
fn privileged_port(range: std::ops::Range<u16>) -> u16 {
    range
        .clone()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| panic!("a free port in {range:?}"))
}

/// `Uid:`, `Gid:` and `Groups:` of /proc/PID/status.
fn credentials(pid: u32) -> BTreeMap<String, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "Uid" | "Gid" | "Groups"))
        .map(|(k, v)| (k.to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// nobody's uid, gid and groups, as the system's user database has them.
fn nobody() -> (u32, u32, Vec<u32>) {
    let user = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    let name = std::ffi::CString::new("nobody").unwrap();
    let groups = nix::unistd::getgrouplist(&name, user.gid).unwrap();
    (user.uid.as_raw(), user.gid.as_raw(), groups.into_iter().map(|g| g.as_raw()).collect())
}

/// hotswap started as root with supplementary groups of its own (`setpriv --groups`), so that
/// a leak would show in the child.
fn as_root_with_groups(args: &[&str]) -> Launch {
    let mut all: Vec<String> = ["--groups", "4,27", "--"].map(String::from).to_vec();
    all.push(path_str(&crate::support::hotswap_bin()));
    all.extend(args.iter().map(|a| a.to_string()));
    Launch::via("setpriv", all)
}

#[test]
fn children_run_as_the_user_with_its_groups_on_a_port_only_root_could_bind() {
    if !root() {
        return;
    }
    let (uid, gid, groups) = nobody();
    for ready in ["notify", "fd"] {
        let listen = format!("127.0.0.1:{}", privileged_port(800..850));
        let args = ["--listen", &listen, "--user", "nobody", "--ready", ready, "--", &server()];
        let hs = as_root_with_groups(&args).start();
        let line = hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed"], WAIT);
        assert!(line.contains("ready after"), "--ready {ready}: {line}");
        let child = pids_in(&hs.wait_for_stderr("gen 1 started (pids ", WAIT))[0];
        let creds = credentials(child);
        let expect_groups: Vec<String> = groups.iter().map(u32::to_string).collect();
        assert_eq!(creds["Uid"], format!("{uid} {uid} {uid} {uid}"), "--ready {ready}");
        assert_eq!(creds["Gid"], format!("{gid} {gid} {gid} {gid}"), "--ready {ready}");
        assert_eq!(creds["Groups"], expect_groups.join(" "), "none of hotswap's 4 and 27");
        let answer = http_get(listen.parse().unwrap(), "/").expect("GET");
        assert_eq!(answer.pid(), Some(child));
        let env = crate::support::environ(child);
        assert_eq!(env.get("USER").map(String::as_str), Some("nobody"));
        assert!(env.contains_key(GUARD_VAR));
    }
}

#[test]
fn group_alone_replaces_every_group() {
    if !root() {
        return;
    }
    let args = ["-l", "127.0.0.1:0", "--user", "nobody", "--group", "0", "--", &server()];
    let hs = as_root_with_groups(&args).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let child = pids_in(&hs.wait_for_stderr("gen 1 started (pids ", WAIT))[0];
    let creds = credentials(child);
    assert_eq!(creds["Gid"], "0 0 0 0");
    assert_eq!(creds["Groups"], "0");
}

/// An unmodified app, run as nobody, binds port < 1024 itself: hotswap (root) binds it and the
/// app gets hotswap's socket; a reload keeps the port.
#[test]
fn an_unmodified_app_run_as_nobody_gets_a_privileged_port_from_hotswap() {
    if !root() {
        return;
    }
    let port = privileged_port(850..900).to_string();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unmodified");
    let app = path_str(&fixtures.join("accept_loop.py"));
    let args = ["--user", "nobody", "--", "/usr/bin/python3", &app];
    let hs = as_root_with_groups(&args).env(&[("PORT", &port)]).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    hs.wait_for_stderr(&format!("claimed 127.0.0.1:{port}"), WAIT);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = http_get(addr, "/").expect("GET");
    let from = hs.stderr().line_count();
    hs.signal(nix::sys::signal::Signal::SIGHUP);
    hs.wait_for_stderr_after(from, "gen 1 gone, drained after ", WAIT);
    let second = wait_until("gen 2 answers", WAIT, || {
        http_get(addr, "/").ok().filter(|r| r.pid() != first.pid())
    });
    let creds = credentials(second.pid().expect("X-Pid"));
    assert!(creds["Uid"].starts_with(&nobody().0.to_string()), "{creds:?}");
}

/// An unknown user is bad input: one line, exit 2.
#[test]
fn an_unknown_user_is_bad_input() {
    let out = Launch::hotswap(&["--user", "no-such-user-here", "--", &server()]).run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim(), "hotswap: --user no-such-user-here: no such user");
}
