//! The thin runtime around the core: turns signals, child exits, readiness
//! messages, control requests and timers into `Event`s, and performs the
//! core's `Action`s through `sys`. No policy lives here.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::config::ReadyMode;
use crate::core::{
    self, Action, Event, ExitStatus, Notice, Outcome, Pid, Seen, Supervisor, Upstream, Via,
    WaiterId,
};
use crate::protocol::activation::STORED_PREFIX;
use crate::protocol::claim::BindAddr;
use crate::protocol::control::{ReloadResult, Reply, Request};
use crate::protocol::notify;
use crate::sys::channels::{self, Channel, Channels, Heard, Offer, Watch};
use crate::sys::control::ControlRequest;
use crate::sys::process::{self, Exit};
use crate::sys::procfs::{self, Watched};
use crate::sys::sockets::{SocketOptions, Sockets};
use crate::sys::spawn::{Forked, Gate, Release, SpawnError, Spawner, spawn_probe};
use crate::sys::tracking::Tracker;
use crate::sys::upstream::{UpstreamSocket, monotonic_usec};

mod children;
mod claims;
pub mod handoff;
mod sampler;
mod signals;
mod status;

use children::{Children, Reaped};
use handoff::{DriverState, Handoff};
use sampler::Sampler;
use signals::{Caught, Signals};

/// A child is checked for the bind shim once the loader has surely run.
const SHIM_GRACE: Duration = Duration::from_millis(20);

/// `--watch`: how long the files must stay unchanged before the reload.
const WATCH_QUIET: Duration = Duration::from_millis(300);

/// How often each serving instance's memory is measured under `--max-memory`.
const MEMORY_EVERY: Duration = Duration::from_secs(1);

/// How often `EXTEND_TIMEOUT_USEC` is sent again while a start, reload or
/// stop runs, and the margin it adds to hotswap's own deadline.
const EXTEND_EVERY: Duration = Duration::from_secs(2);
const EXTEND_MARGIN: Duration = Duration::from_secs(5);

/// Pause between a failed `exec:` probe and the next.
const PROBE_RETRY: Duration = Duration::from_millis(250);

/// Everything the driver needs to run one service.
pub struct Service {
    pub name: String,
    /// The path hotswap was first started from: USR2 executes it.
    pub binary: PathBuf,
    pub core: core::Config,
    pub ready: ReadyMode,
    pub spawner: Spawner,
    pub sockets: Sockets,
    /// Where each child's private NOTIFY_SOCKET is created (mode 0700).
    pub notify_dir: PathBuf,
    pub control: Option<std::os::unix::net::UnixListener>,
    /// The claim socket the preload library asks (`--intercept-bind on`).
    pub claims: Option<std::os::unix::net::UnixListener>,
    /// Options for sockets claimed at a child's bind() or replaced.
    pub socket_options: SocketOptions,
    /// `--max-memory`, in bytes: each serving instance's tree is measured once a second.
    pub max_memory: Option<u64>,
    /// `--watch`: a change under these paths reloads.
    pub watch: Vec<PathBuf>,
    pub upstream: Option<UpstreamSocket>,
    /// How often hotswap sends `WATCHDOG=1` upstream (half its `WATCHDOG_USEC`).
    pub own_watchdog: Option<Duration>,
    /// systemd offers an fd store (`FDSTORE`): every socket hotswap owns goes there.
    pub fd_store: bool,
}

struct Driver {
    service: Service,
    started_at: SystemTime,
    uid: u32,
    children: Children,
    waiters: HashMap<WaiterId, mpsc::UnboundedSender<Reply>>,
    next_waiter: WaiterId,
    spawned: u64,
    /// Where channel readers report what they hear.
    heard: channels::Reports,
    /// Where a failed probe's retry timer asks for the next probe of a child.
    probe_due: mpsc::UnboundedSender<Pid>,
    /// Which processes each child started.
    tracker: Tracker,
    /// When to look at each starting child's tree in /proc.
    sampler: Sampler,
    /// Retired children reaped while what they started still drains: the
    /// core hears of their exit once that is gone too.
    lingering: HashMap<Pid, ExitStatus>,
    /// What each generation runs, while a generation or a rollback needs it.
    releases: std::collections::BTreeMap<u64, Release>,
    /// Programs already named for running without the bind shim.
    unshimmed: std::collections::BTreeSet<String>,
    /// Children spawned in this batch, whose channels are listened to once
    /// the batch is done.
    unwatched: Vec<(Pid, Channels)>,
    exit: Option<i32>,
    /// The control and claim sockets' fds (tokio owns them), for a re-exec.
    control_fd: Option<RawFd>,
    claims_fd: Option<RawFd>,
}

