//! The outside programs tests run, found where `.ci/run deps` installs them; a missing one fails
//! the test with the command that installs it, never skips it.

use std::path::Path;

use crate::support::path_str;

/// `$CARGO_MANIFEST_DIR/relative`, which must exist.
pub fn repo(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    assert!(path.exists(), "{} is missing", path.display());
    path_str(&path)
}

/// A program on PATH (`package`: the Debian package that has it).
pub fn tool(name: &str, package: &str) -> String {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()));
    let path = found.unwrap_or_else(|| {
        panic!("{name} is not on PATH: run `.ci/run deps` (or apt-get install {package})")
    });
    path_str(&path)
}

/// `.venv/bin/NAME` in the repository: gunicorn, uvicorn.
pub fn venv_tool(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `.ci/run deps`, which makes the venv (python3 -m venv .venv, then \
         .venv/bin/pip install the gunicorn and uvicorn versions it pins)",
        path.display()
    );
    path_str(&path)
}
