use clap::Parser;

use hotswap::cli::{Cli, Command};
use hotswap::sys::process;

fn main() {
    // First: a signal that arrives before the handlers exist must wait for them.
    let blocked = process::block_handled_signals();
    // Usage errors: one line, exit 2.
    let cli = Cli::try_parse().unwrap_or_else(|e| {
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
            }
        }
        None => hotswap::run::run(cli.run),
    };
    std::process::exit(code);
}
