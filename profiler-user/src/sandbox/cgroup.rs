//! The run's cgroups (v2, and v1 controllers on hybrid hosts): creation, limits, usage, kill,
//! removal.
//!
//! A run lives at `<own>/flamewarden-sandboxes/<name>` in the cgroup v2 tree, where `<own>` is
//! the cgroup flamewarden runs in; the v2 directory's inode is the cgroup id the guard's BPF
//! programs see. On a hybrid host, each v1 hierarchy holding `pids`, `memory` or `cpuacct` (with
//! `cpu` where it is mounted together with `cpuacct`) gets the same relative path beneath this
//! process's own cgroup in that hierarchy, and the limits go there. On a pure v2 host the
//! controllers are enabled in the `subtree_control` of `<own>` and of `flamewarden-sandboxes`; if
//! `<own>` holds this process, it first moves itself into the leaf
//! `<own>/flamewarden-supervisor`. Nothing is ever created or moved outside `<own>`.
//!
//! Mount discovery and the parent are set up once per process; a run then costs a `mkdir`, a
//! `cgroup.procs` write and an `rmdir` per hierarchy plus one write per limit.

mod discover;
mod files;
mod layout;

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod cgroup_tests;

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use layout::{Layout, Place, layout};

/// The persistent cgroup beneath flamewarden's own cgroup that holds every run's cgroup; the
/// guard's cgroup-BPF programs are attached to its v2 directory.
pub const PARENT: &str = "flamewarden-sandboxes";

/// The leaf beneath its own v2 cgroup that flamewarden moves itself into when cgroup v2 refuses
/// to enable controllers for a cgroup with processes in it.
pub const SUPERVISOR: &str = "flamewarden-supervisor";

/// How long [`RunCgroup::kill_all`] and [`RunCgroup::remove`] wait for processes to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// v1: how far `memory.memsw.limit_in_bytes` is set above the memory limit, the most swap a run
/// can use; a page or more on every page size.
pub const MEMSW_SLACK: u64 = 64 * 1024;

/// Why a run's cgroups could not be set up, used or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// This process's cgroups could not be worked out from `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`.
    #[error("cannot find this process's cgroups: {0}")]
    Discovery(String),
    /// The run's name cannot name a cgroup directory.
    #[error("invalid run cgroup name {0:?}: it must be a single non-empty path component")]
    InvalidName(String),
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("cannot write {value:?} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        source: io::Error,
    },
    /// A limit needs a controller that is neither mounted as cgroup v1 nor delegated to
    /// flamewarden's cgroup v2.
    #[error(
        "cannot limit {what}: the {controller} controller is not available below {} (neither a cgroup v1 hierarchy nor listed in its cgroup.controllers)",
        parent.display()
    )]
    ControllerUnavailable {
        /// The limit (`tasks`, `memory`).
        what: &'static str,
        /// The controller it needs.
        controller: &'static str,
        /// The parent cgroup the runs go beneath.
        parent: PathBuf,
    },
    /// cgroup v2 refuses to enable a controller because processes other than flamewarden share
    /// its cgroup.
    #[error(
        "cannot enable the {controller} controller in {}: other processes share flamewarden's cgroup, and cgroup v2 enables controllers only for cgroups without processes; run flamewarden in a cgroup of its own (e.g. `systemd-run --scope`)",
        path.display()
    )]
    SharedCgroup {
        /// The controller.
        controller: String,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove cgroup {}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Processes were still in a cgroup after it was killed for a while.
    #[error("processes are still in cgroup {} {waited:?} after killing them", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// How long it was killed for.
        waited: Duration,
    },
}

/// The limits of one run; `None` leaves the limit as inherited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Processes and threads at once (`pids.max`).
    pub tasks: Option<u64>,
    /// Memory, swap included where accounted (v2: no swap; v1: at most [`MEMSW_SLACK`] of it).
    pub memory_bytes: Option<u64>,
}

