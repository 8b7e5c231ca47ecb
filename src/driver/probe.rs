//! `--ready exec:CMD`: run CMD (with `HOTSWAP_PID`) until it exits 0, then
//! the child is ready. A readiness adapter, like the channels in `sys`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::ReadyMode;
use crate::core::{Event, ExitStatus, Pid};

/// Pause between a failed probe and the next.
const RETRY_AFTER: Duration = Duration::from_millis(250);

type Waiting = Arc<Mutex<HashMap<Pid, oneshot::Sender<ExitStatus>>>>;

pub struct Probes {
    command: Option<String>,
    events: mpsc::UnboundedSender<Event>,
    /// Probe pid → the task waiting for its exit (hotswap reaps everything itself).
    waiting: Waiting,
    /// Child pid → its probe loop.
    loops: HashMap<Pid, JoinHandle<()>>,
}

impl Probes {
    pub fn new(mode: &ReadyMode, events: mpsc::UnboundedSender<Event>) -> Self {
        let command = match mode {
            ReadyMode::Exec(command) => Some(command.clone()),
            _ => None,
        };
        Probes { command, events, waiting: Waiting::default(), loops: HashMap::new() }
    }

    /// Starts probing a new child, if the mode is `exec:`.
    pub fn start(&mut self, child: Pid) {
        let Some(command) = self.command.clone() else { return };
        let task = probe_loop(command, child, self.waiting.clone(), self.events.clone());
        self.loops.insert(child, tokio::spawn(task));
    }

    /// Hands a reaped pid's status to its probe loop; false if it was no probe.
    pub fn reaped(&mut self, pid: Pid, status: ExitStatus) -> bool {
        match self.waiting.lock().expect("probe map").remove(&pid) {
            Some(tx) => {
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// The child is gone: stop probing it.
    pub fn forget(&mut self, child: Pid) {
        if let Some(task) = self.loops.remove(&child) {
            task.abort();
        }
    }
}

async fn probe_loop(
    command: String,
    child: Pid,
    waiting: Waiting,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        let (tx, rx) = oneshot::channel();
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env("HOTSWAP_PID", child.to_string())
            .stdin(Stdio::null())
            .spawn();
        match spawned {
            // Registered before the next await: on this single-threaded
            // runtime the reaper cannot run in between, so no exit is missed.
            Ok(probe) => drop(waiting.lock().expect("probe map").insert(probe.id(), tx)),
            Err(e) => {
                tracing::warn!("readiness probe {command:?}: {e}");
                return;
            }
        }
        match rx.await {
            Ok(status) if status.success() => {
                let _ = events.send(Event::Ready { pid: child });
                return;
            }
            Ok(_) => tokio::time::sleep(RETRY_AFTER).await,
            Err(_) => return,
        }
    }
}