/// Runs the service until hotswap should exit; returns the exit code.
/// `resumed`: this process is a re-exec of hotswap (USR2) and goes on
/// from where the previous one was.
pub async fn run(mut service: Service, resumed: Option<DriverState>) -> std::io::Result<i32> {
    // Signal handlers first: nothing may exit or ask for a reload unheard.
    let mut signals = Signals::install()?;
    // Before the unblock, so that its thread blocks the handled signals for
    // good: one delivered there could be lost by a re-exec (USR2).
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let _watch = match service.watch.as_slice() {
        [] => None,
        paths => match crate::sys::watch::watch(paths, changed_tx) {
            Ok(watch) => Some(watch),
            // After a USR2 the children run: a path gone since start is no reason to stop.
            Err(e) if resumed.is_some() => {
                tracing::warn!("--watch: {e}; changes no longer reload");
                None
            }
            Err(e) => return Err(e),
        },
    };
    // Handlers exist: what arrived since hotswap's first instruction is delivered now.
    process::unblock_all_signals()?;

    let (heard, mut heard_rx) = mpsc::unbounded_channel();
    let (probe_due, mut probe_due_rx) = mpsc::unbounded_channel();
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let control_fd = service.control.as_ref().map(|l| l.as_raw_fd());
    let claims_fd = service.claims.as_ref().map(|l| l.as_raw_fd());
    if let Some(listener) = service.control.take() {
        tokio::spawn(crate::sys::control::serve(
            tokio::net::UnixListener::from_std(listener)?,
            control_tx,
        ));
    }
    let (claim_tx, mut claim_rx) = mpsc::unbounded_channel();
    if let Some(listener) = service.claims.take() {
        tokio::spawn(crate::sys::claims::serve(listener, claim_tx));
    }
    // At most once a second, and only with --max-memory (never at steady state otherwise).
    let mut memory_tick = tokio::time::interval(MEMORY_EVERY);
    memory_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A burst of writes (an editor saving, a build) is one reload, once quiet.
    let mut quiet_at: Option<Instant> = None;
    let mut driver = Driver {
        service,
        started_at: SystemTime::now(),
        uid: nix::unistd::geteuid().as_raw(),
        children: Children::default(),
        waiters: HashMap::new(),
        next_waiter: 1,
        spawned: 0,
        heard,
        probe_due,
        tracker: Tracker::new(),
        sampler: Sampler::default(),
        lingering: HashMap::new(),
        unshimmed: Default::default(),
        unwatched: Vec::new(),
        releases: Default::default(),
        exit: None,
        control_fd,
        claims_fd,
    };
    let mut sup = match resumed {
        None => Supervisor::new(driver.service.core.clone(), Instant::now()),
        Some(state) => driver.take_back(state)?,
    };
    // USR2 asked for a re-exec: it happens once nothing is under way.
    let mut reexec_wanted = false;
    // systemd's watchdog: WATCHDOG=1 at half its interval, from the first tick on.
    let own_watchdog = driver.service.own_watchdog.filter(|_| driver.service.upstream.is_some());
    let mut watchdog_tick =
        tokio::time::interval(own_watchdog.unwrap_or(Duration::from_secs(3600)));
    // When EXTEND_TIMEOUT_USEC was last sent in the phase under way.
    let mut extended_at: Option<Instant> = None;

    loop {
        driver.perform_all(&mut sup);
        driver.children.release_executed();
        if let Some(code) = driver.exit {
            return Ok(code);
        }
        driver.sync_fd_store();
        if reexec_wanted && sup.is_quiet() {
            // Signals that arrive from here on wait, blocked, for the next
            // binary. Those already caught, and requests already read, are
            // taken first: the runtime gets one turn to see them all.
            process::block_handled_signals()?;
            tokio::task::yield_now().await;
            let caught = signals.caught_now();
            let queued = !heard_rx.is_empty() || !control_rx.is_empty() || !claim_rx.is_empty();
            if caught.is_none() && !queued {
                reexec_wanted = false;
                let e = driver.reexec(&sup);
                tracing::warn!(
                    "USR2: cannot execute {}: {e}; this hotswap goes on running",
                    driver.service.binary.display()
                );
            }
            process::unblock_all_signals()?;
            if let Some(caught) = caught {
                if let Some(event) = driver.on_signal(&mut sup, caught, &mut reexec_wanted) {
                    sup.handle(Instant::now(), event);
                }
                continue;
            }
        }
        let busy = sup.busy_until().filter(|_| driver.service.upstream.is_some());
        if busy.is_none() {
            extended_at = None;
        }
        let extend_due = busy.map(|_| extended_at.map_or_else(Instant::now, |t| t + EXTEND_EVERY));
        let deadline = sup.poll_timeout();
        let look = driver.sampler.next_due();
        let measure = driver.service.max_memory.is_some();
        let event = tokio::select! {
            caught = signals.next() => driver.on_signal(&mut sup, caught, &mut reexec_wanted),
            _ = sleep_until(look.unwrap_or_else(Instant::now).into()), if look.is_some() => {
                driver.look(&mut sup);
                None
            }
            Some(path) = changed_rx.recv() => {
                if quiet_at.is_none() {
                    tracing::info!("{} changed: reloading once changes stop", path.display());
                }
                quiet_at = Some(Instant::now() + WATCH_QUIET);
                None
            }
            _ = sleep_until(quiet_at.unwrap_or_else(Instant::now).into()), if quiet_at.is_some() => {
                quiet_at = None;
                Some(Event::Reload { waiter: None })
            }
            _ = watchdog_tick.tick(), if own_watchdog.is_some() => {
                driver.send_upstream(&notify::watchdog());
                None
            }
            _ = sleep_until(extend_due.unwrap_or_else(Instant::now).into()), if extend_due.is_some() => {
                let now = Instant::now();
                let until = busy.unwrap_or(now).saturating_duration_since(now) + EXTEND_MARGIN;
                driver.send_upstream(&notify::extend_timeout(until.as_micros()));
                extended_at = Some(now);
                None
            }
            _ = memory_tick.tick(), if measure => {
                driver.measure_memory(&mut sup);
                None
            }
            Some((pid, heard)) = heard_rx.recv() => Some(match heard {
                Heard::Ready(channel) => {
                    // In auto a signal counts once a look confirms it: look now.
                    driver.sampler.look_now(pid, Instant::now());
                    Event::Ready { pid, via: match channel {
                    Channel::Notify => Via::Notify,
                    Channel::Fd => Via::Fd,
                    Channel::Ipc => Via::Ipc,
                } }
                }
                Heard::Status(text) => Event::Status { pid, text },
                Heard::Watchdog { trigger } => Event::Watchdog { pid, trigger },
            }),
            Some(child) = probe_due_rx.recv() => {
                if driver.children.retry_due(child) {
                    driver.start_probe(child);
                }
                None
            }
            Some(request) = control_rx.recv() => driver.on_control(&sup, request),
            Some(call) = claim_rx.recv() => claims::answer(&mut driver.service, &sup, call),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                sup.handle_timeout(Instant::now());
                None
            }
        };
        if let Some(event) = event {
            sup.handle(Instant::now(), event);
        }
    }
}

