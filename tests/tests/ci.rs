//! `flamewarden ci` against the real kernel: a slower build fails the gate and is named, the
//! same build passes, rebuilt layouts still compare by name, and the pprof output agrees with
//! the folded output under `go tool pprof`.
//!
//! The workload is `tests/workloads/ci_bench.c` (~0.6 s per run), built in three variants;
//! every `ci run` uses `--runs 3`. Run with `--test-threads=1`, like the other share tests.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use flamewarden_tests::{
    FoldedProfile, Run, flamewarden, require_bpf, require_tool, target_dir, workloads::sources_dir,
};
use tempfile::TempDir;

/// Repetitions of the same-binary comparison that must all pass.
const SAME_BINARY_REPETITIONS: usize = 5;

/// How far pprof's flat share may be from the folded output's, in points.
const PPROF_TOLERANCE: f64 = 1.0;

/// A build of `ci_bench.c` with extra compiler flags, cached under `target/`. Each variant
/// lives in its own directory but keeps the name `ci_bench`, so the comm (the flamegraph root)
/// is the same for all of them.
fn ci_bench(variant: &str, defines: &[&str]) -> PathBuf {
    let sources = sources_dir();
    let dir = target_dir()
        .join("flamewarden-tests")
        .join("ci")
        .join(variant);
    fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("ci_bench");
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .arg(format!("-I{}", sources.display()))
        .args(defines)
        .arg(sources.join("ci_bench.c"))
        .arg("-o")
        .arg(&binary)
        .status()
        .expect("failed to run gcc");
    assert!(status.success(), "gcc failed to build ci_bench ({variant})");
    binary
}

/// `flamewarden ci run --runs 3 --out DIR [--baseline FILE] -- BINARY`.
fn ci_run(binary: &Path, out: &Path, baseline: Option<&Path>) -> Run {
    let mut args: Vec<String> = vec![
        "ci".into(),
        "run".into(),
        "--runs".into(),
        "3".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(baseline) = baseline {
        args.extend(["--baseline".into(), baseline.display().to_string()]);
    }
    args.extend(["--".into(), binary.display().to_string()]);
    flamewarden(&args)
}

/// The baseline report directory of the unmodified build, made once for all tests.
fn baseline() -> &'static Path {
    static BASELINE: OnceLock<TempDir> = OnceLock::new();
    BASELINE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let run = ci_run(&ci_bench("base", &[]), dir.path(), None);
            assert_eq!(
                run.code(),
                Some(0),
                "baseline ci run failed:\n{}",
                run.stderr
            );
            dir
        })
        .path()
}

/// The fill of the first frame drawn for `function` in a flamegraph SVG, as (r, g, b).
fn fill_of(svg: &str, function: &str) -> (u8, u8, u8) {
    let at = svg
        .find(&format!("<title>{function} ("))
        .unwrap_or_else(|| panic!("no {function} frame in the SVG"));
    let rest = &svg[at..];
    let fill = &rest[rest.find("fill=\"rgb(").expect("the frame has a fill") + 10..];
    let rgb: Vec<u8> = fill[..fill.find(')').unwrap()]
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    (rgb[0], rgb[1], rgb[2])
}

