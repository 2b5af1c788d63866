//! Always-on CPU profiling: the sampler runs system-wide at a low rate (19 Hz by default) in
//! the node's object; this thread takes its samples out of the kernel's maps every slot (and
//! before answering a request), keeps the last minutes in a [`RollingSamples`] window, tracks
//! mappings so that exited processes still symbolize, and symbolizes only when asked: for the
//! page's flamegraph, `/api/v1/profile?source=window` and the per-cgroup CPU metric (which
//! needs no symbols at all).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    names::CgroupNames,
    profile::{hot_functions, render_svg},
    rolling::{RollingSamples, SampleFilter},
};
use crate::{
    collect::{
        SampleCounters, SampleMaps,
        mappings::{MappingError, MappingTracker, TrackerOptions},
    },
    profile::{Profile, ProfileMeta, WeightUnit},
    record::assemble_cpu,
    symbolize::{AddressSpaces, SymbolDetail, Symbolizer},
};

/// How the window is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOptions {
    /// Sampling frequency, Hz per CPU.
    pub frequency_hz: u64,
    /// Length of a slot, ms.
    pub slot_ms: u64,
    /// Length of the window, ms.
    pub keep_ms: u64,
}

/// CPU samples per cgroup and the sampler's loss counters, since the daemon started.
#[derive(Clone, Debug, Default)]
pub struct CpuTotals {
    /// Samples per cgroup id ([`super::syscalls::REMOVED_CGROUPS`]: cgroups removed since).
    pub by_cgroup: HashMap<u64, u64>,
    /// The kernel's counters.
    pub counters: SampleCounters,
    /// Mapping records the kernel dropped (those processes may symbolize badly).
    pub mapping_records_lost: u64,
    /// The sampling frequency.
    pub frequency_hz: u64,
}

/// The window's flamegraph for the page.
#[derive(Clone, Debug, Default)]
pub struct WindowFlame {
    /// The flamegraph, when there were samples.
    pub svg: Option<String>,
    /// Hottest functions by self weight: (name, self %).
    pub hot: Vec<(String, f64)>,
    /// Samples drawn.
    pub samples: u64,
    /// Time the window spans, ms.
    pub span_ms: u64,
}

/// A profile out of the window.
#[derive(Clone, Debug)]
pub struct WindowQuery {
    /// The last this long.
    pub last: Duration,
    /// Which samples.
    pub filter: SampleFilter,
    /// What the profile's target says.
    pub target: String,
    /// Names only, or files and lines too.
    pub detail: SymbolDetail,
}

/// Requests to the CPU thread.
pub enum CpuRequest {
    /// Totals per cgroup.
    Totals(tokio::sync::oneshot::Sender<CpuTotals>),
    /// A symbolized profile of part of the window.
    Profile(WindowQuery, tokio::sync::oneshot::Sender<Profile>),
    /// The whole window as a flamegraph (cached until the window changes).
    Flame(tokio::sync::oneshot::Sender<Arc<WindowFlame>>),
}

/// Forget processes and fold removed cgroups this often: at 100 sandbox runs a second, the
/// address spaces of the processes that exited in between take about 45 KB a second.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Replay mapping records at least this often (bounds what the tracker holds).
const MAPPINGS_EVERY: Duration = Duration::from_secs(1);
/// A symbolizer unused this long is dropped, one older than [`SYMBOLIZER_MAX_AGE`] rebuilt:
/// its caches only grow.
const SYMBOLIZER_IDLE: Duration = Duration::from_secs(600);
const SYMBOLIZER_MAX_AGE: Duration = Duration::from_secs(1800);

struct CachedSymbolizer {
    symbolizer: Symbolizer,
    created: Instant,
    used: Instant,
}

struct CpuThread {
    options: WindowOptions,
    maps: SampleMaps,
    tracker: MappingTracker,
    spaces: AddressSpaces,
    window: RollingSamples,
    mapping_lost: u64,
    symbolizers: HashMap<bool, CachedSymbolizer>,
    flame: Option<(u64, Arc<WindowFlame>)>,
    last_take: Instant,
    last_prune: Instant,
}

