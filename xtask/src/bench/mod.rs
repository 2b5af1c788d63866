//! `cargo xtask bench [NAME]`: benchmarks against the real kernel, each a function that prints
//! a table and writes `target/bench/<name>.json`.

mod ci;
mod daemon;
mod guard;
mod net;
mod process;
mod record;
mod soak;
mod stats;
mod syscalls;

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail, ensure};
use clap::Args;

use crate::{
    build::{self, Profile},
    env::{is_root, target_dir},
    setup,
};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The benchmark to run: record, syscalls, guard, net, ci or daemon (default: every
    /// implemented one).
    name: Option<String>,
}

/// What every benchmark gets.
pub struct BenchContext {
    /// The flamewarden binary under test.
    pub flamewarden: PathBuf,
    /// `target/bench/`: compiled workloads, profiler outputs, logs and `<name>.json`.
    pub out_dir: PathBuf,
}

/// A benchmark's body: measures, prints its table, writes `<name>.json`.
type BenchFn = fn(&BenchContext) -> anyhow::Result<()>;

/// A benchmark: its name on the command line, what it measures, and its body (`None`: planned).
struct Benchmark {
    name: &'static str,
    measures: &'static str,
    run: Option<BenchFn>,
}

const BENCHMARKS: [Benchmark; 6] = [
    Benchmark {
        name: "record",
        measures: "CPU profiling overhead and cost, against perf",
        run: Some(record::run),
    },
    Benchmark {
        name: "syscalls",
        measures: "syscall and off-CPU tracing overhead, against bpftrace",
        run: Some(syscalls::run),
    },
    Benchmark {
        name: "guard",
        measures: "sandbox guard overhead",
        run: Some(guard::run),
    },
    Benchmark {
        name: "net",
        measures: "network tracing overhead",
        run: Some(net::run),
    },
    Benchmark {
        name: "ci",
        measures: "`flamewarden ci` report time",
        run: Some(ci::run),
    },
    Benchmark {
        name: "daemon",
        measures: "daemon steady-state cost",
        run: Some(daemon::run),
    },
];

/// Runs `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let selected: Vec<&Benchmark> = match &args.name {
        None => BENCHMARKS.iter().filter(|b| b.run.is_some()).collect(),
        Some(name) => vec![find(name)?],
    };
    let runnable: Vec<(&str, BenchFn)> = selected
        .iter()
        .map(|b| match b.run {
            Some(run) => Ok((b.name, run)),
            None => Err(anyhow::anyhow!(
                "benchmark `{}` ({}) is planned but not implemented yet",
                b.name,
                b.measures
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        is_root(),
        "benchmarks profile the whole system and load BPF programs: run them as root"
    );

    setup::run(setup::Scope::All)?;
    let flamewarden = match std::env::var_os("FLAMEWARDEN_BIN") {
        // Benchmark a binary built elsewhere (an installed release, another branch).
        Some(bin) => PathBuf::from(bin),
        None => build::build(Profile::Release)?,
    };
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let ctx = BenchContext {
        flamewarden,
        out_dir,
    };
    for (name, run) in runnable {
        println!("\n==> bench {name}");
        // The guard's syscall layer, left attached by earlier sandbox runs (`bench guard`, the
        // tests), would cost bare and traced runs alike on every system call.
        crate::run::stdout(Command::new(&ctx.flamewarden).args(["guard", "release"]))?;
        run(&ctx).with_context(|| format!("benchmark `{name}` failed"))?;
    }
    Ok(())
}

fn find(name: &str) -> anyhow::Result<&'static Benchmark> {
    if let Some(bench) = BENCHMARKS.iter().find(|b| b.name == name) {
        return Ok(bench);
    }
    let names: Vec<String> = BENCHMARKS
        .iter()
        .map(|b| {
            let planned = if b.run.is_some() { "" } else { ", planned" };
            format!("  {:<9} {}{planned}", b.name, b.measures)
        })
        .collect();
    bail!(
        "unknown benchmark `{name}`; the benchmarks are:\n{}",
        names.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_benchmark_error_lists_every_name() {
        let err = find("recrod").err().unwrap().to_string();
        for bench in &BENCHMARKS {
            assert!(err.contains(bench.name), "{err}");
        }
    }

    #[test]
    fn planned_benchmark_is_refused_before_any_setup() {
        // Every benchmark may be implemented by now.
        let Some(planned) = BENCHMARKS.iter().find(|b| b.run.is_none()) else {
            return;
        };
        let err = run(&BenchArgs {
            name: Some(planned.name.to_owned()),
        })
        .unwrap_err();
        assert!(err.to_string().contains("not implemented yet"), "{err}");
    }
}
