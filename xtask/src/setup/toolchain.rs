//! The nightly toolchain (aya-build compiles the eBPF crate with it) and its `rust-src`
//! component (`-Z build-std=core`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::Outcome;
use crate::run;

/// Installs the plain `nightly` toolchain if missing. Never updates it: a new nightly brings a
/// new libLLVM and bpf-linker would have to be rebuilt (the bpf-linker step does that if it
/// happens anyway).
pub fn ensure_nightly() -> anyhow::Result<Outcome> {
    let list = run::stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed; install it from https://rustup.rs")?;
    if let Some(name) = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|name| is_plain_nightly(name))
    {
        return Ok(Outcome::Present(format!("{name} is installed")));
    }
    run::status(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))?;
    Ok(Outcome::Done(
        "installed nightly (profile minimal)".to_owned(),
    ))
}

/// `rustc +nightly --print sysroot`.
pub fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = run::stdout(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(out.trim()))
}

/// Adds `rust-src` to nightly if its sources are not in the sysroot.
pub fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<Outcome> {
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if core.is_file() {
        return Ok(Outcome::Present("installed for nightly".to_owned()));
    }
    run::status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok(Outcome::Done("added to nightly".to_owned()))
}

/// `nightly-x86_64-unknown-linux-gnu` or `nightly`, but not a dated `nightly-2025-01-01-…`,
/// which `+nightly` would not select.
fn is_plain_nightly(toolchain: &str) -> bool {
    toolchain == "nightly"
        || toolchain
            .strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_plain_nightly;

    #[test]
    fn only_the_undated_nightly_counts_as_nightly() {
        assert!(is_plain_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_plain_nightly("nightly"));
        assert!(!is_plain_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_plain_nightly("stable-x86_64-unknown-linux-gnu"));
    }
}
