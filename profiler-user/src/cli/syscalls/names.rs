//! Names for the table: process names from `/proc`, cgroup paths from the cgroup2 file system.

use std::{fs, os::unix::fs::MetadataExt as _, path::PathBuf};

use crate::syscalls::{Names, SyscallSnapshot};

/// Process names from `/proc`, cgroup paths from the cgroup2 file system; looked up once.
#[derive(Default)]
pub(super) struct NameCache {
    /// The names found so far.
    pub(super) names: Names,
    cgroups_scanned: bool,
}

impl NameCache {
    /// Names every process and cgroup of the snapshot that is not named yet.
    pub(super) fn refresh(&mut self, snapshot: &SyscallSnapshot) {
        for (key, _) in &snapshot.stats {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                self.names.processes.entry(key.tgid)
                && let Ok(comm) = fs::read_to_string(format!("/proc/{}/comm", key.tgid))
            {
                entry.insert(comm.trim_end().to_owned());
            }
            if !self.names.cgroups.contains_key(&key.cgroup_id) {
                self.scan_cgroups();
            }
        }
    }

    /// The path of cgroup `id`, scanning the cgroup2 file system on first need.
    pub(super) fn cgroup(&mut self, id: u64) -> String {
        if !self.names.cgroups.contains_key(&id) {
            self.scan_cgroups();
        }
        self.names.cgroup(id)
    }

    /// Walks the cgroup2 mount once, mapping directory inodes (cgroup ids) to paths.
    fn scan_cgroups(&mut self) {
        if self.cgroups_scanned {
            return;
        }
        self.cgroups_scanned = true;
        let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
            return;
        };
        let roots = mounts.lines().filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        });
        let mut stack: Vec<PathBuf> = roots.collect();
        while let Some(dir) = stack.pop() {
            if let Ok(meta) = fs::metadata(&dir) {
                self.names
                    .cgroups
                    .entry(meta.ino())
                    .or_insert_with(|| dir.display().to_string());
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
}
