//! Loads the embedded eBPF object, probes kernel features and attaches programs per family.

mod cpu;
mod error;
pub mod fs_layout;
pub mod guard;
pub mod guard_runs;
mod lifecycle;
pub mod net;
pub mod net_layout;
mod offcpu;
mod program;
mod syscalls;
pub mod system;
mod targets;
pub mod tracefs;

use aya::{Ebpf, EbpfLoader};

pub use cpu::CpuSampler;
pub use error::ProbeError;
pub use lifecycle::{ForkFollower, ProcessCounter};
pub use net::NetTracer;
pub use offcpu::OffCpuTracer;
pub use syscalls::SyscallTracer;
pub use targets::{CgroupTarget, Targets};

/// The eBPF object built by `build.rs`; empty when the crate was built without bpf-linker.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf"));

/// Map sizes chosen by the user; the object's defaults otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSizes {
    /// Capacity of the sample aggregation map.
    pub sample_keys: Option<u32>,
    /// Capacity of the stack-trace map.
    pub stacks: Option<u32>,
}

/// A probe family whose maps a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Syscall statistics and slow-call events.
    Syscalls,
    /// Off-CPU time from `sched_switch`.
    OffCpu,
    /// The guard: sandbox runs, violations, network policies.
    Guard,
    /// TCP connections and per-cgroup traffic.
    Net,
    /// Exec and exit counts per cgroup.
    Lifecycle,
}

/// Maps of a family shrunk to the smallest size the kernel accepts when the family is unused:
/// creating (and freeing) large preallocated maps is most of a short recording's set-up time.
const FAMILY_MAPS: [(Family, &str, u32); 22] = [
    (Family::Syscalls, profiler_common::MAP_SYSCALL_STATS, 1),
    (Family::Syscalls, profiler_common::MAP_SYSCALL_ERRNOS, 1),
    (Family::Syscalls, profiler_common::MAP_SYSCALL_INFLIGHT, 1),
    // A ring buffer is at least one page.
    (Family::Syscalls, profiler_common::MAP_SYSCALL_EVENTS, 4096),
    (Family::OffCpu, profiler_common::MAP_OFFCPU_TIMES, 1),
    (Family::OffCpu, profiler_common::MAP_OFFCPU_START, 1),
    (Family::OffCpu, profiler_common::MAP_OFFCPU_STATS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_POLICIES, 1),
    (Family::Guard, profiler_common::MAP_GUARD_ALLOW, 1),
    (Family::Guard, profiler_common::MAP_GUARD_EVENTS, 4096),
    (Family::Guard, profiler_common::MAP_GUARD_RUNS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_VIOLATIONS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_FS_ALLOW, 1),
    (Family::Guard, profiler_common::MAP_GUARD_NET_PENDING, 1),
    (Family::Guard, profiler_common::MAP_GUARD_SYSCALL_CLASS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_RUN_PIDS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_STATS, 1),
    (Family::Guard, profiler_common::MAP_GUARD_SEEN, 1),
    (Family::Net, profiler_common::MAP_NET_CONNS, 1),
    (Family::Net, profiler_common::MAP_NET_TRAFFIC, 1),
    (Family::Net, profiler_common::MAP_NET_EVENTS, 4096),
    (Family::Lifecycle, profiler_common::MAP_PROC_COUNTS, 1),
];

/// Loads the embedded object with every family's maps at full size.
pub fn load(sizes: MapSizes) -> Result<Ebpf, ProbeError> {
    load_for(sizes, &[Family::Syscalls, Family::OffCpu, Family::Guard])
}

/// Loads the embedded object after checking privileges and kernel features; the maps of
/// families not in `families` are created at their minimum size (their programs stay unused).
pub fn load_for(sizes: MapSizes, families: &[Family]) -> Result<Ebpf, ProbeError> {
    load_tuned(sizes, families, &[])
}

/// [`load_for`] with other capacities for some maps (`(name, max_entries)`; for a ring buffer,
/// its size in bytes): a long-running reader (the daemon) keeps its ring buffers small.
pub fn load_tuned(
    sizes: MapSizes,
    families: &[Family],
    max_entries: &[(&str, u32)],
) -> Result<Ebpf, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    system::check_privileges()?;
    system::check_btf()?;
    system::ensure_tracefs()?;
    let fork_child_pid = tracefs::field_offset("sched", "sched_process_fork", "child_pid")?;
    let mut loader = EbpfLoader::new();
    loader.override_global("FORK_CHILD_PID_OFFSET", &fork_child_pid, true);
    let exec_filename = tracefs::field_offset("sched", "sched_process_exec", "filename")?;
    loader.override_global("EXEC_FILENAME_OFFSET", &exec_filename, true);
    // Parsing the kernel's BTF takes a while: only for the family that reads kernel structs.
    let net_layout = if families.contains(&Family::Net) {
        net_layout::kernel_net_layout()?
    } else {
        profiler_common::NetLayout::UNSET
    };
    loader.override_global(profiler_common::GLOBAL_NET_LAYOUT, &net_layout, true);
    // Audit mode judges opened files by their dentries; without the offsets, by the path.
    // (Parsing the BTF takes about 0.25 s: only the guard's attachment, once a host, pays it.)
    let fs_layout = if families.contains(&Family::Guard) {
        fs_layout::kernel_fs_layout().unwrap_or_else(|e| {
            tracing::warn!("audit mode judges opens by their path argument only: {e}");
            profiler_common::GuardFsLayout::UNSET
        })
    } else {
        profiler_common::GuardFsLayout::UNSET
    };
    loader.override_global(profiler_common::GLOBAL_GUARD_FS_LAYOUT, &fs_layout, true);
    // 0 and u32::MAX: unknown (the programs are unused without the family).
    let (mut exit_code, mut group_dead) = (0u32, u32::MAX);
    if families.contains(&Family::Lifecycle) {
        exit_code = net_layout::task_exit_code_offset()?;
        // Older kernels have no `group_dead`: a thread group leader's exit counts then.
        group_dead =
            tracefs::field_offset("sched", "sched_process_exit", "group_dead").unwrap_or(u32::MAX);
    }
    loader.override_global(
        profiler_common::GLOBAL_TASK_EXIT_CODE_OFFSET,
        &exit_code,
        true,
    );
    loader.override_global(
        profiler_common::GLOBAL_EXIT_GROUP_DEAD_OFFSET,
        &group_dead,
        true,
    );
    if let Some(n) = sizes.sample_keys {
        loader.map_max_entries(profiler_common::MAP_SAMPLE_COUNTS, n);
    }
    if let Some(n) = sizes.stacks {
        loader.map_max_entries(profiler_common::MAP_STACKS, n);
    }
    for (family, map, minimum) in FAMILY_MAPS {
        if !families.contains(&family) {
            loader.map_max_entries(map, minimum);
        }
    }
    for (map, n) in max_entries {
        loader.map_max_entries(map, *n);
    }
    loader.load(EBPF_OBJECT).map_err(ProbeError::Load)
}
