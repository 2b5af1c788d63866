//! Raw samples (counts keyed by stack ids, stacks as addresses) to a [`Profile`]: pure, given a
//! [`FrameResolver`].

use std::collections::HashMap;

use profiler_common::{MAX_STACK_DEPTH, SampleKey};

use crate::{
    collect::RawSamples,
    profile::{Completeness, Frame, FrameId, Profile, ProfileMeta, Stack},
};

/// Turns addresses into frames; implemented by the symbolizer, faked in tests.
pub trait FrameResolver {
    /// Frames of a user stack of process `tgid`, `ips` leaf first; returns one frame per address,
    /// leaf first.
    fn user_frames(&mut self, tgid: u32, ips: &[u64]) -> Vec<Frame>;
    /// Frames of a kernel stack, `ips` leaf first; one frame per address, leaf first.
    fn kernel_frames(&mut self, ips: &[u64]) -> Vec<Frame>;
    /// Called once with every distinct stack before the per-stack calls, so that a resolver
    /// can look all addresses up in one pass per file.
    fn prefetch(&mut self, _user: &[(u32, &[u64])], _kernel: &[&[u64]]) {}
    /// A key that is equal for two user stacks (of any processes) only if they have the same
    /// frames, e.g. because every address maps to the same file offset; `None` (the default)
    /// makes each process's stacks its own.
    fn user_stack_key(&mut self, _tgid: u32, _ips: &[u64]) -> Option<u64> {
        None
    }
}

/// The `comm` bytes as text, up to the first NUL.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Builds the profile: frames root first (outermost user … leaf user, kernel entry … kernel
/// leaf), completeness from the kernel's counters plus what symbolization found.
pub fn assemble(raw: &RawSamples, meta: ProfileMeta, resolver: &mut impl FrameResolver) -> Profile {
    let mut profile = Profile::new(meta);
    let mut completeness = Completeness {
        samples_taken: raw.counters.taken,
        lost_user_stack: raw.counters.lost_user_stack,
        lost_kernel_stack: raw.counters.lost_kernel_stack,
        lost_key_map_full: raw.counters.lost_key_map_full,
        user_stack_faults: raw.counters.user_stack_faults,
        ..Completeness::default()
    };
    // The same kernel stack recurs across processes, the same user stack within one.
    let mut kernel_cache: HashMap<i32, (Vec<FrameId>, u64)> = HashMap::new();
    // A process forked a thousand times has the same stacks a thousand times: keyed by where
    // the addresses lead, not by process, they are symbolized and interned once.
    let mut user_cache: HashMap<(i32, UserKey), (Vec<FrameId>, u64)> = HashMap::new();
    prefetch(raw, resolver);
    for (key, count) in &raw.counts {
        let SampleKey {
            tgid,
            user_stack_id,
            kernel_stack_id,
            cgroup_id,
            comm,
            ..
        } = *key;
        let mut truncated = false;
        let mut frames = Vec::new();
        if let Some(ips) = stack(raw, user_stack_id) {
            truncated |= ips.len() >= MAX_STACK_DEPTH;
            let key = match resolver.user_stack_key(tgid, ips) {
                Some(key) => UserKey::Locations(key),
                None => UserKey::Process(tgid),
            };
            let (ids, unknown) = user_cache
                .entry((user_stack_id, key))
                .or_insert_with(|| intern_root_first(&mut profile, resolver.user_frames(tgid, ips)))
                .clone();
            completeness.frames_unsymbolized += unknown * count;
            completeness.frames_total += ids.len() as u64 * count;
            frames.extend(ids);
        }
        if let Some(ips) = stack(raw, kernel_stack_id) {
            truncated |= ips.len() >= MAX_STACK_DEPTH;
            let (ids, unknown) = kernel_cache
                .entry(kernel_stack_id)
                .or_insert_with(|| intern_root_first(&mut profile, resolver.kernel_frames(ips)))
                .clone();
            completeness.frames_unsymbolized += unknown * count;
            completeness.frames_total += ids.len() as u64 * count;
            frames.extend(ids);
        }
        if truncated {
            completeness.truncated_stacks += count;
        }
        profile.add_stack(Stack {
            comm: comm_str(&comm),
            tgid,
            cgroup_id,
            frames,
            weight: *count,
        });
    }
    profile.merge_identical_stacks();
    profile.completeness = completeness;
    profile
}

