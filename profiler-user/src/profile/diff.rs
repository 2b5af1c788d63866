//! Comparing profiles by function: identity across rebuilds, share changes, and whether a
//! change is larger than the noise.
//!
//! A function is identified by its name normalized with [`normalize_function_name`] (generic
//! arguments, Rust symbol hashes, GCC clone suffixes and addresses stripped), so a rebuild that
//! moves every address still compares function by function.
//!
//! # Significance
//! A function's self share in a profile is the fraction of samples whose leaf it is. Between a
//! base and a new profile with `k₁/n₁` and `k₂/n₂` such samples the difference is tested with a
//! one-sided two-proportion z-test, `z = (p₂ − p₁) / se`, where `se` is the larger of
//! - the binomial standard error `√(p̄(1 − p̄)(1/n₁ + 1/n₂))` with the pooled share `p̄`, and
//! - the spread measured between the repeated runs of the new profile: the standard deviation
//!   `s` of the function's share across the `N` runs, as the standard error of a difference of
//!   two `N`-run means, `s·√(2/N)` (sampling is not perfectly binomial: run-to-run variation
//!   from scheduling and frequency changes is often larger).
//!
//! A function has *regressed* when its self share grew by more than the budget (percentage
//! points) **and** `z` is above the critical value (default 3.0, p ≈ 0.0013 one-sided).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::model::{Frame, Profile, Stack};

/// Default critical z value: one-sided p ≈ 0.0013.
pub const DEFAULT_Z_CRITICAL: f64 = 3.0;

/// A function's name with what changes between builds removed.
///
/// - generic arguments: `Vec<u8>::push` → `Vec::push`, `<Vec<u8> as Drop>::drop` →
///   `<Vec as Drop>::drop`;
/// - Rust legacy symbol hashes: `foo::h0123456789abcdef` → `foo`;
/// - GCC clone suffixes: `hot.isra.0`, `hot.constprop.1`, `hot.part.0`, `hot.cold` → `hot`;
/// - addresses and offsets: `[unknown] bench+0x1234` → `[unknown] bench`, `f+0x10` → `f`.
pub fn normalize_function_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        let after_identifier = out
            .chars()
            .next_back()
            .is_some_and(|p| p.is_alphanumeric() || p == '_');
        match c {
            // `<` after an identifier opens generic arguments; elsewhere (a qualified path
            // `<T as Trait>`) it is kept.
            '<' if depth > 0 || after_identifier => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    // Unbalanced brackets (`operator<`): keep the name as it was.
    let mut name = if depth == 0 { out } else { name.to_owned() };
    if let Some(at) = name.find("+0x") {
        name.truncate(at);
    }
    if let Some(at) = name.rfind("::h")
        && name[at + 3..].len() == 16
        && name[at + 3..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        name.truncate(at);
    }
    for suffix in [".isra.", ".constprop.", ".part.", ".cold", ".llvm."] {
        if let Some(at) = name.find(suffix)
            && at > 0
        {
            name.truncate(at);
        }
    }
    name.trim_end().to_owned()
}

/// `profile` with every frame renamed by [`normalize_function_name`] and identical stacks
/// merged; the differential flamegraph is drawn from these so rebuilt binaries line up.
pub fn normalized_profile(profile: &Profile) -> Profile {
    let mut out = Profile::new(profile.meta.clone());
    out.completeness = profile.completeness.clone();
    let ids: Vec<_> = profile
        .frames
        .iter()
        .map(|frame| {
            out.intern(Frame {
                name: normalize_function_name(&frame.name),
                kind: frame.kind,
                module: None,
                file: None,
                line: None,
                symbolized: frame.symbolized,
            })
        })
        .collect();
    for stack in &profile.stacks {
        out.add_stack(Stack {
            comm: stack.comm.clone(),
            tgid: 0,
            cgroup_id: 0,
            frames: stack.frames.iter().map(|&id| ids[id as usize]).collect(),
            weight: stack.weight,
        });
    }
    out.merge_identical_stacks();
    out
}

/// Self and total weight of every (normalized) function in one profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionWeights {
    /// Total weight of the profile.
    pub total: u64,
    /// Normalized name → (self weight, total weight).
    pub functions: HashMap<String, (u64, u64)>,
}

