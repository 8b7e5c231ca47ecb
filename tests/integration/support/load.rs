//! A raw HTTP/1.1 load client on tokio (no hyper) that counts every request's outcome by kind.
//!
//! Two kinds of workers run side by side: *new-connection* workers open a connection per request
//! (`Connection: close`), *keep-alive* workers reuse one connection for many requests. Every
//! logical request ends as exactly one of: ok (2xx), refused, reset, timeout, non-2xx or other.
//!
//! The one exception is the benign idle-close race every HTTP client handles: on a *reused*
//! keep-alive connection the server may close just as we send the next request. If not a single
//! byte of the response arrived (the write failed, or the first read saw EOF or a reset), the
//! request is retried once on a fresh connection and counted in `idle_close_retries`, not as a
//! failure; the retry's own outcome is what counts.
//!
//! A run is bounded: no request starts after `duration`, `max_requests` or a stop signal, and
//! every request (connect, write, whole response) is bounded by `request_timeout`. After a
//! failure a worker pauses 5ms, so a dead target is not hammered in a busy loop.
//!
//! Depends on std and tokio only: the benchmark includes this file with `#[path]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;

/// Width of one bucket of [`LoadReport::timeline`].
pub const BUCKET: Duration = Duration::from_millis(100);

/// How many failure descriptions [`LoadReport::samples`] keeps per failure kind.
const SAMPLES_PER_KIND: usize = 3;

/// A worker pauses this long after a failure, so that a dead target is not hammered in a busy loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

/// A response head larger than this is malformed (counted as `other`).
const MAX_HEAD: usize = 64 * 1024;

/// Where the load goes: loopback TCP or a unix stream socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    /// A socket path, or `@name` for an abstract socket.
    Unix(PathBuf),
}

/// What to run; build with [`LoadConfig::new`] and override fields with struct-update syntax.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: Target,
    /// Workers that open a fresh connection for every request (`Connection: close`).
    pub new_conn_workers: usize,
    /// Workers that keep one connection open for many requests (`Connection: keep-alive`).
    pub keepalive_workers: usize,
    /// No new request starts after this long; in-flight ones finish (bounded by `request_timeout`).
    pub duration: Duration,
    /// Cap on logical requests over all workers (idle-close retries are not extra requests).
    pub max_requests: u64,
    /// A request (connect + write + complete response) taking longer counts as `timeout`.
    pub request_timeout: Duration,
    /// Request target, e.g. `/`.
    pub path: String,
}

impl LoadConfig {
    /// Defaults: 4 new-connection + 4 keep-alive workers, 2 s, 1M requests, 5 s timeout, `/`.
    pub fn new(target: Target) -> Self {
        LoadConfig {
            target,
            new_conn_workers: 4,
            keepalive_workers: 4,
            duration: Duration::from_secs(2),
            max_requests: 1_000_000,
            request_timeout: Duration::from_secs(5),
            path: "/".to_string(),
        }
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// ECONNREFUSED (or EAGAIN from a full unix-socket backlog) at connect.
    Refused,
    /// ECONNRESET / EPIPE, or EOF before the response was complete.
    Reset,
    /// No complete response within `request_timeout`.
    Timeout,
    /// A complete response whose status is not 2xx.
    Non2xx,
    /// Anything else (malformed response, ENOENT, ...); the text is kept in `samples`.
    Other,
}

impl FailureKind {
    /// The name used in [`LoadReport::summary`] and `samples`.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Non2xx => "non_2xx",
            FailureKind::Other => "other",
        }
    }
}

/// Requests completed (ok) and failed in one [`BUCKET`] of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub ok: u64,
    pub failed: u64,
}

