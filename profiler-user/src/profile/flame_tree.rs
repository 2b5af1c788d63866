//! Folded lines for inferno with what it would not draw already merged away.
//!
//! inferno parses every folded line, merges them into frames and then drops every frame
//! narrower than the minimum width. For a profile of 100 000 distinct stacks almost all of that
//! work is on frames it then drops. [`FlameTree`] merges the stacks into a tree first and emits:
//! - the line of every frame inferno would draw (its self weight), and
//! - for the children of a drawn frame that are too narrow to be drawn, their weight in lines of
//!   their own, consecutive siblings merged as long as the merged line stays too narrow,
//!
//! so that inferno draws the same frames, at the same places, from at most a few thousand lines.
//!
//! Differential graphs (two counts per line) colour a frame by the difference of the counts of
//! its own line, scaled by the largest difference of any line: the line with the largest
//! difference keeps it, wherever it is merged into.

use std::{collections::HashMap, fmt::Write as _};

/// Frame names by id.
#[derive(Debug, Default)]
pub(crate) struct NameTable {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl NameTable {
    /// The id of `name`, added on first use.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }
}

/// One stack as added: its name ids in the arena, and its weight in one column.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u32,
    len: u32,
    column: u8,
    weight: u64,
}

/// A distinct stack (all entries with its path summed) in sorted order.
#[derive(Clone, Copy, Debug)]
struct Line {
    start: u32,
    len: u32,
    /// Weight: (base, new) for a diff, (0, weight) otherwise.
    own: [u64; 2],
}

/// Stacks merged by path; see the module documentation.
///
/// Stacks are sorted by their names (as inferno sorts lines), which lays the tree out depth
/// first: a frame's stacks are one contiguous run, its own line first. Only the runs of frames
/// that are drawn are split further, so the work beyond the sort is proportional to the drawn
/// part of the graph.
#[derive(Debug)]
pub(crate) struct FlameTree {
    names: NameTable,
    arena: Vec<u32>,
    entries: Vec<Entry>,
    normalize: bool,
}

impl FlameTree {
    /// An empty tree over the names of `names`.
    pub fn new(names: NameTable) -> Self {
        Self {
            names,
            arena: Vec::new(),
            entries: Vec::new(),
            normalize: false,
        }
    }

    /// Adds `weight` to the stack `path` (name ids, root first) in column 0 (a diff's base) or
    /// 1 (the drawn weight).
    pub fn add(&mut self, path: impl IntoIterator<Item = u32>, column: usize, weight: u64) {
        let start = self.arena.len();
        self.arena.extend(path);
        let len = self.arena.len() - start;
        if len == 0 {
            return;
        }
        self.entries.push(Entry {
            start: start as u32,
            len: len as u32,
            column: u8::from(column != 0),
            weight,
        });
    }

    /// inferno's differential normalization: every line's base count scaled to the new total
    /// (rounded down, line by line), when the totals differ.
    pub fn normalize_base(&mut self) {
        self.normalize = true;
    }

    /// The folded lines: `path COUNT`, or `path BASE NEW` when `differential`, for frames at
    /// least `min_width_pct` percent of the total wide (inferno's `min_width` of a fluid graph).
    pub fn lines(&mut self, min_width_pct: f64, differential: bool) -> Vec<String> {
        // Names by rank in byte order, the order of inferno's sorted lines.
        let mut by_rank: Vec<u32> = (0..self.names.names.len() as u32).collect();
        by_rank.sort_unstable_by(|&a, &b| {
            self.names.names[a as usize].cmp(&self.names.names[b as usize])
        });
        let mut rank = vec![0u32; by_rank.len()];
        for (r, &id) in by_rank.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        for id in &mut self.arena {
            *id = rank[*id as usize];
        }
        let arena = &self.arena;
        let path = |start: u32, len: u32| &arena[start as usize..(start + len) as usize];
        self.entries
            .sort_unstable_by(|a, b| path(a.start, a.len).cmp(path(b.start, b.len)));

        let mut lines: Vec<Line> = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            match lines.last_mut() {
                Some(last) if path(last.start, last.len) == path(entry.start, entry.len) => {
                    last.own[usize::from(entry.column)] += entry.weight;
                }
                _ => {
                    let mut own = [0; 2];
                    own[usize::from(entry.column)] = entry.weight;
                    lines.push(Line {
                        start: entry.start,
                        len: entry.len,
                        own,
                    });
                }
            }
        }
        let (base, time) = lines
            .iter()
            .fold((0u64, 0u64), |(b, n), l| (b + l.own[0], n + l.own[1]));
        if self.normalize && base != time && base != 0 {
            for line in &mut lines {
                line.own[0] = (line.own[0] as f64 * time as f64 / base as f64) as u64;
            }
        }
        // The line with the largest difference, whose colour scale every frame shares.
        let carrier = differential
            .then(|| (0..lines.len()).max_by_key(|&i| delta(lines[i].own).unsigned_abs()))
            .flatten();

