use clap::Parser;

use hotswap::cli::{Cli, Command};
use hotswap::sys::process;

fn main() {
    // First: a signal that arrives before the handlers exist must wait for them.
    let blocked = process::block_handled_signals();
    let cli = Cli::parse(); // usage errors: one line, exit 2
    hotswap::logging::init();
    if let Err(e) = blocked {
        tracing::warn!("signal mask: {e}");
    }
    let code = match cli.command {
        Some(command) => {
            let _ = process::unblock_all_signals();
            match command {
                Command::Reload(args) => hotswap::client::reload(args),
                Command::Status(args) => hotswap::client::status(args),
            }
        }
        None => hotswap::run::run(cli.run),
    };
    std::process::exit(code);
}
