//! `bench net`: what `flamewarden net -a` costs the traffic it watches, on loopback.
//!
//! 1. **Connection rate**: a client opening connections one after another (connect, 64-byte
//!    request, 64-byte answer, close) against a server, for [`RATE_SECS`] s; connections per
//!    second with `flamewarden net -a` running over without. Goal ≥ [`GOAL_RATE`].
//! 2. **Bulk throughput**: one connection writing 1 MiB blocks for [`BULK_SECS`] s; MiB/s with
//!    over without. Goal ≥ [`GOAL_BULK`].
//!
//! Client and server are pinned to different CPUs (`taskset`), which takes most of the
//! scheduling noise of a small machine out. [`REPETITIONS`] rounds, each measuring bare and
//! traced back to back in alternating order; the ratio is the median of the per-round ratios,
//! shown with their spread (lowest and highest round).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::{BenchContext, process::Background, stats::median};
use crate::run;

const REPETITIONS: usize = 9;
/// Seconds of each connection-rate run.
const RATE_SECS: &str = "2";
/// Seconds of each bulk run (a fixed time: a fixed 2000 MiB took 0.4 s, mostly noise).
const BULK_SECS: &str = "2";
const PORT: &str = "19431";
/// Goal for the connection rate ratio (traced / bare).
pub const GOAL_RATE: f64 = 0.97;
/// Goal for the bulk throughput ratio (traced / bare).
pub const GOAL_BULK: f64 = 0.99;
/// Time flamewarden gets to read the kernel's BTF, load and attach.
const SETTLE: Duration = Duration::from_secs(3);
const COOLDOWN: Duration = Duration::from_millis(300);
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the net benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    ensure!(
        run::find_program("taskset").is_some(),
        "taskset (util-linux) is not installed"
    );
    let binary = compile(ctx)?;
    // Run-time statistics cost every BPF program two clock reads: traced figures would
    // include them.
    let stats_enabled =
        fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0");
    if stats_enabled {
        println!("warning: kernel.bpf_stats_enabled=1 slows every BPF program down");
    }
    let load_before = load_average();
    let server = Server::start(&binary)?;
    let mut rate = Pairs::default();
    let mut bulk = Pairs::default();
    println!(
        "loopback: {RATE_SECS} s of connections and a {BULK_SECS} s transfer, bare and under \
         `flamewarden net -a`, {REPETITIONS} rounds"
    );
    for rep in 0..REPETITIONS {
        let traced_first = rep % 2 == 1;
        for traced in [traced_first, !traced_first] {
            let (r, b) = if traced {
                let mut cmd = Command::new(&ctx.flamewarden);
                cmd.args(["net", "-a", "-d", "3600"]);
                let tracer =
                    Background::start(cmd, &ctx.out_dir.join("net-flamewarden.log"), SETTLE)?;
                let measured = measure(&binary)?;
                tracer.stop(FINISH_TIMEOUT)?;
                measured
            } else {
                measure(&binary)?
            };
            let (rates, bulks) = if traced {
                (&mut rate.traced, &mut bulk.traced)
            } else {
                (&mut rate.bare, &mut bulk.bare)
            };
            rates.push(r);
            bulks.push(b);
            thread::sleep(COOLDOWN);
        }
        println!(
            "  round {}/{REPETITIONS} ({} first): {:.0} vs {:.0} conn/s traced/bare ({:.3}), \
             {:.0} vs {:.0} MiB/s ({:.3})",
            rep + 1,
            if traced_first { "traced" } else { "bare" },
            rate.traced[rep],
            rate.bare[rep],
            rate.traced[rep] / rate.bare[rep],
            bulk.traced[rep],
            bulk.bare[rep],
            bulk.traced[rep] / bulk.bare[rep],
        );
    }
    drop(server);
    let (rate_ratios, bulk_ratios) = (rate.ratios(), bulk.ratios());
    let rate_ratio = median(&rate_ratios);
    let bulk_ratio = median(&bulk_ratios);
    let rate_met = rate_ratio >= GOAL_RATE;
    let bulk_met = bulk_ratio >= GOAL_BULK;
    println!("\nnet: loopback traffic under `flamewarden net -a` (median of {REPETITIONS} rounds)");
    println!(
        "  {:<28} {:>12} {:>12} {:>8} {:>13}  goal",
        "", "bare", "traced", "ratio", "spread"
    );
    println!(
        "  {:<28} {:>12.0} {:>12.0} {:>8.3} {:>13}  ≥ {GOAL_RATE}: {}",
        "connections per second",
        median(&rate.bare),
        median(&rate.traced),
        rate_ratio,
        spread(&rate_ratios),
        if rate_met { "met" } else { "MISSED" }
    );
    println!(
        "  {:<28} {:>12.0} {:>12.0} {:>8.3} {:>13}  ≥ {GOAL_BULK}: {}",
        "bulk transfer, MiB/s",
        median(&bulk.bare),
        median(&bulk.traced),
        bulk_ratio,
        spread(&bulk_ratios),
        if bulk_met { "met" } else { "MISSED" }
    );
    let load_after = load_average();
    println!(
        "  load average (1 min) {load_before:.2} before, {load_after:.2} after: the two \
         benchmark processes account for about 1-2; more means other work shared the CPUs"
    );
    let json_path = ctx.out_dir.join("net.json");
    let doc = json!({
        "rounds": REPETITIONS,
        "conns_per_sec": { "bare": rate.bare, "traced": rate.traced },
        "conn_rate_ratio": rate_ratio,
        "conn_rate_ratios": rate_ratios,
        "goal_conn_rate_ratio": GOAL_RATE,
        "bulk_mib_per_sec": { "bare": bulk.bare, "traced": bulk.traced },
        "bulk_ratio": bulk_ratio,
        "bulk_ratios": bulk_ratios,
        "goal_bulk_ratio": GOAL_BULK,
        "bpf_stats_enabled": stats_enabled,
        "load_average": { "before": load_before, "after": load_after },
    });
    fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    println!("results written to {}", json_path.display());
    ensure!(
        rate_met && bulk_met,
        "goal missed: connection rate ratio {rate_ratio:.3} (goal ≥ {GOAL_RATE}), bulk ratio \
         {bulk_ratio:.3} (goal ≥ {GOAL_BULK})"
    );
    Ok(())
}

