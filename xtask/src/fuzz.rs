//! `cargo xtask fuzz TARGET`: run a cargo-fuzz target of `fuzz/` (nightly, libFuzzer), after
//! installing what it needs and seeding its corpus.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{env::workspace_root, run};

/// The targets in `fuzz/fuzz_targets/`, with what seeds their corpus.
const TARGETS: &[(&str, &str)] = &[("policy", "policies")];

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// The fuzz target: `policy` (the sandbox policy parser).
    target: String,
    /// Stop after this many seconds without a crash (the acceptance bar is 600).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    seconds: u64,
    /// libFuzzer worker processes (above 1, each logs to fuzz-N.log in the workspace root).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: u32,
}

/// Installs nightly and cargo-fuzz if missing, seeds `fuzz/corpus/TARGET` and runs the target.
/// A crash fails the command and leaves its input in `fuzz/artifacts/TARGET/`.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let Some(&(target, seeds)) = TARGETS.iter().find(|(name, _)| *name == args.target) else {
        let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        bail!(
            "unknown fuzz target `{}`; known: {}",
            args.target,
            known.join(", ")
        );
    };
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    seed(&root.join(seeds), &corpus)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!(
            "-dict={}",
            fuzz_dir.join(format!("{target}.dict")).display()
        ))
        .arg("-print_final_stats=1");
    if args.jobs > 1 {
        // libFuzzer's fork mode: each worker logs to fuzz-N.log in the current directory.
        cmd.arg(format!("-jobs={}", args.jobs))
            .arg(format!("-workers={}", args.jobs));
    }
    println!(
        "fuzzing `{target}` for {} s: {}",
        args.seconds,
        run::shown(&cmd)
    );
    run::status(&mut cmd).with_context(|| {
        format!(
            "the `{target}` fuzz target failed; the crashing input is in fuzz/artifacts/{target}/"
        )
    })?;
    println!("fuzz target `{target}`: no crash in {} s", args.seconds);
    Ok(())
}

fn ensure_nightly() -> anyhow::Result<()> {
    let list = run::stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed for the nightly toolchain")?;
    if list.lines().any(|line| line.starts_with("nightly")) {
        return Ok(());
    }
    run::status(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if run::probe(Command::new("cargo").args(["fuzz", "--version"])).is_ok() {
        return Ok(());
    }
    println!("installing cargo-fuzz");
    run::status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// Copies every file of `seeds` into `corpus` (libFuzzer adds what it finds next to them).
fn seed(seeds: &Path, corpus: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("failed to create {}", corpus.display()))?;
    for entry in
        fs::read_dir(seeds).with_context(|| format!("failed to list {}", seeds.display()))?
    {
        let path = entry?.path();
        if let Some(name) = path.file_name().filter(|_| path.is_file()) {
            fs::copy(&path, corpus.join(name)).with_context(|| {
                format!(
                    "failed to copy {} into {}",
                    path.display(),
                    corpus.display()
                )
            })?;
        }
    }
    Ok(())
}
