//! The command line (DESIGN.md §1). Every option also reads `HOTSWAP_*`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ListenSpec, ReadyMode, parse_duration, parse_mode, parse_signal, parse_size};
use crate::core::Restart;

#[derive(Debug, Parser)]
#[command(
    name = "hotswap",
    version,
    about = "Own a service's listening sockets and hand them to each new generation of it: zero-downtime reloads on SIGHUP.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reload a running hotswap: start a new generation, retire the old one.
    Reload(ReloadArgs),
    /// Start a generation from what the previous serving generation ran (its
    /// release directory, program and env file), with a reload's readiness and report.
    Rollback(ReloadArgs),
    /// Show a running hotswap's generations, children and last reload.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A socket to own, passed as fd 3, 4, … in order: PORT, :PORT, HOST:PORT,
    /// [IPv6]:PORT, tcp://…, udp://…, unix:/PATH, unix:@NAME; NAME= sets its LISTEN_FDNAMES name.
    #[arg(
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        env = "HOTSWAP_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<ListenSpec>,

    /// Names this service for `reload`/`status` and in logs [default: the command's file name].
    #[arg(long, env = "HOTSWAP_NAME")]
    pub name: Option<String>,

    /// Children per generation, all sharing the sockets (HOTSWAP_INSTANCE 0..N-1).
    #[arg(short = 'n', long, default_value_t = 1, env = "HOTSWAP_INSTANCES", value_parser = clap::value_parser!(u32).range(1..))]
    pub instances: u32,

    /// How a child says it is ready: auto, notify, fd, ipc, delay:DUR, exec:CMD.
    #[arg(long, default_value = "auto", value_name = "MODE", env = "HOTSWAP_READY")]
    pub ready: ReadyMode,

    /// A new generation not ready by then is rolled back.
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = duration, env = "HOTSWAP_READY_TIMEOUT")]
    pub ready_timeout: Duration,

    /// Sent to a retiring child.
    #[arg(long, default_value = "TERM", value_name = "SIG", value_parser = signal, env = "HOTSWAP_STOP_SIGNAL")]
    pub stop_signal: i32,

    /// Then SIGKILL to the retiring child's process group.
    #[arg(long, default_value = "30s", value_name = "DUR", value_parser = duration, env = "HOTSWAP_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// How instances share a socket: shared (one socket, the first to accept wins) or
    /// reuseport (one SO_REUSEPORT socket per instance slot; the kernel spreads connections).
    #[arg(long, value_enum, default_value = "shared", env = "HOTSWAP_BALANCE")]
    pub balance: Balance,

    /// Reload when a file under PATH changes (debounced; .git, target and node_modules are
    /// ignored). Repeatable.
    #[arg(long, value_name = "PATH", env = "HOTSWAP_WATCH", value_delimiter = ',')]
    pub watch: Vec<PathBuf>,

    /// Replace instances one at a time (new i ready, then old i retires) instead of the whole
    /// generation at once. A failure stops the rollout where it is.
    #[arg(long, env = "HOTSWAP_ROLLING")]
    pub rolling: bool,

    /// A child that sent WATCHDOG=1 once must send it at least this often, else it is replaced
    /// (it gets WATCHDOG_USEC), as systemd's WatchdogSec=.
    #[arg(long, value_name = "DUR", value_parser = duration, env = "HOTSWAP_WATCHDOG")]
    pub watchdog: Option<Duration>,

    /// An instance whose process tree's resident memory exceeds SIZE (500M, 1G) is replaced:
    /// a new one starts, then the old one drains.
    #[arg(long, value_name = "SIZE", value_parser = size, env = "HOTSWAP_MAX_MEMORY")]
    pub max_memory: Option<u64>,

    /// What to do when a child of the serving generation exits.
    #[arg(long, value_enum, default_value = "on-failure", env = "HOTSWAP_RESTART")]
    pub restart: RestartArg,

    /// The children's working directory, resolved anew for every generation [default: $PWD].
    #[arg(long, value_name = "DIR", env = "HOTSWAP_CHDIR")]
    pub chdir: Option<PathBuf>,

    /// KEY=VALUE lines (# comments, blank lines, one pair of quotes stripped) added to the
    /// children's environment, read anew for every generation.
    #[arg(long, value_name = "PATH", env = "HOTSWAP_ENV_FILE")]
    pub env_file: Option<PathBuf>,

    /// Run the children as this user (name or uid), with its groups; hotswap binds first.
    #[arg(long, value_name = "USER", env = "HOTSWAP_USER")]
    pub user: Option<String>,

    /// Run the children with this group (name or gid) and no other.
    #[arg(long, value_name = "GROUP", env = "HOTSWAP_GROUP")]
    pub group: Option<String>,

    /// hotswap's own log lines: human, or json (one object per line).
    #[arg(long, value_enum, default_value = "human", env = "HOTSWAP_LOG_FORMAT")]
    pub log_format: crate::logging::LogFormat,

    /// Write hotswap's pid here (atomically); removed on exit.
    #[arg(long, value_name = "PATH", env = "HOTSWAP_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// The control socket [default: $XDG_RUNTIME_DIR/hotswap/NAME.sock, /run/hotswap/NAME.sock as root].
    #[arg(long, value_name = "PATH", env = "HOTSWAP_CONTROL")]
    pub control: Option<PathBuf>,

    /// Listen backlog [default: net.core.somaxconn].
    #[arg(long, value_name = "N", env = "HOTSWAP_BACKLOG")]
    pub backlog: Option<i32>,

    /// Set SO_REUSEPORT on the sockets hotswap binds.
    #[arg(long, env = "HOTSWAP_REUSE_PORT")]
    pub reuse_port: bool,

    /// Preload hotswap's bind() shim into the children, so that an app which binds its own
    /// port gets hotswap's socket for it: on or off.
    #[arg(
        long,
        value_enum,
        default_value = "on",
        value_name = "on|off",
        env = "HOTSWAP_INTERCEPT_BIND"
    )]
    pub intercept_bind: OnOff,

    /// chmod for unix socket files, in octal [default: 0666 & ~umask].
    #[arg(long, value_name = "MODE", value_parser = mode, env = "HOTSWAP_SOCKET_MODE")]
    pub socket_mode: Option<u32>,

    /// The program to run, and its arguments (checked in run mode, so that a
    /// missing one is reported in one line).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    Shared,
    Reuseport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RestartArg {
    OnFailure,
    Always,
    Never,
}

