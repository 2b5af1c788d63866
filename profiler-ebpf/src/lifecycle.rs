//! Process lifecycle: a forked child of a followed target becomes a target itself.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, programs::TracePointContext};
use profiler_common::TARGET_FOLLOW_FORKS;

use crate::maps::TARGET_TGIDS;

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
