//! The reads every collector does the same way: find a map, sum a per-CPU counter array, list a
//! hash map's entries, fetch the stacks that keys refer to. Errors name the map.

use std::{borrow::Borrow, collections::HashMap};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError, PerCpuArray, StackTraceMap},
};
use profiler_common::MAP_STACKS;

use crate::probes::ProbeError;

/// The map `name` of the loaded object.
pub(crate) fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::MissingMap(name))
}

/// Turns an aya map error into one that names the map.
pub(crate) fn map_error(map: &'static str) -> impl Fn(MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

/// Each slot of the per-CPU `u64` array `name`, summed over CPUs.
pub(crate) fn per_cpu_sums<const N: usize>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<[u64; N], ProbeError> {
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    per_cpu_array_sums(&array, name)
}

/// [`per_cpu_sums`] of an array already taken out of its object.
pub(crate) fn per_cpu_array_sums<T: Borrow<MapData>, const N: usize>(
    array: &PerCpuArray<T, u64>,
    name: &'static str,
) -> Result<[u64; N], ProbeError> {
    let mut sums = [0u64; N];
    for (i, sum) in sums.iter_mut().enumerate() {
        let slot = u32::try_from(i).unwrap_or(u32::MAX);
        *sum = array.get(&slot, 0).map_err(map_error(name))?.iter().sum();
    }
    Ok(sums)
}

/// Every entry an aya map iterator yields; a key deleted between listing and lookup (the
/// kernel side may delete while we read) is passed over.
pub(crate) fn entries<K, V>(
    name: &'static str,
    iter: impl Iterator<Item = Result<(K, V), MapError>>,
) -> Result<Vec<(K, V)>, ProbeError> {
    let mut out = Vec::new();
    for entry in iter {
        match entry {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_error(name)(source)),
        }
    }
    Ok(out)
}

/// The stacks of the shared stack map with these ids (leaf first); negative ids (a lost or
/// faulted stack) and ids no longer in the map are left out.
pub(crate) fn stacks(
    ebpf: &Ebpf,
    ids: impl IntoIterator<Item = i64>,
) -> Result<HashMap<u32, Vec<u64>>, ProbeError> {
    let stack_map: StackTraceMap<&MapData> =
        StackTraceMap::try_from(map(ebpf, MAP_STACKS)?).map_err(map_error(MAP_STACKS))?;
    let mut stacks = HashMap::new();
    for id in ids {
        let Ok(id) = u32::try_from(id) else { continue };
        if stacks.contains_key(&id) {
            continue;
        }
        match stack_map.get(&id, 0) {
            Ok(trace) => {
                stacks.insert(id, trace.frames().iter().map(|f| f.ip).collect());
            }
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_error(MAP_STACKS)(source)),
        }
    }
    Ok(stacks)
}