/// Everything a load run observed.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// 2xx responses.
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub non_2xx: u64,
    pub other: u64,
    /// Benign idle-close races on reused keep-alive connections, each retried once (not failures).
    pub idle_close_retries: u64,
    /// 2xx responses without a parsable `X-Generation` header.
    pub unattributed: u64,
    /// 2xx responses per `X-Generation`.
    pub by_generation: BTreeMap<u64, u64>,
    /// 2xx responses per `X-Pid`.
    pub by_pid: BTreeMap<u32, u64>,
    /// Generations in the order of their first 2xx response's completion.
    pub generation_order: Vec<u64>,
    /// Per generation: (first, last) time it answered, measured from the start of the run.
    pub generation_seen: BTreeMap<u64, (Duration, Duration)>,
    /// Latency of every ok request (including an idle-close retry), sorted ascending.
    pub latencies: Vec<Duration>,
    /// Every ok request as (start, latency), the start measured from the start of the run,
    /// sorted by start: for latency quantiles inside a time window ([`Self::latency_quantile_in`]).
    pub ok_requests: Vec<(Duration, Duration)>,
    /// Outcomes per [`BUCKET`] since the start, by completion time.
    pub timeline: Vec<Bucket>,
    /// The first few failures of each kind, as `+1.234s reset: read: Connection reset by peer`.
    pub samples: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// When the run started: the zero of `timeline`, `ok_requests` and `generation_seen`.
    pub started_at: Option<Instant>,
}

impl LoadReport {
    /// Failed requests of every kind (idle-close retries are not failures).
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.non_2xx + self.other
    }

    /// Logical requests with an outcome: ok + failed.
    pub fn total(&self) -> u64 {
        self.ok + self.failed()
    }

    /// The generations that answered at least once, ascending.
    pub fn generations(&self) -> Vec<u64> {
        self.by_generation.keys().copied().collect()
    }

    /// The pids that answered at least once.
    pub fn pids(&self) -> BTreeSet<u32> {
        self.by_pid.keys().copied().collect()
    }

    /// Latency quantile `q` in 0.0..=1.0 of ok requests (zero if there were none).
    pub fn latency_quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank]
    }

    /// Latency quantile `q` of the ok requests that were in flight at some moment of one of
    /// `windows` (`(from, to)`, measured from the start of the run); None if there were none.
    pub fn latency_quantile_in(
        &self,
        q: f64,
        windows: &[(Duration, Duration)],
    ) -> Option<Duration> {
        let mut inside: Vec<Duration> = self
            .ok_requests
            .iter()
            .filter(|(start, lat)| {
                windows.iter().any(|(from, to)| *start <= *to && *start + *lat >= *from)
            })
            .map(|(_, lat)| *lat)
            .collect();
        if inside.is_empty() {
            return None;
        }
        inside.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * (inside.len() - 1) as f64).round() as usize;
        Some(inside[rank])
    }

    /// Median latency of ok requests.
    pub fn p50(&self) -> Duration {
        self.latency_quantile(0.50)
    }

    /// 99th percentile latency of ok requests.
    pub fn p99(&self) -> Duration {
        self.latency_quantile(0.99)
    }

    /// Largest latency of an ok request.
    pub fn max_latency(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// Requests per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line with every counter, for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "ok={} failed={} (refused={} reset={} timeout={} non_2xx={} other={}) \
             idle_close_retries={} unattributed={} generations={:?} order={:?} pids={:?} \
             p50={:?} p99={:?} max={:?} in {:.2?} ({:.0} req/s)",
            self.ok,
            self.failed(),
            self.refused,
            self.reset,
            self.timeout,
            self.non_2xx,
            self.other,
            self.idle_close_retries,
            self.unattributed,
            self.by_generation,
            self.generation_order,
            self.pids(),
            self.p50(),
            self.p99(),
            self.max_latency(),
            self.elapsed,
            self.rate(),
        );
        if !self.samples.is_empty() {
            let _ = write!(s, "; first failures: {:?}", self.samples);
        }
        s
    }

    /// Sums the workers' tallies into one report.
    fn merge(tallies: Vec<Tally>, start: Instant, elapsed: Duration) -> LoadReport {
        let mut all = LoadReport { elapsed, started_at: Some(start), ..LoadReport::default() };
        let mut samples = Vec::new();
        for Tally { report: r, samples: s, .. } in tallies {
            all.ok += r.ok;
            all.refused += r.refused;
            all.reset += r.reset;
            all.timeout += r.timeout;
            all.non_2xx += r.non_2xx;
            all.other += r.other;
            all.idle_close_retries += r.idle_close_retries;
            all.unattributed += r.unattributed;
            for (g, n) in r.by_generation {
                *all.by_generation.entry(g).or_default() += n;
            }
            for (p, n) in r.by_pid {
                *all.by_pid.entry(p).or_default() += n;
            }
            for (g, (first, last)) in r.generation_seen {
                let e = all.generation_seen.entry(g).or_insert((first, last));
                e.0 = e.0.min(first);
                e.1 = e.1.max(last);
            }
            all.latencies.extend(r.latencies);
            all.ok_requests.extend(r.ok_requests);
            if all.timeline.len() < r.timeline.len() {
                all.timeline.resize(r.timeline.len(), Bucket::default());
            }
            for (mine, theirs) in all.timeline.iter_mut().zip(r.timeline) {
                mine.ok += theirs.ok;
                mine.failed += theirs.failed;
            }
            samples.extend(s);
        }
        all.latencies.sort_unstable();
        all.ok_requests.sort_unstable();
        let mut order: Vec<_> =
            all.generation_seen.iter().map(|(g, (first, _))| (*first, *g)).collect();
        order.sort();
        all.generation_order = order.into_iter().map(|(_, g)| g).collect();
        samples.sort_by_key(|(at, _, _)| *at);
        let mut per_kind = [0usize; 5];
        for (at, kind, msg) in samples {
            if per_kind[kind as usize] < SAMPLES_PER_KIND {
                per_kind[kind as usize] += 1;
                let secs = at.as_secs_f64();
                all.samples.push(format!("+{secs:.3}s {}: {msg}", kind.name()));
            }
        }
        all
    }
}

