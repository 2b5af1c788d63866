//! Which file every executable address of every process came from, kept after the process exits.
//!
//! [`AddressSpaces`] is seeded from `/proc/PID/maps` and then replays the kernel's mmap, fork
//! and exec records in time order, so a process that lived 50 ms during the recording resolves
//! exactly like a live one.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::events::{FileKey, MappingEvent, parse_proc_maps};
use super::pinned::{PinnedFiles, fd_path, path_matches};

/// Index of a file in an [`AddressSpaces`]; stable for that value's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(u32);

/// Where an address of a process comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The file, for [`AddressSpaces::file`] and [`AddressSpaces::open_path`].
    pub file: FileId,
    /// Its path as the kernel printed it.
    pub path: &'a Path,
    /// The address's offset in the file.
    pub file_offset: u64,
    /// The file's build id, when known.
    pub build_id: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    end: u64,
    file_offset: u64,
    file: FileId,
}

/// Non-overlapping mappings by start address.
type Generation = BTreeMap<u64, Mapping>;

#[derive(Clone, Debug, Default)]
struct Process {
    /// Shared with the parent after a fork until either maps something.
    current: Arc<Generation>,
    /// Images replaced by exec (or by a reused pid), oldest first: samples carry no time, so an
    /// address the current image does not explain may still come from before the exec.
    older: Vec<Arc<Generation>>,
}

impl Process {
    fn start_generation(&mut self, next: Arc<Generation>) {
        let previous = std::mem::replace(&mut self.current, next);
        if !previous.is_empty() {
            self.older.push(previous);
        }
    }
}

/// The executable file mappings of every process seen, current and past.
#[derive(Debug, Default)]
pub struct AddressSpaces {
    processes: HashMap<u32, Process>,
    files: Vec<Arc<FileKey>>,
    file_ids: HashMap<Arc<FileKey>, FileId>,
    pinned: PinnedFiles,
}

