//! Hot paths: which functions the profile's weight is spent in (self) or under (total).

use std::collections::HashMap;

use super::model::{FrameKind, Profile};

/// One function's share of a profile.
///
/// Functions are told apart by name and kind only: the same function from two call sites, or
/// from two modules with the same symbol, is one row, as a reader of a flamegraph would count it.
#[derive(Clone, Debug, PartialEq)]
pub struct HotPath {
    /// Function name, as in [`super::Frame::name`].
    pub name: String,
    /// User, kernel or synthetic.
    pub kind: FrameKind,
    /// Weight of the stacks whose leaf is this function: time spent in the function itself.
    pub self_weight: u64,
    /// Weight of the stacks that contain this function anywhere, counted once per stack even
    /// when it recurses: time spent in it and in everything it called.
    pub total_weight: u64,
    /// `self_weight` as a percentage of the profile's total weight.
    pub self_pct: f64,
    /// `total_weight` as a percentage of the profile's total weight.
    pub total_pct: f64,
    /// True when `self_pct` reaches the threshold given to [`hot_paths`] (and the function
    /// has any self weight at all).
    pub hot: bool,
}

/// Every function of `profile` with its self and total weight, sorted by self weight
/// (descending; ties by total weight, then by name, so the order is stable).
///
/// The comm root is not a frame and never appears. Synthetic frames such as `[off-cpu]` do,
/// so the share of blocked time is visible. Runs in time linear in the number of frames of
/// all stacks.
pub fn hot_paths(profile: &Profile, hot_threshold_pct: f64) -> Vec<HotPath> {
    // Several interned frames (different modules or source lines) can share one function
    // name; resolve each FrameId to its row once, so the per-stack loop is index work only.
    let mut row_of_name: HashMap<(&str, FrameKind), usize> = HashMap::new();
    let mut rows: Vec<(&str, FrameKind)> = Vec::new();
    let row_of_frame: Vec<usize> = profile
        .frames
        .iter()
        .map(|frame| {
            *row_of_name
                .entry((frame.name.as_str(), frame.kind))
                .or_insert_with(|| {
                    rows.push((frame.name.as_str(), frame.kind));
                    rows.len() - 1
                })
        })
        .collect();

    let mut self_weight = vec![0u64; rows.len()];
    let mut total_weight = vec![0u64; rows.len()];
    // The last stack that added to a row's total: recursion (a row seen twice in one stack)
    // must not count that stack twice. usize::MAX is no stack.
    let mut last_counted = vec![usize::MAX; rows.len()];
    for (stack_index, stack) in profile.stacks.iter().enumerate() {
        if let Some(&leaf) = stack.frames.last() {
            self_weight[row_of_frame[leaf as usize]] += stack.weight;
        }
        for &id in &stack.frames {
            let row = row_of_frame[id as usize];
            if last_counted[row] != stack_index {
                last_counted[row] = stack_index;
                total_weight[row] += stack.weight;
            }
        }
    }

    let profile_total = profile.total_weight();
    let pct = |weight: u64| {
        if profile_total == 0 {
            0.0
        } else {
            weight as f64 * 100.0 / profile_total as f64
        }
    };
    let mut paths: Vec<HotPath> = rows
        .into_iter()
        .enumerate()
        // Frames interned but in no stack (e.g. after filtering) are not part of the profile.
        .filter(|&(row, _)| total_weight[row] > 0)
        .map(|(row, (name, kind))| {
            let self_pct = pct(self_weight[row]);
            HotPath {
                name: name.to_owned(),
                kind,
                self_weight: self_weight[row],
                total_weight: total_weight[row],
                self_pct,
                total_pct: pct(total_weight[row]),
                hot: self_weight[row] > 0 && self_pct >= hot_threshold_pct,
            }
        })
        .collect();
    paths.sort_by(|a, b| {
        b.self_weight
            .cmp(&a.self_weight)
            .then_with(|| b.total_weight.cmp(&a.total_weight))
            .then_with(|| a.name.cmp(&b.name))
    });
    paths
}