/// What a run's cgroups used; each field as far as the host accounts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time of every process, user and system (v1 `cpuacct.usage`, v2 `cpu.stat`).
    pub cpu_time_ns: Option<u64>,
    /// Highest memory use (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub peak_memory_bytes: Option<u64>,
    /// Processes killed by the OOM killer at the memory limit.
    pub oom_kills: u64,
    /// Times memory use reached the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_limit_hits: u64,
    /// Forks refused at the task limit (`pids.events` `max`).
    pub task_limit_hits: u64,
}

/// A controller whose directory a test or caller may want to look into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// `pids`.
    Pids,
    /// `memory`.
    Memory,
    /// Where CPU time is accounted: v1 `cpuacct`, else the v2 directory.
    CpuTime,
}

/// The cgroups of one run, killed and removed on drop (best effort; [`RunCgroup::remove`] says
/// what failed).
#[derive(Debug)]
pub struct RunCgroup {
    layout: &'static Layout,
    /// The directories created so far: v2 first, then the v1 ones in `layout.v1_parents` order.
    dirs: Vec<PathBuf>,
    id: u64,
}

/// This process's own cgroup v2 directory: the one it was started in (a trailing
/// [`SUPERVISOR`] leaf it moved itself into does not count).
pub fn own_cgroup_v2_dir() -> Result<PathBuf, CgroupError> {
    Ok(discover::hierarchies()?.v2_own.clone())
}

/// The v2 directory of [`PARENT`] beneath this process's own cgroup, created (in every
/// hierarchy, controllers enabled) on first use in this process.
pub fn sandboxes_parent_v2_dir() -> Result<PathBuf, CgroupError> {
    Ok(layout()?.v2_parent.clone())
}

