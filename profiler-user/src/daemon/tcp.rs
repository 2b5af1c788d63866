//! TCP statistics per cgroup from the network tracer's event stream (`collect::net`): connects
//! by result, connect latency, retransmits and resets. Pure: the node thread feeds it events.

use std::collections::{BTreeMap, HashMap, HashSet};

use profiler_common::LATENCY_BUCKETS;

use super::syscalls::REMOVED_CGROUPS;
use crate::net::{ConnEvent, ConnectFailure, Connection, Direction};

/// What one cgroup's TCP connections did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTotals {
    /// Active opens by result: `established`, `refused`, `timed_out`, `unreachable`,
    /// `aborted`, `error` (a bounded set of labels).
    pub connects: BTreeMap<&'static str, u64>,
    /// SYN_SENT → ESTABLISHED, log2 ns buckets (bucket i holds [2^i, 2^(i+1)) ns).
    pub connect_hist: [u64; LATENCY_BUCKETS],
    /// Sum of the connect latencies, ns.
    pub connect_ns: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// RSTs received.
    pub resets_in: u64,
    /// RSTs sent.
    pub resets_out: u64,
}

impl Default for TcpTotals {
    fn default() -> Self {
        Self {
            connects: BTreeMap::new(),
            connect_hist: [0; LATENCY_BUCKETS],
            connect_ns: 0,
            retransmits: 0,
            resets_in: 0,
            resets_out: 0,
        }
    }
}

impl TcpTotals {
    /// Adds `other`.
    pub fn add(&mut self, other: &Self) {
        for (result, n) in &other.connects {
            *self.connects.entry(result).or_default() += n;
        }
        for (a, b) in self.connect_hist.iter_mut().zip(&other.connect_hist) {
            *a += b;
        }
        self.connect_ns += other.connect_ns;
        self.retransmits += other.retransmits;
        self.resets_in += other.resets_in;
        self.resets_out += other.resets_out;
    }

    /// Connection attempts (established or not): the rank of a cgroup in the top N.
    pub fn attempts(&self) -> u64 {
        self.connects.values().sum()
    }
}

/// The label of a failed connect's reason.
pub fn failure_label(failure: ConnectFailure) -> &'static str {
    match failure {
        ConnectFailure::Refused => "refused",
        ConnectFailure::TimedOut => "timed_out",
        ConnectFailure::Unreachable => "unreachable",
        ConnectFailure::Aborted => "aborted",
        ConnectFailure::Other(_) => "error",
    }
}

/// [`TcpTotals`] per cgroup id, since the daemon started.
#[derive(Debug, Default)]
pub struct TcpStats {
    by_cgroup: HashMap<u64, TcpTotals>,
}

impl TcpStats {
    /// Counts one event of the stream.
    pub fn record(&mut self, event: &ConnEvent) {
        match event {
            ConnEvent::Open { conn, .. } if conn.direction == Direction::Active => {
                let totals = self.entry(conn);
                *totals.connects.entry("established").or_default() += 1;
                if let Some(ns) = conn.connect_latency_ns {
                    let bucket = (u64::BITS - 1 - ns.max(1).leading_zeros()) as usize;
                    totals.connect_hist[bucket.min(LATENCY_BUCKETS - 1)] += 1;
                    totals.connect_ns += ns;
                }
            }
            ConnEvent::Open { .. } => {}
            ConnEvent::Close { conn, .. } => {
                let failure = (conn.direction == Direction::Active)
                    .then_some(conn.failure)
                    .flatten();
                let totals = self.entry(conn);
                if let Some(failure) = failure {
                    *totals.connects.entry(failure_label(failure)).or_default() += 1;
                }
                totals.resets_in += u64::from(conn.resets_in);
                totals.resets_out += u64::from(conn.resets_out);
            }
            ConnEvent::Retransmit { conn, .. } => self.entry(conn).retransmits += 1,
        }
    }

    fn entry(&mut self, conn: &Connection) -> &mut TcpTotals {
        self.by_cgroup.entry(conn.cgroup_id).or_default()
    }

    /// The totals per cgroup id.
    pub fn by_cgroup(&self) -> &HashMap<u64, TcpTotals> {
        &self.by_cgroup
    }

    /// Moves the totals of cgroups not in `live` under [`REMOVED_CGROUPS`].
    pub fn fold_removed_cgroups(&mut self, live: &HashSet<u64>) {
        let gone: Vec<u64> = self
            .by_cgroup
            .keys()
            .filter(|id| **id != REMOVED_CGROUPS && !live.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(totals) = self.by_cgroup.remove(&id) {
                self.by_cgroup
                    .entry(REMOVED_CGROUPS)
                    .or_default()
                    .add(&totals);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn conn(cgroup_id: u64, direction: Direction) -> Connection {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        Connection {
            sock: 1,
            local: addr,
            remote: addr,
            direction,
            pid: Some(1),
            comm: "c".into(),
            cgroup_id,
            start_ns: 0,
            connect_latency_ns: None,
            lifetime_ns: None,
            failure: None,
            open: true,
            retransmits: 0,
            syn_retransmits: 0,
            resets_in: 0,
            resets_out: 0,
            bytes_in: None,
            bytes_out: None,
            error: 0,
        }
    }

    #[test]
    fn connects_are_counted_once_by_result_with_their_latency() {
        let mut stats = TcpStats::default();
        let mut open = conn(7, Direction::Active);
        open.connect_latency_ns = Some(3000);
        stats.record(&ConnEvent::Open {
            ts_ns: 1,
            conn: open.clone(),
        });
        // Its close is not another connect.
        stats.record(&ConnEvent::Close {
            ts_ns: 2,
            conn: Connection {
                resets_in: 1,
                ..open
            },
        });
        let mut refused = conn(7, Direction::Active);
        refused.failure = Some(ConnectFailure::Refused);
        stats.record(&ConnEvent::Close {
            ts_ns: 3,
            conn: refused,
        });
        // Accepted connections are not connects.
        stats.record(&ConnEvent::Open {
            ts_ns: 4,
            conn: conn(7, Direction::Passive),
        });
        stats.record(&ConnEvent::Retransmit {
            ts_ns: 5,
            state: 1,
            conn: conn(7, Direction::Active),
        });
        let t = &stats.by_cgroup()[&7];
        assert_eq!(t.connects["established"], 1);
        assert_eq!(t.connects["refused"], 1);
        assert_eq!(t.attempts(), 2);
        // 3000 ns is in [2048, 4096).
        assert_eq!(t.connect_hist[11], 1);
        assert_eq!(t.connect_ns, 3000);
        assert_eq!((t.retransmits, t.resets_in), (1, 1));
        stats.fold_removed_cgroups(&HashSet::new());
        assert_eq!(stats.by_cgroup()[&REMOVED_CGROUPS].attempts(), 2);
    }
}
