//! The guard's violation events: the `GUARD_EVENTS` ring buffer of a pinned attachment, read
//! as typed events, and the kernel's count of those it had to drop.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::Path,
    time::Duration,
};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use profiler_common::{
    GUARD_ACTION_AUDITED, GUARD_RULE_DENY_ALL, GUARD_RULE_NOT_ALLOWED, GUARD_RULE_PACKET_SOCKET,
    GUARD_RULE_RAW_SOCKET, GuardEvent, GuardHook, GuardStat, MAP_GUARD_EVENTS, MAP_GUARD_STATS,
};
use serde::Serialize;

use crate::probes::guard::{GuardAttachError, map_error, open_pinned};

/// Reads the violation events of one pinned attachment. The ring buffer has one consumer: run
/// one reader per attachment.
pub struct GuardEventReader {
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
}

/// A violation event as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `CLOCK_MONOTONIC` of the decision, ns.
    pub ktime_ns: u64,
    /// The caller's cgroup id.
    pub cgroup_id: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The caller's command name.
    pub comm: String,
    /// The call.
    pub syscall: &'static str,
    /// `denied` or `audited`.
    pub action: &'static str,
    /// The rule, as in a sandbox verdict.
    pub rule: &'static str,
    /// `address:port`, or the socket's family, type and protocol.
    pub argument: String,
}

impl GuardEventReader {
    /// Opens the ring buffer and counters pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self, GuardAttachError> {
        let open = |name| open_pinned(dir, name);
        Ok(Self {
            ring: RingBuf::try_from(Map::RingBuf(open(MAP_GUARD_EVENTS)?))
                .map_err(map_error(MAP_GUARD_EVENTS))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(MAP_GUARD_STATS)?))
                .map_err(map_error(MAP_GUARD_STATS))?,
        })
    }

    /// The events available now, waiting up to `timeout` for the first one.
    pub fn poll(&mut self, timeout: Duration) -> Vec<Violation> {
        let mut out = Vec::new();
        self.drain(&mut out);
        if out.is_empty() {
            let mut pfd = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
            self.drain(&mut out);
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<Violation>) {
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<GuardEvent>() {
                // SAFETY: the record is at least one GuardEvent long; read unaligned.
                let event: GuardEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                out.push(decode(&event));
            }
        }
    }

    /// Events the kernel dropped because the ring buffer was full, since it was created.
    pub fn lost(&self) -> u64 {
        self.stats
            .get(&(GuardStat::EventsLost as u32), 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// A raw event in the words of a verdict.
pub fn decode(event: &GuardEvent) -> Violation {
    let hook = GuardHook::from_raw(event.hook);
    let argument = if hook == Some(GuardHook::SockCreate) {
        format!(
            "family {} type {} protocol {}",
            event.family, event.sock_type, event.protocol
        )
    } else if event.family == 10 {
        format!("[{}]:{}", Ipv6Addr::from(event.addr), event.port)
    } else {
        let a = &event.addr;
        format!("{}:{}", Ipv4Addr::new(a[0], a[1], a[2], a[3]), event.port)
    };
    let comm_len = event.comm.iter().position(|&b| b == 0).unwrap_or(16);
    Violation {
        ktime_ns: event.ktime_ns,
        cgroup_id: event.cgroup_id,
        pid: event.tgid,
        tid: event.pid,
        comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
        syscall: hook.map_or("unknown", GuardHook::syscall),
        action: if event.action == GUARD_ACTION_AUDITED {
            "audited"
        } else {
            "denied"
        },
        rule: match event.rule {
            GUARD_RULE_DENY_ALL => "network.deny_all",
            GUARD_RULE_NOT_ALLOWED => "network.not_allowed",
            GUARD_RULE_RAW_SOCKET => "network.raw_socket",
            GUARD_RULE_PACKET_SOCKET => "network.packet_socket",
            _ => "network",
        },
        argument,
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::{GUARD_ACTION_DENIED, GUARD_RULE_DENY_ALL, GuardEvent, GuardHook};

    use super::decode;

    #[test]
    fn a_refused_connect_reads_like_a_verdict() {
        let mut event = GuardEvent {
            hook: GuardHook::Connect4 as u32,
            action: GUARD_ACTION_DENIED,
            rule: GUARD_RULE_DENY_ALL,
            family: 2,
            port: 8080,
            tgid: 42,
            pid: 43,
            ..GuardEvent::default()
        };
        event.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        event.comm[..3].copy_from_slice(b"sol");
        let v = decode(&event);
        assert_eq!(v.argument, "127.0.0.1:8080");
        assert_eq!(v.rule, "network.deny_all");
        assert_eq!(v.syscall, "connect");
        assert_eq!((v.pid, v.tid, v.comm.as_str()), (42, 43, "sol"));
    }
}
