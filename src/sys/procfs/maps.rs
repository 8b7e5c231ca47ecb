//! What a process has mapped: `/proc/PID/maps`.

use std::fs;
use std::path::Path;

use crate::sys::process::Pid;

/// Whether `library` is mapped into process `pid` (the dynamic loader
/// preloaded it). The path is compared as given and as resolved: maps show
/// the file's real path. None when the maps cannot be read (gone, another
/// uid, non-dumpable).
pub fn preload_loaded(pid: Pid, library: &Path) -> Option<bool> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let resolved = fs::canonicalize(library).ok();
    let names = [Some(library), resolved.as_deref()];
    Some(mapped_paths(&maps).any(|mapped| names.contains(&Some(Path::new(mapped)))))
}

/// The file paths of the mappings: `start-end perms offset dev inode   path`;
/// the path is the rest of the line and may hold spaces; a file deleted
/// or replaced since reads `path (deleted)`.
fn mapped_paths(maps: &str) -> impl Iterator<Item = &str> {
    maps.lines().filter_map(|line| {
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            rest = &rest[rest.find(' ')?..];
        }
        let path = rest.trim_start();
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        path.starts_with('/').then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_paths_as_seen() {
        let maps = "\
7fafc121e000-7fafc1244000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fafc1244000-7fafc139a000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000000000-7f0000001000 r-xp 00000000 fe:00 99                         /run/user/0/hotswap/shim v2.so (deleted)
7fff328fd000-7fff3291e000 rw-p 00000000 00:00 0                          [stack]
7fff328fe000-7fff3291f000 rw-p 00000000 00:00 0
";
        let paths: Vec<&str> = mapped_paths(maps).collect();
        assert_eq!(
            paths,
            [
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/run/user/0/hotswap/shim v2.so"
            ]
        );
    }

    #[test]
    fn this_process_has_libc_and_no_shim() {
        let me = std::process::id();
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let libc = mapped_paths(&maps).find(|p| p.contains("/libc.so")).expect("libc is mapped");
        assert_eq!(preload_loaded(me, Path::new(libc)), Some(true));
        assert_eq!(preload_loaded(me, Path::new("/nonexistent/shim.so")), Some(false));
        // Through a symlink (/lib -> usr/lib on a merged-/usr system): maps name the real path.
        if let Some(linked) = libc.strip_prefix("/usr").map(Path::new) {
            if fs::canonicalize(linked).is_ok_and(|real| real == Path::new(libc)) {
                assert_eq!(preload_loaded(me, linked), Some(true), "{linked:?}");
            }
        }
        assert_eq!(preload_loaded(u32::MAX, Path::new(libc)), None);
    }
}
