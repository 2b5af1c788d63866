//! Loads the embedded eBPF object, probes kernel features and attaches programs per family.

mod cpu;
mod error;
mod lifecycle;
mod offcpu;
mod syscalls;
pub mod system;
mod targets;
pub mod tracefs;

use aya::{Ebpf, EbpfLoader};

pub use cpu::CpuSampler;
pub use error::ProbeError;
pub use lifecycle::ForkFollower;
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

/// Loads the embedded object after checking privileges and kernel features.
pub fn load(sizes: MapSizes) -> Result<Ebpf, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    system::check_privileges()?;
    system::check_btf()?;
    system::ensure_tracefs()?;
    let fork_child_pid = tracefs::field_offset("sched", "sched_process_fork", "child_pid")?;
    let mut loader = EbpfLoader::new();
    loader.override_global("FORK_CHILD_PID_OFFSET", &fork_child_pid, true);
    if let Some(n) = sizes.sample_keys {
        loader.map_max_entries(profiler_common::MAP_SAMPLE_COUNTS, n);
    }
    if let Some(n) = sizes.stacks {
        loader.map_max_entries(profiler_common::MAP_STACKS, n);
    }
    loader.load(EBPF_OBJECT).map_err(ProbeError::Load)
}
