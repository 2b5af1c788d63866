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

use super::syscalls::{REMOVED_CGROUPS, SyscallTotals, SyscallTotalsMap};

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

/// Buffers a pass reads and collects into, kept from pass to pass: once they have grown to
/// the node's load, a pass allocates nothing (at 100 sandbox runs a second, fresh buffers every
/// second fragmented the heap by more than 10 MB).
#[derive(Debug, Default)]
pub struct Scratch {
    /// Entries per `BPF_MAP_LOOKUP_BATCH`.
    chunk: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    /// tgid → exited, for this pass.
    dead: HashMap<u32, bool>,
    /// cgroup id → removed, for this pass.
    removed: HashMap<u64, bool>,
    exited: Vec<(SyscallKey, SyscallTotals)>,
    exited_keys: Vec<SyscallKey>,
    errno_keys: Vec<SyscallErrnoKey>,
}

/// Calls `f` with every entry of the hash map `fd`: its key and its raw value (`value_size`
/// bytes; for a per-CPU map, one value per possible CPU, each rounded up to 8 bytes), read in
/// batches into `scratch`. Concurrent updates may make a key appear twice.
pub fn for_each_entry<K: Pod>(
    fd: BorrowedFd<'_>,
    value_size: usize,
    scratch: &mut Scratch,
    mut f: impl FnMut(K, &[u8]),
) -> io::Result<()> {
    let key_size = size_of::<K>();
    if scratch.chunk == 0 {
        scratch.chunk = 256;
    }
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let chunk = scratch.chunk;
        scratch.keys.resize(chunk * key_size, 0);
        scratch.values.resize(chunk * value_size, 0);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&token_in) as u64
            },
            out_batch: std::ptr::from_mut(&mut token_out) as u64,
            keys: scratch.keys.as_mut_ptr() as u64,
            values: scratch.values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(chunk);
        for i in 0..n {
            // SAFETY: entry i lies within `keys`; K is plain data, any bytes are a valid K.
            let key: K =
                unsafe { std::ptr::read_unaligned(scratch.keys.as_ptr().add(i * key_size).cast()) };
            f(key, &scratch.values[i * value_size..(i + 1) * value_size]);
        }
        match result {
            Ok(()) => {
                token_in = token_out;
                first = false;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // One hash bucket holds more entries than the chunk: a bigger chunk.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 && chunk < 1 << 16 => {
                scratch.chunk *= 4;
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
    /// The cgroup2 mount, to ask whether a cgroup still exists; `None`: no such mount.
    pub cgroup_root: Option<OwnedFd>,
}

impl RetireMaps {
    /// Opens the cgroup2 mount for [`RetireMaps::cgroup_root`].
    pub fn open_cgroup_root() -> Option<OwnedFd> {
        let root = crate::probes::net::cgroup2_root().ok()?;
        std::fs::File::open(root).ok().map(OwnedFd::from)
    }
}

/// The kernel's `struct file_handle` for a kernfs node: its 64-bit id is the cgroup id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}
/// `FILEID_KERNFS` of `include/linux/exportfs.h`.
const FILEID_KERNFS: i32 = 0xfe;

/// Whether cgroup `id` still exists below the cgroup2 mount `root` (opened by its file handle);
/// `None` when the kernel does not say (no `CAP_DAC_READ_SEARCH`, no handle support).
fn cgroup_exists(root: BorrowedFd<'_>, id: u64) -> Option<bool> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: a valid mount descriptor and a file_handle of `handle_bytes` bytes of handle;
    // the descriptor it returns is ours and closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            root.as_raw_fd(),
            std::ptr::from_mut(&mut handle),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor was just opened and is not used elsewhere.
        unsafe { libc::close(fd as libc::c_int) };
        return Some(true);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESTALE | libc::ENOENT) => Some(false),
        _ => None,
    }
}

