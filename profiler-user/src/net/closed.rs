//! Closed connections kept as the kernel reported them until the report is built: a busy host
//! closes tens of thousands of connections a second, and decoding each one (addresses, the
//! comm as a `String`) while tracing runs is CPU taken from the traffic being watched.

use profiler_common::{NetEvent, NetEventKind};

use super::model::{ConnEvent, Connection};

/// Events per chunk: chunks are never moved, so the store grows without copying.
const CHUNK: usize = 4096;

/// The close events of a run, undecoded.
#[derive(Debug, Default)]
pub struct ClosedConnections {
    chunks: Vec<Vec<NetEvent>>,
    len: usize,
}

impl ClosedConnections {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `event` if it is a close event; any other kind is not kept.
    pub fn push(&mut self, event: &NetEvent) {
        if event.kind != NetEventKind::Close as u32 {
            return;
        }
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(*event),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(*event);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// How many connections are kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The connections, decoded, in the order they closed.
    pub fn connections(&self) -> impl Iterator<Item = Connection> + '_ {
        self.chunks
            .iter()
            .flatten()
            .filter_map(|raw| match ConnEvent::from_raw(raw) {
                Some(ConnEvent::Close { conn, .. }) => Some(conn),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::{CONN_ACTIVE, CONN_ESTABLISHED, CONN_OWNER_KNOWN, CONN_TARGETED};

    use super::*;
    use crate::net::model::tests::raw_conn;

    fn event(kind: NetEventKind, sock: u64) -> NetEvent {
        NetEvent {
            ts_ns: 9_000,
            sock,
            kind: kind as u32,
            state: 0,
            error: 0,
            _pad: 0,
            conn: raw_conn(CONN_ACTIVE | CONN_TARGETED | CONN_OWNER_KNOWN | CONN_ESTABLISHED),
        }
    }

    #[test]
    fn keeps_close_events_across_chunks_in_order_and_decodes_them() {
        let mut store = ClosedConnections::new();
        store.push(&event(NetEventKind::Open, 1));
        store.push(&event(NetEventKind::Retransmit, 1));
        for sock in 0..CHUNK as u64 + 3 {
            store.push(&event(NetEventKind::Close, sock));
        }
        assert_eq!(store.len(), CHUNK + 3);
        let conns: Vec<Connection> = store.connections().collect();
        assert_eq!(conns.len(), CHUNK + 3);
        assert!(conns.iter().enumerate().all(|(i, c)| c.sock == i as u64));
        assert_eq!(conns[0].lifetime_ns, Some(8_000));
        assert!(!conns[0].open);
    }
}
