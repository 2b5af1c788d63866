//! Types shared by flamewarden's kernel side (`profiler-ebpf`) and user side (`profiler-user`).
//!
//! Every struct here crosses the kernel/user boundary as raw bytes: `#[repr(C)]`, explicit
//! padding, `u32` flags instead of `bool`, and a size pinned at compile time.
#![no_std]

pub mod guard;
pub mod guard_fs;
pub mod guard_run;
pub mod lifecycle;
pub mod net;
pub mod offcpu;
pub mod sample;
pub mod syscalls;

pub use guard::*;
pub use guard_fs::*;
pub use guard_run::*;
pub use lifecycle::*;
pub use net::*;
pub use offcpu::*;
pub use sample::*;
pub use syscalls::*;

/// Length of a task's `comm` in the kernel, including the trailing NUL.
pub const TASK_COMM_LEN: usize = 16;

/// Deepest stack the kernel's stack-trace map records (`PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;
