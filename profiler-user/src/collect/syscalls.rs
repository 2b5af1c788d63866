//! Reading the syscall tracer: its per-CPU statistics summed over CPUs, its loss counters, and
//! its ring buffer of slow calls.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, RawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
};
use profiler_common::{
    LATENCY_BUCKETS, MAP_STACKS, MAP_SYSCALL_COUNTERS, MAP_SYSCALL_ERRNOS, MAP_SYSCALL_EVENTS,
    MAP_SYSCALL_STATS, SYSCALL_COUNTERS_LEN, SlowSyscallEvent, SyscallErrnoKey, SyscallKey,
    SyscallStat, SyscallStats,
};

use crate::{
    probes::ProbeError,
    syscalls::{SyscallCounters, SyscallSnapshot},
};

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::MissingMap(name))
}

/// Reads the statistics, errno counts and counters as they are now (the tracer may keep
/// running: every value only grows).
pub fn snapshot_syscalls(ebpf: &Ebpf) -> Result<SyscallSnapshot, ProbeError> {
    let err = |map: &'static str| move |source| ProbeError::Map { map, source };
    let stats_map: PerCpuHashMap<&MapData, SyscallKey, SyscallStats> =
        PerCpuHashMap::try_from(map(ebpf, MAP_SYSCALL_STATS)?).map_err(err(MAP_SYSCALL_STATS))?;
    let mut stats = Vec::new();
    for entry in stats_map.iter() {
        let (key, per_cpu) = match entry {
            Ok(kv) => kv,
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(err(MAP_SYSCALL_STATS)(source)),
        };
        let mut sum = SyscallStats {
            count: 0,
            errors: 0,
            total_ns: 0,
            max_ns: 0,
            hist: [0; LATENCY_BUCKETS],
        };
        for cpu in per_cpu.iter() {
            sum.count += cpu.count;
            sum.errors += cpu.errors;
            sum.total_ns += cpu.total_ns;
            sum.max_ns = sum.max_ns.max(cpu.max_ns);
            for (a, b) in sum.hist.iter_mut().zip(&cpu.hist) {
                *a += b;
            }
        }
        stats.push((key, sum));
    }
    let errno_map: PerCpuHashMap<&MapData, SyscallErrnoKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, MAP_SYSCALL_ERRNOS)?).map_err(err(MAP_SYSCALL_ERRNOS))?;
    let mut errnos = Vec::new();
    for entry in errno_map.iter() {
        match entry {
            Ok((key, per_cpu)) => errnos.push((key, per_cpu.iter().sum())),
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(err(MAP_SYSCALL_ERRNOS)(source)),
        }
    }
    Ok(SyscallSnapshot {
        stats,
        errnos,
        counters: read_syscall_counters(ebpf)?,
    })
}

/// Sums the tracer's per-CPU counters.
pub fn read_syscall_counters(ebpf: &Ebpf) -> Result<SyscallCounters, ProbeError> {
    let err = |source| ProbeError::Map {
        map: MAP_SYSCALL_COUNTERS,
        source,
    };
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, MAP_SYSCALL_COUNTERS)?).map_err(err)?;
    let mut sums = [0u64; SYSCALL_COUNTERS_LEN as usize];
    for (i, sum) in sums.iter_mut().enumerate() {
        *sum = array.get(&(i as u32), 0).map_err(err)?.iter().sum();
    }
    let at = |s: SyscallStat| sums[s as usize];
    Ok(SyscallCounters {
        unmatched_exits: at(SyscallStat::UnmatchedExit),
        inflight_full: at(SyscallStat::InflightFull),
        stats_full: at(SyscallStat::StatsFull),
        events_lost: at(SyscallStat::EventsLost),
        errno_full: at(SyscallStat::ErrnoFull),
    })
}

/// The ring buffer of slow calls, taken out of the object so it can be polled on its own.
pub struct SlowCallReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for SlowCallReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowCallReader")
            .field("fd", &self.ring.as_raw_fd())
            .finish()
    }
}

impl SlowCallReader {
    /// Takes the ring buffer map out of `ebpf`.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let map = ebpf
            .take_map(MAP_SYSCALL_EVENTS)
            .ok_or(ProbeError::MissingMap(MAP_SYSCALL_EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            map: MAP_SYSCALL_EVENTS,
            source,
        })?;
        Ok(Self { ring })
    }

    /// Waits up to `timeout` for events (returns early on a signal), then reads all that are
    /// there.
    pub fn wait_and_read(&mut self, timeout: Duration) -> Vec<SlowSyscallEvent> {
        poll_readable(self.ring.as_raw_fd(), timeout);
        self.read()
    }

    /// Reads every event waiting in the ring buffer.
    pub fn read(&mut self) -> Vec<SlowSyscallEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<SlowSyscallEvent>() {
                // SAFETY: the item holds at least one `SlowSyscallEvent` written by the kernel
                // side; `#[repr(C)]` plain integers and byte arrays, any bit pattern is valid.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
        events
    }
}

fn poll_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Reads user stacks by id from the shared stack map (leaf first); missing ids are left out.
pub fn read_stacks(ebpf: &Ebpf, ids: &[i64]) -> Result<HashMap<i64, Vec<u64>>, ProbeError> {
    let stack_map: StackTraceMap<&MapData> = StackTraceMap::try_from(map(ebpf, MAP_STACKS)?)
        .map_err(|source| ProbeError::Map {
            map: MAP_STACKS,
            source,
        })?;
    let mut stacks = HashMap::new();
    for &id in ids {
        if id < 0 || stacks.contains_key(&id) {
            continue;
        }
        match stack_map.get(&(id as u32), 0) {
            Ok(trace) => {
                stacks.insert(id, trace.frames().iter().map(|f| f.ip).collect());
            }
            Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(ProbeError::Map {
                    map: MAP_STACKS,
                    source,
                });
            }
        }
    }
    Ok(stacks)
}
