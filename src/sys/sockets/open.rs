//! The sockets given at start: adopted from systemd or bound for `--listen`,
//! pinned at fds 3, 4, … in hotswap itself, blocking, close-on-exec, open
//! until hotswap exits.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use socket2::{Domain, SockAddr, Socket, Type};
use thiserror::Error;

use super::{Bound, Origin, Owned};
use crate::config::{Host, ListenAddr, ListenSpec};
use crate::protocol::activation::{FIRST_FD, Inherited, PassedSocket, is_stored};
use crate::protocol::claim::BindAddr;
use crate::sys::raw;

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("address in use: {0}")]
    InUse(String),
    #[error("{0}: a live server is accepting on this unix socket")]
    UnixInUse(String),
    #[error("{0}: exists and is not a socket")]
    NotASocket(String),
    #[error("cannot resolve host in {0}: {1}")]
    Resolve(String, String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error("inherited fd {0} from LISTEN_FDS: {1}")]
    Inherited(i32, io::Error),
}

#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// None: as deep as the kernel allows (net.core.somaxconn).
    pub backlog: Option<i32>,
    pub reuse_port: bool,
    /// `--balance reuseport`: one SO_REUSEPORT socket per instance slot for
    /// each TCP or UDP `--listen` address and each claim (1: one shared socket).
    pub slots: u32,
    /// chmod for unix socket files.
    pub socket_mode: u32,
}

/// Adopts what systemd passed (`inherited`, at fds 3..), marks every other
/// inherited fd close-on-exec, then binds `specs` at the following fd numbers.
/// On failure, socket files already created are removed: hotswap will not start.
pub fn open_all(
    inherited: &Inherited,
    specs: &[ListenSpec],
    opts: SocketOptions,
) -> Result<Vec<Owned>, ListenError> {
    let mut listeners = Vec::new();
    let opened = open_into(&mut listeners, inherited, specs, opts);
    if opened.is_err() {
        for file in listeners.iter().filter_map(|l| l.created_file.as_ref()) {
            let _ = std::fs::remove_file(file);
        }
    }
    opened.map(|()| listeners)
}

fn open_into(
    listeners: &mut Vec<Owned>,
    inherited: &Inherited,
    specs: &[ListenSpec],
    opts: SocketOptions,
) -> Result<(), ListenError> {
    // What systemd kept in its fd store for a previous hotswap process: a
    // `--listen` address takes its socket back; the rest were claimed at a
    // child's bind() and wait for the next one.
    let mut stored = Vec::new();
    for (i, name) in inherited.names.iter().enumerate() {
        let fd = FIRST_FD + i as i32;
        let adopted = raw::adopt_fd(fd).map_err(|e| ListenError::Inherited(fd, e))?;
        let local = describe(&adopted).map_err(|e| ListenError::Inherited(fd, e))?;
        if is_stored(name) {
            let mut owned = Owned::new(adopted, Origin::Restored, None)
                .map_err(|e| ListenError::Inherited(fd, e))?;
            owned.stored_as = Some(name.clone());
            stored.push(owned);
            continue;
        }
        let passed = PassedSocket { name: name.clone(), address: local };
        let mut owned = Owned::new(adopted, Origin::Systemd, Some(passed))
            .map_err(|e| ListenError::Inherited(fd, e))?;
        owned.listen_index = Some(listeners.len());
        listeners.push(owned);
    }
    let from_systemd = listeners.len();
    let mut next_fd = FIRST_FD + inherited.names.len() as i32;
    raw::cloexec_from(next_fd).map_err(|e| ListenError::Io("close-on-exec sweep".into(), e))?;
    let reuseport = opts.slots > 1;
    let opts = SocketOptions { reuse_port: opts.reuse_port || reuseport, ..opts };
    for (index, spec) in specs.iter().enumerate() {
        if let Some(mut owned) = take_stored(&mut stored, spec) {
            owned.listen_index = Some(from_systemd + index);
            owned.slot = (reuseport && !is_unix(spec)).then_some(0);
            listeners.push(owned);
            continue;
        }
        let (mut fd, passed, created_file) = bind(spec, opts)?;
        // Pinned before anything else can close the file the socket was bound at.
        let pinned = raw::pin_fd(&mut fd, next_fd);
        next_fd += 1;
        let owned = Owned::new(fd, Origin::Listen, Some(passed));
        let io_err = |e| ListenError::Io(spec.text.clone(), e);
        let mut owned = pinned.and(owned).map_err(|e| {
            if let Some(file) = &created_file {
                let _ = std::fs::remove_file(file);
            }
            io_err(e)
        })?;
        owned.created_file = created_file;
        owned.listen_index = Some(from_systemd + index);
        let slotted = reuseport
            && !matches!(spec.addr, ListenAddr::UnixPath(_) | ListenAddr::UnixAbstract(_));
        if slotted {
            owned.slot = Some(0);
        }
        listeners.push(owned);
    }
    // --balance reuseport: the other slots' sockets, after the ones at 3.. (slot 0).
    for slot in 1..opts.slots {
        for (index, spec) in specs.iter().enumerate() {
            if !reuseport
                || matches!(spec.addr, ListenAddr::UnixPath(_) | ListenAddr::UnixAbstract(_))
            {
                continue;
            }
            // Where slot 0 bound it: the same port even for `:0`.
            let first = listeners
                .iter()
                .find(|o| o.listen_index == Some(from_systemd + index))
                .and_then(|o| o.bound.clone());
            let same = match first.map(|b| b.addr) {
                Some(BindAddr::Inet(addr)) => {
                    let addr = match spec.addr {
                        ListenAddr::Udp(..) => ListenAddr::Udp(Host::Ip(addr.ip()), addr.port()),
                        _ => ListenAddr::Tcp(Host::Ip(addr.ip()), addr.port()),
                    };
                    ListenSpec { addr, ..spec.clone() }
                }
                _ => spec.clone(),
            };
            let address = listeners_address(listeners, index);
            let mut owned = match take_stored(&mut stored, &same) {
                Some(owned) => owned,
                None => {
                    let (fd, passed, _) = bind(&same, opts)?;
                    Owned::new(fd, Origin::Listen, Some(passed))
                        .map_err(|e| ListenError::Io(spec.text.clone(), e))?
                }
            };
            if let Some(passed) = &mut owned.passed {
                passed.address = address;
            }
            owned.listen_index = Some(from_systemd + index);
            owned.slot = Some(slot);
            listeners.push(owned);
        }
    }
    for leftover in &stored {
        tracing::info!("{} from systemd's fd store, claimed at a bind() before", leftover.local);
    }
    listeners.extend(stored);
    for listener in listeners.iter() {
        set_blocking(&listener.fd).map_err(|e| ListenError::Io(listener.local.clone(), e))?;
    }
    Ok(())
}

