//! Tracks every executable mmap, fork and exec on the system through perf side-band records,
//! the way `perf record` does, so that processes that exit before the recording ends are still
//! symbolized: samples are read at the end, when `/proc/PID/maps` may be long gone.
//!
//! One `PERF_COUNT_SW_DUMMY` event per online CPU, system-wide, never samples; it only emits
//! MMAP2, COMM (exec), FORK and EXIT records into a ring buffer per CPU. A background thread
//! polls the rings, opens each newly mapped file at once (see [`crate::symbolize::PinnedFiles`]:
//! a judge may delete the binary as soon as the submission exits) and keeps the events for
//! [`AddressSpaces`]. Records the kernel had to drop are counted in [`MappingStats::lost`].

mod records;
#[cfg(test)]
mod tests;

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::{NonNull, addr_of_mut},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use perf_event_open_sys::{self as sys, bindings as perf};

pub use records::TimedEvent;
use records::{Record, Ring, parse_record};

use crate::symbolize::{AddressSpaces, DEFAULT_PINNED_FILES, MappingEvent, PinnedFiles};

/// How the tracker is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerOptions {
    /// Data pages per CPU ring buffer (a power of two); one more page holds the header.
    pub ring_pages: usize,
    /// The poller is woken when this many bytes are waiting in a ring.
    pub wakeup_bytes: u32,
    /// The poller looks at the rings at least this often, so that files are opened while the
    /// process that mapped them (or the binary's directory entry) still exists.
    pub poll_interval: Duration,
    /// Mapped files kept open at most (least recently mapped ones are closed first).
    pub max_pinned_files: usize,
    /// Ask the kernel for build ids in MMAP2 records (falls back to inodes if it cannot).
    pub build_ids: bool,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self {
            ring_pages: 128,
            wakeup_bytes: 4096,
            // Data past the watermark wakes the poller at once; the interval bounds how long a
            // trickle of records (and the pinning of their files) waits.
            poll_interval: Duration::from_millis(50),
            max_pinned_files: DEFAULT_PINNED_FILES,
            build_ids: true,
        }
    }
}

/// What the tracker saw; [`MappingStats::lost`] goes into every report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingStats {
    /// Records read from the rings.
    pub records: u64,
    /// Records the kernel dropped because a ring was full (`PERF_RECORD_LOST`): the processes
    /// they described may symbolize badly.
    pub lost: u64,
    /// Records too short for their type (should never happen; counted rather than trusted).
    pub malformed: u64,
    /// Mapped files that could be opened neither through `/proc/PID/map_files` nor their path.
    pub files_not_pinned: u64,
    /// Whether MMAP2 records carry build ids (else device and inode).
    pub build_ids: bool,
}

/// Why the tracker could not start.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The list of online CPUs could not be read or parsed.
    #[error("reading online CPUs from {ONLINE_CPUS}: {0}")]
    OnlineCpus(io::Error),
    /// `perf_event_open` of the dummy tracking event failed.
    #[error("perf_event_open(PERF_COUNT_SW_DUMMY, pid -1, cpu {cpu}): {source}")]
    Open {
        /// The CPU.
        cpu: u32,
        /// The error (EACCES: not root and perf_event_paranoid too high).
        source: io::Error,
    },
    /// Mapping the ring buffer failed.
    #[error("mmap of the {pages}-page perf ring buffer of cpu {cpu}: {source}")]
    Mmap {
        /// The CPU.
        cpu: u32,
        /// Pages asked for, header included.
        pages: usize,
        /// The error (EPERM/ENOMEM: over `perf_event_mlock_kb`).
        source: io::Error,
    },
    /// [`TrackerOptions::ring_pages`] is not a power of two.
    #[error("ring_pages {0}: must be a power of two")]
    RingPages(usize),
    /// The poller thread could not be started.
    #[error("starting the mapping tracker thread: {0}")]
    Spawn(io::Error),
}

const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

/// The running tracker. Start it before the profiled command execs; stop it after the samples
/// are drained.
#[derive(Debug)]
pub struct MappingTracker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Written on stop so that the poller wakes at once instead of at its next interval.
    wake: OwnedFd,
    collected: Mutex<Collected>,
}

#[derive(Debug)]
struct Collected {
    events: Vec<TimedEvent>,
    pinned: PinnedFiles,
    stats: MappingStats,
}

