//! `flamewarden sandbox run`: one submission under a policy in a fresh cgroup, with a verdict.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use crate::{
    policy::Mode,
    sandbox::{self, CommandEnv, EnvVar, SandboxOptions, Status},
};

/// `sandbox` subcommands.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SandboxAction,
}

/// What `sandbox` does.
#[derive(Debug, Subcommand)]
pub enum SandboxAction {
    /// Run COMMAND under a policy in a fresh cgroup and print its verdict (JSON) on stderr.
    Run(RunArgs),
    /// Run many submissions, one per line of standard input (JSON), printing one verdict per
    /// line on standard output: the policy is parsed and the kernel side set up once.
    #[command(
        after_help = "Each input line: {\"command\": [\"./sol\", \"arg\"], \"stdin\": \"in.txt\", \
        \"stdout\": \"out.txt\", \"stderr\": \"err.txt\", \"workdir\": \"/tmp/run1\", \
        \"env\": [\"LANG\", \"N=1\"], \"full_env\": false}; only `command` is required. The \
        command's standard output goes to /dev/null unless `stdout` is given. A line that cannot \
        be run gives {\"error\": \"...\", \"line\": N}.\n\n\
        Example:\n  printf '{\"command\": [\"/bin/true\"]}\\n' | flamewarden sandbox batch --policy policies/judge.toml"
    )]
    Batch(BatchArgs),
}

/// The mode given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Deny what the policy forbids.
    Enforce,
    /// Deny nothing; report what would have been denied.
    Audit,
}

/// The command's environment, as on the command line.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Give the command this variable: `NAME` passes flamewarden's value on, `NAME=VALUE` sets
    /// it (repeatable). Without `--full-env` the command gets only these and PATH (default
    /// /usr/local/bin:/usr/bin:/bin): the judge's own environment stays out of the sandbox.
    #[arg(long = "env", short = 'E', value_name = "NAME[=VALUE]", value_parser = parse_env_var)]
    pub vars: Vec<EnvVar>,
    /// Pass flamewarden's whole environment on to the command (`--env` applies on top).
    #[arg(long)]
    pub full_env: bool,
}

impl EnvArgs {
    fn command_env(&self) -> CommandEnv {
        CommandEnv {
            full: self.full_env,
            vars: self.vars.clone(),
        }
    }
}

fn parse_env_var(argument: &str) -> Result<EnvVar, String> {
    EnvVar::parse(argument.as_ref()).map_err(|e| e.to_string())
}

/// `sandbox run` options.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flamewarden sandbox run --policy policies/judge.toml --stdin in.txt --json verdict.json -- ./solution\n  \
    flamewarden sandbox run --policy policies/judge.toml --mode audit -- ./solution\n  \
    flamewarden sandbox run --policy policies/interpreted.toml --workdir /tmp/run1 -- /usr/bin/python3 sol.py\n\n\
    Exit status: 0 when the verdict is ok, 1 for any other verdict, 2 when the run could not start.\n\
    The verdict's fields are documented in docs/sandbox.md.")]
pub struct RunArgs {
    /// The sandbox policy (TOML, see docs/policy.md).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Override the policy's mode.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The run's private writable directory (default: a fresh temporary one, removed after).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Standard input of the command.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// Standard output of the command (default: flamewarden's).
    #[arg(long, value_name = "FILE")]
    pub stdout: Option<PathBuf>,
    /// Standard error of the command (default: flamewarden's).
    #[arg(long, value_name = "FILE")]
    pub stderr: Option<PathBuf>,
    /// Also write the verdict to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Record a CPU flamegraph of the run (every process of its cgroup) to this file: .svg,
    /// .folded, .json or .pb.gz.
    #[arg(long, value_name = "OUT")]
    pub profile: Option<PathBuf>,
    /// The command's environment.
    #[command(flatten)]
    pub env: EnvArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `sandbox batch` options.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The sandbox policy (TOML, see docs/policy.md).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Override the policy's mode.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Every run's environment (a line's `env` adds to it).
    #[command(flatten)]
    pub env: EnvArgs,
}

/// One line of `sandbox batch` input.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRun {
    command: Vec<String>,
    stdin: Option<PathBuf>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    workdir: Option<PathBuf>,
    /// `NAME` or `NAME=VALUE`, after the command line's `--env`.
    #[serde(default)]
    env: Vec<String>,
    /// Overrides `--full-env`.
    full_env: Option<bool>,
}

/// Runs `sandbox`.
pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        SandboxAction::Run(args) => run_one(args),
        SandboxAction::Batch(args) => run_batch(args),
    }
}

fn mode(arg: Option<ModeArg>) -> Option<Mode> {
    arg.map(|m| match m {
        ModeArg::Enforce => Mode::Enforce,
        ModeArg::Audit => Mode::Audit,
    })
}

fn run_batch(args: BatchArgs) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead as _, Write as _};
    let stop = super::stop_flag().context("cannot install the signal handlers")?;
    // Fail early, with file:line:column, on a bad policy.
    crate::policy::load(&args.policy)?;
    let ahead = sandbox::Ahead::start().context("cannot start the batch's cgroup thread")?;
    let mut out = std::io::stdout().lock();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<BatchRun>(&line)
            .map_err(anyhow::Error::from)
            .and_then(|run| {
                anyhow::ensure!(!run.command.is_empty(), "`command` is empty");
                let mut env = args.env.command_env();
                for var in &run.env {
                    env.vars.push(EnvVar::parse(var.as_ref()).context("`env`")?);
                }
                env.full = run.full_env.unwrap_or(env.full);
                let opts = SandboxOptions {
                    policy: args.policy.clone(),
                    mode: mode(args.mode),
                    workdir: run.workdir,
                    stdin: run.stdin,
                    stdout: Some(run.stdout.unwrap_or_else(|| "/dev/null".into())),
                    stderr: run.stderr,
                    command: run.command.into_iter().map(OsString::from).collect(),
                    profile: None,
                    env,
                };
                Ok(sandbox::run_ahead(&opts, &stop, Some(&ahead))?)
            });
        let text = match result {
            Ok(verdict) => serde_json::to_string(&verdict)?,
            Err(e) => serde_json::json!({ "error": format!("{e:#}"), "line": n + 1 }).to_string(),
        };
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    sandbox::release_sys_hooks();
    Ok(ExitCode::SUCCESS)
}

fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let stop = super::stop_flag().context("cannot install the signal handlers")?;
    let opts = SandboxOptions {
        policy: args.policy,
        mode: mode(args.mode),
        workdir: args.workdir,
        stdin: args.stdin,
        stdout: args.stdout,
        stderr: args.stderr,
        env: args.env.command_env(),
        command: args.command,
        profile: args.profile,
    };
    let verdict = sandbox::run(&opts, &stop)?;
    let text = serde_json::to_string_pretty(&verdict).context("cannot encode the verdict")?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!("{text}");
    Ok(if verdict.status == Status::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
