//! TCP connection tracing from the raw tracepoints `inet_sock_set_state`, `tcp_retransmit_skb`,
//! `tcp_receive_reset` and `tcp_send_reset` (per-cgroup traffic is in [`crate::net_traffic`]).
//!
//! Raw tracepoints hand over the `struct sock *` without filling a perf trace record first, so a
//! state change costs a map lookup and a few reads. Every field of a kernel structure is read at
//! an offset that user space found in the kernel's BTF and wrote into [`NET_LAYOUT`] at load
//! time: nothing here depends on one kernel's layout.
//!
//! Two builds of each socket handler, chosen by user space at load time: BTF-typed raw
//! tracepoints (`tp_btf`, [`Direct`]) read the fields with plain loads, which the verifier
//! checks against the kernel's BTF (the offsets are load-time constants); plain raw tracepoints
//! ([`Probe`]) read them with `bpf_probe_read_kernel`, a helper call each, for kernels without
//! `tp_btf` or whose layout the verifier does not take.
//!
//! A connection is tracked from its first state (SYN_SENT for `connect`, SYN_RECV for an
//! accepted one) to CLOSE, when it is emitted with its figures. Its owner is the task that
//! connected, or, for an accepted connection, the first task that closes it (FIN_WAIT1 or
//! LAST_ACK, both entered by `close`/`shutdown` in the owner's context).

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_comm, bpf_probe_read_kernel as probe_read_into, bpf_skc_to_tcp_sock,
        },
    },
};
use profiler_common::{
    AF_INET, AF_INET6, CONN_ACTIVE, CONN_BYTES_READ, CONN_ESTABLISHED, CONN_OWNER_KNOWN,
    CONN_PASSIVE, CONN_TARGETED, FILTER_ALL, FILTER_CGROUPS, FILTER_NONE, FILTER_TGIDS,
    IPPROTO_TCP, LAYOUT_IPV6, LAYOUT_SOCK_CGROUP, MAX_CGROUP_LEVEL, NetConn, NetEvent,
    NetEventKind, NetLayout, NetStat, TASK_COMM_LEN, tcp_state,
};

use crate::{
    maps::{TARGET_CGROUPS, TARGET_FILTER},
    net_maps::{NET_CONFIG, NET_CONNS, NET_COUNTERS, NET_EVENTS},
    targets::{current_cgroup_id, is_current_target},
};

/// Argument positions and field offsets, found by user space in the kernel's BTF.
#[unsafe(no_mangle)]
static NET_LAYOUT: NetLayout = NetLayout::UNSET;

/// One field of [`NET_LAYOUT`]; the volatile read stops the compiler from folding the
/// load-time constant (the verifier still sees it as a constant: the map is read-only).
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: a plain u32 of a static, read by value.
        unsafe { core::ptr::read_volatile(&raw const NET_LAYOUT.$field) }
    };
}

pub(crate) fn count(stat: NetStat) {
    if let Some(ptr) = NET_COUNTERS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *ptr += 1 };
    }
}

/// How kernel memory is read: [`Probe`] or [`Direct`].
pub trait Access {
    /// Reads a `T` (an integer) at `base + offset` in kernel memory.
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64>;
    /// Reads `size_of::<T>()` bytes (an integer) at `base + offset` straight into `dst`.
    fn read_into<T: Copy>(dst: *mut T, base: u64, offset: u32);
    /// Reads the 16 bytes of an IPv6 address at `base + offset` into `dst`.
    fn read_addr(dst: *mut [u8; 16], base: u64, offset: u32);
    /// The TCP socket of the tracepoint's socket argument `sk`, to read from and key the
    /// connection by (the same address); `None` when it is not a TCP socket, as far as this
    /// access can tell (a [`Probe`] checks the protocol where it matters).
    fn tcp_sock(sk: u64) -> Option<u64>;
    /// Whether the protocol must be read to know a new socket is TCP.
    const CHECK_PROTOCOL: bool;
}

