//! The vDSO as a file: every 64-bit process of this kernel maps the same image, so flamewarden's
//! own copy symbolizes `clock_gettime` & co. in any process, alive or not.

use std::{
    fs::File,
    io::Write as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
};

use super::pinned::fd_path;

/// A copy of this process's vDSO in a memfd.
#[derive(Debug)]
pub(super) struct VdsoImage {
    file: File,
}

impl VdsoImage {
    /// Copies the vDSO; `None` when the kernel maps none or the copy fails (vDSO frames then stay
    /// `[unknown] [vdso]+0x…`).
    pub(super) fn load() -> Option<Self> {
        // SAFETY: getauxval has no preconditions.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        if base == 0 {
            return None;
        }
        let len = own_vdso_len(base)?;
        // SAFETY: `base..base+len` is this process's vDSO mapping, as /proc/self/maps says; it is
        // readable and never unmapped while the process runs.
        let image = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
        // SAFETY: the name is NUL-terminated; the flags are valid for memfd_create.
        let fd = unsafe { libc::memfd_create(c"flamewarden-vdso".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(image).ok()?;
        Some(Self { file })
    }

    /// A path that opens the copy.
    pub(super) fn path(&self) -> PathBuf {
        fd_path(&self.file)
    }
}

fn own_vdso_len(base: u64) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter(|l| l.ends_with("[vdso]"))
        .find_map(|line| {
            let (start, rest) = line.split_once('-')?;
            let end = rest.split_once(' ')?.0;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            (start == base)
                .then(|| usize::try_from(end - start).ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_vdso_elf_image() {
        let Some(vdso) = VdsoImage::load() else {
            println!("skipping test - this kernel maps no vDSO");
            return;
        };
        let bytes = std::fs::read(vdso.path()).unwrap();
        assert!(bytes.starts_with(b"\x7fELF"));
    }
}
