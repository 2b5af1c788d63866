//! The table (and the slow calls) as JSON: the same numbers as the text table, with
//! percentiles and histograms as explicit bucket bounds in ns.

use serde::Serialize;

use super::{
    histogram::{Bucket, percentile},
    names::errno_name,
    slow::SlowCall,
    table::{GroupBy, GroupKey, SyscallCounters, SyscallLatency, SyscallTable},
};

/// Identifies the document's layout.
pub const SYSCALLS_SCHEMA: &str = "flamewarden.syscalls/v1";

/// The whole report.
#[derive(Debug, Serialize)]
pub struct SyscallReport<'a> {
    /// Always [`SYSCALLS_SCHEMA`].
    pub schema: &'static str,
    /// What was traced, in words (`command`, `pid 42`, `cgroup …`, `all`).
    pub target: &'a str,
    /// How long tracing ran, ms.
    pub duration_ms: u64,
    /// How rows are formed.
    pub by: GroupBy,
    /// The rows, busiest first.
    pub rows: Vec<JsonRow<'a>>,
    /// All calls together.
    pub total: JsonLatency,
    /// What the kernel could not count.
    pub counters: SyscallCounters,
    /// Calls slower than the threshold, in the order they ended.
    pub slow_calls: &'a [SlowCall],
}

/// One row.
#[derive(Debug, Serialize)]
pub struct JsonRow<'a> {
    /// What the row stands for.
    pub key: GroupKey,
    /// Its name as shown in the table.
    pub label: &'a str,
    /// Its calls.
    #[serde(flatten)]
    pub latency: JsonLatency,
}

/// Count, errors, time and distribution of a set of calls.
#[derive(Debug, Serialize)]
pub struct JsonLatency {
    /// Completed calls.
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Time spent in them, ns.
    pub total_ns: u64,
    /// Mean, ns.
    pub avg_ns: u64,
    /// Longest, ns.
    pub max_ns: u64,
    /// The bucket holding the median.
    pub p50: Option<Bucket>,
    /// The bucket holding the 90th percentile.
    pub p90: Option<Bucket>,
    /// The bucket holding the 99th percentile.
    pub p99: Option<Bucket>,
    /// Errors by errno, most frequent first.
    pub errnos: Vec<JsonErrno>,
    /// The non-empty histogram buckets, shortest first.
    pub histogram: Vec<JsonBucket>,
}

/// One errno's count.
#[derive(Debug, Serialize)]
pub struct JsonErrno {
    /// The errno (positive).
    pub errno: u32,
    /// Its name, `ENOENT`.
    pub name: String,
    /// How many calls failed with it.
    pub count: u64,
}

/// One histogram bucket.
#[derive(Debug, Serialize)]
pub struct JsonBucket {
    /// Its bounds.
    #[serde(flatten)]
    pub bucket: Bucket,
    /// Calls in it.
    pub count: u64,
}

impl From<&SyscallLatency> for JsonLatency {
    fn from(l: &SyscallLatency) -> Self {
        Self {
            count: l.count,
            errors: l.errors,
            total_ns: l.total_ns,
            avg_ns: l.avg_ns(),
            max_ns: l.max_ns,
            p50: percentile(&l.hist, 50.0),
            p90: percentile(&l.hist, 90.0),
            p99: percentile(&l.hist, 99.0),
            errnos: l
                .top_errnos()
                .into_iter()
                .map(|(errno, count)| JsonErrno {
                    errno,
                    name: errno_name(errno).into_owned(),
                    count,
                })
                .collect(),
            histogram: l
                .hist
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, &count)| JsonBucket {
                    bucket: Bucket::at(i),
                    count,
                })
                .collect(),
        }
    }
}

/// The report as pretty-printed JSON.
pub fn to_json(
    table: &SyscallTable,
    target: &str,
    duration_ms: u64,
    slow_calls: &[SlowCall],
) -> String {
    let report = SyscallReport {
        schema: SYSCALLS_SCHEMA,
        target,
        duration_ms,
        by: table.by,
        rows: table
            .rows
            .iter()
            .map(|r| JsonRow {
                key: r.key,
                label: &r.label,
                latency: (&r.latency).into(),
            })
            .collect(),
        total: (&table.total).into(),
        counters: table.counters,
        slow_calls,
    };
    // Serializing plain structs of numbers and strings cannot fail.
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::table::{Names, build_table, tests::snapshot};

    #[test]
    fn json_carries_counts_errnos_and_percentile_bounds() {
        let table = build_table(&snapshot(), GroupBy::Syscall, &Names::default());
        let doc: serde_json::Value =
            serde_json::from_str(&to_json(&table, "pid 10", 1500, &[])).unwrap();
        assert_eq!(doc["schema"], SYSCALLS_SCHEMA);
        assert_eq!(doc["by"], "syscall");
        let openat = &doc["rows"][0];
        assert_eq!(openat["label"], "openat");
        assert_eq!(openat["key"]["kind"], "syscall");
        assert_eq!(openat["count"], 60);
        assert_eq!(openat["errnos"][0]["name"], "ENOENT");
        assert_eq!(openat["errnos"][0]["count"], 50);
        let getppid = &doc["rows"][1];
        assert_eq!(getppid["p50"]["lo_ns"], 256);
        assert_eq!(getppid["p50"]["hi_ns"], 512);
        assert_eq!(getppid["histogram"][0]["count"], 100_000);
        assert_eq!(doc["counters"]["unmatched_exits"], 3);
        assert_eq!(doc["total"]["count"], 100_060);
    }
}
