//! `flamewarden record` against the real kernel: what it samples, and what it leaves out (its outputs
//! are checked in `record_outputs.rs`, its errors in `record_errors.rs`).
//!
//! Run with `cargo test --release -p flamewarden-tests --no-fail-fast -- --test-threads=1`: the
//! tests measure CPU shares, and two of them running at once would only add noise. Every test
//! prints what it measured (see it with `--nocapture`). They need root; without it (or without
//! BPF) they say `skipping test - <reason>`, unless `CI=true` or `FLAMEWARDEN_REQUIRE_BPF=1`
//! make that a failure.

#[expect(dead_code, reason = "the SVG helpers serve record_outputs.rs")]
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    process::Command,
};

use flamewarden_tests::{
    BackgroundProcess, Recording, Workload, folded::percent, perf::perf_record, require_bpf,
    require_cgroup, require_tool,
};
use support::assert_json_is_valid;

/// Sampling frequency of the tests that compare shares. At 99 Hz a 1.7 s workload gets ~170
/// samples: the share of a 60 % function then varies by ±3.8 points (one standard deviation)
/// from run to run, for perf as for flamewarden, and two runs differ by more than 5 points about
/// a third of the time. At 999 Hz (~1700 samples) one standard deviation is 1.2 points.
const SHARE_FREQUENCY_HZ: u32 = 999;

/// How far a measured share may be from the expected one, or from perf's, in percentage points.
const SHARE_TOLERANCE: f64 = 5.0;

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

