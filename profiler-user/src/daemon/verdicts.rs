//! Sandbox verdicts on the node: `flamewarden sandbox run` / `batch` report each verdict to a
//! running daemon over a unix datagram socket (never failing a run, waiting at most
//! [`REPORT_TIMEOUT`] for room in the daemon's queue), and the daemon derives one for each
//! discovered sandbox another judge ran, when its cgroup is removed. The two are counted apart
//! (`source` `run` and `discovered`): a run in a discovered cgroup has both.

use std::{
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::lifecycle::ProcTotals;
use crate::sandbox::Verdict;

/// Where the daemon receives verdicts.
pub const VERDICT_SOCKET: &str = "/run/flamewarden/verdicts.sock";

/// The longest a run waits for room in the daemon's queue (full only when the daemon is
/// stopped or far behind).
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(250);

/// One verdict as the daemon keeps it (and as a run sends it, JSON in one datagram).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// The verdict's status (`ok`, `runtime_error`, `fork_bomb`, …, or `unknown`).
    pub status: String,
    /// `run` (reported by `flamewarden sandbox run`) or `discovered` (derived by the daemon).
    pub source: String,
    /// The sandbox cgroup (discovered sandboxes), or the policy file (runs).
    pub what: String,
    /// The exit code, when the last process exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the last process.
    pub signal: Option<i32>,
    /// Wall time, ms (runs only).
    pub wall_time_ms: Option<f64>,
    /// Violations seen.
    pub violations: u64,
    /// A run's violations by (rule, action, count); the ones beyond those its verdict lists
    /// are under rule `unlisted`. Empty for discovered sandboxes, whose violations the daemon
    /// reads itself.
    #[serde(default)]
    pub violation_rules: Vec<(String, String, u64)>,
    /// When the daemon got it, ms since the epoch.
    #[serde(default)]
    pub unix_ms: u64,
}

/// Sends `verdict` to the daemon, if one listens; returns at once whatever happens.
pub fn report(verdict: &Verdict) {
    report_to(Path::new(VERDICT_SOCKET), verdict);
}

/// [`report`] to the socket at `path`.
pub fn report_to(path: &Path, verdict: &Verdict) {
    if !path.exists() {
        return;
    }
    let record = VerdictRecord {
        status: serde_json::to_value(verdict.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        source: "run".into(),
        what: verdict.policy.clone(),
        exit_code: verdict.exit_code,
        signal: verdict.signal,
        wall_time_ms: Some(verdict.wall_time_ms),
        violations: verdict.violations_total,
        violation_rules: rule_counts(verdict),
        unix_ms: 0,
    };
    let Ok(text) = serde_json::to_vec(&record) else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    // The receiver's queue holds `net.unix.max_dgram_qlen` datagrams (10 by default): a
    // blocking send waits for room, up to the timeout, instead of dropping the verdict.
    let _ = socket.set_write_timeout(Some(REPORT_TIMEOUT));
    let deadline = Instant::now() + REPORT_TIMEOUT;
    loop {
        match socket.send_to(&text, path) {
            Ok(_) => return,
            Err(e)
                if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock)
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // No daemon (a stale socket): the verdict is not reported, the run goes on.
            Err(_) => return,
        }
    }
}

/// `verdict`'s violations counted by (rule, action).
fn rule_counts(verdict: &Verdict) -> Vec<(String, String, u64)> {
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for v in &verdict.violations {
        *counts.entry((&v.rule, v.action)).or_default() += 1;
    }
    let unlisted = verdict
        .violations_total
        .saturating_sub(verdict.violations.len() as u64);
    if unlisted > 0 {
        *counts.entry(("unlisted", "unknown")).or_default() += unlisted;
    }
    counts
        .into_iter()
        .map(|((rule, action), n)| (rule.to_owned(), action.to_owned(), n))
        .collect()
}

