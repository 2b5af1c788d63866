//! The run's command: forked stopped, moved into the run's cgroups by the parent, then (in the
//! child, between fork and exec, system calls only) given its standard streams, work directory,
//! process group and the guard's layers, and executed.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
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
}

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

const STEPS: [&str; 5] = [
    "reading the start signal",
    "setting up standard streams",
    "entering the work directory",
    "applying the guard layers (rlimits, Landlock, seccomp)",
    "executing the command",
];

impl Child {
    /// Forks the child; it waits until [`Child::release`].
    pub fn spawn(setup: &ChildSetup<'_>) -> io::Result<Child> {
        let (go_read, go_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (go_fd, err_fd) = (go_read.as_raw_fd(), err_write.as_raw_fd());
        // SAFETY: the child only makes system calls on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: this is the child; it never returns.
            unsafe { child_main(setup, go_fd, err_fd) }
        }
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
/// Only in the child right after fork: system calls only, no allocation.
unsafe fn child_main(setup: &ChildSetup<'_>, go: RawFd, errors: RawFd) -> ! {
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
        let mut byte = 0u8;
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(SETUP_FAILED);
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
        if let Err(errno) = setup.layers.apply_in_child() {
            *libc::__errno_location() = errno.into_raw();
            fail(3);
        }
        let errno = setup.command.exec();
        *libc::__errno_location() = errno.into_raw();
        fail(4)
    }
}
