//! USR2: what the driver hands to the next hotswap binary when it re-executes
//! itself (DESIGN.md §2), and takes back in it. The supervisor's state
//! travels as the core exports it; every fd stays open at its number.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::children::Handed as HandedChild;
use crate::core::{ExitStatus, Pid};
use crate::sys::sockets;
use crate::sys::spawn::Release;
use crate::sys::tracking::Tracker;
use crate::sys::upstream::monotonic_usec;

/// Changes whenever `Handoff` does: a binary that reads another format
/// falls back to the previous binary (`sys::reexec::Resume::fall_back`).
const FORMAT: u32 = 1;

/// Everything one hotswap process hands to the next.
#[derive(Serialize, Deserialize)]
pub struct Handoff {
    format: u32,
    /// The service's name: the new binary keeps it even if its default
    /// name would now come out otherwise (package.json changed).
    #[serde(default)]
    pub name: Option<String>,
    /// The path hotswap was first started from: every USR2 executes it.
    pub binary: PathBuf,
    /// hotswap's sockets.
    pub sockets: Vec<sockets::Handed>,
    /// The control socket.
    pub control: Option<RawFd>,
    /// The claim socket of `--intercept-bind`.
    pub claims: Option<RawFd>,
    /// Where the children's notify sockets are.
    pub notify_dir: PathBuf,
    /// The driver's own state.
    pub driver: DriverState,
}

/// The driver's part of a handoff.
#[derive(Serialize, Deserialize)]
pub struct DriverState {
    /// CLOCK_MONOTONIC at the export, in µs: it runs on across an exec.
    exported_usec: u128,
    /// The core's export (`Supervisor::export`).
    pub supervisor: String,
    /// The children's channels and retiring marks.
    pub children: Vec<HandedChild>,
    /// Which processes each child started.
    pub tracker: Tracker,
    /// Retired children reaped while what they left still drains.
    pub lingering: Vec<(Pid, ExitStatus)>,
    /// Children spawned so far (notify socket and cgroup names stay unique).
    pub spawned: u64,
    /// What each generation runs, for the next instances and rollbacks.
    #[serde(default)]
    pub releases: Vec<(u64, Release)>,
}

impl DriverState {
    /// Captures the state now; `now` is the `Instant` the supervisor exports at.
    pub fn new(
        supervisor: impl FnOnce(Instant) -> String,
        children: Vec<HandedChild>,
        tracker: Tracker,
        lingering: Vec<(Pid, ExitStatus)>,
        spawned: u64,
        releases: Vec<(u64, Release)>,
    ) -> DriverState {
        let exported_usec = monotonic_usec();
        let now = Instant::now();
        DriverState {
            exported_usec,
            supervisor: supervisor(now),
            children,
            tracker,
            lingering,
            spawned,
            releases,
        }
    }

    /// The export's moment on this process's clock: both read CLOCK_MONOTONIC.
    pub fn exported_at(&self) -> Instant {
        let now = Instant::now();
        let since = monotonic_usec().saturating_sub(self.exported_usec);
        now.checked_sub(Duration::from_micros(since as u64)).unwrap_or(now)
    }
}

impl Handoff {
    /// Wraps what is handed over.
    pub fn new(
        name: String,
        binary: PathBuf,
        sockets: Vec<sockets::Handed>,
        control: Option<RawFd>,
        claims: Option<RawFd>,
        notify_dir: PathBuf,
        driver: DriverState,
    ) -> Handoff {
        Handoff {
            format: FORMAT,
            name: Some(name),
            binary,
            sockets,
            control,
            claims,
            notify_dir,
            driver,
        }
    }

    /// The fds that must stay open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let sockets = self.sockets.iter().map(|s| s.fd());
        let channels =
            self.driver.children.iter().flat_map(|c| c.channels.iter()).flat_map(|c| c.fds());
        sockets.chain(self.control).chain(self.claims).chain(channels).collect()
    }

    /// As JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the handoff serializes")
    }

    /// Reads what the previous process wrote.
    ///
    /// # Errors
    /// It is not this binary's format.
    pub fn parse(bytes: &[u8]) -> Result<Handoff, String> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let format = serde_json::from_slice::<Format>(bytes).map_err(|e| e.to_string())?.format;
        if format != FORMAT {
            return Err(format!("state format {format}, this binary reads {FORMAT}"));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
