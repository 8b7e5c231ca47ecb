//! The sockets hotswap owns: those systemd passed and `--listen` bound at
//! start (`open`), and those claimed at a child's `bind()` (DESIGN.md §7).
//! All of them stay open, in hotswap, until hotswap exits, except a claimed
//! socket that no serving child holds any more.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use socket2::{Domain, Protocol, Socket, Type};

use crate::protocol::activation::PassedSocket;
use crate::protocol::claim::BindAddr;

pub mod open;

pub use open::{ListenError, SocketOptions, open_all, remove_stale_socket};

pub use super::procfs::SocketId;

/// Where an owned socket came from, as `hotswap status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Origin {
    /// Passed by systemd (hotswap's own `LISTEN_FDS`).
    Systemd,
    /// Bound at start for `--listen`.
    Listen,
    /// Bound when a child of this generation called `bind()`.
    Claimed {
        /// The generation whose child claimed it first.
        generation: u64,
    },
    /// Taken back from systemd's fd store at start: claimed at a child's
    /// `bind()` by the hotswap process before this one.
    Restored,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Systemd => f.write_str("systemd"),
            Origin::Listen => f.write_str("listen"),
            Origin::Claimed { generation } => write!(f, "claimed by gen {generation}"),
            Origin::Restored => f.write_str("restored from systemd's fd store"),
        }
    }
}

/// What a socket is bound to, for matching an app's `bind()` against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// TCP or a unix stream socket (false: UDP or a unix datagram socket).
    pub stream: bool,
    /// Its local address.
    pub addr: BindAddr,
    /// `IPV6_V6ONLY` of an IPv6 socket.
    pub v6only: bool,
}

/// One socket hotswap owns.
#[derive(Debug)]
pub struct Owned {
    /// hotswap's fd (close-on-exec; the passed ones sit at fds 3..).
    pub fd: OwnedFd,
    /// How the kernel names it, to recognise it in children and in `/proc`.
    pub id: SocketId,
    /// Where it came from.
    pub origin: Origin,
    /// The bound address, for status and logs.
    pub local: String,
    /// For the passed ones (systemd, `--listen`): how children's environment names it.
    pub passed: Option<PassedSocket>,
    /// A unix socket file hotswap created, removed when it exits.
    pub created_file: Option<PathBuf>,
    /// What it is bound to, when hotswap could read it.
    pub bound: Option<Bound>,
    /// The inode of the socket file hotswap created (unix paths).
    pub file_ino: Option<u64>,
    /// What is wrong with it, for `status` (its file no longer names it, it is dead).
    pub problem: Option<String>,
    /// For the sockets given at start: their place in the fds every child
    /// gets (0 is fd 3).
    pub listen_index: Option<usize>,
    /// `--balance reuseport`: the instance slot whose children alone get it.
    pub slot: Option<u32>,
    /// Its `FDNAME=` in systemd's fd store, once deposited there.
    pub stored_as: Option<String>,
}

impl Owned {
    /// Describes an open socket.
    pub fn new(fd: OwnedFd, origin: Origin, passed: Option<PassedSocket>) -> io::Result<Owned> {
        let id = SocketId::of(&fd)?;
        let local = open::describe(&fd)?;
        let bound = bound_of(&fd);
        let file_ino = match &bound {
            Some(Bound { addr: BindAddr::Unix(path), .. }) => {
                nix::sys::stat::lstat(path.as_path()).ok().map(|st| st.st_ino)
            }
            _ => None,
        };
        Ok(Owned {
            fd,
            id,
            origin,
            local,
            passed,
            created_file: None,
            bound,
            file_ino,
            problem: None,
            listen_index: None,
            slot: None,
            stored_as: None,
        })
    }

    /// Whether it was given explicitly (systemd, `--listen`) rather than claimed.
    pub fn is_explicit(&self) -> bool {
        !matches!(self.origin, Origin::Claimed { .. } | Origin::Restored)
    }
}

