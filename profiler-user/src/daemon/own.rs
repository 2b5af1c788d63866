//! The daemon's own cost: CPU time and RSS from `/proc/self`, and the run time and run count
//! the kernel measured for each of its BPF programs (`BPF_ENABLE_STATS`).

use std::{collections::BTreeMap, os::fd::OwnedFd};

use super::metrics::SelfStats;

/// Turns on the kernel's BPF run-time statistics for as long as the returned fd is open (so
/// they go off with the daemon, even after `kill -9`).
pub fn enable_bpf_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!("BPF run-time statistics unavailable: {e}");
            None
        }
    }
}

/// CPU seconds (user + system) and resident bytes of this process.
pub fn cpu_and_rss() -> (f64, u64) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let cpu = (field(11) + field(12)) as f64 / ticks;
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let rss_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    (cpu, rss_pages * page)
}

/// Whether BPF statistics are being collected now.
pub fn bpf_stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0")
}

/// Run time and run count per program: the daemon's own (by id) and the guard programs of the
/// node (by name: every attachment has its own copy, they are summed).
pub fn program_stats(own_ids: &[(String, u32)]) -> Vec<(String, u64, u64)> {
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        let name = if let Some((name, _)) = own_ids.iter().find(|(_, id)| *id == info.id()) {
            name.clone()
        } else {
            match info.name_as_str() {
                Some(name) if name.starts_with("guard_") => name.to_owned(),
                _ => continue,
            }
        };
        let entry = by_name.entry(name).or_default();
        entry.0 += info.run_time().as_nanos() as u64;
        entry.1 += info.run_count();
    }
    by_name
        .into_iter()
        .map(|(name, (ns, runs))| (name, ns, runs))
        .collect()
}

/// Everything about the daemon's own cost.
pub fn self_stats(own_ids: &[(String, u32)]) -> SelfStats {
    let (cpu_seconds, rss_bytes) = cpu_and_rss();
    SelfStats {
        cpu_seconds,
        rss_bytes,
        programs: program_stats(own_ids),
        bpf_stats_enabled: bpf_stats_on(),
    }
}
