//! CPU sampling: what the perf_event program aggregates and how it is told what to sample.

use crate::TASK_COMM_LEN;

/// Name of the map of sample counts, keyed by [`SampleKey`], valued by a `u64` count.
pub const MAP_SAMPLE_COUNTS: &str = "SAMPLE_COUNTS";
/// Name of the stack-trace map holding the user and kernel stacks of samples.
pub const MAP_STACKS: &str = "STACKS";
/// Name of the per-CPU array of sampling counters, indexed by [`SampleStat`].
pub const MAP_SAMPLE_STATS: &str = "SAMPLE_STATS";
/// Name of the map of targeted thread-group ids (`u32` → [`TargetFlags`] bits).
pub const MAP_TARGET_TGIDS: &str = "TARGET_TGIDS";
/// Name of the map of targeted cgroup v2 ids (`u64` → `u32`, unused).
pub const MAP_TARGET_CGROUPS: &str = "TARGET_CGROUPS";
/// Name of the one-entry array holding the [`TargetFilter`].
pub const MAP_TARGET_FILTER: &str = "TARGET_FILTER";

/// Default capacity of [`MAP_SAMPLE_COUNTS`].
pub const DEFAULT_SAMPLE_KEYS: u32 = 32 * 1024;
/// Default capacity of [`MAP_STACKS`].
pub const DEFAULT_STACKS: u32 = 32 * 1024;
/// Capacity of [`MAP_TARGET_TGIDS`].
pub const MAX_TARGET_TGIDS: u32 = 64 * 1024;
/// Capacity of [`MAP_TARGET_CGROUPS`].
pub const MAX_TARGET_CGROUPS: u32 = 4 * 1024;
/// Deepest cgroup level whose ancestors are checked against [`MAP_TARGET_CGROUPS`].
pub const MAX_CGROUP_LEVEL: u32 = 16;

/// One aggregation bucket of CPU samples: who was running, in which cgroup, on which stacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Thread-group id (the process id as users know it).
    pub tgid: u32,
    /// Id in [`MAP_STACKS`] of the user stack, or a negative errno.
    pub user_stack_id: i32,
    /// Id in [`MAP_STACKS`] of the kernel stack, or a negative errno.
    pub kernel_stack_id: i32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The running thread's `comm`, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<SampleKey>() == 40);

#[cfg(feature = "user")]
// SAFETY: `SampleKey` is `#[repr(C)]`, has no implicit padding and every bit pattern is valid.
unsafe impl aya::Pod for SampleKey {}

/// Which processes the kernel side samples; the one entry of [`MAP_TARGET_FILTER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetFilter {
    /// [`FILTER_ALL`], or an OR of [`FILTER_TGIDS`] and [`FILTER_CGROUPS`].
    pub mode: u32,
    /// Deepest level (root = 0) of any targeted cgroup; ancestors above it are not checked.
    pub max_cgroup_level: u32,
}
const _: () = assert!(size_of::<TargetFilter>() == 8);

#[cfg(feature = "user")]
// SAFETY: `TargetFilter` is `#[repr(C)]` with two `u32`s and no padding.
unsafe impl aya::Pod for TargetFilter {}

/// Sample everything (idle excluded).
pub const FILTER_ALL: u32 = 0;
/// Sample the thread groups in [`MAP_TARGET_TGIDS`].
pub const FILTER_TGIDS: u32 = 1;
/// Sample the processes whose cgroup, or one of its ancestors, is in [`MAP_TARGET_CGROUPS`].
pub const FILTER_CGROUPS: u32 = 2;
/// Nothing matches: the filter while targets are being set up.
pub const FILTER_NONE: u32 = 4;

/// Bits of a [`MAP_TARGET_TGIDS`] value.
pub type TargetFlags = u32;
/// The target's children (and their children) become targets when they are forked.
pub const TARGET_FOLLOW_FORKS: TargetFlags = 1;

/// Index of a counter in [`MAP_SAMPLE_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleStat {
    /// Samples that matched the target filter.
    Taken = 0,
    /// Samples lost because the user stack could not be stored (stack map full or collision).
    LostUserStack = 1,
    /// Samples lost because the kernel stack could not be stored.
    LostKernelStack = 2,
    /// Samples lost because [`MAP_SAMPLE_COUNTS`] was full.
    LostKeyMapFull = 3,
    /// Samples whose user stack could not be read (EFAULT), e.g. in a kernel thread.
    UserStackFault = 4,
    /// Samples of the idle task, not recorded.
    Idle = 5,
}

/// Number of counters in [`MAP_SAMPLE_STATS`].
pub const SAMPLE_STATS_LEN: u32 = 6;
