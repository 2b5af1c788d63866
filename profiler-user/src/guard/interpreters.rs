//! The ELF interpreters among a run's executable files. A policy makes the dynamic loader
//! executable because the kernel opens it for every dynamically linked program; run directly,
//! though, the loader maps and runs any file it can read (`ld.so ./payload`, a binary the
//! submission wrote into its work directory), past Landlock's execute rule, which sees only the
//! loader's own exec. The kernel side's `sched_process_exec` hook kills an exec whose program is
//! one of these files (reports it in audit mode): they are marked `FS_INTERPRETER` in inode
//! entries of `GUARD_FS_ALLOW`.
//!
//! An interpreter is the `PT_INTERP` of an executable file of the run, or an executable file
//! named like a loader (`ld-*.so*`, `ld.so*`, `ld64.so*`) that has no `PT_INTERP` itself; the
//! run's own program never is (a judge may run `ld.so ./solution` on purpose).

use std::{
    collections::BTreeSet,
    fs::File,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use profiler_common::{FS_INODE_KEY_LEN, FS_INTERPRETER, GuardFsKey, fs_inode_key};

use crate::{guard::run_entry::FS_FIXED_BITS, policy::ResolvedPath, probes::fs_layout::kernel_dev};

/// What an ELF file's header says about loading it.
#[derive(Debug, PartialEq, Eq)]
struct ElfHead {
    /// Its `PT_INTERP`, when it has one within the first page.
    interp: Option<PathBuf>,
    /// `ET_DYN`: a shared object or a position-independent program (the loader is one).
    shared: bool,
}

/// The header of the ELF file at `path`; `None` when it is not a 64-bit little-endian ELF file.
fn elf_head(path: &Path) -> Option<ElfHead> {
    let mut page = vec![0u8; 4096];
    let mut file = File::open(path).ok()?;
    let mut len = 0;
    while len < page.len() {
        match file.read(&mut page[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    parse_elf_head(&page[..len])
}

fn parse_elf_head(data: &[u8]) -> Option<ElfHead> {
    // 64-bit (class 2), little-endian (data 1).
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    const ET_DYN: u16 = 3;
    const PT_INTERP: u32 = 3;
    let shared = u16_at(16)? == ET_DYN;
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut interp = None;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let offset = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let bytes = data.get(offset..offset.checked_add(size)?)?;
        let name = bytes.split(|&b| b == 0).next().unwrap_or(bytes);
        interp = Some(PathBuf::from(String::from_utf8_lossy(name).into_owned()));
        break;
    }
    Some(ElfHead { interp, shared })
}

/// Whether a file name is a dynamic loader's (glibc's `ld-linux-x86-64.so.2`, musl's
/// `ld-musl-x86_64.so.1`, `ld.so`, `ld64.so.2`).
fn loader_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ld-") || n.starts_with("ld.so") || n.starts_with("ld64.so"))
}

/// The interpreters among `paths` (executable files of a run whose program is `program`), as
/// (kernel device, inode).
pub fn interpreters(paths: &[ResolvedPath], program: &Path) -> BTreeSet<(u64, u64)> {
    let id_of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (kernel_dev(m.dev()), m.ino()))
    };
    let mut found = BTreeSet::new();
    for rule in paths.iter().filter(|r| r.access.execute && !r.is_dir) {
        let Some(head) = elf_head(&rule.path) else {
            continue;
        };
        if let Some(interp) = &head.interp {
            found.extend(id_of(interp));
        } else if head.shared
            && (loader_name(&rule.path)
                || std::fs::canonicalize(&rule.path).is_ok_and(|p| loader_name(&p)))
        {
            found.extend(id_of(&rule.path));
        }
    }
    if let Some(program) = id_of(program) {
        found.remove(&program);
    }
    found
}

/// Marks the interpreters of run `id` in its `GUARD_FS_ALLOW` entries: an inode entry already
/// there (audit mode) gets the bit, the others are added with it alone.
pub fn mark_interpreters(
    entries: &mut Vec<(u32, GuardFsKey, u32)>,
    id: u64,
    paths: &[ResolvedPath],
    program: &Path,
) {
    let bits = FS_FIXED_BITS + 8 * FS_INODE_KEY_LEN as u32;
    for (dev, ino) in interpreters(paths, program) {
        let key = fs_inode_key(id, dev, ino);
        match entries.iter_mut().find(|(b, k, _)| *b == bits && *k == key) {
            Some((_, _, rights)) => *rights |= FS_INTERPRETER,
            None => entries.push((bits, key, FS_INTERPRETER)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FsAccess;

    fn executable(path: &str) -> ResolvedPath {
        ResolvedPath {
            path: PathBuf::from(path),
            access: FsAccess {
                read: true,
                write: false,
                execute: true,
            },
            is_dir: false,
        }
    }

    #[test]
    fn the_loader_of_a_dynamic_program_is_an_interpreter_and_the_program_is_not() {
        let true_bin = Path::new("/bin/true");
        let Some(head) = elf_head(true_bin) else {
            eprintln!("skipping test - /bin/true is not a 64-bit ELF file here");
            return;
        };
        let Some(loader) = head.interp else {
            eprintln!("skipping test - /bin/true is static here");
            return;
        };
        let loader_id = std::fs::metadata(&loader).map(|m| (kernel_dev(m.dev()), m.ino()));
        let found = interpreters(&[executable("/bin/true")], true_bin);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), [loader_id.unwrap()]);
        // Listed by itself (a static program's policy still lists the loader): by its name.
        let listed = interpreters(
            &[executable(loader.to_str().unwrap())],
            Path::new("/nonexistent"),
        );
        assert_eq!(listed.len(), 1, "{loader:?} not found as an interpreter");
        // The run's program is never one: `ld.so ./solution` run on purpose.
        assert!(interpreters(&[executable(loader.to_str().unwrap())], &loader).is_empty());
    }

    #[test]
    fn malformed_or_foreign_files_are_not_elf_heads() {
        assert_eq!(parse_elf_head(b"#!/bin/sh\n"), None);
        assert_eq!(parse_elf_head(b"\x7fELF\x01\x01"), None, "32-bit");
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[16] = 3;
        // A program header table past the end: no PT_INTERP read, no panic.
        header[0x20] = 0xf0;
        header[0x38] = 4;
        header[0x36] = 56;
        assert_eq!(parse_elf_head(&header), None);
        header[0x38] = 0;
        assert_eq!(
            parse_elf_head(&header),
            Some(ElfHead {
                interp: None,
                shared: true
            })
        );
    }

    #[test]
    fn marking_merges_into_an_existing_inode_entry() {
        let Some(ElfHead {
            interp: Some(loader),
            ..
        }) = elf_head(Path::new("/bin/true"))
        else {
            eprintln!("skipping test - no dynamic /bin/true");
            return;
        };
        let meta = std::fs::metadata(&loader).unwrap();
        let bits = FS_FIXED_BITS + 8 * FS_INODE_KEY_LEN as u32;
        let key = fs_inode_key(7, kernel_dev(meta.dev()), meta.ino());
        let mut entries = vec![(bits, key, 1)];
        mark_interpreters(
            &mut entries,
            7,
            &[executable("/bin/true")],
            Path::new("/bin/true"),
        );
        assert_eq!(entries, [(bits, key, 1 | FS_INTERPRETER)]);
        let mut fresh = Vec::new();
        mark_interpreters(
            &mut fresh,
            7,
            &[executable("/bin/true")],
            Path::new("/bin/true"),
        );
        assert_eq!(fresh, [(bits, key, FS_INTERPRETER)]);
    }
}
