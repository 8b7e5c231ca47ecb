//! Every `--listen` address form (DESIGN.md §1) serves a real request through the example server,
//! and the unix-socket and socket options do what they say.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{
    Response, WAIT, example_bin, free_port, http_get, http_get_unix, path_str, port_is_closed,
    run_hotswap, serve_example,
};

/// The example server with pid `pid`, generation 1, instance 0 answered.
fn assert_served_by(response: &Response, pid: u32, via: &str) {
    assert_eq!(response.status, 200, "status via {via}: {response:?}");
    assert_eq!(response.pid(), Some(pid), "X-Pid via {via}: {response:?}");
    assert_eq!(response.generation(), Some(1), "X-Generation via {via}: {response:?}");
    let prefix = format!("pid={pid} gen=1 instance=0");
    assert!(response.body.starts_with(&prefix), "body via {via}: {:?}", response.body);
}

fn v4(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn v6(port: u16) -> SocketAddr {
    (std::net::Ipv6Addr::LOCALHOST, port).into()
}

/// A name in the abstract unix namespace that no other test uses.
fn abstract_name() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("hotswap-test-{}-{nanos}", std::process::id())
}

/// A bare port and `:PORT` listen on every interface, IPv4 and IPv6 on one socket.
fn assert_dual_stack(form: &str, port: u16) {
    let (hs, pid) = serve_example(&["--listen", form], &[]);
    let over_v4 = http_get(v4(port), "/").expect("GET over 127.0.0.1");
    assert_served_by(&over_v4, pid, "127.0.0.1");
    let over_v6 = http_get(v6(port), "/").expect("GET over [::1]");
    assert_served_by(&over_v6, pid, "[::1]");
    drop(hs);
}

#[test]
fn a_bare_port_serves_ipv4_and_ipv6() {
    let port = free_port();
    assert_dual_stack(&port.to_string(), port);
}

#[test]
fn a_colon_port_serves_ipv4_and_ipv6() {
    let port = free_port();
    assert_dual_stack(&format!(":{port}"), port);
}

#[test]
fn an_ipv4_address_serves_on_that_address_only() {
    let port = free_port();
    let (_hs, pid) = serve_example(&["--listen", &format!("127.0.0.1:{port}")], &[]);
    assert_served_by(&http_get(v4(port), "/").expect("GET over 127.0.0.1"), pid, "127.0.0.1");
    assert!(port_is_closed(v6(port)), "[::1]:{port} answers, but only 127.0.0.1 was asked for");
    // SO_REUSEPORT is off unless asked for: nobody else can bind the port alongside.
    let other = reuse_port_socket(v4(port));
    assert!(
        other.is_err(),
        "a SO_REUSEPORT bind to 127.0.0.1:{port} succeeded without --reuse-port"
    );
}

#[test]
fn an_ipv6_address_serves_on_that_address_only() {
    let port = free_port();
    let (_hs, pid) = serve_example(&["--listen", &format!("[::1]:{port}")], &[]);
    assert_served_by(&http_get(v6(port), "/").expect("GET over [::1]"), pid, "[::1]");
    assert!(port_is_closed(v4(port)), "127.0.0.1:{port} answers, but only [::1] was asked for");
}

#[test]
fn a_tcp_url_serves() {
    let port = free_port();
    let (_hs, pid) = serve_example(&["--listen", &format!("tcp://127.0.0.1:{port}")], &[]);
    assert_served_by(&http_get(v4(port), "/").expect("GET"), pid, "tcp://");
}

#[test]
fn a_udp_url_echoes_datagrams() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_hs, pid) = serve_example(&["--listen", &format!("udp://127.0.0.1:{port}")], &[]);
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.connect(v4(port)).unwrap();
    for payload in [format!("ping from {}", std::process::id()), "second datagram".to_string()] {
        client.send(payload.as_bytes()).expect("send a datagram");
        let mut buf = [0u8; 2048];
        let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("no echo from pid {pid}: {e}"));
        assert_eq!(String::from_utf8_lossy(&buf[..n]), payload, "the echo");
    }
}

