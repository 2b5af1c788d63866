//! `flamewarden ci`: profile a benchmark N times, merge the runs, compare with a baseline and
//! write a report directory a CI job can publish.
//!
//! Recording is the only part that needs root ([`record`]); [`write_report`] and [`compare`]
//! take plain profiles, so `ci diff` and the tests run without it.

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use thiserror::Error;

use crate::{
    probes::MapSizes,
    profile::{
        FlamegraphError, JsonError, Profile, SvgOptions, completeness_line,
        diff::{DiffSettings, FunctionWeights, ProfileDiff, diff_profiles, merge_profiles},
        from_json_str,
        markdown::{self, CiReport, HotPathRow},
        pprof, write_folded, write_json, write_normalized_diff_svg, write_svg,
    },
    record::{RecordError, RecordMode, RecordOptions, RecordTarget, record_with},
    symbolize::{SymbolDetail, Symbolizer},
};

/// Most rows in the hot-path table.
const HOT_PATH_ROWS: usize = 20;

/// Why `flamewarden ci` failed (exit code 2).
#[derive(Debug, Error)]
pub enum CiError {
    /// A recording failed.
    #[error("run {run}: {source}")]
    Record {
        /// 1-based run number.
        run: usize,
        /// Why.
        #[source]
        source: RecordError,
    },
    /// The benchmark itself failed: its profile would not say anything about the code.
    #[error("run {run}: the command exited with code {code}")]
    CommandFailed {
        /// 1-based run number.
        run: usize,
        /// Its exit code (128 + signal when killed).
        code: i32,
    },
    /// A run was interrupted (SIGINT/SIGTERM).
    #[error("interrupted during run {0}")]
    Interrupted(usize),
    /// A profile JSON (baseline, or `ci diff` input) could not be read.
    #[error("{path}: {source}")]
    ReadProfile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ProfileReadError,
    },
    /// An output file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A flamegraph could not be drawn (e.g. no samples at all).
    #[error("{path}: {source}")]
    Flamegraph {
        /// The SVG.
        path: PathBuf,
        /// Why.
        #[source]
        source: FlamegraphError,
    },
}

/// Why a profile file could not be read.
#[derive(Debug, Error)]
pub enum ProfileReadError {
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// It is not flamewarden profile JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// How to run `ci run`.
#[derive(Clone, Debug)]
pub struct CiRunOptions {
    /// The benchmark command.
    pub command: Vec<OsString>,
    /// How many times to run it.
    pub runs: usize,
    /// Sampling frequency.
    pub frequency_hz: u64,
    /// The baseline profile JSON, when comparing.
    pub baseline: Option<PathBuf>,
    /// Thresholds.
    pub settings: DiffSettings,
    /// Functions above this self or total share are hot paths.
    pub hot_threshold_pct: f64,
}

/// What a `ci` command found.
#[derive(Debug)]
pub struct CiOutcome {
    /// The report that was written.
    pub report: CiReport,
    /// The files written, in order.
    pub files: Vec<PathBuf>,
}

/// Records the benchmark `opts.runs` times, compares with the baseline, writes `out_dir`.
pub fn run(opts: &CiRunOptions, out_dir: &Path, stop: &AtomicBool) -> Result<CiOutcome, CiError> {
    let baseline = opts.baseline.as_deref().map(read_profile).transpose()?;
    let mut runs = Vec::with_capacity(opts.runs);
    // One symbolizer for all runs: kallsyms and the benchmark's files are read once.
    let mut symbolizer = Symbolizer::with_detail(SymbolDetail::Lines);
    for run in 1..=opts.runs {
        let record_opts = RecordOptions {
            target: RecordTarget::Command(opts.command.clone()),
            mode: RecordMode::Cpu,
            frequency_hz: opts.frequency_hz,
            min_block_ns: 0,
            duration: None,
            map_sizes: MapSizes::default(),
            // The report's JSON and pprof files carry source lines.
            symbols: SymbolDetail::Lines,
        };
        let recording = record_with(&record_opts, stop, &mut symbolizer)
            .map_err(|source| CiError::Record { run, source })?;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(CiError::Interrupted(run));
        }
        let code = recording.exit_status.map_or(0, |s| s.as_shell_code());
        if code != 0 {
            return Err(CiError::CommandFailed { run, code });
        }
        runs.push(recording.profile);
    }
    let title = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    write_report(&title, &runs, baseline.as_ref(), opts, out_dir)
}

