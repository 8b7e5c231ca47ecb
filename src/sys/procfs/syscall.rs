//! What a thread is blocked in (`/proc/PID/task/TID/syscall`), and the
//! poll/select sets it passed, read from its memory.

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid as NixPid;

use crate::sys::process::Pid;

/// A line of /proc/PID/task/TID/syscall (fs/proc/base.c `proc_pid_syscall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// `running`: on a CPU (or runnable) right now.
    Running,
    /// `-1 SP PC`: blocked, but not in a system call (stopped, a zombie).
    Outside,
    /// `NR A0 A1 A2 A3 A4 A5 SP PC`: NR decimal, the rest hex.
    In { nr: i64, args: [u64; 6] },
}

pub(super) fn parse_line(text: &str) -> Option<Line> {
    let mut fields = text.split_whitespace();
    let nr = fields.next()?;
    if nr == "running" {
        return Some(Line::Running);
    }
    let nr: i64 = nr.parse().ok()?;
    if nr < 0 {
        return Some(Line::Outside);
    }
    let mut args = [0; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some(Line::In { nr, args })
}

pub(super) fn read_line(pid: Pid, tid: Pid) -> io::Result<Option<Line>> {
    Ok(parse_line(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))?))
}

/// System call numbers, per architecture (x86_64:
/// arch/x86/entry/syscalls/syscall_64.tbl; aarch64 and the other newer
/// ports: include/uapi/asm-generic/unistd.h, which has no accept-less
/// `poll`, `select` or `epoll_wait`).
mod nr {
    #[cfg(target_arch = "x86_64")]
    mod table {
        pub const ACCEPT: &[i64] = &[43, 288]; // accept, accept4
        pub const POLL: &[i64] = &[7, 271]; // poll, ppoll
        pub const SELECT: &[i64] = &[23, 270]; // select, pselect6 (glibc's select())
        pub const RECV: &[i64] = &[45, 47, 299]; // recvfrom, recvmsg, recvmmsg
    }
    #[cfg(target_arch = "aarch64")]
    mod table {
        pub const ACCEPT: &[i64] = &[202, 242]; // accept, accept4
        pub const POLL: &[i64] = &[73]; // ppoll
        pub const SELECT: &[i64] = &[72]; // pselect6
        pub const RECV: &[i64] = &[207, 212, 243]; // recvfrom, recvmsg, recvmmsg
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    mod table {
        // Unknown numbers: only epoll registrations (and held connections) are seen.
        pub const ACCEPT: &[i64] = &[];
        pub const POLL: &[i64] = &[];
        pub const SELECT: &[i64] = &[];
        pub const RECV: &[i64] = &[];
    }
    pub use table::*;
}

/// What a blocked thread waits for, as far as a scan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    Accept {
        fd: i32,
    },
    /// `struct pollfd[nfds]` at `at`.
    Poll {
        at: u64,
        nfds: u64,
    },
    /// `fd_set` of the first `nfds` fds at `readfds` (0: none).
    Select {
        nfds: u64,
        readfds: u64,
    },
    Recv {
        fd: i32,
    },
}

pub(super) fn wait(line: Line) -> Option<Wait> {
    let Line::In { nr, args } = line else { return None };
    let fd = || i32::try_from(args[0]).ok();
    if nr::ACCEPT.contains(&nr) {
        Some(Wait::Accept { fd: fd()? })
    } else if nr::POLL.contains(&nr) {
        Some(Wait::Poll { at: args[0], nfds: args[1] })
    } else if nr::SELECT.contains(&nr) {
        Some(Wait::Select { nfds: args[0], readfds: args[1] })
    } else if nr::RECV.contains(&nr) {
        Some(Wait::Recv { fd: fd()? })
    } else {
        None
    }
}

/// No more than this many pollfds or fds are read from a process (512 KiB).
const MAX_FDS: u64 = 1 << 16;

const POLLIN: i16 = 0x1;
const POLLRDNORM: i16 = 0x40;

/// The fds a blocked `poll`/`select` waits on for input, read from thread
/// `tid`'s memory: the kernel copies the set in at entry and writes results
/// only at return, so while the thread blocks its memory holds the input.
pub(super) fn read_wanted(pid: Pid, tid: Pid, wait: Wait) -> io::Result<Vec<i32>> {
    match wait {
        Wait::Accept { fd } | Wait::Recv { fd } => Ok(vec![fd]),
        Wait::Poll { at, nfds } => {
            let bytes = read_memory(pid, tid, at, nfds.min(MAX_FDS) as usize * 8)?;
            Ok(pollfds_for_input(&bytes))
        }
        Wait::Select { readfds: 0, .. } => Ok(Vec::new()),
        Wait::Select { nfds, readfds } => {
            let nfds = nfds.min(MAX_FDS);
            let bytes = read_memory(pid, tid, readfds, nfds.div_ceil(64) as usize * 8)?;
            Ok(fd_set_members(&bytes, nfds))
        }
    }
}