/// Starts the CPU thread on the sampler's maps; returns where to send requests.
pub fn start(
    maps: SampleMaps,
    options: WindowOptions,
) -> Result<mpsc::Sender<CpuRequest>, MappingError> {
    let tracker = MappingTracker::start(TrackerOptions::default())?;
    let spaces = AddressSpaces::snapshot_proc(None);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("flamewarden-cpu".into())
        .spawn(move || {
            // Symbolizers are not `Send`: the thread's state is made on the thread.
            let state = CpuThread {
                options,
                maps,
                tracker,
                spaces,
                window: RollingSamples::new(options.slot_ms, options.keep_ms),
                mapping_lost: 0,
                symbolizers: HashMap::new(),
                flame: None,
                last_take: Instant::now(),
                last_prune: Instant::now(),
            };
            state.run(rx);
        })
        .map_err(MappingError::Spawn)?;
    Ok(tx)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CpuThread {
    fn run(mut self, requests: mpsc::Receiver<CpuRequest>) {
        let slot = Duration::from_millis(self.options.slot_ms);
        loop {
            let wait = slot
                .saturating_sub(self.last_take.elapsed())
                .min(MAPPINGS_EVERY);
            match requests.recv_timeout(wait) {
                Ok(request) => {
                    self.replay_mappings();
                    self.take();
                    self.answer(request);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.replay_mappings();
            if self.last_take.elapsed() >= slot {
                self.take();
            }
            if self.last_prune.elapsed() >= PRUNE_EVERY {
                self.prune();
            }
        }
    }

    fn replay_mappings(&mut self) {
        self.mapping_lost = self.tracker.drain(&mut self.spaces).lost;
    }

    fn take(&mut self) {
        self.last_take = Instant::now();
        match self.maps.take() {
            Ok(raw) => self.window.add(unix_ms(), &raw),
            Err(e) => tracing::warn!("reading CPU samples: {e}"),
        }
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        self.window.evict(unix_ms());
        let mut keep = self.window.tgids();
        keep.extend(live_pids());
        self.spaces.retain_processes(|pid| keep.contains(&pid));
        self.window.fold_removed_cgroups(&CgroupNames::all_ids());
        self.symbolizers.retain(|_, s| {
            s.used.elapsed() < SYMBOLIZER_IDLE && s.created.elapsed() < SYMBOLIZER_MAX_AGE
        });
    }

    fn answer(&mut self, request: CpuRequest) {
        match request {
            CpuRequest::Totals(reply) => {
                let _ = reply.send(CpuTotals {
                    by_cgroup: self.window.by_cgroup().clone(),
                    counters: self.window.counters(),
                    mapping_records_lost: self.mapping_lost,
                    frequency_hz: self.options.frequency_hz,
                });
            }
            CpuRequest::Profile(query, reply) => {
                let _ = reply.send(self.profile(&query));
            }
            CpuRequest::Flame(reply) => {
                let _ = reply.send(self.flame());
            }
        }
    }

    fn profile(&mut self, query: &WindowQuery) -> Profile {
        let now = unix_ms();
        let since = now.saturating_sub(query.last.as_millis() as u64);
        let (raw, span_ms) = self.window.view(since, &query.filter);
        let meta = ProfileMeta {
            target: query.target.clone(),
            command: None,
            frequency_hz: self.options.frequency_hz,
            duration_ms: span_ms,
            started_at_unix_ms: now.saturating_sub(span_ms),
            weight_unit: WeightUnit::Samples,
        };
        let lines = query.detail == SymbolDetail::Lines;
        let cached = self
            .symbolizers
            .entry(lines)
            .or_insert_with(|| CachedSymbolizer {
                symbolizer: Symbolizer::with_detail(query.detail),
                created: Instant::now(),
                used: Instant::now(),
            });
        cached.used = Instant::now();
        let mut profile = assemble_cpu(&raw, meta, &self.spaces, &mut cached.symbolizer);
        profile.completeness.mapping_records_lost = self.mapping_lost;
        profile
    }

    fn flame(&mut self) -> Arc<WindowFlame> {
        let generation = self.window.generation();
        if let Some((seen, flame)) = &self.flame
            && *seen == generation
        {
            return Arc::clone(flame);
        }
        let query = WindowQuery {
            last: Duration::from_millis(self.options.keep_ms),
            filter: SampleFilter::All,
            target: "all (rolling window)".into(),
            detail: SymbolDetail::Names,
        };
        let profile = self.profile(&query);
        let flame = Arc::new(WindowFlame {
            svg: render_svg(&profile),
            hot: hot_functions(&profile),
            samples: profile.total_weight(),
            span_ms: profile.meta.duration_ms,
        });
        self.flame = Some((generation, Arc::clone(&flame)));
        flame
    }
}

fn live_pids() -> HashSet<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of the cgroup directory `path` and of every cgroup below it now.
pub fn cgroup_ids_below(path: &std::path::Path) -> HashSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut ids = HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = std::fs::metadata(&dir) {
            ids.insert(meta.ino());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
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
