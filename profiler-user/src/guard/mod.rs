//! The sandbox guard's in-process layers: Landlock, seccomp, rlimits and `no_new_privs`, applied
//! to a process right before it executes a submission.
//!
//! Everything that allocates or can fail in an interesting way happens in
//! [`PreparedLayers::prepare`], before `fork`: resolving the policy's placeholders, building the
//! Landlock ruleset (an fd) and compiling the seccomp filters (BPF programs).
//! [`PreparedLayers::apply_in_child`] then only makes system calls, so it is safe between `fork`
//! and `execve` in a multi-threaded parent. `flamewarden exec` applies the layers to itself;
//! `flamewarden sandbox run` applies them in its forked child.

pub mod attach;
pub mod exec;
pub mod interpreters;
mod landlock;
pub mod run_entry;
mod seccomp;
mod seccomp_tree;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use exec::{PreparedCommand, PreparedLayers, resolve_command};

use crate::policy::PolicyError;

/// Why the guard's layers could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The policy's placeholders could not be filled in for this run.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The kernel has no Landlock (not built in, or not in the `lsm=` boot list).
    #[error(
        "Landlock is not available on this kernel (enable it with lsm=...,landlock); refusing to run unconfined"
    )]
    LandlockUnavailable,
    /// Building the Landlock ruleset failed.
    #[error("cannot build the Landlock ruleset")]
    Landlock(#[from] ::landlock::RulesetError),
    /// A path of the policy could not be opened for a Landlock rule.
    #[error("cannot open {} for a Landlock rule", path.display())]
    LandlockPath {
        /// The path.
        path: PathBuf,
        /// Why.
        source: ::landlock::PathFdError,
    },
    /// This architecture has no seccomp filter support in the filter compiler.
    #[error("seccomp filters are not supported on {0}")]
    UnsupportedArch(String),
    /// The seccomp filter could not be compiled.
    #[error("cannot compile the seccomp filter")]
    Seccomp(#[from] seccompiler::BackendError),
    /// A resource limit could not be read.
    #[error("cannot read resource limit {name}")]
    Rlimit {
        /// The limit (`RLIMIT_CPU`).
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The command to run could not be found or named.
    #[error("{command}: {reason}")]
    Command {
        /// The command as given.
        command: String,
        /// Why it cannot be run.
        reason: String,
    },
}
