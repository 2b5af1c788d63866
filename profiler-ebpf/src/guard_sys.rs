//! The guard's syscall layer: the `sys_enter` / `sys_exit` raw tracepoints look up the calling
//! task's sandbox run by cgroup id (one hash lookup for every other task) and
//! - at entry, kill the process on a `kill` rule with `bpf_send_signal(SIGKILL)`, and in audit
//!   mode report what seccomp or Landlock would have refused;
//! - at exit, record calls that Landlock, seccomp or a cgroup hook refused, kill on a `kill` rule
//!   whose call seccomp skipped (seccomp runs before `sys_enter`, so only `sys_exit` sees it),
//!   count forks against the fork-rate limit and note forks refused at the task limit.
//!
//! Each violation is recorded with its arguments, path and build-id user stack in the run's own
//! slots of `GUARD_VIOLATIONS`.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_BUILD_ID, BPF_F_USER_STACK, BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_stack, bpf_send_signal},
    },
    programs::RawTracePointContext,
};
use profiler_common::{
    ARG_ANY_BITS, ARG_EQUALS, FS_EXECUTE, FS_READ, FS_WRITE, GUARD_ACTION_AUDITED, GUARD_ARG_RULES,
    GUARD_PATH_LEN, GUARD_STACK_FRAMES, GUARD_SYSCALLS, GUARD_VIOLATION_SLOTS, GuardNetPending,
    GuardRun, GuardSyscallClass as Class, GuardViolationKey, RUN_AUDIT, RUN_FS_CHECK,
    RUN_SCOPE_SIGNALS, TRIP_KILLED, TRIP_TASKS, VIOLATION_AUDITED, VIOLATION_DENIED,
    VIOLATION_KILLED, VIOLATION_TASKS, bitmap_has,
};

use crate::{
    guard_audit::{first_report, fs_would_deny, keep_audit_path, keep_exec_stack},
    guard_maps::{
        GUARD_AUDIT_PATHS, GUARD_EXEC_STACKS, GUARD_NET_PENDING, GUARD_RUN_PIDS, GUARD_RUNS,
        GUARD_SCRATCH, GUARD_SYSCALL_CLASS, GUARD_VIOLATIONS,
    },
    guard_open,
    guard_tasks::{NR_KILL, count_fork, creates_thread, signal_of, signals_outside},
    targets::current_cgroup_id,
};

pub(crate) const SIGKILL: u32 = 9;
const EPERM: i64 = 1;
const EAGAIN: i64 = 11;
const EACCES: i64 = 13;
const EEXIST: i32 = 17;
const MAX_ERRNO: i64 = 4095;
const O_ACCMODE: u64 = 3;
const O_WRONLY: u64 = 1;
const O_RDWR: u64 = 2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_PATH: u64 = 0o10000000;
/// Bits of the fixed part (cgroup id) of a `GuardFsKey`.
pub(crate) const FS_FIXED_BITS: u32 = 64;

/// A call under decision.
pub struct Call {
    /// The caller's cgroup id (its run's key).
    pub cgroup_id: u64,
    /// Syscall number.
    pub nr: u32,
    /// Its class word.
    pub class: u32,
    /// Saved user registers; null outside a syscall.
    pub regs: *const pt_regs,
}

/// The syscall arguments from the saved registers (zeros without them).
#[inline(always)]
pub(crate) fn args(regs: *const pt_regs) -> [u64; 6] {
    if regs.is_null() {
        return [0; 6];
    }
    // SAFETY: `regs` is the tracepoint's pt_regs pointer, read through the helper.
    unsafe {
        [
            bpf_probe_read_kernel(&raw const (*regs).rdi).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).rsi).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).rdx).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r10).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r8).unwrap_or(0),
            bpf_probe_read_kernel(&raw const (*regs).r9).unwrap_or(0),
        ]
    }
}

#[inline(always)]
pub(crate) fn arg(args: &[u64; 6], index: u32) -> u64 {
    match index {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        5 => args[5],
        _ => 0,
    }
}

#[inline(always)]
pub(crate) fn class_of(nr: u32) -> u32 {
    GUARD_SYSCALL_CLASS.get(nr).copied().unwrap_or(Class::NONE)
}

