//! Audit mode, for a file a run opened: judged by the file the new descriptor refers to, not by
//! the path argument. A second thread can rewrite the path buffer between any read of it here and
//! the kernel's own, so at `sys_exit` the descriptor's `struct file` is taken from the task's
//! file table and its dentry walked up to the root, crossing mount points (the mount point
//! itself is not checked, as Landlock does not check it), collecting the rights of the allowed
//! inodes on the way (`GUARD_FS_ALLOW` inode entries, see `profiler_common::guard_fs`). The
//! dentries met on the way make the path the violation reports. Offsets come from the kernel's BTF
//! (`GUARD_FS_LAYOUT`); without them the path check of `guard_audit` stays in use.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str as read_str,
};
use profiler_common::{
    FS_INODE_KEY_LEN, FS_INTERPRETER, GUARD_PATH_LEN, GuardFsLayout, GuardRun, S_PRIVATE,
    SB_NOUSER, VIOLATION_AUDITED,
};

use crate::{
    guard_audit::first_report_bytes,
    guard_maps::{GUARD_FS_ALLOW, GUARD_FS_SCRATCH, GUARD_OPEN_WALK, OPEN_WALK_NAMES, OpenWalk},
    guard_sys::{Call, FS_FIXED_BITS, record_at},
};

/// Field offsets, written by user space at load time.
#[unsafe(no_mangle)]
static GUARD_FS_LAYOUT: GuardFsLayout = GuardFsLayout::UNSET;

macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a plain u32 of a static, read by value (volatile: a load-time constant).
        unsafe { core::ptr::read_volatile(&raw const GUARD_FS_LAYOUT.$field) } as u64
    };
}

/// Dentries and mount points visited at most; a deeper file is left to the path check.
const MAX_STEPS: u32 = 48;

/// How an opened file was judged.
pub enum Judged {
    /// Allowed, or a file Landlock does not check.
    Allowed,
    /// Some needed right is granted by no ancestor: the rights missing.
    Denied(u32),
    /// Not judged (no layout, a read failed, too deep): the caller falls back.
    Unknown,
}

#[inline(always)]
fn read<T>(base: u64, offset: u64) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: the helper reads kernel memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.ok()
}

/// `(dentry, vfsmount)` of descriptor `fd` of the current task.
#[inline(always)]
fn opened(fd: u64) -> Option<(u64, u64)> {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, offset!(task_files))?;
    let fdt: u64 = read(files, offset!(files_fdt))?;
    let max: u32 = read(fdt, offset!(fdt_max_fds))?;
    if fd >= u64::from(max) {
        return None;
    }
    let array: u64 = read(fdt, offset!(fdt_fd))?;
    let file: u64 = read(array, fd * 8)?;
    Some((
        read(file, offset!(file_dentry))?,
        read(file, offset!(file_mnt))?,
    ))
}

/// Judges the file behind descriptor `fd`, which needs `needed`, for run `cgroup_id`; leaves
/// the dentries whose names make its path in this CPU's `GUARD_OPEN_WALK`. The loop keeps
/// little state in registers (no path offsets, no counts): the verifier walks each step once.
#[inline(always)]
fn judge(cgroup_id: u64, needed: u32, fd: u64) -> Judged {
    // SAFETY: a load-time constant.
    if unsafe { core::ptr::read_volatile(&raw const GUARD_FS_LAYOUT.valid) } == 0 {
        return Judged::Unknown;
    }
    let (Some((mut dentry, vfsmount)), Some(key), Some(walk)) = (
        opened(fd),
        GUARD_FS_SCRATCH.get_ptr_mut(0),
        GUARD_OPEN_WALK.get_ptr_mut(0),
    ) else {
        return Judged::Unknown;
    };
    let mut mount = vfsmount.wrapping_sub(offset!(mount_mnt));
    // Pipes, sockets and the kernel's private inodes: never checked by Landlock.
    let Some(inode) = read::<u64>(dentry, offset!(dentry_inode)) else {
        return Judged::Unknown;
    };
    let sb: u64 = read(inode, offset!(inode_sb)).unwrap_or(0);
    let sb_flags: u64 = read(sb, offset!(sb_flags)).unwrap_or(0);
    let i_flags: u32 = read(inode, offset!(inode_flags)).unwrap_or(0);
    if sb_flags & SB_NOUSER != 0 || i_flags & S_PRIVATE != 0 {
        return Judged::Allowed;
    }
    // SAFETY: this CPU's scratch value, used by this program alone while it runs.
    unsafe {
        (*key).data.cgroup_id = cgroup_id.to_ne_bytes();
        (*key).data.path[0] = 0;
        (*key).prefix_len = FS_FIXED_BITS + 8 * FS_INODE_KEY_LEN as u32;
        (*walk).names = 0;
    }
    let mut granted = 0u32;
    let mut check = true;
    let mut i = 0;
    while i < MAX_STEPS {
        i += 1;
        if check {
            let inode: u64 = read(dentry, offset!(dentry_inode)).unwrap_or(0);
            let ino: u64 = read(inode, offset!(inode_ino)).unwrap_or(0);
            let sb: u64 = read(inode, offset!(inode_sb)).unwrap_or(0);
            let dev: u32 = read(sb, offset!(sb_dev)).unwrap_or(0);
            // SAFETY: as above; the lookup helper reads the key.
            granted |= unsafe {
                let path = &mut (*key).data.path;
                path[1..9].copy_from_slice(&u64::from(dev).to_ne_bytes());
                path[9..17].copy_from_slice(&ino.to_ne_bytes());
                GUARD_FS_ALLOW.get(&*key).copied().unwrap_or(0)
            };
            if needed & !granted == 0 {
                return Judged::Allowed;
            }
        }
        let root: u64 = read(mount, offset!(mount_mnt) + offset!(vfsmount_root)).unwrap_or(0);
        let parent: u64 = read(dentry, offset!(dentry_parent)).unwrap_or(0);
        if dentry == root || parent == dentry || parent == 0 {
            // The root of a mount: on to its mount point, unless it is the root of all.
            let up: u64 = read(mount, offset!(mount_parent)).unwrap_or(0);
            if up == mount || up == 0 {
                return Judged::Denied(needed & !granted);
            }
            dentry = read(mount, offset!(mount_mountpoint)).unwrap_or(0);
            mount = up;
            check = false;
        } else {
            // SAFETY: as above; the index is below the array's length.
            unsafe {
                let names = core::ptr::read_volatile(&raw const (*walk).names);
                if names < OPEN_WALK_NAMES as u64 {
                    (*walk).dentries[names as usize & (OPEN_WALK_NAMES - 1)] = dentry;
                    core::ptr::write_volatile(&raw mut (*walk).names, names + 1);
                }
            }
            dentry = parent;
            check = true;
        }
    }
    Judged::Unknown
}

