//! The unmodified apps (issue 8) of the `unmodified` rows, each with its command line, where the
//! bench sends its traffic, and the line the app itself logs when it starts waiting on its
//! socket. The apps are those of tests/fixtures/unmodified, run from there when they print such
//! a line already, else the bench's copies in benches/reload/apps, each with that one print
//! added.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{ChildLine, on_path};
use crate::support::{Launch, hotswap_bin, path_str};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// benches/reload/apps/app.js: binds PORT itself, closes its server on SIGTERM.
    Node,
    /// `python3 -m http.server`: binds itself, no SIGTERM handler.
    HttpServer,
}

/// One app, ready to run under hotswap (or alone, for a naive restart).
pub struct AppRun {
    /// hotswap's flags before `--` (none for an app that binds its own port).
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

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Runtime {
    /// How to run it on `port`; Err: why it cannot run here (a program missing).
    pub fn run(self, port: u16) -> Result<AppRun, String> {
        let p = port.to_string();
        let need = |name: &str| -> Result<(), String> {
            on_path(name).map(|_| ()).ok_or_else(|| format!("{name} not on PATH"))
        };
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
                run.argv = s(&["node", &bench_app("app.js")]);
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
        }
        Ok(run)
    }
}
