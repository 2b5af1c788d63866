//! `bench net`: what `flamewarden net -a` costs the traffic it watches, on loopback.
//!
//! 1. **Connection rate**: a client opening connections one after another (connect, 64-byte
//!    request, 64-byte answer, close) against a server; connections per second with tracing
//!    over without. Goal ≥ [`GOAL_RATE`].
//! 2. **Bulk throughput**: one connection writing 256 KiB blocks; bytes per second with over
//!    without. Goal ≥ [`GOAL_BULK`].
//!
//! Server, client and `flamewarden net -a` all run on CPU 0 (`taskset`): the loop is CPU-bound
//! there, so whatever tracing costs — the kernel programs and flamewarden reading their events —
//! comes out of the measured figure, and none of it hides on an idle second CPU or behind the
//! wake-up latency of a small VM's other vCPU.
//!
//! This VM's vCPUs change speed by ±10 % from one tenth of a second to the next (other guests),
//! far more than the effect measured, so bare and traced cannot be runs seconds apart. The
//! client drives one `flamewarden net -a --control` instead (the `perf record --control`
//! protocol): it switches tracing on and off every [`SLICE_MS`] ms (on, off, off, on, …),
//! waits for each `ack` before timing the slice, and counts per slice. "Without" is then the
//! tracer with its programs detached (loaded, its process idle); the ratio is the rate over all
//! traced slices over the rate over all untraced ones, in [`ROUNDS`] rounds with a fresh tracer
//! each; then the same with `--hooks-only` (every program returns as soon as it runs): what the
//! kernel's hooks alone cost, the floor under any tracer attached to them. The per-pair ratios
//! (a traced slice and the untraced one next to it) show the spread, and resampling the pairs
//! (bootstrap) gives a 95 % confidence interval of the ratio: a goal is met or missed when the
//! interval says so, undecided otherwise.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::{BenchContext, process::Background};
use crate::run;

