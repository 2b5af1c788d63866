//! `cargo xtask setup`: the nightly toolchain, bpf-linker, tracefs/bpffs mounts and the system
//! packages the tests and benchmarks use.
//!
//! Idempotent, and fast when everything is present: the checks only look at files and run
//! `rustup toolchain list`, `rustc --print sysroot` and `bpf-linker --version`.

mod bpf_linker;
mod mounts;
mod packages;
mod toolchain;

use anyhow::{Context as _, bail};

use crate::env::is_root;

/// How much of the machine a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What `cargo build` needs: nightly, rust-src, bpf-linker. No root required.
    Build,
    /// Everything: also the mounts and packages for running, testing and benchmarking.
    All,
}

/// What a step found or did.
#[derive(Debug)]
enum Outcome {
    /// Already in place; nothing changed.
    Present(String),
    /// Installed, built or mounted just now.
    Done(String),
    /// Missing, and only root can fix it: what to run.
    NeedsRoot(String),
}

/// Runs the steps of `scope` in order, printing one line per step.
pub fn run(scope: Scope) -> anyhow::Result<()> {
    let root = is_root();
    let mut needs_root = Vec::new();
    let mut step = |name: &str, outcome: anyhow::Result<Outcome>| -> anyhow::Result<()> {
        let outcome = outcome.with_context(|| format!("setup step `{name}` failed"))?;
        let (tag, what) = match &outcome {
            Outcome::Present(what) => ("ok", what),
            Outcome::Done(what) => ("done", what),
            Outcome::NeedsRoot(what) => ("NEEDS ROOT", what),
        };
        println!("setup  {name:<11} {tag:<10} {what}");
        if matches!(outcome, Outcome::NeedsRoot(_)) {
            needs_root.push(name.to_owned());
        }
        Ok(())
    };

    step("nightly", toolchain::ensure_nightly())?;
    let sysroot = toolchain::nightly_sysroot()?;
    step("rust-src", toolchain::ensure_rust_src(&sysroot))?;
    step("bpf-linker", bpf_linker::ensure(&sysroot))?;
    if scope == Scope::All {
        for mount in &mounts::MOUNTS {
            step(mount.name, mounts::ensure(mount, root))?;
        }
        step("cgroup2", mounts::favordynmods(root))?;
        step("packages", packages::ensure(root))?;
    }
    if !needs_root.is_empty() {
        bail!(
            "setup is incomplete: {} need root; run `cargo xtask setup` as root \
             (or do what the lines above say)",
            needs_root.join(", ")
        );
    }
    Ok(())
}
