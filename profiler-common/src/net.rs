//! TCP connection tracing (raw tracepoints `inet_sock_set_state`, `tcp_retransmit_skb`,
//! `tcp_receive_reset`, `tcp_send_reset`) and per-cgroup traffic (`cgroup_skb`).

use crate::TASK_COMM_LEN;

/// Name of the LRU hash of tracked connections, [`NetConn`] keyed by the socket's address.
pub const MAP_NET_CONNS: &str = "NET_CONNS";
/// Name of the ring buffer of [`NetEvent`]s.
pub const MAP_NET_EVENTS: &str = "NET_EVENTS";
/// Name of the per-CPU hash of [`NetTraffic`] keyed by [`NetTrafficKey`].
pub const MAP_NET_TRAFFIC: &str = "NET_TRAFFIC";
/// Name of the per-CPU array of [`NetTrafficSlot`]s: the traffic of most cgroups, without a
/// hash lookup per packet.
pub const MAP_NET_TRAFFIC_SLOTS: &str = "NET_TRAFFIC_SLOTS";
/// Name of the one-entry array holding the [`NetConfig`].
pub const MAP_NET_CONFIG: &str = "NET_CONFIG";
/// Name of the per-CPU array of network tracer counters, indexed by [`NetStat`].
pub const MAP_NET_COUNTERS: &str = "NET_COUNTERS";
/// Name of the load-time global holding the [`NetLayout`].
pub const GLOBAL_NET_LAYOUT: &str = "NET_LAYOUT";

/// Capacity of [`MAP_NET_CONNS`]: connections tracked at once.
pub const MAX_NET_CONNS: u32 = 64 * 1024;
/// Capacity of [`MAP_NET_TRAFFIC`]: (cgroup, direction, family) keys.
pub const MAX_NET_TRAFFIC_KEYS: u32 = 8 * 1024;
/// Entries of [`MAP_NET_TRAFFIC_SLOTS`] (a power of two: a cgroup's slot is the top bits of
/// a multiplicative hash of its id).
pub const NET_TRAFFIC_SLOTS: u32 = 256;
/// Size of [`MAP_NET_EVENTS`] in bytes.
pub const NET_EVENTS_BYTES: u32 = 4 << 20;

/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`, also uapi `BPF_TCP_*`).
pub mod tcp_state {
    /// Connected.
    pub const ESTABLISHED: u32 = 1;
    /// Active open: SYN sent.
    pub const SYN_SENT: u32 = 2;
    /// Passive open: SYN received.
    pub const SYN_RECV: u32 = 3;
    /// This side closed first.
    pub const FIN_WAIT1: u32 = 4;
    /// This side's FIN acknowledged.
    pub const FIN_WAIT2: u32 = 5;
    /// Closed.
    pub const CLOSE: u32 = 7;
    /// The peer closed first.
    pub const CLOSE_WAIT: u32 = 8;
    /// This side closed after the peer.
    pub const LAST_ACK: u32 = 9;
    /// Listening.
    pub const LISTEN: u32 = 10;
}

/// [`NetConn::flags`]: opened by `connect` on this host.
pub const CONN_ACTIVE: u32 = 1;
/// [`NetConn::flags`]: accepted from a listener on this host.
pub const CONN_PASSIVE: u32 = 1 << 1;
/// [`NetConn::flags`]: belongs to a target; only these are reported.
pub const CONN_TARGETED: u32 = 1 << 2;
/// [`NetConn::flags`]: `tgid` and `comm` name the process that owns the socket.
pub const CONN_OWNER_KNOWN: u32 = 1 << 3;
/// [`NetConn::flags`]: reached ESTABLISHED.
pub const CONN_ESTABLISHED: u32 = 1 << 4;
/// [`NetConn::flags`]: `bytes_in` / `bytes_out` were read from the socket.
pub const CONN_BYTES_READ: u32 = 1 << 5;

/// One tracked TCP connection, as kept in the kernel and carried by every [`NetEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConn {
    /// When it was first seen: SYN_SENT (active) or SYN_RECV (passive), `bpf_ktime_get_ns`.
    pub start_ns: u64,
    /// When it reached ESTABLISHED, 0 before.
    pub established_ns: u64,
    /// cgroup v2 id: the connecting task's (active), the socket's, i.e. the listener's
    /// (passive).
    pub cgroup_id: u64,
    /// Payload bytes received, FIN excluded (`tcp_sock.bytes_received`), read at close.
    pub bytes_in: u64,
    /// Payload bytes sent, each byte once (`bytes_sent - bytes_retrans`), read at close.
    pub bytes_out: u64,
    /// Local address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub daddr: [u8; 16],
    /// Owning process (see [`CONN_OWNER_KNOWN`]).
    pub tgid: u32,
    /// Segments retransmitted (SYNs included).
    pub retransmits: u32,
    /// SYN (or SYN-ACK) retransmissions.
    pub syn_retransmits: u32,
    /// RSTs received.
    pub resets_in: u32,
    /// RSTs sent.
    pub resets_out: u32,
    /// `CONN_*` flags.
    pub flags: u32,
    /// Local port.
    pub sport: u16,
    /// Remote port.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// The owner's comm.
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<NetConn>() == 120);

