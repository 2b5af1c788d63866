//! The guard's syscall layer, per sandbox run: what the `sys_enter` / `sys_exit` tracepoints
//! kill, report and count for the processes of one cgroup, and the violations they record.
//!
//! A run is one entry of [`MAP_GUARD_RUNS`], keyed by the run's cgroup v2 id: user space writes
//! the configuration part before the command starts; the kernel side updates the state part and
//! records the first [`GUARD_VIOLATION_SLOTS`] violations in [`MAP_GUARD_VIOLATIONS`] under
//! (cgroup id, slot). Runs never share state, so concurrent sandboxes read only their own.

/// Name of the hash of runs, keyed by cgroup id (`u64`), valued by [`GuardRun`].
pub const MAP_GUARD_RUNS: &str = "GUARD_RUNS";
/// Name of the hash of recorded violations, keyed by [`GuardViolationKey`].
pub const MAP_GUARD_VIOLATIONS: &str = "GUARD_VIOLATIONS";
/// Name of the array (one entry per syscall number) of [`GuardSyscallClass`] words.
pub const MAP_GUARD_SYSCALL_CLASS: &str = "GUARD_SYSCALL_CLASS";
/// Name of the LPM trie of allowed path prefixes (audit mode), keyed by [`GuardFsKey`], valued
/// by the `FS_*` access bits allowed beneath.
pub const MAP_GUARD_FS_ALLOW: &str = "GUARD_FS_ALLOW";
/// Name of the LRU hash, by thread id, of the network call a cgroup hook just refused.
pub const MAP_GUARD_NET_PENDING: &str = "GUARD_NET_PENDING";
/// Name of the LRU hash of the processes and threads a run started (id → the run's cgroup id):
/// audit mode tells signals inside the sandbox from signals outside it.
pub const MAP_GUARD_RUN_PIDS: &str = "GUARD_RUN_PIDS";
/// Name of the LRU hash of (cgroup id, path hash) pairs audit mode already reported: a path
/// opened a thousand times is one violation, and the slots stay free for others.
pub const MAP_GUARD_SEEN: &str = "GUARD_SEEN";
/// Name of the hash, by thread id, of the user stack at an `execve` of an audit-mode run,
/// kept for the exec tracepoint (the new image has no trace of its caller).
pub const MAP_GUARD_EXEC_STACKS: &str = "GUARD_EXEC_STACKS";
/// Name of the per-CPU scratch violation the tracepoints fill before inserting it.
pub const MAP_GUARD_SCRATCH: &str = "GUARD_SCRATCH";

/// Capacity of [`MAP_GUARD_RUNS`]: sandboxes running at the same time.
pub const MAX_GUARD_RUNS: u32 = 4096;
/// Violations recorded in full per run; later ones are only counted.
pub const GUARD_VIOLATION_SLOTS: u32 = 16;
/// Capacity of [`MAP_GUARD_VIOLATIONS`].
pub const MAX_GUARD_VIOLATIONS: u32 = 4096;
/// Capacity of [`MAP_GUARD_FS_ALLOW`].
pub const MAX_GUARD_FS_RULES: u32 = 4096;
/// Entries of [`MAP_GUARD_SYSCALL_CLASS`] and bits of the syscall bitmaps.
pub const GUARD_SYSCALLS: u32 = 512;
/// `u64` words of a syscall bitmap.
pub const GUARD_BITMAP_WORDS: usize = (GUARD_SYSCALLS / 64) as usize;
/// Conditional deny checks per run.
pub const GUARD_ARG_RULES: usize = 48;
/// User stack frames recorded per violation.
pub const GUARD_STACK_FRAMES: usize = 32;
/// Bytes of a path argument kept per violation (NUL included).
pub const GUARD_PATH_LEN: usize = 256;
/// Bytes of path in [`GuardFsKey`].
pub const GUARD_FS_PATH_LEN: usize = 240;

