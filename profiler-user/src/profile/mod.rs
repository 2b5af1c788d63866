//! Profiles: the model, folded stacks, JSON, flamegraphs, hot paths. Pure: plain data in and out.

pub mod model;

pub use model::*;
