//! TCP connections and per-cgroup traffic as users see them: typed connection records,
//! rows regrouped by connection, process, cgroup or remote endpoint, the table and the event
//! stream as text, and JSON. Pure: it takes what `collect::net` read from the kernel.

pub mod closed;
pub mod json;
pub mod model;
pub mod render;
pub mod table;

pub use closed::ClosedConnections;
pub use json::{NET_SCHEMA, to_json};
pub use model::{
    CgroupTraffic, ConnEvent, ConnectFailure, Connection, Direction, NetCounters, TrafficCount,
};
pub use render::{event_line, footer, format_bytes, render_table};
pub use table::{
    CgroupNames, DurationStats, Failures, NetFigures, NetGroupBy, NetGroupKey, NetRow, NetTable,
    build_table,
};
