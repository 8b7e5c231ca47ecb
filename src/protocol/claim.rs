//! The claim channel between hotswap's preload library (`preload/`) and
//! hotswap (DESIGN.md §7): one request, one reply, on a unix stream
//! connection made for each call. The layout is fixed and
//! native-endian (both ends run on the same machine); `preload/claim.h`
//! defines the same bytes for the C side.
//!
//! Request, 160 bytes:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u32 | magic `HSW1` |
//! | 4 | u32 | op: 1 bind, 2 is-owned-socket (the fd rides along as `SCM_RIGHTS`), 3 is-owned-path |
//! | 8 | i32 | socket domain (`AF_INET`, `AF_INET6`, `AF_UNIX`) |
//! | 12 | i32 | socket type (`SOCK_STREAM`, `SOCK_DGRAM`, flags masked off) |
//! | 16 | i32 | protocol |
//! | 20 | i32 | `IPV6_V6ONLY`: 0, 1, or -1 when not IPv6 |
//! | 24 | u64 | st_dev of the path (op 3) |
//! | 32 | u64 | st_ino of the path (op 3) |
//! | 40 | u32 | address length |
//! | 44 | 116 bytes | the `sockaddr` passed to `bind()` |
//!
//! Reply, 16 bytes: magic, then i32 errno (0: none), then u32 answer (bind:
//! 1 claimed, the socket attached as `SCM_RIGHTS`; 0 pass through to the
//! real `bind()`. Ops 2 and 3: 1 owned, 0 not), then 4 bytes reserved.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `HSW1`, read as a native-endian u32 (little-endian here: "HSW1").
pub const MAGIC: u32 = u32::from_ne_bytes(*b"HSW1");
/// Bytes in a request.
pub const REQUEST_LEN: usize = 160;
/// Bytes in a reply.
pub const REPLY_LEN: usize = 16;
/// The largest `sockaddr` a request carries.
const ADDR_MAX: usize = REQUEST_LEN - 44;

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `SOCK_STREAM` and `SOCK_DGRAM` on Linux.
pub const SOCK_STREAM: i32 = 1;
/// See [`SOCK_STREAM`].
pub const SOCK_DGRAM: i32 = 2;

/// An address an app asked to bind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// TCP or UDP over IPv4 or IPv6.
    Inet(SocketAddr),
    /// A unix socket at a path.
    Unix(PathBuf),
    /// A unix socket in the abstract namespace (the name without its leading NUL).
    Abstract(Vec<u8>),
}

/// What the library asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The app calls `bind()`: may hotswap answer with a socket of its own?
    Bind {
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        socktype: i32,
        /// As the app created the socket (0 for the default).
        protocol: i32,
        /// The app's `IPV6_V6ONLY`, for an IPv6 socket.
        v6only: Option<bool>,
        /// Where it binds.
        addr: BindAddr,
    },
    /// The app calls `shutdown()` on a listening socket (attached): is it hotswap's?
    IsOwnedSocket,
    /// The app calls `unlink()` on a socket file: is it the file of a socket hotswap owns?
    IsOwnedPath {
        /// `st_dev` of the file.
        dev: u64,
        /// `st_ino` of the file.
        ino: u64,
    },
}