/// Rounds, each with a fresh `flamewarden net -a`.
const ROUNDS: usize = 3;
/// Seconds of the connection loop per round.
const RATE_SECS: &str = "8";
/// Seconds of the bulk transfer per round (longer: a bulk slice varies more, and the effect
/// measured is smaller).
const BULK_SECS: &str = "20";
/// Length of a slice with tracing on or off.
const SLICE_MS: &str = "100";
const PORT: &str = "19431";
/// The CPU everything runs on.
const CPU: &str = "0";
/// Goal for the connection rate ratio (traced / bare).
pub const GOAL_RATE: f64 = 0.97;
/// Goal for the bulk throughput ratio (traced / bare).
pub const GOAL_BULK: f64 = 0.99;
/// Time flamewarden gets to start before the client's first command (the client waits for
/// its `ack` anyway: this only catches a tracer that fails at once).
const SETTLE: Duration = Duration::from_millis(500);
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

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
    let (ctl, ack) = (
        ctx.out_dir.join("net-ctl.fifo"),
        ctx.out_dir.join("net-ack.fifo"),
    );
    for fifo in [&ctl, &ack] {
        make_fifo(fifo)?;
    }
    println!(
        "loopback on CPU {CPU}: {RATE_SECS} s of connections and a {BULK_SECS} s transfer per \
         round, `flamewarden net -a` switched on and off every {SLICE_MS} ms, {ROUNDS} rounds"
    );
    let fifos = [ctl.as_path(), ack.as_path()];
    let mut rate = Slices::default();
    let mut bulk = Slices::default();
    let mut floor_rate = Slices::default();
    let mut floor_bulk = Slices::default();
    for round in 1..=ROUNDS {
        for hooks_only in [false, true] {
            let (r, b) = round_of(ctx, &binary, fifos, hooks_only)?;
            println!(
                "  round {round}/{ROUNDS}{}: {:.0} vs {:.0} conn/s traced/bare ({:.3}), {:.0} vs \
                 {:.0} MiB/s ({:.3})",
                if hooks_only { ", hooks only" } else { "" },
                r.on.rate(),
                r.off.rate(),
                r.ratio(),
                b.on.rate() / MIB,
                b.off.rate() / MIB,
                b.ratio(),
            );
            let (rates, bulks) = if hooks_only {
                (&mut floor_rate, &mut floor_bulk)
            } else {
                (&mut rate, &mut bulk)
            };
            rates.extend(r);
            bulks.extend(b);
        }
    }
    drop(server);
    for fifo in [&ctl, &ack] {
        let _ = fs::remove_file(fifo);
    }
    let (rate_ratio, bulk_ratio) = (rate.ratio(), bulk.ratio());
    let (rate_ci, bulk_ci) = (rate.confidence(), bulk.confidence());
    let rate_met = rate_ratio >= GOAL_RATE;
    let bulk_met = bulk_ratio >= GOAL_BULK;
    println!("\nnet: loopback traffic under `flamewarden net -a` ({ROUNDS} rounds)");
    println!(
        "  {:<24} {:>8} {:>8} {:>7} {:>13} {:>20}  goal",
        "", "bare", "traced", "ratio", "95 % interval", "pairs: q1 median q3"
    );
    let rows = [
        ("connections per second", &rate, 1.0, Some(GOAL_RATE)),
        ("  the hooks alone", &floor_rate, 1.0, None),
        ("bulk transfer, MiB/s", &bulk, MIB, Some(GOAL_BULK)),
        ("  the hooks alone", &floor_bulk, MIB, None),
    ];
    for (what, slices, scale, goal) in rows {
        let [lo, hi] = slices.confidence();
        let [q1, q2, q3] = quartiles(&slices.pair_ratios);
        let judged = match goal {
            Some(goal) => format!("≥ {goal}: {}", verdict(slices.ratio(), [lo, hi], goal)),
            None => "(programs that return at once: the floor)".to_owned(),
        };
        println!(
            "  {what:<24} {:>8.0} {:>8.0} {:>7.3} {lo:>6.3}–{hi:<6.3} {q1:>6.3} {q2:>6.3} {q3:>6.3}  \
             {judged}",
            slices.off.rate() / scale,
            slices.on.rate() / scale,
            slices.ratio(),
        );
    }
    let load_after = load_average();
    println!(
        "  load average (1 min) {load_before:.2} before, {load_after:.2} after: the benchmark \
         accounts for about 1; more means other work shared the CPUs"
    );
    let json_path = ctx.out_dir.join("net.json");
    let doc = json!({
        "rounds": ROUNDS,
        "slice_ms": SLICE_MS.parse::<u64>().unwrap_or(0),
        "conns_per_sec": { "bare": rate.off.rate(), "traced": rate.on.rate() },
        "conn_rate_ratio": rate_ratio,
        "conn_rate_ratio_95": rate_ci,
        "conn_rate_pair_ratios": rate.pair_ratios,
        "goal_conn_rate_ratio": GOAL_RATE,
        "bulk_mib_per_sec": { "bare": bulk.off.rate() / MIB, "traced": bulk.on.rate() / MIB },
        "bulk_ratio": bulk_ratio,
        "bulk_ratio_95": bulk_ci,
        "bulk_pair_ratios": bulk.pair_ratios,
        "goal_bulk_ratio": GOAL_BULK,
        "hooks_only": {
            "conn_rate_ratio": floor_rate.ratio(),
            "conn_rate_ratio_95": floor_rate.confidence(),
            "bulk_ratio": floor_bulk.ratio(),
            "bulk_ratio_95": floor_bulk.confidence(),
        },
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

/// One round: a fresh `flamewarden net -a --control` (with `--hooks-only`: its programs return
/// at once), the connection loop, then the bulk transfer, each switching it on and off.
fn round_of(
    ctx: &BenchContext,
    binary: &Path,
    [ctl, ack]: [&Path; 2],
    hooks_only: bool,
) -> anyhow::Result<(Slices, Slices)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", CPU])
        .arg(&ctx.flamewarden)
        .args(["net", "-a", "--control"])
        .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
        .arg("-o")
        .arg(ctx.out_dir.join("net-report.txt"));
    if hooks_only {
        cmd.arg("--hooks-only");
    }
    let tracer = Background::start(cmd, &ctx.out_dir.join("net-flamewarden.log"), SETTLE)?;
    let client = |mode: &str, secs: &str| -> anyhow::Result<Slices> {
        let out = run::stdout(
            Command::new("taskset")
                .args(["-c", CPU])
                .arg(binary)
                .args([mode, PORT, secs])
                .args([ctl, ack])
                .arg(SLICE_MS),
        )?;
        Slices::parse(&out)
    };
    let (rate, bulk) = (client("connect", RATE_SECS)?, client("bulk", BULK_SECS)?);
    tracer.stop(FINISH_TIMEOUT)?;
    Ok((rate, bulk))
}

const MIB: f64 = 1024.0 * 1024.0;

/// What was counted in the slices of one state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Total {
    count: f64,
    secs: f64,
}

impl Total {
    fn rate(self) -> f64 {
        self.count / self.secs
    }
}

/// The slices of controlled runs, by state, and each pair of neighbours (traced, bare).
#[derive(Debug, Default)]
struct Slices {
    on: Total,
    off: Total,
    pairs: Vec<(Total, Total)>,
    pair_ratios: Vec<f64>,
}