/// `bpf_probe_read_kernel` at each read: for plain raw tracepoints, whose arguments are
/// untyped.
pub struct Probe;

impl Access for Probe {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
        // SAFETY: bpf_probe_read_kernel checks the access; a bad address yields an error.
        unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(i64::from)
    }

    #[inline(always)]
    fn read_into<T: Copy>(dst: *mut T, base: u64, offset: u32) {
        read_into(dst, base, offset);
    }

    #[inline(always)]
    fn read_addr(dst: *mut [u8; 16], base: u64, offset: u32) {
        read_into(dst, base, offset);
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> Option<u64> {
        Some(sk)
    }

    const CHECK_PROTOCOL: bool = true;
}

/// Plain loads through the BTF-typed socket of a `tp_btf` program: the verifier turns each into
/// a load that cannot fault (a bad address reads as zero), no helper call. The socket is first
/// turned into a `struct tcp_sock *` (`bpf_skc_to_tcp_sock`, NULL unless a full TCP socket), so
/// that the `inet_sock` and `tcp_sock` fields are within the type the verifier checks against.
pub struct Direct;

impl Access for Direct {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
        // SAFETY: `base` is a BTF-typed kernel pointer: the verifier checks the field and
        // makes the load fault-safe.
        Ok(unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const T) })
    }

    #[inline(always)]
    fn read_into<T: Copy>(dst: *mut T, base: u64, offset: u32) {
        // SAFETY: as in `read`; `dst` points to a writable `T`.
        unsafe {
            core::ptr::write(
                dst,
                core::ptr::read_volatile((base + u64::from(offset)) as *const T),
            )
        };
    }

    #[inline(always)]
    fn read_addr(dst: *mut [u8; 16], base: u64, offset: u32) {
        // Two 8-byte loads: a volatile 16-byte array load would be split into bytes.
        let words = dst.cast::<u64>();
        // SAFETY: `dst` is 8-byte aligned within a `NetConn` (checked below).
        unsafe {
            Self::read_into(words, base, offset);
            Self::read_into(words.add(1), base, offset + 8);
        }
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> Option<u64> {
        // SAFETY: `sk` is the BTF-typed socket argument of the tracepoint.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut core::ffi::c_void) } as u64;
        (tp != 0).then_some(tp)
    }

    const CHECK_PROTOCOL: bool = false;
}

const _: () = assert!(
    core::mem::offset_of!(NetConn, saddr).is_multiple_of(8)
        && core::mem::offset_of!(NetConn, daddr).is_multiple_of(8)
);

/// A probe read for the variable-offset walk of a cgroup's ancestors (a BTF-typed load needs a
/// constant offset).
#[inline(always)]
fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
    Probe::read(base, offset)
}

/// Argument `n` of a raw tracepoint that has at least `N` arguments. Each argument is read at a
/// constant offset (the verifier refuses a context pointer moved by a register, even a known
/// one) and no further than the `N`th (attaching fails for a program that reads past the
/// tracepoint's arguments); the volatile reads keep the compiler from turning the selection back
/// into pointer arithmetic.
#[inline(always)]
fn raw_arg<const N: usize>(ctx: *mut core::ffi::c_void, n: u32) -> u64 {
    let p = ctx as *const u64;
    let mut value = 0;
    let mut i = 0;
    while i < N {
        // SAFETY: the tracepoint has at least `N` arguments (user space checked its BTF).
        let arg = unsafe { core::ptr::read_volatile(p.add(i)) };
        if i as u32 == n {
            value = arg;
        }
        i += 1;
    }
    value
}

/// Whether every program is to return at once (`NetConfig::hooks_only`).
#[inline(always)]
pub fn hooks_only() -> bool {
    NET_CONFIG.get(0).is_some_and(|c| c.hooks_only != 0)
}

fn events_enabled() -> bool {
    NET_CONFIG.get(0).is_some_and(|c| c.events != 0)
}

