//! Run cgroups against the real kernel: creation, limits, usage, kill and removal. These need
//! root and skip themselves otherwise. Every child is bounded in count (the task limit, loop
//! bounds) and time, and the run's drop kills whatever is left if an assertion fails.

use std::{
    ffi::CString,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::process::CommandExt as _},
    path::Path,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use super::{CgroupError, CgroupLimits, Controller, RunCgroup, sandboxes_parent_v2_dir};

const MIB: u64 = 1024 * 1024;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("skipping test - not root");
    }
    root
}

/// A name no other test (or test process) uses.
fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test-{}-{n}-{label}", std::process::id())
}

/// Starts `command` inside the run: the child moves itself in before `exec`.
fn spawn_in(run: &RunCgroup, command: &mut Command) -> Child {
    let procs = run.open_procs().unwrap();
    let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child before exec and only calls write(2), which
    // is async-signal-safe; the fds stay open until spawn returns because `procs` lives.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(procs);
    child
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.args(["-c", script]);
    command
}

/// Waits for `child` at most `timeout`; panics (the run's drop then kills it) after that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "child {} still runs after {timeout:?}",
            child.id()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `condition` for at most `timeout`; whether it became true.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn rejects_names_that_are_not_one_path_component() {
    for name in ["", ".", "..", "a/b", "/abs", "nul\0"] {
        let error = RunCgroup::create(name, &CgroupLimits::default()).unwrap_err();
        assert!(
            matches!(error, CgroupError::InvalidName(_)),
            "{name:?}: {error}"
        );
    }
}

#[test]
fn creates_the_run_in_every_hierarchy_with_its_limits_and_removes_it() {
    if !is_root() {
        return;
    }
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: Some(64 * MIB),
    };
    let run = RunCgroup::create(&unique_name("limits"), &limits).unwrap();
    let dirs = run.dirs().to_vec();
    assert_eq!(run.v2_path(), dirs[0]);
    assert_eq!(
        run.v2_path().parent().unwrap(),
        sandboxes_parent_v2_dir().unwrap()
    );
    assert_eq!(run.id(), std::fs::metadata(run.v2_path()).unwrap().ino());
    for dir in &dirs {
        assert!(dir.join("cgroup.procs").exists(), "{}", dir.display());
        assert!(
            dir.parent().unwrap().ends_with(super::PARENT),
            "{}",
            dir.display()
        );
    }

    let pids = run.controller_dir(Controller::Pids).unwrap();
    assert_eq!(read_trimmed(&pids.join("pids.max")), "16");
    let memory = run.controller_dir(Controller::Memory).unwrap();
    let limit_file = if memory.join("memory.max").exists() {
        memory.join("memory.max")
    } else {
        memory.join("memory.limit_in_bytes")
    };
    assert_eq!(read_trimmed(&limit_file), (64 * MIB).to_string());
    for (swap_file, expected) in [
        (
            "memory.memsw.limit_in_bytes",
            (64 * MIB + super::MEMSW_SLACK).to_string(),
        ),
        ("memory.swap.max", "0".to_owned()),
    ] {
        if memory.join(swap_file).exists() {
            assert_eq!(
                read_trimmed(&memory.join(swap_file)),
                expected,
                "{swap_file}"
            );
        }
    }
    if let Some(oom_control) = Some(memory.join("memory.oom_control")).filter(|p| p.exists()) {
        assert!(read_trimmed(&oom_control).starts_with("oom_kill_disable 0"));
    }

    run.remove().unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn moves_a_process_into_every_hierarchy() {
    if !is_root() {
        return;
    }
    let run = RunCgroup::create(&unique_name("add"), &CgroupLimits::default()).unwrap();
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    run.add_process(child.id()).unwrap();
    for dir in run.dirs() {
        let procs = read_trimmed(&dir.join("cgroup.procs"));
        assert_eq!(procs, child.id().to_string(), "{}", dir.display());
    }
    assert!(!run.is_empty());
    run.kill_all();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&wait_bounded(
            &mut child,
            Duration::from_secs(5)
        )),
        Some(libc::SIGKILL)
    );
    assert!(eventually(Duration::from_secs(2), || run.is_empty()));
    run.remove().unwrap();
}

