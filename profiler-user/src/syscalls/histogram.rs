//! The kernel's log2 latency histograms: bucket bounds, percentiles (which can only be told to
//! within a bucket, so they are given as its bounds) and an ASCII rendering like bpftrace's
//! `hist()`.

use std::fmt::{self, Write as _};

use profiler_common::LATENCY_BUCKETS;
use serde::Serialize;

/// A log2 histogram of durations in ns: bucket `i` counts `[2^i, 2^(i+1))`, bucket 0 also
/// holds 0 ns, the last bucket everything longer.
pub type LatencyHistogram = [u64; LATENCY_BUCKETS];

/// The bounds of one histogram bucket, ns: `[lo_ns, hi_ns)`; `hi_ns` is `None` for the last,
/// open-ended bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Inclusive lower bound.
    pub lo_ns: u64,
    /// Exclusive upper bound; `None`: unbounded.
    pub hi_ns: Option<u64>,
}

impl Bucket {
    /// The bounds of bucket `index`.
    pub fn at(index: usize) -> Self {
        let lo_ns = if index == 0 { 0 } else { 1u64 << index };
        let hi_ns = (index + 1 < LATENCY_BUCKETS).then(|| 1u64 << (index + 1));
        Self { lo_ns, hi_ns }
    }

    /// Whether `ns` falls in this bucket.
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.lo_ns && self.hi_ns.is_none_or(|hi| ns < hi)
    }
}

impl fmt::Display for Bucket {
    /// `4.19ms-8.39ms`, or `>549.8s` for the open-ended bucket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hi_ns {
            Some(hi) => write!(f, "{}-{}", format_ns(self.lo_ns), format_ns(hi)),
            None => write!(f, ">{}", format_ns(self.lo_ns)),
        }
    }
}

/// The bucket holding the `pct`-th percentile (nearest rank), `None` for an empty histogram.
pub fn percentile(hist: &LatencyHistogram, pct: f64) -> Option<Bucket> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((pct / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(Bucket::at(i));
        }
    }
    Some(Bucket::at(LATENCY_BUCKETS - 1))
}

/// Adds `other` into `into`, bucket by bucket.
pub fn merge(into: &mut LatencyHistogram, other: &LatencyHistogram) {
    for (a, b) in into.iter_mut().zip(other) {
        *a += b;
    }
}

/// A duration in ns with three significant digits and a unit: `850ns`, `4.19ms`, `1.20s`.
pub fn format_ns(ns: u64) -> String {
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "us"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if value >= 100.0 {
        format!("{value:.0}{unit}")
    } else if value >= 10.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.2}{unit}")
    }
}

/// Width of the bar at the fullest bucket, as in bpftrace.
const BAR_WIDTH: usize = 52;

/// The histogram as text, one line per bucket from the first to the last non-empty one:
///
/// ```text
/// [4.19ms, 8.39ms)     200 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
/// ```
pub fn render_ascii(hist: &LatencyHistogram) -> String {
    let Some(first) = hist.iter().position(|&n| n > 0) else {
        return "(no calls)\n".to_owned();
    };
    let last = hist.iter().rposition(|&n| n > 0).unwrap_or(first);
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    let labels: Vec<String> = (first..=last)
        .map(|i| {
            let b = Bucket::at(i);
            match b.hi_ns {
                Some(hi) => format!("[{}, {})", format_ns(b.lo_ns), format_ns(hi)),
                None => format!("[{}, ...)", format_ns(b.lo_ns)),
            }
        })
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (label, &n) in labels.iter().zip(&hist[first..=last]) {
        let bar = (n as u128 * BAR_WIDTH as u128 / max as u128) as usize;
        let bar = if n > 0 { bar.max(1) } else { 0 };
        let _ = writeln!(
            out,
            "{label:<width$} {n:>9} |{}{}|",
            "@".repeat(bar),
            " ".repeat(BAR_WIDTH - bar)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(entries: &[(usize, u64)]) -> LatencyHistogram {
        let mut h = [0; LATENCY_BUCKETS];
        for &(i, n) in entries {
            h[i] = n;
        }
        h
    }

    #[test]
    fn bucket_bounds_are_powers_of_two_with_an_open_last_bucket() {
        assert_eq!(
            Bucket::at(0),
            Bucket {
                lo_ns: 0,
                hi_ns: Some(2)
            }
        );
        assert_eq!(
            Bucket::at(22),
            Bucket {
                lo_ns: 4_194_304,
                hi_ns: Some(8_388_608)
            }
        );
        assert!(Bucket::at(22).contains(5_000_000));
        assert_eq!(Bucket::at(LATENCY_BUCKETS - 1).hi_ns, None);
        assert!(Bucket::at(LATENCY_BUCKETS - 1).contains(u64::MAX));
    }

    #[test]
    fn percentiles_name_the_bucket_of_the_nearest_rank() {
        // 90 fast calls in [1us, 2us), 10 slow ones in [4ms, 8ms).
        let h = hist(&[(10, 90), (22, 10)]);
        assert_eq!(percentile(&h, 50.0), Some(Bucket::at(10)));
        assert_eq!(percentile(&h, 90.0), Some(Bucket::at(10)));
        assert_eq!(percentile(&h, 91.0), Some(Bucket::at(22)));
        assert_eq!(percentile(&h, 99.0), Some(Bucket::at(22)));
        assert_eq!(percentile(&[0; LATENCY_BUCKETS], 50.0), None);
        assert_eq!(Bucket::at(22).to_string(), "4.19ms-8.39ms");
    }

    #[test]
    fn formats_durations_with_three_significant_digits() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(1_024), "1.02us");
        assert_eq!(format_ns(52_300_000), "52.3ms");
        assert_eq!(format_ns(549_755_813_888), "550s");
    }

    #[test]
    fn ascii_histogram_spans_the_non_empty_buckets_like_bpftrace() {
        let h = hist(&[(10, 4), (12, 8)]);
        let text = render_ascii(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("[1.02us, 2.05us)"), "{text}");
        assert!(lines[0].ends_with(&format!("4 |{}{}|", "@".repeat(26), " ".repeat(26))));
        assert!(lines[1].contains(" 0 |"), "{text}");
        assert!(
            lines[2].ends_with(&format!("8 |{}|", "@".repeat(52))),
            "{text}"
        );
        assert_eq!(render_ascii(&[0; LATENCY_BUCKETS]), "(no calls)\n");
    }
}
