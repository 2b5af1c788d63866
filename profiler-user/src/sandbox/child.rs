//! The run's command: created directly in the run's cgroup v2 (`clone3` with
//! `CLONE_INTO_CGROUP`; a plain fork that moves itself in where the kernel lacks it), then, in the
//! child, between fork and exec and with system calls only: moved into the run's v1 cgroups,
//! given its standard streams, work directory, process group, rlimits and Landlock ruleset, while
//! the parent registers it; once the parent says go, seccomp and exec.

use std::{
    ffi::CString,
    fs::OpenOptions,
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use crate::guard::{PreparedCommand, PreparedLayers};

/// Exit code of a child that could not set itself up or exec.
const SETUP_FAILED: i32 = 127;

/// What the child needs, prepared before fork.
pub struct ChildSetup<'a> {
    /// The command.
    pub command: &'a PreparedCommand,
    /// The guard's layers.
    pub layers: &'a PreparedLayers,
    /// The work directory.
    pub workdir: CString,
    /// Descriptors for fds 0, 1, 2 (`None`: inherited).
    pub stdio: [Option<RawFd>; 3],
    /// The run's cgroup v2 directory, which the child is created in.
    pub cgroup: RawFd,
    /// The run's v2 `cgroup.procs`: where a forked child (no `clone3`) moves itself first.
    pub v2_procs: &'a Path,
    /// The `cgroup.procs` of each of the run's v1 cgroups, open for writing: the child moves
    /// itself in by writing `0`.
    pub v1_procs: &'a [RawFd],
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A forked child waiting on a pipe to go on.
pub struct Child {
    /// Its pid.
    pub pid: u32,
    go: Option<OwnedFd>,
    errors: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Why the child failed before exec: (step, errno), as it wrote them to the error pipe.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct ChildError {
    /// What the child was doing.
    pub step: &'static str,
    /// The error.
    #[source]
    pub source: io::Error,
}

const STEPS: [&str; 6] = [
    "reading the start signal",
    "setting up standard streams",
    "entering the work directory",
    "applying the guard layers (rlimits, Landlock, seccomp)",
    "executing the command",
    "moving into the run's cgroups",
];

impl Child {
    /// Creates the child in the run's cgroup; it sets itself up and waits until
    /// [`Child::release`] before seccomp and exec.
    pub fn spawn(setup: &ChildSetup<'_>) -> io::Result<Child> {
        let (go_read, go_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (go_fd, err_fd) = (go_read.as_raw_fd(), err_write.as_raw_fd());
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: setup.cgroup as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this memory and
        // only makes system calls on memory prepared before it.
        let mut pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::from_ref(&args),
                size_of::<CloneArgs>(),
            )
        } as libc::pid_t;
        let mut v2_procs = None;
        if pid < 0 {
            let error = io::Error::last_os_error();
            // No clone3 (ENOSYS; or a seccomp filter answering that), or no CLONE_INTO_CGROUP
            // (E2BIG, EINVAL; before Linux 5.7): a fork that moves itself in.
            if !matches!(
                error.raw_os_error(),
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM)
            ) {
                return Err(error);
            }
            v2_procs = Some(OpenOptions::new().write(true).open(setup.v2_procs)?);
            // SAFETY: the child only makes system calls on memory prepared before the fork.
            pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if pid == 0 {
            let v2_procs = v2_procs.as_ref().map(AsRawFd::as_raw_fd);
            // SAFETY: this is the child; it never returns.
            unsafe { child_main(setup, v2_procs, go_fd, err_fd) }
        }
        drop(v2_procs);
        drop(go_read);
        drop(err_write);
        Ok(Child {
            pid: pid as u32,
            go: Some(go_write),
            errors: err_read,
        })
    }

    /// Lets the child go on to exec; returns once exec succeeded, or with what failed.
    pub fn release(&mut self) -> Result<(), ChildError> {
        let go = self.go.take();
        let byte = 1u8;
        if let Some(go) = &go {
            // SAFETY: writing one byte from a valid buffer to our pipe.
            unsafe { libc::write(go.as_raw_fd(), (&raw const byte).cast(), 1) };
        }
        drop(go);
        let mut report = [0i32; 2];
        // SAFETY: reading at most 8 bytes into a valid buffer; EOF means exec succeeded.
        let n = unsafe {
            libc::read(
                self.errors.as_raw_fd(),
                report.as_mut_ptr().cast(),
                size_of_val(&report),
            )
        };
        if n == size_of_val(&report) as isize {
            return Err(ChildError {
                step: STEPS.get(report[0] as usize).copied().unwrap_or("setup"),
                source: io::Error::from_raw_os_error(report[1]),
            });
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Never released: closing the pipe makes the child exit without exec'ing.
        self.go.take();
    }
}

/// # Safety
/// Only in the child right after fork: system calls only, no allocation. `v2_procs`: the v2
/// `cgroup.procs` to move into first, when the child was not created in the cgroup.
unsafe fn child_main(
    setup: &ChildSetup<'_>,
    v2_procs: Option<RawFd>,
    go: RawFd,
    errors: RawFd,
) -> ! {
    let fail = |step: i32| -> ! {
        // SAFETY: errno of this thread, and a write of 8 bytes from a valid buffer.
        unsafe {
            let report = [step, *libc::__errno_location()];
            libc::write(errors, report.as_ptr().cast(), size_of_val(&report));
            libc::_exit(SETUP_FAILED)
        }
    };
    // SAFETY: plain system calls on fds and strings prepared before fork.
    unsafe {
        for fd in v2_procs.iter().chain(setup.v1_procs) {
            // "0": the writing process, into the cgroup of this cgroup.procs.
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(5);
            }
        }
        // Its own process group: a terminal's Ctrl-C reaches flamewarden, which ends the run.
        libc::setpgid(0, 0);
        for (target, fd) in setup.stdio.iter().enumerate() {
            if let Some(fd) = *fd
                && libc::dup2(fd, target as i32) < 0
            {
                fail(1);
            }
        }
        if libc::chdir(setup.workdir.as_ptr()) != 0 {
            fail(2);
        }
        // Rust ignores SIGPIPE; an ignored signal stays ignored across exec.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if let Err(errno) = setup.layers.apply_before_seccomp() {
            *libc::__errno_location() = errno.into_raw();
            fail(3);
        }
        // Set up; the parent registers the pid meanwhile. Seccomp last: it may refuse `read`.
        let mut byte = 0u8;
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(SETUP_FAILED);
        }
        if let Err(errno) = setup.layers.apply_seccomp() {
            *libc::__errno_location() = errno.into_raw();
            fail(3);
        }
        let errno = setup.command.exec();
        *libc::__errno_location() = errno.into_raw();
        fail(4)
    }
}