fn bound_of(fd: &OwnedFd) -> Option<Bound> {
    let socket = socket2::SockRef::from(fd);
    let stream = socket.r#type().ok()? == Type::STREAM;
    let local = socket.local_addr().ok()?;
    let addr = if let Some(inet) = local.as_socket() {
        BindAddr::Inet(inet)
    } else if let Some(path) = local.as_pathname() {
        BindAddr::Unix(path.to_path_buf())
    } else {
        BindAddr::Abstract(local.as_abstract_namespace()?.to_vec())
    };
    let v6only =
        matches!(addr, BindAddr::Inet(SocketAddr::V6(_))) && socket.only_v6().unwrap_or(false);
    Some(Bound { stream, addr, v6only })
}

/// A socket to bind for an app's `bind()`, as the app asked for it.
#[derive(Clone, Copy, Debug)]
pub struct Claim {
    /// TCP (true) or UDP.
    pub stream: bool,
    /// As the app created its socket (0: the default).
    pub protocol: i32,
    /// The address.
    pub addr: SocketAddr,
    /// The app's `IPV6_V6ONLY`, for IPv6.
    pub v6only: Option<bool>,
    /// The generation whose child asks.
    pub generation: u64,
    /// `--balance reuseport`: the instance slot it is for (`SO_REUSEPORT`).
    pub slot: Option<u32>,
}

/// Every socket hotswap owns, passed ones first in fd order.
#[derive(Debug, Default)]
pub struct Sockets {
    owned: Vec<Owned>,
    /// `FDNAME=`s of sockets that left the fd store's view (closed, or
    /// replaced at their fd number), to remove from it.
    unstored: Vec<String>,
}

/// One owned socket as a re-exec of hotswap hands it over: its fd stays
/// open across the exec, the rest is read again from the socket.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    fd: RawFd,
    stored_as: Option<String>,
    origin: Origin,
    passed: Option<PassedSocket>,
    created_file: Option<PathBuf>,
    problem: Option<String>,
    listen_index: Option<usize>,
    slot: Option<u32>,
}

impl Handed {
    /// The fd that must stay open across the exec.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

impl Sockets {
    /// The sockets opened at start (see [`open_all`]).
    pub fn new(owned: Vec<Owned>) -> Sockets {
        Sockets { owned, unstored: Vec::new() }
    }

