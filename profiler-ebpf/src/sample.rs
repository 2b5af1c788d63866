//! CPU samples from the software `cpu-clock` perf event, aggregated in the kernel.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::bpf_get_current_comm,
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use profiler_common::{SampleKey, SampleStat};

use crate::{
    maps::{SAMPLE_COUNTS, SAMPLE_STATS, STACKS},
    targets::{current_cgroup_id, is_target},
};

const EFAULT: i64 = 14;

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(stat: SampleStat) {
    if let Some(ptr) = SAMPLE_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value, only this CPU writes it and the program is not re-entered on it.
        unsafe { *ptr += 1 };
    }
}

pub fn try_sample(ctx: &PerfEventContext) -> Result<u32, u32> {
    let tgid = ctx.tgid();
    if tgid == 0 {
        count(SampleStat::Idle);
        return Ok(0);
    }
    let cgroup_id = current_cgroup_id();
    if !is_target(tgid, cgroup_id) {
        return Ok(0);
    }
    count(SampleStat::Taken);

    let user_stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(e) if e as i64 == -EFAULT => {
            count(SampleStat::UserStackFault);
            e
        }
        Err(e) => {
            count(SampleStat::LostUserStack);
            e
        }
    };
    let kernel_stack_id = match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) if e as i64 == -EFAULT => e,
        Err(e) => {
            count(SampleStat::LostKernelStack);
            e
        }
    };
    let key = SampleKey {
        cgroup_id,
        tgid,
        user_stack_id,
        kernel_stack_id,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if let Some(value) = SAMPLE_COUNTS.get_ptr_mut(key) {
        // SAFETY: the pointer is to a live map value; the add is atomic across CPUs.
        unsafe {
            core::intrinsics::atomic_xadd::<_, _, { core::intrinsics::AtomicOrdering::Relaxed }>(
                value, 1u64,
            )
        };
        return Ok(0);
    }
    if SAMPLE_COUNTS.insert(key, 1, BPF_NOEXIST as u64).is_err() {
        // Either the map is full or another CPU inserted the key first.
        match SAMPLE_COUNTS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(value) => unsafe {
                core::intrinsics::atomic_xadd::<_, _, { core::intrinsics::AtomicOrdering::Relaxed }>(
                    value, 1u64,
                );
            },
            None => count(SampleStat::LostKeyMapFull),
        }
    }
    Ok(0)
}
