//! The guard's syscall layer (`sys_enter`/`sys_exit` raw tracepoints): fired on every system
//! call of every process on the host once attached, so an attachment of flamewarden's own runs
//! has it attached only while they need it ([`SysHooks::WhileRuns`]), under an `flock` of the
//! pin directory.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, Map, MapData},
    programs::{
        RawTracePoint,
        links::{FdLink, PinnedLink},
    },
};
use profiler_common::MAP_GUARD_RUNS;

use super::{
    GUARD_PIN_ROOT, GUARD_TRACEPOINTS, GuardAttachError, link_pin, map_error, open_pinned, prog_pin,
};

/// How long an attachment's syscall-layer tracepoints stay attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysHooks {
    /// Pinned with the rest until `guard detach`: `guard attach` and the daemon, whose cgroups
    /// are run by someone else, at any time.
    Pinned,
    /// Attached by a run ([`hold_sys_hooks`]) and detached where no run is registered
    /// ([`release_sys_hooks`]: at the end of a batch, by `guard release`, by the daemon after
    /// `guard_idle_detach_seconds`): the sandboxes' parent, whose runs are flamewarden's own. An
    /// idle host does not pay for them on every system call.
    WhileRuns,
}

/// An empty directory in the pin directory of a [`SysHooks::WhileRuns`] attachment.
pub(super) const WHILE_RUNS_MARKER: &str = "sys-hooks-while-runs";

/// An exclusive `flock` of a directory, released when the file is dropped: of a cgroup, it
/// serializes attaching, adopting and detaching on the cgroup; of a pin directory, the syscall
/// layer's holds and releases.
pub(super) fn lock_dir(path: &Path) -> Result<File, GuardAttachError> {
    let pin_err = |source| GuardAttachError::Pin {
        path: path.to_path_buf(),
        source,
    };
    let lock = File::open(path).map_err(pin_err)?;
    // SAFETY: flock on a descriptor we own; the lock goes with it when `lock` is dropped.
    while unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(pin_err(e));
        }
    }
    Ok(lock)
}

/// Attaches the syscall-layer programs pinned in `dir` to their tracepoints and pins the
/// links, where a link is not pinned yet: under the lock of the cgroup (attaching) or of the
/// pin directory (a run holding the layer).
pub(super) fn attach_sys_links(dir: &Path) -> Result<(), GuardAttachError> {
    for (name, tracepoint) in GUARD_TRACEPOINTS {
        let pin = link_pin(dir, name);
        if pin.exists() {
            continue;
        }
        let prog_err = |source| GuardAttachError::Program { name, source };
        let mut program = RawTracePoint::from_pin(prog_pin(dir, name)).map_err(prog_err)?;
        let link_id = program.attach(tracepoint).map_err(prog_err)?;
        let link = program.take_link(link_id).map_err(prog_err)?;
        FdLink::from(link)
            .pin(pin)
            .map_err(|e| GuardAttachError::Link {
                name,
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// A run is about to start under the [`SysHooks::WhileRuns`] attachment pinned in `dir` (its
/// entries are in the maps already): attaches the syscall layer unless attached.
pub fn hold_sys_hooks(dir: &Path) -> Result<(), GuardAttachError> {
    let _lock = lock_dir(dir)?;
    attach_sys_links(dir)
}

/// When no run is registered in the [`SysHooks::WhileRuns`] attachment pinned in `dir` (a
/// batch ended, the daemon saw none for a while), detaches the syscall layer. Returns whether
/// it did.
///
/// Under an `flock` of the pin directory, as [`hold_sys_hooks`]: a run registered before the
/// check keeps the hooks; one registered after it attaches them again.
pub fn release_sys_hooks(dir: &Path) -> Result<bool, GuardAttachError> {
    let _lock = lock_dir(dir)?;
    if !dir.join(WHILE_RUNS_MARKER).is_dir()
        || !sys_hooks_attached(dir)
        || runs_registered(dir).unwrap_or(true)
    {
        return Ok(false);
    }
    for (name, _) in GUARD_TRACEPOINTS {
        unpin_link(dir, name)?;
    }
    Ok(true)
}

/// Whether the syscall layer of the attachment pinned in `dir` is attached.
pub fn sys_hooks_attached(dir: &Path) -> bool {
    GUARD_TRACEPOINTS
        .iter()
        .any(|(name, _)| link_pin(dir, name).exists())
}

/// Whether a run is registered in the attachment pinned in `dir` (an entry in `GUARD_RUNS`).
pub fn runs_registered(dir: &Path) -> Result<bool, GuardAttachError> {
    let runs: HashMap<MapData, u64, profiler_common::GuardRun> =
        HashMap::try_from(Map::HashMap(open_pinned(dir, MAP_GUARD_RUNS)?))
            .map_err(map_error(MAP_GUARD_RUNS))?;
    Ok(runs.keys().next().is_some())
}

/// The pin directories of the [`SysHooks::WhileRuns`] attachments.
pub fn while_runs_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(GUARD_PIN_ROOT) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|dir| dir.join(WHILE_RUNS_MARKER).is_dir())
        .collect()
}

/// Removes the link pin of `name` in `dir`: the program is detached as the last reference goes.
pub(super) fn unpin_link(dir: &Path, name: &'static str) -> Result<(), GuardAttachError> {
    let path = link_pin(dir, name);
    if !path.exists() {
        return Ok(());
    }
    let link = PinnedLink::from_pin(&path).map_err(|e| GuardAttachError::Link {
        name,
        source: Box::new(e),
    })?;
    // Unpinning drops the last reference once the returned fd closes: the program is
    // detached.
    let fd_link = link
        .unpin()
        .map_err(|source| GuardAttachError::Pin { path, source })?;
    drop(fd_link);
    Ok(())
}