/// The access a path call needs.
#[inline(always)]
pub(crate) fn access_of(class: u32, args: &[u64; 6]) -> u32 {
    match Class::kind(class) {
        Class::EXEC => FS_EXECUTE,
        Class::WRITE => FS_WRITE,
        Class::READ => FS_READ,
        Class::OPEN => {
            let flags_arg = Class::flags_arg(class);
            if flags_arg == Class::NO_ARG {
                // creat
                return FS_WRITE;
            }
            let flags = arg(args, flags_arg);
            let mode = flags & O_ACCMODE;
            if mode == O_WRONLY || flags & (O_CREAT | O_TRUNC) != 0 {
                if mode == O_RDWR {
                    FS_READ | FS_WRITE
                } else {
                    FS_WRITE
                }
            } else if mode == O_RDWR {
                FS_READ | FS_WRITE
            } else {
                FS_READ
            }
        }
        _ => 0,
    }
}

/// Whether a conditional deny rule of `nr` holds for `args`: every check of one group.
#[inline(always)]
fn arg_rules_hold(run: &GuardRun, nr: u32, args: &[u64; 6]) -> bool {
    let mut seen = 0u64;
    let mut failed = 0u64;
    let mut i = 0;
    while i < GUARD_ARG_RULES {
        let rule = &run.arg_rules[i];
        if rule.nr == nr {
            let group = 1u64 << (rule.group & 63);
            seen |= group;
            let mut value = arg(args, rule.arg as u32);
            if rule.dword != 0 {
                value &= 0xffff_ffff;
            }
            let masked = value & rule.mask;
            let holds = match rule.op {
                ARG_ANY_BITS => masked != 0,
                ARG_EQUALS => masked == rule.value,
                _ => masked != rule.value,
            };
            if !holds {
                failed |= group;
            }
        }
        i += 1;
    }
    seen & !failed != 0
}

pub(crate) const NR_CLONE3: u32 = 435;
/// `CLONE_NEW*` flags of `clone3` (`CLONE_NEWTIME` included, which only `clone3` takes).
const CLONE_NEW_MASK: u64 = 0x7e02_0080;

/// Whether seccomp refuses (or in audit mode would refuse) this call. A refused `clone3`
/// counts only with namespace flags: policies answer every `clone3` `ENOSYS` so that the C
/// library falls back to `clone`, whose flags seccomp can see, and a thread is no violation.
#[inline(always)]
fn seccomp_denies(run: &GuardRun, nr: u32, args: &[u64; 6]) -> bool {
    let denied = bitmap_has(&run.deny, nr)
        || (bitmap_has(&run.deny_if, nr) && arg_rules_hold(run, nr, args));
    if denied && nr == NR_CLONE3 {
        // SAFETY: reads the first field (flags) of the caller's `struct clone_args`.
        let flags: u64 =
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(args[0] as *const u64) }.unwrap_or(0);
        return flags & CLONE_NEW_MASK != 0;
    }
    denied
}

/// Adds to a `u32` of a live map value atomically. (The old value is not returned: a fetching
/// add needs BPF CPU v3, and the object is built for the generic CPU.)
#[inline(always)]
pub(crate) fn add(ptr: *mut u32, n: u32) {
    // SAFETY: the caller passes a pointer into a live map value; the add is atomic.
    unsafe {
        core::intrinsics::atomic_xadd::<_, _, { core::intrinsics::AtomicOrdering::Relaxed }>(
            ptr, n,
        );
    }
}

/// Sets bits of a `u32` of a live map value. Not atomic across CPUs: a lost bit is set again by
/// the next event of the same kind.
#[inline(always)]
pub(crate) fn set_bits(ptr: *mut u32, bits: u32) {
    // SAFETY: the caller passes a pointer into a live map value.
    unsafe { *ptr |= bits };
}

/// Records a violation in the run's next slot; only counts it once the slots are used up.
#[inline(always)]
pub(crate) fn record(
    ctx: &RawTracePointContext,
    run: *mut GuardRun,
    call: &Call,
    kind: u32,
    ret: i64,
    access: u32,
    net: Option<&GuardNetPending>,
) {
    record_at(
        ctx.as_ptr(),
        run,
        call,
        kind,
        ret,
        access,
        net,
        core::ptr::null(),
    );
}

