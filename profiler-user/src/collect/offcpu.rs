//! Draining the off-CPU tracer: blocked nanoseconds per stack, the stacks, and its counters,
//! in the same shape as CPU samples so that the same assembly turns them into a profile.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, StackTraceMap},
};
use profiler_common::{
    MAP_OFFCPU_STATS, MAP_OFFCPU_TIMES, MAP_STACKS, OFFCPU_STATS_LEN, OffCpuStat, SampleKey,
};

use super::{RawSamples, SampleCounters};
use crate::probes::ProbeError;

/// The off-CPU tracer's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuCounters {
    /// Switch-outs of targeted tasks stored.
    pub switched_out: u64,
    /// Blocks recorded (at least the minimum long).
    pub recorded: u64,
    /// Blocks shorter than the minimum, ignored.
    pub short: u64,
    /// Switch-outs not stored: too many targeted tasks off the CPU at once.
    pub start_full: u64,
    /// Blocks lost because the aggregation map was full.
    pub lost_key_map_full: u64,
    /// Switch-outs whose user stack could not be stored.
    pub lost_user_stack: u64,
    /// Switch-outs whose kernel stack could not be stored.
    pub lost_kernel_stack: u64,
    /// Switch-outs without a readable user stack (kernel threads).
    pub user_stack_faults: u64,
}

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::MissingMap(name))
}

/// Reads the blocked time per key (ns, in [`RawSamples::counts`]), every stack it refers to,
/// and the counters, also as [`SampleCounters`] (`taken` = blocks recorded).
pub fn drain_offcpu(ebpf: &Ebpf) -> Result<(RawSamples, OffCpuCounters), ProbeError> {
    let counters = read_offcpu_counters(ebpf)?;
    let times: BpfHashMap<&MapData, SampleKey, u64> =
        BpfHashMap::try_from(map(ebpf, MAP_OFFCPU_TIMES)?).map_err(|source| ProbeError::Map {
            map: MAP_OFFCPU_TIMES,
            source,
        })?;
    let mut counts = Vec::new();
    for entry in times.iter() {
        match entry {
            Ok(kv) => counts.push(kv),
            Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(ProbeError::Map {
                    map: MAP_OFFCPU_TIMES,
                    source,
                });
            }
        }
    }
    let stack_map: StackTraceMap<&MapData> = StackTraceMap::try_from(map(ebpf, MAP_STACKS)?)
        .map_err(|source| ProbeError::Map {
            map: MAP_STACKS,
            source,
        })?;
    let mut stacks = HashMap::new();
    for (key, _) in &counts {
        for id in [key.user_stack_id, key.kernel_stack_id] {
            if id < 0 || stacks.contains_key(&(id as u32)) {
                continue;
            }
            match stack_map.get(&(id as u32), 0) {
                Ok(trace) => {
                    stacks.insert(id as u32, trace.frames().iter().map(|f| f.ip).collect());
                }
                Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(ProbeError::Map {
                        map: MAP_STACKS,
                        source,
                    });
                }
            }
        }
    }
    let sample_counters = SampleCounters {
        taken: counters.recorded,
        lost_user_stack: counters.lost_user_stack,
        lost_kernel_stack: counters.lost_kernel_stack,
        lost_key_map_full: counters.lost_key_map_full + counters.start_full,
        user_stack_faults: counters.user_stack_faults,
        idle: 0,
    };
    Ok((
        RawSamples {
            counts,
            stacks,
            counters: sample_counters,
        },
        counters,
    ))
}

/// Sums the off-CPU tracer's per-CPU counters.
pub fn read_offcpu_counters(ebpf: &Ebpf) -> Result<OffCpuCounters, ProbeError> {
    let err = |source| ProbeError::Map {
        map: MAP_OFFCPU_STATS,
        source,
    };
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, MAP_OFFCPU_STATS)?).map_err(err)?;
    let mut sums = [0u64; OFFCPU_STATS_LEN as usize];
    for (i, sum) in sums.iter_mut().enumerate() {
        *sum = array.get(&(i as u32), 0).map_err(err)?.iter().sum();
    }
    let at = |s: OffCpuStat| sums[s as usize];
    Ok(OffCpuCounters {
        switched_out: at(OffCpuStat::SwitchedOut),
        recorded: at(OffCpuStat::Recorded),
        short: at(OffCpuStat::Short),
        start_full: at(OffCpuStat::StartFull),
        lost_key_map_full: at(OffCpuStat::LostKeyMapFull),
        lost_user_stack: at(OffCpuStat::LostUserStack),
        lost_kernel_stack: at(OffCpuStat::LostKernelStack),
        user_stack_faults: at(OffCpuStat::UserStackFault),
    })
}
