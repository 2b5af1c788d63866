//! The `flamewarden` binary: parse the command line and hand over to the library.
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = flamewarden::cli::Cli::parse();
    match flamewarden::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // One line a user can act on: the error and its causes.
            let causes: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("flamewarden: {}", causes.join(": "));
            ExitCode::from(2)
        }
    }
}
