//! The load client proves itself against a tiny HTTP/1.1 server running inside the test, whose
//! every answer is chosen per request and counted, so the report can be checked exactly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::load::{self, LoadConfig, LoadReport, Target};
use crate::support::{
    GENEROUS, HTTP_TIMEOUT, WAIT, free_port, http_get, http_get_unix, port_is_closed, wait_until,
};

/// What the test server does with a request.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// 200 with X-Pid/X-Generation, body framed by Content-Length or chunked.
    Ok { generation: u64, chunked: bool },
    /// A complete 500 response; the connection stays usable.
    Error500,
    /// Head and part of the body, then close.
    CloseMidResponse,
    /// Close without sending a byte.
    CloseSilently,
    /// Never answer (the client's timeout must fire).
    Hang,
}

/// Chooses the act for the `n`th request overall, the `on_conn`th answered on its connection.
type Policy = dyn Fn(u64, u64) -> Act + Send + Sync;

/// What the server did, for exact comparison with the client's report.
#[derive(Debug, Default)]
struct Counts {
    connections: AtomicU64,
    requests: AtomicU64,
    keepalive_requests: AtomicU64,
    ok: AtomicU64,
    error_500: AtomicU64,
    mid_close: AtomicU64,
    silent_fresh: AtomicU64,
    silent_reused: AtomicU64,
    hang: AtomicU64,
}

impl Counts {
    fn get(c: &AtomicU64) -> u64 {
        c.load(SeqCst)
    }
}

/// A server on its own runtime; dropping it stops it.
struct TestServer {
    target: Target,
    counts: Arc<Counts>,
    _runtime: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Serves on 127.0.0.1:0.
    fn tcp(policy: impl Fn(u64, u64) -> Act + Send + Sync + 'static) -> TestServer {
        let runtime = server_runtime();
        let counts = Arc::new(Counts::default());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (policy, c): (Arc<Policy>, _) = (Arc::new(policy), counts.clone());
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.connections.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, policy.clone(), c.clone()));
            }
        });
        TestServer { target: Target::Tcp(addr), counts, _runtime: runtime, _dir: None }
    }

    /// Serves on a unix socket in a fresh temp dir, or on an abstract one.
    fn unix(
        abstract_name: bool,
        policy: impl Fn(u64, u64) -> Act + Send + Sync + 'static,
    ) -> TestServer {
        let runtime = server_runtime();
        let counts = Arc::new(Counts::default());
        let dir = tempfile::tempdir().unwrap();
        let (path, bind) = match abstract_name {
            true => {
                let name = format!("hotswap-load-test-{}", std::process::id());
                (PathBuf::from(format!("@{name}")), PathBuf::from(format!("\0{name}")))
            }
            false => (dir.path().join("app.sock"), dir.path().join("app.sock")),
        };
        let listener = runtime.block_on(async { tokio::net::UnixListener::bind(&bind) }).unwrap();
        let (policy, c): (Arc<Policy>, _) = (Arc::new(policy), counts.clone());
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.connections.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, policy.clone(), c.clone()));
            }
        });
        TestServer { target: Target::Unix(path), counts, _runtime: runtime, _dir: Some(dir) }
    }

    fn addr(&self) -> SocketAddr {
        match self.target {
            Target::Tcp(a) => a,
            Target::Unix(_) => panic!("not a TCP server"),
        }
    }
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Answers requests on one connection until the client or the policy closes it.
async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, policy: Arc<Policy>, c: Arc<Counts>) {
    let mut buf = Vec::new();
    let mut on_conn = 0;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let request = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let close = request.contains("connection: close");
        if !close {
            c.keepalive_requests.fetch_add(1, SeqCst);
        }
        let n = c.requests.fetch_add(1, SeqCst);
        let connection = if close { "close" } else { "keep-alive" };
        let response = match policy(n, on_conn) {
            Act::Ok { generation, chunked } => {
                c.ok.fetch_add(1, SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Pid: {}\r\nX-Generation: {generation}\r\nConnection: {connection}\r\n",
                    std::process::id()
                );
                if chunked {
                    format!(
                        "{head}Transfer-Encoding: chunked\r\n\r\n3\r\ngen\r\n2;x=y\r\n=1\r\n0\r\n\r\n"
                    )
                } else {
                    format!("{head}Content-Length: 5\r\n\r\ngen=1")
                }
            }
            Act::Error500 => {
                c.error_500.fetch_add(1, SeqCst);
                format!(
                    "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: {connection}\r\n\r\noops"
                )
            }
            Act::CloseMidResponse => {
                c.mid_close.fetch_add(1, SeqCst);
                let _ =
                    io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part").await;
                return;
            }
            Act::CloseSilently if on_conn == 0 => {
                c.silent_fresh.fetch_add(1, SeqCst);
                return;
            }
            Act::CloseSilently => {
                c.silent_reused.fetch_add(1, SeqCst);
                return;
            }
            Act::Hang => {
                c.hang.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
        };
        if io.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
        on_conn += 1;
    }
}

