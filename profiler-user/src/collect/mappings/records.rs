//! Perf ring-buffer reading and side-band record parsing, over plain bytes so that both are
//! tested without a kernel.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf, sync::Arc};

use perf_event_open_sys::bindings as perf;

use crate::symbolize::{FileIdentity, FileKey, MappingEvent};

/// `sample_id` trailer of every side-band record, for `sample_type = TID | TIME`:
/// `u32 pid, u32 tid, u64 time`.
const SAMPLE_ID_LEN: usize = 16;
const HEADER_LEN: usize = 8;

/// A mapping event and when it happened (perf clock), to merge the per-CPU streams in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedEvent {
    /// Perf clock timestamp, nanoseconds.
    pub time: u64,
    /// What happened.
    pub event: MappingEvent,
}

/// One parsed side-band record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// Something [`crate::symbolize::AddressSpaces`] replays.
    Event(TimedEvent),
    /// `PERF_RECORD_LOST`: the kernel dropped this many records (the ring was full).
    Lost(u64),
    /// A record this tracker does not need (a non-exec COMM, THROTTLE, …).
    Ignored,
    /// Shorter than its type requires.
    Malformed,
}

/// The data area of a perf ring buffer: `size` bytes (a power of two) at `base`, which the kernel
/// writes at `data_head` while we consume from `data_tail`.
pub(super) struct Ring {
    base: *const u8,
    size: u64,
}

impl Ring {
    /// # Safety
    /// `base` must be valid for reads of `size` bytes for as long as the value is used, and
    /// `size` must be a power of two.
    pub(super) unsafe fn new(base: *const u8, size: u64) -> Self {
        debug_assert!(size.is_power_of_two());
        Self { base, size }
    }

    /// Copies `dst.len()` bytes from ring position `pos`, continuing at the start of the ring if
    /// they run past its end.
    fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let offset = (pos & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - offset);
        let (a, b) = dst.split_at_mut(first);
        // SAFETY: `offset + first <= size` and `b.len() <= size - first`, both inside the area
        // `new` was promised; the kernel does not write between tail and head, which is all the
        // caller reads; the destination is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset), a.as_mut_ptr(), a.len());
            std::ptr::copy_nonoverlapping(self.base, b.as_mut_ptr(), b.len());
        }
    }

    /// Hands every complete record between `tail` and `head` to `each` (a record split across
    /// the end of the ring arrives whole) and returns the new tail.
    pub(super) fn read_records(
        &self,
        mut tail: u64,
        head: u64,
        scratch: &mut Vec<u8>,
        mut each: impl FnMut(&[u8]),
    ) -> u64 {
        while head.wrapping_sub(tail) >= HEADER_LEN as u64 {
            let mut header = [0u8; HEADER_LEN];
            self.copy_out(tail, &mut header);
            let size = u16::from_ne_bytes([header[6], header[7]]) as u64;
            if size < HEADER_LEN as u64 || size > head.wrapping_sub(tail) {
                // A record the kernel cannot have written: give up on this stretch rather than
                // loop on it.
                return head;
            }
            scratch.resize(size as usize, 0);
            self.copy_out(tail, scratch);
            each(scratch);
            tail = tail.wrapping_add(size);
        }
        tail
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The NUL-padded string the kernel wrote from `at` up to the sample_id trailer.
fn c_string(b: &[u8], at: usize) -> Option<&[u8]> {
    let field = b.get(at..b.len().checked_sub(SAMPLE_ID_LEN)?)?;
    Some(field.split(|&c| c == 0).next().unwrap_or(field))
}

/// Parses one record (header included) of an event opened with `sample_id_all` and
/// `sample_type = TID | TIME`.
pub(super) fn parse_record(b: &[u8]) -> Record {
    parse(b).unwrap_or(Record::Malformed)
}

fn parse(b: &[u8]) -> Option<Record> {
    let kind = u32_at(b, 0)?;
    let misc = u16_at(b, 4)? as u32;
    let time = || u64_at(b, b.len().checked_sub(8)?);
    let timed = |event| {
        Some(Record::Event(TimedEvent {
            time: time()?,
            event,
        }))
    };
    match kind {
        perf::PERF_RECORD_MMAP2 => {
            let identity = if misc & perf::PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
                let len = (*b.get(40)? as usize).min(20);
                FileIdentity::BuildId(b.get(44..44 + len)?.to_vec())
            } else {
                let dev = libc::makedev(u32_at(b, 40)?, u32_at(b, 44)?);
                FileIdentity::Inode {
                    dev,
                    ino: u64_at(b, 48)?,
                }
            };
            timed(map_event(b, Some(u32_at(b, 64)?), identity, 72)?)
        }
        perf::PERF_RECORD_MMAP => timed(map_event(b, None, FileIdentity::Unknown, 40)?),
        perf::PERF_RECORD_COMM if misc & perf::PERF_RECORD_MISC_COMM_EXEC != 0 => {
            timed(MappingEvent::Exec { pid: u32_at(b, 8)? })
        }
        perf::PERF_RECORD_FORK => timed(MappingEvent::Fork {
            pid: u32_at(b, 8)?,
            ppid: u32_at(b, 12)?,
            tid: u32_at(b, 16)?,
            ptid: u32_at(b, 20)?,
        }),
        perf::PERF_RECORD_EXIT => timed(MappingEvent::Exit {
            pid: u32_at(b, 8)?,
            tid: u32_at(b, 16)?,
        }),
        perf::PERF_RECORD_LOST => Some(Record::Lost(u64_at(b, 16)?)),
        _ => Some(Record::Ignored),
    }
}

