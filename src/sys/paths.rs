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

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
