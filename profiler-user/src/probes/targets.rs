//! What to profile, written into the kernel's target maps so filtering happens there.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap},
};
use profiler_common::{
    FILTER_ALL, FILTER_CGROUPS, FILTER_NONE, FILTER_TGIDS, MAP_TARGET_CGROUPS, MAP_TARGET_FILTER,
    MAP_TARGET_TGIDS, MAX_CGROUP_LEVEL, TargetFilter, TargetFlags,
};

use super::ProbeError;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A cgroup v2 directory to profile, with its kernel id and depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    /// The directory as the user gave it.
    pub path: PathBuf,
    /// The cgroup id (inode number of the directory on cgroup2).
    pub id: u64,
    /// Depth below the cgroup2 root (root = 0).
    pub level: u32,
}

impl CgroupTarget {
    /// Resolves a cgroup v2 directory, failing with a message that names the path.
    pub fn from_path(path: &Path) -> Result<Self, ProbeError> {
        let bad = |reason: &str| ProbeError::BadCgroup {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let meta = fs::metadata(path).map_err(|e| bad(&format!("no such cgroup ({e})")))?;
        if !meta.is_dir() {
            return Err(bad("not a directory"));
        }
        if statfs_magic(path) != Some(CGROUP2_SUPER_MAGIC) {
            return Err(bad(
                "not on a cgroup v2 filesystem (cgroup2 is usually /sys/fs/cgroup or /sys/fs/cgroup/unified)",
            ));
        }
        let canonical = fs::canonicalize(path).map_err(|e| bad(&e.to_string()))?;
        let level =
            cgroup2_level(&canonical).ok_or_else(|| bad("cannot find its cgroup2 mount"))?;
        if level > MAX_CGROUP_LEVEL {
            return Err(bad(&format!(
                "nested deeper than {MAX_CGROUP_LEVEL} levels"
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            id: meta.ino(),
            level,
        })
    }
}

fn statfs_magic(path: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `buf` is a valid out-pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0).then_some(buf.f_type as i64)
}

/// Depth of `path` below the cgroup2 mount that contains it.
fn cgroup2_level(path: &Path) -> Option<u32> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .filter_map(|root| {
            path.strip_prefix(&root)
                .ok()
                .map(|rel| rel.components().count() as u32)
        })
        .min()
}

/// The set of things to profile.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// Everything (idle excluded).
    pub all: bool,
    /// Thread groups, with flags (e.g. follow forks).
    pub tgids: Vec<(u32, TargetFlags)>,
    /// cgroups, each with its descendants.
    pub cgroups: Vec<CgroupTarget>,
}

impl Targets {
    /// The filter the kernel applies for these targets.
    pub fn filter(&self) -> TargetFilter {
        if self.all {
            return TargetFilter {
                mode: FILTER_ALL,
                max_cgroup_level: 0,
            };
        }
        let mut mode = 0;
        if !self.tgids.is_empty() {
            mode |= FILTER_TGIDS;
        }
        if !self.cgroups.is_empty() {
            mode |= FILTER_CGROUPS;
        }
        if mode == 0 {
            mode = FILTER_NONE;
        }
        let max_cgroup_level = self.cgroups.iter().map(|c| c.level).max().unwrap_or(0);
        TargetFilter {
            mode,
            max_cgroup_level,
        }
    }

    /// Writes the targets into the maps, then switches the filter on.
    pub fn apply(&self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        set_filter(
            ebpf,
            TargetFilter {
                mode: FILTER_NONE,
                max_cgroup_level: 0,
            },
        )?;
        {
            let map = ebpf
                .map_mut(MAP_TARGET_TGIDS)
                .ok_or(ProbeError::MissingMap(MAP_TARGET_TGIDS))?;
            let mut tgids: HashMap<_, u32, u32> =
                HashMap::try_from(map).map_err(|source| ProbeError::Map {
                    map: MAP_TARGET_TGIDS,
                    source,
                })?;
            for &(tgid, flags) in &self.tgids {
                tgids
                    .insert(tgid, flags, 0)
                    .map_err(|source| ProbeError::Map {
                        map: MAP_TARGET_TGIDS,
                        source,
                    })?;
            }
        }
        {
            let map = ebpf
                .map_mut(MAP_TARGET_CGROUPS)
                .ok_or(ProbeError::MissingMap(MAP_TARGET_CGROUPS))?;
            let mut cgroups: HashMap<_, u64, u32> =
                HashMap::try_from(map).map_err(|source| ProbeError::Map {
                    map: MAP_TARGET_CGROUPS,
                    source,
                })?;
            for cgroup in &self.cgroups {
                cgroups
                    .insert(cgroup.id, 1, 0)
                    .map_err(|source| ProbeError::Map {
                        map: MAP_TARGET_CGROUPS,
                        source,
                    })?;
            }
        }
        set_filter(ebpf, self.filter())
    }

    /// Whether processes forked by targets are followed in the kernel.
    pub fn follows_forks(&self) -> bool {
        self.tgids
            .iter()
            .any(|(_, flags)| flags & profiler_common::TARGET_FOLLOW_FORKS != 0)
    }
}

fn set_filter(ebpf: &mut Ebpf, filter: TargetFilter) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(MAP_TARGET_FILTER)
        .ok_or(ProbeError::MissingMap(MAP_TARGET_FILTER))?;
    let mut array: Array<_, TargetFilter> =
        Array::try_from(map).map_err(|source| ProbeError::Map {
            map: MAP_TARGET_FILTER,
            source,
        })?;
    array.set(0, filter, 0).map_err(|source| ProbeError::Map {
        map: MAP_TARGET_FILTER,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_combines_tgids_and_cgroups_and_defaults_to_nothing() {
        assert_eq!(Targets::default().filter().mode, FILTER_NONE);
        assert_eq!(
            Targets {
                all: true,
                ..Default::default()
            }
            .filter()
            .mode,
            FILTER_ALL
        );
        let t = Targets {
            tgids: vec![(1, 0)],
            cgroups: vec![CgroupTarget {
                path: "/x".into(),
                id: 7,
                level: 3,
            }],
            ..Default::default()
        };
        assert_eq!(
            t.filter(),
            TargetFilter {
                mode: FILTER_TGIDS | FILTER_CGROUPS,
                max_cgroup_level: 3
            }
        );
    }

    #[test]
    fn rejects_paths_that_are_not_cgroup2_directories() {
        let err = CgroupTarget::from_path(Path::new("/definitely/not/here")).unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
        let err = CgroupTarget::from_path(Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("cgroup v2"), "{err}");
    }
}
