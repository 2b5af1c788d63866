//! The guard's network layer: cgroup `sock_addr` and `sock_create` programs that look up the
//! calling process's sandbox policy by cgroup id and refuse what it does not allow.
//!
//! The programs are attached once to a parent cgroup; untargeted processes cost one hash lookup
//! per ancestor level. Every refusal (or, in audit mode, would-be refusal) is a [`GuardEvent`].

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_get_current_ancestor_cgroup_id,
    },
    maps::lpm_trie::Key,
};
use profiler_common::{
    GUARD_ACTION_AUDITED, GUARD_ACTION_DENIED, GUARD_ALLOW_FIXED_BITS, GUARD_RULE_DENY_ALL,
    GUARD_RULE_NOT_ALLOWED, GUARD_RULE_PACKET_SOCKET, GUARD_RULE_RAW_SOCKET, GuardAllowKey,
    GuardEvent, GuardHook, GuardNetPending, GuardStat, MAX_CGROUP_LEVEL, NET_ALLOW_LIST, NET_AUDIT,
    NET_DENY_ALL, NET_DENY_RAW,
};

use crate::{
    guard_maps::{GUARD_NET_PENDING, GUARD_RUNS, GUARD_STATS},
    maps::{GUARD_ALLOW, GUARD_EVENTS, GUARD_POLICIES},
    targets::current_cgroup_id,
};

/// Verdict of a cgroup program: let the call through.
const ALLOW: i32 = 1;
/// Verdict of a cgroup program: refuse the call with `EPERM`.
const DENY: i32 = 0;

const AF_INET6: u32 = 10;
const AF_PACKET: u32 = 17;
const SOCK_RAW: u32 = 3;

/// The policy flags governing the current task and the cgroup id they are keyed by (0 when no
/// policy applies): the task's own cgroup's, else its deepest ancestor's. Plain integers rather
/// than an `Option` of a tuple: LLVM leaves the payload of a `None` undefined, and the verifier
/// refuses to read an uninitialised register on the merged path.
#[inline(always)]
fn current_policy(cgroup_id: u64) -> (u32, u64) {
    // SAFETY: the value is plain data copied out at once.
    if let Some(policy) = unsafe { GUARD_POLICIES.get(cgroup_id) } {
        return (policy.flags, cgroup_id);
    }
    let mut flags = 0u32;
    let mut found = 0u64;
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        // SAFETY: a helper without pointer arguments.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 || ancestor == cgroup_id {
            break;
        }
        // SAFETY: as above.
        if let Some(policy) = unsafe { GUARD_POLICIES.get(ancestor) } {
            flags = policy.flags;
            found = ancestor;
        }
        level += 1;
    }
    (flags, found)
}

/// An address-family call under decision.
struct AddrCall {
    family: u32,
    sock_type: u32,
    protocol: u32,
    /// Network byte order, as the kernel stores it.
    port_be: u16,
    addr: [u8; 16],
}

/// Reads the call out of the `sock_addr` context.
#[inline(always)]
fn read_call(ctx: *const bpf_sock_addr, v6: bool) -> AddrCall {
    // SAFETY: the context pointer is the kernel's, valid for the whole program; each field is
    // read with a 32-bit load the verifier accepts for this program type.
    let (family, sock_type, protocol, port) = unsafe {
        (
            (*ctx).user_family,
            (*ctx).type_,
            (*ctx).protocol,
            (*ctx).user_port,
        )
    };
    let mut addr = [0u8; 16];
    if v6 {
        let mut i = 0;
        while i < 4 {
            // SAFETY: as above.
            let word = unsafe { (*ctx).user_ip6[i] };
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            i += 1;
        }
    } else {
        // SAFETY: as above.
        let ip4 = unsafe { (*ctx).user_ip4 };
        addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    }
    AddrCall {
        family,
        sock_type,
        protocol,
        // user_port holds the port in network byte order in its low 16 bits.
        port_be: port as u16,
        addr,
    }
}

/// Whether the allow list of the policy keyed by `policy_cgroup` admits the destination.
#[inline(always)]
fn allowed(policy_cgroup: u64, call: &AddrCall) -> bool {
    let mut data = GuardAllowKey {
        cgroup_id: policy_cgroup.to_ne_bytes(),
        port: call.port_be.to_ne_bytes(),
        family: call.family as u8,
        protocol: call.protocol as u8,
        addr: call.addr,
    };
    let bits = GUARD_ALLOW_FIXED_BITS + if call.family == AF_INET6 { 128 } else { 32 };
    if GUARD_ALLOW.get(Key::new(bits, data)).is_some() {
        return true;
    }
    data.port = [0, 0];
    GUARD_ALLOW.get(Key::new(bits, data)).is_some()
}

