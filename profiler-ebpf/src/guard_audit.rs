//! The guard's audit mode, where nothing is refused: the path calls Landlock would have refused
//! (checked against the run's allowed prefixes as read when the call began, each path reported
//! once per right) and the files executed outside the allowed trees (`sched_process_exec`, with
//! the caller's stack kept from `sys_enter`). In both modes, the same tracepoint kills (reports)
//! an exec of the run's ELF interpreter as the program (see `guard_open::executes_interpreter`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_BUILD_ID, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_stack, bpf_send_signal},
    },
    programs::{RawTracePointContext, TracePointContext},
};
use profiler_common::{
    ExecStack, FS_EXECUTE, FS_INTERPRETER, FS_RELATIVE, GUARD_FS_PATH_LEN, GUARD_PATH_LEN,
    GUARD_STACK_FRAMES, GuardSyscallClass as Class, RUN_AUDIT, RUN_FS_CHECK, TRIP_KILLED,
    VIOLATION_AUDITED, VIOLATION_KILLED,
};

use crate::{
    guard_maps::{
        AuditPath, GUARD_AUDIT_PATHS, GUARD_AUDIT_SCRATCH, GUARD_EXEC_SCRATCH, GUARD_EXEC_STACKS,
        GUARD_FS_ALLOW, GUARD_FS_SCRATCH, GUARD_RUNS, GUARD_SEEN, OPEN_PATH_BUF,
    },
    guard_open,
    guard_sys::{Call, FS_FIXED_BITS, SIGKILL, access_of, arg, class_of, record_at, set_bits},
    targets::current_cgroup_id,
};

/// Keeps the caller's user stack for the exec tracepoint.
#[inline(always)]
pub(crate) fn keep_exec_stack(ctx: &RawTracePointContext) {
    let Some(scratch) = GUARD_EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch, filled by the helper and copied into the map at once.
    unsafe {
        let n = bpf_get_stack(
            ctx.as_ptr(),
            (&raw mut (*scratch).frames).cast(),
            (GUARD_STACK_FRAMES * 32) as u32,
            (BPF_F_USER_STACK | BPF_F_USER_BUILD_ID) as u64,
        );
        (*scratch).bytes = if n > 0 { n as u32 } else { 0 };
        let value: &ExecStack = &*scratch;
        let _ = GUARD_EXEC_STACKS.insert(bpf_get_current_pid_tgid() as u32, value, 0);
    }
}

/// Checks an absolute path argument against the run's allowed trees (audit mode); `0` when the
/// access is allowed or cannot be judged (relative paths resolve beneath the work directory).
#[inline(always)]
pub(crate) fn fs_would_deny(call: &Call, args: &[u64; 6]) -> u32 {
    let (denied, len) = fs_check(call, args);
    let Some(key) = GUARD_FS_SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch, filled by `fs_check`.
    if denied != 0 && first_report(call.cgroup_id, unsafe { &(*key).data.path }, len, denied) {
        denied
    } else {
        0
    }
}

/// The rights a path call needs and its run does not grant, with the path left in this CPU's
/// `GUARD_FS_SCRATCH` and its length; `FS_RELATIVE` for a relative path (user space judges
/// it); `(0, 0)` when it cannot be read.
#[inline(always)]
fn fs_check(call: &Call, args: &[u64; 6]) -> (u32, usize) {
    let path_arg = Class::path_arg(call.class);
    if path_arg == Class::NO_ARG {
        return (0, 0);
    }
    let needed = access_of(call.class, args);
    if needed == 0 {
        return (0, 0);
    }
    let Some(key) = GUARD_FS_SCRATCH.get_ptr_mut(0) else {
        return (0, 0);
    };
    let ptr = arg(args, path_arg) as *const u8;
    // SAFETY: `key` is this CPU's scratch value; the path is read from user memory by the
    // helper into the key's byte array.
    let len = unsafe {
        (*key).data.cgroup_id = call.cgroup_id.to_ne_bytes();
        let dst = &mut (*key).data.path;
        match bpf_probe_read_user_str_bytes(ptr, &mut dst[..GUARD_FS_PATH_LEN]) {
            Ok(s) => s.len(),
            Err(_) => return (0, 0),
        }
    };
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: as above.
    if unsafe { (*key).data.path[0] } != b'/' {
        // Relative: resolved beneath the working directory, possibly through a symlink the
        // program made there; user space resolves it after the run and keeps it only when
        // it leads outside the allowed trees.
        return (needed | FS_RELATIVE, len);
    }
    // The NUL is part of the key: `/usr/lib\0` matches the directory's own entry.
    let bits = FS_FIXED_BITS + 8 * (len as u32 + 1);
    // SAFETY: as above.
    unsafe { (*key).prefix_len = bits };
    // SAFETY: the key is a live map value read by the lookup helper.
    let allowed = GUARD_FS_ALLOW.get(unsafe { &*key }).copied().unwrap_or(0);
    (needed & !allowed, len)
}

/// Keeps the path an audit-mode call would be refused for, as read now, for its `sys_exit`.
#[inline(always)]
pub(crate) fn keep_audit_path(call: &Call, args: &[u64; 6]) {
    let (denied, len) = fs_check(call, args);
    if denied == 0 || denied & FS_RELATIVE != 0 {
        return;
    }
    let (Some(key), Some(kept)) = (
        GUARD_FS_SCRATCH.get_ptr(0),
        GUARD_AUDIT_SCRATCH.get_ptr_mut(0),
    ) else {
        return;
    };
    // SAFETY: this CPU's scratch values; the kept one is copied into the map at once.
    unsafe {
        (*kept).access = denied;
        (*kept).len = len as u32;
        (*kept).path = (*key).data.path;
        let value: &AuditPath = &*kept;
        let _ = GUARD_AUDIT_PATHS.insert(bpf_get_current_pid_tgid() as u32, value, 0);
    }
}

