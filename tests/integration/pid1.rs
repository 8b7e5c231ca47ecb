//! hotswap as a container's init (issue 12, DESIGN.md §2): PID 1 of a new pid namespace
//! (`unshare --pid --fork --mount-proc`, as `ENTRYPOINT ["hotswap", "--", …]` runs it). It
//! reaps orphans, handles HUP and TERM although PID 1 gets no default signal actions, and the
//! exit status is hotswap's.

use nix::sys::signal::Signal;

use crate::support::service::{Service, server};
use crate::support::{
    Launch, WAIT, all_processes, free_port, http_get, path_str, proc_stat, wait_until,
};

/// `unshare` needs root for a new pid namespace; elsewhere these tests say so and pass.
fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: a new pid namespace needs root");
    }
    root
}

/// `unshare --pid --fork --mount-proc hotswap ARGS`.
fn as_pid1(args: &[&str]) -> Launch {
    let mut all = ["--pid", "--fork", "--mount-proc", &path_str(&crate::support::hotswap_bin())]
        .map(String::from)
        .to_vec();
    all.extend(args.iter().map(|a| a.to_string()));
    Launch::via("unshare", all)
}

/// hotswap's pid as the host sees it: unshare's one child.
fn hotswap_pid(unshare: i32) -> i32 {
    wait_until("unshare's child", WAIT, || {
        all_processes().into_iter().find(|p| p.ppid == unshare).map(|p| p.pid)
    })
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

#[test]
fn as_pid1_hotswap_reaps_orphans_reloads_on_hup_and_exits_with_its_status_on_term() {
    if !root() {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // The child's shell leaves a `sleep` behind as an orphan, then becomes the server.
    let script = format!("(sleep 0.5 &) ; exec {}", server());
    let mut hs = as_pid1(&["-l", &listen, "--", "sh", "-c", &script]).start();
    hs.wait_for_stderr("hotswap[1]: gen 1 ready after ", WAIT);
    let pid1 = hotswap_pid(hs.pid());
    assert_eq!(comm(pid1), "hotswap");

    // The orphan is hotswap's now; once it exits, hotswap reaps it: it leaves /proc entirely.
    let orphan = wait_until("the orphaned sleep", WAIT, || {
        all_processes().into_iter().find(|p| p.ppid == pid1 && comm(p.pid) == "sleep")
    });
    wait_until("the orphan reaped", WAIT, || proc_stat(orphan.pid).is_none().then_some(()));

    // HUP: PID 1 ignores a signal it has no handler for; hotswap has one.
    let addr = listen.parse().unwrap();
    let before = http_get(addr, "/").expect("GET").pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), Signal::SIGHUP).unwrap();
    hs.wait_for_stderr("gen 1 gone, drained after ", WAIT);
    let after = http_get(addr, "/").expect("GET");
    assert_eq!(after.generation(), Some(2));
    assert_ne!(after.pid(), before);

    // TERM: a graceful stop; hotswap exits 0 and unshare passes its status on.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), Signal::SIGTERM).unwrap();
    let status = hs.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(hs.stderr().lines().iter().any(|l| l.contains("hotswap[1]: stopping")));
}

#[test]
fn as_pid1_the_exit_status_is_the_childs_under_restart_never() {
    if !root() {
        return;
    }
    let out = as_pid1(&["--restart", "never", "--", "sh", "-c", "exit 7"]).run();
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A hotswap in a new pid namespace that shares the host's runtime directory and cgroup tree
/// (as `unshare --pid` does) cannot see the host's hotswap pids: it must not take them for
/// dead and clean up after them (their notify sockets, their children's cgroups).
#[test]
fn a_hotswap_in_another_pid_namespace_leaves_a_live_hotswaps_files_and_children_alone() {
    if !root() {
        return;
    }
    let svc = Service::start(&["--ready", "notify"], &[&server()], &[]);
    let children = svc.status().children.iter().map(|c| c.pid).collect::<Vec<_>>();
    let runtime = path_str(svc.hs.dir());
    let mut other = as_pid1(&["-l", "127.0.0.1:0", "--", &server()])
        .env(&[("XDG_RUNTIME_DIR", &runtime)])
        .start();
    other.wait_for_stderr("hotswap[1]: gen 1 ready after ", WAIT);
    let cleaned: Vec<String> = other
        .stderr()
        .lines()
        .into_iter()
        .filter(|l| l.contains("left by a hotswap that is gone") || l.contains("a dead hotswap"))
        .filter(|l| l.contains(&format!("{}", svc.hs.pid())))
        .collect();
    assert!(cleaned.is_empty(), "cleaned up after a live hotswap: {cleaned:#?}");
    assert!(children.iter().all(|&p| crate::support::pid_alive(p as i32)), "children killed");
    // Its notify sockets are still there: a reload is still signalled ready.
    svc.hup_and_wait(2, 1);
    let pid1 = hotswap_pid(other.pid());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), Signal::SIGTERM).unwrap();
    assert_eq!(other.wait_exit(WAIT).code(), Some(0));
}
