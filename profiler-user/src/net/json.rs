//! The report as JSON: the rows of the table, every connection with its figures, the traffic
//! per cgroup and the loss counters.

use serde::Serialize;

use super::{
    model::{CgroupTraffic, Connection, NetCounters},
    table::{CgroupNames, NetFigures, NetGroupBy, NetRow, NetTable, cgroup_label},
};

/// Identifies the document's layout.
pub const NET_SCHEMA: &str = "flamewarden.net/v1";

/// The whole report.
#[derive(Debug, Serialize)]
pub struct NetReport<'a> {
    /// Always [`NET_SCHEMA`].
    pub schema: &'static str,
    /// What was traced, in words (`command`, `pid 42`, `cgroup …`, `all`).
    pub target: &'a str,
    /// How long tracing ran, ms.
    pub duration_ms: u64,
    /// How rows are formed.
    pub by: NetGroupBy,
    /// What `bytes_in` / `bytes_out` count.
    pub bytes_counted: &'static str,
    /// What the traffic counts.
    pub traffic_counted: &'static str,
    /// The rows.
    pub rows: &'a [NetRow],
    /// Everything together.
    pub total: &'a NetFigures,
    /// Every connection, in the order they started.
    pub connections: Vec<JsonConnection<'a>>,
    /// Traffic per cgroup.
    pub traffic: Vec<JsonTraffic<'a>>,
    /// What the kernel could not report.
    pub counters: NetCounters,
}

/// One connection, with its cgroup's path.
#[derive(Debug, Serialize)]
pub struct JsonConnection<'a> {
    /// The connection.
    #[serde(flatten)]
    pub conn: &'a Connection,
    /// Its cgroup's path (or `cgroup #ID`).
    pub cgroup: String,
}

/// Traffic of one cgroup.
#[derive(Debug, Serialize)]
pub struct JsonTraffic<'a> {
    /// Its path (or `cgroup #ID`).
    pub cgroup: &'a str,
    /// Its counts.
    #[serde(flatten)]
    pub traffic: &'a CgroupTraffic,
}

/// Payload bytes, as `bytes_in` / `bytes_out` count them.
pub const BYTES_COUNTED: &str = "TCP payload of closed connections: received bytes without the \
    peer's FIN (tcp_sock.bytes_received), sent bytes once each (bytes_sent - bytes_retrans); \
    headers, SYN and FIN excluded";
/// What the per-cgroup traffic counts.
pub const TRAFFIC_COUNTED: &str = "IP packets seen by cgroup_skb on the socket's cgroup: IP and \
    TCP/UDP headers included (one set per GSO packet), packets counted by GSO segments";

/// The report as pretty-printed JSON.
pub fn to_json(
    table: &NetTable,
    connections: &[Connection],
    cgroups: &CgroupNames,
    target: &str,
    duration_ms: u64,
) -> String {
    let mut sorted: Vec<&Connection> = connections.iter().collect();
    sorted.sort_by_key(|c| c.start_ns);
    let report = NetReport {
        schema: NET_SCHEMA,
        target,
        duration_ms,
        by: table.by,
        bytes_counted: BYTES_COUNTED,
        traffic_counted: TRAFFIC_COUNTED,
        rows: &table.rows,
        total: &table.total,
        connections: sorted
            .into_iter()
            .map(|conn| JsonConnection {
                conn,
                cgroup: cgroup_label(cgroups, conn.cgroup_id),
            })
            .collect(),
        traffic: table
            .traffic
            .iter()
            .map(|(cgroup, traffic)| JsonTraffic { cgroup, traffic })
            .collect(),
        counters: table.counters,
    };
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| {
        // Plain data: serialization cannot fail; say so if it ever does.
        format!("{{\"error\": \"{e}\"}}")
    });
    text.push('\n');
    text
}