/// The report's internal sums agree with its counters.
fn assert_consistent(r: &LoadReport) {
    let s = r.summary();
    assert_eq!(r.timeline.iter().map(|b| b.ok).sum::<u64>(), r.ok, "{s}");
    assert_eq!(r.timeline.iter().map(|b| b.failed).sum::<u64>(), r.failed(), "{s}");
    assert_eq!(r.latencies.len() as u64, r.ok, "{s}");
    assert_eq!(r.by_generation.values().sum::<u64>() + r.unattributed, r.ok, "{s}");
    assert!(r.p50() <= r.p99() && r.p99() <= r.max_latency(), "{s}");
}

#[test]
fn every_request_ok_with_both_worker_kinds_over_tcp() {
    let server = TestServer::tcp(|n, _| Act::Ok {
        generation: if n < 100 { 1 } else { 2 },
        chunked: n % 2 == 1,
    });
    let duration = Duration::from_secs(1);
    let before = Instant::now();
    let report = load::run_blocking(LoadConfig {
        new_conn_workers: 3,
        keepalive_workers: 3,
        duration,
        request_timeout: Duration::from_secs(2),
        ..LoadConfig::new(server.target.clone())
    });
    let after = Instant::now();
    let s = report.summary();
    eprintln!("{s}");
    let c = &server.counts;
    assert_eq!(report.failed(), 0, "{s}");
    assert_eq!(report.idle_close_retries, 0, "{s}");
    assert_eq!(report.ok, Counts::get(&c.ok), "{s}");
    assert!(report.ok > 100, "{s}");
    assert_eq!(report.by_generation.get(&1), Some(&100), "{s}");
    assert_eq!(report.generation_order, [1, 2], "{s}");
    assert_eq!(report.pids(), [std::process::id()].into(), "{s}");
    assert_eq!(report.unattributed, 0, "{s}");
    // Both kinds of workers ran, and keep-alive connections were reused.
    let keepalive = Counts::get(&c.keepalive_requests);
    assert!(keepalive > 0 && keepalive < report.ok, "{keepalive} keep-alive requests; {s}");
    assert!(Counts::get(&c.connections) < report.ok, "connections were reused; {s}");
    // It stops at `duration` (no event marks that moment: a GENEROUS bound).
    assert!(report.elapsed >= duration && report.elapsed < duration * GENEROUS, "{s}");
    // `started_at` is the zero of the run's own times (the bench's reload windows use it).
    let started = report.started_at.expect("started_at");
    assert!(before <= started && started + report.elapsed <= after, "{s}");
    // Every ok request was in flight at some moment of the whole run, none after its end.
    let whole_run = (Duration::ZERO, report.elapsed);
    assert_eq!(report.latency_quantile_in(1.0, &[whole_run]), Some(report.max_latency()), "{s}");
    let after_the_end = (report.elapsed + Duration::from_secs(1), report.elapsed * 2);
    assert_eq!(report.latency_quantile_in(0.5, &[after_the_end]), None, "{s}");
    assert_consistent(&report);
}