/// [`record`] from any program: `ctx` for the stack walk, and `kernel_path` (a kernel string,
/// e.g. an exec's file name) instead of the call's path argument when not null.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one violation record"
)]
#[inline(always)]
pub fn record_at(
    ctx: *mut core::ffi::c_void,
    run: *mut GuardRun,
    call: &Call,
    kind: u32,
    ret: i64,
    access: u32,
    net: Option<&GuardNetPending>,
    kernel_path: *const u8,
) {
    // SAFETY: `run` points to the live map value of this run.
    let seen = unsafe { (*run).violations };
    // SAFETY: as above.
    add(unsafe { &raw mut (*run).violations }, 1);
    if seen >= GUARD_VIOLATION_SLOTS {
        return;
    }
    let Some(v) = GUARD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let args = args(call.regs);
    // SAFETY: `v` is this CPU's scratch value, written here and copied into the map before the
    // program ends; programs do not nest on one CPU for these tracepoints.
    unsafe {
        (*v).ktime_ns = bpf_ktime_get_ns();
        (*v).pid = pid_tgid as u32;
        (*v).tgid = (pid_tgid >> 32) as u32;
        (*v).kind = kind;
        (*v).nr = call.nr;
        (*v).ret = ret;
        (*v).args = args;
        (*v).class = call.class;
        (*v).access = access;
        (*v).net = match net {
            Some(net) => *net,
            None => GuardNetPending::default(),
        };
        (*v).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*v).path_len = 0;
        let path_arg = Class::path_arg(call.class);
        if !kernel_path.is_null() {
            let dst = &mut (*v).path;
            if let Ok(s) = aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(
                kernel_path,
                &mut dst[..GUARD_PATH_LEN],
            ) {
                (*v).path_len = s.len() as u32 + 1;
            }
        } else if path_arg != Class::NO_ARG {
            let ptr = arg(&args, path_arg) as *const u8;
            let dst = &mut (*v).path;
            if Class::kind(call.class) == Class::NET {
                // A socket address: raw bytes, at most a `sockaddr_un`.
                if bpf_probe_read_user_buf(ptr, &mut dst[..112]).is_ok() {
                    (*v).path_len = 112;
                }
            } else if let Ok(s) = bpf_probe_read_user_str_bytes(ptr, &mut dst[..GUARD_PATH_LEN]) {
                (*v).path_len = s.len() as u32 + 1;
            }
        }
        let tid = pid_tgid as u32;
        let kept = if kernel_path.is_null() {
            None
        } else {
            GUARD_EXEC_STACKS.get_ptr(tid)
        };
        if let Some(kept) = kept {
            // An exec: the caller's stack, taken at `sys_enter`.
            (*v).stack = (*kept).frames;
            (*v).stack_bytes = (*kept).bytes;
            let _ = GUARD_EXEC_STACKS.remove(tid);
        } else {
            let stack_size = (GUARD_STACK_FRAMES * 32) as u32;
            let n = bpf_get_stack(
                ctx,
                (&raw mut (*v).stack).cast(),
                stack_size,
                (BPF_F_USER_STACK | BPF_F_USER_BUILD_ID) as u64,
            );
            (*v).stack_bytes = if n > 0 { n as u32 } else { 0 };
        }
    }
    // SAFETY: `v` is a live map value of the right type; passed by reference, it is far too
    // large to copy onto the BPF stack.
    let value: &profiler_common::GuardViolation = unsafe { &*v };
    // The first free slot from `seen` on: concurrent threads of one run may read the same
    // count, and an insert that must not replace settles who gets which slot.
    let mut slot = seen;
    while slot < GUARD_VIOLATION_SLOTS {
        let key = GuardViolationKey {
            cgroup_id: call.cgroup_id,
            slot,
            _pad: 0,
        };
        match GUARD_VIOLATIONS.insert(key, value, BPF_NOEXIST as u64) {
            Ok(()) => return,
            Err(e) if e == -EEXIST => slot += 1,
            Err(_) => break,
        }
    }
    if slot < GUARD_VIOLATION_SLOTS {
        // SAFETY: as in the first line.
        add(unsafe { &raw mut (*run).lost }, 1);
    }
}