/// The `cpu_seconds=S` a workload printed on its stdout.
fn reported_cpu_seconds(stdout: &str) -> f64 {
    stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix("cpu_seconds="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the workload printed no cpu_seconds=; stdout:\n{stdout}"))
}

fn assert_share(what: &str, measured: f64, expected: f64) {
    assert!(
        (measured - expected).abs() <= SHARE_TOLERANCE,
        "{what}: {measured:.1} %, expected {expected:.1} ± {SHARE_TOLERANCE} points"
    );
}

#[test]
fn cpu_mix_self_shares_match_the_expected_split_and_perf() {
    if !require_bpf() || !require_tool("perf") {
        return;
    }
    let cpu_mix = Workload::CpuMix.path();
    let freq = SHARE_FREQUENCY_HZ.to_string();
    let recording = Recording::run(args!["-F", freq, "--", cpu_mix]);
    recording.assert_exit_code(0);
    let ours = recording.folded();
    // Whole stacks, not just leaves: every sample of the process goes through main.
    let through_main = ours.total_share("main");
    let cpu_seconds = reported_cpu_seconds(&recording.run.stdout);
    let ratio = ours.total() as f64 / (f64::from(SHARE_FREQUENCY_HZ) * cpu_seconds);
    eprintln!(
        "{through_main:.1} % of the samples under main; {ratio:.3} samples per expected sample"
    );
    assert!(
        through_main > 95.0,
        "only {through_main:.1} % of the samples have main on their stack"
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{} samples for {cpu_seconds:.3} CPU-s at {freq} Hz",
        ours.total()
    );
    let perf = perf_record(SHARE_FREQUENCY_HZ, &cpu_mix, [] as [&str; 0]);
    eprintln!("flamewarden: {} samples: {}", ours.total(), ours.top(5));
    eprintln!(
        "perf:        {} samples: {:?}",
        perf.samples, perf.self_samples
    );
    for (function, expected) in [
        ("hot_function", 60.0),
        ("warm_function", 30.0),
        ("cold_function", 10.0),
    ] {
        let (fw, pf) = (ours.self_share(function), perf.self_share(function));
        eprintln!("{function}: expected {expected:.1} %, flamewarden {fw:.1} %, perf {pf:.1} %");
        assert_share(
            &format!("flamewarden's self share of {function}"),
            fw,
            expected,
        );
        assert_share(
            &format!("flamewarden's self share of {function} against perf's ({pf:.1} %)"),
            fw,
            pf,
        );
    }
}

#[test]
fn sample_count_is_frequency_times_the_targets_cpu_time() {
    if !require_bpf() {
        return;
    }
    // No -F: the default frequency must be 99 Hz.
    for (flags, frequency) in [(vec![], 99u32), (vec!["-F", "499"], 499)] {
        let mut command_line: Vec<OsString> = flags.iter().map(OsString::from).collect();
        command_line.extend(args!["--", Workload::CpuMix.path(), "12000"]);
        let recording = Recording::run(command_line);
        recording.assert_exit_code(0);
        let cpu_seconds = reported_cpu_seconds(&recording.run.stdout);
        let profile = assert_json_is_valid(&recording);
        assert_eq!(profile.meta.frequency_hz, u64::from(frequency));
        assert_eq!(profile.meta.weight_unit, "samples");
        let expected = f64::from(frequency) * cpu_seconds;
        let ratio = profile.total_weight as f64 / expected;
        eprintln!(
            "-F {frequency}: {} samples kept ({} taken) for {cpu_seconds:.3} CPU-s, expected {expected:.0}: ratio {ratio:.3}",
            profile.total_weight, profile.completeness.samples_taken
        );
        assert!(
            (0.85..=1.15).contains(&ratio),
            "-F {frequency}: {} samples for {cpu_seconds:.3} CPU seconds, expected {expected:.0} ± 15 %",
            profile.total_weight
        );
        assert!(profile.completeness.samples_taken >= profile.total_weight);
    }
}

#[test]
fn command_recording_leaves_out_a_busy_process_beside_it() {
    if !require_bpf() {
        return;
    }
    let bystander = BackgroundProcess::spawn(&mut spinner("outside"), "outside spinner");
    let recording = Recording::run(args!["--", Workload::CpuMix.path(), "8000"]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    eprintln!(
        "{} samples: {}; comms {:?}",
        folded.total(),
        folded.top(4),
        folded.comms()
    );
    assert!(
        !folded.any_frame(|f| f == "spin_outside_target"),
        "the bystander was sampled: {}",
        folded.top(8)
    );
    assert!(
        json.stacks.iter().all(|s| s.tgid != bystander.pid()),
        "a stack of the bystander's pid"
    );
    // The command owns stdout; the hot-path table goes to stderr.
    assert_eq!(
        recording.run.stdout.lines().count(),
        1,
        "stdout: {:?}",
        recording.run.stdout
    );
    assert!(
        recording.run.stdout.starts_with("cpu_seconds="),
        "stdout: {:?}",
        recording.run.stdout
    );
    assert!(
        recording.run.stderr.contains("hot_function"),
        "no hot-path table on stderr"
    );
    assert!(
        folded.self_share("hot_function") > 40.0,
        "the command itself is missing: {}",
        folded.top(8)
    );
}

#[test]
fn pid_recording_profiles_the_given_processes_and_nothing_else() {
    if !require_bpf() {
        return;
    }
    let a = BackgroundProcess::spawn(&mut spinner("target-a"), "spinner a");
    let b = BackgroundProcess::spawn(&mut spinner("target-b"), "spinner b");
    let _outside = BackgroundProcess::spawn(&mut spinner("outside"), "outside spinner");
    let recording = Recording::run(args![
        "-p",
        a.pid().to_string(),
        "--pid",
        b.pid().to_string(),
        "-d",
        "1.5"
    ]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let by_pid = json.weight_by_tgid(|_| true);
    eprintln!(
        "{} samples: {}; by pid {by_pid:?}; target {:?}",
        folded.total(),
        folded.top(4),
        json.meta.target
    );
    assert!(
        !folded.any_frame(|f| f == "spin_outside_target"),
        "the outside process was sampled: {}",
        folded.top(8)
    );
    // No command: the hot-path table goes to stdout.
    assert!(
        recording.run.stdout.contains("spin_in_target_a"),
        "no hot-path table on stdout"
    );
    let sampled: BTreeSet<u32> = by_pid.keys().copied().collect();
    assert_eq!(
        sampled,
        BTreeSet::from([a.pid(), b.pid()]),
        "the processes sampled"
    );
    // Three spinners on however many cores: each target gets a fair part of the samples.
    for function in ["spin_in_target_a", "spin_in_target_b"] {
        let share = folded.self_share(function);
        assert!(
            share > 25.0,
            "{function} has {share:.1} % of the samples: {}",
            folded.top(8)
        );
    }
    assert!(
        json.meta.target.contains(&a.pid().to_string()),
        "meta.target {:?} names no pid",
        json.meta.target
    );
}

#[test]
fn cgroup_recording_profiles_exactly_the_processes_in_the_cgroup_and_its_children() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("record") else {
        return;
    };
    let nested = cgroup
        .child("nested")
        .expect("failed to create a nested cgroup");
    // Declared after the cgroups, so dropped (killed) before them.
    let a = cgroup.spawn(&mut spinner("target-a"), "spinner in the cgroup");
    let b = nested.spawn(&mut spinner("target-b"), "spinner in the nested cgroup");
    let outside = BackgroundProcess::spawn(&mut spinner("outside"), "spinner outside the cgroup");
    assert_eq!(cgroup.procs(), [a.pid()]);
    assert_eq!(nested.procs(), [b.pid()]);

    let recording = Recording::run(args!["--cgroup", cgroup.path(), "-d", "1.5"]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let by_cgroup: BTreeMap<u64, u64> = json.stacks.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.cgroup_id).or_default() += s.weight;
        m
    });
    eprintln!(
        "{} samples: {}; by cgroup id {by_cgroup:?} (cgroup {}, nested {})",
        folded.total(),
        folded.top(4),
        cgroup.id(),
        nested.id()
    );
    assert!(
        !folded.any_frame(|f| f == "spin_outside_target"),
        "a process outside the cgroup was sampled"
    );
    assert!(json.stacks.iter().all(|s| s.tgid != outside.pid()));
    for function in ["spin_in_target_a", "spin_in_target_b"] {
        let share = folded.self_share(function);
        assert!(
            share > 25.0,
            "{function} has {share:.1} % of the samples: {}",
            folded.top(8)
        );
    }
    let expected_ids = BTreeSet::from([cgroup.id(), nested.id()]);
    assert_eq!(
        by_cgroup.keys().copied().collect::<BTreeSet<_>>(),
        expected_ids,
        "stacks' cgroup ids"
    );
}

