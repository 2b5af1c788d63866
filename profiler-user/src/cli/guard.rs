//! `flamewarden guard attach|detach --cgroup PATH`: the cgroup-BPF network layer on a cgroup
//! someone else created, pinned so that it outlives flamewarden.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::{
    guard::attach::{self, AttachReport},
    policy,
    probes::guard::AttachOutcome,
};

/// Arguments of `flamewarden guard`.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: GuardAction,
}

/// `guard` subcommands.
#[derive(Debug, Subcommand)]
pub enum GuardAction {
    /// Attach the network programs to a cgroup (all its descendants included), write its
    /// policy, pin everything under /sys/fs/bpf/flamewarden/<cgroup-id>/ and exit.
    #[command(
        after_help = "Example:\n  flamewarden guard attach --cgroup /sys/fs/cgroup/unified/judge --policy policies/judge.toml\n\n\
        Attaching again adopts the pinned programs and only rewrites the policy."
    )]
    Attach {
        /// The cgroup v2 directory.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
        /// The sandbox policy; its `[network]` section and mode are applied.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Detach the network programs from a cgroup and remove their pins.
    Detach {
        /// The cgroup v2 directory.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
    },
}

/// Runs `flamewarden guard`.
pub fn run(args: GuardArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        GuardAction::Attach { cgroup, policy } => {
            let compiled = policy::load(&policy)?;
            let report = attach::attach(&cgroup, &compiled)?;
            print_attach(&cgroup, &policy, &report);
        }
        GuardAction::Detach { cgroup } => {
            let (id, attached) = attach::detach(&cgroup)?;
            if attached {
                println!(
                    "detached the network guard from {} (cgroup id {id}) and removed its pins",
                    cgroup.display()
                );
            } else {
                println!("nothing attached to {} (cgroup id {id})", cgroup.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_attach(cgroup: &std::path::Path, policy: &std::path::Path, report: &AttachReport) {
    let verb = match report.outcome {
        AttachOutcome::Attached => "attached",
        AttachOutcome::Adopted => "adopted the pinned",
    };
    println!(
        "{verb} network guard programs on {} (cgroup id {})",
        cgroup.display(),
        report.cgroup_id
    );
    println!("pinned under {}", report.pin_dir.display());
    println!(
        "policy {} written for cgroup {}: flags {:#x}, {} allow rule(s)",
        policy.display(),
        report.cgroup_id,
        report.entries.policy.flags,
        report.entries.allow.len()
    );
}