/// `sys_enter`: kill rules, and in audit mode what would have been refused.
pub fn try_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let cgroup_id = current_cgroup_id();
    let Some(run) = GUARD_RUNS.get_ptr_mut(cgroup_id) else {
        return Ok(());
    };
    let nr: i64 = ctx.arg(1);
    if !(0..GUARD_SYSCALLS as i64).contains(&nr) {
        return Ok(());
    }
    let nr = nr as u32;
    let call = Call {
        cgroup_id,
        nr,
        class: class_of(nr),
        regs: ctx.arg(0),
    };
    // SAFETY: the live map value of this run; its configuration part is written only before
    // the run starts.
    let config = unsafe { &*run };
    let audit = config.flags & RUN_AUDIT != 0;
    if bitmap_has(&config.kill, nr) {
        if audit {
            record(ctx, run, &call, VIOLATION_AUDITED, 0, 0, None);
        } else {
            // SAFETY: a helper with an integer argument; it signals the current process.
            unsafe { bpf_send_signal(SIGKILL) };
            // SAFETY: as above.
            set_bits(unsafe { &raw mut (*run).tripped }, TRIP_KILLED);
            record(ctx, run, &call, VIOLATION_KILLED, 0, 0, None);
        }
        return Ok(());
    }
    let scoped = config.flags & RUN_SCOPE_SIGNALS != 0;
    let kind = Class::kind(call.class);
    // The caller's stack, for the exec tracepoint: a violation found there (a file outside the
    // allowed trees in audit mode, the loader run directly in either mode) is reported with it,
    // not with the new program's first frame.
    if kind == Class::EXEC {
        keep_exec_stack(ctx);
    }
    if !audit {
        // `kill(-1, sig)` succeeds once it signalled any process, the run's own included, with
        // those outside refused one by one (`EPERM` each): the exit cannot tell, the entry
        // reports it.
        if nr == NR_KILL && scoped {
            let args = args(call.regs);
            if args[0] as i32 == -1 && args[1] != 0 {
                record(ctx, run, &call, VIOLATION_DENIED, -EPERM, 0, None);
            }
        }
        return Ok(());
    }
    let args = args(call.regs);
    if seccomp_denies(config, nr, &args) {
        record(ctx, run, &call, VIOLATION_AUDITED, 0, 0, None);
        return Ok(());
    }
    if kind == Class::SIGNAL && scoped && signal_of(nr, &args) != 0 && signals_outside(&call, &args)
    {
        record(ctx, run, &call, VIOLATION_AUDITED, 0, 0, None);
        return Ok(());
    }
    // Paths are judged by the call's result (`try_exit`); executed files by the
    // `sched_process_exec` tracepoint (`try_exec`), with the stack kept above.
    if matches!(kind, Class::OPEN | Class::WRITE | Class::READ) && config.flags & RUN_FS_CHECK != 0
    {
        keep_audit_path(&call, &args);
    }
    Ok(())
}

