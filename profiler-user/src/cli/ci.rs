//! `flamewarden ci`: profile a benchmark in CI, diff against a baseline, gate the build.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::{
    ci::{self, CiOutcome, CiRunOptions},
    profile::diff::{DEFAULT_Z_CRITICAL, DiffSettings},
};

/// Exit code when a function regressed (the report is still written).
const EXIT_REGRESSED: u8 = 1;

/// Arguments of `flamewarden ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CiCommand,
}

/// `ci` subcommands.
#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Profile COMMAND N times, merge, compare with a baseline; exit 1 on a regression.
    #[command(
        after_help = "Exit status: 0 nothing regressed, 1 a hot path regressed, 2 error.\n\n\
        Example:\n  flamewarden ci run --baseline main/profile.json --out flamewarden-ci -- \
        ./target/release/bench"
    )]
    Run(CiRunArgs),
    /// Compare two profile JSON files (e.g. two `ci run` outputs); exit 1 on a regression.
    Diff(CiDiffArgs),
}

/// Thresholds shared by `ci run` and `ci diff`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// A function regresses when its self share grows by more than PCT percentage points
    /// (and by more than the noise).
    #[arg(long, default_value_t = 5.0, value_name = "PCT")]
    pub budget: f64,
    /// Critical z value of the significance test (one-sided).
    #[arg(long, default_value_t = DEFAULT_Z_CRITICAL, value_name = "Z")]
    pub z_critical: f64,
    /// Functions with a self or total share above PCT are listed as hot paths.
    #[arg(long, default_value_t = 5.0, value_name = "PCT")]
    pub hot_threshold: f64,
    /// The report directory.
    #[arg(long, default_value = "flamewarden-ci", value_name = "DIR")]
    pub out: PathBuf,
}

/// Arguments of `flamewarden ci run`.
#[derive(Debug, Args)]
pub struct CiRunArgs {
    /// A `profile.json` from an earlier run to compare with.
    #[arg(long, value_name = "FILE.json")]
    pub baseline: Option<PathBuf>,
    /// How many times to run COMMAND; more runs measure the noise better.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub runs: u16,
    /// Sampling frequency per CPU.
    #[arg(short = 'F', long, default_value_t = 999, value_name = "HZ")]
    pub frequency: u64,
    /// Thresholds and output.
    #[command(flatten)]
    pub gate: GateArgs,
    /// The benchmark to profile, with its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Arguments of `flamewarden ci diff`.
#[derive(Debug, Args)]
pub struct CiDiffArgs {
    /// The baseline profile JSON.
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The new profile JSON.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Thresholds and output.
    #[command(flatten)]
    pub gate: GateArgs,
}

impl GateArgs {
    fn settings(&self) -> anyhow::Result<DiffSettings> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.budget),
            "--budget {}: must be between 0 and 100 points",
            self.budget
        );
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.hot_threshold),
            "--hot-threshold {}: must be a percentage between 0 and 100",
            self.hot_threshold
        );
        anyhow::ensure!(
            self.z_critical.is_finite() && self.z_critical >= 0.0,
            "--z-critical {}: must be a non-negative number",
            self.z_critical
        );
        Ok(DiffSettings {
            budget_pct: self.budget,
            z_critical: self.z_critical,
            ..DiffSettings::default()
        })
    }
}

/// Runs `flamewarden ci`; errors become exit code 2 in `main`.
pub fn run(args: CiArgs) -> anyhow::Result<ExitCode> {
    let outcome = match args.command {
        CiCommand::Run(args) => {
            let settings = args.gate.settings()?;
            let stop = super::stop_flag()?;
            let opts = CiRunOptions {
                command: args.command,
                runs: usize::from(args.runs),
                frequency_hz: args.frequency,
                baseline: args.baseline,
                settings,
                hot_threshold_pct: args.gate.hot_threshold,
            };
            ci::run(&opts, &args.gate.out, &stop)?
        }
        CiCommand::Diff(args) => {
            let settings = args.gate.settings()?;
            ci::diff(
                &args.base,
                &args.new,
                settings,
                args.gate.hot_threshold,
                &args.gate.out,
            )?
        }
    };
    Ok(summarize(&outcome))
}

/// Prints the regressions and the files to stderr; the exit code of the verdict.
fn summarize(outcome: &CiOutcome) -> ExitCode {
    if let Some(diff) = &outcome.report.diff {
        for change in diff.regressions() {
            eprintln!(
                "regressed: {} self {:.1}% → {:.1}% ({:+.1} points, z = {:.1})",
                change.name,
                change.base_self_pct,
                change.new_self_pct,
                change.delta_self_pts,
                change.z
            );
        }
    }
    for file in &outcome.files {
        eprintln!("wrote {}", file.display());
    }
    if outcome.report.regressed {
        ExitCode::from(EXIT_REGRESSED)
    } else {
        ExitCode::SUCCESS
    }
}
