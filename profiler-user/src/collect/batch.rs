//! Reading a whole BPF hash map with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): thousands of
//! entries per system call, where iterating costs two calls (next key, lookup) per entry. A
//! system-wide recording ends with tens of thousands of aggregated stacks.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// Entries asked for per call; a hash bucket holding more than this would fail with ENOSPC.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
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

/// Every (key, value) of the hash map `fd`, or `Ok(None)` when the kernel cannot read this map
/// in batches (callers then iterate).
pub fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<(K, V)>>> {
    batch(fd, BPF_MAP_LOOKUP_BATCH)
}

/// [`lookup_all`] that also deletes what it read, bucket by bucket in the kernel: an update
/// racing with it lands either in what is returned or in the map, never nowhere (a reader
/// that keeps running, the daemon, empties the map this way).
pub fn take_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<(K, V)>>> {
    batch(fd, BPF_MAP_LOOKUP_AND_DELETE_BATCH)
}

fn batch<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    command: libc::c_long,
) -> io::Result<Option<Vec<(K, V)>>> {
    let mut keys: Vec<MaybeUninit<K>> = (0..CHUNK).map(|_| MaybeUninit::uninit()).collect();
    let mut values: Vec<MaybeUninit<V>> = (0..CHUNK).map(|_| MaybeUninit::uninit()).collect();
    // The position token is a bucket index for hash maps; 8 bytes hold any token.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut entries = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const token_in) as u64
            },
            out_batch: (&raw mut token_out) as u64,
            map_fd: fd.as_raw_fd() as u32,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the key and value
        // buffers hold CHUNK elements of the map's key and value types (aya checked the sizes
        // when the map was typed) and the tokens are 8 writable bytes, all alive during the
        // call. The kernel writes at most `count` entries.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let filled = (attr.count as usize).min(CHUNK);
        if error
            .as_ref()
            .is_none_or(|e| e.raw_os_error() == Some(libc::ENOENT))
        {
            for i in 0..filled {
                // SAFETY: the kernel initialized the first `filled` keys and values; both
                // types are plain data.
                entries.push(unsafe { (keys[i].assume_init_read(), values[i].assume_init_read()) });
            }
        }
        match error {
            None => {}
            // ENOENT: that was the last batch (or the map is empty).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Some(entries)),
            // Not supported for this map type or kernel (ENOTSUPP is 524 inside the kernel).
            Some(e)
                if first
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | 524)
                    ) =>
            {
                return Ok(None);
            }
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