impl Slices {
    /// Reads the client's `slice on|off COUNT SECONDS` lines; consecutive slices pair up.
    fn parse(output: &str) -> anyhow::Result<Self> {
        let mut slices = Self::default();
        let mut pending: Option<(bool, Total)> = None;
        for line in output.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ["slice", state, count, secs] = fields[..] else {
                continue;
            };
            let on = match state {
                "on" => true,
                "off" => false,
                _ => anyhow::bail!("the workload printed {line:?}"),
            };
            let (count, secs): (f64, f64) = (
                count.parse().with_context(|| format!("in {line:?}"))?,
                secs.parse().with_context(|| format!("in {line:?}"))?,
            );
            ensure!(secs > 0.0, "a slice of no time: {line:?}");
            let total = if on { &mut slices.on } else { &mut slices.off };
            total.count += count;
            total.secs += secs;
            let this = Total { count, secs };
            match pending.take() {
                Some((first_on, first)) => {
                    ensure!(first_on != on, "two slices of one state paired: {line:?}");
                    let (traced, bare) = if on { (this, first) } else { (first, this) };
                    slices.pair_ratios.push(traced.rate() / bare.rate());
                    slices.pairs.push((traced, bare));
                }
                None => pending = Some((on, this)),
            }
        }
        ensure!(
            slices.on.secs > 0.0 && slices.off.secs > 0.0,
            "the workload printed no slices:\n{output}"
        );
        Ok(slices)
    }

    fn extend(&mut self, other: Self) {
        self.on.count += other.on.count;
        self.on.secs += other.on.secs;
        self.off.count += other.off.count;
        self.off.secs += other.off.secs;
        self.pair_ratios.extend(other.pair_ratios);
        self.pairs.extend(other.pairs);
    }

    /// A 95 % confidence interval of [`Slices::ratio`]: the 2.5th and 97.5th percentiles of the
    /// ratio over 2000 resamplings of the pairs (with a fixed seed, so a run's figures can be
    /// recomputed from its JSON).
    fn confidence(&self) -> [f64; 2] {
        let n = self.pairs.len();
        if n == 0 {
            return [f64::NAN; 2];
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut ratios: Vec<f64> = (0..2000)
            .map(|_| {
                let (mut on, mut off) = (Total::default(), Total::default());
                for _ in 0..n {
                    let (t, b) = self.pairs[next()];
                    on.count += t.count;
                    on.secs += t.secs;
                    off.count += b.count;
                    off.secs += b.secs;
                }
                on.rate() / off.rate()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        [ratios[49], ratios[1949]]
    }

    /// Traced rate over bare rate, over all slices.
    fn ratio(&self) -> f64 {
        self.on.rate() / self.off.rate()
    }
}

/// `met` or `MISSED` by the ratio, and whether the confidence interval is on the same side.
fn verdict(ratio: f64, [lo, hi]: [f64; 2], goal: f64) -> &'static str {
    match (ratio >= goal, lo >= goal, hi < goal) {
        (true, true, _) => "met",
        (true, false, _) => "met (undecided: the interval spans the goal)",
        (false, _, true) => "MISSED",
        (false, _, false) => "MISSED (undecided: the interval spans the goal)",
    }
}

/// First quartile, median and third quartile (nearest rank).
fn quartiles(values: &[f64]) -> [f64; 3] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    [at(0.25), at(0.5), at(0.75)]
}

/// The 1-minute load average (NaN when unreadable).
fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Makes (or re-makes) a FIFO at `path`.
fn make_fifo(path: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    run::status(Command::new("mkfifo").args(["-m", "600"]).arg(path))
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

/// The loopback server, on the benchmark's CPU; killed on drop.
struct Server(Child);

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", CPU])
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
    fn slices_pair_up_and_total_by_state() {
        let out = "slice on 90 0.1\nslice off 100 0.1\nslice off 200 0.2\nslice on 180 0.2\n";
        let s = Slices::parse(out).unwrap();
        assert_eq!(s.on.count, 270.0);
        assert!((s.on.secs - 0.3).abs() < 1e-9);
        assert_eq!(s.off.count, 300.0);
        assert!((s.ratio() - 0.9).abs() < 1e-9);
        assert_eq!(s.pair_ratios.len(), 2);
        assert!(s.pair_ratios.iter().all(|r| (r - 0.9).abs() < 1e-9));
        assert!(Slices::parse("slice on 1 0.1\nslice on 1 0.1\n").is_err());
        assert!(Slices::parse("nothing\n").is_err());
        assert!(Slices::parse("slice maybe 1 0.1\n").is_err());
        assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0, 5.0]), [2.0, 3.0, 4.0]);
        // Every pair has the same ratio: so has every resampling.
        let [lo, hi] = s.confidence();
        assert!((lo - 0.9).abs() < 1e-9 && (hi - 0.9).abs() < 1e-9);
        assert_eq!(verdict(0.98, [0.975, 0.985], 0.97), "met");
        assert!(verdict(0.98, [0.96, 0.99], 0.97).contains("undecided"));
        assert_eq!(verdict(0.9, [0.89, 0.91], 0.97), "MISSED");
    }
}