/// Why a request could not be read: the connection is answered with nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not `REQUEST_LEN` bytes.
    #[error("claim request of {0} bytes, expected {REQUEST_LEN}")]
    Length(usize),
    /// Another protocol, or another version of it.
    #[error("claim request with a bad magic number")]
    Magic,
    /// An op this hotswap does not know.
    #[error("unknown claim op {0}")]
    Op(u32),
    /// A `sockaddr` that does not parse.
    #[error("unreadable address in a claim request")]
    Address,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Request {
    /// Reads one request datagram.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        if bytes.len() != REQUEST_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        if u32_at(bytes, 0) != MAGIC {
            return Err(DecodeError::Magic);
        }
        match u32_at(bytes, 4) {
            1 => {
                let len = (u32_at(bytes, 40) as usize).min(ADDR_MAX);
                let addr = decode_addr(&bytes[44..44 + len]).ok_or(DecodeError::Address)?;
                let v6only = match i32_at(bytes, 20) {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                };
                let socktype = i32_at(bytes, 12);
                Ok(Request::Bind { socktype, protocol: i32_at(bytes, 16), v6only, addr })
            }
            2 => Ok(Request::IsOwnedSocket),
            3 => Ok(Request::IsOwnedPath { dev: u64_at(bytes, 24), ino: u64_at(bytes, 32) }),
            op => Err(DecodeError::Op(op)),
        }
    }

    /// Writes the request as the library does (used by tests and by anyone
    /// who wants to speak the protocol from Rust).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
        let mut put_i32 = |at: usize, v: i32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put_i32(20, -1);
        match self {
            Request::Bind { socktype, protocol, v6only, addr } => {
                let raw = encode_addr(addr);
                let domain = match addr {
                    BindAddr::Inet(SocketAddr::V4(_)) => AF_INET,
                    BindAddr::Inet(SocketAddr::V6(_)) => AF_INET6,
                    BindAddr::Unix(_) | BindAddr::Abstract(_) => AF_UNIX,
                };
                put_i32(4, 1);
                put_i32(8, domain as i32);
                put_i32(12, *socktype);
                put_i32(16, *protocol);
                put_i32(20, v6only.map_or(-1, i32::from));
                put_i32(40, raw.len() as i32);
                b[44..44 + raw.len()].copy_from_slice(&raw);
            }
            Request::IsOwnedSocket => put_i32(4, 2),
            Request::IsOwnedPath { dev, ino } => {
                put_i32(4, 3);
                b[24..32].copy_from_slice(&dev.to_ne_bytes());
                b[32..40].copy_from_slice(&ino.to_ne_bytes());
            }
        }
        b
    }
}

/// hotswap's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Bind: the attached socket replaces the app's. Ops 2, 3: it is hotswap's.
    Yes,
    /// Bind: call the real `bind()`. Ops 2, 3: not hotswap's.
    No,
    /// Fail the call with this errno (bind: what the kernel gave hotswap).
    Errno(i32),
}

impl Reply {
    /// The reply datagram.
    pub fn encode(self) -> [u8; REPLY_LEN] {
        let (errno, answer) = match self {
            Reply::Yes => (0, 1u32),
            Reply::No => (0, 0),
            Reply::Errno(e) => (e, 0),
        };
        let mut b = [0u8; REPLY_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
        b[4..8].copy_from_slice(&errno.to_ne_bytes());
        b[8..12].copy_from_slice(&answer.to_ne_bytes());
        b
    }

    /// Reads a reply datagram (the library's side, for tests).
    pub fn decode(b: &[u8]) -> Option<Reply> {
        if b.len() != REPLY_LEN || u32_at(b, 0) != MAGIC {
            return None;
        }
        Some(match (i32_at(b, 4), u32_at(b, 8)) {
            (0, 1) => Reply::Yes,
            (0, _) => Reply::No,
            (e, _) => Reply::Errno(e),
        })
    }
}

/// A Linux `sockaddr_in`, `sockaddr_in6` or `sockaddr_un`.
fn decode_addr(raw: &[u8]) -> Option<BindAddr> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    match family {
        AF_INET => {
            let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
            let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(BindAddr::Inet(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))))
        }
        AF_INET6 => {
            let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
            let flowinfo = u32::from_be_bytes(raw.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            let v6 = SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope);
            Some(BindAddr::Inet(SocketAddr::V6(v6)))
        }
        AF_UNIX => {
            let path = raw.get(2..)?;
            match path.first() {
                None => None, // an unnamed (autobind) address: nothing to claim
                Some(0) => Some(BindAddr::Abstract(path[1..].to_vec())),
                Some(_) => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    let path = std::ffi::OsStr::from_bytes(&path[..end]);
                    Some(BindAddr::Unix(PathBuf::from(path)))
                }
            }
        }
        _ => None,
    }
}

