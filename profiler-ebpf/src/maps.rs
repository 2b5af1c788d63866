//! Every map of the kernel side, named as in `profiler_common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use profiler_common::{
    DEFAULT_OFFCPU_KEYS, DEFAULT_SAMPLE_KEYS, DEFAULT_STACKS, DEFAULT_SYSCALL_ERRNO_KEYS,
    DEFAULT_SYSCALL_KEYS, GUARD_EVENTS_BYTES, GuardAllowKey, GuardPolicy, InflightSyscall,
    MAX_GUARD_ALLOW, MAX_GUARD_POLICIES, MAX_INFLIGHT, MAX_OFFCPU_BLOCKED, MAX_PROC_CGROUPS,
    MAX_TARGET_CGROUPS, MAX_TARGET_TGIDS, OFFCPU_STATS_LEN, OffCpuConfig, OffCpuStart, ProcCounts,
    SAMPLE_STATS_LEN, SYSCALL_COUNTERS_LEN, SYSCALL_EVENTS_BYTES, SampleKey, SyscallConfig,
    SyscallErrnoKey, SyscallKey, SyscallStats, TargetFilter,
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

/// Execs and process exits per cgroup id.
#[map(name = "PROC_COUNTS")]
pub static PROC_COUNTS: PerCpuHashMap<u64, ProcCounts> =
    PerCpuHashMap::with_max_entries(MAX_PROC_CGROUPS, 0);

/// Targeted thread groups.
#[map(name = "TARGET_TGIDS")]
pub static TARGET_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGET_TGIDS, 0);

/// Targeted cgroups (and their descendants).
#[map(name = "TARGET_CGROUPS")]
pub static TARGET_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGET_CGROUPS, 0);

/// The target filter, one entry.
#[map(name = "TARGET_FILTER")]
pub static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);

/// Per-CPU syscall statistics per (cgroup, tgid, syscall).
#[map(name = "SYSCALL_STATS")]
pub static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_SYSCALL_KEYS, 0);

/// Per-CPU error counts per (cgroup, tgid, syscall, errno).
#[map(name = "SYSCALL_ERRNOS")]
pub static SYSCALL_ERRNOS: PerCpuHashMap<SyscallErrnoKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_SYSCALL_ERRNO_KEYS, 0);

/// Calls in flight, by thread id; LRU, so that the entries of threads that exited make room.
#[map(name = "SYSCALL_INFLIGHT")]
pub static SYSCALL_INFLIGHT: LruHashMap<u32, InflightSyscall> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Slow-call events.
#[map(name = "SYSCALL_EVENTS")]
pub static SYSCALL_EVENTS: RingBuf = RingBuf::with_byte_size(SYSCALL_EVENTS_BYTES, 0);

/// The syscall tracer's configuration, one entry.
#[map(name = "SYSCALL_CONFIG")]
pub static SYSCALL_CONFIG: Array<SyscallConfig> = Array::with_max_entries(1, 0);

/// Syscall tracer counters, indexed by `SyscallStat`.
#[map(name = "SYSCALL_COUNTERS")]
pub static SYSCALL_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(SYSCALL_COUNTERS_LEN, 0);

/// Blocked nanoseconds per (cgroup, tgid, comm, user stack, kernel stack).
#[map(name = "OFFCPU_TIMES")]
pub static OFFCPU_TIMES: HashMap<SampleKey, u64> =
    HashMap::with_max_entries(DEFAULT_OFFCPU_KEYS, 0);

/// Switched-out targeted tasks, by `task_struct` address.
#[map(name = "OFFCPU_START")]
pub static OFFCPU_START: HashMap<u64, OffCpuStart> =
    HashMap::with_max_entries(MAX_OFFCPU_BLOCKED, 0);

/// The off-CPU tracer's configuration, one entry.
#[map(name = "OFFCPU_CONFIG")]
pub static OFFCPU_CONFIG: Array<OffCpuConfig> = Array::with_max_entries(1, 0);

/// Off-CPU counters, indexed by `OffCpuStat`.
#[map(name = "OFFCPU_STATS")]
pub static OFFCPU_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OFFCPU_STATS_LEN, 0);

/// Network policies of sandboxes, by cgroup id.
#[map(name = "GUARD_POLICIES")]
pub static GUARD_POLICIES: HashMap<u64, GuardPolicy> =
    HashMap::with_max_entries(MAX_GUARD_POLICIES, 0);

/// Allowed destinations of sandboxes whose policy has an allow list.
#[map(name = "GUARD_ALLOW")]
pub static GUARD_ALLOW: LpmTrie<GuardAllowKey, u32> = LpmTrie::with_max_entries(MAX_GUARD_ALLOW, 0);

/// Network violations.
#[map(name = "GUARD_EVENTS")]
pub static GUARD_EVENTS: RingBuf = RingBuf::with_byte_size(GUARD_EVENTS_BYTES, 0);
