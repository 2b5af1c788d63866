//! End-to-end tests of `flamewarden daemon`: metrics a real Prometheus scrapes, alert rules,
//! on-demand profiles, the web page, sandbox discovery, restart safety and reload.

mod daemon_support;
#[expect(dead_code, reason = "only the sys_calls workload is used here")]
mod sys_support;

use std::{
    fs,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use daemon_support::{
    Daemon, GuardPins, Prometheus, connect_is_denied, exposed_names, http_get_with, judge_policy,
    output_dir, pin_dir, pinned_files, sample, wait_for,
};
use flamewarden_tests::{
    Workload, require_bpf, require_cgroup, require_tool, sandbox::Sandbox, workspace_root,
};
use sys_support::SysWorkload;

const GETPPID_CALLS: u64 = 12_345;

#[test]
fn metrics_count_a_workloads_syscalls_and_prometheus_scrapes_them() {
    if !require_bpf() || !require_tool("prometheus") || !require_tool("promtool") {
        return;
    }
    let Some(cgroup) = require_cgroup("daemon-metrics") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let health = daemon.get("/healthz");
    assert_eq!((health.status, health.text().trim()), (200, "ok"));

    let mut workload = cgroup.spawn(
        Command::new(SysWorkload::Calls.path())
            .args(["getppid", &GETPPID_CALLS.to_string()])
            .stdout(Stdio::null()),
        "sys_calls getppid",
    );
    assert!(workload.wait_or_kill(Duration::from_secs(30)).success());
    let labels = format!("cgroup=\"{}\",syscall=\"getppid\"", cgroup.path().display());
    let counted = wait_for(Duration::from_secs(10), || {
        sample(&daemon.metrics(), "flamewarden_syscalls_total", &labels)
            .filter(|&n| n >= GETPPID_CALLS as f64)
    });
    assert_eq!(counted, Some(GETPPID_CALLS as f64), "{}", daemon.metrics());

    // promtool accepts the exposition.
    let metrics_file = dir.path().join("metrics.txt");
    fs::write(&metrics_file, daemon.metrics()).unwrap();
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "promtool check metrics < {}",
            metrics_file.display()
        ))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A real Prometheus scrapes the daemon; PromQL returns the workload's count.
    let prometheus = Prometheus::start(daemon.port);
    let promql = format!(
        "flamewarden_syscalls_total{{cgroup=\"{}\",syscall=\"getppid\"}}",
        cgroup.path().display()
    );
    let queried = wait_for(Duration::from_secs(30), || prometheus.query(&promql));
    assert_eq!(queried, Some(GETPPID_CALLS as f64), "PromQL {promql}");
}