/// What a [`NetEvent`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetEventKind {
    /// The connection reached ESTABLISHED (only with [`NetConfig::events`]).
    Open = 1,
    /// The connection closed (or failed to open); always emitted for targeted connections.
    Close = 2,
    /// A segment was retransmitted (only with [`NetConfig::events`]).
    Retransmit = 3,
}

/// An event of a targeted connection, streamed through [`MAP_NET_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    /// `bpf_ktime_get_ns` (monotonic).
    pub ts_ns: u64,
    /// The socket's kernel address: joins the events of one connection.
    pub sock: u64,
    /// A [`NetEventKind`].
    pub kind: u32,
    /// Close: the state left; retransmit: the state it happened in.
    pub state: u32,
    /// Close: the socket's error (`sk_err`, e.g. ECONNREFUSED, ETIMEDOUT), 0 for none.
    pub error: i32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The connection as it is now.
    pub conn: NetConn,
}
const _: () = assert!(size_of::<NetEvent>() == 32 + size_of::<NetConn>());

/// What the network tracer does beyond reporting closed connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Non-zero: also emit open and retransmit events.
    pub events: u32,
    /// Non-zero: every program returns as soon as it runs (`flamewarden net --hooks-only`: what
    /// the hooks alone cost the traffic, the floor under any tracer attached to them).
    pub hooks_only: u32,
}
const _: () = assert!(size_of::<NetConfig>() == 8);

/// [`NetTrafficKey::direction`] of received packets.
pub const TRAFFIC_INGRESS: u32 = 0;
/// [`NetTrafficKey::direction`] of sent packets.
pub const TRAFFIC_EGRESS: u32 = 1;

/// One (cgroup, direction, family) traffic bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetTrafficKey {
    /// cgroup v2 id of the socket.
    pub cgroup_id: u64,
    /// [`TRAFFIC_INGRESS`] or [`TRAFFIC_EGRESS`].
    pub direction: u32,
    /// `AF_INET`, `AF_INET6`, or 0 for anything else.
    pub family: u32,
}
const _: () = assert!(size_of::<NetTrafficKey>() == 16);

/// Traffic of one [`NetTrafficKey`] on one CPU, as `cgroup_skb` sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetTraffic {
    /// IP bytes (IP and TCP/UDP headers included, one set per GSO packet).
    pub bytes: u64,
    /// Packets (GSO packets counted by their segments).
    pub packets: u64,
}
const _: () = assert!(size_of::<NetTraffic>() == 16);

/// Index of a (direction, family) pair in [`NetTrafficSlot::traffic`]: `direction * 3` plus 0
/// for IPv4, 1 for IPv6, 2 for anything else.
pub const fn traffic_index(direction: u32, family: u32) -> usize {
    let family = match family {
        f if f == AF_INET as u32 => 0,
        f if f == AF_INET6 as u32 => 1,
        _ => 2,
    };
    direction as usize * 3 + family
}

