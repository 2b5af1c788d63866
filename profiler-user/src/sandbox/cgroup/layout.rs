//! The persistent parent cgroup [`PARENT`] beneath this process's own cgroup in every hierarchy,
//! set up once per process: run cgroups are created beneath it, and the guard attaches its
//! cgroup-BPF programs to its v2 directory once.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::{
    CgroupError, PARENT, SUPERVISOR,
    discover::{Controllers, hierarchies},
    files,
};

/// Where a controller lives for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// In the cgroup v2 tree.
    V2,
    /// In v1 hierarchy number `n` of [`Layout::v1_parents`].
    V1(usize),
}

/// The parent cgroups and where each controller a run needs lives.
#[derive(Debug)]
pub(super) struct Layout {
    /// `<own v2 cgroup>/flamewarden-sandboxes`.
    pub(super) v2_parent: PathBuf,
    /// `<own v1 cgroup>/flamewarden-sandboxes` in each v1 hierarchy a run uses.
    pub(super) v1_parents: Vec<PathBuf>,
    /// Where `pids` is, when anywhere.
    pub(super) pids: Option<Place>,
    /// Where `memory` is, when anywhere.
    pub(super) memory: Option<Place>,
    /// Where CPU time is read: v1 `cpuacct`, else v2 `cpu.stat` (present without controllers).
    pub(super) cpu_time: Place,
    /// v1: swap is accounted (`memory.memsw.limit_in_bytes` exists).
    pub(super) memsw: bool,
    /// v2: swap is accounted (`memory.swap.max` exists).
    pub(super) swap_max: bool,
}

/// The layout, set up on first use in this process (and again after a failure).
pub(super) fn layout() -> Result<&'static Layout, CgroupError> {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    if let Some(layout) = LAYOUT.get() {
        return Ok(layout);
    }
    // Two threads may set up at once; every step is idempotent.
    let layout = set_up()?;
    Ok(LAYOUT.get_or_init(|| layout))
}

fn set_up() -> Result<Layout, CgroupError> {
    let hierarchies = hierarchies()?;
    let v2_parent = hierarchies.v2_own.join(PARENT);
    make_dir_if_missing(&v2_parent)?;
    // cgroup v2 accounts CPU time in `cpu.stat` without any controller: a v1 `cpuacct`
    // hierarchy would only cost a directory and a migration per run.
    let v2_cpu_stat = v2_parent.join("cpu.stat").exists();
    let v1: Vec<_> = hierarchies
        .v1
        .iter()
        .filter(|h| {
            h.controllers.contains(Controllers::PIDS)
                || h.controllers.contains(Controllers::MEMORY)
                || !v2_cpu_stat
        })
        .collect();
    let mut v1_parents = Vec::with_capacity(v1.len());
    let mut v1_controllers = Controllers::default();
    let place_v1 = |wanted: Controllers| {
        v1.iter()
            .position(|h| h.controllers.contains(wanted))
            .map(Place::V1)
    };
    let (pids_v1, memory_v1, cpuacct_v1) = (
        place_v1(Controllers::PIDS),
        place_v1(Controllers::MEMORY),
        place_v1(Controllers::CPUACCT),
    );
    for hierarchy in &v1 {
        let parent = hierarchy.own.join(PARENT);
        make_dir_if_missing(&parent)?;
        v1_parents.push(parent);
        v1_controllers = v1_controllers.union(hierarchy.controllers);
    }

    // Controllers bound to a v1 hierarchy are never available in v2.
    let wanted: Vec<&str> = [
        ("pids", Controllers::PIDS),
        ("memory", Controllers::MEMORY),
        ("cpu", Controllers::CPU),
    ]
    .into_iter()
    .filter(|(_, c)| !v1_controllers.contains(*c))
    .map(|(name, _)| name)
    .collect();
    let mut enabled = Vec::new();
    if !wanted.is_empty() {
        enable_controllers(&hierarchies.v2_own, &wanted, true)?;
        enabled = enable_controllers(&v2_parent, &wanted, false)?;
    }
    let in_v2 = |name: &str| enabled.contains(&name).then_some(Place::V2);
    let pids = pids_v1.or_else(|| in_v2("pids"));
    let memory = memory_v1.or_else(|| in_v2("memory"));

    let (mut memsw, mut swap_max) = (false, false);
    match memory {
        Some(Place::V1(n)) => {
            let parent = &v1_parents[n];
            memsw = parent.join("memory.memsw.limit_in_bytes").exists();
            // Children inherit oom_kill_disable from here: make sure the OOM killer kills.
            let oom_control = parent.join("memory.oom_control");
            let text = files::read_small(&oom_control).map_err(|source| CgroupError::Read {
                path: oom_control.clone(),
                source,
            })?;
            if files::keyed_value(&text, "oom_kill_disable") == Some(1) {
                files::write(&oom_control, "0")?;
            }
        }
        Some(Place::V2) => swap_max = v2_parent.join("memory.swap.max").exists(),
        None => {}
    }
    Ok(Layout {
        v2_parent,
        v1_parents,
        pids,
        memory,
        cpu_time: cpuacct_v1.unwrap_or(Place::V2),
        memsw,
        swap_max,
    })
}

/// Creates `dir` unless it exists.
fn make_dir_if_missing(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Create {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Enables those of `wanted` that `dir` has (`cgroup.controllers`) in its
/// `cgroup.subtree_control`, and returns the controllers enabled there. `pids` and `memory` must
/// succeed; `cpu` is best effort (it refuses while real-time threads are in the subtree).
///
/// cgroup v2 enables controllers only for cgroups without processes (the root excepted): when
/// `move_self` and the kernel says `EBUSY`, this process moves into the leaf [`SUPERVISOR`]
/// below `dir` and tries again.
fn enable_controllers<'a>(
    dir: &Path,
    wanted: &[&'a str],
    move_self: bool,
) -> Result<Vec<&'a str>, CgroupError> {
    let read = |file: &str| {
        let path = dir.join(file);
        files::read_small(&path).map_err(|source| CgroupError::Read { path, source })
    };
    let available = read("cgroup.controllers")?;
    let mut enabled_now = read("cgroup.subtree_control")?;
    let subtree_control = dir.join("cgroup.subtree_control");
    let mut moved = false;
    let mut enabled = Vec::new();
    for &name in wanted
        .iter()
        .filter(|&&name| files::lists(&available, name))
    {
        if files::lists(&enabled_now, name) {
            enabled.push(name);
            continue;
        }
        let value = format!("+{name}");
        let mut result = files::write_io(&subtree_control, &value);
        if move_self
            && !moved
            && result
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
        {
            let supervisor = dir.join(SUPERVISOR);
            make_dir_if_missing(&supervisor)?;
            // "0" moves the writing process (all its threads): into a child of its own cgroup.
            files::write(&supervisor.join("cgroup.procs"), "0")?;
            moved = true;
            result = files::write_io(&subtree_control, &value);
        }
        match result {
            Ok(()) => {
                enabled.push(name);
                enabled_now.push(' ');
                enabled_now.push_str(name);
            }
            Err(_) if name == "cpu" => {}
            Err(e) if move_self && e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::SharedCgroup {
                    controller: name.to_owned(),
                    path: subtree_control,
                });
            }
            Err(source) => {
                return Err(CgroupError::Write {
                    path: subtree_control,
                    value,
                    source,
                });
            }
        }
    }
    Ok(enabled)
}
