//! The rolling window of CPU samples: raw samples (stacks as addresses) in fixed time slots, the
//! oldest slot dropped once it leaves the window, each distinct stack stored once however many
//! slots use it. Pure: the daemon's CPU thread feeds it what it takes from the kernel.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use profiler_common::SampleKey;

use super::syscalls::REMOVED_CGROUPS;
use crate::collect::{RawSamples, SampleCounters};

/// Stacks by content, with the number of slot entries that refer to each.
#[derive(Debug, Default)]
struct StackStore {
    ids: HashMap<Arc<[u64]>, u32>,
    stacks: HashMap<u32, (Arc<[u64]>, u64)>,
    next: u32,
}

impl StackStore {
    fn intern(&mut self, ips: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(ips) {
            if let Some(entry) = self.stacks.get_mut(&id) {
                entry.1 += 1;
            }
            return id;
        }
        let id = self.next;
        // Ids are never negative as i32: negative stack ids are the kernel's error codes.
        self.next = (self.next + 1) & 0x7fff_ffff;
        let ips: Arc<[u64]> = ips.into();
        self.ids.insert(Arc::clone(&ips), id);
        self.stacks.insert(id, (ips, 1));
        id
    }

    fn release(&mut self, id: u32) {
        let Some(entry) = self.stacks.get_mut(&id) else {
            return;
        };
        entry.1 -= 1;
        if entry.1 == 0
            && let Some((ips, _)) = self.stacks.remove(&id)
        {
            self.ids.remove(&ips);
        }
    }

    fn get(&self, id: u32) -> Option<&Arc<[u64]>> {
        self.stacks.get(&id).map(|(ips, _)| ips)
    }
}

/// One time slot: counts keyed like the kernel's, stack ids replaced by the store's.
#[derive(Debug)]
struct Slot {
    start_ms: u64,
    end_ms: u64,
    counts: HashMap<SampleKey, u64>,
}

/// Which samples a view of the window keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleFilter {
    /// Everything.
    All,
    /// Samples of these cgroup ids.
    Cgroups(HashSet<u64>),
    /// Samples of this process.
    Pid(u32),
}

impl SampleFilter {
    fn keeps(&self, key: &SampleKey) -> bool {
        match self {
            SampleFilter::All => true,
            SampleFilter::Cgroups(ids) => ids.contains(&key.cgroup_id),
            SampleFilter::Pid(pid) => key.tgid == *pid,
        }
    }
}

/// The last `keep_ms` of samples in slots of `slot_ms`, plus totals since the start.
#[derive(Debug)]
pub struct RollingSamples {
    slot_ms: u64,
    keep_ms: u64,
    slots: VecDeque<Slot>,
    stacks: StackStore,
    by_cgroup: HashMap<u64, u64>,
    counters: SampleCounters,
    generation: u64,
}

impl RollingSamples {
    /// An empty window of `keep_ms` in slots of `slot_ms`.
    pub fn new(slot_ms: u64, keep_ms: u64) -> Self {
        Self {
            slot_ms: slot_ms.max(1),
            keep_ms: keep_ms.max(slot_ms),
            slots: VecDeque::new(),
            stacks: StackStore::default(),
            by_cgroup: HashMap::new(),
            counters: SampleCounters::default(),
            generation: 0,
        }
    }

