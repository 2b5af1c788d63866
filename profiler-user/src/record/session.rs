//! What every tracing command shares (`record`, `syscalls`): the target named on the command
//! line resolved and written into the kernel's filter, a command started stopped and released
//! once everything is attached, and the watch for the end (command exit, deadline, Ctrl-C).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::Ebpf;
use profiler_common::TARGET_FOLLOW_FORKS;

use super::{RecordError, RecordTarget};
use crate::{
    launch::{self, ExitStatus, StoppedChild},
    probes::{self, CgroupTarget, ForkFollower, Targets},
};

/// A resolved target: what the kernel filters on, and the command when one is started.
#[derive(Debug)]
pub struct Session {
    targets: Targets,
    child: Option<StoppedChild>,
    child_pid: Option<u32>,
    snapshot_pids: Option<Vec<u32>>,
    command: Option<Vec<String>>,
    description: String,
    follower: Option<ForkFollower>,
}

impl Session {
    /// Resolves `target`: starts the command (stopped before exec), finds the processes of
    /// the pids, checks the cgroups.
    pub fn prepare(target: &RecordTarget) -> Result<Self, RecordError> {
        probes::system::check_privileges()?;
        let mut targets = Targets::default();
        let mut child = None;
        let mut snapshot_pids = None;
        let mut command = None;
        match target {
            RecordTarget::Command(argv) => {
                let stopped = StoppedChild::spawn(argv)?;
                targets.tgids.push((stopped.pid(), TARGET_FOLLOW_FORKS));
                snapshot_pids = Some(Vec::new());
                child = Some(stopped);
                command = Some(
                    argv.iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                );
            }
            RecordTarget::Pids(pids) => {
                let mut tgids = Vec::new();
                for &pid in pids {
                    tgids.push(probes::system::tgid_of(pid)?);
                }
                targets.tgids = tgids.iter().map(|&t| (t, 0)).collect();
                snapshot_pids = Some(tgids);
            }
            RecordTarget::Cgroups(paths) => {
                for path in paths {
                    targets.cgroups.push(CgroupTarget::from_path(path)?);
                }
            }
            RecordTarget::All => targets.all = true,
        }
        Ok(Self {
            targets,
            child,
            child_pid: None,
            snapshot_pids,
            command,
            description: describe(target),
            follower: None,
        })
    }

    /// Writes the targets into the kernel's filter maps and, for a command, attaches the fork
    /// follower so that its children are targets from their first instruction.
    pub fn apply(&mut self, ebpf: &mut Ebpf) -> Result<(), RecordError> {
        self.targets.apply(ebpf)?;
        if self.targets.follows_forks() && self.follower.is_none() {
            self.follower = Some(ForkFollower::attach(ebpf)?);
        }
        Ok(())
    }

    /// The processes whose `/proc/PID/maps` seed symbolization: `None` for all of them, an
    /// empty list for a command that has not run yet.
    pub fn snapshot_pids(&self) -> Option<&[u32]> {
        self.snapshot_pids.as_deref()
    }

    /// The command line, when a command is started.
    pub fn command(&self) -> Option<&[String]> {
        self.command.as_deref()
    }

    /// What is traced, in words: `command`, `pid 1,2`, `cgroup /sys/fs/…`, `all`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The kernel-side target set.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Lets the command exec (call it once everything is attached); returns its pid.
    pub fn release(&mut self) -> Result<Option<u32>, RecordError> {
        if let Some(stopped) = self.child.take() {
            self.child_pid = Some(stopped.release()?);
        }
        Ok(self.child_pid)
    }

    /// A watch for the end of the session, started now.
    pub fn watch(&self, duration: Option<Duration>) -> EndWatch {
        EndWatch {
            child: self.child_pid,
            duration,
            started: Instant::now(),
            interrupted: false,
        }
    }
}

/// Whether a session is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep going.
    Running,
    /// Over: the command's exit status, or `None` without a command.
    Done(Option<ExitStatus>),
}

/// Watches the command, the deadline and the stop flag; with a command, a stop request or the
/// deadline is passed on as SIGINT (SIGTERM) and the command is still waited for, so that its
/// last events count.
#[derive(Debug)]
pub struct EndWatch {
    child: Option<u32>,
    duration: Option<Duration>,
    started: Instant,
    interrupted: bool,
}

impl EndWatch {
    /// When the watch started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Looks once, without blocking.
    pub fn check(&mut self, stop: &AtomicBool) -> Result<Progress, RecordError> {
        if let Some(pid) = self.child
            && let Some(status) = launch::wait(pid, false).map_err(RecordError::Wait)?
        {
            return Ok(Progress::Done(Some(status)));
        }
        let timed_out = self.duration.is_some_and(|d| self.started.elapsed() >= d);
        if stop.load(Ordering::Relaxed) || timed_out {
            match self.child {
                None => return Ok(Progress::Done(None)),
                Some(pid) if !self.interrupted => {
                    self.interrupted = true;
                    let signal = if timed_out {
                        libc::SIGTERM
                    } else {
                        libc::SIGINT
                    };
                    // SAFETY: sending a signal to our own, not yet reaped, child.
                    unsafe { libc::kill(pid as i32, signal) };
                }
                Some(_) => {}
            }
        }
        Ok(Progress::Running)
    }

    /// Checks every `poll` until the session is over.
    pub fn wait(
        &mut self,
        stop: &AtomicBool,
        poll: Duration,
    ) -> Result<Option<ExitStatus>, RecordError> {
        loop {
            if let Progress::Done(status) = self.check(stop)? {
                return Ok(status);
            }
            std::thread::sleep(poll);
        }
    }
}

/// What a target is, in words.
pub fn describe(target: &RecordTarget) -> String {
    match target {
        RecordTarget::Command(_) => "command".into(),
        RecordTarget::Pids(pids) => {
            format!(
                "pid {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        RecordTarget::Cgroups(paths) => format!(
            "cgroup {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        RecordTarget::All => "all".into(),
    }
}
