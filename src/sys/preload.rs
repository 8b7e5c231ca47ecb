//! The preload library (`preload/`, DESIGN.md §7): embedded in the binary at
//! build time, written at start to a file every child can read, and named
//! in each child's `LD_PRELOAD`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The library, built by `build.rs` from `preload/hotswap_preload.c`.
const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libhotswap_preload.so"));

/// The file name: versions of hotswap that embed different libraries use
/// different files, so a running hotswap's file is never rewritten under it.
fn file_name() -> String {
    // FNV-1a: enough to tell versions apart, no dependency for it.
    let hash = LIBRARY
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("hotswap-preload-{hash:016x}.so")
}

/// Writes the library into `dir` (created 0755; the file 0644, so that a
/// child of any user can map it) unless an identical file is there, and
/// returns its path. A directory on a `noexec` mount is refused: the loader
/// could not map the library from it.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let flags = nix::sys::statvfs::statvfs(dir)?.flags();
    if flags.contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) {
        return Err(io::Error::other(format!("{} is on a noexec mount", dir.display())));
    }
    let path = dir.join(file_name());
    if std::fs::read(&path).is_ok_and(|existing| existing == LIBRARY) {
        return Ok(path);
    }
    // Written aside and renamed: a loader never maps a half-written file.
    let tmp = dir.join(format!(".{}.{}", file_name(), std::process::id()));
    std::fs::write(&tmp, LIBRARY)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// `LD_PRELOAD` for a child: what was there already, then the library
/// (entries are separated by ':' or spaces; ld.so accepts both).
pub fn ld_preload(existing: Option<&OsStr>, library: &Path) -> OsString {
    let mut value = match existing {
        Some(v) if !v.as_bytes().iter().all(|b| b.is_ascii_whitespace() || *b == b':') => {
            let mut v = v.as_bytes().to_vec();
            v.push(b':');
            v
        }
        _ => Vec::new(),
    };
    value.extend_from_slice(library.as_os_str().as_bytes());
    OsString::from_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_preload_appends_after_what_is_there() {
        let lib = Path::new("/run/hotswap/lib/h.so");
        assert_eq!(ld_preload(None, lib), "/run/hotswap/lib/h.so");
        assert_eq!(ld_preload(Some(OsStr::new("")), lib), "/run/hotswap/lib/h.so");
        assert_eq!(
            ld_preload(Some(OsStr::new("/usr/lib/libjemalloc.so")), lib),
            "/usr/lib/libjemalloc.so:/run/hotswap/lib/h.so"
        );
    }

    #[test]
    fn install_writes_a_readable_library_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = install(&dir.path().join("lib")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), LIBRARY);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(LIBRARY.starts_with(b"\x7fELF"), "an ELF shared object is embedded");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(install(&dir.path().join("lib")).unwrap(), path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified,
            "not rewritten"
        );
    }
}