impl RunCgroup {
    /// Creates `<own cgroup>/flamewarden-sandboxes/<name>` in the v2 tree and in each v1
    /// hierarchy that holds `pids`, `memory` or `cpuacct`, and sets the limits. `name`
    /// must be unique among live runs; a leftover directory of that name is an error.
    pub fn create(name: &str, limits: &CgroupLimits) -> Result<RunCgroup, CgroupError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(CgroupError::InvalidName(name.to_owned()));
        }
        let layout = layout()?;
        let needs = [
            (limits.tasks.is_some(), layout.pids, "tasks", "pids"),
            (
                limits.memory_bytes.is_some(),
                layout.memory,
                "memory",
                "memory",
            ),
        ];
        for (needed, place, what, controller) in needs {
            if needed && place.is_none() {
                return Err(CgroupError::ControllerUnavailable {
                    what,
                    controller,
                    parent: layout.v2_parent.clone(),
                });
            }
        }

        let mut run = RunCgroup {
            layout,
            dirs: Vec::with_capacity(1 + layout.v1_parents.len()),
            id: 0,
        };
        let v2 = layout.v2_parent.join(name);
        make_dir(&v2)?;
        run.dirs.push(v2);
        run.id = fs::metadata(&run.dirs[0])
            .map_err(|source| CgroupError::Read {
                path: run.dirs[0].clone(),
                source,
            })?
            .ino();
        for parent in &layout.v1_parents {
            let dir = parent.join(name);
            make_dir(&dir)?;
            run.dirs.push(dir);
        }

        if let (Some(tasks), Some(place)) = (limits.tasks, layout.pids) {
            files::write(&run.dir(place).join("pids.max"), &tasks.to_string())?;
        }
        if let (Some(bytes), Some(place)) = (limits.memory_bytes, layout.memory) {
            let dir = run.dir(place);
            if place == Place::V2 {
                files::write(&dir.join("memory.max"), &bytes.to_string())?;
                if layout.swap_max {
                    files::write(&dir.join("memory.swap.max"), "0")?;
                }
            } else {
                files::write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                if layout.memsw {
                    // memsw (memory + swap) may not be below the memory limit: set it second. A
                    // little above, so that the memory limit is the one reached, which counts in
                    // memory.failcnt (recent kernels do not count memory.memsw.failcnt).
                    let memsw = bytes.saturating_add(MEMSW_SLACK).to_string();
                    files::write(&dir.join("memory.memsw.limit_in_bytes"), &memsw)?;
                }
            }
        }
        Ok(run)
    }

    /// Takes over the existing run `name` (left behind by a flamewarden that died), so that it
    /// can be killed and removed; `None` when it has no v2 directory.
    pub fn adopt(name: &str) -> Result<Option<RunCgroup>, CgroupError> {
        let layout = layout()?;
        let v2 = layout.v2_parent.join(name);
        let Ok(meta) = fs::metadata(&v2) else {
            return Ok(None);
        };
        let mut dirs = vec![v2];
        dirs.extend(
            layout
                .v1_parents
                .iter()
                .map(|parent| parent.join(name))
                .filter(|dir| dir.is_dir()),
        );
        Ok(Some(RunCgroup {
            layout,
            dirs,
            id: meta.ino(),
        }))
    }

    /// The names of the runs beneath the parent, live or left over.
    pub fn run_names() -> Result<Vec<String>, CgroupError> {
        let layout = layout()?;
        let entries = fs::read_dir(&layout.v2_parent).map_err(|source| CgroupError::Read {
            path: layout.v2_parent.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// The run's cgroup v2 directory.
    pub fn v2_path(&self) -> &Path {
        &self.dirs[0]
    }

    /// The cgroup id: the v2 directory's inode, what `bpf_get_current_cgroup_id` returns.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Every directory of the run: v2 first, then one per v1 hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The directory holding `controller`'s files, when the host has it.
    pub fn controller_dir(&self, controller: Controller) -> Option<&Path> {
        let place = match controller {
            Controller::Pids => self.layout.pids?,
            Controller::Memory => self.layout.memory?,
            Controller::CpuTime => self.layout.cpu_time,
        };
        Some(self.dir(place))
    }

    /// Moves process `pid` (all its threads) into the run's cgroup in every hierarchy, v2 first.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in &self.dirs {
            files::write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files of every hierarchy, v2 first, open for writing: a forked child
    /// moves itself in before `execve` by writing `0` to each (`write(2)` only, async-signal-safe).
    pub fn open_procs(&self) -> Result<Vec<File>, CgroupError> {
        Self::open_procs_of(&self.dirs)
    }

    fn open_procs_of(dirs: &[PathBuf]) -> Result<Vec<File>, CgroupError> {
        dirs.iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: "0".to_owned(),
                        source,
                    })
            })
            .collect()
    }

    /// What the run used so far. Never fails: what cannot be read is `None` (or 0 for counts).
    pub fn usage(&self) -> CgroupUsage {
        let mut usage = CgroupUsage {
            cpu_time_ns: match self.layout.cpu_time {
                Place::V2 => files::read_keyed(&self.dirs[0].join("cpu.stat"), "usage_usec")
                    .map(|usec| usec.saturating_mul(1000)),
                v1 => files::read_u64(&self.dir(v1).join("cpuacct.usage")),
            },
            ..CgroupUsage::default()
        };
        match self.layout.memory {
            Some(Place::V2) => {
                let dir = self.dir(Place::V2);
                usage.peak_memory_bytes = files::read_u64(&dir.join("memory.peak"));
                if let Ok(events) = files::read_small(&dir.join("memory.events")) {
                    usage.oom_kills = files::keyed_value(&events, "oom_kill").unwrap_or(0);
                    usage.memory_limit_hits = files::keyed_value(&events, "max").unwrap_or(0);
                }
            }
            Some(v1) => {
                let dir = self.dir(v1);
                usage.peak_memory_bytes = files::read_u64(&dir.join("memory.max_usage_in_bytes"));
                usage.oom_kills =
                    files::read_keyed(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0);
                // Not memory.memsw.failcnt: memsw is set above the memory limit (MEMSW_SLACK).
                usage.memory_limit_hits = files::read_u64(&dir.join("memory.failcnt")).unwrap_or(0);
            }
            None => {}
        }
        if let Some(place) = self.layout.pids {
            usage.task_limit_hits =
                files::read_keyed(&self.dir(place).join("pids.events"), "max").unwrap_or(0);
        }
        usage
    }

    /// Kills every process of the run: at once with v2 `cgroup.kill` (Linux 5.14), else by
    /// SIGKILL to every process listed in any hierarchy, again until none is left (at most 2 s).
    /// Does not wait for the processes to be gone when `cgroup.kill` worked.
    pub fn kill_all(&self) {
        if files::write_io(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        while self.signal_listed() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs every process listed in any of the run's directories; whether there was one.
    fn signal_listed(&self) -> bool {
        let mut any = false;
        for dir in &self.dirs {
            for pid in files::procs(dir) {
                any = true;
                sigkill(pid);
            }
        }
        any
    }

    /// Whether no process is left in the run, in any hierarchy.
    pub fn is_empty(&self) -> bool {
        let v2_empty = match files::read_small(&self.dirs[0].join("cgroup.events")) {
            Ok(events) => !files::populated(&events),
            Err(_) => files::procs(&self.dirs[0]).is_empty(),
        };
        v2_empty
            && self.dirs[1..]
                .iter()
                .all(|dir| files::procs(dir).is_empty())
    }

    /// Kills the run's processes, waits (at most 2 s) until they are gone and removes its
    /// directories in every hierarchy. Costs one `rmdir` per hierarchy when the run is empty.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let result = self.remove_dirs();
        // Whatever failed stays; the drop does not try (and wait) again.
        self.dirs.clear();
        result
    }

    /// Removes the directories, last first (the v2 one stays usable until the end); kills and
    /// waits only when one is still busy.
    fn remove_dirs(&mut self) -> Result<(), CgroupError> {
        let mut killing_since: Option<Instant> = None;
        let mut pause = Duration::from_micros(20);
        while let Some(dir) = self.dirs.last() {
            let error = match fs::remove_dir(dir) {
                Ok(()) => None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => Some(e),
            };
            let Some(error) = error else {
                self.dirs.pop();
                continue;
            };
            if error.raw_os_error() != Some(libc::EBUSY) {
                return Err(CgroupError::Remove {
                    path: dir.clone(),
                    source: error,
                });
            }
            // Busy: processes are left (or have not quite finished exiting), or child cgroups.
            let since = *killing_since.get_or_insert_with(|| {
                self.kill_all();
                Instant::now()
            });
            let waited = since.elapsed();
            if waited > KILL_TIMEOUT {
                return Err(CgroupError::NotEmpty {
                    path: dir.clone(),
                    waited,
                });
            }
            if waited > Duration::from_millis(50) {
                // Slow path only: whatever a process nested below, and the fallback signals.
                let dir = dir.clone();
                kill_and_remove_below(&dir);
                self.signal_listed();
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        Ok(())
    }

    fn dir(&self, place: Place) -> &Path {
        match place {
            Place::V2 => &self.dirs[0],
            Place::V1(n) => &self.dirs[1 + n],
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove_dirs() {
            tracing::warn!("leaving a run's cgroup behind: {e}");
        }
    }
}

/// Creates the run directory `dir`.
fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir(dir).map_err(|source| CgroupError::Create {
        path: dir.to_owned(),
        source,
    })
}

/// Kills every process in the cgroups below `dir` (not `dir` itself) and removes them, deepest
/// first; best effort.
fn kill_and_remove_below(dir: &Path) {
    for child in files::subdirectories(dir) {
        kill_and_remove_below(&child);
        if files::write_io(&child.join("cgroup.kill"), "1").is_err() {
            files::procs(&child).into_iter().for_each(sigkill);
        }
        let _ = fs::remove_dir(&child);
    }
}

/// Sends SIGKILL to `pid`, never to this process or to init.
fn sigkill(pid: libc::pid_t) {
    if pid > 1 && pid.unsigned_abs() != std::process::id() {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