/// MMAP and MMAP2 share `pid, tid, addr, len, pgoff`; the file name starts at `name_at`.
fn map_event(
    b: &[u8],
    prot: Option<u32>,
    identity: FileIdentity,
    name_at: usize,
) -> Option<MappingEvent> {
    let path = PathBuf::from(OsStr::from_bytes(c_string(b, name_at)?));
    Some(MappingEvent::Map {
        pid: u32_at(b, 8)?,
        start: u64_at(b, 16)?,
        len: u64_at(b, 24)?,
        file_offset: u64_at(b, 32)?,
        prot,
        file: Arc::new(FileKey { path, identity }),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A record as the kernel lays it out: header, `body`, then the sample_id trailer.
    pub(crate) fn record(kind: u32, misc: u16, body: &[u8], pid: u32, time: u64) -> Vec<u8> {
        let size = HEADER_LEN + body.len() + SAMPLE_ID_LEN;
        let mut r = Vec::with_capacity(size);
        r.extend(kind.to_ne_bytes());
        r.extend(misc.to_ne_bytes());
        r.extend((size as u16).to_ne_bytes());
        r.extend(body);
        r.extend(pid.to_ne_bytes());
        r.extend(pid.to_ne_bytes());
        r.extend(time.to_ne_bytes());
        r
    }

    fn words(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    fn padded_name(name: &str) -> Vec<u8> {
        let mut bytes = name.as_bytes().to_vec();
        bytes.resize((name.len() + 8) & !7, 0);
        bytes
    }

    /// `PERF_RECORD_MMAP2` with maj/min/ino.
    pub(crate) fn mmap2(
        pid: u32,
        addr: u64,
        len: u64,
        pgoff: u64,
        name: &str,
        time: u64,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(pid.to_ne_bytes());
        body.extend(pid.to_ne_bytes());
        body.extend(words(&[addr, len, pgoff]));
        body.extend(8u32.to_ne_bytes());
        body.extend(1u32.to_ne_bytes());
        body.extend(words(&[4242, 0]));
        body.extend(((libc::PROT_READ | libc::PROT_EXEC) as u32).to_ne_bytes());
        body.extend((libc::MAP_PRIVATE as u32).to_ne_bytes());
        body.extend(padded_name(name));
        record(
            perf::PERF_RECORD_MMAP2,
            perf::PERF_RECORD_MISC_USER as u16,
            &body,
            pid,
            time,
        )
    }

    #[test]
    fn parses_an_mmap2_record_with_inode() {
        let raw = mmap2(7, 0x5000, 0x2000, 0x1000, "/judge/a.out", 99);
        let Record::Event(TimedEvent { time, event }) = parse_record(&raw) else {
            panic!()
        };
        assert_eq!(time, 99);
        let MappingEvent::Map {
            pid,
            start,
            len,
            file_offset,
            prot,
            file,
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!((pid, start, len, file_offset), (7, 0x5000, 0x2000, 0x1000));
        assert_eq!(prot, Some((libc::PROT_READ | libc::PROT_EXEC) as u32));
        assert_eq!(file.path, PathBuf::from("/judge/a.out"));
        assert_eq!(
            file.identity,
            FileIdentity::Inode {
                dev: libc::makedev(8, 1),
                ino: 4242
            }
        );
    }

    #[test]
    fn parses_an_mmap2_record_with_build_id() {
        let mut body = vec![0u8; 64];
        body[0..4].copy_from_slice(&3u32.to_ne_bytes());
        body[32] = 4; // build_id_size
        body[36..40].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        body.extend(padded_name("/lib/libc.so.6"));
        let misc = (perf::PERF_RECORD_MISC_USER | perf::PERF_RECORD_MISC_MMAP_BUILD_ID) as u16;
        let raw = record(perf::PERF_RECORD_MMAP2, misc, &body, 3, 1);
        let Record::Event(TimedEvent {
            event: MappingEvent::Map { file, .. },
            ..
        }) = parse_record(&raw)
        else {
            panic!()
        };
        assert_eq!(
            file.identity,
            FileIdentity::BuildId(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(file.path, PathBuf::from("/lib/libc.so.6"));
    }

    #[test]
    fn parses_exec_fork_exit_and_lost_records() {
        let mut comm = Vec::new();
        comm.extend(5u32.to_ne_bytes());
        comm.extend(5u32.to_ne_bytes());
        comm.extend(padded_name("a.out"));
        let exec = record(
            perf::PERF_RECORD_COMM,
            perf::PERF_RECORD_MISC_COMM_EXEC as u16,
            &comm,
            5,
            2,
        );
        assert_eq!(
            parse_record(&exec),
            Record::Event(TimedEvent {
                time: 2,
                event: MappingEvent::Exec { pid: 5 }
            })
        );
        let rename = record(perf::PERF_RECORD_COMM, 0, &comm, 5, 2);
        assert_eq!(parse_record(&rename), Record::Ignored);

        let mut ids = Vec::new();
        for v in [6u32, 5, 6, 5] {
            ids.extend(v.to_ne_bytes());
        }
        ids.extend(3u64.to_ne_bytes());
        let fork = record(perf::PERF_RECORD_FORK, 0, &ids, 6, 3);
        let event = MappingEvent::Fork {
            pid: 6,
            ppid: 5,
            tid: 6,
            ptid: 5,
        };
        assert_eq!(
            parse_record(&fork),
            Record::Event(TimedEvent { time: 3, event })
        );
        let exit = record(perf::PERF_RECORD_EXIT, 0, &ids, 6, 4);
        let event = MappingEvent::Exit { pid: 6, tid: 6 };
        assert_eq!(
            parse_record(&exit),
            Record::Event(TimedEvent { time: 4, event })
        );

        let lost = record(perf::PERF_RECORD_LOST, 0, &words(&[1, 17]), 0, 5);
        assert_eq!(parse_record(&lost), Record::Lost(17));
        assert_eq!(parse_record(&lost[..12]), Record::Malformed);
    }

    #[test]
    fn reassembles_a_record_that_wraps_the_end_of_the_ring() {
        let first = mmap2(1, 0x1000, 0x1000, 0, "/bin/first", 10);
        let second = mmap2(
            1,
            0x2000,
            0x1000,
            0,
            "/usr/lib/second-with-a-long-name.so",
            11,
        );
        let size = 256u64;
        // `second` starts this many bytes before the end: inside its header, at its body, later.
        for split in [4u64, 8, 24, 100] {
            let tail = 3 * size + (size - split - first.len() as u64);
            let mut ring = vec![0u8; size as usize];
            for (i, byte) in first.iter().chain(&second).enumerate() {
                ring[((tail + i as u64) % size) as usize] = *byte;
            }
            let head = tail + (first.len() + second.len()) as u64;
            // SAFETY: `ring` outlives `view` and has `size` bytes.
            let view = unsafe { Ring::new(ring.as_ptr(), size) };
            let mut seen = Vec::new();
            let new_tail =
                view.read_records(tail, head, &mut Vec::new(), |r| seen.push(r.to_vec()));
            assert_eq!(new_tail, head);
            assert_eq!(seen, vec![first.clone(), second.clone()], "split {split}");
        }
    }

    #[test]
    fn stops_at_a_record_of_impossible_size() {
        let ring = [0u8; 64];
        // SAFETY: `ring` outlives `view` and has 64 bytes.
        let view = unsafe { Ring::new(ring.as_ptr(), 64) };
        let mut count = 0;
        assert_eq!(
            view.read_records(0, 32, &mut Vec::new(), |_| count += 1),
            32
        );
        assert_eq!(count, 0);
    }
}
