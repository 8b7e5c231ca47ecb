//! Deploys (issue 12): `examples/deploy/deploy.sh` and `rollback.sh` run as docs/deploy.md shows
//! them, against a real hotswap under load (a good release, one that fails readiness and is put
//! back, one that passes readiness but is bad and is rolled back), release folders named apart
//! and pruned; and the Ansible playbook of docs/fleet.md rolling releases over two hotswap
//! services host by host, stopping at the first host whose new generation fails readiness.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hotswap::protocol::control::{GenerationState, LastReloadResult, Status};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::service::*;
use crate::support::{Launch, hotswap_bin, http_get, path_str, poll_until, run_hotswap};

/// How long one run of a deploy script may take (a reload of the example server takes well
/// under a second).
const SCRIPT_BOUND: Duration = Duration::from_secs(60);

/// How long one `ansible-playbook` run may take (about 3 to 6 s here on a loaded machine).
const ANSIBLE_BOUND: Duration = Duration::from_secs(180);

/// The pip requirement CI installs into `.venv` (and the message names when it is missing).
const ANSIBLE_REQUIREMENT: &str = "ansible-core==2.19.14";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `examples/deploy/REL`.
fn example(rel: &str) -> String {
    let path = repo().join("examples/deploy").join(rel);
    assert!(path.exists(), "{} is missing", path.display());
    path_str(&path)
}

/// A build output `DIR/NAME/` as a deploy gets it: `run.sh` execs the example server and `.env`
/// sets `VERSION=NAME`, then the `extra` lines.
fn build(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("run.sh"), format!("#!/bin/sh\nexec {} \"$@\"\n", server())).unwrap();
    std::fs::set_permissions(
        out.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(out.join(".env"), format!("VERSION={name}\n{extra}")).unwrap();
    out
}

