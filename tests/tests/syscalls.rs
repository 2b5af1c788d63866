//! `flamewarden syscalls` and `flamewarden record --off-cpu / --wall` against the real kernel, on
//! workloads whose syscalls are known exactly (`tests/workloads/sys_*.c`).
//!
//! Run with `cargo test --release -p flamewarden-tests --test syscalls -- --test-threads=1`:
//! the timing tests would only measure each other otherwise. Every test prints what it measured
//! (see it with `--nocapture`).

mod sys_support;

use std::{ffi::OsString, process::Command, thread, time::Duration};

use flamewarden_tests::{
    BackgroundProcess, FoldedProfile, Recording, folded::KERNEL_SUFFIX, require_bpf, require_cgroup,
};
use serde_json::Value;
use sys_support::{SysWorkload, syscalls_json};

/// Command-line arguments of mixed types (`&str`, `String`, paths) as one `Vec<OsString>`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(OsString::from(AsRef::<std::ffi::OsStr>::as_ref(&$arg))),*]
    };
}

/// Relative tolerance of the timing tests.
const TIME_TOLERANCE: f64 = 0.15;

fn assert_within(what: &str, measured_ms: f64, expected_ms: f64) {
    let (lo, hi) = (
        expected_ms * (1.0 - TIME_TOLERANCE),
        expected_ms * (1.0 + TIME_TOLERANCE),
    );
    assert!(
        (lo..=hi).contains(&measured_ms),
        "{what}: {measured_ms:.1} ms, expected {expected_ms} ms ± {:.0} %",
        TIME_TOLERANCE * 100.0
    );
}

fn count(row: &Value, field: &str) -> u64 {
    row[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {row}"))
}

#[test]
fn counts_exactly_100000_getppid_calls_of_a_command() {
    if !require_bpf() {
        return;
    }
    let calls = syscalls_json(args!["--", SysWorkload::Calls.path(), "getppid", "100000"]);
    let getppid = calls.row("getppid");
    eprintln!("getppid: {getppid}");
    assert_eq!(count(getppid, "count"), 100_000);
    assert_eq!(count(getppid, "errors"), 0);
    assert_eq!(
        calls.counter("inflight_full") + calls.counter("stats_full"),
        0
    );
}

#[test]
fn counts_50_failing_openat_as_50_enoent_errors() {
    if !require_bpf() {
        return;
    }
    let calls = syscalls_json(args!["--", SysWorkload::Calls.path(), "openat", "50"]);
    let openat = calls.row("openat");
    eprintln!("openat: {openat}");
    assert_eq!(count(openat, "count"), 50);
    assert_eq!(count(openat, "errors"), 50);
    let errnos = openat["errnos"].as_array().expect("errnos");
    assert_eq!(errnos.len(), 1, "{errnos:?}");
    assert_eq!(errnos[0]["name"], "ENOENT");
    assert_eq!(count(&errnos[0], "count"), 50);
}

#[test]
fn puts_the_median_of_200_sleeps_of_5ms_in_the_bucket_holding_5ms() {
    if !require_bpf() {
        return;
    }
    let calls = syscalls_json(args![
        "--",
        SysWorkload::Calls.path(),
        "nanosleep",
        "200",
        "5"
    ]);
    let nanosleep = calls.row("nanosleep");
    let p50 = &nanosleep["p50"];
    eprintln!(
        "nanosleep: count {} p50 {p50} max {}",
        nanosleep["count"], nanosleep["max_ns"]
    );
    assert_eq!(count(nanosleep, "count"), 200);
    let (lo, hi) = (count(p50, "lo_ns"), count(p50, "hi_ns"));
    assert!(
        lo <= 5_000_000 && 5_000_000 < hi,
        "p50 bucket [{lo}, {hi}) ns misses 5 ms"
    );
}

/// Two `sys_calls spin` processes; returns them once both run.
fn two_spinners(
    first: &mut Command,
    second: &mut Command,
) -> (BackgroundProcess, BackgroundProcess) {
    let a = BackgroundProcess::spawn(first, "sys_calls spin (target)");
    let b = BackgroundProcess::spawn(second, "sys_calls spin (bystander)");
    thread::sleep(Duration::from_millis(200));
    (a, b)
}

fn spin_command() -> Command {
    let mut command = Command::new(SysWorkload::Calls.path());
    command
        .args(["spin", "20"])
        .stdout(std::process::Stdio::null());
    command
}

#[test]
fn leaves_out_a_concurrent_process_when_filtering_by_pid() {
    if !require_bpf() {
        return;
    }
    let (target, bystander) = two_spinners(&mut spin_command(), &mut spin_command());
    let calls = syscalls_json(args![
        "-p",
        target.pid().to_string(),
        "-d",
        "1",
        "--by",
        "process"
    ]);
    let pids = calls.process_ids();
    eprintln!(
        "target {}, bystander {}: rows {pids:?}",
        target.pid(),
        bystander.pid()
    );
    assert_eq!(pids, [u64::from(target.pid())]);
    assert!(count(&calls.json["rows"][0], "count") > 1000);
}

#[test]
fn leaves_out_a_process_outside_the_cgroup_when_filtering_by_cgroup() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("syscalls") else {
        return;
    };
    let target = cgroup.spawn(&mut spin_command(), "sys_calls spin (in the cgroup)");
    let bystander = BackgroundProcess::spawn(&mut spin_command(), "sys_calls spin (outside)");
    thread::sleep(Duration::from_millis(200));
    let calls = syscalls_json(args![
        "--cgroup",
        cgroup.path(),
        "-d",
        "1",
        "--by",
        "process"
    ]);
    let pids = calls.process_ids();
    eprintln!(
        "in cgroup {}, outside {}: rows {pids:?}",
        target.pid(),
        bystander.pid()
    );
    assert_eq!(pids, [u64::from(target.pid())]);
    let by_cgroup = syscalls_json(args![
        "--cgroup",
        cgroup.path(),
        "-d",
        "1",
        "--by",
        "cgroup"
    ]);
    let rows = by_cgroup.json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"]["id"], cgroup.id());
    assert_eq!(rows[0]["label"], cgroup.path().display().to_string());
}

