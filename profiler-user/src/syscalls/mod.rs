//! Syscall statistics and slow calls as users see them: rows regrouped by syscall, process or
//! cgroup, percentiles as log2 bucket bounds, errno names, ASCII histograms, text and JSON.
//! Pure: it takes what `collect::syscalls` read from the kernel and returns text.

pub mod histogram;
pub mod json;
pub mod names;
pub mod render;
pub mod slow;
pub mod table;

pub use histogram::{Bucket, LatencyHistogram, format_ns, percentile, render_ascii};
pub use json::{SYSCALLS_SCHEMA, to_json};
pub use names::{errno_name, parse_syscall, syscall_name};
pub use render::{footer, render_table};
pub use slow::{SlowCall, realtime_minus_monotonic_ns};
pub use table::{
    GroupBy, GroupKey, Names, SyscallCounters, SyscallLatency, SyscallRow, SyscallSnapshot,
    SyscallTable, build_table, latency_of,
};
