//! The ends of discovered sandboxes: inotify on their parents and event files, the limit
//! counters read while the files exist, the verdict derived when the cgroup goes, and the
//! verdicts `flamewarden sandbox run` reports.

use std::{fs, path::Path};

use super::{Guarded, Node};
use crate::daemon::{
    board::LiveEvent,
    lifecycle::ProcStats,
    verdicts::{SandboxEnd, VerdictRecord, derive, flat_key},
    watch::{DIR_CHANGES, FILE_CHANGES, WatchId},
};

impl Node {
    /// Watches a glob's parent for new cgroups (once).
    pub(super) fn watch_parent(&mut self, parent: &Path) {
        if self.parent_watches.contains_key(parent) {
            return;
        }
        if let Some(w) = &self.watcher {
            match w.watch(parent, DIR_CHANGES) {
                Ok(id) => {
                    self.parent_watches.insert(parent.to_path_buf(), id);
                }
                Err(e) => tracing::warn!("inotify on {}: {e}", parent.display()),
            }
        }
    }

    /// Watches the event files of sandbox `id` (for its verdict).
    pub(super) fn watch_sandbox(&mut self, id: u64, path: &Path) -> Vec<WatchId> {
        let Some(w) = &self.watcher else {
            return Vec::new();
        };
        let mut watches = Vec::new();
        for file in ["cgroup.events", "memory.events", "pids.events"] {
            // Without the controller there is no file: nothing to watch.
            if let Ok(watch) = w.watch(&path.join(file), FILE_CHANGES) {
                self.file_watches.insert(watch, id);
                watches.push(watch);
            }
        }
        watches
    }

    /// Reads the limit counters of sandbox `id` while its files exist.
    pub(super) fn read_sandbox_events(&mut self, id: u64) {
        let Some(g) = self.guarded.get_mut(&id) else {
            return;
        };
        let read = |file: &str, key: &str| {
            fs::read_to_string(g.path.join(file))
                .ok()
                .and_then(|text| flat_key(&text, key))
        };
        if let Some(n) = read("pids.events", "max") {
            g.pids_max_hits = n;
        }
        if let Some(n) = read("memory.events", "oom_kill") {
            g.oom_kills = n;
        }
    }

    /// Publishes the verdict of a discovered sandbox whose cgroup was removed.
    pub(super) fn sandbox_ended(&mut self, id: u64, g: &Guarded) {
        let end = SandboxEnd {
            processes: ProcStats::of(self.syscalls.ebpf_mut(), id).unwrap_or_default(),
            pids_max_hits: g.pids_max_hits,
            oom_kills: g.oom_kills,
            violations: g.violations,
            enforce: g.enforce,
        };
        let verdict = derive(&g.path, &end);
        tracing::info!(
            "sandbox {} gone: {} ({} process(es) ended)",
            g.path.display(),
            verdict.status,
            end.processes.exits
        );
        let keep = self.config.events_kept;
        self.board
            .lock()
            .unwrap()
            .push(LiveEvent::Verdict(verdict), keep);
    }

    /// A verdict that `flamewarden sandbox run` reported (`None`: a malformed datagram).
    pub(super) fn verdict_reported(&mut self, verdict: Option<VerdictRecord>) {
        let keep = self.config.events_kept;
        let mut board = self.board.lock().unwrap();
        match verdict {
            Some(verdict) => board.push(LiveEvent::Verdict(verdict), keep),
            None => board.verdicts_malformed += 1,
        }
    }
}
