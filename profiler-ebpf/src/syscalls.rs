//! Syscall tracing from the `sys_enter` / `sys_exit` raw tracepoints: per (cgroup, process,
//! syscall) counts, errors, time and a log2 latency histogram in per-CPU maps, and slow calls as
//! ring-buffer events. Raw tracepoints skip the perf trace buffer that classic tracepoints fill,
//! which is most of the per-call cost of tools built on `tracepoint:raw_syscalls:*`.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user_str_bytes,
    },
    programs::{RawTracePointContext, tracing::StackIdContext as _},
};
use profiler_common::{
    InflightSyscall, LATENCY_BUCKETS, PATH_LEN, SlowSyscallEvent, SyscallErrnoKey, SyscallKey,
    SyscallStat, SyscallStats,
};

use crate::{
    maps::{
        STACKS, SYSCALL_CONFIG, SYSCALL_COUNTERS, SYSCALL_ERRNOS, SYSCALL_EVENTS, SYSCALL_INFLIGHT,
        SYSCALL_STATS,
    },
    targets::{current_cgroup_id, is_current_target},
};

/// Largest errno the kernel returns as a negative value.
const MAX_ERRNO: i64 = 4095;

fn count(stat: SyscallStat) {
    if let Some(ptr) = SYSCALL_COUNTERS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *ptr += 1 };
    }
}

/// `exit` and `exit_group` never return: an in-flight entry for them would never be removed.
const NR_EXIT: i64 = 60;
const NR_EXIT_GROUP: i64 = 231;

/// `sys_enter`: stamps the entry time and number of a targeted thread's call.
pub fn try_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_current_target(tgid) {
        return Ok(());
    }
    let nr: i64 = ctx.arg(1);
    if nr == NR_EXIT || nr == NR_EXIT_GROUP {
        return Ok(());
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = pid_tgid as u32;
    // The thread's entry is reused from call to call: an update in place takes no lock and
    // allocates nothing; only a thread's first call inserts.
    if let Some(slot) = SYSCALL_INFLIGHT.get_ptr_mut(tid) {
        // SAFETY: a live map value of this thread; only this thread writes it (entry and exit
        // of its own calls), and LRU eviction of a just-used entry needs 32K busier threads.
        unsafe {
            (*slot).enter_ns = now;
            (*slot).nr = nr as u64;
        }
        return Ok(());
    }
    let inflight = InflightSyscall {
        enter_ns: now,
        nr: nr as u64,
    };
    if SYSCALL_INFLIGHT
        .insert(tid, inflight, BPF_ANY as u64)
        .is_err()
    {
        count(SyscallStat::InflightFull);
    }
    Ok(())
}

/// log2 bucket of a duration: `[2^i, 2^(i+1))` ns, clamped to the last bucket.
#[inline(always)]
fn bucket(ns: u64) -> usize {
    let b = if ns == 0 {
        0
    } else {
        63 - ns.leading_zeros() as usize
    };
    if b >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        b
    }
}

