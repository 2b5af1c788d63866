//! `flamewarden sandbox run`: one submission in a fresh cgroup under a policy, with a verdict.
//! See docs/sandbox.md.

pub mod cgroup;
mod child;
mod profile;
mod run;
pub mod stack;
mod supervise;
pub mod verdict;

pub use run::{SandboxError, SandboxOptions};
pub use verdict::{Status, Verdict, Violation};

/// Runs one command under a policy; `stop` (Ctrl-C, SIGTERM) ends it early. The verdict is
/// also reported to a running `flamewarden daemon` (best effort, never waiting for it).
pub fn run(
    opts: &SandboxOptions,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Verdict, SandboxError> {
    let verdict = run::run(opts, stop)?;
    crate::daemon::verdicts::report(&verdict);
    Ok(verdict)
}
