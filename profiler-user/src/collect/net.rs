//! Reading the network tracer: its ring buffer of connection events, the connections still
//! open, the per-cgroup traffic counters and the loss counters, as typed data.
//!
//! [`NetCollector`] is the reusable piece: `flamewarden net` drains it into a table, the daemon
//! can drain it into metrics. Every figure only grows, so draining never disturbs the kernel
//! side.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, RawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
};
use profiler_common::{
    AF_INET, AF_INET6, CONN_TARGETED, MAP_NET_CONNS, MAP_NET_COUNTERS, MAP_NET_EVENTS,
    MAP_NET_TRAFFIC, MAP_NET_TRAFFIC_SLOTS, NET_COUNTERS_LEN, NET_TRAFFIC_SLOTS, NetConfig,
    NetConn, NetEvent, NetStat, NetTraffic, NetTrafficKey, NetTrafficSlot, TRAFFIC_EGRESS,
    TRAFFIC_INGRESS, traffic_index,
};

use crate::{
    net::{CgroupTraffic, ConnEvent, Connection, NetCounters, TrafficCount},
    probes::{self, Family, MapSizes, NetTracer, ProbeError, Targets},
};

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::MissingMap(name))
}

/// What to collect beyond closed connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetOptions {
    /// Also stream open and retransmit events.
    pub events: bool,
    /// Attach every program, but have each return at once (see `NetConfig::hooks_only`).
    pub hooks_only: bool,
}

/// The attached network tracer and its ring buffer.
pub struct NetCollector {
    tracer: Option<NetTracer>,
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for NetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetCollector")
            .field("attached", &self.tracer.is_some())
            .field("ring_fd", &self.ring.as_raw_fd())
            .finish()
    }
}

/// Loads the object with the network maps at full size, writes `targets` into the kernel's
/// filter and attaches the tracer: everything a long-running user (the daemon) needs.
pub fn start(targets: &Targets, options: NetOptions) -> Result<(Ebpf, NetCollector), ProbeError> {
    let mut ebpf = probes::load_for(MapSizes::default(), &[Family::Net])?;
    targets.apply(&mut ebpf)?;
    let collector = NetCollector::attach(&mut ebpf, options)?;
    Ok((ebpf, collector))
}

impl NetCollector {
    /// Attaches the tracer to a loaded object (whose targets are already applied) and takes
    /// its ring buffer out of it.
    pub fn attach(ebpf: &mut Ebpf, options: NetOptions) -> Result<Self, ProbeError> {
        let map = ebpf
            .take_map(MAP_NET_EVENTS)
            .ok_or(ProbeError::MissingMap(MAP_NET_EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            map: MAP_NET_EVENTS,
            source,
        })?;
        let config = NetConfig {
            events: u32::from(options.events),
            hooks_only: u32::from(options.hooks_only),
        };
        let tracer = NetTracer::attach(ebpf, config)?;
        Ok(Self {
            tracer: Some(tracer),
            ring,
        })
    }

    /// Reads every event waiting in the ring buffer.
    pub fn drain(&mut self) -> Vec<ConnEvent> {
        let mut events = Vec::new();
        self.drain_raw(|raw| events.extend(ConnEvent::from_raw(raw)));
        events
    }

