//! The guard's syscall layer of flamewarden's own runs (`sandbox run`, `batch`): a run attaches
//! it and leaves it attached for the next one (attaching again soon after a detach waits for an
//! RCU grace period); the daemon detaches it once no run was registered for a while, so that an
//! idle node does not pay about 0.3 µs on every system call.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::probes::guard as guard_probes;

/// How often the attachments are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// When each attachment was first seen attached with no run registered.
#[derive(Debug)]
pub(super) struct IdleHooks {
    idle_since: HashMap<PathBuf, Instant>,
    last_check: Instant,
}

impl Default for IdleHooks {
    fn default() -> Self {
        Self {
            idle_since: HashMap::new(),
            last_check: Instant::now(),
        }
    }
}

impl IdleHooks {
    /// Detaches the syscall layers idle for `after` (`None`: never), at most once a
    /// [`CHECK_EVERY`].
    pub(super) fn check(&mut self, after: Option<Duration>) {
        let Some(after) = after else {
            return;
        };
        if self.last_check.elapsed() < CHECK_EVERY {
            return;
        }
        let now = Instant::now();
        self.last_check = now;
        let dirs = guard_probes::while_runs_dirs();
        self.idle_since.retain(|dir, _| dirs.contains(dir));
        for dir in dirs {
            let idle = guard_probes::sys_hooks_attached(&dir)
                && matches!(guard_probes::runs_registered(&dir), Ok(false));
            if !idle {
                self.idle_since.remove(&dir);
                continue;
            }
            let since = *self.idle_since.entry(dir.clone()).or_insert(now);
            if now.duration_since(since) < after {
                continue;
            }
            self.idle_since.remove(&dir);
            // Checked again under the attachment's lock: a run may have started meanwhile.
            match guard_probes::release_sys_hooks(&dir) {
                Ok(true) => tracing::info!(
                    "detached the guard's syscall layer of {}: no run for {after:?}",
                    dir.display()
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "cannot detach the guard's syscall layer of {}: {e}",
                    dir.display()
                ),
            }
        }
    }
}
