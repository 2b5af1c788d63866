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

    /// Checks every `poll` until the session is over. Without a command there is nothing to
    /// poll: it sleeps until the deadline, in steps of [`IDLE_STEP`], and SIGINT or SIGTERM cut
    /// the sleep short (threads that must not take those signals block them, see
    /// `collect::mappings`), so a long system-wide recording wakes a few times a second, not
    /// fifty.
    pub fn wait(
        &mut self,
        stop: &AtomicBool,
        poll: Duration,
    ) -> Result<Option<ExitStatus>, RecordError> {
        // Wakes the moment the command exits, instead of up to `poll` later (each run of
        // `ci run` pays that delay).
        let exit_fd = self.child.and_then(pidfd_open);
        loop {
            if let Progress::Done(status) = self.check(stop)? {
                return Ok(status);
            }
            if let Some(fd) = &exit_fd {
                wait_readable(fd, poll);
            } else if self.child.is_some() {
                std::thread::sleep(poll);
            } else {
                let left = self
                    .duration
                    .map_or(IDLE_STEP, |d| d.saturating_sub(self.started.elapsed()));
                sleep_interruptibly(left.min(IDLE_STEP));
            }
        }
    }
}

/// Longest sleep between two looks at the stop flag when no command runs: a signal that lands
/// just before a sleep starts (not interrupting it) is noticed this late at worst.
pub const IDLE_STEP: Duration = Duration::from_millis(250);

/// Sleeps for `duration` unless a signal handler runs first; unlike `std::thread::sleep`, an
/// interrupted sleep is not resumed.
fn sleep_interruptibly(duration: Duration) {
    let request = libc::timespec {
        tv_sec: duration.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `request` is a valid timespec; the remaining time is not wanted (null).
    unsafe { libc::nanosleep(&request, std::ptr::null_mut()) };
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+).
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `fd` is readable, `timeout` passes or a signal handler runs.
fn wait_readable(fd: &std::os::fd::OwnedFd, timeout: Duration) {
    use std::os::fd::AsRawFd as _;
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pollfd, 1, millis) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(duration: Option<Duration>) -> EndWatch {
        EndWatch {
            child: None,
            duration,
            started: Instant::now(),
            interrupted: false,
        }
    }

    #[test]
    fn without_a_command_the_deadline_ends_the_wait() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let status = watch(Some(Duration::from_millis(120)))
            .wait(&stop, Duration::from_millis(20))
            .unwrap();
        assert_eq!(status, None);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(120) && took < Duration::from_millis(120) + IDLE_STEP,
            "{took:?}"
        );
    }

    #[test]
    fn without_a_command_the_stop_flag_is_seen_within_one_step() {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let setter = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        watch(None).wait(&stop, Duration::from_millis(20)).unwrap();
        setter.join().unwrap();
        assert!(started.elapsed() < Duration::from_millis(50) + 2 * IDLE_STEP);
    }
}
