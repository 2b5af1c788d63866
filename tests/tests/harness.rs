//! The test harness itself: workloads build and behave as documented, test cgroups leave nothing
//! behind. A broken harness would make every `record` test meaningless, or litter the host.

use std::{fs, path::Path, process::Command, thread, time::Duration};

use flamewarden_tests::{BackgroundProcess, Workload, require_cgroup};

fn run_workload(workload: Workload, args: &[&str]) -> String {
    let output = Command::new(workload.path())
        .args(args)
        .output()
        .expect("the workload starts");
    assert!(
        output.status.success(),
        "{workload:?} {args:?} failed: {}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_workload_builds_and_runs_a_short_job() {
    assert!(run_workload(Workload::CpuMix, &["10"]).starts_with("cpu_seconds="));
    assert!(run_workload(Workload::SyscallHeavy, &["0.05"]).starts_with("reads="));
    assert_eq!(run_workload(Workload::Forker, &["3", "5"]), "children=3\n");
    assert!(run_workload(Workload::Threads, &["10"]).starts_with("cpu_seconds="));
    assert_eq!(run_workload(Workload::Spinner, &["target-a", "0.05"]), "");
    assert!(run_workload(Workload::RustHot, &["10"]).starts_with("result="));
    // Built, not run: it takes its full 2 s.
    assert!(Workload::Demo.path().is_file());
}

#[test]
fn workload_builds_are_cached() {
    let first = Workload::CpuMix.path();
    let modified = fs::metadata(&first).unwrap().modified().unwrap();
    assert_eq!(Workload::CpuMix.path(), first);
    assert_eq!(fs::metadata(&first).unwrap().modified().unwrap(), modified);
}

#[test]
fn spinners_refuse_unbounded_runs() {
    let status = Command::new(Workload::Spinner.path())
        .args(["outside", "1e9"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
}

#[test]
fn test_cgroup_holds_its_processes_and_leaves_nothing_on_drop() {
    let Some(cgroup) = require_cgroup("harness") else {
        return;
    };
    let path = cgroup.path().to_owned();
    let nested = cgroup.child("nested").unwrap();
    let nested_path = nested.path().to_owned();
    let inside = cgroup.spawn(
        Command::new(Workload::Spinner.path()).args(["target-a", "20"]),
        "spinner",
    );
    let deeper = nested.spawn(
        Command::new(Workload::Spinner.path()).args(["target-b", "20"]),
        "spinner",
    );
    let pids = [inside.pid(), deeper.pid()];
    assert_eq!(cgroup.procs(), [pids[0]]);
    assert_eq!(nested.procs(), [pids[1]]);
    let own_cgroup = fs::read_to_string(format!("/proc/{}/cgroup", pids[0])).unwrap();
    assert!(own_cgroup.lines().any(
        |l| l.starts_with("0::") && l.ends_with(&*path.file_name().unwrap().to_string_lossy())
    ));

    // Forget the process guards: the cgroup alone must kill them.
    std::mem::forget(inside);
    std::mem::forget(deeper);
    drop(nested);
    drop(cgroup);
    assert!(
        !nested_path.exists() && !path.exists(),
        "the cgroup directories are still there"
    );
    thread::sleep(Duration::from_millis(100));
    for pid in pids {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        // Killed; at most a zombie until reaped by us (we forgot the guard, so reap here).
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "process {pid} still runs:\n{status}"
        );
        // SAFETY: waitpid on our own child's pid with a valid status pointer.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
}

#[test]
fn background_process_is_killed_on_drop() {
    let spinner = BackgroundProcess::spawn(
        Command::new(Workload::Spinner.path()).args(["outside", "20"]),
        "spinner",
    );
    let pid = spinner.pid();
    drop(spinner);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived its guard"
    );
}

#[test]
fn perf_sees_the_documented_split_of_cpu_mix() {
    // The reference the flamewarden share tests compare against must itself agree with the
    // workload's design, or a disagreement would say nothing about flamewarden.
    if !flamewarden_tests::require_tool("perf") {
        return;
    }
    let perf = flamewarden_tests::perf::perf_record(999, &Workload::CpuMix.path(), ["10000"]);
    eprintln!("perf: {} samples: {:?}", perf.samples, perf.self_samples);
    for (function, expected) in [
        ("hot_function", 60.0),
        ("warm_function", 30.0),
        ("cold_function", 10.0),
    ] {
        let share = perf.self_share(function);
        assert!(
            (share - expected).abs() <= 5.0,
            "perf: {function} {share:.1} %, expected {expected}"
        );
    }
}
