//! The `status` reply: the core's snapshot, the sockets, and what `/proc`
//! says about each child's connections.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Service;
use crate::core::{ChildPhase, Snapshot};
use crate::protocol::control::{
    ChildState, ChildStatus, LastReloadResult, ReloadStatus, SocketStatus, Status,
};
use crate::sys::procfs;

/// The reply to `{"cmd":"status"}`.
pub fn build(service: &Service, started_at: SystemTime, snapshot: &Snapshot) -> Status {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let unix_time = |at: Instant| wall - now.duration_since(at).as_secs_f64();
    let listeners = &service.listeners;
    let tcp_ports: Vec<u16> = listeners.iter().filter_map(|l| tcp_port(&l.local)).collect();
    let unix_paths: Vec<String> = listeners
        .iter()
        .filter(|l| tcp_port(&l.local).is_none())
        .map(|l| l.local.clone())
        .collect();
    Status {
        name: service.name.clone(),
        pid: std::process::id(),
        started_at: started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
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

/// The port of a TCP socket's local address (`127.0.0.1:8080`, `[::]:8080`); None for the rest.
fn tcp_port(local: &str) -> Option<u16> {
    local.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}
