//! The per-child NOTIFY_SOCKET (issue #3): only the child's own process tree can make it ready,
//! and `systemd-notify --ready` from that tree works and returns at once (hotswap closes the
//! BARRIER fd it sends).

use std::os::unix::net::UnixDatagram;

use hotswap::protocol::control::ChildState;
use nix::sys::signal::Signal;

use crate::support::environ;
use crate::support::service::*;

/// `READY=1` from this test process — alive, root like the child, but not in the child's
/// process tree — is dropped: the starting generation does not take over.
#[test]
fn ready_from_outside_the_childs_tree_is_dropped() {
    let command = server_by_generation(&[(2, "--ready none")], "--ready notify");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let svc = Service::start(&["--ready", "notify", "--ready-timeout", "20s"], &command, &[]);
    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    let started = svc.hs.wait_for_stderr_after(from, "gen 2 started (pids ", WAIT);
    let child = pids_in(&started)[0];
    // Read until the environment shows it: the child may be in the middle of its exec
    // (sh execs the server), when /proc/PID/environ reads empty.
    let socket =
        wait_until("the child's NOTIFY_SOCKET", WAIT, || environ(child).remove("NOTIFY_SOCKET"));

    let sender = UnixDatagram::unbound().expect("datagram socket");
    sender.send_to(b"READY=1\n", &socket).unwrap_or_else(|e| panic!("send to {socket}: {e}"));
    let me = std::process::id();
    let dropped = svc.wait_any(from, &["dropped a notify datagram", "gen 2 ready after "]);
    assert!(
        dropped.contains("dropped a notify datagram")
            && dropped.contains(&format!("for pid {child}"))
            && dropped.contains(&format!("sender pid {me} is not in its process tree")),
        "{dropped}"
    );
    // The datagram has been handled (and dropped): generation 2 is still starting.
    let status = svc.status();
    assert_eq!(status.generation, Some(1), "{status:#?}");
    assert_eq!(state_of(&status, child), Some(ChildState::Starting), "{status:#?}");
    assert!(!svc.logged_after(from, "gen 2 ready"), "a foreign READY=1 made gen 2 ready");
    assert!(!svc.logged_after(from, "gen 1 retiring"), "a foreign READY=1 retired gen 1");
}

/// `systemd-notify --ready`, run by the child's own shell, makes each generation ready, and
/// returns successfully: systemd 252's systemd-notify then waits for the receiver to close the
/// BARRIER=1 pipe it sends, and gives up with an error after 5s otherwise. Its success is the
/// proof that hotswap closed the pipe before that timer of systemd-notify's own fired.
#[test]
fn systemd_notify_from_the_child_works_and_returns_at_once() {
    let script = "if systemd-notify --ready; then echo \"notified gen $HOTSWAP_GENERATION\" >&2; \
                  else echo \"systemd-notify failed: $?\" >&2; fi; \
                  exec \"$0\" --ready none";
    let svc = Service::spawn(&["--ready", "notify"], &["sh", "-c", script, &server()], &[]);
    let notified = svc.wait_any(0, &["notified gen 1", "systemd-notify failed"]);
    assert!(notified.contains("notified gen 1"), "was its BARRIER fd closed? {notified}");
    svc.hs.wait_for_stderr("gen 1 ready after ", WAIT);
    assert_eq!(svc.generation(), 1);

    let from = svc.hs.stderr().line_count();
    svc.hs.signal(Signal::SIGHUP);
    let notified = svc.wait_any(from, &["notified gen 2", "systemd-notify failed"]);
    assert!(notified.contains("notified gen 2"), "was its BARRIER fd closed? {notified}");
    let switch = svc.wait_switch(from, 2, 1);
    assert!(!svc.logged_after(0, "systemd-notify failed"));
    assert!(!svc.logged_after(0, "dropped a notify datagram"));
    assert_eq!(svc.get().pid().map(|p| vec![p]), Some(switch.new_pids));
    svc.assert_all_answered_by(2, 10);
}
