//! The in-memory profile: interned frames, weighted stacks, metadata and completeness.
//!
//! Every output (folded, JSON, SVG, pprof, hot-path table) is built from a [`Profile`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Whether a frame ran in user space or in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// A user-space function.
    User,
    /// A kernel function (from kallsyms).
    Kernel,
    /// A synthetic frame flamewarden adds, e.g. `[off-cpu]`.
    Synthetic,
}

/// Name of the synthetic frame that marks an off-CPU stack; it sits right after the comm root.
///
/// Flamegraphs draw it and every frame above it in a blue palette, so blocked time never
/// reads as CPU time.
pub const OFF_CPU_FRAME_NAME: &str = "[off-cpu]";

/// One function in a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function name; `[unknown] module+0xoffset` when it could not be resolved.
    pub name: String,
    /// User, kernel or synthetic.
    pub kind: FrameKind,
    /// The ELF file (or `[kernel]`) the address belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Source file, when DWARF knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line, when DWARF knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// False when the address could not be resolved to a function.
    pub symbolized: bool,
}

impl Frame {
    /// A resolved user or kernel function.
    pub fn function(name: impl Into<String>, kind: FrameKind) -> Self {
        Self {
            name: name.into(),
            kind,
            module: None,
            file: None,
            line: None,
            symbolized: true,
        }
    }

    /// A frame flamewarden adds itself, e.g. [`OFF_CPU_FRAME_NAME`].
    pub fn synthetic(name: impl Into<String>) -> Self {
        Self::function(name, FrameKind::Synthetic)
    }

    /// The `[off-cpu]` marker frame, see [`OFF_CPU_FRAME_NAME`].
    pub fn off_cpu() -> Self {
        Self::synthetic(OFF_CPU_FRAME_NAME)
    }

    /// True for the `[off-cpu]` marker frame.
    pub fn is_off_cpu_marker(&self) -> bool {
        self.kind == FrameKind::Synthetic && self.name == OFF_CPU_FRAME_NAME
    }

    /// An address that could not be resolved: kept in the stack as `[unknown] module+0xoff`.
    pub fn unknown(kind: FrameKind, module: Option<&str>, offset: u64) -> Self {
        let name = match module {
            Some(module) => {
                let base = module.rsplit('/').next().unwrap_or(module);
                format!("[unknown] {base}+{offset:#x}")
            }
            None => format!("[unknown] {offset:#x}"),
        };
        Self {
            name,
            kind,
            module: module.map(str::to_owned),
            file: None,
            line: None,
            symbolized: false,
        }
    }
}

/// Index of a frame in [`Profile::frames`].
pub type FrameId = u32;

/// One distinct stack and how much weight (samples, or nanoseconds) it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// The thread's `comm`: the root frame of folded output.
    pub comm: String,
    /// Process id.
    pub tgid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Frames root first: outermost user frame … leaf user frame, then kernel frames.
    pub frames: Vec<FrameId>,
    /// Samples (or nanoseconds, see [`ProfileMeta::weight_unit`]).
    pub weight: u64,
}

/// What a profile's weights count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightUnit {
    /// CPU samples at [`ProfileMeta::frequency_hz`].
    #[default]
    Samples,
    /// Nanoseconds (off-CPU and wall-clock profiles).
    Nanoseconds,
}

/// How the profile was taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileMeta {
    /// What was profiled, in words: `command`, `pid 42`, `cgroup /sys/fs/…`, `all`.
    pub target: String,
    /// The profiled command line, when flamewarden started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Sampling frequency per CPU.
    pub frequency_hz: u64,
    /// How long the recording ran.
    pub duration_ms: u64,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// What [`Stack::weight`] counts.
    pub weight_unit: WeightUnit,
}

