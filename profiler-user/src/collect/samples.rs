//! Draining the CPU sampler's maps: aggregated counts, their stacks, and the loss counters.

use std::{collections::HashMap, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, StackTraceMap},
};
use profiler_common::{
    MAP_SAMPLE_COUNTS, MAP_SAMPLE_STATS, MAP_STACKS, SAMPLE_STATS_LEN, SampleKey, SampleStat,
};

use super::{
    batch,
    read::{entries, map, map_error, per_cpu_array_sums, per_cpu_sums, stacks},
};
use crate::probes::ProbeError;

/// The kernel's sampling counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleCounters {
    /// Samples that matched the target filter.
    pub taken: u64,
    /// Samples whose user stack could not be stored.
    pub lost_user_stack: u64,
    /// Samples whose kernel stack could not be stored.
    pub lost_kernel_stack: u64,
    /// Samples dropped because the aggregation map was full.
    pub lost_key_map_full: u64,
    /// Samples without a readable user stack.
    pub user_stack_faults: u64,
    /// Samples of the idle task (not recorded).
    pub idle: u64,
}

/// Everything the sampler recorded, with stacks as raw addresses (leaf first, as the kernel
/// stores them).
#[derive(Clone, Debug, Default)]
pub struct RawSamples {
    /// Aggregated counts.
    pub counts: Vec<(SampleKey, u64)>,
    /// Stacks by id.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// Loss and fault counters.
    pub counters: SampleCounters,
}

/// Reads the counters, the aggregated samples and every stack they refer to.
pub fn drain_samples(ebpf: &Ebpf) -> Result<RawSamples, ProbeError> {
    let counters = read_counters(ebpf)?;
    let counts_map: BpfHashMap<&MapData, SampleKey, u64> =
        BpfHashMap::try_from(map(ebpf, MAP_SAMPLE_COUNTS)?)
            .map_err(map_error(MAP_SAMPLE_COUNTS))?;
    let batched = match map(ebpf, MAP_SAMPLE_COUNTS)? {
        Map::HashMap(data) | Map::LruHashMap(data) => {
            batch::lookup_all::<SampleKey, u64>(data.fd().as_fd()).map_err(|e| ProbeError::Map {
                map: MAP_SAMPLE_COUNTS,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: e,
                }),
            })?
        }
        _ => None,
    };
    let mut counts = batched.unwrap_or_default();
    if counts.is_empty() {
        // No batch lookups on this kernel (or nothing recorded): list the keys.
        counts = entries(MAP_SAMPLE_COUNTS, counts_map.iter())?;
    }
    let stacks = stacks(
        ebpf,
        counts
            .iter()
            .flat_map(|(key, _)| [key.user_stack_id, key.kernel_stack_id].map(i64::from)),
    )?;
    Ok(RawSamples {
        counts,
        stacks,
        counters,
    })
}

/// Sums the per-CPU counters.
pub fn read_counters(ebpf: &Ebpf) -> Result<SampleCounters, ProbeError> {
    let sums = per_cpu_sums::<{ SAMPLE_STATS_LEN as usize }>(ebpf, MAP_SAMPLE_STATS)?;
    Ok(counters_of(sums))
}

fn counters_of(sums: [u64; SAMPLE_STATS_LEN as usize]) -> SampleCounters {
    let at = |s: SampleStat| sums[s as usize];
    SampleCounters {
        taken: at(SampleStat::Taken),
        lost_user_stack: at(SampleStat::LostUserStack),
        lost_kernel_stack: at(SampleStat::LostKernelStack),
        lost_key_map_full: at(SampleStat::LostKeyMapFull),
        user_stack_faults: at(SampleStat::UserStackFault),
        idle: at(SampleStat::Idle),
    }
}

/// The sampler's maps taken out of their object, for a reader on another thread that keeps
/// the sampler running and empties the maps as it goes (the daemon's rolling window).
pub struct SampleMaps {
    counts: MapData,
    stacks: StackTraceMap<MapData>,
    stats: PerCpuArray<MapData, u64>,
    /// The counters as of the previous [`SampleMaps::take`].
    counters_before: SampleCounters,
}

impl std::fmt::Debug for SampleMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleMaps")
            .field("counters_before", &self.counters_before)
            .finish_non_exhaustive()
    }
}

impl SampleMaps {
    /// Takes the sample maps out of `ebpf` (its sampler keeps writing into them).
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(ProbeError::MissingMap(name));
        let (counts, stacks, stats) = (
            take(MAP_SAMPLE_COUNTS)?,
            take(MAP_STACKS)?,
            take(MAP_SAMPLE_STATS)?,
        );
        let counts = match counts {
            Map::HashMap(data) | Map::LruHashMap(data) => data,
            _ => {
                return Err(ProbeError::Map {
                    map: MAP_SAMPLE_COUNTS,
                    source: aya::maps::MapError::InvalidMapType { map_type: 0 },
                });
            }
        };
        Ok(Self {
            counts,
            stacks: StackTraceMap::try_from(stacks).map_err(map_error(MAP_STACKS))?,
            stats: PerCpuArray::try_from(stats).map_err(map_error(MAP_SAMPLE_STATS))?,
            counters_before: SampleCounters::default(),
        })
    }

    /// Everything sampled since the previous call, removed from the kernel's maps: counts,
    /// their stacks, and the counters' increase. A stack that a sample taken meanwhile shares
    /// may be removed under it; that sample's stack then counts as lost.
    pub fn take(&mut self) -> Result<RawSamples, ProbeError> {
        let map_err = |map: &'static str| {
            move |e: std::io::Error| ProbeError::Map {
                map,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_and_delete_batch",
                    io_error: e,
                }),
            }
        };
        let counts = batch::take_all::<SampleKey, u64>(self.counts.fd().as_fd())
            .map_err(map_err(MAP_SAMPLE_COUNTS))?
            .ok_or(ProbeError::Map {
                map: MAP_SAMPLE_COUNTS,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_and_delete_batch",
                    io_error: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                }),
            })?;
        let mut stacks = HashMap::new();
        let mut missing = 0;
        for (key, count) in &counts {
            for id in [key.user_stack_id, key.kernel_stack_id] {
                if id < 0 || stacks.contains_key(&(id as u32)) {
                    continue;
                }
                match self.stacks.get(&(id as u32), 0) {
                    Ok(trace) => {
                        stacks.insert(id as u32, trace.frames().iter().map(|f| f.ip).collect());
                    }
                    Err(aya::maps::MapError::KeyNotFound) => missing += count,
                    Err(source) => return Err(map_error(MAP_STACKS)(source)),
                }
            }
        }
        for id in stacks.keys() {
            // Gone already is fine: the next sample of this stack stores it again.
            let _ = self.stacks.remove(id);
        }
        let now = counters_of(per_cpu_array_sums(&self.stats, MAP_SAMPLE_STATS)?);
        let before = std::mem::replace(&mut self.counters_before, now);
        let mut counters = SampleCounters {
            taken: now.taken.saturating_sub(before.taken),
            lost_user_stack: now.lost_user_stack.saturating_sub(before.lost_user_stack),
            lost_kernel_stack: now
                .lost_kernel_stack
                .saturating_sub(before.lost_kernel_stack),
            lost_key_map_full: now
                .lost_key_map_full
                .saturating_sub(before.lost_key_map_full),
            user_stack_faults: now
                .user_stack_faults
                .saturating_sub(before.user_stack_faults),
            idle: now.idle.saturating_sub(before.idle),
        };
        counters.lost_user_stack += missing;
        Ok(RawSamples {
            counts,
            stacks,
            counters,
        })
    }
}
