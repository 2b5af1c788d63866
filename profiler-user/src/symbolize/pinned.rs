//! Mapped files kept open from the moment they were mapped, so that a binary deleted or replaced
//! after its process exited is still read from the very inode the process ran.
//!
//! A file is opened through `/proc/PID/map_files/START-END` while the process lives (the exact
//! mapped inode, even when unlinked or mapped inside another mount namespace), else through its
//! path, checked against the inode or build id the kernel reported. If both fail (the process
//! exited and the file was deleted, or the path now names another file), the file is not pinned
//! and symbolization falls back to the path: a deleted file then stays `[unknown]`, a replaced
//! one may resolve against the new contents unless its identity says otherwise.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::events::{FileIdentity, FileKey};

/// How many files [`PinnedFiles::default`] keeps open at most.
pub const DEFAULT_PINNED_FILES: usize = 1024;

/// An LRU of open mapped files, keyed by what the kernel said about them.
#[derive(Debug)]
pub struct PinnedFiles {
    capacity: usize,
    tick: u64,
    files: HashMap<Arc<FileKey>, Pinned>,
    by_age: BTreeMap<u64, Arc<FileKey>>,
    failures: u64,
}

#[derive(Debug)]
struct Pinned {
    file: File,
    tick: u64,
}

impl Default for PinnedFiles {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_PINNED_FILES)
    }
}

impl PinnedFiles {
    /// At most `capacity` open files, and never more than a quarter of `RLIMIT_NOFILE`, so that
    /// pinning cannot starve the rest of the process of descriptors.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.min(nofile_limit() / 4).max(1),
            tick: 0,
            files: HashMap::new(),
            by_age: BTreeMap::new(),
            failures: 0,
        }
    }

    /// Opens the file `key` that process `pid` maps at `start..end`, unless it is open already.
    /// Returns whether the file is pinned afterwards.
    pub fn pin(&mut self, key: &Arc<FileKey>, pid: u32, start: u64, end: u64) -> bool {
        if !key.is_file() {
            return false;
        }
        if self.touch(key) {
            return true;
        }
        match open_mapped_file(key, pid, start, end) {
            Ok(file) => {
                self.insert(Arc::clone(key), file);
                true
            }
            Err(_) => {
                self.failures += 1;
                false
            }
        }
    }

    /// A path that opens the pinned file (`/proc/self/fd/N`), when `key` is pinned.
    pub fn fd_path(&self, key: &FileKey) -> Option<PathBuf> {
        self.files.get(key).map(|p| fd_path(&p.file))
    }

    /// The pinned file `key`, when pinned.
    pub fn file(&self, key: &FileKey) -> Option<&File> {
        self.files.get(key).map(|p| &p.file)
    }

    /// Takes over `other`'s files; where both hold the same key, the one already here stays.
    pub fn absorb(&mut self, other: PinnedFiles) {
        self.failures += other.failures;
        let mut incoming: Vec<_> = other.files.into_iter().collect();
        // Oldest first, so that the LRU order of `other` survives the move.
        incoming.sort_by_key(|(_, pinned)| pinned.tick);
        for (key, pinned) in incoming {
            if !self.touch(&key) {
                self.insert(key, pinned.file);
            }
        }
    }

    /// Files kept open at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Files open now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Files that could be opened neither through `map_files` nor through their path.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn touch(&mut self, key: &FileKey) -> bool {
        let Some(pinned) = self.files.get_mut(key) else {
            return false;
        };
        self.tick += 1;
        if let Some(k) = self.by_age.remove(&pinned.tick) {
            self.by_age.insert(self.tick, k);
        }
        pinned.tick = self.tick;
        true
    }

    fn insert(&mut self, key: Arc<FileKey>, file: File) {
        while self.files.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.files.remove(&oldest);
        }
        self.tick += 1;
        self.by_age.insert(self.tick, Arc::clone(&key));
        self.files.insert(
            key,
            Pinned {
                file,
                tick: self.tick,
            },
        );
    }
}

/// `/proc/self/fd/N` for an open file: opening it reaches the same inode, even when unlinked.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens the file a live process maps at `start..end`, or else `key`'s path if it still names
/// the same file.
fn open_mapped_file(key: &FileKey, pid: u32, start: u64, end: u64) -> io::Result<File> {
    if let Ok(file) = File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}")) {
        return Ok(file);
    }
    let file = File::open(key.live_path())?;
    if same_file(&file, &key.identity)? {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the path names another file now",
        ))
    }
}

/// Whether `file` is the one the kernel described. Only the inode number is compared: btrfs and
/// overlayfs report a different device in `stat` than in `/proc/PID/maps` and perf records.
fn same_file(file: &File, identity: &FileIdentity) -> io::Result<bool> {
    Ok(match identity {
        FileIdentity::Inode { ino, .. } => file.metadata()?.ino() == *ino,
        FileIdentity::BuildId(expected) if !expected.is_empty() => {
            match blazesym::helper::read_elf_build_id(&fd_path(file)) {
                Ok(Some(actual)) => actual.as_ref() == expected.as_slice(),
                Ok(None) | Err(_) => false,
            }
        }
        FileIdentity::BuildId(_) | FileIdentity::Unknown => true,
    })
}

fn nofile_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

/// Whether `path` still names the inode `file` has open, so that the friendlier original path
/// (and its directory, where blazesym looks for debug links) can be used instead of the fd.
pub fn path_matches(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn key_for(path: &Path) -> Arc<FileKey> {
        let ino = std::fs::metadata(path).unwrap().ino();
        Arc::new(FileKey {
            path: path.to_owned(),
            identity: FileIdentity::Inode { dev: 0, ino },
        })
    }

    #[test]
    fn keeps_a_deleted_file_readable_through_its_fd_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("solution");
        File::create(&path).unwrap().write_all(b"contents").unwrap();
        let key = key_for(&path);
        let mut pinned = PinnedFiles::with_capacity(4);
        // No process maps it: the path is used and checked against the inode.
        assert!(pinned.pin(&key, u32::MAX, 0, 1));
        std::fs::remove_file(&path).unwrap();
        let reopened = std::fs::read(pinned.fd_path(&key).unwrap()).unwrap();
        assert_eq!(reopened, b"contents");
    }

    #[test]
    fn refuses_a_path_that_now_names_another_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("solution");
        std::fs::write(&path, b"old").unwrap();
        let key = key_for(&path);
        // The old inode stays alive under another name, so the new file cannot reuse its number.
        std::fs::hard_link(&path, dir.path().join("kept")).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        let mut pinned = PinnedFiles::with_capacity(4);
        assert!(!pinned.pin(&key, u32::MAX, 0, 1));
        assert_eq!(pinned.failures(), 1);
        assert!(pinned.is_empty());
    }

    #[test]
    fn evicts_the_least_recently_pinned_file_at_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("lib{i}.so"));
                std::fs::write(&path, b"elf").unwrap();
                key_for(&path)
            })
            .collect();
        let mut pinned = PinnedFiles::with_capacity(2);
        assert!(pinned.pin(&keys[0], u32::MAX, 0, 1));
        assert!(pinned.pin(&keys[1], u32::MAX, 0, 1));
        // Mapping lib0 again makes lib1 the oldest.
        assert!(pinned.pin(&keys[0], u32::MAX, 0, 1));
        assert!(pinned.pin(&keys[2], u32::MAX, 0, 1));
        assert_eq!(pinned.len(), 2);
        assert!(pinned.file(&keys[0]).is_some());
        assert!(pinned.file(&keys[1]).is_none());
        assert!(pinned.file(&keys[2]).is_some());
    }
}
