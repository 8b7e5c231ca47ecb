//! Example / fixture server for hotswap.
//!
//! A tiny HTTP/1.1 server (plus a UDP echo) that takes its listening sockets
//! the systemd way (`LISTEN_FDS`, `LISTEN_PID`, fds from 3) via the `listenfd`
//! crate, announces readiness (`READY=1` on `NOTIFY_SOCKET`, a newline on
//! `HOTSWAP_READY_FD`) and drains gracefully on SIGTERM/SIGINT. Without
//! `LISTEN_FDS` it binds `127.0.0.1:--port` itself, so it also runs standalone:
//!
//! ```text
//! cargo run --example server -- --port 8080
//! hotswap --listen 127.0.0.1:8080 -- target/debug/examples/server
//! ```
//!
//! Every response is `200 OK` with `X-Pid`, `X-Generation` and `X-Instance`
//! headers and a body `pid=<pid> gen=<gen> instance=<i> version=<VERSION>`.
//! `?delay=<ms>` delays one response, `/env` dumps what the process received.
//!
//! Behaviour knobs for tests (each also read from the environment variable in
//! brackets, so an `--env-file` can change them per generation):
//! `--port` [SERVER_PORT], `--boot-delay` [SERVER_BOOT_DELAY],
//! `--request-delay` [SERVER_REQUEST_DELAY], `--ready all|notify|fd|none`
//! [SERVER_READY], `--exit-at-start CODE` [SERVER_EXIT_AT_START],
//! `--ignore-term` [SERVER_IGNORE_TERM], `--spawn-worker`
//! [SERVER_SPAWN_WORKER], `--spawn-orphan` [SERVER_SPAWN_ORPHAN].

use std::env;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// How long a keep-alive connection may stay idle once draining has begun.
const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// Largest request head (request line + headers) we accept.
const MAX_HEAD: usize = 64 * 1024;

/// One log line on stderr, written with a single `write` so lines from
/// several processes sharing a pipe never interleave.
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("server[{}]: {}\n", std::process::id(), format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

#[derive(Parser, Debug)]
#[command(name = "server", about = "hotswap example server (HTTP on stream sockets, echo on UDP)")]
struct Opts {
    /// Port to bind on 127.0.0.1 when no sockets are passed (LISTEN_FDS unset)
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    port: u16,
    /// Sleep this long before serving and announcing readiness (e.g. 500ms, 2s)
    #[arg(long, env = "SERVER_BOOT_DELAY", value_parser = duration, default_value = "0s")]
    boot_delay: Duration,
    /// Delay every response by this long
    #[arg(long, env = "SERVER_REQUEST_DELAY", value_parser = duration, default_value = "0s")]
    request_delay: Duration,
    /// Readiness channels to announce on: all (every channel present), notify, fd, none
    #[arg(long, env = "SERVER_READY", value_name = "MODE", value_parser = ready_mode, default_value = "all")]
    ready: ReadyMode,
    /// After the boot delay, exit with CODE instead of serving (a broken release)
    #[arg(long, env = "SERVER_EXIT_AT_START", value_name = "CODE", value_parser = exit_code)]
    exit_at_start: Option<ExitAt>,
    /// Ignore SIGTERM and keep serving (SIGINT still drains)
    #[arg(long, env = "SERVER_IGNORE_TERM", value_parser = FalseyValueParser::new())]
    ignore_term: bool,
    /// Start a long-lived `sleep 1000` worker in our process group
    #[arg(long, env = "SERVER_SPAWN_WORKER", value_parser = FalseyValueParser::new())]
    spawn_worker: bool,
    /// Leave behind a short-lived orphan (`sleep 0.3`) for the subreaper to reap
    #[arg(long, env = "SERVER_SPAWN_ORPHAN", value_parser = FalseyValueParser::new())]
    spawn_orphan: bool,
}

// An empty value (`SERVER_BOOT_DELAY=` in an env file) means "not set", so
// one generation's env file can switch a knob off again.

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
}

