//! Keeps ARCHITECTURE.md's invariants checkable (in the spirit of
//! rust-analyzer's `tidy.rs`): the core reads no clock and does no I/O,
//! `unsafe` lives only in `sys::raw`, every unsafe block says why it is
//! sound, and `sys` knows nothing of the core.

use std::path::{Path, PathBuf};

/// Names that mean a clock, I/O or an OS crate: none may appear in `core`.
const NOT_IN_CORE: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::os",
    "std::io",
    "std::env",
    "tokio",
    "nix::",
    "libc",
    "socket2",
    "crate::sys",
    "crate::driver",
];

/// The one module allowed `unsafe`.
const UNSAFE_HOME: &str = "src/sys/raw.rs";

/// What `unsafe` code looks like (`deny(unsafe_code)` at the crate root is fine).
const UNSAFE: &[&str] =
    &["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern", "allow(unsafe_code)"];

fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `text` that are code: comments dropped (`//` to the end of
/// the line; there are no block comments in this crate).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, line)| {
        let code = match line.find("//") {
            // Not inside a string literal such as "http://…": good enough here.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        (i + 1, code)
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// `(file:line, offending text)` for every code line in `files` that names one of `names`.
fn violations(files: &[PathBuf], names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, code) in code_lines(&text) {
            for name in names {
                if code.contains(name) {
                    found.push(format!("{}:{line}: {name}", relative(file)));
                }
            }
        }
    }
    found
}

#[test]
fn core_reads_no_clock_and_does_no_io() {
    // The unit tests take one `Instant::now()` as the origin of their virtual clock.
    let files: Vec<PathBuf> = source_files(&root().join("src/core"))
        .into_iter()
        .filter(|f| !f.ends_with("tests.rs"))
        .collect();
    let found = violations(&files, NOT_IN_CORE);
    assert!(
        found.is_empty(),
        "core must stay pure (ARCHITECTURE.md, invariant 1):\n{}",
        found.join("\n")
    );
}

#[test]
fn sys_knows_nothing_of_the_core() {
    let found =
        violations(&source_files(&root().join("src/sys")), &["crate::core", "crate::driver"]);
    assert!(found.is_empty(), "sys reports in its own types:\n{}", found.join("\n"));
}

#[test]
fn unsafe_lives_in_one_module() {
    let files: Vec<PathBuf> = source_files(&root().join("src"))
        .into_iter()
        .filter(|f| relative(f) != UNSAFE_HOME && !f.ends_with("tidy.rs"))
        .collect();
    let found = violations(&files, UNSAFE);
    assert!(found.is_empty(), "unsafe belongs in {UNSAFE_HOME}:\n{}", found.join("\n"));
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let text = std::fs::read_to_string(root().join(UNSAFE_HOME)).expect("read raw.rs");
    let lines: Vec<&str> = text.lines().collect();
    let mut unexplained = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if !(code.contains("unsafe {") || code.contains("unsafe impl")) {
            continue;
        }
        // The comment block right above it (or a comment on the same line) says why.
        let above = lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("//"));
        let explained =
            line.contains("// SAFETY:") || above.clone().any(|l| l.contains("// SAFETY:"));
        if !explained {
            unexplained.push(format!("{UNSAFE_HOME}:{}: {}", i + 1, line.trim()));
        }
    }
    assert!(unexplained.is_empty(), "unsafe without a SAFETY comment:\n{}", unexplained.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    // A tidy test that finds nothing because it reads nothing proves nothing.
    let core = source_files(&root().join("src/core"));
    assert!(core.iter().any(|f| f.ends_with("supervisor.rs")), "{core:?}");
    let raw = vec![root().join(UNSAFE_HOME)];
    assert!(!violations(&raw, UNSAFE).is_empty(), "raw.rs has unsafe blocks to find");
    let sample = "let t = std::time::Instant::now(); // Instant::now in a comment";
    assert_eq!(code_lines(sample).filter(|(_, c)| c.contains("Instant::now")).count(), 1);
    assert_eq!(
        code_lines("// tokio only in a comment").filter(|(_, c)| c.contains("tokio")).count(),
        0
    );
}
