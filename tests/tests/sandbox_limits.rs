//! The limits of `flamewarden sandbox run`, and a benign solution that stays within them.
//!
//! Each limit test runs a copy of `policies/judge.toml` with a small limit (1 s of CPU, 2 s of
//! wall time, 64 MiB, 1 MiB of output, 8 MiB of disk) so the suite stays fast; the fork bomb runs under
//! judge.toml itself (64 tasks, 50 forks per second). Each checks the status, a `limits.*`
//! violation, and what the verdict measured or what reached the output — not the workload's own
//! claim: every hog would print `escaped:` only if it reached its (far higher) goal.
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_limits -- --test-threads=1`.

use std::{ffi::OsString, fs, path::Path};

use flamewarden_tests::{
    require_bpf,
    sandbox::{
        Sandbox, SandboxRun, escape_program, judge_policy, judge_with_limits, new_tag, run_bare,
    },
};

/// Runs corpus program `name` with `args` under `policy` in a fresh work directory.
fn run(policy: &Path, name: &str, args: &[&str]) -> SandboxRun {
    let workdir = tempfile::tempdir().expect("temporary directory");
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    Sandbox {
        workdir: Some(workdir.path().to_owned()),
        ..Sandbox::new(policy)
    }
    .run(&escape_program(name), &args)
}

/// Checks that a hog was stopped by the sandbox: killed by one of `signals` (no exit code),
/// before it reached its goal, with a `rule` violation.
fn assert_stopped(run: &SandboxRun, rule: &str, signals: &[i32]) {
    let verdict = &run.verdict;
    assert!(
        !run.output_contains("escaped:"),
        "the workload reached its goal; stdout:\n{}\n{verdict}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(verdict.0["exit_code"].is_null(), "exit_code in {verdict}");
    let signal = verdict.0["signal"].as_i64().unwrap_or(0);
    assert!(
        signals.iter().any(|&s| i64::from(s) == signal),
        "signal {signal}, expected one of {signals:?}, in {verdict}"
    );
    let found = verdict.violations().iter().any(|v| v["rule"] == rule);
    assert!(found, "no `{rule}` violation in {verdict}");
}

#[test]
fn fork_bomb_ends_as_fork_bomb_with_the_whole_cgroup_killed() {
    if !require_bpf() {
        return;
    }
    let run = run(&judge_policy(), "fork_bomb", &[]);
    let verdict = &run.verdict;
    verdict.assert_status("fork_bomb");
    assert!(
        verdict
            .violations()
            .iter()
            .any(|v| v["rule"] == "limits.tasks" || v["rule"] == "limits.fork_rate"),
        "no `limits.tasks` or `limits.fork_rate` violation in {verdict}"
    );
    assert!(verdict.0["exit_code"].is_null(), "exit_code in {verdict}");
    assert_eq!(verdict.0["signal"], libc::SIGKILL, "signal in {verdict}");
    // The bomb gives up by itself after 5 s and then prints its count; the sandbox must end it
    // long before (50 forks per second trip within the first second).
    assert!(
        !run.output_contains(" forks, "),
        "the bomb ran to its end; stdout:\n{}\n{verdict}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(
        verdict.number("wall_time_ms") < 4000.0,
        "too slow: {verdict}"
    );
    // No process of the run is left: checked by Sandbox::run for every run.
}

/// The fork rate counts processes: hundreds of short-lived threads a second (never more than
/// nine tasks at once) are a thread pool, not a fork bomb.
#[test]
fn a_thread_pool_is_not_a_fork_bomb() {
    if !require_bpf() {
        return;
    }
    let run = run(&judge_policy(), "thread_churn", &["400"]);
    let verdict = &run.verdict;
    verdict.assert_status("ok");
    assert!(verdict.violations().is_empty(), "violations in {verdict}");
    let bare = tempfile::tempdir().expect("temporary directory");
    let (status, stdout) = run_bare(
        &escape_program("thread_churn"),
        &[OsString::from("400")],
        bare.path(),
        None,
        &new_tag(),
    );
    assert!(status.success(), "thread_churn bare: {status}");
    assert!(
        stdout.starts_with(b"threads 400 total "),
        "bare output {stdout:?}"
    );
    assert_eq!(
        run.stdout, stdout,
        "output differs from the bare run; {verdict}"
    );
}

/// `limits.stack`: judge.toml's 256 MiB lets a million-level recursion finish, with the output of
/// a bare run that has the room; 8 MiB, the usual default, ends it with SIGSEGV.
#[test]
fn the_stack_limit_decides_how_deep_a_recursion_goes() {
    if !require_bpf() {
        return;
    }
    let deep = run(&judge_policy(), "deep_recursion", &["1000000"]);
    let verdict = &deep.verdict;
    verdict.assert_status("ok");
    assert!(verdict.violations().is_empty(), "violations in {verdict}");
    assert_eq!(
        String::from_utf8_lossy(&deep.stdout),
        "depth 1000000 checksum 500001\n",
        "{verdict}"
    );
    let small = judge_with_limits(&[("stack", "\"8MiB\"")]);
    let overflow = run(small.path(), "deep_recursion", &["1000000"]);
    let verdict = &overflow.verdict;
    verdict.assert_status("runtime_error");
    assert_eq!(verdict.0["signal"], libc::SIGSEGV, "{verdict}");
}

#[test]
fn memory_hog_ends_as_memory_limit() {
    if !require_bpf() {
        return;
    }
    let policy = judge_with_limits(&[("memory", "\"64MiB\"")]);
    let run = run(policy.path(), "mem_hog", &["1024"]);
    let verdict = &run.verdict;
    verdict.assert_status("memory_limit");
    assert!(
        !run.output_contains("escaped:"),
        "the hog touched 1 GiB under a 64 MiB limit; {verdict}"
    );
    assert_ne!(verdict.0["exit_code"], 0, "{verdict}");
    assert!(
        verdict
            .violations()
            .iter()
            .any(|v| v["rule"] == "limits.memory"),
        "no `limits.memory` violation in {verdict}"
    );
    let peak = verdict.number("peak_memory_bytes");
    assert!(
        (32.0 * 1048576.0..=65.0 * 1048576.0).contains(&peak),
        "peak_memory_bytes {peak} is not close to the 64 MiB limit, in {verdict}"
    );
}

#[test]
fn cpu_spin_ends_as_time_limit() {
    if !require_bpf() {
        return;
    }
    // A wall-time limit far above the CPU limit: on a loaded machine 1 s of CPU takes longer.
    let policy = judge_with_limits(&[("cpu_time", "\"1s\""), ("wall_time", "\"20s\"")]);
    let run = run(policy.path(), "cpu_spin", &["30"]);
    let verdict = &run.verdict;
    verdict.assert_status("time_limit");
    // By the sandbox's CPU accounting (SIGKILL) or by its RLIMIT_CPU backup (SIGXCPU).
    assert_stopped(&run, "limits.cpu_time", &[libc::SIGKILL, libc::SIGXCPU]);
    let cpu = verdict.number("cpu_time_ms");
    assert!(
        (950.0..=2500.0).contains(&cpu),
        "cpu_time_ms {cpu} is not about the 1 s limit, in {verdict}"
    );
}

#[test]
fn sleeper_ends_as_wall_time_limit() {
    if !require_bpf() {
        return;
    }
    let policy = judge_with_limits(&[("wall_time", "\"2s\"")]);
    let run = run(policy.path(), "wall_sleep", &["30"]);
    let verdict = &run.verdict;
    verdict.assert_status("wall_time_limit");
    assert_stopped(&run, "limits.wall_time", &[libc::SIGKILL]);
    let wall = verdict.number("wall_time_ms");
    assert!(
        (1950.0..=4000.0).contains(&wall),
        "wall_time_ms {wall} is not about the 2 s limit, in {verdict}"
    );
    let cpu = verdict.number("cpu_time_ms");
    assert!(cpu < 500.0, "a sleeper used {cpu} ms of CPU, in {verdict}");
}

/// An `output_flood` run ended as `output_limit` with its violation, before it wrote all it
/// meant to.
fn assert_stopped_flood(run: &SandboxRun) {
    let verdict = &run.verdict;
    verdict.assert_status("output_limit");
    assert!(
        !run.output_contains("escaped: wrote"),
        "the flood wrote all it meant to; {verdict}"
    );
    assert!(
        verdict
            .violations()
            .iter()
            .any(|v| v["rule"] == "limits.output"),
        "no `limits.output` violation in {verdict}"
    );
}

/// Standard error counts against the output limit too: a flood there must not reach a judge
/// that reads it through a pipe (no file-size limit stops it there).
#[test]
fn a_flood_on_stderr_ends_as_output_limit() {
    if !require_bpf() {
        return;
    }
    const LIMIT: usize = 1 << 20;
    let policy = judge_with_limits(&[("output", "\"1MiB\"")]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(dir.path().to_owned()),
        stderr_pipe: true,
        ..Sandbox::new(policy.path())
    }
    .run(
        &escape_program("output_flood"),
        &[(8 * LIMIT).to_string().into(), "stderr".into()],
    );
    let verdict = &run.verdict;
    assert_stopped_flood(&run);
    // The flood is "y\n" lines: 1 MiB of them is LIMIT / 2 lines.
    let flooded = run.stderr.lines().filter(|&l| l == "y").count();
    assert!(
        (LIMIT / 8..=LIMIT / 2).contains(&flooded),
        "{flooded} flood lines reached flamewarden's stderr, 1 MiB holds {}, in {verdict}",
        LIMIT / 2
    );
}

#[test]
fn output_flood_ends_as_output_limit_and_no_byte_beyond_it_is_written() {
    if !require_bpf() {
        return;
    }
    const LIMIT: usize = 1 << 20;
    let policy = judge_with_limits(&[("output", "\"1MiB\"")]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("stdout");
    let run = Sandbox {
        workdir: Some(dir.path().to_owned()),
        stdout: Some(out.clone()),
        ..Sandbox::new(policy.path())
    }
    .run(
        &escape_program("output_flood"),
        &[(2 * LIMIT).to_string().into()],
    );
    let verdict = &run.verdict;
    assert_stopped_flood(&run);
    let written = fs::read(&out).expect("read the --stdout file");
    assert!(
        written.len() <= LIMIT,
        "{} bytes reached --stdout, more than the 1 MiB limit, in {verdict}",
        written.len()
    );
    assert!(
        written.chunks(2).all(|c| c == b"y\n" || c == b"y"),
        "what reached --stdout is not the program's output"
    );
}

/// 20000 pseudo-random integers, one per line.
fn benign_input(path: &Path) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::new();
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{}\n", (x % 2_000_000_001) as i64 - 1_000_000_000));
    }
    fs::write(path, text).expect("write the input");
}

/// Checks everything of a clean run of the benign solution.
fn assert_benign_ok(run: &SandboxRun) {
    let verdict = &run.verdict;
    verdict.assert_status("ok");
    assert_eq!(verdict.0["exit_code"], 0, "{verdict}");
    assert!(verdict.0["signal"].is_null(), "{verdict}");
    assert!(verdict.violations().is_empty(), "violations in {verdict}");
    assert_eq!(verdict.0["violations_total"], 0, "{verdict}");
    let peak = verdict.number("peak_memory_bytes");
    assert!(
        peak >= 64.0 * 1048576.0,
        "peak_memory_bytes {peak} < the 64 MiB the solution touched, in {verdict}"
    );
    assert!(verdict.number("cpu_time_ms") > 0.0, "{verdict}");
    assert!(verdict.number("wall_time_ms") > 0.0, "{verdict}");
}

#[test]
fn benign_solution_is_ok_with_stdout_file_identical_to_a_bare_run() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let (input, out) = (dir.path().join("input.txt"), dir.path().join("stdout"));
    benign_input(&input);
    let benign = escape_program("benign");
    let (status, expected) = run_bare(&benign, &[], dir.path(), Some(&input), &new_tag());
    assert!(status.success(), "the benign solution fails bare: {status}");
    assert!(
        expected.starts_with(b"count 20000\n"),
        "unexpected bare output"
    );

    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        stdin: Some(input),
        stdout: Some(out.clone()),
        ..Sandbox::new(&judge_policy())
    }
    .run(&benign, &[]);
    let got = fs::read(&out).expect("read the --stdout file");
    assert!(
        got == expected,
        "sandboxed output differs from the bare run:\n--- sandbox\n{}\n--- bare\n{}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    assert_benign_ok(&run);
    assert_eq!(
        run.verdict.0["output_bytes"],
        expected.len(),
        "{}",
        run.verdict
    );
    assert!(
        run.stdout.is_empty(),
        "with --stdout, flamewarden's own stdout got {} bytes",
        run.stdout.len()
    );
}

#[test]
fn benign_solution_passes_through_flamewarden_stdout_without_workdir() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("input.txt");
    benign_input(&input);
    let benign = escape_program("benign");
    let (status, expected) = run_bare(&benign, &[], dir.path(), Some(&input), &new_tag());
    assert!(status.success(), "the benign solution fails bare: {status}");
    let run = Sandbox {
        stdin: Some(input),
        ..Sandbox::new(&judge_policy())
    }
    .run(&benign, &[]);
    assert!(
        run.stdout == expected,
        "sandboxed output differs from the bare run:\n--- sandbox\n{}\n--- bare\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_benign_ok(&run);
}

/// The used bytes of the tmpfs mounted on a run's fresh work directory, as the test sees it:
/// `flamewarden-run-*` tmpfs mounts in `/proc/self/mounts` (`None`: none is mounted).
fn run_tmpfs_used() -> Option<u64> {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 2 && f[2] == "tmpfs" && f[1].contains("/flamewarden-run-")).then(|| {
            let path = std::ffi::CString::new(f[1]).expect("mount point");
            // SAFETY: an all-zero statvfs is a valid out-buffer.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated path and a valid out-pointer.
            let status = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
            assert_eq!(status, 0, "statvfs {}", f[1]);
            (st.f_blocks - st.f_bfree) * st.f_frsize
        })
    })
}

#[test]
fn files_beyond_the_disk_limit_are_refused_and_reported() {
    if !require_bpf() {
        return;
    }
    const LIMIT: u64 = 8 << 20;
    let policy = judge_with_limits(&[("disk", "\"8MiB\"")]);
    // No --workdir: the fresh work directory is the limited tmpfs. 32 files of 1 MiB, then
    // 2 s for the test to look at the work directory from outside.
    let sandbox = Sandbox::new(policy.path());
    let run = std::thread::spawn(move || {
        sandbox.run(&escape_program("disk_fill"), &["32".into(), "2".into()])
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut used = None;
    while std::time::Instant::now() < deadline && !run.is_finished() {
        if let Some(u) = run_tmpfs_used().filter(|&u| u >= LIMIT / 2) {
            // Let the writes finish: they end at the limit, then the program sleeps.
            std::thread::sleep(std::time::Duration::from_millis(500));
            used = run_tmpfs_used().or(Some(u));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = run.join().expect("the run");
    let verdict = &run.verdict;
    let used = used.unwrap_or_else(|| panic!("no tmpfs work directory was seen; {verdict}"));
    assert!(
        used <= LIMIT,
        "{used} bytes landed in the work directory, more than 8 MiB; {verdict}"
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("No space left on device"),
        "the writes were not refused with ENOSPC: {}; {verdict}",
        String::from_utf8_lossy(&run.stdout)
    );
    verdict.assert_status("output_limit");
    let violation = verdict.expect_violation("limits.disk", "denied");
    assert!(violation["syscall"].is_null(), "{verdict}");
    assert!(
        run_tmpfs_used().is_none(),
        "the run's tmpfs is still mounted"
    );
}