#[test]
fn alert_rules_and_dashboards_are_valid_and_use_only_exposed_metrics() {
    if !require_bpf() || !require_tool("promtool") {
        return;
    }
    let dashboards = workspace_root().join("dashboards");
    let files = |suffix: &str| {
        let mut found: Vec<std::path::PathBuf> = fs::read_dir(&dashboards)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort();
        found
    };
    let rules = files(".rules.yml");
    let rule_tests = files(".rules.test.yml");
    let boards = files(".json");
    assert!(!rules.is_empty() && !rule_tests.is_empty());
    assert!(
        boards.len() >= 4,
        "node, sandboxes, API latency and self: {boards:?}"
    );
    let promtool = |args: &[&str], file: &std::path::Path| {
        let out = Command::new("promtool")
            .args(args)
            .arg(file)
            .current_dir(&dashboards)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for file in &rules {
        promtool(&["check", "rules"], file);
    }
    // Each alert fires on the series it is about and stays quiet on a healthy node.
    for file in &rule_tests {
        promtool(&["test", "rules"], file);
    }
    let mut used = Vec::new();
    for file in rules.iter().chain(&rule_tests) {
        used.extend(metric_names(&fs::read_to_string(file).unwrap()));
    }
    // Every panel query is valid PromQL: promtool checks them as recording rules, with
    // Grafana's variables replaced by values.
    let dir = tempfile::tempdir().unwrap();
    let mut board_rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut queries = 0;
    for file in &boards {
        let text = fs::read_to_string(file).unwrap();
        let board: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        let panels = board["panels"].as_array().cloned().unwrap_or_default();
        assert!(!panels.is_empty(), "{} has no panels", file.display());
        for target in panels
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        {
            let expr = target["expr"].as_str().expect("a target without expr");
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$cgroup", ".*");
            queries += 1;
            board_rules.push_str(&format!(
                "      - record: dashboard:query{queries}\n        expr: {}\n",
                serde_json::Value::String(expr)
            ));
        }
        used.extend(metric_names(&text));
    }
    let board_rules_file = dir.path().join("dashboards.rules.yml");
    fs::write(&board_rules_file, board_rules).unwrap();
    promtool(&["check", "rules"], &board_rules_file);
    used.sort();
    used.dedup();
    assert!(!used.is_empty());
    let daemon = Daemon::start(dir.path(), "");
    let exposed = exposed_names(&daemon.metrics());
    for name in used {
        assert!(
            exposed.contains(&name),
            "`{name}` is used by a rule or dashboard but not in /metrics"
        );
    }
}

/// Every `flamewarden_*` identifier in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("flamewarden_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn always_on_window_and_on_demand_pprof_show_the_hot_function() {
    if !require_bpf() || !require_tool("go") || !require_tool("chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let mut workload = flamewarden_tests::BackgroundProcess::spawn(
        Command::new(Workload::CpuMix.path())
            .arg("1000000")
            .stdout(Stdio::null()),
        "cpu_mix",
    );
    // Nothing asks for a profile: the always-on sampler (19 Hz) sees it anyway. Meanwhile a
    // sandbox run reports its verdict to the daemon.
    let started = Instant::now();
    let run = Sandbox::new(&judge_policy()).run(&Workload::CpuMix.path(), &["1".into()]);
    let status = run.verdict.status().to_owned();
    let reported = wait_for(Duration::from_secs(5), || {
        let list = daemon.get("/api/v1/sandboxes").text();
        list.contains("judge.toml").then_some(list)
    });
    assert!(
        reported.is_some(),
        "verdict not reported:\n{}",
        daemon.log_text()
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));

    // The web page shows it; headless Chromium renders it and takes a screenshot.
    let url = format!("http://127.0.0.1:{}/", daemon.port);
    let chromium = |extra: &str| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1400,2000",
                extra,
                &url,
            ])
            .env("HOME", dir.path())
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    let dom = String::from_utf8_lossy(&chromium("--dump-dom").stdout).into_owned();
    let hot_table = dom
        .split("<table id=\"hot\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_default();
    assert!(hot_table.contains("hot_function"), "DOM:\n{dom}");
    assert!(dom.contains("Top syscalls"), "DOM:\n{dom}");
    assert!(dom.contains("CPU by cgroup"), "DOM:\n{dom}");
    assert!(!dom.contains("Latest on-demand profile"), "DOM:\n{dom}");
    let verdicts = dom
        .split("<table id=\"recent-verdicts\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_default();
    assert!(
        verdicts.contains("judge.toml") && verdicts.contains(&format!("<td>{status}</td>")),
        "verdict {status} not in the DOM:\n{dom}"
    );
    let screenshot = output_dir().join("daemon-overview.png");
    let _ = fs::remove_file(&screenshot);
    chromium(&format!("--screenshot={}", screenshot.display()));
    assert!(
        fs::metadata(&screenshot).is_ok_and(|m| m.len() > 0),
        "no screenshot at {}",
        screenshot.display()
    );

    // The window as pprof, at once; then a live recording at 99 Hz.
    for (name, query) in [
        ("window", "source=window&seconds=60"),
        ("live", "seconds=2"),
    ] {
        let response = daemon.get(&format!(
            "/api/v1/profile?{query}&pid={}&format=pprof",
            workload.pid()
        ));
        assert_eq!(response.status, 200, "{name}: {}", response.text());
        let first = pprof_top_row(dir.path(), &response.body);
        assert!(
            first.contains("hot_function"),
            "{name}: go tool pprof -top:\n{first}"
        );
    }
    workload.kill();
    let metrics = daemon.metrics();
    let samples: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("flamewarden_cpu_samples_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(samples >= 19.0, "{metrics}");
}

/// The first row of `go tool pprof -top` of a gzipped profile, or the whole output when
/// there is none.
fn pprof_top_row(dir: &std::path::Path, profile: &[u8]) -> String {
    let pprof = dir.join("profile.pb.gz");
    fs::write(&pprof, profile).unwrap();
    let top = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&pprof)
        .env("HOME", dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    assert!(
        top.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    // The first row after the header (`flat flat% sum% cum cum%`).
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .map_or(text.clone(), str::to_owned)
}

#[test]
fn discovered_sandbox_is_denied_reported_and_stays_denied_across_kill_9() {
    if !require_bpf() {
        return;
    }
    let Some(parent) = require_cgroup("daemon-discovery") else {
        return;
    };
    let _pins = GuardPins {
        cgroup: parent.path().to_path_buf(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sandboxes]]\nglob = \"{}/sb-*\"\npolicy = \"{}\"\n",
        parent.path().display(),
        judge_policy().display()
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    let sandbox = parent.child("sb-1").unwrap();
    let created = Instant::now();
    let listed = wait_for(Duration::from_secs(1), || {
        let list = daemon.get("/api/v1/sandboxes").text();
        list.contains(&sandbox.path().display().to_string())
            .then(|| created.elapsed())
    });
    assert!(
        listed.is_some(),
        "sandbox not guarded within 1 s:\n{}",
        daemon.log_text()
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(
        connect_is_denied(&sandbox, &listener),
        "connect was not denied"
    );
    let events = wait_for(Duration::from_secs(5), || {
        let text = daemon.get("/api/v1/events").text();
        text.contains("network.deny_all").then_some(text)
    });
    let events = events.expect("violation not in /api/v1/events");
    assert!(
        events.contains(&sandbox.path().display().to_string()),
        "{events}"
    );

    // kill -9: the pinned guard keeps denying.
    let pins = pin_dir(parent.id());
    let pinned_before = pinned_files(&pins);
    assert!(
        !pinned_before.is_empty(),
        "nothing pinned in {}",
        pins.display()
    );
    assert!(
        !pin_dir(sandbox.id()).exists(),
        "the sandbox itself got its own attachment"
    );
    daemon.process.kill();
    assert!(
        connect_is_denied(&sandbox, &listener),
        "connect allowed while the daemon is down"
    );

    // The restarted daemon adopts the pinned guard instead of attaching again.
    let restarted = Daemon::start_with(dir.path(), &daemon.config, daemon.port);
    let adopted = wait_for(Duration::from_secs(5), || {
        let list = restarted.get("/api/v1/sandboxes").text();
        (list.contains(&sandbox.path().display().to_string()) && list.contains("adopted"))
            .then_some(list)
    });
    assert!(adopted.is_some(), "{}", restarted.log_text());
    assert_eq!(
        pinned_files(&pins),
        pinned_before,
        "the guard was attached again"
    );
    assert!(connect_is_denied(&sandbox, &listener));
    let violations = sample(
        &restarted.metrics(),
        "flamewarden_guard_violations_total",
        "rule=\"network.deny_all\",action=\"denied\"",
    );
    assert!(
        violations.is_some_and(|n| n >= 1.0),
        "{}",
        restarted.metrics()
    );
    drop(restarted);

    // --cleanup removes what the daemon pinned.
    let cleanup = Command::new(flamewarden_tests::flamewarden_bin())
        .args(["daemon", "--cleanup"])
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{cleanup:?}");
    assert!(
        !pins.exists(),
        "{} still pinned after --cleanup",
        pins.display()
    );
    drop(sandbox);
}

#[test]
fn bearer_token_guards_every_endpoint_but_health_checks() {
    let refused = Command::new(flamewarden_tests::flamewarden_bin())
        .args(["daemon", "--listen", "0.0.0.0:9464", "--check"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("bearer_token"), "{stderr}");
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "bearer_token = \"s3cret\"\n");
    assert_eq!(daemon.get("/healthz").status, 200);
    assert_eq!(daemon.get("/metrics").status, 401);
    let wrong = http_get_with(daemon.port, "/metrics", "Authorization: Bearer nope\r\n").unwrap();
    assert_eq!(wrong.status, 401);
    let right = http_get_with(daemon.port, "/metrics", "Authorization: Bearer s3cret\r\n").unwrap();
    assert_eq!(right.status, 200);
    assert!(right.text().contains("flamewarden_syscalls_total"));
}

#[test]
fn bad_config_on_sighup_keeps_the_old_one_and_counts_the_error() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "top_cgroups = 5\n");
    let before = sample(
        &daemon.metrics(),
        "flamewarden_config_reload_errors_total",
        "",
    );
    assert_eq!(before, Some(0.0));
    // A good change to the file is picked up without a signal.
    let good = format!("listen = \"127.0.0.1:{}\"\ntop_cgroups = 3\n", daemon.port);
    fs::write(&daemon.config, good).unwrap();
    let reloaded = wait_for(Duration::from_secs(10), || {
        sample(&daemon.metrics(), "flamewarden_config_reloads_total", "").filter(|&n| n >= 1.0)
    });
    assert!(reloaded.is_some(), "{}", daemon.log_text());
    fs::write(&daemon.config, "top_cgroups = \"many\"\nunknown_key = 1\n").unwrap();
    daemon.process.signal(libc::SIGHUP);
    let errors = wait_for(Duration::from_secs(5), || {
        sample(
            &daemon.metrics(),
            "flamewarden_config_reload_errors_total",
            "",
        )
        .filter(|&n| n >= 1.0)
    });
    // The changed file may also have been reloaded (and refused) on its own before the signal.
    assert!(errors.is_some_and(|n| n <= 2.0), "{}", daemon.log_text());
    assert_eq!(daemon.get("/healthz").status, 200);
    let log = daemon.log_text();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("config.toml:1:"), "{log}");
    // Still listening on the old port with the old settings.
    assert!(daemon.metrics().contains("flamewarden_syscalls_total"));

    // SIGTERM: a clean exit.
    let mut daemon = daemon;
    daemon.process.signal(libc::SIGTERM);
    let status = daemon.process.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        daemon.log_text()
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    if !require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_args(dir.path(), "", &["--log-format", "json"]);
    // A refused reload logs an error with the file's location.
    fs::write(&daemon.config, "top_cgroups = \"many\"\n").unwrap();
    daemon.process.signal(libc::SIGHUP);
    let refused = wait_for(Duration::from_secs(10), || {
        daemon
            .log_text()
            .contains("config reload refused")
            .then_some(())
    });
    assert!(refused.is_some(), "{}", daemon.log_text());
    daemon.process.signal(libc::SIGTERM);
    let status = daemon.process.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let log = daemon.log_text();
    let mut messages = Vec::new();
    for line in log.lines() {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        let level = object["level"].as_str().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "no level: {line}"
        );
        assert!(object["timestamp"].is_string(), "no timestamp: {line}");
        let message = object["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {line}"));
        messages.push((level.to_owned(), message.to_owned()));
    }
    let has =
        |level: &str, text: &str| messages.iter().any(|(l, m)| l == level && m.contains(text));
    assert!(has("INFO", "listening on http://127.0.0.1:"), "{log}");
    assert!(has("ERROR", "config reload refused"), "{log}");
    assert!(has("INFO", "stopped"), "{log}");
}