/// [`GuardRun::flags`]: report instead of denying or killing.
pub const RUN_AUDIT: u32 = 1;
/// [`GuardRun::flags`]: check absolute path arguments against [`MAP_GUARD_FS_ALLOW`] at entry
/// (audit mode, where no Landlock ruleset refuses them).
pub const RUN_FS_CHECK: u32 = 1 << 1;
/// [`GuardRun::flags`]: signals to processes outside the run are refused (`ipc.signal_outside =
/// false`): the tracepoints report such attempts.
pub const RUN_SCOPE_SIGNALS: u32 = 1 << 2;

/// [`GuardRun::tripped`]: the fork rate went over the limit.
pub const TRIP_FORK_RATE: u32 = 1;
/// [`GuardRun::tripped`]: a `kill` rule fired.
pub const TRIP_KILLED: u32 = 1 << 1;
/// [`GuardRun::tripped`]: a fork failed at the task limit.
pub const TRIP_TASKS: u32 = 1 << 2;

/// [`GuardArgRule::op`]: `(arg & mask) != 0`.
pub const ARG_ANY_BITS: u8 = 0;
/// [`GuardArgRule::op`]: `(arg & mask) == value`.
pub const ARG_EQUALS: u8 = 1;
/// [`GuardArgRule::op`]: `(arg & mask) != value`.
pub const ARG_NOT_EQUALS: u8 = 2;

/// One check of a conditional deny rule: a syscall is denied when every check of one of its
/// groups holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardArgRule {
    /// Syscall number; `u32::MAX` for an unused entry.
    pub nr: u32,
    /// Rule group (0..64): the checks of one group are and-ed.
    pub group: u8,
    /// Argument index (0..6).
    pub arg: u8,
    /// `ARG_*`.
    pub op: u8,
    /// 1 when only the low 32 bits are compared.
    pub dword: u8,
    /// Mask applied to the argument.
    pub mask: u64,
    /// Value compared with.
    pub value: u64,
}
const _: () = assert!(size_of::<GuardArgRule>() == 24);

/// One sandbox run: configuration written by user space, then state the kernel updates.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardRun {
    /// `RUN_*` bits.
    pub flags: u32,
    /// Forks (successful clones) allowed per window; 0 for no limit.
    pub fork_rate_max: u32,
    /// Length of the fork-rate window, ns.
    pub fork_window_ns: u64,
    /// `CLOCK_MONOTONIC` (= `bpf_ktime_get_ns`) when the run started.
    pub start_ns: u64,
    /// Syscalls that kill the process, one bit per number.
    pub kill: [u64; GUARD_BITMAP_WORDS],
    /// Syscalls seccomp refuses unconditionally, one bit per number.
    pub deny: [u64; GUARD_BITMAP_WORDS],
    /// Syscalls seccomp refuses when an [`GuardArgRule`] group holds.
    pub deny_if: [u64; GUARD_BITMAP_WORDS],
    /// The conditional checks.
    pub arg_rules: [GuardArgRule; GUARD_ARG_RULES],
    /// State: start of the current fork-rate window, ns.
    pub fork_window_start_ns: u64,
    /// State: forks in the current window.
    pub fork_count: u32,
    /// State: `TRIP_*` bits.
    pub tripped: u32,
    /// State: violations seen, recorded or not.
    pub violations: u32,
    /// State: violations that fit a slot but could not be inserted.
    pub lost: u32,
}
const _: () = assert!(size_of::<GuardRun>() == 24 + 3 * 64 + GUARD_ARG_RULES * 24 + 24);

impl Default for GuardRun {
    fn default() -> Self {
        Self {
            flags: 0,
            fork_rate_max: 0,
            fork_window_ns: 0,
            start_ns: 0,
            kill: [0; GUARD_BITMAP_WORDS],
            deny: [0; GUARD_BITMAP_WORDS],
            deny_if: [0; GUARD_BITMAP_WORDS],
            arg_rules: [GuardArgRule {
                nr: u32::MAX,
                ..GuardArgRule::default()
            }; GUARD_ARG_RULES],
            fork_window_start_ns: 0,
            fork_count: 0,
            tripped: 0,
            violations: 0,
            lost: 0,
        }
    }
}

