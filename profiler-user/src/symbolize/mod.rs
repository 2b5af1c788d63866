//! Addresses to frames: user frames through the ELF files a process had mapped (blazesym:
//! symbol tables for names, DWARF for source lines when an output shows them), kernel frames
//! through kallsyms. Works for processes that already exited.
//!
//! [`AddressSpaces`] knows which file every executable address of every process came from: a
//! `/proc` snapshot at the start, then the mmap/fork/exec records of
//! `collect::mappings::MappingTracker`. [`Symbolizer`] turns (process, address) into
//! [`crate::profile::Frame`]s, reading each file once.

mod elf;
mod events;
mod kallsyms;
mod maps;
mod pinned;
mod symbolizer;
mod vdso;

pub use events::{FileIdentity, FileKey, MappingEvent, parse_proc_maps};
pub use maps::{AddressSpaces, FileId, Resolved};
pub use pinned::{DEFAULT_PINNED_FILES, PinnedFiles};
pub use symbolizer::{KERNEL_MODULE, SymbolDetail, Symbolizer, strip_rust_hash};
