//! USR2 (issue 11, DESIGN.md §2): hotswap re-executes the binary at the path it was started
//! from, keeping its pid, sockets, control socket and children, and the new binary resumes
//! them. A failed exec, or a new binary that cannot resume, leaves the old one running.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::service::*;
use crate::support::{hotswap_bin, path_str};

/// A copy of hotswap in a private directory, to replace or remove under the running one.
struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    fn new() -> Installed {
        let installed = Installed { dir: tempfile::tempdir().expect("tempdir") };
        std::fs::copy(hotswap_bin(), installed.path()).expect("copy hotswap");
        installed
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("hotswap")
    }

    /// `cp` + `mv`: a new file (a new inode) at the same path, as a package upgrade does.
    fn replace_with(&self, binary: &Path) {
        let new = self.dir.path().join("hotswap.new");
        std::fs::copy(binary, &new).expect("copy the new binary");
        std::fs::rename(&new, self.path()).expect("mv over the old one");
    }

    fn inode(&self) -> u64 {
        std::fs::metadata(self.path()).expect("stat the binary").ino()
    }
}

/// The inode of the binary a process runs.
fn running_inode(pid: i32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/exe")).expect("stat /proc/PID/exe").ino()
}

fn child_pids(svc: &Service) -> BTreeSet<u32> {
    svc.status().children.iter().map(|c| c.pid).collect()
}

/// The wrapper upgrade: under load, the binary file replaced by a new copy, USR2. The same
/// pid now runs the new file, with the same children and socket; `status` shows the new start
/// time; no request fails; a later HUP reload works.
#[test]
fn usr2_under_load_runs_the_replaced_binary_with_the_same_pid_and_children() {
    let installed = Installed::new();
    let svc = Service::start_via(installed.path(), &["-n", "2"], &[&server()]);
    let before = svc.status();
    let children = child_pids(&svc);
    assert_eq!(children.len(), 2, "{before:#?}");
    let load = svc.load();
    let ok = wait_for_ok(&load, 0, 100);

    installed.replace_with(&hotswap_bin());
    assert_ne!(running_inode(svc.hs.pid()), installed.inode(), "still the old file until USR2");
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGUSR2);
    svc.wait_index(from, "resumed: gen 1 serving");
    assert_eq!(running_inode(svc.hs.pid()), installed.inode(), "the new file runs");
    let ok = wait_for_ok(&load, ok, 100);

    let after = svc.status();
    assert_eq!(after.pid, before.pid, "the same hotswap pid");
    assert_eq!(child_pids(&svc), children, "the same children: {after:#?}");
    assert!(after.started_at > before.started_at, "a new start time: {after:#?}");
    assert_eq!(after.binary, path_str(&installed.path()));
    assert_eq!(after.sockets, before.sockets, "the same socket");
    assert_eq!(after.generation, Some(1));

    let switch = svc.hup_and_wait(2, 1);
    assert_eq!(
        switch.old_pids.iter().copied().collect::<BTreeSet<_>>(),
        children,
        "the resumed hotswap retires the children it took back"
    );
    wait_for_ok(&load, ok, 100);
    let report = load.stop_and_finish();
    assert_no_failures(&report, "USR2 with a replaced binary, then HUP");
    assert_eq!(svc.status().generation, Some(2));
}

/// A USR2 whose binary is gone: hotswap says why and goes on serving and reloading.
#[test]
fn usr2_with_the_binary_removed_leaves_hotswap_running_and_says_why() {
    let installed = Installed::new();
    let svc = Service::start_via(installed.path(), &[], &[&server()]);
    let children = child_pids(&svc);
    std::fs::remove_file(installed.path()).expect("rm the binary");
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGUSR2);
    let line = svc.wait_any(from, &["USR2: cannot execute "]);
    assert!(line.contains(&path_str(&installed.path())), "names the path: {line}");
    assert!(line.contains("No such file or directory"), "says why: {line}");
    assert_eq!(child_pids(&svc), children);
    svc.hup_and_wait(2, 1);
    svc.assert_all_answered_by(2, 3);
}

/// A HUP sent right behind the USR2 is not lost: whichever process takes it, generation 2
/// takes over, and the re-exec happens too.
#[test]
fn a_hup_right_behind_a_usr2_still_reloads() {
    let installed = Installed::new();
    let svc = Service::start_via(installed.path(), &[], &[&server()]);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGUSR2);
    svc.hs.signal(Signal::SIGHUP);
    svc.wait_index(from, "resumed: ");
    svc.wait_switch(from, 2, 1);
    svc.assert_all_answered_by(2, 3);
}