    /// For systemd's fd store (`FDSTORE=1`): the sockets not deposited yet,
    /// each with the name `name` gives it, which is recorded as deposited;
    /// a `.socket` unit's sockets are systemd's already. And the names to
    /// remove from the store (`FDSTOREREMOVE=1`).
    pub fn fd_store_changes(
        &mut self,
        mut name: impl FnMut() -> String,
    ) -> (Vec<(BorrowedFd<'_>, String)>, Vec<String>) {
        let removed = std::mem::take(&mut self.unstored);
        let mut fresh = Vec::new();
        for (i, owned) in self.owned.iter_mut().enumerate() {
            if owned.stored_as.is_none() && owned.origin != Origin::Systemd {
                owned.stored_as = Some(name());
                fresh.push(i);
            }
        }
        let added = fresh
            .into_iter()
            .map(|i| &self.owned[i])
            .filter_map(|o| Some((o.fd.as_fd(), o.stored_as.clone()?)))
            .collect();
        (added, removed)
    }

    /// Every socket, for a re-exec of hotswap.
    pub fn hand_over(&self) -> Vec<Handed> {
        self.owned
            .iter()
            .map(|o| Handed {
                fd: o.fd.as_raw_fd(),
                stored_as: o.stored_as.clone(),
                origin: o.origin,
                passed: o.passed.clone(),
                created_file: o.created_file.clone(),
                problem: o.problem.clone(),
                listen_index: o.listen_index,
                slot: o.slot,
            })
            .collect()
    }

    /// The sockets a previous hotswap process handed over, at the same fds.
    ///
    /// # Errors
    /// One of the fds is not an open socket.
    pub fn take_back(handed: Vec<Handed>) -> io::Result<Sockets> {
        let mut owned = Vec::new();
        for h in handed {
            let fd = super::raw::adopt_fd(h.fd)?;
            let mut socket = Owned::new(fd, h.origin, h.passed)?;
            socket.created_file = h.created_file;
            socket.problem = h.problem;
            socket.listen_index = h.listen_index;
            socket.slot = h.slot;
            socket.stored_as = h.stored_as;
            owned.push(socket);
        }
        Ok(Sockets { owned, unstored: Vec::new() })
    }

    /// Every owned socket.
    pub fn iter(&self) -> impl Iterator<Item = &Owned> {
        self.owned.iter()
    }

    /// The sockets instance `instance`'s children get at fds 3.., in order:
    /// systemd's, then `--listen`'s; under `--balance reuseport` each
    /// address's socket of that instance's slot. Each with hotswap's fd.
    pub fn passed_for(&self, instance: u32) -> Vec<(RawFd, PassedSocket)> {
        let mut passed: Vec<(usize, RawFd, PassedSocket)> = self
            .owned
            .iter()
            .filter(|o| o.slot.is_none_or(|slot| slot == instance))
            .filter_map(|o| Some((o.listen_index?, o.fd.as_raw_fd(), o.passed.clone()?)))
            .collect();
        passed.sort_by_key(|(index, _, _)| *index);
        passed.into_iter().map(|(_, fd, socket)| (fd, socket)).collect()
    }

    /// The owned socket an app's bind of `want` gets, if any. Matching
    /// follows the kernel: the exact address; a wildcard of the same family
    /// and port; and, for sockets given explicitly (`--listen`, systemd), a
    /// wildcard that covers the address, since the kernel would refuse the
    /// app's bind next to it with `EADDRINUSE` anyway.
    ///
    /// Under `--balance reuseport` (`slot` is the caller's instance), only
    /// the sockets of that slot, or shared ones (unix), match.
    pub fn for_bind(&self, stream: bool, want: &BindAddr, slot: Option<u32>) -> Option<&Owned> {
        let in_slot = |o: &&Owned| o.slot.is_none() || o.slot == slot;
        let matching = |o: &&Owned| {
            let Some(bound) = &o.bound else { return false };
            bound.stream == stream && covers(bound, want, o.is_explicit())
        };
        // An exact match wins over a covering wildcard.
        let exact = self
            .owned
            .iter()
            .filter(in_slot)
            .find(|o| o.bound.as_ref().is_some_and(|b| b.stream == stream && &b.addr == want));
        exact.or_else(|| self.owned.iter().filter(in_slot).find(matching))
    }

    /// Binds a new socket for an app's bind of `addr` (TCP or UDP), as the
    /// app asked for it, and keeps it. Errors are the kernel's.
    pub fn claim(&mut self, want: Claim, backlog: Option<i32>) -> io::Result<&Owned> {
        let Claim { stream, protocol, addr, v6only, generation, slot } = want;
        let ty = if stream { Type::STREAM } else { Type::DGRAM };
        let protocol = (protocol != 0).then(|| Protocol::from(protocol));
        let socket = Socket::new(Domain::for_address(addr), ty, protocol)?;
        if let (SocketAddr::V6(_), Some(only)) = (addr, v6only) {
            socket.set_only_v6(only)?;
        }
        // SO_REUSEADDR lets a listener that an app shut down listen again
        // while connections on its port remain (DESIGN.md §2).
        socket.set_reuse_address(true)?;
        if slot.is_some() {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        if stream {
            socket.listen(backlog.unwrap_or(i32::MAX))?;
        }
        let mut owned = Owned::new(socket.into(), Origin::Claimed { generation }, None)?;
        owned.slot = slot;
        self.owned.push(owned);
        Ok(self.owned.last().expect("just pushed"))
    }

    /// Whether `id` names a socket hotswap owns.
    pub fn owns(&self, id: SocketId) -> bool {
        self.owned.iter().any(|o| o.id == id)
    }

    /// Whether the file `id` is the file of a unix socket hotswap owns.
    pub fn owns_file(&self, id: SocketId) -> bool {
        self.owned.iter().filter_map(|o| o.created_file.as_ref().or(unix_path(o))).any(|path| {
            nix::sys::stat::lstat(path).is_ok_and(|st| st.st_dev == id.dev && st.st_ino == id.ino)
        })
    }

    /// Closes the claimed socket `id` (no serving child holds it any more).
    pub fn release(&mut self, id: SocketId) -> Option<Owned> {
        let at = self.owned.iter().position(|o| o.id == id && !o.is_explicit())?;
        let released = self.owned.remove(at);
        self.unstored.extend(released.stored_as.clone());
        Some(released)
    }
}

/// Something wrong with a socket, found by [`Sockets::check_health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// An app took it out of the listening state (`shutdown()`); it listens again.
    Revived(String),
    /// It could not listen again (a unix socket never can): a fresh socket on
    /// the same address replaces it for the next generation. The serving one
    /// still holds the dead one.
    Replaced(String),
    /// It does not listen and could not be replaced: why.
    Dead(String, String),
    /// Its unix socket file no longer names it (unlinked or replaced).
    PathGone(String),
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::Revived(s) => {
                write!(f, "{s} was taken out of listening (shutdown) by a child; it listens again")
            }
            Trouble::Replaced(s) => write!(
                f,
                "{s} was shut down by a child and cannot listen again; a fresh socket replaces it for the next generation"
            ),
            Trouble::Dead(s, why) => {
                write!(f, "{s} was shut down by a child and could not be replaced: {why}")
            }
            Trouble::PathGone(s) => {
                write!(f, "{s}: the socket file no longer names the socket hotswap listens on")
            }
        }
    }
}

