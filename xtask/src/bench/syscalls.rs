//! `bench syscalls`: what syscall and off-CPU tracing add to the traced work.
//!
//! 1. **Per-call cost** of `flamewarden syscalls -a` (count + latency histogram per syscall) on
//!    a loop of 5 M `getppid` calls, against bpftrace running the classic per-syscall latency
//!    histogram on `tracepoint:raw_syscalls:*`. Each tracer's cost is the loop's time per call
//!    under it minus the time per call bare; [`REPETITIONS`] interleaved rounds, the order
//!    rotating. Goal: flamewarden's added cost at most [`GOAL_RATIO`] × bpftrace's.
//! 2. **Per-switch cost** of the off-CPU tracer (`record --off-cpu`) on a pipe ping-pong
//!    between two processes pinned to one CPU (two context switches per round trip), when the
//!    ping-pong is the target (stacks taken at every switch-out) and when it is not (one
//!    target-filter check per switch).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

use super::{
    BenchContext,
    process::{self, Background},
    stats::median,
};
use crate::run;

const REPETITIONS: usize = 5;
/// getppid calls per run.
const CALLS: &str = "5000000";
/// Round trips per ping-pong run.
const ROUND_TRIPS: &str = "200000";
/// Most flamewarden's added cost per call may be, as a share of bpftrace's.
pub const GOAL_RATIO: f64 = 0.5;
/// Time a tracer gets to load and attach before the workload starts (bpftrace compiles its
/// program first).
const SETTLE: Duration = Duration::from_secs(3);
const COOLDOWN: Duration = Duration::from_millis(300);
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// The bpftrace program the issue compares against, verbatim.
const BPFTRACE_PROGRAM: &str = "tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs; } \
    tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @h[args->id] = hist(nsecs - @s[tid]); \
    @c[args->id] = count(); delete(@s[tid]); }";

/// Runs the syscalls benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    ensure!(
        which("bpftrace"),
        "bpftrace is not installed (`cargo xtask setup` installs it)"
    );
    let getppid = compile(ctx, "getppid_loop")?;
    let pingpong = compile(ctx, "pipe_pingpong")?;

    println!("per-call cost: {CALLS} getppid calls, {REPETITIONS} interleaved runs");
    let calls = measure_calls(ctx, &getppid)?;
    println!("per-switch cost: pipe ping-pong of {ROUND_TRIPS} round trips on one CPU");
    let switches = measure_switches(ctx, &pingpong)?;

    let fw_added = median(&calls.added(&calls.flamewarden));
    let bt_added = median(&calls.added(&calls.bpftrace));
    let ratio = median(&calls.ratios());
    let targeted = median(&switches.added(&switches.targeted));
    let untargeted = median(&switches.added(&switches.untargeted));
    let met = ratio <= GOAL_RATIO;
    println!(
        "\nsyscalls: cost added to each getppid call (5 M calls, median of {REPETITIONS} runs)"
    );
    println!("  {:<34} {:>10} {:>10}", "", "ns/call", "added");
    println!("  {:<34} {:>10.1} {:>10}", "bare", median(&calls.bare), "-");
    println!(
        "  {:<34} {:>10.1} {:>10.1}",
        "flamewarden syscalls -a",
        median(&calls.flamewarden),
        fw_added
    );
    println!(
        "  {:<34} {:>10.1} {:>10.1}",
        "bpftrace raw_syscalls hist+count",
        median(&calls.bpftrace),
        bt_added
    );
    println!(
        "  flamewarden / bpftrace added cost: {ratio:.3} (median of per-run ratios); goal ≤ \
         {GOAL_RATIO}: {}",
        if met { "met" } else { "MISSED" }
    );
    println!("\nrecord --off-cpu: cost added to each context switch (pipe ping-pong, one CPU)");
    println!("  {:<34} {:>10} {:>10}", "", "ns/switch", "added");
    println!(
        "  {:<34} {:>10.1} {:>10}",
        "bare",
        median(&switches.bare),
        "-"
    );
    println!(
        "  {:<34} {:>10.1} {:>10.1}",
        "targeted (stacks at switch-out)",
        median(&switches.targeted),
        targeted
    );
    println!(
        "  {:<34} {:>10.1} {:>10.1}",
        "not targeted (filter check)",
        median(&switches.untargeted),
        untargeted
    );

    let json_path = ctx.out_dir.join("syscalls.json");
    let doc = json!({
        "calls": CALLS.parse::<u64>().unwrap_or(0),
        "ns_per_call": {
            "bare": calls.bare, "flamewarden": calls.flamewarden, "bpftrace": calls.bpftrace,
        },
        "added_ns_per_call": { "flamewarden": fw_added, "bpftrace": bt_added },
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "round_trips": ROUND_TRIPS.parse::<u64>().unwrap_or(0),
        "ns_per_switch": {
            "bare": switches.bare, "targeted": switches.targeted,
            "untargeted": switches.untargeted,
        },
        "added_ns_per_switch": { "targeted": targeted, "untargeted": untargeted },
    });
    fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    println!("results written to {}", json_path.display());
    ensure!(
        met,
        "goal missed: flamewarden adds {ratio:.3} × what bpftrace adds per call (goal ≤ {GOAL_RATIO})"
    );
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Compiles `xtask/bench/NAME.c` into `target/bench/NAME`.
fn compile(ctx: &BenchContext, name: &str) -> anyhow::Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("bench/{name}.c"));
    let binary = ctx.out_dir.join(name);
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&binary)
            .arg(&source),
    )?;
    Ok(binary)
}