fn encode_addr(addr: &BindAddr) -> Vec<u8> {
    let mut raw = Vec::new();
    match addr {
        BindAddr::Inet(SocketAddr::V4(v4)) => {
            raw.extend(AF_INET.to_ne_bytes());
            raw.extend(v4.port().to_be_bytes());
            raw.extend(v4.ip().octets());
            raw.extend([0u8; 8]);
        }
        BindAddr::Inet(SocketAddr::V6(v6)) => {
            raw.extend(AF_INET6.to_ne_bytes());
            raw.extend(v6.port().to_be_bytes());
            raw.extend(v6.flowinfo().to_be_bytes());
            raw.extend(v6.ip().octets());
            raw.extend(v6.scope_id().to_ne_bytes());
        }
        BindAddr::Unix(path) => {
            raw.extend(AF_UNIX.to_ne_bytes());
            raw.extend(path.as_os_str().as_bytes());
            raw.push(0);
        }
        BindAddr::Abstract(name) => {
            raw.extend(AF_UNIX.to_ne_bytes());
            raw.push(0);
            raw.extend(name);
        }
    }
    raw.truncate(ADDR_MAX);
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Bind {
                socktype: SOCK_STREAM,
                protocol: 0,
                v6only: Some(false),
                addr: BindAddr::Inet("[::]:3000".parse().unwrap()),
            },
            Request::Bind {
                socktype: SOCK_DGRAM,
                protocol: 17,
                v6only: None,
                addr: BindAddr::Inet("127.0.0.1:53".parse().unwrap()),
            },
            Request::Bind {
                socktype: SOCK_STREAM,
                protocol: 0,
                v6only: None,
                addr: BindAddr::Unix("/run/app.sock".into()),
            },
            Request::Bind {
                socktype: SOCK_STREAM,
                protocol: 0,
                v6only: None,
                addr: BindAddr::Abstract(b"app".to_vec()),
            },
            Request::IsOwnedSocket,
            Request::IsOwnedPath { dev: 0x803, ino: 123456789 },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request.clone()), "{request:?}");
        }
    }

    #[test]
    fn a_sockaddr_in6_as_the_kernel_lays_it_out() {
        // struct sockaddr_in6 for [::1]:8080, scope 0, as C writes it on x86_64.
        let mut raw = vec![10, 0, 0x1f, 0x90, 0, 0, 0, 0];
        raw.extend([0u8; 15]);
        raw.push(1);
        raw.extend([0u8; 4]);
        assert_eq!(decode_addr(&raw), Some(BindAddr::Inet("[::1]:8080".parse().unwrap())));
        // struct sockaddr_in for 0.0.0.0:80.
        let raw = [2, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_addr(&raw), Some(BindAddr::Inet("0.0.0.0:80".parse().unwrap())));
        // An unnamed unix address (autobind) is nothing to claim; AF_PACKET is not ours.
        assert_eq!(decode_addr(&[1, 0]), None);
        assert_eq!(decode_addr(&[17, 0, 1, 2]), None);
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(Request::decode(&[0u8; 12]), Err(DecodeError::Length(12)));
        let mut bad = Request::IsOwnedSocket.encode();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), Err(DecodeError::Magic));
        let mut bad = Request::IsOwnedSocket.encode();
        bad[4..8].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(Request::decode(&bad), Err(DecodeError::Op(9)));
        let mut bad = Request::IsOwnedSocket.encode();
        bad[4..8].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(Request::decode(&bad), Err(DecodeError::Address), "a bind with no address");
    }

    #[test]
    fn replies_round_trip() {
        for reply in [Reply::Yes, Reply::No, Reply::Errno(98)] {
            assert_eq!(Reply::decode(&reply.encode()), Some(reply));
        }
        let errno = Reply::Errno(13).encode();
        assert_eq!(i32::from_ne_bytes(errno[4..8].try_into().unwrap()), 13);
    }
}
