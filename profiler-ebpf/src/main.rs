//! flamewarden's kernel-side programs. Entry points are thin wrappers; each probe family lives
//! in its own module, every map in `maps`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only atomic add on the BPF target"
)]

mod guard;
mod guard_audit;
mod guard_maps;
mod guard_open;
mod guard_sys;
mod guard_tasks;
mod lifecycle;
mod maps;
mod net;
mod net_maps;
mod net_traffic;
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
    EbpfContext as _,
    macros::{
        btf_tracepoint, cgroup_sock, cgroup_sock_addr, perf_event, raw_tracepoint, tracepoint,
    },
    programs::{
        BtfTracePointContext, PerfEventContext, RawTracePointContext, SockAddrContext, SockContext,
        TracePointContext,
    },
};
use profiler_common::GuardHook;

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

/// `sched/sched_process_exec`: counts execs per cgroup.
#[tracepoint]
pub fn proc_exec(ctx: TracePointContext) -> u32 {
    match lifecycle::try_exec(&ctx) {
        Ok(_) | Err(_) => 0,
    }
}

/// `sched/sched_process_exit`: counts process exits per cgroup, with the latest wait status.
#[tracepoint]
pub fn proc_exit(ctx: TracePointContext) -> u32 {
    match lifecycle::try_exit(&ctx) {
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

/// Raw tracepoint `sys_enter` of the guard: kill rules, and what audit mode would refuse.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn guard_sys_enter(ctx: RawTracePointContext) -> i32 {
    match guard_sys::try_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `sys_exit` of the guard: refused calls, forks, kills seccomp skipped.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn guard_sys_exit(ctx: RawTracePointContext) -> i32 {
    match guard_sys::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `sched/sched_process_exec` of the guard: files executed in audit-mode runs.
#[tracepoint]
pub fn guard_sched_exec(ctx: TracePointContext) -> u32 {
    match guard_audit::try_exec(&ctx) {
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

/// Guard `cgroup/connect4`: may a sandboxed process connect to an IPv4 address?
#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Connect4, false)
}

/// Guard `cgroup/connect6`: may a sandboxed process connect to an IPv6 address?
#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Connect6, true)
}

/// Guard `cgroup/sendmsg4`: may a sandboxed process send a UDP datagram to an IPv4 address?
#[cgroup_sock_addr(sendmsg4)]
pub fn guard_sendmsg4(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Sendmsg4, false)
}

/// Guard `cgroup/sendmsg6`: may a sandboxed process send a UDP datagram to an IPv6 address?
#[cgroup_sock_addr(sendmsg6)]
pub fn guard_sendmsg6(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Sendmsg6, true)
}

/// Guard `cgroup/bind4`: may a sandboxed process bind to an IPv4 address?
#[cgroup_sock_addr(bind4)]
pub fn guard_bind4(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Bind4, false)
}

/// Guard `cgroup/bind6`: may a sandboxed process bind to an IPv6 address?
#[cgroup_sock_addr(bind6)]
pub fn guard_bind6(ctx: SockAddrContext) -> i32 {
    guard::decide_addr(ctx.sock_addr, GuardHook::Bind6, true)
}

/// Guard `cgroup/sock_create`: refuses raw and packet sockets in a sandbox.
#[cgroup_sock(sock_create)]
pub fn guard_sock_create(ctx: SockContext) -> i32 {
    guard::decide_sock_create(ctx.sock)
}

/// Raw tracepoint `inet_sock_set_state`: TCP connection opens, state changes and closes.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn net_set_state(ctx: RawTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_set_state::<net::Probe>(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// `net_set_state` as a BTF-typed raw tracepoint: plain loads instead of probe reads.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn net_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_set_state::<net::Direct>(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `tcp_retransmit_skb`: retransmissions of tracked connections.
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn net_retransmit(ctx: RawTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_retransmit::<net::Probe>(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// `net_retransmit` as a BTF-typed raw tracepoint.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn net_retransmit_btf(ctx: BtfTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_retransmit::<net::Direct>(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `tcp_receive_reset`: RSTs received by tracked connections.
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn net_receive_reset(ctx: RawTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_receive_reset(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// Raw tracepoint `tcp_send_reset`: RSTs sent.
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn net_send_reset(ctx: RawTracePointContext) -> i32 {
    if net::hooks_only() {
        return 0;
    }
    match net::try_send_reset(ctx.as_ptr()) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup_skb/ingress` on the cgroup2 root: bytes and packets received per cgroup.
#[aya_ebpf::macros::cgroup_skb(ingress)]
pub fn net_ingress(ctx: aya_ebpf::programs::SkBuffContext) -> i32 {
    if net::hooks_only() {
        return 1;
    }
    net_traffic::count_traffic(&ctx, profiler_common::TRAFFIC_INGRESS);
    1
}

/// `cgroup_skb/egress` on the cgroup2 root: bytes and packets sent per cgroup.
#[aya_ebpf::macros::cgroup_skb(egress)]
pub fn net_egress(ctx: aya_ebpf::programs::SkBuffContext) -> i32 {
    if net::hooks_only() {
        return 1;
    }
    net_traffic::count_traffic(&ctx, profiler_common::TRAFFIC_EGRESS);
    1
}
