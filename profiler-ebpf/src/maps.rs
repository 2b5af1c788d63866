//! Every map of the kernel side, named as in `profiler_common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, StackTrace},
};
use profiler_common::{
    DEFAULT_SAMPLE_KEYS, DEFAULT_STACKS, MAX_TARGET_CGROUPS, MAX_TARGET_TGIDS, SAMPLE_STATS_LEN,
    SampleKey, TargetFilter,
};

/// CPU sample counts per (cgroup, tgid, comm, user stack, kernel stack).
#[map(name = "SAMPLE_COUNTS")]
pub static SAMPLE_COUNTS: HashMap<SampleKey, u64> =
    HashMap::with_max_entries(DEFAULT_SAMPLE_KEYS, 0);

/// User and kernel stacks of samples.
#[map(name = "STACKS")]
pub static STACKS: StackTrace = StackTrace::with_max_entries(DEFAULT_STACKS, 0);

/// Sampling counters, indexed by `SampleStat`.
#[map(name = "SAMPLE_STATS")]
pub static SAMPLE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SAMPLE_STATS_LEN, 0);

/// Targeted thread groups.
#[map(name = "TARGET_TGIDS")]
pub static TARGET_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGET_TGIDS, 0);

/// Targeted cgroups (and their descendants).
#[map(name = "TARGET_CGROUPS")]
pub static TARGET_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGET_CGROUPS, 0);

/// The target filter, one entry.
#[map(name = "TARGET_FILTER")]
pub static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);
