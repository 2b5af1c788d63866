//! The fresh work directory of a run without `--workdir`: a temporary directory, and with the
//! policy's `limits.disk` a tmpfs of that size mounted on it, so that a submission cannot fill
//! the host's disk with files (`RLIMIT_FSIZE` bounds each file, not their number). Its pages are
//! charged to the memory cgroup of the process that writes them: files count against the memory
//! limit as well. Unmounted and removed on drop.
//!
//! The directory is named `flamewarden-run-<pid>-*` after the flamewarden that made it: those
//! of one that was killed are unmounted and removed by the next ([`reap_stale`]).

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

/// A run's fresh work directory.
#[derive(Debug)]
pub(super) struct FreshWorkdir {
    dir: Option<tempfile::TempDir>,
    /// The tmpfs size, when one is mounted.
    tmpfs: Option<u64>,
}

const PREFIX: &str = "flamewarden-run-";

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

impl FreshWorkdir {
    /// Makes the directory and, with `disk_bytes`, mounts a tmpfs of that size on it.
    pub(super) fn create(disk_bytes: Option<u64>) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()?;
        let mut made = Self {
            dir: Some(dir),
            tmpfs: None,
        };
        if let Some(size) = disk_bytes {
            let target = c_path(made.path())?;
            // One inode per 4 KiB of space (at least 1024): files cannot exhaust them first.
            let options = CString::new(format!(
                "size={size},nr_inodes={},mode=0700",
                (size / 4096).max(1024)
            ))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: NUL-terminated strings that outlive the call.
            let mounted = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                )
            };
            if mounted != 0 {
                return Err(io::Error::last_os_error());
            }
            made.tmpfs = Some(size);
        }
        Ok(made)
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }

    /// Whether the tmpfs is full (no block left for an unprivileged writer): the command ran
    /// into `limits.disk`.
    pub(super) fn full(&self) -> bool {
        if self.tmpfs.is_none() {
            return false;
        }
        let Ok(path) = c_path(self.path()) else {
            return false;
        };
        // SAFETY: an all-zero statvfs is a valid out-buffer.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        unsafe { libc::statvfs(path.as_ptr(), &mut st) == 0 && st.f_bavail == 0 }
    }
}

/// Unmounts the tmpfs on `dir` (lazily: a process of the run that is still dying may hold it).
fn unmount(dir: &Path) {
    if let Ok(path) = c_path(dir) {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for FreshWorkdir {
    fn drop(&mut self) {
        if self.tmpfs.is_some() {
            unmount(self.path());
        }
        // Then the (now empty) directory goes with the TempDir.
        drop(self.dir.take());
    }
}

/// Removes the fresh work directories of flamewardens that are gone (killed with their run):
/// `flamewarden-run-<pid>-*` in the temporary directory, for a pid that no longer exists,
/// unmounting their tmpfs first.
pub(super) fn reap_stale() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| super::made_by_a_gone_flamewarden(n, PREFIX))
        {
            continue;
        }
        let dir: PathBuf = entry.path();
        tracing::info!(dir = %dir.display(), "removing a work directory whose flamewarden is gone");
        // Not a mount point (no `limits.disk`): EINVAL, nothing to undo.
        unmount(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