impl AddressSpaces {
    /// Empty: no process known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `/proc/PID/maps` of `pids` (every process when `None`) and pins the mapped files;
    /// processes that exit meanwhile, or cannot be read, are skipped.
    pub fn snapshot_proc(pids: Option<&[u32]>) -> Self {
        let pids: Vec<u32> = match pids {
            Some(pids) => pids.to_vec(),
            None => std::fs::read_dir("/proc")
                .map(|dir| {
                    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut spaces = Self::new();
        for pid in pids {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            for event in parse_proc_maps(pid, &text) {
                if let MappingEvent::Map {
                    start, len, file, ..
                } = &event
                {
                    spaces.pinned.pin(file, pid, *start, start + len);
                }
                spaces.apply(&event);
            }
        }
        spaces
    }

    /// Replays one event. Events must come in the order they happened.
    pub fn apply(&mut self, event: &MappingEvent) {
        match event {
            MappingEvent::Map {
                pid,
                start,
                len,
                file_offset,
                prot,
                file,
            } => {
                let executable = prot.is_none_or(|p| p & libc::PROT_EXEC as u32 != 0);
                let kept = file.is_file() || file.path.as_os_str() == "[vdso]";
                if !executable || !kept || *len == 0 {
                    return;
                }
                let file = self.intern(file);
                let process = self.processes.entry(*pid).or_default();
                let mapping = Mapping {
                    end: start.saturating_add(*len),
                    file_offset: *file_offset,
                    file,
                };
                insert(Arc::make_mut(&mut process.current), *start, mapping);
            }
            MappingEvent::Fork { pid, ppid, .. } => {
                if pid == ppid {
                    return;
                }
                let inherited = self
                    .processes
                    .get(ppid)
                    .map(|p| Arc::clone(&p.current))
                    .unwrap_or_default();
                // An existing entry means the pid was reused: keep the old one resolvable.
                self.processes
                    .entry(*pid)
                    .or_default()
                    .start_generation(inherited);
            }
            MappingEvent::Exec { pid } => {
                self.processes
                    .entry(*pid)
                    .or_default()
                    .start_generation(Arc::default());
            }
            // Samples are read after the recording: an exited process must stay resolvable.
            MappingEvent::Exit { .. } => {}
        }
    }

    /// The file and offset of `ip` in process `tgid`: the newest mapping that contains it, the
    /// current image before images replaced by exec.
    pub fn resolve(&self, tgid: u32, ip: u64) -> Option<Resolved<'_>> {
        let process = self.processes.get(&tgid)?;
        let (start, mapping) = std::iter::once(&process.current)
            .chain(process.older.iter().rev())
            .find_map(|generation| {
                let (start, mapping) = generation.range(..=ip).next_back()?;
                (ip < mapping.end).then_some((*start, *mapping))
            })?;
        let key = self.file(mapping.file);
        Some(Resolved {
            file: mapping.file,
            path: &key.path,
            file_offset: mapping.file_offset + (ip - start),
            build_id: key.build_id(),
        })
    }

    /// The file behind `id`.
    pub fn file(&self, id: FileId) -> &Arc<FileKey> {
        &self.files[id.0 as usize]
    }

    /// A path that opens the file `id` as it was mapped: its own path while that still names
    /// the pinned inode, `/proc/self/fd/N` of the pinned copy otherwise, or the path as printed
    /// (without ` (deleted)`) when the file could not be pinned. Valid while `self` lives.
    pub fn open_path(&self, id: FileId) -> PathBuf {
        let key = self.file(id);
        match self.pinned.file(key) {
            Some(file) if !path_matches(key.live_path(), file) => fd_path(file),
            _ => key.live_path().to_owned(),
        }
    }

    /// Takes over files the tracker opened when they were mapped.
    pub fn adopt_pinned(&mut self, files: PinnedFiles) {
        self.pinned.absorb(files);
    }

    /// Files this value holds open.
    pub fn pinned_files(&self) -> usize {
        self.pinned.len()
    }

    /// Whether anything is known about process `tgid`.
    pub fn knows(&self, tgid: u32) -> bool {
        self.processes.contains_key(&tgid)
    }

    /// Processes known.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Forgets every process `keep` says no to, and the files no remaining process maps: a
    /// reader that runs for days (the daemon) stays bounded by what is alive or still needed.
    pub fn retain_processes(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.processes.retain(|&pid, _| keep(pid));
        let mut remap: HashMap<FileId, FileId> = HashMap::new();
        let mut files = Vec::new();
        // Generations shared after a fork stay shared.
        let mut rebuilt: HashMap<*const Generation, Arc<Generation>> = HashMap::new();
        for process in self.processes.values_mut() {
            for generation in std::iter::once(&mut process.current).chain(process.older.iter_mut())
            {
                let old = Arc::as_ptr(generation);
                let new = rebuilt.entry(old).or_insert_with(|| {
                    let mut copy: Generation = (**generation).clone();
                    for mapping in copy.values_mut() {
                        mapping.file = *remap.entry(mapping.file).or_insert_with(|| {
                            files.push(Arc::clone(&self.files[mapping.file.0 as usize]));
                            FileId(files.len() as u32 - 1)
                        });
                    }
                    Arc::new(copy)
                });
                *generation = Arc::clone(new);
            }
        }
        self.file_ids = files
            .iter()
            .enumerate()
            .map(|(i, key)| (Arc::clone(key), FileId(i as u32)))
            .collect();
        self.files = files;
    }

    fn intern(&mut self, key: &Arc<FileKey>) -> FileId {
        if let Some(&id) = self.file_ids.get(key) {
            return id;
        }
        let id = FileId(self.files.len() as u32);
        self.files.push(Arc::clone(key));
        self.file_ids.insert(Arc::clone(key), id);
        id
    }
}

/// Adds a mapping the way mmap does: whatever it overlaps is cut away.
fn insert(generation: &mut Generation, start: u64, new: Mapping) {
    let overlapping: Vec<u64> = generation
        .range(..new.end)
        .rev()
        .take_while(|(_, m)| m.end > start)
        .map(|(&s, _)| s)
        .collect();
    for s in overlapping {
        let Some(old) = generation.remove(&s) else {
            continue;
        };
        if s < start {
            generation.insert(s, Mapping { end: start, ..old });
        }
        if old.end > new.end {
            let file_offset = old.file_offset + (new.end - s);
            generation.insert(new.end, Mapping { file_offset, ..old });
        }
    }
    generation.insert(start, new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::FileIdentity;

    const EXEC: Option<u32> = Some(libc::PROT_READ as u32 | libc::PROT_EXEC as u32);

    fn file(path: &str, ino: u64) -> Arc<FileKey> {
        Arc::new(FileKey {
            path: path.into(),
            identity: FileIdentity::Inode { dev: 2049, ino },
        })
    }

    fn map(pid: u32, start: u64, len: u64, file_offset: u64, f: &Arc<FileKey>) -> MappingEvent {
        MappingEvent::Map {
            pid,
            start,
            len,
            file_offset,
            prot: EXEC,
            file: Arc::clone(f),
        }
    }

    fn fork(pid: u32, ppid: u32) -> MappingEvent {
        MappingEvent::Fork {
            pid,
            ppid,
            tid: pid,
            ptid: ppid,
        }
    }

    fn where_is(spaces: &AddressSpaces, tgid: u32, ip: u64) -> Option<(String, u64)> {
        spaces
            .resolve(tgid, ip)
            .map(|r| (r.path.display().to_string(), r.file_offset))
    }

    #[test]
    fn resolves_an_address_to_its_file_offset() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(&map(
            10,
            0x5000,
            0x2000,
            0x1000,
            &file("/judge/solution", 1),
        ));
        assert_eq!(
            where_is(&spaces, 10, 0x5123),
            Some(("/judge/solution".into(), 0x1123))
        );
        assert_eq!(where_is(&spaces, 10, 0x7000), None);
        assert_eq!(where_is(&spaces, 10, 0x4fff), None);
        assert_eq!(where_is(&spaces, 11, 0x5123), None);
    }

    #[test]
    fn retaining_processes_drops_the_others_and_the_files_only_they_mapped() {
        let mut spaces = AddressSpaces::new();
        let libc_so = file("/usr/lib/libc.so.6", 2);
        spaces.apply(&map(10, 0x7000, 0x1000, 0, &libc_so));
        spaces.apply(&fork(11, 10));
        spaces.apply(&map(11, 0x9000, 0x1000, 0, &file("/judge/solution", 5)));
        spaces.apply(&map(12, 0x1000, 0x1000, 0, &file("/bin/sh", 4)));
        spaces.retain_processes(|pid| pid != 12);
        assert_eq!(spaces.process_count(), 2);
        assert_eq!(spaces.files.len(), 2);
        assert_eq!(where_is(&spaces, 12, 0x1000), None);
        assert_eq!(
            where_is(&spaces, 11, 0x9004),
            Some(("/judge/solution".into(), 4))
        );
        assert_eq!(
            where_is(&spaces, 10, 0x7010),
            Some(("/usr/lib/libc.so.6".into(), 0x10))
        );
        // Interning still finds the files kept.
        spaces.apply(&map(13, 0x7000, 0x1000, 0, &libc_so));
        assert_eq!(spaces.files.len(), 2);
    }

    #[test]
    fn a_forked_child_inherits_its_parents_mappings_but_a_new_thread_changes_nothing() {
        let mut spaces = AddressSpaces::new();
        let libc_so = file("/usr/lib/libc.so.6", 2);
        spaces.apply(&map(10, 0x7000, 0x1000, 0, &libc_so));
        spaces.apply(&MappingEvent::Fork {
            pid: 10,
            ppid: 10,
            tid: 12,
            ptid: 10,
        });
        spaces.apply(&fork(11, 10));
        assert_eq!(
            where_is(&spaces, 11, 0x7010),
            Some(("/usr/lib/libc.so.6".into(), 0x10))
        );
        // The child's later mmaps stay its own.
        spaces.apply(&map(11, 0x9000, 0x1000, 0, &file("/usr/lib/libm.so.6", 3)));
        assert_eq!(where_is(&spaces, 10, 0x9000), None);
        assert!(where_is(&spaces, 11, 0x9000).is_some());
        assert_eq!(spaces.process_count(), 2);
    }

    #[test]
    fn exec_starts_a_new_image_and_keeps_the_old_one_as_a_fallback() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(&map(20, 0x1000, 0x1000, 0, &file("/bin/sh", 4)));
        spaces.apply(&map(20, 0x8000, 0x1000, 0, &file("/usr/lib/libc.so.6", 2)));
        spaces.apply(&MappingEvent::Exec { pid: 20 });
        spaces.apply(&map(20, 0x1000, 0x1000, 0, &file("/judge/solution", 5)));
        spaces.apply(&MappingEvent::Exit { pid: 20, tid: 20 });
        // The new image wins where both mapped something...
        assert_eq!(
            where_is(&spaces, 20, 0x1004),
            Some(("/judge/solution".into(), 4))
        );
        // ...and samples taken before the exec still resolve.
        assert_eq!(
            where_is(&spaces, 20, 0x8004),
            Some(("/usr/lib/libc.so.6".into(), 4))
        );
    }

    #[test]
    fn a_newer_mapping_replaces_the_part_of_an_older_one_it_overlaps() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(&map(30, 0x1000, 0x3000, 0x10000, &file("/old.so", 6)));
        spaces.apply(&map(30, 0x2000, 0x1000, 0, &file("/new.so", 7)));
        assert_eq!(
            where_is(&spaces, 30, 0x1800),
            Some(("/old.so".into(), 0x10800))
        );
        assert_eq!(
            where_is(&spaces, 30, 0x2800),
            Some(("/new.so".into(), 0x800))
        );
        assert_eq!(
            where_is(&spaces, 30, 0x3800),
            Some(("/old.so".into(), 0x12800))
        );
    }