fn is_unix(spec: &ListenSpec) -> bool {
    matches!(spec.addr, ListenAddr::UnixPath(_) | ListenAddr::UnixAbstract(_))
}

/// The socket systemd's fd store kept for `spec`'s address, if any: it
/// becomes that `--listen` socket again, unbound and never closed.
fn take_stored(stored: &mut Vec<Owned>, spec: &ListenSpec) -> Option<Owned> {
    let (stream, addr) = match &spec.addr {
        ListenAddr::TcpAnyHost(port) => (true, BindAddr::Inet(any_host(*port))),
        ListenAddr::Tcp(host, port) => (true, BindAddr::Inet(resolve(host, *port, spec).ok()?)),
        ListenAddr::Udp(host, port) => (false, BindAddr::Inet(resolve(host, *port, spec).ok()?)),
        ListenAddr::UnixPath(path) => (true, BindAddr::Unix(path.clone())),
        ListenAddr::UnixAbstract(name) => (true, BindAddr::Abstract(name.as_bytes().to_vec())),
    };
    let port_given = !matches!(addr, BindAddr::Inet(a) if a.port() == 0);
    let at = stored.iter().position(|o| {
        o.bound.as_ref().is_some_and(|b| b.stream == stream && b.addr == addr) && port_given
    })?;
    let mut owned = stored.remove(at);
    let name = spec.name.clone().unwrap_or_else(|| "unknown".to_string());
    let address = match &spec.addr {
        ListenAddr::TcpAnyHost(port) => port.to_string(),
        ListenAddr::UnixAbstract(name) => format!("@{name}"),
        ListenAddr::UnixPath(path) => path.display().to_string(),
        _ => spec.text.trim_start_matches("tcp://").trim_start_matches("udp://").to_string(),
    };
    owned.origin = Origin::Listen;
    owned.passed = Some(PassedSocket { name, address });
    if let ListenAddr::UnixPath(path) = &spec.addr {
        owned.created_file = Some(path.clone());
    }
    Some(owned)
}

/// The `SERVER_STARTER_PORT` address of `--listen` socket `index` (slot 0's).
fn listeners_address(listeners: &[Owned], index: usize) -> String {
    listeners
        .iter()
        .filter(|o| o.origin == Origin::Listen)
        .nth(index)
        .and_then(|o| o.passed.as_ref())
        .map(|p| p.address.clone())
        .unwrap_or_default()
}

