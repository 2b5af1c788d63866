//! `bench daemon`: what `flamewarden daemon` costs a node.
//!
//! 1. **Idle**: the daemon with one sandbox glob, scraped every 15 s like Prometheus would, for
//!    `FLAMEWARDEN_BENCH_DAEMON_SECS` (default 60 s; the issue asks for 10 minutes): its CPU
//!    share of one core (goal ≤ 1 %) and its RSS at the end (goal ≤ 40 MB), and the RSS growth
//!    over the run.
//! 2. **Sandbox churn**: 100 matching cgroups created and removed per second for 10 s: the
//!    daemon's CPU share while discovery keeps up.
//! 3. **Soak** ([`soak`]): 100 real sandbox runs per second through `sandbox batch` for
//!    `FLAMEWARDEN_BENCH_SOAK_SECS` (default 600 s), every run's cgroup discovered by the daemon:
//!    RSS at the end (goal ≤ 40 MB) and its growth (goal ≤ 5 %), events lost and map-full
//!    errors (goal 0), verdicts and violations counted against the runs made.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

use super::{BenchContext, soak};
use crate::env::workspace_root;

const RSS_GOAL_MB: f64 = 40.0;
const IDLE_CPU_GOAL: f64 = 0.01;
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
const CHURN_SECS: u64 = 10;
const CHURN_PER_SEC: u64 = 100;
const SOAK_GROWTH_GOAL: f64 = 0.05;

/// The daemon, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cgroup directory removed (children first) on drop.
struct BenchCgroup(PathBuf);

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// (CPU seconds, RSS bytes) of process `pid`.
fn cpu_and_rss(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the daemon (pid {pid}) is gone"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let cpu = (fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0)) as f64 / ticks;
    let rss = fields.get(21).unwrap_or(&0) * page;
    Ok((cpu, rss))
}

fn get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    ensure!(text.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    Ok(text)
}

fn own_cgroup() -> anyhow::Result<PathBuf> {
    let line = fs::read_to_string("/proc/self/cgroup")?;
    let relative = line
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line in /proc/self/cgroup")?;
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mount = mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .context("no cgroup2 mount")?;
    Ok(mount.join(relative.trim().trim_start_matches('/')))
}

fn start(ctx: &BenchContext, parent: &Path, runs: &Path) -> anyhow::Result<(Daemon, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = ctx.out_dir.join("daemon-bench.toml");
    let policy = workspace_root().join("policies").join("judge.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [[sandboxes]]\nglob = \"{}/run-*\"\npolicy = \"{policy}\"\n\
             [[sandboxes]]\nglob = \"{}/*\"\npolicy = \"{policy}\"\n",
            parent.display(),
            runs.display(),
            policy = policy.display()
        ),
    )?;
    let log = fs::File::create(ctx.out_dir.join("daemon-bench.log"))?;
    let child = Command::new(&ctx.flamewarden)
        .args(["--log", "warn", "daemon", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("failed to start flamewarden daemon")?;
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/readyz").is_err() {
        if Instant::now() > deadline {
            bail!("the daemon did not become ready; see target/bench/daemon-bench.log");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok((daemon, port))
}

/// The sum of every sample of metric `name` (exposition text) whose labels contain each of
/// `labels` (`key="value"`).
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelled, value) = rest.rsplit_once(' ')?;
            let matches = (labelled.is_empty() || labelled.starts_with('{'))
                && labels.iter().all(|want| labelled.contains(want));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum::<f64>()
        + 0.0
}