/// What makes two user stacks with the same stack id symbolize alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum UserKey {
    /// [`FrameResolver::user_stack_key`].
    Locations(u64),
    /// The same process.
    Process(u32),
}

fn prefetch(raw: &RawSamples, resolver: &mut impl FrameResolver) {
    let mut seen_user = std::collections::HashSet::new();
    let mut seen_kernel = std::collections::HashSet::new();
    let mut user = Vec::new();
    let mut kernel = Vec::new();
    for (key, _) in &raw.counts {
        if let Some(ips) = stack(raw, key.user_stack_id)
            && seen_user.insert((key.tgid, key.user_stack_id))
        {
            user.push((key.tgid, ips));
        }
        if let Some(ips) = stack(raw, key.kernel_stack_id)
            && seen_kernel.insert(key.kernel_stack_id)
        {
            kernel.push(ips);
        }
    }
    resolver.prefetch(&user, &kernel);
}

fn stack(raw: &RawSamples, id: i32) -> Option<&[u64]> {
    if id < 0 {
        None
    } else {
        raw.stacks.get(&(id as u32)).map(Vec::as_slice)
    }
}

/// Interns leaf-first frames, returning ids root first and how many were unresolved.
fn intern_root_first(profile: &mut Profile, leaf_first: Vec<Frame>) -> (Vec<FrameId>, u64) {
    let unknown = leaf_first.iter().filter(|f| !f.symbolized).count() as u64;
    let ids = leaf_first
        .into_iter()
        .rev()
        .map(|f| profile.intern(f))
        .collect();
    (ids, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect::SampleCounters, profile::FrameKind};

    struct Fake;
    impl FrameResolver for Fake {
        fn user_frames(&mut self, _tgid: u32, ips: &[u64]) -> Vec<Frame> {
            ips.iter()
                .map(|&ip| {
                    if ip == 0xdead {
                        Frame::unknown(FrameKind::User, Some("/bin/x"), ip)
                    } else {
                        Frame::function(format!("u{ip}"), FrameKind::User)
                    }
                })
                .collect()
        }
        fn kernel_frames(&mut self, ips: &[u64]) -> Vec<Frame> {
            ips.iter()
                .map(|ip| Frame::function(format!("k{ip}"), FrameKind::Kernel))
                .collect()
        }
    }

    fn key(tgid: u32, user: i32, kernel: i32) -> SampleKey {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"work");
        SampleKey {
            cgroup_id: 9,
            tgid,
            user_stack_id: user,
            kernel_stack_id: kernel,
            _pad: 0,
            comm,
        }
    }

    #[test]
    fn orders_frames_root_first_with_kernel_frames_last_and_counts_unknowns() {
        let raw = RawSamples {
            counts: vec![(key(1, 0, 1), 3), (key(1, 2, -14), 2)],
            stacks: HashMap::from([(0, vec![3, 2, 1]), (1, vec![20, 10]), (2, vec![0xdead, 1])]),
            counters: SampleCounters {
                taken: 5,
                user_stack_faults: 0,
                ..Default::default()
            },
        };
        let profile = assemble(&raw, ProfileMeta::default(), &mut Fake);
        assert_eq!(profile.total_weight(), 5);
        let top = &profile.stacks[0];
        assert_eq!(top.weight, 3);
        assert_eq!(top.comm, "work");
        let names: Vec<_> = top
            .frames
            .iter()
            .map(|&id| profile.frame(id).name.as_str())
            .collect();
        assert_eq!(names, ["u1", "u2", "u3", "k10", "k20"]);
        assert_eq!(profile.completeness.frames_total, 3 * 5 + 2 * 2);
        assert_eq!(profile.completeness.frames_unsymbolized, 2);
        assert_eq!(profile.completeness.samples_taken, 5);
    }

    #[test]
    fn marks_stacks_at_the_depth_limit_as_truncated() {
        let deep: Vec<u64> = (1..=MAX_STACK_DEPTH as u64).collect();
        let raw = RawSamples {
            counts: vec![(key(1, 0, -14), 4)],
            stacks: HashMap::from([(0, deep)]),
            counters: SampleCounters::default(),
        };
        assert_eq!(
            assemble(&raw, ProfileMeta::default(), &mut Fake)
                .completeness
                .truncated_stacks,
            4
        );
    }
}