/// The socket's protocol (`sk_protocol` is a u16 since 5.6, a u8 before that).
#[inline(always)]
fn protocol<K: Access>(sk: u64) -> Result<u16, i64> {
    if layout!(protocol_size) == 1 {
        K::read::<u8>(sk, layout!(protocol)).map(u16::from)
    } else {
        K::read::<u16>(sk, layout!(protocol))
    }
}

/// Whether a new socket is a TCP one, and the address to read it through.
#[inline(always)]
fn new_tcp_sock<K: Access>(sk: u64) -> Option<u64> {
    let sk = K::tcp_sock(sk)?;
    if K::CHECK_PROTOCOL && protocol::<K>(sk).ok()? != IPPROTO_TCP {
        return None;
    }
    Some(sk)
}

/// The cgroup id of the socket (`sk->sk_cgrp_data.cgroup->kn->id`) and its `struct cgroup`.
#[inline(always)]
fn sock_cgroup<K: Access>(sk: u64) -> Result<(u64, u64), i64> {
    if layout!(features) & LAYOUT_SOCK_CGROUP == 0 {
        return Ok((0, 0));
    }
    let cgroup: u64 = K::read(sk, layout!(sk_cgroup))?;
    if cgroup == 0 {
        return Ok((0, 0));
    }
    let kn: u64 = K::read(cgroup, layout!(cgroup_kn))?;
    if kn == 0 {
        return Ok((0, cgroup));
    }
    Ok((K::read(kn, layout!(kn_id))?, cgroup))
}

/// Whether an accepted connection whose socket is in `cgroup` (id `cgroup_id`) is a target by
/// its cgroup: the cgroup or one of its ancestors is targeted.
#[inline(always)]
fn cgroup_targeted(cgroup: u64, cgroup_id: u64, max_level: u32) -> bool {
    // SAFETY: the value is a plain u32 copied out at once.
    if unsafe { TARGET_CGROUPS.get(cgroup_id) }.is_some() {
        return true;
    }
    if cgroup == 0 {
        return false;
    }
    let Ok(level) = read::<i32>(cgroup, layout!(cgroup_level)) else {
        return false;
    };
    let ancestors = layout!(cgroup_ancestors);
    let kn_off = layout!(cgroup_kn);
    let id_off = layout!(kn_id);
    let mut l = 1u32;
    while l <= MAX_CGROUP_LEVEL {
        if l > max_level || l as i32 >= level {
            break;
        }
        let id = read::<u64>(cgroup, ancestors + l * 8)
            .and_then(|a| read::<u64>(a, kn_off))
            .and_then(|kn| read::<u64>(kn, id_off));
        if let Ok(id) = id
            // SAFETY: as above.
            && unsafe { TARGET_CGROUPS.get(id) }.is_some()
        {
            return true;
        }
        l += 1;
    }
    false
}

/// Reads `size_of::<T>()` bytes at `base + offset` in kernel memory straight into `dst` (zeroed
/// on failure): no stack copy, no zeroing of a temporary first.
#[inline(always)]
fn read_into<T>(dst: *mut T, base: u64, offset: u32) {
    // SAFETY: `dst` points to `size_of::<T>()` writable bytes of a map value or ring-buffer
    // entry; the helper checks the kernel address.
    unsafe {
        probe_read_into(
            dst.cast(),
            size_of::<T>() as u32,
            (base + u64::from(offset)) as *const core::ffi::c_void,
        )
    };
}

