//! Per-child readiness channels (DESIGN.md §4): a private `NOTIFY_SOCKET`,
//! the `HOTSWAP_READY_FD` pipe and the Node IPC channel. Each is read by a
//! small task that reports what it hears as a [`Heard`] for that child.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockFlag, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::process::Pid;
use super::procfs;
use crate::protocol::notify::{self, NotifyMsg};

/// Which channels a child is offered (from `--ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// A private `NOTIFY_SOCKET`.
    pub notify: bool,
    /// A `HOTSWAP_READY_FD` pipe.
    pub fd: bool,
    /// A Node IPC channel (`NODE_CHANNEL_FD`).
    pub ipc: bool,
}

/// The channel a readiness message came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// A newline on `HOTSWAP_READY_FD`.
    Fd,
    /// `process.send('ready')` on `NODE_CHANNEL_FD`.
    Ipc,
}

/// Something a child's channels heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The child said it is ready.
    Ready(Channel),
    /// A `STATUS=` line.
    Status(String),
    /// `WATCHDOG=1`, or `WATCHDOG=trigger`.
    Watchdog {
        /// `WATCHDOG=trigger`: it asks to be treated as hung now.
        trigger: bool,
    },
}

/// Where the channels' readers report: the child's pid and what they heard.
pub type Reports = UnboundedSender<(Pid, Heard)>;

/// The channels of one child, opened before it is spawned.
pub struct Channels {
    /// What the child's environment says about them.
    pub env: Vec<(String, String)>,
    /// The child's ends, closed in hotswap once the child has them.
    child_ends: Vec<OwnedFd>,
    notify: Option<(StdDatagram, PathBuf)>,
    ready_pipe: Option<OwnedFd>,
    ipc: Option<OwnedFd>,
}

impl Channels {
    /// Opens what `offer` names; the notify socket goes in `dir` as
    /// `file_name`, owned by `owner` (the uid children run as) when given,
    /// so that a child of another user than hotswap may send to it.
    pub fn open(offer: Offer, dir: &Path, file_name: &str, owner: Option<u32>) -> io::Result<Self> {
        let mut channels = Channels {
            env: Vec::new(),
            child_ends: Vec::new(),
            notify: None,
            ready_pipe: None,
            ipc: None,
        };
        if offer.notify {
            let path = dir.join(file_name);
            let _ = std::fs::remove_file(&path);
            let socket = StdDatagram::bind(&path)?;
            if let Some(uid) = owner {
                nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(uid)), None)?;
            }
            // Ask for each sender's credentials: the only way to attribute a datagram.
            setsockopt(&socket, sockopt::PassCred, &true)?;
            channels.env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
            channels.notify = Some((socket, path));
        }
        if offer.fd {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            // A child of another user may reopen its end through
            // /proc/self/fd, which checks the pipe's owner.
            if let Some(uid) = owner {
                nix::unistd::fchown(&write, Some(nix::unistd::Uid::from_raw(uid)), None)?;
            }
            channels.env.push(("HOTSWAP_READY_FD".into(), write.as_raw_fd().to_string()));
            channels.child_ends.push(write);
            channels.ready_pipe = Some(read);
        }
        if offer.ipc {
            let (ours, theirs) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )?;
            channels.env.push(("NODE_CHANNEL_FD".into(), theirs.as_raw_fd().to_string()));
            channels.env.push(("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into()));
            channels.child_ends.push(theirs);
            channels.ipc = Some(ours);
        }
        Ok(channels)
    }

    /// The fds the child keeps across exec.
    pub fn child_fds(&self) -> Vec<RawFd> {
        self.child_ends.iter().map(|fd| fd.as_raw_fd()).collect()
    }

    /// The child could not be started: remove what `open` created.
    pub fn discard(self) {
        if let Some((_, path)) = &self.notify {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Once `child` runs: closes its ends here and starts listening to it.
    pub fn watch(self, child: Pid, child_uid: u32, events: Reports) -> io::Result<Watch> {
        drop(self.child_ends);
        let ipc = self.ipc.map(std::os::unix::net::UnixStream::from);
        Watch::start(self.notify, self.ready_pipe, ipc, child, child_uid, events)
    }
}

/// A child's channels as a re-exec of hotswap hands them over: fds that
/// stay open across the exec.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    notify: Option<(RawFd, PathBuf)>,
    ready_pipe: Option<RawFd>,
    ipc: Option<RawFd>,
}

impl Handed {
    /// The fds that must stay open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        self.notify.iter().map(|n| n.0).chain(self.ready_pipe).chain(self.ipc).collect()
    }
}

/// The running readers of one child; dropped when the child is reaped.
pub struct Watch {
    tasks: Vec<JoinHandle<()>>,
    notify_path: Option<PathBuf>,
    /// Duplicates of the channels' fds, open as long as the watch (a reader
    /// closes its own at end of file), for a re-exec of hotswap.
    _kept: Vec<OwnedFd>,
    /// The duplicates' numbers.
    handed: Handed,
}