#[test]
fn syscall_heavy_workload_shows_kernel_frames_under_its_user_frames() {
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["--", Workload::SyscallHeavy.path(), "1.0"]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let total = folded.total();
    let kernel_share = percent(folded.kernel_count(), total);
    // Samples whose stack goes read_zero_loop -> kernel, in that order.
    let under_loop: u64 = folded
        .stacks
        .iter()
        .filter(|s| {
            let first_kernel = s.frames.iter().position(|f| f.ends_with("_[k]"));
            first_kernel.is_some_and(|k| k > 0 && s.frames[k - 1] == "read_zero_loop")
        })
        .map(|s| s.count)
        .sum();
    let under_share = percent(under_loop, total);
    eprintln!(
        "{total} samples, {kernel_share:.1} % with kernel frames, {under_share:.1} % read_zero_loop -> kernel; {}",
        folded.top(6)
    );
    assert!(
        kernel_share > 50.0,
        "only {kernel_share:.1} % of the samples have kernel frames: {}",
        folded.top(8)
    );
    assert!(
        under_share > 40.0,
        "only {under_share:.1} % of the samples go read_zero_loop -> kernel"
    );
    assert!(
        folded.any_frame(|f| ["vfs_read_[k]", "ksys_read_[k]", "__x64_sys_read_[k]"].contains(&f)),
        "no kernel read path (vfs_read, ksys_read) among the frames"
    );
    // The JSON says the same with `kind`, and kernel frames never come before user frames.
    let kernel_weight: u64 = json
        .stacks
        .iter()
        .filter(|s| s.frames.iter().any(|&i| json.frame(i).kind == "kernel"))
        .map(|s| s.weight)
        .sum();
    assert_eq!(
        kernel_weight,
        folded.kernel_count(),
        "JSON kernel frames and folded `_[k]` frames disagree"
    );
    for stack in &json.stacks {
        let kinds: Vec<&str> = stack
            .frames
            .iter()
            .map(|&i| json.frame(i).kind.as_str())
            .collect();
        if let Some(k) = kinds.iter().position(|&k| k == "kernel") {
            assert!(
                kinds[k..].iter().all(|&k| k == "kernel"),
                "a user frame below a kernel frame: {kinds:?}"
            );
        }
    }
}