impl Trouble {
    /// Whether the serving generation's socket does not listen because of it.
    pub fn is_broken(&self) -> bool {
        matches!(self, Trouble::Replaced(_) | Trouble::Dead(..))
    }
}

impl Sockets {
    /// Checks every stream socket (DESIGN.md §2, "The sockets stay healthy"):
    /// one an app shut down listens again where the kernel allows it
    /// (`listen()` again; TCP sockets have `SO_REUSEADDR`), else a fresh one
    /// on the same address takes its place (and fd number) for the next
    /// generation; a unix socket file that no longer names the socket is
    /// reported. Cheap: a `poll()` per socket.
    pub fn check_health(&mut self, opts: SocketOptions) -> Vec<Trouble> {
        let mut troubles = Vec::new();
        for owned in &mut self.owned {
            let Some(bound) = owned.bound.clone() else { continue };
            if !bound.stream {
                continue;
            }
            if let (BindAddr::Unix(path), Some(_)) = (&bound.addr, &owned.created_file) {
                let names_it = nix::sys::stat::lstat(path.as_path())
                    .is_ok_and(|st| Some(st.st_ino) == owned.file_ino);
                if !names_it && owned.problem.is_none() {
                    let trouble = Trouble::PathGone(owned.local.clone());
                    owned.problem = Some(trouble.to_string());
                    troubles.push(trouble);
                }
            }
            if listening(&owned.fd) {
                continue;
            }
            let revived = socket2::SockRef::from(&owned.fd).listen(open::backlog(opts)).is_ok();
            if revived && listening(&owned.fd) {
                troubles.push(Trouble::Revived(owned.local.clone()));
                continue;
            }
            match open::rebind(owned, &bound, opts) {
                Ok(()) => {
                    // The store holds the dead one: the fresh one goes in instead.
                    self.unstored.extend(owned.stored_as.take());
                    troubles.push(Trouble::Replaced(owned.local.clone()))
                }
                Err(e) => {
                    let trouble = Trouble::Dead(owned.local.clone(), e.to_string());
                    owned.problem = Some(trouble.to_string());
                    troubles.push(trouble);
                }
            }
        }
        troubles
    }

