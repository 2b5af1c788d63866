//! `report.md`: the GitHub-flavoured summary of a `flamewarden ci` run, and the data behind it
//! (also written as `report.json`).
//!
//! The report has, in this order: a verdict line; `## Hot paths`, a table with the columns
//! `Function | Self % | Total %`; with a baseline, `## Regressions` and `## Improvements`,
//! tables with the columns [`CHANGE_COLUMNS`]; the significance test in words; and
//! `## Completeness`, one line per run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::diff::{FunctionChange, ProfileDiff};

/// Columns of the hot-path table.
pub const HOT_PATH_COLUMNS: [&str; 3] = ["Function", "Self %", "Total %"];

/// Columns of the regression and improvement tables.
pub const CHANGE_COLUMNS: [&str; 7] = [
    "Function",
    "Base self %",
    "New self %",
    "Δ self (pts)",
    "Δ total (pts)",
    "Noise (pts)",
    "z",
];

/// One row of the hot-path table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotPathRow {
    /// Normalized function name.
    pub name: String,
    /// Self share, percent.
    pub self_pct: f64,
    /// Total share, percent.
    pub total_pct: f64,
}

/// Everything `report.md` and `report.json` say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiReport {
    /// What was profiled, e.g. the command line.
    pub title: String,
    /// The completeness line of each run (for `ci diff`: of each profile).
    pub runs: Vec<String>,
    /// The hottest functions of the (merged) new profile.
    pub hot_paths: Vec<HotPathRow>,
    /// The comparison with the baseline, when there was one.
    pub diff: Option<ProfileDiff>,
    /// True when some function regressed.
    pub regressed: bool,
}

/// Renders `report` as GitHub-flavoured Markdown.
pub fn render(report: &CiReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# flamewarden CI profile\n");
    let _ = writeln!(md, "Profiled: {}\n", code(&report.title));
    match &report.diff {
        Some(diff) => {
            let count = diff.regressions().count();
            let _ = if count > 0 {
                writeln!(
                    md,
                    "**❌ {count} hot-path regression{} beyond the budget of {} points.**\n",
                    if count == 1 { "" } else { "s" },
                    diff.settings.budget_pct
                )
            } else {
                writeln!(
                    md,
                    "**✅ No hot-path regression beyond the budget of {} points.**\n",
                    diff.settings.budget_pct
                )
            };
        }
        None => {
            let _ = writeln!(md, "No baseline given: hot paths only.\n");
        }
    }

    let _ = writeln!(md, "## Hot paths\n");
    header(&mut md, &HOT_PATH_COLUMNS);
    for row in &report.hot_paths {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} |",
            code(&row.name),
            row.self_pct,
            row.total_pct
        );
    }
    md.push('\n');

    if let Some(diff) = &report.diff {
        for (heading, rows) in [
            ("Regressions", diff.regressions().collect::<Vec<_>>()),
            ("Improvements", diff.improvements().collect::<Vec<_>>()),
        ] {
            let _ = writeln!(md, "## {heading}\n");
            if rows.is_empty() {
                let _ = writeln!(md, "None.\n");
                continue;
            }
            header(&mut md, &CHANGE_COLUMNS);
            for change in rows {
                change_row(&mut md, change);
            }
            md.push('\n');
        }
        let noise = if diff.runs >= 2 {
            format!(
                "the larger of the binomial standard error and the spread of the share between \
                 the {} runs",
                diff.runs
            )
        } else {
            "the binomial standard error".to_owned()
        };
        let _ = writeln!(
            md,
            "A function regresses when its self share grew by more than {} points **and** a \
             one-sided two-proportion z-test on sample counts ({} vs {} samples; noise: {noise}) \
             gives z > {}.\n",
            diff.settings.budget_pct, diff.base_total, diff.new_total, diff.settings.z_critical
        );
    }

    let _ = writeln!(md, "## Completeness\n");
    for (i, line) in report.runs.iter().enumerate() {
        let _ = writeln!(md, "- run {}: {}", i + 1, line);
    }
    md
}

