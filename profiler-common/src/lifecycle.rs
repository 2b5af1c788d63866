//! Process lifecycle counters per cgroup: execs and process exits, with the wait status of the
//! latest exit (the daemon derives a verdict for sandboxes another judge ran from it).

/// Name of the per-CPU hash map of [`ProcCounts`] by cgroup id.
pub const MAP_PROC_COUNTS: &str = "PROC_COUNTS";
/// Capacity of [`MAP_PROC_COUNTS`]: cgroups counted at once (user space removes the entries of
/// removed cgroups).
pub const MAX_PROC_CGROUPS: u32 = 8 * 1024;
/// Load-time global: offset of `exit_code` in `struct task_struct` (0: unknown).
pub const GLOBAL_TASK_EXIT_CODE_OFFSET: &str = "TASK_EXIT_CODE_OFFSET";
/// Load-time global: offset of `group_dead` in the `sched_process_exit` record (`u32::MAX`:
/// the kernel has none, a thread group leader's exit counts).
pub const GLOBAL_EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";

/// One CPU's counts for one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounts {
    /// Successful execs.
    pub execs: u64,
    /// Processes (thread groups) that ended.
    pub exits: u64,
    /// When the latest exit on this CPU happened, monotonic ns (0: none).
    pub last_exit_ns: u64,
    /// Its wait status (`exit_code << 8`, or the signal), as `waitpid` reports it.
    pub last_exit_status: u32,
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(size_of::<ProcCounts>() == 32);

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding left implicit.
unsafe impl aya::Pod for ProcCounts {}