/// The `n` paths with the largest total weight (ties by self weight, then by name), from the
/// output of [`hot_paths`].
pub fn top_by_total(paths: &[HotPath], n: usize) -> Vec<&HotPath> {
    let mut by_total: Vec<&HotPath> = paths.iter().collect();
    by_total.sort_by(|a, b| {
        b.total_weight
            .cmp(&a.total_weight)
            .then_with(|| b.self_weight.cmp(&a.self_weight))
            .then_with(|| a.name.cmp(&b.name))
    });
    by_total.truncate(n);
    by_total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{Frame, ProfileMeta, Stack};

    fn add(p: &mut Profile, names: &[&str], weight: u64) {
        let frames = names
            .iter()
            .map(|n| p.intern(Frame::function(*n, FrameKind::User)))
            .collect();
        p.add_stack(Stack {
            comm: "judge".into(),
            tgid: 1,
            cgroup_id: 1,
            frames,
            weight,
        });
    }

    fn find<'a>(paths: &'a [HotPath], name: &str) -> &'a HotPath {
        paths.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn self_is_leaf_weight_and_total_is_inclusive_weight() {
        let mut p = Profile::new(ProfileMeta::default());
        add(&mut p, &["main", "parse", "lex"], 60);
        add(&mut p, &["main", "parse"], 30);
        add(&mut p, &["main", "eval"], 10);
        let paths = hot_paths(&p, 25.0);

        let names: Vec<&str> = paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lex", "parse", "eval", "main"]);
        let parse = find(&paths, "parse");
        assert_eq!((parse.self_weight, parse.total_weight), (30, 90));
        assert_eq!((parse.self_pct, parse.total_pct), (30.0, 90.0));
        assert!(parse.hot);
        assert!(!find(&paths, "eval").hot);
        let main = find(&paths, "main");
        assert_eq!((main.self_weight, main.total_weight), (0, 100));
        assert!(!main.hot, "a function with no self time is never hot");
    }

    #[test]
    fn recursion_counts_a_stack_once_in_total() {
        let mut p = Profile::new(ProfileMeta::default());
        add(&mut p, &["main", "fib", "fib", "fib"], 8);
        add(&mut p, &["main", "fib", "fib", "add"], 2);
        let paths = hot_paths(&p, 50.0);
        let fib = find(&paths, "fib");
        assert_eq!((fib.self_weight, fib.total_weight), (8, 10));
        assert_eq!(fib.total_pct, 100.0);
        assert!(fib.hot);
    }

    #[test]
    fn same_name_from_different_modules_is_one_row_but_kernel_is_another() {
        let mut p = Profile::new(ProfileMeta::default());
        let mut a = Frame::function("memcpy", FrameKind::User);
        a.module = Some("/lib/libc.so.6".into());
        let mut b = a.clone();
        b.module = Some("/opt/app".into());
        let k = Frame::function("memcpy", FrameKind::Kernel);
        for (frame, weight) in [(a, 1), (b, 2), (k, 4)] {
            let id = p.intern(frame);
            p.add_stack(Stack {
                comm: "c".into(),
                tgid: 1,
                cgroup_id: 1,
                frames: vec![id],
                weight,
            });
        }
        let paths = hot_paths(&p, 100.0);
        assert_eq!(paths.len(), 2);
        assert_eq!(
            (paths[0].kind, paths[0].self_weight),
            (FrameKind::Kernel, 4)
        );
        assert_eq!((paths[1].kind, paths[1].self_weight), (FrameKind::User, 3));
    }

    #[test]
    fn top_by_total_orders_by_inclusive_weight() {
        let mut p = Profile::new(ProfileMeta::default());
        add(&mut p, &["main", "parse", "lex"], 60);
        add(&mut p, &["main", "eval"], 40);
        let paths = hot_paths(&p, 1.0);
        let top: Vec<&str> = top_by_total(&paths, 2)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(top, ["main", "lex"]);
    }

    #[test]
    fn empty_profile_has_no_paths() {
        assert!(hot_paths(&Profile::default(), 1.0).is_empty());
    }
}