/// The daemon's end of the socket.
#[derive(Debug)]
pub struct VerdictListener {
    socket: UnixDatagram,
    path: PathBuf,
    /// Tells the receiving thread to end.
    stop: Arc<AtomicBool>,
}

impl VerdictListener {
    /// Binds [`VERDICT_SOCKET`] (replacing a stale one).
    pub fn bind() -> std::io::Result<Self> {
        Self::bind_at(Path::new(VERDICT_SOCKET))
    }

    /// Binds the socket at `path`.
    pub fn bind_at(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = UnixDatagram::bind(path)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Receives on a thread of its own, handing each verdict to `deliver` as it arrives
    /// (`None` for a datagram that is not one); the thread ends when `deliver` returns false
    /// or the listener is dropped.
    pub fn receive_on_thread<F>(&self, mut deliver: F) -> std::io::Result<()>
    where
        F: FnMut(Option<VerdictRecord>) -> bool + Send + 'static,
    {
        let socket = self.socket.try_clone()?;
        // Woken once a second to notice the end.
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let stop = Arc::clone(&self.stop);
        std::thread::Builder::new()
            .name("flamewarden-verdicts".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv(&mut buf) {
                        Ok(n) => {
                            if !deliver(parse(&buf[..n])) {
                                return;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            tracing::warn!("receiving verdicts: {e}");
                            return;
                        }
                    }
                }
            })?;
        Ok(())
    }
}

/// A verdict datagram, stamped with the time it arrived.
fn parse(datagram: &[u8]) -> Option<VerdictRecord> {
    let mut record = serde_json::from_slice::<VerdictRecord>(datagram).ok()?;
    record.unix_ms = unix_ms();
    Some(record)
}

impl Drop for VerdictListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the daemon saw of a discovered sandbox until its cgroup was removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxEnd {
    /// Its processes (the wait status of the last one).
    pub processes: ProcTotals,
    /// Forks refused by `pids.max` (`pids.events`).
    pub pids_max_hits: u64,
    /// OOM kills (`memory.events`).
    pub oom_kills: u64,
    /// Guard violations.
    pub violations: u64,
    /// Whether its policy enforces (else audits).
    pub enforce: bool,
}

/// The verdict of a discovered sandbox, in the order of precedence of `sandbox run`.
pub fn derive(path: &Path, end: &SandboxEnd) -> VerdictRecord {
    let (exit_code, signal) = match end.processes.last_exit_status {
        Some(status) if status & 0x7f == 0 => (Some((status >> 8) as i32 & 0xff), None),
        Some(status) => (None, Some((status & 0x7f) as i32)),
        None => (None, None),
    };
    let status = if end.pids_max_hits > 0 {
        "fork_bomb"
    } else if end.enforce && end.violations > 0 {
        "security_violation"
    } else if end.oom_kills > 0 {
        "memory_limit"
    } else {
        match (exit_code, signal) {
            (Some(0), _) => "ok",
            (Some(_), _) | (_, Some(_)) => "runtime_error",
            (None, None) => "unknown",
        }
    };
    VerdictRecord {
        status: status.into(),
        source: "discovered".into(),
        what: path.display().to_string(),
        exit_code,
        signal,
        wall_time_ms: None,
        violations: end.violations,
        violation_rules: Vec::new(),
        unix_ms: unix_ms(),
    }
}

