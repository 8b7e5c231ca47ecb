use clap::Parser;

use hotswap::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse(); // usage errors: one line, exit 2
    hotswap::logging::init();
    let code = match cli.command {
        Some(Command::Reload(args)) => hotswap::client::reload(args),
        Some(Command::Status(args)) => hotswap::client::status(args),
        None => hotswap::run::run(cli.run),
    };
    std::process::exit(code);
}