fn ready_mode(s: &str) -> Result<ReadyMode, String> {
    if s.is_empty() {
        return Ok(ReadyMode::All);
    }
    ReadyMode::from_str(s, true)
}

#[derive(Clone, Copy, Debug)]
struct ExitAt(Option<i32>);

fn exit_code(s: &str) -> Result<ExitAt, std::num::ParseIntError> {
    if s.is_empty() {
        return Ok(ExitAt(None));
    }
    s.parse().map(|c| ExitAt(Some(c)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReadyMode {
    /// sd_notify READY=1 if NOTIFY_SOCKET is set, and a newline on HOTSWAP_READY_FD if set
    All,
    /// only sd_notify
    Notify,
    /// only HOTSWAP_READY_FD
    Fd,
    /// announce nothing
    None,
}

impl ReadyMode {
    fn notify(self) -> bool {
        matches!(self, ReadyMode::All | ReadyMode::Notify)
    }
    fn fd(self) -> bool {
        matches!(self, ReadyMode::All | ReadyMode::Fd)
    }
}

/// What every connection handler needs to know.
struct Ctx {
    pid: u32,
    generation: String,
    instance: String,
    version: String,
    request_delay: Duration,
    /// `LISTEN_*` as received: listenfd removes `LISTEN_PID`/`LISTEN_FDS` from
    /// the environment when it takes the fds.
    listen_pid: String,
    listen_fds: String,
    listen_fdnames: String,
    connections: AtomicUsize,
}

enum Sock {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
    Udp(std::net::UdpSocket),
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let env_or = |k: &str, d: &str| env::var(k).unwrap_or_else(|_| d.to_string());
    let ctx = Ctx {
        pid: std::process::id(),
        generation: env_or("HOTSWAP_GENERATION", "0"),
        instance: env_or("HOTSWAP_INSTANCE", "0"),
        version: env_or("VERSION", "dev"),
        request_delay: opts.request_delay,
        listen_pid: env_or("LISTEN_PID", ""),
        listen_fds: env_or("LISTEN_FDS", ""),
        listen_fdnames: env_or("LISTEN_FDNAMES", ""),
        connections: AtomicUsize::new(0),
    };

    // Everything that touches the environment or raw fds happens here, while
    // the process is still single-threaded (listenfd calls env::remove_var).
    let ready_fd = if opts.ready.fd() { take_ready_fd(&ctx) } else { None };
    let socks = match take_sockets(&ctx, opts.port) {
        Ok(s) => s,
        Err(e) => {
            log!("{e}");
            return ExitCode::from(1);
        }
    };

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(opts, Arc::new(ctx), socks, ready_fd)) {
        Ok(code) => code,
        Err(e) => {
            log!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Takes ownership of the readiness pipe named in `HOTSWAP_READY_FD` and marks
/// it close-on-exec, so workers we spawn do not keep it open.
fn take_ready_fd(ctx: &Ctx) -> Option<OwnedFd> {
    let val = env::var("HOTSWAP_READY_FD").ok()?;
    let Ok(fd) = val.trim().parse::<i32>() else {
        log!("HOTSWAP_READY_FD={val:?} is not an fd number, ignoring it");
        return None;
    };
    let nlisten: i32 = ctx.listen_fds.parse().unwrap_or(0);
    if fd < 3 || (3..3 + nlisten).contains(&fd) {
        log!("HOTSWAP_READY_FD={fd} is stdio or a listening socket, ignoring it");
        return None;
    }
    // Reopen the pipe through /proc (std opens it close-on-exec), then close
    // the inherited fd, so workers we spawn never hold the pipe open.
    let reopened = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{fd}"));
    let file = match reopened {
        Ok(file) => file,
        Err(e) => {
            log!("HOTSWAP_READY_FD={fd} is not usable ({e}), ignoring it");
            return None;
        }
    };
    let _ = nix::unistd::close(fd);
    Some(OwnedFd::from(file))
}

/// The passed sockets (type detected per fd), or 127.0.0.1:port standalone.
fn take_sockets(ctx: &Ctx, port: u16) -> Result<Vec<(i32, String, Sock)>, String> {
    let passed = ctx.listen_fds.parse::<usize>().unwrap_or(0);
    let mut fds = listenfd::ListenFd::from_env();
    if passed > 0 && fds.len() == 0 {
        // listenfd silently ignores fds whose LISTEN_PID is not ours; binding
        // the port ourselves would hide that bug, so refuse instead.
        return Err(format!(
            "LISTEN_FDS={} but LISTEN_PID={:?} is not our pid {}: refusing the fds",
            ctx.listen_fds, ctx.listen_pid, ctx.pid
        ));
    }
    let names: Vec<&str> = ctx.listen_fdnames.split(':').collect();
    let mut socks = Vec::new();
    for i in 0..fds.len() {
        let fd = 3 + i as i32;
        let name = match names.get(i) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => "unknown".to_string(),
        };
        let sock = if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            Sock::Tcp(l)
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            Sock::Unix(l)
        } else if let Ok(Some(s)) = fds.take_udp_socket(i) {
            Sock::Udp(s)
        } else {
            log!("fd {fd} ({name}): not a TCP/unix stream listener or UDP socket, ignoring it");
            continue;
        };
        socks.push((fd, name, sock));
    }
    if passed > 0 && socks.is_empty() {
        return Err(format!("none of the {passed} passed fd(s) is usable"));
    }
    if passed == 0 {
        let l = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot bind 127.0.0.1:{port}: {e}"))?;
        log!("no LISTEN_FDS, bound 127.0.0.1:{port} myself");
        use std::os::fd::AsRawFd;
        socks.push((l.as_raw_fd(), "standalone".into(), Sock::Tcp(l)));
    }
    Ok(socks)
}

async fn run(
    opts: Opts,
    ctx: Arc<Ctx>,
    socks: Vec<(i32, String, Sock)>,
    ready_fd: Option<OwnedFd>,
) -> io::Result<ExitCode> {
    // Handlers first: a SIGTERM during the boot delay must not kill us by default.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let ignore_term = opts.ignore_term;
    let mut stop = async move || loop {
        tokio::select! {
            _ = sigterm.recv() => {
                if ignore_term {
                    log!("ignoring SIGTERM");
                } else {
                    return "SIGTERM";
                }
            }
            _ = sigint.recv() => return "SIGINT",
        }
    };

    if !opts.boot_delay.is_zero() {
        let d = opts.boot_delay;
        log!("gen {} booting for {}", ctx.generation, humantime::format_duration(d));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            sig = stop() => {
                log!("{sig} while booting, exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    if let Some(ExitAt(Some(code))) = opts.exit_at_start {
        log!("exiting with code {code} at start");
        std::process::exit(code);
    }
    if opts.spawn_worker {
        spawn_worker();
    }
    if opts.spawn_orphan {
        spawn_orphan();
    }

    let (drain_tx, drain_rx) = watch::channel(false);
    // Every accept loop and connection holds a clone; recv() returns None
    // once all of them are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let n = socks.len();
    for (fd, name, sock) in socks {
        let (ctx, drain, alive) = (ctx.clone(), drain_rx.clone(), alive_tx.clone());
        match sock {
            Sock::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = TcpListener::from_std(l)?;
                log!("fd {fd} ({name}): http on tcp {}", l.local_addr()?);
                tokio::spawn(accept_loop(Listener::Tcp(l), ctx, drain, alive));
            }
            Sock::Unix(l) => {
                l.set_nonblocking(true)?;
                let l = UnixListener::from_std(l)?;
                log!("fd {fd} ({name}): http on unix {}", unix_addr(&l.local_addr()?));
                tokio::spawn(accept_loop(Listener::Unix(l), ctx, drain, alive));
            }
            Sock::Udp(s) => {
                s.set_nonblocking(true)?;
                let s = UdpSocket::from_std(s)?;
                log!("fd {fd} ({name}): echo on udp {}", s.local_addr()?);
                tokio::spawn(udp_echo(s, drain, alive));
            }
        }
    }
    log!("gen {} listening on {n} fd(s)", ctx.generation);

    announce_ready(&ctx, opts.ready, ready_fd);

    let sig = stop().await;
    let _ = drain_tx.send(true);
    log!("{sig}: draining, {} connection(s) open", ctx.connections.load(Ordering::SeqCst));
    drop(alive_tx);
    loop {
        tokio::select! {
            r = alive_rx.recv() => if r.is_none() { break },
            sig = stop() => log!("{sig} again, still draining"),
        }
    }
    log!("drained, exiting");
    Ok(ExitCode::SUCCESS)
}

fn announce_ready(ctx: &Ctx, mode: ReadyMode, ready_fd: Option<OwnedFd>) {
    let mut via = Vec::new();
    if mode.notify() {
        let status = format!("serving gen {}", ctx.generation);
        match sd_notify_ready(&status) {
            Ok(true) => via.push("notify"),
            Ok(false) if mode == ReadyMode::Notify => {
                log!("--ready notify but NOTIFY_SOCKET is not set")
            }
            Ok(false) => {}
            Err(e) => log!("sd_notify to {:?} failed: {e}", env::var_os("NOTIFY_SOCKET")),
        }
    }
    if mode.fd() {
        match ready_fd {
            Some(fd) => match std::fs::File::from(fd).write_all(b"\n") {
                // dropping the File closes our end, as s6 expects
                Ok(()) => via.push("fd"),
                Err(e) => log!("writing to HOTSWAP_READY_FD failed: {e}"),
            },
            None if mode == ReadyMode::Fd => log!("--ready fd but HOTSWAP_READY_FD is not usable"),
            None => {}
        }
    }
    if via.is_empty() {
        log!("ready (not announced)");
    } else {
        log!("ready, announced via {}", via.join("+"));
    }
}

/// Sends `READY=1` + `STATUS=` to `NOTIFY_SOCKET`; Ok(false) if it is unset.
fn sd_notify_ready(status: &str) -> io::Result<bool> {
    use sd_notify::NotifyState;
    let Some(path) = env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // sd-notify 0.5 only connects to filesystem paths; do abstract ourselves.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.send_to_addr(format!("READY=1\nSTATUS={status}\n").as_bytes(), &addr)?;
    } else {
        sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)])?;
    }
    Ok(true)
}

