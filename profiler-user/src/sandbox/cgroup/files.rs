//! Reading and writing cgroup control files with as few system calls as possible, and parsing
//! their contents (pure).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use super::CgroupError;

/// Writes `value` to the control file `path` in one `write`.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_io(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Writes `value` to the control file `path` in one `write`; the plain I/O error.
pub(super) fn write_io(path: &Path, value: &str) -> io::Result<()> {
    // No O_CREAT/O_TRUNC (unlike fs::write): control files exist or the controller is missing.
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Reads a small control file (up to 4 KiB; the rest is cut off) in one `read`, without the
/// size probe that `fs::read_to_string` makes first.
pub(super) fn read_small(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
        // Control files are seq_files, which hand out everything that fits in the first read:
        // a short read is the end, and asking again would cost a system call per file.
        if len < buf.len() {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Reads a control file holding one number.
pub(super) fn read_u64(path: &Path) -> Option<u64> {
    read_small(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`cpu.stat`, `memory.events`, `pids.events`,
/// v1 `memory.oom_control`): lines of `key value`.
pub(super) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Reads `key` of the flat keyed file `path`.
pub(super) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    keyed_value(&read_small(path).ok()?, key)
}

/// The process ids listed in a `cgroup.procs` file's text.
pub(super) fn parse_pids(text: &str) -> impl Iterator<Item = libc::pid_t> + '_ {
    text.lines().filter_map(|l| l.trim().parse().ok())
}

/// The process ids in the cgroup `dir` (not its descendants); none when it cannot be read.
pub(super) fn procs(dir: &Path) -> Vec<libc::pid_t> {
    // cgroup.procs can be long: no size cap here.
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| parse_pids(&text).collect())
        .unwrap_or_default()
}

/// Whether the v2 `cgroup.events` text says processes are in the cgroup or below it.
pub(super) fn populated(events: &str) -> bool {
    keyed_value(events, "populated") != Some(0)
}

/// The subdirectories of `dir` (child cgroups); none when it cannot be read.
pub(super) fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the space-separated controller list (`cgroup.controllers`, `cgroup.subtree_control`)
/// names `controller`.
pub(super) fn lists(list: &str, controller: &str) -> bool {
    list.split_whitespace().any(|c| c == controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_usec_from_cpu_stat() {
        let cpu_stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n\
                        core_sched.force_idle_usec 0\nnr_periods 0\nnr_throttled 0\n";
        assert_eq!(keyed_value(cpu_stat, "usage_usec"), Some(1_234_567));
        assert_eq!(keyed_value(cpu_stat, "user"), None);
    }

    #[test]
    fn reads_oom_kills_and_limit_hits_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "max"), Some(17));
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "oom_group_kill"), Some(0));
    }

    #[test]
    fn reads_oom_kills_from_v1_oom_control() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(oom_control, "oom_kill"), Some(3));
        assert_eq!(keyed_value(oom_control, "oom_kill_disable"), Some(0));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            None
        );
    }

    #[test]
    fn reads_task_limit_hits_from_pids_events() {
        assert_eq!(keyed_value("max 5\n", "max"), Some(5));
        assert_eq!(keyed_value("max 0\n", "max"), Some(0));
    }

    #[test]
    fn tells_populated_cgroups_from_cgroup_events() {
        assert!(populated("populated 1\nfrozen 0\n"));
        assert!(!populated("populated 0\nfrozen 0\n"));
    }

    #[test]
    fn lists_pids_and_controllers() {
        assert_eq!(parse_pids("12\n345\n\n").collect::<Vec<_>>(), [12, 345]);
        assert!(lists("cpuset cpu io memory pids", "cpu"));
        assert!(!lists("cpuset io memory", "cpu"));
    }
}