impl Driver {
    /// The uid children run as: a notify datagram from it (or root) counts.
    fn child_uid(&self) -> u32 {
        self.service.spawner.run_as.as_ref().map_or(self.uid, |r| r.identity.uid)
    }

    /// What a handled signal means (DESIGN.md §2).
    fn on_signal(
        &mut self,
        sup: &mut Supervisor,
        caught: Caught,
        reexec: &mut bool,
    ) -> Option<Event> {
        match caught {
            Caught::Hup => Some(Event::Reload { waiter: None }),
            Caught::Term | Caught::Int => Some(Event::Stop { graceful: true }),
            Caught::Quit => Some(Event::Stop { graceful: false }),
            Caught::Usr1 => Some(Event::Forward { signal: libc::SIGUSR1 }),
            Caught::Winch => Some(Event::Forward { signal: libc::SIGWINCH }),
            Caught::Usr2 => {
                if !sup.is_quiet() && !*reexec {
                    tracing::info!("USR2: re-executing once the reload under way is over");
                }
                *reexec = !sup.is_stopping();
                None
            }
            Caught::Chld => {
                self.reap(sup);
                None
            }
        }
    }

    /// Performs the core's actions. Children spawned meanwhile wait at one
    /// gate, opened once all are spawned: a generation's 64 instances cost
    /// hotswap ~10 ms instead of each waiting for the one before to exec.
    fn perform_all(&mut self, sup: &mut Supervisor) {
        let mut gate = None;
        while let Some(action) = sup.poll_action() {
            self.perform(sup, action, &mut gate);
        }
        drop(gate);
        for (pid, channels) in std::mem::take(&mut self.unwatched) {
            match channels.watch(pid, self.child_uid(), self.heard.clone()) {
                Ok(watch) => self.children.watch(pid, watch),
                Err(e) => tracing::warn!("readiness channels of pid {pid}: {e}"),
            }
        }
    }

