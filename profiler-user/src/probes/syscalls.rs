//! Syscall tracing: the `sys_enter` / `sys_exit` raw tracepoints and their configuration.

use aya::{
    Ebpf,
    maps::Array,
    programs::{ProgramError, RawTracePoint},
};
use profiler_common::{MAP_SYSCALL_CONFIG, SyscallConfig};

use super::ProbeError;

const ENTER: &str = "sys_enter";
const EXIT: &str = "sys_exit";

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut RawTracePoint, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::Attach {
            what: name.into(),
            source,
        })
}

/// The attached syscall tracer; [`SyscallTracer::stop`] detaches it so that its maps can be
/// read while nothing writes them.
#[derive(Debug)]
pub struct SyscallTracer;

impl SyscallTracer {
    /// Writes `config` (slow-call threshold, stacks) and attaches both tracepoints: entry
    /// first, so that no call is seen leaving without having been seen entering.
    pub fn attach(ebpf: &mut Ebpf, config: SyscallConfig) -> Result<Self, ProbeError> {
        let map = ebpf
            .map_mut(MAP_SYSCALL_CONFIG)
            .ok_or(ProbeError::MissingMap(MAP_SYSCALL_CONFIG))?;
        let mut array: Array<_, SyscallConfig> =
            Array::try_from(map).map_err(|source| ProbeError::Map {
                map: MAP_SYSCALL_CONFIG,
                source,
            })?;
        array.set(0, config, 0).map_err(|source| ProbeError::Map {
            map: MAP_SYSCALL_CONFIG,
            source,
        })?;
        for name in [ENTER, EXIT] {
            let attach = |p: &mut RawTracePoint| -> Result<(), ProgramError> {
                p.load()?;
                p.attach(name)?;
                Ok(())
            };
            attach(program(ebpf, name)?).map_err(|source| ProbeError::Attach {
                what: format!("raw tracepoint {name}"),
                source,
            })?;
        }
        Ok(Self)
    }

    /// Detaches both tracepoints (entry first); what they counted stays in the maps.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        for name in [ENTER, EXIT] {
            program(ebpf, name)?
                .unload()
                .map_err(|source| ProbeError::Attach {
                    what: format!("raw tracepoint {name}"),
                    source,
                })?;
        }
        Ok(())
    }
}
