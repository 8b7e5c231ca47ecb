//! Answers the preload library's calls (DESIGN.md §7): which socket an
//! app's `bind()` gets, and whether a socket or a socket file it is about to
//! shut down or unlink is hotswap's. Only processes of hotswap's own child
//! trees get an answer other than "not mine", and claiming is no way around
//! permissions: a child of another user than root gets only what that user
//! could bind itself, plus the sockets given with `--listen` or by systemd.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::Service;
use crate::core::{Event, Pid, Supervisor};
use crate::protocol::claim::{BindAddr, Reply, Request, SOCK_STREAM};
use crate::sys::claims::{Answer, Call, Peer};
use crate::sys::procfs;
use crate::sys::sockets::{Claim, Owned, SocketId};

/// Answers one call; a refused bind also becomes an event (it explains an early exit).
pub fn answer(service: &mut Service, sup: &Supervisor, call: Call) -> Option<Event> {
    let Call { peer, request, attached, answer } = call;
    let (reply, socket, event) = match member(peer.pid, sup) {
        None => {
            tracing::warn!("claim from pid {} refused: not in hotswap's child trees", peer.pid);
            (Reply::No, None, None)
        }
        Some(member) => match request {
            Request::Bind { socktype, protocol, v6only, addr } => {
                let stream = socktype == SOCK_STREAM;
                bind(service, peer, member, stream, protocol, v6only, addr)
            }
            Request::IsOwnedSocket => {
                let id = attached.as_ref().and_then(|fd| SocketId::of(fd).ok());
                (yes_if(id.is_some_and(|id| service.sockets.owns(id))), None, None)
            }
            Request::IsOwnedPath { dev, ino } => {
                (yes_if(service.sockets.owns_file(SocketId { dev, ino })), None, None)
            }
        },
    };
    let _ = answer.send(Answer { reply, socket });
    event
}

fn yes_if(owned: bool) -> Reply {
    if owned { Reply::Yes } else { Reply::No }
}

/// Where a caller sits in hotswap's trees.
#[derive(Clone, Copy, Debug)]
struct Member {
    /// The child whose tree it is in; None for an orphan hotswap adopted.
    child: Option<Pid>,
    generation: Option<u64>,
    /// The child's instance (its slot under `--balance reuseport`).
    instance: Option<u32>,
}

/// The caller's place in hotswap's child trees, or None if it is not in them.
fn member(pid: Pid, sup: &Supervisor) -> Option<Member> {
    let hotswap = std::process::id();
    let mut current = pid;
    for _ in 0..64 {
        if let Some(generation) = sup.generation_of(current) {
            let instance = sup.instance_of(current);
            return Some(Member { child: Some(current), generation: Some(generation), instance });
        }
        let parent = procfs::stat(current)?.ppid;
        if parent == hotswap {
            // Re-parented to hotswap (the subreaper): a descendant whose parent died.
            let var = |key| procfs::environ_var(pid, key);
            let generation = var("HOTSWAP_GENERATION").and_then(|g| g.parse().ok());
            let instance = var("HOTSWAP_INSTANCE").and_then(|i| i.parse().ok());
            return Some(Member { child: None, generation, instance });
        }
        if parent <= 1 {
            return None;
        }
        current = parent;
    }
    None
}

fn bind(
    service: &mut Service,
    peer: Peer,
    member: Member,
    stream: bool,
    protocol: i32,
    v6only: Option<bool>,
    addr: BindAddr,
) -> (Reply, Option<OwnedFd>, Option<Event>) {
    let addr = match addr {
        BindAddr::Unix(path) if path.is_relative() => {
            match std::fs::read_link(format!("/proc/{}/cwd", peer.pid)) {
                Ok(cwd) => BindAddr::Unix(cwd.join(path)),
                Err(_) => return (Reply::No, None, None),
            }
        }
        other => other,
    };
    let shown = shown(&addr);
    let generation = member.generation.unwrap_or(0);
    let refused = |errno: i32, error: String| {
        let event = member.child.map(|pid| Event::BindFailed {
            pid,
            addr: shown.clone(),
            error: error.clone(),
        });
        tracing::warn!("gen {generation} pid {}: bind {shown}: {error}", peer.pid);
        (Reply::Errno(errno), None, event)
    };
    let slot = (service.socket_options.slots > 1).then_some(member.instance).flatten();
    if let Some(owned) = service.sockets.for_bind(stream, &addr, slot) {
        if !may_use(peer, owned, &addr, service) {
            let why = "Permission denied (hotswap binds no port its user could not)";
            return refused(libc::EACCES, why.into());
        }
        tracing::debug!("gen {generation} pid {} gets {} for its bind", peer.pid, owned.local);
        return give(owned, &shown);
    }
    let BindAddr::Inet(inet) = addr else {
        // A unix socket hotswap does not own stays the app's own (gunicorn.ctl).
        return (Reply::No, None, None);
    };
    if needs_privilege(inet) && !peer_privileged(peer, service) {
        return refused(libc::EACCES, "Permission denied".into());
    }
    let backlog = service.socket_options.backlog;
    let slot = (service.socket_options.slots > 1).then_some(member.instance).flatten();
    let want = Claim { stream, protocol, addr: inet, v6only, generation, slot };
    match service.sockets.claim(want, backlog) {
        Ok(owned) => {
            tracing::info!("gen {generation} pid {} claimed {}", peer.pid, owned.local);
            give(owned, &shown)
        }
        Err(e) => refused(e.raw_os_error().unwrap_or(libc::EADDRINUSE), e.to_string()),
    }
}

/// A dup of hotswap's socket, for the caller.
fn give(owned: &Owned, shown: &str) -> (Reply, Option<OwnedFd>, Option<Event>) {
    match owned.fd.try_clone() {
        Ok(fd) => (Reply::Yes, Some(fd), None),
        Err(e) => {
            tracing::warn!("claim of {shown}: {e}");
            (Reply::Errno(e.raw_os_error().unwrap_or(libc::EMFILE)), None, None)
        }
    }
}

/// Whether `peer` may have `owned` for its bind of `addr`: any socket given
/// explicitly; a claimed one only if its user could bind the address itself.
fn may_use(peer: Peer, owned: &Owned, addr: &BindAddr, service: &Service) -> bool {
    match addr {
        BindAddr::Inet(inet) if !owned.is_explicit() => {
            !needs_privilege(*inet) || peer_privileged(peer, service)
        }
        _ => true,
    }
}

/// Whether binding `addr` needs privilege (`net.ipv4.ip_unprivileged_port_start`, 1024 by default).
fn needs_privilege(addr: SocketAddr) -> bool {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    addr.port() < start
}

/// Whether the caller may have a privileged port. hotswap compares users: a
/// caller of hotswap's own uid gets nothing hotswap could not bind anyway;
/// root gets anything; and so does the `--user` hotswap itself chose for its
/// children: binding their ports first is what `--user` is for (DESIGN.md
/// §1). A child that changed its own uid gets none. (A non-root caller with
/// CAP_NET_BIND_SERVICE binds such ports itself with `--intercept-bind off`.)
fn peer_privileged(peer: Peer, service: &Service) -> bool {
    let chosen = service.spawner.run_as.as_ref().map(|r| r.identity.uid);
    peer.uid == 0 || peer.uid == nix::unistd::geteuid().as_raw() || Some(peer.uid) == chosen
}

fn shown(addr: &BindAddr) -> String {
    match addr {
        BindAddr::Inet(inet) => inet.to_string(),
        BindAddr::Unix(path) => Path::new(path).display().to_string(),
        BindAddr::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
    }
}
