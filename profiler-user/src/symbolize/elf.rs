//! Where the function names of a mapped ELF file are, without reading its DWARF.
//!
//! Naming a frame needs only a symbol table. A file with a `.symtab` names its own functions.
//! A stripped file (Debian's `libc.so.6`) keeps only exported symbols in `.dynsym`; its full
//! `.symtab` is in the separate debug file found by build id (`libc6-dbg`), whose program
//! headers say nothing about file offsets, so addresses are turned into virtual addresses with
//! the mapped file's own `PT_LOAD` segments first. Parsing DWARF (tens of MB decompressed for
//! libc, far more for a Rust binary with debug info) is left to outputs that show source lines.

use std::{
    fs::File,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

/// Where separate debug files live, by build id (`ab/cdef….debug`).
const BUILD_ID_DIR: &str = "/usr/lib/debug/.build-id";

const SHT_SYMTAB: u32 = 2;
const PT_LOAD: u32 = 1;
/// Section or program headers read at most; real files have well under a hundred.
const MAX_HEADERS: usize = 4096;

/// A file whose symbol table names the functions of a mapped file, and how to look them up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolFile {
    /// The file with the symbol table: the mapped file itself or its debug file.
    pub path: PathBuf,
    /// The mapped file's loadable segments, to turn file offsets into virtual addresses.
    segments: Vec<Segment>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    file_size: u64,
    vaddr: u64,
}

/// What the headers of an ELF file say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Headers {
    has_symtab: bool,
    segments: Vec<Segment>,
}

impl SymbolFile {
    /// The symbol file of the mapped file `path` (opened through `open_path`), or `None` when
    /// it is not a 64-bit little-endian ELF file (callers then look up file offsets directly).
    pub fn locate(path: &Path) -> Option<Self> {
        let headers = read_headers(&File::open(path).ok()?)?;
        if headers.segments.is_empty() {
            return None;
        }
        let path = if headers.has_symtab {
            path.to_owned()
        } else {
            debug_file(path).unwrap_or_else(|| path.to_owned())
        };
        Some(Self {
            path,
            segments: headers.segments,
        })
    }

    /// The virtual address (as symbols give it) of `file_offset` in the mapped file; `None`
    /// when no loadable segment contains it.
    pub fn virt_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| file_offset >= s.offset && file_offset - s.offset < s.file_size)
            .map(|s| s.vaddr + (file_offset - s.offset))
    }
}

