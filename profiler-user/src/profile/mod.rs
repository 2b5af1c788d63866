//! Profiles: the model, folded stacks, JSON, flamegraphs, hot paths. Pure: plain data in and out.

pub mod diff;
mod flame_tree;
pub mod flamegraph;
pub mod folded;
pub mod hotpath;
pub mod json;
pub mod markdown;
pub mod model;
pub mod pprof;
pub mod report;

pub use flamegraph::{
    FlamegraphError, SvgOptions, write_diff_svg, write_normalized_diff_svg, write_svg,
};
pub use folded::{FoldedError, FoldedLine, parse_folded, write_folded};
pub use hotpath::{HotPath, hot_paths, top_by_total};
pub use json::{JsonError, SCHEMA_ID, from_json_str, to_json_string, write_json};
pub use model::*;
pub use report::{completeness_line, terminal_report};
