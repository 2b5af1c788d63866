//! Connections and traffic as plain data: what `collect::net` turns the kernel's records into.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use profiler_common::{
    AF_INET6, CONN_ACTIVE, CONN_BYTES_READ, CONN_ESTABLISHED, CONN_OWNER_KNOWN, NetConn, NetEvent,
    NetEventKind, tcp_state,
};
use serde::Serialize;

const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;
const ECONNRESET: i32 = 104;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// `connect` on this host.
    Active,
    /// Accepted from a listener on this host.
    Passive,
}

/// Why a connection never reached ESTABLISHED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    /// The peer answered the SYN with a RST (nothing listening).
    Refused,
    /// No answer before the SYN retries ran out.
    TimedOut,
    /// ICMP: no route to the host or network.
    Unreachable,
    /// Closed by the application before it was established.
    Aborted,
    /// Any other socket error (the errno).
    Other(i32),
}

impl ConnectFailure {
    /// `refused`, `timed out`, …
    pub fn label(self) -> String {
        match self {
            ConnectFailure::Refused => "refused".into(),
            ConnectFailure::TimedOut => "timed out".into(),
            ConnectFailure::Unreachable => "unreachable".into(),
            ConnectFailure::Aborted => "aborted".into(),
            ConnectFailure::Other(errno) => format!("errno {errno}"),
        }
    }
}

/// One TCP connection of a target, as far as it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The socket's kernel address (joins the events of one connection).
    pub sock: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Who opened it.
    pub direction: Direction,
    /// Owning process, when known (the connecting one, or the first to close an accepted one).
    pub pid: Option<u32>,
    /// The owner's comm (empty when unknown).
    pub comm: String,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// First seen (SYN_SENT or SYN_RECV), monotonic ns.
    pub start_ns: u64,
    /// SYN_SENT → ESTABLISHED, ns (active opens that were established).
    pub connect_latency_ns: Option<u64>,
    /// First seen → CLOSE, ns; `None` while open.
    pub lifetime_ns: Option<u64>,
    /// `None` when established (or still trying), else why it failed.
    pub failure: Option<ConnectFailure>,
    /// Whether it is still open at the end of tracing.
    pub open: bool,
    /// Segments retransmitted (SYNs included).
    pub retransmits: u32,
    /// SYN or SYN-ACK retransmissions.
    pub syn_retransmits: u32,
    /// RSTs received.
    pub resets_in: u32,
    /// RSTs sent.
    pub resets_out: u32,
    /// Payload bytes received (peer's FIN excluded); `None` while open.
    pub bytes_in: Option<u64>,
    /// Payload bytes sent, each byte once (retransmissions not counted again); `None` while open.
    pub bytes_out: Option<u64>,
    /// The socket error at close (`sk_err`), 0 for none.
    pub error: i32,
}

impl Connection {
    /// From the kernel's record; `end_ns` is the close time (`None`: still open).
    pub fn from_raw(sock: u64, raw: &NetConn, end_ns: Option<u64>, state: u32, error: i32) -> Self {
        let established = raw.flags & CONN_ESTABLISHED != 0;
        let direction = if raw.flags & CONN_ACTIVE != 0 {
            Direction::Active
        } else {
            Direction::Passive
        };
        let failure = match end_ns {
            Some(_) if !established => Some(match error {
                ECONNREFUSED => ConnectFailure::Refused,
                _ if raw.resets_in > 0 && state == tcp_state::SYN_SENT => ConnectFailure::Refused,
                ETIMEDOUT => ConnectFailure::TimedOut,
                EHOSTUNREACH | ENETUNREACH => ConnectFailure::Unreachable,
                0 => ConnectFailure::Aborted,
                other => ConnectFailure::Other(other),
            }),
            _ => None,
        };
        let bytes = end_ns.is_some() && raw.flags & CONN_BYTES_READ != 0;
        Connection {
            sock,
            local: socket_addr(raw.family, &raw.saddr, raw.sport),
            remote: socket_addr(raw.family, &raw.daddr, raw.dport),
            direction,
            pid: (raw.flags & CONN_OWNER_KNOWN != 0).then_some(raw.tgid),
            comm: comm(&raw.comm),
            cgroup_id: raw.cgroup_id,
            start_ns: raw.start_ns,
            connect_latency_ns: (established && direction == Direction::Active)
                .then(|| raw.established_ns.saturating_sub(raw.start_ns)),
            lifetime_ns: end_ns.map(|end| end.saturating_sub(raw.start_ns)),
            failure,
            open: end_ns.is_none(),
            retransmits: raw.retransmits,
            syn_retransmits: raw.syn_retransmits,
            resets_in: raw.resets_in,
            resets_out: raw.resets_out,
            bytes_in: bytes.then_some(raw.bytes_in),
            bytes_out: bytes.then_some(raw.bytes_out),
            error,
        }
    }

