//! The TCP part of `/metrics`: connects by result, connect latency, retransmits, resets and IP
//! bytes per cgroup, labelled like the syscall metrics (top N cgroups, then `other`).

use std::collections::{BTreeMap, HashMap};

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{
    metrics::{Labels, buckets, counter, label_of, top_labels},
    node::NodeView,
    tcp::TcpTotals,
};
use crate::net::NetCounters;

/// The TCP figures, labelled.
#[derive(Debug, Default)]
pub struct TcpExposition {
    /// Per cgroup label.
    pub totals: BTreeMap<String, TcpTotals>,
    /// IP bytes per (cgroup label, `rx`/`tx`).
    pub bytes: BTreeMap<(String, &'static str), u64>,
    /// The tracer's loss counters.
    pub counters: NetCounters,
}

impl TcpExposition {
    /// From the node's view: cgroups ranked by connection attempts for the connection figures
    /// and by bytes for the traffic.
    pub fn new(view: &NodeView, top_n: usize) -> Self {
        let attempts: HashMap<u64, u64> = view
            .tcp
            .iter()
            .map(|(id, t)| (*id, t.attempts() + t.retransmits))
            .collect();
        let top = top_labels(&attempts, &view.names, top_n);
        let mut totals: BTreeMap<String, TcpTotals> = BTreeMap::new();
        for (id, t) in &view.tcp {
            totals.entry(label_of(&top, *id)).or_default().add(t);
        }
        let bytes_of: HashMap<u64, u64> = view
            .traffic
            .iter()
            .map(|t| (t.cgroup_id, t.total().rx_bytes + t.total().tx_bytes))
            .collect();
        let top = top_labels(&bytes_of, &view.names, top_n);
        let mut bytes = BTreeMap::new();
        for t in &view.traffic {
            let label = label_of(&top, t.cgroup_id);
            let total = t.total();
            *bytes.entry((label.clone(), "rx")).or_default() += total.rx_bytes;
            *bytes.entry((label, "tx")).or_default() += total.tx_bytes;
        }
        Self {
            totals,
            bytes,
            counters: view.net_counters,
        }
    }

    /// Encodes every TCP family.
    pub fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cgroup = |c: &str| vec![("cgroup".to_owned(), c.to_owned())];
        let with = |c: &str, k: &str, v: &str| {
            let mut labels = cgroup(c);
            labels.push((k.to_owned(), v.to_owned()));
            labels
        };
        let connects: Vec<(Labels, f64)> = self
            .totals
            .iter()
            .flat_map(|(c, t)| {
                t.connects
                    .iter()
                    .map(move |(result, n)| (with(c, "result", result), *n as f64))
            })
            .collect();
        counter(
            e,
            "flamewarden_tcp_connects",
            "TCP connects (active opens) per cgroup by result: established, refused, \
             timed_out, unreachable, aborted, error.",
            &connects,
        )?;
        {
            let mut metric = e.encode_descriptor(
                "flamewarden_tcp_connect_duration_seconds",
                "TCP connect latency (SYN sent to established) per cgroup.",
                None,
                MetricType::Histogram,
            )?;
            for (c, t) in &self.totals {
                let count: u64 = t.connect_hist.iter().sum();
                metric
                    .encode_family(&cgroup(c))?
                    .encode_histogram::<NoLabelSet>(
                        t.connect_ns as f64 / 1e9,
                        count,
                        &buckets(&t.connect_hist),
                        None,
                    )?;
            }
        }
        let rows = |f: fn(&TcpTotals) -> u64| -> Vec<(Labels, f64)> {
            self.totals
                .iter()
                .map(|(c, t)| (cgroup(c), f(t) as f64))
                .collect()
        };
        counter(
            e,
            "flamewarden_tcp_retransmits",
            "TCP segments retransmitted per cgroup.",
            &rows(|t| t.retransmits),
        )?;
        let resets: Vec<(Labels, f64)> = self
            .totals
            .iter()
            .flat_map(|(c, t)| {
                [
                    (with(c, "direction", "in"), t.resets_in as f64),
                    (with(c, "direction", "out"), t.resets_out as f64),
                ]
            })
            .collect();
        counter(
            e,
            "flamewarden_tcp_resets",
            "TCP RSTs per cgroup, received (in) or sent (out), counted when the connection closes.",
            &resets,
        )?;
        let bytes: Vec<(Labels, f64)> = self
            .bytes
            .iter()
            .map(|((c, d), n)| (with(c, "direction", d), *n as f64))
            .collect();
        counter(
            e,
            "flamewarden_network_bytes",
            "IP bytes (headers included) per cgroup, received (rx) or sent (tx).",
            &bytes,
        )
    }
}
