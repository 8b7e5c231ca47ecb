//! hotswap as a systemd service: what it tells systemd on its own
//! NOTIFY_SOCKET (READY, RELOADING + MONOTONIC_USEC, STOPPING), played by a
//! datagram socket the test binds, at a path and in the abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::support::service::{server, server_by_generation, wait_for_ok};
use crate::support::{
    Hotswap, Launch, WAIT, example_bin, free_port, http_get, path_str, wait_until,
};

/// The fake systemd end: one datagram at a time, bounded.
struct FakeSystemd(UnixDatagram);

impl FakeSystemd {
    /// The next datagram that changes the state (READY, RELOADING, STOPPING); the others
    /// (EXTEND_TIMEOUT_USEC, STATUS alone) are the subject of the tests below.
    fn next(&self) -> String {
        loop {
            let mut buf = [0u8; 4096];
            let n = self.0.recv(&mut buf).expect("a notification from hotswap within 20s");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if ["READY", "RELOADING", "STOPPING"].iter().any(|k| field(&text, k).is_some()) {
                return text;
            }
        }
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

// ---- the systemd side played by tests/fixtures/fake_systemd.py ----

/// One line of the fake's log.
#[derive(Clone, Debug)]
struct Logged {
    /// CLOCK_MONOTONIC, in seconds.
    t: f64,
    /// The sender of a datagram.
    pid: Option<u32>,
    text: String,
    fds: u64,
    restart: bool,
}

/// hotswap under the fake systemd, which logs what it hears to `{dir}/systemd.log`.
struct UnderSystemd {
    hs: Hotswap,
    log: std::path::PathBuf,
}

impl UnderSystemd {
    fn start(hotswap_args: &[&str], env: &[(&str, &str)]) -> UnderSystemd {
        let fake =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_systemd.py");
        let mut args = vec![path_str(&fake), "{dir}/systemd.log".to_string(), "--".to_string()];
        args.push(path_str(&crate::support::hotswap_bin()));
        args.extend(hotswap_args.iter().map(|a| a.to_string()));
        let hs = Launch::via("python3", args).env(env).start();
        let log = hs.dir().join("systemd.log");
        UnderSystemd { hs, log }
    }

    fn logged(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| Logged {
                t: v["t"].as_f64().unwrap_or_default(),
                pid: v["pid"].as_u64().map(|p| p as u32),
                text: v["text"].as_str().unwrap_or_default().to_string(),
                fds: v["fds"].as_u64().unwrap_or_default(),
                restart: v.get("restart").is_some(),
            })
            .collect()
    }

    /// Waits until the log holds an entry for which `f` is true; returns it.
    fn wait_for(&self, what: &str, f: impl Fn(&Logged) -> bool) -> Logged {
        wait_until(what, WAIT, || self.logged().into_iter().find(|l| f(l)))
    }

    /// The datagrams that carry `key`.
    fn with(&self, key: &str) -> Vec<Logged> {
        self.logged().into_iter().filter(|l| field(&l.text, key).is_some()).collect()
    }
}

/// `WATCHDOG_USEC=1000000`: hotswap sends `WATCHDOG=1` every half second, never a full second
/// apart (systemd's limit), and not in a flood.
#[test]
fn the_watchdog_is_fed_at_half_its_interval() {
    let args = ["-l", "127.0.0.1:0", "--control", "{dir}/ctl.sock", "--", &server()];
    let sd = UnderSystemd::start(&args, &[("WATCHDOG_USEC", "1000000")]);
    sd.wait_for("READY=1", |l| field(&l.text, "READY") == Some("1"));
    wait_until("six WATCHDOG=1", WAIT, || (sd.with("WATCHDOG").len() >= 6).then_some(()));
    let beats = sd.with("WATCHDOG");
    assert!(beats.iter().all(|b| b.text == "WATCHDOG=1\n"), "{beats:?}");
    let gaps: Vec<f64> = beats.windows(2).map(|w| w[1].t - w[0].t).collect();
    assert!(gaps.iter().all(|&g| g < 1.0), "a gap of a full interval: {gaps:?}");
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(mean > 0.3, "about every 0.5s, not a flood: {gaps:?}");
}

/// A drain that outlasts what systemd would wait: `EXTEND_TIMEOUT_USEC` from `STOPPING=1` on,
/// sent again before each one runs out, covering hotswap's own drain deadline.
#[test]
fn a_long_drain_extends_systemds_stop_timeout() {
    let command = server_by_generation(&[(1, "--ignore-term")], "");
    let mut args = vec!["-l", "127.0.0.1:0", "--drain-timeout", "5s", "--"];
    args.extend(command.iter().map(String::as_str));
    let mut sd = UnderSystemd::start(&args, &[]);
    sd.wait_for("READY=1", |l| field(&l.text, "READY") == Some("1"));
    sd.hs.signal(Signal::SIGTERM);
    let stopping = sd.wait_for("STOPPING=1", |l| field(&l.text, "STOPPING") == Some("1"));
    let status = sd.hs.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{status}");
    let extends: Vec<Logged> =
        sd.with("EXTEND_TIMEOUT_USEC").into_iter().filter(|l| l.t >= stopping.t).collect();
    assert!(extends.len() >= 2, "sent again during a 5s drain: {extends:?}");
    let usec = |l: &Logged| field(&l.text, "EXTEND_TIMEOUT_USEC").unwrap().parse::<f64>().unwrap();
    // The first covers the whole drain; each comes before the previous one runs out.
    assert!(usec(&extends[0]) / 1e6 >= 5.0, "{extends:?}");
    for w in extends.windows(2) {
        assert!(w[1].t - w[0].t < usec(&w[0]) / 1e6, "{extends:?}");
    }
}

/// The fd store round trip: hotswap deposits its socket with `FDSTORE=1`; SIGKILLed under
/// load, it is started again by the fake systemd with that socket in `LISTEN_FDS`, serves on
/// it, and not one connection is refused: the port never closed.
#[test]
fn a_crash_of_hotswap_itself_never_closes_the_port_with_the_fd_store() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["-l", &listen, "--control", "{dir}/ctl.sock", "--", &server()];
    let sd = UnderSystemd::start(&args, &[]);
    let ready = sd.wait_for("READY=1", |l| field(&l.text, "READY") == Some("1"));
    let stored = sd.with("FDSTORE");
    assert_eq!(stored.len(), 1, "one socket deposited: {stored:?}");
    assert_eq!((stored[0].fds, field(&stored[0].text, "FDNAME")), (1, Some("stored-1")));

    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let load = crate::support::load::spawn_in_thread(crate::support::load::LoadConfig {
        new_conn_workers: 3,
        keepalive_workers: 0,
        duration: std::time::Duration::from_secs(30),
        request_timeout: std::time::Duration::from_secs(5),
        ..crate::support::load::LoadConfig::new(crate::support::load::Target::Tcp(addr))
    });
    let ok = wait_for_ok(&load, 0, 50);
    let old = ready.pid.expect("READY=1 came with its sender's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    sd.wait_for("the restart", |l| l.restart);
    let again = sd.wait_for("READY=1 from the new hotswap", |l| {
        field(&l.text, "READY") == Some("1") && l.pid != Some(old)
    });
    wait_for_ok(&load, ok, 100);
    let report = load.stop_and_finish();
    assert_eq!(report.refused, 0, "refused connections: {}", report.summary());
    eprintln!("across the crash: {}", report.summary());
    // It took its socket back instead of binding one: no second deposit.
    assert_eq!(sd.with("FDSTORE").len(), 1, "{:?}", sd.logged());
    let answer = http_get(addr, "/").expect("GET after the restart");
    assert!(answer.pid().is_some() && again.pid.is_some());
}