/// `struct pollfd { int fd; short events; short revents; }`, native endian:
/// the fds polled for input (negative fds are ignored by the kernel).
pub(super) fn pollfds_for_input(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(8)
        .filter_map(|p| {
            let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            let events = i16::from_ne_bytes([p[4], p[5]]);
            (fd >= 0 && events & (POLLIN | POLLRDNORM) != 0).then_some(fd)
        })
        .collect()
}

/// `fd_set`: an array of `unsigned long`; fd n is bit n % 64 of word n / 64.
pub(super) fn fd_set_members(bytes: &[u8], nfds: u64) -> Vec<i32> {
    let mut fds = Vec::new();
    for (w, word) in bytes.chunks_exact(8).enumerate() {
        let word = u64::from_ne_bytes(word.try_into().expect("chunks of 8"));
        for bit in 0..64 {
            let fd = w as u64 * 64 + bit;
            if fd < nfds && word & (1 << bit) != 0 {
                fds.push(fd as i32);
            }
        }
    }
    fds
}

/// `len` bytes at `addr` in `tid`'s address space: `process_vm_readv`, or
/// /proc/PID/task/TID/mem where that is refused (seccomp, a kernel without it).
pub(super) fn read_memory(pid: Pid, tid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    vm_read(tid, addr, len).or_else(|_| proc_mem_read(pid, tid, addr, len))
}

/// `process_vm_readv`; a short read (an unmapped page) is an error.
fn vm_read(tid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let remote = [RemoteIoVec { base: addr as usize, len }];
    let n =
        process_vm_readv(NixPid::from_raw(tid as i32), &mut [IoSliceMut::new(&mut buf)], &remote)?;
    if n != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(buf)
}

