//! What happens to address spaces, as plain data: the mapping tracker's records and the lines
//! of `/proc/PID/maps` both become [`MappingEvent`]s.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// How a mapped file is recognised, across records and when it is reopened by path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileIdentity {
    /// Device (`makedev(major, minor)`) and inode, from `/proc/PID/maps` or `PERF_RECORD_MMAP2`.
    Inode {
        /// The device, as `/proc/PID/maps` shows it.
        dev: u64,
        /// The inode number.
        ino: u64,
    },
    /// The GNU build id the kernel read when the file was mapped (empty if it could not).
    BuildId(Vec<u8>),
    /// Nothing but the path (`PERF_RECORD_MMAP`).
    Unknown,
}

/// A mapped file: its path as the kernel printed it and its identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The path, possibly ending in ` (deleted)`, or a special name such as `[vdso]`.
    pub path: PathBuf,
    /// What else the kernel said about the file.
    pub identity: FileIdentity,
}

const DELETED: &[u8] = b" (deleted)";

impl FileKey {
    /// Whether this names a file on disk (not `[vdso]`, not anonymous memory).
    pub fn is_file(&self) -> bool {
        let bytes = self.path.as_os_str().as_bytes();
        bytes.starts_with(b"/") && !bytes.starts_with(b"//anon")
    }

    /// The path without the ` (deleted)` the kernel appends to unlinked files.
    pub fn live_path(&self) -> &Path {
        let bytes = self.path.as_os_str().as_bytes();
        Path::new(OsStr::from_bytes(
            bytes.strip_suffix(DELETED).unwrap_or(bytes),
        ))
    }

    /// The build id, when the kernel reported one.
    pub fn build_id(&self) -> Option<&[u8]> {
        match &self.identity {
            FileIdentity::BuildId(id) if !id.is_empty() => Some(id),
            _ => None,
        }
    }
}

/// What the mapping tracker (or a `/proc` snapshot) saw happen to address spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingEvent {
    /// Process `pid` mapped `len` bytes of `file` at `start`, from `file_offset` on.
    Map {
        /// Thread group id.
        pid: u32,
        /// First address.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// Offset in the file of `start`.
        file_offset: u64,
        /// `PROT_*` bits, when known (`PERF_RECORD_MMAP` has none).
        prot: Option<u32>,
        /// The file.
        file: Arc<FileKey>,
    },
    /// `PERF_RECORD_FORK`: `pid`/`ppid` are thread group ids, `tid`/`ptid` thread ids; a new
    /// thread has `pid == ppid`.
    Fork {
        /// The child's thread group id.
        pid: u32,
        /// The parent's thread group id.
        ppid: u32,
        /// The child's thread id.
        tid: u32,
        /// The parent's thread id.
        ptid: u32,
    },
    /// Process `pid` called execve: a new image replaces the old one.
    Exec {
        /// Thread group id.
        pid: u32,
    },
    /// `PERF_RECORD_EXIT` of a thread.
    Exit {
        /// Thread group id.
        pid: u32,
        /// Thread id.
        tid: u32,
    },
}

/// The executable mappings in the text of `/proc/PID/maps`, as [`MappingEvent::Map`]s.
pub fn parse_proc_maps(pid: u32, text: &str) -> Vec<MappingEvent> {
    text.lines()
        .filter_map(|line| parse_maps_line(pid, line))
        .collect()
}

fn parse_maps_line(pid: u32, line: &str) -> Option<MappingEvent> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms, offset, dev, inode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let path = fields.next().unwrap_or("").trim_start();
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    );
    let (major, minor) = dev.split_once(':')?;
    let dev = libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let file = FileKey {
        path: PathBuf::from(path),
        identity: FileIdentity::Inode {
            dev,
            ino: inode.parse().ok()?,
        },
    };
    Some(MappingEvent::Map {
        pid,
        start,
        len: end.checked_sub(start)?,
        file_offset: u64::from_str_radix(offset, 16).ok()?,
        prot: Some(libc::PROT_READ as u32 | libc::PROT_EXEC as u32),
        file: Arc::new(file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_lines_of_proc_maps() {
        let text = "\
55d4c1a00000-55d4c1a02000 r--p 00000000 08:01 1234567                    /usr/bin/cat
55d4c1a02000-55d4c1a06000 r-xp 00002000 08:01 1234567                    /usr/bin/cat
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000002000-7f0000003000 r-xp 00001000 fd:02 99                         /tmp/my solution (deleted)
7ffd1a1f0000-7ffd1a1f2000 r-xp 00000000 00:00 0                          [vdso]
";
        let events = parse_proc_maps(7, text);
        assert_eq!(events.len(), 3);
        let MappingEvent::Map {
            start,
            len,
            file_offset,
            file,
            ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (*start, *len, *file_offset),
            (0x55d4c1a02000, 0x4000, 0x2000)
        );
        assert_eq!(file.path, Path::new("/usr/bin/cat"));
        assert_eq!(
            file.identity,
            FileIdentity::Inode {
                dev: libc::makedev(8, 1),
                ino: 1234567
            }
        );
        let MappingEvent::Map { file, .. } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(file.live_path(), Path::new("/tmp/my solution"));
        assert!(file.is_file());
    }
}
