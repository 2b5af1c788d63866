//! `flamewarden policy check|explain FILE`: validate a sandbox policy and show what it does.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::policy;

/// Arguments of `flamewarden policy`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flamewarden policy check policies/judge.toml\n  \
    flamewarden policy explain policies/interpreted.toml\n\nThe format: docs/policy.md."
)]
pub struct PolicyArgs {
    /// What to do with the policy.
    #[command(subcommand)]
    pub action: PolicyAction,
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Validate a policy and print the compiled layers (Landlock, seccomp, network, limits).
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Say in plain words what a submission may and may not do under a policy.
    Explain {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

/// Runs `flamewarden policy`; an invalid policy is an error naming file:line:column and field.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.action {
        PolicyAction::Check { file } => policy::layers(&policy::load(file)?),
        PolicyAction::Explain { file } => policy::explain(&policy::load(file)?),
    };
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
