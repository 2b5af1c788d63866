//! Off-CPU time from the `sched_switch` raw tracepoint: how long targeted tasks stayed switched
//! out, per (cgroup, process, comm, user stack, kernel stack) at the moment they left the CPU.
//!
//! A switched-out task is remembered by its `task_struct` address (the tracepoint's `prev` and
//! `next` arguments), so the kernel side never reads a field of `task_struct` and needs no
//! struct offsets.

use crate::SampleKey;

/// Name of the hash of blocked nanoseconds, keyed by [`SampleKey`], valued by a `u64`.
pub const MAP_OFFCPU_TIMES: &str = "OFFCPU_TIMES";
/// Name of the hash of switched-out targeted tasks, keyed by `task_struct` address, valued by
/// [`OffCpuStart`].
pub const MAP_OFFCPU_START: &str = "OFFCPU_START";
/// Name of the one-entry array holding the [`OffCpuConfig`].
pub const MAP_OFFCPU_CONFIG: &str = "OFFCPU_CONFIG";
/// Name of the per-CPU array of off-CPU counters, indexed by [`OffCpuStat`].
pub const MAP_OFFCPU_STATS: &str = "OFFCPU_STATS";

/// Default capacity of [`MAP_OFFCPU_TIMES`].
pub const DEFAULT_OFFCPU_KEYS: u32 = 32 * 1024;
/// Capacity of [`MAP_OFFCPU_START`]: targeted tasks switched out at the same time.
pub const MAX_OFFCPU_BLOCKED: u32 = 64 * 1024;
/// Default shortest block recorded, ns.
pub const DEFAULT_MIN_BLOCK_NS: u64 = 1_000;

/// A targeted task that left the CPU, stored at switch-out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuStart {
    /// Switch-out time, `bpf_ktime_get_ns`.
    pub start_ns: u64,
    /// Who it was and where it blocked; the key its blocked time is added to.
    pub key: SampleKey,
}
const _: () = assert!(size_of::<OffCpuStart>() == 48);

/// What the off-CPU tracer records; the one entry of [`MAP_OFFCPU_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Blocks shorter than this are counted in [`OffCpuStat::Short`] and otherwise ignored.
    pub min_block_ns: u64,
}
const _: () = assert!(size_of::<OffCpuConfig>() == 8);

/// Index of a counter in [`MAP_OFFCPU_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffCpuStat {
    /// Switch-outs of targeted tasks that were stored.
    SwitchedOut = 0,
    /// Blocks at least the minimum long, added to [`MAP_OFFCPU_TIMES`].
    Recorded = 1,
    /// Blocks shorter than the minimum, ignored.
    Short = 2,
    /// Switch-outs not stored because [`MAP_OFFCPU_START`] was full.
    StartFull = 3,
    /// Blocks dropped because [`MAP_OFFCPU_TIMES`] was full.
    LostKeyMapFull = 4,
    /// Switch-outs whose user stack could not be stored (stack map full or collision).
    LostUserStack = 5,
    /// Switch-outs whose kernel stack could not be stored.
    LostKernelStack = 6,
    /// Switch-outs without a readable user stack (EFAULT), e.g. kernel threads.
    UserStackFault = 7,
}

/// Number of counters in [`MAP_OFFCPU_STATS`].
pub const OFFCPU_STATS_LEN: u32 = 8;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, a u64 followed by a `SampleKey` (itself without implicit padding);
    // every bit pattern is valid.
    unsafe impl aya::Pod for OffCpuStart {}
    // SAFETY: `#[repr(C)]` with one u64.
    unsafe impl aya::Pod for OffCpuConfig {}
}
