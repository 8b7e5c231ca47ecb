//! The claim channel's server (DESIGN.md §7): an abstract unix stream
//! socket the preload library connects to for each call it makes. Each
//! connection carries one request (`protocol::claim`) and the caller's
//! credentials (`SO_PEERCRED`, taken at `connect()`, so they are the
//! caller's as of this call); the driver decides the answer.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

use super::raw;
use crate::protocol::claim::{REPLY_LEN, REQUEST_LEN, Reply, Request};

/// A caller who gives no request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Who asks, as the kernel says (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its pid, alive while it waits for the answer.
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// One request for the driver to answer.
pub struct Call {
    /// Who asks.
    pub peer: Peer,
    /// What it asks.
    pub request: Request,
    /// The socket a `shutdown()` is about (`Request::IsOwnedSocket`).
    pub attached: Option<OwnedFd>,
    /// Where the answer goes.
    pub answer: oneshot::Sender<Answer>,
}

/// The driver's answer: a reply and, for a claimed bind, the socket (a dup
/// of hotswap's, closed here once sent).
pub struct Answer {
    /// The reply datagram's content.
    pub reply: Reply,
    /// Sent along as `SCM_RIGHTS`.
    pub socket: Option<OwnedFd>,
}

/// Binds the abstract socket `@name` (no file: no path length or permission
/// to get wrong; the peer check stands in for file permissions).
pub fn listen_on(name: &str) -> io::Result<UnixListener> {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts callers for as long as hotswap runs, each on a task of its own.
pub async fn serve(listener: UnixListener, calls: mpsc::UnboundedSender<Call>) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::warn!("claim socket: {e}"),
    };
    loop {
        match listener.accept().await {
            Ok((conn, _)) => drop(tokio::spawn(answer_one(conn, calls.clone()))),
            Err(e) => {
                // Out of fds, say: back off rather than spin.
                tracing::warn!("claim socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer_one(conn: tokio::net::UnixStream, calls: mpsc::UnboundedSender<Call>) {
    let Ok(creds) = getsockopt(&conn, sockopt::PeerCredentials) else { return };
    let peer = Peer { pid: creds.pid() as u32, uid: creds.uid(), gid: creds.gid() };
    let received = tokio::time::timeout(REQUEST_TIMEOUT, receive(&conn)).await;
    let (request, attached) = match received {
        Ok(Ok(Some(received))) => received,
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
    };
    let (answer, answered) = oneshot::channel();
    if calls.send(Call { peer, request, attached, answer }).is_err() {
        return;
    }
    let Ok(answer) = answered.await else { return };
    let bytes = answer.reply.encode();
    let sent = conn
        .async_io(Interest::WRITABLE, || send(conn.as_fd(), &bytes, answer.socket.as_ref()))
        .await;
    if let Err(e) = sent {
        tracing::debug!("claim reply to pid {}: {e}", peer.pid);
    }
}

/// Sends `bytes`, with `fd` attached as `SCM_RIGHTS`.
fn send(conn: impl AsFd, bytes: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let sent = sendmsg::<()>(conn.as_fd().as_raw_fd(), &iov, &cmsgs, flags, None)?;
    // Both messages are far below a unix socket's buffer: all or nothing.
    if sent != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short claim message"));
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes and the first fd attached; closes any other fd.
fn receive_some(conn: impl AsFd, buf: &mut [u8], fd: &mut Option<OwnedFd>) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(conn.as_fd().as_raw_fd(), &mut iov, Some(&mut cmsg), flags)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for received in fds {
                let owned = raw::adopt_fd(received)?;
                fd.get_or_insert(owned);
            }
        }
    }
    Ok(msg.bytes)
}

/// One request and the fd that came with it; None for a malformed one.
async fn receive(conn: &tokio::net::UnixStream) -> io::Result<Option<(Request, Option<OwnedFd>)>> {
    let mut buf = [0u8; REQUEST_LEN];
    let mut have = 0;
    let mut attached = None;
    while have < REQUEST_LEN {
        let n = conn
            .async_io(Interest::READABLE, || {
                receive_some(conn.as_fd(), &mut buf[have..], &mut attached)
            })
            .await?;
        if n == 0 {
            return Ok(None);
        }
        have += n;
    }
    Ok(Request::decode(&buf).ok().map(|request| (request, attached)))
}

/// The caller's end of the channel, as the preload library speaks it (for
/// tests): one request, its reply, and the fd that came with the reply.
pub fn call(
    name: &str,
    request: &Request,
    attach: Option<&OwnedFd>,
) -> io::Result<(Reply, Option<OwnedFd>)> {
    let conn = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let sent = send(&conn, &request.encode(), attach);
    sent?;
    let mut buf = [0u8; REPLY_LEN];
    let mut have = 0;
    let mut received = None;
    while have < REPLY_LEN {
        let n = match receive_some(&conn, &mut buf[have..], &mut received) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // MSG_DONTWAIT on a blocking socket: wait for readability.
                nix::poll::poll(
                    &mut [nix::poll::PollFd::new(conn.as_fd(), nix::poll::PollFlags::POLLIN)],
                    nix::poll::PollTimeout::from(10_000u16),
                )?;
                continue;
            }
            other => other?,
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no claim reply"));
        }
        have += n;
    }
    let reply = Reply::decode(&buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad claim reply"))?;
    Ok((reply, received))
}
