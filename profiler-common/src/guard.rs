//! The guard's cgroup-BPF network layer: per-cgroup policies, the allow list and violation
//! events.
//!
//! The programs are attached once to a parent cgroup and apply to every descendant; a sandbox
//! gets its policy by one insert into [`MAP_GUARD_POLICIES`] keyed by its cgroup id. A process
//! is governed by the policy of its own cgroup or, failing that, of its deepest ancestor that has
//! one.

/// Name of the hash of policies, keyed by cgroup id (`u64`), valued by [`GuardPolicy`].
pub const MAP_GUARD_POLICIES: &str = "GUARD_POLICIES";
/// Name of the LPM trie of allowed destinations, keyed by [`GuardAllowKey`] (behind the trie's
/// `u32` prefix length), valued by a `u32` (unused, 1).
pub const MAP_GUARD_ALLOW: &str = "GUARD_ALLOW";
/// Name of the ring buffer of [`GuardEvent`]s.
pub const MAP_GUARD_EVENTS: &str = "GUARD_EVENTS";

/// Name of the per-CPU array of guard counters, indexed by [`GuardStat`].
pub const MAP_GUARD_STATS: &str = "GUARD_STATS";

/// Counters of [`MAP_GUARD_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardStat {
    /// Violation events dropped because [`MAP_GUARD_EVENTS`] was full.
    EventsLost = 0,
}

/// Entries of [`MAP_GUARD_STATS`].
pub const GUARD_STATS_LEN: u32 = 1;

/// Capacity of [`MAP_GUARD_POLICIES`]: sandboxes with a policy at the same time.
pub const MAX_GUARD_POLICIES: u32 = 16 * 1024;
/// Capacity of [`MAP_GUARD_ALLOW`]: allowed destinations over all policies.
pub const MAX_GUARD_ALLOW: u32 = 16 * 1024;
/// Size of [`MAP_GUARD_EVENTS`], bytes.
pub const GUARD_EVENTS_BYTES: u32 = 256 * 1024;

/// No connect, bind or send at all.
pub const NET_DENY_ALL: u32 = 1;
/// Only destinations in [`MAP_GUARD_ALLOW`] may be connected or sent to.
pub const NET_ALLOW_LIST: u32 = 1 << 1;
/// Report what would be denied, deny nothing.
pub const NET_AUDIT: u32 = 1 << 2;
/// Deny raw (`SOCK_RAW`) and packet (`AF_PACKET`) sockets.
pub const NET_DENY_RAW: u32 = 1 << 3;

/// A sandbox's network policy; the value of [`MAP_GUARD_POLICIES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardPolicy {
    /// `NET_*` bits.
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(size_of::<GuardPolicy>() == 8);

/// Bits of [`GuardAllowKey`] before the address: cgroup id, port, family and protocol.
pub const GUARD_ALLOW_FIXED_BITS: u32 = 96;

/// The data of an allow-list key. Everything is bytes so that the key has no padding and the
/// trie compares it front to back: the cgroup id, port, family and protocol are always matched
/// in full ([`GUARD_ALLOW_FIXED_BITS`]), the address by the rule's prefix length. Port 0 allows
/// every port; the kernel side looks up the exact port and then port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardAllowKey {
    /// Cgroup id of the policy, native byte order.
    pub cgroup_id: [u8; 8],
    /// Destination port, network byte order; 0 for any.
    pub port: [u8; 2],
    /// `AF_INET` or `AF_INET6`, truncated to a byte.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// The address in network byte order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<GuardAllowKey>() == 28);

/// The hook that decided, in [`GuardEvent::hook`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardHook {
    /// `cgroup/connect4`.
    Connect4 = 1,
    /// `cgroup/connect6`.
    Connect6 = 2,
    /// `cgroup/sendmsg4`.
    Sendmsg4 = 3,
    /// `cgroup/sendmsg6`.
    Sendmsg6 = 4,
    /// `cgroup/bind4`.
    Bind4 = 5,
    /// `cgroup/bind6`.
    Bind6 = 6,
    /// `cgroup/sock_create`.
    SockCreate = 7,
}

impl GuardHook {
    /// The hook for a raw [`GuardEvent::hook`].
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Connect4,
            2 => Self::Connect6,
            3 => Self::Sendmsg4,
            4 => Self::Sendmsg6,
            5 => Self::Bind4,
            6 => Self::Bind6,
            7 => Self::SockCreate,
            _ => return None,
        })
    }

    /// The syscall the hook stands for, as a verdict names it.
    pub fn syscall(self) -> &'static str {
        match self {
            Self::Connect4 | Self::Connect6 => "connect",
            Self::Sendmsg4 | Self::Sendmsg6 => "sendmsg",
            Self::Bind4 | Self::Bind6 => "bind",
            Self::SockCreate => "socket",
        }
    }
}

/// [`GuardEvent::action`]: the call was refused.
pub const GUARD_ACTION_DENIED: u32 = 1;
/// [`GuardEvent::action`]: the call would have been refused (audit mode) and was let through.
pub const GUARD_ACTION_AUDITED: u32 = 2;

/// [`GuardEvent::rule`]: the policy denies all network use.
pub const GUARD_RULE_DENY_ALL: u32 = 1;
/// [`GuardEvent::rule`]: the destination is not in the allow list.
pub const GUARD_RULE_NOT_ALLOWED: u32 = 2;
/// [`GuardEvent::rule`]: a raw socket.
pub const GUARD_RULE_RAW_SOCKET: u32 = 3;
/// [`GuardEvent::rule`]: a packet socket.
pub const GUARD_RULE_PACKET_SOCKET: u32 = 4;

/// One denied (or, in audit mode, would-be-denied) network call; a record of
/// [`MAP_GUARD_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardEvent {
    /// `bpf_ktime_get_ns` at the decision.
    pub ktime_ns: u64,
    /// The caller's cgroup v2 id.
    pub cgroup_id: u64,
    /// Thread id.
    pub pid: u32,
    /// Thread-group (process) id.
    pub tgid: u32,
    /// A [`GuardHook`].
    pub hook: u32,
    /// `GUARD_ACTION_*`.
    pub action: u32,
    /// `GUARD_RULE_*`.
    pub rule: u32,
    /// Address family (`AF_INET`, `AF_INET6`, `AF_PACKET`, ...).
    pub family: u16,
    /// Port, host byte order; 0 for `sock_create`.
    pub port: u16,
    /// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, ...).
    pub sock_type: u32,
    /// Protocol (`IPPROTO_TCP`, ...).
    pub protocol: u32,
    /// The address, network byte order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// The caller's `comm`, NUL-padded.
    pub comm: [u8; crate::TASK_COMM_LEN],
}
const _: () = assert!(size_of::<GuardEvent>() == 80);

#[cfg(feature = "user")]
mod pod {
    use super::{GuardAllowKey, GuardEvent, GuardPolicy};

    // SAFETY: #[repr(C)], every field plain data, padding explicit.
    unsafe impl aya::Pod for GuardPolicy {}
    // SAFETY: as above; all fields are byte arrays, no padding.
    unsafe impl aya::Pod for GuardAllowKey {}
    // SAFETY: as above; the field sizes add up to the size, no implicit padding.
    unsafe impl aya::Pod for GuardEvent {}
}