/// `sys_exit`: accounts the call (count, errors, time, histogram, errno) and emits it when slow.
pub fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let slot = SYSCALL_INFLIGHT.get_ptr_mut(tid);
    // SAFETY: a live map value of this thread, copied out at once; only this thread writes it.
    let inflight = slot.map(|slot| unsafe { *slot });
    let Some(inflight) = inflight.filter(|i| i.enter_ns != 0) else {
        // Untargeted, or a call that was already running when tracing began (or whose entry
        // found the in-flight map full): only the latter two are counted.
        if is_current_target(tgid) {
            count(SyscallStat::UnmatchedExit);
        }
        return Ok(());
    };
    if let Some(slot) = slot {
        // SAFETY: as above; a zero entry time marks the call as accounted.
        unsafe { (*slot).enter_ns = 0 };
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.saturating_sub(inflight.enter_ns);
    let ret: i64 = ctx.arg(1);
    let failed = (-MAX_ERRNO..0).contains(&ret);
    let cgroup_id = current_cgroup_id();
    let nr = inflight.nr as u32;
    let key = SyscallKey {
        cgroup_id,
        tgid,
        nr,
    };

    let stats = match SYSCALL_STATS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            let zero = SyscallStats {
                count: 0,
                errors: 0,
                total_ns: 0,
                max_ns: 0,
                hist: [0; LATENCY_BUCKETS],
            };
            let _ = SYSCALL_STATS.insert(key, zero, BPF_NOEXIST as u64);
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(stats) => stats,
                None => {
                    count(SyscallStat::StatsFull);
                    return Ok(());
                }
            }
        }
    };
    // SAFETY: a per-CPU value of this key; only this CPU writes it, and programs do not nest
    // on one CPU for the same tracepoint.
    unsafe {
        (*stats).count += 1;
        (*stats).total_ns += duration;
        if duration > (*stats).max_ns {
            (*stats).max_ns = duration;
        }
        let b = bucket(duration);
        if b < LATENCY_BUCKETS {
            (*stats).hist[b] += 1;
        }
        if failed {
            (*stats).errors += 1;
        }
    }
    if failed {
        let errno_key = SyscallErrnoKey {
            cgroup_id,
            tgid,
            nr,
            errno: (-ret) as u32,
            _pad: 0,
        };
        match SYSCALL_ERRNOS.get_ptr_mut(errno_key) {
            // SAFETY: as above.
            Some(n) => unsafe { *n += 1 },
            None => {
                if SYSCALL_ERRNOS
                    .insert(errno_key, 1, BPF_NOEXIST as u64)
                    .is_err()
                {
                    count(SyscallStat::ErrnoFull);
                }
            }
        }
    }

    if let Some(config) = SYSCALL_CONFIG.get(0)
        && config.slow_threshold_ns != 0
        && duration >= config.slow_threshold_ns
    {
        let capture = config.capture_stacks != 0;
        emit_slow(ctx, &key, tid, now, duration, ret, capture);
    }
    Ok(())
}

/// Syscalls whose first (or second, for *at) argument is a path, by x86_64 number.
#[inline(always)]
fn path_arg(nr: u32) -> Option<usize> {
    match nr {
        // open, stat, lstat, access, execve, truncate, chdir, mkdir, rmdir, creat, unlink,
        // readlink, chmod, chown, lchown
        2 | 4 | 6 | 21 | 59 | 76 | 80 | 83 | 84 | 85 | 87 | 89 | 90 | 92 | 94 => Some(0),
        // openat, mkdirat, fchownat, newfstatat, unlinkat, readlinkat, fchmodat, faccessat,
        // execveat, statx, openat2, faccessat2
        257 | 258 | 260 | 262 | 263 | 267 | 268 | 269 | 322 | 332 | 437 | 439 => Some(1),
        _ => None,
    }
}

#[inline(always)]
fn emit_slow(
    ctx: &RawTracePointContext,
    key: &SyscallKey,
    tid: u32,
    now: u64,
    duration: u64,
    ret: i64,
    capture_stack: bool,
) {
    let Some(mut entry) = SYSCALL_EVENTS.reserve::<SlowSyscallEvent>(0) else {
        count(SyscallStat::EventsLost);
        return;
    };
    let event = entry.as_mut_ptr();
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: `event` points to reserved ring-buffer memory of the right size, written before
    // submit; `regs` is the tracepoint's own pt_regs pointer, read through the helper.
    unsafe {
        (*event).exit_ns = now;
        (*event).duration_ns = duration;
        (*event).cgroup_id = key.cgroup_id;
        (*event).ret = ret;
        (*event).tgid = key.tgid;
        (*event).tid = tid;
        (*event).nr = key.nr;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).args = [
            bpf_probe_read_kernel(&raw const (*regs).rdi).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).rsi).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).rdx).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r10).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r8).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r9).unwrap_or(0),
        ];
        (*event).user_stack_id = if capture_stack {
            match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
                Ok(id) => id,
                Err(e) => e as i64,
            }
        } else {
            -1
        };
        (*event).path_len = 0;
        if let Some(i) = path_arg(key.nr) {
            let ptr = (*event).args[i & 1] as *const u8;
            let dst = &mut (*event).path;
            if let Ok(s) = bpf_probe_read_user_str_bytes(ptr, &mut dst[..PATH_LEN]) {
                (*event).path_len = s.len() as u32 + 1;
            }
        }
    }
    entry.submit(0);
}