/// The `key N` value of a flat-keyed cgroup file (`memory.events`, `pids.events`).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: Option<u32>) -> SandboxEnd {
        SandboxEnd {
            processes: ProcTotals {
                execs: 1,
                exits: 1,
                last_exit_status: status,
            },
            enforce: true,
            ..SandboxEnd::default()
        }
    }

    #[test]
    fn derived_verdicts_follow_the_precedence_of_sandbox_run() {
        let p = Path::new("/sys/fs/cgroup/judge/1");
        assert_eq!(derive(p, &ended(Some(0))).status, "ok");
        let failed = derive(p, &ended(Some(3 << 8)));
        assert_eq!(
            (failed.status.as_str(), failed.exit_code),
            ("runtime_error", Some(3))
        );
        assert_eq!(derive(p, &ended(Some(9))).signal, Some(9));
        assert_eq!(derive(p, &ended(None)).status, "unknown");
        let bomb = SandboxEnd {
            pids_max_hits: 4,
            oom_kills: 1,
            ..ended(Some(9))
        };
        assert_eq!(derive(p, &bomb).status, "fork_bomb");
        let oom = SandboxEnd {
            oom_kills: 1,
            ..ended(Some(9))
        };
        assert_eq!(derive(p, &oom).status, "memory_limit");
        let denied = SandboxEnd {
            violations: 1,
            ..ended(Some(0))
        };
        assert_eq!(derive(p, &denied).status, "security_violation");
        let audited = SandboxEnd {
            enforce: false,
            ..denied
        };
        assert_eq!(derive(p, &audited).status, "ok");
    }

    #[test]
    fn flat_keyed_files_are_read_by_key() {
        let text = "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n";
        assert_eq!(flat_key(text, "oom_kill"), Some(1));
        assert_eq!(flat_key(text, "max"), Some(2));
        assert_eq!(flat_key(text, "nope"), None);
    }

    fn verdict(status: crate::sandbox::Status) -> Verdict {
        Verdict {
            status,
            exit_code: None,
            signal: Some(9),
            cpu_time_ms: 1.0,
            wall_time_ms: 2.0,
            peak_memory_bytes: 0,
            output_bytes: 0,
            mode: "enforce",
            policy: "p.toml".into(),
            violations: Vec::new(),
            violations_total: 0,
            violations_lost: 0,
            message: None,
        }
    }

    #[test]
    fn a_burst_of_verdicts_beyond_the_socket_queue_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = VerdictListener::bind_at(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        listener
            .receive_on_thread(move |v| tx.send(v).is_ok())
            .unwrap();
        // Ten times the kernel's default queue, sent as fast as possible from four threads.
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        report_to(&path, &verdict(crate::sandbox::Status::TimeLimit));
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let got: Vec<Option<VerdictRecord>> = (0..100)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        let first = got[0].as_ref().unwrap();
        assert_eq!(
            (first.status.as_str(), first.signal, first.source.as_str()),
            ("time_limit", Some(9), "run")
        );
        assert!(got.iter().all(Option::is_some));
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn a_runs_violations_are_counted_by_rule_and_the_unlisted_apart() {
        let violation = |rule: &str, action: &'static str| crate::sandbox::Violation {
            rule: rule.into(),
            action,
            syscall: None,
            argument: None,
            errno: None,
            pid: 1,
            time_ms: 0.0,
            stack: Vec::new(),
        };
        let mut v = verdict(crate::sandbox::Status::SecurityViolation);
        v.violations = vec![
            violation("network.deny_all", "denied"),
            violation("filesystem", "denied"),
            violation("network.deny_all", "denied"),
        ];
        v.violations_total = 5;
        let counts = rule_counts(&v);
        assert_eq!(
            counts,
            [
                ("filesystem".to_owned(), "denied".to_owned(), 1),
                ("network.deny_all".to_owned(), "denied".to_owned(), 2),
                ("unlisted".to_owned(), "unknown".to_owned(), 2),
            ]
        );
        // What a run sends is what the daemon reads back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = VerdictListener::bind_at(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        listener
            .receive_on_thread(move |r| tx.send(r).is_ok())
            .unwrap();
        report_to(&path, &v);
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(got.violation_rules, counts);
        assert_eq!(got.violations, 5);
    }

    #[test]
    fn a_datagram_that_is_not_a_verdict_is_counted_apart() {
        assert!(parse(b"{\"status\": 1}").is_none());
        assert!(parse(b"not json").is_none());
    }
}
