//! Off-CPU time: the `sched_switch` raw tracepoint and its configuration.

use aya::{
    Ebpf,
    maps::Array,
    programs::{ProgramError, RawTracePoint},
};
use profiler_common::{MAP_OFFCPU_CONFIG, OffCpuConfig};

use super::ProbeError;

const PROGRAM: &str = "sched_switch";

fn program(ebpf: &mut Ebpf) -> Result<&mut RawTracePoint, ProbeError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(ProbeError::MissingProgram(PROGRAM))?
        .try_into()
        .map_err(|source| ProbeError::Attach {
            what: PROGRAM.into(),
            source,
        })
}

/// The attached off-CPU tracer; [`OffCpuTracer::stop`] detaches it.
#[derive(Debug)]
pub struct OffCpuTracer;

impl OffCpuTracer {
    /// Records blocks of at least `min_block_ns` of targeted tasks from now on.
    pub fn attach(ebpf: &mut Ebpf, min_block_ns: u64) -> Result<Self, ProbeError> {
        let map = ebpf
            .map_mut(MAP_OFFCPU_CONFIG)
            .ok_or(ProbeError::MissingMap(MAP_OFFCPU_CONFIG))?;
        let mut array: Array<_, OffCpuConfig> =
            Array::try_from(map).map_err(|source| ProbeError::Map {
                map: MAP_OFFCPU_CONFIG,
                source,
            })?;
        array
            .set(0, OffCpuConfig { min_block_ns }, 0)
            .map_err(|source| ProbeError::Map {
                map: MAP_OFFCPU_CONFIG,
                source,
            })?;
        let attach = |p: &mut RawTracePoint| -> Result<(), ProgramError> {
            p.load()?;
            p.attach(PROGRAM)?;
            Ok(())
        };
        attach(program(ebpf)?).map_err(|source| ProbeError::Attach {
            what: "raw tracepoint sched_switch".into(),
            source,
        })?;
        Ok(Self)
    }

    /// Detaches; blocks still in progress are not counted.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        program(ebpf)?
            .unload()
            .map_err(|source| ProbeError::Attach {
                what: "raw tracepoint sched_switch".into(),
                source,
            })
    }
}
