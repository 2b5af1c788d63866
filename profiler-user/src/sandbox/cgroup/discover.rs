//! Where this process's cgroups are: the cgroup2 mount and the v1 hierarchies that hold the
//! controllers a run needs, worked out from `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Everything here except [`hierarchies`] is pure and takes the two files' text.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::{CgroupError, SUPERVISOR};

/// A set of the controllers a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Controllers(u8);

impl Controllers {
    /// `pids`: the task limit and its events.
    pub(super) const PIDS: Controllers = Controllers(1);
    /// `memory`: the memory limit, peak and OOM events.
    pub(super) const MEMORY: Controllers = Controllers(2);
    /// `cpu`: nothing is limited or read; used where it shares a hierarchy with `cpuacct`.
    pub(super) const CPU: Controllers = Controllers(4);
    /// `cpuacct` (v1 only): CPU time in nanoseconds.
    pub(super) const CPUACCT: Controllers = Controllers(8);

    /// The controllers named in a comma-separated list; other names are ignored.
    pub(super) fn from_list(list: &str) -> Controllers {
        let mut set = Controllers::default();
        for name in list.split(',') {
            set.0 |= match name {
                "pids" => Controllers::PIDS.0,
                "memory" => Controllers::MEMORY.0,
                "cpu" => Controllers::CPU.0,
                "cpuacct" => Controllers::CPUACCT.0,
                _ => 0,
            };
        }
        set
    }

    /// Whether every controller of `other` is in this set.
    pub(super) fn contains(self, other: Controllers) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// This set and `other`.
    pub(super) fn union(self, other: Controllers) -> Controllers {
        Controllers(self.0 | other.0)
    }
}

/// One v1 hierarchy that holds at least one controller a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct V1Hierarchy {
    /// The run-relevant controllers it holds.
    pub(super) controllers: Controllers,
    /// This process's cgroup in it (a directory under the hierarchy's mount).
    pub(super) own: PathBuf,
}

/// This process's cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hierarchies {
    /// This process's cgroup v2 directory (with a trailing [`SUPERVISOR`] removed: the cgroup
    /// flamewarden was started in).
    pub(super) v2_own: PathBuf,
    /// The v1 hierarchies holding `pids`, `memory` or `cpuacct` (none on a pure v2 host).
    pub(super) v1: Vec<V1Hierarchy>,
}

/// This process's cgroups, read once per process.
pub(super) fn hierarchies() -> Result<&'static Hierarchies, CgroupError> {
    static HIERARCHIES: OnceLock<Hierarchies> = OnceLock::new();
    if let Some(found) = HIERARCHIES.get() {
        return Ok(found);
    }
    let read = |path: &str| {
        fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: PathBuf::from(path),
            source,
        })
    };
    let found = discover(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?)
        .map_err(CgroupError::Discovery)?;
    Ok(HIERARCHIES.get_or_init(|| found))
}

/// One line of `/proc/self/mountinfo`, the fields that matter here.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mount {
    /// The directory of the file system mounted here (`/` unless a subtree is mounted).
    pub(super) root: String,
    /// Where it is mounted.
    pub(super) mount_point: String,
    /// `cgroup`, `cgroup2`, ...
    pub(super) fs_type: String,
    /// The super block options: for a v1 cgroup mount, its controllers among other options.
    pub(super) super_options: String,
}

/// The lines of `/proc/self/mountinfo`; malformed lines are skipped.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // id parent major:minor root mount-point options [optional...] - type source super
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                root: unescape(fields.get(3)?),
                mount_point: unescape(fields.get(4)?),
                fs_type: (*fields.get(separator + 1)?).to_owned(),
                super_options: (*fields.get(separator + 3)?).to_owned(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) if bytes[i] == b'\\' => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Membership<'a> {
    /// The hierarchy id: 0 for cgroup v2.
    pub(super) hierarchy: u32,
    /// The hierarchy's controllers, comma-separated (empty for v2, `name=systemd` for named ones).
    pub(super) controllers: &'a str,
    /// The cgroup, relative to the root of this process's cgroup namespace.
    pub(super) path: &'a str,
}

/// The lines of `/proc/self/cgroup`; malformed lines are skipped.
pub(super) fn parse_proc_cgroup(text: &str) -> Vec<Membership<'_>> {
    text.lines()
        .filter_map(|line| {
            // The path may itself contain ':'.
            let mut fields = line.splitn(3, ':');
            Some(Membership {
                hierarchy: fields.next()?.parse().ok()?,
                controllers: fields.next()?,
                path: fields.next()?,
            })
        })
        .collect()
}

/// The directory of cgroup `path` under `mount`, when the mount shows it.
fn directory_under(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let relative = relative.trim_start_matches('/');
    let mount_point = Path::new(&mount.mount_point);
    Some(if relative.is_empty() {
        mount_point.to_owned()
    } else {
        mount_point.join(relative)
    })
}