/// The `KEY=VALUE` number a workload printed.
fn reported(output: &str, key: &str) -> anyhow::Result<f64> {
    output
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("the workload printed no {key}=; its output:\n{output}"))
}

/// One measurement per repetition and configuration.
#[derive(Debug, Default)]
struct Calls {
    bare: Vec<f64>,
    flamewarden: Vec<f64>,
    bpftrace: Vec<f64>,
}

impl Calls {
    /// Per repetition: the configuration's time minus the bare time next to it.
    fn added(&self, under: &[f64]) -> Vec<f64> {
        under.iter().zip(&self.bare).map(|(u, b)| u - b).collect()
    }

    /// Per repetition: flamewarden's added cost over bpftrace's.
    fn ratios(&self) -> Vec<f64> {
        let fw = self.added(&self.flamewarden);
        let bt = self.added(&self.bpftrace);
        fw.iter().zip(&bt).map(|(f, b)| f / b).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    Nothing,
    Flamewarden,
    Bpftrace,
}

fn measure_calls(ctx: &BenchContext, getppid: &Path) -> anyhow::Result<Calls> {
    let mut calls = Calls::default();
    let workload = || -> anyhow::Result<f64> {
        let out = run::stdout(Command::new(getppid).arg(CALLS))?;
        reported(&out, "ns_per_call")
    };
    for rep in 0..REPETITIONS {
        let mut order = [Tracer::Nothing, Tracer::Flamewarden, Tracer::Bpftrace];
        order.rotate_left(rep % 3);
        for tracer in order {
            let ns = match tracer {
                Tracer::Nothing => workload()?,
                Tracer::Flamewarden => {
                    let mut cmd = Command::new(&ctx.flamewarden);
                    cmd.args(["syscalls", "-a", "-d", "3600"]);
                    traced(
                        cmd,
                        &ctx.out_dir.join("syscalls-flamewarden.log"),
                        &workload,
                    )?
                }
                Tracer::Bpftrace => {
                    let mut cmd = Command::new("bpftrace");
                    cmd.args(["-e", BPFTRACE_PROGRAM]);
                    traced(cmd, &ctx.out_dir.join("syscalls-bpftrace.log"), &workload)?
                }
            };
            match tracer {
                Tracer::Nothing => calls.bare.push(ns),
                Tracer::Flamewarden => calls.flamewarden.push(ns),
                Tracer::Bpftrace => calls.bpftrace.push(ns),
            }
            thread::sleep(COOLDOWN);
        }
        println!(
            "  run {}/{REPETITIONS}: bare {:.1} ns, flamewarden {:.1} ns, bpftrace {:.1} ns per call",
            rep + 1,
            calls.bare[rep],
            calls.flamewarden[rep],
            calls.bpftrace[rep]
        );
    }
    Ok(calls)
}

/// Runs `work` while `tracer` runs (started [`SETTLE`] before, stopped with SIGINT after).
fn traced<T>(
    tracer: Command,
    log: &Path,
    work: &dyn Fn() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let running = Background::start(tracer, log, SETTLE)?;
    let result = work()?;
    running.stop(FINISH_TIMEOUT)?;
    Ok(result)
}

#[derive(Debug, Default)]
struct Switches {
    bare: Vec<f64>,
    targeted: Vec<f64>,
    untargeted: Vec<f64>,
}

impl Switches {
    fn added(&self, under: &[f64]) -> Vec<f64> {
        under.iter().zip(&self.bare).map(|(u, b)| u - b).collect()
    }
}

fn measure_switches(ctx: &BenchContext, pingpong: &Path) -> anyhow::Result<Switches> {
    let mut switches = Switches::default();
    let folded = ctx.out_dir.join("offcpu.folded");
    // The untargeted run needs some target: a process that sleeps through it.
    let mut sleeper = Command::new("sleep")
        .arg("3600")
        .spawn()
        .context("failed to start `sleep 3600`")?;
    let result = (|| -> anyhow::Result<()> {
        for rep in 0..REPETITIONS {
            let bare = reported(
                &run::stdout(Command::new(pingpong).arg(ROUND_TRIPS))?,
                "ns_per_switch",
            )?;
            thread::sleep(COOLDOWN);
            // Targeted: flamewarden starts the ping-pong; its output lands in the log.
            let log = ctx.out_dir.join("offcpu-targeted.log");
            let mut cmd = Command::new(&ctx.flamewarden);
            cmd.args(["record", "--off-cpu", "-o"])
                .arg(&folded)
                .arg("--")
                .arg(pingpong)
                .arg(ROUND_TRIPS);
            let finished = process::wait(
                cmd.stdout(fs::File::create(&log)?)
                    .stderr(fs::File::create(ctx.out_dir.join("offcpu-targeted.err"))?)
                    .spawn()?,
                FINISH_TIMEOUT,
            )?;
            if !finished.status.success() {
                bail!(
                    "flamewarden record --off-cpu failed ({}):\n{}",
                    finished.status,
                    process::tail(&ctx.out_dir.join("offcpu-targeted.err"))
                );
            }
            let targeted = reported(&fs::read_to_string(&log)?, "ns_per_switch")?;
            thread::sleep(COOLDOWN);
            let mut cmd = Command::new(&ctx.flamewarden);
            cmd.args(["record", "--off-cpu", "-d", "3600", "-p"])
                .arg(sleeper.id().to_string())
                .arg("-o")
                .arg(&folded);
            let untargeted = traced(cmd, &ctx.out_dir.join("offcpu-untargeted.log"), &|| {
                reported(
                    &run::stdout(Command::new(pingpong).arg(ROUND_TRIPS))?,
                    "ns_per_switch",
                )
            })?;
            thread::sleep(COOLDOWN);
            println!(
                "  run {}/{REPETITIONS}: bare {bare:.1} ns, targeted {targeted:.1} ns, not targeted {untargeted:.1} ns per switch",
                rep + 1
            );
            switches.bare.push(bare);
            switches.targeted.push(targeted);
            switches.untargeted.push(untargeted);
        }
        Ok(())
    })();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    result?;
    Ok(switches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_workloads_print() {
        assert_eq!(
            reported("calls=5 ns_per_call=181.50\n", "ns_per_call").unwrap(),
            181.5
        );
        assert!(reported("calls=5\n", "ns_per_call").is_err());
    }

    #[test]
    fn ratios_compare_added_costs_run_by_run() {
        let calls = Calls {
            bare: vec![100.0, 110.0],
            flamewarden: vec![150.0, 150.0],
            bpftrace: vec![300.0, 210.0],
        };
        assert_eq!(calls.ratios(), [0.25, 0.4]);
    }
}
