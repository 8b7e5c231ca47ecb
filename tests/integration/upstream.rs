//! hotswap as a systemd service: what it tells systemd on its own
//! NOTIFY_SOCKET (READY, RELOADING + MONOTONIC_USEC, STOPPING), played by a
//! datagram socket the test binds, at a path and in the abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::support::{Hotswap, WAIT, example_bin, free_port, http_get};

/// The fake systemd end: one datagram at a time, bounded.
struct FakeSystemd(UnixDatagram);

impl FakeSystemd {
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.0.recv(&mut buf).expect("a notification from hotswap within 20s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn monotonic_usec() -> u128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u128 * 1_000_000 + now.tv_nsec() as u128 / 1_000
}

fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Runs the whole READY → RELOADING → READY → STOPPING sequence against `systemd`.
fn speaks_the_notify_protocol(systemd: FakeSystemd, notify_socket: &str) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = example_bin("server");
    let mut h = Hotswap::start(
        &["--control", "{dir}/ctl.sock", "--listen", &listen, "--", server.to_str().unwrap()],
        &[("NOTIFY_SOCKET", notify_socket)],
    );

    let ready = systemd.next();
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready:?}");
    let first_pid = http_get(listen.parse().unwrap(), "/").unwrap().pid().unwrap();
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.contains(&first_pid.to_string())),
        "STATUS names the serving pid: {ready:?}"
    );

    let before = monotonic_usec();
    h.signal(Signal::SIGHUP);
    let reloading = systemd.next();
    let after = monotonic_usec();
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let stamp: u128 = field(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    assert!(
        before <= stamp && stamp <= after,
        "MONOTONIC_USEC {stamp} is CLOCK_MONOTONIC now ({before}..{after})"
    );
    let ready_again = systemd.next();
    assert_eq!(field(&ready_again, "READY"), Some("1"), "READY=1 ends the reload: {ready_again:?}");
    assert!(field(&ready_again, "STATUS").is_some_and(|s| s.contains("gen 2")), "{ready_again:?}");

    h.signal(Signal::SIGTERM);
    assert_eq!(field(&systemd.next(), "STOPPING"), Some("1"));
    assert!(h.wait_exit(WAIT).success());
}

#[test]
fn notifies_systemd_at_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    speaks_the_notify_protocol(FakeSystemd(socket), path.to_str().unwrap());
}

#[test]
fn notifies_systemd_in_the_abstract_namespace() {
    let name = format!("hotswap-test-{}-{:?}", std::process::id(), Instant::now());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    speaks_the_notify_protocol(FakeSystemd(socket), &format!("@{name}"));
}
