//! The record benchmark's results: the table, `record.json`, and the goals.

use std::{fmt::Write as _, fs, time::Duration};

use serde_json::{Value, json};

use crate::bench::stats::{median, sign_test_p};

/// Most the profiled workload may slow down under flamewarden at 99 Hz.
pub const GOAL_OVERHEAD_RATIO: f64 = 1.003;
/// A sign-test p-value below this says flamewarden was slower than perf in more runs than
/// chance explains.
pub const SIGNIFICANCE: f64 = 0.05;
/// Most CPU flamewarden may spend, as a share of perf's, up to a flamegraph.
pub const GOAL_CPU_RATIO: f64 = 0.25;

/// Wall times of the fixed workload, in seconds, per repetition.
#[derive(Debug, Default)]
pub struct Overhead {
    /// Workload processes (one per CPU).
    pub procs: usize,
    /// Arithmetic rounds per process.
    pub rounds: u64,
    /// Share of CPU time busy just before the first run: other work makes the figures noisy.
    pub busy_before: f64,
    pub bare: Vec<f64>,
    pub flamewarden: Vec<f64>,
    pub perf: Vec<f64>,
}

impl Overhead {
    /// The median over repetitions of (wall under flamewarden / wall bare).
    pub fn flamewarden_ratio(&self) -> f64 {
        median_ratio(&self.flamewarden, &self.bare)
    }

    /// The median over repetitions of (wall under perf / wall bare).
    pub fn perf_ratio(&self) -> f64 {
        median_ratio(&self.perf, &self.bare)
    }

    /// The median over repetitions of (wall under flamewarden / wall under perf in the same
    /// repetition): the direct comparison, with drifts between repetitions cancelled.
    pub fn vs_perf(&self) -> f64 {
        median_ratio(&self.flamewarden, &self.perf)
    }

    /// Repetitions in which the workload was slower under flamewarden than under perf.
    pub fn slower_than_perf(&self) -> usize {
        self.flamewarden
            .iter()
            .zip(&self.perf)
            .filter(|(f, p)| f > p)
            .count()
    }

    /// The one-sided sign test of "slower under flamewarden than under perf" over the paired
    /// repetitions.
    pub fn worse_than_perf_p(&self) -> f64 {
        sign_test_p(
            self.slower_than_perf(),
            self.flamewarden.len().min(self.perf.len()),
        )
    }

    /// "No worse than perf": the workload was not slower under flamewarden than under perf in
    /// significantly more repetitions than chance gives. Both overheads are about 0.1 % at
    /// 99 Hz, below the run-to-run spread of a shared machine (about 0.3 %), so a plain
    /// comparison of two medians would flip on noise.
    pub fn no_worse_than_perf(&self) -> bool {
        self.vs_perf() <= 1.0 || self.worse_than_perf_p() >= SIGNIFICANCE
    }
}

/// Each repetition's runs are adjacent in time, so their ratio cancels slow drifts in machine
/// speed (thermal, other load) that a ratio of overall medians would keep.
fn median_ratio(profiled: &[f64], bare: &[f64]) -> f64 {
    let ratios: Vec<f64> = profiled.iter().zip(bare).map(|(p, b)| p / b).collect();
    median(&ratios)
}

/// What one profiler cost to produce a flamegraph.
#[derive(Debug)]
pub struct ProfilerCost {
    /// User plus system CPU time of every process involved.
    pub cpu: Duration,
    /// The largest peak RSS among them.
    pub max_rss_kib: u64,
    /// From SIGINT to the SVG being written.
    pub stop_to_svg: Duration,
    /// Size of the SVG.
    pub svg_bytes: u64,
}

/// The profiling-cost measurement.
#[derive(Debug)]
pub struct Cost {
    /// How long each profiler recorded the workload.
    pub secs: f64,
    /// Busy workers in the workload.
    pub procs: usize,
    pub flamewarden: ProfilerCost,
    /// `perf record` plus `perf script | inferno-collapse-perf | inferno-flamegraph`.
    pub perf: ProfilerCost,
    /// `perf record` alone.
    pub perf_record_cpu: Duration,
    /// `perf record` alone.
    pub perf_record_rss_kib: u64,
}

