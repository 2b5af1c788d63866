//! `bench record`: what `flamewarden record` costs, next to `perf record`.
//!
//! 1. **Overhead** on the profiled work: the wall time of a fixed CPU-bound workload (one
//!    process per CPU, about 2 s) bare, under `flamewarden record -a -F 99` and under
//!    `perf record -a -g -F 99`, 11 repetitions interleaved (the order rotates;
//!    `FLAMEWARDEN_BENCH_REPS` sets another count). This is where the in-kernel cost of the BPF
//!    programs shows. Goal: at most 1.003 × bare, and no worse than perf: not slower than
//!    under perf in significantly more repetitions than chance gives (a one-sided sign test).
//! 2. **Cost** of the profiler itself, system-wide at 999 Hz for `FLAMEWARDEN_BENCH_SECS`
//!    (default 60) of a busy multi-process workload: its own CPU time and peak RSS up to a
//!    written SVG, and the time from SIGINT to the SVG. perf's side is `perf record -a -g` plus
//!    `perf script | inferno-collapse-perf | inferno-flamegraph`. Goal: at most 0.25 × perf's
//!    CPU time.

mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use super::{
    BenchContext,
    process::{self, Background, Finished},
};
use crate::{env::target_dir, run};
use report::{Cost, Overhead, ProfilerCost};

/// Interleaved repetitions of the overhead measurement, unless `FLAMEWARDEN_BENCH_REPS` says.
const DEFAULT_REPETITIONS: usize = 11;
const OVERHEAD_HZ: &str = "99";
const COST_HZ: &str = "999";
/// Wall time the fixed workload is calibrated to.
const WORKLOAD_SECS: f64 = 2.0;
/// Time a profiler gets to load and attach before the workload starts.
const SETTLE: Duration = Duration::from_secs(2);
/// Pause between runs, so one run's tail does not land in the next.
const COOLDOWN: Duration = Duration::from_millis(500);
/// Longest wait for a profiler or perf's post-processing to finish.
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_COST_SECS: f64 = 60.0;
/// Measurements under perf, in all, before its failure is final (see [`retry_perf`]).
const PERF_ATTEMPTS: u32 = 3;

/// The profiler a measurement runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Under {
    Nothing,
    Flamewarden,
    Perf,
}

/// Runs the record benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    let burn = compile_workload(ctx)?;
    let inferno = inferno_tools()?;
    let procs = thread::available_parallelism().map_or(1, |n| n.get());
    let cost_secs = cost_secs()?;
    let reps = repetitions()?;

    let rounds = calibrate(&burn)?;
    println!("overhead: {procs} × cpu_burn of {rounds} rounds, {reps} interleaved runs each");
    let overhead = measure_overhead(ctx, &burn, procs, rounds, reps)?;
    println!(
        "cost: {procs} busy workers for {cost_secs} s, each profiler at {COST_HZ} Hz system-wide"
    );
    let cost = measure_cost(ctx, &burn, procs, cost_secs, &inferno)?;

    print!("{}", report::table(&overhead, &cost));
    let json_path = ctx.out_dir.join("record.json");
    let json = serde_json::to_string_pretty(&report::json(&overhead, &cost))?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    println!("results written to {}", json_path.display());

    let missed = report::missed_goals(&overhead, &cost);
    ensure!(missed.is_empty(), "goals missed: {}", missed.join("; "));
    Ok(())
}

/// `FLAMEWARDEN_BENCH_REPS`, or [`DEFAULT_REPETITIONS`].
fn repetitions() -> anyhow::Result<usize> {
    match std::env::var("FLAMEWARDEN_BENCH_REPS") {
        Err(_) => Ok(DEFAULT_REPETITIONS),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n >= 3 => Ok(n),
            _ => bail!("FLAMEWARDEN_BENCH_REPS={text:?}: expected a whole number of at least 3"),
        },
    }
}

/// `FLAMEWARDEN_BENCH_SECS`, or 60.
fn cost_secs() -> anyhow::Result<f64> {
    match std::env::var("FLAMEWARDEN_BENCH_SECS") {
        Err(_) => Ok(DEFAULT_COST_SECS),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
            _ => bail!("FLAMEWARDEN_BENCH_SECS={text:?}: expected a positive number of seconds"),
        },
    }
}

/// Compiles `xtask/bench/cpu_burn.c` into `target/bench/cpu_burn`.
fn compile_workload(ctx: &BenchContext) -> anyhow::Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/cpu_burn.c");
    let binary = ctx.out_dir.join("cpu_burn");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&binary)
            .arg(&source),
    )?;
    Ok(binary)
}

/// `inferno-collapse-perf` and `inferno-flamegraph` for perf's side.
struct InfernoTools {
    collapse: PathBuf,
    flamegraph: PathBuf,
}

/// Installs inferno into `target/bench-tools` unless it is there.
fn inferno_tools() -> anyhow::Result<InfernoTools> {
    let root = target_dir().join("bench-tools");
    let tools = InfernoTools {
        collapse: root.join("bin/inferno-collapse-perf"),
        flamegraph: root.join("bin/inferno-flamegraph"),
    };
    if !tools.collapse.is_file() || !tools.flamegraph.is_file() {
        println!(
            "installing inferno into {} for perf's flamegraphs",
            root.display()
        );
        run::status(
            Command::new("cargo")
                .args(["install", "inferno", "--locked", "--root"])
                .arg(&root),
        )?;
    }
    Ok(tools)
}