    /// Adds what was taken from the kernel at `now_ms` (its stack ids are the kernel's), and
    /// drops the slots that left the window.
    pub fn add(&mut self, now_ms: u64, raw: &RawSamples) {
        self.evict(now_ms);
        add_counters(&mut self.counters, &raw.counters);
        if raw.counts.is_empty() {
            return;
        }
        self.generation += 1;
        let current = match self.slots.back_mut() {
            Some(slot) if now_ms < slot.start_ms + self.slot_ms => slot,
            _ => {
                self.slots.push_back(Slot {
                    start_ms: now_ms,
                    end_ms: now_ms,
                    counts: HashMap::new(),
                });
                self.slots.back_mut().expect("just pushed")
            }
        };
        current.end_ms = now_ms;
        for (key, count) in &raw.counts {
            *self.by_cgroup.entry(key.cgroup_id).or_default() += count;
            let mut stored = *key;
            for id in [&mut stored.user_stack_id, &mut stored.kernel_stack_id] {
                if *id >= 0 {
                    *id = match raw.stacks.get(&(*id as u32)) {
                        Some(ips) => self.stacks.intern(ips) as i32,
                        // The stack was not stored: the sample stays, without those frames.
                        None => -libc::ENOENT,
                    };
                }
            }
            match current.counts.entry(stored) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    *e.get_mut() += count;
                    // The key held its stacks already.
                    for id in [stored.user_stack_id, stored.kernel_stack_id] {
                        if id >= 0 {
                            self.stacks.release(id as u32);
                        }
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(*count);
                }
            }
        }
    }

    /// Drops the slots that ended before the window that ends at `now_ms`.
    pub fn evict(&mut self, now_ms: u64) {
        let window_start = now_ms.saturating_sub(self.keep_ms);
        while self
            .slots
            .front()
            .is_some_and(|slot| slot.end_ms < window_start)
        {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            for key in slot.counts.keys() {
                for id in [key.user_stack_id, key.kernel_stack_id] {
                    if id >= 0 {
                        self.stacks.release(id as u32);
                    }
                }
            }
            self.generation += 1;
        }
    }

    /// The samples of the slots that end at or after `since_ms` that `filter` keeps, as one
    /// [`RawSamples`] (with the window's stack ids), and the time they span (ms).
    pub fn view(&self, since_ms: u64, filter: &SampleFilter) -> (RawSamples, u64) {
        let mut counts: HashMap<SampleKey, u64> = HashMap::new();
        let mut stacks = HashMap::new();
        let mut span = None;
        for slot in self.slots.iter().filter(|s| s.end_ms >= since_ms) {
            let (first, _) = *span.get_or_insert((slot.start_ms, slot.end_ms));
            span = Some((first, slot.end_ms));
            for (key, count) in slot.counts.iter().filter(|(k, _)| filter.keeps(k)) {
                *counts.entry(*key).or_default() += count;
                for id in [key.user_stack_id, key.kernel_stack_id] {
                    if id >= 0
                        && let Some(ips) = self.stacks.get(id as u32)
                    {
                        stacks.entry(id as u32).or_insert_with(|| ips.to_vec());
                    }
                }
            }
        }
        let taken = counts.values().sum();
        let raw = RawSamples {
            counts: counts.into_iter().collect(),
            stacks,
            counters: SampleCounters {
                taken,
                ..SampleCounters::default()
            },
        };
        let span_ms = span.map_or(0, |(start, end)| {
            end.saturating_sub(start).max(self.slot_ms)
        });
        (raw, span_ms)
    }

    /// Samples per cgroup id since the start.
    pub fn by_cgroup(&self) -> &HashMap<u64, u64> {
        &self.by_cgroup
    }

    /// The kernel's counters, summed since the start.
    pub fn counters(&self) -> SampleCounters {
        self.counters
    }

    /// Changes whenever the window's contents change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The processes some slot has samples of.
    pub fn tgids(&self) -> HashSet<u32> {
        self.slots
            .iter()
            .flat_map(|s| s.counts.keys().map(|k| k.tgid))
            .collect()
    }

    /// Distinct stacks stored.
    pub fn stack_count(&self) -> usize {
        self.stacks.stacks.len()
    }

    /// Moves the totals of cgroups not in `live` under [`REMOVED_CGROUPS`], so that their
    /// number stays bounded however many sandboxes come and go.
    pub fn fold_removed_cgroups(&mut self, live: &HashSet<u64>) {
        let gone: Vec<u64> = self
            .by_cgroup
            .keys()
            .filter(|id| **id != REMOVED_CGROUPS && !live.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(n) = self.by_cgroup.remove(&id) {
                *self.by_cgroup.entry(REMOVED_CGROUPS).or_default() += n;
            }
        }
    }
}

