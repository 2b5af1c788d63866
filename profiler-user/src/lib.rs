//! flamewarden: an eBPF CPU, syscall and network profiler and sandbox guard for online judges.
//!
//! Data flows one way: [`probes`] load and attach the kernel programs, [`collect`] drains their
//! maps and buffers into typed data, [`symbolize`] turns addresses into frames, [`profile`]
//! builds folded stacks, flamegraphs, hot paths and reports, and [`export`] writes them out.
//! Everything between `probes`/`collect` and the files is pure and unit-tested without root.

pub mod ci;
pub mod cli;
pub mod collect;
pub mod daemon;
pub mod guard;
pub mod launch;
pub mod logging;
pub mod net;
pub mod policy;
pub mod probes;
pub mod profile;
pub mod record;
pub mod sandbox;
pub mod symbolize;
pub mod syscalls;
