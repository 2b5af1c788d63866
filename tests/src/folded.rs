//! Folded stacks as flamewarden writes them (`comm;outer;...;leaf COUNT`), read independently of
//! flamewarden's own code, and the shares the tests assert on.

use std::collections::{BTreeMap, BTreeSet};

/// Suffix of kernel frames in folded output.
pub const KERNEL_SUFFIX: &str = "_[k]";

/// Prefix of a frame whose address could not be resolved.
pub const UNKNOWN_PREFIX: &str = "[unknown]";

/// One line: the comm, the frames root first, and the line's count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedStack {
    /// The thread's command name (the first field).
    pub comm: String,
    /// Frames after the comm, outermost first; the last one is the leaf.
    pub frames: Vec<String>,
    /// Samples.
    pub count: u64,
}

impl FoldedStack {
    /// The innermost frame: where the sample's CPU time was spent ("self" time).
    pub fn leaf(&self) -> Option<&str> {
        self.frames.last().map(String::as_str)
    }
}

/// A parsed folded file.
#[derive(Clone, Debug, Default)]
pub struct FoldedProfile {
    /// Every line, in file order.
    pub stacks: Vec<FoldedStack>,
}

impl FoldedProfile {
    /// Parses folded text; blank lines are skipped, anything else must be `stack COUNT` with at
    /// least a comm and no empty frame.
    pub fn parse(text: &str) -> Result<FoldedProfile, String> {
        let mut stacks = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let lineno = index + 1;
            let (stack, count) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {lineno}: no count: {line:?}"))?;
            let count: u64 = count
                .parse()
                .map_err(|_| format!("line {lineno}: count {count:?} is not a number"))?;
            let mut fields = stack.split(';').map(str::to_owned);
            let comm = fields.next().unwrap_or_default();
            let frames: Vec<String> = fields.collect();
            if comm.is_empty() || frames.iter().any(String::is_empty) {
                return Err(format!("line {lineno}: empty field in {stack:?}"));
            }
            stacks.push(FoldedStack {
                comm,
                frames,
                count,
            });
        }
        Ok(FoldedProfile { stacks })
    }

    /// Total samples.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// Samples whose leaf frame is `function`.
    pub fn self_count(&self, function: &str) -> u64 {
        self.stacks
            .iter()
            .filter(|s| s.leaf() == Some(function))
            .map(|s| s.count)
            .sum()
    }

    /// Percentage of all samples whose leaf frame is `function`.
    pub fn self_share(&self, function: &str) -> f64 {
        percent(self.self_count(function), self.total())
    }

    /// Percentage of all samples with `function` anywhere on the stack (each stack counted once).
    pub fn total_share(&self, function: &str) -> f64 {
        let count = self
            .stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == function))
            .map(|s| s.count)
            .sum();
        percent(count, self.total())
    }

    /// Self percentage of every leaf frame, for messages.
    pub fn self_shares(&self) -> BTreeMap<String, f64> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for stack in &self.stacks {
            let leaf = stack.leaf().unwrap_or("(no frames)");
            *counts.entry(leaf.to_owned()).or_default() += stack.count;
        }
        let total = self.total();
        counts
            .into_iter()
            .map(|(f, c)| (f, percent(c, total)))
            .collect()
    }

    /// The leaf frames that take the most samples, best first, as `name share%` for messages.
    pub fn top(&self, n: usize) -> String {
        let mut shares: Vec<(String, f64)> = self.self_shares().into_iter().collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares
            .iter()
            .take(n)
            .map(|(f, s)| format!("{f} {s:.1}%"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether any frame of any stack satisfies `pred`.
    pub fn any_frame(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.stacks.iter().any(|s| s.frames.iter().any(|f| pred(f)))
    }

    /// Every distinct comm.
    pub fn comms(&self) -> BTreeSet<&str> {
        self.stacks.iter().map(|s| s.comm.as_str()).collect()
    }

    /// Samples with at least one kernel frame.
    pub fn kernel_count(&self) -> u64 {
        self.stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f.ends_with(KERNEL_SUFFIX)))
            .map(|s| s.count)
            .sum()
    }

    /// (unresolved user frames, all user frames), each weighted by the stack's count.
    pub fn unknown_user_frames(&self) -> (u64, u64) {
        let mut unknown = 0;
        let mut all = 0;
        for stack in &self.stacks {
            for frame in stack.frames.iter().filter(|f| !f.ends_with(KERNEL_SUFFIX)) {
                all += stack.count;
                if frame.starts_with(UNKNOWN_PREFIX) {
                    unknown += stack.count;
                }
            }
        }
        (unknown, all)
    }
}

/// `part` as a percentage of `whole`; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
cpu_mix;main;hot_function 6
cpu_mix;main;warm_function 3
cpu_mix;main;cold_function;asm_exc_page_fault_[k] 1

cpu_mix;[unknown] libc.so.6+0x1f00 2
";

    #[test]
    fn computes_self_and_total_shares() {
        let p = FoldedProfile::parse(TEXT).unwrap();
        assert_eq!(p.total(), 12);
        assert_eq!(p.self_share("hot_function"), 50.0);
        assert_eq!(p.self_share("cold_function"), 0.0);
        assert_eq!(p.total_share("main"), 10.0 * 100.0 / 12.0);
        assert_eq!(p.kernel_count(), 1);
        assert_eq!(p.unknown_user_frames(), (2, 6 * 2 + 3 * 2 + 2 + 2));
        assert_eq!(p.comms().into_iter().collect::<Vec<_>>(), ["cpu_mix"]);
    }

    #[test]
    fn rejects_lines_without_a_count_or_with_empty_frames() {
        assert!(FoldedProfile::parse("a;b\n").is_err());
        assert!(FoldedProfile::parse("a;;b 1\n").is_err());
        assert!(FoldedProfile::parse("a;b x\n").is_err());
    }
}
