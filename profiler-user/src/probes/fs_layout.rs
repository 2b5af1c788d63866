//! Where the guard's audit mode finds an opened file and walks its dentries (`task_struct`,
//! `files_struct`, `fdtable`, `file`, `dentry`, `inode`, `super_block`, `mount`), from the
//! kernel's BTF like the network tracer's offsets (`net_layout`).

use std::path::Path;

use btf_rs::Btf;
use profiler_common::GuardFsLayout;

use super::{
    ProbeError,
    net_layout::{Layout, VMLINUX_BTF, err},
};

/// Reads [`VMLINUX_BTF`] and finds every offset of [`GuardFsLayout`].
pub fn kernel_fs_layout() -> Result<GuardFsLayout, ProbeError> {
    fs_layout_from(Path::new(VMLINUX_BTF))
}

/// [`kernel_fs_layout`] for the BTF file at `path`.
pub fn fs_layout_from(path: &Path) -> Result<GuardFsLayout, ProbeError> {
    let btf = Btf::from_file(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let layout = Layout { btf: &btf };
    let of = |name: &str, field: &[&str]| -> Result<u32, ProbeError> {
        let s = layout.find_struct(name)?;
        layout.offset(&s, name, field)
    };
    Ok(GuardFsLayout {
        valid: 1,
        task_files: of("task_struct", &["files"])?,
        files_fdt: of("files_struct", &["fdt"])?,
        fdt_max_fds: of("fdtable", &["max_fds"])?,
        fdt_fd: of("fdtable", &["fd"])?,
        file_dentry: of("file", &["f_path", "dentry"])?,
        file_mnt: of("file", &["f_path", "mnt"])?,
        dentry_parent: of("dentry", &["d_parent"])?,
        dentry_name_len: of("dentry", &["d_name", "len"])?,
        dentry_name: of("dentry", &["d_name", "name"])?,
        dentry_inode: of("dentry", &["d_inode"])?,
        inode_ino: of("inode", &["i_ino"])?,
        inode_flags: of("inode", &["i_flags"])?,
        inode_sb: of("inode", &["i_sb"])?,
        sb_dev: of("super_block", &["s_dev"])?,
        sb_flags: of("super_block", &["s_flags"])?,
        mount_mnt: of("mount", &["mnt"])?,
        mount_parent: of("mount", &["mnt_parent"])?,
        mount_mountpoint: of("mount", &["mnt_mountpoint"])?,
        vfsmount_root: of("vfsmount", &["mnt_root"])?,
        task_mm: of("task_struct", &["mm"])?,
        mm_exe_file: of("mm_struct", &["exe_file"])?,
    })
}

/// The kernel's `dev_t` encoding (`major << 20 | minor`) of a device number as `stat` gives it,
/// which is what `super_block.s_dev` holds.
pub fn kernel_dev(dev: u64) -> u64 {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major << 20) | minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_file_walk_fields_in_this_kernels_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping test - no {VMLINUX_BTF}");
            return;
        }
        let layout = kernel_fs_layout().unwrap();
        // `struct path` is { mnt, dentry }; `qstr` puts `len` after `hash` and the name after.
        assert_eq!(layout.file_dentry, layout.file_mnt + 8);
        assert_eq!(layout.dentry_name, layout.dentry_name_len + 4);
        assert_eq!(layout.valid, 1);
    }

    #[test]
    fn device_numbers_take_the_kernels_encoding() {
        // 8:1 (sda1) and 259:65536: the user encoding splits both numbers, the kernel's does not.
        assert_eq!(kernel_dev(0x0801), (8 << 20) | 1);
        let user = (259u64 << 8) | ((65536u64 & !0xff) << 12);
        assert_eq!(kernel_dev(user), (259 << 20) | 65536);
    }
}
