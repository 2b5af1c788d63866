//! A CPU recording from start to [`Profile`]: launch or find the targets, attach the sampler,
//! wait, drain the maps, symbolize. The CLI's `record`, `sandbox run --profile` and the daemon's
//! on-demand profiles all go through [`record`].

pub mod assemble;

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use profiler_common::TARGET_FOLLOW_FORKS;

pub use assemble::{FrameResolver, assemble};

use crate::{
    collect::{
        drain_samples,
        mappings::{MappingError, MappingTracker, TrackerOptions},
    },
    launch::{self, ExitStatus, LaunchError, StoppedChild},
    probes::{self, CgroupTarget, CpuSampler, ForkFollower, MapSizes, ProbeError, Targets},
    profile::{Frame, Profile, ProfileMeta, WeightUnit},
    symbolize::{AddressSpaces, Symbolizer},
};

/// What to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordTarget {
    /// Start this command and profile it and all its descendants.
    Command(Vec<OsString>),
    /// These processes (all their threads).
    Pids(Vec<u32>),
    /// Every process in these cgroup v2 directories and their descendants.
    Cgroups(Vec<PathBuf>),
    /// The whole system.
    All,
}

/// How to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// What to record.
    pub target: RecordTarget,
    /// Sampling frequency per CPU.
    pub frequency_hz: u64,
    /// Stop after this long (otherwise when the command exits, or on the stop flag).
    pub duration: Option<Duration>,
    /// Map capacities.
    pub map_sizes: MapSizes,
}

/// A finished recording.
#[derive(Debug)]
pub struct Recording {
    /// The symbolized profile.
    pub profile: Profile,
    /// How the command ended, when one was started.
    pub exit_status: Option<ExitStatus>,
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Setting up the kernel side failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Mapping tracking could not start.
    #[error(transparent)]
    Mappings(#[from] MappingError),
    /// The frequency is out of range.
    #[error("--frequency {0}: must be between 1 and the kernel's perf_event_max_sample_rate")]
    Frequency(u64),
    /// Waiting for the command failed.
    #[error("waiting for the command failed: {0}")]
    Wait(std::io::Error),
}

/// How often the wait loop looks at the stop flag, the deadline and the child.
const POLL: Duration = Duration::from_millis(20);

fn describe(target: &RecordTarget) -> String {
    match target {
        RecordTarget::Command(_) => "command".into(),
        RecordTarget::Pids(pids) => {
            format!("pid {}", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        }
        RecordTarget::Cgroups(paths) => format!(
            "cgroup {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
        ),
        RecordTarget::All => "all".into(),
    }
}

/// Records until the command exits, the duration passes or `stop` becomes true.
pub fn record(opts: &RecordOptions, stop: &AtomicBool) -> Result<Recording, RecordError> {
    if opts.frequency_hz == 0 || opts.frequency_hz > max_sample_rate() {
        return Err(RecordError::Frequency(opts.frequency_hz));
    }
    probes::system::check_privileges()?;
    let mut targets = Targets::default();
    let mut child = None;
    let mut snapshot_pids = None;
    match &opts.target {
        RecordTarget::Command(argv) => {
            let stopped = StoppedChild::spawn(argv)?;
            targets.tgids.push((stopped.pid(), TARGET_FOLLOW_FORKS));
            snapshot_pids = Some(Vec::new());
            child = Some(stopped);
        }
        RecordTarget::Pids(pids) => {
            let mut tgids = Vec::new();
            for &pid in pids {
                tgids.push(probes::system::tgid_of(pid)?);
            }
            targets.tgids = tgids.iter().map(|&t| (t, 0)).collect();
            snapshot_pids = Some(tgids);
        }
        RecordTarget::Cgroups(paths) => {
            for path in paths {
                targets.cgroups.push(CgroupTarget::from_path(path)?);
            }
        }
        RecordTarget::All => targets.all = true,
    }

    // Mappings are tracked before anything runs, so that no exec or mmap is missed.
    let tracker = MappingTracker::start(TrackerOptions::default())?;
    let mut ebpf = probes::load(opts.map_sizes)?;
    targets.apply(&mut ebpf)?;
    let _follower = if targets.follows_forks() { Some(ForkFollower::attach(&mut ebpf)?) } else { None };
    let seed = AddressSpaces::snapshot_proc(snapshot_pids.as_deref());
    let started = Instant::now();
    let started_at_unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let sampler = CpuSampler::attach(&mut ebpf, opts.frequency_hz)?;
    let command = match &opts.target {
        RecordTarget::Command(argv) => {
            Some(argv.iter().map(|a| a.to_string_lossy().into_owned()).collect())
        }
        _ => None,
    };
    let child_pid = match child {
        Some(stopped) => Some(stopped.release()?),
        None => None,
    };

    let exit_status = wait_for_end(child_pid, opts.duration, started, stop)?;
    let duration_ms = started.elapsed().as_millis() as u64;
    sampler.stop(&mut ebpf)?;
    let raw = drain_samples(&ebpf)?;
    let (spaces, mapping_stats) = tracker.stop(seed);
    drop(ebpf);

    let meta = ProfileMeta {
        target: describe(&opts.target),
        command,
        frequency_hz: opts.frequency_hz,
        duration_ms,
        started_at_unix_ms,
        weight_unit: WeightUnit::Samples,
    };
    let mut resolver = Resolver { spaces: &spaces, symbolizer: Symbolizer::new() };
    let mut profile = assemble(&raw, meta, &mut resolver);
    profile.completeness.mapping_records_lost = mapping_stats.lost;
    Ok(Recording { profile, exit_status })
}

/// Waits for the child to exit, the deadline or the stop flag; with a child, a stop request is
/// passed on as SIGINT and the child is still waited for (its last samples count).
fn wait_for_end(
    child: Option<u32>,
    duration: Option<Duration>,
    started: Instant,
    stop: &AtomicBool,
) -> Result<Option<ExitStatus>, RecordError> {
    let mut interrupted = false;
    loop {
        if let Some(pid) = child {
            if let Some(status) = launch::wait(pid, false).map_err(RecordError::Wait)? {
                return Ok(Some(status));
            }
        }
        let timed_out = duration.is_some_and(|d| started.elapsed() >= d);
        if stop.load(Ordering::Relaxed) || timed_out {
            match child {
                None => return Ok(None),
                Some(pid) if !interrupted => {
                    interrupted = true;
                    // SAFETY: sending a signal to our own child.
                    unsafe { libc::kill(pid as i32, if timed_out { libc::SIGTERM } else { libc::SIGINT }) };
                }
                Some(_) => {}
            }
        }
        thread::sleep(POLL);
    }
}

fn max_sample_rate() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000)
}

/// The symbolizer behind [`FrameResolver`].
struct Resolver<'a> {
    spaces: &'a AddressSpaces,
    symbolizer: Symbolizer,
}

impl FrameResolver for Resolver<'_> {
    fn user_frames(&mut self, tgid: u32, ips: &[u64]) -> Vec<Frame> {
        self.symbolizer.symbolize_user(self.spaces, tgid, ips)
    }

    fn kernel_frames(&mut self, ips: &[u64]) -> Vec<Frame> {
        self.symbolizer.symbolize_kernel(ips)
    }
}
