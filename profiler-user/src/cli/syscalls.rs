//! `flamewarden syscalls`: per-syscall counts, errors and latency of a command, processes, a
//! cgroup or the system; slow calls streamed as they happen; a live table without `-d`.

use std::{
    collections::VecDeque,
    ffi::OsString,
    fs,
    io::{IsTerminal as _, Write},
    path::PathBuf,
    process::ExitCode,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use profiler_common::SyscallConfig;

mod live;
mod names;
mod slow;

use live::draw_live;
use names::NameCache;
use slow::SlowCalls;

use super::record::{choose_target, parse_secs};
use crate::{
    collect::{
        mappings::{MappingTracker, TrackerOptions},
        syscalls::{SlowCallReader, snapshot_syscalls},
    },
    probes::{self, Family, MapSizes, SyscallTracer},
    record::{Progress, RecordTarget, Session},
    symbolize::{AddressSpaces, Symbolizer},
    syscalls::{
        GroupBy, Names, SlowCall, SyscallSnapshot, build_table, latency_of, parse_syscall,
        render_ascii, render_table, syscall_name, to_json,
    },
};

/// Arguments of `flamewarden syscalls`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without -d and without a command, the table refreshes every second \
    until Ctrl-C.\n\nExamples:\n  flamewarden syscalls -- ./solution < input.txt\n  \
    flamewarden syscalls -p 1234 -d 10 --by process\n  \
    flamewarden syscalls --cgroup /sys/fs/cgroup/api --slower-than 10ms\n  \
    flamewarden syscalls -a -d 5 --histogram openat --json -o calls.json"
)]
pub struct SyscallsArgs {
    /// Trace these processes (repeatable; all their threads).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace every process in this cgroup v2 directory and its descendants (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Trace the whole system (the default when no target is given).
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Stop after SECS seconds (default: when COMMAND exits, or on Ctrl-C).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// One row per syscall, per process or per cgroup.
    #[arg(long, value_enum, default_value_t = GroupBy::Syscall)]
    pub by: GroupBy,
    /// Stream every call at least this slow (e.g. 10ms, 500us) with its user stack.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slower_than: Option<Duration>,
    /// Print the latency distribution of syscall NAME as an ASCII histogram (repeatable).
    #[arg(long = "histogram", value_name = "NAME", value_parser = parse_syscall_arg)]
    pub histograms: Vec<u32>,
    /// Write the table (and slow calls) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the final table to FILE instead of the terminal.
    #[arg(short, long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The command to start and trace, with all its descendants.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Parses `10ms`, `1.5s`, `250us` (or `µs`), `800ns` (a clap value parser).
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    let split = arg
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(arg.len());
    let (number, unit) = arg.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "" => return Err(format!("`{arg}` has no unit: write e.g. 10ms, 500us or 2s")),
        other => {
            return Err(format!(
                "`{arg}`: unknown unit `{other}` (use ns, us, ms or s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{arg}` is not a duration"))?;
    Ok(Duration::from_secs_f64(value * scale))
}

fn parse_syscall_arg(arg: &str) -> Result<u32, String> {
    parse_syscall(arg).ok_or_else(|| format!("`{arg}` is not a syscall of this machine"))
}

/// How often the loop looks at the ring buffer, the command and the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How often the live table is redrawn.
const REFRESH: Duration = Duration::from_secs(1);
/// Slow calls kept under the live table.
const LIVE_EVENTS: usize = 8;

/// Where the live tables and the slow-call lines go.
struct Sinks {
    /// Live mode: `Some(true)` redraws the terminal, `Some(false)` prints table after table.
    live: Option<bool>,
    events_to_stderr: bool,
    /// The last slow calls, shown under a redrawn table.
    recent: VecDeque<String>,
}

impl Sinks {
    fn event(&mut self, line: &str) -> std::io::Result<()> {
        if self.live == Some(true) {
            self.recent.push_back(line.to_owned());
            while self.recent.len() > LIVE_EVENTS {
                self.recent.pop_front();
            }
            return Ok(());
        }
        if self.events_to_stderr {
            std::io::stderr().write_all(line.as_bytes())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()
        }
    }
}

/// Runs `flamewarden syscalls`.
pub fn run(args: SyscallsArgs) -> anyhow::Result<ExitCode> {
    let target = if args.pids.is_empty() && args.cgroups.is_empty() && args.command.is_empty() {
        RecordTarget::All
    } else {
        choose_target(&args.command, &args.pids, &args.cgroups, args.all)?
    };
    if let Some(path) = &args.output {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(".".as_ref());
        anyhow::ensure!(
            dir.is_dir(),
            "cannot write {}: no directory {}",
            path.display(),
            dir.display()
        );
    }
    let with_command = matches!(target, RecordTarget::Command(_));
    let live = args.duration.is_none() && !with_command && !args.json;
    let stop = super::stop_flag()?;
    let mut sinks = Sinks {
        live: live.then(|| std::io::stdout().is_terminal()),
        events_to_stderr: with_command || (args.json && args.output.is_none()),
        recent: VecDeque::new(),
    };
    let (snapshot, slow_calls, names, elapsed, exit_status, description) =
        trace(&args, &target, &stop, &mut sinks)?;

    let table = build_table(&snapshot, args.by, &names);
    let report = if args.json {
        to_json(
            &table,
            &description,
            elapsed.as_millis() as u64,
            &slow_calls,
        )
    } else {
        let mut text = render_table(&table, None);
        for &nr in &args.histograms {
            let latency = latency_of(&snapshot, nr);
            text.push_str(&format!(
                "\n{} latency ({} calls):\n",
                syscall_name(nr),
                latency.count
            ));
            text.push_str(&render_ascii(&latency.hist));
        }
        text
    };
    match &args.output {
        Some(path) => {
            fs::write(path, &report)
                .with_context(|| format!("failed to write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None if with_command => eprint!("{report}"),
        None => {
            print!("{report}");
            std::io::stdout().flush()?;
        }
    }
    let code = exit_status.map_or(0, |s| s.as_shell_code());
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

type Traced = (
    SyscallSnapshot,
    Vec<SlowCall>,
    Names,
    Duration,
    Option<crate::launch::ExitStatus>,
    String,
);

/// Traces until the end of the session; returns the final snapshot and the slow calls.
fn trace(
    args: &SyscallsArgs,
    target: &RecordTarget,
    stop: &AtomicBool,
    sinks: &mut Sinks,
) -> anyhow::Result<Traced> {
    let mut session = Session::prepare(target)?;
    let threshold_ns = args
        .slower_than
        .map(|d| d.as_nanos().clamp(1, u64::MAX as u128) as u64);
    // Mappings are tracked before anything runs, so that slow calls of processes that exit at
    // once still get their stacks symbolized.
    let tracker = match threshold_ns {
        Some(_) => Some(MappingTracker::start(TrackerOptions::default())?),
        None => None,
    };
    let mut ebpf = probes::load_for(MapSizes::default(), &[Family::Syscalls, Family::OffCpu])?;
    session.apply(&mut ebpf)?;
    let mut slow = SlowCalls {
        spaces: if tracker.is_some() {
            AddressSpaces::snapshot_proc(session.snapshot_pids())
        } else {
            AddressSpaces::new()
        },
        tracker,
        symbolizer: Symbolizer::new(),
        reader: SlowCallReader::take(&mut ebpf)?,
        clock_offset_ns: crate::syscalls::realtime_minus_monotonic_ns(),
        names: NameCache::default(),
        calls: Vec::new(),
    };
    let config = SyscallConfig {
        slow_threshold_ns: threshold_ns.unwrap_or(0),
        capture_stacks: u32::from(threshold_ns.is_some()),
        _pad: 0,
    };
    let tracer = SyscallTracer::attach(&mut ebpf, config)?;
    if let (Some(pid), Some(argv)) = (session.release()?, session.command()) {
        let name = argv[0]
            .rsplit('/')
            .next()
            .unwrap_or(&argv[0])
            .chars()
            .take(15)
            .collect();
        slow.names.names.processes.insert(pid, name);
    }
    let mut watch = session.watch(args.duration);
    let mut last_refresh = Instant::now();
    let exit_status = loop {
        let progress = watch.check(stop)?;
        let events = slow.reader.wait_and_read(POLL);
        slow.handle(&ebpf, events, sinks)?;
        if let Some(tty) = sinks.live
            && last_refresh.elapsed() >= REFRESH
        {
            last_refresh = Instant::now();
            let elapsed = watch.started().elapsed();
            draw_live(
                &ebpf,
                args.by,
                &mut slow.names,
                elapsed,
                session.description(),
                tty,
                sinks,
            )?;
        }
        if let Progress::Done(status) = progress {
            break status;
        }
    };
    let elapsed = watch.started().elapsed();
    tracer.stop(&mut ebpf)?;
    let events = slow.reader.read();
    slow.handle(&ebpf, events, sinks)?;
    let snapshot = snapshot_syscalls(&ebpf)?;
    slow.names.refresh(&snapshot);
    Ok((
        snapshot,
        slow.calls,
        slow.names.names,
        elapsed,
        exit_status,
        session.description().to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn syscalls_args(args: &[&str]) -> Result<SyscallsArgs, clap::Error> {
        let cli = Cli::try_parse_from(["flamewarden", "syscalls"].iter().chain(args))?;
        match cli.command {
            Command::Syscalls(args) => Ok(args),
            other => panic!("not syscalls: {other:?}"),
        }
    }

    #[test]
    fn parses_every_option_of_the_issue() {
        let a = syscalls_args(&[
            "-p",
            "42",
            "-d",
            "2",
            "--by",
            "cgroup",
            "--slower-than",
            "20ms",
            "--histogram",
            "nanosleep",
            "--json",
            "-o",
            "x.json",
        ])
        .unwrap();
        assert_eq!(a.pids, [42]);
        assert_eq!(a.by, GroupBy::Cgroup);
        assert_eq!(a.slower_than, Some(Duration::from_millis(20)));
        assert_eq!(a.histograms, [libc::SYS_nanosleep as u32]);
        assert!(a.json);
        let a = syscalls_args(&["--by", "process", "--", "ls", "-l"]).unwrap();
        assert_eq!(a.command, ["ls", "-l"]);
        assert_eq!(a.by, GroupBy::Process);
    }

    #[test]
    fn rejects_unknown_syscalls_and_durations_without_units() {
        let err = syscalls_args(&["--histogram", "opneat"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("opneat"), "{err}");
        let err = syscalls_args(&["--slower-than", "10"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no unit"), "{err}");
        assert!(syscalls_args(&["--by", "thread"]).is_err());
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("800ns"), Ok(Duration::from_nanos(800)));
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
    }
}
