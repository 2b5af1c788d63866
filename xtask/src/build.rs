//! `cargo xtask build`: the flamewarden binary, always with its real eBPF object.

use std::path::PathBuf;

use clap::Args;

use crate::{env, run, setup};

/// Arguments of `cargo xtask build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build the dev profile (target/debug) instead of release.
    #[arg(long)]
    debug: bool,
}

/// Which cargo profile to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `--release`: what the tests, the demo and the benchmarks use.
    Release,
    /// The dev profile.
    Debug,
}

/// Runs `cargo xtask build`: setup's build steps, the build, then the binary's path.
pub fn run_command(args: &BuildArgs) -> anyhow::Result<()> {
    setup::run(setup::Scope::Build)?;
    let profile = if args.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let binary = build(profile)?;
    println!("{}", binary.display());
    Ok(())
}

/// Builds the workspace's default members with `FLAMEWARDEN_REQUIRE_EBPF=1` (so the eBPF object
/// is really built, never stubbed) and returns the absolute path of `flamewarden`.
/// Assumes setup has run.
pub fn build(profile: Profile) -> anyhow::Result<PathBuf> {
    let mut cargo = run::cargo();
    cargo.arg("build");
    if profile == Profile::Release {
        cargo.arg("--release");
    }
    println!("$ {}", run::shown(&cargo));
    run::status(&mut cargo)?;
    Ok(binary_path(profile))
}

/// Where cargo puts `flamewarden` for `profile`.
pub fn binary_path(profile: Profile) -> PathBuf {
    let dir = match profile {
        Profile::Release => "release",
        Profile::Debug => "debug",
    };
    env::target_dir().join(dir).join("flamewarden")
}