fn proc_mem_read(pid: Pid, tid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mem = fs::File::open(format!("/proc/{pid}/task/{tid}/mem"))?;
    mem.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines_as_seen() {
        let cases = [
            // python3: socket.create_server(…).accept(): accept4(3, …, SOCK_CLOEXEC)
            (
                "288 0x3 0x7fffafc74440 0x7fffafc74434 0x80000 0x0 0x0 0x7fffafc74408 0x7f9049328f63\n",
                Some(Line::In {
                    nr: 288,
                    args: [3, 0x7fffafc74440, 0x7fffafc74434, 0x80000, 0, 0],
                }),
            ),
            // node's main thread: epoll_pwait(14, …, 1024, 30000)
            (
                "281 0xe 0x7fffe5f6c400 0x400 0x7530 0x0 0x8 0x7fffe5f6b6a0 0x7fc54cd26cae",
                Some(Line::In { nr: 281, args: [14, 0x7fffe5f6c400, 0x400, 0x7530, 0, 8] }),
            ),
            ("running\n", Some(Line::Running)),
            // stopped outside a syscall; a zombie
            ("-1 0x7f8c8015bb30 0x7f8c80afcc77\n", Some(Line::Outside)),
            ("-1 0x0 0x0\n", Some(Line::Outside)),
            ("", None),
            ("288 0x3\n", None),
            ("288 3 4 5 6 7 8 9 10\n", None),
        ];
        for (text, line) in cases {
            assert_eq!(parse_line(text), line, "{text:?}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_waits() {
        let wait_of = |text: &str| wait(parse_line(text).unwrap());
        // python accept(); socket.accept with a timeout would be poll.
        assert_eq!(
            wait_of("288 0x3 0x7fffafc74440 0x7fffafc74434 0x80000 0x0 0x0 0x7ff 0x7f9"),
            Some(Wait::Accept { fd: 3 })
        );
        assert_eq!(wait_of("43 0x5 0x0 0x0 0x0 0x0 0x0 0x1 0x2"), Some(Wait::Accept { fd: 5 }));
        // selectors.PollSelector: poll(fds, 1, -1)
        assert_eq!(
            wait_of("7 0x7fe54d46c750 0x1 0xffffffff 0x1 0x0 0x0 0x7fff80889798 0x7fe54d71a230"),
            Some(Wait::Poll { at: 0x7fe54d46c750, nfds: 1 })
        );
        // select.select([s], [], []): glibc 2.36 issues pselect6
        assert_eq!(
            wait_of("270 0x4 0x7ffcef71fb70 0x0 0x0 0x0 0x0 0x7ffcef71fa90 0x7fdd73d1c954"),
            Some(Wait::Select { nfds: 4, readfds: 0x7ffcef71fb70 })
        );
        // recvfrom(3, …) and recvmsg(3, …) on a UDP socket
        assert_eq!(
            wait_of("45 0x3 0x7ff14b479d90 0x64 0x0 0x7ffc0b9aebe0 0x7ffc0b9aebd4 0x7ffc 0x7ff1"),
            Some(Wait::Recv { fd: 3 })
        );
        assert_eq!(
            wait_of("47 0x3 0x7ffe45f25d50 0x0 0x7f871b7eaba8 0x0 0x0 0x7ffe45f25cf0 0x7f87"),
            Some(Wait::Recv { fd: 3 })
        );
        // not waiting for a connection: time.sleep (clock_nanosleep), futex, epoll_wait
        for text in [
            "230 0x1 0x1 0x7ffd0c1f6fe0 0x0 0x0 0x0 0x7ffd0c1f6fc8 0x7f4fb48ed503",
            "202 0xfbcb920 0x189 0x0 0x0 0x0 0xffffffff 0x7fc547ffec70 0x7fc54cca3f16",
            "232 0x4 0x7f4eaa1a4750 0x1 0xffffffff 0x0 0x0 0x7ffc329f5178 0x7f4eaa326ef3",
        ] {
            assert_eq!(wait_of(text), None, "{text}");
        }
        assert_eq!(wait(Line::Running), None);
        assert_eq!(wait(Line::Outside), None);
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_waits() {
        let line = |nr, a0, a1| Line::In { nr, args: [a0, a1, 0, 0, 0, 0] };
        assert_eq!(wait(line(242, 3, 0)), Some(Wait::Accept { fd: 3 }));
        assert_eq!(wait(line(73, 0x1000, 2)), Some(Wait::Poll { at: 0x1000, nfds: 2 }));
        assert_eq!(wait(line(72, 6, 0x2000)), Some(Wait::Select { nfds: 6, readfds: 0x2000 }));
        assert_eq!(wait(line(207, 3, 0)), Some(Wait::Recv { fd: 3 }));
        assert_eq!(wait(line(22, 3, 0)), None, "epoll_pwait");
    }

    #[test]
    fn poll_sets() {
        let pollfd = |fd: i32, events: i16| {
            let mut p = fd.to_ne_bytes().to_vec();
            p.extend(events.to_ne_bytes());
            p.extend(0i16.to_ne_bytes());
            p
        };
        // http.server's pollfd, (3, POLLIN); a pipe polled for output; an fd the app masked out.
        let bytes = [pollfd(3, 1), pollfd(5, 4), pollfd(-7, 1), pollfd(9, 0x40)].concat();
        assert_eq!(pollfds_for_input(&bytes), [3, 9]);
        assert_eq!(pollfds_for_input(&bytes[..7]), Vec::<i32>::new(), "a short read holds nothing");
    }

    #[test]
    fn select_sets() {
        // gunicorn sync worker: select(6, {3, 5}, …)
        let mut bytes = ((1u64 << 3) | (1 << 5)).to_ne_bytes().to_vec();
        assert_eq!(fd_set_members(&bytes, 6), [3, 5]);
        assert_eq!(fd_set_members(&bytes, 4), [3], "bits at nfds and above are not looked at");
        bytes.extend((1u64 << 2).to_ne_bytes());
        assert_eq!(fd_set_members(&bytes, 128), [3, 5, 66]);
    }

    #[test]
    fn reads_own_memory() {
        let data: Vec<u8> = (0..=255).collect();
        let me = std::process::id();
        let at = data.as_ptr() as u64;
        assert_eq!(vm_read(me, at, data.len()).unwrap(), data);
        assert_eq!(proc_mem_read(me, me, at, data.len()).unwrap(), data);
        assert_eq!(read_memory(me, me, at + 16, 4).unwrap(), [16, 17, 18, 19]);
        assert!(vm_read(me, 8, 8).is_err(), "page 0 is not mapped");
        assert!(read_memory(me, me, 8, 8).is_err(), "nor through /proc/PID/mem");
    }
}