/// Sets bit `nr` of a syscall bitmap; numbers beyond [`GUARD_SYSCALLS`] are ignored.
pub fn bitmap_set(bitmap: &mut [u64; GUARD_BITMAP_WORDS], nr: u32) {
    if nr < GUARD_SYSCALLS {
        bitmap[(nr / 64) as usize] |= 1 << (nr % 64);
    }
}

/// Whether bit `nr` of a syscall bitmap is set.
#[inline(always)]
pub fn bitmap_has(bitmap: &[u64; GUARD_BITMAP_WORDS], nr: u32) -> bool {
    let word = (nr / 64) as usize;
    word < GUARD_BITMAP_WORDS && bitmap[word] & (1 << (nr % 64)) != 0
}

/// What a syscall number means to the guard: a `u32` in [`MAP_GUARD_SYSCALL_CLASS`], the kind in
/// the low byte, the path argument's index in bits 8..12 and the flags argument's in 12..16
/// (`0xf`: none).
pub struct GuardSyscallClass;

impl GuardSyscallClass {
    /// Nothing to watch.
    pub const NONE: u32 = 0;
    /// Opens a path; read or write access follows from the flags argument.
    pub const OPEN: u32 = 1;
    /// Executes a path.
    pub const EXEC: u32 = 2;
    /// Creates, removes, renames or changes a path: write access.
    pub const WRITE: u32 = 3;
    /// Signals a process (the first argument).
    pub const SIGNAL: u32 = 4;
    /// Creates a task (fork, vfork, clone, clone3).
    pub const FORK: u32 = 5;
    /// Connects, sends, binds or creates a socket.
    pub const NET: u32 = 6;
    /// Reads a path's contents without opening it for writing (e.g. `readlink`): read access.
    pub const READ: u32 = 7;

    /// No argument index.
    pub const NO_ARG: u32 = 0xf;

    /// Packs a class word.
    pub const fn pack(kind: u32, path_arg: u32, flags_arg: u32) -> u32 {
        kind | (path_arg & 0xf) << 8 | (flags_arg & 0xf) << 12
    }

    /// The kind of a class word.
    #[inline(always)]
    pub const fn kind(word: u32) -> u32 {
        word & 0xff
    }

    /// The path argument of a class word, if any.
    #[inline(always)]
    pub const fn path_arg(word: u32) -> u32 {
        (word >> 8) & 0xf
    }

    /// The flags argument of a class word, if any.
    #[inline(always)]
    pub const fn flags_arg(word: u32) -> u32 {
        (word >> 12) & 0xf
    }
}

/// Access bits of [`MAP_GUARD_FS_ALLOW`] values and of [`GuardViolation::access`].
pub const FS_READ: u32 = 1;
/// See [`FS_READ`].
pub const FS_WRITE: u32 = 1 << 1;
/// See [`FS_READ`].
pub const FS_EXECUTE: u32 = 1 << 2;
/// In [`GuardViolation::access`]: a relative path, judged by user space after resolving it.
pub const FS_RELATIVE: u32 = 1 << 3;
/// In a [`MAP_GUARD_FS_ALLOW`] inode entry: an ELF interpreter (the dynamic loader), which a run
/// may execute only as a program's interpreter: executed directly it would run any readable file
/// as a program (`ld.so ./payload`), past the execute rule. In [`GuardViolation::access`]: such
/// an exec, which the kernel side killed (or, in audit mode, reported).
pub const FS_INTERPRETER: u32 = 1 << 4;

/// The data of a [`MAP_GUARD_FS_ALLOW`] key: a run's cgroup id, then the path bytes. A rule for
/// a directory `/usr/lib` is stored twice: `/usr/lib` with its NUL (the directory itself) and
/// `/usr/lib/` without (everything beneath).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardFsKey {
    /// Cgroup id of the run, native byte order.
    pub cgroup_id: [u8; 8],
    /// The path, NUL-padded.
    pub path: [u8; GUARD_FS_PATH_LEN],
}
const _: () = assert!(size_of::<GuardFsKey>() == 248);