/// Runs `program args` from the repository's root as an operator's shell would, with `env` and
/// none of the test's own HOTSWAP_*, ANSIBLE_*, LISTEN_* or NOTIFY_SOCKET variables; prints its
/// output; SIGKILLs its process group and panics after `bound`.
fn run(program: &str, args: &[&str], env: &[(&str, &str)], bound: Duration) -> Output {
    let shown = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if ["HOTSWAP", "ANSIBLE_", "LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_USEC"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    let mut child = std::os::unix::process::CommandExt::process_group(
        cmd.args(args).envs(env.iter().copied()).current_dir(repo()),
        0,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let began = Instant::now();
    let status = poll_until(began + bound, || child.try_wait().expect("try_wait"));
    if status.is_none() {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    }
    let waited = child.wait().expect("wait");
    let out =
        Output { status: waited, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        eprintln!("[{}] {line}", program.rsplit('/').next().unwrap_or(program));
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        eprintln!("[{} stderr] {line}", program.rsplit('/').next().unwrap_or(program));
    }
    eprintln!("`{shown}`: {} after {:?}", out.status, began.elapsed());
    assert!(status.is_some(), "`{shown}` still running after {bound:?}; killed");
    out
}

/// `deploy.sh --root ROOT --name NAME [EXTRA…] SOURCE`, as docs/deploy.md shows it.
fn deploy(env: &[(&str, &str)], root: &Path, name: &str, extra: &[&str], source: &Path) -> Output {
    let (root, source) = (path_str(root), path_str(source));
    let mut args = vec!["--root", &root, "--name", name];
    args.extend_from_slice(extra);
    args.push(&source);
    run(&example("deploy.sh"), &args, env, SCRIPT_BOUND)
}

/// `rollback.sh --root ROOT --name NAME`, as docs/deploy.md shows it.
fn rollback(env: &[(&str, &str)], root: &Path, name: &str) -> Output {
    let root = path_str(root);
    run(&example("rollback.sh"), &["--root", &root, "--name", name], env, SCRIPT_BOUND)
}

/// Asserts exit status 0 and returns stdout.
fn succeeded(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where `ROOT/LINK` points (`releases/…`).
fn link(root: &Path, name: &str) -> String {
    let target = std::fs::read_link(root.join(name))
        .unwrap_or_else(|e| panic!("read_link {}: {e}", root.join(name).display()));
    path_str(&target)
}

/// The names in `ROOT/releases`, sorted.
fn releases(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The one name in `after` that is not in `before`.
fn added(before: &[String], after: &[String]) -> String {
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 1, "not one new release: before {before:?}, after {after:?}");
    new[0].clone()
}

/// hotswap started as docs/deploy.md shows it (`--name NAME --chdir ROOT/current --env-file
/// ROOT/current/.env -l 127.0.0.1:0 -- ./run.sh`), its control socket found by name under
/// `runtime`; waits until generation 1 is ready.
fn start_hotswap(runtime: &Path, root: &Path, name: &str) -> Service {
    let current = root.join("current");
    let (chdir, env_file) = (path_str(&current), path_str(&current.join(".env")));
    let args = ["--name", name, "--chdir", &chdir, "--env-file", &env_file];
    let hs = Launch::hotswap(&[&args[..], &["-l", "127.0.0.1:0", "--", "./run.sh"]].concat())
        .env(&[("XDG_RUNTIME_DIR", &path_str(runtime))])
        .start();
    let line = hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed"], WAIT);
    assert!(line.contains("gen 1 ready after "), "generation 1 did not become ready: {line}");
    let ctl = path_str(&runtime.join("hotswap").join(format!("{name}.sock")));
    let status = parse_status(&run_hotswap(&["status", "--control", &ctl, "--json"], &[]));
    let addr = status.sockets[0].address.parse().unwrap();
    Service { hs, ctl, addr }
}

/// The serving generation's release directory, as `status` reports it.
fn serving_release(status: &Status) -> String {
    let serving = status.generations.iter().find(|g| g.state == GenerationState::Serving);
    let serving = serving.unwrap_or_else(|| panic!("no serving generation: {status:#?}"));
    serving.release.clone().unwrap_or_else(|| panic!("no release: {status:#?}"))
}

/// `ROOT/releases/NAME`, resolved as hotswap reports a release.
fn release_dir(root: &Path, name: &str) -> String {
    path_str(&root.join("releases").join(name).canonicalize().unwrap())
}

#[test]
fn deploy_sh_and_rollback_sh_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, runtime, builds) =
        (tmp.path().join("app"), tmp.path().join("run"), tmp.path().join("build"));
    std::fs::create_dir(&runtime).unwrap();
    let hotswap = path_str(&hotswap_bin());
    let env = [("HOTSWAP", hotswap.as_str()), ("XDG_RUNTIME_DIR", &path_str(&runtime))];

    // hotswap is not running yet: deploy.sh only points `current` at the release, and says
    // how to start hotswap on it.
    let out = deploy(&env, &root, "app", &[], &build(&builds, "one", ""));
    let stdout = succeeded(&out, "the first deploy");
    assert!(stdout.contains("app is not running"), "{stdout}");
    let hint = format!("--name app --chdir {}", path_str(&root.join("current")));
    assert!(stdout.contains(&hint), "says how to start hotswap: {stdout}");
    let one = releases(&root)[0].clone();
    assert_eq!(link(&root, "current"), format!("releases/{one}"));

    let svc = start_hotswap(&runtime, &root, "app");
    let load = svc.load();
    let mut ok = wait_for_ok(&load, 0, 50);
    assert_eq!(svc.version(), "one");

    // A good release: the reload takes over, `previous` remembers the first release.
    let out = deploy(&env, &root, "app", &[], &build(&builds, "two", ""));
    let stdout = succeeded(&out, "deploying a good release");
    assert!(stdout.contains("gen 2 took over"), "{stdout}");
    let two = added(std::slice::from_ref(&one), &releases(&root));
    assert_eq!(svc.version(), "two");
    assert_eq!(link(&root, "current"), format!("releases/{two}"));
    assert_eq!(link(&root, "previous"), format!("releases/{one}"));
    ok = wait_for_ok(&load, ok, 50);

    // A release that fails readiness: hotswap rolls it back by itself, deploy.sh puts
    // `current` back and fails, saying so; the failed release is kept to look at.
    let before = releases(&root);
    let out =
        deploy(&env, &root, "app", &[], &build(&builds, "broken", "SERVER_EXIT_AT_START=3\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "deploying a broken release: {}", describe(&out));
    assert!(stderr.contains("failed readiness"), "{stderr}");
    assert!(stderr.contains(&format!("current -> releases/{two} again")), "{stderr}");
    let broken = added(&before, &releases(&root));
    assert_eq!(link(&root, "current"), format!("releases/{two}"));
    assert_eq!(link(&root, "previous"), format!("releases/{one}"));
    assert_eq!(svc.version(), "two");
    let status = svc.status();
    let last = status.last_reload.as_ref().expect("a last reload");
    assert_eq!(last.result, LastReloadResult::RolledBack, "{status:#?}");
    assert_eq!(serving_release(&status), release_dir(&root, &two));
    ok = wait_for_ok(&load, ok, 50);

    // A release that passes readiness but is bad: deploy.sh succeeds... (Here the service is
    // found through HOTSWAP_CONTROL, as from a root shell whose XDG_RUNTIME_DIR is not
    // hotswap's; see docs/deploy.md.)
    let before = releases(&root);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let by_control = [
        ("HOTSWAP", hotswap.as_str()),
        ("XDG_RUNTIME_DIR", &path_str(&elsewhere)),
        ("HOTSWAP_CONTROL", &svc.ctl),
    ];
    let out = deploy(&by_control, &root, "app", &[], &build(&builds, "bad", ""));
    succeeded(&out, "deploying a bad release that passes readiness");
    let bad = added(&before, &releases(&root));
    assert_eq!(svc.version(), "bad");
    assert_eq!(link(&root, "current"), format!("releases/{bad}"));
    ok = wait_for_ok(&load, ok, 50);

    // ... and rollback.sh brings the release before it back, `current` pointing at it.
    let out = rollback(&env, &root, "app");
    let stdout = succeeded(&out, "rollback.sh");
    assert!(stdout.contains("took over"), "{stdout}");
    assert_eq!(svc.version(), "two");
    assert_eq!(link(&root, "current"), format!("releases/{two}"));
    assert_eq!(link(&root, "previous"), format!("releases/{bad}"));
    assert_eq!(serving_release(&svc.status()), release_dir(&root, &two));
    assert_eq!(releases(&root), [one, two, broken, bad], "four deploys, none pruned (keep 5)");

    wait_for_ok(&load, ok, 50);
    let report = load.stop_and_finish();
    assert_no_failures(&report, "deploys of a good, a broken and a bad release, and a rollback");
}

/// `date -u -d @SECS +%Y%m%d-%H%M%S`: the release name deploy.sh makes in that second.
fn stamp(secs: u64) -> String {
    let at = format!("@{secs}");
    let out = Command::new("date").args(["-u", "-d", &at, "+%Y%m%d-%H%M%S"]).output();
    let out = out.expect("run date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn release_folders_are_named_apart_and_the_newest_kept_with_current_and_previous() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, runtime) = (tmp.path().join("app"), tmp.path().join("run"));
    std::fs::create_dir_all(root.join("releases")).unwrap();
    std::fs::create_dir(&runtime).unwrap();
    let source = build(tmp.path(), "one", "");
    let hotswap = path_str(&hotswap_bin());
    let env = [("HOTSWAP", hotswap.as_str()), ("XDG_RUNTIME_DIR", &path_str(&runtime))];

    // Every second the next deploys can fall in already has a release: they get suffixes,
    // and the names still sort in the order of the deploys.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let taken: Vec<String> = (now..now + 30).map(stamp).collect();
    for name in &taken {
        std::fs::create_dir(root.join("releases").join(name)).unwrap();
    }
    let mut deployed = Vec::new();
    for _ in 0..2 {
        let before = releases(&root);
        succeeded(&deploy(&env, &root, "app", &["--keep", "99"], &source), "deploy");
        deployed.push(added(&before, &releases(&root)));
    }
    for name in &deployed {
        let (base, suffix) = name.rsplit_once('-').unwrap();
        assert!(taken.iter().any(|t| t == base), "{name} should be a taken name plus a suffix");
        assert!(matches!(suffix, "02" | "03"), "{name}");
    }
    assert!(deployed[0] < deployed[1], "{deployed:?} sort in the order of the deploys");
    for name in &taken {
        std::fs::remove_dir(root.join("releases").join(name)).unwrap();
    }

    // Five more deploys: the five newest are kept.
    for _ in 0..5 {
        let before = releases(&root);
        succeeded(&deploy(&env, &root, "app", &[], &source), "deploy");
        deployed.push(added(&before, &releases(&root)));
    }
    assert_eq!(releases(&root), deployed[2..], "the five newest of {deployed:?}");

    // hotswap is not running: rollback.sh swaps `current` and `previous`.
    let out = rollback(&env, &root, "app");
    let stdout = succeeded(&out, "rollback.sh with hotswap not running");
    assert!(stdout.contains("app is not running"), "{stdout}");
    assert_eq!(link(&root, "current"), format!("releases/{}", deployed[5]));
    assert_eq!(link(&root, "previous"), format!("releases/{}", deployed[6]));

    // --keep 1 keeps the newest and what served before it (the release rolled back to),
    // however old.
    let before = releases(&root);
    succeeded(&deploy(&env, &root, "app", &["--keep", "1"], &source), "deploy --keep 1");
    let newest = added(&before, &releases(&root));
    assert_eq!(link(&root, "previous"), format!("releases/{}", deployed[5]));
    assert_eq!(releases(&root), [deployed[5].clone(), newest]);
}

/// A light load for the fleet test: one fresh-connection `GET /` every 5 ms, on a thread of its
/// own, until stopped. (The load client's workers never pause: two of them per service would
/// take the two cores from ansible, which needs them for a few seconds per run.)
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stopped, oks) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match http_get(addr, "/") {
                    Ok(r) if r.status == 200 => _ = oks.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => failures.push(format!("status {}: {}", r.status, r.body)),
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            failures
        });
        Prober { stop, ok, thread: Some(thread) }
    }

    /// Waits until `n` more requests than `since` have succeeded; returns the new count.
    fn wait_for_ok(&self, since: u64, n: u64) -> u64 {
        wait_until(&format!("{n} more ok probes"), WAIT, || {
            let ok = self.ok.load(Ordering::Relaxed);
            (ok >= since + n).then_some(ok)
        })
    }

    /// Stops it; panics naming the failed requests, if any.
    fn assert_no_failures(mut self, context: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.take().expect("not joined yet").join().unwrap();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(failures.is_empty(), "{context}: {} failed, {ok} ok: {failures:?}", failures.len());
        assert!(ok > 0, "{context}: no request succeeded");
    }
}

