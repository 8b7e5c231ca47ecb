//! One scan of a process tree: who holds hotswap's sockets, and who is seen
//! taking connections from them (DESIGN.md §4).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::sync::OnceLock;

use super::fds::{self, Fds};
use super::net::{self, Proto, Tables};
use super::syscall::{self, Wait};
use super::tree::{self, Proc};
use super::{Scan, SocketId, Taking, Watched};
use crate::sys::process::Pid;

/// A socket a scan looks for: one of hotswap's, or (deep) one the tree
/// listens on itself.
#[derive(Clone, Debug)]
struct Target {
    id: SocketId,
    stream: bool,
    port: Option<u16>,
    unix_path: Option<String>,
    label: String,
}

impl From<&Watched> for Target {
    fn from(w: &Watched) -> Target {
        Target {
            id: w.id,
            stream: w.stream,
            port: w.port,
            unix_path: w.unix_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            label: w.label.clone(),
        }
    }
}

/// How strong the evidence is: a thread waiting on the socket right now,
/// then a registration in an epoll set, then a connection already taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Waiting,
    Registered,
    Holding,
}

/// The strongest evidence seen, the first in tree order among equals.
#[derive(Default)]
struct Best(Option<(Rank, Taking)>);

impl Best {
    fn offer(&mut self, rank: Rank, taking: Taking) {
        if self.0.as_ref().is_none_or(|(best, _)| rank < *best) {
            self.0 = Some((rank, taking));
        }
    }

    fn into_taking(self) -> Option<Taking> {
        self.0.map(|(_, taking)| taking)
    }
}

/// What could not be read for lack of permission makes the scan partial;
/// anything else (the process or thread is gone, the fd was closed) is a
/// race with the app and ignored.
fn denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// Scans `root` and every descendant for what they do with `ours`.
/// `deep` also reads the socket tables (per network namespace, possibly
/// large): connections accepted from ours (`Taking::Holding`), the tree's
/// own listeners, and whether it takes connections from those.
///
/// A process is seen taking connections from a socket when:
/// - it holds the socket (it has no other way to accept from it), and the
///   socket is registered for input in one of its epoll sets (matched by
///   the set's `ino`/`sdev`, never its `tfd`), or one of its threads is
///   blocked in accept on it, in poll or select with it in the read set,
///   or (datagram sockets) in recv* on it; or
/// - (deep) it holds a connection accepted from the socket, whoever
///   accepted it: an established (or peer-closed) TCP connection on the
///   socket's port that is not a listener, or a connected unix socket
///   carrying the socket's path.
///
/// `listen()` alone is none of these. When several processes qualify, a
/// thread waiting right now beats an epoll registration, which beats a held
/// connection; among equals the first in tree order (root first) wins.
/// A scan of a tree that is gone has `processes == 0`.
pub fn scan(root: Pid, ours: &[Watched], deep: bool) -> Scan {
    let procs = tree::walk(root);
    let mut scan = Scan {
        processes: procs.len(),
        tasks: procs.iter().map(|p| p.tasks.len()).sum(),
        ..Scan::default()
    };
    let mut unreadable = Vec::new();
    let mut seen: Vec<(Proc, Fds)> = Vec::new();
    for proc in procs {
        match fds::read(proc.pid) {
            Ok(fds) => {
                scan.fds += fds.count;
                seen.push((proc, fds));
            }
            Err(e) if denied(&e) => unreadable.push(proc.pid),
            Err(_) => {}
        }
    }

    let sockfs = sockfs_dev().or(ours.first().map(|w| w.id.dev));
    let holds = |fds: &Fds, target: &Target| {
        sockfs.is_none_or(|dev| dev == target.id.dev)
            && fds.sockets.iter().any(|(_, inode)| *inode == target.id.ino)
    };
    let ours: Vec<Target> = ours.iter().map(Target::from).collect();
    scan.holds = seen.iter().any(|(_, fds)| ours.iter().any(|t| holds(fds, t)));

    let tables = if deep { read_tables(&seen) } else { HashMap::new() };
    let own = own_listeners(&seen, &tables, &ours, sockfs.unwrap_or(0));
    for target in &own {
        if !scan.own_listeners.contains(&target.label) {
            scan.own_listeners.push(target.label.clone());
        }
    }

    let (mut taking, mut elsewhere) = (Best::default(), Best::default());
    for (proc, fds) in &seen {
        let pid = proc.pid;
        let held = |targets: &[Target]| -> Vec<Target> {
            targets.iter().filter(|t| holds(fds, t)).cloned().collect()
        };
        let (held_ours, held_own) = (held(&ours), held(&own));
        let mut look = Look { pid, fds, denied: false };
        // Only a process that holds a socket can accept from it.
        if !held_ours.is_empty() || !held_own.is_empty() {
            look.epolls(&held_ours, &mut taking);
            look.epolls(&held_own, &mut elsewhere);
            look.threads(&proc.tasks, &held_ours, &held_own, &mut taking, &mut elsewhere);
        }
        // A connection may have been handed over by the process that
        // accepted it (node cluster's round robin): no need to hold the listener.
        if let Some(tables) = tables.get(&pid) {
            let all: Vec<&Target> = ours.iter().chain(&own).collect();
            look.connections(tables, &all, &ours, &mut taking);
            look.connections(tables, &all, &own, &mut elsewhere);
        }
        if look.denied {
            unreadable.push(pid);
        }
    }
    scan.taking = taking.into_taking();
    scan.taking_elsewhere = elsewhere.into_taking();
    unreadable.sort_unstable();
    unreadable.dedup();
    scan.unreadable = unreadable;
    scan
}

