//! The maps of the guard's syscall layer (see `guard_sys`), named as in `profiler_common`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use profiler_common::{
    ExecStack, GUARD_FS_PATH_LEN, GUARD_SYSCALLS, GuardFsKey, GuardNetPending, GuardRun,
    GuardViolation, GuardViolationKey, MAX_GUARD_FS_RULES, MAX_GUARD_RUNS, MAX_GUARD_VIOLATIONS,
    MAX_INFLIGHT,
};

/// Sandbox runs, by cgroup id.
#[map(name = "GUARD_RUNS")]
pub static GUARD_RUNS: HashMap<u64, GuardRun> = HashMap::with_max_entries(MAX_GUARD_RUNS, 0);

/// Recorded violations, by (cgroup id, slot); allocated on use.
#[map(name = "GUARD_VIOLATIONS")]
pub static GUARD_VIOLATIONS: HashMap<GuardViolationKey, GuardViolation> =
    HashMap::with_max_entries(MAX_GUARD_VIOLATIONS, BPF_F_NO_PREALLOC);

/// What each syscall number means to the guard.
#[map(name = "GUARD_SYSCALL_CLASS")]
pub static GUARD_SYSCALL_CLASS: Array<u32> = Array::with_max_entries(GUARD_SYSCALLS, 0);

/// Allowed path prefixes of audit-mode runs.
#[map(name = "GUARD_FS_ALLOW")]
pub static GUARD_FS_ALLOW: LpmTrie<GuardFsKey, u32> =
    LpmTrie::with_max_entries(MAX_GUARD_FS_RULES, 0);

/// Network calls a cgroup hook refused, by thread id, until the thread's `sys_exit`.
#[map(name = "GUARD_NET_PENDING")]
pub static GUARD_NET_PENDING: LruHashMap<u32, GuardNetPending> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Guard counters, indexed by `GuardStat`.
#[map(name = "GUARD_STATS")]
pub static GUARD_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(profiler_common::GUARD_STATS_LEN, 0);

/// Processes and threads started by runs, with the run's cgroup id.
#[map(name = "GUARD_RUN_PIDS")]
pub static GUARD_RUN_PIDS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// (cgroup id, path hash) pairs already reported in audit mode.
#[map(name = "GUARD_SEEN")]
pub static GUARD_SEEN: LruHashMap<[u64; 2], u8> = LruHashMap::with_max_entries(8192, 0);

/// User stacks of `execve` calls in audit-mode runs, by thread id, until the exec.
#[map(name = "GUARD_EXEC_STACKS")]
pub static GUARD_EXEC_STACKS: HashMap<u32, ExecStack> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// The exec stack being taken, per CPU.
#[map(name = "GUARD_EXEC_SCRATCH")]
pub static GUARD_EXEC_SCRATCH: PerCpuArray<ExecStack> = PerCpuArray::with_max_entries(1, 0);

/// A path an audit-mode call would have been refused, as read at `sys_enter` (before another
/// thread can rewrite the buffer), kept for the call's `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AuditPath {
    /// `FS_*` rights the call needed and would not have had.
    pub access: u32,
    /// Bytes of `path`, without the NUL.
    pub len: u32,
    /// The path, NUL-padded.
    pub path: [u8; GUARD_FS_PATH_LEN],
}

/// Audit-mode paths between `sys_enter` and `sys_exit`, by thread id.
#[map(name = "GUARD_AUDIT_PATHS")]
pub static GUARD_AUDIT_PATHS: HashMap<u32, AuditPath> =
    HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// The audit path being kept, per CPU.
#[map(name = "GUARD_AUDIT_SCRATCH")]
pub static GUARD_AUDIT_SCRATCH: PerCpuArray<AuditPath> = PerCpuArray::with_max_entries(1, 0);

/// The violation being recorded, per CPU (too large for the BPF stack).
#[map(name = "GUARD_SCRATCH")]
pub static GUARD_SCRATCH: PerCpuArray<GuardViolation> = PerCpuArray::with_max_entries(1, 0);

/// The path lookup key being built, per CPU.
#[map(name = "GUARD_FS_SCRATCH")]
pub static GUARD_FS_SCRATCH: PerCpuArray<Key<GuardFsKey>> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of [`OpenWalk::path`]: twice a reported path, so that a bounded offset plus a bounded
/// length stays inside it for the verifier.
pub const OPEN_PATH_BUF: usize = 2 * profiler_common::GUARD_PATH_LEN;
/// Names [`OpenWalk::dentries`] holds: a deeper file's path keeps its deepest part.
pub const OPEN_WALK_NAMES: usize = 32;

/// An opened file's walk up its dentries (`guard_open`), per CPU.
#[repr(C)]
pub struct OpenWalk {
    /// Entries of `dentries` in use (kept here, not in a register: a count the verifier does
    /// not track keeps the walk's states few).
    pub names: u64,
    /// The dentries whose names make the path, the file's first.
    pub dentries: [u64; OPEN_WALK_NAMES],
    /// The path, NUL-terminated.
    pub path: [u8; OPEN_PATH_BUF],
}

/// See [`OpenWalk`].
#[map(name = "GUARD_OPEN_WALK")]
pub static GUARD_OPEN_WALK: PerCpuArray<OpenWalk> = PerCpuArray::with_max_entries(1, 0);