/// Runs the benchmark.
pub fn run(ctx: &BenchContext) -> anyhow::Result<()> {
    let idle_secs: u64 = std::env::var("FLAMEWARDEN_BENCH_DAEMON_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let parent =
        BenchCgroup(own_cgroup()?.join(format!("flamewarden-bench-daemon-{}", std::process::id())));
    fs::create_dir(&parent.0).with_context(|| format!("mkdir {}", parent.0.display()))?;
    let runs_parent = own_cgroup()?.join("flamewarden-sandboxes");
    let (daemon, port) = start(ctx, &parent.0, &runs_parent)?;
    let pid = daemon.0.id();
    // Let start-up work settle before measuring.
    thread::sleep(Duration::from_secs(3));
    get(port, "/metrics")?;
    let (cpu0, rss0) = cpu_and_rss(pid)?;
    let started = Instant::now();
    println!("idle for {idle_secs} s (FLAMEWARDEN_BENCH_DAEMON_SECS), scraped every 15 s");
    while started.elapsed() < Duration::from_secs(idle_secs) {
        let left = Duration::from_secs(idle_secs).saturating_sub(started.elapsed());
        thread::sleep(left.min(SCRAPE_EVERY));
        get(port, "/metrics")?;
    }
    let (cpu1, rss1) = cpu_and_rss(pid)?;
    let idle_share = (cpu1 - cpu0) / started.elapsed().as_secs_f64();
    let rss_mb = rss1 as f64 / 1e6;
    let growth = if rss0 > 0 {
        (rss1 as f64 - rss0 as f64) / rss0 as f64
    } else {
        0.0
    };

    // Churn: sandboxes come and go at CHURN_PER_SEC.
    let churn_started = Instant::now();
    let (cpu2, _) = cpu_and_rss(pid)?;
    let mut made = 0u64;
    let period = Duration::from_micros(1_000_000 / CHURN_PER_SEC);
    while churn_started.elapsed() < Duration::from_secs(CHURN_SECS) {
        let dir = parent.0.join(format!("run-{made}"));
        fs::create_dir(&dir)?;
        if made >= 10 {
            let _ = fs::remove_dir(parent.0.join(format!("run-{}", made - 10)));
        }
        made += 1;
        let next = period * made as u32;
        if let Some(wait) = next.checked_sub(churn_started.elapsed()) {
            thread::sleep(wait);
        }
    }
    let (cpu3, rss3) = cpu_and_rss(pid)?;
    let churn_share = (cpu3 - cpu2) / churn_started.elapsed().as_secs_f64();
    let attach_errors = metric_sum(
        &get(port, "/metrics")?,
        "flamewarden_guard_attach_errors_total",
        &[],
    );

    let soak_secs: u64 = std::env::var("FLAMEWARDEN_BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    println!(
        "soak for {soak_secs} s (FLAMEWARDEN_BENCH_SOAK_SECS): {} sandbox runs/s through `sandbox batch`",
        soak::RUNS_PER_SEC
    );
    let derived_before = metric_sum(
        &get(port, "/metrics")?,
        "flamewarden_sandbox_verdicts_total",
        &["source=\"discovered\""],
    );
    let soaked = soak::run(ctx, soak_secs, pid, cpu_and_rss);
    // The verdicts of the last runs arrive on the daemon's socket after the batch printed them.
    thread::sleep(Duration::from_secs(2));
    let metrics = get(port, "/metrics");
    drop(daemon);
    drop(parent);
    // The runs' guard stays pinned on the sandboxes' parent by design; a bench leaves nothing.
    let _ = Command::new(&ctx.flamewarden)
        .args(["--log", "error", "guard", "detach", "--cgroup"])
        .arg(&runs_parent)
        .stdout(Stdio::null())
        .status();
    let (soaked, metrics) = (soaked?, metrics?);
    let sum = |name: &str, labels: &[&str]| metric_sum(&metrics, name, labels);
    let lost = sum("flamewarden_events_lost_total", &[]);
    let map_full = sum("flamewarden_map_full_errors_total", &[]);
    let verdicts_counted = sum("flamewarden_sandbox_verdicts_total", &["source=\"run\""]);
    // Runs guard themselves: the daemon must not derive a second verdict when their cgroup goes.
    let derived = sum(
        "flamewarden_sandbox_verdicts_total",
        &["source=\"discovered\""],
    ) - derived_before;
    let violations_counted = sum("flamewarden_guard_violations_total", &[]);
    let soak_rss = soaked.samples.last().map_or(0, |s| s.1);
    // Growth once the rolling CPU window (300 s) is full: from the sample nearest half-way.
    let half = soaked
        .samples
        .iter()
        .find(|s| s.0 >= soaked.seconds / 2.0)
        .map_or(soak_rss, |s| s.1);
    let growth_of = |from: u64| (soak_rss as f64 - from as f64) / from.max(1) as f64;
    let soak_growth = growth_of(half);
    let soak_growth_start = growth_of(soaked.samples[0].1);

    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("{:<44} {:>12} {:>10}", "daemon", "measured", "goal");
    println!(
        "{:<44} {:>11.1}M {:>9.0}M {}",
        format!("RSS after {idle_secs} s idle"),
        rss_mb,
        RSS_GOAL_MB,
        verdict(rss_mb <= RSS_GOAL_MB)
    );
    println!(
        "{:<44} {:>11.2}% {:>10}",
        "RSS growth while idle",
        growth * 100.0,
        "≤ 5 %"
    );
    println!(
        "{:<44} {:>11.3}% {:>9.1}% {}",
        "CPU share of one core, idle",
        idle_share * 100.0,
        IDLE_CPU_GOAL * 100.0,
        verdict(idle_share <= IDLE_CPU_GOAL)
    );
    println!(
        "{:<44} {:>11.3}% {:>10}",
        format!("CPU share, {CHURN_PER_SEC} sandboxes/s created+removed"),
        churn_share * 100.0,
        "-"
    );
    println!("{:<44} {:>12}", "sandboxes created during churn", made);
    println!("{:<44} {:>12}", "guard attach errors", attach_errors);
    let soak_mb = soak_rss as f64 / 1e6;
    println!(
        "{:<44} {:>11.1}M {:>9.0}M {}",
        format!("RSS after the {:.0} s soak", soaked.seconds),
        soak_mb,
        RSS_GOAL_MB,
        verdict(soak_mb <= RSS_GOAL_MB)
    );
    println!(
        "{:<44} {:>11.2}% {:>9.0}% {}",
        "RSS growth, second half of the soak",
        soak_growth * 100.0,
        SOAK_GROWTH_GOAL * 100.0,
        verdict(soak_growth <= SOAK_GROWTH_GOAL)
    );
    println!(
        "{:<44} {:>11.2}% {:>10}",
        "RSS growth, whole soak",
        soak_growth_start * 100.0,
        "-"
    );
    println!(
        "{:<44} {:>11.3}% {:>10}",
        format!("CPU share, {} sandbox runs/s", soak::RUNS_PER_SEC),
        soaked.cpu_share * 100.0,
        "-"
    );
    let rate = soaked.verdicts as f64 / soaked.seconds;
    println!(
        "{:<44} {:>12.1} {:>10.0}",
        "sandbox runs per second achieved",
        rate,
        soak::RUNS_PER_SEC
    );
    println!(
        "{:<44} {:>12} {:>10}",
        "runs made / verdicts printed by the batch",
        format!("{}/{}", soaked.runs, soaked.verdicts),
        "equal"
    );
    println!(
        "{:<44} {:>12} {:>10}",
        "  ok / security_violation / batch errors",
        format!(
            "{}/{}/{}",
            soaked.ok, soaked.security_violations, soaked.errors
        ),
        format!(
            "{}/{}/0",
            soaked.runs - soaked.violation_runs,
            soaked.violation_runs
        )
    );
    println!(
        "{:<44} {:>12} {:>10} {}",
        "verdicts the daemon counted (source=run)",
        verdicts_counted,
        soaked.verdicts - soaked.errors,
        verdict(verdicts_counted as u64 == soaked.verdicts - soaked.errors)
    );
    println!(
        "{:<44} {:>12} {:>10} {}",
        "verdicts derived for the runs (discovered)",
        derived,
        0,
        verdict(derived == 0.0)
    );
    println!(
        "{:<44} {:>12} {:>10} {}",
        "violations the daemon counted / in verdicts",
        violations_counted,
        soaked.violations_total,
        verdict(violations_counted as u64 == soaked.violations_total)
    );
    println!(
        "{:<44} {:>12} {:>10} {}",
        "events lost, every ring buffer",
        lost,
        0,
        verdict(lost == 0.0)
    );
    println!(
        "{:<44} {:>12} {:>10} {}",
        "map-full errors, every map",
        map_full,
        0,
        verdict(map_full == 0.0)
    );
    for name in [
        "flamewarden_events_lost_total",
        "flamewarden_map_full_errors_total",
    ] {
        for line in metrics.lines().filter(|l| l.starts_with(name)) {
            if line
                .rsplit_once(' ')
                .is_some_and(|(_, v)| v.parse::<f64>().is_ok_and(|v| v > 0.0))
            {
                println!("  {line}");
            }
        }
    }
    println!(
        "{:<44} {:>12} {:>10} {}",
        "connections that got through",
        soaked.escapes,
        0,
        verdict(soaked.escapes == 0)
    );
    let out = ctx.out_dir.join("daemon.json");
    fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "idle_seconds": idle_secs,
            "rss_bytes": rss1,
            "rss_goal_bytes": RSS_GOAL_MB * 1e6,
            "rss_growth": growth,
            "idle_cpu_share": idle_share,
            "idle_cpu_goal": IDLE_CPU_GOAL,
            "churn_per_second": CHURN_PER_SEC,
            "churn_cpu_share": churn_share,
            "churn_rss_bytes": rss3,
            "guard_attach_errors": attach_errors,
            "soak": {
                "seconds": soaked.seconds,
                "runs": soaked.runs,
                "violation_runs": soaked.violation_runs,
                "verdicts": soaked.verdicts,
                "ok": soaked.ok,
                "security_violations": soaked.security_violations,
                "batch_errors": soaked.errors,
                "escapes": soaked.escapes,
                "rss_samples": soaked.samples.iter().map(|s| json!({
                    "seconds": s.0, "rss_bytes": s.1, "cpu_share": s.2
                })).collect::<Vec<_>>(),
                "rss_bytes": soak_rss,
                "rss_growth_second_half": soak_growth,
                "rss_growth": soak_growth_start,
                "cpu_share": soaked.cpu_share,
                "daemon_verdicts": verdicts_counted,
                "daemon_violations": violations_counted,
                "verdict_violations": soaked.violations_total,
                "daemon_derived_verdicts": derived,
                "events_lost": lost,
                "map_full_errors": map_full,
            },
        }))?,
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
