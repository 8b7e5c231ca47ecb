//! Reading /proc: process trees, the connections a child holds, and what a
//! child's process tree does with hotswap's sockets.
//!
//! `scan` is how `--ready auto` sees an unmodified app become ready: a
//! process of the child's tree **taking connections from** one of hotswap's
//! sockets (DESIGN.md §4; the formats, costs and permissions are measured in
//! `research/unmodified-apps.md`). Sockets are matched by `(dev, inode)`,
//! never by fd number: fd numbers are per process, and an epoll set's `tfd`
//! may be stale or another process's.
//!
//! - `tree`: `/proc/PID/stat`, and a tree's processes, walking the
//!   `children` file of **every** task (a child forked by a thread is listed
//!   only under that thread);
//! - `fds`: a process's fds as sockets (by inode) and epoll sets, and the
//!   registrations an epoll set's `fdinfo` lists;
//! - `syscall`: what a thread is blocked in (`/proc/PID/task/TID/syscall`),
//!   and the poll/select sets it passed, read from its memory;
//! - `net`: the socket tables, `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`, and
//!   `diag`: TCP and UDP from sock_diag netlink, much cheaper where
//!   TIME_WAIT sockets abound;
//! - `scan`: the scan that combines them.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sys::stat::{fstat, major, minor};

mod diag;
mod fds;
mod maps;
mod net;
mod scan;
mod syscall;
mod tree;

#[cfg(test)]
mod live_tests;

pub use maps::preload_loaded;
pub use net::{count_connections, unix_listeners};
pub use scan::scan;
pub use tree::{
    Stat, children_of, descendants, environ_var, exiting, group_members, in_tree, rss_of, stat,
    tree_rss,
};

/// The inodes of the sockets `pid` has open (empty when it is gone or not ours to read).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    fds::read(pid)
        .map(|fds| fds.sockets.into_iter().map(|(_, inode)| inode).collect())
        .unwrap_or_default()
}

/// A file as the kernel names it: the `st_dev` and `st_ino` that `fstat`
/// gives for it. For hotswap, one of its own sockets, from `fstat` of its fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId {
    /// `st_dev` in the encoding `fstat` gives (glibc's `makedev`), which is
    /// not the kernel's: see `kernel_dev`.
    pub dev: u64,
    pub ino: u64,
}

impl SocketId {
    pub fn of(fd: impl AsFd) -> io::Result<SocketId> {
        let st = fstat(fd.as_fd())?;
        Ok(SocketId { dev: st.st_dev, ino: st.st_ino })
    }

    /// The device as the kernel prints it in /proc (an epoll set's `sdev:`):
    /// `MAJOR << 20 | MINOR`. `fstat` splits major and minor differently
    /// (a file on 254:0 is `st_dev` 0xfe00, `sdev:fe00000`); for sockfs
    /// (0:9 here) the two happen to agree.
    pub fn kernel_dev(self) -> u64 {
        (major(self.dev) << 20) | minor(self.dev)
    }
}

/// One of hotswap's sockets, for a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub id: SocketId,
    /// A stream socket (TCP, unix stream); false for datagrams (UDP).
    pub stream: bool,
    /// The local port of a TCP or UDP socket.
    pub port: Option<u16>,
    /// The path a unix socket is bound to (`@name` for an abstract one), as
    /// `/proc/net/unix` prints it.
    pub unix_path: Option<PathBuf>,
    /// How logs name it: `127.0.0.1:3000`, `[::]:3000`, `/run/app.sock`.
    pub label: String,
}

/// What one scan of a process tree saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Some process of the tree has one of the watched sockets open.
    pub holds: bool,
    /// Seen taking connections from one of the watched sockets.
    pub taking: Option<Taking>,
    /// (deep only) TCP sockets in LISTEN and bound, unconnected UDP sockets
    /// (outside the ephemeral port range) that the tree holds and that are not
    /// watched: `127.0.0.1:3000`, `[::]:3000`, `udp://0.0.0.0:53`.
    pub own_listeners: Vec<String>,
    /// (deep only) Seen taking connections from one of `own_listeners`.
    pub taking_elsewhere: Option<Taking>,
    /// Processes whose fds, epoll sets or threads could not be read (EACCES,
    /// EPERM: another uid without CAP_SYS_PTRACE, or non-dumpable): the scan
    /// saw only part of the tree.
    pub unreadable: Vec<u32>,
    /// Processes in the tree, their fds, and their threads: the scan's size.
    pub processes: usize,
    pub fds: usize,
    pub tasks: usize,
}

/// How a process was seen taking connections from a socket, for the log
/// line `gen 4 ready after 212ms (…)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taking {
    /// The socket is registered for input (EPOLLIN, or EPOLLONESHOT between
    /// an event and its re-arm) in one of the process's epoll sets, and the
    /// process holds the socket.
    Epoll { pid: u32, label: String, stream: bool },
    /// Thread `tid` is blocked in `accept`/`accept4` on the socket.
    Accept { pid: u32, tid: u32, label: String },
    /// Thread `tid` is blocked in `poll`/`ppoll` with the socket in its set, for input.
    Poll { pid: u32, tid: u32, label: String },
    /// Thread `tid` is blocked in `select`/`pselect6` with the socket in its read set.
    Select { pid: u32, tid: u32, label: String },
    /// Thread `tid` is blocked in `recvfrom`/`recvmsg`/`recvmmsg` on the (datagram) socket.
    Recv { pid: u32, tid: u32, label: String },
    /// (deep only) The process holds a connection accepted from the socket:
    /// busy workers are never seen waiting.
    Holding { pid: u32, label: String },
}