impl From<RestartArg> for Restart {
    fn from(arg: RestartArg) -> Restart {
        match arg {
            RestartArg::OnFailure => Restart::OnFailure,
            RestartArg::Always => Restart::Always,
            RestartArg::Never => Restart::Never,
        }
    }
}

/// Which running hotswap a client talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// The service's --name.
    pub name: Option<String>,
    /// Its control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "name", env = "HOTSWAP_CONTROL")]
    pub control: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub target: Target,
    /// Wait for the outcome, printing each step; exit 0 when the new generation took over.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (exit 3; the reload goes on).
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the stable JSON form.
    #[arg(long)]
    pub json: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn signal(s: &str) -> Result<i32, String> {
    parse_signal(s).map_err(|e| e.to_string())
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn mode(s: &str) -> Result<u32, String> {
    parse_mode(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_mode_takes_everything_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "hotswap",
            "-l",
            "web=:8080",
            "--",
            "node",
            "app.js",
            "--port",
            "1",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.command, ["node", "app.js", "--port", "1"]);
        assert_eq!(cli.run.listen[0].name.as_deref(), Some("web"));
    }

    #[test]
    fn subcommands_and_a_program_named_like_one() {
        let cli = Cli::try_parse_from(["hotswap", "status", "web", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status(StatusArgs { json: true, .. }))));
        let cli = Cli::try_parse_from(["hotswap", "--", "status"]).unwrap();
        assert_eq!(cli.run.command, ["status"]);
        let cli = Cli::try_parse_from(["hotswap", "-l", "80"]).unwrap();
        assert!(cli.run.command.is_empty(), "run mode reports a missing command itself");
    }
}