    fn perform(&mut self, sup: &mut Supervisor, action: Action, gate: &mut Option<Gate>) {
        match action {
            Action::Spawn { generation, instance } => {
                if gate.is_none() {
                    // Without one (no fd left for a pipe), each child goes on at once.
                    *gate = Gate::new().ok();
                }
                let event = match self.release_for(sup, generation) {
                    Ok(release) => self.spawn(&release, generation, instance, gate.as_ref()),
                    Err(e) => Event::SpawnFailed {
                        generation,
                        instance,
                        status: Some(ExitStatus::Exited(e.exit_code())),
                        reason: e.to_string(),
                    },
                };
                sup.handle(Instant::now(), event);
            }
            Action::Stop { pid, signal } => {
                self.children.retire(pid);
                if let Err(e) = process::signal(pid, signal) {
                    tracing::warn!("signal {signal} to pid {pid}: {e}");
                }
            }
            Action::Signal { pid, signal } => {
                if let Err(e) = process::signal(pid, signal) {
                    tracing::warn!("signal {signal} to pid {pid}: {e}");
                }
            }
            Action::Kill { pid } => {
                self.tracker.kill_all_of(pid);
            }
            Action::Settled { pid } => {
                self.children.settled(pid);
                self.sampler.settle(pid);
            }
            Action::PruneSockets { pids } => self.prune_sockets(&pids),
            Action::Upstream(message) => self.tell_systemd(message),
            Action::Log(notice) => {
                let about = notice.subject();
                let (generation, instance, child) = (about.generation, about.instance, about.pid);
                match notice {
                    Notice::Failed { .. }
                    | Notice::ChildExited { .. }
                    | Notice::Killing { .. }
                    | Notice::NeverReady { .. }
                    | Notice::OwnListener { .. } => {
                        tracing::warn!(generation, instance, child, "{notice}")
                    }
                    _ => tracing::info!(generation, instance, child, "{notice}"),
                }
            }
            Action::Report { waiter, notice } => {
                if let Some(tx) = self.waiters.get(&waiter) {
                    if tx.send(Reply::Step { step: notice.to_string() }).is_err() {
                        self.waiters.remove(&waiter);
                        sup.handle(Instant::now(), Event::WaiterGone { waiter });
                    }
                }
            }
            Action::Finish { waiter, outcome } => {
                if let Some(tx) = self.waiters.remove(&waiter) {
                    let _ = tx.send(done(outcome));
                }
            }
            Action::Exit { code } => {
                self.tracker.shutdown();
                self.exit = Some(code);
            }
        }
    }

    /// The release `generation` runs: resolved now for its first instance,
    /// the kept one for the next instances and for a rollback. Releases no
    /// generation needs any more are dropped.
    fn release_for(&mut self, sup: &Supervisor, generation: u64) -> Result<Release, SpawnError> {
        let id = sup.release_of(generation);
        if let Some(release) = self.releases.get(&id) {
            return Ok(release.clone());
        }
        if id != generation {
            let gone = std::io::Error::other(format!("the release of gen {id} is not kept"));
            return Err(SpawnError::Directory(format!("gen {id}"), gone));
        }
        let release = self.service.spawner.resolve_release()?;
        tracing::debug!("gen {generation} runs {release:?}");
        let in_use = sup.releases_in_use();
        self.releases.retain(|g, _| in_use.contains(g));
        self.releases.insert(generation, release.clone());
        Ok(release)
    }

