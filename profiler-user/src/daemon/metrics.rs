//! `/metrics`: the node's syscall statistics, guard violations and the daemon's own cost in the
//! Prometheus text format, encoded by `prometheus-client` from plain snapshots.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::{cpu::CpuTotals, node::NodeView, syscalls::SyscallTotals, tcp_metrics::TcpExposition};
use crate::syscalls::syscall_name;

/// Label value of the cgroups beyond the top N.
pub const OTHER: &str = "other";

/// Upper bounds of the latency histogram, as powers of two of ns (every second log2 bucket of
/// the kernel's histogram, so that each bound is exact).
const BOUNDS_LOG2: [u32; 12] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32];

/// The daemon's own cost.
#[derive(Clone, Debug, Default)]
pub struct SelfStats {
    /// CPU time, s.
    pub cpu_seconds: f64,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Per BPF program: (name, run time ns, runs).
    pub programs: Vec<(String, u64, u64)>,
    /// Whether the kernel's BPF run-time statistics are on.
    pub bpf_stats_enabled: bool,
}

/// The always-on CPU profile's figures.
#[derive(Debug, Default)]
pub struct CpuExposition {
    /// Samples per cgroup label (top N, `other`, `removed`).
    pub samples: BTreeMap<String, u64>,
    /// Sampling frequency, Hz (0: off).
    pub frequency_hz: u64,
    /// Samples whose user / kernel stack was not stored.
    pub lost_user_stack: u64,
    /// See `lost_user_stack`.
    pub lost_kernel_stack: u64,
    /// Samples dropped because the aggregation map was full.
    pub map_full: u64,
    /// Mapping records the kernel dropped.
    pub mapping_records_lost: u64,
}

impl CpuExposition {
    /// From the CPU thread's totals, labelled like the syscall metrics.
    pub fn new(totals: &CpuTotals, names: &HashMap<u64, String>, top_n: usize) -> Self {
        let top = top_labels(&totals.by_cgroup, names, top_n);
        let mut samples = BTreeMap::new();
        for (id, n) in &totals.by_cgroup {
            *samples.entry(label_of(&top, *id)).or_default() += n;
        }
        Self {
            samples,
            frequency_hz: totals.frequency_hz,
            lost_user_stack: totals.counters.lost_user_stack,
            lost_kernel_stack: totals.counters.lost_kernel_stack,
            map_full: totals.counters.lost_key_map_full,
            mapping_records_lost: totals.mapping_records_lost,
        }
    }
}

/// Everything `/metrics` shows, as plain data.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Per (cgroup label, syscall name).
    pub syscalls: BTreeMap<(String, String), SyscallTotals>,
    /// The always-on CPU profile.
    pub cpu: CpuExposition,
    /// TCP per cgroup.
    pub tcp: TcpExposition,
    /// Execs and exits per cgroup label.
    pub processes: BTreeMap<String, (u64, u64)>,
    /// Sandbox verdicts by (status, source).
    pub verdicts: BTreeMap<(String, String), u64>,
    /// Verdict datagrams that were not a verdict.
    pub verdicts_malformed: u64,
    /// Syscall events lost and map-full counts.
    pub syscall_events_lost: u64,
    /// Syscall statistics not recorded because the map was full.
    pub syscall_map_full: u64,
    /// Errnos not recorded because their map was full.
    pub syscall_errno_map_full: u64,
    /// Guard violations by (rule, action).
    pub violations: BTreeMap<(String, String), u64>,
    /// Guard events lost.
    pub guard_events_lost: u64,
    /// Guarded sandboxes now.
    pub sandboxes: u64,
    /// Failed guard attaches and detaches.
    pub guard_attach_errors: u64,
    /// Successful reloads.
    pub config_reloads: u64,
    /// Refused reloads.
    pub config_reload_errors: u64,
    /// The daemon's own cost.
    pub own: SelfStats,
}

