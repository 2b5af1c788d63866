//! What the guard's syscall layer checks of the calls that signal processes or create tasks:
//! whether a signal leaves the run (audit mode, and `kill(-1, …)` in both modes), and the fork
//! rate, which counts processes, not threads.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_send_signal},
    programs::RawTracePointContext,
};
use profiler_common::{GuardRun, TRIP_FORK_RATE, VIOLATION_FORK_RATE};

use crate::{
    guard_maps::GUARD_RUN_PIDS,
    guard_sys::{Call, NR_CLONE3, SIGKILL, add, args, record, set_bits},
};

/// `kill`.
pub(crate) const NR_KILL: u32 = 62;
/// `tgkill` and `rt_tgsigqueueinfo`: the signal is their third argument, not the second.
const NR_TGKILL: u32 = 234;
const NR_RT_TGSIGQUEUEINFO: u32 = 297;

/// The signal number of a signal call (0 only asks whether the target exists).
#[inline(always)]
pub(crate) fn signal_of(nr: u32, args: &[u64; 6]) -> u64 {
    if nr == NR_TGKILL || nr == NR_RT_TGSIGQUEUEINFO {
        args[2]
    } else {
        args[1]
    }
}

/// Whether a signal call targets a process outside the run: not the caller itself, not its
/// process group (a run's command leads a session of its own), not a task or process group the
/// run started; `kill(-1, …)` (every process the caller may signal) always does. Audit mode,
/// where no Landlock scope refuses it, and `kill(-1, …)`, which Landlock answers with success
/// when it signalled the run's own processes only.
#[inline(always)]
pub(crate) fn signals_outside(call: &Call, args: &[u64; 6]) -> bool {
    let target = args[0] as i32;
    if target == -1 {
        return call.nr == NR_KILL;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A negative pid other than -1 is a process group, named by its leader's pid.
    let target = target.unsigned_abs();
    if target == 0 || target == tgid {
        return false;
    }
    // SAFETY: plain data copied out at once.
    match unsafe { GUARD_RUN_PIDS.get(target) } {
        Some(&cgroup) => cgroup != call.cgroup_id,
        None => true,
    }
}

/// `clone`; `CLONE_THREAD`.
const NR_CLONE: u32 = 56;
const CLONE_THREAD: u64 = 0x10000;

/// Whether a task-creating call made a thread: `clone` or `clone3` with `CLONE_THREAD` (the
/// arguments are still in the registers, and the `clone_args` in user memory, at exit).
#[inline(always)]
pub(crate) fn creates_thread(nr: u32, regs: *const pt_regs) -> bool {
    let flags = match nr {
        NR_CLONE => args(regs)[0],
        NR_CLONE3 => {
            let args = args(regs);
            // SAFETY: reads the first field (flags) of the caller's `struct clone_args`.
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(args[0] as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    };
    flags & CLONE_THREAD != 0
}

/// Counts a successful fork against the run's fork-rate limit; trips once over it.
#[inline(always)]
pub(crate) fn count_fork(ctx: &RawTracePointContext, run: *mut GuardRun, call: &Call, audit: bool) {
    // SAFETY: the live map value of this run.
    let (max, window) = unsafe { ((*run).fork_rate_max, (*run).fork_window_ns) };
    if max == 0 {
        return;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above. Window resets race benignly: at worst a few forks are not counted.
    let count = unsafe {
        if now.saturating_sub((*run).fork_window_start_ns) > window {
            (*run).fork_window_start_ns = now;
            (*run).fork_count = 1;
        } else {
            add(&raw mut (*run).fork_count, 1);
        }
        (*run).fork_count
    };
    // SAFETY: as above.
    if count <= max || unsafe { (*run).tripped } & TRIP_FORK_RATE != 0 {
        return;
    }
    // SAFETY: as above.
    set_bits(unsafe { &raw mut (*run).tripped }, TRIP_FORK_RATE);
    if !audit {
        // SAFETY: a helper with an integer argument.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    record(ctx, run, call, VIOLATION_FORK_RATE, 0, 0, None);
}