fn add_counters(total: &mut SampleCounters, more: &SampleCounters) {
    total.taken += more.taken;
    total.lost_user_stack += more.lost_user_stack;
    total.lost_kernel_stack += more.lost_kernel_stack;
    total.lost_key_map_full += more.lost_key_map_full;
    total.user_stack_faults += more.user_stack_faults;
    total.idle += more.idle;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, tgid: u32, user: i32, kernel: i32) -> SampleKey {
        SampleKey {
            cgroup_id,
            tgid,
            user_stack_id: user,
            kernel_stack_id: kernel,
            _pad: 0,
            comm: [0; 16],
        }
    }

    fn raw(counts: Vec<(SampleKey, u64)>, stacks: &[(u32, &[u64])]) -> RawSamples {
        RawSamples {
            counts,
            stacks: stacks.iter().map(|(id, ips)| (*id, ips.to_vec())).collect(),
            counters: SampleCounters::default(),
        }
    }

    #[test]
    fn samples_leave_the_window_with_their_slot_and_stacks_with_their_last_user() {
        let mut w = RollingSamples::new(10_000, 30_000);
        // Kernel stack id 5 means different stacks at different times: ids are reused.
        w.add(0, &raw(vec![(key(7, 1, 5, -14), 3)], &[(5, &[1, 2])]));
        w.add(5_000, &raw(vec![(key(7, 1, 5, -14), 2)], &[(5, &[1, 2])]));
        w.add(12_000, &raw(vec![(key(8, 2, 5, -14), 4)], &[(5, &[9])]));
        assert_eq!(w.stack_count(), 2);
        let (all, span) = w.view(0, &SampleFilter::All);
        assert_eq!(all.counts.iter().map(|c| c.1).sum::<u64>(), 9);
        assert_eq!(span, 12_000);
        let mut stacks: Vec<Vec<u64>> = all.stacks.values().cloned().collect();
        stacks.sort();
        assert_eq!(stacks, [vec![1, 2], vec![9]]);
        // The first slot (0..5 s) ends before 36 s - 30 s: gone, and its stack with it.
        w.add(36_000, &raw(Vec::new(), &[]));
        let (left, _) = w.view(0, &SampleFilter::All);
        assert_eq!(
            left.counts,
            vec![(key(8, 2, left.counts[0].0.user_stack_id, -14), 4)]
        );
        assert_eq!(w.stack_count(), 1);
        // Totals per cgroup are kept since the start.
        assert_eq!(w.by_cgroup()[&7], 5);
        assert_eq!(w.by_cgroup()[&8], 4);
    }

    #[test]
    fn views_filter_by_cgroup_and_pid_and_time() {
        let mut w = RollingSamples::new(1_000, 60_000);
        w.add(0, &raw(vec![(key(7, 1, 0, -14), 3)], &[(0, &[1])]));
        w.add(
            2_000,
            &raw(
                vec![(key(8, 2, 0, -14), 4), (key(7, 3, 1, -14), 1)],
                &[(0, &[2]), (1, &[3])],
            ),
        );
        let total =
            |f: &SampleFilter, since| w.view(since, f).0.counts.iter().map(|c| c.1).sum::<u64>();
        assert_eq!(total(&SampleFilter::Cgroups(HashSet::from([7])), 0), 4);
        assert_eq!(total(&SampleFilter::Pid(2), 0), 4);
        assert_eq!(total(&SampleFilter::All, 1_000), 5);
        assert_eq!(w.tgids(), HashSet::from([1, 2, 3]));
    }

    #[test]
    fn removed_cgroups_fold_into_one_total() {
        let mut w = RollingSamples::new(1_000, 1_000);
        w.add(
            0,
            &raw(
                vec![(key(7, 1, -14, -14), 3), (key(8, 1, -14, -14), 2)],
                &[],
            ),
        );
        w.fold_removed_cgroups(&HashSet::from([8]));
        assert_eq!(w.by_cgroup()[&REMOVED_CGROUPS], 3);
        assert_eq!(w.by_cgroup()[&8], 2);
        assert!(!w.by_cgroup().contains_key(&7));
    }
}
