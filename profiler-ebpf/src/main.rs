//! flamewarden's kernel-side programs. Entry points are thin wrappers; each probe family lives
//! in its own module, every map in `maps`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only atomic add on the BPF target"
)]

mod lifecycle;
mod maps;
mod offcpu;
mod sample;
mod syscalls;
mod targets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves panics unreachable; this only satisfies the compiler.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

use aya_ebpf::{
    macros::{perf_event, raw_tracepoint, tracepoint},
    programs::{PerfEventContext, RawTracePointContext, TracePointContext},
};

/// CPU sample: attached to the software `cpu-clock` event on every CPU.
#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    match sample::try_sample(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

/// `sched/sched_process_fork`: follows the children of targets.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match lifecycle::try_fork(&ctx) {
        Ok(_) | Err(_) => 0,
    }
}

/// Raw tracepoint `sys_enter`: stamps the entry time of a targeted thread's call.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    match syscalls::try_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `sys_exit`: accounts the call and emits it when slow.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    match syscalls::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `sched_switch`: off-CPU time of targeted tasks.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    match offcpu::try_sched_switch(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}
