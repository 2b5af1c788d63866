//! Retiring exited processes from the syscall tracer's per-process maps, on a thread of its
//! own: every second it reads the maps in batches (`BPF_MAP_LOOKUP_BATCH`, a few syscalls for
//! thousands of entries), folds what exited processes counted into the daemon's totals and
//! deletes their entries (`BPF_MAP_DELETE_BATCH`). At 100 sandbox runs a second a node makes
//! about 5 000 (process, syscall) entries a second: retired every 10 s from the collector's own
//! thread, one key at a time, the 16 Ki-entry map was full most of the time.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::Pod;
use profiler_common::{SyscallErrnoKey, SyscallKey, SyscallStats};

use super::syscalls::{SyscallTotals, SyscallTotalsMap};

/// How often exited processes are moved out of the kernel maps.
pub const RETIRE_EVERY: Duration = Duration::from_secs(1);

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of the kernel's `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is an initialised `bpf_attr` prefix of the size passed; the buffers it
    // points to hold `count` keys and values of the map's sizes (checked by the callers).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every entry of the hash map `fd`: its key and its raw value (`value_size` bytes; for a
/// per-CPU map, one value per possible CPU, each rounded up to 8 bytes). Concurrent updates
/// may make a key appear twice; the later copy wins.
pub fn lookup_all<K: Pod + Eq + std::hash::Hash>(
    fd: BorrowedFd<'_>,
    value_size: usize,
) -> io::Result<HashMap<K, Vec<u8>>> {
    let key_size = size_of::<K>();
    let mut chunk = 1024usize;
    let mut out = HashMap::new();
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * key_size];
        let mut values = vec![0u8; chunk * value_size];
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&token_in) as u64
            },
            out_batch: std::ptr::from_mut(&mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(chunk);
        for i in 0..n {
            // SAFETY: entry i lies within `keys`; K is plain data, any bytes are a valid K.
            let key: K =
                unsafe { std::ptr::read_unaligned(keys.as_ptr().add(i * key_size).cast()) };
            out.insert(key, values[i * value_size..(i + 1) * value_size].to_vec());
        }
        match result {
            Ok(()) => {
                token_in = token_out;
                first = false;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // One hash bucket holds more entries than the chunk: a bigger chunk.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 && chunk < 1 << 16 => {
                chunk *= 4;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes `keys` from the hash map `fd`; returns which ones were deleted.
pub fn delete_keys<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> Vec<bool> {
    let mut deleted = vec![false; keys.len()];
    let mut from = 0;
    while from < keys.len() {
        let rest = &keys[from..];
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = (attr.count as usize).min(rest.len());
        for d in &mut deleted[from..from + done] {
            *d = true;
        }
        match result {
            Ok(()) => break,
            // The kernel stops at a key it cannot delete: skip that one.
            Err(_) => from += done + 1,
        }
    }
    deleted
}

/// Whether process `tgid` is still there (zombies included).
fn alive(tgid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(tgid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The number of possible CPUs (the per-CPU values in a map entry).
fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1).max(1)
}

/// Sums the per-CPU [`SyscallStats`] of one raw entry.
fn fold_stats(raw: &[u8], cpus: usize) -> SyscallTotals {
    let stride = size_of::<SyscallStats>().next_multiple_of(8);
    let mut totals = SyscallTotals::default();
    for cpu in 0..cpus {
        let Some(bytes) = raw.get(cpu * stride..cpu * stride + size_of::<SyscallStats>()) else {
            break;
        };
        // SAFETY: `bytes` holds one SyscallStats, plain data.
        let s: SyscallStats = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        totals.count += s.count;
        totals.errors += s.errors;
        totals.total_ns += s.total_ns;
        for (a, b) in totals.hist.iter_mut().zip(&s.hist) {
            *a += b;
        }
    }
    totals
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetirePass {
    /// Statistics entries moved out.
    pub stats: usize,
    /// Errno entries deleted.
    pub errnos: usize,
}

/// The maps a pass works on.
pub struct RetireMaps {
    /// `SYSCALL_STATS`.
    pub stats: OwnedFd,
    /// `SYSCALL_ERRNOS`.
    pub errnos: OwnedFd,
}

/// One pass: the statistics of exited processes are added to `retired` (under its lock, so
/// that a reader holding the lock sees each call exactly once) and their entries deleted.
pub fn retire_pass(maps: &RetireMaps, retired: &Mutex<SyscallTotalsMap>) -> io::Result<RetirePass> {
    let cpus = possible_cpus();
    let stride = size_of::<SyscallStats>().next_multiple_of(8);
    let mut dead: HashMap<u32, bool> = HashMap::new();
    let mut is_dead = |tgid: u32| *dead.entry(tgid).or_insert_with(|| !alive(tgid));
    let mut pass = RetirePass::default();
    {
        let mut retired = retired.lock().unwrap();
        let entries: HashMap<SyscallKey, Vec<u8>> = lookup_all(maps.stats.as_fd(), stride * cpus)?;
        let exited: Vec<(SyscallKey, Vec<u8>)> = entries
            .into_iter()
            .filter(|(key, _)| is_dead(key.tgid))
            .collect();
        let keys: Vec<SyscallKey> = exited.iter().map(|(k, _)| *k).collect();
        let deleted = delete_keys(maps.stats.as_fd(), &keys);
        for ((key, raw), gone) in exited.iter().zip(deleted) {
            // An exited process writes no more: what was read is all it counted.
            if gone {
                retired
                    .entry((key.cgroup_id, key.nr))
                    .or_default()
                    .add(&fold_stats(raw, cpus));
                pass.stats += 1;
            }
        }
    }
    // The daemon does not show errnos: the entries of exited processes just go.
    let errnos: HashMap<SyscallErrnoKey, Vec<u8>> = lookup_all(maps.errnos.as_fd(), 8 * cpus)?;
    let keys: Vec<SyscallErrnoKey> = errnos.into_keys().filter(|key| is_dead(key.tgid)).collect();
    pass.errnos = delete_keys(maps.errnos.as_fd(), &keys)
        .into_iter()
        .filter(|&d| d)
        .count();
    Ok(pass)
}

/// The retiring thread; stopped and joined on drop.
pub struct Retirer {
    stop: Arc<AtomicBool>,
    /// Statistics entries moved out so far.
    pub retired_entries: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Retirer {
    /// Starts retiring from `maps` into `retired` every [`RETIRE_EVERY`].
    pub fn start(maps: RetireMaps, retired: Arc<Mutex<SyscallTotalsMap>>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let retired_entries = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&retired_entries));
            std::thread::Builder::new()
                .name("flamewarden-retire".into())
                .spawn(move || {
                    let mut warned = false;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(RETIRE_EVERY);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match retire_pass(&maps, &retired) {
                            Ok(pass) => {
                                count.fetch_add(pass.stats as u64, Ordering::Relaxed);
                            }
                            Err(e) if !warned => {
                                warned = true;
                                tracing::warn!("syscall map upkeep: {e}");
                            }
                            Err(_) => {}
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            retired_entries,
            handle: Some(handle),
        })
    }
}

impl Drop for Retirer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_statistics_are_summed_across_cpus() {
        let stride = size_of::<SyscallStats>().next_multiple_of(8);
        let mut raw = vec![0u8; stride * 2];
        for (cpu, count) in [(0usize, 3u64), (1, 4)] {
            let mut s = SyscallStats {
                count,
                errors: 1,
                total_ns: 100,
                max_ns: 0,
                hist: [0; profiler_common::LATENCY_BUCKETS],
            };
            s.hist[5] = count;
            // SAFETY: the slot holds one SyscallStats.
            unsafe {
                std::ptr::write_unaligned(raw[cpu * stride..].as_mut_ptr().cast(), s);
            }
        }
        let t = fold_stats(&raw, 2);
        assert_eq!((t.count, t.errors, t.total_ns, t.hist[5]), (7, 2, 200, 7));
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
