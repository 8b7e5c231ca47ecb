//! Apps as people already have them (issue 8, DESIGN.md §4 `auto` and §7): they bind their
//! own port and signal nothing. hotswap claims their bind() for a socket of its own (the
//! preload library) and sees them ready in /proc; reloads lose no request.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::load::{LoadConfig, LoadHandle, LoadReport, Target, spawn_in_thread};
use crate::support::service::{index_of, wait_for_ok};
use crate::support::{
    Hotswap, Launch, WAIT, environ, free_port, hotswap_bin, http_get, path_str, pids_in, wait_until,
};

/// `tests/fixtures/unmodified/NAME`.
fn fixture(name: &str) -> String {
    let path = fixtures().join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path_str(&path)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unmodified")
}

/// A program from the venv `.ci/run` creates at the repository root (gunicorn, uvicorn).
pub fn venv_bin(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run, or python3 -m venv .venv && .venv/bin/pip install \
         gunicorn uvicorn",
        path.display()
    );
    path_str(&path)
}

/// Starts `hotswap ARGS` with `env` and waits until generation 1 is ready; returns the ready line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Hotswap, String) {
    let hs = Hotswap::start(args, env);
    let line = hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed"], WAIT);
    assert!(line.contains("gen 1 ready after "), "generation 1 never became ready: {line}");
    (hs, line)
}

/// HUP, then wait until generation `new` serves and `new - 1` is gone; returns `new`'s pids.
fn reload(hs: &Hotswap, new: u64) -> Vec<u32> {
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    let index = |pattern: &str| {
        hs.wait_for_stderr_after(from, pattern, WAIT);
        index_of(&hs.stderr().lines(), from, pattern).expect("just seen")
    };
    let started = index(&format!("gen {new} started (pids "));
    let ready = index(&format!("gen {new} ready after "));
    let gone = index(&format!("gen {} gone, drained after ", new - 1));
    let all = hs.stderr().lines();
    assert!(started < ready && ready < gone, "out of order: {all:#?}");
    pids_in(&all[started])
}

fn load_on(addr: SocketAddr) -> LoadHandle {
    spawn_in_thread(LoadConfig {
        new_conn_workers: 2,
        keepalive_workers: 2,
        duration: Duration::from_secs(60),
        request_timeout: Duration::from_secs(5),
        ..LoadConfig::new(Target::Tcp(addr))
    })
}

fn assert_no_failures(report: &LoadReport, what: &str) {
    assert_eq!(report.failed(), 0, "{what}: {}", report.summary());
    assert!(report.ok > 0, "{what}: no request answered: {}", report.summary());
}

/// Inodes of the TCP sockets listening on `port`, from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next());
            let listening = f.get(3) == Some(&"0A");
            if listening && local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port) {
                inodes.extend(f.get(9).and_then(|i| i.parse::<u64>().ok()));
            }
        }
    }
    inodes
}

/// Socket inodes among `pid`'s open fds.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Every socket listening on `port` is one hotswap holds.
fn assert_only_hotswap_listens(hs: &Hotswap, port: u16) {
    let listening = listening_inodes(port);
    assert!(!listening.is_empty(), "nothing listens on {port}");
    let held = socket_inodes(hs.pid());
    assert!(
        listening.is_subset(&held),
        "sockets listening on {port} ({listening:?}) that hotswap does not hold ({held:?})"
    );
}

fn assert_no_eaddrinuse(hs: &Hotswap) {
    let lines = hs.stderr().lines();
    let bad: Vec<&String> = lines.iter().filter(|l| l.contains("EADDRINUSE")).collect();
    assert!(bad.is_empty(), "EADDRINUSE met: {bad:#?}");
}

/// Five reloads of `hs` under load on every address in `addrs`: zero failed requests, and
/// generations 1..=6 answer in order on each.
fn five_reloads_under_load(hs: &Hotswap, addrs: &[SocketAddr]) {
    let loads: Vec<LoadHandle> = addrs.iter().map(|&a| load_on(a)).collect();
    let mut ok: Vec<u64> = loads.iter().map(|l| wait_for_ok(l, 0, 20)).collect();
    for generation in 2..=6 {
        reload(hs, generation);
        for (load, seen) in loads.iter().zip(ok.iter_mut()) {
            *seen = wait_for_ok(load, *seen, 20);
        }
    }
    for (load, addr) in loads.into_iter().zip(addrs) {
        let report = load.stop_and_finish();
        assert_no_failures(&report, &format!("load on {addr} across 5 reloads"));
        assert_eq!(report.generation_order, [1, 2, 3, 4, 5, 6], "{addr}: {}", report.summary());
    }
}