/// Looking at one process of the tree.
struct Look<'a> {
    pid: Pid,
    fds: &'a Fds,
    /// Something of it could not be read for lack of permission.
    denied: bool,
}

impl Look<'_> {
    fn note<T>(&mut self, result: io::Result<T>) -> Option<T> {
        result.map_err(|e| self.denied |= denied(&e)).ok()
    }

    /// Registrations for input in the process's epoll sets.
    fn epolls(&mut self, held: &[Target], best: &mut Best) {
        if held.is_empty() {
            return;
        }
        for &epfd in &self.fds.epolls {
            let Some(entries) = self.note(fds::epoll_entries(self.pid, epfd)) else { continue };
            for entry in entries.iter().filter(|e| e.for_input()) {
                let target =
                    held.iter().find(|t| t.id.ino == entry.ino && t.id.kernel_dev() == entry.sdev);
                if let Some(t) = target {
                    let taking =
                        Taking::Epoll { pid: self.pid, label: t.label.clone(), stream: t.stream };
                    best.offer(Rank::Registered, taking);
                }
            }
        }
    }

    /// Threads blocked in accept, poll, select or recv on a held target.
    fn threads(
        &mut self,
        tasks: &[Pid],
        ours: &[Target],
        own: &[Target],
        taking: &mut Best,
        elsewhere: &mut Best,
    ) {
        for &tid in tasks {
            let Some(line) = self.note(syscall::read_line(self.pid, tid)).flatten() else {
                continue;
            };
            let Some(wait) = syscall::wait(line) else { continue };
            let Some(wanted) = self.note(syscall::read_wanted(self.pid, tid, wait)) else {
                continue;
            };
            for (targets, best) in [(ours, &mut *taking), (own, &mut *elsewhere)] {
                let found = wanted.iter().find_map(|&fd| {
                    let inode = self.fds.socket(fd)?;
                    targets.iter().find(|t| t.id.ino == inode && fits(wait, t))
                });
                if let Some(t) = found {
                    best.offer(Rank::Waiting, waiting(wait, self.pid, tid, t.label.clone()));
                }
            }
        }
    }

    /// (deep) Connections the process holds that were accepted from a
    /// target: on a TCP target's port, or carrying a unix target's path. A
    /// socket that is itself a target (a listener) is no connection.
    fn connections(
        &mut self,
        tables: &Tables,
        all: &[&Target],
        targets: &[Target],
        best: &mut Best,
    ) {
        for &(_, inode) in &self.fds.sockets {
            if all.iter().any(|t| t.id.ino == inode) {
                continue;
            }
            let from = if let Some(s) = tables.inet.get(&inode) {
                let port = s.local.port();
                targets.iter().find(|t| t.stream && s.connected() && t.port == Some(port))
            } else if let Some(s) = tables.unix.get(&inode) {
                targets.iter().find(|t| {
                    s.connected()
                        && t.unix_path.is_some()
                        && s.path.as_ref() == t.unix_path.as_ref()
                })
            } else {
                None
            };
            if let Some(t) = from {
                best.offer(
                    Rank::Holding,
                    Taking::Holding { pid: self.pid, label: t.label.clone() },
                );
            }
        }
    }
}