/// Whether the program the current task now executes (`mm->exe_file`, just set by the exec) is
/// one run `cgroup_id` may execute only as an interpreter (an inode entry with
/// `FS_INTERPRETER`). False without the layout or on any failed read.
#[inline(always)]
pub fn executes_interpreter(cgroup_id: u64) -> bool {
    // SAFETY: a load-time constant.
    if unsafe { core::ptr::read_volatile(&raw const GUARD_FS_LAYOUT.valid) } == 0 {
        return false;
    }
    let Some(key) = GUARD_FS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let inode = read::<u64>(task, offset!(task_mm))
        .and_then(|mm| read::<u64>(mm, offset!(mm_exe_file)))
        .and_then(|file| read::<u64>(file, offset!(file_dentry)))
        .and_then(|dentry| read::<u64>(dentry, offset!(dentry_inode)));
    let Some(inode) = inode else {
        return false;
    };
    let ino: u64 = read(inode, offset!(inode_ino)).unwrap_or(0);
    let sb: u64 = read(inode, offset!(inode_sb)).unwrap_or(0);
    let dev: u32 = read(sb, offset!(sb_dev)).unwrap_or(0);
    // SAFETY: this CPU's scratch value, used by this program alone while it runs; the lookup
    // helper reads the key.
    let granted = unsafe {
        (*key).data.cgroup_id = cgroup_id.to_ne_bytes();
        let path = &mut (*key).data.path;
        path[0] = 0;
        path[1..9].copy_from_slice(&u64::from(dev).to_ne_bytes());
        path[9..17].copy_from_slice(&ino.to_ne_bytes());
        (*key).prefix_len = FS_FIXED_BITS + 8 * FS_INODE_KEY_LEN as u32;
        GUARD_FS_ALLOW.get(&*key).copied().unwrap_or(0)
    };
    granted & FS_INTERPRETER != 0
}

/// Writes the path of the dentries of this CPU's walk (the file's first) into its buffer, from
/// the root down; a path that does not fit keeps its leading part.
#[inline(always)]
fn write_path(walk: *mut OpenWalk) {
    const LAST: usize = GUARD_PATH_LEN - 1;
    // SAFETY: this CPU's scratch value.
    let names = unsafe { core::ptr::read_volatile(&raw const (*walk).names) } as usize;
    let mut at = 0usize;
    let mut j = 0;
    while j < OPEN_WALK_NAMES {
        if j >= names || at >= LAST {
            break;
        }
        let index = (names - 1 - j) & (OPEN_WALK_NAMES - 1);
        // SAFETY: this CPU's scratch value; `at` < `GUARD_PATH_LEN` and every read is at most
        // `GUARD_PATH_LEN` bytes, inside the twice-as-large buffer.
        let dentry = unsafe { (*walk).dentries[index] };
        let name: u64 = read(dentry, offset!(dentry_name)).unwrap_or(0);
        // SAFETY: as above.
        unsafe {
            let at_masked = at & LAST;
            (*walk).path[at_masked] = b'/';
            let n = read_str(
                (*walk).path.as_mut_ptr().add(at_masked + 1).cast(),
                GUARD_PATH_LEN as u32,
                name as *const core::ffi::c_void,
            );
            // The count includes the NUL, which the next '/' overwrites.
            at = at_masked + 1 + if n > 1 { n as usize - 1 } else { 0 };
        }
        j += 1;
    }
    // SAFETY: as above.
    unsafe {
        if at == 0 {
            (*walk).path[0] = b'/';
            at = 1;
        }
        (*walk).path[at.min(LAST) & LAST] = 0;
    }
}

/// Audit mode, `sys_exit` of an open that returned `fd`: records the file when the policy would
/// not have let the run open it for `needed`. `false` when it could not be judged.
#[inline(always)]
pub fn check_opened(
    ctx: *mut core::ffi::c_void,
    run: *mut GuardRun,
    call: &Call,
    fd: i64,
    needed: u32,
) -> bool {
    let denied = match judge(call.cgroup_id, needed, fd as u64) {
        Judged::Allowed => return true,
        Judged::Unknown => return false,
        Judged::Denied(denied) => denied,
    };
    let Some(walk) = GUARD_OPEN_WALK.get_ptr_mut(0) else {
        return false;
    };
    write_path(walk);
    // SAFETY: this CPU's scratch value, its path NUL-terminated by `write_path`.
    let path = unsafe { &(*walk).path };
    if first_report_bytes(call.cgroup_id, path, denied) {
        record_at(
            ctx,
            run,
            call,
            VIOLATION_AUDITED,
            fd,
            denied,
            None,
            path.as_ptr(),
        );
    }
    true
}
