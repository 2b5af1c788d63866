//! Addresses to [`Frame`]s with blazesym: each distinct (file, offset) is looked up once, with one
//! blazesym call per file per batch, and remembered across calls.
//!
//! Names come from symbol tables (see [`super::elf`]); DWARF is read only for
//! [`SymbolDetail::Lines`], to add source files and lines.

use std::{
    collections::HashMap,
    hash::{Hash as _, Hasher as _},
    path::Path,
    sync::Arc,
};

use blazesym::symbolize::{
    Input, Sym, Symbolizer as Blaze,
    source::{Elf, Source},
};

use super::{
    elf::SymbolFile,
    events::FileKey,
    kallsyms::resolve_kallsyms,
    maps::{AddressSpaces, FileId},
    vdso::VdsoImage,
};
use crate::profile::{Frame, FrameKind};

/// The module name of kernel frames.
pub const KERNEL_MODULE: &str = "[kernel]";

/// How much a [`Symbolizer`] finds out about each user frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SymbolDetail {
    /// Function names from symbol tables only: all that flamegraphs and folded stacks show.
    /// Cheap: no DWARF is read.
    Names,
    /// Names, plus source file and line from DWARF (JSON and pprof outputs show them).
    #[default]
    Lines,
}

/// Turns user and kernel stacks into frames; keeps what it learned for later calls.
///
/// Stacks are leaf first, as the kernel stores them. Every address but the leaf is a return
/// address and is looked up one byte earlier, inside the call instruction, so that a call at the
/// very end of a function names that function and not the next one. Inlined functions collapse
/// into the outermost function of the frame, like `perf report` without `--inline`; file and line
/// are those of that function. An address that cannot be resolved stays in the stack as
/// [`Frame::unknown`] with its module and offset.
pub struct Symbolizer {
    blaze: Blaze,
    detail: SymbolDetail,
    /// Per file, frames by (looked-up) file offset.
    user: Vec<HashMap<u64, Frame>>,
    user_index: HashMap<Arc<FileKey>, usize>,
    kernel: HashMap<u64, Frame>,
    vdso: Option<Option<VdsoImage>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("user_files", &self.user.len())
            .field("kernel_addresses", &self.kernel.len())
            .finish_non_exhaustive()
    }
}

enum Slot {
    /// No mapping explains the address: `[unknown] 0xip`.
    Unmapped(u64),
    /// Index into `user`, and the offset looked up.
    File(usize, u64),
}

impl Symbolizer {
    /// A symbolizer with empty caches that finds names, files and lines.
    pub fn new() -> Self {
        Self::with_detail(SymbolDetail::Lines)
    }

    /// A symbolizer with empty caches that finds what `detail` asks for.
    pub fn with_detail(detail: SymbolDetail) -> Self {
        let blaze = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .enable_auto_reload(true)
            .build();
        Self {
            blaze,
            detail,
            user: Vec::new(),
            user_index: HashMap::new(),
            kernel: HashMap::new(),
            vdso: None,
        }
    }

    /// Frames of one user stack of process `tgid`, `ips` leaf first; one frame per address, in
    /// the same order.
    pub fn symbolize_user(&mut self, spaces: &AddressSpaces, tgid: u32, ips: &[u64]) -> Vec<Frame> {
        self.symbolize_user_batch(spaces, &[(tgid, ips)])
            .pop()
            .unwrap_or_default()
    }

    /// Frames of many user stacks of many processes at once: every file is read once, with all
    /// the offsets the batch needs from it. Calling this over a whole profile first makes later
    /// [`Symbolizer::symbolize_user`] calls cache hits.
    pub fn symbolize_user_batch(
        &mut self,
        spaces: &AddressSpaces,
        stacks: &[(u32, &[u64])],
    ) -> Vec<Vec<Frame>> {
        let mut slots = self.user_slots(spaces, stacks).into_iter();
        stacks
            .iter()
            .map(|(_, ips)| {
                (&mut slots)
                    .take(ips.len())
                    .map(|slot| match slot {
                        Slot::Unmapped(ip) => Frame::unknown(FrameKind::User, None, ip),
                        Slot::File(index, offset) => self.user[index][&offset].clone(),
                    })
                    .collect()
            })
            .collect()
    }