/// accept waits on a stream socket, recv* on a datagram one; poll and select on either.
fn fits(wait: Wait, target: &Target) -> bool {
    match wait {
        Wait::Accept { .. } => target.stream,
        Wait::Recv { .. } => !target.stream,
        Wait::Poll { .. } | Wait::Select { .. } => true,
    }
}

fn waiting(wait: Wait, pid: Pid, tid: Pid, label: String) -> Taking {
    match wait {
        Wait::Accept { .. } => Taking::Accept { pid, tid, label },
        Wait::Poll { .. } => Taking::Poll { pid, tid, label },
        Wait::Select { .. } => Taking::Select { pid, tid, label },
        Wait::Recv { .. } => Taking::Recv { pid, tid, label },
    }
}

/// The socket tables each process sees (its network namespace's), read
/// once per namespace, holding only the sockets the tree has open.
fn read_tables(seen: &[(Proc, Fds)]) -> HashMap<Pid, Rc<Tables>> {
    let mut by_ns: HashMap<String, Vec<&(Proc, Fds)>> = HashMap::new();
    for entry in seen {
        let pid = entry.0.pid;
        let ns = fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("pid {pid}"));
        by_ns.entry(ns).or_default().push(entry);
    }
    let mut tables = HashMap::new();
    for members in by_ns.values() {
        let inodes: HashSet<u64> =
            members.iter().flat_map(|(_, fds)| fds.sockets.iter().map(|(_, i)| *i)).collect();
        if inodes.is_empty() {
            continue;
        }
        let read = Rc::new(net::read_tables(members[0].0.pid, &inodes));
        for (proc, _) in members {
            tables.insert(proc.pid, read.clone());
        }
    }
    tables
}

/// (deep) TCP listeners and receiving UDP sockets the tree holds that are not ours.
fn own_listeners(
    seen: &[(Proc, Fds)],
    tables: &HashMap<Pid, Rc<Tables>>,
    ours: &[Target],
    sockfs: u64,
) -> Vec<Target> {
    let ephemeral = net::ephemeral_ports();
    let mut own: Vec<Target> = Vec::new();
    for (proc, fds) in seen {
        let Some(tables) = tables.get(&proc.pid) else { continue };
        for &(_, inode) in &fds.sockets {
            let Some(s) = tables.inet.get(&inode) else { continue };
            let mine =
                ours.iter().any(|t| t.id.ino == inode) || own.iter().any(|t| t.id.ino == inode);
            if mine || !(s.listening() || s.receiving(&ephemeral)) {
                continue;
            }
            own.push(Target {
                id: SocketId { dev: sockfs, ino: inode },
                stream: s.proto == Proto::Tcp,
                port: Some(s.local.port()),
                unix_path: None,
                label: s.label(),
            });
        }
    }
    own
}

/// The device of sockfs, where every socket lives, as `fstat` gives it.
fn sockfs_dev() -> Option<u64> {
    static DEV: OnceLock<Option<u64>> = OnceLock::new();
    *DEV.get_or_init(|| {
        let socket = UnixDatagram::unbound().ok()?;
        SocketId::of(&socket).ok().map(|id| id.dev)
    })
}