// The worker is deliberately never waited for: hotswap must kill our whole
// process group, and reap it as the subreaper once we are gone.
#[allow(clippy::zombie_processes)]
fn spawn_worker() {
    match Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => log!("worker pid {}", child.id()),
        Err(e) => log!("cannot spawn worker: {e}"),
    }
}

/// `sleep 0.3` in the background of a shell that exits at once, so the sleep
/// is re-parented to the nearest subreaper (hotswap) and must be reaped there.
fn spawn_orphan() {
    let out = Command::new("sh")
        .args(["-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            log!("orphan pid {}", String::from_utf8_lossy(&o.stdout).trim())
        }
        Ok(o) => log!("orphan shell failed: {}", o.status),
        Err(e) => log!("cannot spawn orphan shell: {e}"),
    }
}

fn unix_addr(a: &tokio::net::unix::SocketAddr) -> String {
    use std::os::linux::net::SocketAddrExt;
    let a: std::os::unix::net::SocketAddr = a.clone().into();
    if let Some(p) = a.as_pathname() {
        p.display().to_string()
    } else if let Some(name) = a.as_abstract_name() {
        format!("@{}", String::from_utf8_lossy(name))
    } else {
        "(unnamed)".to_string()
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Resolves once draining has begun (never, if the sender is gone).
async fn draining(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(
    l: Listener,
    ctx: Arc<Ctx>,
    mut drain: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let (ctx, conn_drain, conn_alive) = (ctx.clone(), drain.clone(), alive.clone());
        let res = tokio::select! {
            biased;
            _ = draining(&mut drain) => break,
            r = async {
                match &l {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(connection(s, ctx, conn_drain, conn_alive));
                    }),
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                        tokio::spawn(connection(s, ctx, conn_drain, conn_alive));
                    }),
                }
            } => r,
        };
        if let Err(e) = res {
            log!("accept: {e}");
            // EMFILE and friends: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // `l` is dropped here: we stop accepting; the socket stays open in hotswap
    // and in the other generations.
}

