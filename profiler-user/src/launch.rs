//! Starting a command so that it is profiled (or guarded) from its first instruction: the child
//! is forked, waits on a pipe until the caller has registered its pid with the kernel side, and
//! only then execs.

use std::{
    ffi::{CString, OsString},
    io,
    os::{fd::RawFd, unix::ffi::OsStrExt as _},
};

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The command line is empty.
    #[error("no command given")]
    Empty,
    /// An argument contains a NUL byte.
    #[error("argument {0:?} contains a NUL byte")]
    Nul(OsString),
    /// A system call failed while preparing the child.
    #[error("{call} failed")]
    Sys {
        /// The call that failed.
        call: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// exec failed in the child (e.g. no such file).
    #[error("cannot execute {program:?}")]
    Exec {
        /// The program.
        program: OsString,
        /// The error returned by execvp.
        #[source]
        source: io::Error,
    },
}

/// A forked child waiting to exec.
#[derive(Debug)]
pub struct StoppedChild {
    pid: u32,
    go: RawFd,
    exec_error: RawFd,
    program: OsString,
}

/// How a started command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn as_shell_code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

fn pipe() -> Result<[RawFd; 2], LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Sys {
            call: "pipe2",
            source: io::Error::last_os_error(),
        });
    }
    Ok(fds)
}

fn close(fd: RawFd) {
    // SAFETY: closing an fd this module owns.
    unsafe { libc::close(fd) };
}

impl StoppedChild {
    /// Forks `argv[0]` (looked up in PATH) with `argv`; it does not run until [`Self::release`].
    pub fn spawn(argv: &[OsString]) -> Result<Self, LaunchError> {
        let program = argv.first().ok_or(LaunchError::Empty)?.clone();
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| LaunchError::Nul(a.clone())))
            .collect::<Result<_, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let [go_read, go_write] = pipe()?;
        let [err_read, err_write] = pipe()?;
        // SAFETY: the child only calls async-signal-safe functions (read, execvp, write, _exit)
        // on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LaunchError::Sys {
                call: "fork",
                source: io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // SAFETY: see above; this is the child.
            unsafe {
                libc::close(go_write);
                libc::close(err_read);
                let mut byte = 0u8;
                if libc::read(go_read, (&raw mut byte).cast(), 1) != 1 {
                    libc::_exit(126);
                }
                libc::execvp(arg_ptrs[0], arg_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_write, (&raw const errno).cast(), size_of::<i32>());
                libc::_exit(127);
            }
        }
        close(go_read);
        close(err_write);
        Ok(Self {
            pid: pid as u32,
            go: go_write,
            exec_error: err_read,
            program,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child exec; returns once exec succeeded (or with its error).
    pub fn release(self) -> Result<u32, LaunchError> {
        // From here on this function owns the fds and the child; Drop must not run.
        let this = std::mem::ManuallyDrop::new(self);
        let (pid, go, exec_error) = (this.pid, this.go, this.exec_error);
        let program = this.program.clone();
        let byte = 1u8;
        // SAFETY: writing one byte from a valid buffer to our pipe.
        let written = unsafe { libc::write(go, (&raw const byte).cast(), 1) };
        close(go);
        if written != 1 {
            close(exec_error);
            let _ = wait(pid, true);
            return Err(LaunchError::Sys {
                call: "write",
                source: io::Error::last_os_error(),
            });
        }
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into a valid i32; EOF means exec succeeded (CLOEXEC).
        let n = unsafe { libc::read(exec_error, (&raw mut errno).cast(), size_of::<i32>()) };
        close(exec_error);
        if n == size_of::<i32>() as isize {
            let _ = wait(pid, true);
            return Err(LaunchError::Exec {
                program,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(pid)
    }
}

impl Drop for StoppedChild {
    fn drop(&mut self) {
        // Never released: closing the pipe makes the child exit without exec'ing.
        close(self.go);
        close(self.exec_error);
        let _ = wait(self.pid, true);
    }
}

/// Waits for `pid`; `None` when `block` is false and it is still running.
pub fn wait(pid: u32, block: bool) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, flags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            return Ok(None);
        }
        return Ok(Some(if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }));
    }
}