/// Live counters, readable while a run is in progress (see [`LoadHandle`]).
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
}

/// Runs the load until `duration`, `max_requests` or `stop` becoming true (or its sender dropped).
pub async fn run(cfg: LoadConfig, stop: Option<watch::Receiver<bool>>) -> LoadReport {
    run_with_progress(cfg, stop, Arc::new(Progress::default())).await
}

/// [`run`], updating `progress` as requests complete.
pub async fn run_with_progress(
    cfg: LoadConfig,
    stop: Option<watch::Receiver<bool>>,
    progress: Arc<Progress>,
) -> LoadReport {
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        deadline: start + cfg.duration,
        close_request: request(&cfg.path, false),
        keepalive_request: request(&cfg.path, true),
        cfg,
        start,
        issued: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        progress,
    });
    let watcher = stop.map(|mut rx| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // A dropped sender also stops the run, so an abandoned handle never runs forever.
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
            ctx.stopped.store(true, Relaxed);
        })
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..ctx.cfg.new_conn_workers {
        workers.spawn(new_conn_worker(ctx.clone()));
    }
    for _ in 0..ctx.cfg.keepalive_workers {
        workers.spawn(keepalive_worker(ctx.clone()));
    }
    let mut tallies = Vec::new();
    while let Some(tally) = workers.join_next().await {
        tallies.push(tally.expect("load worker panicked"));
    }
    if let Some(w) = watcher {
        w.abort();
    }
    LoadReport::merge(tallies, start, start.elapsed())
}

/// [`run`] on a runtime of its own (two worker threads), blocking until done.
pub fn run_blocking(cfg: LoadConfig) -> LoadReport {
    runtime().block_on(run(cfg, None))
}

/// Starts [`run`] on a background thread; the test thread stays free to send signals.
pub fn spawn_in_thread(cfg: LoadConfig) -> LoadHandle {
    let (stop, rx) = watch::channel(false);
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let thread = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || runtime().block_on(run_with_progress(cfg, Some(rx), p)))
        .expect("spawn load thread");
    LoadHandle { stop, progress, thread }
}

/// A load run on a background thread; dropping it stops the run without waiting.
pub struct LoadHandle {
    stop: watch::Sender<bool>,
    progress: Arc<Progress>,
    thread: std::thread::JoinHandle<LoadReport>,
}

