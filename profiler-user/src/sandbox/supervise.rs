//! Waiting for a run: its output copied and counted, its limits watched from outside, the
//! kernel's trip flags read, and the whole cgroup killed when any of them ends the run.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use profiler_common::{TRIP_FORK_RATE, TRIP_KILLED, TRIP_TASKS};

use super::{cgroup::RunCgroup, child::Child, registered::Registered};
use crate::{
    launch::{ExitStatus, wait},
    policy,
};

/// How often the supervisor looks at CPU time and the kernel's trip flags while it waits.
const POLL: Duration = Duration::from_millis(10);

/// How the wait ended.
pub(super) struct Outcome {
    pub(super) exit: ExitStatus,
    pub(super) output_bytes: u64,
    pub(super) output: bool,
    pub(super) wall_time: bool,
    pub(super) cpu_time: bool,
    pub(super) interrupted: bool,
}

/// One output stream of the command: the read end of its pipe and where its bytes go.
pub(super) struct Stream<'a> {
    pipe: OwnedFd,
    sink: &'a mut dyn io::Write,
    /// A failed write to the sink fails the run (stdout: the judge's answer file). Otherwise
    /// (stderr) the bytes are still read and counted, and dropped.
    strict: bool,
    open: bool,
    sink_failed: bool,
}

impl<'a> Stream<'a> {
    /// The command's standard output: a write error fails the run.
    pub(super) fn output(pipe: OwnedFd, sink: &'a mut dyn io::Write) -> Self {
        Self::new(pipe, sink, true)
    }

    /// The command's standard error: a sink that fails (the judge closed its end) only drops it.
    pub(super) fn error(pipe: OwnedFd, sink: &'a mut dyn io::Write) -> Self {
        Self::new(pipe, sink, false)
    }

    fn new(pipe: OwnedFd, sink: &'a mut dyn io::Write, strict: bool) -> Self {
        Self {
            pipe,
            sink,
            strict,
            open: true,
            sink_failed: false,
        }
    }
}

/// Copies the command's standard output and error (counting them together against the output
/// limit: no byte beyond it is written), watches the limits and the kernel's trip flags, and
/// waits for the command; on any limit, trip or `stop` the whole cgroup is killed.
pub(super) fn supervise(
    child: &Child,
    cgroup: &RunCgroup,
    registered: &Registered,
    mut streams: [Stream<'_>; 2],
    limits: &policy::Limits,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> io::Result<Outcome> {
    let mut outcome = Outcome {
        exit: ExitStatus::Code(0),
        output_bytes: 0,
        output: false,
        wall_time: false,
        cpu_time: false,
        interrupted: false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut killed = false;
    let mut exited: Option<ExitStatus> = None;
    let cpu_limit_ns = limits.cpu_time.map(|d| d.as_nanos() as u64);
    // The child's pidfd turns readable when it exits: one poll waits for output, exit and the
    // next check, whichever comes first.
    // SAFETY: pidfd_open with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid as libc::pid_t, 0) };
    let pidfd = if pidfd >= 0 {
        // SAFETY: a new fd owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd as i32) })
    } else {
        None
    };
    loop {
        let stream_fd = |s: &Stream<'_>| if s.open { s.pipe.as_raw_fd() } else { -1 };
        let mut fds = [
            libc::pollfd {
                fd: stream_fd(&streams[0]),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stream_fd(&streams[1]),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match (&pidfd, exited) {
                    (Some(fd), None) => fd.as_raw_fd(),
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let streams_open = streams.iter().any(|s| s.open);
        let timeout = if exited.is_some() && killed && !streams_open {
            0
        } else {
            POLL.as_millis() as i32
        };
        // SAFETY: three valid pollfds; negative fds are ignored.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
        for (stream, fd) in streams.iter_mut().zip(&fds) {
            if n > 0 && fd.revents != 0 {
                copy_some(stream, &mut buf, limits, &mut outcome)?;
            }
        }
        if exited.is_none() {
            exited = wait(child.pid, false)?;
        }
        if exited.is_some() {
            if !killed {
                // The command is done; what it left running goes with it, and so does the
                // pipe's last writer.
                cgroup.kill_all();
                killed = true;
            }
            if !streams.iter().any(|s| s.open) || n == 0 {
                break;
            }
            continue;
        }
        if killed {
            continue;
        }
        let mut end = outcome.output;
        if stop.load(Ordering::Relaxed) {
            outcome.interrupted = true;
            end = true;
        }
        if limits.wall_time.is_some_and(|w| started.elapsed() >= w) {
            outcome.wall_time = true;
            end = true;
        }
        if let Some(limit) = cpu_limit_ns
            && cgroup.usage().cpu_time_ns.is_some_and(|used| used >= limit)
        {
            outcome.cpu_time = true;
            end = true;
        }
        if let Some(state) = registered.state()
            && state.tripped & (TRIP_FORK_RATE | TRIP_KILLED | TRIP_TASKS) != 0
        {
            end = true;
        }
        if end {
            cgroup.kill_all();
            killed = true;
        }
    }
    outcome.exit = exited.unwrap_or(ExitStatus::Signal(9));
    Ok(outcome)
}

/// Copies what one read of `stream` gives, up to what the output limit leaves; closes the stream
/// at its end.
fn copy_some(
    stream: &mut Stream<'_>,
    buf: &mut [u8],
    limits: &policy::Limits,
    outcome: &mut Outcome,
) -> io::Result<()> {
    // SAFETY: reading into a valid buffer of its length.
    let got = unsafe { libc::read(stream.pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if got > 0 {
        let got = got as usize;
        let allowed = limits.output_bytes.map_or(got as u64, |max| {
            max.saturating_sub(outcome.output_bytes).min(got as u64)
        });
        if !stream.sink_failed
            && let Err(e) = stream.sink.write_all(&buf[..allowed as usize])
        {
            if stream.strict {
                return Err(e);
            }
            tracing::warn!(error = %e, "cannot pass the command's stderr on; dropping the rest");
            stream.sink_failed = true;
        }
        outcome.output_bytes += got as u64;
        if limits
            .output_bytes
            .is_some_and(|max| outcome.output_bytes > max)
        {
            outcome.output = true;
        }
    } else if got == 0 {
        stream.open = false;
    }
    Ok(())
}