impl Cost {
    /// flamewarden's CPU time over perf's.
    pub fn cpu_ratio(&self) -> f64 {
        self.flamewarden.cpu.as_secs_f64() / self.perf.cpu.as_secs_f64()
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The human-readable results.
pub fn table(overhead: &Overhead, cost: &Cost) -> String {
    let mut out = String::new();
    let bare = median(&overhead.bare);
    let fw = overhead.flamewarden_ratio();
    let _ = writeln!(
        out,
        "\nrecord: overhead on a CPU-bound workload ({} processes × {} rounds, {} interleaved \
         runs)",
        overhead.procs,
        overhead.rounds,
        overhead.bare.len()
    );
    let _ = writeln!(out, "  {:<28} {:>10} {:>9}", "", "median wall", "vs bare");
    let _ = writeln!(out, "  {:<28} {:>8.3} s {:>9.4}", "bare", bare, 1.0);
    let _ = writeln!(
        out,
        "  {:<28} {:>8.3} s {:>9.4}",
        "flamewarden record -a -F 99",
        median(&overhead.flamewarden),
        fw
    );
    let _ = writeln!(
        out,
        "  {:<28} {:>8.3} s {:>9.4}",
        "perf record -a -g -F 99",
        median(&overhead.perf),
        overhead.perf_ratio()
    );
    let _ = writeln!(
        out,
        "  (vs bare: the median of each run's ratio to the bare run next to it)\n  \
         flamewarden / perf in the same run: median {:.4}, slower in {} of {} runs (sign test \
         p = {:.3})\n  \
         goal: flamewarden ≤ {GOAL_OVERHEAD_RATIO} × bare: {}; no worse than perf: {}",
        overhead.vs_perf(),
        overhead.slower_than_perf(),
        overhead.flamewarden.len(),
        overhead.worse_than_perf_p(),
        verdict(fw <= GOAL_OVERHEAD_RATIO),
        verdict(overhead.no_worse_than_perf())
    );

    let _ = writeln!(
        out,
        "\nrecord: cost of a system-wide flamegraph at 999 Hz ({} s, {} busy workers)",
        cost.secs, cost.procs
    );
    let _ = writeln!(
        out,
        "  {:<28} {:>12} {:>12} {:>12}",
        "", "CPU time", "peak RSS", "stop → SVG"
    );
    for (name, c) in [
        ("flamewarden record", &cost.flamewarden),
        ("perf record + script+inferno", &cost.perf),
    ] {
        let _ = writeln!(
            out,
            "  {:<28} {:>10.2} s {:>8.1} MiB {:>10.2} s",
            name,
            c.cpu.as_secs_f64(),
            mib(c.max_rss_kib),
            c.stop_to_svg.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "  CPU ratio flamewarden/perf {:.3}; goal ≤ {GOAL_CPU_RATIO}: {}",
        cost.cpu_ratio(),
        verdict(cost.cpu_ratio() <= GOAL_CPU_RATIO)
    );
    out
}

/// The goals not met, in words.
pub fn missed_goals(overhead: &Overhead, cost: &Cost) -> Vec<String> {
    let fw = overhead.flamewarden_ratio();
    let mut missed = Vec::new();
    if fw > GOAL_OVERHEAD_RATIO {
        missed.push(format!(
            "overhead {fw:.4} × bare is above {GOAL_OVERHEAD_RATIO}"
        ));
    }
    if !overhead.no_worse_than_perf() {
        missed.push(format!(
            "overhead {fw:.4} is worse than perf's {:.4}: slower in {} of {} runs (p = {:.3})",
            overhead.perf_ratio(),
            overhead.slower_than_perf(),
            overhead.flamewarden.len(),
            overhead.worse_than_perf_p()
        ));
    }
    if cost.cpu_ratio() > GOAL_CPU_RATIO {
        missed.push(format!(
            "CPU time {:.3} × perf's is above {GOAL_CPU_RATIO}",
            cost.cpu_ratio()
        ));
    }
    missed
}

/// `target/bench/record.json`.
pub fn json(overhead: &Overhead, cost: &Cost) -> Value {
    let profiler = |c: &ProfilerCost| {
        json!({
            "cpu_s": c.cpu.as_secs_f64(),
            "max_rss_kib": c.max_rss_kib,
            "stop_to_svg_s": c.stop_to_svg.as_secs_f64(),
            "svg_bytes": c.svg_bytes,
        })
    };
    json!({
        "benchmark": "record",
        "machine": {
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            "cpus": overhead.procs,
        },
        "overhead": {
            "frequency_hz": 99,
            "processes": overhead.procs,
            "rounds_per_process": overhead.rounds,
            "cpu_busy_before": overhead.busy_before,
            "wall_s": {
                "bare": overhead.bare,
                "flamewarden": overhead.flamewarden,
                "perf": overhead.perf,
            },
            "median_wall_s": {
                "bare": median(&overhead.bare),
                "flamewarden": median(&overhead.flamewarden),
                "perf": median(&overhead.perf),
            },
            "median_ratio_to_bare": {
                "flamewarden": overhead.flamewarden_ratio(),
                "perf": overhead.perf_ratio(),
            },
            "vs_perf": {
                "median_paired_ratio": overhead.vs_perf(),
                "slower_runs": overhead.slower_than_perf(),
                "sign_test_p": overhead.worse_than_perf_p(),
            },
            "goal": {
                "max_ratio": GOAL_OVERHEAD_RATIO,
                "met": overhead.flamewarden_ratio() <= GOAL_OVERHEAD_RATIO
                    && overhead.no_worse_than_perf(),
            },
        },
        "cost": {
            "frequency_hz": 999,
            "seconds": cost.secs,
            "workers": cost.procs,
            "flamewarden": profiler(&cost.flamewarden),
            "perf": profiler(&cost.perf),
            "perf_record_only": {
                "cpu_s": cost.perf_record_cpu.as_secs_f64(),
                "max_rss_kib": cost.perf_record_rss_kib,
            },
            "cpu_ratio": cost.cpu_ratio(),
            "goal": {
                "max_cpu_ratio": GOAL_CPU_RATIO,
                "met": cost.cpu_ratio() <= GOAL_CPU_RATIO,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_ratio_pairs_each_run_with_the_bare_run_next_to_it() {
        // The machine got twice as fast half-way: every profiled run is 1% slower than the
        // bare run beside it, which a ratio of overall medians would not show.
        let overhead = Overhead {
            bare: vec![4.0, 4.0, 4.0, 2.0, 2.0],
            flamewarden: vec![4.04, 4.04, 2.02, 2.02, 2.02],
            perf: vec![4.0, 4.0, 4.0, 2.0, 2.0],
            ..Overhead::default()
        };
        assert!((overhead.flamewarden_ratio() - 1.01).abs() < 1e-9);
        assert!((overhead.perf_ratio() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn worse_than_perf_only_when_slower_in_significantly_many_runs() {
        let runs = |fw: &[f64], perf: &[f64]| Overhead {
            bare: vec![2.0; fw.len()],
            flamewarden: fw.to_vec(),
            perf: perf.to_vec(),
            ..Overhead::default()
        };
        // Slower in 6 of 11: chance.
        let noise = runs(
            &[2.01, 2.01, 2.01, 2.01, 2.01, 2.01, 2.0, 2.0, 2.0, 2.0, 2.0],
            &[2.005; 11],
        );
        assert_eq!(noise.slower_than_perf(), 6);
        assert!(noise.no_worse_than_perf());
        // Slower in 10 of 11: not chance.
        let mut fw = vec![2.01; 10];
        fw.push(2.0);
        let worse = runs(&fw, &[2.005; 11]);
        assert!(worse.worse_than_perf_p() < SIGNIFICANCE);
        assert!(!worse.no_worse_than_perf());
    }

    #[test]
    fn table_and_missed_goals_agree_on_each_goal() {
        let overhead = Overhead {
            procs: 2,
            rounds: 700_000_000,
            bare: vec![2.0; 5],
            flamewarden: vec![2.01; 5],
            perf: vec![2.1; 5],
            ..Overhead::default()
        };
        let profiler = |cpu_ms| ProfilerCost {
            cpu: Duration::from_millis(cpu_ms),
            max_rss_kib: 50 * 1024,
            stop_to_svg: Duration::from_millis(300),
            svg_bytes: 1,
        };
        let cost = Cost {
            secs: 60.0,
            procs: 2,
            flamewarden: profiler(1_000),
            perf: profiler(10_000),
            perf_record_cpu: Duration::from_secs(3),
            perf_record_rss_kib: 1024,
        };
        let table = table(&overhead, &cost);
        assert!(
            table.contains("≤ 1.003 × bare: MISSED; no worse than perf: met"),
            "{table}"
        );
        assert!(table.contains("goal ≤ 0.25: met"), "{table}");
        assert_eq!(missed_goals(&overhead, &cost).len(), 1);
        let json = json(&overhead, &cost);
        assert_eq!(json["overhead"]["goal"]["met"], false);
        assert_eq!(json["cost"]["goal"]["met"], true);
    }
}