impl Taking {
    pub fn pid(&self) -> u32 {
        match self {
            Taking::Epoll { pid, .. }
            | Taking::Accept { pid, .. }
            | Taking::Poll { pid, .. }
            | Taking::Select { pid, .. }
            | Taking::Recv { pid, .. }
            | Taking::Holding { pid, .. } => *pid,
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Taking::Epoll { label, .. }
            | Taking::Accept { label, .. }
            | Taking::Poll { label, .. }
            | Taking::Select { label, .. }
            | Taking::Recv { label, .. }
            | Taking::Holding { label, .. } => label,
        }
    }
}

impl fmt::Display for Taking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |f: &mut fmt::Formatter<'_>, pid: u32, tid: u32| {
            if pid == tid { write!(f, "pid {pid}") } else { write!(f, "pid {pid} (thread {tid})") }
        };
        match self {
            Taking::Epoll { pid, label, stream: true } => {
                write!(f, "pid {pid} accepting on {label} (epoll)")
            }
            Taking::Epoll { pid, label, stream: false } => {
                write!(f, "pid {pid} receiving on {label} (epoll)")
            }
            Taking::Accept { pid, tid, label } => {
                who(f, *pid, *tid)?;
                write!(f, " waiting in accept on {label}")
            }
            Taking::Poll { pid, tid, label } => {
                who(f, *pid, *tid)?;
                write!(f, " waiting in poll on {label}")
            }
            Taking::Select { pid, tid, label } => {
                who(f, *pid, *tid)?;
                write!(f, " waiting in select on {label}")
            }
            Taking::Recv { pid, tid, label } => {
                who(f, *pid, *tid)?;
                write!(f, " waiting in recv on {label}")
            }
            Taking::Holding { pid, label } => {
                write!(f, "pid {pid} holding a connection from {label}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_moves_major_to_bit_20() {
        // (st_dev from fstat, sdev as /proc prints it), seen on this machine:
        // sockfs 0:9, pipefs 0:15, anon_inodefs 0:16, and a FIFO on ext4 254:0.
        let cases = [(0x9, 0x9), (0xf, 0xf), (0x10, 0x10), (0xfe00, 0xfe0_0000)];
        for (st_dev, sdev) in cases {
            assert_eq!(SocketId { dev: st_dev, ino: 1 }.kernel_dev(), sdev, "st_dev {st_dev:#x}");
        }
        // glibc puts minor bits 8.. above the major: 0:300 (an overlay mount) is 0x1_002c.
        assert_eq!(SocketId { dev: nix::sys::stat::makedev(0, 300), ino: 1 }.kernel_dev(), 300);
        assert_eq!(
            SocketId { dev: nix::sys::stat::makedev(259, 70000), ino: 1 }.kernel_dev(),
            (259 << 20) | 70000
        );
    }

    #[test]
    fn socket_id_of_a_socket_names_its_inode() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let id = SocketId::of(&socket).unwrap();
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&socket)
        ))
        .unwrap();
        assert_eq!(link.to_str().unwrap(), format!("socket:[{}]", id.ino));
    }

    #[test]
    fn taking_reads_as_a_log_line() {
        let cases = [
            (
                Taking::Epoll { pid: 1234, label: "[::]:3000".into(), stream: true },
                "pid 1234 accepting on [::]:3000 (epoll)",
            ),
            (
                Taking::Epoll { pid: 7, label: "udp://0.0.0.0:53".into(), stream: false },
                "pid 7 receiving on udp://0.0.0.0:53 (epoll)",
            ),
            (
                Taking::Accept { pid: 1234, tid: 1234, label: "127.0.0.1:8080".into() },
                "pid 1234 waiting in accept on 127.0.0.1:8080",
            ),
            (
                Taking::Accept { pid: 1234, tid: 1240, label: "127.0.0.1:8080".into() },
                "pid 1234 (thread 1240) waiting in accept on 127.0.0.1:8080",
            ),
            (
                Taking::Poll { pid: 88, tid: 88, label: "/run/app.sock".into() },
                "pid 88 waiting in poll on /run/app.sock",
            ),
            (
                Taking::Select { pid: 88, tid: 88, label: "127.0.0.1:8000".into() },
                "pid 88 waiting in select on 127.0.0.1:8000",
            ),
            (
                Taking::Recv { pid: 9, tid: 9, label: "udp://0.0.0.0:53".into() },
                "pid 9 waiting in recv on udp://0.0.0.0:53",
            ),
            (
                Taking::Holding { pid: 9, label: "[::]:3000".into() },
                "pid 9 holding a connection from [::]:3000",
            ),
        ];
        for (taking, line) in cases {
            assert_eq!(taking.to_string(), line);
        }
    }
}
