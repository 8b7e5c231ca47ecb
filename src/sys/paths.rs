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
pub fn notify_dir(name: &str, pid: u32) -> PathBuf {
    runtime_dir().join(format!("{name}.{pid}.notify"))
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
pub fn claim_socket(name: &str, pid: u32) -> String {
    format!("hotswap/{name}.{pid}.claim")
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
            // NAME.PID.notify
            let pid = rest.rsplit('.').next().and_then(|p| p.parse::<i32>().ok());
            pid.is_some_and(|pid| !alive(pid)) && std::fs::remove_dir_all(&path).is_ok()
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

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
