//! The guard's per-run maps: a sandbox run's syscall-layer entry, its recorded violations and
//! (audit mode) its allowed path prefixes, all keyed by the run's cgroup id in maps pinned with
//! the attachment (see [`super::guard`]).

use std::{
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key},
};
use profiler_common::{
    GUARD_FS_PATH_LEN, GUARD_SYSCALLS, GUARD_VIOLATION_SLOTS, GuardFsKey, GuardRun,
    GuardSyscallClass as Class, GuardViolation, GuardViolationKey, MAP_GUARD_FS_ALLOW,
    MAP_GUARD_RUN_PIDS, MAP_GUARD_RUNS, MAP_GUARD_SYSCALL_CLASS, MAP_GUARD_VIOLATIONS,
};

use super::{
    ProbeError,
    guard::{GuardAttachError, map_error, open_pinned},
};

const NO: u32 = Class::NO_ARG;

/// What each x86_64 syscall number means to the guard: (number, class word).
pub const SYSCALL_CLASSES: [(u32, u32); 42] = [
    // open(path, flags), openat(dirfd, path, flags), creat(path), openat2(dirfd, path, how)
    (2, Class::pack(Class::OPEN, 0, 1)),
    (257, Class::pack(Class::OPEN, 1, 2)),
    (85, Class::pack(Class::OPEN, 0, NO)),
    (437, Class::pack(Class::READ, 1, NO)),
    // execve, execveat
    (59, Class::pack(Class::EXEC, 0, NO)),
    (322, Class::pack(Class::EXEC, 1, NO)),
    // truncate, rename (new), mkdir, rmdir, link (new), unlink, symlink (link path), chmod,
    // chown, lchown, mknod
    (76, Class::pack(Class::WRITE, 0, NO)),
    (82, Class::pack(Class::WRITE, 1, NO)),
    (83, Class::pack(Class::WRITE, 0, NO)),
    (84, Class::pack(Class::WRITE, 0, NO)),
    (86, Class::pack(Class::WRITE, 1, NO)),
    (87, Class::pack(Class::WRITE, 0, NO)),
    (88, Class::pack(Class::WRITE, 1, NO)),
    (90, Class::pack(Class::WRITE, 0, NO)),
    (92, Class::pack(Class::WRITE, 0, NO)),
    (94, Class::pack(Class::WRITE, 0, NO)),
    (133, Class::pack(Class::WRITE, 0, NO)),
    // mkdirat, mknodat, fchownat, unlinkat, renameat (new), linkat (new), symlinkat (link),
    // fchmodat, renameat2 (new), fchmodat2
    (258, Class::pack(Class::WRITE, 1, NO)),
    (259, Class::pack(Class::WRITE, 1, NO)),
    (260, Class::pack(Class::WRITE, 1, NO)),
    (263, Class::pack(Class::WRITE, 1, NO)),
    (264, Class::pack(Class::WRITE, 3, NO)),
    (265, Class::pack(Class::WRITE, 3, NO)),
    (266, Class::pack(Class::WRITE, 2, NO)),
    (268, Class::pack(Class::WRITE, 1, NO)),
    (316, Class::pack(Class::WRITE, 3, NO)),
    (452, Class::pack(Class::WRITE, 1, NO)),
    // kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo
    (62, Class::pack(Class::SIGNAL, NO, NO)),
    (200, Class::pack(Class::SIGNAL, NO, NO)),
    (234, Class::pack(Class::SIGNAL, NO, NO)),
    (129, Class::pack(Class::SIGNAL, NO, NO)),
    (297, Class::pack(Class::SIGNAL, NO, NO)),
    // clone, fork, vfork, clone3
    (56, Class::pack(Class::FORK, NO, NO)),
    (57, Class::pack(Class::FORK, NO, NO)),
    (58, Class::pack(Class::FORK, NO, NO)),
    (435, Class::pack(Class::FORK, NO, NO)),
    // socket, connect (address), sendto (address), sendmsg, bind (address), listen
    (41, Class::pack(Class::NET, NO, NO)),
    (42, Class::pack(Class::NET, 1, NO)),
    (44, Class::pack(Class::NET, 4, NO)),
    (46, Class::pack(Class::NET, NO, NO)),
    (49, Class::pack(Class::NET, 1, NO)),
    (50, Class::pack(Class::NET, NO, NO)),
];

/// Writes [`SYSCALL_CLASSES`] into the freshly loaded object's class array.
pub fn fill_syscall_classes(ebpf: &mut Ebpf) -> Result<(), GuardAttachError> {
    let map_err = |e: MapError| GuardAttachError::Map {
        name: MAP_GUARD_SYSCALL_CLASS,
        source: Box::new(e),
    };
    let map = ebpf
        .map_mut(MAP_GUARD_SYSCALL_CLASS)
        .ok_or(ProbeError::MissingMap(MAP_GUARD_SYSCALL_CLASS))?;
    let mut classes: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err)?;
    for (nr, class) in SYSCALL_CLASSES {
        if nr < GUARD_SYSCALLS {
            classes.set(nr, class, 0).map_err(map_err)?;
        }
    }
    Ok(())
}

/// The run maps of a pinned attachment.
pub struct RunMaps {
    runs: HashMap<MapData, u64, GuardRun>,
    violations: HashMap<MapData, GuardViolationKey, GuardViolation>,
    fs_allow: LpmTrie<MapData, GuardFsKey, u32>,
    pids: HashMap<MapData, u32, u64>,
    pids_fd: OwnedFd,
}

