//! The list of guard attachments the daemon pinned (by cgroup id), kept in a file so that
//! `--cleanup` and a restarted daemon find them.

use std::{collections::HashSet, fs, path::Path};

use super::names::CgroupNames;
use crate::probes::guard as guard_probes;

/// Where the daemon lists the cgroup ids whose guard it pinned, for `--cleanup` and for
/// attachments whose cgroup disappeared while it was down.
pub const PIN_LIST: &str = "/run/flamewarden/daemon-pins";

fn pin_list() -> Vec<u64> {
    fs::read_to_string(PIN_LIST)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_pin_list(ids: &[u64]) {
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let path = Path::new(PIN_LIST);
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Err(e) = fs::write(path, text) {
        tracing::warn!("cannot write {PIN_LIST}: {e}");
    }
}

/// Adds `id` to the list.
pub fn remember_pin(id: u64) {
    let mut ids = pin_list();
    if !ids.contains(&id) {
        ids.push(id);
        write_pin_list(&ids);
    }
}

/// Removes `id` from the list.
pub fn forget_pin(id: u64) {
    let mut ids = pin_list();
    ids.retain(|&i| i != id);
    write_pin_list(&ids);
}

/// `--cleanup`: detaches every attachment the daemon pinned and removes its pins; returns the
/// cgroup ids detached.
pub fn cleanup() -> Result<Vec<u64>, guard_probes::GuardAttachError> {
    let mut done = Vec::new();
    for id in pin_list() {
        if guard_probes::detach(id)? {
            done.push(id);
        }
        forget_pin(id);
    }
    Ok(done)
}

/// Removes the pins of attachments the daemon made whose cgroup no longer exists (removed while
/// the daemon was down); returns how many.
pub fn remove_stale_pins() -> usize {
    let live: HashSet<u64> = CgroupNames::all_ids();
    let mut removed = 0;
    for id in pin_list() {
        if !live.contains(&id) {
            if guard_probes::detach(id).is_ok() {
                removed += 1;
            }
            forget_pin(id);
        }
    }
    removed
}