impl MappingTracker {
    /// Opens the tracking events on every online CPU and starts the poller thread.
    pub fn start(opts: TrackerOptions) -> Result<Self, MappingError> {
        if !opts.ring_pages.is_power_of_two() {
            return Err(MappingError::RingPages(opts.ring_pages));
        }
        let cpus = online_cpus()?;
        let mut build_ids = opts.build_ids;
        let mut rings = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let fd = match open_dummy(cpu, &opts, build_ids) {
                Err(e) if build_ids && is_unsupported(&e) => {
                    build_ids = false;
                    open_dummy(cpu, &opts, false)
                }
                other => other,
            }
            .map_err(|source| MappingError::Open { cpu, source })?;
            rings.push(PerfRing::map(fd, cpu, opts.ring_pages)?);
        }
        // SAFETY: eventfd takes no pointers; the returned fd is checked and then owned.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(MappingError::Spawn(io::Error::last_os_error()));
        }
        // SAFETY: `wake` is a fresh fd that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wake,
            collected: Mutex::new(Collected {
                events: Vec::new(),
                pinned: PinnedFiles::with_capacity(opts.max_pinned_files),
                stats: MappingStats {
                    build_ids,
                    ..MappingStats::default()
                },
            }),
        });
        let thread = std::thread::Builder::new()
            .name("fw-mappings".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    block_stop_signals();
                    poll_rings(rings, &shared, opts.poll_interval)
                }
            })
            .map_err(MappingError::Spawn)?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Replays what was recorded so far onto `spaces` (in time order) and hands it the files
    /// opened meanwhile; returns the counters so far. For a tracker that keeps running (daemon).
    pub fn drain(&self, spaces: &mut AddressSpaces) -> MappingStats {
        let (mut events, pinned, stats) = {
            let mut collected = self.shared.lock();
            let capacity = collected.pinned.capacity();
            (
                std::mem::take(&mut collected.events),
                std::mem::replace(&mut collected.pinned, PinnedFiles::with_capacity(capacity)),
                collected.stats,
            )
        };
        // Each CPU's stream is in order; a stable sort by time merges them.
        events.sort_by_key(|e| e.time);
        for event in &events {
            spaces.apply(&event.event);
        }
        spaces.adopt_pinned(pinned);
        stats
    }

    /// Reads the rings one last time, stops, and replays everything onto `seed` (usually an
    /// [`AddressSpaces::snapshot_proc`] taken right after [`MappingTracker::start`]).
    pub fn stop(mut self, mut seed: AddressSpaces) -> (AddressSpaces, MappingStats) {
        self.join();
        let stats = self.drain(&mut seed);
        (seed, stats)
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; failure only delays the stop
        // until the next poll interval.
        unsafe { libc::write(self.shared.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            // A panicking poller has already lost its rings; what it collected is still good.
            let _ = thread.join();
        }
    }
}

impl Drop for MappingTracker {
    fn drop(&mut self) {
        self.join();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.collected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP)
    )
}

