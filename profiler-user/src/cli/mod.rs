//! Command-line interface: clap derive, one module per subcommand.

pub mod ci;
pub mod control;
pub mod daemon;
pub mod exec;
pub mod guard;
pub mod net;
pub mod output;
pub mod policy;
pub mod record;
pub mod sandbox;
pub mod syscalls;

use std::{
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// eBPF CPU, syscall and network profiler, and sandbox guard for online judges.
#[derive(Debug, Parser)]
#[command(name = "flamewarden", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `debug` or `flamewarden=trace`.
    #[arg(long, global = true, env = "FLAMEWARDEN_LOG", default_value = "warn")]
    pub log: String,
    /// Log line format: `text`, or `json` (one object per line with timestamp, level, target,
    /// message and fields).
    #[arg(
        long,
        global = true,
        env = "FLAMEWARDEN_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record CPU samples and write a flamegraph, folded stacks or JSON, plus a hot-path table.
    Record(record::RecordArgs),
    /// Count, time and errors of syscalls per syscall, process or cgroup; stream slow calls.
    Syscalls(syscalls::SyscallsArgs),
    /// TCP connects, failures, latency, lifetime, retransmits, resets and bytes; traffic per cgroup.
    Net(net::NetArgs),
    /// Validate a sandbox policy (`check`) or say what it allows (`explain`).
    Policy(policy::PolicyArgs),
    /// Apply a policy's Landlock, seccomp and rlimit layers to this process, then exec COMMAND.
    Exec(exec::ExecArgs),
    /// Attach or detach the cgroup-BPF network guard on an existing cgroup.
    Guard(guard::GuardArgs),
    /// Run a submission under a policy in a fresh cgroup and print its verdict.
    Sandbox(sandbox::SandboxArgs),
    /// Profile a benchmark in CI: flamegraph, pprof, diff against a baseline, gate on regressions.
    Ci(ci::CiArgs),
    /// The node agent: Prometheus metrics, on-demand profiles over HTTP, guard for every
    /// discovered sandbox, events and a web page.
    Daemon(daemon::DaemonArgs),
}

/// Registers SIGINT and SIGTERM on a flag that long-running commands poll.
pub fn stop_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Runs the parsed command line; errors are printed by the caller as one line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::logging::init(&cli.log, cli.log_format)?;
    match cli.command {
        Command::Record(args) => record::run(args),
        Command::Syscalls(args) => syscalls::run(args),
        Command::Net(args) => net::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Ci(args) => ci::run(args),
        Command::Guard(args) => guard::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Daemon(args) => daemon::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
