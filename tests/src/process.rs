//! Child processes that cannot outlive the test that started them.

use std::{
    io,
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

/// A process running beside the test; killed (SIGKILL) and reaped on drop unless it was already
/// waited for.
#[derive(Debug)]
pub struct BackgroundProcess {
    /// `None` once reaped: its pid may belong to someone else then, so it is never signalled.
    child: Option<Child>,
    pid: u32,
    what: String,
}

impl BackgroundProcess {
    /// Starts `command`; `what` names it in panics.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {what} ({command:?}): {e}"));
        Self::from_child(child, what)
    }

    /// Takes ownership of an already started `child`.
    pub fn from_child(child: Child, what: &str) -> Self {
        BackgroundProcess {
            pid: child.id(),
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process, which must not have been reaped yet.
    ///
    /// # Panics
    /// When the process was already reaped or `kill` fails.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(self.child.is_some(), "{} was already reaped", self.what);
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "failed to signal {}: {}",
            self.what,
            io::Error::last_os_error()
        );
    }

    /// Whether the process is still running (not exited, or exited but not reaped yet counts as
    /// exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit, and reaps it.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => panic!("failed to wait for {}: {e}", self.what),
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    ///
    /// # Panics
    /// When it is still running then; it is killed first.
    pub fn wait_or_kill(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_timeout(timeout) {
            Some(status) => status,
            None => {
                self.kill();
                panic!("{} did not exit within {timeout:?}; killed it", self.what);
            }
        }
    }

    /// Kills (SIGKILL) and reaps the process if it was not reaped yet.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BackgroundProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
