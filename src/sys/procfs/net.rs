//! The kernel's socket tables: `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`.
//! They list every socket of a network namespace (read through a pid, the
//! namespace of that process), so a scan keeps only the inodes it asks for.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use nix::sys::socket::AddressFamily;

use super::{diag, fds, tree};
use crate::sys::process::Pid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Proto {
    Tcp,
    Udp,
}

/// TCP states (include/net/tcp_states.h), as the tables print them.
const ESTABLISHED: u8 = 0x01;
const CLOSE: u8 = 0x07; // an unconnected UDP socket
const CLOSE_WAIT: u8 = 0x08;
const LISTEN: u8 = 0x0a;

/// A row of /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct InetSocket {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

impl InetSocket {
    pub fn listening(&self) -> bool {
        self.proto == Proto::Tcp && self.state == LISTEN
    }

    /// A TCP connection, open or half-closed by the peer: a server that
    /// holds it is still serving it.
    pub fn connected(&self) -> bool {
        self.proto == Proto::Tcp && matches!(self.state, ESTABLISHED | CLOSE_WAIT)
    }

    /// A UDP socket bound to a port and connected to no peer: a server's.
    /// One in the ephemeral range was most likely autobound by a `sendto`
    /// (a statsd or syslog client), so it is not counted.
    pub fn receiving(&self, ephemeral: &RangeInclusive<u16>) -> bool {
        self.proto == Proto::Udp
            && self.state == CLOSE
            && self.remote.port() == 0
            && self.local.port() != 0
            && !ephemeral.contains(&self.local.port())
    }

    /// `127.0.0.1:3000`, `[::]:3000`, `udp://0.0.0.0:53`.
    pub fn label(&self) -> String {
        match self.proto {
            Proto::Tcp => self.local.to_string(),
            Proto::Udp => format!("udp://{}", self.local),
        }
    }
}

/// Rows `sl local rem st tx:rx tr:when retrnsmt uid timeout inode …`
/// whose inode `wanted` accepts; the header and odd rows are skipped.
pub(super) fn parse_inet(
    table: &str,
    proto: Proto,
    wanted: impl Fn(u64) -> bool,
) -> Vec<InetSocket> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().take(10).collect();
            let inode = f.get(9)?.parse().ok().filter(|i| wanted(*i))?;
            Some(InetSocket {
                proto,
                local: parse_addr(f[1])?,
                remote: parse_addr(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode,
            })
        })
        .collect()
}

/// `0100007F:1F90` or `0000000000000000FFFF00000100007F:9AC7`: the address
/// is the kernel's 32-bit words printed as numbers in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    match addr.len() {
        8 => Some(SocketAddr::new(Ipv4Addr::from(word(0)?).into(), port)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(SocketAddr::new(Ipv6Addr::from(bytes).into(), port))
        }
        _ => None,
    }
}

/// `__SO_ACCEPTCON` in /proc/net/unix's Flags: a listening socket.
const UNIX_LISTENING: u32 = 1 << 16;
/// `SS_CONNECTED` in its St column.
const UNIX_CONNECTED: u8 = 3;

/// A row of /proc/net/unix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UnixSocket {
    pub listening: bool,
    pub state: u8,
    pub inode: u64,
    /// The bound path (`@name` for an abstract one); an accepted
    /// connection carries its listener's.
    pub path: Option<String>,
}

impl UnixSocket {
    pub fn connected(&self) -> bool {
        !self.listening && self.state == UNIX_CONNECTED
    }
}

/// Rows `Num RefCount Protocol Flags Type St Inode Path`; the path is the
/// rest of the line and may hold spaces.
pub(super) fn parse_unix(table: &str, wanted: impl Fn(u64) -> bool) -> Vec<UnixSocket> {
    table
        .lines()
        .filter_map(|line| {
            let mut rest = line;
            let mut f = [""; 7];
            for field in &mut f {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap_or(rest.len());
                (*field, rest) = rest.split_at(end);
            }
            let inode = f[6].parse().ok().filter(|i| wanted(*i))?;
            let path = rest.trim();
            Some(UnixSocket {
                listening: u32::from_str_radix(f[3], 16).ok()? & UNIX_LISTENING != 0,
                state: u8::from_str_radix(f[5], 16).ok()?,
                inode,
                path: (!path.is_empty()).then(|| path.to_string()),
            })
        })
        .collect()
}

