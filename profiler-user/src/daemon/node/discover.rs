//! Sandbox discovery: the guard attached (or adopted) once per glob parent, a policy entry per
//! matching cgroup, released when the cgroup goes; the runs of `flamewarden sandbox run` only
//! listed; policies rewritten in place on reload.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use super::{Guarded, Node, ParentGuard, RETRY_AFTER};
use crate::{
    collect::guard::GuardEventReader,
    daemon::{
        config::{SandboxGlob, wildcard_match},
        pins::{forget_pin, remember_pin},
        watch::WatchId,
    },
    guard::attach,
    policy::Mode,
    probes::guard::{self as guard_probes, GuardMaps},
};

impl Guarded {
    pub(super) fn new(
        path: PathBuf,
        glob: &SandboxGlob,
        watches: Vec<WatchId>,
        owned: bool,
    ) -> Self {
        Guarded {
            path,
            glob: glob.glob.clone(),
            parent: glob.parent.clone(),
            violations: 0,
            enforce: glob.policy.mode == Mode::Enforce,
            pids_max_hits: 0,
            oom_kills: 0,
            watches,
            owned,
        }
    }
}

/// Whether sandboxes below `parent` are made by `flamewarden sandbox run`, which guards them
/// itself.
fn is_run_parent(parent: &Path) -> bool {
    parent
        .file_name()
        .is_some_and(|n| n == crate::sandbox::cgroup::PARENT)
}

impl Node {
    /// Attaches (or adopts) the guard on a glob's parent directory.
    pub(super) fn parent_guard(&mut self, parent: &Path) -> bool {
        if self.parents.contains_key(parent) {
            return true;
        }
        if self
            .failed_parents
            .get(parent)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return false;
        }
        // flamewarden's own runs attach the syscall layer while they run; other sandboxes are
        // started by someone else, at any time.
        let hooks = match is_run_parent(parent) {
            true => guard_probes::SysHooks::WhileRuns,
            false => guard_probes::SysHooks::Pinned,
        };
        let attached = guard_probes::attach(parent, hooks).and_then(|(id, dir, outcome)| {
            remember_pin(id);
            let maps = GuardMaps::open(&dir)?;
            let reader = GuardEventReader::open(&dir)?;
            Ok((id, outcome, maps, reader))
        });
        match attached {
            Ok((id, outcome, maps, reader)) => {
                tracing::info!("guard {outcome:?} on {} (cgroup id {id})", parent.display());
                let lost_at_open = reader.lost();
                self.parents.insert(
                    parent.to_path_buf(),
                    ParentGuard {
                        id,
                        outcome,
                        maps,
                        reader,
                        lost_at_open,
                    },
                );
                self.failed_parents.remove(parent);
                true
            }
            Err(e) => {
                self.attach_failed(parent, &e);
                self.failed_parents
                    .insert(parent.to_path_buf(), Instant::now());
                false
            }
        }
    }

    /// Whether inotify watches the parent of every glob (without it, discovery polls).
    pub(super) fn parents_watched(&self) -> bool {
        self.watcher.is_some()
            && self
                .config
                .sandboxes
                .iter()
                .all(|g| self.parent_watches.contains_key(&g.parent))
    }

    /// Writes the policy of new matching cgroups, removes that of removed ones.
    pub(super) fn discover(&mut self) {
        let config = Arc::clone(&self.config);
        let mut present: HashMap<PathBuf, &SandboxGlob> = HashMap::new();
        for glob in &config.sandboxes {
            if !glob.parent.is_dir() || !self.parent_guard(&glob.parent) {
                continue;
            }
            self.watch_parent(&glob.parent);
            let Ok(entries) = fs::read_dir(&glob.parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && wildcard_match(&glob.pattern, &name.to_string_lossy())
                {
                    present.entry(entry.path()).or_insert(glob);
                }
            }
        }
        let mut changed = false;
        let gone: Vec<u64> = self
            .guarded
            .iter()
            .filter(|(_, g)| !present.contains_key(&g.path) || !g.path.exists())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            changed = true;
            let Some(g) = self.guarded.remove(&id) else {
                continue;
            };
            if !g.owned {
                continue;
            }
            if let Some(parent) = self.parents.get_mut(&g.parent)
                && let Err(e) = parent.maps.remove_policy(id)
            {
                tracing::warn!("removing the policy of {}: {e}", g.path.display());
            }
            for watch in &g.watches {
                self.file_watches.remove(watch);
                if let Some(w) = &self.watcher {
                    w.unwatch(*watch);
                }
            }
            if g.path.exists() {
                tracing::info!("sandbox {} released", g.path.display());
            } else {
                self.sandbox_ended(id, &g);
            }
        }
        let known: HashSet<&PathBuf> = self.guarded.values().map(|g| &g.path).collect();
        let new: Vec<(PathBuf, &SandboxGlob)> = present
            .iter()
            .filter(|(path, _)| !known.contains(path))
            .map(|(path, glob)| (path.clone(), *glob))
            .collect();
        for (path, glob) in new {
            changed = true;
            let Ok(id) = guard_probes::cgroup_id(&path) else {
                continue;
            };
            if is_run_parent(&glob.parent) {
                self.guarded
                    .insert(id, Guarded::new(path, glob, Vec::new(), false));
                continue;
            }
            let entries = attach::network_entries(&glob.policy.network, glob.policy.mode, id);
            let Some(parent) = self.parents.get_mut(&glob.parent) else {
                continue;
            };
            match parent.maps.set_policy(id, entries.policy, &entries.allow) {
                Ok(()) => {
                    tracing::info!(
                        "sandbox {} guarded (policy {})",
                        path.display(),
                        glob.policy_file.display()
                    );
                    let watches = self.watch_sandbox(id, &path);
                    self.guarded
                        .insert(id, Guarded::new(path, glob, watches, true));
                    self.read_sandbox_events(id);
                }
                Err(e) => self.attach_failed(&path, &e),
            }
        }
        // Parents no glob needs any more (after a reload) are detached.
        let needed: HashSet<&PathBuf> = config.sandboxes.iter().map(|g| &g.parent).collect();
        let unneeded: Vec<PathBuf> = self
            .parents
            .keys()
            .filter(|p| !needed.contains(p))
            .cloned()
            .collect();
        for path in unneeded {
            changed = true;
            if let Some(parent) = self.parents.remove(&path) {
                self.lost_of_removed += parent.reader.lost().saturating_sub(parent.lost_at_open);
                if let Err(e) = guard_probes::detach(parent.id) {
                    self.attach_failed(&path, &e);
                }
                forget_pin(parent.id);
                tracing::info!("guard detached from {}", path.display());
            }
        }
        if changed {
            self.publish_sandboxes();
        }
    }

    /// Rewrites the policy of every guarded sandbox from the configuration now in use, in
    /// place: the old entry holds until the new one replaces it. Sandboxes whose glob is gone
    /// are released by the next [`Self::discover`].
    pub(super) fn reapply_policies(&mut self) {
        let config = Arc::clone(&self.config);
        let mut failed = Vec::new();
        for (id, g) in self.guarded.iter().filter(|(_, g)| g.owned) {
            let Some(glob) = config.sandboxes.iter().find(|s| s.glob == g.glob) else {
                continue;
            };
            let entries = attach::network_entries(&glob.policy.network, glob.policy.mode, *id);
            if let Some(parent) = self.parents.get_mut(&g.parent)
                && let Err(e) = parent.maps.set_policy(*id, entries.policy, &entries.allow)
            {
                failed.push((g.path.clone(), e));
            }
        }
        for (path, e) in failed {
            self.attach_failed(&path, &e);
        }
    }
}