/// What a cgroup hook refused, left for the thread's `sys_exit` to record with its stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardNetPending {
    /// The run's cgroup id.
    pub cgroup_id: u64,
    /// A `GuardHook`.
    pub hook: u32,
    /// `GUARD_RULE_*`.
    pub rule: u32,
    /// `GUARD_ACTION_*`.
    pub action: u32,
    /// Address family.
    pub family: u16,
    /// Port, host byte order.
    pub port: u16,
    /// Socket type.
    pub sock_type: u32,
    /// Protocol.
    pub protocol: u32,
    /// Address, network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<GuardNetPending>() == 48);

/// Key of [`MAP_GUARD_VIOLATIONS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuardViolationKey {
    /// The run's cgroup id.
    pub cgroup_id: u64,
    /// Slot, `0..GUARD_VIOLATION_SLOTS`.
    pub slot: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// [`GuardViolation::kind`]: a syscall failed with a guard's errno (Landlock, seccomp, scope).
pub const VIOLATION_DENIED: u32 = 1;
/// [`GuardViolation::kind`]: a `kill` rule ended the process.
pub const VIOLATION_KILLED: u32 = 2;
/// [`GuardViolation::kind`]: audit mode, the call would have been refused.
pub const VIOLATION_AUDITED: u32 = 3;
/// [`GuardViolation::kind`]: the fork rate tripped.
pub const VIOLATION_FORK_RATE: u32 = 4;
/// [`GuardViolation::kind`]: a fork failed at the task limit.
pub const VIOLATION_TASKS: u32 = 5;

/// `struct bpf_stack_build_id`: a frame as `bpf_get_stack(BPF_F_USER_BUILD_ID)` writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildIdFrame {
    /// 0 empty, 1 valid (build id + file offset), 2 ip only.
    pub status: i32,
    /// The ELF build id.
    pub build_id: [u8; 20],
    /// File offset when `status` is 1, else the instruction pointer.
    pub offset_or_ip: u64,
}
const _: () = assert!(size_of::<BuildIdFrame>() == 32);

/// [`BuildIdFrame::status`]: a build id and file offset.
pub const STACK_BUILD_ID_VALID: i32 = 1;
/// [`BuildIdFrame::status`]: only the instruction pointer.
pub const STACK_BUILD_ID_IP: i32 = 2;

/// A user stack kept from `sys_enter` of an `execve` to `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecStack {
    /// Bytes of `frames` written.
    pub bytes: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The frames, innermost first.
    pub frames: [BuildIdFrame; GUARD_STACK_FRAMES],
}

/// One recorded violation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardViolation {
    /// `bpf_ktime_get_ns` at the call.
    pub ktime_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// `VIOLATION_*`.
    pub kind: u32,
    /// Syscall number.
    pub nr: u32,
    /// The call's return value (0 at entry).
    pub ret: i64,
    /// The call's arguments.
    pub args: [u64; 6],
    /// The syscall's [`GuardSyscallClass`] word.
    pub class: u32,
    /// `FS_*` access the call needed (path calls).
    pub access: u32,
    /// What a cgroup hook refused, when `net.hook` is not 0.
    pub net: GuardNetPending,
    /// Bytes of `path` written (NUL included); 0 for none.
    pub path_len: u32,
    /// Bytes of `stack` written.
    pub stack_bytes: u32,
    /// The path argument.
    pub path: [u8; GUARD_PATH_LEN],
    /// The caller's `comm`.
    pub comm: [u8; crate::TASK_COMM_LEN],
    /// The user stack, innermost first.
    pub stack: [BuildIdFrame; GUARD_STACK_FRAMES],
}
const _: () = assert!(size_of::<GuardViolation>() == 32 + 48 + 8 + 48 + 8 + 256 + 16 + 1024);

#[cfg(feature = "user")]
mod pod {
    use super::{
        BuildIdFrame, GuardArgRule, GuardFsKey, GuardNetPending, GuardRun, GuardViolation,
        GuardViolationKey,
    };

    // SAFETY: #[repr(C)], every field plain data, padding explicit, sizes asserted above.
    unsafe impl aya::Pod for GuardArgRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardRun {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardFsKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardNetPending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardViolationKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BuildIdFrame {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardViolation {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecStack {}
}