/// The separate debug file of `path` by build id, when installed and it has a symbol table.
fn debug_file(path: &Path) -> Option<PathBuf> {
    let build_id = blazesym::helper::read_elf_build_id(path).ok()??;
    let candidate = build_id_path(&build_id)?;
    let headers = read_headers(&File::open(&candidate).ok()?)?;
    headers.has_symtab.then_some(candidate)
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug` for build id `abcdef…`.
fn build_id_path(build_id: &[u8]) -> Option<PathBuf> {
    // Anything shorter is not a real build id (GNU ones are 20 bytes).
    if build_id.len() < 8 {
        return None;
    }
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    Some(Path::new(BUILD_ID_DIR).join(format!("{}/{}.debug", &hex[..2], &hex[2..])))
}

/// Reads the ELF header, the program headers and the section headers' types.
fn read_headers(file: &File) -> Option<Headers> {
    let mut ident = [0u8; 64];
    file.read_exact_at(&mut ident, 0).ok()?;
    parse_headers(&ident, |offset, len| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    })
}

/// [`read_headers`] over `header` (the first 64 bytes) and a reader of other ranges.
fn parse_headers(
    header: &[u8; 64],
    mut read: impl FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Option<Headers> {
    // 64-bit (class 2), little-endian (data 1): every architecture this runs on.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64_at(header, 0x20)?;
    let shoff = u64_at(header, 0x28)?;
    let phentsize = usize::from(u16_at(header, 0x36)?);
    let phnum = usize::from(u16_at(header, 0x38)?);
    let shentsize = usize::from(u16_at(header, 0x3a)?);
    let mut shnum = usize::from(u16_at(header, 0x3c)?);

    let mut headers = Headers::default();
    if phnum > 0 && phnum <= MAX_HEADERS && phentsize >= 56 {
        let table = read(phoff, phnum * phentsize)?;
        for entry in table.chunks_exact(phentsize) {
            if u32_at(entry, 0)? == PT_LOAD {
                headers.segments.push(Segment {
                    offset: u64_at(entry, 8)?,
                    vaddr: u64_at(entry, 16)?,
                    file_size: u64_at(entry, 32)?,
                });
            }
        }
    }
    if shoff != 0 && shentsize >= 64 {
        if shnum == 0 {
            // More sections than fit in e_shnum: the count is the first header's sh_size.
            shnum = read(shoff, shentsize)
                .and_then(|first| usize::try_from(u64_at(&first, 32)?).ok())
                .unwrap_or(0);
        }
        if shnum > 0 && shnum <= MAX_HEADERS {
            let table = read(shoff, shnum * shentsize)?;
            headers.has_symtab = table
                .chunks_exact(shentsize)
                .any(|entry| u32_at(entry, 4) == Some(SHT_SYMTAB));
        }
    }
    Some(headers)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE image: header, `segments` as PT_LOAD entries (plus one PT_NOTE),
    /// and section headers of the given types.
    fn image(segments: &[(u64, u64, u64)], section_types: &[u32]) -> Vec<u8> {
        let phoff = 64u64;
        let phnum = segments.len() + 1;
        let shoff = phoff + 56 * phnum as u64;
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(section_types.len() as u16).to_le_bytes());
        let note = (4u32, 0u64, 0u64, 0u64);
        let loads = segments.iter().map(|&(o, v, s)| (PT_LOAD, o, v, s));
        for (p_type, offset, vaddr, size) in std::iter::once(note).chain(loads) {
            let mut entry = [0u8; 56];
            entry[..4].copy_from_slice(&p_type.to_le_bytes());
            entry[8..16].copy_from_slice(&offset.to_le_bytes());
            entry[16..24].copy_from_slice(&vaddr.to_le_bytes());
            entry[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&entry);
        }
        for &sh_type in section_types {
            let mut entry = [0u8; 64];
            entry[4..8].copy_from_slice(&sh_type.to_le_bytes());
            out.extend_from_slice(&entry);
        }
        out
    }

    fn parse(bytes: &[u8]) -> Option<Headers> {
        let header: [u8; 64] = bytes[..64].try_into().unwrap();
        parse_headers(&header, |offset, len| {
            bytes
                .get(offset as usize..offset as usize + len)
                .map(<[u8]>::to_vec)
        })
    }

    #[test]
    fn finds_the_loadable_segments_and_whether_there_is_a_symbol_table() {
        let stripped = image(&[(0, 0, 0x1000), (0x1000, 0x2000, 0x500)], &[0, 11, 3]);
        let headers = parse(&stripped).unwrap();
        assert!(!headers.has_symtab);
        assert_eq!(headers.segments.len(), 2);
        assert!(
            parse(&image(&[(0, 0, 0x1000)], &[0, 2, 3]))
                .unwrap()
                .has_symtab
        );
        let mut not_64_bit = image(&[], &[]);
        not_64_bit[4] = 1;
        assert_eq!(parse(&not_64_bit), None);
    }

    #[test]
    fn turns_file_offsets_into_virtual_addresses_through_the_segments() {
        let file = SymbolFile {
            path: "/x".into(),
            segments: parse(&image(&[(0, 0, 0x1000), (0x1000, 0x3000, 0x500)], &[]))
                .unwrap()
                .segments,
        };
        assert_eq!(file.virt_offset(0x10), Some(0x10));
        assert_eq!(file.virt_offset(0x1234), Some(0x3234));
        assert_eq!(file.virt_offset(0x1500), None);
    }

    #[test]
    fn names_debug_files_by_build_id() {
        assert_eq!(
            build_id_path(&[0x93, 0xac, 0x61, 0xec, 0x5a, 0x8e, 0xb1, 0x39]),
            Some(PathBuf::from(
                "/usr/lib/debug/.build-id/93/ac61ec5a8eb139.debug"
            ))
        );
        assert_eq!(build_id_path(&[1, 2]), None);
    }

    #[test]
    fn a_binary_with_symbols_names_itself() {
        let exe = std::env::current_exe().unwrap();
        let file = SymbolFile::locate(&exe).unwrap();
        // Test binaries keep their symbol table.
        assert_eq!(file.path, exe);
    }
}