/// A new binary that cannot take over (here: it rejects the arguments the service was started
/// with) gives the service back to the previous binary, which resumes it: same pid, same child.
#[test]
fn a_new_binary_that_cannot_resume_falls_back_to_the_previous_one() {
    let installed = Installed::new();
    let svc = Service::start_via(installed.path(), &[], &[&server()]);
    let children = child_pids(&svc);
    let real = installed.dir.path().join("hotswap.real");
    std::fs::copy(hotswap_bin(), &real).expect("copy hotswap");
    let wrapper = installed.dir.path().join("wrapper");
    let script = format!("#!/bin/sh\nexec {} --no-such-flag \"$@\"\n", path_str(&real));
    std::fs::write(&wrapper, script).expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    installed.replace_with(&wrapper);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGUSR2);
    svc.wait_index(from, "--no-such-flag");
    svc.wait_index(from, "resumed: gen 1 serving");
    assert_eq!(child_pids(&svc), children, "the same child");
    assert!(svc.hs.marked().iter().all(|&p| children.contains(&(p as u32))));
    svc.hup_and_wait(2, 1);
}

/// The drain deadline crosses the exec: a generation that ignores SIGTERM, two seconds into
/// its four-second drain when USR2 arrives, is killed by the new binary at the deadline the
/// old one set (4s after the TERM), not a drain timeout after the exec (6s after it).
#[test]
fn a_drain_deadline_set_before_usr2_is_kept_by_the_new_binary() {
    let installed = Installed::new();
    let command = server_by_generation(&[(1, "--ignore-term")], "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start_via(installed.path(), &["--drain-timeout", "4s"], &command);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    let retiring = svc.wait_index(from, "gen 1 retiring (pids ");
    // Not a synchronisation: the scenario is a USR2 that comes midway through the drain.
    std::thread::sleep(Duration::from_secs(2));
    svc.hs.signal(Signal::SIGUSR2);
    let resumed = svc.wait_index(from, "resumed: gen 2 serving");
    let killing = svc.wait_index(from, "gen 1 pid ");
    assert!(retiring < resumed && resumed < killing, "killed by the new binary");
    let lines = svc.hs.stderr().lines();
    assert!(lines[killing].contains("still running after 4s"), "{}", lines[killing]);
    let arrived = |i: usize| svc.hs.stderr().arrived(&lines[i]).expect("the line arrived");
    let waited = arrived(killing) - arrived(retiring);
    assert!(waited < Duration::from_secs(5), "killed {waited:?} after the TERM");
    svc.wait_index(killing, "gen 1 gone");
}

/// The files (device, inode) behind `pid`'s fds from 3 up, with the fd numbers; not the
/// `anon_inode:` ones (every epoll and eventfd shares one inode).
fn files_from_3(pid: u32) -> Vec<(i32, (u64, u64))> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            if target.to_string_lossy().starts_with("anon_inode:") {
                return None;
            }
            let meta = std::fs::metadata(e.path()).ok()?;
            (fd >= 3).then_some((fd, (meta.dev(), meta.ino())))
        })
        .collect()
}

/// A child started after a USR2 holds nothing of hotswap's but what its environment names:
/// the sockets at fds 3.. (`LISTEN_FDS`) and its readiness channels. The fds the previous
/// process handed over (control socket, claim socket, other children's readiness channels)
/// are hotswap's own again, close-on-exec, never a child's.
#[test]
fn a_child_started_after_usr2_gets_no_fd_of_hotswaps() {
    let installed = Installed::new();
    let svc = Service::start_via(installed.path(), &[], &[&server()]);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGUSR2);
    svc.wait_index(from, "resumed: gen 1 serving");
    let switch = svc.hup_and_wait(2, 1);
    let child = switch.new_pids[0];
    let env = crate::support::environ(child);
    let listen_fds: i32 = env.get("LISTEN_FDS").and_then(|n| n.parse().ok()).unwrap_or(0);
    let named: Vec<i32> = ["HOTSWAP_READY_FD", "NODE_CHANNEL_FD"]
        .iter()
        .filter_map(|k| env.get(*k)?.parse().ok())
        .collect();
    let hotswaps: Vec<(u64, u64)> =
        files_from_3(svc.hs.pid() as u32).into_iter().map(|(_, file)| file).collect();
    let leaked: Vec<i32> = files_from_3(child)
        .into_iter()
        .filter(|(fd, file)| {
            *fd >= 3 + listen_fds && !named.contains(fd) && hotswaps.contains(file)
        })
        .map(|(fd, _)| fd)
        .collect();
    assert!(leaked.is_empty(), "fds {leaked:?} of the child are hotswap's own files");
    svc.hup_and_wait(3, 2);
    svc.assert_all_answered_by(3, 3);
}