#[test]
fn children_that_exited_long_before_symbolization_are_fully_symbolized() {
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["-F", "199", "--", Workload::Forker.path()]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let json = assert_json_is_valid(&recording);
    let (unknown, user_frames) = folded.unknown_user_frames();
    let unknown_pct = percent(unknown, user_frames);
    let busy_share = folded.self_share("child_busy_work");
    let children: BTreeMap<u32, u64> =
        json.weight_by_tgid(|s| json.stack_has(s, "child_busy_work"));
    eprintln!(
        "{} samples: {}; [unknown] user frames {unknown}/{user_frames} = {unknown_pct:.2} %, JSON unsymbolized_pct {:.2} %; \
         {} children sampled: {children:?}",
        folded.total(),
        folded.top(5),
        json.completeness.unsymbolized_pct,
        children.len()
    );
    assert!(
        unknown_pct < 2.0,
        "{unknown_pct:.2} % of user frames are [unknown]: {}",
        folded.top(8)
    );
    assert!(
        json.completeness.unsymbolized_pct < 2.0,
        "completeness.unsymbolized_pct is {:.2}",
        json.completeness.unsymbolized_pct
    );
    assert!(
        busy_share > 80.0,
        "child_busy_work has {busy_share:.1} % of the samples: {}",
        folded.top(8)
    );
    assert_eq!(
        children.len(),
        20,
        "all 20 children ran child_busy_work for ~50 ms at 199 Hz"
    );
}

#[test]
fn every_thread_of_a_multithreaded_process_is_sampled_under_its_own_name() {
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["--", Workload::Threads.path()]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    // Four busy threads run on every CPU there is: the count also checks that no CPU is missed.
    let cpu_seconds = reported_cpu_seconds(&recording.run.stdout);
    let ratio = folded.total() as f64 / (99.0 * cpu_seconds);
    eprintln!(
        "{} samples for {cpu_seconds:.3} CPU-s (ratio {ratio:.3}): {}; comms {:?}",
        folded.total(),
        folded.top(6),
        folded.comms()
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{} samples for {cpu_seconds:.3} CPU seconds of four threads at 99 Hz",
        folded.total()
    );
    for (comm, function) in [
        ("fw-alpha", "thread_alpha_spin"),
        ("fw-beta", "thread_beta_spin"),
        ("fw-gamma", "thread_gamma_spin"),
        ("fw-delta", "thread_delta_spin"),
    ] {
        let share = folded.self_share(function);
        let under_name: u64 = folded
            .stacks
            .iter()
            .filter(|s| s.comm == comm && s.leaf() == Some(function))
            .map(|s| s.count)
            .sum();
        let named = percent(under_name, folded.self_count(function));
        eprintln!(
            "{function}: {share:.1} % of the samples, {named:.1} % of them under comm {comm}"
        );
        // Equal work per thread: a quarter each, give or take.
        assert!(
            (15.0..=35.0).contains(&share),
            "{function} has {share:.1} %, expected about 25 %"
        );
        assert!(
            named > 90.0,
            "only {named:.1} % of {function}'s samples carry the thread name {comm}"
        );
    }
}

#[test]
fn rust_hot_function_is_demangled_and_has_its_expected_share() {
    if !require_bpf() {
        return;
    }
    let freq = SHARE_FREQUENCY_HZ.to_string();
    let recording = Recording::run(args!["-F", freq, "--", Workload::RustHot.path()]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    eprintln!("{} samples: {}", folded.total(), folded.top(4));
    assert!(
        !folded.any_frame(|f| f.starts_with("_ZN") || f.starts_with("_R")),
        "mangled frames: {}",
        folded.top(8)
    );
    // Demangled, with or without the legacy `::h<hash>` suffix.
    let share_of = |name: &str| -> f64 {
        folded
            .self_shares()
            .iter()
            .filter(|(f, _)| {
                *f == name
                    || f.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with("::h"))
            })
            .map(|(_, s)| s)
            .sum()
    };
    let hot = share_of("rust_hot::checksum::crunch_numbers");
    let tally = share_of("rust_hot::checksum::tally_results");
    eprintln!("crunch_numbers {hot:.1} % (expected 75), tally_results {tally:.1} % (expected 25)");
    assert_share("rust_hot::checksum::crunch_numbers", hot, 75.0);
    assert_share("rust_hot::checksum::tally_results", tally, 25.0);
}