fn header(md: &mut String, columns: &[&str]) {
    let _ = writeln!(md, "| {} |", columns.join(" | "));
    let _ = writeln!(md, "|{}", " --- |".repeat(columns.len()));
}

fn change_row(md: &mut String, c: &FunctionChange) {
    let _ = writeln!(
        md,
        "| {} | {:.1} | {:.1} | {:+.1} | {:+.1} | {:.2} | {:.1} |",
        code(&c.name),
        c.base_self_pct,
        c.new_self_pct,
        c.delta_self_pts,
        c.delta_total_pts,
        c.noise_pts,
        c.z.clamp(-999.0, 999.0)
    );
}

/// `name` as an inline code span that is safe inside a table cell.
fn code(name: &str) -> String {
    let name = name.replace('`', "'").replace('|', "\\|");
    format!("`{name}`")
}

#[cfg(test)]
mod tests {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    use super::*;
    use crate::profile::{
        Frame, FrameKind, Profile, ProfileMeta, Stack,
        diff::{DiffSettings, diff_profiles},
    };

    fn profile(hot: u64) -> Profile {
        let mut p = Profile::new(ProfileMeta::default());
        let main = p.intern(Frame::function("main", FrameKind::User));
        let hot_fn = p.intern(Frame::function("a|b<T>::hot", FrameKind::User));
        let warm = p.intern(Frame::function("warm", FrameKind::User));
        for (frames, weight) in [(vec![main, hot_fn], hot), (vec![main, warm], 4000)] {
            p.add_stack(Stack {
                comm: "bench".into(),
                tgid: 1,
                cgroup_id: 1,
                frames,
                weight,
            });
        }
        p
    }

    /// Each table's header cells and the number of cells of each body row.
    fn tables(md: &str) -> Vec<(Vec<String>, Vec<usize>)> {
        let mut tables = Vec::new();
        let (mut head, mut rows, mut cells) = (Vec::new(), Vec::new(), 0);
        let (mut in_head, mut cell) = (false, String::new());
        for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
            match event {
                Event::Start(Tag::TableHead) => in_head = true,
                Event::End(TagEnd::TableHead) => in_head = false,
                Event::Start(Tag::TableCell) => cell.clear(),
                Event::Text(t) | Event::Code(t) => cell.push_str(&t),
                Event::End(TagEnd::TableCell) if in_head => head.push(cell.clone()),
                Event::End(TagEnd::TableCell) => cells += 1,
                Event::End(TagEnd::TableRow) => rows.push(std::mem::take(&mut cells)),
                Event::End(TagEnd::Table) => {
                    tables.push((std::mem::take(&mut head), std::mem::take(&mut rows)));
                }
                _ => {}
            }
        }
        tables
    }

    #[test]
    fn report_parses_as_markdown_with_the_documented_tables() {
        let (base, new) = (profile(6000), profile(12000));
        let diff = diff_profiles(&base, &new, &[], DiffSettings::default());
        let report = CiReport {
            title: "./bench".into(),
            runs: vec!["completeness: 100 samples taken".into()],
            hot_paths: vec![HotPathRow {
                name: "a|b::hot".into(),
                self_pct: 75.0,
                total_pct: 75.0,
            }],
            regressed: diff.regressions().count() > 0,
            diff: Some(diff),
        };
        let md = render(&report);
        let tables = tables(&md);
        assert_eq!(tables.len(), 3, "{md}");
        assert_eq!(tables[0].0, HOT_PATH_COLUMNS, "{md}");
        assert_eq!(tables[1].0, CHANGE_COLUMNS, "{md}");
        assert_eq!(tables[2].0, CHANGE_COLUMNS, "{md}");
        for (head, rows) in &tables {
            assert!(rows.iter().all(|&n| n == head.len()), "{md}");
        }
        assert!(md.contains("`a\\|b::hot`"), "{md}");
        assert!(md.contains("two-proportion z-test"), "{md}");
        assert!(md.contains("❌ 1 hot-path regression "), "{md}");
    }
}