#[test]
fn latency_in_windows_counts_the_requests_in_flight_then() {
    let ms = Duration::from_millis;
    // (start, latency) since the start of the run: in flight 0-10, 100-150, 140-145, 300-301.
    let report = LoadReport {
        ok_requests: vec![(ms(0), ms(10)), (ms(100), ms(50)), (ms(140), ms(5)), (ms(300), ms(1))],
        ..LoadReport::default()
    };
    let q = |q: f64, windows: &[(Duration, Duration)]| report.latency_quantile_in(q, windows);
    assert_eq!(q(1.0, &[(ms(120), ms(130))]), Some(ms(50)), "only the one in flight then");
    assert_eq!(q(0.0, &[(ms(142), ms(142))]), Some(ms(5)), "two in flight at 142ms");
    assert_eq!(q(1.0, &[(ms(142), ms(142))]), Some(ms(50)));
    assert_eq!(q(1.0, &[(ms(10), ms(10))]), Some(ms(10)), "a window touching the end counts");
    assert_eq!(q(0.5, &[(ms(20), ms(90)), (ms(200), ms(299))]), None, "nothing in flight");
    assert_eq!(q(1.0, &[(ms(5), ms(6)), (ms(300), ms(300))]), Some(ms(10)), "two windows");
    assert_eq!(q(0.0, &[(ms(5), ms(6)), (ms(300), ms(300))]), Some(ms(1)));
}

#[test]
fn unix_target_request_cap_and_stop_from_another_thread() {
    let server = TestServer::unix(false, |_, _| Act::Ok { generation: 5, chunked: false });

    let capped = load::run_blocking(LoadConfig {
        duration: Duration::from_secs(30),
        max_requests: 300,
        ..LoadConfig::new(server.target.clone())
    });
    assert_eq!((capped.ok, capped.failed()), (300, 0), "{}", capped.summary());
    assert_eq!(capped.generations(), [5], "{}", capped.summary());

    let duration = Duration::from_secs(30);
    let handle =
        load::spawn_in_thread(LoadConfig { duration, ..LoadConfig::new(server.target.clone()) });
    wait_until("100 ok requests", WAIT, || (handle.ok_so_far() >= 100).then_some(()));
    let report = handle.stop_and_finish();
    let s = report.summary();
    assert_eq!(report.failed(), 0, "{s}");
    assert!(report.ok >= 100, "{s}");
    assert!(report.elapsed < duration, "stopped by its own 30s deadline, not by stop: {s}");
    assert_consistent(&report);
}

#[test]
fn failures_are_counted_by_kind() {
    let server = TestServer::tcp(|n, _| match n % 10 {
        _ if n == 20 || n == 121 => Act::Hang,
        3 => Act::Error500,
        5 => Act::CloseMidResponse,
        7 => Act::CloseSilently,
        _ => Act::Ok { generation: 1, chunked: false },
    });
    let report = load::run_blocking(LoadConfig {
        new_conn_workers: 3,
        keepalive_workers: 3,
        duration: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..LoadConfig::new(server.target.clone())
    });
    let s = report.summary();
    eprintln!("{s}");
    let c = &server.counts;
    assert_eq!(report.ok, Counts::get(&c.ok), "{s}");
    assert_eq!(report.non_2xx, Counts::get(&c.error_500), "{s}");
    // A close without a byte is a reset on a fresh connection, a retried race on a reused one.
    assert_eq!(report.reset, Counts::get(&c.mid_close) + Counts::get(&c.silent_fresh), "{s}");
    assert_eq!(report.idle_close_retries, Counts::get(&c.silent_reused), "{s}");
    assert_eq!(report.timeout, Counts::get(&c.hang), "{s}");
    assert_eq!((report.refused, report.other), (0, 0), "{s}");
    // Every request the server read is accounted for exactly once.
    assert_eq!(report.total() + report.idle_close_retries, Counts::get(&c.requests), "{s}");
    for kind in ["non_2xx", "reset", "timeout"] {
        assert!(report.samples.iter().any(|l| l.contains(&format!(" {kind}: "))), "{kind}: {s}");
    }
    assert!(report.ok > 0 && report.non_2xx > 0 && report.reset > 0 && report.timeout > 0, "{s}");
    assert!(Counts::get(&c.silent_fresh) > 0 && report.idle_close_retries > 0, "{s}");
    assert_consistent(&report);
}