impl LoadHandle {
    /// Asks the run to stop: no new requests start; in-flight ones finish.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the run to end (duration, cap or `stop`) and returns its report.
    pub fn finish(self) -> LoadReport {
        self.thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// [`stop`](Self::stop) then [`finish`](Self::finish).
    pub fn stop_and_finish(self) -> LoadReport {
        self.stop();
        self.finish()
    }

    /// Ok requests so far.
    pub fn ok_so_far(&self) -> u64 {
        self.progress.ok.load(Relaxed)
    }
}

/// The runtime `run_blocking` and `spawn_in_thread` use.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build load runtime")
}

/// The request bytes for `path`.
fn request(path: &str, keepalive: bool) -> Vec<u8> {
    let conn = if keepalive { "keep-alive" } else { "close" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: hotswap-load\r\nConnection: {conn}\r\n\r\n"
    )
    .into_bytes()
}

/// State shared by all workers of one run.
struct Ctx {
    cfg: LoadConfig,
    start: Instant,
    deadline: Instant,
    close_request: Vec<u8>,
    keepalive_request: Vec<u8>,
    issued: AtomicU64,
    stopped: AtomicBool,
    progress: Arc<Progress>,
}

impl Ctx {
    /// Claims the next request, or says the run is over.
    fn next_request(&self) -> bool {
        if self.stopped.load(Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        self.issued.fetch_add(1, Relaxed) < self.cfg.max_requests
    }
}

/// One worker's share of the report.
struct Tally {
    start: Instant,
    report: LoadReport,
    /// The first few failures of each kind: (since start, kind, text).
    samples: Vec<(Duration, FailureKind, String)>,
    samples_per_kind: [usize; 5],
}

impl Tally {
    fn new(start: Instant) -> Self {
        Tally {
            start,
            report: LoadReport::default(),
            samples: Vec::new(),
            samples_per_kind: [0; 5],
        }
    }

