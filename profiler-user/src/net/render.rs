//! The table and the event stream as text.

use std::fmt::Write as _;

use super::{
    model::{ConnEvent, Connection, NetCounters},
    table::{
        CgroupNames, DurationStats, NetFigures, NetGroupBy, NetTable, arrow, cgroup_label,
        process_label,
    },
};
use crate::syscalls::{format_ns, slow::time_of_day};

/// Labels longer than this are cut from the left: cgroup paths can be long.
const MAX_LABEL_CHARS: usize = 48;

fn cut(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        return label.to_owned();
    }
    let tail: String = label.chars().rev().take(MAX_LABEL_CHARS - 1).collect();
    format!("…{}", tail.chars().rev().collect::<String>())
}

fn duration(stats: &DurationStats, pick: fn(&DurationStats) -> u64) -> String {
    if stats.count == 0 {
        "-".to_owned()
    } else {
        format_ns(pick(stats))
    }
}

/// `1.2M`-style byte counts.
pub fn format_bytes(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}K", n as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn failed(f: &NetFigures) -> String {
    let total = f.failed.total();
    if total == 0 {
        return "0".to_owned();
    }
    let mut parts = Vec::new();
    for (n, what) in [
        (f.failed.refused, "ref"),
        (f.failed.timed_out, "tmo"),
        (f.failed.other, "oth"),
    ] {
        if n > 0 {
            parts.push(format!("{n}{what}"));
        }
    }
    parts.join(",")
}

/// The table: a line per row, then the total, the traffic per cgroup and the [`footer`].
pub fn render_table(table: &NetTable) -> String {
    let heading = match table.by {
        NetGroupBy::Connection => "CONNECTION (local -> remote: connect, <-: accepted)",
        NetGroupBy::Process => "PROCESS",
        NetGroupBy::Cgroup => "CGROUP",
        NetGroupBy::Remote => "REMOTE",
    };
    let labels: Vec<String> = table.rows.iter().map(|r| cut(&r.label)).collect();
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .chain([
            if table.by == NetGroupBy::Connection {
                10
            } else {
                heading.len()
            },
            5,
        ])
        .max()
        .unwrap_or(8);
    let heading = if table.by == NetGroupBy::Connection {
        "CONNECTION"
    } else {
        heading
    };
    let extra = match table.by {
        NetGroupBy::Connection => "  PROCESS / CGROUP",
        NetGroupBy::Process => "  CGROUP",
        NetGroupBy::Cgroup => "  TRAFFIC (cgroup_skb, IP bytes rx/tx)",
        NetGroupBy::Remote => "",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{heading:<width$} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8}{extra}",
        "CONN",
        "ACC",
        "FAILED",
        "LAT_P50",
        "LAT_P99",
        "LAT_MAX",
        "LIFE_P50",
        "RETRANS",
        "RESETS",
        "IN",
        "OUT"
    );
    for (row, label) in table.rows.iter().zip(&labels) {
        let extra = match table.by {
            NetGroupBy::Connection => format!(
                "  {} {}",
                row.process.as_deref().unwrap_or("-"),
                row.cgroup.as_deref().unwrap_or("")
            ),
            NetGroupBy::Process => format!("  {}", row.cgroup.as_deref().unwrap_or("")),
            NetGroupBy::Cgroup => row.figures.traffic.map_or(String::new(), |t| {
                format!(
                    "  {}/{}",
                    format_bytes(t.rx_bytes),
                    format_bytes(t.tx_bytes)
                )
            }),
            NetGroupBy::Remote => String::new(),
        };
        line(&mut out, width, label, &row.figures, &extra);
    }
    line(&mut out, width, "TOTAL", &table.total, "");
    if !table.traffic.is_empty() {
        out.push_str("\ntraffic per cgroup (cgroup_skb: IP packets, headers included):\n");
        let w = table
            .traffic
            .iter()
            .map(|(l, _)| cut(l).chars().count())
            .chain([6])
            .max()
            .unwrap_or(6);
        let _ = writeln!(
            out,
            "{:<w$} {:>12} {:>10} {:>12} {:>10}",
            "CGROUP", "RX_BYTES", "RX_PKTS", "TX_BYTES", "TX_PKTS"
        );
        for (label, t) in &table.traffic {
            let total = t.total();
            let _ = writeln!(
                out,
                "{:<w$} {:>12} {:>10} {:>12} {:>10}",
                cut(label),
                total.rx_bytes,
                total.rx_packets,
                total.tx_bytes,
                total.tx_packets
            );
        }
    }
    out.push_str(&footer(&table.counters));
    out
}

fn line(out: &mut String, width: usize, label: &str, f: &NetFigures, extra: &str) {
    let _ = writeln!(
        out,
        "{label:<width$} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8}{extra}",
        f.connects,
        f.accepts,
        failed(f),
        duration(&f.connect_latency, |s| s.p50_ns),
        duration(&f.connect_latency, |s| s.p99_ns),
        duration(&f.connect_latency, |s| s.max_ns),
        duration(&f.lifetime, |s| s.p50_ns),
        f.retransmits,
        f.resets,
        format_bytes(f.bytes_in),
        format_bytes(f.bytes_out),
    );
}

/// What the kernel side could not report, and how bytes are counted.
pub fn footer(c: &NetCounters) -> String {
    format!(
        "IN/OUT: TCP payload bytes of closed connections (headers, SYN and FIN excluded; \
         retransmissions counted once)\nlost: {} connection events (ring buffer full), {} \
         connections untracked (map full), {} packets uncounted; {} RSTs sent without a \
         socket\n",
        c.events_lost, c.conns_full, c.traffic_full, c.untracked_resets
    )
}