/// How complete a profile is; shown in every output so that nothing is lost silently.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Samples the kernel took for the target.
    pub samples_taken: u64,
    /// Samples dropped: user stack not stored (stack map full or hash collision).
    pub lost_user_stack: u64,
    /// Samples whose kernel stack was not stored.
    pub lost_kernel_stack: u64,
    /// Samples dropped because the aggregation map was full.
    pub lost_key_map_full: u64,
    /// Samples without a readable user stack (EFAULT, e.g. kernel threads); kept, kernel-only.
    pub user_stack_faults: u64,
    /// Stacks that hit the depth limit and are missing their outermost frames.
    pub truncated_stacks: u64,
    /// User/kernel frames in all stacks (weighted by samples).
    pub frames_total: u64,
    /// Of those, frames that could not be resolved to a function.
    pub frames_unsymbolized: u64,
    /// Mapping records (mmap/fork/exec) the kernel dropped: those processes may symbolize badly.
    pub mapping_records_lost: u64,
}

impl Completeness {
    /// All samples lost, whatever the cause.
    pub fn samples_lost(&self) -> u64 {
        self.lost_user_stack + self.lost_key_map_full
    }

    /// Unresolved frames as a percentage of all frames.
    pub fn unsymbolized_pct(&self) -> f64 {
        if self.frames_total == 0 {
            0.0
        } else {
            self.frames_unsymbolized as f64 * 100.0 / self.frames_total as f64
        }
    }
}

/// A whole profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// How it was taken.
    pub meta: ProfileMeta,
    /// Interned frames; stacks refer to them by index.
    pub frames: Vec<Frame>,
    /// Distinct stacks with their weights.
    pub stacks: Vec<Stack>,
    /// What was lost.
    pub completeness: Completeness,
    #[serde(skip)]
    index: HashMap<Frame, FrameId>,
}

impl Profile {
    /// An empty profile.
    pub fn new(meta: ProfileMeta) -> Self {
        Self {
            meta,
            ..Self::default()
        }
    }

    /// A profile from already-interned parts (e.g. read back from JSON), keeping frame ids as given.
    ///
    /// Stacks are not checked here: callers that read untrusted input check that every
    /// [`FrameId`] is below `frames.len()`. When `frames` holds duplicates, [`Profile::intern`]
    /// returns the first one.
    pub fn from_parts(
        meta: ProfileMeta,
        frames: Vec<Frame>,
        stacks: Vec<Stack>,
        completeness: Completeness,
    ) -> Self {
        let mut index = HashMap::with_capacity(frames.len());
        for (id, frame) in frames.iter().enumerate() {
            index.entry(frame.clone()).or_insert(id as FrameId);
        }
        Self {
            meta,
            frames,
            stacks,
            completeness,
            index,
        }
    }

    /// The id of `frame`, adding it on first use.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(frame.clone());
        self.index.insert(frame, id);
        id
    }

    /// Adds a stack; [`Profile::merge_identical_stacks`] merges duplicates afterwards.
    pub fn add_stack(&mut self, stack: Stack) {
        self.stacks.push(stack);
    }

    /// Merges identical (comm, tgid, cgroup, frames) stacks, summing weights.
    pub fn merge_identical_stacks(&mut self) {
        let mut merged: HashMap<(String, u32, u64, Vec<FrameId>), u64> = HashMap::new();
        for stack in self.stacks.drain(..) {
            *merged
                .entry((stack.comm, stack.tgid, stack.cgroup_id, stack.frames))
                .or_default() += stack.weight;
        }
        self.stacks = merged
            .into_iter()
            .map(|((comm, tgid, cgroup_id, frames), weight)| Stack {
                comm,
                tgid,
                cgroup_id,
                frames,
                weight,
            })
            .collect();
        self.stacks.sort_by(|a, b| {
            b.weight
                .cmp(&a.weight)
                .then_with(|| a.frames.cmp(&b.frames))
        });
    }

    /// Total weight of all stacks.
    pub fn total_weight(&self) -> u64 {
        self.stacks.iter().map(|s| s.weight).sum()
    }

    /// The frame with id `id`.
    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }
}
