//! Syscall tracing: the `sys_enter` / `sys_exit` raw tracepoints and their configuration.

use aya::{
    Ebpf,
    programs::{ProgramError, RawTracePoint},
};
use profiler_common::{MAP_SYSCALL_CONFIG, SyscallConfig};

use super::{
    ProbeError,
    program::{attach_error, program, set_config},
};

const ENTER: &str = "sys_enter";
const EXIT: &str = "sys_exit";

/// The attached syscall tracer; [`SyscallTracer::stop`] detaches it so that its maps can be
/// read while nothing writes them.
#[derive(Debug)]
pub struct SyscallTracer;

impl SyscallTracer {
    /// Writes `config` (slow-call threshold, stacks) and attaches both tracepoints: entry
    /// first, so that no call is seen leaving without having been seen entering.
    pub fn attach(ebpf: &mut Ebpf, config: SyscallConfig) -> Result<Self, ProbeError> {
        set_config(ebpf, MAP_SYSCALL_CONFIG, config)?;
        for name in [ENTER, EXIT] {
            let attach = |p: &mut RawTracePoint| -> Result<(), ProgramError> {
                p.load()?;
                p.attach(name)?;
                Ok(())
            };
            attach(program(ebpf, name)?).map_err(attach_error(format!("raw tracepoint {name}")))?;
        }
        Ok(Self)
    }

    /// Replaces the configuration of the attached tracer (its next calls see it).
    pub fn reconfigure(ebpf: &mut Ebpf, config: SyscallConfig) -> Result<(), ProbeError> {
        set_config(ebpf, MAP_SYSCALL_CONFIG, config)
    }

    /// Detaches both tracepoints (entry first); what they counted stays in the maps.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        for name in [ENTER, EXIT] {
            program::<RawTracePoint>(ebpf, name)?
                .unload()
                .map_err(attach_error(format!("raw tracepoint {name}")))?;
        }
        Ok(())
    }
}
