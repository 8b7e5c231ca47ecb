//! Messages to systemd above hotswap, on the `NOTIFY_SOCKET` hotswap was given.
//! Own code rather than the sd-notify crate: that one cannot reach
//! `@abstract` sockets (research/crates.md §5).

use std::io;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

/// hotswap's own `NOTIFY_SOCKET`.
pub struct UpstreamSocket {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The same address, for `sendmsg` with fds.
    unix_addr: UnixAddr,
}

impl UpstreamSocket {
    /// From the value of hotswap's own `NOTIFY_SOCKET`: `/path` or `@abstract`.
    pub fn open(value: &str) -> io::Result<Self> {
        let (addr, unix_addr) = match value.strip_prefix('@') {
            Some(name) => (
                SocketAddr::from_abstract_name(name.as_bytes())?,
                UnixAddr::new_abstract(name.as_bytes())?,
            ),
            None if value.starts_with('/') => {
                (SocketAddr::from_pathname(value)?, UnixAddr::new(value)?)
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("NOTIFY_SOCKET={value:?}"),
                ));
            }
        };
        Ok(UpstreamSocket { socket: UnixDatagram::unbound()?, addr, unix_addr })
    }

    /// One datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send_to_addr(message.as_bytes(), &self.addr).map(drop)
    }

    /// One datagram with `fd` attached (`SCM_RIGHTS`), for the fd store.
    pub fn send_with_fd(&self, message: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        let iov = [IoSlice::new(message.as_bytes())];
        let fds = [fd.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        sendmsg(self.socket.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), Some(&self.unix_addr))
            .map(drop)
            .map_err(io::Error::from)
    }
}

/// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC`.
pub fn monotonic_usec() -> u128 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    now.tv_sec() as u128 * 1_000_000 + now.tv_nsec() as u128 / 1_000
}
