//! `bench guard`: what the sandbox costs a judge.
//!
//! 1. **Per-run overhead**: `flamewarden sandbox run --policy policies/judge.toml -- /bin/true`
//!    against a plain fork + exec + wait of `/bin/true`, [`RUNS`] of each, interleaved; the
//!    difference of the medians in ms (goal ≤ 1 ms), and runs per second single-threaded.
//!    The same through one `sandbox batch` process (policy parsed, kernel side opened once).
//! 2. **CPU time**: a CPU-bound solution (`tests/workloads/ci_bench.c`, about 1 s) run bare
//!    (CPU time from `getrusage`) and in the sandbox (CPU time from the verdict), interleaved,
//!    [`REPETITIONS`] times; the ratio of the medians (goal: within 0.5 %).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::{BenchContext, stats::median};
use crate::run;

const RUNS: usize = 200;
const REPETITIONS: usize = 5;
const OVERHEAD_GOAL_MS: f64 = 1.0;
const CPU_GOAL: f64 = 0.005;
const WORKLOAD_SECS: f64 = 1.0;

/// The CPU time of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid out-buffer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let took = started.elapsed();
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(took)
}

fn sandbox(ctx: &BenchContext, policy: &Path) -> Command {
    let mut cmd = Command::new(&ctx.flamewarden);
    cmd.args(["--log", "error", "sandbox", "run", "--policy"])
        .arg(policy)
        .arg("--stdout")
        .arg("/dev/null");
    cmd
}

fn sandbox_batch(ctx: &BenchContext, policy: &Path) -> Command {
    let mut cmd = Command::new(&ctx.flamewarden);
    cmd.args(["--log", "error", "sandbox", "batch", "--policy"])
        .arg(policy);
    cmd
}

