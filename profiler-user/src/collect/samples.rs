//! Draining the CPU sampler's maps: aggregated counts, their stacks, and the loss counters.

use std::{collections::HashMap, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData},
};
use profiler_common::{
    MAP_SAMPLE_COUNTS, MAP_SAMPLE_STATS, SAMPLE_STATS_LEN, SampleKey, SampleStat,
};

use super::{
    batch,
    read::{entries, map, map_error, per_cpu_sums, stacks},
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
    let at = |s: SampleStat| sums[s as usize];
    Ok(SampleCounters {
        taken: at(SampleStat::Taken),
        lost_user_stack: at(SampleStat::LostUserStack),
        lost_kernel_stack: at(SampleStat::LostKernelStack),
        lost_key_map_full: at(SampleStat::LostKeyMapFull),
        user_stack_faults: at(SampleStat::UserStackFault),
        idle: at(SampleStat::Idle),
    })
}
