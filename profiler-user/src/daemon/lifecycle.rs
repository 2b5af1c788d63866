//! Process lifecycle per cgroup: execs and process exits from the kernel's `PROC_COUNTS`, with
//! the wait status of the latest exit. Entries of removed cgroups are moved out of the kernel
//! map into one total, so that the map and the labels stay bounded.

use std::collections::{HashMap, HashSet};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuHashMap},
};
use profiler_common::{MAP_PROC_COUNTS, ProcCounts};

use super::syscalls::REMOVED_CGROUPS;
use crate::probes::ProbeError;

/// One cgroup's processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcTotals {
    /// Successful execs.
    pub execs: u64,
    /// Processes that ended.
    pub exits: u64,
    /// The wait status of the latest exit, when there was one.
    pub last_exit_status: Option<u32>,
}

impl ProcTotals {
    fn add(&mut self, other: &Self) {
        self.execs += other.execs;
        self.exits += other.exits;
        self.last_exit_status = other.last_exit_status.or(self.last_exit_status);
    }
}

/// Folds one cgroup's per-CPU counts: sums, and the status of the latest exit on any CPU.
pub fn fold_cpus(per_cpu: &[ProcCounts]) -> ProcTotals {
    let latest = per_cpu
        .iter()
        .filter(|c| c.last_exit_ns > 0)
        .max_by_key(|c| c.last_exit_ns);
    ProcTotals {
        execs: per_cpu.iter().map(|c| c.execs).sum(),
        exits: per_cpu.iter().map(|c| c.exits).sum(),
        last_exit_status: latest.map(|c| c.last_exit_status),
    }
}

/// What removed cgroups counted, moved out of the kernel map.
#[derive(Debug, Default)]
pub struct ProcStats {
    removed: ProcTotals,
}

fn counts_map(ebpf: &mut Ebpf) -> Result<PerCpuHashMap<&mut MapData, u64, ProcCounts>, ProbeError> {
    let map = ebpf
        .map_mut(MAP_PROC_COUNTS)
        .ok_or(ProbeError::MissingMap(MAP_PROC_COUNTS))?;
    PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map {
        map: MAP_PROC_COUNTS,
        source,
    })
}

impl ProcStats {
    /// Totals per cgroup id, removed cgroups under [`REMOVED_CGROUPS`].
    pub fn totals(&self, ebpf: &mut Ebpf) -> Result<HashMap<u64, ProcTotals>, ProbeError> {
        let map = counts_map(ebpf)?;
        let mut out = HashMap::new();
        for entry in map.iter() {
            match entry {
                Ok((id, per_cpu)) => {
                    out.insert(id, fold_cpus(&per_cpu));
                }
                Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(ProbeError::Map {
                        map: MAP_PROC_COUNTS,
                        source,
                    });
                }
            }
        }
        if self.removed != ProcTotals::default() {
            out.entry(REMOVED_CGROUPS).or_default().add(&self.removed);
        }
        Ok(out)
    }

    /// The totals of cgroup `id` now.
    pub fn of(ebpf: &mut Ebpf, id: u64) -> Option<ProcTotals> {
        let map = counts_map(ebpf).ok()?;
        map.get(&id, 0).ok().map(|per_cpu| fold_cpus(&per_cpu))
    }

    /// Moves the entries of cgroups not in `live` out of the kernel map.
    pub fn retire_removed(&mut self, ebpf: &mut Ebpf, live: &HashSet<u64>) {
        let Ok(mut map) = counts_map(ebpf) else {
            return;
        };
        let gone: Vec<(u64, ProcTotals)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(id, _)| !live.contains(id))
            .map(|(id, per_cpu)| (id, fold_cpus(&per_cpu)))
            .collect();
        for (id, totals) in gone {
            // A removed cgroup runs nothing: what was read is all it counted.
            if map.remove(&id).is_ok() {
                self.removed.add(&totals);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_counts_sum_and_the_latest_exit_wins() {
        let cpus = [
            ProcCounts {
                execs: 2,
                exits: 1,
                last_exit_ns: 50,
                last_exit_status: 256,
                _pad: 0,
            },
            ProcCounts {
                execs: 1,
                exits: 2,
                last_exit_ns: 90,
                last_exit_status: 9,
                _pad: 0,
            },
            ProcCounts::default(),
        ];
        let t = fold_cpus(&cpus);
        assert_eq!((t.execs, t.exits, t.last_exit_status), (3, 3, Some(9)));
        assert_eq!(fold_cpus(&[ProcCounts::default()]).last_exit_status, None);
    }
}
