//! Reading the syscall tracer: its per-CPU statistics summed over CPUs, its loss counters, and
//! its ring buffer of slow calls.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, RawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap, RingBuf},
};
use profiler_common::{
    LATENCY_BUCKETS, MAP_SYSCALL_COUNTERS, MAP_SYSCALL_ERRNOS, MAP_SYSCALL_EVENTS,
    MAP_SYSCALL_STATS, SYSCALL_COUNTERS_LEN, SlowSyscallEvent, SyscallErrnoKey, SyscallKey,
    SyscallStat, SyscallStats,
};

use super::read::{entries, map, map_error, per_cpu_sums, stacks};
use crate::{
    probes::ProbeError,
    syscalls::{SyscallCounters, SyscallSnapshot},
};

/// Reads the statistics, errno counts and counters as they are now (the tracer may keep
/// running: every value only grows).
pub fn snapshot_syscalls(ebpf: &Ebpf) -> Result<SyscallSnapshot, ProbeError> {
    let stats_map: PerCpuHashMap<&MapData, SyscallKey, SyscallStats> =
        PerCpuHashMap::try_from(map(ebpf, MAP_SYSCALL_STATS)?)
            .map_err(map_error(MAP_SYSCALL_STATS))?;
    let mut stats = Vec::new();
    for (key, per_cpu) in entries(MAP_SYSCALL_STATS, stats_map.iter())? {
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
        PerCpuHashMap::try_from(map(ebpf, MAP_SYSCALL_ERRNOS)?)
            .map_err(map_error(MAP_SYSCALL_ERRNOS))?;
    let errnos = entries(MAP_SYSCALL_ERRNOS, errno_map.iter())?
        .into_iter()
        .map(|(key, per_cpu)| (key, per_cpu.iter().sum()))
        .collect();
    Ok(SyscallSnapshot {
        stats,
        errnos,
        counters: read_syscall_counters(ebpf)?,
    })
}

/// Sums the tracer's per-CPU counters.
pub fn read_syscall_counters(ebpf: &Ebpf) -> Result<SyscallCounters, ProbeError> {
    let sums = per_cpu_sums::<{ SYSCALL_COUNTERS_LEN as usize }>(ebpf, MAP_SYSCALL_COUNTERS)?;
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
    Ok(stacks(ebpf, ids.iter().copied())?
        .into_iter()
        .map(|(id, frames)| (i64::from(id), frames))
        .collect())
}
