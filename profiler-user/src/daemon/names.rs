//! cgroup ids to paths, from the cgroup2 file system: the labels of the metrics and events.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Rescans at most this often when an unknown id is asked for.
const RESCAN_AFTER: Duration = Duration::from_secs(1);

/// A cache of cgroup paths by id.
#[derive(Debug, Default)]
pub struct CgroupNames {
    paths: HashMap<u64, String>,
    scanned_at: Option<Instant>,
}

impl CgroupNames {
    /// The path of cgroup `id`, or `cgroup-<id>` when it is gone or unknown.
    pub fn path(&mut self, id: u64) -> String {
        if !self.paths.contains_key(&id)
            && self.scanned_at.is_none_or(|t| t.elapsed() >= RESCAN_AFTER)
        {
            self.scanned_at = Some(Instant::now());
            // Removed cgroups leave; their ids are never reused.
            self.paths.extend(walk());
        }
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup-{id}"))
    }

    /// Forgets the paths of cgroups not in `live`.
    pub fn retain(&mut self, live: &HashSet<u64>) {
        self.paths.retain(|id, _| live.contains(id));
    }

    /// The ids of every cgroup v2 directory now.
    pub fn all_ids() -> HashSet<u64> {
        walk().into_iter().map(|(id, _)| id).collect()
    }
}

/// Every directory of every cgroup2 mount, with its inode number (the cgroup id).
fn walk() -> Vec<(u64, String)> {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mut stack: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .collect();
    let mut out = Vec::new();
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            out.push((meta.ino(), dir.display().to_string()));
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
    out
}