/// Addresses and ports of the socket, into `conn` (whose addresses are zero).
#[inline(always)]
fn read_endpoints<K: Access>(sk: u64, conn: *mut NetConn) {
    let (family_at, sport_at, dport_at) = (layout!(family), layout!(sport), layout!(dport));
    let ipv6 = layout!(features) & LAYOUT_IPV6 != 0;
    let (v6_saddr_at, v6_daddr_at) = (layout!(v6_rcv_saddr), layout!(v6_daddr));
    let (saddr_at, daddr_at) = (layout!(rcv_saddr), layout!(daddr));
    // SAFETY: `conn` is a live map value owned by the caller; the fields are read straight
    // into it.
    unsafe {
        K::read_into(&raw mut (*conn).family, sk, family_at);
        K::read_into(&raw mut (*conn).sport, sk, sport_at);
        K::read_into(&raw mut (*conn).dport, sk, dport_at);
        (*conn).sport = u16::from_be((*conn).sport);
        (*conn).dport = u16::from_be((*conn).dport);
        let family = (*conn).family;
        if family == AF_INET6 && ipv6 {
            K::read_addr(&raw mut (*conn).saddr, sk, v6_saddr_at);
            K::read_addr(&raw mut (*conn).daddr, sk, v6_daddr_at);
        } else if family == AF_INET {
            K::read_into((&raw mut (*conn).saddr).cast::<u32>(), sk, saddr_at);
            K::read_into((&raw mut (*conn).daddr).cast::<u32>(), sk, daddr_at);
        }
    }
}

/// Payload bytes of the socket: received minus the peer's FIN (`SOCK_DONE`), sent minus
/// retransmitted.
#[inline(always)]
fn read_bytes<K: Access>(sk: u64, conn: *mut NetConn) {
    let received = K::read::<u64>(sk, layout!(bytes_received));
    let sent = K::read::<u64>(sk, layout!(bytes_sent));
    let retrans = K::read::<u64>(sk, layout!(bytes_retrans));
    let flags = K::read::<u64>(sk, layout!(sk_flags)).unwrap_or(0);
    let fin = (flags >> (layout!(sock_done_bit) & 63)) & 1;
    if let (Ok(received), Ok(sent), Ok(retrans)) = (received, sent, retrans) {
        // SAFETY: as in `read_endpoints`.
        unsafe {
            (*conn).bytes_in = received.saturating_sub(fin);
            (*conn).bytes_out = sent.saturating_sub(retrans);
            (*conn).flags |= CONN_BYTES_READ;
        }
    }
}

/// The words of a [`NetConn`]: copied as such, the copy stays a few stores (as bytes it would
/// be a call to a byte-by-byte `memmove`).
type ConnWords = [u64; size_of::<NetConn>() / 8];
const _: () = assert!(size_of::<NetConn>().is_multiple_of(8) && align_of::<NetConn>() == 8);

