//! `flamewarden sandbox run`: one submission in a fresh cgroup under a policy, with a verdict.
//! See docs/sandbox.md.

mod ahead;
pub mod cgroup;
mod child;
pub mod environment;
mod profile;
mod registered;
mod run;
pub mod stack;
mod supervise;
pub mod verdict;
mod workdir;

pub use ahead::Ahead;
pub use environment::{CommandEnv, EnvVar};
pub use registered::release_sys_hooks;
pub use run::{SandboxError, SandboxOptions};
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

/// Whether `name` (`<prefix><pid>-...`: a run's cgroup, a fresh work directory) was made by a
/// flamewarden that is gone: another pid than ours, no longer running.
fn made_by_a_gone_flamewarden(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

#[cfg(test)]
mod tests {
    use super::made_by_a_gone_flamewarden;

    #[test]
    fn only_names_of_gone_flamewardens_are_reaped() {
        let own = std::process::id();
        assert!(!made_by_a_gone_flamewarden(&format!("run-{own}-3"), "run-"));
        assert!(!made_by_a_gone_flamewarden("run-1-0", "run-"), "pid 1 runs");
        assert!(made_by_a_gone_flamewarden("run-4294967294-0", "run-"));
        assert!(made_by_a_gone_flamewarden(
            "flamewarden-run-4294967294-Ab3x",
            "flamewarden-run-"
        ));
        assert!(!made_by_a_gone_flamewarden(
            "flamewarden-run-Ab3xQz",
            "flamewarden-run-"
        ));
        assert!(!made_by_a_gone_flamewarden("other-4294967294-0", "run-"));
    }
}