/// The paths of the unix sockets `pid` listens on (abstract ones left out):
/// a hotswap known by its pid is asked at each until one answers as that
/// pid, wherever `--control` put its control socket. Empty when `pid` is
/// gone or its fds are not ours to read (`/proc/PID/fd`: same user or root).
pub fn unix_listeners(pid: Pid) -> Vec<std::path::PathBuf> {
    let Ok(fds) = fds::read(pid) else { return Vec::new() };
    let inodes: HashSet<u64> = fds.sockets.into_iter().map(|(_, inode)| inode).collect();
    parse_unix(&proc_net(pid, "unix"), |inode| inodes.contains(&inode))
        .into_iter()
        .filter(|s| s.listening)
        .filter_map(|s| s.path.filter(|p| !p.starts_with('@')).map(Into::into))
        .collect()
}

/// The sockets of a network namespace that a scan asked for, by inode.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub inet: HashMap<u64, InetSocket>,
    pub unix: HashMap<u64, UnixSocket>,
}

/// The rows of `inodes` in the tables of `pid`'s network namespace. In
/// hotswap's own namespace TCP and UDP come from sock_diag (`diag`), which
/// skips TIME_WAIT sockets in the kernel; elsewhere, or if that fails, from
/// /proc/PID/net.
pub(super) fn read_tables(pid: Pid, inodes: &HashSet<u64>) -> Tables {
    let wanted = |inode| inodes.contains(&inode);
    let mut tables = Tables::default();
    let inet = if in_own_namespace(pid) { diag_inet(&wanted).ok() } else { None };
    let inet = inet.unwrap_or_else(|| proc_inet(pid, &wanted));
    tables.inet.extend(inet.into_iter().map(|s| (s.inode, s)));
    let unix = parse_unix(&proc_net(pid, "unix"), wanted);
    tables.unix.extend(unix.into_iter().map(|s| (s.inode, s)));
    tables
}

fn proc_inet(pid: Pid, wanted: &impl Fn(u64) -> bool) -> Vec<InetSocket> {
    [("tcp", Proto::Tcp), ("tcp6", Proto::Tcp), ("udp", Proto::Udp), ("udp6", Proto::Udp)]
        .into_iter()
        .flat_map(|(name, proto)| parse_inet(&proc_net(pid, name), proto, wanted))
        .collect()
}

fn proc_net(pid: Pid, name: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default()
}

fn in_own_namespace(pid: Pid) -> bool {
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    ns(&pid.to_string()).is_some_and(|theirs| ns("self") == Some(theirs))
}

fn diag_inet(wanted: &impl Fn(u64) -> bool) -> io::Result<Vec<InetSocket>> {
    let diag = diag::Diag::open()?;
    let mut all = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        all.extend(diag.dump(Proto::Tcp, family, diag::TCP_STATES, wanted)?);
        all.extend(diag.dump(Proto::Udp, family, diag::UDP_STATES, wanted)?);
    }
    Ok(all)
}

/// The ports the kernel picks from for an unbound socket
/// (`net.ipv4.ip_local_port_range`, hotswap's namespace; 32768–60999 by default).
pub(super) fn ephemeral_ports() -> RangeInclusive<u16> {
    static RANGE: OnceLock<RangeInclusive<u16>> = OnceLock::new();
    RANGE
        .get_or_init(|| {
            let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
            text.ok().and_then(|t| parse_port_range(&t)).unwrap_or(32768..=60999)
        })
        .clone()
}

fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut ports = text.split_whitespace().map(|p| p.parse::<u16>());
    Some(ports.next()?.ok()?..=ports.next()?.ok()?)
}