    fn spawn(
        &mut self,
        release: &Release,
        generation: u64,
        instance: u32,
        gate: Option<&Gate>,
    ) -> Event {
        self.spawned += 1;
        let file_name = format!("{generation}.{instance}.{}", self.spawned);
        let ready = &self.service.ready;
        let offer =
            Offer { notify: ready.offers_notify(), fd: ready.offers_fd(), ipc: ready.offers_ipc() };
        let owner = self.service.spawner.run_as.as_ref().map(|r| r.identity.uid);
        let channels = match Channels::open(offer, &self.service.notify_dir, &file_name, owner) {
            Ok(channels) => channels,
            Err(e) => {
                let reason = format!("readiness channels: {e}");
                return Event::SpawnFailed { generation, instance, status: None, reason };
            }
        };
        let extra_fds = channels.child_fds();
        let placement = match self.tracker.place(generation, self.spawned) {
            Ok(placement) => placement,
            Err(e) => {
                channels.discard();
                let reason = format!("a cgroup for it: {e}");
                return Event::SpawnFailed { generation, instance, status: None, reason };
            }
        };
        let env = channels.env.clone();
        let sockets = self.service.sockets.passed_for(instance);
        let spawner = &self.service.spawner;
        match spawner.spawn(
            release,
            generation,
            instance,
            &sockets,
            env,
            &extra_fds,
            placement.cgroup.as_deref(),
            gate,
        ) {
            Ok(Forked { pid, exec_report }) => {
                tracing::debug!("gen {generation} instance {instance} spawned pid {pid}");
                self.tracker.spawned(pid, generation, instance, placement);
                self.children.add(pid, exec_report);
                // Listened to once the batch is spawned: what the child sends
                // meanwhile waits in the channels.
                self.unwatched.push((pid, channels));
                self.sampler.watch(pid, Instant::now());
                self.start_probe(pid);
                Event::Spawned { generation, instance, pid }
            }
            Err(e) => {
                channels.discard();
                self.tracker.unplaced(placement);
                let status = Some(ExitStatus::Exited(e.exit_code()));
                Event::SpawnFailed { generation, instance, status, reason: e.to_string() }
            }
        }
    }

    /// Looks at every starting child that is due, and tells the core what it saw.
    fn look(&mut self, sup: &mut Supervisor) {
        let now = Instant::now();
        let ours = self.watched_sockets();
        for (pid, deep) in self.sampler.due(now) {
            // Before its exec a child is hotswap's clone, holding copies of
            // every fd hotswap has: nothing to learn, and much to mistake.
            if !self.children.exec_done(pid) {
                self.sampler.not_yet(pid, now);
                continue;
            }
            let began = Instant::now();
            let scan = procfs::scan(pid, &ours, deep);
            let cost = began.elapsed();
            self.sampler.looked(pid, Instant::now(), cost, deep);
            tracing::debug!(
                "looked at pid {pid}'s tree{} in {}us: {} processes, {}",
                if deep { " (deep)" } else { "" },
                cost.as_micros(),
                scan.processes,
                scan.taking.as_ref().map_or("not taking connections yet".into(), |t| t.to_string())
            );
            if scan.processes == 0 {
                continue; // gone: its exit is on its way
            }
            self.check_shim(pid, now, sup);
            let seen = Seen {
                holds: scan.holds,
                taking: scan.taking.map(|t| t.to_string()),
                own_listeners: scan.own_listeners,
                taking_elsewhere: scan.taking_elsewhere.map(|t| t.to_string()),
            };
            sup.handle(Instant::now(), Event::Observed { pid, seen });
        }
    }

    /// `--max-memory`: the resident memory of each ready child's tree (its
    /// cgroup, or its process tree), against the limit.
    fn measure_memory(&mut self, sup: &mut Supervisor) {
        let Some(limit) = self.service.max_memory else { return };
        let ready: Vec<Pid> = sup
            .snapshot()
            .children
            .iter()
            .filter(|c| c.state == core::ChildPhase::Ready)
            .map(|c| c.pid)
            .collect();
        for pid in ready {
            let rss = procfs::rss_of(&self.tracker.members(pid));
            if rss > limit {
                sup.handle(Instant::now(), Event::OverMemory { pid, rss, limit });
            }
        }
    }

    /// Closes the claimed sockets none of `pids` (the serving children) holds.
    fn prune_sockets(&mut self, pids: &[Pid]) {
        let held: std::collections::HashSet<u64> = pids
            .iter()
            .flat_map(|&pid| self.tracker.members(pid))
            .flat_map(procfs::socket_inodes)
            .collect();
        let unheld: Vec<_> = self
            .service
            .sockets
            .iter()
            .filter(|o| !o.is_explicit() && !held.contains(&o.id.ino))
            .map(|o| o.id)
            .collect();
        for id in unheld {
            if let Some(owned) = self.service.sockets.release(id) {
                tracing::info!(
                    "closed {} ({}): no serving child holds it any more",
                    owned.local,
                    owned.origin
                );
            }
        }
    }