fn open_dummy(cpu: u32, opts: &TrackerOptions, build_ids: bool) -> io::Result<OwnedFd> {
    let mut attr = perf::perf_event_attr {
        size: size_of::<perf::perf_event_attr>() as u32,
        type_: perf::PERF_TYPE_SOFTWARE,
        config: perf::PERF_COUNT_SW_DUMMY as u64,
        sample_type: (perf::PERF_SAMPLE_TID | perf::PERF_SAMPLE_TIME) as u64,
        ..Default::default()
    };
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_task(1);
    attr.set_sample_id_all(1);
    attr.set_exclude_kernel(1);
    attr.set_exclude_hv(1);
    attr.set_watermark(1);
    attr.__bindgen_anon_2.wakeup_watermark = opts.wakeup_bytes.max(1);
    attr.set_build_id(u64::from(build_ids));
    // SAFETY: `attr` is a fully initialised perf_event_attr whose `size` matches its type; a
    // dummy event only emits side-band records and changes nothing in the profiled processes.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            -1,
            cpu as i32,
            -1,
            perf::PERF_FLAG_FD_CLOEXEC as _,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One CPU's event and its mapped ring buffer.
struct PerfRing {
    fd: OwnedFd,
    header: NonNull<perf::perf_event_mmap_page>,
    mmap_len: usize,
    data: Ring,
}

// SAFETY: the mapping belongs to this value alone; it moves to the poller thread and is only
// touched there.
unsafe impl Send for PerfRing {}

impl PerfRing {
    fn map(fd: OwnedFd, cpu: u32, data_pages: usize) -> Result<Self, MappingError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mmap_len = (data_pages + 1) * page;
        // SAFETY: a fresh shared mapping of the perf fd; the kernel checks the length. Writable,
        // because writing data_tail is what tells the kernel which space it may reuse.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let source = io::Error::last_os_error();
            return Err(MappingError::Mmap {
                cpu,
                pages: data_pages + 1,
                source,
            });
        }
        let header = NonNull::new(base.cast::<perf::perf_event_mmap_page>())
            .expect("mmap never returns NULL on success");
        // SAFETY: the first page is the kernel's header; data_offset/data_size are constant
        // after mmap (zero on kernels older than 4.1, where data starts at the second page).
        let (offset, size) = unsafe {
            let h = header.as_ptr();
            match ((*h).data_offset as usize, (*h).data_size as usize) {
                (0, _) | (_, 0) => (page, data_pages * page),
                (offset, size) => (offset, size),
            }
        };
        // SAFETY: `offset + size <= mmap_len` and the mapping lives as long as `self`.
        let data = unsafe { Ring::new(base.cast::<u8>().add(offset), size as u64) };
        Ok(Self {
            fd,
            header,
            mmap_len,
            data,
        })
    }

    /// Hands every new record to `each`, then gives the space back to the kernel.
    fn drain(&mut self, scratch: &mut Vec<u8>, each: impl FnMut(&[u8])) {
        let h = self.header.as_ptr();
        // SAFETY: data_head/data_tail are naturally aligned u64s in the mapped header page that
        // the kernel accesses atomically; acquire on head makes the record bytes before it
        // visible, release on tail stops the kernel from overwriting them before we are done.
        let (head, tail) = unsafe {
            (
                AtomicU64::from_ptr(addr_of_mut!((*h).data_head)),
                AtomicU64::from_ptr(addr_of_mut!((*h).data_tail)),
            )
        };
        let head_pos = head.load(Ordering::Acquire);
        let tail_pos = tail.load(Ordering::Relaxed);
        let new_tail = self.data.read_records(tail_pos, head_pos, scratch, each);
        tail.store(new_tail, Ordering::Release);
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `map` created; nothing refers to it any more.
        unsafe { libc::munmap(self.header.as_ptr().cast(), self.mmap_len) };
    }
}

/// The poller thread: wait for data or the interval, read every ring, repeat; one last pass
/// after the stop flag so that nothing written before `stop` is missed.
fn poll_rings(mut rings: Vec<PerfRing>, shared: &Shared, interval: Duration) {
    let mut fds: Vec<libc::pollfd> = rings
        .iter()
        .map(|r| libc::pollfd {
            fd: r.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: shared.wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout = i32::try_from(interval.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    let mut scratch = Vec::new();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
            // Errors (EINTR) just mean an early pass over the rings.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        }
        let mut records = Vec::new();
        let mut collected = shared.lock();
        for ring in &mut rings {
            ring.drain(&mut scratch, |bytes| records.push(parse_record(bytes)));
        }
        let Collected {
            events,
            pinned,
            stats,
        } = &mut *collected;
        stats.records += records.len() as u64;
        for record in records {
            match record {
                Record::Event(event) => {
                    if let MappingEvent::Map {
                        pid,
                        start,
                        len,
                        prot,
                        file,
                        ..
                    } = &event.event
                    {
                        let executable = prot.is_none_or(|p| p & libc::PROT_EXEC as u32 != 0);
                        if executable
                            && file.is_file()
                            && !pinned.pin(file, *pid, *start, start + len)
                        {
                            stats.files_not_pinned += 1;
                        }
                    }
                    events.push(event);
                }
                Record::Lost(n) => stats.lost += n,
                Record::Malformed => stats.malformed += 1,
                Record::Ignored => {}
            }
        }
        drop(collected);
        if stopping {
            return;
        }
        for fd in &mut fds {
            fd.revents = 0;
        }
    }
}

/// SIGINT and SIGTERM go to the thread that waits for them (`record::EndWatch::wait`), so
/// that they cut its sleep short.
fn block_stop_signals() {
    // SAFETY: `set` is initialized by sigemptyset before use; pthread_sigmask only changes
    // this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn online_cpus() -> Result<Vec<u32>, MappingError> {
    let text = std::fs::read_to_string(ONLINE_CPUS).map_err(MappingError::OnlineCpus)?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        MappingError::OnlineCpus(io::Error::new(
            io::ErrorKind::InvalidData,
            text.trim().to_owned(),
        ))
    })
}

/// `0-3,5,7-8` → `[0, 1, 2, 3, 5, 7, 8]`.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().ok()?..=b.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}
