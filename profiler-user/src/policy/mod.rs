//! Sandbox policies: parsing, validation and compilation into the enforcement layers.
//!
//! A policy file (TOML, documented in `docs/policy.md`) describes what a submission may do.
//! [`load`] / [`parse`] validate it and compile it into a [`CompiledPolicy`]: a Landlock layer
//! (path trees, TCP ports, scopes), a seccomp layer (syscall rules, with the socket rules the
//! network section implies), a network layer (allow entries laid out for cgroup-BPF maps keyed
//! by cgroup id), resource limits and the syscalls the tracepoint kills at entry. Every error
//! names `file:line:column` and the field.
//!
//! This module is pure (it only reads the policy and checks that paths exist) and uses nothing
//! from the rest of the crate, so that `fuzz/` compiles it on its own.

mod compile;
pub mod compiled;
pub mod error;
mod explain;
mod names;
mod network;
mod paths;
mod schema;
mod syscalls;
pub mod units;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use compiled::{
    ArgCheck, ArgTest, CompiledPolicy, DeniedPath, FsAccess, LandlockLayer, Limits, NetAllow,
    NetworkLayer, PathRule, PathTemplate, QuietPath, SeccompLayer, SyscallAction, SyscallRule,
};
pub use error::{Contradiction, Location, PolicyError};
pub use explain::{explain, layers, summary};
pub use paths::ResolvedPath;
pub use schema::Mode;

/// Validates and compiles the policy text `text`; `name` is the file name used in messages.
pub fn parse(name: &str, text: &str) -> Result<CompiledPolicy, PolicyError> {
    compile::compile(&error::Source { name, text })
}

/// Reads, validates and compiles the policy file at `path`.
pub fn load(path: &Path) -> Result<CompiledPolicy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

impl CompiledPolicy {
    /// The Landlock path rules for one run: `{workdir}` and `{command}` filled in (both must be
    /// absolute), optional paths that are missing dropped, required ones checked, and denied
    /// paths checked again now that the placeholders are known.
    pub fn resolve_paths(
        &self,
        workdir: &Path,
        command: &Path,
    ) -> Result<Vec<ResolvedPath>, PolicyError> {
        paths::resolve(
            &self.landlock.paths,
            &self.landlock.denied,
            workdir,
            command,
        )
    }
}