    /// Records the final outcome of one logical request that began at `began`; true if ok.
    fn record(&mut self, ctx: &Ctx, began: Instant, outcome: Result<Head, Failure>) -> bool {
        let now = Instant::now();
        let since = now - self.start;
        let bucket = (since.as_nanos() / BUCKET.as_nanos()) as usize;
        let r = &mut self.report;
        if r.timeline.len() <= bucket {
            r.timeline.resize(bucket + 1, Bucket::default());
        }
        let failure = match outcome {
            Ok(head) if (200..300).contains(&head.status) => {
                r.ok += 1;
                r.timeline[bucket].ok += 1;
                r.latencies.push(now - began);
                r.ok_requests.push((began.saturating_duration_since(self.start), now - began));
                match head.generation {
                    Some(g) => {
                        *r.by_generation.entry(g).or_default() += 1;
                        let e = r.generation_seen.entry(g).or_insert((since, since));
                        e.1 = since;
                    }
                    None => r.unattributed += 1,
                }
                if let Some(p) = head.pid {
                    *r.by_pid.entry(p).or_default() += 1;
                }
                ctx.progress.ok.fetch_add(1, Relaxed);
                return true;
            }
            Ok(head) => Failure::new(FailureKind::Non2xx, format!("status {}", head.status)),
            Err(f) => f,
        };
        match failure.kind {
            FailureKind::Refused => r.refused += 1,
            FailureKind::Reset => r.reset += 1,
            FailureKind::Timeout => r.timeout += 1,
            FailureKind::Non2xx => r.non_2xx += 1,
            FailureKind::Other => r.other += 1,
        }
        r.timeline[bucket].failed += 1;
        let n = &mut self.samples_per_kind[failure.kind as usize];
        if *n < SAMPLES_PER_KIND {
            *n += 1;
            self.samples.push((since, failure.kind, failure.msg));
        }
        false
    }
}

/// Loop: connect, send one `Connection: close` request, read the response, let the server close.
async fn new_conn_worker(ctx: Arc<Ctx>) -> Tally {
    let mut tally = Tally::new(ctx.start);
    while ctx.next_request() {
        let began = Instant::now();
        let mut slot = None;
        let outcome = attempt(&ctx, &mut slot, &ctx.close_request).await;
        if !tally.record(&ctx, began, outcome) {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
        if let Some(conn) = slot {
            // Wait briefly for the server's FIN so that TIME_WAIT lands on its side, not ours.
            let _ = timeout(Duration::from_secs(1), conn.read_to_eof()).await;
        }
    }
    tally
}

/// Loop over one reused connection; reconnect when the server closes it.
async fn keepalive_worker(ctx: Arc<Ctx>) -> Tally {
    let mut tally = Tally::new(ctx.start);
    let mut slot: Option<Conn> = None;
    while ctx.next_request() {
        let began = Instant::now();
        let reused = slot.is_some();
        let mut outcome = attempt(&ctx, &mut slot, &ctx.keepalive_request).await;
        if let Err(f) = &outcome {
            if reused && f.before_response {
                // The server closed the idle connection as we reused it: retry once, fresh.
                tally.report.idle_close_retries += 1;
                outcome = attempt(&ctx, &mut slot, &ctx.keepalive_request).await;
            }
        }
        let close = outcome.as_ref().is_ok_and(|h| h.close);
        if !tally.record(&ctx, began, outcome) {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
        if let Some(conn) = slot.take_if(|_| close) {
            let _ = timeout(Duration::from_secs(1), conn.read_to_eof()).await;
        }
    }
    tally
}

/// One request on the connection in `slot` (or a new one); leaves the connection in `slot` only
/// if a complete response was read from it.
async fn attempt(ctx: &Ctx, slot: &mut Option<Conn>, req: &[u8]) -> Result<Head, Failure> {
    let exchange = async {
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => Conn::connect(&ctx.cfg.target).await?,
        };
        let head = conn.exchange(req).await?;
        Ok((conn, head))
    };
    match timeout(ctx.cfg.request_timeout, exchange).await {
        Ok(Ok((conn, head))) => {
            *slot = Some(conn);
            Ok(head)
        }
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::new(
            FailureKind::Timeout,
            format!("no complete response within {:?}", ctx.cfg.request_timeout),
        )),
    }
}

/// A failed attempt.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    msg: String,
    /// Nothing of the response arrived: the write failed, or the first read saw EOF/reset.
    before_response: bool,
}

impl Failure {
    fn new(kind: FailureKind, msg: String) -> Self {
        Failure { kind, msg, before_response: false }
    }

    /// An I/O error at `stage`, classified by its kind.
    fn io(stage: &str, e: &io::Error, before_response: bool) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => FailureKind::Reset,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            // A non-blocking connect to a unix socket whose backlog is full fails with EAGAIN.
            io::ErrorKind::WouldBlock if stage == "connect" => FailureKind::Refused,
            _ => FailureKind::Other,
        };
        Failure { kind, msg: format!("{stage}: {e}"), before_response }
    }
}

/// What the load client needs from a response head.
#[derive(Debug)]
struct Head {
    status: u16,
    /// The connection cannot carry another request.
    close: bool,
    pid: Option<u32>,
    generation: Option<u64>,
}

/// A stream to the target.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection plus the bytes read from it but not yet consumed.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Bytes received since the current response began.
    received: usize,
}

