//! A process's fds as sockets (by inode) and epoll sets, and what an epoll
//! set watches (`/proc/PID/fdinfo/N`).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;

use crate::sys::process::Pid;

/// What an fd refers to, as far as a scan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `socket:[INODE]` (decimal): a file of sockfs, the one superblock every socket lives on.
    Socket(u64),
    /// `anon_inode:[eventpoll]`
    Eventpoll,
    Other,
}

/// The link text of /proc/PID/fd/N.
pub(super) fn classify(link: &OsStr) -> Kind {
    let link = link.as_bytes();
    if link == b"anon_inode:[eventpoll]" {
        return Kind::Eventpoll;
    }
    let inode = link.strip_prefix(b"socket:[").and_then(|rest| rest.strip_suffix(b"]"));
    match inode.and_then(|i| std::str::from_utf8(i).ok()?.parse().ok()) {
        Some(inode) => Kind::Socket(inode),
        None => Kind::Other,
    }
}

/// The fds of one process that a scan looks at.
#[derive(Debug, Default)]
pub(super) struct Fds {
    /// `(fd, socket inode)`
    pub sockets: Vec<(i32, u64)>,
    pub epolls: Vec<i32>,
    /// Every fd, of any kind.
    pub count: usize,
}

impl Fds {
    pub fn socket(&self, fd: i32) -> Option<u64> {
        self.sockets.iter().find(|(n, _)| *n == fd).map(|(_, inode)| *inode)
    }
}

/// Lists /proc/PID/fd and reads each link. An fd closed meanwhile is
/// skipped; an error on the directory (ENOENT: gone, EACCES: not ours to
/// read) or EACCES on a link is returned.
pub(super) fn read(pid: Pid) -> io::Result<Fds> {
    let mut fds = Fds::default();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        fds.count += 1;
        let link = match fs::read_link(entry.path()) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match classify(link.as_os_str()) {
            Kind::Socket(inode) => fds.sockets.push((fd, inode)),
            Kind::Eventpoll => fds.epolls.push(fd),
            Kind::Other => {}
        }
    }
    Ok(fds)
}

/// One registration in an epoll set, from its fdinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EpollEntry {
    /// The fd number passed to EPOLL_CTL_ADD, by whichever process added it,
    /// whenever it did: never use it to name the file.
    pub tfd: i32,
    pub events: u32,
    /// The target file's inode and superblock device (kernel encoding).
    pub ino: u64,
    pub sdev: u64,
}

const EPOLLIN: u32 = 0x1;
const EPOLLONESHOT: u32 = 1 << 30;
/// Flags that are not events: EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET.
const EPOLL_FLAGS: u32 = (1 << 28) | (1 << 29) | (1 << 30) | (1 << 31);

impl EpollEntry {
    /// Registered for input: EPOLLIN, or EPOLLONESHOT disarmed after its
    /// event (the kernel then clears every event bit, `40000000`, until the
    /// app re-arms it).
    pub fn for_input(&self) -> bool {
        self.events & EPOLLIN != 0
            || (self.events & EPOLLONESHOT != 0 && self.events & !EPOLL_FLAGS == 0)
    }
}

/// The registrations of the epoll set at `pid`'s fd `fd`.
pub(super) fn epoll_entries(pid: Pid, fd: i32) -> io::Result<Vec<EpollEntry>> {
    Ok(parse_epoll_fdinfo(&fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?))
}

/// An eventpoll fdinfo: the file's own `pos:`/`flags:`/`mnt_id:`/`ino:`
/// header, then one line per registration (fs/eventpoll.c `ep_show_fdinfo`):
/// `tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x`.
pub(super) fn parse_epoll_fdinfo(text: &str) -> Vec<EpollEntry> {
    text.lines().filter(|l| l.starts_with("tfd:")).filter_map(parse_epoll_line).collect()
}

