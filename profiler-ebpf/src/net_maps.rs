//! The maps of the network tracer, named as in `profiler_common::net`.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use profiler_common::{
    MAX_NET_CONNS, MAX_NET_TRAFFIC_KEYS, NET_COUNTERS_LEN, NET_EVENTS_BYTES, NetConfig, NetConn,
    NetTraffic, NetTrafficKey, NetTrafficSlot,
};

/// Tracked connections by socket address; LRU, so that sockets whose close was never seen
/// make room.
#[map(name = "NET_CONNS")]
pub static NET_CONNS: LruHashMap<u64, NetConn> = LruHashMap::with_max_entries(MAX_NET_CONNS, 0);

/// Connection events.
#[map(name = "NET_EVENTS")]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(NET_EVENTS_BYTES, 0);

/// Per-CPU traffic per (cgroup, direction, family).
#[map(name = "NET_TRAFFIC")]
pub static NET_TRAFFIC: PerCpuHashMap<NetTrafficKey, NetTraffic> =
    PerCpuHashMap::with_max_entries(MAX_NET_TRAFFIC_KEYS, 0);

/// Per-CPU traffic of the cgroups that own a slot (the others go to `NET_TRAFFIC`): an array
/// lookup is inlined by the verifier, a hash lookup is a hash computation and a bucket walk per
/// packet.
#[map(name = "NET_TRAFFIC_SLOTS")]
pub static NET_TRAFFIC_SLOTS: PerCpuArray<NetTrafficSlot> =
    PerCpuArray::with_max_entries(profiler_common::NET_TRAFFIC_SLOTS, 0);

/// The network tracer's configuration, one entry.
#[map(name = "NET_CONFIG")]
pub static NET_CONFIG: Array<NetConfig> = Array::with_max_entries(1, 0);

/// Network tracer counters, indexed by `NetStat`.
#[map(name = "NET_COUNTERS")]
pub static NET_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NET_COUNTERS_LEN, 0);
