//! Off-CPU and wall-clock profiles from assembled parts: blocked stacks marked with the
//! synthetic `[off-cpu]` frame, CPU samples converted to time, and the two merged. Pure.

use crate::profile::{Completeness, Frame, Profile, WeightUnit};

/// Puts the `[off-cpu]` frame right after the comm root of every stack, so that blocked time
/// is told apart from CPU time (and drawn in its own colours).
pub fn mark_off_cpu(profile: &mut Profile) {
    let marker = profile.intern(Frame::off_cpu());
    for stack in &mut profile.stacks {
        stack.frames.insert(0, marker);
    }
}

/// Turns a sample-weighted profile taken at `frequency_hz` into a nanosecond-weighted one:
/// each sample stands for one sampling period of CPU time.
pub fn samples_to_time(profile: &mut Profile, frequency_hz: u64) {
    let period_ns = 1_000_000_000 / frequency_hz.max(1);
    for stack in &mut profile.stacks {
        stack.weight *= period_ns;
    }
    profile.meta.weight_unit = WeightUnit::Nanoseconds;
}

/// Adds every stack of `other` to `into` (frames re-interned), and its completeness counters.
pub fn merge_into(into: &mut Profile, other: Profile) {
    let ids: Vec<u32> = other
        .frames
        .iter()
        .map(|f| into.intern(f.clone()))
        .collect();
    for mut stack in other.stacks {
        for id in &mut stack.frames {
            *id = ids[*id as usize];
        }
        into.add_stack(stack);
    }
    into.merge_identical_stacks();
    let (a, b) = (&mut into.completeness, other.completeness);
    *a = Completeness {
        samples_taken: a.samples_taken + b.samples_taken,
        lost_user_stack: a.lost_user_stack + b.lost_user_stack,
        lost_kernel_stack: a.lost_kernel_stack + b.lost_kernel_stack,
        lost_key_map_full: a.lost_key_map_full + b.lost_key_map_full,
        user_stack_faults: a.user_stack_faults + b.user_stack_faults,
        truncated_stacks: a.truncated_stacks + b.truncated_stacks,
        frames_total: a.frames_total + b.frames_total,
        frames_unsymbolized: a.frames_unsymbolized + b.frames_unsymbolized,
        mapping_records_lost: a.mapping_records_lost.max(b.mapping_records_lost),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, ProfileMeta, Stack};

    fn profile(names: &[&str], weight: u64) -> Profile {
        let mut p = Profile::new(ProfileMeta::default());
        let frames = names
            .iter()
            .map(|n| p.intern(Frame::function(*n, FrameKind::User)))
            .collect();
        p.add_stack(Stack {
            comm: "w".into(),
            tgid: 1,
            cgroup_id: 2,
            frames,
            weight,
        });
        p.completeness.samples_taken = 1;
        p
    }

    fn names(p: &Profile, i: usize) -> Vec<&str> {
        p.stacks[i]
            .frames
            .iter()
            .map(|&id| p.frame(id).name.as_str())
            .collect()
    }

    #[test]
    fn wall_profile_holds_cpu_time_and_marked_blocked_time() {
        let mut on = profile(&["main", "compute"], 20);
        samples_to_time(&mut on, 100);
        assert_eq!(on.stacks[0].weight, 200_000_000);
        let mut off = profile(&["main", "sleep_a_while"], 190_000_000);
        mark_off_cpu(&mut off);
        merge_into(&mut on, off);
        assert_eq!(on.meta.weight_unit, WeightUnit::Nanoseconds);
        assert_eq!(on.total_weight(), 390_000_000);
        assert_eq!(names(&on, 0), ["main", "compute"]);
        assert_eq!(names(&on, 1), ["[off-cpu]", "main", "sleep_a_while"]);
        assert!(on.frame(on.stacks[1].frames[0]).is_off_cpu_marker());
        assert_eq!(on.completeness.samples_taken, 2);
    }
}