#[test]
fn slow_calls_are_events_but_the_waiting_syscalls_are_not() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("daemon-slow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The default ignore list: nanosleep waits by design, a blocked pipe read is slow.
    let daemon = Daemon::start(dir.path(), "slow_call_ms = 100\n");
    let mut reader = cgroup.spawn(
        Command::new(SysWorkload::Pipe.path()).stdout(Stdio::null()),
        "sys_pipe",
    );
    let reader_pid = reader.pid();
    assert!(reader.wait_or_kill(Duration::from_secs(30)).success());
    let mut sleeper = cgroup.spawn(
        Command::new(SysWorkload::Calls.path())
            .args(["nanosleep", "1", "150"])
            .stdout(Stdio::null()),
        "sys_calls nanosleep",
    );
    assert!(sleeper.wait_or_kill(Duration::from_secs(30)).success());
    let path = cgroup.path().display().to_string();
    let ours = |events: &serde_json::Value| -> Vec<serde_json::Value> {
        events
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "slow_call" && e["cgroup"] == path.as_str())
            .cloned()
            .collect()
    };
    let read = wait_for(Duration::from_secs(5), || {
        let events: serde_json::Value =
            serde_json::from_str(&daemon.get("/api/v1/events").text()).ok()?;
        ours(&events)
            .into_iter()
            .find(|e| e["syscall"] == "read")
            .map(|e| (e, events))
    });
    let (read, events) = read.unwrap_or_else(|| {
        panic!(
            "no slow read of {path} in /api/v1/events:\n{}",
            daemon.get("/api/v1/events").text()
        )
    });
    assert_eq!(read["pid"], reader_pid, "{read}");
    let took = read["duration_ns"].as_f64().unwrap();
    assert!(
        (250e6..5e9).contains(&took),
        "a 300 ms read took {took} ns: {read}"
    );
    assert!(read["args"].as_str().unwrap().contains("fd="), "{read}");
    let slept: Vec<_> = ours(&events)
        .into_iter()
        .filter(|e| e["syscall"] == "nanosleep")
        .collect();
    assert!(
        slept.is_empty(),
        "an ignored syscall was reported: {slept:?}"
    );
}