#[test]
fn kills_every_process_of_the_run() {
    if !is_root() {
        return;
    }
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: None,
    };
    let run = RunCgroup::create(&unique_name("kill"), &limits).unwrap();
    let mut child = spawn_in(&run, &mut sh("sleep 30 & sleep 30 & sleep 30 & wait"));
    let v2 = run.v2_path().to_owned();
    assert!(eventually(Duration::from_secs(5), || super::files::procs(
        &v2
    )
    .len()
        == 4));
    run.kill_all();
    wait_bounded(&mut child, Duration::from_secs(5));
    assert!(eventually(Duration::from_secs(2), || run.is_empty()));
    let dirs = run.dirs().to_vec();
    run.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn the_signal_fallback_kills_every_listed_process() {
    if !is_root() {
        return;
    }
    // What kill_all does on kernels without cgroup.kill (before 5.14).
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: None,
    };
    let run = RunCgroup::create(&unique_name("sigkill"), &limits).unwrap();
    let mut child = spawn_in(&run, &mut sh("sleep 30 & sleep 30 & wait"));
    let v2 = run.v2_path().to_owned();
    assert!(eventually(Duration::from_secs(5), || super::files::procs(
        &v2
    )
    .len()
        == 3));
    assert!(eventually(Duration::from_secs(2), || !run.signal_listed()));
    wait_bounded(&mut child, Duration::from_secs(5));
    assert!(eventually(Duration::from_secs(2), || run.is_empty()));
    run.remove().unwrap();
}

#[test]
fn removing_a_run_with_live_processes_kills_them_first() {
    if !is_root() {
        return;
    }
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: None,
    };
    let run = RunCgroup::create(&unique_name("remove-live"), &limits).unwrap();
    let mut child = spawn_in(&run, &mut sh("sleep 30 & sleep 30; wait"));
    let dirs = run.dirs().to_vec();
    run.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
    wait_bounded(&mut child, Duration::from_secs(5));
}

#[test]
fn dropping_a_run_removes_it() {
    if !is_root() {
        return;
    }
    let run = RunCgroup::create(&unique_name("drop"), &CgroupLimits::default()).unwrap();
    let mut child = spawn_in(&run, Command::new("/bin/sleep").arg("30"));
    let dirs = run.dirs().to_vec();
    drop(run);
    assert!(dirs.iter().all(|d| !d.exists()));
    wait_bounded(&mut child, Duration::from_secs(5));
}

#[test]
fn a_memory_hog_is_oom_killed_at_the_memory_limit() {
    if !is_root() {
        return;
    }
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: Some(32 * MIB),
    };
    let run = RunCgroup::create(&unique_name("oom"), &limits).unwrap();
    // dd fills a 256 MiB buffer from /dev/zero: far past the limit, and no swap is allowed.
    let mut child = spawn_in(
        &run,
        Command::new("/bin/dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"])
            .stderr(std::process::Stdio::null()),
    );
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let usage = run.usage();
    assert!(usage.oom_kills >= 1, "{usage:?}");
    assert!(usage.memory_limit_hits >= 1, "{usage:?}");
    let peak = usage.peak_memory_bytes.unwrap();
    assert!(peak > 16 * MIB && peak <= 33 * MIB, "{usage:?}");
    run.remove().unwrap();
}