impl FunctionWeights {
    /// Weights of `profile`'s functions; recursion counts a stack once in a total.
    ///
    /// Names are normalized once per interned frame; the per-stack loop is index work only, so
    /// a 100 000-stack profile takes milliseconds.
    pub fn of(profile: &Profile) -> Self {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let function_of: Vec<usize> = profile
            .frames
            .iter()
            .map(|frame| {
                let next = index.len();
                *index
                    .entry(normalize_function_name(&frame.name))
                    .or_insert_with_key(|name| {
                        names.push(name.clone());
                        next
                    })
            })
            .collect();
        let mut weights = vec![(0u64, 0u64); names.len()];
        // The last stack that added to a function's total: recursion must not count it twice.
        let mut last_counted = vec![usize::MAX; names.len()];
        for (stack_index, stack) in profile.stacks.iter().enumerate() {
            if stack.weight == 0 {
                continue;
            }
            for &id in &stack.frames {
                let function = function_of[id as usize];
                if last_counted[function] != stack_index {
                    last_counted[function] = stack_index;
                    weights[function].1 += stack.weight;
                }
            }
            if let Some(&leaf) = stack.frames.last() {
                weights[function_of[leaf as usize]].0 += stack.weight;
            }
        }
        Self {
            total: profile.total_weight(),
            functions: names.into_iter().zip(weights).collect(),
        }
    }

    /// Self share of `name`, 0 to 1.
    pub fn self_share(&self, name: &str) -> f64 {
        share(self.functions.get(name).map_or(0, |w| w.0), self.total)
    }

    /// Total share of `name`, 0 to 1.
    pub fn total_share(&self, name: &str) -> f64 {
        share(self.functions.get(name).map_or(0, |w| w.1), self.total)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Thresholds of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffSettings {
    /// A function regresses only when its self share grew by more than this many points.
    pub budget_pct: f64,
    /// … and its z value is above this.
    pub z_critical: f64,
    /// Functions whose self and total share are below this (in both profiles) are left out.
    pub min_share_pct: f64,
}

impl Default for DiffSettings {
    fn default() -> Self {
        Self {
            budget_pct: 5.0,
            z_critical: DEFAULT_Z_CRITICAL,
            min_share_pct: 0.5,
        }
    }
}

/// What a change of one function amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Grew by more than the budget and the noise.
    Regressed,
    /// Shrank by more than the budget and the noise.
    Improved,
    /// Within the budget or the noise.
    Unchanged,
}

/// One function compared between base and new.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionChange {
    /// Normalized function name.
    pub name: String,
    /// Self share in the base profile, percent.
    pub base_self_pct: f64,
    /// Self share in the new profile, percent.
    pub new_self_pct: f64,
    /// Total share in the base profile, percent.
    pub base_total_pct: f64,
    /// Total share in the new profile, percent.
    pub new_total_pct: f64,
    /// `new_self_pct − base_self_pct`, percentage points.
    pub delta_self_pts: f64,
    /// `new_total_pct − base_total_pct`, percentage points.
    pub delta_total_pts: f64,
    /// The noise the delta was compared with: one standard error, percentage points.
    pub noise_pts: f64,
    /// `delta_self_pts / noise_pts` (0 when there is no noise estimate and no change).
    pub z: f64,
    /// The outcome.
    pub verdict: Verdict,
}

/// Every function of two profiles compared, largest self-share growth first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileDiff {
    /// The thresholds used.
    pub settings: DiffSettings,
    /// Weight of the base profile.
    pub base_total: u64,
    /// Weight of the new profile.
    pub new_total: u64,
    /// How many runs the noise between runs was measured over (0 or 1: binomial only).
    pub runs: usize,
    /// The compared functions.
    pub functions: Vec<FunctionChange>,
}

impl ProfileDiff {
    /// Functions that regressed.
    pub fn regressions(&self) -> impl Iterator<Item = &FunctionChange> {
        self.functions
            .iter()
            .filter(|f| f.verdict == Verdict::Regressed)
    }

    /// Functions that improved.
    pub fn improvements(&self) -> impl Iterator<Item = &FunctionChange> {
        self.functions
            .iter()
            .filter(|f| f.verdict == Verdict::Improved)
    }
}

