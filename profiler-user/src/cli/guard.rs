//! `flamewarden guard attach|detach --cgroup PATH`: the cgroup-BPF network layer on a cgroup
//! someone else created, pinned so that it outlives flamewarden; `guard release`: the syscall
//! layer of idle `sandbox run`s detached.

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
    /// Print the violations the attachment on a cgroup reports, one JSON object per line,
    /// until Ctrl-C or `--duration`; then the count of events the kernel dropped, on stderr.
    #[command(
        after_help = "Example:\n  flamewarden guard watch --cgroup /sys/fs/cgroup/unified/judge -d 60\n\n\
        Run one watcher per attachment: the kernel's event buffer has a single reader."
    )]
    Watch {
        /// The cgroup v2 directory the guard is attached to.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
        /// Stop after SECS.
        #[arg(short, long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// Detach the network programs from a cgroup and remove their pins.
    Detach {
        /// The cgroup v2 directory.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
    },
    /// Detach the syscall layer (sys_enter/sys_exit tracepoints, a cost on every system call of
    /// the host) that `sandbox run` leaves attached for its next run, where no run is
    /// registered; the next run attaches it again. `flamewarden daemon` does this by itself
    /// after `guard_idle_detach_seconds`.
    Release,
}

/// Runs `flamewarden guard`.
pub fn run(args: GuardArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        GuardAction::Attach { cgroup, policy } => {
            let compiled = policy::load(&policy)?;
            let report = attach::attach(&cgroup, &compiled)?;
            print_attach(&cgroup, &policy, &report);
        }
        GuardAction::Watch { cgroup, duration } => watch(&cgroup, duration)?,
        GuardAction::Release => {
            for dir in crate::probes::guard::while_runs_dirs() {
                let released = crate::probes::guard::release_sys_hooks(&dir)?;
                println!(
                    "{}: {}",
                    dir.display(),
                    if released {
                        "syscall layer detached"
                    } else if crate::probes::guard::sys_hooks_attached(&dir) {
                        "syscall layer kept: a run is registered"
                    } else {
                        "syscall layer not attached"
                    }
                );
            }
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

fn watch(cgroup: &std::path::Path, duration: Option<f64>) -> anyhow::Result<()> {
    use std::{io::Write as _, sync::atomic::Ordering, time::Duration, time::Instant};

    let id = crate::probes::guard::cgroup_id(cgroup)?;
    let dir = crate::probes::guard::pin_dir(id);
    anyhow::ensure!(
        crate::probes::guard::is_attached(&dir),
        "nothing attached to {} (cgroup id {id}): run `flamewarden guard attach` first",
        cgroup.display()
    );
    let mut reader = crate::collect::guard::GuardEventReader::open(&dir)?;
    let lost_before = reader.lost();
    let stop = super::stop_flag()?;
    let started = Instant::now();
    let limit = duration.map(Duration::from_secs_f64);
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| started.elapsed() < l) {
        for violation in reader.poll(Duration::from_millis(100)) {
            writeln!(out, "{}", serde_json::to_string(&violation)?)?;
        }
        out.flush()?;
    }
    eprintln!(
        "events lost (ring buffer full) while watching: {}",
        reader.lost().saturating_sub(lost_before)
    );
    Ok(())
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
