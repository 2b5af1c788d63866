//! profiler-user's policy module, compiled on its own for the fuzzer.
//!
//! `profiler-user/src/policy` uses nothing from the rest of its crate, so including its source
//! here fuzzes exactly the code `flamewarden policy check` runs.

#[path = "../../profiler-user/src/policy/mod.rs"]
pub mod policy;
