//! What the kernel counted, regrouped into rows by syscall, process or cgroup.

use std::collections::{BTreeMap, HashMap};

use profiler_common::{LATENCY_BUCKETS, SyscallErrnoKey, SyscallKey, SyscallStats};
use serde::Serialize;

use super::{
    histogram::{LatencyHistogram, merge},
    names::syscall_name,
};

/// The syscall tracer's loss counters, summed over CPUs; shown under every table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyscallCounters {
    /// Exits of targeted threads without a recorded entry: calls already running when tracing
    /// began (not counted), plus the calls of [`SyscallCounters::inflight_full`].
    pub unmatched_exits: u64,
    /// Calls not counted because the in-flight map was full at their entry.
    pub inflight_full: u64,
    /// Calls not counted because the statistics map was full.
    pub stats_full: u64,
    /// Slow-call events dropped because the ring buffer was full.
    pub events_lost: u64,
    /// Errors counted, but whose errno could not be stored (errno map full).
    pub errno_full: u64,
}

impl SyscallCounters {
    /// Completed calls that are missing from the table.
    pub fn lost_calls(&self) -> u64 {
        self.inflight_full + self.stats_full
    }
}

/// Everything the syscall tracer's maps held at one moment, summed over CPUs.
#[derive(Clone, Debug, Default)]
pub struct SyscallSnapshot {
    /// Statistics per (cgroup, process, syscall).
    pub stats: Vec<(SyscallKey, SyscallStats)>,
    /// Error counts per (cgroup, process, syscall, errno).
    pub errnos: Vec<(SyscallErrnoKey, u64)>,
    /// Loss counters.
    pub counters: SyscallCounters,
}

/// How the rows of the table are formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per syscall, over all targeted processes.
    #[default]
    Syscall,
    /// One row per process, over all its syscalls.
    Process,
    /// One row per cgroup, over all its processes' syscalls.
    Cgroup,
}

/// What one row stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum GroupKey {
    /// A syscall number.
    Syscall(u32),
    /// A process id.
    Process(u32),
    /// A cgroup v2 id.
    Cgroup(u64),
}

/// Count, errors and latency of a set of calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallLatency {
    /// Completed calls.
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Time spent in them, ns.
    pub total_ns: u64,
    /// The longest one, ns.
    pub max_ns: u64,
    /// log2 histogram of durations (see [`super::histogram`]).
    #[serde(skip)]
    pub hist: LatencyHistogram,
    /// Error counts by errno.
    pub errnos: BTreeMap<u32, u64>,
    /// Time per syscall number, ns (which call dominates a process or cgroup row).
    #[serde(skip)]
    pub time_by_syscall: BTreeMap<u32, u64>,
}

impl Default for SyscallLatency {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            total_ns: 0,
            max_ns: 0,
            hist: [0; LATENCY_BUCKETS],
            errnos: BTreeMap::new(),
            time_by_syscall: BTreeMap::new(),
        }
    }
}

impl SyscallLatency {
    /// Adds one (cgroup, process, syscall) entry.
    pub fn add(&mut self, nr: u32, stats: &SyscallStats) {
        self.count += stats.count;
        self.errors += stats.errors;
        self.total_ns += stats.total_ns;
        self.max_ns = self.max_ns.max(stats.max_ns);
        merge(&mut self.hist, &stats.hist);
        *self.time_by_syscall.entry(nr).or_default() += stats.total_ns;
    }

    /// Mean duration, ns (0 without calls).
    pub fn avg_ns(&self) -> u64 {
        self.total_ns.checked_div(self.count).unwrap_or(0)
    }

    /// The errnos by decreasing count (ties by errno).
    pub fn top_errnos(&self) -> Vec<(u32, u64)> {
        let mut errnos: Vec<(u32, u64)> = self.errnos.iter().map(|(&e, &n)| (e, n)).collect();
        errnos.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        errnos
    }

    /// The syscall with the most time in it.
    pub fn busiest_syscall(&self) -> Option<u32> {
        self.time_by_syscall
            .iter()
            .max_by_key(|(nr, ns)| (**ns, std::cmp::Reverse(**nr)))
            .map(|(&nr, _)| nr)
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallRow {
    /// What the row stands for.
    pub key: GroupKey,
    /// Its name as shown: `openat`, `1234 (nginx)`, `/sys/fs/cgroup/judge/run42`.
    pub label: String,
    /// Its calls.
    #[serde(flatten)]
    pub latency: SyscallLatency,
}

/// The regrouped statistics, busiest rows (by total time) first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallTable {
    /// How rows are formed.
    pub by: GroupBy,
    /// The rows.
    pub rows: Vec<SyscallRow>,
    /// All calls together.
    pub total: SyscallLatency,
    /// What the kernel could not count.
    pub counters: SyscallCounters,
}

/// Names of processes and cgroups, found by the caller (in `/proc` and the cgroup file system).
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Process name (`comm`) by process id.
    pub processes: HashMap<u32, String>,
    /// cgroup path by cgroup id.
    pub cgroups: HashMap<u64, String>,
}

impl Names {
    /// `1234 (nginx)`, or `1234` when the process was not seen.
    pub fn process(&self, tgid: u32) -> String {
        match self.processes.get(&tgid) {
            Some(comm) => format!("{tgid} ({comm})"),
            None => tgid.to_string(),
        }
    }

    /// The cgroup's path, or `cgroup #ID` when it was not found.
    pub fn cgroup(&self, id: u64) -> String {
        self.cgroups
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup #{id}"))
    }
}

