//! `flamewarden record`: CPU flamegraphs of a command, processes, a cgroup or the system.

use std::{ffi::OsString, io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use super::output::{self, Output, OutputFormat};
use crate::{
    probes::MapSizes,
    profile::report,
    record::{RecordMode, RecordOptions, RecordTarget, record},
    symbolize::SymbolDetail,
};

/// Arguments of `flamewarden record`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flamewarden record -o cpu.svg -- ./solution < input.txt\n  \
    flamewarden record -p 1234 -d 30 -o api.svg -o api.json\n  \
    flamewarden record --cgroup /sys/fs/cgroup/unified/judge/run42 -o run.folded\n  \
    flamewarden record -a -F 999 -d 10 -o system.svg\n  \
    flamewarden record --off-cpu --min-block 100us -p 1234 -d 10 -o blocked.svg\n  \
    flamewarden record --wall -o wall.svg -- ./solution"
)]
pub struct RecordArgs {
    /// Profile these processes (repeatable; all their threads).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Profile every process in this cgroup v2 directory and its descendants (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Profile the whole system.
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Sampling frequency per CPU, in Hz.
    #[arg(short = 'F', long, default_value_t = 99, value_name = "HZ")]
    pub frequency: u64,
    /// Record blocked time instead of CPU samples: how long each stack waited off the CPU
    /// (from sched_switch), weighted in ns, under an `[off-cpu]` frame.
    #[arg(long, conflicts_with = "wall")]
    pub off_cpu: bool,
    /// Wall-clock time: CPU samples converted to time plus blocked time (under `[off-cpu]`,
    /// drawn in blue) in one profile, weighted in ns.
    #[arg(long)]
    pub wall: bool,
    /// Shortest block recorded with --off-cpu or --wall (e.g. 1us, 500us, 2ms).
    #[arg(long, value_name = "DURATION", default_value = "1us", value_parser = super::syscalls::parse_duration)]
    pub min_block: Duration,
    /// Stop after SECS seconds (default: when COMMAND exits, or on Ctrl-C).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Output file: .svg (flamegraph), .folded (folded stacks), .json (see docs/profile-json.md).
    #[arg(short, long = "output", value_name = "FILE", value_parser = output::parse_output)]
    pub outputs: Vec<Output>,
    /// Number of functions in the hot-path table.
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub top: usize,
    /// Self share (percent) from which a function is flagged as a hot path.
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    pub hot_threshold: f64,
    /// Capacity of the in-kernel aggregation map (distinct stacks × processes).
    #[arg(long, value_name = "N")]
    pub max_keys: Option<u32>,
    /// Capacity of the in-kernel stack map.
    #[arg(long, value_name = "N")]
    pub max_stacks: Option<u32>,
    /// The command to start and profile, with all its descendants.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_secs(arg: &str) -> Result<Duration, String> {
    let secs: f64 = arg
        .parse()
        .map_err(|_| format!("`{arg}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{arg}`: the duration must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl RecordArgs {
    /// The single target these arguments name.
    pub fn target(&self) -> anyhow::Result<RecordTarget> {
        choose_target(&self.command, &self.pids, &self.cgroups, self.all)
    }
}

/// The single target of `-- COMMAND`, `-p PID`, `--cgroup PATH` or `-a`; an error unless exactly
/// one kind is given.
pub fn choose_target(
    command: &[OsString],
    pids: &[u32],
    cgroups: &[PathBuf],
    all: bool,
) -> anyhow::Result<RecordTarget> {
    let given = [
        !command.is_empty(),
        !pids.is_empty(),
        !cgroups.is_empty(),
        all,
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    anyhow::ensure!(
        given == 1,
        "give exactly one target: -- COMMAND, -p PID, --cgroup PATH or -a ({given} given)"
    );
    Ok(if !command.is_empty() {
        RecordTarget::Command(command.to_vec())
    } else if !pids.is_empty() {
        RecordTarget::Pids(pids.to_vec())
    } else if !cgroups.is_empty() {
        RecordTarget::Cgroups(cgroups.to_vec())
    } else {
        RecordTarget::All
    })
}

/// Source files and lines only for outputs that show them: reading DWARF is most of the
/// symbolization cost.
fn symbol_detail(outputs: &[Output]) -> SymbolDetail {
    if outputs
        .iter()
        .any(|o| matches!(o.format, OutputFormat::Json | OutputFormat::Pprof))
    {
        SymbolDetail::Lines
    } else {
        SymbolDetail::Names
    }
}

/// Runs `flamewarden record`.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let target = args.target()?;
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.hot_threshold),
        "--hot-threshold {}: must be a percentage between 0 and 100",
        args.hot_threshold
    );
    for output in &args.outputs {
        output::check_writable(output)?;
    }
    let with_command = matches!(target, RecordTarget::Command(_));
    let stop = super::stop_flag()?;
    let mode = if args.wall {
        RecordMode::Wall
    } else if args.off_cpu {
        RecordMode::OffCpu
    } else {
        RecordMode::Cpu
    };
    let opts = RecordOptions {
        target,
        mode,
        min_block_ns: args.min_block.as_nanos().min(u64::MAX as u128) as u64,
        frequency_hz: args.frequency,
        duration: args.duration,
        map_sizes: MapSizes {
            sample_keys: args.max_keys,
            stacks: args.max_stacks,
        },
        symbols: symbol_detail(&args.outputs),
    };
    let recording = record(&opts, &stop)?;
    let title = match &recording.profile.meta.command {
        Some(argv) => format!("flamewarden record -- {}", argv.join(" ")),
        None => format!("flamewarden record: {}", recording.profile.meta.target),
    };
    output::write_all(&recording.profile, &args.outputs, &title)?;
    let table = report::terminal_report(&recording.profile, args.top, args.hot_threshold);
    // The command owns stdout; the report goes to stderr then, like perf's messages.
    if with_command {
        eprint!("{table}");
    } else {
        print!("{table}");
        std::io::stdout().flush()?;
    }
    for output in &args.outputs {
        eprintln!("wrote {}", output.path.display());
    }
    let code = recording.exit_status.map_or(0, |s| s.as_shell_code());
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flamewarden").chain(args.iter().copied()))
    }

    fn record_args(args: &[&str]) -> super::RecordArgs {
        match parse(args).unwrap().command {
            Command::Record(r) => r,
            other => panic!("not record: {other:?}"),
        }
    }

    #[test]
    fn accepts_a_command_after_double_dash_with_its_own_flags() {
        let r = record_args(&[
            "record", "-F", "199", "-o", "a.svg", "-o", "a.json", "--", "ls", "-l",
        ]);
        assert_eq!(r.frequency, 199);
        assert_eq!(r.outputs.len(), 2);
        assert_eq!(r.command, ["ls", "-l"]);
        assert!(matches!(
            r.target().unwrap(),
            crate::record::RecordTarget::Command(_)
        ));
    }

    #[test]
    fn rejects_zero_or_several_targets() {
        let err = record_args(&["record"]).target().unwrap_err().to_string();
        assert!(err.contains("exactly one target"), "{err}");
        let err = record_args(&["record", "-a", "-p", "1"])
            .target()
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 given"), "{err}");
    }

    #[test]
    fn off_cpu_and_wall_take_a_minimum_block_and_exclude_each_other() {
        let r = record_args(&["record", "--off-cpu", "--min-block", "250us", "-a"]);
        assert!(r.off_cpu && !r.wall);
        assert_eq!(r.min_block.as_micros(), 250);
        assert_eq!(
            record_args(&["record", "--wall", "-a"])
                .min_block
                .as_nanos(),
            1_000
        );
        assert!(parse(&["record", "--wall", "--off-cpu", "-a"]).is_err());
        assert!(parse(&["record", "--off-cpu", "--min-block", "soon", "-a"]).is_err());
    }

    #[test]
    fn rejects_bad_durations_and_output_extensions() {
        assert!(parse(&["record", "-a", "-d", "-3"]).is_err());
        assert!(
            parse(&["record", "-a", "-d", "soon"])
                .unwrap_err()
                .to_string()
                .contains("soon")
        );
        let err = parse(&["record", "-a", "-o", "x.png"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.png"), "{err}");
        assert_eq!(
            record_args(&["record", "-a", "-d", "1.5"])
                .duration
                .unwrap()
                .as_millis(),
            1500
        );
    }
}