/// Compares `new` (merged from the runs in `new_runs`; may be empty) with `base`.
pub fn diff_profiles(
    base: &Profile,
    new: &Profile,
    new_runs: &[Profile],
    settings: DiffSettings,
) -> ProfileDiff {
    let base_w = FunctionWeights::of(base);
    let new_w = FunctionWeights::of(new);
    let runs: Vec<FunctionWeights> = new_runs.iter().map(FunctionWeights::of).collect();
    let names: BTreeMap<&str, ()> = base_w
        .functions
        .keys()
        .chain(new_w.functions.keys())
        .map(|k| (k.as_str(), ()))
        .collect();
    let mut functions = Vec::new();
    for name in names.keys() {
        // Synthetic kinds are fine to compare; only skip empty names.
        if name.is_empty() {
            continue;
        }
        let (p1, p2) = (base_w.self_share(name), new_w.self_share(name));
        let (t1, t2) = (base_w.total_share(name), new_w.total_share(name));
        let min = settings.min_share_pct / 100.0;
        if p1.max(p2) < min && t1.max(t2) < min {
            continue;
        }
        let (n1, n2) = (base_w.total as f64, new_w.total as f64);
        let pooled = (p1 * n1 + p2 * n2) / (n1 + n2).max(1.0);
        let binomial = if n1 > 0.0 && n2 > 0.0 {
            (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt()
        } else {
            0.0
        };
        let between_runs = if runs.len() >= 2 {
            let shares: Vec<f64> = runs.iter().map(|r| r.self_share(name)).collect();
            std_dev(&shares) * (2.0 / runs.len() as f64).sqrt()
        } else {
            0.0
        };
        let se = binomial.max(between_runs);
        let delta = p2 - p1;
        let z = if se > 0.0 {
            delta / se
        } else if delta == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(delta)
        };
        let beyond_budget = delta.abs() * 100.0 > settings.budget_pct;
        let verdict = if beyond_budget && z > settings.z_critical {
            Verdict::Regressed
        } else if beyond_budget && z < -settings.z_critical {
            Verdict::Improved
        } else {
            Verdict::Unchanged
        };
        functions.push(FunctionChange {
            name: (*name).to_owned(),
            base_self_pct: p1 * 100.0,
            new_self_pct: p2 * 100.0,
            base_total_pct: t1 * 100.0,
            new_total_pct: t2 * 100.0,
            delta_self_pts: delta * 100.0,
            delta_total_pts: (t2 - t1) * 100.0,
            noise_pts: se * 100.0,
            z: if z.is_finite() { z } else { z.signum() * 1e9 },
            verdict,
        });
    }
    functions.sort_by(|a, b| {
        b.delta_self_pts
            .total_cmp(&a.delta_self_pts)
            .then_with(|| a.name.cmp(&b.name))
    });
    ProfileDiff {
        settings,
        base_total: base_w.total,
        new_total: new_w.total,
        runs: new_runs.len(),
        functions,
    }
}

/// Sample standard deviation (n − 1); 0 for fewer than two values.
fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    var.sqrt()
}

