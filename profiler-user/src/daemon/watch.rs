//! inotify on the sandbox globs' parent directories (a new cgroup is guarded at once, not at
//! the next poll) and on each guarded sandbox's `cgroup.events`, `memory.events` and
//! `pids.events` (read while they exist, for the verdict derived when the cgroup goes). A
//! thread blocks on the inotify descriptor and wakes the node thread with the watch
//! descriptors that fired; the node's periodic scan stays as the fallback.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{Arc, mpsc},
};

/// A watch, as `inotify_add_watch` numbers it.
pub type WatchId = i32;

/// Child directories created, removed or moved in.
pub const DIR_CHANGES: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO;
/// A file written (kernfs notifies value changes of `*.events` this way).
pub const FILE_CHANGES: u32 = libc::IN_MODIFY;

/// The inotify instance; the reading thread holds it too.
#[derive(Debug, Clone)]
pub struct Watcher {
    fd: Arc<OwnedFd>,
}

impl Watcher {
    /// Creates the instance and starts the thread that sends the ids of fired watches through
    /// `wake` (it ends when `wake`'s receiver is gone and another event arrives).
    pub fn start<T: Send + 'static>(
        wake: mpsc::Sender<T>,
        message: fn(Vec<WatchId>) -> T,
    ) -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let reader = Arc::clone(&fd);
        std::thread::Builder::new()
            .name("flamewarden-watch".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    // SAFETY: reads into a buffer of the length given, owned by this thread.
                    let n = unsafe {
                        libc::read(reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n <= 0 {
                        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                        {
                            continue;
                        }
                        return;
                    }
                    let ids = parse_events(&buf[..n as usize]);
                    if wake.send(message(ids)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self { fd })
    }

    /// Watches `path` for `mask`.
    pub fn watch(&self, path: &Path, mask: u32) -> io::Result<WatchId> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is NUL-terminated and lives during the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stops watch `id` (gone already is fine: a removed file ends its watch).
    pub fn unwatch(&self, id: WatchId) {
        // SAFETY: no pointers.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), id) };
    }
}

/// The watch ids of a buffer of `struct inotify_event`s, without repeats.
pub fn parse_events(buf: &[u8]) -> Vec<WatchId> {
    const HEADER: usize = size_of::<libc::inotify_event>();
    let mut ids = Vec::new();
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let wd = i32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default());
        let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap_or_default());
        if !ids.contains(&wd) {
            ids.push(wd);
        }
        at += HEADER + len as usize;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_wakes_the_receiver_with_its_watch() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let watcher = Watcher::start(tx, |ids| ids).unwrap();
        let wd = watcher.watch(dir.path(), DIR_CHANGES).unwrap();
        std::fs::create_dir(dir.path().join("sb-1")).unwrap();
        let ids = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(ids, vec![wd]);
    }
}