    /// Looks up every address of `stacks` not seen before, so that later calls for them are
    /// cache hits; builds no frames.
    pub fn prefetch_user(&mut self, spaces: &AddressSpaces, stacks: &[(u32, &[u64])]) {
        self.user_slots(spaces, stacks);
    }

    /// A key equal for two stacks exactly when every address resolves to the same place (file
    /// and offset, or the same unmapped address), so they symbolize alike: the children a
    /// process forks share their parent's stacks this way. Looks nothing up.
    pub fn location_key(spaces: &AddressSpaces, tgid: u32, ips: &[u64]) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        for (depth, &ip) in ips.iter().enumerate() {
            match spaces.resolve(tgid, lookup_address(depth, ip)) {
                Some(resolved) => (resolved.file, resolved.file_offset).hash(&mut hasher),
                None => ip.hash(&mut hasher),
            }
        }
        hasher.finish()
    }

    /// Where each address of `stacks` is cached (reading what is missing, one call per file).
    fn user_slots(&mut self, spaces: &AddressSpaces, stacks: &[(u32, &[u64])]) -> Vec<Slot> {
        let mut local: HashMap<FileId, usize> = HashMap::new();
        let mut wanted: HashMap<FileId, Vec<u64>> = HashMap::new();
        let mut slots = Vec::with_capacity(stacks.iter().map(|(_, ips)| ips.len()).sum());
        for (tgid, ips) in stacks {
            for (depth, &ip) in ips.iter().enumerate() {
                let Some(resolved) = spaces.resolve(*tgid, lookup_address(depth, ip)) else {
                    slots.push(Slot::Unmapped(ip));
                    continue;
                };
                let index = *local.entry(resolved.file).or_insert_with(|| {
                    let key = spaces.file(resolved.file);
                    *self.user_index.entry(Arc::clone(key)).or_insert_with(|| {
                        self.user.push(HashMap::new());
                        self.user.len() - 1
                    })
                });
                if !self.user[index].contains_key(&resolved.file_offset) {
                    wanted
                        .entry(resolved.file)
                        .or_default()
                        .push(resolved.file_offset);
                }
                slots.push(Slot::File(index, resolved.file_offset));
            }
        }
        for (file, mut offsets) in wanted {
            offsets.sort_unstable();
            offsets.dedup();
            let frames = self.read_file(spaces, file, &offsets);
            self.user[local[&file]].extend(offsets.into_iter().zip(frames));
        }
        slots
    }

    /// Frames of one kernel stack, `ips` leaf first; one frame per address, in the same order.
    pub fn symbolize_kernel(&mut self, ips: &[u64]) -> Vec<Frame> {
        self.symbolize_kernel_batch(&[ips])
            .pop()
            .unwrap_or_default()
    }

    /// Looks up every new address of `stacks` in one kallsyms pass; builds no frames.
    pub fn prefetch_kernel(&mut self, stacks: &[&[u64]]) {
        let mut wanted: Vec<u64> = stacks
            .iter()
            .flat_map(|ips| {
                ips.iter()
                    .enumerate()
                    .map(|(depth, &ip)| lookup_address(depth, ip))
            })
            .filter(|addr| !self.kernel.contains_key(addr))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        // kallsyms only: a vmlinux found on disk may not be the running kernel's.
        for (&addr, name) in wanted.iter().zip(resolve_kallsyms(&wanted)) {
            let frame = match name {
                Some(name) => {
                    let mut frame = Frame::function(strip_rust_hash(&name), FrameKind::Kernel);
                    frame.module = Some(KERNEL_MODULE.to_owned());
                    frame
                }
                None => Frame::unknown(FrameKind::Kernel, Some(KERNEL_MODULE), addr),
            };
            self.kernel.insert(addr, frame);
        }
    }

    /// Frames of many kernel stacks, with one kallsyms lookup pass for all new addresses.
    pub fn symbolize_kernel_batch(&mut self, stacks: &[&[u64]]) -> Vec<Vec<Frame>> {
        self.prefetch_kernel(stacks);
        stacks
            .iter()
            .map(|ips| {
                ips.iter()
                    .enumerate()
                    .map(|(depth, &ip)| self.kernel[&lookup_address(depth, ip)].clone())
                    .collect()
            })
            .collect()
    }

    /// One blazesym call for all `offsets` (sorted) of one file (two with source lines); one
    /// frame per offset.
    fn read_file(&mut self, spaces: &AddressSpaces, file: FileId, offsets: &[u64]) -> Vec<Frame> {
        let key = spaces.file(file);
        let module = key.live_path().to_string_lossy().into_owned();
        let path = if key.path == Path::new("[vdso]") {
            self.vdso
                .get_or_insert_with(VdsoImage::load)
                .as_ref()
                .map(VdsoImage::path)
        } else {
            Some(spaces.open_path(file))
        };
        let mut frames = match &path {
            Some(path) => self.names(path, offsets, &module),
            None => vec![None; offsets.len()],
        };
        if let (Some(path), SymbolDetail::Lines) = (&path, self.detail) {
            self.add_lines(path, offsets, &module, &mut frames);
        }
        frames
            .into_iter()
            .zip(offsets)
            .map(|(frame, &offset)| {
                frame.unwrap_or_else(|| Frame::unknown(FrameKind::User, Some(&module), offset))
            })
            .collect()
    }

    /// Function names of `offsets` in the file at `path`, from its or its debug file's symbol
    /// table.
    fn names(&self, path: &Path, offsets: &[u64], module: &str) -> Vec<Option<Frame>> {
        let mut frames = vec![None; offsets.len()];
        let symbols = SymbolFile::locate(path);
        let (slots, results) = match &symbols {
            Some(symbols) => {
                // Debug files have no usable program headers: look up virtual addresses.
                let (slots, addrs): (Vec<usize>, Vec<u64>) = offsets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &o)| Some((i, symbols.virt_offset(o)?)))
                    .unzip();
                let source = symbols_only(&symbols.path);
                (
                    slots,
                    self.blaze.symbolize(&source, Input::VirtOffset(&addrs)),
                )
            }
            None => {
                let source = symbols_only(path);
                let results = self.blaze.symbolize(&source, Input::FileOffset(offsets));
                ((0..offsets.len()).collect(), results)
            }
        };
        let Ok(results) = results else {
            return frames;
        };
        for (slot, result) in slots.into_iter().zip(&results) {
            if let Some(sym) = result.as_sym() {
                frames[slot] = Some(named_frame(sym, FrameKind::User, module));
            }
        }
        frames
    }

    /// Source files and lines from DWARF for `frames`, and names DWARF knows but no symbol
    /// table had.
    fn add_lines(&self, path: &Path, offsets: &[u64], module: &str, frames: &mut [Option<Frame>]) {
        let source = Source::Elf(Elf::new(path));
        // Debug info blazesym cannot read (a broken debug link target, an unknown compression)
        // fails the whole file: the names from the symbol table stay.
        let Ok(results) = self.blaze.symbolize(&source, Input::FileOffset(offsets)) else {
            return;
        };
        for (frame, result) in frames.iter_mut().zip(&results) {
            let Some(sym) = result.as_sym() else {
                continue;
            };
            match frame {
                Some(frame) => {
                    if let Some(code) = &sym.code_info {
                        frame.file = Some(code.to_path().to_string_lossy().into_owned());
                        frame.line = code.line;
                    }
                }
                None => *frame = Some(named_frame(sym, FrameKind::User, module)),
            }
        }
    }
}

