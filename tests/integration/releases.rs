//! Releases (issue 12, DESIGN.md §1): `--chdir` through a `current` symlink and the program
//! resolved anew for every generation, `--env-file` read anew, a malformed env file failing the
//! reload it would start, and `hotswap rollback` running the previous serving generation's
//! release again, all under load without a failed request.

use std::path::{Path, PathBuf};
use std::process::Command;

use hotswap::protocol::control::GenerationState;

use crate::support::service::*;
use crate::support::{Launch, path_str};

/// `releases/NAME/` with `run.sh` (execs the example server) and `app.env`.
fn release(root: &Path, name: &str, env: &str) -> PathBuf {
    let dir = root.join("releases").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("#!/bin/sh\nexec {} \"$@\"\n", server());
    std::fs::write(dir.join("run.sh"), script).unwrap();
    std::fs::set_permissions(
        dir.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(dir.join("app.env"), env).unwrap();
    dir
}

/// `ln -sfn TARGET LINK`, as deploy scripts do it.
fn ln_sfn(target: &Path, link: &Path) {
    let status = Command::new("ln").arg("-sfn").arg(target).arg(link).status().unwrap();
    assert!(status.success());
}

#[test]
fn releases_follow_the_current_symlink_env_files_reload_and_rollback_goes_back() {
    let root = tempfile::tempdir().unwrap();
    let one = release(root.path(), "one", "# the first release\nVERSION=one\n");
    let two = release(root.path(), "two", "VERSION='two'\n");
    let current = root.path().join("current");
    ln_sfn(&one, &current);
    let env_file = current.join("app.env");
    let chdir = path_str(&current);
    let env_arg = path_str(&env_file);
    let svc = Service::start(&["--chdir", &chdir, "--env-file", &env_arg], &["./run.sh"], &[]);
    let load = svc.load();
    let mut ok = wait_for_ok(&load, 0, 50);
    assert_eq!(svc.version(), "one");

    // The env file is read anew for the next generation.
    std::fs::write(one.join("app.env"), "VERSION=\"one-b\"\n").unwrap();
    svc.hup_and_wait(2, 1);
    assert_eq!(svc.version(), "one-b");
    ok = wait_for_ok(&load, ok, 50);

    // A malformed line fails the reload that would read it, naming the line; gen 2 serves on.
    std::fs::write(one.join("app.env"), "VERSION=one-x\nnot a pair\n").unwrap();
    let out = svc.cli(&["reload", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("app.env: line 2:"), "names the line: {stderr}");
    assert_eq!(svc.version(), "one-b");
    std::fs::write(one.join("app.env"), "VERSION=one-b\n").unwrap();
    ok = wait_for_ok(&load, ok, 50);

    // The symlink swapped to the second release, then HUP: the second release answers.
    ln_sfn(&two, &current);
    svc.hup_and_wait(4, 2);
    assert_eq!(svc.version(), "two");
    let status = svc.status();
    let serving = status.generations.iter().find(|g| g.state == GenerationState::Serving);
    let serving = serving.unwrap_or_else(|| panic!("{status:#?}"));
    assert_eq!(serving.release.as_deref(), Some(path_str(&two.canonicalize().unwrap()).as_str()));
    ok = wait_for_ok(&load, ok, 50);

    // The bad release is backed out without touching the symlink: gen 5 runs what gen 2 ran,
    // its directory and its env file as it was then, whatever the file says now.
    std::fs::write(one.join("app.env"), "VERSION=one-c\n").unwrap();
    let out = svc.cli(&["rollback", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rollback: gen 5 runs the release of gen 2"), "{stdout}");
    assert!(stdout.contains("gen 5 took over"), "{stdout}");
    assert_eq!(svc.version(), "one-b");
    let status = svc.status();
    let serving = status.generations.iter().find(|g| g.id == 5).expect("gen 5 in status");
    assert_eq!(serving.release_of, Some(2), "{status:#?}");
    assert_eq!(serving.release.as_deref(), Some(path_str(&one.canonicalize().unwrap()).as_str()));
    let program = serving.program.as_deref().unwrap_or_default();
    assert!(program.ends_with("releases/one/run.sh"), "{program}");

    wait_for_ok(&load, ok, 50);
    let report = load.stop_and_finish();
    assert_no_failures(&report, "symlink swaps, env file changes, a failed reload, a rollback");
}

/// A malformed env file at start: one line naming the file and the line, exit 2, nothing
/// left running.
#[test]
fn a_malformed_env_file_at_start_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("app.env");
    std::fs::write(&env, "A=1\n\n1BAD=2\n").unwrap();
    let env = path_str(&env);
    let out = Launch::hotswap(&["--env-file", &env, "--", &server()]).run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("--env-file {env}: line 3: ")), "{stderr}");
}