impl Conn {
    /// Connects to the target.
    async fn connect(target: &Target) -> Result<Conn, Failure> {
        let io: Box<dyn Io> = match target {
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| Failure::io("connect", &e, false))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Target::Unix(path) => {
                // `@name` is an abstract socket, which tokio spells with a leading NUL.
                let path = match path.to_str().and_then(|p| p.strip_prefix('@')) {
                    Some(name) => PathBuf::from(format!("\0{name}")),
                    None => path.clone(),
                };
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Failure::io("connect", &e, false))?;
                Box::new(s)
            }
        };
        Ok(Conn { io, buf: Vec::with_capacity(4096), received: 0 })
    }

    /// Sends `req` and reads one complete response.
    async fn exchange(&mut self, req: &[u8]) -> Result<Head, Failure> {
        self.io.write_all(req).await.map_err(|e| Failure::io("write", &e, true))?;
        self.received = self.buf.len();
        self.read_response().await
    }

    /// Reads more bytes into `buf`; EOF is an error (the response is incomplete).
    async fn fill(&mut self) -> Result<(), Failure> {
        let mut chunk = [0u8; 16 * 1024];
        let before_response = self.received == 0;
        match self.io.read(&mut chunk).await {
            Ok(0) => Err(Failure {
                kind: FailureKind::Reset,
                msg: format!(
                    "read: connection closed after {} bytes of the response",
                    self.received
                ),
                before_response,
            }),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.received += n;
                Ok(())
            }
            Err(e) => Err(Failure::io("read", &e, before_response)),
        }
    }

    /// Fills until `buf` holds at least `n` bytes.
    async fn need(&mut self, n: usize) -> Result<(), Failure> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(())
    }

    /// Fills until `buf` contains `pat`; returns the index just past it.
    async fn until(&mut self, pat: &[u8], limit: usize) -> Result<usize, Failure> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                return Ok(i + pat.len());
            }
            if self.buf.len() > limit {
                return Err(Failure::new(
                    FailureKind::Other,
                    format!("no {pat:?} within {limit} bytes"),
                ));
            }
            self.fill().await?;
        }
    }

    /// Reads one response (skipping 1xx), consuming its body per Content-Length, chunked or EOF.
    async fn read_response(&mut self) -> Result<Head, Failure> {
        loop {
            let end = self.until(b"\r\n\r\n", MAX_HEAD).await?;
            let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end);
            let parsed = parse_head(&text).map_err(|m| Failure::new(FailureKind::Other, m))?;
            let mut head = parsed.head;
            if (100..200).contains(&head.status) {
                continue;
            }
            if head.status == 204 || head.status == 304 {
                // No body by definition.
            } else if parsed.chunked {
                self.skip_chunked().await?;
            } else if let Some(len) = parsed.content_length {
                self.need(len).await?;
                self.buf.drain(..len);
            } else {
                // Delimited by EOF: read until the server closes.
                loop {
                    let mut chunk = [0u8; 16 * 1024];
                    match self.io.read(&mut chunk).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(Failure::io("read", &e, false)),
                    }
                }
                self.buf.clear();
                head.close = true;
            }
            return Ok(head);
        }
    }

    /// Consumes a chunked body including trailers.
    async fn skip_chunked(&mut self) -> Result<(), Failure> {
        loop {
            let end = self.until(b"\r\n", MAX_HEAD).await?;
            let line = String::from_utf8_lossy(&self.buf[..end - 2]).into_owned();
            self.buf.drain(..end);
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16).map_err(|_| {
                Failure::new(FailureKind::Other, format!("bad chunk size {line:?}"))
            })?;
            if size == 0 {
                // Trailers, ended by an empty line.
                loop {
                    let end = self.until(b"\r\n", MAX_HEAD).await?;
                    self.buf.drain(..end);
                    if end == 2 {
                        return Ok(());
                    }
                }
            }
            self.need(size + 2).await?;
            self.buf.drain(..size + 2);
        }
    }

    /// Reads and discards until EOF or an error.
    async fn read_to_eof(mut self) {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = self.io.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// A parsed head plus how its body is delimited.
struct ParsedHead {
    head: Head,
    content_length: Option<usize>,
    chunked: bool,
}

/// Parses a status line and headers (the text up to and including the blank line).
fn parse_head(text: &str) -> Result<ParsedHead, String> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (Some(status), true) = (status, version.starts_with("HTTP/1.")) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    let mut p = ParsedHead {
        head: Head { status, close: version == "HTTP/1.0", pid: None, generation: None },
        content_length: None,
        chunked: false,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                p.content_length =
                    Some(value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?);
            }
            "transfer-encoding" => p.chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    p.head.close = true;
                } else if v.contains("keep-alive") {
                    p.head.close = false;
                }
            }
            "x-pid" => p.head.pid = value.parse().ok(),
            "x-generation" => p.head.generation = value.parse().ok(),
            _ => {}
        }
    }
    Ok(p)
}
