//! `flamewarden sandbox run`: one submission in a fresh cgroup under a policy, with a verdict.
//! See docs/sandbox.md.

pub mod cgroup;
mod child;
mod profile;
mod run;
pub mod stack;
mod supervise;
pub mod verdict;

pub use run::{SandboxError, SandboxOptions, run};
pub use verdict::{Status, Verdict, Violation};
