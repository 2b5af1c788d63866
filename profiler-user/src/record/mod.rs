//! A CPU recording from start to [`Profile`]: launch or find the targets, attach the sampler,
//! wait, drain the maps, symbolize. The CLI's `record`, `sandbox run --profile` and the daemon's
//! on-demand profiles all go through [`record`].

pub mod assemble;
pub mod session;
pub mod wall;

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::atomic::AtomicBool,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use assemble::{FrameResolver, assemble};
pub use session::{EndWatch, Progress, Session};

use crate::{
    collect::{
        RawSamples, drain_samples,
        mappings::{MappingError, MappingTracker, TrackerOptions},
        offcpu::drain_offcpu,
    },
    launch::{ExitStatus, LaunchError},
    probes::{self, CpuSampler, MapSizes, OffCpuTracer, ProbeError},
    profile::{Frame, Profile, ProfileMeta, WeightUnit},
    symbolize::{AddressSpaces, SymbolDetail, Symbolizer},
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

/// Which time a profile shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordMode {
    /// CPU samples (weights are sample counts).
    #[default]
    Cpu,
    /// Blocked time from `sched_switch` (weights in ns), under an `[off-cpu]` frame.
    OffCpu,
    /// Both: CPU samples converted to time, plus blocked time under `[off-cpu]` (ns).
    Wall,
}

/// How to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// What to record.
    pub target: RecordTarget,
    /// CPU, off-CPU or wall-clock time.
    pub mode: RecordMode,
    /// Sampling frequency per CPU (CPU and wall-clock modes).
    pub frequency_hz: u64,
    /// Shortest block recorded, ns (off-CPU and wall-clock modes).
    pub min_block_ns: u64,
    /// Stop after this long (otherwise when the command exits, or on the stop flag).
    pub duration: Option<Duration>,
    /// Map capacities.
    pub map_sizes: MapSizes,
    /// Whether frames need source files and lines (JSON, pprof) or names only (flamegraphs,
    /// folded stacks), which spares reading DWARF.
    pub symbols: SymbolDetail,
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

/// Records until the command exits, the duration passes or `stop` becomes true.
pub fn record(opts: &RecordOptions, stop: &AtomicBool) -> Result<Recording, RecordError> {
    record_with(opts, stop, &mut Symbolizer::with_detail(opts.symbols))
}

/// [`record`] with a symbolizer that keeps what it learned for the next recording (kernel
/// symbols, the files of a command run again); its detail wins over `opts.symbols`.
pub fn record_with(
    opts: &RecordOptions,
    stop: &AtomicBool,
    symbolizer: &mut Symbolizer,
) -> Result<Recording, RecordError> {
    record_ready(opts, stop, symbolizer, &AtomicBool::new(false))
}