async fn udp_echo(s: UdpSocket, mut drain: watch::Receiver<bool>, _alive: mpsc::Sender<()>) {
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            biased;
            _ = draining(&mut drain) => break,
            r = s.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    if let Err(e) = s.send_to(&buf[..n], peer).await {
                        log!("udp send to {peer}: {e}");
                    }
                }
                Err(e) => log!("udp recv: {e}"),
            },
        }
    }
}

/// Counts a connection for the drain log line.
struct ConnGuard<'a>(&'a AtomicUsize);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    ctx: Arc<Ctx>,
    drain: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    ctx.connections.fetch_add(1, Ordering::SeqCst);
    let _guard = ConnGuard(&ctx.connections);
    match serve(&mut s, &ctx, drain).await {
        Ok(()) => {}
        // Peers going away mid-request is normal; anything else is worth a line.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) => {}
        Err(e) => log!("connection: {e}"),
    }
    // Lingering close: read what the peer still sends (say, a pipelined
    // request) until it closes too, so closing never turns into a RST that
    // destroys a response the peer has not read yet.
    if s.shutdown().await.is_ok() {
        let mut sink = tokio::io::sink();
        let linger = tokio::io::copy(&mut s, &mut sink);
        let _ = tokio::time::timeout(Duration::from_millis(500), linger).await;
    }
}