/// Rounds that take about [`WORKLOAD_SECS`] on one idle CPU (best of two trial runs).
fn calibrate(burn: &Path) -> anyhow::Result<u64> {
    const TRIAL_ROUNDS: u64 = 200_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let took =
            process::time(Command::new(burn).args(["-n", "1", "-i", &TRIAL_ROUNDS.to_string()]))?;
        best = best.min(took.as_secs_f64());
    }
    let rounds = TRIAL_ROUNDS as f64 * WORKLOAD_SECS / best;
    // Whole millions, so the amount of work reads well in the report.
    Ok(((rounds / 1e6).round() as u64).max(1) * 1_000_000)
}

fn measure_overhead(
    ctx: &BenchContext,
    burn: &Path,
    procs: usize,
    rounds: u64,
    reps: usize,
) -> anyhow::Result<Overhead> {
    let busy_before = busy_share(Duration::from_secs(1));
    if busy_before > 0.05 {
        println!(
            "  warning: {:.0}% of the CPU time was busy just before the first run: other work \
             is running and will make these figures noisy",
            busy_before * 100.0
        );
    }
    let mut overhead = Overhead {
        procs,
        rounds,
        busy_before,
        ..Overhead::default()
    };
    let workload = || {
        let mut cmd = Command::new(burn);
        cmd.args(["-n", &procs.to_string(), "-i", &rounds.to_string()]);
        cmd
    };
    let svg = ctx.out_dir.join("record-overhead.svg");
    let data = ctx.out_dir.join("record-overhead.perf.data");
    for rep in 0..reps {
        let mut order = [Under::Nothing, Under::Flamewarden, Under::Perf];
        let first = rep % order.len();
        order.rotate_left(first);
        for under in order {
            let took = match under {
                Under::Nothing => process::time(&mut workload())?,
                Under::Flamewarden => {
                    let cmd = flamewarden_record(ctx, OVERHEAD_HZ, &svg);
                    profiled(
                        cmd,
                        &ctx.out_dir.join("flamewarden-overhead.log"),
                        &svg,
                        || process::time(&mut workload()),
                    )?
                    .0
                }
                Under::Perf => {
                    retry_perf(|| {
                        let cmd = perf_record(OVERHEAD_HZ, &data);
                        profiled(cmd, &ctx.out_dir.join("perf-overhead.log"), &data, || {
                            process::time(&mut workload())
                        })
                    })?
                    .0
                }
            };
            let secs = took.as_secs_f64();
            match under {
                Under::Nothing => overhead.bare.push(secs),
                Under::Flamewarden => overhead.flamewarden.push(secs),
                Under::Perf => overhead.perf.push(secs),
            }
            thread::sleep(COOLDOWN);
        }
        println!(
            "  run {}/{reps}: bare {:.3} s, flamewarden {:.3} s, perf {:.3} s",
            rep + 1,
            overhead.bare[rep],
            overhead.flamewarden[rep],
            overhead.perf[rep]
        );
    }
    Ok(overhead)
}

fn measure_cost(
    ctx: &BenchContext,
    burn: &Path,
    procs: usize,
    secs: f64,
    inferno: &InfernoTools,
) -> anyhow::Result<Cost> {
    let mut workload = Command::new(burn);
    workload.args(["-n", &procs.to_string(), "-t", &secs.to_string()]);

    let svg = ctx.out_dir.join("record-cost.svg");
    let (_, stopped) = profiled(
        flamewarden_record(ctx, COST_HZ, &svg),
        &ctx.out_dir.join("flamewarden-cost.log"),
        &svg,
        || process::time(&mut workload),
    )?;
    let flamewarden = ProfilerCost {
        cpu: stopped.finished.cpu,
        max_rss_kib: stopped.finished.max_rss_kib,
        stop_to_svg: stopped.stop_latency(),
        svg_bytes: file_len(&svg),
    };
    println!(
        "  flamewarden: {:.2} s CPU, SVG {:.2} s after SIGINT",
        flamewarden.cpu.as_secs_f64(),
        flamewarden.stop_to_svg.as_secs_f64()
    );
    thread::sleep(COOLDOWN);

    let data = ctx.out_dir.join("record-cost.perf.data");
    let perf_svg = ctx.out_dir.join("record-cost.perf.svg");
    let (_, recorded) = retry_perf(|| {
        profiled(
            perf_record(COST_HZ, &data),
            &ctx.out_dir.join("perf-cost.log"),
            &data,
            || process::time(&mut workload),
        )
    })?;
    let post = perf_to_svg(
        &data,
        &perf_svg,
        inferno,
        &ctx.out_dir.join("perf-script.log"),
    )?;
    let svg_written = post
        .iter()
        .map(|f| f.ended)
        .max()
        .unwrap_or(recorded.finished.ended);
    let perf = ProfilerCost {
        cpu: recorded.finished.cpu + post.iter().map(|f| f.cpu).sum::<Duration>(),
        max_rss_kib: post
            .iter()
            .map(|f| f.max_rss_kib)
            .fold(recorded.finished.max_rss_kib, u64::max),
        stop_to_svg: svg_written - recorded.interrupted,
        svg_bytes: file_len(&perf_svg),
    };
    println!(
        "  perf: {:.2} s CPU, SVG {:.2} s after SIGINT",
        perf.cpu.as_secs_f64(),
        perf.stop_to_svg.as_secs_f64()
    );
    Ok(Cost {
        secs,
        procs,
        flamewarden,
        perf,
        perf_record_cpu: recorded.finished.cpu,
        perf_record_rss_kib: recorded.finished.max_rss_kib,
    })
}