#[test]
fn a_unix_path_serves_and_is_removed_at_exit() {
    let (mut hs, pid) = serve_example(&["--listen", "unix:{dir}/app.sock"], &[]);
    let path = hs.dir().join("app.sock");
    assert_served_by(&http_get_unix(&path, "/").expect("GET over the unix socket"), pid, "unix");
    hs.signal(Signal::SIGTERM);
    let status = hs.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "hotswap's exit after SIGTERM");
    assert!(!path.exists(), "{} is left behind after hotswap exited", path.display());
}

#[test]
fn an_abstract_unix_name_serves() {
    let name = abstract_name();
    let (_hs, pid) = serve_example(&["--listen", &format!("unix:@{name}")], &[]);
    let at = PathBuf::from(format!("@{name}"));
    assert_served_by(&http_get_unix(&at, "/").expect("GET over @abstract"), pid, "unix:@");
}

/// Leaves a socket file at `path` with nobody accepting on it (its server is gone).
fn stale_socket(path: &Path) {
    drop(UnixListener::bind(path).expect("bind the stale socket"));
    let meta = std::fs::metadata(path).expect("the stale socket file stays");
    assert!(meta.file_type().is_socket());
    let refused = std::os::unix::net::UnixStream::connect(path);
    assert!(refused.is_err(), "the stale socket still accepts");
}

#[test]
fn a_stale_unix_socket_file_is_replaced() {
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("app.sock");
    stale_socket(&path);
    // Only a new socket bound at that path can serve: the stale one refuses connections.
    let (_hs, pid) = serve_example(&["--listen", &format!("unix:{}", path_str(&path))], &[]);
    assert_served_by(&http_get_unix(&path, "/").expect("GET over the unix socket"), pid, "unix");
}

#[test]
fn a_live_unix_socket_is_refused_and_left_alone() {
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("live.sock");
    let live = UnixListener::bind(&path).expect("bind a live unix socket");
    let control = path_str(&sockets.path().join("ctl.sock"));
    let listen = format!("unix:{}", path_str(&path));
    let server = path_str(&example_bin("server"));
    let runtime = path_str(sockets.path());
    let args = ["--control", &control, "--listen", &listen, "--", &server];
    let out = run_hotswap(&args, &[("XDG_RUNTIME_DIR", &runtime)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr:\n{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(&path_str(&path)), "the error does not name the socket: {stderr:?}");
    assert!(!stderr.contains(" started "), "a child was started:\n{stderr}");
    // The live server keeps its socket: a connection still reaches it.
    let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect to the live one");
    live.accept().expect("the live server still accepts on its own socket");
}

#[test]
fn socket_mode_is_applied_to_the_unix_socket_file() {
    let (_hs, pid) =
        serve_example(&["--socket-mode", "0660", "--listen", "unix:{dir}/app.sock"], &[]);
    let path = _hs.dir().join("app.sock");
    let mode = std::fs::metadata(&path).expect("the socket file").permissions().mode();
    assert_eq!(mode & 0o7777, 0o660, "mode of {} is {:o}", path.display(), mode & 0o7777);
    assert_served_by(&http_get_unix(&path, "/").expect("GET over the unix socket"), pid, "unix");
}

/// A TCP socket with SO_REUSEADDR and SO_REUSEPORT bound (not listening) to `addr`.
fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// The accept-queue limit (`ss`'s Send-Q) of the TCP listener on `addr`, if `ss` is installed.
fn listen_backlog(addr: SocketAddr) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(&addr.to_string()))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn backlog_and_reuse_port_are_applied() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_hs, pid) = serve_example(&["--backlog", "7", "--reuse-port", "--listen", &listen], &[]);
    assert_served_by(&http_get(v4(port), "/").expect("GET"), pid, "127.0.0.1");
    match listen_backlog(v4(port)) {
        Some(backlog) => assert_eq!(backlog, 7, "the listen backlog of {listen}"),
        None => eprintln!("`ss` not available: backlog not checked"),
    }
    // With SO_REUSEPORT on hotswap's socket, another SO_REUSEPORT socket may bind the port.
    let other = reuse_port_socket(v4(port));
    assert!(other.is_ok(), "SO_REUSEPORT bind next to --reuse-port failed: {other:?}");
}
