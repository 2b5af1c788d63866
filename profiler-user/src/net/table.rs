//! Connections regrouped into rows by connection, process, cgroup or remote endpoint.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::model::{CgroupTraffic, ConnectFailure, Connection, Direction, NetCounters};

/// How the rows of the table are formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetGroupBy {
    /// One row per connection.
    #[default]
    Connection,
    /// One row per owning process.
    Process,
    /// One row per cgroup.
    Cgroup,
    /// One row per remote endpoint: address and port for connects, address for accepts.
    Remote,
}

/// What one row stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum NetGroupKey {
    /// A connection: its socket address and start time.
    Connection(u64, u64),
    /// A process id (`None`: owner unknown).
    Process(Option<u32>),
    /// A cgroup v2 id.
    Cgroup(u64),
    /// A remote endpoint.
    Remote(String),
}

/// Exact order statistics of a set of durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DurationStats {
    /// How many.
    pub count: u64,
    /// Median (nearest rank), ns.
    pub p50_ns: u64,
    /// 99th percentile (nearest rank), ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

impl DurationStats {
    /// Of `values` (any order).
    pub fn of(values: &[u64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let n = sorted.len();
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            sorted[i]
        };
        if sorted.is_empty() {
            return Self::default();
        }
        Self {
            count: sorted.len() as u64,
            p50_ns: rank(0.50),
            p99_ns: rank(0.99),
            max_ns: *sorted.last().unwrap_or(&0),
        }
    }
}

/// Failed connects by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    /// Answered by a RST.
    pub refused: u64,
    /// SYN retries exhausted.
    pub timed_out: u64,
    /// Anything else (unreachable, aborted, other errors).
    pub other: u64,
}

impl Failures {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.refused + self.timed_out + self.other
    }
}

/// The figures of one row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetFigures {
    /// Active opens (`connect`), failed ones included.
    pub connects: u64,
    /// Passive opens (accepted).
    pub accepts: u64,
    /// Connects that never got established.
    pub failed: Failures,
    /// Connections still open when tracing ended.
    pub open: u64,
    /// Connect latency (SYN_SENT → ESTABLISHED) of established connects.
    pub connect_latency: DurationStats,
    /// Lifetime (first state → CLOSE) of closed connections.
    pub lifetime: DurationStats,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// SYN or SYN-ACK retransmissions among them.
    pub syn_retransmits: u64,
    /// Established connections ended or hit by a RST.
    pub resets: u64,
    /// RSTs received.
    pub resets_in: u64,
    /// RSTs sent.
    pub resets_out: u64,
    /// Payload bytes received by closed connections.
    pub bytes_in: u64,
    /// Payload bytes sent by closed connections.
    pub bytes_out: u64,
    /// Bytes of the cgroup's IP traffic (`--by cgroup` rows only), headers included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<super::model::TrafficCount>,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetRow {
    /// What the row stands for.
    pub key: NetGroupKey,
    /// Its name as shown.
    pub label: String,
    /// Process as shown (`PID (comm)`), for connection rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// cgroup as shown, for connection and process rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Its figures.
    #[serde(flatten)]
    pub figures: NetFigures,
}

/// The regrouped connections, busiest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetTable {
    /// How rows are formed.
    pub by: NetGroupBy,
    /// The rows.
    pub rows: Vec<NetRow>,
    /// Everything together.
    pub total: NetFigures,
    /// Traffic per cgroup, from `cgroup_skb`.
    pub traffic: Vec<(String, CgroupTraffic)>,
    /// What the kernel could not report.
    pub counters: NetCounters,
}

/// cgroup paths by id, found by the caller.
pub type CgroupNames = HashMap<u64, String>;

/// The cgroup's path, or `cgroup #ID`.
pub fn cgroup_label(names: &CgroupNames, id: u64) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("cgroup #{id}"))
}

/// `PID (comm)`, or `-` when the owner is unknown.
pub fn process_label(conn: &Connection) -> String {
    match conn.pid {
        Some(pid) if conn.comm.is_empty() => pid.to_string(),
        Some(pid) => format!("{pid} ({})", conn.comm),
        None => "-".to_owned(),
    }
}