fn emit(kind: NetEventKind, sk: u64, state: u32, error: i32, conn: *const NetConn, now: u64) {
    let Some(mut entry) = NET_EVENTS.reserve::<NetEvent>(0) else {
        count(NetStat::EventsLost);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to reserved ring-buffer memory of the right size, written before
    // submit; `conn` is a live map value.
    unsafe {
        (*event).ts_ns = now;
        (*event).sock = sk;
        (*event).kind = kind as u32;
        (*event).state = state;
        (*event).error = error;
        (*event)._pad = 0;
        core::ptr::copy_nonoverlapping(
            conn.cast::<ConnWords>(),
            (&raw mut (*event).conn).cast::<ConnWords>(),
            1,
        );
    }
    // No wake-up per event: the reader polls on a timer, which keeps the per-connection cost
    // of a busy server down.
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}

/// Fills `conn` with a connection first seen now. The zeroing is by volatile word stores into
/// the caller's slot: this target has no inline `memset`, zeroing (or moving) a struct is
/// otherwise a call to a byte-by-byte loop.
#[inline(always)]
fn new_conn(conn: *mut NetConn, now: u64, cgroup_id: u64, flags: u32) {
    let words = conn.cast::<u64>();
    let mut i = 0;
    while i < size_of::<NetConn>() / 8 {
        // SAFETY: within `*conn`, which is 8-byte aligned.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    // SAFETY: `conn` is a zeroed `NetConn`.
    unsafe {
        (*conn).start_ns = now;
        (*conn).cgroup_id = cgroup_id;
        (*conn).flags = flags;
    }
}

/// The current task's comm, into `comm`.
#[inline(always)]
fn current_comm(comm: *mut [u8; TASK_COMM_LEN]) {
    // SAFETY: `comm` points to TASK_COMM_LEN writable bytes.
    unsafe { bpf_get_current_comm(comm.cast(), TASK_COMM_LEN as u32) };
}

/// Inserts a new connection for `sk`.
#[inline(always)]
fn track(sk: u64, conn: *const NetConn) {
    // SAFETY: filled by `new_conn`.
    let conn = unsafe { &*conn };
    if NET_CONNS.insert(sk, conn, u64::from(BPF_ANY)).is_err() {
        count(NetStat::ConnsFull);
    }
}

/// `inet_sock_set_state(sk, oldstate, newstate)`; `ctx` is the tracepoint's argument array.
pub fn try_set_state<K: Access>(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    let sk = raw_arg::<3>(ctx, layout!(state_sk_arg));
    let old = raw_arg::<3>(ctx, layout!(state_old_arg)) as u32;
    let new = raw_arg::<3>(ctx, layout!(state_new_arg)) as u32;
    if new == tcp_state::SYN_SENT {
        return active_open::<K>(sk);
    }
    if new == tcp_state::SYN_RECV && old == tcp_state::LISTEN {
        return passive_open::<K>(sk);
    }
    // FIN_WAIT2, CLOSE_WAIT, CLOSING, TIME_WAIT: nothing to record, not even a lookup.
    if !matches!(
        new,
        tcp_state::ESTABLISHED | tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK | tcp_state::CLOSE
    ) {
        return Ok(());
    }
    // Keyed by the socket's address: the `tcp_sock` is only needed (and taken) to read.
    let Some(conn) = NET_CONNS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: a live map value; the socket's state changes are serialized by its lock.
    let flags = unsafe { (*conn).flags };
    match new {
        tcp_state::ESTABLISHED => {
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: as above.
            unsafe {
                (*conn).established_ns = now;
                (*conn).flags = flags | CONN_ESTABLISHED;
            }
            if let Some(tp) = K::tcp_sock(sk) {
                read_endpoints::<K>(tp, conn);
            }
            if flags & CONN_TARGETED != 0 && events_enabled() {
                emit(NetEventKind::Open, sk, old, 0, conn, now);
            }
        }
        tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK => {
            if flags & CONN_OWNER_KNOWN == 0 {
                let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
                let mut flags = flags | CONN_OWNER_KNOWN;
                if flags & CONN_TARGETED == 0 && is_current_target(tgid) {
                    flags |= CONN_TARGETED;
                }
                // SAFETY: as above.
                unsafe {
                    (*conn).tgid = tgid;
                    current_comm(&raw mut (*conn).comm);
                    (*conn).flags = flags;
                }
            }
        }
        tcp_state::CLOSE => {
            if flags & CONN_TARGETED != 0 {
                // Established connections had theirs read at ESTABLISHED.
                let mut error = 0;
                if let Some(tp) = K::tcp_sock(sk) {
                    if flags & CONN_ESTABLISHED == 0 {
                        read_endpoints::<K>(tp, conn);
                    }
                    read_bytes::<K>(tp, conn);
                    error = K::read::<i32>(tp, layout!(sk_err)).unwrap_or(0);
                }
                // SAFETY: a helper without arguments.
                let now = unsafe { bpf_ktime_get_ns() };
                emit(NetEventKind::Close, sk, old, error, conn, now);
            }
            let _ = NET_CONNS.remove(sk);
        }
        _ => {}
    }
    Ok(())
}

/// CLOSE → SYN_SENT: `connect` in the connecting task's context.
fn active_open<K: Access>(sk: u64) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_current_target(tgid) {
        return Ok(());
    }
    let Some(sk) = new_tcp_sock::<K>(sk) else {
        return Ok(());
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let flags = CONN_ACTIVE | CONN_TARGETED | CONN_OWNER_KNOWN;
    let mut slot = MaybeUninit::<NetConn>::uninit();
    let conn = slot.as_mut_ptr();
    new_conn(conn, now, current_cgroup_id(), flags);
    let family_at = layout!(family);
    // SAFETY: `conn` is the `NetConn` in `words`.
    unsafe {
        (*conn).tgid = tgid;
        current_comm(&raw mut (*conn).comm);
        // The local port is not chosen yet: endpoints are read at ESTABLISHED and CLOSE.
        K::read_into(&raw mut (*conn).family, sk, family_at);
    }
    track(sk, conn);
    Ok(())
}

/// LISTEN → SYN_RECV: a child socket of a listener, in softirq context (no owner yet).
fn passive_open<K: Access>(sk: u64) -> Result<(), i64> {
    let Some(filter) = TARGET_FILTER.get(0) else {
        return Ok(());
    };
    let mode = filter.mode;
    if mode & FILTER_NONE != 0 {
        return Ok(());
    }
    let Some(sk) = new_tcp_sock::<K>(sk) else {
        return Ok(());
    };
    let (cgroup_id, cgroup) = sock_cgroup::<K>(sk).unwrap_or((0, 0));
    let targeted = mode == FILTER_ALL
        || (mode & FILTER_CGROUPS != 0
            && cgroup_targeted(cgroup, cgroup_id, filter.max_cgroup_level));
    // With process targets the owner is only known when it closes the connection.
    if !targeted && mode & FILTER_TGIDS == 0 {
        return Ok(());
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let flags = CONN_PASSIVE | if targeted { CONN_TARGETED } else { 0 };
    let mut slot = MaybeUninit::<NetConn>::uninit();
    let conn = slot.as_mut_ptr();
    new_conn(conn, now, cgroup_id, flags);
    // SAFETY: the `NetConn` in `words`.
    K::read_into(unsafe { &raw mut (*conn).family }, sk, layout!(family));
    track(sk, conn);
    Ok(())
}

/// `tcp_retransmit_skb(sk, skb, ...)`; `ctx` is the tracepoint's argument array.
pub fn try_retransmit<K: Access>(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    let sk = raw_arg::<2>(ctx, layout!(retransmit_sk_arg));
    let Some(sk) = K::tcp_sock(sk) else {
        return Ok(());
    };
    let Some(conn) = NET_CONNS.get_ptr_mut(sk) else {
        return Ok(());
    };
    let state = u32::from(K::read::<u8>(sk, layout!(state)).unwrap_or(0));
    // SAFETY: a live map value; retransmissions run under the socket's lock.
    let flags = unsafe {
        (*conn).retransmits += 1;
        if state == tcp_state::SYN_SENT || state == tcp_state::SYN_RECV {
            (*conn).syn_retransmits += 1;
        }
        (*conn).flags
    };
    if flags & CONN_TARGETED != 0 && events_enabled() {
        // Before ESTABLISHED the endpoints were not read yet (SYN retransmissions).
        if flags & CONN_ESTABLISHED == 0 {
            read_endpoints::<K>(sk, conn);
        }
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        emit(NetEventKind::Retransmit, sk, state, 0, conn, now);
    }
    Ok(())
}

/// `tcp_receive_reset(sk)`.
pub fn try_receive_reset(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    let sk = raw_arg::<1>(ctx, layout!(receive_reset_sk_arg));
    if let Some(conn) = NET_CONNS.get_ptr_mut(sk) {
        // SAFETY: a live map value.
        unsafe { (*conn).resets_in += 1 };
    }
    Ok(())
}

/// `tcp_send_reset(sk, skb, reason)`: `sk` is NULL (or not a full socket) when no connection
/// exists, e.g. for a SYN to a closed port.
pub fn try_send_reset(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    let sk = raw_arg::<2>(ctx, layout!(send_reset_sk_arg));
    match NET_CONNS.get_ptr_mut(sk) {
        // SAFETY: a live map value.
        Some(conn) => unsafe { (*conn).resets_out += 1 },
        None => count(NetStat::UntrackedResets),
    }
    Ok(())
}
