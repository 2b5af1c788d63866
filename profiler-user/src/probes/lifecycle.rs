//! Following forks: children of followed targets become targets in the kernel, at fork time.

use aya::{Ebpf, programs::TracePoint};

use super::{
    ProbeError,
    program::{attach_error, program},
};

const PROGRAM: &str = "sched_process_fork";

/// The attached fork follower.
#[derive(Debug)]
pub struct ForkFollower;

impl ForkFollower {
    /// Attaches `sched/sched_process_fork`.
    pub fn attach(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let program: &mut TracePoint = program(ebpf, PROGRAM)?;
        program.load().map_err(attach_error(PROGRAM))?;
        program
            .attach("sched", "sched_process_fork")
            .map_err(attach_error(PROGRAM))?;
        Ok(Self)
    }
}

/// The attached exec and exit counters (`PROC_COUNTS`).
#[derive(Debug)]
pub struct ProcessCounter;

impl ProcessCounter {
    /// Attaches `sched/sched_process_exec` and `sched/sched_process_exit`.
    pub fn attach(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        for (program, event) in [
            ("proc_exec", "sched_process_exec"),
            ("proc_exit", "sched_process_exit"),
        ] {
            let attach_err = |source| ProbeError::Attach {
                what: program.into(),
                source,
            };
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram(program))?
                .try_into()
                .map_err(attach_err)?;
            tracepoint.load().map_err(attach_err)?;
            tracepoint.attach("sched", event).map_err(attach_err)?;
        }
        Ok(Self)
    }
}
