//! The `flamewarden` binary: parse the command line and hand over to the library.
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match flamewarden::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            // clap's first line names the argument and the value; keep errors to one line.
            let text = error.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("flamewarden: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
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
