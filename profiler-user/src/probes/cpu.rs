//! CPU sampling: the `cpu_sample` program on the software `cpu-clock` event of every online CPU.

use aya::{
    Ebpf,
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};

use super::{
    ProbeError,
    program::{attach_error, program},
};

const PROGRAM: &str = "cpu_sample";

/// Handle on the attached sampler; dropping the `Ebpf` detaches it, [`CpuSampler::stop`] does so
/// explicitly so that maps can be read while nothing writes them.
#[derive(Debug)]
pub struct CpuSampler {
    cpus: usize,
}

impl CpuSampler {
    /// Loads the sampling program and attaches it at `frequency_hz` on every online CPU.
    pub fn attach(ebpf: &mut Ebpf, frequency_hz: u64) -> Result<Self, ProbeError> {
        let program: &mut PerfEvent = program(ebpf, PROGRAM)?;
        program.load().map_err(attach_error(PROGRAM))?;
        let cpus =
            online_cpus().map_err(|(what, e)| ProbeError::PerfEvents(format!("{what}: {e}")))?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .map_err(|source| match source {
                    aya::programs::ProgramError::SyscallError(e) => ProbeError::PerfEvents(
                        format!("perf_event_open on CPU {cpu}: {}", e.io_error),
                    ),
                    source => attach_error(format!("{PROGRAM} on CPU {cpu}"))(source),
                })?;
        }
        Ok(Self { cpus: cpus.len() })
    }

    /// Number of CPUs sampled.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Detaches from every CPU; samples already aggregated stay in the maps.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        program::<PerfEvent>(ebpf, PROGRAM)?
            .unload()
            .map_err(attach_error(PROGRAM))
    }
}