struct Request {
    target: String,
    http10: bool,
    head: bool,
    keep_alive: bool,
    content_length: u64,
    chunked: bool,
    expect_continue: bool,
}

/// Serves requests on one connection until it closes, `Connection: close`,
/// or draining.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ctx: &Ctx,
    mut drain: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read a request head; an idle connection is closed 200ms into a drain.
        let head_len = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return respond_error(s, "431 Request Header Fields Too Large").await;
            }
            let n = if buf.is_empty() {
                tokio::select! {
                    r = s.read_buf(&mut buf) => r?,
                    _ = async {
                        draining(&mut drain).await;
                        tokio::time::sleep(DRAIN_IDLE).await;
                    } => return Ok(()),
                }
            } else {
                s.read_buf(&mut buf).await?
            };
            if n == 0 {
                return Ok(()); // EOF (possibly mid-head: nothing to answer)
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.drain(..head_len);
        let req = match parse_head(&head) {
            Ok(r) => r,
            Err(status) => return respond_error(s, status).await,
        };

        if req.expect_continue && !req.http10 && (req.content_length > 0 || req.chunked) {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        if req.chunked {
            discard_chunked(s, &mut buf).await?;
        } else {
            discard(s, &mut buf, req.content_length).await?;
        }

        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let delay = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("delay="))
            .find_map(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let delay = ctx.request_delay + delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }

        let body = if path == "/env" {
            env_body(ctx)
        } else {
            format!(
                "pid={} gen={} instance={} version={}\n",
                ctx.pid, ctx.generation, ctx.instance, ctx.version
            )
        };
        // Decided at answer time: a request in flight when the drain began
        // still gets its answer, then the connection closes.
        let keep = req.keep_alive && !*drain.borrow();
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Pid: {}\r\nX-Generation: {}\r\nX-Instance: {}\r\n",
            body.len(),
            ctx.pid,
            ctx.generation,
            ctx.instance
        );
        if !keep {
            resp.push_str("Connection: close\r\n");
        } else if req.http10 {
            resp.push_str("Connection: keep-alive\r\n");
        }
        resp.push_str("\r\n");
        if !req.head {
            resp.push_str(&body);
        }
        s.write_all(resp.as_bytes()).await?;
        s.flush().await?;
        if !keep {
            return Ok(());
        }
    }
}

/// Length of the head including the blank line (CRLF CRLF, or bare LF LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        }
    })
}

