//! The node's always-on tracers in one object: the syscall tracer attached system-wide (its
//! per-process map folded into per-(cgroup, syscall) totals, entries of exited processes moved
//! out of the kernel map by [`super::retire`] so that it does not fill up on a busy node), the
//! TCP tracer (`collect::net`), and the CPU sampler, whose maps go to the CPU thread.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd as _, OwnedFd},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    maps::{IterableMap as _, MapData, PerCpuHashMap},
};
use profiler_common::{
    LATENCY_BUCKETS, MAP_SYSCALL_ERRNOS, MAP_SYSCALL_STATS, SyscallConfig, SyscallErrnoKey,
    SyscallKey, SyscallStats,
};

use super::retire::{RetireMaps, Retirer};

use crate::{
    collect::{
        SampleMaps,
        net::{NetCollector, NetOptions},
        syscalls::{SlowCallReader, snapshot_syscalls},
    },
    net::{CgroupTraffic, ConnEvent, NetCounters},
    probes::{self, CpuSampler, Family, MapSizes, ProbeError, ProcessCounter, SyscallTracer},
    record::{RecordTarget, Session},
    syscalls::SyscallCounters,
};

/// Totals of one (cgroup, syscall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallTotals {
    /// Completed calls.
    pub count: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Sum of durations, ns.
    pub total_ns: u64,
    /// log2 latency histogram, ns.
    pub hist: [u64; LATENCY_BUCKETS],
}

impl Default for SyscallTotals {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            total_ns: 0,
            hist: [0; LATENCY_BUCKETS],
        }
    }
}

impl SyscallTotals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.total_ns += other.total_ns;
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
    }
}

/// The cgroup id under which the totals of removed cgroups are kept: their count stays in the
/// node's totals while the daemon's memory stays bounded, however many sandboxes come and go.
pub const REMOVED_CGROUPS: u64 = 0;

/// Totals keyed by (cgroup id, syscall number).
pub type SyscallTotalsMap = HashMap<(u64, u32), SyscallTotals>;

/// The daemon's syscall tracer.
pub struct SyscallCollector {
    ebpf: Ebpf,
    /// What exited processes counted, moved out of the kernel map by the retiring thread.
    retired: Arc<Mutex<SyscallTotalsMap>>,
    /// The thread that moves them (stopped on drop).
    _retirer: Option<Retirer>,
    /// The TCP tracer's event stream.
    net: NetCollector,
    /// The ring buffer of slow calls.
    slow: SlowCallReader,
}

/// A duplicate of the fd of the per-CPU hash `name`, for another thread.
fn map_fd<K: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<OwnedFd, ProbeError> {
    let map = ebpf.map(name).ok_or(ProbeError::MissingMap(name))?;
    let typed: PerCpuHashMap<&MapData, K, V> =
        PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map { map: name, source })?;
    typed
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| ProbeError::Map {
            map: name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error: e,
            }),
        })
}