/// `sys_exit`: refused calls, kills of seccomp-skipped calls, forks.
pub fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let cgroup_id = current_cgroup_id();
    let Some(run) = GUARD_RUNS.get_ptr_mut(cgroup_id) else {
        return Ok(());
    };
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: the tracepoint's pt_regs pointer, read through the helper.
    let nr = unsafe { bpf_probe_read_kernel(&raw const (*regs).orig_rax) }.unwrap_or(u64::MAX);
    if nr >= u64::from(GUARD_SYSCALLS) {
        return Ok(());
    }
    let nr = nr as u32;
    let ret: i64 = ctx.arg(1);
    let call = Call {
        cgroup_id,
        nr,
        class: class_of(nr),
        regs,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain data copied out at once; only this thread's hooks write its entry.
    if let Some(pending) = unsafe { GUARD_NET_PENDING.get(tid) }.copied() {
        let _ = GUARD_NET_PENDING.remove(tid);
        if pending.cgroup_id == cgroup_id {
            let kind = if pending.action == GUARD_ACTION_AUDITED {
                VIOLATION_AUDITED
            } else {
                VIOLATION_DENIED
            };
            record(ctx, run, &call, kind, ret, 0, Some(&pending));
            return Ok(());
        }
    }
    // SAFETY: the live map value of this run; configuration is read-only while it runs.
    let config = unsafe { &*run };
    let audit = config.flags & RUN_AUDIT != 0;
    let kind = Class::kind(call.class);
    if kind == Class::FORK {
        if ret > 0 {
            let _ = GUARD_RUN_PIDS.insert(ret as u32, cgroup_id, 0);
            // The fork rate is of processes: a thread pool is no fork bomb (threads still count
            // against the task limit).
            if !creates_thread(nr, regs) {
                count_fork(ctx, run, &call, audit);
            }
        } else if ret == -EAGAIN {
            // The first refused fork is recorded; a fork bomb's thousands more are not news.
            // SAFETY: the live map value of this run; a volatile read sees other CPUs' writes.
            let tripped = unsafe { core::ptr::read_volatile(&raw const (*run).tripped) };
            if tripped & TRIP_TASKS == 0 {
                // SAFETY: as above.
                set_bits(unsafe { &raw mut (*run).tripped }, TRIP_TASKS);
                record(ctx, run, &call, VIOLATION_TASKS, ret, 0, None);
            }
            return Ok(());
        }
    }
    if kind == Class::EXEC {
        // A failed or an unreported exec leaves its kept stack behind.
        let _ = GUARD_EXEC_STACKS.remove(tid);
    }
    if audit {
        // An opened file is judged by the file itself: the path buffer may have changed.
        if kind == Class::OPEN && ret >= 0 && config.flags & RUN_FS_CHECK != 0 {
            let args = args(regs);
            let needed = access_of(call.class, &args);
            let flags_arg = Class::flags_arg(call.class);
            // Landlock does not check `O_PATH` descriptors.
            let o_path = flags_arg != Class::NO_ARG && arg(&args, flags_arg) & O_PATH != 0;
            if needed == 0
                || o_path
                || guard_open::check_opened(ctx.as_ptr(), run, &call, ret, needed)
            {
                let _ = GUARD_AUDIT_PATHS.remove(tid);
                return Ok(());
            }
        }
        // What Landlock would have refused: a path call that reached its file (a call that
        // failed, e.g. ENOENT, would have failed the same way under Landlock).
        let path_call = matches!(kind, Class::OPEN | Class::WRITE | Class::READ);
        let kept = if path_call {
            GUARD_AUDIT_PATHS.get_ptr(tid)
        } else {
            None
        };
        if let Some(kept) = kept {
            // The path as it was when the call began: another thread may have rewritten the
            // buffer since.
            // SAFETY: a live map value of this thread, read before it is removed.
            let (access, len, path) = unsafe { ((*kept).access, (*kept).len, &(*kept).path) };
            if ret >= 0 && first_report(cgroup_id, path, len as usize, access) {
                record_at(
                    ctx.as_ptr(),
                    run,
                    &call,
                    VIOLATION_AUDITED,
                    ret,
                    access,
                    None,
                    path.as_ptr(),
                );
            }
            let _ = GUARD_AUDIT_PATHS.remove(tid);
            return Ok(());
        }
        if path_call && ret >= 0 && config.flags & RUN_FS_CHECK != 0 {
            let args = args(regs);
            let denied = fs_would_deny(&call, &args);
            if denied != 0 {
                record(ctx, run, &call, VIOLATION_AUDITED, ret, denied, None);
            }
        }
        return Ok(());
    }
    if !(-MAX_ERRNO..0).contains(&ret) {
        return Ok(());
    }
    if bitmap_has(&config.kill, nr) {
        // Seccomp refused the call before `sys_enter`: kill now, before it returns.
        // SAFETY: a helper with an integer argument.
        unsafe { bpf_send_signal(SIGKILL) };
        // SAFETY: as above.
        set_bits(unsafe { &raw mut (*run).tripped }, TRIP_KILLED);
        record(ctx, run, &call, VIOLATION_KILLED, ret, 0, None);
        return Ok(());
    }
    let args = args(regs);
    if seccomp_denies(config, nr, &args) {
        record(ctx, run, &call, VIOLATION_DENIED, ret, 0, None);
        return Ok(());
    }
    let landlock = match kind {
        Class::OPEN | Class::EXEC | Class::WRITE | Class::READ => ret == -EACCES,
        Class::SIGNAL => ret == -EPERM,
        Class::NET => ret == -EPERM || ret == -EACCES,
        _ => false,
    };
    if landlock {
        let access = access_of(call.class, &args);
        record(ctx, run, &call, VIOLATION_DENIED, ret, access, None);
    }
    Ok(())
}