fn parse_head(head: &str) -> Result<Request, &'static str> {
    const BAD: &str = "400 Bad Request";
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    // Tolerate empty lines before the request line (RFC 9112 §2.2).
    let line = lines.by_ref().find(|l| !l.is_empty()).ok_or(BAD)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err("505 HTTP Version Not Supported"),
    };
    let mut req = Request {
        target: target.to_string(),
        http10,
        head: method == "HEAD",
        keep_alive: !http10,
        content_length: 0,
        chunked: false,
        expect_continue: false,
    };
    let mut seen_length: Option<u64> = None;
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').ok_or(BAD)?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value.parse::<u64>().map_err(|_| BAD)?;
                if seen_length.is_some_and(|m| m != n) {
                    return Err(BAD);
                }
                seen_length = Some(n);
            }
            "transfer-encoding" => {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if !last.eq_ignore_ascii_case("chunked") {
                    return Err("501 Not Implemented");
                }
                req.chunked = true;
            }
            "connection" => {
                for tok in value.split(',').map(str::trim) {
                    if tok.eq_ignore_ascii_case("close") {
                        req.keep_alive = false;
                    } else if tok.eq_ignore_ascii_case("keep-alive") && http10 {
                        req.keep_alive = true;
                    }
                }
            }
            "expect" => req.expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    if req.chunked && seen_length.is_some() {
        return Err(BAD); // RFC 9112 §6.1: request smuggling guard
    }
    req.content_length = seen_length.unwrap_or(0);
    Ok(req)
}

/// Answers a request we cannot serve and closes the connection.
async fn respond_error<S: AsyncWrite + Unpin>(s: &mut S, status: &str) -> io::Result<()> {
    let body = format!("{status}\n");
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.flush().await
}

/// Reads and throws away `n` body bytes, first from `buf`, then from `s`.
async fn discard<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, n: u64) -> io::Result<()> {
    let from_buf = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
    buf.drain(..from_buf);
    let rest = n - from_buf as u64;
    if rest > 0 {
        let copied = tokio::io::copy(&mut s.take(rest), &mut tokio::io::sink()).await?;
        if copied < rest {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads one line (without its line ending) from `buf`/`s`.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..i]).trim_end_matches('\r').to_string();
            buf.drain(..=i);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk line too long"));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Throws away a chunked body, trailers included.
async fn discard_chunked<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = read_line(s, buf).await?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            while !read_line(s, buf).await?.is_empty() {}
            return Ok(());
        }
        discard(s, buf, size).await?;
        read_line(s, buf).await?; // the CRLF after the chunk data
    }
}

/// `/env`: what this process received, one `key=value` per line.
fn env_body(ctx: &Ctx) -> String {
    let mut out = String::new();
    let var = |k: &str| env::var(k).unwrap_or_default();
    let _ = writeln!(out, "LISTEN_PID={}", ctx.listen_pid);
    let _ = writeln!(out, "LISTEN_FDS={}", ctx.listen_fds);
    let _ = writeln!(out, "LISTEN_FDNAMES={}", ctx.listen_fdnames);
    let _ = writeln!(out, "getpid={}", ctx.pid);
    let _ = writeln!(out, "listen_pid_ok={}", ctx.listen_pid == ctx.pid.to_string());
    for k in [
        "HOTSWAP_GENERATION",
        "HOTSWAP_INSTANCE",
        "HOTSWAP_READY_FD",
        "NOTIFY_SOCKET",
        "NODE_CHANNEL_FD",
    ] {
        let _ = writeln!(out, "{k}={}", var(k));
    }
    // Open fds and what they point to; the directory handle used to read
    // /proc/self/fd shows up as a link to it and is left out.
    let me = format!("/proc/{}/fd", ctx.pid);
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            (target != me).then_some((fd, target))
        })
        .collect();
    fds.sort();
    let list: Vec<String> = fds.iter().map(|(fd, _)| fd.to_string()).collect();
    let _ = writeln!(out, "fds={}", list.join(","));
    for (fd, target) in fds {
        let _ = writeln!(out, "fd.{fd}={target}");
    }
    out
}
