//! `flamewarden daemon` and the sandboxes another judge makes: a new matching cgroup is
//! guarded within the discovery budget (inotify), its violations stream live as server-sent
//! events, its processes are counted, and when it is removed the daemon derives its verdict.
//! The daemon also detaches the guard's syscall layer once flamewarden's own runs are idle.

mod daemon_support;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use daemon_support::{Daemon, GuardPins, judge_policy, sample, wait_for};
use flamewarden_tests::{
    require_bpf, require_cgroup,
    sandbox::{LongRun, Sandbox, escape_program, sys_enter_link_pin},
};

/// The discovery budget of issue 7: a new sandbox is enforced this soon after its creation.
const BUDGET: Duration = Duration::from_millis(100);

/// The lines of `GET /api/v1/events?stream=1`, read on a thread.
fn event_stream(port: u16) -> mpsc::Receiver<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request the stream");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first `data:` line of an `event: KIND` that contains `needle`, within `timeout`.
fn next_event(lines: &mpsc::Receiver<String>, kind: &str, needle: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_kind = false;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(k) = line.strip_prefix("event: ") {
            in_kind = k == kind;
        } else if let Some(data) = line.strip_prefix("data: ")
            && in_kind
            && data.contains(needle)
        {
            return Some(data.to_owned());
        }
    }
    None
}

#[test]
fn a_new_sandbox_is_guarded_at_once_streamed_counted_and_judged_when_removed() {
    if !require_bpf() {
        return;
    }
    let Some(parent) = require_cgroup("daemon-sandboxes") else {
        return;
    };
    let _pins = GuardPins {
        cgroup: parent.path().to_path_buf(),
    };
    let dir = tempfile::tempdir().unwrap();
    // A slow poll: only inotify can meet the budget.
    let config = format!(
        "discovery_interval_ms = 1000\n[[sandboxes]]\nglob = \"{}/sb-*\"\npolicy = \"{}\"\n",
        parent.path().display(),
        judge_policy().display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    let stream = event_stream(daemon.port);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = Arc::clone(&stop);
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };

    // Connect in a loop from the moment the cgroup exists until a connect is refused.
    let created = Instant::now();
    let sandbox = parent.child("sb-1").unwrap();
    let mut attempts = sandbox.spawn(
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "n=0; while exec 3<>/dev/tcp/127.0.0.1/{port}; do exec 3>&-; n=$((n+1)); done; \
                 echo $n"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "connect loop",
    );
    let status = attempts.wait_or_kill(Duration::from_secs(10));
    let enforced_after = created.elapsed();
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
    assert!(status.success(), "connect loop: {status}");
    eprintln!("create -> first denied connect: {enforced_after:?}");
    assert!(
        enforced_after <= BUDGET,
        "enforced {enforced_after:?} after creation (budget {BUDGET:?})\n{}",
        daemon.log_text()
    );

    // The violation arrives on the stream, live.
    let path = sandbox.path().display().to_string();
    let violation = next_event(&stream, "violation", "network.deny_all");
    let violation = violation.expect("no violation on the event stream");
    assert!(violation.contains(&path), "{violation}");

    // Its processes: the connect loop and `sh -c 'exit 3'`, one exec and one exit each.
    let mut last = sandbox.spawn(Command::new("sh").args(["-c", "exit 3"]), "exit 3");
    assert_eq!(last.wait_or_kill(Duration::from_secs(10)).code(), Some(3));
    let labels = format!("cgroup=\"{path}\"");
    let counted = wait_for(Duration::from_secs(5), || {
        let text = daemon.metrics();
        let execs = sample(&text, "flamewarden_process_execs_total", &labels)?;
        let exits = sample(&text, "flamewarden_process_exits_total", &labels)?;
        (exits >= 2.0).then_some((execs, exits))
    });
    assert_eq!(counted, Some((2.0, 2.0)), "{}", daemon.metrics());

    // Removed: the daemon derives the verdict (violations win over the exit code).
    drop(sandbox);
    let verdict = next_event(&stream, "verdict", &path).expect("no verdict on the stream");
    assert!(
        verdict.contains("\"status\":\"security_violation\""),
        "{verdict}"
    );
    assert!(verdict.contains("\"exit_code\":3"), "{verdict}");
    assert_eq!(
        sample(
            &daemon.metrics(),
            "flamewarden_sandbox_verdicts_total",
            "status=\"security_violation\",source=\"discovered\""
        ),
        Some(1.0)
    );
    let listed = daemon.get("/api/v1/sandboxes").text();
    assert!(listed.contains(&path), "{listed}");
}

