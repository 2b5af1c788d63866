//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use std::{
    ffi::OsString,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    build::{self, Profile},
    env::{target_dir, workspace_root},
    run, setup,
};

/// Arguments of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Stop after the unit tests: no release build, no end-to-end tests (no root needed).
    #[arg(long)]
    unit_only: bool,
    /// Passed to the test harness of the unit and end-to-end tests (a name filter, `--exact`…).
    #[arg(last = true, value_name = "FILTER")]
    filter: Vec<OsString>,
}

/// A named step of the test run.
struct Stage {
    name: &'static str,
    run: Box<dyn FnOnce() -> anyhow::Result<()>>,
}

impl Stage {
    /// A stage that runs one command.
    fn command(name: &'static str, mut cmd: Command) -> Self {
        Self {
            name,
            run: Box::new(move || {
                println!("$ {}", run::shown(&cmd));
                run::status(&mut cmd)
            }),
        }
    }
}

/// Runs `cargo xtask test`.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run(if args.unit_only {
        setup::Scope::Build
    } else {
        setup::Scope::All
    })?;
    let stages = stages(args);
    let total = stages.len();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    for (i, stage) in stages.into_iter().enumerate() {
        println!("\n==> [{}/{total}] {}", i + 1, stage.name);
        let stage_started = Instant::now();
        (stage.run)().with_context(|| format!("test stage `{}` failed", stage.name))?;
        timings.push((stage.name, stage_started.elapsed()));
    }
    let list: Vec<String> = timings
        .iter()
        .map(|(name, took)| format!("{name} {:.0}s", took.as_secs_f64()))
        .collect();
    println!(
        "\ntest: all {total} stages passed in {:.0}s ({})",
        started.elapsed().as_secs_f64(),
        list.join(", ")
    );
    Ok(())
}

fn stages(args: &TestArgs) -> Vec<Stage> {
    let mut fmt = Command::new("cargo");
    fmt.current_dir(workspace_root())
        .args(["fmt", "--all", "--", "--check"]);

    let mut clippy = run::cargo();
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);

    // The eBPF crate only builds for the BPF target, with nightly; its own target dir keeps
    // these flags from invalidating the main build cache.
    let mut clippy_ebpf = run::cargo();
    clippy_ebpf
        .args([
            "+nightly",
            "clippy",
            "-p",
            "profiler-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            encoded_rustflags(&[r#"--cfg=bpf_target_arch="x86_64""#]),
        );

    let mut unit = run::cargo();
    unit.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "flamewarden-tests",
        "--exclude",
        "profiler-ebpf",
    ]);
    if !args.filter.is_empty() {
        unit.arg("--").args(&args.filter);
    }

    let mut stages = vec![
        Stage::command("fmt", fmt),
        Stage::command("clippy", clippy),
        Stage::command("clippy-ebpf", clippy_ebpf),
        Stage::command("unit", unit),
    ];
    if !args.unit_only {
        stages.push(Stage {
            name: "build",
            run: Box::new(|| build::build(Profile::Release).map(|_| ())),
        });
        let mut e2e = run::cargo();
        e2e.args([
            "test",
            "--release",
            "-p",
            "flamewarden-tests",
            "--tests",
            "--",
        ])
        .arg("--test-threads=1")
        .args(&args.filter)
        .env("FLAMEWARDEN_BIN", build::binary_path(Profile::Release));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            // In CI a test that cannot load BPF fails instead of skipping.
            e2e.env("FLAMEWARDEN_REQUIRE_BPF", "1");
        }
        stages.push(Stage::command("e2e", e2e));
    }
    stages
}

/// Cargo's `CARGO_ENCODED_RUSTFLAGS`: flags separated by 0x1f, so a flag may contain spaces
/// and quotes.
fn encoded_rustflags(flags: &[&str]) -> String {
    flags.join("\x1f")
}

#[cfg(test)]
mod tests {
    use super::encoded_rustflags;

    #[test]
    fn encoded_rustflags_are_unit_separated() {
        assert_eq!(
            encoded_rustflags(&[r#"--cfg=bpf_target_arch="x86_64""#, "-Cdebuginfo=2"]),
            "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2"
        );
    }
}
