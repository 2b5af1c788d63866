//! Developer tasks: `cargo xtask setup | build | test | demo | bench`.
//!
//! Every command first sets up what it needs (fast when everything is present), so
//! `cargo xtask demo` and `cargo xtask test` work on a fresh machine.

mod bench;
mod build;
mod codegen;
mod demo;
mod env;
mod fuzz;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// flamewarden's developer tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install and check what the build, the tests and the benchmarks need (idempotent).
    Setup,
    /// Build the flamewarden binary with its real eBPF object and print its path.
    Build(build::BuildArgs),
    /// Check formatting and lints, run the unit tests, then the end-to-end tests.
    Test(test::TestArgs),
    /// Profile the bundled demo workload: flamegraph, folded stacks, JSON and hot-path table.
    Demo,
    /// Run a benchmark (all implemented ones without NAME).
    Bench(bench::BenchArgs),
    /// Run a cargo-fuzz target of fuzz/ (nightly; installs cargo-fuzz if missing).
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate checked-in code (the pprof types from `profile.proto`; needs protoc).
    Codegen,
}

fn main() -> ExitCode {
    env::prepare();
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain, without the backtrace anyhow's Debug adds under RUST_BACKTRACE:
            // the failing command is the useful part.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup => setup::run(setup::Scope::All),
        Command::Build(args) => build::run_command(&args),
        Command::Test(args) => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Codegen => codegen::run(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
