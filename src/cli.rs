//! The command line (DESIGN.md §1). Every option also reads `HOTSWAP_*`.

pub mod naming;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{ListenSpec, ReadyMode, parse_duration, parse_mode, parse_signal, parse_size};
use crate::core::Restart;

/// The end of `hotswap --help`, and the man page's sections of the same names: each
/// `Heading:` line starts a section, each indented `TERM  text` line is an entry in it.
pub const AFTER_HELP: &str = "\
Signals:
  HUP        reload: start a new generation, retire the old one once the new one is ready
  TERM, INT  stop gracefully: the stop signal to every child, SIGKILL to their process groups at --drain-timeout
  QUIT       stop at once: SIGKILL to every child's process group

Exit status:
  0  stopped by TERM, INT or QUIT; or a client command did what it was asked (reload --wait: the new generation took over and the old one is gone)
  1  reload --wait: the new generation was rolled back; list: a running service did not answer
  2  bad input (a usage error, an address or a command that does not work), or no such service answers
  3  reload --wait: --timeout passed first (the reload goes on)
  4  the control socket refused you (you are neither root nor its user)
  N  the status of the serving child when it exited and was not restarted (128+n for signal n)

Files:
  $XDG_RUNTIME_DIR/hotswap/NAME.sock  the control socket of service NAME (/run/hotswap/NAME.sock as root without XDG_RUNTIME_DIR, else /tmp/hotswap-UID/NAME.sock); list reads them all

See also:
  systemd.service(5), sd_listen_fds(3), sd_notify(3)";

#[derive(Debug, Parser)]
#[command(
    name = "hotswap",
    version,
    about = "Own a service's listening sockets and hand them to each new generation of it: zero-downtime reloads on SIGHUP.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = AFTER_HELP
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
    /// List every running hotswap of this user: name, pid, generation, children, uptime, last reload.
    List(ListArgs),
    /// Print the completion script for SHELL on stdout (`hotswap completions bash > /etc/bash_completion.d/hotswap`).
    Completions(CompletionsArgs),
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

    /// Names this service for `reload`, `status`, `list` and in logs [default: the program's file
    /// name; for an interpreter or launcher, its script's or project's: `node api.js` is `api`,
    /// `npm start` the package.json name].
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
    /// The file its --pid-file wrote: the hotswap of that pid, wherever its control socket is.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["name", "control"])]
    pub pid_file: Option<PathBuf>,
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

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of the services' statuses (each as `hotswap status --json` prints it).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    /// The completion script for this shell: what clap_complete makes of [`Cli`], generated
    /// into `packaging/completions/` and kept current there by a test, so that hotswap carries
    /// the text and not the generator (whose code would add to hotswap's resident size).
    pub fn completion_script(self) -> &'static str {
        match self {
            Shell::Bash => include_str!("../packaging/completions/hotswap.bash"),
            Shell::Zsh => include_str!("../packaging/completions/_hotswap"),
            Shell::Fish => include_str!("../packaging/completions/hotswap.fish"),
        }
    }
}

/// Parses hotswap's own command line; a usage error comes with [`with_hints`].
pub fn try_parse() -> Result<Cli, clap::Error> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&argv).map_err(|e| with_hints(e, &argv))
}

/// Adds what clap cannot know to a usage error about an unexpected argument: a command without
/// its `--` (`hotswap --listen :3000 node server.js`) gets the command line that works, and an
/// option given to the wrong subcommand (`hotswap reload web --json`) the subcommands that have
/// it, instead of clap's advice to pass it as a value after `--` (no subcommand takes one).
pub fn with_hints(mut err: clap::Error, argv: &[OsString]) -> clap::Error {
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg).cloned() else {
        return err;
    };
    let cmd = Cli::command();
    let subcommand = argv
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| cmd.get_subcommands().find(|s| s.get_name() == a));
    let tips: Vec<StyledStr> = match subcommand {
        // Run mode: the program and its arguments go after `--`.
        None if !arg.starts_with('-') => {
            let fixed = (1..argv.len()).filter(|&i| argv[i] == arg.as_str()).find_map(|i| {
                let mut fixed = argv.to_vec();
                fixed.insert(i, "--".into());
                Cli::try_parse_from(&fixed).is_ok().then_some(fixed)
            });
            let line = match fixed {
                Some(fixed) => {
                    let words: Vec<String> =
                        fixed.iter().skip(1).map(|a| shell_word(&a.to_string_lossy())).collect();
                    format!("hotswap {}", words.join(" "))
                }
                None => "hotswap [OPTIONS] -- <COMMAND> [ARGS]...".to_string(),
            };
            vec![format!("the command to run goes after '--': '{line}'").into()]
        }
        // An option: where it exists, if anywhere.
        _ => {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
            let owners: Vec<String> = cmd
                .get_subcommands()
                .filter(|other| subcommand.is_none_or(|sub| other.get_name() != sub.get_name()))
                .filter(|other| other.get_arguments().any(|a| takes_flag(a, flag)))
                .map(|other| format!("'hotswap {} {flag}'", other.get_name()))
                .collect();
            match owners.as_slice() {
                [] => Vec::new(),
                [one] => vec![format!("{one} exists").into()],
                _ => vec![format!("{} exist", owners.join(" and ")).into()],
            }
        }
    };
    err.remove(ContextKind::Suggested);
    if !tips.is_empty() {
        err.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    }
    err
}