/// One pass: the statistics of exited processes are added to `retired` (under its lock, so
/// that a reader holding the lock sees each call exactly once) and their entries deleted.
pub fn retire_pass(
    maps: &RetireMaps,
    retired: &Mutex<SyscallTotalsMap>,
    scratch: &mut Scratch,
) -> io::Result<RetirePass> {
    let cpus = possible_cpus();
    let stride = size_of::<SyscallStats>().next_multiple_of(8);
    let mut dead = std::mem::take(&mut scratch.dead);
    let mut exited = std::mem::take(&mut scratch.exited);
    let mut keys = std::mem::take(&mut scratch.exited_keys);
    let mut errno_keys = std::mem::take(&mut scratch.errno_keys);
    dead.clear();
    exited.clear();
    keys.clear();
    errno_keys.clear();
    let mut is_dead = |tgid: u32| *dead.entry(tgid).or_insert_with(|| !alive(tgid));
    let mut removed = std::mem::take(&mut scratch.removed);
    removed.clear();
    let mut is_removed = |cgroup: u64| {
        *removed.entry(cgroup).or_insert_with(|| {
            maps.cgroup_root
                .as_ref()
                .and_then(|root| cgroup_exists(root.as_fd(), cgroup))
                == Some(false)
        })
    };
    let mut pass = RetirePass::default();
    let result = (|| {
        {
            let mut retired = retired.lock().unwrap();
            for_each_entry(
                maps.stats.as_fd(),
                stride * cpus,
                scratch,
                |key: SyscallKey, raw| {
                    if is_dead(key.tgid) {
                        exited.push((key, fold_stats(raw, cpus)));
                    }
                },
            )?;
            keys.extend(exited.iter().map(|(k, _)| *k));
            let deleted = delete_keys(maps.stats.as_fd(), &keys);
            // A key read twice is deleted once: the second copy is not counted again.
            for ((key, totals), gone) in exited.iter().zip(deleted) {
                // An exited process writes no more: what was read is all it counted. A
                // cgroup already removed (a finished sandbox run, mostly) goes straight into
                // the removed cgroups' totals: the map holds live cgroups only.
                if gone {
                    let cgroup = if is_removed(key.cgroup_id) {
                        REMOVED_CGROUPS
                    } else {
                        key.cgroup_id
                    };
                    retired.entry((cgroup, key.nr)).or_default().add(totals);
                    pass.stats += 1;
                }
            }
        }
        // The daemon does not show errnos: the entries of exited processes just go.
        for_each_entry(
            maps.errnos.as_fd(),
            8 * cpus,
            scratch,
            |key: SyscallErrnoKey, _| {
                if is_dead(key.tgid) {
                    errno_keys.push(key);
                }
            },
        )?;
        pass.errnos = delete_keys(maps.errnos.as_fd(), &errno_keys)
            .into_iter()
            .filter(|&d| d)
            .count();
        Ok(pass)
    })();
    scratch.dead = dead;
    scratch.removed = removed;
    scratch.exited = exited;
    scratch.exited_keys = keys;
    scratch.errno_keys = errno_keys;
    result
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
                    let mut scratch = Scratch::default();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(RETIRE_EVERY);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match retire_pass(&maps, &retired, &mut scratch) {
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
    fn a_cgroup_is_found_by_its_id_and_a_made_up_id_is_not() {
        let root = RetireMaps::open_cgroup_root().expect("a cgroup2 mount");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let relative = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let path = crate::probes::net::cgroup2_root()
            .unwrap()
            .join(relative.trim_start_matches('/'));
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(cgroup_exists(root.as_fd(), id), Some(true));
            assert_eq!(cgroup_exists(root.as_fd(), u64::MAX - 7), Some(false));
        } else {
            // Without CAP_DAC_READ_SEARCH the kernel does not say: the caller keeps the entry.
            assert_eq!(cgroup_exists(root.as_fd(), id), None);
        }
    }

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
