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