/// `ci diff`: compares two profile JSON files and writes `out_dir`.
pub fn diff(
    base: &Path,
    new: &Path,
    settings: DiffSettings,
    hot_threshold_pct: f64,
    out_dir: &Path,
) -> Result<CiOutcome, CiError> {
    let base_profile = read_profile(base)?;
    let new_profile = read_profile(new)?;
    let opts = CiRunOptions {
        command: Vec::new(),
        runs: 1,
        frequency_hz: new_profile.meta.frequency_hz,
        baseline: Some(base.to_owned()),
        settings,
        hot_threshold_pct,
    };
    let title = format!("{} → {}", base.display(), new.display());
    write_report(&title, &[new_profile], Some(&base_profile), &opts, out_dir)
}

/// Reads a profile JSON file.
pub fn read_profile(path: &Path) -> Result<Profile, CiError> {
    let wrap = |source: ProfileReadError| CiError::ReadProfile {
        path: path.to_owned(),
        source,
    };
    let text = fs::read_to_string(path).map_err(|e| wrap(e.into()))?;
    from_json_str(&text).map_err(|e| wrap(e.into()))
}

/// The comparison and hot paths of `runs` (merged) against `baseline`.
pub fn compare(
    title: &str,
    runs: &[Profile],
    merged: &Profile,
    baseline: Option<&Profile>,
    settings: DiffSettings,
    hot_threshold_pct: f64,
) -> CiReport {
    let unit = merged.meta.weight_unit;
    let diff: Option<ProfileDiff> = baseline.map(|base| {
        diff_profiles(
            base,
            merged,
            if runs.len() >= 2 { runs } else { &[] },
            settings,
        )
    });
    CiReport {
        title: title.to_owned(),
        runs: runs
            .iter()
            .map(|r| completeness_line(&r.completeness, unit))
            .collect(),
        hot_paths: hot_path_rows(merged, hot_threshold_pct),
        regressed: diff
            .as_ref()
            .is_some_and(|d| d.regressions().next().is_some()),
        diff,
    }
}

