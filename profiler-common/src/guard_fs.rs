//! How audit mode judges a file a run opened by the file itself rather than by the path the
//! call was given (which another thread may rewrite between the check and the kernel's own
//! read of it): at `sys_exit` the kernel side takes the new descriptor's `struct file` and
//! walks its dentry up to the root, crossing mounts, the way Landlock does, collecting the
//! rights of every allowed inode on the way ([`GuardFsKey`] entries keyed by device and inode,
//! see [`fs_inode_key`]). The field offsets come from the kernel's BTF at load time.

use crate::{GUARD_FS_PATH_LEN, GuardFsKey};

/// Name of the load-time global holding the [`GuardFsLayout`].
pub const GLOBAL_GUARD_FS_LAYOUT: &str = "GUARD_FS_LAYOUT";

/// Bytes of a [`GuardFsKey`] path that an inode entry uses: a NUL (no path starts with one),
/// the device (the kernel's `dev_t` encoding, `major << 20 | minor`, as a `u64`) and the inode
/// number, native byte order.
pub const FS_INODE_KEY_LEN: usize = 17;

/// `SB_NOUSER`: a pseudo filesystem (pipes, sockets, anonymous inodes) Landlock never checks.
pub const SB_NOUSER: u64 = 1 << 31;
/// `S_PRIVATE`: an inode the kernel keeps for itself, which Landlock never checks either.
pub const S_PRIVATE: u32 = 1 << 9;

/// Byte offsets of the fields the walk reads; all zero ([`GuardFsLayout::UNSET`], `valid` 0)
/// when the kernel's BTF lacks one of them, and the path check alone is used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardFsLayout {
    /// 1 once user space found every offset.
    pub valid: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds` (u32).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `file.f_path.mnt`.
    pub file_mnt: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_name.len` (u32).
    pub dentry_name_len: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    /// `dentry.d_inode`.
    pub dentry_inode: u32,
    /// `inode.i_ino` (unsigned long).
    pub inode_ino: u32,
    /// `inode.i_flags` (u32).
    pub inode_flags: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev` (u32).
    pub sb_dev: u32,
    /// `super_block.s_flags` (unsigned long).
    pub sb_flags: u32,
    /// `mount.mnt`: where the `struct vfsmount` a file points to sits in its `struct mount`.
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`: the program a task executes, set before `sched_process_exec`.
    pub mm_exe_file: u32,
}
const _: () = assert!(size_of::<GuardFsLayout>() == 88);

impl GuardFsLayout {
    /// Not found: the kernel side falls back to the path read at `sys_enter`.
    pub const UNSET: Self = Self {
        valid: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_dentry: 0,
        file_mnt: 0,
        dentry_parent: 0,
        dentry_name_len: 0,
        dentry_name: 0,
        dentry_inode: 0,
        inode_ino: 0,
        inode_flags: 0,
        inode_sb: 0,
        sb_dev: 0,
        sb_flags: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        vfsmount_root: 0,
        task_mm: 0,
        mm_exe_file: 0,
    };
}

/// The [`GuardFsKey`] path bytes of an inode entry: see [`FS_INODE_KEY_LEN`].
pub fn fs_inode_key(cgroup_id: u64, dev: u64, ino: u64) -> GuardFsKey {
    let mut key = GuardFsKey {
        cgroup_id: cgroup_id.to_ne_bytes(),
        path: [0; GUARD_FS_PATH_LEN],
    };
    let (dev_bytes, ino_bytes) = (dev.to_ne_bytes(), ino.to_ne_bytes());
    let mut i = 0;
    while i < 8 {
        key.path[1 + i] = dev_bytes[i];
        key.path[9 + i] = ino_bytes[i];
        i += 1;
    }
    key
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], every field a u32, size asserted above.
    unsafe impl aya::Pod for super::GuardFsLayout {}
}