fn remote_key(conn: &Connection) -> String {
    match conn.direction {
        Direction::Active => conn.remote.to_string(),
        Direction::Passive => ip_only(conn.remote),
    }
}

fn ip_only(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => ip.to_string(),
    }
}

fn group_key(by: NetGroupBy, conn: &Connection) -> NetGroupKey {
    match by {
        NetGroupBy::Connection => NetGroupKey::Connection(conn.sock, conn.start_ns),
        NetGroupBy::Process => NetGroupKey::Process(conn.pid),
        NetGroupBy::Cgroup => NetGroupKey::Cgroup(conn.cgroup_id),
        NetGroupBy::Remote => NetGroupKey::Remote(remote_key(conn)),
    }
}

#[derive(Default)]
struct Accumulator {
    figures: NetFigures,
    latencies: Vec<u64>,
    lifetimes: Vec<u64>,
    process: Option<String>,
    cgroup: Option<String>,
}

impl Accumulator {
    fn add(&mut self, conn: &Connection) {
        let f = &mut self.figures;
        match conn.direction {
            Direction::Active => f.connects += 1,
            Direction::Passive => f.accepts += 1,
        }
        match conn.failure {
            Some(ConnectFailure::Refused) => f.failed.refused += 1,
            Some(ConnectFailure::TimedOut) => f.failed.timed_out += 1,
            Some(_) => f.failed.other += 1,
            None => {}
        }
        f.open += u64::from(conn.open);
        f.retransmits += u64::from(conn.retransmits);
        f.syn_retransmits += u64::from(conn.syn_retransmits);
        f.resets += u64::from(conn.was_reset());
        f.resets_in += u64::from(conn.resets_in);
        f.resets_out += u64::from(conn.resets_out);
        f.bytes_in += conn.bytes_in.unwrap_or(0);
        f.bytes_out += conn.bytes_out.unwrap_or(0);
        self.latencies.extend(conn.connect_latency_ns);
        self.lifetimes.extend(conn.lifetime_ns);
    }

    fn finish(mut self) -> NetFigures {
        self.figures.connect_latency = DurationStats::of(&self.latencies);
        self.figures.lifetime = DurationStats::of(&self.lifetimes);
        self.figures
    }
}

/// Regroups connections; rows are sorted by connections, then bytes, then key (connection rows
/// by start time).
pub fn build_table(
    connections: &[Connection],
    traffic: &[CgroupTraffic],
    counters: NetCounters,
    by: NetGroupBy,
    cgroups: &CgroupNames,
) -> NetTable {
    let mut groups: BTreeMap<NetGroupKey, Accumulator> = BTreeMap::new();
    let mut total = Accumulator::default();
    for conn in connections {
        let group = groups.entry(group_key(by, conn)).or_default();
        group.add(conn);
        if by == NetGroupBy::Connection {
            group.process = Some(process_label(conn));
        }
        if matches!(by, NetGroupBy::Connection | NetGroupBy::Process) {
            group.cgroup = Some(cgroup_label(cgroups, conn.cgroup_id));
        }
        if by == NetGroupBy::Process && group.process.is_none() {
            group.process = Some(process_label(conn));
        }
        total.add(conn);
    }
    if by == NetGroupBy::Cgroup {
        for t in traffic {
            groups.entry(NetGroupKey::Cgroup(t.cgroup_id)).or_default();
        }
    }
    let mut rows: Vec<NetRow> = groups
        .into_iter()
        .map(|(key, acc)| {
            let (process, cgroup) = (acc.process.clone(), acc.cgroup.clone());
            let mut figures = acc.finish();
            let label = match &key {
                NetGroupKey::Connection(..) => String::new(),
                NetGroupKey::Process(_) => process.clone().unwrap_or_else(|| "-".into()),
                NetGroupKey::Cgroup(id) => {
                    figures.traffic = traffic
                        .iter()
                        .find(|t| t.cgroup_id == *id)
                        .map(CgroupTraffic::total);
                    cgroup_label(cgroups, *id)
                }
                NetGroupKey::Remote(remote) => remote.clone(),
            };
            NetRow {
                key,
                label,
                process: (by == NetGroupBy::Connection).then_some(process).flatten(),
                cgroup: if by == NetGroupBy::Cgroup {
                    None
                } else {
                    cgroup
                },
                figures,
            }
        })
        .collect();
    if by == NetGroupBy::Connection {
        // Labels need the connection itself: local → remote.
        let by_key: HashMap<(u64, u64), &Connection> = connections
            .iter()
            .map(|c| ((c.sock, c.start_ns), c))
            .collect();
        for row in &mut rows {
            if let NetGroupKey::Connection(sock, start) = row.key
                && let Some(conn) = by_key.get(&(sock, start))
            {
                row.label = format!("{} {} {}", conn.local, arrow(conn), conn.remote);
            }
        }
        rows.sort_by_key(|r| match r.key {
            NetGroupKey::Connection(_, start) => start,
            _ => 0,
        });
    } else {
        rows.sort_by(|a, b| {
            let weight = |f: &NetFigures| (f.connects + f.accepts, f.bytes_in + f.bytes_out);
            weight(&b.figures)
                .cmp(&weight(&a.figures))
                .then_with(|| a.key.cmp(&b.key))
        });
    }
    NetTable {
        by,
        rows,
        total: total.finish(),
        traffic: traffic
            .iter()
            .map(|t| (cgroup_label(cgroups, t.cgroup_id), *t))
            .collect(),
        counters,
    }
}

