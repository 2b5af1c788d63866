//! Developer tasks: setup, build, demo, test, bench.
fn main() {}