    #[test]
    fn a_reused_pid_gets_its_new_parents_image_first() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(&map(40, 0x1000, 0x1000, 0, &file("/first", 8)));
        spaces.apply(&map(1, 0x1000, 0x1000, 0, &file("/sbin/init", 9)));
        spaces.apply(&fork(40, 1));
        assert_eq!(
            where_is(&spaces, 40, 0x1000),
            Some(("/sbin/init".into(), 0))
        );
    }

    #[test]
    fn ignores_data_and_anonymous_mappings_but_keeps_the_vdso() {
        let mut spaces = AddressSpaces::new();
        let data = MappingEvent::Map {
            pid: 50,
            start: 0x1000,
            len: 0x1000,
            file_offset: 0,
            prot: Some(libc::PROT_READ as u32),
            file: file("/data.bin", 10),
        };
        spaces.apply(&data);
        spaces.apply(&map(50, 0x2000, 0x1000, 0, &file("//anon", 0)));
        spaces.apply(&map(50, 0x3000, 0x1000, 0, &file("[vdso]", 0)));
        assert_eq!(where_is(&spaces, 50, 0x1000), None);
        assert_eq!(where_is(&spaces, 50, 0x2000), None);
        assert_eq!(where_is(&spaces, 50, 0x3010), Some(("[vdso]".into(), 0x10)));
    }

    #[test]
    fn snapshots_its_own_process() {
        let spaces = AddressSpaces::snapshot_proc(Some(&[std::process::id(), u32::MAX]));
        let here = snapshots_its_own_process as *const () as u64;
        let resolved = spaces
            .resolve(std::process::id(), here)
            .expect("own code is mapped");
        assert_eq!(resolved.path, std::env::current_exe().unwrap());
        assert!(spaces.pinned_files() > 0);
    }
}