fn flamewarden_record(ctx: &BenchContext, hz: &str, svg: &Path) -> Command {
    let mut cmd = Command::new(&ctx.flamewarden);
    cmd.args(["record", "-a", "-F", hz, "-o"]).arg(svg);
    cmd
}

fn perf_record(hz: &str, data: &Path) -> Command {
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-a", "-g", "-F", hz, "-o"]).arg(data);
    cmd
}

/// perf 6.1 sometimes aborts in the build-id pass at the end of `perf record -a`
/// (`assertion failed at util/build-id.c:1010`, then `stack smashing detected`), seen here while
/// other work (test suites mapping unusual ELF files) ran at the same time. Rather than measure
/// a different perf (`--no-buildid` skips that pass and would flatter it), a failed perf
/// measurement is repeated, [`PERF_ATTEMPTS`] times in all.
fn retry_perf<T>(mut measure: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        match measure() {
            Err(e) if attempt < PERF_ATTEMPTS => {
                println!("  perf failed, measuring again ({attempt}/{PERF_ATTEMPTS}): {e:#}");
                attempt += 1;
                thread::sleep(COOLDOWN);
            }
            Err(e) => {
                return Err(e).context(
                    "perf failed every time; if it aborted in util/build-id.c, that is a perf \
                     bug triggered by other processes: run the benchmark on a quiet machine",
                );
            }
            Ok(result) => return Ok(result),
        }
    }
}

/// Runs `work` while `profiler` records (started [`SETTLE`] before, stopped with SIGINT after),
/// and checks the profiler wrote `output`.
fn profiled<T>(
    profiler: Command,
    log: &Path,
    output: &Path,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, process::Stopped)> {
    // Removed first, so that finding it afterwards proves this run wrote it.
    let _ = fs::remove_file(output);
    let running = Background::start(profiler, log, SETTLE)?;
    let result = work()?;
    let stopped = running.stop(FINISH_TIMEOUT)?;
    ensure!(
        file_len(output) > 0,
        "the profiler stopped but did not write {}; its output:\n{}",
        output.display(),
        process::tail(log)
    );
    Ok((result, stopped))
}

/// `perf script -i DATA | inferno-collapse-perf | inferno-flamegraph > SVG`, each stage
/// measured.
fn perf_to_svg(
    data: &Path,
    svg: &Path,
    inferno: &InfernoTools,
    log: &Path,
) -> anyhow::Result<Vec<Finished>> {
    let log_file =
        fs::File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
    let svg_file =
        fs::File::create(svg).with_context(|| format!("failed to create {}", svg.display()))?;
    let mut script = Command::new("perf");
    script.args(["script", "-i"]).arg(data);
    let mut script_child = script
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .spawn()
        .with_context(|| format!("failed to run {script:?}"))?;
    let mut collapse = Command::new(&inferno.collapse);
    let mut collapse_child = collapse
        .stdin(
            script_child
                .stdout
                .take()
                .context("perf script has no stdout")?,
        )
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .spawn()
        .with_context(|| format!("failed to run {collapse:?}"))?;
    let mut flamegraph = Command::new(&inferno.flamegraph);
    let flamegraph_child = flamegraph
        .stdin(
            collapse_child
                .stdout
                .take()
                .context("inferno-collapse-perf has no stdout")?,
        )
        .stdout(svg_file)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("failed to run {flamegraph:?}"))?;

    let mut finished = Vec::new();
    for (name, child) in [
        ("perf script", script_child),
        ("inferno-collapse-perf", collapse_child),
        ("inferno-flamegraph", flamegraph_child),
    ] {
        let done = process::wait(child, FINISH_TIMEOUT)?;
        ensure!(
            done.status.success(),
            "{name} failed ({}); output:\n{}",
            done.status,
            process::tail(log)
        );
        finished.push(done);
    }
    Ok(finished)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The share of all CPUs' time that was not idle during `window` (0 if unreadable).
fn busy_share(window: Duration) -> f64 {
    let before = cpu_times();
    thread::sleep(window);
    match (before, cpu_times()) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            (busy1 - busy0) as f64 / (total1 - total0) as f64
        }
        _ => 0.0,
    }
}

/// (busy, total) jiffies of all CPUs, from the `cpu` line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let total: u64 = fields.iter().take(8).sum();
    Some((total - idle, total))
}
