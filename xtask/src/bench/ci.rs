//! `bench ci`: what `flamewarden ci` costs a CI job.
//!
//! 1. **Run**: the wall time of `flamewarden ci run --runs 3` on `tests/workloads/ci_bench.c`
//!    calibrated to about 2 s, against 3 × the bare workload, [`REPETITIONS`] times (medians).
//!    Goal: at most 1.1 ×.
//! 2. **Diff**: the wall time of `flamewarden ci diff` on two synthetic 100 000-stack profiles
//!    (the second with one function doubled). Goal: under 1 s.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::{BenchContext, process, stats::median};
use crate::run;

const REPETITIONS: usize = 3;
const RUNS: usize = 3;
/// Wall time the workload is calibrated to.
const WORKLOAD_SECS: f64 = 2.0;
/// Stacks in each synthetic profile of the diff benchmark.
const DIFF_STACKS: usize = 100_000;
/// Distinct functions in the synthetic profiles.
const DIFF_FUNCTIONS: usize = 2_000;
const RUN_GOAL: f64 = 1.1;
const DIFF_GOAL_SECS: f64 = 1.0;

/// Runs the ci benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    let bench = compile_workload(ctx)?;
    let rounds = calibrate(&bench)?;
    println!("  workload: ci_bench {rounds} rounds (~{WORKLOAD_SECS} s)");

    let (mut bare, mut ci) = (Vec::new(), Vec::new());
    let out = ctx.out_dir.join("ci-run");
    for repetition in 1..=REPETITIONS {
        let mut total = Duration::ZERO;
        for _ in 0..RUNS {
            total += process::time(Command::new(&bench).arg(rounds.to_string()))?;
        }
        bare.push(total.as_secs_f64());
        let took = process::time(
            Command::new(&ctx.flamewarden)
                .args(["ci", "run", "--runs", &RUNS.to_string(), "--out"])
                .arg(&out)
                .arg("--")
                .arg(&bench)
                .arg(rounds.to_string()),
        )?;
        ci.push(took.as_secs_f64());
        println!(
            "  repetition {repetition}: bare 3 × workload {:.2} s, ci run {:.2} s",
            bare[repetition - 1],
            ci[repetition - 1]
        );
    }
    let (bare_s, ci_s) = (median(&bare), median(&ci));
    let ratio = ci_s / bare_s;

    let (base, new) = (
        ctx.out_dir.join("ci-base.json"),
        ctx.out_dir.join("ci-new.json"),
    );
    write_synthetic_profile(&base, 1)?;
    write_synthetic_profile(&new, 2)?;
    let diff_out = ctx.out_dir.join("ci-diff");
    let mut diff_times = Vec::new();
    for _ in 0..REPETITIONS {
        // `ci diff` exits 1 when the doubled function regressed, which it should.
        let started = std::time::Instant::now();
        let status = Command::new(&ctx.flamewarden)
            .args(["ci", "diff"])
            .args([&base, &new])
            .arg("--out")
            .arg(&diff_out)
            .status()
            .context("failed to run flamewarden ci diff")?;
        diff_times.push(started.elapsed().as_secs_f64());
        ensure!(
            status.code() == Some(1),
            "ci diff: expected exit 1 (regression), got {status}"
        );
    }
    let diff_s = median(&diff_times);

    println!("\n  | measurement | value | goal |");
    println!("  |---|---|---|");
    println!(
        "  | ci run --runs 3 / 3 × bare | {ratio:.3} × ({ci_s:.2} s / {bare_s:.2} s) | ≤ {RUN_GOAL} × |"
    );
    println!("  | ci diff, 2 × {DIFF_STACKS} stacks | {diff_s:.3} s | < {DIFF_GOAL_SECS} s |");
    let report = json!({
        "run": { "bare_secs": bare, "ci_secs": ci, "ratio": ratio, "goal": RUN_GOAL },
        "diff": { "stacks": DIFF_STACKS, "secs": diff_times, "median_secs": diff_s,
                  "goal_secs": DIFF_GOAL_SECS },
    });
    let json_path = ctx.out_dir.join("ci.json");
    fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    println!("  wrote {}", json_path.display());
    Ok(())
}

fn compile_workload(ctx: &BenchContext) -> anyhow::Result<PathBuf> {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads");
    let binary = ctx.out_dir.join("ci_bench");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer"])
            .arg(format!("-I{}", sources.display()))
            .arg(sources.join("ci_bench.c"))
            .arg("-o")
            .arg(&binary),
    )?;
    Ok(binary)
}

/// Rounds that take about [`WORKLOAD_SECS`] (best of two trial runs).
fn calibrate(bench: &Path) -> anyhow::Result<u64> {
    const TRIAL_ROUNDS: u64 = 2_000;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let took = process::time(Command::new(bench).arg(TRIAL_ROUNDS.to_string()))?;
        best = best.min(took.as_secs_f64());
    }
    Ok(((TRIAL_ROUNDS as f64 * WORKLOAD_SECS / best) as u64).max(1))
}

/// A `flamewarden.profile/v1` document with [`DIFF_STACKS`] distinct stacks over
/// [`DIFF_FUNCTIONS`] functions; a fifth of them end in function 7 and weigh `hot_factor` times
/// more.
fn write_synthetic_profile(path: &Path, hot_factor: u64) -> anyhow::Result<()> {
    let frames: Vec<_> = (0..DIFF_FUNCTIONS)
        .map(|i| json!({ "name": format!("bench::module{}::function{i}", i % 37), "kind": "user", "symbolized": true }))
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut total = 0u64;
    let stacks: Vec<_> = (0..DIFF_STACKS)
        .map(|i| {
            let depth = 3 + (next() % 20) as usize;
            let mut frames: Vec<u64> = (0..depth).map(|_| next() % DIFF_FUNCTIONS as u64).collect();
            // Distinct stacks: the index is spelled in the two outermost frames.
            frames[0] = (i % DIFF_FUNCTIONS) as u64;
            frames[1] = (i / DIFF_FUNCTIONS) as u64;
            let mut weight = 1 + next() % 10;
            // A fifth of the stacks end in the function that the new profile makes slower.
            if next() % 5 == 0 {
                *frames.last_mut().expect("depth is at least 3") = 7;
                weight *= hot_factor;
            }
            total += weight;
            json!({ "comm": "bench", "tgid": 1, "cgroup_id": 1, "frames": frames, "weight": weight })
        })
        .collect();
    let document = json!({
        "schema": "flamewarden.profile/v1",
        "meta": { "target": "command", "frequency_hz": 999, "duration_ms": 2000,
                  "started_at_unix_ms": 0, "weight_unit": "samples" },
        "completeness": { "samples_taken": total, "lost_user_stack": 0, "lost_kernel_stack": 0,
            "lost_key_map_full": 0, "user_stack_faults": 0, "truncated_stacks": 0,
            "frames_total": 0, "frames_unsymbolized": 0, "mapping_records_lost": 0 },
        "frames": frames,
        "stacks": stacks,
        "total_weight": total,
    });
    fs::write(path, serde_json::to_string(&document)?)
        .with_context(|| format!("failed to write {}", path.display()))
}
