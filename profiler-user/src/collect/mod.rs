//! The only code that reads BPF maps, ring buffers and perf buffers; yields typed data.

mod batch;
pub mod guard;
pub mod mappings;
pub mod net;
pub mod offcpu;
mod read;
pub mod samples;
pub mod syscalls;

pub use samples::{RawSamples, SampleCounters, SampleMaps, drain_samples};