/// The mission's own usage, on a Node app that binds its own port (no host: Node binds [::]
/// dual-stack), closes its server on SIGTERM and signals nothing: `hotswap -- node app.js`,
/// nothing else.
#[test]
fn an_unmodified_node_app_reloads_under_load_without_a_failed_request() {
    let port = free_port();
    let app = fixture("app.js");
    let (hs, ready) = start(&["--", "node", &app], &[("PORT", &port.to_string())]);
    assert!(ready.contains("accepting on [::]:"), "seen taking connections: {ready}");
    assert!(hs.stderr().lines().iter().any(|l| l.contains(&format!("claimed [::]:{port}"))));
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let addr: SocketAddr = addr.parse().unwrap();
        let r = http_get(addr, "/").unwrap_or_else(|e| panic!("GET {addr}: {e}"));
        assert_eq!((r.status, r.generation()), (200, Some(1)), "{addr}: {r:?}");
    }
    assert_only_hotswap_listens(&hs, port);
    five_reloads_under_load(&hs, &[format!("127.0.0.1:{port}").parse().unwrap()]);
    assert_only_hotswap_listens(&hs, port);
    assert_no_eaddrinuse(&hs);
    let failed: Vec<String> =
        hs.stderr().lines().into_iter().filter(|l| l.contains("failed")).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Serving is readiness: an unmodified app is never replaced at `--ready-timeout`.