/// Runs the guard benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let judge = root.join("policies/judge.toml");
    // The first run attaches the guard's programs (once per host); it is not measured.
    timed(sandbox(ctx, &judge).args(["--", "/bin/true"]))?;
    let (mut bare, mut guarded, mut started) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        bare.push(timed(&mut Command::new("/bin/true"))?.as_secs_f64() * 1e3);
        guarded.push(timed(sandbox(ctx, &judge).args(["--", "/bin/true"]))?.as_secs_f64() * 1e3);
        started.push(timed(Command::new(&ctx.flamewarden).arg("--version"))?.as_secs_f64() * 1e3);
    }
    let (bare_ms, guarded_ms) = (median(&bare), median(&guarded));
    let overhead_ms = guarded_ms - bare_ms;
    let per_second = 1e3 / guarded_ms;
    // What a process of flamewarden costs before it does anything: part of every `sandbox run`.
    let startup_ms = median(&started) - bare_ms;
    println!("  /bin/true, median of {RUNS}: bare {bare_ms:.3} ms, sandbox run {guarded_ms:.3} ms");
    println!(
        "  of which starting flamewarden itself (`flamewarden --version` over /bin/true): {startup_ms:.3} ms"
    );
    println!(
        "  per-run overhead: {overhead_ms:.3} ms (goal ≤ {OVERHEAD_GOAL_MS} ms: {}); {per_second:.0} runs/s single-threaded",
        verdict(overhead_ms <= OVERHEAD_GOAL_MS)
    );

    // The same runs through one `sandbox batch` process: the policy parsed and the kernel side
    // opened once, as a judge's long-lived supervisor would.
    let lines = "{\"command\": [\"/bin/true\"]}\n".repeat(RUNS);
    let input = ctx.out_dir.join("guard-batch.jsonl");
    fs::write(&input, lines).context("failed to write the batch input")?;
    let started = Instant::now();
    let status = sandbox_batch(ctx, &judge)
        .stdin(fs::File::open(&input)?)
        .stdout(Stdio::null())
        .status()
        .context("failed to run sandbox batch")?;
    ensure!(status.success(), "sandbox batch failed: {status}");
    let batch_ms = started.elapsed().as_secs_f64() * 1e3 / RUNS as f64;
    let bare_batch_ms = {
        let started = Instant::now();
        for _ in 0..RUNS {
            timed(&mut Command::new("/bin/true"))?;
        }
        started.elapsed().as_secs_f64() * 1e3 / RUNS as f64
    };
    let batch_overhead_ms = batch_ms - bare_batch_ms;
    println!(
        "  sandbox batch: {batch_ms:.3} ms per run vs bare {bare_batch_ms:.3} ms: overhead {batch_overhead_ms:.3} ms (goal ≤ {OVERHEAD_GOAL_MS} ms: {}); {:.0} runs/s",
        verdict(batch_overhead_ms <= OVERHEAD_GOAL_MS),
        1e3 / batch_ms
    );

    let (workload, rounds) = compile_workload(ctx)?;
    // Generous limits: the solution must end on its own.
    let policy = ctx.out_dir.join("guard-bench.toml");
    let text = fs::read_to_string(&judge).context("failed to read policies/judge.toml")?;
    fs::write(
        &policy,
        text.replace("cpu_time = \"2s\"", "cpu_time = \"60s\"")
            .replace("wall_time = \"5s\"", "wall_time = \"120s\""),
    )
    .context("failed to write the bench policy")?;
    let (mut bare_cpu, mut sandbox_cpu) = (Vec::new(), Vec::new());
    let verdict_file = ctx.out_dir.join("guard-verdict.json");
    for repetition in 1..=REPETITIONS {
        let before = children_cpu();
        timed(Command::new(&workload).arg(rounds.to_string()))?;
        bare_cpu.push((children_cpu() - before).as_secs_f64() * 1e3);
        timed(
            sandbox(ctx, &policy)
                .arg("--json")
                .arg(&verdict_file)
                .arg("--")
                .arg(&workload)
                .arg(rounds.to_string()),
        )?;
        let verdict: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(&verdict_file).context("failed to read the verdict")?,
        )?;
        let cpu = verdict["cpu_time_ms"]
            .as_f64()
            .context("the verdict has no cpu_time_ms")?;
        sandbox_cpu.push(cpu);
        println!(
            "  repetition {repetition}: CPU bare {:.1} ms, in the sandbox {cpu:.1} ms",
            bare_cpu[repetition - 1]
        );
    }
    let cpu_ratio = median(&sandbox_cpu) / median(&bare_cpu);
    println!(
        "  CPU time in the sandbox / bare: {cpu_ratio:.4} (goal within {:.1} %: {})",
        CPU_GOAL * 100.0,
        verdict((cpu_ratio - 1.0).abs() <= CPU_GOAL)
    );
    let out = json!({
        "runs": RUNS,
        "bare_ms": bare_ms,
        "sandbox_ms": guarded_ms,
        "overhead_ms": overhead_ms,
        "startup_ms": startup_ms,
        "runs_per_second": per_second,
        "batch_ms": batch_ms,
        "batch_overhead_ms": batch_overhead_ms,
        "cpu_bare_ms": bare_cpu,
        "cpu_sandbox_ms": sandbox_cpu,
        "cpu_ratio": cpu_ratio,
    });
    let path = ctx.out_dir.join("guard.json");
    fs::write(&path, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Compiles the CPU-bound workload and finds the rounds that take about [`WORKLOAD_SECS`].
fn compile_workload(ctx: &BenchContext) -> anyhow::Result<(PathBuf, u64)> {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads");
    let binary = ctx.out_dir.join("guard_cpu");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer"])
            .arg(format!("-I{}", sources.display()))
            .arg(sources.join("ci_bench.c"))
            .arg("-o")
            .arg(&binary),
    )?;
    const TRIAL_ROUNDS: u64 = 1_000;
    let took = timed(Command::new(&binary).arg(TRIAL_ROUNDS.to_string()))?;
    let rounds = (TRIAL_ROUNDS as f64 * WORKLOAD_SECS / took.as_secs_f64()).max(1.0) as u64;
    Ok((binary, rounds))
}
