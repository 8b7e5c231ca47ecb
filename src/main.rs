use std::path::{Path, PathBuf};

use hotswap::cli::{self, Command, RunArgs, naming};
use hotswap::sys::process;

fn main() {
    // First: a signal that arrives before the handlers exist must wait for them.
    let blocked = process::block_handled_signals();
    // Usage errors: one line (and a hint), exit 2.
    let cli = cli::try_parse().unwrap_or_else(|e| {
        // After a USR2, a new binary that no longer takes the arguments the
        // service was started with gives the service back to the old one.
        if let Some(Ok(resume)) = hotswap::sys::reexec::take() {
            let _ = e.print();
            eprintln!("hotswap: USR2: this binary cannot resume the service: the previous one takes it back");
            eprintln!("hotswap: USR2: cannot run the previous binary: {}", resume.fall_back());
        }
        e.exit()
    });
    hotswap::logging::init(cli.run.log_format);
    if let Err(e) = blocked {
        tracing::warn!("signal mask: {e}");
    }
    let code = match cli.command {
        Some(command) => {
            let _ = process::unblock_all_signals();
            match command {
                Command::Reload(args) => hotswap::client::reload(args, false),
                Command::Rollback(args) => hotswap::client::reload(args, true),
                Command::Status(args) => hotswap::client::status(args),
                Command::List(args) => hotswap::client::list(args),
                Command::Completions(args) => completions(args.shell),
            }
        }
        None => hotswap::run::run(with_default_name(cli.run)),
    };
    std::process::exit(code);
}

/// `--name`, when not given, from the command (DESIGN.md §1, `cli::naming`).
fn with_default_name(mut args: RunArgs) -> RunArgs {
    if args.name.is_none() {
        let workdir = args.chdir.clone().or_else(pwd).unwrap_or_else(|| ".".into());
        args.name = naming::default_name(&args.command, |dir| project_name(&workdir.join(dir)));
    }
    args
}

/// The `name` in `dir/package.json`, else the directory's own name.
fn project_name(dir: &Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Package {
        name: Option<String>,
    }
    let from_package = std::fs::read(dir.join("package.json"))
        .ok()
        .and_then(|json| serde_json::from_slice::<Package>(&json).ok()?.name);
    let dir = std::path::absolute(dir).ok()?;
    let dir = dir.components().collect::<PathBuf>(); // `a/b/.` is `a/b`
    from_package.or_else(|| Some(dir.file_name()?.to_str()?.to_string()))
}

/// `$PWD` if it names the working directory (a `current` symlink stays as the user wrote it).
fn pwd() -> Option<PathBuf> {
    let pwd = PathBuf::from(std::env::var_os("PWD")?);
    let same = std::fs::canonicalize(&pwd).ok()? == std::env::current_dir().ok()?;
    same.then_some(pwd)
}

/// `hotswap completions SHELL`.
fn completions(shell: cli::Shell) -> i32 {
    use std::io::Write;
    match std::io::stdout().write_all(shell.completion_script().as_bytes()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hotswap: {e}");
            1
        }
    }
}
