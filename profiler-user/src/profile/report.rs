//! Human-readable summaries: the completeness line shown in every output, and the terminal
//! table of hot functions.

use std::fmt::Write as _;

use super::hotpath::{HotPath, hot_paths, top_by_total};
use super::model::{Completeness, FrameKind, Profile, WeightUnit};

/// Function names longer than this are cut in the terminal table: Rust and C++ generics can
/// run to thousands of characters and would wrap every row.
const MAX_NAME_CHARS: usize = 160;

/// One line saying what the profile is missing, e.g.
/// `completeness: 4012 samples taken, 0 lost (0 stack map, 0 key map), 3 user-stack faults,
/// 0 truncated stacks, 0.4% frames unsymbolized, 0 mapping records lost`.
///
/// Nanosecond-weighted (off-CPU) profiles are built from scheduler events, not timer samples,
/// so they say `events recorded`. Missing kernel stacks are mentioned only when there are any:
/// such samples are kept, with their user stack.
pub fn completeness_line(completeness: &Completeness, unit: WeightUnit) -> String {
    let c = completeness;
    let taken = match unit {
        WeightUnit::Samples => "samples taken",
        WeightUnit::Nanoseconds => "events recorded",
    };
    let mut line = format!(
        "completeness: {} {taken}, {} lost ({} stack map, {} key map)",
        c.samples_taken,
        c.samples_lost(),
        c.lost_user_stack,
        c.lost_key_map_full,
    );
    if c.lost_kernel_stack > 0 {
        let _ = write!(line, ", {} without kernel stack", c.lost_kernel_stack);
    }
    let _ = write!(
        line,
        ", {} user-stack faults, {} truncated stacks, {:.1}% frames unsymbolized, \
         {} mapping records lost",
        c.user_stack_faults,
        c.truncated_stacks,
        c.unsymbolized_pct(),
        c.mapping_records_lost,
    );
    line
}

/// A plain-text report: a header, the `top` functions by self share, the `top` functions by
/// total share, then the [`completeness_line`].
///
/// Rows whose self share reaches `hot_threshold_pct` are marked `HOT`. Sample-weighted profiles
/// show sample counts; nanosecond-weighted ones show milliseconds.
pub fn terminal_report(profile: &Profile, top: usize, hot_threshold_pct: f64) -> String {
    let unit = profile.meta.weight_unit;
    let total = profile.total_weight();
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(profile, total));
    if total == 0 {
        out.push_str("no stacks recorded\n");
    } else {
        let paths = hot_paths(profile, hot_threshold_pct);
        let _ = writeln!(out, "\ntop {top} functions by self share");
        write_table(&mut out, paths.iter().take(top), unit);
        let _ = writeln!(out, "\ntop {top} functions by total share");
        write_table(&mut out, top_by_total(&paths, top).into_iter(), unit);
        out.push('\n');
    }
    out.push_str(&completeness_line(&profile.completeness, unit));
    out.push('\n');
    out
}

fn header(profile: &Profile, total: u64) -> String {
    let meta = &profile.meta;
    let target = if meta.target.is_empty() {
        "profile"
    } else {
        meta.target.as_str()
    };
    let seconds = meta.duration_ms as f64 / 1000.0;
    match meta.weight_unit {
        WeightUnit::Samples => format!(
            "{target}: {total} samples at {} Hz over {seconds:.1} s",
            meta.frequency_hz
        ),
        WeightUnit::Nanoseconds => {
            format!(
                "{target}: {} over {seconds:.1} s",
                format_weight(total, WeightUnit::Nanoseconds)
            )
        }
    }
}

fn write_table<'a>(out: &mut String, rows: impl Iterator<Item = &'a HotPath>, unit: WeightUnit) {
    let _ = writeln!(
        out,
        "    {:>7} {:>12} {:>7} {:>12}  FUNCTION",
        "SELF%", "SELF", "TOTAL%", "TOTAL"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<3} {:>6.1}% {:>12} {:>6.1}% {:>12}  {}",
            if row.hot { "HOT" } else { "" },
            row.self_pct,
            format_weight(row.self_weight, unit),
            row.total_pct,
            format_weight(row.total_weight, unit),
            display_name(row),
        );
    }
}