/// The ELF file at `path`, its symbol tables only.
fn symbols_only(path: &Path) -> Source<'static> {
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    Source::Elf(elf)
}

/// The leaf is where the CPU was; every other address is a return address, looked up inside the
/// call that precedes it.
fn lookup_address(depth: usize, ip: u64) -> u64 {
    if depth == 0 { ip } else { ip.saturating_sub(1) }
}

fn named_frame(sym: &Sym<'_>, kind: FrameKind, module: &str) -> Frame {
    let mut frame = Frame::function(strip_rust_hash(&sym.name), kind);
    frame.module = Some(module.to_owned());
    if let Some(code) = &sym.code_info {
        frame.file = Some(code.to_path().to_string_lossy().into_owned());
        frame.line = code.line;
    }
    frame
}

/// A Rust symbol without its hash: `foo::bar::h0123abcd` becomes `foo::bar`; other names are
/// returned unchanged. LLVM's `.llvm.N` suffix goes too, so that the same function gets one name.
pub fn strip_rust_hash(name: &str) -> &str {
    let name = match name.rsplit_once(".llvm.") {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => name,
    };
    match name.rsplit_once("::h") {
        // rustc's legacy hashes are 16 hex digits; shorter ones show up in hand-written names.
        Some((head, hash))
            if (8..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::MappingEvent;

    #[test]
    fn strips_rust_hashes_and_llvm_suffixes_only() {
        assert_eq!(strip_rust_hash("foo::bar::h0123abcd"), "foo::bar");
        assert_eq!(
            strip_rust_hash("std::rt::lang_start::h1a2b3c4d5e6f7a8b"),
            "std::rt::lang_start"
        );
        assert_eq!(
            strip_rust_hash("core::fmt::write::h0123456789abcdef.llvm.42"),
            "core::fmt::write"
        );
        assert_eq!(strip_rust_hash("ns::hello"), "ns::hello");
        assert_eq!(strip_rust_hash("ns::hdeadbee"), "ns::hdeadbee");
        assert_eq!(strip_rust_hash("main"), "main");
        assert_eq!(
            strip_rust_hash("<T as Trait>::method"),
            "<T as Trait>::method"
        );
    }

    #[test]
    fn looks_up_return_addresses_inside_the_call() {
        assert_eq!(lookup_address(0, 0x1000), 0x1000);
        assert_eq!(lookup_address(1, 0x1000), 0xfff);
        assert_eq!(lookup_address(3, 0), 0);
    }

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(marker_function_for_symbolizer_test as *const () as u64)
    }

    #[test]
    fn names_functions_of_this_test_binary_and_keeps_unknowns_in_place() {
        let pid = std::process::id();
        let mut spaces = AddressSpaces::snapshot_proc(Some(&[pid]));
        let ip = marker_function_for_symbolizer_test();
        let mut symbolizer = Symbolizer::new();
        // A leaf, an address nothing maps, and the same leaf as a return address + 1.
        let frames = symbolizer.symbolize_user(&spaces, pid, &[ip, 0x10, ip + 1]);
        assert_eq!(frames.len(), 3);
        assert!(
            frames[0]
                .name
                .ends_with("marker_function_for_symbolizer_test"),
            "{frames:?}"
        );
        assert_eq!(frames[0].kind, FrameKind::User);
        assert!(
            frames[0]
                .module
                .as_deref()
                .is_some_and(|m| m.contains("flamewarden"))
        );
        assert_eq!(frames[0].line.is_some(), frames[0].file.is_some());
        assert!(!frames[1].symbolized);
        assert_eq!(frames[1].name, "[unknown] 0x10");
        assert_eq!(frames[2].name, frames[0].name);

        // The same code, seen through a synthetic exited process, resolves from the cache.
        let here = spaces.resolve(pid, ip).unwrap();
        let (path, offset) = (spaces.file(here.file).clone(), here.file_offset);
        spaces.apply(&MappingEvent::Map {
            pid: u32::MAX,
            start: 0x40_0000,
            len: 0x1000,
            file_offset: offset & !0xfff,
            prot: None,
            file: path,
        });
        let batch = symbolizer.symbolize_user_batch(
            &spaces,
            &[(u32::MAX, &[0x40_0000 + (offset & 0xfff)]), (pid, &[ip])],
        );
        assert_eq!(batch[0][0].name, frames[0].name);
        assert_eq!(batch[1][0], frames[0]);
    }

    #[test]
    fn names_kernel_functions_from_kallsyms() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let Some(addr) = kallsyms.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
            (fields.nth(1)? == "schedule" && addr != 0).then_some(addr)
        }) else {
            println!("skipping test - needs root (kallsyms addresses are hidden)");
            return;
        };
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize_kernel(&[addr + 1, 0x10]);
        assert_eq!(frames[0].name, "schedule");
        assert_eq!(frames[0].kind, FrameKind::Kernel);
        assert_eq!(frames[0].module.as_deref(), Some(KERNEL_MODULE));
        assert!(!frames[1].symbolized);
        assert_eq!(frames[1].kind, FrameKind::Kernel);
    }
}