fn parse_epoll_line(line: &str) -> Option<EpollEntry> {
    // Fields are `key: value` or `key:value`.
    let mut tokens = line.split_whitespace();
    let (mut tfd, mut events, mut ino, mut sdev) = (None, None, None, None);
    while let Some(token) = tokens.next() {
        let (key, value) = match token.split_once(':') {
            Some((key, "")) => (key, tokens.next()?),
            Some((key, value)) => (key, value),
            None => continue,
        };
        match key {
            "tfd" => tfd = value.parse().ok(),
            "events" => events = u32::from_str_radix(value, 16).ok(),
            "ino" => ino = u64::from_str_radix(value, 16).ok(),
            "sdev" => sdev = u64::from_str_radix(value, 16).ok(),
            _ => {}
        }
    }
    Some(EpollEntry { tfd: tfd?, events: events?, ino: ino?, sdev: sdev? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_sockets_and_epoll_sets() {
        let cases = [
            ("socket:[1771511]", Kind::Socket(1771511)),
            ("anon_inode:[eventpoll]", Kind::Eventpoll),
            ("anon_inode:[eventfd]", Kind::Other),
            ("pipe:[1771489]", Kind::Other),
            ("/tmp/socket:[1]", Kind::Other),
            ("socket:[12x]", Kind::Other),
            ("/dev/null", Kind::Other),
        ];
        for (link, kind) in cases {
            assert_eq!(classify(OsStr::new(link)), kind, "{link}");
        }
    }

    /// `node -e 'require("http").createServer().listen(3001)'`: fd 14, the
    /// loop's epoll set (fd 19 is the listener, socket:[1771511] = 0x1b07f7).
    const NODE: &str = "pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1039
tfd:       17 events:       19 data:               11  pos:0 ino:40f sdev:10
tfd:       15 events:       19 data:                f  pos:0 ino:1b07e2 sdev:f
tfd:       19 events:       19 data:               13  pos:0 ino:1b07f7 sdev:9
";

    #[test]
    fn node_epoll_set() {
        let entries = parse_epoll_fdinfo(NODE);
        assert_eq!(entries.len(), 3, "the header's own ino: is not an entry");
        assert_eq!(entries[2], EpollEntry { tfd: 19, events: 0x19, ino: 1771511, sdev: 9 });
        assert_eq!(entries[0], EpollEntry { tfd: 17, events: 0x19, ino: 0x40f, sdev: 0x10 });
        assert!(entries.iter().all(EpollEntry::for_input));
    }

    #[test]
    fn python_epoll_sets() {
        // selectors.EpollSelector: data is the fd, or garbage in the top half.
        let selector = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:1b0ef5 sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(selector),
            [EpollEntry { tfd: 3, events: 0x19, ino: 0x1b0ef5, sdev: 9 }]
        );
        // A listener registered for EPOLLOUT only, and a connection with EPOLLET.
        let out = "ino:\t1039\n\
            tfd:        3 events:       1c data:     7f5300000003  pos:0 ino:1b2393 sdev:9\n\
            tfd:        5 events: 80000019 data:                5  pos:0 ino:1b2394 sdev:9\n";
        let entries = parse_epoll_fdinfo(out);
        assert_eq!(entries.iter().map(EpollEntry::for_input).collect::<Vec<_>>(), [false, true]);
        // A FIFO on ext4 (254:0): sdev is the kernel's encoding.
        let fifo =
            "tfd:        7 events:       19 data:     7f5300000007  pos:0 ino:9982aa sdev:fe00000";
        assert_eq!(parse_epoll_fdinfo(fifo)[0].sdev, 0xfe0_0000);
    }

    #[test]
    fn oneshot_counts_while_disarmed_but_not_for_output() {
        let entry = |events| EpollEntry { tfd: 3, events, ino: 1, sdev: 9 };
        // Seen after one event was delivered on EPOLLIN|EPOLLONESHOT.
        let disarmed = parse_epoll_fdinfo(
            "tfd:        3 events: 40000000 data:                3  pos:0 ino:1b2393 sdev:9",
        );
        assert!(disarmed[0].for_input());
        assert!(entry(0x4000_0019).for_input(), "armed for input");
        assert!(entry(0x1000_0019).for_input(), "EPOLLEXCLUSIVE");
        assert!(!entry(0x4000_001c).for_input(), "armed for output only");
        assert!(!entry(0x8000_0000).for_input(), "EPOLLET with no events");
        assert!(!entry(0x18).for_input(), "only the EPOLLERR|EPOLLHUP the kernel adds");
    }

    #[test]
    fn odd_lines_are_skipped() {
        let text = "tfd:        3 events:       19 data:                3  pos:0 ino:zz sdev:9\n\
                    tfd:\n\
                    tfd: 4 events: 19 data: 4 pos:0 ino:10 sdev:9 extra:1\n";
        assert_eq!(
            parse_epoll_fdinfo(text),
            [EpollEntry { tfd: 4, events: 0x19, ino: 16, sdev: 9 }]
        );
    }
}