impl SyscallCollector {
    /// Loads the object and attaches the syscall tracer to every process of the system, and
    /// the CPU sampler at `cpu_hz` (unless 0), whose maps are handed out for the CPU thread.
    pub fn start(
        cpu_hz: u64,
        slow_threshold_ns: u64,
    ) -> Result<(Self, Option<SampleMaps>), crate::record::RecordError> {
        // The always-on sampler runs at a low rate: a slot holds a few hundred samples.
        let sizes = MapSizes {
            sample_keys: Some(4096),
            stacks: Some(4096),
        };
        // Ring buffers are mapped (and resident) whole: the daemon reads them every 50 ms, a
        // fraction of the size a one-off trace uses is plenty. The errno map holds the live
        // processes of a whole node that failed a call (a parallel build has hundreds): four
        // times a one-off trace's (1 MB of kernel memory on 2 CPUs).
        let rings = [
            (profiler_common::MAP_NET_EVENTS, 256 << 10),
            (profiler_common::MAP_SYSCALL_EVENTS, 64 << 10),
            (
                MAP_SYSCALL_ERRNOS,
                4 * profiler_common::DEFAULT_SYSCALL_ERRNO_KEYS,
            ),
        ];
        let families = [Family::Syscalls, Family::Net, Family::Lifecycle];
        let mut ebpf = probes::load_tuned(sizes, &families, &rings)?;
        let mut session = Session::prepare(&RecordTarget::All)?;
        session.apply(&mut ebpf)?;
        let config = SyscallConfig {
            slow_threshold_ns,
            capture_stacks: 0,
            _pad: 0,
        };
        SyscallTracer::attach(&mut ebpf, config)?;
        let slow = SlowCallReader::take(&mut ebpf)?;
        let net = NetCollector::attach(
            &mut ebpf,
            NetOptions {
                events: true,
                hooks_only: false,
            },
        )?;
        ProcessCounter::attach(&mut ebpf)?;
        let samples = if cpu_hz > 0 {
            CpuSampler::attach(&mut ebpf, cpu_hz)?;
            Some(SampleMaps::take_from(&mut ebpf)?)
        } else {
            None
        };
        session.release()?;
        let retired = Arc::new(Mutex::new(HashMap::new()));
        let maps = RetireMaps {
            stats: map_fd::<SyscallKey, SyscallStats>(&ebpf, MAP_SYSCALL_STATS)?,
            errnos: map_fd::<SyscallErrnoKey, u64>(&ebpf, MAP_SYSCALL_ERRNOS)?,
            cgroup_root: RetireMaps::open_cgroup_root(),
        };
        let retirer = Retirer::start(maps, Arc::clone(&retired))
            .inspect_err(|e| tracing::warn!("no syscall map upkeep thread: {e}"))
            .ok();
        Ok((
            Self {
                ebpf,
                retired,
                _retirer: retirer,
                net,
                slow,
            },
            samples,
        ))
    }

    /// The ids of the tracer's programs, for their run-time statistics.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some((name.to_owned(), info.id()))
            })
            .collect()
    }

    /// The loaded object, for the readers of its other maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Sets the slow-call threshold (0: none) of the running tracer.
    pub fn set_slow_threshold(&mut self, slow_threshold_ns: u64) -> Result<(), ProbeError> {
        let config = SyscallConfig {
            slow_threshold_ns,
            capture_stacks: 0,
            _pad: 0,
        };
        SyscallTracer::reconfigure(&mut self.ebpf, config)
    }

    /// The slow calls since the previous call.
    pub fn slow_calls(&mut self) -> Vec<profiler_common::SlowSyscallEvent> {
        self.slow.read()
    }

    /// The TCP events since the previous call.
    pub fn net_events(&mut self) -> Vec<ConnEvent> {
        self.net.drain()
    }

    /// IP traffic per cgroup since the start, and the network tracer's loss counters.
    pub fn traffic(&self) -> Result<(Vec<CgroupTraffic>, NetCounters), ProbeError> {
        Ok((
            self.net.traffic(&self.ebpf)?,
            self.net.counters(&self.ebpf)?,
        ))
    }

    /// Totals per (cgroup, syscall) since the daemon started, and the tracer's loss counters.
    pub fn totals(&self) -> Result<(SyscallTotalsMap, SyscallCounters), ProbeError> {
        // Under the retired totals' lock: an entry is either still in the map or retired.
        let retired = self.retired.lock().unwrap();
        let snapshot = snapshot_syscalls(&self.ebpf)?;
        let mut totals = retired.clone();
        drop(retired);
        for (key, stats) in &snapshot.stats {
            totals
                .entry((key.cgroup_id, key.nr))
                .or_default()
                .add(&SyscallTotals {
                    count: stats.count,
                    errors: stats.errors,
                    total_ns: stats.total_ns,
                    hist: stats.hist,
                });
        }
        Ok((totals, snapshot.counters))
    }

    /// Folds the retired totals of cgroups not in `live` into [`REMOVED_CGROUPS`].
    pub fn fold_removed_cgroups(&mut self, live: &HashSet<u64>) {
        let mut retired = self.retired.lock().unwrap();
        let removed: Vec<(u64, u32)> = retired
            .keys()
            .filter(|(cgroup, _)| *cgroup != REMOVED_CGROUPS && !live.contains(cgroup))
            .copied()
            .collect();
        for key in removed {
            if let Some(totals) = retired.remove(&key) {
                retired
                    .entry((REMOVED_CGROUPS, key.1))
                    .or_default()
                    .add(&totals);
            }
        }
        let keep = retired.len() * 2;
        retired.shrink_to(keep);
    }
}