    /// hotswap's sockets as a scan matches them.
    fn watched_sockets(&self) -> Vec<Watched> {
        self.service
            .sockets
            .iter()
            .map(|o| {
                let bound = o.bound.as_ref();
                let (port, unix_path) = match bound.map(|b| &b.addr) {
                    Some(BindAddr::Inet(addr)) => (Some(addr.port()), None),
                    Some(BindAddr::Unix(path)) => (None, Some(path.clone())),
                    Some(BindAddr::Abstract(_)) | None => (None, None),
                };
                Watched {
                    id: o.id,
                    stream: bound.is_none_or(|b| b.stream),
                    port,
                    unix_path,
                    label: o.local.clone(),
                }
            })
            .collect()
    }

    /// Names, once per program, a child that runs without the bind shim
    /// (statically linked, or setuid: the loader drops `LD_PRELOAD`).
    fn check_shim(&mut self, pid: Pid, now: Instant, sup: &Supervisor) {
        let Some(intercept) = &self.service.spawner.intercept else { return };
        // Before its exec, a child is hotswap's own fork, without the shim.
        let old_enough = sup.started_at(pid).is_some_and(|at| now.duration_since(at) >= SHIM_GRACE);
        let executed = old_enough && self.children.exec_done(pid);
        if !executed || procfs::preload_loaded(pid, &intercept.library) != Some(false) {
            return;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("pid {pid}"));
        if self.unshimmed.insert(exe.clone()) {
            tracing::warn!(
                "pid {pid} ({exe}) runs without hotswap's bind() shim (statically linked, or \
                 setuid): ports it binds itself are not hotswap's; take the socket from fd 3 \
                 (LISTEN_FDS) or give --listen"
            );
        }
    }

    /// Runs `--ready exec:CMD` once for `child`, if that is the mode.
    fn start_probe(&mut self, child: Pid) {
        let ReadyMode::Exec(command) = &self.service.ready else { return };
        if !self.children.may_probe(child) {
            return;
        }
        match spawn_probe(command, child) {
            Ok(probe) => self.children.probe_running(child, probe),
            Err(e) => {
                tracing::warn!("readiness probe {command:?}: {e}");
                self.children.probe_done(child);
            }
        }
    }