fn group_key(by: GroupBy, cgroup_id: u64, tgid: u32, nr: u32) -> GroupKey {
    match by {
        GroupBy::Syscall => GroupKey::Syscall(nr),
        GroupBy::Process => GroupKey::Process(tgid),
        GroupBy::Cgroup => GroupKey::Cgroup(cgroup_id),
    }
}

/// Regroups a snapshot; rows are sorted by total time, then count, then key.
pub fn build_table(snapshot: &SyscallSnapshot, by: GroupBy, names: &Names) -> SyscallTable {
    let mut groups: HashMap<GroupKey, SyscallLatency> = HashMap::new();
    let mut total = SyscallLatency::default();
    for (key, stats) in &snapshot.stats {
        let group = group_key(by, key.cgroup_id, key.tgid, key.nr);
        groups.entry(group).or_default().add(key.nr, stats);
        total.add(key.nr, stats);
    }
    for (key, n) in &snapshot.errnos {
        let group = group_key(by, key.cgroup_id, key.tgid, key.nr);
        *groups
            .entry(group)
            .or_default()
            .errnos
            .entry(key.errno)
            .or_default() += n;
        *total.errnos.entry(key.errno).or_default() += n;
    }
    let mut rows: Vec<SyscallRow> = groups
        .into_iter()
        .map(|(key, latency)| SyscallRow {
            key,
            label: match key {
                GroupKey::Syscall(nr) => syscall_name(nr).into_owned(),
                GroupKey::Process(tgid) => names.process(tgid),
                GroupKey::Cgroup(id) => names.cgroup(id),
            },
            latency,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.latency
            .total_ns
            .cmp(&a.latency.total_ns)
            .then(b.latency.count.cmp(&a.latency.count))
            .then(a.key.cmp(&b.key))
    });
    SyscallTable {
        by,
        rows,
        total,
        counters: snapshot.counters,
    }
}

/// All calls of syscall `nr` in the snapshot, over every process.
pub fn latency_of(snapshot: &SyscallSnapshot, nr: u32) -> SyscallLatency {
    let mut latency = SyscallLatency::default();
    for (key, stats) in snapshot.stats.iter().filter(|(k, _)| k.nr == nr) {
        latency.add(key.nr, stats);
    }
    for (key, n) in snapshot.errnos.iter().filter(|(k, _)| k.nr == nr) {
        *latency.errnos.entry(key.errno).or_default() += n;
    }
    latency
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `count` calls of `ns` each, `errors` of which failed.
    pub(crate) fn stats(count: u64, errors: u64, ns: u64) -> SyscallStats {
        let mut hist = [0; LATENCY_BUCKETS];
        hist[63 - ns.max(1).leading_zeros() as usize] = count;
        SyscallStats {
            count,
            errors,
            total_ns: count * ns,
            max_ns: ns,
            hist,
        }
    }

    pub(crate) fn key(cgroup_id: u64, tgid: u32, nr: u32) -> SyscallKey {
        SyscallKey {
            cgroup_id,
            tgid,
            nr,
        }
    }

    pub(crate) fn snapshot() -> SyscallSnapshot {
        const OPENAT: u32 = libc::SYS_openat as u32;
        const GETPPID: u32 = libc::SYS_getppid as u32;
        SyscallSnapshot {
            stats: vec![
                (key(7, 10, GETPPID), stats(100_000, 0, 300)),
                (key(7, 10, OPENAT), stats(50, 50, 2_000)),
                (key(8, 20, OPENAT), stats(10, 0, 10_000_000)),
            ],
            errnos: vec![(
                SyscallErrnoKey {
                    cgroup_id: 7,
                    tgid: 10,
                    nr: OPENAT,
                    errno: 2,
                    _pad: 0,
                },
                50,
            )],
            counters: SyscallCounters {
                unmatched_exits: 3,
                ..Default::default()
            },
        }
    }

    #[test]
    fn groups_by_syscall_over_processes_sorted_by_total_time() {
        let table = build_table(&snapshot(), GroupBy::Syscall, &Names::default());
        let labels: Vec<&str> = table.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["openat", "getppid"]);
        let openat = &table.rows[0].latency;
        assert_eq!((openat.count, openat.errors), (60, 50));
        assert_eq!(openat.top_errnos(), [(2, 50)]);
        assert_eq!(openat.max_ns, 10_000_000);
        assert_eq!(table.total.count, 100_060);
        assert_eq!(table.counters.unmatched_exits, 3);
    }

    #[test]
    fn groups_by_process_and_cgroup_with_names() {
        let names = Names {
            processes: HashMap::from([(10, "worker".to_owned())]),
            cgroups: HashMap::from([(8, "/sys/fs/cgroup/api".to_owned())]),
        };
        let table = build_table(&snapshot(), GroupBy::Process, &names);
        let labels: Vec<&str> = table.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["20", "10 (worker)"]);
        assert_eq!(table.rows[1].latency.count, 100_050);
        assert_eq!(
            table.rows[1].latency.busiest_syscall(),
            Some(libc::SYS_getppid as u32)
        );
        let table = build_table(&snapshot(), GroupBy::Cgroup, &names);
        let labels: Vec<&str> = table.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["/sys/fs/cgroup/api", "cgroup #7"]);
    }

    #[test]
    fn latency_of_one_syscall_merges_its_histograms() {
        let openat = latency_of(&snapshot(), libc::SYS_openat as u32);
        assert_eq!(openat.count, 60);
        assert_eq!(openat.hist.iter().sum::<u64>(), 60);
        assert_eq!(openat.avg_ns(), (50 * 2_000 + 10 * 10_000_000) / 60);
    }
}