#[test]
fn a_fork_loop_hits_the_task_limit() {
    if !is_root() {
        return;
    }
    let limits = CgroupLimits {
        tasks: Some(16),
        memory_bytes: Some(256 * MIB),
    };
    let run = RunCgroup::create(&unique_name("forks"), &limits).unwrap();
    let mut child = spawn_in(
        &run,
        sh("i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait")
            .stderr(std::process::Stdio::null()),
    );
    assert!(
        eventually(Duration::from_secs(5), || run.usage().task_limit_hits >= 1),
        "{:?}",
        run.usage()
    );
    assert!(super::files::procs(run.controller_dir(Controller::Pids).unwrap()).len() <= 16);
    let dirs = run.dirs().to_vec();
    run.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
    wait_bounded(&mut child, Duration::from_secs(5));
}

#[test]
fn counts_the_cpu_time_of_a_busy_child() {
    if !is_root() {
        return;
    }
    let run = RunCgroup::create(&unique_name("cpu"), &CgroupLimits::default()).unwrap();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped below with wait4, for its rusage"
    )]
    let child = spawn_in(
        &run,
        &mut sh("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"),
    );
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointers are valid for the call; the child is ours and not yet reaped.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    assert_eq!(waited, pid);
    let tv_ns = |tv: libc::timeval| {
        u64::try_from(tv.tv_sec).unwrap() * 1_000_000_000
            + u64::try_from(tv.tv_usec).unwrap() * 1000
    };
    let child_ns = tv_ns(rusage.ru_utime) + tv_ns(rusage.ru_stime);
    let cgroup_ns = run.usage().cpu_time_ns.unwrap();
    println!("child rusage {child_ns} ns, cgroup {cgroup_ns} ns");
    assert!(child_ns > 50_000_000, "the child barely ran: {child_ns} ns");
    let difference = cgroup_ns.abs_diff(child_ns);
    assert!(
        difference < child_ns / 5 + 10_000_000,
        "cgroup {cgroup_ns} ns vs rusage {child_ns} ns"
    );
    run.remove().unwrap();
}

/// The per-run cost: create + add_process (a stopped child of /bin/true) + wait + remove.
/// `cargo test --release -p profiler-user --lib sandbox::cgroup::cgroup_tests::per_run_cost -- --ignored --nocapture`
#[test]
#[ignore = "timing, run by hand"]
fn per_run_cost() {
    if !is_root() {
        return;
    }
    let path = CString::new("/bin/true").unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let limits = CgroupLimits {
        tasks: Some(64),
        memory_bytes: Some(256 * MIB),
    };
    // Warm up the once-per-process setup.
    RunCgroup::create(&unique_name("warm"), &limits)
        .unwrap()
        .remove()
        .unwrap();

    const RUNS: usize = 300;
    let mut phases: [Vec<Duration>; 6] = Default::default();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let run = RunCgroup::create(&unique_name("time"), &limits).unwrap();
        let t1 = Instant::now();
        // SAFETY: the child only calls raise, execv and _exit (async-signal-safe) on memory
        // prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above; argv is NULL-terminated.
            unsafe {
                libc::raise(libc::SIGSTOP);
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let stopped = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        assert_eq!(stopped, pid);
        let t2 = Instant::now();
        run.add_process(pid.unsigned_abs()).unwrap();
        let t3 = Instant::now();
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let t4 = Instant::now();
        let _usage = run.usage();
        let t5 = Instant::now();
        run.remove().unwrap();
        let t6 = Instant::now();
        for (phase, d) in phases.iter_mut().zip([
            t1 - t0,
            t3 - t2,
            t5 - t4,
            t6 - t5,
            (t1 - t0) + (t3 - t2) + (t6 - t4),
            t6 - t0,
        ]) {
            phase.push(d);
        }
    }
    for (name, mut times) in [
        "create",
        "add_process",
        "usage",
        "remove",
        "cgroup work",
        "total incl. fork/exec/wait",
    ]
    .into_iter()
    .zip(phases)
    {
        times.sort();
        println!(
            "{name:>28}: median {:>6} µs, p90 {:>6} µs, max {:>6} µs",
            times[RUNS / 2].as_micros(),
            times[RUNS * 9 / 10].as_micros(),
            times[RUNS - 1].as_micros()
        );
    }
}