/// Several runs as one profile: frames re-interned, stacks concatenated and merged, weights,
/// durations and completeness counters summed; the metadata of the first run otherwise.
pub fn merge_profiles(runs: &[Profile]) -> Profile {
    let mut merged = Profile::new(runs.first().map(|r| r.meta.clone()).unwrap_or_default());
    merged.meta.duration_ms = runs.iter().map(|r| r.meta.duration_ms).sum();
    for run in runs {
        let ids: Vec<_> = run
            .frames
            .iter()
            .map(|f| merged.intern(f.clone()))
            .collect();
        for stack in &run.stacks {
            merged.add_stack(Stack {
                frames: stack.frames.iter().map(|&id| ids[id as usize]).collect(),
                // Each run is a new process: one pid would split every stack N ways.
                tgid: 0,
                ..stack.clone()
            });
        }
        let (m, c) = (&mut merged.completeness, &run.completeness);
        m.samples_taken += c.samples_taken;
        m.lost_user_stack += c.lost_user_stack;
        m.lost_kernel_stack += c.lost_kernel_stack;
        m.lost_key_map_full += c.lost_key_map_full;
        m.user_stack_faults += c.user_stack_faults;
        m.truncated_stacks += c.truncated_stacks;
        m.frames_total += c.frames_total;
        m.frames_unsymbolized += c.frames_unsymbolized;
        m.mapping_records_lost += c.mapping_records_lost;
    }
    merged.merge_identical_stacks();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{FrameKind, ProfileMeta};

    fn profile(stacks: &[(&[&str], u64)]) -> Profile {
        let mut p = Profile::new(ProfileMeta::default());
        for (names, weight) in stacks {
            let frames = names
                .iter()
                .map(|n| p.intern(Frame::function(*n, FrameKind::User)))
                .collect();
            p.add_stack(Stack {
                comm: "bench".into(),
                tgid: 1,
                cgroup_id: 1,
                frames,
                weight: *weight,
            });
        }
        p
    }

    #[test]
    fn normalization_strips_generics_hashes_clones_and_addresses() {
        for (raw, normalized) in [
            ("alloc::vec::Vec<u8>::push", "alloc::vec::Vec::push"),
            (
                "<Vec<u8> as core::ops::Drop>::drop",
                "<Vec as core::ops::Drop>::drop",
            ),
            (
                "core::ptr::drop_in_place::h0123456789abcdef",
                "core::ptr::drop_in_place",
            ),
            ("hot_function.isra.0", "hot_function"),
            ("hot_function.constprop.3", "hot_function"),
            ("[unknown] bench+0x1a2b", "[unknown] bench"),
            ("std::map<int, std::vector<int>>::find", "std::map::find"),
            ("main", "main"),
        ] {
            assert_eq!(normalize_function_name(raw), normalized, "{raw}");
        }
    }

    #[test]
    fn a_doubled_hot_function_regresses_and_the_others_improve() {
        let base = profile(&[(&["main", "hot"], 6000), (&["main", "warm"], 4000)]);
        let new = profile(&[(&["main", "hot"], 12000), (&["main", "warm"], 4000)]);
        let diff = diff_profiles(&base, &new, &[], DiffSettings::default());
        let regressed: Vec<&str> = diff.regressions().map(|f| f.name.as_str()).collect();
        assert_eq!(regressed, ["hot"]);
        let improved: Vec<&str> = diff.improvements().map(|f| f.name.as_str()).collect();
        assert_eq!(improved, ["warm"]);
        let main = diff.functions.iter().find(|f| f.name == "main").unwrap();
        assert_eq!(main.verdict, Verdict::Unchanged);
    }

    #[test]
    fn growth_within_the_noise_between_runs_is_not_a_regression() {
        let base = profile(&[(&["hot"], 600), (&["warm"], 400)]);
        let runs = [
            profile(&[(&["hot"], 200), (&["warm"], 140)]),
            profile(&[(&["hot"], 280), (&["warm"], 60)]),
            profile(&[(&["hot"], 200), (&["warm"], 140)]),
        ];
        let new = merge_profiles(&runs);
        let diff = diff_profiles(&base, &new, &runs, DiffSettings::default());
        let hot = diff.functions.iter().find(|f| f.name == "hot").unwrap();
        assert!(hot.delta_self_pts > 5.0, "{hot:?}");
        assert_eq!(hot.verdict, Verdict::Unchanged, "{hot:?}");
    }

    #[test]
    fn rebuilt_addresses_compare_by_name() {
        let base = profile(&[
            (&["main", "[unknown] bench+0x1000"], 50),
            (&["main", "f"], 50),
        ]);
        let new = profile(&[
            (&["main", "[unknown] bench+0x2000"], 50),
            (&["main", "f"], 50),
        ]);
        let diff = diff_profiles(&base, &new, &[], DiffSettings::default());
        assert!(
            diff.functions.iter().all(|f| f.delta_self_pts == 0.0),
            "{diff:?}"
        );
        assert_eq!(normalized_profile(&base), normalized_profile(&new));
    }

    #[test]
    fn merging_runs_sums_weights_across_pids() {
        let a = profile(&[(&["main", "hot"], 3)]);
        let mut b = profile(&[(&["main", "hot"], 4)]);
        b.stacks[0].tgid = 2;
        let merged = merge_profiles(&[a, b]);
        assert_eq!(merged.stacks.len(), 1);
        assert_eq!(merged.total_weight(), 7);
    }
}