/// [`record_with`] that sets `ready` once the programs are attached and the target is being
/// sampled: a caller that starts the workload itself (a sandbox run) waits for it.
pub fn record_ready(
    opts: &RecordOptions,
    stop: &AtomicBool,
    symbolizer: &mut Symbolizer,
    ready: &AtomicBool,
) -> Result<Recording, RecordError> {
    let sampling = opts.mode != RecordMode::OffCpu;
    let blocking = opts.mode != RecordMode::Cpu;
    if sampling && (opts.frequency_hz == 0 || opts.frequency_hz > max_sample_rate()) {
        return Err(RecordError::Frequency(opts.frequency_hz));
    }
    let mut session = Session::prepare(&opts.target)?;

    // Mappings are tracked before anything runs, so that no exec or mmap is missed.
    let tracker = MappingTracker::start(TrackerOptions::default())?;
    let families: &[probes::Family] = if blocking {
        &[probes::Family::OffCpu]
    } else {
        &[]
    };
    let mut ebpf = probes::load_for(opts.map_sizes, families)?;
    session.apply(&mut ebpf)?;
    let seed = AddressSpaces::snapshot_proc(session.snapshot_pids());
    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let sampler = if sampling {
        Some(CpuSampler::attach(&mut ebpf, opts.frequency_hz)?)
    } else {
        None
    };
    let offcpu = if blocking {
        Some(OffCpuTracer::attach(&mut ebpf, opts.min_block_ns)?)
    } else {
        None
    };
    session.release()?;
    ready.store(true, std::sync::atomic::Ordering::Release);

    let mut watch = session.watch(opts.duration);
    let exit_status = watch.wait(stop, POLL)?;
    let duration_ms = watch.started().elapsed().as_millis() as u64;
    if let Some(sampler) = sampler {
        sampler.stop(&mut ebpf)?;
    }
    if let Some(offcpu) = offcpu {
        offcpu.stop(&mut ebpf)?;
    }
    let on_cpu = if sampling {
        Some(drain_samples(&ebpf)?)
    } else {
        None
    };
    let off_cpu = if blocking {
        Some(drain_offcpu(&ebpf)?.0)
    } else {
        None
    };
    let (spaces, mapping_stats) = tracker.stop(seed);
    // Detaching and freeing the kernel objects waits for RCU grace periods (tens of ms); the
    // outputs do not depend on it, so it happens beside symbolization.
    std::thread::spawn(move || drop(ebpf));

    let meta = ProfileMeta {
        target: session.description().to_owned(),
        command: session.command().map(<[String]>::to_vec),
        frequency_hz: if sampling { opts.frequency_hz } else { 0 },
        duration_ms,
        started_at_unix_ms,
        weight_unit: if opts.mode == RecordMode::Cpu {
            WeightUnit::Samples
        } else {
            WeightUnit::Nanoseconds
        },
    };
    let mut resolver = Resolver {
        spaces: &spaces,
        symbolizer,
    };
    let mut profile = build_profile(meta, on_cpu.as_ref(), off_cpu.as_ref(), &mut resolver);
    profile.completeness.mapping_records_lost = mapping_stats.lost;
    Ok(Recording {
        profile,
        exit_status,
    })
}

/// The profile of CPU samples taken elsewhere (the daemon's rolling window), symbolized
/// against `spaces` by `symbolizer`.
pub fn assemble_cpu(
    raw: &RawSamples,
    meta: ProfileMeta,
    spaces: &AddressSpaces,
    symbolizer: &mut Symbolizer,
) -> Profile {
    assemble(raw, meta, &mut Resolver { spaces, symbolizer })
}

/// The profile of a recording from its CPU samples and/or its blocked time.
fn build_profile(
    meta: ProfileMeta,
    on_cpu: Option<&RawSamples>,
    off_cpu: Option<&RawSamples>,
    resolver: &mut impl FrameResolver,
) -> Profile {
    let frequency_hz = meta.frequency_hz;
    let off = off_cpu.map(|raw| {
        let mut profile = assemble(raw, meta.clone(), resolver);
        wall::mark_off_cpu(&mut profile);
        profile
    });
    match (on_cpu, off) {
        (Some(raw), None) => assemble(raw, meta, resolver),
        (None, Some(off)) => off,
        (Some(raw), Some(off)) => {
            let mut profile = assemble(raw, meta, resolver);
            wall::samples_to_time(&mut profile, frequency_hz);
            wall::merge_into(&mut profile, off);
            profile
        }
        (None, None) => Profile::new(meta),
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
    symbolizer: &'a mut Symbolizer,
}

impl FrameResolver for Resolver<'_> {
    fn user_frames(&mut self, tgid: u32, ips: &[u64]) -> Vec<Frame> {
        self.symbolizer.symbolize_user(self.spaces, tgid, ips)
    }

    fn kernel_frames(&mut self, ips: &[u64]) -> Vec<Frame> {
        self.symbolizer.symbolize_kernel(ips)
    }

    fn user_stack_key(&mut self, tgid: u32, ips: &[u64]) -> Option<u64> {
        Some(Symbolizer::location_key(self.spaces, tgid, ips))
    }

    fn prefetch(&mut self, user: &[(u32, &[u64])], kernel: &[&[u64]]) {
        // Results are cached by address; the per-stack calls that follow are cache hits.
        self.symbolizer.prefetch_user(self.spaces, user);
        self.symbolizer.prefetch_kernel(kernel);
    }
}