    /// Every exit, children, probes and adopted orphans alike.
    fn reap(&mut self, sup: &mut Supervisor) {
        let (tracker, children) = (&mut self.tracker, &self.children);
        let stop_signal = self.service.core.stop_signal;
        let mut lingering = Vec::new();
        // Nothing a child started outlives it (DESIGN.md §2). Seen while it is
        // a zombie, so that its pid and group id still name only its own.
        let before_reap = |pid| {
            if children.is_probe(pid) {
                // What a probe started (`sleep 40 &`) ends with it; its group id is still its own.
                let _ = process::kill_group(pid);
                return;
            }
            let Some(generation) = sup.generation_of(pid) else { return };
            let remains = tracker.remains(pid);
            if remains.is_empty() {
                return;
            }
            if children.is_retiring(pid) {
                // A launcher (npm, a shell) that exits before what it started:
                // that drains too, until it is gone or the drain deadline.
                tracker.signal_remains(pid, stop_signal);
                lingering.push(pid);
                return;
            }
            let killed = tracker.kill_all_of(pid);
            tracing::warn!(
                "gen {generation} pid {pid} exited and left {} process(es) running: killed pids {}",
                killed.len(),
                core::fmt_pids(&killed)
            );
        };
        let reaped = process::reap_all(before_reap);
        if reaped.is_empty() {
            return;
        }
        // Before the exits count: a child that shut a socket down on its way
        // out must not leave a takeover reported onto a socket that does not
        // listen (DESIGN.md §2).
        let troubles = self.service.sockets.check_health(self.service.socket_options);
        for trouble in &troubles {
            tracing::warn!("{trouble}");
        }
        if let Some(broken) = troubles.iter().find(|t| t.is_broken()) {
            let broken = Some(broken.to_string());
            sup.handle(Instant::now(), Event::SocketsChecked { broken });
        }
        for (pid, exit) in reaped {
            self.tracker.reaped(pid);
            self.sampler.settle(pid);
            let status = match exit {
                Exit::Code(code) => ExitStatus::Exited(code),
                Exit::Signal(signal) => ExitStatus::Signaled(signal),
            };
            match self.children.reaped(pid) {
                Reaped::Child { exec_error: Some(e) } => {
                    self.tracker.forget(pid);
                    let program = self.service.spawner.command[0].to_string_lossy();
                    let reason = format!("cannot execute {program}: {e}");
                    sup.handle(Instant::now(), Event::ExecFailed { pid, status, reason });
                }
                Reaped::Child { exec_error: None } if lingering.contains(&pid) => {
                    // The core hears of it once what it left behind is gone.
                    self.lingering.insert(pid, status);
                }
                Reaped::Child { exec_error: None } => {
                    self.tracker.forget(pid);
                    sup.handle(Instant::now(), Event::Exited { pid, status });
                }
                // The core ignores pids that are not its children.
                Reaped::Other => sup.handle(Instant::now(), Event::Exited { pid, status }),
                Reaped::Probe { child } if exit == Exit::Code(0) => {
                    sup.handle(Instant::now(), Event::Ready { pid: child, via: Via::Probe })
                }
                Reaped::Probe { child } => {
                    let due = self.probe_due.clone();
                    let task = tokio::spawn(async move {
                        tokio::time::sleep(PROBE_RETRY).await;
                        let _ = due.send(child);
                    });
                    self.children.probe_waiting(child, task);
                }
            }
        }
        let gone: Vec<Pid> = self
            .lingering
            .keys()
            .copied()
            .filter(|&pid| self.tracker.remains(pid).is_empty())
            .collect();
        for pid in gone {
            let status = self.lingering.remove(&pid).expect("listed above");
            self.tracker.forget(pid);
            sup.handle(Instant::now(), Event::Exited { pid, status });
        }
        // A socket no live child holds goes back to blocking, as systemd
        // passes sockets: a Node generation's O_NONBLOCK must not reach a
        // program with a blocking accept() loop.
        if !self.service.sockets.any_nonblocking() {
            return;
        }
        let held: std::collections::HashSet<u64> =
            self.tracker.all_members().into_iter().flat_map(procfs::socket_inodes).collect();
        for socket in self.service.sockets.reset_nonblocking(|id| held.contains(&id.ino)) {
            tracing::debug!("{socket}: blocking again (no child holds it)");
        }
    }

    /// USR2: executes hotswap's binary in this process, handing over the
    /// state and the fds. Returns only if the exec failed.
    fn reexec(&self, sup: &Supervisor) -> std::io::Error {
        let binary = &self.service.binary;
        tracing::info!("USR2: executing {} (pid {} stays)", binary.display(), std::process::id());
        let state = DriverState::new(
            |now| sup.export(now),
            self.children.hand_over(),
            self.tracker.clone(),
            self.lingering.iter().map(|(&pid, &status)| (pid, status)).collect(),
            self.spawned,
            self.releases.iter().map(|(&g, r)| (g, r.clone())).collect(),
        );
        let handoff = Handoff::new(
            self.service.name.clone(),
            binary.clone(),
            self.service.sockets.hand_over(),
            self.control_fd,
            self.claims_fd,
            self.service.notify_dir.clone(),
            state,
        );
        crate::sys::reexec::reexec(binary, &handoff.to_bytes(), &handoff.fds())
    }

    /// In a re-executed hotswap: takes back the children and the
    /// supervisor the previous process handed over, and reaps what exited
    /// meanwhile.
    fn take_back(&mut self, state: DriverState) -> std::io::Result<Supervisor> {
        let exported_at = state.exported_at();
        let mut sup = Supervisor::import(self.service.core.clone(), &state.supervisor, exported_at)
            .map_err(|e| std::io::Error::other(format!("the supervisor's state: {e}")))?;
        self.tracker = state.tracker;
        self.lingering = state.lingering.into_iter().collect();
        self.spawned = state.spawned;
        self.releases = state.releases.into_iter().collect();
        for child in state.children {
            let pid = child.pid;
            let watch = child.channels.and_then(|handed| {
                Watch::take_back(handed, pid, self.child_uid(), self.heard.clone())
                    .inspect_err(|e| tracing::warn!("readiness channels of pid {pid}: {e}"))
                    .ok()
            });
            self.children.take_back(child.pid, child.retiring, watch);
        }
        let serving = sup.snapshot();
        tracing::info!(
            "resumed: gen {} serving (pids {}), {} child(ren) in all",
            serving.serving().map_or("-".to_string(), |g| g.to_string()),
            core::fmt_pids(
                &serving
                    .children
                    .iter()
                    .filter(|c| Some(c.generation) == serving.serving())
                    .map(|c| c.pid)
                    .collect::<Vec<_>>()
            ),
            serving.children.len()
        );
        self.reap(&mut sup);
        Ok(sup)
    }