        let names: Vec<&str> = by_rank
            .iter()
            .map(|&id| self.names.names[id as usize].as_str())
            .collect();
        let mut emit = Emitter {
            arena,
            lines: &lines,
            names: &names,
            carrier,
            max_delta: carrier.map_or(0, |i| delta(lines[i].own)),
            // inferno's own arithmetic, so that both agree on every frame.
            min_time: min_width_pct / (100.0 / time as f64),
            differential,
            path: String::new(),
            out: Vec::new(),
        };
        emit.node(0..lines.len(), 0);
        emit.out
    }
}

fn delta(counts: [u64; 2]) -> i128 {
    i128::from(counts[1]) - i128::from(counts[0])
}

struct Emitter<'a> {
    arena: &'a [u32],
    lines: &'a [Line],
    names: &'a [&'a str],
    carrier: Option<usize>,
    max_delta: i128,
    min_time: f64,
    differential: bool,
    path: String,
    out: Vec<String>,
}

/// Consecutive undrawn siblings merged into one line.
struct Chunk {
    first_name: u32,
    new: u64,
    carries_max: bool,
}

impl Emitter<'_> {
    fn name_at(&self, line: usize, depth: usize) -> Option<u32> {
        let Line { start, len, .. } = self.lines[line];
        (depth < len as usize).then(|| self.arena[start as usize + depth])
    }

    fn drawn(&self, width: u64) -> bool {
        // inferno drops a frame when `width < min_time`, so everything else is drawn (all of
        // it when the minimum is NaN).
        (width as f64).partial_cmp(&self.min_time) != Some(std::cmp::Ordering::Less)
    }

    /// The frame whose stacks are `range` (sharing their first `depth` names): its own line,
    /// then its children, each drawn or merged away.
    fn node(&mut self, range: std::ops::Range<usize>, depth: usize) {
        let mut i = range.start;
        if depth > 0 && i < range.end && self.lines[i].len as usize == depth {
            let own = self.lines[i].own;
            self.line(own[0], own[1]);
            i += 1;
        }
        let mut chunk: Option<Chunk> = None;
        while i < range.end {
            let name = self
                .name_at(i, depth)
                .expect("longer than the parent's path");
            let mut j = i;
            let mut width = 0;
            while j < range.end && self.name_at(j, depth) == Some(name) {
                width += self.lines[j].own[1];
                j += 1;
            }
            if self.drawn(width) {
                self.flush(chunk.take());
                let length = self.path.len();
                self.push_name(name);
                self.node(i..j, depth + 1);
                self.path.truncate(length);
            } else {
                if chunk.as_ref().is_some_and(|c| self.drawn(c.new + width)) {
                    self.flush(chunk.take());
                }
                let c = chunk.get_or_insert(Chunk {
                    first_name: name,
                    new: 0,
                    carries_max: false,
                });
                c.new += width;
                c.carries_max |= self.carrier.is_some_and(|k| (i..j).contains(&k));
            }
            i = j;
        }
        self.flush(chunk);
    }

    fn flush(&mut self, chunk: Option<Chunk>) {
        let Some(chunk) = chunk else {
            return;
        };
        let shift = if chunk.carries_max { self.max_delta } else { 0 };
        if chunk.new == 0 && shift == 0 {
            // Zero wide and no colour to carry: inferno would draw nothing of it.
            return;
        }
        let length = self.path.len();
        self.push_name(chunk.first_name);
        // new − base = shift; base ≥ 0 because the carrier's own line is part of the chunk.
        let base = (i128::from(chunk.new) - shift).max(0) as u64;
        self.line(base, chunk.new);
        self.path.truncate(length);
    }

    fn push_name(&mut self, name: u32) {
        if !self.path.is_empty() {
            self.path.push(';');
        }
        self.path.push_str(self.names[name as usize]);
    }

    fn line(&mut self, base: u64, new: u64) {
        let mut line = self.path.clone();
        // Writing to a String cannot fail.
        let _ = if self.differential {
            write!(line, " {base} {new}")
        } else {
            write!(line, " {new}")
        };
        self.out.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(stacks: &[(&str, usize, u64)]) -> FlameTree {
        let mut names = NameTable::default();
        let paths: Vec<(Vec<u32>, usize, u64)> = stacks
            .iter()
            .map(|(path, column, weight)| {
                (
                    path.split(';').map(|n| names.intern(n)).collect(),
                    *column,
                    *weight,
                )
            })
            .collect();
        let mut tree = FlameTree::new(names);
        for (path, column, weight) in paths {
            tree.add(path, column, weight);
        }
        tree
    }

    fn sorted(mut lines: Vec<String>) -> Vec<String> {
        lines.sort();
        lines
    }

    #[test]
    fn keeps_every_line_when_everything_is_wide_enough() {
        let mut t = tree(&[("a;b", 1, 5), ("a", 1, 2), ("a;c;d", 1, 3), ("a;b", 1, 1)]);
        assert_eq!(sorted(t.lines(0.0, false)), ["a 2", "a;b 6", "a;c;d 3"]);
    }

    #[test]
    fn merges_narrow_siblings_into_lines_that_stay_narrow() {
        // Total 1000; frames under 10 % (100) are not drawn.
        let mut stacks = vec![("m;big", 1, 600)];
        for leaf in ["m;s1;x", "m;s2", "m;s3", "m;s4"] {
            stacks.push((leaf, 1, 60));
        }
        stacks.push(("m;t", 1, 160));
        let mut t = tree(&stacks);
        let lines = sorted(t.lines(10.0, false));
        // s1 and s2 merged (120) would be drawn: each keeps a line of its own.
        assert_eq!(
            lines,
            [
                "m;big 600",
                "m;s1 60",
                "m;s2 60",
                "m;s3 60",
                "m;s4 60",
                "m;t 160"
            ]
        );
        let total: u64 = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn merges_many_tiny_siblings_and_drops_their_subtrees() {
        let mut stacks: Vec<(String, usize, u64)> = (0..50)
            .map(|i| (format!("m;f{i:02};deep;deeper"), 1, 2))
            .collect();
        stacks.push(("m;hot".into(), 1, 900));
        let refs: Vec<(&str, usize, u64)> = stacks
            .iter()
            .map(|(p, c, w)| (p.as_str(), *c, *w))
            .collect();
        let mut t = tree(&refs);
        // 1 % of 1000 = 10: runs of tiny siblings merge up to just under it.
        let lines = sorted(t.lines(1.0, false));
        assert_eq!(lines.len(), 14, "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains("deep")));
        assert!(lines.contains(&"m;hot 900".to_owned()));
        assert!(lines.contains(&"m;f00 8".to_owned()), "{lines:?}");
    }

    #[test]
    fn differential_lines_normalize_the_base_and_keep_the_largest_difference() {
        let mut t = tree(&[
            ("m;a", 0, 50),
            ("m;a", 1, 160),
            ("m;tiny;x", 0, 40),
            ("m;tiny;x", 1, 0),
            ("m;b", 0, 10),
            ("m;b", 1, 40),
        ]);
        t.normalize_base();
        // Base total 100 scaled to 200: a 100, x 80, b 20.
        let lines = sorted(t.lines(15.0, true));
        // `tiny` (0 wide) is merged away but keeps x's difference of -80, the largest.
        assert_eq!(lines, ["m;a 100 160", "m;b 20 40", "m;tiny 80 0"]);
    }
}
