//! hotswap re-executing itself (USR2, DESIGN.md §2): the same pid runs a new
//! binary, which inherits the fds it is told about and the state the old
//! one wrote to a memfd, and resumes.
//!
//! `HOTSWAP_RESUME=STATE[,PREVIOUS]` names the state's memfd and, while the
//! new binary may still refuse the state, an fd of the previous binary:
//! then it runs that again with the same arguments and state, so a new
//! binary that cannot resume leaves the old one running rather than nothing.
//! The memfd holds the number of arguments, the arguments, each ended by a
//! NUL, then the state.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::{process, raw};

/// The variable that tells a starting hotswap to resume.
const VAR: &str = "HOTSWAP_RESUME";

/// Executes `exe` in this process with hotswap's own arguments and
/// environment, `state` in a memfd, and `keep` (with the state) left open
/// across the exec. The handled signals stay blocked across it, so one that
/// arrives meanwhile waits for the new binary's handlers.
///
/// Returns only if the exec failed, with everything as it was before.
pub fn reexec(exe: &Path, state: &[u8], keep: &[RawFd]) -> io::Error {
    let args: Vec<OsString> = std::env::args_os().collect();
    let memfd = match write_state(&args, state) {
        Ok(fd) => fd,
        Err(e) => return io::Error::new(e.kind(), format!("writing the state: {e}")),
    };
    // The running binary, even once its file was replaced or removed.
    let previous =
        nix::fcntl::open("/proc/self/exe", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
            .map_err(io::Error::from);
    let mut value = memfd.as_raw_fd().to_string();
    if let Ok(previous) = &previous {
        value += &format!(",{}", previous.as_raw_fd());
    }
    let inherited: Vec<RawFd> = keep.iter().copied().chain([memfd.as_raw_fd()]).collect();
    let e = exec_keeping(exe, &args, &value, &inherited);
    drop(previous);
    e
}

/// The state a USR2 left, if this hotswap was started by one.
pub struct Resume {
    /// What the previous process exported.
    pub state: Vec<u8>,
    /// The arguments the previous process ran with.
    args: Vec<OsString>,
    memfd: OwnedFd,
    previous: Option<OwnedFd>,
}

/// Reads the state named by `HOTSWAP_RESUME`; `None` for a plain start.
pub fn take() -> Option<io::Result<Resume>> {
    let value = std::env::var(VAR).ok()?;
    Some(read_resume(&value))
}

fn read_resume(value: &str) -> io::Result<Resume> {
    let bad = || io::Error::other(format!("{VAR}={value:?} names no fds"));
    let mut fds = value.split(',').map(|n| n.parse::<RawFd>().map_err(|_| bad()));
    let memfd = raw::adopt_fd(fds.next().ok_or_else(bad)??)?;
    let previous = fds.next().transpose()?.map(raw::adopt_fd).transpose()?;
    let mut file = File::from(memfd.try_clone()?);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut fields = bytes.splitn(2, |&b| b == 0);
    let count = fields.next().and_then(|c| std::str::from_utf8(c).ok()?.parse::<usize>().ok());
    let (Some(count), Some(mut rest)) = (count, fields.next()) else {
        return Err(io::Error::other("the state has no argument count"));
    };
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0);
        let end = end.ok_or_else(|| io::Error::other("the state's arguments are cut short"))?;
        args.push(OsStr::from_bytes(&rest[..end]).to_os_string());
        rest = &rest[end + 1..];
    }
    Ok(Resume { state: rest.to_vec(), args, memfd, previous })
}

impl Resume {
    /// This binary cannot resume the state: runs the previous one again on
    /// it (once; that one has no previous). Returns only on failure.
    pub fn fall_back(self) -> io::Error {
        let Some(previous) = self.previous else {
            return io::Error::other("no previous binary to fall back to");
        };
        let value = self.memfd.as_raw_fd().to_string();
        let inherited = [self.memfd.as_raw_fd(), previous.as_raw_fd()];
        let exe = format!("/proc/self/fd/{}", previous.as_raw_fd());
        exec_keeping(Path::new(&exe), &self.args, &value, &inherited)
    }
}

fn write_state(args: &[OsString], state: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(c"hotswap-state", MFdFlags::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    write!(file, "{}\0", args.len())?;
    for arg in args {
        file.write_all(arg.as_bytes())?;
        file.write_all(b"\0")?;
    }
    file.write_all(state)?;
    Ok(file.into())
}

/// execve of `exe` with `args`, hotswap's environment plus
/// `HOTSWAP_RESUME=value`, and `inherited` open across it.
fn exec_keeping(exe: &Path, args: &[OsString], value: &str, inherited: &[RawFd]) -> io::Error {
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(io::Error::other);
    let built = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = cstring(exe.as_os_str().as_bytes())?;
        let argv = args.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_, _>>()?;
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != VAR)
            .map(|(k, v)| cstring(&pair(&k, &v)))
            .collect::<Result<_, _>>()?;
        envp.push(cstring(&pair(OsStr::new(VAR), &OsString::from(value)))?);
        Ok((path, argv, envp))
    })();
    let (path, argv, envp) = match built {
        Ok(built) => built,
        Err(e) => return e,
    };
    for &fd in inherited {
        if let Err(e) = raw::set_inherited(fd, true) {
            restore(inherited);
            return e;
        }
    }
    if let Err(e) = process::block_handled_signals() {
        restore(inherited);
        return e;
    }
    let Err(errno) = nix::unistd::execve(&path, &argv, &envp);
    let _ = process::unblock_all_signals();
    restore(inherited);
    io::Error::from(errno)
}

fn restore(inherited: &[RawFd]) {
    for &fd in inherited {
        let _ = raw::set_inherited(fd, false);
    }
}

fn pair(key: &OsStr, value: &OsStr) -> Vec<u8> {
    let mut bytes = key.as_bytes().to_vec();
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

/// A listening unix socket (the control or claim socket) the previous
/// process handed over at `fd`.
///
/// # Errors
/// `fd` is not open.
pub fn take_back_listener(fd: RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    raw::adopt_fd(fd).map(std::os::unix::net::UnixListener::from)
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    #[test]
    fn the_arguments_and_state_cross_in_the_memfd_empty_arguments_too() {
        let args: Vec<OsString> = ["hotswap", "--", "app", "", "a\nb"].map(OsString::from).to_vec();
        let memfd = write_state(&args, b"{\"format\":1}").unwrap();
        let resume = read_resume(&memfd.into_raw_fd().to_string()).unwrap();
        assert_eq!(resume.args, args);
        assert_eq!(resume.state, b"{\"format\":1}");
        assert!(resume.previous.is_none());
        assert!(read_resume("x").is_err());
    }
}
