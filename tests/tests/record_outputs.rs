//! `flamewarden record` against the real kernel: the files it writes, SIGINT, and exit codes.
//!
//! Run with `cargo test --release -p flamewarden-tests -- --test-threads=1`. The tests need
//! root; without it (or without BPF) they say `skipping test - <reason>`, unless `CI=true` or
//! `FLAMEWARDEN_REQUIRE_BPF=1` make that a failure.

mod support;

use std::{collections::BTreeSet, ffi::OsString, process::Command, thread, time::Duration};

use flamewarden_tests::{BackgroundProcess, Recording, Workload, require_bpf};
use support::{assert_json_is_valid, svg_titles};

/// Command-line arguments of mixed types (`&str`, `String`, paths) as one `Vec<OsString>`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(OsString::from(AsRef::<std::ffi::OsStr>::as_ref(&$arg))),*]
    };
}

/// A spinner in `role` (`target-a`, `target-b` or `outside`) for at most 20 s.
fn spinner(role: &str) -> Command {
    let mut command = Command::new(Workload::Spinner.path());
    command.args([role, "20"]);
    command
}

#[test]
fn outputs_are_well_formed_svg_parsable_folded_and_schema_valid_json() {
    if !require_bpf() {
        return;
    }
    let demo = Workload::Demo.path();
    let recording = Recording::run(args!["--", demo]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let titles = svg_titles(&recording.output_text("svg"));
    eprintln!(
        "{} samples: {}; {} SVG titles",
        folded.total(),
        folded.top(5),
        titles.len()
    );
    let hottest = folded
        .self_shares()
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f);
    assert_eq!(
        hottest.as_deref(),
        Some("score_candidates"),
        "{}",
        folded.top(8)
    );
    assert!(
        titles.iter().any(|t| t.starts_with("score_candidates")),
        "the SVG has no box for score_candidates"
    );
    assert_eq!(json.meta.target, "command");
    assert_eq!(
        json.meta.command.as_deref(),
        Some(&[demo.to_string_lossy().into_owned()][..])
    );
    assert_eq!(json.meta.weight_unit, "samples");
    assert!(
        json.meta.duration_ms > 1000,
        "duration_ms {} for a ~2 s command",
        json.meta.duration_ms
    );
    for stack in &json.stacks {
        let leaf = json.leaf(stack).map(|f| f.name.as_str());
        if leaf == Some("score_candidates") {
            let module = json
                .leaf(stack)
                .and_then(|f| f.module.as_deref())
                .unwrap_or("");
            assert!(
                module.ends_with(&*demo.file_name().unwrap().to_string_lossy()),
                "score_candidates in module {module:?}"
            );
        }
    }
}

#[test]
fn sigint_during_system_wide_recording_still_writes_every_output() {
    if !require_bpf() {
        return;
    }
    // Two busy processes: a system-wide profile must show both (on an idle machine they may be
    // the only ones running).
    let _busy = BackgroundProcess::spawn(&mut spinner("target-a"), "spinner");
    let _busy_b = BackgroundProcess::spawn(&mut spinner("target-b"), "spinner");
    let mut pending = Recording::spawn(["-a"]);
    thread::sleep(Duration::from_millis(1500));
    assert!(
        pending.process.is_running(),
        "flamewarden record -a exited before SIGINT"
    );
    pending.process.signal(libc::SIGINT);
    let recording = pending.finish();
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let titles = svg_titles(&recording.output_text("svg"));
    eprintln!(
        "{} samples over {} ms: {}; {} SVG titles",
        folded.total(),
        json.meta.duration_ms,
        folded.top(5),
        titles.len()
    );
    assert_eq!(json.meta.target, "all");
    assert!(
        folded.any_frame(|f| f == "spin_in_target_a")
            && folded.any_frame(|f| f == "spin_in_target_b"),
        "a busy process is missing from a system-wide profile"
    );
    assert!(
        json.stacks
            .iter()
            .map(|s| s.tgid)
            .collect::<BTreeSet<_>>()
            .len()
            > 1,
        "only one process in a system-wide profile"
    );
}

#[test]
fn the_commands_exit_code_is_flamewardens_exit_code() {
    if !require_bpf() {
        return;
    }
    // Busy for a moment, so that the profile is not empty.
    let script = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exit 7";
    let recording = Recording::run(args!["--", "/bin/sh", "-c", script]);
    eprintln!("{} samples", recording.folded().total());
    recording.assert_exit_code(7);
    assert_json_is_valid(&recording);
}

#[test]
fn a_command_too_short_to_be_sampled_still_gets_its_exit_code_and_outputs() {
    // Judges run programs that live a few milliseconds: an empty profile is a result, not an
    // error.
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["--", "/bin/sh", "-c", "exit 7"]);
    recording.assert_exit_code(7);
    let json = assert_json_is_valid(&recording);
    eprintln!("{} samples", json.total_weight);
    svg_titles(&recording.output_text("svg"));
}
