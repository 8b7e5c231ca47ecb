//! `--watch PATH`: a change under PATH asks for a reload (the driver
//! debounces). The `notify` crate does the watching (inotify on Linux), on a
//! thread of its own; this module reports which path changed.

use std::io;
use std::path::{Component, Path, PathBuf};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// Directories whose changes never ask for a reload: version control, build
/// output, dependencies (a `cargo build` or `npm install` would otherwise
/// reload for every file it writes).
const IGNORED: [&str; 3] = [".git", "target", "node_modules"];

/// Watches `paths` (recursively) until dropped; every relevant change is
/// sent as the path that changed.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

/// Starts watching. Fails (naming the path) if a path cannot be watched.
pub fn watch(paths: &[PathBuf], changes: UnboundedSender<PathBuf>) -> io::Result<Watch> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let Ok(event) = event else { return };
        if !matters(&event.kind) {
            return;
        }
        for path in event.paths.into_iter().filter(|p| !ignored(p)) {
            let _ = changes.send(path);
        }
    })
    .map_err(io::Error::other)?;
    for path in paths {
        watcher
            .watch(path, RecursiveMode::Recursive)
            .map_err(|e| io::Error::other(format!("--watch {}: {e}", path.display())))?;
    }
    Ok(Watch { _watcher: watcher })
}

/// Changes to content or names; not reads or metadata-only access.
fn matters(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))
        && !matches!(kind, EventKind::Modify(notify::event::ModifyKind::Metadata(_)))
}

/// Whether `path` lies under a directory whose changes are ignored.
fn ignored(path: &Path) -> bool {
    path.components().any(|c| match c {
        Component::Normal(name) => IGNORED.iter().any(|i| name == *i),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_control_build_output_and_dependencies_are_ignored() {
        assert!(ignored(Path::new("/srv/app/.git/index")));
        assert!(ignored(Path::new("/srv/app/target/debug/app")));
        assert!(ignored(Path::new("/srv/app/node_modules/x/index.js")));
        assert!(!ignored(Path::new("/srv/app/src/main.rs")));
        assert!(!ignored(Path::new("/srv/app/targets.txt")), "a name, not a prefix");
    }
}
