//! The JSON profile (`docs/profile-json.md`), read with plain serde types of this crate so that
//! the tests do not trust flamewarden's own reader.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A `flamewarden.profile/v1` document.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonProfile {
    /// Format and version.
    pub schema: String,
    /// How the profile was taken.
    pub meta: JsonMeta,
    /// What the profile is missing.
    pub completeness: JsonCompleteness,
    /// Interned frames.
    pub frames: Vec<JsonFrame>,
    /// Distinct stacks and their weights.
    pub stacks: Vec<JsonStack>,
    /// Sum of the stacks' weights.
    pub total_weight: u64,
}

/// `meta`.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonMeta {
    /// What was profiled, in words.
    pub target: String,
    /// The profiled command line, when flamewarden started it.
    pub command: Option<Vec<String>>,
    /// Sampling frequency per CPU.
    pub frequency_hz: u64,
    /// How long the recording ran.
    pub duration_ms: u64,
    /// `samples` or `nanoseconds`.
    pub weight_unit: String,
}

/// `completeness`.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonCompleteness {
    /// Samples the kernel took for the target.
    pub samples_taken: u64,
    /// Samples dropped: user stack not stored.
    pub lost_user_stack: u64,
    /// Samples dropped: aggregation map full.
    pub lost_key_map_full: u64,
    /// Frames in all stacks, weighted.
    pub frames_total: u64,
    /// Of those, unresolved.
    pub frames_unsymbolized: u64,
    /// `frames_unsymbolized * 100 / frames_total`.
    pub unsymbolized_pct: f64,
}

/// One frame.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonFrame {
    /// Function name.
    pub name: String,
    /// `user`, `kernel` or `synthetic`.
    pub kind: String,
    /// ELF file, when known.
    pub module: Option<String>,
    /// Whether the address was resolved.
    pub symbolized: bool,
}

/// One stack.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonStack {
    /// Thread name.
    pub comm: String,
    /// Process id.
    pub tgid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Frame indices, root first.
    pub frames: Vec<u32>,
    /// Samples.
    pub weight: u64,
}

impl JsonProfile {
    /// Parses a document.
    pub fn parse(text: &str) -> Result<JsonProfile, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame a stack refers to.
    ///
    /// # Panics
    /// When the index is out of range (the document is invalid then).
    pub fn frame(&self, index: u32) -> &JsonFrame {
        self.frames.get(index as usize).unwrap_or_else(|| {
            panic!(
                "frame index {index} out of range ({} frames)",
                self.frames.len()
            )
        })
    }

    /// The leaf frame of a stack.
    pub fn leaf<'a>(&'a self, stack: &JsonStack) -> Option<&'a JsonFrame> {
        stack.frames.last().map(|&i| self.frame(i))
    }

    /// Weight per process id whose stacks satisfy `pred`.
    pub fn weight_by_tgid(&self, pred: impl Fn(&JsonStack) -> bool) -> BTreeMap<u32, u64> {
        let mut weights = BTreeMap::new();
        for stack in self.stacks.iter().filter(|s| pred(s)) {
            *weights.entry(stack.tgid).or_default() += stack.weight;
        }
        weights
    }

    /// Whether `stack` has a frame named `name`.
    pub fn stack_has(&self, stack: &JsonStack, name: &str) -> bool {
        stack.frames.iter().any(|&i| self.frame(i).name == name)
    }
}