/// Whether this run has not reported `path` (its first `len` bytes) for `access` before;
/// remembers it.
#[inline(always)]
pub(crate) fn first_report(
    cgroup_id: u64,
    path: &[u8; GUARD_FS_PATH_LEN],
    len: usize,
    access: u32,
) -> bool {
    let mut hash = path_hash_seed(access);
    let mut i = 0;
    while i < GUARD_FS_PATH_LEN {
        if i >= len {
            break;
        }
        hash = path_hash_step(hash, path[i]);
        i += 1;
    }
    first_hash(cgroup_id, hash)
}

/// [`first_report`] for a NUL-terminated path.
#[inline(always)]
pub(crate) fn first_report_bytes(cgroup_id: u64, buf: &[u8; OPEN_PATH_BUF], access: u32) -> bool {
    let mut hash = path_hash_seed(access);
    let mut i = 0;
    while i < GUARD_PATH_LEN {
        let byte = buf[i];
        if byte == 0 {
            break;
        }
        hash = path_hash_step(hash, byte);
        i += 1;
    }
    first_hash(cgroup_id, hash)
}

/// FNV-1a, seeded with the rights: reading a path and then writing it are two reports.
#[inline(always)]
fn path_hash_seed(access: u32) -> u64 {
    0xcbf2_9ce4_8422_2325 ^ u64::from(access)
}

#[inline(always)]
fn path_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Whether `hash` is new for the run; remembers it.
#[inline(always)]
fn first_hash(cgroup_id: u64, hash: u64) -> bool {
    let key = [cgroup_id, hash];
    // SAFETY: only tests for presence.
    if unsafe { GUARD_SEEN.get(key) }.is_some() {
        return false;
    }
    let _ = GUARD_SEEN.insert(key, 1, 0);
    true
}

/// `sched_process_exec` in audit mode: the file a task of a run executed, as the kernel
/// opened it (a `sys_enter` read of the path argument can fail on a page not yet faulted in,
/// and a successful exec leaves no argument to read at `sys_exit`).
pub fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let cgroup_id = current_cgroup_id();
    let Some(run) = GUARD_RUNS.get_ptr_mut(cgroup_id) else {
        return Ok(());
    };
    // SAFETY: the live map value of this run; configuration is read-only while it runs.
    let flags = unsafe { (*run).flags };
    // SAFETY: a load-time constant.
    let offset = unsafe { core::ptr::read_volatile(&EXEC_FILENAME_OFFSET) } as usize;
    // SAFETY: a `__data_loc` word of the event: (length << 16) | offset of the string.
    let loc: u32 = unsafe { ctx.read_at(offset) }?;
    let name = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    let call = Call {
        cgroup_id,
        nr: NR_EXECVE,
        class: class_of(NR_EXECVE),
        regs: core::ptr::null(),
    };
    // The loader run as the program: it would load any readable file as one. Killed before its
    // first instruction (the exec is past its point of no return).
    if guard_open::executes_interpreter(cgroup_id) {
        let kind = if flags & RUN_AUDIT != 0 {
            VIOLATION_AUDITED
        } else {
            // SAFETY: a helper with an integer argument; it signals the current task.
            unsafe { bpf_send_signal(SIGKILL) };
            // SAFETY: the live map value of this run.
            set_bits(unsafe { &raw mut (*run).tripped }, TRIP_KILLED);
            VIOLATION_KILLED
        };
        let access = FS_EXECUTE | FS_INTERPRETER;
        record_at(ctx.as_ptr(), run, &call, kind, 0, access, None, name);
        return Ok(());
    }
    if flags & RUN_FS_CHECK == 0 {
        return Ok(());
    }
    let Some(key) = GUARD_FS_SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's scratch; the name is a kernel string inside the event.
    let len = unsafe {
        (*key).data.cgroup_id = cgroup_id.to_ne_bytes();
        let dst = &mut (*key).data.path;
        match aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(
            name,
            &mut dst[..GUARD_FS_PATH_LEN],
        ) {
            Ok(s) => s.len(),
            Err(_) => return Ok(()),
        }
    };
    // SAFETY: as above.
    if len == 0 || unsafe { (*key).data.path[0] } != b'/' {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { (*key).prefix_len = FS_FIXED_BITS + 8 * (len as u32 + 1) };
    // SAFETY: the key is a live map value read by the lookup helper.
    let allowed = GUARD_FS_ALLOW.get(unsafe { &*key }).copied().unwrap_or(0);
    // SAFETY: as above.
    let path = unsafe { &(*key).data.path };
    if allowed & FS_EXECUTE != 0 || !first_report(cgroup_id, path, len, FS_EXECUTE) {
        return Ok(());
    }
    record_at(
        ctx.as_ptr(),
        run,
        &call,
        VIOLATION_AUDITED,
        0,
        FS_EXECUTE,
        None,
        name,
    );
    Ok(())
}

const NR_EXECVE: u32 = 59;

/// Offset of `filename` (a `__data_loc` word) in `sched_process_exec`, from tracefs at load.
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFFSET: u32 = 8;