impl Watch {
    fn start(
        notify: Option<(StdDatagram, PathBuf)>,
        ready_pipe: Option<OwnedFd>,
        ipc: Option<std::os::unix::net::UnixStream>,
        child: Pid,
        child_uid: u32,
        events: Reports,
    ) -> io::Result<Watch> {
        let mut kept = Vec::new();
        let mut keep = |fd: BorrowedFd<'_>| -> io::Result<RawFd> {
            let dup = fd.try_clone_to_owned()?;
            let number = dup.as_raw_fd();
            kept.push(dup);
            Ok(number)
        };
        let handed = Handed {
            notify: match &notify {
                Some((socket, path)) => Some((keep(socket.as_fd())?, path.clone())),
                None => None,
            },
            ready_pipe: ready_pipe.as_ref().map(|fd| keep(fd.as_fd())).transpose()?,
            ipc: ipc.as_ref().map(|stream| keep(stream.as_fd())).transpose()?,
        };
        let mut tasks = Vec::new();
        let mut notify_path = None;
        if let Some((socket, path)) = notify {
            socket.set_nonblocking(true)?;
            let socket = tokio::net::UnixDatagram::from_std(socket)?;
            tasks.push(tokio::spawn(read_notify(socket, child, child_uid, events.clone())));
            notify_path = Some(path);
        }
        if let Some(read) = ready_pipe {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
            tasks.push(tokio::spawn(read_ready_pipe(pipe, child, events.clone())));
        }
        if let Some(stream) = ipc {
            stream.set_nonblocking(true)?;
            let stream = tokio::net::UnixStream::from_std(stream)?;
            tasks.push(tokio::spawn(read_ipc(stream, child, events)));
        }
        Ok(Watch { tasks, notify_path, _kept: kept, handed })
    }

    /// What a re-exec of hotswap hands over.
    pub fn hand_over(&self) -> &Handed {
        &self.handed
    }

    /// Listens again, in a re-executed hotswap, to the channels of `child`
    /// the previous process handed over.
    ///
    /// # Errors
    /// One of the fds is not open.
    pub fn take_back(
        handed: Handed,
        child: Pid,
        child_uid: u32,
        events: Reports,
    ) -> io::Result<Watch> {
        let notify = match handed.notify {
            Some((fd, path)) => Some((StdDatagram::from(super::raw::adopt_fd(fd)?), path)),
            None => None,
        };
        let ready_pipe = handed.ready_pipe.map(super::raw::adopt_fd).transpose()?;
        let ipc = match handed.ipc {
            Some(fd) => Some(std::os::unix::net::UnixStream::from(super::raw::adopt_fd(fd)?)),
            None => None,
        };
        Watch::start(notify, ready_pipe, ipc, child, child_uid, events)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.notify_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One received datagram with its sender's credentials.
struct Datagram {
    data: Vec<u8>,
    sender: Option<UnixCredentials>,
    truncated: bool,
}

fn receive(fd: RawFd) -> io::Result<Datagram> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), flags)?;
    let mut sender = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::ScmCredentials(creds) => sender = Some(creds),
            // systemd-notify's BARRIER=1 waits for us to close the fd it sends.
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    Ok(Datagram { data: buf[..len].to_vec(), sender, truncated })
}

/// A datagram counts when its sender has the child's uid or is root and,
/// where the sender still exists, belongs to the child's process tree.
fn check_sender(sender: Option<UnixCredentials>, child: Pid, child_uid: u32) -> Result<(), String> {
    let Some(creds) = sender else { return Err("no sender credentials".into()) };
    if creds.uid() != 0 && creds.uid() != child_uid {
        return Err(format!("sender uid {} is not the child's", creds.uid()));
    }
    match procfs::in_tree(creds.pid() as Pid, child) {
        Some(false) => Err(format!("sender pid {} is not in its process tree", creds.pid())),
        Some(true) | None => Ok(()),
    }
}

async fn read_notify(
    socket: tokio::net::UnixDatagram,
    child: Pid,
    child_uid: u32,
    events: Reports,
) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let datagram = match socket
            .try_io(tokio::io::Interest::READABLE, || receive(socket.as_fd().as_raw_fd()))
        {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!("notify socket of pid {child}: {e}");
                return;
            }
        };
        if datagram.truncated {
            tracing::warn!("dropped a truncated notify datagram for pid {child}");
            continue;
        }
        if let Err(why) = check_sender(datagram.sender, child, child_uid) {
            tracing::warn!("dropped a notify datagram for pid {child}: {why}");
            continue;
        }
        for msg in notify::parse(&datagram.data) {
            let heard = match msg {
                NotifyMsg::Ready => Heard::Ready(Channel::Notify),
                NotifyMsg::Status(text) => Heard::Status(text),
                NotifyMsg::Watchdog(trigger) => Heard::Watchdog { trigger },
            };
            if events.send((child, heard)).is_err() {
                return;
            }
        }
    }
}

/// s6-style: a newline on the pipe means ready. Read to the end, so a child
/// that writes again never meets a closed pipe.
async fn read_ready_pipe(mut pipe: tokio::net::unix::pipe::Receiver, child: Pid, events: Reports) {
    let mut buf = [0u8; 512];
    let mut announced = false;
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if !announced && buf[..n].contains(&b'\n') {
            announced = true;
            let _ = events.send((child, Heard::Ready(Channel::Fd)));
        }
    }
}

/// Node's IPC channel: one JSON value per line; `process.send('ready')` is `"ready"`.
async fn read_ipc(stream: tokio::net::UnixStream, child: Pid, events: Reports) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if serde_json::from_str::<serde_json::Value>(&line).ok().as_ref().and_then(|v| v.as_str())
            == Some("ready")
        {
            let _ = events.send((child, Heard::Ready(Channel::Ipc)));
        }
    }
}