/// The runs of `flamewarden sandbox run` guard themselves (their own policy entry, their own
/// verdict). A daemon whose glob covers their `flamewarden-sandboxes` parent lists them but
/// must not write over their policy, derive a second verdict when their cgroup goes, or fight
/// them over the parent's attachment: the first runs after a detach attach it at the same time
/// as the daemon discovers them, and every one of them is judged.
#[test]
fn runs_of_sandbox_run_are_observed_counted_once_and_attach_in_turn() {
    if !require_bpf() {
        return;
    }
    let own = flamewarden_tests::cgroup::own_cgroup_dir().expect("own cgroup");
    let parent = own.join("flamewarden-sandboxes");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sandboxes]]\nglob = \"{}/*\"\npolicy = \"{}\"\n",
        parent.display(),
        judge_policy().display()
    );
    // Nothing attached on the parent: the runs below and the daemon attach it together.
    if parent.is_dir() {
        let detach = Command::new(flamewarden_tests::flamewarden_bin())
            .args(["guard", "detach", "--cgroup"])
            .arg(&parent)
            .output()
            .expect("run guard detach");
        assert!(detach.status.success(), "guard detach: {detach:?}");
    }
    let daemon = Daemon::start(dir.path(), &config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (connector, benign) = (escape_program("net_tcp"), escape_program("benign"));
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let (connector, benign, port) = (connector.clone(), benign.clone(), port.clone());
            thread::spawn(move || {
                let sandbox = Sandbox::new(&judge_policy());
                if i % 2 == 0 {
                    sandbox.run(&connector, &[port.into()])
                } else {
                    sandbox.run(&benign, &["0".into()])
                }
            })
        })
        .collect();
    let verdicts: Vec<_> = runs
        .into_iter()
        .map(|r| r.join().expect("a run panicked").verdict)
        .collect();
    assert!(listener.accept().is_err(), "a connect got through");
    let mut rules = std::collections::BTreeMap::<(String, String), f64>::new();
    for (i, verdict) in verdicts.iter().enumerate() {
        if i % 2 == 0 {
            verdict.assert_status("security_violation");
            for v in verdict.violations() {
                let key = (
                    v["rule"].as_str().unwrap().to_owned(),
                    v["action"].as_str().unwrap().to_owned(),
                );
                *rules.entry(key).or_default() += 1.0;
            }
        } else {
            verdict.assert_status("ok");
        }
    }
    assert!(!rules.is_empty(), "no violation listed: {verdicts:?}");

    // Each verdict counted once, from the run; each violation counted once, by its rule.
    let counted = wait_for(Duration::from_secs(5), || {
        let text = daemon.metrics();
        let run = |status: &str| {
            sample(
                &text,
                "flamewarden_sandbox_verdicts_total",
                &format!("status=\"{status}\",source=\"run\""),
            )
        };
        (run("security_violation")? == 2.0 && run("ok")? == 2.0).then_some(text)
    });
    let text = counted.unwrap_or_else(|| {
        panic!(
            "the daemon did not count 2 + 2 run verdicts:\n{}\n{}",
            daemon.metrics(),
            daemon.log_text()
        )
    });
    // Discovery runs every 50 ms: give it time to see the cgroups gone.
    thread::sleep(Duration::from_millis(500));
    let text = [text, daemon.metrics()].join("\n");
    assert!(
        !text.contains("source=\"discovered\""),
        "a run's verdict was derived again by the daemon:\n{text}"
    );
    for ((rule, action), n) in &rules {
        let labels = format!("rule=\"{rule}\",action=\"{action}\"");
        assert_eq!(
            sample(&text, "flamewarden_guard_violations_total", &labels),
            Some(*n),
            "violations {labels}:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "flamewarden_guard_attach_errors_total", ""),
        Some(0.0),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(
        !log.contains("guard failed") && !log.contains("removing the policy"),
        "{log}"
    );
}

#[test]
fn the_daemon_detaches_the_syscall_layer_once_runs_are_idle() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = Daemon::start(dir.path(), "guard_idle_detach_seconds = 1\n");
    let link = sys_enter_link_pin();
    let gone = |what: &str| {
        assert!(
            wait_for(Duration::from_secs(10), || (!link.exists()).then_some(())).is_some(),
            "{} still pinned {what}; daemon log:\n{}",
            link.display(),
            daemon.log_text()
        );
    };
    gone("10 s after the daemon started");
    // A run attaches the layer and leaves it for the next run; the daemon detaches it.
    let true_ = std::path::Path::new("/bin/true");
    Sandbox::new(&judge_policy())
        .run(true_, &[])
        .verdict
        .assert_status("ok");
    assert!(
        link.exists(),
        "a run did not leave the syscall layer attached"
    );
    gone("10 s after the last run");
    // Not while a run is registered: a 4 s run keeps it for 2.5 s of idle checks.
    let long = LongRun::start(4);
    thread::sleep(Duration::from_millis(2500));
    assert!(
        link.exists() && long.running(),
        "the daemon detached the syscall layer of a running run"
    );
    long.finish();
    gone("10 s after the long run");
    assert!(
        daemon
            .log_text()
            .contains("detached the guard's syscall layer"),
        "{}",
        daemon.log_text()
    );
}