/// Connections the processes of group `pgid` hold open that were accepted
/// from the passed sockets: established TCP on `tcp_ports`, connected unix
/// streams on `unix_paths` (hotswap's own network namespace).
pub fn count_connections(pgid: Pid, tcp_ports: &[u16], unix_paths: &[String]) -> u32 {
    let members = tree::group_members(pgid);
    let mut inodes = HashSet::new();
    for &pid in &members {
        if let Ok(fds) = fds::read(pid) {
            inodes.extend(fds.sockets.iter().map(|(_, inode)| *inode));
        }
    }
    if inodes.is_empty() {
        return 0;
    }
    count_held(&read_tables(members[0], &inodes), tcp_ports, unix_paths)
}

/// `count_connections` in the tables of the group's sockets.
fn count_held(tables: &Tables, tcp_ports: &[u16], unix_paths: &[String]) -> u32 {
    let tcp = tables
        .inet
        .values()
        .filter(|s| s.proto == Proto::Tcp && s.state == ESTABLISHED)
        .filter(|s| tcp_ports.contains(&s.local.port()))
        .count();
    let unix = tables
        .unix
        .values()
        .filter(|s| s.connected() && s.path.as_ref().is_some_and(|p| unix_paths.contains(p)))
        .count();
    (tcp + unix) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: u64) -> bool {
        true
    }

    /// A python3 holding a dual-stack listener on [::]:39623, a connection
    /// from 127.0.0.1 accepted on it, and the client end.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:9AC7 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1779425 1 00000000b055c8a7 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:9AC7 0000000000000000FFFF00000100007F:9AD2 01 00000000:00000000 00:00000000 00000000     0        0 1779427 1 000000009d2f620d 20 0 0 10 -1
   2: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1779500 1 00000000b055c8a7 100 0 0 10 0
";
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
2723: 0100007F:9AD2 0100007F:9AC7 01 00000000:00000000 00:00000000 00000000     0        0 1779426 2 00000000d1f8c922 20 0 0 10 -1
   1: 0100007F:0BBA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1773301 1 00000000a271e6ac 100 0 0 10 0
