//! `sandbox batch`: the next run's cgroups and work directory are made, and the last run's
//! removed, on a thread of their own while the commands run, so that a run waits for neither
//! (`mkdir` and `rmdir` of three cgroups and a directory cost about 0.4 ms a run here).
//!
//! Nothing outlives the batch: dropping the [`Ahead`] removes what was made for a run that did
//! not come and waits for every removal. A batch killed outright leaves `run-<pid>-<n>` cgroups
//! that the next run of flamewarden reaps, as for any run.

use std::{
    sync::{Arc, Condvar, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
};

use super::{
    cgroup::{CgroupError, CgroupLimits, RunCgroup},
    workdir::FreshWorkdir,
};

/// What a run starts in: its cgroups and, without `--workdir`, a fresh work directory.
pub(super) struct Made {
    /// The run's cgroups.
    pub cgroup: RunCgroup,
    /// Its work directory, when it needs a fresh one.
    pub workdir: Option<FreshWorkdir>,
}

/// What the next run is expected to need.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Wanted {
    limits: CgroupLimits,
    /// A fresh work directory, with a tmpfs of this size (`Some(None)`: a plain directory).
    workdir: Option<Option<u64>>,
}

enum Job {
    Make(Wanted, String),
    Remove(Made),
}

#[derive(Default)]
struct Slot {
    pending: bool,
    made: Option<(Wanted, Result<Made, CgroupError>)>,
}

/// The thread that makes and removes runs' cgroups and work directories.
pub struct Ahead {
    jobs: Option<mpsc::Sender<Job>>,
    slot: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

fn remove(made: Made) {
    // The work directory first: a tmpfs's pages are charged to the run's memory cgroup, which
    // would otherwise linger, offline, until they are freed.
    drop(made.workdir);
    if let Err(e) = made.cgroup.remove() {
        tracing::warn!("leaving a run's cgroup behind: {e}");
    }
}

impl Ahead {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let thread = {
            let slot = Arc::clone(&slot);
            std::thread::Builder::new()
                .name("sandbox-ahead".into())
                .spawn(move || {
                    for job in queue {
                        match job {
                            Job::Make(wanted, name) => {
                                let made =
                                    RunCgroup::create(&name, &wanted.limits).and_then(|cgroup| {
                                        let workdir = match wanted.workdir {
                                            Some(disk) => {
                                                Some(FreshWorkdir::create(disk).map_err(
                                                    |source| CgroupError::Create {
                                                        path: std::env::temp_dir(),
                                                        source,
                                                    },
                                                )?)
                                            }
                                            None => None,
                                        };
                                        Ok(Made { cgroup, workdir })
                                    });
                                let mut state = lock(&slot.0);
                                state.made = Some((wanted, made));
                                state.pending = false;
                                slot.1.notify_all();
                            }
                            Job::Remove(made) => remove(made),
                        }
                    }
                    // The batch is over: what was made for a next run goes too.
                    if let Some((_, Ok(made))) = lock(&slot.0).made.take() {
                        remove(made);
                    }
                })?
        };
        Ok(Self {
            jobs: Some(jobs),
            slot,
            thread: Some(thread),
        })
    }

    /// What was made ahead for a run with these needs, if it matches (what does not is removed).
    pub(super) fn take(&self, limits: CgroupLimits, workdir: Option<Option<u64>>) -> Option<Made> {
        let wanted = Wanted { limits, workdir };
        let mut state = lock(&self.slot.0);
        while state.pending {
            state = self
                .slot
                .1
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match state.made.take() {
            Some((made_for, Ok(made))) if made_for == wanted => Some(made),
            Some((_, Ok(made))) => {
                drop(state);
                self.send(Job::Remove(made));
                None
            }
            // An error is the synchronous path's to report.
            Some((_, Err(_))) | None => None,
        }
    }

    /// Has the next run's cgroups (named `name`) and work directory made.
    pub(super) fn make_next(
        &self,
        limits: CgroupLimits,
        workdir: Option<Option<u64>>,
        name: String,
    ) {
        lock(&self.slot.0).pending = true;
        if !self.send(Job::Make(Wanted { limits, workdir }, name)) {
            lock(&self.slot.0).pending = false;
        }
    }

    /// Removes a finished run's cgroups and work directory.
    pub(super) fn retire(&self, made: Made) {
        match &self.jobs {
            Some(jobs) => {
                if let Err(mpsc::SendError(Job::Remove(made))) = jobs.send(Job::Remove(made)) {
                    remove(made);
                }
            }
            None => remove(made),
        }
    }

    fn send(&self, job: Job) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