    /// Whether it was ended by a RST (received or sent) after it was established.
    pub fn was_reset(&self) -> bool {
        self.failure.is_none()
            && (self.resets_in > 0 || self.resets_out > 0 || self.error == ECONNRESET)
    }
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ConnEvent {
    /// The connection was established.
    Open {
        /// Monotonic ns.
        ts_ns: u64,
        /// The connection so far.
        conn: Connection,
    },
    /// The connection closed, or failed to open.
    Close {
        /// Monotonic ns.
        ts_ns: u64,
        /// The connection's final figures.
        conn: Connection,
    },
    /// A segment was retransmitted.
    Retransmit {
        /// Monotonic ns.
        ts_ns: u64,
        /// The TCP state it happened in.
        state: u32,
        /// The connection so far.
        conn: Connection,
    },
}

impl ConnEvent {
    /// From the kernel's event; `None` for an unknown kind.
    pub fn from_raw(event: &NetEvent) -> Option<Self> {
        let kind = event.kind;
        let (ts_ns, sock) = (event.ts_ns, event.sock);
        Some(if kind == NetEventKind::Open as u32 {
            ConnEvent::Open {
                ts_ns,
                conn: Connection::from_raw(sock, &event.conn, None, event.state, 0),
            }
        } else if kind == NetEventKind::Close as u32 {
            ConnEvent::Close {
                ts_ns,
                conn: Connection::from_raw(
                    sock,
                    &event.conn,
                    Some(ts_ns),
                    event.state,
                    event.error,
                ),
            }
        } else if kind == NetEventKind::Retransmit as u32 {
            ConnEvent::Retransmit {
                ts_ns,
                state: event.state,
                conn: Connection::from_raw(sock, &event.conn, None, event.state, 0),
            }
        } else {
            return None;
        })
    }

    /// The connection the event is about.
    pub fn connection(&self) -> &Connection {
        match self {
            ConnEvent::Open { conn, .. }
            | ConnEvent::Close { conn, .. }
            | ConnEvent::Retransmit { conn, .. } => conn,
        }
    }
}

/// Bytes and packets of one cgroup, as `cgroup_skb` counted them: IP packets, headers
/// included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficCount {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

impl TrafficCount {
    /// Adds `other`.
    pub fn add(&mut self, other: &TrafficCount) {
        self.rx_bytes += other.rx_bytes;
        self.rx_packets += other.rx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_packets += other.tx_packets;
    }
}

/// Traffic of one cgroup, per IP version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CgroupTraffic {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// IPv4 packets.
    pub ipv4: TrafficCount,
    /// IPv6 packets.
    pub ipv6: TrafficCount,
    /// Anything else (ARP does not pass cgroup_skb; this is normally empty).
    pub other: TrafficCount,
}

impl CgroupTraffic {
    /// All IP versions together.
    pub fn total(&self) -> TrafficCount {
        let mut t = self.ipv4;
        t.add(&self.ipv6);
        t.add(&self.other);
        t
    }
}

/// What the kernel side could not report; shown under every table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetCounters {
    /// Events dropped because the ring buffer was full (those connections are missing).
    pub events_lost: u64,
    /// Connections not tracked because the connection map was full.
    pub conns_full: u64,
    /// RSTs sent with no tracked socket (e.g. to a SYN for a closed port); informative.
    pub untracked_resets: u64,
    /// Packets not counted in the traffic because its map was full.
    pub traffic_full: u64,
}

impl NetCounters {
    /// Connections or packets missing from the report.
    pub fn lost(&self) -> u64 {
        self.events_lost + self.conns_full + self.traffic_full
    }
}

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET6 {
        let v6 = Ipv6Addr::from(*addr);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    SocketAddr::new(ip, port)
}

fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use profiler_common::{AF_INET, CONN_TARGETED, TASK_COMM_LEN};

    use super::*;

    pub(crate) fn raw_conn(flags: u32) -> NetConn {
        let mut comm = [0; TASK_COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        NetConn {
            start_ns: 1_000,
            established_ns: 5_000,
            cgroup_id: 7,
            bytes_in: 300,
            bytes_out: 100,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            tgid: 42,
            retransmits: 0,
            syn_retransmits: 0,
            resets_in: 0,
            resets_out: 0,
            flags,
            sport: 40000,
            dport: 80,
            family: AF_INET,
            _pad: 0,
            comm,
        }
    }

    #[test]
    fn an_established_connect_has_its_latency_bytes_and_lifetime() {
        let flags = CONN_ACTIVE | CONN_TARGETED | CONN_OWNER_KNOWN | CONN_ESTABLISHED;
        let raw = raw_conn(flags | CONN_BYTES_READ);
        let c = Connection::from_raw(1, &raw, Some(9_000), tcp_state::LAST_ACK, 0);
        assert_eq!(c.local.to_string(), "10.0.0.1:40000");
        assert_eq!(c.remote.to_string(), "10.0.0.2:80");
        assert_eq!(c.connect_latency_ns, Some(4_000));
        assert_eq!(c.lifetime_ns, Some(8_000));
        assert_eq!((c.bytes_in, c.bytes_out), (Some(300), Some(100)));
        assert_eq!((c.pid, c.comm.as_str()), (Some(42), "curl"));
        assert_eq!(c.failure, None);
    }

    #[test]
    fn a_connect_that_never_got_established_says_why() {
        let raw = raw_conn(CONN_ACTIVE | CONN_TARGETED);
        let failure =
            |error| Connection::from_raw(1, &raw, Some(2_000), tcp_state::SYN_SENT, error).failure;
        assert_eq!(failure(111), Some(ConnectFailure::Refused));
        assert_eq!(failure(110), Some(ConnectFailure::TimedOut));
        assert_eq!(failure(0), Some(ConnectFailure::Aborted));
        let mut reset = raw;
        reset.resets_in = 1;
        let c = Connection::from_raw(1, &reset, Some(2_000), tcp_state::SYN_SENT, 0);
        assert_eq!(c.failure, Some(ConnectFailure::Refused));
        assert_eq!(c.connect_latency_ns, None);
    }

    #[test]
    fn v4_mapped_ipv6_addresses_show_as_ipv4() {
        let mut raw = raw_conn(CONN_ACTIVE);
        raw.family = AF_INET6;
        raw.daddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        let c = Connection::from_raw(1, &raw, None, 0, 0);
        assert_eq!(c.remote.to_string(), "192.0.2.1:80");
        assert!(c.open);
    }
}