    /// Clears `O_NONBLOCK` on every socket no live child holds (`held` says
    /// which are held), so the next program starts with a blocking socket,
    /// as systemd would give it: an app's non-blocking choice (applied to
    /// the shared socket by the shim, or by the app itself) must not outlive
    /// its generation. Returns the sockets it changed.
    /// Whether any socket is non-blocking now: only then is it worth asking
    /// which ones a live child holds (a walk of every child's fds).
    pub fn any_nonblocking(&self) -> bool {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        self.owned.iter().any(|o| {
            fcntl(&o.fd, FcntlArg::F_GETFL)
                .is_ok_and(|bits| OFlag::from_bits_truncate(bits).contains(OFlag::O_NONBLOCK))
        })
    }

    pub fn reset_nonblocking(&self, held: impl Fn(SocketId) -> bool) -> Vec<String> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let mut reset = Vec::new();
        for owned in self.owned.iter().filter(|o| !held(o.id)) {
            let Ok(bits) = fcntl(&owned.fd, FcntlArg::F_GETFL) else { continue };
            let flags = OFlag::from_bits_truncate(bits);
            if flags.contains(OFlag::O_NONBLOCK)
                && fcntl(&owned.fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).is_ok()
            {
                reset.push(owned.local.clone());
            }
        }
        reset
    }
}

/// Whether a stream socket is listening: `poll()` reports a hang-up (TCP: the
/// socket is closed) or a read hang-up (unix: shut down for reading, though
/// `SO_ACCEPTCONN` still reads 1) on one that an app shut down.
fn listening(fd: &OwnedFd) -> bool {
    match crate::sys::raw::poll_now(fd.as_fd(), libc::POLLIN | libc::POLLRDHUP) {
        Ok(revents) => revents & (libc::POLLHUP | libc::POLLRDHUP) == 0,
        Err(_) => true, // cannot tell: leave it alone
    }
}

fn unix_path(o: &Owned) -> Option<&PathBuf> {
    match &o.bound {
        Some(Bound { addr: BindAddr::Unix(path), .. }) => Some(path),
        _ => None,
    }
}