impl RunMaps {
    /// Opens the maps pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self, GuardAttachError> {
        let open = |name| open_pinned(dir, name);
        let pids = open(MAP_GUARD_RUN_PIDS)?;
        Ok(Self {
            runs: HashMap::try_from(Map::HashMap(open(MAP_GUARD_RUNS)?))
                .map_err(map_error(MAP_GUARD_RUNS))?,
            violations: HashMap::try_from(Map::HashMap(open(MAP_GUARD_VIOLATIONS)?))
                .map_err(map_error(MAP_GUARD_VIOLATIONS))?,
            fs_allow: LpmTrie::try_from(Map::LpmTrie(open(MAP_GUARD_FS_ALLOW)?))
                .map_err(map_error(MAP_GUARD_FS_ALLOW))?,
            pids_fd: pids
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| map_error(MAP_GUARD_RUN_PIDS)(MapError::from(e)))?,
            pids: HashMap::try_from(Map::LruHashMap(pids))
                .map_err(map_error(MAP_GUARD_RUN_PIDS))?,
        })
    }

    /// Starts run `id` with `run` (its configuration; state zero) and, for audit mode, its
    /// allowed path prefixes.
    pub fn insert(
        &mut self,
        id: u64,
        run: &GuardRun,
        fs_allow: &[(u32, GuardFsKey, u32)],
    ) -> Result<(), GuardAttachError> {
        for (bits, key, access) in fs_allow {
            self.fs_allow
                .insert(&Key::new(*bits, *key), access, 0)
                .map_err(map_error(MAP_GUARD_FS_ALLOW))?;
        }
        self.runs
            .insert(id, run, 0)
            .map_err(map_error(MAP_GUARD_RUNS))
    }

    /// The pid map's fd: a run's command notes itself there between clone and exec.
    pub fn pids_fd(&self) -> RawFd {
        self.pids_fd.as_raw_fd()
    }

    /// Notes `pid` as a process of run `id`.
    pub fn add_pid(&mut self, pid: u32, id: u64) -> Result<(), GuardAttachError> {
        self.pids
            .insert(pid, id, 0)
            .map_err(map_error(MAP_GUARD_RUN_PIDS))
    }

    /// The run's entry with the kernel's state, if it exists.
    pub fn state(&self, id: u64) -> Option<GuardRun> {
        self.runs.get(&id, 0).ok()
    }

    /// The slots run `id` may have filled: as many as the kernel counted, at most all.
    fn used_slots(&self, id: u64) -> u32 {
        self.state(id)
            .map_or(GUARD_VIOLATION_SLOTS, |run| run.violations)
            .min(GUARD_VIOLATION_SLOTS)
    }

    /// The violations recorded for run `id`, in slot order.
    pub fn violations(&self, id: u64) -> Vec<GuardViolation> {
        (0..self.used_slots(id))
            .filter_map(|slot| {
                let key = GuardViolationKey {
                    cgroup_id: id,
                    slot,
                    _pad: 0,
                };
                self.violations.get(&key, 0).ok()
            })
            .collect()
    }

    /// Removes everything of run `id`; `fs_allow` as given to [`Self::insert`].
    pub fn remove(&mut self, id: u64, fs_allow: &[(u32, GuardFsKey, u32)]) {
        let used = self.used_slots(id);
        let _ = self.runs.remove(&id);
        for slot in 0..used {
            let key = GuardViolationKey {
                cgroup_id: id,
                slot,
                _pad: 0,
            };
            let _ = self.violations.remove(&key);
        }
        for (bits, key, _) in fs_allow {
            let _ = self.fs_allow.remove(&Key::new(*bits, *key));
        }
    }

    /// Removes everything of run `id` without knowing its path entries (a run left behind by
    /// a flamewarden that died): the path trie is searched for its keys.
    pub fn remove_all(&mut self, id: u64) {
        let entries: Vec<(u32, GuardFsKey, u32)> = self
            .fs_allow
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.data().cgroup_id == id.to_ne_bytes())
            .map(|key| (key.prefix_len(), key.data(), 0))
            .collect();
        self.remove(id, &entries);
    }
}

/// The LPM entries for an allowed path: the path itself (with its NUL) and, for a directory,
/// everything beneath it (`path/`). `None` when the path is too long for a key.
pub fn fs_entries(id: u64, path: &Path, is_dir: bool) -> Vec<(u32, GuardFsKey)> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let mut out = Vec::new();
    let mut push = |data: &[u8], with_nul: bool| {
        let len = data.len() + usize::from(with_nul);
        if len > GUARD_FS_PATH_LEN {
            return;
        }
        let mut key = GuardFsKey {
            cgroup_id: id.to_ne_bytes(),
            path: [0; GUARD_FS_PATH_LEN],
        };
        key.path[..data.len()].copy_from_slice(data);
        out.push((64 + 8 * len as u32, key));
    };
    push(bytes, true);
    if is_dir {
        if bytes.ends_with(b"/") {
            push(bytes, false);
        } else {
            let mut beneath = bytes.to_vec();
            beneath.push(b'/');
            push(&beneath, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{SYSCALL_CLASSES, fs_entries};

    #[test]
    fn a_directory_gets_itself_and_its_subtree() {
        let entries = fs_entries(7, Path::new("/usr/lib"), true);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, 64 + 8 * 9, "/usr/lib and its NUL");
        assert_eq!(&entries[0].1.path[..9], b"/usr/lib\0");
        assert_eq!(entries[1].0, 64 + 8 * 9, "/usr/lib/ without a NUL");
        assert_eq!(&entries[1].1.path[..9], b"/usr/lib/");
        assert_eq!(fs_entries(7, Path::new("/etc/ld.so.cache"), false).len(), 1);
    }

    #[test]
    fn every_syscall_is_classified_once() {
        let mut seen = std::collections::HashSet::new();
        assert!(SYSCALL_CLASSES.iter().all(|(nr, _)| seen.insert(*nr)));
    }
}