    /// Hands every event waiting in the ring buffer to `f` as the kernel wrote it, without
    /// decoding or allocating: for a caller that keeps them and decodes later (a busy host
    /// closes tens of thousands of connections a second).
    pub fn drain_raw(&mut self, mut f: impl FnMut(&NetEvent)) {
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<NetEvent>() {
                // SAFETY: the item holds one `NetEvent` written by the kernel side;
                // `#[repr(C)]` integers and byte arrays, any bit pattern is valid.
                let raw: NetEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                f(&raw);
            }
        }
    }

    /// The targeted connections that are open now (their bytes are only read at close).
    pub fn open_connections(&self, ebpf: &Ebpf) -> Result<Vec<Connection>, ProbeError> {
        let err = |source| ProbeError::Map {
            map: MAP_NET_CONNS,
            source,
        };
        let conns: BpfHashMap<&MapData, u64, NetConn> =
            BpfHashMap::try_from(map(ebpf, MAP_NET_CONNS)?).map_err(err)?;
        let mut open = Vec::new();
        for entry in conns.iter() {
            match entry {
                Ok((sock, raw)) if raw.flags & CONN_TARGETED != 0 => {
                    open.push(Connection::from_raw(sock, &raw, None, 0, 0));
                }
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(err(source)),
            }
        }
        Ok(open)
    }

    /// Traffic per cgroup since the start, summed over CPUs (the cgroups that own a slot
    /// and the hashed rest).
    pub fn traffic(&self, ebpf: &Ebpf) -> Result<Vec<CgroupTraffic>, ProbeError> {
        let err = |map| move |source| ProbeError::Map { map, source };
        let mut by_cgroup: HashMap<u64, CgroupTraffic> = HashMap::new();
        let mut add = |cgroup_id: u64, direction: u32, family: u32, per_cpu: &[NetTraffic]| {
            let (bytes, packets) = per_cpu
                .iter()
                .fold((0, 0), |(b, p), t| (b + t.bytes, p + t.packets));
            if packets == 0 {
                return;
            }
            let row = by_cgroup.entry(cgroup_id).or_insert(CgroupTraffic {
                cgroup_id,
                ..Default::default()
            });
            let count = match family {
                f if f == u32::from(AF_INET) => &mut row.ipv4,
                f if f == u32::from(AF_INET6) => &mut row.ipv6,
                _ => &mut row.other,
            };
            add_direction(count, direction, bytes, packets);
        };
        let slots: PerCpuArray<&MapData, NetTrafficSlot> =
            PerCpuArray::try_from(map(ebpf, MAP_NET_TRAFFIC_SLOTS)?)
                .map_err(err(MAP_NET_TRAFFIC_SLOTS))?;
        for index in 0..NET_TRAFFIC_SLOTS {
            let per_cpu = slots.get(&index, 0).map_err(err(MAP_NET_TRAFFIC_SLOTS))?;
            // Each CPU's copy of a slot is taken on its own, possibly by different cgroups.
            for slot in per_cpu.iter().filter(|s| s.taken != 0) {
                for direction in [TRAFFIC_INGRESS, TRAFFIC_EGRESS] {
                    for family in [u32::from(AF_INET), u32::from(AF_INET6), 0] {
                        let t = slot.traffic[traffic_index(direction, family)];
                        add(slot.cgroup_id, direction, family, &[t]);
                    }
                }
            }
        }
        let traffic: PerCpuHashMap<&MapData, NetTrafficKey, NetTraffic> =
            PerCpuHashMap::try_from(map(ebpf, MAP_NET_TRAFFIC)?).map_err(err(MAP_NET_TRAFFIC))?;
        for entry in traffic.iter() {
            let (key, per_cpu) = match entry {
                Ok(kv) => kv,
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(err(MAP_NET_TRAFFIC)(source)),
            };
            add(key.cgroup_id, key.direction, key.family, &per_cpu);
        }
        let mut rows: Vec<CgroupTraffic> = by_cgroup.into_values().collect();
        rows.sort_by_key(|t| std::cmp::Reverse(t.total().rx_bytes + t.total().tx_bytes));
        Ok(rows)
    }

    /// The loss counters, summed over CPUs.
    pub fn counters(&self, ebpf: &Ebpf) -> Result<NetCounters, ProbeError> {
        let err = |source| ProbeError::Map {
            map: MAP_NET_COUNTERS,
            source,
        };
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(ebpf, MAP_NET_COUNTERS)?).map_err(err)?;
        let mut sums = [0u64; NET_COUNTERS_LEN as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = array.get(&(i as u32), 0).map_err(err)?.iter().sum();
        }
        let at = |s: NetStat| sums[s as usize];
        Ok(NetCounters {
            events_lost: at(NetStat::EventsLost),
            conns_full: at(NetStat::ConnsFull),
            untracked_resets: at(NetStat::UntrackedResets),
            traffic_full: at(NetStat::TrafficFull),
        })
    }

    /// Detaches the tracer's programs until [`NetCollector::resume`]: nothing is seen, nor
    /// costs anything, in between (`flamewarden net --control`'s `disable`).
    pub fn pause(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        match &mut self.tracer {
            Some(tracer) => tracer.pause(ebpf),
            None => Ok(()),
        }
    }

    /// Attaches the tracer's programs again after [`NetCollector::pause`].
    pub fn resume(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        match &mut self.tracer {
            Some(tracer) => tracer.resume(ebpf),
            None => Ok(()),
        }
    }

    /// Waits up to `timeout`, the polling period (events are not signalled one by one), or
    /// until `other` is readable (true then); drains nothing.
    pub fn wait_or_readable(&self, timeout: Duration, other: Option<RawFd>) -> bool {
        wait(other, timeout)
    }

    /// Detaches the tracer; the maps and the events still waiting can be read afterwards.
    pub fn stop(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        match self.tracer.take() {
            Some(tracer) => tracer.stop(ebpf),
            None => Ok(()),
        }
    }
}

fn add_direction(count: &mut TrafficCount, direction: u32, bytes: u64, packets: u64) {
    if direction == TRAFFIC_EGRESS {
        count.tx_bytes += bytes;
        count.tx_packets += packets;
    } else {
        count.rx_bytes += bytes;
        count.rx_packets += packets;
    }
}

/// Sleeps `timeout` in `poll`, returning early on a signal or when `other` is readable (true).
///
/// Not on the ring buffer's fd: `poll` says it is readable as long as any event waits, so a
/// reader polling it between drains spins (on a host closing 10 000 connections a second, 8 % of
/// a CPU in `poll` alone); the kernel side submits without wake-ups and the ring buffer holds
/// far more than a period's events, so draining once a period loses nothing.
fn wait(other: Option<RawFd>, timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: other.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: a valid pollfd for the duration of the call (a negative fd is ignored).
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 && fd.revents & (libc::POLLIN | libc::POLLHUP) != 0
}