/// The labels of the `top_n` cgroups with the largest `weights` (their paths from `names`,
/// `cgroup-<id>` without one); the others are [`OTHER`].
pub fn top_labels(
    weights: &HashMap<u64, u64>,
    names: &HashMap<u64, String>,
    top_n: usize,
) -> HashMap<u64, String> {
    let mut ranked: Vec<(u64, u64)> = weights.iter().map(|(id, w)| (*id, *w)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
        .iter()
        .take(top_n)
        .map(|(id, _)| {
            let label = names
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("cgroup-{id}"));
            (*id, label)
        })
        .collect()
}

/// The label of `id` among `top`.
pub fn label_of(top: &HashMap<u64, String>, id: u64) -> String {
    top.get(&id).cloned().unwrap_or_else(|| OTHER.to_owned())
}

/// Execs and exits per cgroup label, the top `top_n` cgroups by both.
pub fn top_processes(view: &NodeView, top_n: usize) -> BTreeMap<String, (u64, u64)> {
    let weights: HashMap<u64, u64> = view
        .procs
        .iter()
        .map(|(id, t)| (*id, t.execs + t.exits))
        .collect();
    let top = top_labels(&weights, &view.names, top_n);
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, t) in &view.procs {
        let entry = out.entry(label_of(&top, *id)).or_default();
        entry.0 += t.execs;
        entry.1 += t.exits;
    }
    out
}

/// Folds the per-cgroup totals into the top `top_n` cgroups by call count (labelled by path)
/// and `other`.
pub fn top_cgroups(view: &NodeView, top_n: usize) -> BTreeMap<(String, String), SyscallTotals> {
    let mut by_cgroup: HashMap<u64, u64> = HashMap::new();
    for ((cgroup, _), t) in &view.totals {
        *by_cgroup.entry(*cgroup).or_default() += t.count;
    }
    let top = top_labels(&by_cgroup, &view.names, top_n);
    let mut out: BTreeMap<(String, String), SyscallTotals> = BTreeMap::new();
    for ((cgroup, nr), t) in &view.totals {
        let label = label_of(&top, *cgroup);
        let entry = out
            .entry((label, syscall_name(*nr).into_owned()))
            .or_default();
        entry.count += t.count;
        entry.errors += t.errors;
        entry.total_ns += t.total_ns;
        for (a, b) in entry.hist.iter_mut().zip(&t.hist) {
            *a += b;
        }
    }
    out
}