    fn tell_systemd(&self, message: Upstream) {
        let text = match message {
            Upstream::Ready { status } => notify::ready(&status),
            Upstream::Reloading { status } => notify::reloading(monotonic_usec(), &status),
            Upstream::Stopping => notify::stopping(),
            Upstream::Status { status } => notify::status(&status),
        };
        self.send_upstream(&text);
    }

    /// Keeps systemd's fd store holding exactly hotswap's sockets, so that
    /// even a crash of hotswap never closes a port (DESIGN.md §5).
    fn sync_fd_store(&mut self) {
        let Some(upstream) = self.service.upstream.as_ref().filter(|_| self.service.fd_store)
        else {
            return;
        };
        let sockets = &mut self.service.sockets;
        let mut next = sockets.iter().filter_map(|o| stored_number(o.stored_as.as_deref())).max();
        let (added, removed) = sockets.fd_store_changes(|| {
            let n = next.map_or(1, |n| n + 1);
            next = Some(n);
            format!("{STORED_PREFIX}{n}")
        });
        for name in removed {
            if let Err(e) = upstream.send(&notify::fd_store_remove(&name)) {
                tracing::warn!("NOTIFY_SOCKET: FDSTOREREMOVE {name}: {e}");
            }
        }
        for (fd, name) in added {
            match upstream.send_with_fd(&notify::fd_store(&name), fd) {
                Ok(()) => tracing::debug!("fd store: {name}"),
                Err(e) => tracing::warn!("NOTIFY_SOCKET: FDSTORE {name}: {e}"),
            }
        }
    }

    /// One datagram to systemd, if hotswap has a `NOTIFY_SOCKET`.
    fn send_upstream(&self, text: &str) {
        let Some(upstream) = &self.service.upstream else { return };
        if let Err(e) = upstream.send(text) {
            tracing::warn!("NOTIFY_SOCKET: {e}");
        }
    }

    fn on_control(&mut self, sup: &Supervisor, request: ControlRequest) -> Option<Event> {
        match request.request {
            Request::Status => {
                let snapshot = sup.snapshot();
                let status =
                    status::build(&self.service, self.started_at, &snapshot, &self.releases);
                let _ = request.reply.send(Reply::Status(Box::new(status)));
                None
            }
            Request::Reload { wait: false } => {
                let _ = request.reply.send(Reply::Accepted { accepted: true });
                Some(Event::Reload { waiter: None })
            }
            Request::Reload { wait: true } => {
                let waiter = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.insert(waiter, request.reply);
                Some(Event::Reload { waiter: Some(waiter) })
            }
            Request::Rollback { wait: false } => {
                let _ = request.reply.send(Reply::Accepted { accepted: true });
                Some(Event::Rollback { waiter: None })
            }
            Request::Rollback { wait: true } => {
                let waiter = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.insert(waiter, request.reply);
                Some(Event::Rollback { waiter: Some(waiter) })
            }
        }
    }
}

/// `n` of a `stored-n` fd store name.
fn stored_number(name: Option<&str>) -> Option<u64> {
    name?.strip_prefix(STORED_PREFIX)?.parse().ok()
}

fn done(outcome: Outcome) -> Reply {
    let (result, generation, reason) = match outcome {
        Outcome::TookOver { generation } => (ReloadResult::TookOver, Some(generation), None),
        Outcome::RolledBack { generation, reason } => {
            (ReloadResult::RolledBack, Some(generation), Some(reason.to_string()))
        }
        Outcome::Stopped { generation, replaced, reason } => (
            ReloadResult::Stopped,
            Some(generation),
            Some(format!("rollout stopped after {replaced} instance(s): {reason}")),
        ),
        Outcome::NotListening { generation, reason } => {
            (ReloadResult::NotListening, Some(generation), Some(reason))
        }
        Outcome::Cancelled => {
            (ReloadResult::Cancelled, None, Some("hotswap is stopping".to_string()))
        }
        Outcome::Refused { reason } => (ReloadResult::Refused, None, Some(reason)),
    };
    Reply::Done { result, generation, reason }
}
