//! Output files chosen by extension, validated before anything is recorded.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::profile::{Profile, flamegraph, folded, json, pprof};

/// A format flamewarden can write a profile in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Interactive SVG flamegraph.
    Svg,
    /// Brendan Gregg folded stacks.
    Folded,
    /// flamewarden's JSON (docs/profile-json.md).
    Json,
    /// Gzipped pprof (`profile.proto`), for `go tool pprof` (`.pb.gz`).
    Pprof,
}

/// One `-o FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Where to write.
    pub path: PathBuf,
    /// What to write.
    pub format: OutputFormat,
}

/// Parses `-o FILE`, naming the file when its extension is unknown (a clap value parser).
pub fn parse_output(arg: &str) -> Result<Output, String> {
    let path = PathBuf::from(arg);
    let is_pprof = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".pb.gz"));
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") if is_pprof => OutputFormat::Pprof,
        Some("svg") => OutputFormat::Svg,
        Some("folded") => OutputFormat::Folded,
        Some("json") => OutputFormat::Json,
        other => {
            return Err(format!(
                "unknown output extension {} in `{arg}`: use .svg, .folded, .json or .pb.gz",
                other.map_or("(none)".to_owned(), |e| format!("`.{e}`"))
            ));
        }
    };
    Ok(Output { path, format })
}

/// Writes `profile` to every output.
pub fn write_all(profile: &Profile, outputs: &[Output], title: &str) -> anyhow::Result<()> {
    for output in outputs {
        write_one(profile, output, title)
            .with_context(|| format!("failed to write {}", output.path.display()))?;
    }
    Ok(())
}

fn write_one(profile: &Profile, output: &Output, title: &str) -> anyhow::Result<()> {
    if let Some(parent) = output.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut w = BufWriter::new(File::create(&output.path)?);
    match output.format {
        OutputFormat::Svg if profile.stacks.is_empty() => {
            // A judge run can end before the first sample; that is a result, not an error.
            write_empty_svg(profile, title, &mut w)?;
        }
        OutputFormat::Svg => {
            let opts = flamegraph::SvgOptions {
                title: title.to_owned(),
                ..Default::default()
            };
            flamegraph::write_svg(profile, &opts, &mut w)?;
        }
        OutputFormat::Folded => folded::write_folded(profile, &mut w)?,
        OutputFormat::Json => w.write_all(json::to_json_string(profile).as_bytes())?,
        OutputFormat::Pprof => pprof::write_pprof_gz(profile, &mut w)?,
    }
    w.flush()?;
    Ok(())
}

/// An SVG that says no sample was taken, with the completeness line.
fn write_empty_svg(
    profile: &Profile,
    title: &str,
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let line =
        crate::profile::report::completeness_line(&profile.completeness, profile.meta.weight_unit);
    write!(
        w,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"90\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text x=\"600\" y=\"24\" text-anchor=\"middle\" \
         font-size=\"17\">{}</text><text x=\"600\" y=\"50\" text-anchor=\"middle\" font-size=\"14\">\
         no samples: the target did not run on a CPU long enough to be sampled</text>\
         <text x=\"600\" y=\"74\" text-anchor=\"middle\" font-size=\"12\">{}</text></svg>\n",
        escape(title),
        escape(&line)
    )
}

/// Whether `path` exists or its directory does (so a typo fails before recording).
pub fn check_writable(output: &Output) -> anyhow::Result<()> {
    let dir = output
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    anyhow::ensure!(
        dir.exists() || dir.parent().is_some_and(Path::exists),
        "cannot write {}: directory {} does not exist",
        output.path.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_format_by_extension_and_names_bad_ones() {
        assert_eq!(parse_output("a/b.svg").unwrap().format, OutputFormat::Svg);
        assert_eq!(
            parse_output("x.folded").unwrap().format,
            OutputFormat::Folded
        );
        assert_eq!(parse_output("x.json").unwrap().format, OutputFormat::Json);
        assert_eq!(parse_output("x.pb.gz").unwrap().format, OutputFormat::Pprof);
        assert!(parse_output("x.tar.gz").is_err());
        let err = parse_output("report.txt").unwrap_err();
        assert!(
            err.contains("`.txt`") && err.contains("report.txt"),
            "{err}"
        );
        assert!(parse_output("noext").unwrap_err().contains("(none)"));
    }
}
