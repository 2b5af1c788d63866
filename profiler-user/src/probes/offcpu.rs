//! Off-CPU time: the `sched_switch` raw tracepoint and its configuration.

use aya::{
    Ebpf,
    programs::{ProgramError, RawTracePoint},
};
use profiler_common::{MAP_OFFCPU_CONFIG, OffCpuConfig};

use super::{
    ProbeError,
    program::{attach_error, program, set_config},
};

const PROGRAM: &str = "sched_switch";
const WHAT: &str = "raw tracepoint sched_switch";

/// The attached off-CPU tracer; [`OffCpuTracer::stop`] detaches it.
#[derive(Debug)]
pub struct OffCpuTracer;

impl OffCpuTracer {
    /// Records blocks of at least `min_block_ns` of targeted tasks from now on.
    pub fn attach(ebpf: &mut Ebpf, min_block_ns: u64) -> Result<Self, ProbeError> {
        set_config(ebpf, MAP_OFFCPU_CONFIG, OffCpuConfig { min_block_ns })?;
        let attach = |p: &mut RawTracePoint| -> Result<(), ProgramError> {
            p.load()?;
            p.attach(PROGRAM)?;
            Ok(())
        };
        attach(program(ebpf, PROGRAM)?).map_err(attach_error(WHAT))?;
        Ok(Self)
    }

    /// Detaches; blocks still in progress are not counted.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        program::<RawTracePoint>(ebpf, PROGRAM)?
            .unload()
            .map_err(attach_error(WHAT))
    }
}