#[test]
fn idle_close_race_is_retried_not_failed() {
    // The server drops every keep-alive connection, silently, when its 4th request arrives.
    let server = TestServer::tcp(|_, on_conn| match on_conn {
        3 => Act::CloseSilently,
        _ => Act::Ok { generation: 1, chunked: false },
    });
    let report = load::run_blocking(LoadConfig {
        new_conn_workers: 0,
        keepalive_workers: 2,
        duration: Duration::from_millis(500),
        ..LoadConfig::new(server.target.clone())
    });
    let s = report.summary();
    assert_eq!(report.failed(), 0, "{s}");
    assert!(report.idle_close_retries > 0, "{s}");
    assert_eq!(report.idle_close_retries, Counts::get(&server.counts.silent_reused), "{s}");
    assert_consistent(&report);
}

#[test]
fn refused_when_nothing_listens() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    assert!(port_is_closed(addr));
    let report = load::run_blocking(LoadConfig {
        duration: Duration::from_millis(300),
        max_requests: 500,
        ..LoadConfig::new(Target::Tcp(addr))
    });
    let s = report.summary();
    assert!(report.total() > 0, "{s}");
    assert_eq!((report.ok, report.refused), (0, report.total()), "{s}");
    assert_eq!(report.idle_close_retries, 0, "{s}");
    assert!(report.samples[0].contains("refused: connect:"), "{s}");
    assert_consistent(&report);
}

#[test]
fn http_get_reads_headers_and_both_body_framings() {
    let server = TestServer::tcp(|n, _| Act::Ok { generation: 9, chunked: n == 1 });
    for _ in 0..2 {
        let r = http_get(server.addr(), "/").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "gen=1"), "{r:?}");
        assert_eq!((r.pid(), r.generation()), (Some(std::process::id()), Some(9)), "{r:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for godot")]
fn wait_until_names_what_it_waited_for() {
    wait_until("godot", Duration::from_millis(50), || None::<()>);
}

#[test]
fn abstract_unix_socket_for_load_and_http_get_unix() {
    let server = TestServer::unix(true, |_, _| Act::Ok { generation: 3, chunked: false });
    let Target::Unix(path) = &server.target else { unreachable!() };
    assert!(path.to_str().unwrap().starts_with('@'));
    let r = http_get_unix(path, "/").unwrap();
    assert_eq!((r.status, r.generation()), (200, Some(3)), "{r:?}");
    let report = load::run_blocking(LoadConfig {
        max_requests: 200,
        ..LoadConfig::new(server.target.clone())
    });
    assert_eq!((report.ok, report.failed()), (200, 0), "{}", report.summary());
}

#[test]
fn http_get_returns_once_the_body_is_complete_even_if_the_server_lingers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy").unwrap();
        // Keep the connection open until the client closes it.
        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let started = Instant::now();
    let r = http_get(addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str(), r.generation()), (503, "busy", None));
    // Had it waited for the server to close, its own read timeout would have ended it (an error).
    assert!(started.elapsed() < HTTP_TIMEOUT, "returned after its read timeout");
}