/// `→` for a connect, `←` for an accepted connection (the arrow points away from the opener).
pub fn arrow(conn: &Connection) -> &'static str {
    match conn.direction {
        Direction::Active => "->",
        Direction::Passive => "<-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn conn(sock: u64, pid: u32, latency_ms: Option<u64>) -> Connection {
        Connection {
            sock,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            direction: Direction::Active,
            pid: Some(pid),
            comm: "client".into(),
            cgroup_id: 9,
            start_ns: sock,
            connect_latency_ns: latency_ms.map(|ms| ms * 1_000_000),
            lifetime_ns: Some(50_000_000),
            failure: latency_ms.is_none().then_some(ConnectFailure::Refused),
            open: false,
            retransmits: 1,
            syn_retransmits: 0,
            resets_in: 0,
            resets_out: 0,
            bytes_in: Some(10),
            bytes_out: Some(20),
            error: 0,
        }
    }

    #[test]
    fn percentiles_are_exact_nearest_ranks() {
        let s = DurationStats::of(&(1..=100).collect::<Vec<u64>>());
        assert_eq!((s.count, s.p50_ns, s.p99_ns, s.max_ns), (100, 50, 99, 100));
        assert_eq!(DurationStats::of(&[7]).p99_ns, 7);
        assert_eq!(DurationStats::of(&[]), DurationStats::default());
    }

    #[test]
    fn rows_by_process_add_up_connects_failures_and_bytes() {
        let conns = [
            conn(1, 10, Some(1)),
            conn(2, 10, Some(3)),
            conn(3, 10, None),
            conn(4, 11, Some(2)),
        ];
        let t = build_table(
            &conns,
            &[],
            NetCounters::default(),
            NetGroupBy::Process,
            &CgroupNames::new(),
        );
        assert_eq!(t.rows.len(), 2);
        let first = &t.rows[0];
        assert_eq!(first.label, "10 (client)");
        assert_eq!(first.figures.connects, 3);
        assert_eq!(first.figures.failed.refused, 1);
        assert_eq!(first.figures.connect_latency.max_ns, 3_000_000);
        assert_eq!(first.figures.bytes_out, 60);
        assert_eq!(t.total.connects, 4);
        assert_eq!(t.total.retransmits, 4);
    }

    #[test]
    fn connection_rows_are_labelled_with_both_ends_in_start_order() {
        let conns = [conn(5, 10, Some(1)), conn(2, 10, Some(1))];
        let t = build_table(
            &conns,
            &[],
            NetCounters::default(),
            NetGroupBy::Connection,
            &CgroupNames::new(),
        );
        assert_eq!(t.rows[0].key, NetGroupKey::Connection(2, 2));
        assert_eq!(t.rows[0].label, "10.0.0.1:40000 -> 10.0.0.2:80");
        assert_eq!(t.rows[0].process.as_deref(), Some("10 (client)"));
    }
}