#[test]
fn an_unmodified_app_is_not_replaced_at_the_ready_timeout() {
    let port = free_port();
    let app = fixture("app.js");
    let (hs, _) =
        start(&["--ready-timeout", "1s", "--", "node", &app], &[("PORT", &port.to_string())]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid = http_get(addr, "/").expect("GET").pid();
    // Waiting out the deadline is the point: nothing must happen at it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http_get(addr, "/").expect("GET").pid(), pid, "replaced");
    let lines = hs.stderr().lines();
    assert!(!lines.iter().any(|l| l.contains("not ready") || l.contains("gen 2")), "{lines:#?}");
}

/// An API port and an admin port: both claimed, reloads lose nothing on either.
#[test]
fn both_ports_of_a_two_port_app_are_claimed_and_reload_without_loss() {
    let (api, admin) = (free_port(), free_port());
    let app = fixture("app.js");
    let env = [("PORT", api.to_string()), ("ADMIN_PORT", admin.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (hs, _) = start(&["--", "node", &app], &env);
    for port in [api, admin] {
        wait_until("both ports claimed", WAIT, || {
            hs.stderr()
                .lines()
                .iter()
                .any(|l| l.contains(&format!("claimed [::]:{port}")))
                .then_some(())
        });
        assert_only_hotswap_listens(&hs, port);
    }
    let addrs: Vec<SocketAddr> =
        [api, admin].iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    five_reloads_under_load(&hs, &addrs);
    assert_no_eaddrinuse(&hs);
}

/// Through a shell that execs node, and through `npm start` (npm → sh → node): the library
/// travels down every launcher.
#[test]
fn launchers_pass_the_shim_on_sh_and_npm_start() {
    for how in ["sh", "npm"] {
        let port = free_port();
        let args: Vec<String> = match how {
            "sh" => ["--", "sh", "-c", "exec node app.js"].map(String::from).to_vec(),
            _ => ["--", "npm", "start"].map(String::from).to_vec(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launch = Launch { cwd: Some(fixtures()), ..Launch::hotswap(&args) };
        let hs = launch.env(&[("PORT", &port.to_string())]).start();
        let ready = hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed"], WAIT);
        assert!(ready.contains("accepting on [::]:"), "{how}: {ready}");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let load = load_on(addr);
        let mut ok = wait_for_ok(&load, 0, 20);
        for generation in 2..=3 {
            reload(&hs, generation);
            ok = wait_for_ok(&load, ok, 20);
        }
        let report = load.stop_and_finish();
        assert_no_failures(&report, &format!("{how}: load across 2 reloads"));
        assert_only_hotswap_listens(&hs, port);
        assert_no_eaddrinuse(&hs);
    }
}

/// gunicorn with sync workers whose app takes 1.5 s to import, under `hotswap --` alone: its
/// master listens at once and says READY=1 at once, but only a worker waiting in select makes
/// a generation ready, so the old one serves until then and no request waits long.
#[test]
fn gunicorn_is_ready_when_a_worker_takes_connections_not_when_it_says_so() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let gunicorn = venv_bin("gunicorn");
    let chdir = path_str(&fixtures());
    let args = ["--", &gunicorn, "-b", &bind, "-w", "2", "--chdir", &chdir, "slow_wsgi:app"];
    let (hs, ready) = start(&args, &[]);
    assert!(ready.contains("waiting in select"), "sync workers wait in select: {ready}");
    let addr: SocketAddr = bind.parse().unwrap();
    let load = load_on(addr);
    let mut ok = wait_for_ok(&load, 0, 20);
    for generation in 2..=3 {
        reload(&hs, generation);
        ok = wait_for_ok(&load, ok, 20);
    }
    let report = load.stop_and_finish();
    assert_no_failures(&report, "gunicorn under load across 2 reloads");
    assert!(
        report.max_latency() < Duration::from_secs(1),
        "a request waited {:?}: the old generation retired before a new worker accepted",
        report.max_latency()
    );
    // One more reload with no traffic at all: seen in select within a second of the import.
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    let imported = hs.wait_for_stderr_after(from, "app imported in pid", WAIT);
    let ready = hs.wait_for_stderr_after(from, "gen 4 ready after ", WAIT);
    assert!(ready.contains("waiting in select"), "{ready}");
    let at = |line: &str| hs.stderr().arrived(line).expect("a line seen");
    let after_import = at(&ready).saturating_duration_since(at(&imported));
    assert!(after_import < Duration::from_secs(1), "ready {after_import:?} after the import");
}

/// Each runtime's way of waiting for connections is recognised.
#[test]
fn detection_per_runtime() {
    let port = free_port();
    let p = port.to_string();
    let uvicorn = venv_bin("uvicorn");
    let gunicorn = venv_bin("gunicorn");
    let chdir = path_str(&fixtures());
    let bind = format!("127.0.0.1:{port}");
    let server = path_str(&crate::support::example_bin("server"));
    let listen = format!("127.0.0.1:{port}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("node", vec!["--", "node", "app.js"], "(epoll)"),
        (
            "python http.server",
            vec!["--", "python3", "-m", "http.server", &p, "--bind", "127.0.0.1"],
            "waiting in poll",
        ),
        (
            "gunicorn gthread",
            vec![
                "--",
                &gunicorn,
                "-b",
                &bind,
                "-k",
                "gthread",
                "-w",
                "2",
                "--chdir",
                &chdir,
                "slow_wsgi:app",
            ],
            "(epoll)",
        ),
        (
            "uvicorn --fd 3",
            vec!["-l", &listen, "--", &uvicorn, "--fd", "3", "--app-dir", &chdir, "asgi:app"],
            "(epoll)",
        ),
        ("rust example (tokio)", vec!["-l", &listen, "--", &server, "--ready", "none"], "(epoll)"),
        ("blocking accept loop", vec!["--", "python3", "accept_loop.py"], "waiting in accept"),
    ];
    for (runtime, args, how) in cases {
        let launch = Launch { cwd: Some(fixtures()), ..Launch::hotswap(&args) };
        let hs = launch.env(&[("PORT", &p), ("IMPORT_SECONDS", "0.2")]).start();
        let ready = hs.wait_for_any(0, &["gen 1 ready after ", "gen 1 failed"], WAIT);
        assert!(ready.contains(how), "{runtime}: expected {how:?} in {ready:?}");
        let addr: SocketAddr = bind.parse().unwrap();
        let r = http_get(addr, "/").unwrap_or_else(|e| panic!("{runtime}: GET: {e}"));
        assert_eq!(r.status, 200, "{runtime}: {r:?}");
        drop(hs);
        wait_until(&format!("{runtime}: port {port} free again"), WAIT, || {
            listening_inodes(port).is_empty().then_some(())
        });
    }
}

/// An app with no SIGTERM handler (the standard library's http.server) dies of the stop
/// signal with whatever it was doing; it still reloads: the new one serves.
#[test]
fn an_app_without_a_sigterm_handler_reloads() {
    let port = free_port();
    let p = port.to_string();
    let args = ["--", "python3", "-m", "http.server", &p, "--bind", "127.0.0.1"];
    let (hs, _) = start(&args, &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(http_get(addr, "/").expect("GET").status, 200);
    let second = reload(&hs, 2)[0] as i32;
    assert_eq!(http_get(addr, "/").expect("GET after the reload").status, 200);
    assert!(crate::support::pid_alive(second));
    assert_only_hotswap_listens(&hs, port);
}

/// What is not a listening port of the app's own goes straight to the kernel: port 0 gets an
/// ephemeral socket of the app's own, connecting out works, a port another process holds is
/// EADDRINUSE, exactly as without hotswap.
#[test]
fn binds_that_are_not_claims_pass_through() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("a port held by the test");
    let held = other.local_addr().unwrap().port().to_string();
    let port = free_port().to_string();
    let env =
        [("PORT", port.as_str()), ("CONNECT_TO", held.as_str()), ("HELD_PORT", held.as_str())];
    let launch =
        Launch { cwd: Some(fixtures()), ..Launch::hotswap(&["--", "python3", "binds.py"]) };
    let hs = launch.env(&env).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let lines = hs.stderr().lines();
    let line = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {lines:#?}"))
            .clone()
    };
    let ephemeral = line("ephemeral ");
    let inode: u64 = ephemeral.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(!socket_inodes(hs.pid()).contains(&inode), "port 0 was claimed: {ephemeral}");
    assert_eq!(line("connect "), "connect ok");
    assert_eq!(line("held "), "held errno EADDRINUSE");
    let claims: Vec<&String> = lines.iter().filter(|l| l.contains(" claimed ")).collect();
    assert_eq!(claims.len(), 1, "only PORT is claimed: {claims:#?}");
    assert!(claims[0].ends_with(&format!("claimed 127.0.0.1:{port}")), "{claims:#?}");
}

/// `--intercept-bind off` is hotswap as it was before the shim: the app binds its own port,
/// hotswap names it, and the next generation meets EADDRINUSE, rolled back with the reason.
#[test]
fn intercept_bind_off_leaves_binds_to_the_app() {
    let port = free_port();
    let app = fixture("app.js");
    let args = ["--intercept-bind", "off", "--", "node", &app];
    let (hs, ready) = start(&args, &[("PORT", &port.to_string())]);
    assert!(ready.contains(&format!("[::]:{port}")), "seen serving on its own socket: {ready}");
    assert!(!hs.stderr().lines().iter().any(|l| l.contains(" claimed ")), "no claim");
    assert!(
        hs.stderr().lines().iter().any(|l| l.contains(&format!("listens on [::]:{port} itself"))),
        "the app's own listener is named"
    );
    assert!(!socket_inodes(hs.pid()).iter().any(|i| listening_inodes(port).contains(i)));
    let from = hs.stderr().line_count();
    hs.signal(Signal::SIGHUP);
    let failed = hs.wait_for_stderr_after(from, "gen 2 failed", WAIT);
    assert!(failed.contains(&format!("listens on [::]:{port} itself")), "{failed}");
}

/// The claim channel answers only hotswap's own descendants: the test process (root) and a
/// `nobody` process get no socket for a port a child claimed, while the child's own tree
/// (the control case, the same request) gets one.
#[test]
fn the_claim_channel_serves_only_hotswaps_child_trees() {
    let port = free_port().to_string();
    let probe = fixture("claim_probe.py");
    // The child asks the same question first, as a process of its tree.
    let script =
        format!("python3 {probe} \"$HOTSWAP_CLAIM\" {port} >&2; exec python3 accept_loop.py");
    let launch = Launch { cwd: Some(fixtures()), ..Launch::hotswap(&["--", "sh", "-c", &script]) };
    let hs = launch.env(&[("PORT", &port)]).start();
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    let inside = hs.wait_for_stderr("errno=", WAIT);
    assert_eq!(inside, "errno=0 answer=1 fds=1", "a process of the tree gets the socket");
    let child = pids_in(&hs.wait_for_stderr("gen 1 started (pids ", WAIT))[0];
    let claim =
        wait_until("the child's HOTSWAP_CLAIM", WAIT, || environ(child).remove("HOTSWAP_CLAIM"));
    let outsider = |wrapper: &[&str]| {
        let mut cmd = std::process::Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).args([probe.as_str(), claim.as_str(), port.as_str()]);
        let out = cmd.output().expect("run the claim probe");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(outsider(&["python3"]), "errno=0 answer=0 fds=0", "root, outside the trees");
    let nobody =
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"];
    assert_eq!(outsider(&nobody), "errno=0 answer=0 fds=0", "nobody, outside the trees");
    // The answer reaches the probe before hotswap's log line reaches us.
    let refused = || {
        hs.stderr().lines().iter().filter(|l| l.contains("not in hotswap's child trees")).count()
    };
    wait_until("both refusals logged", WAIT, || (refused() >= 2).then_some(()));
    assert_eq!(refused(), 2, "both refusals logged, no more");
}

/// A child running as `nobody` cannot have hotswap (root) bind a privileged port it could not
/// bind itself; a root child can (the control case).
#[test]
fn a_child_of_another_user_gets_no_privileged_port_it_could_not_bind_itself() {
    let low = (900..1000u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1000");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port().to_string();
    // The preload library must be readable by nobody: a runtime dir it may traverse.
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let binds = fixture("binds.py");
    for (user, expected) in [("nobody", "low errno EACCES"), ("root", "low ok")] {
        let port = free_port().to_string();
        let low = low.to_string();
        let mut args = vec!["--restart", "never", "--"];
        if user == "nobody" {
            args.extend(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
        }
        args.extend(["/usr/bin/python3", binds.as_str()]);
        let rt = path_str(runtime.path());
        let env = [
            ("PORT", port.as_str()),
            ("CONNECT_TO", held_port.as_str()),
            ("HELD_PORT", held_port.as_str()),
            ("LOW_PORT", low.as_str()),
            ("XDG_RUNTIME_DIR", rt.as_str()),
        ];
        let hs = Hotswap::start(&args, &env);
        let line = hs.wait_for_stderr("low ", WAIT);
        assert_eq!(line, expected, "{user}");
        if user == "nobody" {
            let refusal = format!("bind 127.0.0.1:{low}: Permission denied");
            assert!(
                hs.stderr().lines().iter().any(|l| l.contains(&refusal)),
                "hotswap refused it (the shim asked): {:#?}",
                hs.stderr().lines()
            );
        }
    }
    let _ = hotswap_bin();
}

/// A port the new code no longer binds is closed once the reload is over, so it does not
/// keep queueing connections nobody accepts; `status` shows each socket's origin.
#[test]
fn a_claimed_port_the_new_generation_dropped_is_closed() {
    let (api, admin) = (free_port(), free_port());
    let app = fixture("app.js");
    let script = format!(
        "if [ \"$HOTSWAP_GENERATION\" = 1 ]; then export ADMIN_PORT={admin}; fi; exec node {app}"
    );
    let args = ["--control", "{dir}/ctl.sock", "--", "sh", "-c", &script];
    let (hs, _) = start(&args, &[("PORT", &api.to_string())]);
    wait_until("the admin port claimed", WAIT, || {
        let lines = hs.stderr().lines();
        lines.iter().any(|l| l.contains(&format!("claimed [::]:{admin}"))).then_some(())
    });
    let ctl = path_str(&hs.dir().join("ctl.sock"));
    let status = crate::support::service::parse_status(&hs.run_cli(&[
        "status",
        "--json",
        "--control",
        &ctl,
    ]));
    let origins: Vec<(String, String)> =
        status.sockets.iter().map(|s| (s.address.clone(), s.origin.clone())).collect();
    assert!(origins.contains(&(format!("[::]:{api}"), "claimed by gen 1".into())), "{origins:?}");
    assert!(origins.iter().all(|(_, o)| o == "claimed by gen 1"), "{origins:?}");
    reload(&hs, 2);
    let closed = hs.wait_for_stderr(&format!("closed [::]:{admin} (claimed by gen 1)"), WAIT);
    assert!(closed.contains("no serving child holds it"), "{closed}");
    // Not `port_is_closed`: another test may have been given the free port since.
    let held = socket_inodes(hs.pid());
    assert!(listening_inodes(admin).is_disjoint(&held), "hotswap still listens on {admin}");
    assert_eq!(
        http_get(format!("127.0.0.1:{api}").parse().unwrap(), "/").expect("api").generation(),
        Some(2)
    );
}