fn hot_path_rows(profile: &Profile, threshold_pct: f64) -> Vec<HotPathRow> {
    let weights = FunctionWeights::of(profile);
    let mut rows: Vec<HotPathRow> = weights
        .functions
        .keys()
        .map(|name| HotPathRow {
            name: name.clone(),
            self_pct: weights.self_share(name) * 100.0,
            total_pct: weights.total_share(name) * 100.0,
        })
        .filter(|row| row.self_pct >= threshold_pct || row.total_pct >= threshold_pct)
        .collect();
    rows.sort_by(|a, b| {
        b.self_pct
            .total_cmp(&a.self_pct)
            .then_with(|| b.total_pct.total_cmp(&a.total_pct))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows.truncate(HOT_PATH_ROWS);
    rows
}

/// Merges `runs` and writes every file of the report directory.
fn write_report(
    title: &str,
    runs: &[Profile],
    baseline: Option<&Profile>,
    opts: &CiRunOptions,
    out_dir: &Path,
) -> Result<CiOutcome, CiError> {
    let merged = merge_profiles(runs);
    let report = compare(
        title,
        runs,
        &merged,
        baseline,
        opts.settings,
        opts.hot_threshold_pct,
    );
    fs::create_dir_all(out_dir).map_err(|source| CiError::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    let svg_opts = SvgOptions {
        title: format!("flamewarden ci: {title}"),
        ..SvgOptions::default()
    };
    write_svg_file(out_dir, "flamegraph.svg", &mut files, |w| {
        write_svg(&merged, &svg_opts, w)
    })?;
    write_file(out_dir, "profile.json", &mut files, |w| {
        write_json(&merged, w)
    })?;
    write_file(out_dir, "profile.pb.gz", &mut files, |w| {
        pprof::write_pprof_gz(&merged, w)
    })?;
    write_file(out_dir, "profile.folded", &mut files, |w| {
        write_folded(&merged, w)
    })?;
    if let Some(base) = baseline {
        let diff_opts = SvgOptions {
            title: format!("flamewarden ci diff: {title} (red: grew, blue: shrank)"),
            ..SvgOptions::default()
        };
        write_svg_file(out_dir, "diff.svg", &mut files, |w| {
            write_normalized_diff_svg(base, &merged, &diff_opts, w)
        })?;
    }
    write_file(out_dir, "report.md", &mut files, |w| {
        w.write_all(markdown::render(&report).as_bytes())
    })?;
    write_file(out_dir, "report.json", &mut files, |w| {
        let json = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
        w.write_all(json.as_bytes())?;
        w.write_all(b"\n")
    })?;
    Ok(CiOutcome { report, files })
}

fn write_file(
    dir: &Path,
    name: &str,
    files: &mut Vec<PathBuf>,
    body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), CiError> {
    let path = dir.join(name);
    let result = File::create(&path).and_then(|file| {
        let mut w = BufWriter::new(file);
        body(&mut w)?;
        w.flush()
    });
    result.map_err(|source| CiError::Write {
        path: path.clone(),
        source,
    })?;
    files.push(path);
    Ok(())
}

fn write_svg_file(
    dir: &Path,
    name: &str,
    files: &mut Vec<PathBuf>,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<(), FlamegraphError>,
) -> Result<(), CiError> {
    let path = dir.join(name);
    let file = File::create(&path).map_err(|source| CiError::Write {
        path: path.clone(),
        source,
    })?;
    let mut w = BufWriter::new(file);
    body(&mut w)
        .and_then(|()| w.flush().map_err(FlamegraphError::Io))
        .map_err(|source| CiError::Flamegraph {
            path: path.clone(),
            source,
        })?;
    files.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Frame, FrameKind, ProfileMeta, Stack, to_json_string};

    fn run_profile(hot: u64) -> Profile {
        let mut p = Profile::new(ProfileMeta {
            target: "command".into(),
            frequency_hz: 999,
            ..ProfileMeta::default()
        });
        let main = p.intern(Frame::function("main", FrameKind::User));
        let hot_fn = p.intern(Frame::function("hot_function", FrameKind::User));
        let warm = p.intern(Frame::function("warm_function", FrameKind::User));
        for (frames, weight) in [(vec![main, hot_fn], hot), (vec![main, warm], 400)] {
            p.add_stack(Stack {
                comm: "bench".into(),
                tgid: 9,
                cgroup_id: 1,
                frames,
                weight,
            });
        }
        p
    }

    #[test]
    fn writes_every_report_file_and_flags_the_slower_function() {
        let dir = tempfile::tempdir().unwrap();
        let base_path = dir.path().join("base.json");
        fs::write(&base_path, to_json_string(&run_profile(600))).unwrap();
        let opts = CiRunOptions {
            command: Vec::new(),
            runs: 3,
            frequency_hz: 999,
            baseline: Some(base_path),
            settings: DiffSettings::default(),
            hot_threshold_pct: 5.0,
        };
        let runs = [run_profile(1200), run_profile(1190), run_profile(1210)];
        let base = read_profile(opts.baseline.as_deref().unwrap()).unwrap();
        let out = dir.path().join("out");
        let outcome = write_report("bench", &runs, Some(&base), &opts, &out).unwrap();
        for name in [
            "flamegraph.svg",
            "profile.json",
            "profile.pb.gz",
            "profile.folded",
            "diff.svg",
            "report.md",
            "report.json",
        ] {
            assert!(out.join(name).is_file(), "{name} missing");
        }
        assert!(outcome.report.regressed);
        let md = fs::read_to_string(out.join("report.md")).unwrap();
        assert!(md.contains("`hot_function`"), "{md}");
        let merged = read_profile(&out.join("profile.json")).unwrap();
        assert_eq!(merged.total_weight(), 3600 + 1200);
    }
}