/// Whether `arg` is spelled `flag` (`--json`, `-n`).
fn takes_flag(arg: &clap::Arg, flag: &str) -> bool {
    match flag.strip_prefix("--") {
        Some(long) => arg.get_long() == Some(long),
        None => flag
            .strip_prefix('-')
            .and_then(|s| s.parse::<char>().ok())
            .is_some_and(|c| arg.get_short() == Some(c)),
    }
}

/// `word`, quoted for a POSIX shell if it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    match plain {
        true => word.to_string(),
        false => format!("'{}'", word.replace('\'', r"'\''")),
    }
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

    /// The error `hotswap ARGS` gets, as its user sees it (without colours).
    fn usage_error(args: &[&str]) -> String {
        let argv: Vec<OsString> =
            std::iter::once("hotswap").chain(args.iter().copied()).map(OsString::from).collect();
        let err = Cli::try_parse_from(&argv).expect_err("a usage error");
        let err = with_hints(err, &argv);
        assert_eq!(err.exit_code(), 2);
        err.render().to_string()
    }

    #[test]
    fn a_command_without_its_double_dash_gets_the_line_that_works() {
        let shown = usage_error(&["--listen", ":3000", "node", "server.js"]);
        assert!(shown.contains("unexpected argument 'node'"), "{shown}");
        assert!(
            shown.contains("'hotswap --listen :3000 -- node server.js'"),
            "names the fixed command line: {shown}"
        );
        // An option's value that looks like the program is not where `--` goes.
        let shown = usage_error(&["--name", "node", "node", "it's.js"]);
        assert!(shown.contains(r"'hotswap --name node -- node 'it'\''s.js''"), "{shown}");
        let shown = usage_error(&["node", "server.js"]);
        assert!(shown.contains("'hotswap -- node server.js'"), "{shown}");
    }

    #[test]
    fn an_option_of_another_subcommand_names_it_instead_of_a_trailing_value() {
        let shown = usage_error(&["reload", "web", "--json"]);
        assert!(shown.contains("unexpected argument '--json'"), "{shown}");
        assert!(!shown.contains("-- --json"), "no value after -- to pass: {shown}");
        assert!(
            shown.contains("'hotswap status --json' and 'hotswap list --json' exist"),
            "{shown}"
        );
        let shown = usage_error(&["status", "--wait"]);
        assert!(
            shown.contains("'hotswap reload --wait' and 'hotswap rollback --wait' exist"),
            "{shown}"
        );
        let shown = usage_error(&["list", "--bogus"]);
        assert!(!shown.contains("tip:"), "nothing to suggest: {shown}");
        // In run mode too: no program takes `--json` after `--` from hotswap's options.
        let shown = usage_error(&["--json"]);
        assert!(!shown.contains("-- --json"), "{shown}");
        assert!(
            shown.contains("'hotswap status --json' and 'hotswap list --json' exist"),
            "{shown}"
        );
        let shown = usage_error(&["--lisen", ":3000", "--", "node"]);
        assert!(shown.contains("a similar argument exists: '--listen'"), "{shown}");
        assert!(!shown.contains("-- --lisen"), "{shown}");
    }

    #[test]
    fn completions_and_list_are_subcommands() {
        let cli = Cli::try_parse_from(["hotswap", "completions", "bash"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Completions(CompletionsArgs { shell: Shell::Bash }))
        ));
        let cli = Cli::try_parse_from(["hotswap", "list", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::List(ListArgs { json: true }))));
        assert!(Cli::try_parse_from(["hotswap", "completions", "tcsh"]).is_err());
    }
}