/// Whether a socket bound as `bound` serves an app's bind of `want`.
fn covers(bound: &Bound, want: &BindAddr, explicit: bool) -> bool {
    let (BindAddr::Inet(have), BindAddr::Inet(want)) = (&bound.addr, want) else {
        return bound.addr == *want;
    };
    if have.port() != want.port() {
        return false;
    }
    if have == want {
        return true;
    }
    let same_family = have.is_ipv4() == want.is_ipv4();
    if same_family && have.ip().is_unspecified() && want.ip().is_unspecified() {
        return true;
    }
    if !explicit || !have.ip().is_unspecified() {
        return false;
    }
    match (have.ip(), want.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => true,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        // A dual-stack [::] takes IPv4 too.
        (IpAddr::V6(_), IpAddr::V4(_)) => !bound.v6only,
        (IpAddr::V4(_), IpAddr::V6(w)) => w.to_ipv4_mapped().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> BindAddr {
        BindAddr::Inet(s.parse().unwrap())
    }

    fn bound(addr: &str, v6only: bool) -> Bound {
        Bound { stream: true, addr: inet(addr), v6only }
    }

    #[test]
    fn exact_and_same_family_wildcards_match_whoever_bound_them() {
        assert!(covers(&bound("127.0.0.1:3000", false), &inet("127.0.0.1:3000"), false));
        assert!(covers(&bound("[::]:3000", false), &inet("[::]:3000"), false));
        assert!(covers(&bound("0.0.0.0:3000", false), &inet("0.0.0.0:3000"), false));
        assert!(!covers(&bound("127.0.0.1:3000", false), &inet("127.0.0.1:3001"), true));
        assert!(!covers(&bound("127.0.0.1:3000", false), &inet("0.0.0.0:3000"), true));
        // A claimed wildcard does not swallow a specific address: the app asked for that.
        assert!(!covers(&bound("[::]:3000", false), &inet("127.0.0.1:3000"), false));
        assert!(!covers(&bound("[::]:3000", false), &inet("0.0.0.0:3000"), false));
    }

    #[test]
    fn an_explicit_wildcard_covers_what_the_kernel_would_refuse_next_to_it() {
        assert!(covers(&bound("[::]:3000", false), &inet("0.0.0.0:3000"), true));
        assert!(covers(&bound("[::]:3000", false), &inet("127.0.0.1:3000"), true));
        assert!(covers(&bound("[::]:3000", false), &inet("[::1]:3000"), true));
        assert!(!covers(&bound("[::]:3000", true), &inet("127.0.0.1:3000"), true), "v6 only");
        assert!(covers(&bound("0.0.0.0:3000", false), &inet("127.0.0.1:3000"), true));
        assert!(!covers(&bound("0.0.0.0:3000", false), &inet("[::1]:3000"), true));
    }

    #[test]
    fn unix_addresses_match_only_themselves() {
        let b = Bound { stream: true, addr: BindAddr::Unix("/run/a.sock".into()), v6only: false };
        assert!(covers(&b, &BindAddr::Unix("/run/a.sock".into()), true));
        assert!(!covers(&b, &BindAddr::Unix("/run/b.sock".into()), true));
        assert!(!covers(&b, &BindAddr::Abstract(b"a.sock".to_vec()), true));
    }

    #[test]
    fn a_claim_binds_as_asked_and_is_found_again() {
        let mut sockets = Sockets::default();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let owned = sockets
            .claim(
                Claim { stream: true, protocol: 0, addr, v6only: None, generation: 4, slot: None },
                None,
            )
            .unwrap();
        let BindAddr::Inet(local) = owned.bound.clone().unwrap().addr else { panic!() };
        assert_ne!(local.port(), 0);
        assert_eq!(owned.origin.to_string(), "claimed by gen 4");
        let id = owned.id;
        assert_eq!(sockets.for_bind(true, &BindAddr::Inet(local), None).map(|o| o.id), Some(id));
        assert!(sockets.for_bind(false, &BindAddr::Inet(local), None).is_none(), "UDP is another");
        assert!(sockets.owns(id));
        assert!(sockets.release(id).is_some());
        assert!(!sockets.owns(id));
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let owned = sockets
            .claim(
                Claim {
                    stream: true,
                    protocol: 0,
                    addr: v6,
                    v6only: Some(true),
                    generation: 5,
                    slot: None,
                },
                None,
            )
            .unwrap();
        assert!(owned.bound.as_ref().unwrap().v6only);
        // Under --balance reuseport each slot has its own socket on the same address.
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = sockets
            .claim(
                Claim {
                    stream: true,
                    protocol: 0,
                    addr: any,
                    v6only: None,
                    generation: 6,
                    slot: Some(0),
                },
                None,
            )
            .unwrap();
        let BindAddr::Inet(at) = first.bound.clone().unwrap().addr else { panic!() };
        let first = first.id;
        let second = sockets
            .claim(
                Claim {
                    stream: true,
                    protocol: 0,
                    addr: at,
                    v6only: None,
                    generation: 6,
                    slot: Some(1),
                },
                None,
            )
            .unwrap()
            .id;
        assert_ne!(first, second);
        assert_eq!(sockets.for_bind(true, &BindAddr::Inet(at), Some(0)).map(|o| o.id), Some(first));
        assert_eq!(
            sockets.for_bind(true, &BindAddr::Inet(at), Some(1)).map(|o| o.id),
            Some(second)
        );
        assert!(
            sockets.for_bind(true, &BindAddr::Inet(at), Some(2)).is_none(),
            "slot 2 has none yet"
        );
    }
}
