//! Sandbox verdicts on the node: `flamewarden sandbox run` / `batch` report each verdict to a
//! running daemon over a unix datagram socket (best effort: never blocking, never failing a
//! run), and the daemon derives one for each discovered sandbox another judge ran, when its
//! cgroup is removed.

use std::{
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::lifecycle::ProcTotals;
use crate::sandbox::Verdict;

/// Where the daemon receives verdicts.
pub const VERDICT_SOCKET: &str = "/run/flamewarden/verdicts.sock";

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
        unix_ms: 0,
    };
    let Ok(text) = serde_json::to_vec(&record) else {
        return;
    };
    if let Ok(socket) = UnixDatagram::unbound()
        && socket.set_nonblocking(true).is_ok()
    {
        // A full queue or no daemon: the verdict is not reported, the run goes on.
        let _ = socket.send_to(&text, path);
    }
}

/// The daemon's end of the socket.
#[derive(Debug)]
pub struct VerdictListener {
    socket: UnixDatagram,
    path: PathBuf,
    /// Datagrams that were not a verdict.
    pub malformed: u64,
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
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            malformed: 0,
        })
    }

    /// Every verdict waiting.
    pub fn drain(&mut self) -> Vec<VerdictRecord> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            match serde_json::from_slice::<VerdictRecord>(&buf[..n]) {
                Ok(mut record) => {
                    record.unix_ms = unix_ms();
                    out.push(record);
                }
                Err(_) => self.malformed += 1,
            }
        }
        out
    }
}

impl Drop for VerdictListener {
    fn drop(&mut self) {
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

    #[test]
    fn a_reported_verdict_arrives_at_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let mut listener = VerdictListener::bind_at(&path).unwrap();
        let verdict = Verdict {
            status: crate::sandbox::Status::TimeLimit,
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
        };
        report_to(&path, &verdict);
        let got = listener.drain();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].status.as_str(), got[0].signal),
            ("time_limit", Some(9))
        );
    }
}
