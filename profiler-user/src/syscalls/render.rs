//! The table as text: one line per row, percentiles as bucket bounds, and a footer that says
//! what the kernel could not count.

use std::fmt::Write as _;

use super::{
    histogram::{format_ns, percentile},
    names::{errno_name, syscall_name},
    table::{GroupBy, SyscallCounters, SyscallLatency, SyscallTable},
};

/// Rows longer than this are cut: cgroup paths can be long.
const MAX_LABEL_CHARS: usize = 48;
/// Errnos listed per row.
const TOP_ERRNOS: usize = 3;

/// `ENOENT×50 EACCES×2`, the most frequent first, `+N more` when there are more.
pub fn errno_summary(latency: &SyscallLatency) -> String {
    let errnos = latency.top_errnos();
    let mut parts: Vec<String> = errnos
        .iter()
        .take(TOP_ERRNOS)
        .map(|&(errno, n)| format!("{}×{n}", errno_name(errno)))
        .collect();
    if errnos.len() > TOP_ERRNOS {
        parts.push(format!("+{} more", errnos.len() - TOP_ERRNOS));
    }
    let known: u64 = errnos.iter().map(|(_, n)| n).sum();
    if latency.errors > known {
        parts.push(format!("{}×unknown", latency.errors - known));
    }
    parts.join(" ")
}

fn pct(latency: &SyscallLatency, p: f64) -> String {
    percentile(&latency.hist, p).map_or_else(|| "-".to_owned(), |b| b.to_string())
}

fn cut(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        return label.to_owned();
    }
    let tail: String = label.chars().rev().take(MAX_LABEL_CHARS - 1).collect();
    format!("…{}", tail.chars().rev().collect::<String>())
}

/// The table with at most `limit` rows (all of them with `None`), then the total and the
/// [`footer`].
pub fn render_table(table: &SyscallTable, limit: Option<usize>) -> String {
    let heading = match table.by {
        GroupBy::Syscall => "SYSCALL",
        GroupBy::Process => "PROCESS",
        GroupBy::Cgroup => "CGROUP",
    };
    let shown = &table.rows[..limit.unwrap_or(usize::MAX).min(table.rows.len())];
    let width = shown
        .iter()
        .map(|r| cut(&r.label).chars().count())
        .chain([heading.len(), 5])
        .max()
        .unwrap_or(8);
    let mut out = String::new();
    let busiest = table.by != GroupBy::Syscall;
    let _ = write!(
        out,
        "{heading:<width$} {:>10} {:>8} {:>9} {:>9} {:>15} {:>15} {:>15} {:>9}",
        "COUNT", "ERRORS", "TOTAL", "AVG", "P50", "P90", "P99", "MAX"
    );
    out.push_str(if busiest {
        "  BUSIEST   TOP ERRNOS\n"
    } else {
        "  TOP ERRNOS\n"
    });
    for row in shown {
        row_line(&mut out, width, busiest, &row.label, &row.latency);
    }
    if shown.len() < table.rows.len() {
        let _ = writeln!(out, "({} more rows)", table.rows.len() - shown.len());
    }
    row_line(&mut out, width, busiest, "TOTAL", &table.total);
    let out = out
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    out + "percentiles are log2 bucket bounds\n" + &footer(&table.counters) + "\n"
}

fn row_line(out: &mut String, width: usize, busiest: bool, label: &str, l: &SyscallLatency) {
    let _ = write!(
        out,
        "{:<width$} {:>10} {:>8} {:>9} {:>9} {:>15} {:>15} {:>15} {:>9}  ",
        cut(label),
        l.count,
        l.errors,
        format_ns(l.total_ns),
        format_ns(l.avg_ns()),
        pct(l, 50.0),
        pct(l, 90.0),
        pct(l, 99.0),
        format_ns(l.max_ns),
    );
    if busiest {
        let name = l.busiest_syscall().map(syscall_name).unwrap_or_default();
        let _ = write!(out, "{name:<9} ");
    }
    out.push_str(errno_summary(l).trim_end());
    out.push('\n');
}

/// `lost: 0 calls (0 in-flight map full, 0 stats map full), 0 slow-call events lost, 0 errnos
/// unrecorded; 3 unmatched exits (calls already running when tracing began)`.
pub fn footer(c: &SyscallCounters) -> String {
    format!(
        "lost: {} calls ({} in-flight map full, {} stats map full), {} slow-call events lost, \
         {} errnos unrecorded; {} unmatched exits (calls already running when tracing began)",
        c.lost_calls(),
        c.inflight_full,
        c.stats_full,
        c.events_lost,
        c.errno_full,
        c.unmatched_exits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::table::{Names, build_table, tests::snapshot};

    #[test]
    fn table_shows_names_errnos_percentile_buckets_and_losses() {
        let table = build_table(&snapshot(), GroupBy::Syscall, &Names::default());
        let text = render_table(&table, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("SYSCALL") && lines[0].ends_with("TOP ERRNOS"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("openat ") && lines[1].ends_with("ENOENT×50"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("getppid ") && lines[2].contains(" 100000 "),
            "{text}"
        );
        // 300 ns calls fall in [256, 512) ns.
        assert!(lines[2].contains("256ns-512ns"), "{text}");
        assert!(
            lines[3].starts_with("TOTAL ") && lines[3].contains(" 100060 "),
            "{text}"
        );
        assert!(text.contains("lost: 0 calls"), "{text}");
        assert!(text.contains("3 unmatched exits"), "{text}");
    }

    #[test]
    fn limited_tables_say_how_many_rows_are_hidden_and_long_labels_are_cut() {
        let mut table = build_table(&snapshot(), GroupBy::Process, &Names::default());
        table.rows[0].label = "x".repeat(100);
        let text = render_table(&table, Some(1));
        assert!(text.contains("(1 more rows)"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with('…'), "{text}");
        assert!(text.lines().next().unwrap().contains("BUSIEST"), "{text}");
    }

    #[test]
    fn errno_summary_lists_the_most_frequent_and_unknown_ones() {
        let mut l = SyscallLatency {
            errors: 12,
            ..Default::default()
        };
        l.errnos.extend([(2, 5), (13, 1), (11, 2), (9, 1)]);
        assert_eq!(
            errno_summary(&l),
            "ENOENT×5 EAGAIN×2 EBADF×1 +1 more 3×unknown"
        );
    }
}