/// The classic buckets (upper bound in s, calls in the bucket) of a log2 ns histogram.
pub fn buckets(hist: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(BOUNDS_LOG2.len() + 1);
    let mut from = 0;
    for bound in BOUNDS_LOG2 {
        // Kernel bucket i holds [2^i, 2^(i+1)): those below 2^bound are buckets < bound.
        let to = (bound as usize).min(hist.len());
        out.push(((1u64 << bound) as f64 / 1e9, hist[from..to].iter().sum()));
        from = to;
    }
    out.push((f64::INFINITY, hist[from..].iter().sum()));
    out
}

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// Encodes the counter family `name` with one sample per row.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes the unlabelled gauge `name`.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_syscall = |f: fn(&SyscallTotals) -> u64| -> Vec<(Labels, f64)> {
            self.syscalls
                .iter()
                .map(|((cgroup, syscall), t)| {
                    let labels = vec![
                        ("cgroup".to_owned(), cgroup.clone()),
                        ("syscall".to_owned(), syscall.clone()),
                    ];
                    (labels, f(t) as f64)
                })
                .collect()
        };
        counter(
            &mut e,
            "flamewarden_syscalls",
            "Completed syscalls per cgroup (top N by calls, then `other`) and syscall.",
            &per_syscall(|t| t.count),
        )?;
        counter(
            &mut e,
            "flamewarden_syscall_errors",
            "Syscalls that returned an error, per cgroup and syscall.",
            &per_syscall(|t| t.errors),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "flamewarden_syscall_duration_seconds",
                "Syscall latency per cgroup and syscall.",
                None,
                MetricType::Histogram,
            )?;
            for ((cgroup, syscall), t) in &self.syscalls {
                let labels = vec![
                    ("cgroup".to_owned(), cgroup.clone()),
                    ("syscall".to_owned(), syscall.clone()),
                ];
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        t.total_ns as f64 / 1e9,
                        t.count,
                        &buckets(&t.hist),
                        None,
                    )?;
            }
        }
        let cpu: Vec<(Labels, f64)> = self
            .cpu
            .samples
            .iter()
            .map(|(cgroup, n)| (vec![("cgroup".to_owned(), cgroup.clone())], *n as f64))
            .collect();
        counter(
            &mut e,
            "flamewarden_cpu_samples",
            "Always-on CPU samples per cgroup (top N by samples, then `other`); divide the rate \
             by flamewarden_cpu_sampling_frequency_hertz for CPUs busy.",
            &cpu,
        )?;
        gauge(
            &mut e,
            "flamewarden_cpu_sampling_frequency_hertz",
            "Always-on CPU sampling frequency per CPU (0: off).",
            self.cpu.frequency_hz as f64,
        )?;
        let reason = |r: &str, n: u64| (vec![("reason".to_owned(), r.to_owned())], n as f64);
        counter(
            &mut e,
            "flamewarden_cpu_samples_incomplete",
            "Always-on CPU samples whose user or kernel stack could not be stored.",
            &[
                reason("user_stack", self.cpu.lost_user_stack),
                reason("kernel_stack", self.cpu.lost_kernel_stack),
            ],
        )?;
        self.tcp.encode(&mut e)?;
        let procs = |f: fn(&(u64, u64)) -> u64| -> Vec<(Labels, f64)> {
            self.processes
                .iter()
                .map(|(c, n)| (vec![("cgroup".to_owned(), c.clone())], f(n) as f64))
                .collect()
        };
        counter(
            &mut e,
            "flamewarden_process_execs",
            "Successful execs per cgroup (top N, then `other`).",
            &procs(|n| n.0),
        )?;
        counter(
            &mut e,
            "flamewarden_process_exits",
            "Processes that ended, per cgroup (top N, then `other`).",
            &procs(|n| n.1),
        )?;
        let verdicts: Vec<(Labels, f64)> = self
            .verdicts
            .iter()
            .map(|((status, source), n)| {
                let labels = vec![
                    ("status".to_owned(), status.clone()),
                    ("source".to_owned(), source.clone()),
                ];
                (labels, *n as f64)
            })
            .collect();
        counter(
            &mut e,
            "flamewarden_sandbox_verdicts",
            "Sandbox verdicts by status and source: `run` (reported by `flamewarden sandbox \
             run`) or `discovered` (derived for a discovered sandbox when its cgroup is removed).",
            &verdicts,
        )?;
        counter(
            &mut e,
            "flamewarden_sandbox_verdicts_malformed",
            "Datagrams on the verdict socket that were not a verdict.",
            &[(Vec::new(), self.verdicts_malformed as f64)],
        )?;
        let violations: Vec<(Labels, f64)> = self
            .violations
            .iter()
            .map(|((rule, action), n)| {
                let labels = vec![
                    ("rule".to_owned(), rule.clone()),
                    ("action".to_owned(), action.clone()),
                ];
                (labels, *n as f64)
            })
            .collect();
        counter(
            &mut e,
            "flamewarden_guard_violations",
            "Guard violations by rule and action: read from the sandboxes the daemon guards, and \
             from the verdicts `flamewarden sandbox run` reports.",
            &violations,
        )?;
        let buffer = |name: &str, n: u64| (vec![("buffer".to_owned(), name.to_owned())], n as f64);
        counter(
            &mut e,
            "flamewarden_events_lost",
            "Events the kernel dropped because a ring buffer was full, per buffer.",
            &[
                buffer("guard", self.guard_events_lost),
                buffer("syscalls", self.syscall_events_lost),
                buffer("mappings", self.cpu.mapping_records_lost),
                buffer("net", self.tcp.counters.events_lost),
            ],
        )?;
        let map = |name: &str, n: u64| (vec![("map".to_owned(), name.to_owned())], n as f64);
        counter(
            &mut e,
            "flamewarden_map_full_errors",
            "Updates lost because a BPF map was full.",
            &[
                map("syscall_stats", self.syscall_map_full),
                map("syscall_errnos", self.syscall_errno_map_full),
                map("sample_counts", self.cpu.map_full),
                map("net_conns", self.tcp.counters.conns_full),
                map("net_traffic", self.tcp.counters.traffic_full),
            ],
        )?;
        gauge(
            &mut e,
            "flamewarden_guarded_sandboxes",
            "Sandbox cgroups the guard is attached to.",
            self.sandboxes as f64,
        )?;
        counter(
            &mut e,
            "flamewarden_guard_attach_errors",
            "Guard attaches and detaches that failed.",
            &[(Vec::new(), self.guard_attach_errors as f64)],
        )?;
        counter(
            &mut e,
            "flamewarden_config_reloads",
            "Configurations reloaded on SIGHUP.",
            &[(Vec::new(), self.config_reloads as f64)],
        )?;
        counter(
            &mut e,
            "flamewarden_config_reload_errors",
            "Reloads refused because the new configuration was invalid (the old one stays).",
            &[(Vec::new(), self.config_reload_errors as f64)],
        )?;
        counter(
            &mut e,
            "flamewarden_daemon_cpu_seconds",
            "CPU time (user + system) of the daemon.",
            &[(Vec::new(), self.own.cpu_seconds)],
        )?;
        gauge(
            &mut e,
            "flamewarden_daemon_resident_memory_bytes",
            "Resident set size of the daemon.",
            self.own.rss_bytes as f64,
        )?;
        gauge(
            &mut e,
            "flamewarden_bpf_stats_enabled",
            "1 when the kernel's BPF run-time statistics are on.",
            f64::from(u8::from(self.own.bpf_stats_enabled)),
        )?;
        let program = |name: &str, v: f64| (vec![("program".to_owned(), name.to_owned())], v);
        let run_time: Vec<(Labels, f64)> = self
            .own
            .programs
            .iter()
            .map(|(name, ns, _)| program(name, *ns as f64 / 1e9))
            .collect();
        let runs: Vec<(Labels, f64)> = self
            .own
            .programs
            .iter()
            .map(|(name, _, n)| program(name, *n as f64))
            .collect();
        counter(
            &mut e,
            "flamewarden_bpf_program_run_seconds",
            "Time the kernel spent running flamewarden's BPF programs (kernel.bpf_stats_enabled).",
            &run_time,
        )?;
        counter(
            &mut e,
            "flamewarden_bpf_program_runs",
            "How often flamewarden's BPF programs ran.",
            &runs,
        )
    }
}

