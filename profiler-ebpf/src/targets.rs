//! The in-kernel target filter: an untargeted event costs one array and one hash lookup.

use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use profiler_common::{FILTER_ALL, FILTER_CGROUPS, FILTER_NONE, FILTER_TGIDS, MAX_CGROUP_LEVEL};

use crate::maps::{TARGET_CGROUPS, TARGET_FILTER, TARGET_TGIDS};

/// Whether the current task is a target; `cgroup_id` is its cgroup v2 id.
#[inline(always)]
pub fn is_target(tgid: u32, cgroup_id: u64) -> bool {
    let Some(filter) = TARGET_FILTER.get(0) else {
        return false;
    };
    let mode = filter.mode;
    if mode == FILTER_ALL {
        return true;
    }
    if mode & FILTER_NONE != 0 {
        return false;
    }
    // SAFETY: the value is a plain u32 copied out at once; a concurrent update at worst yields
    // a stale flag.
    if mode & FILTER_TGIDS != 0 && unsafe { TARGET_TGIDS.get(tgid) }.is_some() {
        return true;
    }
    if mode & FILTER_CGROUPS != 0 {
        // SAFETY: as above.
        if unsafe { TARGET_CGROUPS.get(cgroup_id) }.is_some() {
            return true;
        }
        let max_level = filter.max_cgroup_level;
        let mut level = 1;
        while level <= MAX_CGROUP_LEVEL {
            if level > max_level {
                break;
            }
            // SAFETY: a helper without pointer arguments.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if ancestor == 0 || ancestor == cgroup_id {
                break;
            }
            // SAFETY: as above.
            if unsafe { TARGET_CGROUPS.get(ancestor) }.is_some() {
                return true;
            }
            level += 1;
        }
    }
    false
}

/// The current task's cgroup v2 id.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// [`is_target`] for the current task, reading its cgroup id only when the filter needs it:
/// the syscall entry hook runs on every call of every task, and in whole-system mode the cgroup
/// lookup is the largest part of its filter.
#[inline(always)]
pub fn is_current_target(tgid: u32) -> bool {
    match TARGET_FILTER.get(0) {
        Some(filter) if filter.mode == FILTER_ALL => true,
        Some(filter) if filter.mode & FILTER_CGROUPS == 0 => {
            filter.mode & FILTER_NONE == 0
                && filter.mode & FILTER_TGIDS != 0
                // SAFETY: the value is a plain u32 copied out at once.
                && unsafe { TARGET_TGIDS.get(tgid) }.is_some()
        }
        Some(_) => is_target(tgid, current_cgroup_id()),
        None => false,
    }
}