/// Bare and traced figures, one per round.
#[derive(Debug, Default)]
struct Pairs {
    bare: Vec<f64>,
    traced: Vec<f64>,
}

impl Pairs {
    /// Per round: traced over bare.
    fn ratios(&self) -> Vec<f64> {
        self.traced
            .iter()
            .zip(&self.bare)
            .map(|(t, b)| t / b)
            .collect()
    }
}

/// The 1-minute load average (NaN when unreadable).
fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `lowest–highest` of the per-round ratios.
fn spread(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.3}–{hi:.3}")
}

/// One connection-rate run and one bulk run, the client on CPU 0.
fn measure(binary: &Path) -> anyhow::Result<(f64, f64)> {
    let client = |args: &[&str]| -> anyhow::Result<String> {
        run::stdout(
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(binary)
                .args(args),
        )
    };
    let rate = reported(&client(&["connect", PORT, RATE_SECS])?, "conns_per_sec")?;
    let bulk = reported(&client(&["bulk", PORT, BULK_SECS])?, "mib_per_sec")?;
    Ok((rate, bulk))
}

/// The `KEY=VALUE` number a workload printed.
fn reported(output: &str, key: &str) -> anyhow::Result<f64> {
    output
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("the workload printed no {key}=; its output:\n{output}"))
}

/// Compiles `xtask/bench/net_rate.c` into `target/bench/net_rate`.
fn compile(ctx: &BenchContext) -> anyhow::Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/net_rate.c");
    let binary = ctx.out_dir.join("net_rate");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-o"])
            .arg(&binary)
            .arg(&source),
    )?;
    Ok(binary)
}

/// The loopback server, pinned to CPU 1; killed on drop.
struct Server(Child);

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", "1"])
            .arg(binary)
            .args(["serve", PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("failed to start the net_rate server")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let server = Server(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("the net_rate server did not start")?;
        ensure!(line.trim() == "ready", "the net_rate server said {line:?}");
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_traced_with_bare_round_by_round() {
        let pairs = Pairs {
            bare: vec![100.0, 200.0],
            traced: vec![99.0, 150.0],
        };
        assert_eq!(pairs.ratios(), [0.99, 0.75]);
        assert_eq!(spread(&pairs.ratios()), "0.750–0.990");
        assert_eq!(
            reported("conns=5 conns_per_sec=12.5\n", "conns_per_sec").unwrap(),
            12.5
        );
    }
}
