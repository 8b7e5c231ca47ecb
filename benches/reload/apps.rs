//! The unmodified apps (issue 8): the runtimes of the detection table and the apps of the
//! `unmodified` rows, each with its command line, where the bench sends its traffic, and the
//! line the app itself logs when it starts waiting on its socket. The apps are those of
//! tests/fixtures/unmodified, run from there when they print such a line already, else the
//! bench's copies in benches/reload/apps, each with that one print added.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{Bins, ChildLine, on_path};
use crate::support::{Launch, hotswap_bin, path_str};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// tests/fixtures/unmodified/app.js: binds PORT itself, closes its server on SIGTERM.
    Node,
    /// `python3 -m http.server`: binds itself, no SIGTERM handler.
    HttpServer,
    /// gunicorn, sync workers (`-w 2`), tests/fixtures/unmodified/slow_wsgi.py.
    GunicornSync,
    /// gunicorn, gthread workers (`-w 2`), the same app.
    GunicornGthread,
    /// uvicorn taking fd 3 under `--listen`, tests/fixtures/unmodified/asgi.py.
    Uvicorn,
    /// The example server (tokio) under `--listen`, `--ready none`.
    Tokio,
    /// tests/fixtures/unmodified/accept_loop.py: a blocking accept() loop.
    AcceptLoop,
}

/// The detection table's rows, in order.
pub const RUNTIMES: [Runtime; 7] = [
    Runtime::Node,
    Runtime::HttpServer,
    Runtime::GunicornSync,
    Runtime::GunicornGthread,
    Runtime::Uvicorn,
    Runtime::Tokio,
    Runtime::AcceptLoop,
];

/// The import time of slow_wsgi.py for the gunicorn rows (the test's value; its default is
/// 1.5 s), in seconds.
pub const WSGI_IMPORT_SECONDS: &str = "0.2";

/// One app, ready to run under hotswap (or alone, for a naive restart).
pub struct AppRun {
    /// hotswap's flags before `--`: none for the apps that bind their own port, `--listen` for
    /// those that take fd 3.
    pub flags: Vec<String>,
    /// The app's command line.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Where the load goes.
    pub addr: SocketAddr,
    /// The line the app logs when it starts waiting on its socket.
    pub line: ChildLine,
}

