//! The guard's kernel-side actions and the sandbox's other entry points: a `kill` rule ends the
//! process at the call (the tracepoint's `bpf_send_signal`), `--profile` records the run's
//! cgroup, `sandbox batch` runs many submissions, a run left behind by a killed flamewarden
//! is reaped by the next one, the judge's environment stays out of the command's, and a Python
//! solution runs clean under `policies/interpreted.toml`, and the guard's syscall layer, which
//! costs every system call on the host, is attached only while runs are.
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_guard -- --test-threads=1`.

use std::{
    ffi::OsString,
    fs,
    io::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use flamewarden_tests::{
    BackgroundProcess, flamewarden_bin, require_bpf,
    sandbox::{
        LongRun, Sandbox, escape_program, judge_policy, new_tag, random_hex, run_bare,
        sys_enter_link_pin, tagged_processes,
    },
    workloads::Workload,
    workspace_root,
};
use serde_json::Value;

/// judge.toml with `ptrace` moved from the errno rule to a rule of its own with `action`.
fn judge_with_ptrace(action: &str) -> tempfile::NamedTempFile {
    let text = fs::read_to_string(judge_policy()).expect("read judge.toml");
    let text = text.replacen("    \"ptrace\",\n", "", 1).replacen(
        "[limits]",
        &format!("[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"{action}\"\n\n[limits]"),
        1,
    );
    let mut file = tempfile::NamedTempFile::new().expect("temporary policy");
    file.write_all(text.as_bytes()).expect("write the policy");
    file
}

#[test]
fn a_kill_rule_ends_the_process_at_the_call() {
    if !require_bpf() {
        return;
    }
    let policy = judge_with_ptrace("kill");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        ..Sandbox::new(policy.path())
    }
    .run(&escape_program("kill_ptrace"), &[]);
    let verdict = &run.verdict;
    verdict.assert_status("security_violation");
    assert_eq!(verdict.0["signal"], 9, "killed by SIGKILL: {verdict}");
    let violation = verdict.expect_violation("syscalls.kill", "killed");
    assert_eq!(violation["syscall"], "ptrace", "{verdict}");
    assert!(
        workdir.path().join("before").exists(),
        "the program never ran: {verdict}"
    );
    assert!(
        !workdir.path().join("after").exists(),
        "the program outlived its ptrace call: {verdict}"
    );
}

#[test]
fn a_kill_rule_in_audit_mode_only_reports() {
    if !require_bpf() {
        return;
    }
    let policy = judge_with_ptrace("kill");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        mode: Some("audit"),
        ..Sandbox::new(policy.path())
    }
    .run(&escape_program("kill_ptrace"), &[]);
    let verdict = &run.verdict;
    verdict.assert_status("ok");
    let violation = verdict.expect_violation("syscalls.kill", "audited");
    assert_eq!(violation["syscall"], "ptrace", "{verdict}");
    assert!(
        workdir.path().join("after").exists(),
        "audit mode killed the program: {verdict}"
    );
}

#[test]
fn profile_records_the_hot_function_of_the_run() {
    if !require_bpf() {
        return;
    }
    let scratch = tempfile::tempdir().expect("temporary directory");
    let folded = scratch.path().join("run.folded");
    let policy = fs::read_to_string(judge_policy())
        .expect("read judge.toml")
        .replace("cpu_time = \"2s\"", "cpu_time = \"20s\"")
        .replace("wall_time = \"5s\"", "wall_time = \"40s\"");
    let policy_path = scratch.path().join("policy.toml");
    fs::write(&policy_path, policy).expect("write the policy");
    let output = Command::new(flamewarden_bin())
        .args(["--log", "error", "sandbox", "run", "--policy"])
        .arg(&policy_path)
        .arg("--profile")
        .arg(&folded)
        .args(["--stdout", "/dev/null", "--"])
        .arg(Workload::CpuMix.path())
        .arg("3000")
        .output()
        .expect("run flamewarden");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sandbox run failed:\n{stderr}");
    let text =
        fs::read_to_string(&folded).unwrap_or_else(|e| panic!("no profile ({e}):\n{stderr}"));
    let (mut total, mut hot) = (0u64, 0u64);
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("a folded line");
        let count: u64 = count.parse().expect("a count");
        total += count;
        if stack.rsplit(';').next() == Some("hot_function") {
            hot += count;
        }
    }
    assert!(total >= 20, "too few samples ({total}) in\n{text}");
    let share = hot as f64 / total as f64;
    // cpu_mix spends 60 % in hot_function.
    assert!(
        (0.45..=0.75).contains(&share),
        "hot_function self share {share:.2} in\n{text}"
    );
}

/// `flamewarden sandbox batch --policy judge.toml ARGS...` with `env` added to its environment,
/// fed `input`; its output once it ended.
fn batch(args: &[&str], env: &[(&str, &str)], input: &str) -> std::process::Output {
    let mut child = Command::new(flamewarden_bin())
        .args(["--log", "error", "sandbox", "batch"])
        .args(args)
        .arg("--policy")
        .arg(judge_policy())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run flamewarden");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the batch");
    child.wait_with_output().expect("wait for flamewarden")
}

#[test]
fn batch_runs_every_line_and_reports_bad_ones() {
    if !require_bpf() {
        return;
    }
    let scratch = tempfile::tempdir().expect("temporary directory");
    let out = scratch.path().join("out.txt");
    let env_out = scratch.path().join("env.txt");
    let input = format!(
        "{{\"command\": [\"/bin/true\"]}}\n{{\"command\": [\"/bin/false\"]}}\n\
         {{\"command\": [{}, \"10\"], \"stdout\": {}}}\n{{\"bogus\": 1}}\n\
         {{\"command\": [\"/usr/bin/env\"], \"env\": [\"LINE=2\"], \"stdout\": {}}}\n",
        serde_json::to_string(&Workload::CpuMix.path()).expect("path as JSON"),
        serde_json::to_string(&out).expect("path as JSON"),
        serde_json::to_string(&env_out).expect("path as JSON")
    );
    let secret = random_hex(16);
    let output = batch(
        &["--env", "ALL=1"],
        &[("FLAMEWARDEN_TEST_SECRET", &secret)],
        &input,
    );
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0]["status"], "ok");
    assert_eq!(lines[1]["status"], "runtime_error");
    assert_eq!(lines[1]["exit_code"], 1);
    assert_eq!(lines[2]["status"], "ok");
    let written = fs::read_to_string(&out).expect("the run's stdout");
    assert!(written.contains("cpu_seconds="), "{written:?}");
    assert_eq!(lines[3]["line"], 4, "{:?}", lines[3]);
    assert!(
        lines[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("bogus"))
    );
    // The command line's `--env`, then the line's; the judge's own environment stays out.
    assert_eq!(lines[4]["status"], "ok", "{:?}", lines[4]);
    let env = fs::read_to_string(&env_out).expect("the env run's stdout");
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(names, ["PATH", "HOME", "TMPDIR", "ALL", "LINE"], "{env}");
    assert!(!env.contains(&secret), "{env}");
}

#[test]
fn the_judges_environment_does_not_reach_the_command() {
    if !require_bpf() {
        return;
    }
    // A secret of the judge's (an API token, say) in flamewarden's environment; `env` prints
    // the command's whole environment.
    let secret = random_hex(16);
    let kept = random_hex(8);
    let env = vec![
        ("FLAMEWARDEN_TEST_SECRET".to_owned(), secret.clone()),
        ("FLAMEWARDEN_TEST_KEPT".to_owned(), kept.clone()),
    ];
    let asked: Vec<OsString> = ["--env", "FLAMEWARDEN_TEST_KEPT", "-E", "SET=a=b"]
        .map(OsString::from)
        .into();
    for (mode, full) in [("enforce", false), ("audit", false), ("enforce", true)] {
        let mut args = asked.clone();
        if full {
            // The host's locale variables would have `env` read locale files judge.toml
            // does not allow.
            args.extend(["--full-env", "-E", "LC_ALL=C"].map(OsString::from));
        }
        let workdir = tempfile::tempdir().expect("temporary directory");
        let workdir = fs::canonicalize(workdir.path()).expect("canonical work directory");
        let run = Sandbox {
            mode: Some(mode),
            workdir: Some(workdir.clone()),
            args,
            env: env.clone(),
            ..Sandbox::new(&judge_policy())
        }
        .run("/usr/bin/env".as_ref(), &[]);
        run.verdict.assert_status("ok");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            run.output_contains(&secret),
            full,
            "{mode}, full environment {full}: the secret's presence; the command's environment:\n{stdout}"
        );
        assert!(
            lines.contains(&format!("FLAMEWARDEN_TEST_KEPT={kept}").as_str())
                && lines.contains(&"SET=a=b"),
            "{mode}: the variables asked for are missing:\n{stdout}"
        );
        if !full {
            // Besides the two asked for: PATH, HOME, TMPDIR, the tests' tag (`--env`) and
            // `tag=TAG`, which `env` takes for an assignment.
            let allowed = [
                "PATH",
                "HOME",
                "TMPDIR",
                "FLAMEWARDEN_TEST_KEPT",
                "SET",
                flamewarden_tests::sandbox::TAG_ENV,
                "tag",
            ];
            for line in &lines {
                let name = line.split('=').next().unwrap_or_default();
                assert!(
                    allowed.contains(&name),
                    "{mode}: {line:?} was passed on:\n{stdout}"
                );
            }
            assert!(
                lines.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
                "{stdout}"
            );
            for name in ["HOME", "TMPDIR"] {
                let var = format!("{name}={}", workdir.display());
                assert!(
                    lines.contains(&var.as_str()),
                    "{mode}: not {var}:\n{stdout}"
                );
            }
        }
    }
}

/// A benign Python solution: reads numbers, sorts them on a second thread, touches 64 MiB,
/// prints the count, the sum and the median.
const PYTHON_SOLUTION: &str = "\
import os, sys, threading
# Python's CPU count: glibc reads /sys/devices/system/cpu/online, then /proc/stat (both quiet).
workers = max(1, min(4, os.cpu_count() or 1))
numbers = [int(line) for line in sys.stdin if line.strip()]
result = {}
worker = threading.Thread(target=lambda: result.update(sorted=sorted(numbers)))
worker.start()
worker.join()
block = bytearray(64 * 1024 * 1024)
block[::4096] = b'x' * len(block[::4096])
print('count', len(numbers))
print('sum', sum(numbers))
print('median', result['sorted'][len(numbers) // 2], block.count(b'x'), workers > 0)
";

#[test]
fn a_python_solution_is_ok_under_the_interpreted_policy() {
    if !require_bpf() {
        return;
    }
    let python = std::path::Path::new("/usr/bin/python3");
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("input.txt");
    let numbers: Vec<String> = (0..5000i64)
        .map(|i| ((i * 7919) % 10007 - 5000).to_string())
        .collect();
    fs::write(&input, numbers.join("\n") + "\n").expect("write the input");
    fs::write(dir.path().join("sol.py"), PYTHON_SOLUTION).expect("write the solution");
    let (status, expected) = run_bare(
        python,
        &["sol.py".into()],
        dir.path(),
        Some(&input),
        &new_tag(),
    );
    assert!(status.success(), "the solution fails bare: {status}");
    assert!(
        expected.starts_with(b"count 5000\n"),
        "bare output: {expected:?}"
    );
    let policy = workspace_root().join("policies/interpreted.toml");
    // As on a typical host: a UTF-8 locale and a home in flamewarden's environment, passed on
    // or not.
    let host = vec![
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    for args in [vec![], vec!["--env", "LANG"], vec!["--full-env"]] {
        let workdir = tempfile::tempdir().expect("temporary directory");
        fs::copy(dir.path().join("sol.py"), workdir.path().join("sol.py")).expect("copy");
        let run = Sandbox {
            workdir: Some(workdir.path().to_owned()),
            stdin: Some(input.clone()),
            args: args.iter().map(OsString::from).collect(),
            env: host.clone(),
            ..Sandbox::new(&policy)
        }
        .run(python, &["sol.py".into()]);
        let verdict = &run.verdict;
        assert!(
            verdict.violations().is_empty(),
            "{args:?}: violations in {verdict}"
        );
        verdict.assert_status("ok");
        assert!(
            run.stdout == expected,
            "{args:?}: sandboxed output differs from the bare run:\n--- sandbox\n{}\n--- bare\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&expected)
        );
    }
}

#[test]
fn a_run_left_by_a_killed_flamewarden_is_reaped_by_the_next() {
    if !require_bpf() {
        return;
    }
    let tag = new_tag();
    let mut first = BackgroundProcess::spawn(
        Command::new(flamewarden_bin())
            .args(["--log", "error", "sandbox", "run", "--policy"])
            .arg(judge_policy())
            .arg("--")
            .arg(escape_program("wall_sleep"))
            .arg("30")
            .arg(format!("tag={tag}"))
            .env(flamewarden_tests::sandbox::TAG_ENV, &tag)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "sandbox run",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    // The command itself (flamewarden carries the tag too, in its arguments).
    let first_pid = first.pid() as i32;
    let command_running = || {
        tagged_processes(&tag)
            .iter()
            .any(|(pid, _)| *pid != first_pid)
    };
    while !command_running() {
        assert!(Instant::now() < deadline, "the run never started");
        thread::sleep(Duration::from_millis(20));
    }
    let run_dir = format!(
        "/sys/fs/cgroup/unified/flamewarden-sandboxes/run-{}-0",
        first.pid()
    );
    // Its fresh work directory (a tmpfs under judge.toml's `limits.disk`).
    let workdir_prefix = format!("flamewarden-run-{}-", first.pid());
    let workdirs = || {
        fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&workdir_prefix))
            .count()
    };
    assert_eq!(workdirs(), 1, "the run's work directory");
    first.signal(libc::SIGKILL);
    first.wait_or_kill(Duration::from_secs(5));
    assert!(
        command_running(),
        "the command died with flamewarden: nothing to reap"
    );
    let next = Sandbox::new(&judge_policy()).run(&escape_program("benign"), &[OsString::from("0")]);
    assert_eq!(next.verdict.status(), "ok", "{}", next.verdict);
    assert!(
        tagged_processes(&tag).is_empty(),
        "the orphaned run's command is still alive"
    );
    assert!(
        !std::path::Path::new(&run_dir).exists(),
        "{run_dir} was not removed"
    );
    assert_eq!(
        workdirs(),
        0,
        "the dead run's work directory was not removed"
    );
}

/// Runs `/bin/true` through one `sandbox batch`.
fn batch_of_one() {
    let output = batch(&[], &[], "{\"command\": [\"/bin/true\"]}\n");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("\"status\":\"ok\""),
        "{}: {text}",
        output.status
    );
}

#[test]
fn a_batch_detaches_the_syscall_layer_unless_a_run_still_needs_it() {
    if !require_bpf() {
        return;
    }
    let link = sys_enter_link_pin();
    batch_of_one();
    assert!(
        !link.exists(),
        "{} is still pinned after the batch ended with no run left",
        link.display()
    );
    // A run of 2 s; meanwhile a batch starts and ends: the run keeps the hooks.
    let long = LongRun::start(2);
    batch_of_one();
    assert!(long.running(), "the long run ended too early");
    assert!(
        link.exists(),
        "a batch that ended detached the syscall layer from a run still running"
    );
    long.finish();
    batch_of_one();
    assert!(
        !link.exists(),
        "{} is still pinned after the batch ended with no run left",
        link.display()
    );
    // A run of 2 s; meanwhile a batch starts and ends: the run keeps the hooks.
    let long = Sandbox::new(&judge_policy());
    let sleeper = escape_program("wall_sleep");
    let long = thread::spawn(move || long.run(&sleeper, &["2".into()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !link.exists() {
        assert!(
            Instant::now() < deadline && !long.is_finished(),
            "{} never appeared during a run",
            link.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
    batch_of_one();
    assert!(!long.is_finished(), "the long run ended too early");
    assert!(
        link.exists(),
        "a batch that ended detached the syscall layer from a run still running"
    );
    let long = long.join().expect("the long run");
    assert!(
        long.stdout.starts_with(b"escaped: slept 2"),
        "{}",
        long.verdict
    );
    batch_of_one();
    assert!(
        !link.exists(),
        "{} is still pinned after the last batch ended",
        link.display()
    );
}

#[test]
fn guard_release_detaches_what_a_run_left_attached() {
    if !require_bpf() {
        return;
    }
    Sandbox::new(&judge_policy())
        .run(std::path::Path::new("/bin/true"), &[])
        .verdict
        .assert_status("ok");
    let link = sys_enter_link_pin();
    assert!(
        link.exists(),
        "a run did not leave the syscall layer attached"
    );
    let release = Command::new(flamewarden_bin())
        .args(["guard", "release"])
        .output()
        .expect("run guard release");
    let text = String::from_utf8_lossy(&release.stdout);
    assert!(
        release.status.success() && text.contains("syscall layer detached"),
        "{}: {text}",
        release.status
    );
    assert!(!link.exists(), "{} is still pinned", link.display());
}
