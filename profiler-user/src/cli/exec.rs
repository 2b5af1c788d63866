//! `flamewarden exec --policy FILE [--workdir DIR] -- COMMAND`: apply the Landlock, seccomp and
//! rlimit layers to this process and execute the command, for judges that already have their
//! own sandbox (isolate, nsjail, go-judge) and want these layers inside it.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Args;

use crate::{
    guard::{PreparedCommand, PreparedLayers, resolve_command},
    policy::{self, Mode},
};

/// Arguments of `flamewarden exec`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flamewarden exec --policy policies/judge.toml --workdir /tmp/run1 -- ./solution\n  \
    flamewarden exec --policy policies/interpreted.toml -- /usr/bin/python3 solution.py\n\n\
    The command runs in the work directory. Wall time, fork rate and network addresses are not \
    enforced here: they need `flamewarden sandbox run` or the judge's own supervisor."
)]
pub struct ExecArgs {
    /// The sandbox policy (TOML, see docs/policy.md).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// The run's work directory: `{workdir}` in the policy, and the command's current directory
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The command and its arguments; `{command}` in the policy is the resolved executable.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Applies the layers and execs; returns only on failure.
pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let compiled = policy::load(&args.policy)?;
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let workdir = std::fs::canonicalize(&workdir)
        .with_context(|| format!("work directory {}", workdir.display()))?;
    let program = resolve_command(&args.command[0])?;
    let layers = PreparedLayers::prepare(&compiled, &workdir, &program)?;
    let command = PreparedCommand::new(&program, &args.command)?;
    if layers.mode() == Mode::Audit {
        tracing::warn!("audit mode: Landlock is not applied and seccomp rules only log");
    } else if layers.landlock_abi() < 6 {
        tracing::warn!(
            abi = layers.landlock_abi(),
            "old Landlock ABI: signal scoping (6) or TCP rules (4) are missing"
        );
    }
    tracing::debug!(policy = %policy::summary(&compiled), program = %program.display(), "applying the guard layers");
    std::env::set_current_dir(&workdir)
        .with_context(|| format!("cannot enter {}", workdir.display()))?;
    // Rust ignores SIGPIPE; an ignored signal stays ignored across exec, which the command
    // would not expect.
    // SAFETY: restoring a default disposition; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    layers
        .apply_in_child()
        .map_err(|errno| std::io::Error::from_raw_os_error(errno.into_raw()))
        .context("cannot apply the guard layers")?;
    let error = std::io::Error::from_raw_os_error(command.exec().into_raw());
    Err(error).with_context(|| format!("cannot execute {}", program.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn exec_takes_the_command_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "flamewarden",
            "exec",
            "--policy",
            "p.toml",
            "--workdir",
            "/tmp",
            "--",
            "./sol",
            "-x",
        ])
        .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.policy, std::path::Path::new("p.toml"));
        assert_eq!(args.command, ["./sol", "-x"]);
        assert!(
            Cli::try_parse_from(["flamewarden", "exec", "--policy", "p.toml"]).is_err(),
            "a command is required"
        );
    }
}