";
    /// A server's udp socket, a connected client (the resolver's kind), and
    /// one autobound by sendto; a [::] server.
    const UDP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  536: 00000000:8E61 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1779423 2 00000000e6a904b6 0
 6783: 0100007F:A6C8 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 1779422 2 00000000301da8a3 0
 7789: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1779421 2 00000000e02df8d4 0
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 4198: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1779420 2 00000000bb22a00f 0
";

    #[test]
    fn tcp_rows() {
        let rows = parse_inet(TCP6, Proto::Tcp, all);
        assert_eq!(rows.len(), 3, "the header is no row");
        assert_eq!(rows[0].label(), "[::]:39623");
        assert!(rows[0].listening() && !rows[0].connected());
        assert_eq!(rows[1].local, "[::ffff:127.0.0.1]:39623".parse().unwrap());
        assert_eq!(rows[1].remote, "[::ffff:127.0.0.1]:39634".parse().unwrap());
        assert!(rows[1].connected() && !rows[1].listening());
        assert_eq!(rows[1].inode, 1779427);
        assert_eq!(rows[2].label(), "[::1]:3001");
        let rows = parse_inet(TCP, Proto::Tcp, |inode| inode == 1773301);
        assert_eq!(rows.len(), 1, "only the inodes asked for");
        assert_eq!(rows[0].label(), "127.0.0.1:3002");
    }

    #[test]
    fn udp_rows() {
        let ephemeral = 32768..=60999;
        let rows = parse_inet(UDP, Proto::Udp, all);
        let receiving: Vec<String> =
            rows.iter().filter(|s| s.receiving(&ephemeral)).map(InetSocket::label).collect();
        assert_eq!(receiving, ["udp://0.0.0.0:53"], "not the client, nor the autobound sender");
        let rows = parse_inet(UDP6, Proto::Udp, all);
        assert_eq!(rows[0].label(), "udp://[::]:8080");
        assert!(rows[0].receiving(&ephemeral));
        assert!(!rows[0].listening() && !rows[0].connected(), "UDP has no connections to hold");
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024"), None);
    }

    #[test]
    fn unix_rows() {
        // A listener on /tmp/cap/app.sock, the connection accepted from it
        // (it carries the path), the client end (no path), an abstract name,
        // a path with spaces.
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
000000001c14dc8d: 00000003 00000000 00000000 0001 03 1779419 /tmp/cap/app.sock
000000008c8a3cc0: 00000003 00000000 00000000 0001 03 1779418
00000000122e0953: 00000002 00000000 00010000 0001 01 1779417 /tmp/cap/app.sock
00000000122e0954: 00000002 00000000 00010000 0001 01 1779416 @hotswap-ctl
00000000122e0955: 00000003 00000000 00000000 0001 03 1779415 /run/my app/a.sock
";
        let rows = parse_unix(table, all);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            UnixSocket {
                listening: false,
                state: 3,
                inode: 1779419,
                path: Some("/tmp/cap/app.sock".into())
            }
        );
        assert!(rows[0].connected() && rows[1].connected());
        assert_eq!(rows[1].path, None);
        assert!(rows[2].listening && !rows[2].connected());
        assert_eq!(rows[3].path.as_deref(), Some("@hotswap-ctl"));
        assert_eq!(rows[4].path.as_deref(), Some("/run/my app/a.sock"));
        assert_eq!(parse_unix(table, |i| i == 1779417).len(), 1);
    }

    #[test]
    fn odd_addresses() {
        assert_eq!(parse_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_addr("0100007F"), None);
        assert_eq!(parse_addr("0100007:1F90"), None);
        assert_eq!(parse_addr("0100007G:1F90"), None);
        assert_eq!(parse_addr("0100007F:11F90"), None);
    }

    #[test]
    fn this_process_sockets_are_found_in_its_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = |fd: &dyn std::os::fd::AsFd| super::super::SocketId::of(fd).unwrap().ino;
        let wanted = HashSet::from([inode(&listener), inode(&udp)]);
        let tables = read_tables(std::process::id(), &wanted);
        let tcp = &tables.inet[&inode(&listener)];
        assert!(tcp.listening());
        assert_eq!(tcp.local, listener.local_addr().unwrap());
        assert_eq!(tables.inet[&inode(&udp)].local, udp.local_addr().unwrap());
        assert_eq!(tables.inet.len(), 2, "only the inodes asked for");
        let mut from_proc = proc_inet(std::process::id(), &|i| wanted.contains(&i));
        let mut from_diag = diag_inet(&|i| wanted.contains(&i)).unwrap();
        from_proc.sort_by_key(|s| s.inode);
        from_diag.sort_by_key(|s| s.inode);
        assert_eq!(from_proc, from_diag, "/proc/net and sock_diag agree");
    }

    #[test]
    fn counts_only_established_connections_we_hold_on_our_ports() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 200 1 0
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0
   3: 0100007F:0016 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 202 1 0";
        let ours: HashSet<u64> = [100, 200, 202].into();
        let mut tables = Tables::default();
        let rows = parse_inet(tcp, Proto::Tcp, |i| ours.contains(&i));
        tables.inet.extend(rows.into_iter().map(|s| (s.inode, s)));
        assert_eq!(
            count_held(&tables, &[8080], &[]),
            1,
            "listener, other holder and other port excluded"
        );
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path
0000: 00000002 00000000 00010000 0001 01 300 /run/app.sock
0000: 00000003 00000000 00000000 0001 03 301 /run/app.sock
0000: 00000003 00000000 00000000 0001 03 302";
        let ours: HashSet<u64> = [300, 301, 302].into();
        let mut tables = Tables::default();
        let rows = parse_unix(unix, |i| ours.contains(&i));
        tables.unix.extend(rows.into_iter().map(|s| (s.inode, s)));
        assert_eq!(count_held(&tables, &[], &["/run/app.sock".into()]), 1);
    }
}
