//! The verdict of `flamewarden sandbox run` as a judge reads it: printed on stderr as one JSON
//! object after the command's own stderr, the same as the `--json` file, with every documented
//! field; and exit status 2 when flamewarden cannot even start the command.
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_verdict -- --test-threads=1`.

use std::{ffi::OsString, fs};

use flamewarden_tests::{
    flamewarden, require_bpf,
    sandbox::{Sandbox, escape_program, judge_policy, judge_with_limits, random_hex},
};
use serde_json::Value;

/// The JSON object that ends `stderr`, and what precedes it.
fn trailing_json(stderr: &str) -> Option<(&str, Value)> {
    stderr.match_indices('{').find_map(|(i, _)| {
        let at_line_start = i == 0 || stderr.as_bytes()[i - 1] == b'\n';
        let value = serde_json::from_str::<Value>(stderr[i..].trim_end()).ok()?;
        (at_line_start && value.is_object()).then(|| (&stderr[..i], value))
    })
}

#[test]
fn verdict_on_stderr_matches_the_json_file_and_has_every_field() {
    if !require_bpf() {
        return;
    }
    let outside = tempfile::tempdir().expect("temporary directory");
    let secret = outside.path().join("secret.txt");
    fs::write(&secret, format!("SECRET-{}", random_hex(24))).expect("write the secret");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        ..Sandbox::new(&judge_policy())
    }
    .run(&escape_program("read_direct"), &[OsString::from(&secret)]);
    let verdict = &run.verdict;
    let (before, printed) = trailing_json(&run.stderr)
        .unwrap_or_else(|| panic!("no JSON verdict at the end of stderr:\n{}", run.stderr));
    assert_eq!(printed, verdict.0, "stderr and --json disagree");
    assert!(
        !before.contains('{'),
        "something after the command's stderr besides the verdict:\n{before}"
    );

    let numbers = [
        "cpu_time_ms",
        "wall_time_ms",
        "peak_memory_bytes",
        "output_bytes",
    ];
    for field in numbers
        .iter()
        .chain(&["violations_total", "violations_lost"])
    {
        assert!(
            verdict.0[field].is_number(),
            "`{field}` is not a number in {verdict}"
        );
    }
    for field in ["exit_code", "signal"] {
        let value = &verdict.0[field];
        assert!(value.is_null() || value.is_i64(), "`{field}` in {verdict}");
    }
    assert_eq!(verdict.0["mode"], "enforce", "{verdict}");
    assert!(
        verdict.0["policy"]
            .as_str()
            .is_some_and(|p| p.ends_with("judge.toml")),
        "{verdict}"
    );
    let total = verdict.0["violations_total"].as_u64().unwrap_or(0);
    assert!(
        total >= verdict.violations().len() as u64 && total >= 1,
        "violations_total {total} in {verdict}"
    );
    assert_eq!(verdict.0["violations_lost"], 0, "{verdict}");
    let violation = &verdict.violations()[0];
    for field in [
        "rule", "action", "syscall", "argument", "errno", "pid", "time_ms", "stack",
    ] {
        assert!(
            violation.get(field).is_some(),
            "violation without `{field}` in {verdict}"
        );
    }
}

#[test]
fn a_bad_policy_exits_2_before_running_anything() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let policy = dir.path().join("bad.toml");
    fs::write(
        &policy,
        "mode = \"enforce\"\n[limits]\nmemroy = \"64MiB\"\n",
    )
    .expect("write");
    let marker = dir.path().join("ran");
    let run = flamewarden([
        OsString::from("sandbox"),
        "run".into(),
        "--policy".into(),
        policy.clone().into(),
        "--".into(),
        escape_program("write_outside").into(),
        marker.clone().into(),
    ]);
    assert_eq!(run.code(), Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("memroy"),
        "the error does not name the field:\n{}",
        run.stderr
    );
    assert!(!marker.exists(), "the command ran despite the bad policy");
}

#[test]
fn the_violation_stack_is_symbolized_through_main() {
    if !require_bpf() {
        return;
    }
    // read_inline makes the call in its own frame (no glibc wrapper), so frame pointers lead
    // from the call through main.
    let outside = tempfile::tempdir().expect("temporary directory");
    let secret = outside.path().join("secret.txt");
    let text = format!("SECRET-{}", random_hex(24));
    fs::write(&secret, &text).expect("write the secret");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        ..Sandbox::new(&judge_policy())
    }
    .run(&escape_program("read_inline"), &[OsString::from(&secret)]);
    let verdict = &run.verdict;
    assert!(!run.output_contains(&text), "the secret leaked; {verdict}");
    verdict.assert_status("security_violation");
    let violation = verdict.expect_violation("filesystem.read", "denied");
    assert_eq!(violation["syscall"], "openat", "{verdict}");
    let stack: Vec<&str> = violation["stack"]
        .as_array()
        .map(|frames| frames.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        stack.starts_with(&["open_secret_inline", "main"]),
        "the stack does not start with open_secret_inline, main: {stack:?}, in {verdict}"
    );
}

#[test]
fn violations_total_counts_every_listed_violation_limits_included() {
    if !require_bpf() {
        return;
    }
    let policy = judge_with_limits(&[("wall_time", "\"1s\"")]);
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        ..Sandbox::new(policy.path())
    }
    .run(&escape_program("wall_sleep"), &[OsString::from("30")]);
    let verdict = &run.verdict;
    verdict.assert_status("wall_time_limit");
    let listed = verdict
        .violations()
        .iter()
        .any(|v| v["rule"] == "limits.wall_time");
    assert!(listed, "no `limits.wall_time` violation in {verdict}");
    let total = verdict.0["violations_total"].as_u64().unwrap_or(0);
    assert!(
        total >= verdict.violations().len() as u64,
        "violations_total {total} does not count the {} violations listed, in {verdict}",
        verdict.violations().len()
    );
}
