//! A run's registration with the guard's kernel side: its entries in the pinned maps (network
//! policy, run state, audit-mode paths), written before the command starts and removed after
//! the verdict; the maps themselves, opened once per process; runs of a flamewarden that died,
//! reaped; the syscall layer held while runs need it.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use profiler_common::GuardRun;

use super::{
    cgroup::{RunCgroup, sandboxes_parent_v2_dir},
    run::SandboxError,
};
use crate::{
    guard::{
        PreparedLayers,
        attach::network_entries,
        interpreters::mark_interpreters,
        run_entry::{fs_allow_entries, run_entry},
    },
    policy::{CompiledPolicy, Mode},
    probes::{
        guard::{self as guard_probes, GuardMaps, SysHooks, attach},
        guard_runs::RunMaps,
    },
};

/// `CLOCK_MONOTONIC` in ns, the kernel side's clock (`bpf_ktime_get_ns`): the run's start.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The guard's pinned maps, opened once per process (a batch of runs shares them); the first
/// use attaches the programs (or adopts them) and reaps runs left behind.
struct Kernel {
    guard: GuardMaps,
    runs: RunMaps,
    /// The attachment's pin directory.
    dir: PathBuf,
}

static KERNEL: OnceLock<Mutex<Kernel>> = OnceLock::new();

fn kernel() -> Result<&'static Mutex<Kernel>, SandboxError> {
    if let Some(kernel) = KERNEL.get() {
        return Ok(kernel);
    }
    let parent = sandboxes_parent_v2_dir()?;
    let (_, dir, _) = attach(&parent, SysHooks::WhileRuns)?;
    let mut kernel = Kernel {
        guard: GuardMaps::open(&dir)?,
        runs: RunMaps::open(&dir)?,
        dir,
    };
    reap_stale(&mut kernel);
    super::workdir::reap_stale();
    Ok(KERNEL.get_or_init(|| Mutex::new(kernel)))
}

/// Detaches the guard's syscall layer when no run is registered any more (see
/// [`SysHooks::WhileRuns`]): at the end of a batch. A single `sandbox run` leaves it: the next
/// run would attach it again, and attaching a tracepoint soon after its last probe went waits
/// for an RCU grace period (about 10 ms a run here).
pub fn release_sys_hooks() {
    let Some(kernel) = KERNEL.get() else {
        return;
    };
    let dir = lock(kernel).dir.clone();
    if let Err(e) = guard_probes::release_sys_hooks(&dir) {
        tracing::warn!("cannot detach the guard's syscall hooks: {e}");
    }
}

fn lock(kernel: &Mutex<Kernel>) -> std::sync::MutexGuard<'_, Kernel> {
    kernel
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The run's entries in the guard's maps; removed on drop.
pub(super) struct Registered {
    kernel: &'static Mutex<Kernel>,
    /// The run's cgroup id.
    pub(super) id: u64,
    /// The run's entry as written.
    pub(super) run: GuardRun,
    fs: Vec<(u32, profiler_common::GuardFsKey, u32)>,
    allow: Vec<(u32, profiler_common::GuardAllowKey)>,
}

impl Registered {
    /// Writes the entries of the run of `program` in cgroup `id` under `policy` in `mode`
    /// (`layers`: its prepared paths) and makes sure the syscall layer is attached.
    pub(super) fn new(
        policy: &CompiledPolicy,
        mode: Mode,
        layers: &PreparedLayers,
        program: &Path,
        id: u64,
    ) -> Result<Self, SandboxError> {
        let kernel = kernel()?;
        let entries = network_entries(&policy.network, mode, id);
        let run = run_entry(policy, mode, monotonic_ns());
        let mut fs = if mode == Mode::Audit {
            fs_allow_entries(id, layers.paths())
        } else {
            Vec::new()
        };
        mark_interpreters(&mut fs, id, layers.paths(), program);
        let registered = Self {
            kernel,
            id,
            run,
            fs,
            allow: entries.allow,
        };
        let mut maps = lock(kernel);
        // A fresh cgroup id: no entries of an earlier holder of the id are left (runs are
        // removed with theirs, and a dead flamewarden's runs are reaped), nothing to clear.
        maps.guard
            .insert_policy(id, entries.policy, &registered.allow)?;
        maps.runs.insert(id, &registered.run, &registered.fs)?;
        let dir = maps.dir.clone();
        drop(maps);
        // With the run's entry in place: a release meanwhile leaves the hooks attached.
        guard_probes::hold_sys_hooks(&dir)?;
        Ok(registered)
    }

    /// The guard's pid map, where the command notes itself before exec.
    pub(super) fn pids_fd(&self) -> std::os::fd::RawFd {
        lock(self.kernel).runs.pids_fd()
    }

    /// The run's entry with the kernel's state.
    pub(super) fn state(&self) -> Option<GuardRun> {
        lock(self.kernel).runs.state(self.id)
    }

    /// The violations the kernel recorded.
    pub(super) fn violations(&self) -> Vec<profiler_common::GuardViolation> {
        lock(self.kernel).runs.violations(self.id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut maps = lock(self.kernel);
        maps.runs.remove(self.id, &self.fs);
        maps.guard.remove_policy_entries(self.id, &self.allow);
    }
}

/// Kills and removes the runs of a flamewarden that died (SIGKILL, a crash) with their map
/// entries: a run's name carries the pid of the flamewarden that made it.
fn reap_stale(kernel: &mut Kernel) {
    let Ok(names) = RunCgroup::run_names() else {
        return;
    };
    for name in names {
        if !super::made_by_a_gone_flamewarden(&name, "run-") {
            continue;
        }
        if let Ok(Some(run)) = RunCgroup::adopt(&name) {
            tracing::info!(run = %name, "removing a run whose flamewarden is gone");
            let id = run.id();
            kernel.runs.remove_all(id);
            let _ = kernel.guard.remove_policy(id);
            if let Err(e) = run.remove() {
                tracing::warn!(run = %name, error = %e, "cannot remove a stale run");
            }
        }
    }
}
