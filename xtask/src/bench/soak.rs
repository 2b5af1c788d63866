//! The daemon soak of `bench daemon`: [`RUNS_PER_SEC`] sandbox runs per second go through one
//! `flamewarden sandbox batch` for `FLAMEWARDEN_BENCH_SOAK_SECS` (default 600 s) while the
//! daemon discovers every run's cgroup (`<own>/flamewarden-sandboxes/*`), receives its verdict
//! and counts its violations: every [`VIOLATION_EVERY`]th run tries a TCP connect to a loopback
//! listener of ours, which the judge policy denies.
//!
//! Measured: the daemon's RSS over the soak (sampled every minute) and its growth once the
//! rolling CPU window is full, its CPU share, events lost and map-full errors from its own
//! `/metrics`, and verdicts and violations it counted against the runs made.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use super::BenchContext;
use crate::run;

/// Sandbox runs started per second.
pub const RUNS_PER_SEC: u64 = 100;
/// One run in this many tries a denied connect.
const VIOLATION_EVERY: u64 = 10;
/// How often RSS and CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// Runs written ahead of the verdicts read: the batch never falls behind by more.
const MAX_IN_FLIGHT: u64 = 50;

/// What the soak measured.
pub struct Soak {
    /// Seconds the soak lasted.
    pub seconds: f64,
    /// (seconds into the soak, daemon RSS bytes, daemon CPU share since the last sample).
    pub samples: Vec<(f64, u64, f64)>,
    /// Runs written to the batch.
    pub runs: u64,
    /// Runs that tried a denied connect.
    pub violation_runs: u64,
    /// Verdict lines read back, and how many had status `ok` / `security_violation`.
    pub verdicts: u64,
    pub ok: u64,
    pub security_violations: u64,
    /// Batch lines that were an error instead of a verdict.
    pub errors: u64,
    /// The verdicts' `violations_total`, summed.
    pub violations_total: u64,
    /// Connections the listener accepted (must be 0).
    pub escapes: u64,
    /// The daemon's CPU share of one core over the whole soak.
    pub cpu_share: f64,
}

/// Compiles the connecting solution (`tests/workloads/escape/net_tcp.c`).
fn connector(ctx: &BenchContext) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/escape");
    let binary = ctx.out_dir.join("soak_net_tcp");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g"])
            .arg(format!("-I{}", dir.display()))
            .arg(dir.join("net_tcp.c"))
            .arg("-o")
            .arg(&binary),
    )?;
    Ok(binary)
}

/// Runs the soak against the daemon `pid`; `cpu_and_rss` reads its (CPU seconds, RSS bytes).
pub fn run(
    ctx: &BenchContext,
    secs: u64,
    pid: u32,
    cpu_and_rss: fn(u32) -> anyhow::Result<(f64, u64)>,
) -> anyhow::Result<Soak> {
    let connector = connector(ctx)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/judge.toml");
    let mut batch = Command::new(&ctx.flamewarden)
        .args(["--log", "error", "sandbox", "batch", "--policy"])
        .arg(&policy)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(ctx.out_dir.join("daemon-soak-batch.log"))?)
        .spawn()
        .context("failed to start flamewarden sandbox batch")?;
    let mut input = batch.stdin.take().context("no stdin")?;
    let output = batch.stdout.take().context("no stdout")?;

    let read = AtomicU64::new(0);
    let soak = thread::scope(|scope| -> anyhow::Result<Soak> {
        let reader = scope.spawn(|| {
            let (mut ok, mut violations, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
            let mut violations_total = 0u64;
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                read.fetch_add(1, Ordering::Relaxed);
                let verdict: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                violations_total += verdict["violations_total"].as_u64().unwrap_or(0);
                match verdict["status"].as_str() {
                    Some("ok") => ok += 1,
                    Some("security_violation") => violations += 1,
                    Some(_) => {}
                    None => {
                        errors += 1;
                        first_error.get_or_insert(line);
                    }
                }
            }
            (ok, violations, errors, first_error, violations_total)
        });

        let true_line = "{\"command\": [\"/bin/true\"]}\n".to_owned();
        let connect_line = format!(
            "{{\"command\": [{}, \"{port}\"]}}\n",
            serde_json::to_string(&connector.to_string_lossy())?
        );
        let (cpu0, rss0) = cpu_and_rss(pid)?;
        let started = Instant::now();
        let period = Duration::from_micros(1_000_000 / RUNS_PER_SEC);
        let mut samples = vec![(0.0, rss0, 0.0)];
        let (mut last_cpu, mut next_sample) = (cpu0, SAMPLE_EVERY);
        let (mut runs, mut violation_runs) = (0u64, 0u64);
        while started.elapsed() < Duration::from_secs(secs) {
            // The batch runs one at a time: never let it fall far behind the clock.
            while runs.saturating_sub(read.load(Ordering::Relaxed)) >= MAX_IN_FLIGHT {
                thread::sleep(Duration::from_millis(1));
            }
            let line = if runs % VIOLATION_EVERY == VIOLATION_EVERY - 1 {
                violation_runs += 1;
                &connect_line
            } else {
                &true_line
            };
            input
                .write_all(line.as_bytes())
                .context("sandbox batch stopped reading its input")?;
            runs += 1;
            if started.elapsed() >= next_sample {
                let (cpu, rss) = cpu_and_rss(pid)?;
                let at = started.elapsed().as_secs_f64();
                let share = (cpu - last_cpu) / SAMPLE_EVERY.as_secs_f64();
                println!(
                    "  soak {at:>5.0} s: {runs} runs, daemon RSS {:.1} MB, CPU {:.2} % of a core",
                    rss as f64 / 1e6,
                    share * 100.0
                );
                samples.push((at, rss, share));
                last_cpu = cpu;
                next_sample += SAMPLE_EVERY;
            }
            if let Some(wait) = (period * runs as u32).checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
        drop(input);
        let (ok, security_violations, errors, first_error, violations_total) =
            reader.join().expect("the verdict reader panicked");
        let seconds = started.elapsed().as_secs_f64();
        let (cpu1, rss1) = cpu_and_rss(pid)?;
        samples.push((seconds, rss1, 0.0));
        if let Some(line) = first_error {
            println!("  first batch error: {line}");
        }
        let mut escapes = 0;
        while listener.accept().is_ok() {
            escapes += 1;
        }
        Ok(Soak {
            seconds,
            samples,
            runs,
            violation_runs,
            verdicts: read.load(Ordering::Relaxed),
            ok,
            security_violations,
            errors,
            violations_total,
            escapes,
            cpu_share: (cpu1 - cpu0) / seconds,
        })
    })?;
    let status = batch.wait().context("sandbox batch")?;
    ensure!(
        status.success(),
        "sandbox batch failed: {status}; see target/bench/daemon-soak-batch.log"
    );
    Ok(soak)
}