fn format_weight(weight: u64, unit: WeightUnit) -> String {
    match unit {
        WeightUnit::Samples => weight.to_string(),
        WeightUnit::Nanoseconds => format!("{:.1}ms", weight as f64 / 1e6),
    }
}

fn display_name(row: &HotPath) -> String {
    let mut name: String = row.name.chars().take(MAX_NAME_CHARS).collect();
    if name.len() < row.name.len() {
        name.push('…');
    }
    if row.kind == FrameKind::Kernel {
        name.push_str(" [k]");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{Frame, ProfileMeta, Stack};

    fn profile(unit: WeightUnit) -> Profile {
        let mut p = Profile::new(ProfileMeta {
            target: "pid 42".into(),
            frequency_hz: 99,
            duration_ms: 2500,
            weight_unit: unit,
            ..ProfileMeta::default()
        });
        let main = p.intern(Frame::function("main", FrameKind::User));
        let lex = p.intern(Frame::function("lex", FrameKind::User));
        let read = p.intern(Frame::function("vfs_read", FrameKind::Kernel));
        for (frames, weight) in [
            (vec![main, lex], 80_000_000),
            (vec![main, read], 15_000_000),
            (vec![main], 5_000_000),
        ] {
            p.add_stack(Stack {
                comm: "judge".into(),
                tgid: 42,
                cgroup_id: 1,
                frames,
                weight,
            });
        }
        p
    }

    #[test]
    fn completeness_line_matches_documented_wording() {
        let c = Completeness {
            samples_taken: 4012,
            user_stack_faults: 3,
            frames_total: 1000,
            frames_unsymbolized: 4,
            ..Completeness::default()
        };
        assert_eq!(
            completeness_line(&c, WeightUnit::Samples),
            "completeness: 4012 samples taken, 0 lost (0 stack map, 0 key map), \
             3 user-stack faults, 0 truncated stacks, 0.4% frames unsymbolized, \
             0 mapping records lost"
        );
    }

    #[test]
    fn completeness_line_reports_every_loss() {
        let c = Completeness {
            samples_taken: 100,
            lost_user_stack: 2,
            lost_kernel_stack: 5,
            lost_key_map_full: 3,
            mapping_records_lost: 9,
            truncated_stacks: 1,
            ..Completeness::default()
        };
        let line = completeness_line(&c, WeightUnit::Nanoseconds);
        assert!(line.starts_with("completeness: 100 events recorded, 5 lost (2 stack map, 3 key map), 5 without kernel stack,"));
        assert!(line.contains("1 truncated stacks"));
        assert!(line.ends_with("9 mapping records lost"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn report_lists_hot_functions_by_self_then_total() {
        let report = terminal_report(&profile(WeightUnit::Samples), 2, 50.0);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "pid 42: 100000000 samples at 99 Hz over 2.5 s");
        assert_eq!(lines[2], "top 2 functions by self share");
        assert!(lines[3].contains("SELF%") && lines[3].ends_with("FUNCTION"));
        assert!(
            lines[4].starts_with("HOT") && lines[4].ends_with("  lex"),
            "{report}"
        );
        assert!(lines[4].contains("80.0%"));
        assert!(!lines[5].starts_with("HOT") && lines[5].ends_with("vfs_read [k]"));
        assert_eq!(lines[7], "top 2 functions by total share");
        assert!(lines[9].contains("100.0%") && lines[9].ends_with("  main"));
        assert!(lines.last().unwrap().starts_with("completeness: "));
    }

    #[test]
    fn nanosecond_profiles_show_milliseconds() {
        let report = terminal_report(&profile(WeightUnit::Nanoseconds), 3, 50.0);
        assert!(
            report.starts_with("pid 42: 100.0ms over 2.5 s\n"),
            "{report}"
        );
        assert!(report.contains("80.0ms"), "{report}");
        assert!(report.contains("events recorded"));
    }

    #[test]
    fn empty_profile_still_reports_completeness() {
        let report = terminal_report(&Profile::default(), 10, 5.0);
        assert!(report.contains("no stacks recorded"));
        assert!(report.contains("completeness: 0 samples taken"));
    }
}
