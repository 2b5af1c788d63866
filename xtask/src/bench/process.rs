//! Child processes measured the way `time -v` would: exit status, CPU time and peak RSS from
//! `wait4`, stopped with SIGINT like a user pressing Ctrl-C.

use std::{
    fs::File,
    io,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::run;

/// How a child ended and what it cost.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// User plus system CPU time, including its reaped children.
    pub cpu: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// When it was reaped (within the polling interval of its exit).
    pub ended: Instant,
}

impl Finished {
    /// Exited with 0, or was ended by SIGINT after cleaning up (perf re-raises the signal).
    pub fn stopped_cleanly(&self) -> bool {
        self.status.success() || self.status.signal() == Some(libc::SIGINT)
    }
}

/// How often `wait` polls: the resolution of stop latencies.
const POLL: Duration = Duration::from_millis(2);

/// Waits for `child` up to `timeout`, then kills it and fails.
pub fn wait(child: Child, timeout: Duration) -> anyhow::Result<Finished> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `usage` are valid for writes; `pid` is our unreaped child, so
        // wait4 cannot reap someone else's process.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            return Ok(Finished {
                status: ExitStatus::from_raw(status),
                cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
                max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
                ended: Instant::now(),
            });
        }
        if reaped < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).with_context(|| format!("wait4({pid}) failed"));
        }
        if Instant::now() >= deadline {
            signal(pid, libc::SIGKILL)?;
            // SAFETY: `status` is valid for writes; `pid` is our unreaped child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            bail!("process {pid} did not exit within {timeout:?}; killed it");
        }
        thread::sleep(POLL);
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// Sends `sig` to `pid`.
pub fn signal(pid: libc::pid_t, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` is one of our own children, not
    // yet reaped, so the id cannot have been reused.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("failed to send signal {sig} to {pid}"));
    }
    Ok(())
}

/// Runs `cmd` to completion, quietly, and returns its wall time; fails unless it exits with 0.
pub fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let took = started.elapsed();
    if !status.success() {
        bail!("`{}` failed ({status})", run::shown(cmd));
    }
    Ok(took)
}

/// A profiler running in the background, its output in a log file.
pub struct Background {
    /// `None` once stopped.
    child: Option<Child>,
    shown: String,
    log: PathBuf,
}

/// What stopping a background profiler measured.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Its rusage and exit.
    pub finished: Finished,
    /// When SIGINT was sent.
    pub interrupted: Instant,
}

impl Stopped {
    /// From SIGINT to exit.
    pub fn stop_latency(&self) -> Duration {
        self.finished.ended - self.interrupted
    }
}

impl Background {
    /// Starts `cmd` with stdout and stderr going to `log`, and gives
    /// it `settle` to attach; fails if it exits meanwhile.
    pub fn start(mut cmd: Command, log: &Path, settle: Duration) -> anyhow::Result<Self> {
        let out =
            File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("failed to reopen {}", log.display()))?;
        // Same process group as xtask on purpose: a Ctrl-C at the terminal also stops the
        // profiler, which would otherwise outlive an interrupted benchmark.
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let shown = run::shown(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to run {cmd:?}"))?;
        thread::sleep(settle);
        if let Some(status) = child.try_wait().context("failed to poll the profiler")? {
            bail!(
                "`{shown}` exited during start-up ({status}); its output:\n{}",
                tail(log)
            );
        }
        Ok(Self {
            child: Some(child),
            shown,
            log: log.to_owned(),
        })
    }

    /// Sends SIGINT and waits for the profiler to finish writing its output.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Stopped> {
        let child = self.child.take().context("profiler already stopped")?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        let interrupted = Instant::now();
        signal(pid, libc::SIGINT)?;
        let finished = wait(child, timeout)
            .with_context(|| format!("`{}` did not stop on SIGINT", self.shown))?;
        if !finished.stopped_cleanly() {
            bail!(
                "`{}` failed ({}); its output:\n{}",
                self.shown,
                finished.status,
                tail(&self.log)
            );
        }
        Ok(Stopped {
            finished,
            interrupted,
        })
    }
}

impl Drop for Background {
    /// A benchmark that fails half-way must not leave a system-wide profiler running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