/// The body of the `## {heading}` section of report.md.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(&format!("## {heading}\n"))
        .unwrap_or_else(|| panic!("report.md has no `## {heading}`:\n{md}"));
    let body = &md[start + heading.len() + 4..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

#[test]
fn slower_hot_function_fails_the_gate_and_is_named_and_red() {
    if !require_bpf() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let slow = ci_bench("slow", &["-DHOT_FACTOR=2"]);
    let run = ci_run(&slow, out.path(), Some(&baseline().join("profile.json")));
    assert_eq!(
        run.code(),
        Some(1),
        "a 2x slower hot_function must fail:\n{}",
        run.stderr
    );

    let md = fs::read_to_string(out.path().join("report.md")).unwrap();
    eprintln!("{md}");
    assert!(
        section(&md, "Regressions").contains("`hot_function`"),
        "hot_function is not listed as a regression:\n{md}"
    );
    for table in [
        "| Function | Self % | Total % |",
        "| Function | Base self % | New self % | Δ self (pts) | Δ total (pts) | Noise (pts) | z |",
    ] {
        assert!(
            md.contains(table),
            "report.md lacks the table `{table}`:\n{md}"
        );
    }
    let svg = fs::read_to_string(out.path().join("diff.svg")).unwrap();
    let (r, g, b) = fill_of(&svg, "hot_function");
    assert!(
        r == 255 && g < 255 && b < 255,
        "hot_function is drawn red (grew): rgb({r},{g},{b})"
    );
    for name in [
        "flamegraph.svg",
        "profile.json",
        "profile.pb.gz",
        "profile.folded",
        "report.json",
    ] {
        assert!(out.path().join(name).is_file(), "{name} was not written");
    }
}

#[test]
fn same_binary_passes_the_gate_every_time() {
    if !require_bpf() {
        return;
    }
    let base = ci_bench("base", &[]);
    let baseline = baseline().join("profile.json");
    for repetition in 1..=SAME_BINARY_REPETITIONS {
        let out = tempfile::tempdir().unwrap();
        let run = ci_run(&base, out.path(), Some(&baseline));
        let md = fs::read_to_string(out.path().join("report.md")).unwrap_or_default();
        assert_eq!(
            run.code(),
            Some(0),
            "repetition {repetition}: the same binary was reported as regressed:\n{md}\n{}",
            run.stderr
        );
    }
}

#[test]
fn rebuilt_layout_still_diffs_by_function_name() {
    if !require_bpf() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let padded = ci_bench("padded", &["-DPADDING"]);
    let run = ci_run(&padded, out.path(), Some(&baseline().join("profile.json")));
    assert_eq!(
        run.code(),
        Some(0),
        "moved addresses must not regress:\n{}",
        run.stderr
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    let functions = report["diff"]["functions"].as_array().unwrap();
    let hot = functions
        .iter()
        .find(|f| f["name"] == "hot_function")
        .expect("hot_function is compared by name");
    let (base, new) = (
        hot["base_self_pct"].as_f64().unwrap(),
        hot["new_self_pct"].as_f64().unwrap(),
    );
    assert!(
        base > 40.0 && new > 40.0,
        "hot_function found in both builds: {base} → {new}"
    );
    assert!(
        functions
            .iter()
            .all(|f| !f["name"].as_str().unwrap().contains("0x")),
        "no function is compared by address: {functions:#?}"
    );
}

#[test]
fn go_pprof_top_agrees_with_the_folded_output() {
    if !require_bpf() || !require_tool("go") {
        return;
    }
    let dir = baseline();
    let folded =
        FoldedProfile::parse(&fs::read_to_string(dir.join("profile.folded")).unwrap()).unwrap();
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(dir.join("profile.pb.gz"))
        .output()
        .expect("failed to run go tool pprof");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "go tool pprof failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Rows after the `flat  flat%  sum%  cum  cum%` header: the function name is the sixth field.
    let pprof: Vec<(String, f64)> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let flat = fields.get(1)?.strip_suffix('%')?.parse().ok()?;
            Some((fields[5..].join(" "), flat))
        })
        .take(3)
        .collect();
    let mut ours: Vec<(String, f64)> = folded
        .self_shares()
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    ours.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("pprof: {pprof:?}\nfolded: {:?}", &ours[..3.min(ours.len())]);
    assert_eq!(
        pprof.len(),
        3,
        "pprof -top listed fewer than 3 functions:\n{text}"
    );
    for (i, (name, flat)) in pprof.iter().enumerate() {
        assert_eq!(name, &ours[i].0, "top {} function differs:\n{text}", i + 1);
        assert!(
            (flat - ours[i].1).abs() <= PPROF_TOLERANCE,
            "{name}: pprof flat {flat}% vs folded {:.2}%",
            ours[i].1
        );
    }
}
