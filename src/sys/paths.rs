//! Where hotswap keeps its runtime files: control sockets and the children's
//! notify sockets.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory for control sockets and notify directories:
/// `$XDG_RUNTIME_DIR/hotswap`, `/run/hotswap` as root, else `/tmp/hotswap-UID`.
pub fn runtime_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("hotswap"),
        _ if uid.is_root() => PathBuf::from("/run/hotswap"),
        _ => PathBuf::from(format!("/tmp/hotswap-{uid}")),
    }
}

/// The default control socket of service `name`.
pub fn control_socket(name: &str) -> PathBuf {
    runtime_dir().join(format!("{name}.sock"))
}

/// The directory of one hotswap's notify sockets (one per child).
pub fn notify_dir(name: &str) -> PathBuf {
    runtime_dir().join(format!("{name}.{}.notify", own_tag()))
}

/// `PROC_PID_INIT_INO`: the inode of the initial pid namespace (a kernel constant).
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

fn pid_namespace(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok().map(|m| m.ino())
}

/// What names this hotswap process in file and cgroup names: its pid, or,
/// in a pid namespace other than the initial one, `<namespace inode>-<pid>`.
/// A pid alone is ambiguous where pid namespaces share a runtime directory
/// or a cgroup tree (`unshare --pid` on a host): two hotswaps can both be
/// pid 2, and a live hotswap in another namespace looks dead from here.
pub fn own_tag() -> String {
    let pid = std::process::id();
    match pid_namespace("self") {
        Some(ns) if ns != INITIAL_PID_NS => format!("{ns}-{pid}"),
        _ => pid.to_string(),
    }
}

/// Whether the hotswap a tag (from [`own_tag`]) names is gone. Only a
/// process of this pid namespace can be checked: any other counts as alive.
pub fn tag_is_gone(tag: &str) -> bool {
    let (ns, pid) = match tag.split_once('-') {
        Some((ns, pid)) => (ns.parse::<u64>().ok(), pid),
        None => (Some(INITIAL_PID_NS), tag),
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    let ours = pid_namespace("self").unwrap_or(INITIAL_PID_NS);
    ns == Some(ours) && !alive(pid)
}

/// Creates the runtime directory, mode 0711: other users (a child run with
/// `--user`) may pass through it to the preload library, but not list it;
/// what is private inside has its own mode (control socket 0600, notify
/// directories 0700).
pub fn prepare_runtime_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = runtime_dir();
    std::fs::create_dir_all(&dir)?;
    if std::fs::metadata(&dir)?.uid() == nix::unistd::geteuid().as_raw() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(dir)
}

/// Where the preload library is written (0755, so a child of any user can
/// map it from there).
pub fn preload_dir() -> PathBuf {
    runtime_dir().join("lib")
}

/// The abstract name of one hotswap's claim socket (no file: no path length
/// limit, no directory permissions to get wrong).
pub fn claim_socket(name: &str) -> String {
    format!("hotswap/{name}.{}.claim", own_tag())
}

/// The longest path a unix socket can be bound at (`sun_path` holds 108
/// bytes with the terminating NUL; unix(7)).
pub const SUN_PATH_MAX: usize = 107;

/// Whether a socket named by up to `name_len` bytes fits in `dir`.
pub fn socket_fits(dir: &Path, name_len: usize) -> bool {
    dir.as_os_str().len() + 1 + name_len <= SUN_PATH_MAX
}

/// A fresh private directory with a short path, for sockets that would not
/// fit under a deep runtime directory: `/tmp/hotswap-XXXXXX`, mode 0700,
/// created atomically with a random name (no one can have prepared it).
pub fn short_private_dir() -> io::Result<PathBuf> {
    Ok(nix::unistd::mkdtemp("/tmp/hotswap-XXXXXX")?)
}

/// Removes what hotswaps that died without cleaning up (SIGKILL, a crash)
/// left in `dir`: control sockets nobody accepts on, and notify directories
/// whose hotswap pid is gone. Returns what it removed.
pub fn clean_stale(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        let stale = if let Some(rest) = file.strip_suffix(".notify") {
            // NAME.TAG.notify
            let tag = rest.rsplit('.').next().unwrap_or_default();
            tag_is_gone(tag) && std::fs::remove_dir_all(&path).is_ok()
        } else if file.ends_with(".sock") {
            super::sockets::remove_stale_socket(&path).is_ok() && !path.exists()
        } else {
            false
        };
        if stale {
            removed.push(path);
        }
    }
    removed
}

fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Whether a process of `uid` with groups `gids` may pass through every
/// directory on the way to `path` (and `path` itself): the execute bit
/// that applies to it, owner, group or other, as the kernel checks it.
pub fn reachable_by(path: &Path, uid: u32, gids: &[u32]) -> bool {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return true;
    }
    path.ancestors().all(|dir| {
        let Ok(meta) = std::fs::metadata(dir) else { return false };
        let bit = if meta.uid() == uid {
            0o100
        } else if gids.contains(&meta.gid()) {
            0o010
        } else {
            0o001
        };
        meta.mode() & bit != 0
    })
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