/// The slot of a cgroup in [`MAP_NET_TRAFFIC_SLOTS`].
pub const fn traffic_slot(cgroup_id: u64) -> u32 {
    (cgroup_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - NET_TRAFFIC_SLOTS.trailing_zeros()))
        as u32
}

/// The traffic of the cgroup that took this slot first, on one CPU; the traffic of another
/// cgroup hashed to a taken slot goes to [`MAP_NET_TRAFFIC`]. A slot is never given back, so
/// every figure only grows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetTrafficSlot {
    /// The owner's cgroup v2 id.
    pub cgroup_id: u64,
    /// Non-zero once taken.
    pub taken: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// By [`traffic_index`].
    pub traffic: [NetTraffic; 6],
}
const _: () = assert!(size_of::<NetTrafficSlot>() == 16 + 6 * 16);

/// Index of a counter in [`MAP_NET_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetStat {
    /// Events dropped because the ring buffer was full.
    EventsLost = 0,
    /// Connections not tracked because [`MAP_NET_CONNS`] could not take them.
    ConnsFull = 1,
    /// RSTs sent without a tracked socket (e.g. answering a SYN to a closed port).
    UntrackedResets = 2,
    /// Packets not counted because [`MAP_NET_TRAFFIC`] was full.
    TrafficFull = 3,
}

/// Number of counters in [`MAP_NET_COUNTERS`].
pub const NET_COUNTERS_LEN: u32 = 4;

/// [`NetLayout::features`]: the `*_v6_*` offsets are valid (kernel with IPv6).
pub const LAYOUT_IPV6: u32 = 1;
/// [`NetLayout::features`]: the socket cgroup chain offsets are valid.
pub const LAYOUT_SOCK_CGROUP: u32 = 1 << 1;

/// Where the kernel keeps what the tracer reads: raw tracepoint argument positions and
/// structure field offsets, all found in `/sys/kernel/btf/vmlinux` by user space and written
/// into the program at load time (nothing here is hard-coded for one kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetLayout {
    /// `inet_sock_set_state(sk, oldstate, newstate)`: position of `sk`.
    pub state_sk_arg: u32,
    /// Position of `oldstate`.
    pub state_old_arg: u32,
    /// Position of `newstate`.
    pub state_new_arg: u32,
    /// `tcp_retransmit_skb`: position of `sk`.
    pub retransmit_sk_arg: u32,
    /// `tcp_receive_reset`: position of `sk`.
    pub receive_reset_sk_arg: u32,
    /// `tcp_send_reset`: position of `sk`.
    pub send_reset_sk_arg: u32,
    /// `sock.__sk_common.skc_family` (u16).
    pub family: u32,
    /// `sock.sk_protocol`.
    pub protocol: u32,
    /// Size of `sk_protocol` in bytes (1 or 2).
    pub protocol_size: u32,
    /// `inet_sock.inet_sport`: local port, network order (u16); unlike `skc_num` it is still
    /// set when the CLOSE state is entered.
    pub sport: u32,
    /// `skc_dport`: remote port, network order (u16).
    pub dport: u32,
    /// `skc_rcv_saddr` (IPv4 local address).
    pub rcv_saddr: u32,
    /// `skc_daddr` (IPv4 remote address).
    pub daddr: u32,
    /// `skc_v6_rcv_saddr` (IPv6 local address).
    pub v6_rcv_saddr: u32,
    /// `skc_v6_daddr` (IPv6 remote address).
    pub v6_daddr: u32,
    /// `sock.sk_err` (int).
    pub sk_err: u32,
    /// `sock.sk_flags`, i.e. `__sk_common.skc_flags` (unsigned long).
    pub sk_flags: u32,
    /// Bit of `SOCK_DONE` (FIN received) in `sk_flags`.
    pub sock_done_bit: u32,
    /// `sock.sk_cgrp_data.cgroup` (pointer to `struct cgroup`).
    pub sk_cgroup: u32,
    /// `cgroup.kn` (pointer to `struct kernfs_node`).
    pub cgroup_kn: u32,
    /// `cgroup.level` (int).
    pub cgroup_level: u32,
    /// `cgroup.ancestors` (array of pointers to `struct cgroup`).
    pub cgroup_ancestors: u32,
    /// `kernfs_node.id` (u64): the cgroup id.
    pub kn_id: u32,
    /// `tcp_sock.bytes_received` (u64).
    pub bytes_received: u32,
    /// `tcp_sock.bytes_sent` (u64).
    pub bytes_sent: u32,
    /// `tcp_sock.bytes_retrans` (u64).
    pub bytes_retrans: u32,
    /// `skc_state` (u8): the TCP state.
    pub state: u32,
    /// `LAYOUT_*` flags.
    pub features: u32,
}
const _: () = assert!(size_of::<NetLayout>() == 28 * 4);