impl AppRun {
    /// `hotswap FLAGS -- ARGV` with the app's environment and `extra_env`, through the test
    /// harness (whose `Hotswap` kills the whole tree when dropped).
    pub fn launch(&self, extra_env: &[(&str, &str)], verbose: bool) -> Launch {
        let mut args = self.flags.clone();
        args.push("--".into());
        args.extend(self.argv.iter().cloned());
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra_env.iter().copied())
            .collect();
        Launch { echo: verbose, cwd: self.cwd.clone(), ..Launch::via(hotswap_bin(), args) }
            .env(&env)
    }

    /// The app alone (it binds its own port), for a naive restart.
    pub fn alone(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// benches/reload/apps/NAME
fn bench_app(name: &str) -> String {
    path_str(&repo().join("benches/reload/apps").join(name))
}

/// A test fixture the bench runs as is.
fn fixture(name: &str) -> String {
    path_str(&fixtures().join(name))
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/unmodified")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Node => "Node (app.js)",
            Runtime::HttpServer => "Python http.server",
            Runtime::GunicornSync => "gunicorn sync -w 2",
            Runtime::GunicornGthread => "gunicorn gthread -w 2",
            Runtime::Uvicorn => "uvicorn --fd 3",
            Runtime::Tokio => "Rust example (tokio)",
            Runtime::AcceptLoop => "blocking accept loop",
        }
    }

    /// How hotswap is expected to see it taking connections: what its ready line names.
    pub fn expected(self) -> &'static str {
        match self {
            Runtime::HttpServer => "poll",
            Runtime::GunicornSync => "select",
            Runtime::AcceptLoop => "accept",
            _ => "epoll",
        }
    }

    /// The command as the caption shows it (`P`: the port).
    pub fn shown(self) -> &'static str {
        match self {
            Runtime::Node => "`PORT=P hotswap -- node tests/fixtures/unmodified/app.js`",
            Runtime::HttpServer => {
                "`hotswap -- sh -c 'exec python3 -m http.server P --bind 127.0.0.1 >&2'` with \
                 `PYTHONUNBUFFERED=1` (stdout to stderr, unbuffered, so that its own line reaches \
                 the bench; the app is the standard library's, unchanged)"
            }
            Runtime::GunicornSync => {
                "`hotswap -- gunicorn -b 127.0.0.1:P -w 2 -c benches/reload/apps/gunicorn_conf.py \
                 slow_wsgi:app` (tests/fixtures/unmodified, `IMPORT_SECONDS=0.2`)"
            }
            Runtime::GunicornGthread => "the same with `-k gthread`",
            Runtime::Uvicorn => {
                "`hotswap -l 127.0.0.1:P -- uvicorn --fd 3 asgi:app` (tests/fixtures/unmodified)"
            }
            Runtime::Tokio => {
                "`hotswap -l 127.0.0.1:P -- server --ready none` (examples/server.rs)"
            }
            Runtime::AcceptLoop => {
                "`PORT=P hotswap -- python3 tests/fixtures/unmodified/accept_loop.py`"
            }
        }
    }

    /// The app's own line taken as "it starts waiting on the socket", for the caption.
    pub fn marker(self) -> &'static str {
        match self {
            Runtime::Node => {
                "`app[PID]: listening on …`, printed in the `listening` callback (it runs on \
                 the tick after `listen()`, before libuv registers the socket in epoll and \
                 waits)"
            }
            Runtime::HttpServer => {
                "its own `Serving HTTP on …`, printed right before `serve_forever()` (which \
                 polls)"
            }
            Runtime::GunicornSync | Runtime::GunicornGthread => {
                "`gunicorn[MASTER] worker PID: serving`, printed by the `post_worker_init` hook \
                 (after the worker imported the app, right before its run loop), the first \
                 worker's"
            }
            Runtime::Uvicorn => {
                "uvicorn's own `Uvicorn running on socket …`, logged once `create_server` has \
                 registered the socket with the event loop"
            }
            Runtime::Tokio => {
                "the server's own `server[PID]: ready (not announced)`, logged after its accept \
                 loops were spawned (tokio registers the listener in epoll before that: this line \
                 comes a little after the moment)"
            }
            Runtime::AcceptLoop => "`accept_loop[PID]: accepting`, printed right before the loop",
        }
    }

    /// How to run it on `port`; Err: why it cannot run here (a program missing).
    pub fn run(self, port: u16, bins: &Bins, venv: &Path) -> Result<AppRun, String> {
        let p = port.to_string();
        let bind = local(port).to_string();
        let need = |name: &str| -> Result<(), String> {
            on_path(name).map(|_| ()).ok_or_else(|| format!("{name} not on PATH"))
        };
        let venv_bin = |name: &str| -> Result<String, String> {
            let path = venv.join("bin").join(name);
            if path.exists() {
                Ok(path_str(&path))
            } else {
                Err(format!(
                    "{} missing (python3 -m venv .venv && .venv/bin/pip install gunicorn uvicorn, \
                     or --venv DIR)",
                    path.display()
                ))
            }
        };
        let fixtures = path_str(&fixtures());
        let mut run = AppRun {
            flags: Vec::new(),
            argv: Vec::new(),
            env: Vec::new(),
            cwd: None,
            addr: local(port),
            line: ChildLine::Text(""),
        };
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        match self {
            Runtime::Node => {
                need("node")?;
                run.argv = s(&["node", &fixture("app.js")]);
                run.env.push(("PORT".into(), p));
                run.line = ChildLine::Pid("app[", "]: listening");
            }
            Runtime::HttpServer => {
                need("python3")?;
                let script = "exec python3 -m http.server \"$0\" --bind 127.0.0.1 >&2";
                run.argv = s(&["sh", "-c", script, &p]);
                run.env.push(("PYTHONUNBUFFERED".into(), "1".into()));
                // What GET / lists: a small directory.
                run.cwd = Some(repo().join("benches/reload/apps"));
                run.line = ChildLine::Text("Serving HTTP on ");
            }
            Runtime::GunicornSync | Runtime::GunicornGthread => {
                let gunicorn = venv_bin("gunicorn")?;
                let conf = bench_app("gunicorn_conf.py");
                run.argv =
                    s(&[&gunicorn, "-b", &bind, "-w", "2", "--chdir", &fixtures, "-c", &conf]);
                if self == Runtime::GunicornGthread {
                    run.argv.extend(s(&["-k", "gthread"]));
                }
                run.argv.push("slow_wsgi:app".into());
                run.env.push(("IMPORT_SECONDS".into(), WSGI_IMPORT_SECONDS.into()));
                run.line = ChildLine::Pid("gunicorn[", "] worker ");
            }
            Runtime::Uvicorn => {
                let uvicorn = venv_bin("uvicorn")?;
                run.flags = s(&["-l", &bind]);
                run.argv = s(&[&uvicorn, "--fd", "3", "--app-dir", &fixtures, "asgi:app"]);
                run.line = ChildLine::Text("Uvicorn running on");
            }
            Runtime::Tokio => {
                run.flags = s(&["-l", &bind]);
                run.argv = s(&[&path_str(&bins.server), "--ready", "none"]);
                run.line = ChildLine::SERVER;
            }
            Runtime::AcceptLoop => {
                need("python3")?;
                run.argv = s(&["python3", &fixture("accept_loop.py")]);
                run.env.push(("PORT".into(), p));
                run.line = ChildLine::Pid("accept_loop[", "]: accepting");
            }
        }
        Ok(run)
    }
}