#[test]
fn streams_exactly_the_one_call_slower_than_20ms_with_its_stack() {
    if !require_bpf() {
        return;
    }
    let calls = syscalls_json(args![
        "--slower-than",
        "20ms",
        "--",
        SysWorkload::Slow.path()
    ]);
    let slow = calls.json["slow_calls"].as_array().expect("slow_calls");
    eprintln!("slow calls: {slow:#?}");
    assert_eq!(slow.len(), 1, "expected exactly one slow call");
    let call = &slow[0];
    assert_eq!(call["syscall"], "nanosleep");
    let ms = count(call, "duration_ns") as f64 / 1e6;
    assert!(
        (50.0..=70.0).contains(&ms),
        "duration {ms:.1} ms outside [50, 70] ms"
    );
    let stack: Vec<&str> = call["stack"]
        .as_array()
        .expect("stack")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(stack.contains(&"sleep_once_in_workload"), "stack {stack:?}");
    assert!(stack.contains(&"main"), "stack {stack:?}");
    // The call was also streamed as a line while the command ran (to stderr: it owns stdout).
    let lines: Vec<&str> = calls
        .run
        .stderr
        .lines()
        .filter(|l| l.contains(" nanosleep("))
        .collect();
    assert_eq!(lines.len(), 1, "stderr:\n{}", calls.run.stderr);
    assert!(
        calls.run.stderr.contains("    at sleep_once_in_workload"),
        "{}",
        calls.run.stderr
    );
    assert_eq!(calls.counter("events_lost"), 0);
}

/// Sum of the folded lines under `[off-cpu]` whose frames satisfy `pred`, ms.
fn off_cpu_ms(folded: &FoldedProfile, pred: impl Fn(&[String]) -> bool) -> f64 {
    let ns: u64 = folded
        .stacks
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f == "[off-cpu]") && pred(&s.frames))
        .map(|s| s.count)
        .sum();
    ns as f64 / 1e6
}

#[test]
fn off_cpu_shows_a_300ms_pipe_read_under_the_workload_function() {
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["--off-cpu", "--", SysWorkload::Pipe.path()]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let blocked = off_cpu_ms(&folded, |frames| {
        frames.iter().any(|f| f == "reader_blocked_on_pipe")
            && frames
                .iter()
                .any(|f| f.ends_with(KERNEL_SUFFIX) && f.contains("pipe_read"))
    });
    eprintln!(
        "blocked in reader_blocked_on_pipe / pipe_read: {blocked:.1} ms\n{}",
        folded.top(5)
    );
    assert_within("pipe read blocked", blocked, 300.0);
    assert_eq!(recording.json().meta.weight_unit, "nanoseconds");
}

#[test]
fn wall_clock_splits_200ms_of_compute_and_200ms_of_sleep_half_and_half() {
    if !require_bpf() {
        return;
    }
    let recording = Recording::run(args!["--wall", "-F", "999", "--", SysWorkload::Wall.path()]);
    recording.assert_exit_code(0);
    let folded = recording.folded();
    let has = |frames: &[String], name: &str| frames.iter().any(|f| f == name);
    let on_cpu_ns: u64 = folded
        .stacks
        .iter()
        .filter(|s| !has(&s.frames, "[off-cpu]") && has(&s.frames, "compute_200ms"))
        .map(|s| s.count)
        .sum();
    let on_cpu = on_cpu_ns as f64 / 1e6;
    let sleeping = off_cpu_ms(&folded, |frames| has(frames, "sleep_200ms"));
    // Time the computation spent preempted is off-CPU too, under compute_200ms: it is wall
    // time, but neither the computation's CPU time nor the sleep.
    let preempted = off_cpu_ms(&folded, |frames| has(frames, "compute_200ms"));
    eprintln!("on-CPU {on_cpu:.1} ms, sleep {sleeping:.1} ms, preempted {preempted:.1} ms");
    assert_within("compute_200ms on CPU", on_cpu, 200.0);
    assert_within("sleep_200ms off CPU", sleeping, 200.0);
    let share = on_cpu / (on_cpu + sleeping);
    assert!(
        (0.5 - share).abs() <= 0.5 * TIME_TOLERANCE,
        "on-CPU share {share:.3}, expected 0.5 ± 15 %"
    );
}

#[test]
fn a_flood_from_many_threads_is_counted_exactly_or_its_losses_reported() {
    if !require_bpf() {
        return;
    }
    let calls = syscalls_json(args!["--", SysWorkload::Flood.path(), "16", "100000"]);
    let truth: u64 = calls
        .run
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("calls="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no calls= in stdout {:?}", calls.run.stdout));
    let counted = count(calls.row("getppid"), "count");
    let lost = calls.counter("inflight_full") + calls.counter("stats_full");
    eprintln!("ground truth {truth}, counted {counted}, reported lost {lost}");
    assert_eq!(truth, 1_600_000);
    assert!(
        counted == truth || (lost > 0 && counted + lost == truth),
        "counted {counted} + lost {lost} != ground truth {truth}"
    );
}
