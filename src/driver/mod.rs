//! The thin runtime around the core: turns signals, child exits, readiness
//! messages, control requests and timers into `Event`s, and performs the
//! core's `Action`s through `sys`. No policy lives here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::config::ReadyMode;
use crate::control::ControlRequest;
use crate::core::{
    self, Action, ChildPhase, Event, Notice, Outcome, Pid, Supervisor, Upstream, WaiterId,
};
use crate::protocol::control::{
    ChildState, ChildStatus, LastReloadResult, ReloadResult, ReloadStatus, Reply, Request,
    SocketStatus, Status,
};
use crate::protocol::notify;
use crate::sys::channels::{Channels, Watch};
use crate::sys::listeners::Listener;
use crate::sys::process;
use crate::sys::procfs;
use crate::sys::spawn::Spawner;
use crate::sys::upstream::{UpstreamSocket, monotonic_usec};

mod probe;

/// Everything the driver needs to run one service.
pub struct Service {
    pub name: String,
    pub core: core::Config,
    pub ready: ReadyMode,
    pub spawner: Spawner,
    pub listeners: Vec<Listener>,
    /// Where each child's private NOTIFY_SOCKET is created (mode 0700).
    pub notify_dir: PathBuf,
    pub control: Option<std::os::unix::net::UnixListener>,
    pub upstream: Option<UpstreamSocket>,
}

struct Driver {
    service: Service,
    started_at: SystemTime,
    uid: u32,
    children: HashMap<Pid, Watch>,
    waiters: HashMap<WaiterId, mpsc::UnboundedSender<Reply>>,
    next_waiter: WaiterId,
    spawned: u64,
    events: mpsc::UnboundedSender<Event>,
    probes: probe::Probes,
    exit: Option<i32>,
}