/// Sockets are passed blocking, as systemd passes them, and set so once:
/// the flag lives on the open file description every generation shares,
/// and flipping it under a running event loop breaks that loop.
fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Binds one `--listen` socket: its fd, how children are told of it, and the
/// socket file it created.
fn bind(
    spec: &ListenSpec,
    opts: SocketOptions,
) -> Result<(OwnedFd, PassedSocket, Option<PathBuf>), ListenError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse(spec.text.clone()),
        _ => ListenError::Io(spec.text.clone(), e),
    };
    let name = spec.name.clone().unwrap_or_else(|| "unknown".to_string());
    let (socket, address, created_file) = match &spec.addr {
        ListenAddr::TcpAnyHost(port) => {
            let socket = inet_socket(&any_host(*port), Type::STREAM, opts).map_err(io_err)?;
            (socket, port.to_string(), None)
        }
        ListenAddr::Tcp(host, port) | ListenAddr::Udp(host, port) => {
            let addr = resolve(host, *port, spec)?;
            let ty =
                if matches!(spec.addr, ListenAddr::Udp(..)) { Type::DGRAM } else { Type::STREAM };
            let socket = inet_socket(&addr, ty, opts).map_err(io_err)?;
            let text =
                spec.text.trim_start_matches("tcp://").trim_start_matches("udp://").to_string();
            (socket, text, None)
        }
        ListenAddr::UnixPath(path) => {
            remove_stale_socket(path).map_err(|e| match e.kind() {
                io::ErrorKind::AddrInUse => ListenError::UnixInUse(spec.text.clone()),
                io::ErrorKind::AlreadyExists => ListenError::NotASocket(spec.text.clone()),
                _ => ListenError::Io(spec.text.clone(), e),
            })?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err)?;
            socket.bind(&SockAddr::unix(path).map_err(io_err)?).map_err(io_err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.socket_mode))
                .map_err(io_err)?;
            socket.listen(backlog(opts)).map_err(io_err)?;
            (socket, path.display().to_string(), Some(path.clone()))
        }
        ListenAddr::UnixAbstract(abstract_name) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err)?;
            let addr = SockAddr::unix(format!("\0{abstract_name}")).map_err(io_err)?;
            socket.bind(&addr).map_err(io_err)?;
            socket.listen(backlog(opts)).map_err(io_err)?;
            (socket, format!("@{abstract_name}"), None)
        }
    };
    Ok((OwnedFd::from(socket), PassedSocket { name, address }, created_file))
}

/// `[::]:PORT` with IPV6_V6ONLY off takes IPv4 too; a host without IPv6 gets `0.0.0.0:PORT`.
fn any_host(port: u16) -> SocketAddr {
    match Socket::new(Domain::IPV6, Type::STREAM, None) {
        Ok(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        Err(_) => SocketAddr::from(([0, 0, 0, 0], port)),
    }
}

fn resolve(host: &Host, port: u16, spec: &ListenSpec) -> Result<SocketAddr, ListenError> {
    match host {
        Host::Any => Ok(any_host(port)),
        Host::Ip(ip) => Ok(SocketAddr::new(*ip, port)),
        // Resolved once, at start, before the runtime exists.
        Host::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| ListenError::Resolve(spec.text.clone(), e.to_string()))?
            .next()
            .ok_or_else(|| ListenError::Resolve(spec.text.clone(), "no address".into())),
    }
}

fn inet_socket(addr: &SocketAddr, ty: Type, opts: SocketOptions) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&(*addr).into())?;
    if ty == Type::STREAM {
        socket.listen(backlog(opts))?;
    }
    Ok(socket)
}

pub(super) fn backlog(opts: SocketOptions) -> i32 {
    // The kernel caps the backlog at net.core.somaxconn; the queue is what
    // holds connections while no generation is accepting.
    opts.backlog.unwrap_or(i32::MAX)
}

/// Replaces a socket that cannot listen again by a fresh one on the same
/// address, at the same fd number in hotswap (so that the next generation
/// finds it where the previous one did). Children holding the old one keep it.
pub(super) fn rebind(owned: &mut Owned, bound: &Bound, opts: SocketOptions) -> io::Result<()> {
    let socket = match &bound.addr {
        BindAddr::Inet(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
            if addr.is_ipv6() {
                socket.set_only_v6(bound.v6only)?;
            }
            socket.set_reuse_address(true)?;
            if opts.reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&(*addr).into())?;
            socket
        }
        BindAddr::Unix(path) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let _ = std::fs::remove_file(path);
            socket.bind(&SockAddr::unix(path)?)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.socket_mode))?;
            socket
        }
        BindAddr::Abstract(name) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let mut raw = vec![0u8];
            raw.extend_from_slice(name);
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&raw);
            socket.bind(&SockAddr::unix(name)?)?;
            socket
        }
    };
    socket.listen(backlog(opts))?;
    raw::replace_fd(&owned.fd, OwnedFd::from(socket))?;
    owned.id = super::SocketId::of(&owned.fd)?;
    owned.file_ino = match &bound.addr {
        BindAddr::Unix(path) => nix::sys::stat::lstat(path.as_path()).ok().map(|st| st.st_ino),
        _ => None,
    };
    Ok(())
}

/// A socket file nobody accepts on is left over from a crash: remove it.
/// One a server still accepts on is someone else's: `AddrInUse`. Anything
/// else at that path: `AlreadyExists`.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::ErrorKind::AddrInUse.into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// The bound address of a socket, as a user would write it.
pub fn describe(fd: &OwnedFd) -> io::Result<String> {
    let socket = socket2::SockRef::from(fd);
    let addr = socket.local_addr()?;
    let udp = socket.r#type()? == Type::DGRAM;
    let scheme = if udp { "udp://" } else { "" };
    if let Some(inet) = addr.as_socket() {
        return Ok(format!("{scheme}{inet}"));
    }
    if let Some(path) = addr.as_pathname() {
        return Ok(path.display().to_string());
    }
    if let Some(name) = addr.as_abstract_namespace() {
        return Ok(format!("@{}", String::from_utf8_lossy(name)));
    }
    Ok(format!("fd {}", fd.as_raw_fd()))
}
