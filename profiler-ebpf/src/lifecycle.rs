//! Process lifecycle: a forked child of a followed target becomes a target itself; execs and
//! process exits are counted per cgroup.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    programs::TracePointContext,
};
use profiler_common::{ProcCounts, TARGET_FOLLOW_FORKS};

use crate::{
    maps::{PROC_COUNTS, TARGET_TGIDS},
    targets::{current_cgroup_id, is_target},
};

/// Offset of `exit_code` in `struct task_struct`, from the kernel's BTF (0: unknown).
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFFSET: u32 = 0;

/// Offset of `group_dead` in the `sched_process_exit` record, from its format file
/// (`u32::MAX`: none on this kernel).
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = u32::MAX;

/// This CPU's counts of the current task's cgroup, when it is a target.
#[inline(always)]
fn counts() -> Option<*mut ProcCounts> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cgroup_id = current_cgroup_id();
    if !is_target(tgid, cgroup_id) {
        return None;
    }
    if let Some(ptr) = PROC_COUNTS.get_ptr_mut(cgroup_id) {
        return Some(ptr);
    }
    // Full map: the event is not counted (user space removes the entries of removed cgroups).
    let _ = PROC_COUNTS.insert(cgroup_id, ProcCounts::default(), BPF_NOEXIST as u64);
    PROC_COUNTS.get_ptr_mut(cgroup_id)
}

pub fn try_exec(_ctx: &TracePointContext) -> Result<u32, i64> {
    if let Some(c) = counts() {
        // SAFETY: a per-CPU value; only this CPU writes it, the program is not re-entered.
        unsafe { (*c).execs += 1 };
    }
    Ok(0)
}

pub fn try_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: volatile reads stop the compiler from folding the load-time constants.
    let group_dead_at = unsafe { core::ptr::read_volatile(&EXIT_GROUP_DEAD_OFFSET) };
    // SAFETY: as above.
    let exit_code_at = unsafe { core::ptr::read_volatile(&TASK_EXIT_CODE_OFFSET) };
    let last = if group_dead_at == u32::MAX {
        let pid_tgid = bpf_get_current_pid_tgid();
        pid_tgid >> 32 == pid_tgid & 0xffff_ffff
    } else {
        // SAFETY: bpf_probe_read_kernel checks the access; the offset comes from the format.
        let dead: u8 = unsafe { ctx.read_at(group_dead_at as usize) }?;
        dead != 0
    };
    if !last {
        return Ok(0);
    }
    let Some(c) = counts() else {
        return Ok(0);
    };
    let status = if exit_code_at == 0 {
        0
    } else {
        // SAFETY: a helper without arguments; the pointer is only read through the helper below.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        // SAFETY: bpf_probe_read_kernel checks the access; the offset comes from the BTF.
        unsafe { bpf_probe_read_kernel(task.add(exit_code_at as usize) as *const i32) }.unwrap_or(0)
            as u32
    };
    // SAFETY: as in `try_exec`.
    unsafe {
        (*c).exits += 1;
        (*c).last_exit_ns = bpf_ktime_get_ns();
        (*c).last_exit_status = status;
    }
    Ok(0)
}

/// Offset of `child_pid` in the `sched_process_fork` record, read by user space from the
/// tracepoint's format file: the layout differs between kernels.
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 20;

pub fn try_fork(ctx: &TracePointContext) -> Result<u32, i64> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is a plain u32 copied out at once.
    let Some(flags) = (unsafe { TARGET_TGIDS.get(parent_tgid) }).copied() else {
        return Ok(0);
    };
    if flags & TARGET_FOLLOW_FORKS == 0 {
        return Ok(0);
    }
    // SAFETY: a volatile read stops the compiler from folding the load-time constant.
    let offset = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) } as usize;
    // SAFETY: bpf_probe_read_kernel checks the access; the offset comes from the format file.
    let child: i32 = unsafe { ctx.read_at(offset) }?;
    // A new thread of a target is covered by its tgid already; inserting its tid is harmless.
    TARGET_TGIDS.insert(child as u32, flags, BPF_ANY as u64)?;
    Ok(0)
}