/// A test that panics midway stops its probes too.
impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `.venv/bin/ansible-playbook`; panics saying how to install it when it is missing.
fn ansible_playbook_bin() -> PathBuf {
    let program = repo().join(".venv/bin/ansible-playbook");
    assert!(
        program.is_file(),
        "{} is missing: install it with `python3 -m venv .venv && .venv/bin/pip install \
         {ANSIBLE_REQUIREMENT}` (CI's .ci/run does)",
        program.display()
    );
    program
}

/// `.venv/bin/ansible-playbook -i inventory.ini deploy.yml -e …` from the repository's root.
fn ansible_playbook(env: &[(&str, &str)], extra_vars: &[String]) -> Output {
    let program = ansible_playbook_bin();
    let mut args =
        vec![example("ansible/deploy.yml"), "-i".into(), example("ansible/inventory.ini")];
    for var in extra_vars {
        args.extend(["-e".to_string(), var.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&path_str(&program), &args, env, ANSIBLE_BOUND)
}

#[test]
fn ansible_rolls_a_release_host_by_host_and_stops_at_the_first_failing_host() {
    ansible_playbook_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (fleet, runtime, builds) =
        (tmp.path().join("fleet"), tmp.path().join("run"), tmp.path().join("build"));
    std::fs::create_dir(&runtime).unwrap();
    let ansible_home = tmp.path().join("ansible");
    let hotswap = path_str(&hotswap_bin());
    let runtime_dir = path_str(&runtime);
    let env = [("HOTSWAP", hotswap.as_str()), ("XDG_RUNTIME_DIR", runtime_dir.as_str())];
    let ansible_env = [
        ("XDG_RUNTIME_DIR", runtime_dir.clone()),
        ("ANSIBLE_HOME", path_str(&ansible_home)),
        ("ANSIBLE_LOCAL_TEMP", path_str(&ansible_home.join("tmp"))),
        ("ANSIBLE_REMOTE_TEMP", path_str(&ansible_home.join("remote"))),
        ("ANSIBLE_NOCOLOR", "1".into()),
    ];
    let ansible_env: Vec<(&str, &str)> =
        ansible_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Release archives, as CI would build them.
    let archive = |name: &str, extra: &str| {
        let dir = build(&builds, name, extra);
        let tarball = path_str(&tmp.path().join(format!("{name}.tar.gz")));
        let out = run("tar", &["-czf", &tarball, "-C", &path_str(&dir), "."], &[], SCRIPT_BOUND);
        succeeded(&out, "tar");
        tarball
    };
    let (good, broken) = (archive("two", ""), archive("broken", "SERVER_EXIT_AT_START=3\n"));
    let vars = |release: &str| {
        vec![
            format!("fleet_root={}", path_str(&fleet)),
            format!("release={release}"),
            format!("hotswap_bin={hotswap}"),
        ]
    };

    // Two "hosts", each with its app root and service (names as in inventory.ini), running
    // the first release.
    let hosts = [("host-a", "app-a"), ("host-b", "app-b")];
    let first = build(&builds, "one", "");
    let services: Vec<(PathBuf, Service)> = hosts
        .iter()
        .map(|(host, name)| {
            let root = fleet.join(host);
            succeeded(&deploy(&env, &root, name, &[], &first), "the first deploy");
            let svc = start_hotswap(&runtime, &root, name);
            (root, svc)
        })
        .collect();
    let probers: Vec<Prober> = services.iter().map(|(_, svc)| Prober::start(svc.addr)).collect();
    let mut oks: Vec<u64> = probers.iter().map(|p| p.wait_for_ok(0, 20)).collect();
    for (_, svc) in &services {
        assert_eq!(svc.version(), "one");
    }

    // A good release reaches both hosts.
    let out = ansible_playbook(&ansible_env, &vars(&good));
    succeeded(&out, "ansible-playbook with a good release");
    let mut currents = Vec::new();
    for (root, svc) in &services {
        assert_eq!(svc.version(), "two");
        let status = svc.status();
        assert_eq!(status.generation, Some(2), "{status:#?}");
        let current = link(root, "current");
        assert_eq!(serving_release(&status), release_dir(root, &current["releases/".len()..]));
        currents.push(current);
    }
    for (prober, ok) in probers.iter().zip(oks.iter_mut()) {
        *ok = prober.wait_for_ok(*ok, 20);
    }

    // A release that fails readiness: rolled back on the first host, the play stops there,
    // ansible-playbook fails, and the second host is never touched.
    let before_b = releases(&services[1].0);
    let out = ansible_playbook(&ansible_env, &vars(&broken));
    assert_ne!(
        out.status.code(),
        Some(0),
        "ansible-playbook with a broken release: {}",
        describe(&out)
    );
    let output =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(output.contains("failed readiness"), "{output}");
    assert!(!output.contains("host-b"), "no task ran on host-b: {output}");
    let (root_a, svc_a) = &services[0];
    assert_eq!(svc_a.version(), "two");
    assert_eq!(link(root_a, "current"), currents[0], "host-a's current is put back");
    let status = svc_a.status();
    let last = status.last_reload.as_ref().expect("a last reload on host-a");
    assert_eq!(last.result, LastReloadResult::RolledBack, "{status:#?}");
    let (root_b, svc_b) = &services[1];
    assert_eq!(svc_b.version(), "two");
    assert_eq!(link(root_b, "current"), currents[1]);
    assert_eq!(releases(root_b), before_b, "no release was copied to host-b");
    let status = svc_b.status();
    assert_eq!(status.generations.iter().map(|g| g.id).max(), Some(2), "{status:#?}");
    let last = status.last_reload.as_ref().expect("a last reload on host-b");
    assert_eq!((last.result, last.generation), (LastReloadResult::Ok, 2), "{status:#?}");

    for (i, (prober, ok)) in probers.into_iter().zip(oks).enumerate() {
        prober.wait_for_ok(ok, 20);
        prober.assert_no_failures(&format!("{}: a good and a broken rollout", hosts[i].0));
    }
}