impl NetLayout {
    /// All zero: what the kernel side holds until user space writes the real layout.
    pub const UNSET: Self = Self {
        state_sk_arg: 0,
        state_old_arg: 0,
        state_new_arg: 0,
        retransmit_sk_arg: 0,
        receive_reset_sk_arg: 0,
        send_reset_sk_arg: 0,
        family: 0,
        protocol: 0,
        protocol_size: 0,
        sport: 0,
        dport: 0,
        rcv_saddr: 0,
        daddr: 0,
        v6_rcv_saddr: 0,
        v6_daddr: 0,
        sk_err: 0,
        sk_flags: 0,
        sock_done_bit: 0,
        sk_cgroup: 0,
        cgroup_kn: 0,
        cgroup_level: 0,
        cgroup_ancestors: 0,
        kn_id: 0,
        bytes_received: 0,
        bytes_sent: 0,
        bytes_retrans: 0,
        state: 0,
        features: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]` with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for NetConn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetTrafficKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetTraffic {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetTrafficSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_index_gives_each_direction_and_family_its_own_entry() {
        let mut seen = [false; 6];
        for direction in [TRAFFIC_INGRESS, TRAFFIC_EGRESS] {
            for family in [u32::from(AF_INET), u32::from(AF_INET6), 0] {
                let i = traffic_index(direction, family);
                assert!(i < 6, "index {i} outside NetTrafficSlot::traffic");
                assert!(!seen[i], "index {i} given twice");
                seen[i] = true;
            }
        }
        assert_eq!(traffic_index(TRAFFIC_INGRESS, u32::from(AF_INET)), 0);
        assert_eq!(traffic_index(TRAFFIC_EGRESS, u32::from(AF_INET6)), 4);
        // Any other family shares the "other" entry of its direction.
        assert_eq!(traffic_index(TRAFFIC_EGRESS, 17), 5);
        assert_eq!(traffic_index(TRAFFIC_INGRESS, 1), 2);
    }

    #[test]
    fn traffic_slots_stay_in_range_and_spread_consecutive_cgroup_ids() {
        assert!(NET_TRAFFIC_SLOTS.is_power_of_two());
        let mut used = [0u32; NET_TRAFFIC_SLOTS as usize];
        // cgroup ids are inode numbers, mostly allocated one after another.
        for id in 1000..1000 + u64::from(NET_TRAFFIC_SLOTS) {
            let slot = traffic_slot(id);
            assert!(slot < NET_TRAFFIC_SLOTS, "slot {slot} of cgroup {id}");
            used[slot as usize] += 1;
        }
        let distinct = used.iter().filter(|&&n| n > 0).count();
        assert!(
            distinct * 2 > NET_TRAFFIC_SLOTS as usize,
            "{NET_TRAFFIC_SLOTS} consecutive ids took only {distinct} slots"
        );
        assert!(used.iter().all(|&n| n <= 4), "a slot took more than 4 ids");
        // Extremes stay in range too, and the mapping is a pure function of the id.
        for id in [0, 1, u64::MAX, u64::MAX / 3] {
            assert!(traffic_slot(id) < NET_TRAFFIC_SLOTS);
            assert_eq!(traffic_slot(id), traffic_slot(id));
        }
    }
}
