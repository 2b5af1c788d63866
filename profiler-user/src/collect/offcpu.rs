//! Draining the off-CPU tracer: blocked nanoseconds per stack, the stacks, and its counters,
//! in the same shape as CPU samples so that the same assembly turns them into a profile.

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use profiler_common::{
    MAP_OFFCPU_STATS, MAP_OFFCPU_TIMES, OFFCPU_STATS_LEN, OffCpuStat, SampleKey,
};

use super::{
    RawSamples, SampleCounters,
    read::{entries, map, map_error, per_cpu_sums, stacks},
};
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

/// Reads the blocked time per key (ns, in [`RawSamples::counts`]), every stack it refers to,
/// and the counters, also as [`SampleCounters`] (`taken` = blocks recorded).
pub fn drain_offcpu(ebpf: &Ebpf) -> Result<(RawSamples, OffCpuCounters), ProbeError> {
    let counters = read_offcpu_counters(ebpf)?;
    let times: BpfHashMap<&MapData, SampleKey, u64> =
        BpfHashMap::try_from(map(ebpf, MAP_OFFCPU_TIMES)?).map_err(map_error(MAP_OFFCPU_TIMES))?;
    let counts = entries(MAP_OFFCPU_TIMES, times.iter())?;
    let stacks = stacks(
        ebpf,
        counts
            .iter()
            .flat_map(|(key, _)| [key.user_stack_id, key.kernel_stack_id].map(i64::from)),
    )?;
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
    let sums = per_cpu_sums::<{ OFFCPU_STATS_LEN as usize }>(ebpf, MAP_OFFCPU_STATS)?;
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
