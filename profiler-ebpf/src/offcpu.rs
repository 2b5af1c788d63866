//! Off-CPU time from the `sched_switch` raw tracepoint. At the tracepoint `current` is still
//! `prev`: its stacks are taken there, stored under its `task_struct` address, and when the same
//! address comes back as `next` the time in between is added to the stacks' bucket. Tasks are
//! keyed by address so that no `task_struct` field (and no struct offset) is ever read.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    programs::{RawTracePointContext, tracing::StackIdContext as _},
};
use profiler_common::{OffCpuStart, OffCpuStat, SampleKey};

use crate::{
    maps::{OFFCPU_CONFIG, OFFCPU_START, OFFCPU_STATS, OFFCPU_TIMES, STACKS},
    targets::{current_cgroup_id, is_target},
};

const EFAULT: i64 = 14;
/// Kernel frames to leave out at the leaf of the stack (`BPF_F_SKIP_FIELD_MASK`): this program
/// itself and `bpf_trace_run4`, so that the stack ends in `__schedule`.
const KERNEL_FRAMES_TO_SKIP: u64 = 2;
/// `TASK_DEAD` in `prev_state`: the task's last switch-out, it never comes back.
const TASK_DEAD: u64 = 0x80;

#[inline(always)]
fn count(stat: OffCpuStat) {
    if let Some(ptr) = OFFCPU_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value, only this CPU writes it and the program is not re-entered on it.
        unsafe { *ptr += 1 };
    }
}

/// `sched_switch`: ends the block of `next`, starts the block of `prev`.
pub fn try_sched_switch(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
    //          unsigned int prev_state)
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    switch_in(next, now);
    if prev_state & TASK_DEAD == 0 {
        switch_out(ctx, prev, now);
    }
    Ok(())
}

#[inline(always)]
fn switch_in(next: u64, now: u64) {
    // SAFETY: the value is copied out at once; only the scheduler of `next` touches its entry.
    let Some(start) = (unsafe { OFFCPU_START.get(next) }).copied() else {
        return;
    };
    let _ = OFFCPU_START.remove(next);
    let blocked = now.saturating_sub(start.start_ns);
    let min = OFFCPU_CONFIG.get(0).map_or(0, |c| c.min_block_ns);
    if blocked < min {
        count(OffCpuStat::Short);
        return;
    }
    count(OffCpuStat::Recorded);
    if let Some(value) = OFFCPU_TIMES.get_ptr_mut(start.key) {
        // SAFETY: the pointer is to a live map value; the add is atomic across CPUs.
        unsafe {
            core::intrinsics::atomic_xadd::<_, _, { core::intrinsics::AtomicOrdering::Relaxed }>(
                value, blocked,
            )
        };
        return;
    }
    if OFFCPU_TIMES
        .insert(start.key, blocked, BPF_NOEXIST as u64)
        .is_err()
    {
        // Either the map is full or another CPU inserted the key first.
        match OFFCPU_TIMES.get_ptr_mut(start.key) {
            // SAFETY: as above.
            Some(value) => unsafe {
                core::intrinsics::atomic_xadd::<_, _, { core::intrinsics::AtomicOrdering::Relaxed }>(
                    value, blocked,
                );
            },
            None => count(OffCpuStat::LostKeyMapFull),
        }
    }
}

#[inline(always)]
fn switch_out(ctx: &RawTracePointContext, prev: u64, now: u64) {
    let tgid = ctx.tgid();
    if tgid == 0 {
        return;
    }
    let cgroup_id = current_cgroup_id();
    if !is_target(tgid, cgroup_id) {
        return;
    }
    let user_stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(e) if e as i64 == -EFAULT => {
            count(OffCpuStat::UserStackFault);
            e
        }
        Err(e) => {
            count(OffCpuStat::LostUserStack);
            e
        }
    };
    let kernel_stack_id = match ctx.get_stackid(&STACKS, KERNEL_FRAMES_TO_SKIP) {
        Ok(id) => id as i32,
        Err(e) => {
            count(OffCpuStat::LostKernelStack);
            e
        }
    };
    let start = OffCpuStart {
        start_ns: now,
        key: SampleKey {
            cgroup_id,
            tgid,
            user_stack_id,
            kernel_stack_id,
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        },
    };
    if OFFCPU_START.insert(prev, start, BPF_ANY as u64).is_ok() {
        count(OffCpuStat::SwitchedOut);
    } else {
        count(OffCpuStat::StartFull);
    }
}
