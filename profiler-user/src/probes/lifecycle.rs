//! Following forks: children of followed targets become targets in the kernel, at fork time.

use aya::{Ebpf, programs::TracePoint};

use super::ProbeError;

const PROGRAM: &str = "sched_process_fork";

/// The attached fork follower.
#[derive(Debug)]
pub struct ForkFollower;

impl ForkFollower {
    /// Attaches `sched/sched_process_fork`.
    pub fn attach(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let program: &mut TracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(ProbeError::MissingProgram(PROGRAM))?
            .try_into()
            .map_err(|source| ProbeError::Attach {
                what: PROGRAM.into(),
                source,
            })?;
        program.load().map_err(|source| ProbeError::Attach {
            what: PROGRAM.into(),
            source,
        })?;
        program
            .attach("sched", "sched_process_fork")
            .map_err(|source| ProbeError::Attach {
                what: PROGRAM.into(),
                source,
            })?;
        Ok(Self)
    }
}
