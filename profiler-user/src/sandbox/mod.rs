//! `flamewarden sandbox run`: one submission in a fresh cgroup under a policy, with a verdict.
//! See docs/sandbox.md.

mod ahead;
pub mod cgroup;
mod child;
pub mod environment;
mod profile;
mod run;
pub mod stack;
mod supervise;
pub mod verdict;
mod workdir;

pub use ahead::Ahead;
pub use environment::{CommandEnv, EnvVar};
pub use run::{SandboxError, SandboxOptions, release_sys_hooks};
pub use verdict::{Status, Verdict, Violation};

/// Runs one command under a policy; `stop` (Ctrl-C, SIGTERM) ends it early. The verdict is
/// also reported to a running `flamewarden daemon` (best effort, never waiting for it).
pub fn run(
    opts: &SandboxOptions,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Verdict, SandboxError> {
    run_ahead(opts, stop, None)
}

/// [`run`] in a batch: the run's cgroups and work directory made and removed by `ahead`'s
/// thread (see [`Ahead`]).
pub fn run_ahead(
    opts: &SandboxOptions,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ahead: Option<&Ahead>,
) -> Result<Verdict, SandboxError> {
    let verdict = run::run(opts, stop, ahead)?;
    crate::daemon::verdicts::report(&verdict);
    Ok(verdict)
}