/// Decides a connect, sendmsg or bind call.
#[inline(always)]
pub fn decide_addr(ctx: *const bpf_sock_addr, hook: GuardHook, v6: bool) -> i32 {
    let cgroup_id = current_cgroup_id();
    let (flags, policy_cgroup) = current_policy(cgroup_id);
    if policy_cgroup == 0 || flags & (NET_DENY_ALL | NET_ALLOW_LIST) == 0 {
        return ALLOW;
    }
    let call = read_call(ctx, v6);
    let rule = if flags & NET_DENY_ALL != 0 {
        GUARD_RULE_DENY_ALL
    } else if matches!(hook, GuardHook::Bind4 | GuardHook::Bind6) {
        // With an allow list, only an ephemeral-port bind (what a client's implicit bind does)
        // is let through: the list names destinations, not listening ports.
        if call.port_be == 0 {
            return ALLOW;
        }
        GUARD_RULE_NOT_ALLOWED
    } else if allowed(policy_cgroup, &call) {
        return ALLOW;
    } else {
        GUARD_RULE_NOT_ALLOWED
    };
    report(
        cgroup_id,
        flags,
        rule,
        hook,
        call.family,
        call.sock_type,
        call.protocol,
        u16::from_be(call.port_be),
        call.addr,
    )
}

/// Decides a socket creation: raw and packet sockets are refused.
#[inline(always)]
pub fn decide_sock_create(ctx: *const bpf_sock) -> i32 {
    let cgroup_id = current_cgroup_id();
    let (flags, policy_cgroup) = current_policy(cgroup_id);
    if policy_cgroup == 0 || flags & NET_DENY_RAW == 0 {
        return ALLOW;
    }
    // SAFETY: the context pointer is the kernel's; these fields are readable at sock_create.
    let (family, sock_type, protocol) = unsafe { ((*ctx).family, (*ctx).type_, (*ctx).protocol) };
    let rule = if family == AF_PACKET {
        GUARD_RULE_PACKET_SOCKET
    } else if sock_type == SOCK_RAW {
        GUARD_RULE_RAW_SOCKET
    } else {
        return ALLOW;
    };
    report(
        cgroup_id,
        flags,
        rule,
        GuardHook::SockCreate,
        family,
        sock_type,
        protocol,
        0,
        [0; 16],
    )
}

/// Emits the violation and returns the verdict the policy's mode asks for.
#[expect(
    clippy::too_many_arguments,
    reason = "plain fields of one event; a struct would only move them"
)]
#[inline(always)]
fn report(
    cgroup_id: u64,
    flags: u32,
    rule: u32,
    hook: GuardHook,
    family: u32,
    sock_type: u32,
    protocol: u32,
    port: u16,
    addr: [u8; 16],
) -> i32 {
    let audit = flags & NET_AUDIT != 0;
    let action = if audit {
        GUARD_ACTION_AUDITED
    } else {
        GUARD_ACTION_DENIED
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: only tests for presence.
    if unsafe { GUARD_RUNS.get(cgroup_id) }.is_some() {
        // A sandbox run: the thread's `sys_exit` records the call with its stack.
        let pending = GuardNetPending {
            cgroup_id,
            hook: hook as u32,
            rule,
            action,
            family: family as u16,
            port,
            sock_type,
            protocol,
            addr,
        };
        let _ = GUARD_NET_PENDING.insert(pid_tgid as u32, pending, 0);
    }
    if let Some(mut entry) = GUARD_EVENTS.reserve::<GuardEvent>(0) {
        let event = GuardEvent {
            // SAFETY: a helper without arguments.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            cgroup_id,
            pid: pid_tgid as u32,
            tgid: (pid_tgid >> 32) as u32,
            hook: hook as u32,
            action,
            rule,
            family: family as u16,
            port,
            sock_type,
            protocol,
            addr,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        entry.write(event);
        entry.submit(0);
    } else if let Some(lost) = GUARD_STATS.get_ptr_mut(GuardStat::EventsLost as u32) {
        // SAFETY: a per-CPU value; only this CPU writes it.
        unsafe { *lost += 1 };
    }
    if audit { ALLOW } else { DENY }
}
