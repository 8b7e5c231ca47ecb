//! The `status` reply: the core's snapshot, the sockets, and what `/proc`
//! says about each child's connections.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Service;
use std::collections::BTreeMap;

use crate::core::{ChildPhase, GenerationState as CoreState, Snapshot};
use crate::protocol::activation::FIRST_FD;
use crate::protocol::claim::BindAddr;
use crate::protocol::control::{
    ChildState, ChildStatus, GenerationState, GenerationStatus, LastReloadResult, ReloadStatus,
    SocketStatus, Status,
};
use crate::sys::procfs;
use crate::sys::spawn::Release;

/// The reply to `{"cmd":"status"}`.
pub fn build(
    service: &Service,
    started_at: SystemTime,
    snapshot: &Snapshot,
    releases: &BTreeMap<u64, Release>,
) -> Status {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let unix_time = |at: Instant| wall - now.duration_since(at).as_secs_f64();
    let sockets = &service.sockets;
    let bound = || sockets.iter().filter_map(|o| o.bound.as_ref());
    let tcp_ports: Vec<u16> = bound()
        .filter(|b| b.stream)
        .filter_map(|b| match &b.addr {
            BindAddr::Inet(addr) => Some(addr.port()),
            _ => None,
        })
        .collect();
    let unix_paths: Vec<String> = bound()
        .filter_map(|b| match &b.addr {
            BindAddr::Unix(path) => Some(path.display().to_string()),
            _ => None,
        })
        .collect();
    Status {
        name: service.name.clone(),
        pid: std::process::id(),
        started_at: started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
        binary: service.binary.display().to_string(),
        sockets: sockets
            .iter()
            .map(|o| SocketStatus {
                fd: o.listen_index.map(|i| FIRST_FD + i as i32),
                name: o.passed.as_ref().map_or("unknown", |p| p.name.as_str()).to_string(),
                address: o.local.clone(),
                origin: match o.slot {
                    None => o.origin.to_string(),
                    Some(slot) => format!("{}, instance {slot}", o.origin),
                },
                problem: o.problem.clone(),
            })
            .collect(),
        generation: snapshot.serving(),
        generations: snapshot
            .generations
            .iter()
            .map(|g| {
                let release = releases.get(&g.release);
                GenerationStatus {
                    id: g.id,
                    state: match g.state {
                        CoreState::Starting => GenerationState::Starting,
                        CoreState::Serving => GenerationState::Serving,
                        CoreState::Retiring => GenerationState::Retiring,
                    },
                    release: release.and_then(|r| r.dir.as_ref()).map(|d| d.display().to_string()),
                    program: release.map(|r| r.program.display().to_string()),
                    release_of: (g.release != g.id).then_some(g.release),
                }
            })
            .collect(),
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
        last_reload: snapshot.last_reload.clone().map(|r| ReloadStatus {
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