fn state_name(state: u32) -> &'static str {
    use profiler_common::tcp_state::*;
    match state {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        6 => "TIME_WAIT",
        11 => "CLOSING",
        _ => "?",
    }
}

fn endpoints(conn: &Connection) -> String {
    format!("{} {} {}", conn.local, arrow(conn), conn.remote)
}

/// One line per event, like tcplife: `HH:MM:SS.ffffffZ close 4242 (curl) 10.0.0.1:40000 ->
/// 10.0.0.2:80 lifetime 12.0ms in 300 out 100 retrans 0 resets 0 cgroup=/x`.
/// `clock_offset_ns` turns monotonic times into wall-clock times.
pub fn event_line(event: &ConnEvent, clock_offset_ns: i64, cgroups: &CgroupNames) -> String {
    let conn = event.connection();
    let (ts, what) = match event {
        ConnEvent::Open { ts_ns, .. } => (*ts_ns, "open "),
        ConnEvent::Close { ts_ns, .. } => (*ts_ns, "close"),
        ConnEvent::Retransmit { ts_ns, .. } => (*ts_ns, "retx "),
    };
    let time = time_of_day(ts.saturating_add_signed(clock_offset_ns));
    let mut out = format!(
        "{time} {what} {} {} cgroup={}",
        process_label(conn),
        endpoints(conn),
        cgroup_label(cgroups, conn.cgroup_id)
    );
    match event {
        ConnEvent::Open { .. } => {
            if let Some(ns) = conn.connect_latency_ns {
                let _ = write!(out, " connect {}", format_ns(ns));
            }
        }
        ConnEvent::Close { .. } => {
            if let Some(failure) = conn.failure {
                let _ = write!(out, " FAILED {}", failure.label());
            }
            if let Some(ns) = conn.connect_latency_ns {
                let _ = write!(out, " connect {}", format_ns(ns));
            }
            let _ = write!(
                out,
                " lifetime {} in {} out {} retrans {} resets {}/{}",
                format_ns(conn.lifetime_ns.unwrap_or(0)),
                conn.bytes_in.unwrap_or(0),
                conn.bytes_out.unwrap_or(0),
                conn.retransmits,
                conn.resets_in,
                conn.resets_out
            );
        }
        ConnEvent::Retransmit { state, .. } => {
            let _ = write!(
                out,
                " state {} retrans #{}",
                state_name(*state),
                conn.retransmits
            );
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{
        ConnectFailure, Direction,
        model::{CgroupTraffic, TrafficCount},
        table::{NetGroupBy, build_table},
    };

    fn conn(failure: Option<ConnectFailure>) -> Connection {
        Connection {
            sock: 1,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            direction: Direction::Active,
            pid: Some(42),
            comm: "curl".into(),
            cgroup_id: 9,
            start_ns: 1_000,
            connect_latency_ns: failure.is_none().then_some(1_500_000),
            lifetime_ns: Some(20_000_000),
            failure,
            open: false,
            retransmits: 2,
            syn_retransmits: 1,
            resets_in: 0,
            resets_out: 0,
            bytes_in: Some(300),
            bytes_out: Some(100),
            error: 0,
        }
    }

    #[test]
    fn the_table_has_a_row_per_connection_a_total_the_traffic_and_the_losses() {
        let names = CgroupNames::from([(9, "/sys/fs/cgroup/judge".to_owned())]);
        let traffic = [CgroupTraffic {
            cgroup_id: 9,
            ipv4: TrafficCount {
                rx_bytes: 500,
                rx_packets: 5,
                tx_bytes: 400,
                tx_packets: 4,
            },
            ..Default::default()
        }];
        let conns = [conn(None), conn(Some(ConnectFailure::Refused))];
        let table = build_table(
            &conns,
            &traffic,
            NetCounters::default(),
            NetGroupBy::Connection,
            &names,
        );
        let text = render_table(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CONNECTION"), "{text}");
        assert!(lines[1].contains("10.0.0.1:40000 -> 10.0.0.2:80"), "{text}");
        assert!(
            lines[1].contains("1.50ms") && lines[1].contains("42 (curl)"),
            "{text}"
        );
        assert!(text.contains("1ref"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("TOTAL") && l.contains(" 4 ")),
            "{text}"
        );
        assert!(
            text.contains("/sys/fs/cgroup/judge") && text.contains("500"),
            "{text}"
        );
        assert!(text.contains("lost: 0 connection events"), "{text}");
    }

    #[test]
    fn event_lines_say_what_happened_with_wall_clock_times() {
        let names = CgroupNames::new();
        let close = ConnEvent::Close {
            ts_ns: 1_000,
            conn: conn(Some(ConnectFailure::TimedOut)),
        };
        let line = event_line(&close, 3_600_000_000_000, &names);
        assert!(
            line.starts_with("01:00:00.000001Z close 42 (curl)"),
            "{line}"
        );
        assert!(line.contains("FAILED timed out"), "{line}");
        assert!(line.contains("in 300 out 100 retrans 2"), "{line}");
        let retx = ConnEvent::Retransmit {
            ts_ns: 0,
            state: profiler_common::tcp_state::SYN_SENT,
            conn: conn(None),
        };
        assert!(event_line(&retx, 0, &names).contains("state SYN_SENT retrans #2"));
        assert_eq!(format_bytes(12_345), "12.3K");
    }
}
