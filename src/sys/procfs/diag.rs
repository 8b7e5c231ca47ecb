//! TCP and UDP sockets from the kernel's sock_diag netlink interface
//! (`NETLINK_SOCK_DIAG`, what `ss` uses), for hotswap's own network namespace.
//!
//! /proc/net/tcp formats every socket of the namespace, TIME_WAIT ones
//! included: with 66,000 of them (a host that served a load test) reading
//! it took 81 ms here, tcp6 10 ms more. sock_diag filters by state in the
//! kernel and sends binary records: the same sockets in about 3 ms per
//! address family.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use nix::sys::socket::{recv, send, socket};

use super::net::{InetSocket, Proto};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;

/// The kernel's TCP states wanted: ESTABLISHED, CLOSE_WAIT, LISTEN (not the TIME_WAIT multitude).
pub(super) const TCP_STATES: u32 = (1 << 1) | (1 << 8) | (1 << 10);
/// UDP: connected (ESTABLISHED) and not (CLOSE).
pub(super) const UDP_STATES: u32 = (1 << 1) | (1 << 7);

/// A sock_diag socket, for one dump after another.
pub(super) struct Diag(OwnedFd);

impl Diag {
    pub fn open() -> io::Result<Diag> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        Ok(Diag(fd))
    }

    /// The sockets of `proto` and `family` (AF_INET, AF_INET6) in one of
    /// `states` (a bit per TCP state) whose inode `wanted` accepts.
    pub fn dump(
        &self,
        proto: Proto,
        family: AddressFamily,
        states: u32,
        wanted: impl Fn(u64) -> bool,
    ) -> io::Result<Vec<InetSocket>> {
        let fd = self.0.as_raw_fd();
        send(fd, &request(proto, family, states), MsgFlags::empty())?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(fd, &mut buf, MsgFlags::empty())?;
            match parse(&buf[..n], proto, &wanted, &mut found)? {
                Parsed::More => {}
                Parsed::Done => return Ok(found),
            }
        }
    }
}

/// `struct nlmsghdr` and `struct inet_diag_req_v2`, native endian.
fn request(proto: Proto, family: AddressFamily, states: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    req.extend(((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    req.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // sequence
    req.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    let protocol = match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    req.extend([family as i32 as u8, protocol, 0, 0]); // family, protocol, extensions, pad
    req.extend(states.to_ne_bytes());
    req.resize(NLMSG_HDRLEN + REQ_LEN, 0); // inet_diag_sockid: no filter
    req
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Done,
}

/// One datagram of the dump's answer: `nlmsghdr` + `inet_diag_msg` records,
/// each padded to 4 bytes, ending with NLMSG_DONE (or NLMSG_ERROR).
fn parse(
    mut data: &[u8],
    proto: Proto,
    wanted: &impl Fn(u64) -> bool,
    found: &mut Vec<InetSocket>,
) -> io::Result<Parsed> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag message");
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(bad());
        }
        let body = &data[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(Parsed::Done),
            NLMSG_ERROR => {
                let errno =
                    i32::from_ne_bytes(body.get(0..4).ok_or_else(bad)?.try_into().expect("4"));
                if errno == 0 {
                    return Ok(Parsed::Done); // an acknowledgement
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => {
                if body.len() < MSG_LEN {
                    return Err(bad());
                }
                if let Some(socket) = parse_msg(body, proto).filter(|s| wanted(s.inode)) {
                    found.push(socket);
                }
            }
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(Parsed::More)
}

/// `struct inet_diag_msg { u8 family, state, timer, retrans; struct
/// inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4]; u32 if;
/// u32 cookie[2]; }; u32 expires, rqueue, wqueue, uid, inode; }`
fn parse_msg(msg: &[u8], proto: Proto) -> Option<InetSocket> {
    let port = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let addr = |at: usize, port: u16| -> Option<SocketAddr> {
        match msg[0] {
            2 => Some(SocketAddr::new(
                Ipv4Addr::from(<[u8; 4]>::try_from(&msg[at..at + 4]).ok()?).into(),
                port,
            )),
            10 => Some(SocketAddr::new(
                Ipv6Addr::from(<[u8; 16]>::try_from(&msg[at..at + 16]).ok()?).into(),
                port,
            )),
            _ => None,
        }
    };
    Some(InetSocket {
        proto,
        local: addr(8, port(4))?,
        remote: addr(24, port(6))?,
        state: msg[1],
        inode: u32::from_ne_bytes(msg[68..72].try_into().ok()?).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn finds_this_process_sockets() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let (accepted, _) = v4.accept().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = |fd: &dyn std::os::fd::AsFd| super::super::SocketId::of(fd).unwrap().ino;
        let wanted: HashSet<u64> = [inode(&v4), inode(&v6), inode(&accepted), inode(&udp)].into();
        let want = |i| wanted.contains(&i);

        let diag = Diag::open().unwrap();
        let tcp = diag.dump(Proto::Tcp, AddressFamily::Inet, TCP_STATES, want).unwrap();
        let listener = tcp.iter().find(|s| s.inode == inode(&v4)).expect("the v4 listener");
        assert!(listener.listening());
        assert_eq!(listener.local, v4.local_addr().unwrap());
        let conn = tcp.iter().find(|s| s.inode == inode(&accepted)).expect("the connection");
        assert!(conn.connected());
        assert_eq!(conn.remote, client.local_addr().unwrap());
        assert_eq!(tcp.len(), 2, "only the inodes asked for: {tcp:?}");

        let tcp6 = diag.dump(Proto::Tcp, AddressFamily::Inet6, TCP_STATES, want).unwrap();
        assert_eq!(tcp6.len(), 1);
        assert_eq!(tcp6[0].local, v6.local_addr().unwrap());

        let only_listening = diag.dump(Proto::Tcp, AddressFamily::Inet, 1 << 10, want).unwrap();
        assert_eq!(only_listening.len(), 1, "the kernel filters by state");

        let udp_rows = diag.dump(Proto::Udp, AddressFamily::Inet, UDP_STATES, want).unwrap();
        assert_eq!(udp_rows.len(), 1);
        assert_eq!((udp_rows[0].local, udp_rows[0].state), (udp.local_addr().unwrap(), 7));
    }

    #[test]
    fn odd_answers() {
        let mut found = Vec::new();
        let all = |_| true;
        let header = |len: u32, kind: u16| {
            let mut h = len.to_ne_bytes().to_vec();
            h.extend(kind.to_ne_bytes());
            h.extend([0; 10]); // flags, sequence, port id
            h
        };
        assert_eq!(
            parse(&header(16, NLMSG_DONE), Proto::Tcp, &all, &mut found).unwrap(),
            Parsed::Done
        );
        let mut error = header(20, NLMSG_ERROR);
        error.extend((-13i32).to_ne_bytes());
        let e = parse(&error, Proto::Tcp, &all, &mut found).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(13));
        assert!(
            parse(&header(200, 20), Proto::Tcp, &all, &mut found).is_err(),
            "longer than the datagram"
        );
        assert!(
            parse(&header(20, 20), Proto::Tcp, &all, &mut found).is_err(),
            "a record too short"
        );
        assert_eq!(parse(&[0; 8], Proto::Tcp, &all, &mut found).unwrap(), Parsed::More);
        assert!(found.is_empty());
    }
}