/// Runs the service until hotswap should exit; returns the exit code.
pub async fn run(mut service: Service) -> std::io::Result<i32> {
    // Signal handlers first: nothing may exit or ask for a reload unheard.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut chld = signal(SignalKind::child())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut winch = signal(SignalKind::window_change())?;

    let (events, mut event_rx) = mpsc::unbounded_channel();
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    if let Some(listener) = service.control.take() {
        tokio::spawn(crate::control::serve(
            tokio::net::UnixListener::from_std(listener)?,
            control_tx,
        ));
    }
    let probes = probe::Probes::new(&service.ready, events.clone());
    let mut sup = Supervisor::new(service.core.clone(), Instant::now());
    let mut driver = Driver {
        service,
        started_at: SystemTime::now(),
        uid: nix::unistd::geteuid().as_raw(),
        children: HashMap::new(),
        waiters: HashMap::new(),
        next_waiter: 1,
        spawned: 0,
        events,
        probes,
        exit: None,
    };

    loop {
        driver.perform_all(&mut sup);
        if let Some(code) = driver.exit {
            return Ok(code);
        }
        let deadline = sup.poll_timeout();
        let event = tokio::select! {
            _ = hup.recv() => Some(Event::Reload { waiter: None }),
            _ = term.recv() => Some(Event::Stop { graceful: true }),
            _ = int.recv() => Some(Event::Stop { graceful: true }),
            _ = quit.recv() => Some(Event::Stop { graceful: false }),
            _ = usr1.recv() => Some(Event::Forward { signal: libc::SIGUSR1 }),
            _ = winch.recv() => Some(Event::Forward { signal: libc::SIGWINCH }),
            _ = chld.recv() => {
                driver.reap(&mut sup);
                None
            }
            Some(event) = event_rx.recv() => Some(event),
            Some(request) = control_rx.recv() => driver.on_control(&sup, request),
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
    fn perform_all(&mut self, sup: &mut Supervisor) {
        while let Some(action) = sup.poll_action() {
            self.perform(sup, action);
        }
    }

    fn perform(&mut self, sup: &mut Supervisor, action: Action) {
        match action {
            Action::Spawn { generation, instance } => {
                let event = self.spawn(generation, instance);
                sup.handle(Instant::now(), event);
            }
            Action::Signal { pid, signal } => {
                if let Err(e) = process::signal(pid, signal) {
                    tracing::warn!("signal {signal} to pid {pid}: {e}");
                }
            }
            Action::KillGroup { pgid } => {
                if let Err(e) = process::kill_group(pgid) {
                    tracing::warn!("SIGKILL to process group {pgid}: {e}");
                }
            }
            Action::Upstream(message) => self.tell_systemd(message),
            Action::Log(notice) => match notice {
                Notice::Failed { .. } | Notice::ChildExited { .. } | Notice::Killing { .. } => {
                    tracing::warn!("{notice}")
                }
                _ => tracing::info!("{notice}"),
            },
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
            Action::Exit { code } => self.exit = Some(code),
        }
    }

    fn spawn(&mut self, generation: u64, instance: u32) -> Event {
        self.spawned += 1;
        let file_name = format!("{generation}.{instance}.{}", self.spawned);
        let channels =
            match Channels::open(&self.service.ready, &self.service.notify_dir, &file_name) {
                Ok(channels) => channels,
                Err(e) => {
                    let reason = format!("readiness channels: {e}");
                    return Event::SpawnFailed { generation, instance, status: None, reason };
                }
            };
        let extra_fds = channels.child_fds();
        match self.service.spawner.spawn(generation, instance, channels.env.clone(), &extra_fds) {
            Ok(pid) => {
                tracing::debug!("gen {generation} instance {instance} spawned pid {pid}");
                match channels.watch(pid, self.uid, self.events.clone()) {
                    Ok(watch) => {
                        self.children.insert(pid, watch);
                    }
                    Err(e) => tracing::warn!("readiness channels of pid {pid}: {e}"),
                }
                self.probes.start(pid);
                Event::Spawned { generation, instance, pid }
            }
            Err(e) => {
                channels.discard();
                Event::SpawnFailed {
                    generation,
                    instance,
                    status: Some(e.status()),
                    reason: e.to_string(),
                }
            }
        }
    }

    /// Every exit, children and adopted orphans alike; the core ignores pids it does not know.
    fn reap(&mut self, sup: &mut Supervisor) {
        for (pid, status) in process::reap_all(|pid| sup.is_child(pid)) {
            if self.probes.reaped(pid, status) {
                continue;
            }
            self.children.remove(&pid);
            self.probes.forget(pid);
            sup.handle(Instant::now(), Event::Exited { pid, status });
        }
    }

    fn tell_systemd(&self, message: Upstream) {
        let Some(upstream) = &self.service.upstream else { return };
        let text = match message {
            Upstream::Ready { status } => notify::ready(&status),
            Upstream::Reloading => notify::reloading(monotonic_usec()),
            Upstream::Stopping => notify::stopping(),
        };
        if let Err(e) = upstream.send(&text) {
            tracing::warn!("NOTIFY_SOCKET: {e}");
        }
    }

    fn on_control(&mut self, sup: &Supervisor, request: ControlRequest) -> Option<Event> {
        match request.request {
            Request::Status => {
                let _ = request.reply.send(Reply::Status(Box::new(self.status(sup))));
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
        }
    }

    fn status(&self, sup: &Supervisor) -> Status {
        let snapshot = sup.snapshot();
        let now = Instant::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let unix_time = |at: Instant| wall - now.duration_since(at).as_secs_f64();
        let listeners = &self.service.listeners;
        let tcp_ports: Vec<u16> = listeners.iter().filter_map(|l| tcp_port(&l.local)).collect();
        let unix_paths: Vec<String> = listeners
            .iter()
            .filter(|l| tcp_port(&l.local).is_none())
            .map(|l| l.local.clone())
            .collect();
        Status {
            name: self.service.name.clone(),
            pid: std::process::id(),
            started_at: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            binary: std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            sockets: listeners
                .iter()
                .enumerate()
                .map(|(i, l)| SocketStatus {
                    fd: 3 + i as i32,
                    name: l.passed.name.clone(),
                    address: l.local.clone(),
                })
                .collect(),
            generation: snapshot.serving(),
            children: snapshot
                .children
                .iter()
                .map(|c| ChildStatus {
                    pid: c.pid,
                    generation: c.generation,
                    instance: c.instance,
                    state: match c.state {
                        ChildPhase::Starting => ChildState::Starting,
                        ChildPhase::Ready => ChildState::Ready,
                        ChildPhase::Draining => ChildState::Draining,
                        ChildPhase::Killed => ChildState::Killed,
                    },
                    started_at: unix_time(c.started_at),
                    restarts: c.restarts,
                    connections: procfs::count_connections(c.pid, &tcp_ports, &unix_paths),
                    status: c.status.clone(),
                })
                .collect(),
            last_reload: snapshot.last_reload.map(|r| ReloadStatus {
                generation: r.generation,
                result: match r.failure {
                    None => LastReloadResult::Ok,
                    Some(_) => LastReloadResult::RolledBack,
                },
                reason: r.failure.map(|f| f.to_string()),
                duration_ms: r.duration.as_millis() as u64,
            }),
        }
    }
}

/// The port of a TCP socket's local address (`127.0.0.1:8080`, `[::]:8080`); None for the rest.
fn tcp_port(local: &str) -> Option<u16> {
    local.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

fn done(outcome: Outcome) -> Reply {
    let (result, generation, reason) = match outcome {
        Outcome::TookOver { generation } => (ReloadResult::TookOver, Some(generation), None),
        Outcome::RolledBack { generation, reason } => {
            (ReloadResult::RolledBack, Some(generation), Some(reason.to_string()))
        }
        Outcome::Cancelled => {
            (ReloadResult::Cancelled, None, Some("hotswap is stopping".to_string()))
        }
    };
    Reply::Done { result, generation, reason }
}
