//! Syscall statistics and slow-call events from the `sys_enter` / `sys_exit` raw tracepoints.

use crate::TASK_COMM_LEN;

/// Name of the per-CPU hash of [`SyscallStats`] keyed by [`SyscallKey`].
pub const MAP_SYSCALL_STATS: &str = "SYSCALL_STATS";
/// Name of the per-CPU hash of error counts keyed by [`SyscallErrnoKey`].
pub const MAP_SYSCALL_ERRNOS: &str = "SYSCALL_ERRNOS";
/// Name of the LRU hash of calls in flight, keyed by thread id (one entry per thread, reused
/// from call to call; `enter_ns` 0 when no call is in flight).
pub const MAP_SYSCALL_INFLIGHT: &str = "SYSCALL_INFLIGHT";
/// Name of the ring buffer of [`SlowSyscallEvent`]s.
pub const MAP_SYSCALL_EVENTS: &str = "SYSCALL_EVENTS";
/// Name of the one-entry array holding the [`SyscallConfig`].
pub const MAP_SYSCALL_CONFIG: &str = "SYSCALL_CONFIG";
/// Name of the per-CPU array of syscall tracer counters, indexed by [`SyscallStat`].
pub const MAP_SYSCALL_COUNTERS: &str = "SYSCALL_COUNTERS";

/// Number of log2 latency buckets: bucket `i` counts calls of `[2^i, 2^(i+1))` ns; the last one
/// everything longer (2^39 ns is about 9 minutes).
pub const LATENCY_BUCKETS: usize = 40;
/// Default capacity of [`MAP_SYSCALL_STATS`].
pub const DEFAULT_SYSCALL_KEYS: u32 = 16 * 1024;
/// Capacity of [`MAP_SYSCALL_ERRNOS`].
pub const DEFAULT_SYSCALL_ERRNO_KEYS: u32 = 8 * 1024;
/// Capacity of [`MAP_SYSCALL_INFLIGHT`]: threads tracked at once (least recently used ones make
/// room for new ones).
pub const MAX_INFLIGHT: u32 = 32 * 1024;
/// Size of [`MAP_SYSCALL_EVENTS`] in bytes.
pub const SYSCALL_EVENTS_BYTES: u32 = 1 << 20;
/// Bytes of a path argument copied into a slow-call event.
pub const PATH_LEN: usize = 256;

/// One (cgroup, process, syscall) bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Thread-group id.
    pub tgid: u32,
    /// Syscall number (x86_64 table).
    pub nr: u32,
}
const _: () = assert!(size_of::<SyscallKey>() == 16);

/// Statistics of one [`SyscallKey`] on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallStats {
    /// Completed calls.
    pub count: u64,
    /// Calls that returned an error (-4095..=-1).
    pub errors: u64,
    /// Sum of durations, ns.
    pub total_ns: u64,
    /// Longest duration, ns.
    pub max_ns: u64,
    /// log2 histogram of durations, ns.
    pub hist: [u64; LATENCY_BUCKETS],
}
const _: () = assert!(size_of::<SyscallStats>() == 32 + 8 * LATENCY_BUCKETS);

/// An (cgroup, process, syscall, errno) error bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyscallErrnoKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Thread-group id.
    pub tgid: u32,
    /// Syscall number.
    pub nr: u32,
    /// The errno (positive).
    pub errno: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<SyscallErrnoKey>() == 24);

/// A thread's call in flight, stored at entry; `enter_ns` is 0 once its exit was accounted.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InflightSyscall {
    /// Entry time, `bpf_ktime_get_ns`.
    pub enter_ns: u64,
    /// Syscall number.
    pub nr: u64,
}

/// What the syscall tracer does beyond counting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallConfig {
    /// Calls at least this long become [`SlowSyscallEvent`]s; 0 disables events.
    pub slow_threshold_ns: u64,
    /// Non-zero: record the user stack of slow calls (taken at exit: user registers are the
    /// same as at entry, so it is the calling stack, at no cost to fast calls).
    pub capture_stacks: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<SyscallConfig>() == 16);

/// One call slower than the threshold, streamed through [`MAP_SYSCALL_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowSyscallEvent {
    /// Exit time, `bpf_ktime_get_ns` (monotonic).
    pub exit_ns: u64,
    /// Duration, ns.
    pub duration_ns: u64,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Return value (negative errno on failure).
    pub ret: i64,
    /// Raw arguments, read from the saved user registers at exit.
    pub args: [u64; 6],
    /// User stack id in the sampler's stack map, or a negative errno.
    pub user_stack_id: i64,
    /// Thread-group id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Syscall number.
    pub nr: u32,
    /// Length of `path` including its NUL, 0 when none was read.
    pub path_len: u32,
    /// The thread's comm.
    pub comm: [u8; TASK_COMM_LEN],
    /// The path argument of open/stat/exec-like calls, read at exit from user memory.
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(size_of::<SlowSyscallEvent>() == 104 + TASK_COMM_LEN + PATH_LEN);

/// Index of a counter in [`MAP_SYSCALL_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallStat {
    /// Exits whose entry was not seen (tracing began mid-call, or the in-flight map was full).
    UnmatchedExit = 0,
    /// Entries not stored because the in-flight map was full.
    InflightFull = 1,
    /// Completed calls not counted because the stats map was full.
    StatsFull = 2,
    /// Slow-call events dropped because the ring buffer was full.
    EventsLost = 3,
    /// Errors whose errno bucket could not be stored.
    ErrnoFull = 4,
}

/// Number of counters in [`MAP_SYSCALL_COUNTERS`].
pub const SYSCALL_COUNTERS_LEN: u32 = 5;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]` with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for SyscallKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallErrnoKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallConfig {}
}