/// The exposition in the Prometheus text format (version 0.0.4).
pub fn render(exposition: Exposition) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exposition));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_histogram_folds_into_exact_classic_buckets() {
        let mut hist = [0u64; profiler_common::LATENCY_BUCKETS];
        hist[3] = 5; // 8-16 ns
        hist[10] = 2; // 1024-2048 ns: not below 2^10
        hist[39] = 1;
        let b = buckets(&hist);
        assert_eq!(b[0], (1024.0 / 1e9, 5));
        assert_eq!(b[1].1, 2);
        assert_eq!(b.last().unwrap().1, 1);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 8);
    }

    #[test]
    fn cgroups_beyond_the_top_n_are_other() {
        let mut view = NodeView::default();
        for (id, count) in [(1, 100), (2, 50), (3, 10)] {
            let t = SyscallTotals {
                count,
                ..SyscallTotals::default()
            };
            view.totals.insert((id, 39), t);
        }
        view.names.insert(1, "/sys/fs/cgroup/unified/a".into());
        let top = top_cgroups(&view, 2);
        let labels: Vec<&str> = top.keys().map(|(c, _)| c.as_str()).collect();
        assert_eq!(labels, ["/sys/fs/cgroup/unified/a", "cgroup-2", "other"]);
        assert_eq!(
            top[&("other".to_owned(), syscall_name(39).into_owned())].count,
            10
        );
    }

    #[test]
    fn counters_get_their_total_suffix() {
        let mut exposition = Exposition::default();
        exposition
            .violations
            .insert(("network.deny_all".into(), "denied".into()), 3);
        let text = render(exposition);
        assert!(
            text.contains(
                "flamewarden_guard_violations_total{rule=\"network.deny_all\",action=\"denied\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("flamewarden_config_reload_errors_total 0"),
            "{text}"
        );
    }
}
