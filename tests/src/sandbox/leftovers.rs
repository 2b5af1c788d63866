//! What a run may leave behind, checked after every run: its cgroups in every hierarchy, its
//! pins under [`PIN_ROOT`], its processes.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::{Reaper, tagged_processes};
use crate::cgroup::own_cgroup_dir;

/// Our own cgroup directory in every mounted hierarchy (v2 and each v1 one), per
/// /proc/self/cgroup and /proc/self/mounts.
pub fn own_cgroup_dirs() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let mounts: Vec<(&str, &str, Vec<&str>)> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[1], f[2], f[3].split(',').collect()))
        })
        .collect();
    let cgroups = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let mut dirs = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount = mounts.iter().find(|(_, fs_type, options)| {
            if controllers.is_empty() {
                *fs_type == "cgroup2"
            } else {
                *fs_type == "cgroup" && controllers.split(',').all(|c| options.contains(&c))
            }
        });
        if let Some((mount_point, _, _)) = mount {
            dirs.push(Path::new(mount_point).join(path.trim_start_matches('/')));
        }
    }
    dirs
}

/// Where the sandbox keeps its pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/flamewarden";

/// The pin of the guard's `sys_enter` link on the sandboxes' parent beneath our own cgroup
/// (v2): there while the guard's syscall layer is attached for flamewarden's runs.
pub fn sys_enter_link_pin() -> PathBuf {
    let parent = own_cgroup_dir()
        .expect("our cgroup v2 directory")
        .join("flamewarden-sandboxes");
    let id = fs::metadata(&parent)
        .unwrap_or_else(|e| panic!("{}: {e}", parent.display()))
        .ino();
    Path::new(PIN_ROOT)
        .join(id.to_string())
        .join("link_guard_sys_enter")
}

/// What may be left by a run, before it starts.
pub(super) struct Leftovers {
    run_cgroups: BTreeSet<PathBuf>,
    pins: BTreeSet<PathBuf>,
    had_sandbox_pins: bool,
}

impl Leftovers {
    pub(super) fn snapshot() -> Self {
        let pins = pins();
        let sandbox = Path::new(PIN_ROOT).join("sandbox");
        Leftovers {
            run_cgroups: run_cgroups(),
            had_sandbox_pins: pins.iter().any(|p| p.starts_with(&sandbox)),
            pins,
        }
    }

    /// Waits up to 3 s for everything the run made to go; panics with what is left (killing
    /// the processes first).
    pub(super) fn assert_nothing_left(&self, tag: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let cgroups: Vec<PathBuf> = run_cgroups()
                .difference(&self.run_cgroups)
                .cloned()
                .collect();
            let pins = self.leaked_pins();
            let processes = tagged_processes(tag);
            if cgroups.is_empty() && pins.is_empty() && processes.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                drop(Reaper(tag.to_owned()));
                panic!(
                    "{what} left behind: run cgroups {cgroups:?}, pins {pins:?}, processes \
                     (pid, comm) {processes:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pins that appeared during the run and are not the sandbox's persistent ones: anything
    /// new under `sandbox/` once that existed before the run, and anything named by the id of a
    /// cgroup that no longer exists (a run's cgroup is gone after the run).
    fn leaked_pins(&self) -> Vec<PathBuf> {
        let sandbox = Path::new(PIN_ROOT).join("sandbox");
        let new: Vec<PathBuf> = pins().difference(&self.pins).cloned().collect();
        if new.is_empty() {
            return new;
        }
        let live = live_cgroup_ids();
        new.into_iter()
            .filter(|pin| {
                if pin.starts_with(&sandbox) {
                    return self.had_sandbox_pins;
                }
                pin.strip_prefix(PIN_ROOT)
                    .unwrap_or(pin)
                    .iter()
                    .any(|part| {
                        part.to_str()
                            .and_then(|s| s.parse::<u64>().ok())
                            .is_some_and(|id| !live.contains(&id))
                    })
            })
            .collect()
    }
}

/// The run directories beneath `flamewarden-sandboxes` in our own cgroup of every hierarchy.
fn run_cgroups() -> BTreeSet<PathBuf> {
    own_cgroup_dirs()
        .into_iter()
        .flat_map(|dir| {
            fs::read_dir(dir.join("flamewarden-sandboxes"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Everything under `dir` (directories before their contents), four levels deep.
pub(super) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut queue = vec![(dir.to_owned(), 0)];
    while let Some((dir, depth)) = queue.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if depth < 4 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push((entry.path(), depth + 1));
            }
            found.push(entry.path());
        }
    }
    found
}

/// Everything under [`PIN_ROOT`].
fn pins() -> BTreeSet<PathBuf> {
    walk(Path::new(PIN_ROOT)).into_iter().collect()
}

/// The ids (inode numbers) of the cgroups v2 beneath our own.
fn live_cgroup_ids() -> BTreeSet<u64> {
    let Ok(own) = own_cgroup_dir() else {
        return BTreeSet::new();
    };
    let mut dirs = walk(&own);
    dirs.push(own);
    dirs.iter()
        .filter_map(|d| fs::metadata(d).ok().filter(|m| m.is_dir()).map(|m| m.ino()))
        .collect()
}