/// Works out this process's cgroups from the text of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`.
pub(super) fn discover(mountinfo: &str, proc_cgroup: &str) -> Result<Hierarchies, String> {
    let mounts = parse_mountinfo(mountinfo);
    let memberships = parse_proc_cgroup(proc_cgroup);

    let v2_path = memberships
        .iter()
        .find(|m| m.hierarchy == 0 && m.controllers.is_empty())
        .ok_or("/proc/self/cgroup has no cgroup v2 (`0::`) line")?
        .path;
    // A flamewarden that moved itself into its supervisor leaf still owns the cgroup above.
    let v2_path = v2_path
        .strip_suffix(SUPERVISOR)
        .and_then(|p| p.strip_suffix('/'))
        .map_or(v2_path, |p| if p.is_empty() { "/" } else { p });
    let v2_own = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup2")
        .find_map(|m| directory_under(m, v2_path))
        .ok_or_else(|| format!("no cgroup2 mount in /proc/self/mountinfo shows {v2_path}"))?;

    let mut v1 = Vec::new();
    for membership in memberships.iter().filter(|m| m.hierarchy != 0) {
        let controllers = Controllers::from_list(membership.controllers);
        // A hierarchy of `cpu` alone limits and accounts nothing a run needs: skipping it saves
        // a mkdir, a move and an rmdir per run.
        if controllers.is_empty() || controllers == Controllers::CPU {
            continue;
        }
        let own = mounts
            .iter()
            .filter(|m| {
                m.fs_type == "cgroup"
                    && membership
                        .controllers
                        .split(',')
                        .all(|c| m.super_options.split(',').any(|o| o == c))
            })
            .find_map(|m| directory_under(m, membership.path))
            .ok_or_else(|| {
                format!(
                    "no cgroup v1 mount in /proc/self/mountinfo shows {}:{}",
                    membership.controllers, membership.path
                )
            })?;
        v1.push(V1Hierarchy { controllers, own });
    }
    Ok(Hierarchies { v2_own, v1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hybrid host this was written on: cpu and cpuacct mounted apart, memory not at root.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/775e
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn finds_the_v1_hierarchies_of_a_hybrid_host_under_its_own_cgroup_but_not_a_lone_cpu() {
        let found = discover(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(found.v2_own, Path::new("/sys/fs/cgroup/unified"));
        let v1: Vec<_> = found
            .v1
            .iter()
            .map(|h| (h.controllers, h.own.clone()))
            .collect();
        assert_eq!(
            v1,
            [
                (Controllers::PIDS, PathBuf::from("/sys/fs/cgroup/pids")),
                (
                    Controllers::MEMORY,
                    PathBuf::from("/sys/fs/cgroup/memory/process_api/775e")
                ),
                (
                    Controllers::CPUACCT,
                    PathBuf::from("/sys/fs/cgroup/cpuacct")
                ),
            ]
        );
    }

    #[test]
    fn treats_co_mounted_cpu_and_cpuacct_as_one_hierarchy() {
        let mountinfo = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/unified rw shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
        let found = discover(
            mountinfo,
            "3:cpu,cpuacct:/user.slice\n0::/user.slice/x.scope\n",
        )
        .unwrap();
        assert_eq!(
            found.v2_own,
            Path::new("/sys/fs/cgroup/unified/user.slice/x.scope")
        );
        assert_eq!(found.v1.len(), 1);
        assert_eq!(
            found.v1[0].controllers,
            Controllers::CPU.union(Controllers::CPUACCT)
        );
        assert_eq!(
            found.v1[0].own,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/user.slice")
        );
    }

    #[test]
    fn finds_a_pure_v2_cgroup_and_strips_the_supervisor_leaf() {
        let mountinfo =
            "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = "0::/system.slice/judge.service/flamewarden-supervisor\n";
        let found = discover(mountinfo, cgroup).unwrap();
        assert_eq!(
            found.v2_own,
            Path::new("/sys/fs/cgroup/system.slice/judge.service")
        );
        assert!(found.v1.is_empty());

        let at_root = discover(mountinfo, "0::/flamewarden-supervisor\n").unwrap();
        assert_eq!(at_root.v2_own, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn resolves_a_cgroup_below_a_mount_of_a_subtree() {
        let mountinfo = "\
30 22 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 22 0:27 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let found = discover(mountinfo, "5:pids:/docker/abc/job\n0::/docker/abc\n").unwrap();
        assert_eq!(found.v2_own, Path::new("/sys/fs/cgroup"));
        assert_eq!(found.v1[0].own, Path::new("/sys/fs/cgroup/pids/job"));
        // A sibling whose name merely starts with the mounted subtree is not below it.
        assert!(discover(mountinfo, "0::/docker/abcdef\n").is_err());
    }

    #[test]
    fn explains_what_is_missing() {
        let no_v2_line = discover(HYBRID_MOUNTINFO, "8:pids:/\n").unwrap_err();
        assert!(no_v2_line.contains("0::"), "{no_v2_line}");
        let no_mount = discover("", "0::/\n").unwrap_err();
        assert!(no_mount.contains("cgroup2"), "{no_mount}");
        let no_pids_mount = discover(
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "8:pids:/a\n0::/\n",
        )
        .unwrap_err();
        assert!(no_pids_mount.contains("pids:/a"), "{no_pids_mount}");
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let mounts = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 shared:2 - cgroup2 none rw\nbad\n",
        );
        assert_eq!(
            mounts,
            [Mount {
                root: "/mnt1".into(),
                mount_point: "/mnt/my dir".into(),
                fs_type: "cgroup2".into(),
                super_options: "rw".into(),
            }]
        );
    }

    #[test]
    fn parses_proc_cgroup_lines_with_colons_in_the_path() {
        assert_eq!(
            parse_proc_cgroup("4:memory:/a:b\n0::/\nnonsense\n"),
            [
                Membership {
                    hierarchy: 4,
                    controllers: "memory",
                    path: "/a:b"
                },
                Membership {
                    hierarchy: 0,
                    controllers: "",
                    path: "/"
                },
            ]
        );
    }
}
