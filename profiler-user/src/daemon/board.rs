//! What the node thread publishes for the HTTP side: violations, verdicts, the
//! guarded sandboxes, and a broadcast of every new event for `/api/v1/events` streams.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::Arc,
};

use serde::Serialize;

use super::verdicts::VerdictRecord;
use crate::collect::guard::Violation;

/// A violation as served by `/api/v1/events`.
#[derive(Clone, Debug, Serialize)]
pub struct ViolationRecord {
    /// Wall-clock time it was read, ms since the epoch.
    pub unix_ms: u64,
    /// The sandbox cgroup's path.
    pub cgroup: String,
    /// The violation.
    #[serde(flatten)]
    pub violation: Violation,
}

/// One event of `/api/v1/events`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A guard violation.
    Violation(ViolationRecord),
    /// A sandbox verdict.
    Verdict(VerdictRecord),
    /// A syscall slower than `slow_call_ms`.
    SlowCall(crate::syscalls::SlowCall),
}

/// A guarded sandbox.
#[derive(Clone, Debug, Serialize)]
pub struct SandboxStatus {
    /// Its cgroup directory.
    pub path: PathBuf,
    /// Its cgroup id.
    pub cgroup_id: u64,
    /// The glob that matched it.
    pub glob: String,
    /// `attached` or `adopted`.
    pub guard: &'static str,
    /// Violations read since the daemon started.
    pub violations: u64,
}

/// Events kept for the stream's slow readers; a reader further behind is told how many it
/// missed.
const STREAM_BACKLOG: usize = 1024;

/// What the guard side has seen, shared with the HTTP side.
#[derive(Debug)]
pub struct GuardBoard {
    /// Violations by (rule, action).
    pub violations: BTreeMap<(String, String), u64>,
    /// The latest events, oldest first.
    pub recent: VecDeque<Arc<LiveEvent>>,
    /// Events dropped by the kernel, over all attachments the daemon read.
    pub events_lost: u64,
    /// Failed attaches and detaches.
    pub attach_errors: u64,
    /// The guarded sandboxes.
    pub sandboxes: Vec<SandboxStatus>,
    /// Verdicts by (status, source).
    pub verdicts: BTreeMap<(String, String), u64>,
    /// The latest verdicts, oldest first.
    pub recent_verdicts: VecDeque<VerdictRecord>,
    /// Verdict datagrams that could not be read.
    pub verdicts_malformed: u64,
    /// Every new event, for streams.
    pub live: tokio::sync::broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for GuardBoard {
    fn default() -> Self {
        Self {
            violations: BTreeMap::new(),
            recent: VecDeque::new(),
            events_lost: 0,
            attach_errors: 0,
            sandboxes: Vec::new(),
            verdicts: BTreeMap::new(),
            recent_verdicts: VecDeque::new(),
            verdicts_malformed: 0,
            live: tokio::sync::broadcast::channel(STREAM_BACKLOG).0,
        }
    }
}

/// Verdicts kept for the page and `/api/v1/sandboxes`.
const VERDICTS_KEPT: usize = 100;

impl GuardBoard {
    /// Publishes `event`: kept among the latest `keep`, sent to every stream.
    pub fn push(&mut self, event: LiveEvent, keep: usize) {
        match &event {
            LiveEvent::Violation(r) => {
                let key = (r.violation.rule.to_owned(), r.violation.action.to_owned());
                *self.violations.entry(key).or_default() += 1;
            }
            LiveEvent::Verdict(v) => {
                for (rule, action, n) in &v.violation_rules {
                    *self
                        .violations
                        .entry((rule.clone(), action.clone()))
                        .or_default() += n;
                }
                *self
                    .verdicts
                    .entry((v.status.clone(), v.source.clone()))
                    .or_default() += 1;
                self.recent_verdicts.push_back(v.clone());
                while self.recent_verdicts.len() > VERDICTS_KEPT {
                    self.recent_verdicts.pop_front();
                }
            }
            LiveEvent::SlowCall(_) => {}
        }
        let event = Arc::new(event);
        // No stream listening is fine.
        let _ = self.live.send(Arc::clone(&event));
        self.recent.push_back(event);
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}
