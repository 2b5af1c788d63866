//! `flamewarden net`: TCP connects, accepts, failures, connect latency, lifetime, retransmits,
//! resets and bytes of a command, processes, a cgroup or the system; per-cgroup traffic; an
//! event stream like tcplife with `--events`.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use profiler_common::NetEvent;

use super::{
    control::{Control, ControlCommand, ControlSpec, parse_control},
    record::{choose_target, parse_secs},
};
use crate::{
    collect::net::{NetCollector, NetOptions},
    net::{
        CgroupNames, ClosedConnections, ConnEvent, Connection, NetGroupBy, build_table, event_line,
        render_table, to_json,
    },
    probes::{self, Family, MapSizes, net::cgroup2_root},
    record::{Progress, RecordTarget, Session},
};

/// Arguments of `flamewarden net`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without -d and without a command, tracing runs until Ctrl-C.\n\n\
    IN/OUT are TCP payload bytes of closed connections (headers, SYN and FIN excluded,\n\
    retransmitted bytes counted once); the per-cgroup traffic counts IP packets, headers\n\
    included.\n\nExamples:\n  flamewarden net -- curl -s https://example.com\n  \
    flamewarden net -p 1234 -d 30 --by remote\n  \
    flamewarden net --cgroup /sys/fs/cgroup/unified/judge --events\n  \
    flamewarden net -a -d 10 --by cgroup --json -o net.json"
)]
pub struct NetArgs {
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
    /// One row per connection, per process, per cgroup or per remote endpoint.
    #[arg(long, value_enum, default_value_t = NetGroupBy::Connection)]
    pub by: NetGroupBy,
    /// Stream a line per connection open and close, and per retransmit, as they happen.
    #[arg(long)]
    pub events: bool,
    /// Write the table, every connection and the traffic as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the final report to FILE instead of the terminal.
    #[arg(short, long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Take commands while tracing, as `perf record --control` does: `enable` and `disable`
    /// attach and detach the kernel programs, `ping`, `stop`; one per line on the FIFO (or
    /// inherited descriptor) CTL, each answered `ack` on ACK once carried out.
    #[arg(long, value_name = "fifo:CTL[,ACK]|fd:CTL[,ACK]", value_parser = parse_control)]
    pub control: Option<ControlSpec>,
    /// Attach every program but have each return as soon as it runs: what the kernel's hooks
    /// alone cost the traffic (the floor `cargo xtask bench net` compares with). Reports
    /// nothing.
    #[arg(long, hide = true)]
    pub hooks_only: bool,
    /// The command to start and trace, with all its descendants.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How often the ring buffer, the command and the stop flag are looked at.
const POLL: Duration = Duration::from_millis(100);

/// Runs `flamewarden net`.
pub fn run(args: NetArgs) -> anyhow::Result<ExitCode> {
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
    let stop = super::stop_flag()?;
    let mut control = args.control.as_ref().map(Control::open).transpose()?;
    let mut session = Session::prepare(&target)?;
    let mut ebpf = probes::load_for(MapSizes::default(), &[Family::Net])?;
    session.apply(&mut ebpf)?;
    let mut collector = NetCollector::attach(
        &mut ebpf,
        NetOptions {
            events: args.events,
            hooks_only: args.hooks_only,
        },
    )?;
    // The cgroups whose traffic is shown, read now: a command may be gone at the end.
    let command_pid = session.release()?;
    let traffic_cgroups = traffic_filter(&target, &session, command_pid);
    eprintln!(
        "flamewarden net: tracing TCP connections of {} (Ctrl-C to stop)",
        session.description()
    );
    let mut cgroups = CgroupNames::new();
    let clock_offset_ns = crate::syscalls::realtime_minus_monotonic_ns();
    // Kept undecoded while tracing runs: decoding is for the report (or an --events line).
    let mut closed = ClosedConnections::new();
    let events_to_stderr = with_command || (args.json && args.output.is_none());
    let mut handle = |raw: &NetEvent, cgroups: &mut CgroupNames| -> anyhow::Result<()> {
        closed.push(raw);
        if !args.events {
            return Ok(());
        }
        let Some(event) = ConnEvent::from_raw(raw) else {
            return Ok(());
        };
        name_cgroups(cgroups, [event.connection().cgroup_id]);
        let line = event_line(&event, clock_offset_ns, cgroups);
        if events_to_stderr {
            std::io::stderr().write_all(line.as_bytes())?;
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    };
    let mut watch = session.watch(args.duration);
    let mut failed = Ok(());
    let mut next_drain = Instant::now() + POLL;
    let exit_status = loop {
        let progress = watch.check(&stop)?;
        let wait = next_drain.saturating_duration_since(Instant::now());
        let commands = collector.wait_or_readable(wait, control.as_ref().and_then(Control::fd));
        if let (true, Some(control)) = (commands, &mut control) {
            obey(control, &mut collector, &mut ebpf, &stop)?;
        }
        // On its own period, whatever the commands: their timing does not move this work.
        if Instant::now() >= next_drain {
            next_drain = Instant::now() + POLL;
            collector.drain_raw(|raw| {
                if failed.is_ok() {
                    failed = handle(raw, &mut cgroups);
                }
            });
            std::mem::replace(&mut failed, Ok(()))?;
        }
        if let Progress::Done(status) = progress {
            break status;
        }
    };
    let elapsed = watch.started().elapsed();
    collector.stop(&mut ebpf)?;
    collector.drain_raw(|raw| {
        if failed.is_ok() {
            failed = handle(raw, &mut cgroups);
        }
    });
    std::mem::replace(&mut failed, Ok(()))?;
    let open = collector.open_connections(&ebpf)?;
    let mut traffic = collector.traffic(&ebpf)?;
    let counters = collector.counters(&ebpf)?;
    if let Some(keep) = traffic_cgroups {
        traffic.retain(|t| keep.contains(&t.cgroup_id));
    }
    let mut connections: Vec<Connection> = Vec::with_capacity(closed.len() + open.len());
    connections.extend(closed.connections());
    connections.extend(open);
    name_cgroups(
        &mut cgroups,
        connections
            .iter()
            .map(|c| c.cgroup_id)
            .chain(traffic.iter().map(|t| t.cgroup_id)),
    );
    let table = build_table(&connections, &traffic, counters, args.by, &cgroups);
    let report = if args.json {
        to_json(
            &table,
            &connections,
            &cgroups,
            session.description(),
            elapsed.as_millis() as u64,
        )
    } else {
        render_table(&table)
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

/// Carries out the commands waiting on `control`, answering each.
fn obey(
    control: &mut Control,
    collector: &mut NetCollector,
    ebpf: &mut aya::Ebpf,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    for command in control.read()? {
        let done = match command {
            Ok(ControlCommand::Enable) => collector.resume(ebpf).map(|()| true)?,
            Ok(ControlCommand::Disable) => collector.pause(ebpf).map(|()| true)?,
            Ok(ControlCommand::Ping) => true,
            Ok(ControlCommand::Stop) => {
                stop.store(true, Ordering::Relaxed);
                true
            }
            Err(line) => {
                eprintln!(
                    "flamewarden net: {line:?} is no control command (enable, disable, ping, stop)"
                );
                false
            }
        };
        control.answer(done)?;
    }
    Ok(())
}

/// The cgroups whose traffic is shown: all of them for `-a`, the target cgroups and their
/// descendants for `--cgroup`, the cgroups of the target processes for `-p` and a command.
fn traffic_filter(
    target: &RecordTarget,
    session: &Session,
    command_pid: Option<u32>,
) -> Option<Vec<u64>> {
    match target {
        RecordTarget::All => None,
        RecordTarget::Cgroups(_) => Some(
            session
                .targets()
                .cgroups
                .iter()
                .flat_map(|c| subtree_ids(&c.path))
                .collect(),
        ),
        RecordTarget::Pids(pids) => Some(pids.iter().filter_map(|&p| cgroup_of(p)).collect()),
        RecordTarget::Command(_) => Some(command_pid.and_then(cgroup_of).into_iter().collect()),
    }
}

/// The cgroup v2 id of process `pid` (None once it exited).
fn cgroup_of(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = cgroup2_root().ok()?;
    let dir = root.join(relative.trim().trim_start_matches('/'));
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// The ids of `dir` and every cgroup beneath it.
fn subtree_ids(dir: &std::path::Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            ids.push(meta.ino());
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    ids
}

/// Names the cgroups in `ids` that are not named yet, walking the cgroup2 tree once per call
/// that needs it.
fn name_cgroups(names: &mut CgroupNames, ids: impl IntoIterator<Item = u64>) {
    let missing: Vec<u64> = ids
        .into_iter()
        .filter(|id| !names.contains_key(id))
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(root) = cgroup2_root() else {
        return;
    };
    let mut found: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            found
                .entry(meta.ino())
                .or_insert_with(|| dir.display().to_string());
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    for id in missing {
        // Remembered even when not found, so that a gone cgroup is not searched again.
        let name = found
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup #{id}"));
        names.insert(id, name);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn net_args(args: &[&str]) -> Result<NetArgs, clap::Error> {
        let cli = Cli::try_parse_from(["flamewarden", "net"].iter().chain(args))?;
        match cli.command {
            Command::Net(args) => Ok(args),
            other => panic!("not net: {other:?}"),
        }
    }

    #[test]
    fn parses_every_option_of_the_issue() {
        let a = net_args(&[
            "-p", "42", "-d", "2", "--by", "remote", "--events", "--json",
        ])
        .unwrap();
        assert_eq!(a.pids, [42]);
        assert_eq!(a.by, NetGroupBy::Remote);
        assert!(a.events && a.json);
        assert_eq!(a.duration, Some(Duration::from_secs(2)));
        let a = net_args(&["--by", "cgroup", "--", "curl", "-s"]).unwrap();
        assert_eq!(a.command, ["curl", "-s"]);
        assert_eq!(a.by, NetGroupBy::Cgroup);
        assert!(net_args(&["--by", "port"]).is_err());
        assert_eq!(net_args(&[]).unwrap().by, NetGroupBy::Connection);
    }
}
