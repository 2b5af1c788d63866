//! The user stack of a violation, symbolized after the process is gone: the kernel recorded each
//! frame as (ELF build id, file offset); the files are found among the command, its ELF
//! interpreter and the libraries it needs (DT_NEEDED, searched like the dynamic loader does in
//! its RUNPATH and the system directories), and symbolized with blazesym by file offset.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};
use object::{Object as _, read::elf::ElfFile64};
use profiler_common::{BuildIdFrame, STACK_BUILD_ID_IP, STACK_BUILD_ID_VALID};

use crate::symbolize::strip_rust_hash;

/// Where the dynamic loader looks when a library has no RUNPATH entry for it.
const SYSTEM_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// The ELF files a command may execute code from: itself, its interpreter and the closure of
/// its DT_NEEDED libraries.
pub fn command_files(command: &Path) -> Vec<PathBuf> {
    let mut files = vec![command.to_path_buf()];
    let mut seen: HashSet<PathBuf> = files.iter().cloned().collect();
    let mut i = 0;
    while i < files.len() && i < 64 {
        let (interp, needed, runpath) = dynamic_info(&files[i]);
        let dirs: Vec<PathBuf> = runpath
            .iter()
            .map(PathBuf::from)
            .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
            .collect();
        let found = interp.into_iter().map(PathBuf::from).chain(
            needed
                .iter()
                .filter_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())),
        );
        for path in found {
            if seen.insert(path.clone()) {
                files.push(path);
            }
        }
        i += 1;
    }
    files
}

/// PT_INTERP, DT_NEEDED and DT_RUNPATH/DT_RPATH of an ELF file; empty when it is not one.
fn dynamic_info(path: &Path) -> (Option<String>, Vec<String>, Vec<String>) {
    let Ok(data) = std::fs::read(path) else {
        return (None, Vec::new(), Vec::new());
    };
    let Ok(elf) = ElfFile64::<object::Endianness>::parse(&*data) else {
        return (None, Vec::new(), Vec::new());
    };
    let interp = elf
        .section_by_name(".interp")
        .and_then(|s| object::ObjectSection::data(&s).ok())
        .map(|d| String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or(d)).into_owned());
    let mut needed = Vec::new();
    let mut runpath = Vec::new();
    if let Some(dynamic) = elf.section_by_name(".dynamic")
        && let Some(dynstr) = elf.section_by_name(".dynstr")
        && let (Ok(dyn_data), Ok(str_data)) = (
            object::ObjectSection::data(&dynamic),
            object::ObjectSection::data(&dynstr),
        )
    {
        let string = |offset: u64| -> Option<String> {
            let rest = str_data.get(usize::try_from(offset).ok()?..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        for entry in dyn_data.chunks_exact(16) {
            let tag = u64::from_le_bytes(entry[..8].try_into().unwrap_or_default());
            let value = u64::from_le_bytes(entry[8..].try_into().unwrap_or_default());
            match tag {
                1 => needed.extend(string(value)),
                15 | 29 => {
                    if let Some(paths) = string(value) {
                        runpath.extend(paths.split(':').map(str::to_owned));
                    }
                }
                0 => break,
                _ => {}
            }
        }
    }
    (interp, needed, runpath)
}

/// Symbolizes build-id stacks against a set of candidate files.
pub struct StackSymbolizer {
    by_build_id: HashMap<[u8; 20], PathBuf>,
    blaze: Symbolizer,
}

impl StackSymbolizer {
    /// Indexes `files` by build id.
    pub fn new(files: &[PathBuf]) -> Self {
        let by_build_id = files
            .iter()
            .filter_map(|path| {
                let id = blazesym::helper::read_elf_build_id(path).ok()??;
                Some((pad_build_id(&id), path.clone()))
            })
            .collect();
        Self {
            by_build_id,
            blaze: Symbolizer::new(),
        }
    }

    /// The frames of a stack, innermost first: function names, or `[unknown] file+0xoffset`.
    pub fn symbolize(&self, frames: &[BuildIdFrame]) -> Vec<String> {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.status != 0)
            .map(|(depth, frame)| self.frame(depth, frame))
            .collect()
    }

    fn frame(&self, depth: usize, frame: &BuildIdFrame) -> String {
        if frame.status == STACK_BUILD_ID_IP || frame.status != STACK_BUILD_ID_VALID {
            return format!("[unknown] {:#x}", frame.offset_or_ip);
        }
        // Return addresses point after the call: look inside it.
        let offset = if depth == 0 {
            frame.offset_or_ip
        } else {
            frame.offset_or_ip.saturating_sub(1)
        };
        let Some(path) = self.by_build_id.get(&frame.build_id) else {
            let hex: String = frame.build_id.iter().map(|b| format!("{b:02x}")).collect();
            return format!("[unknown] build-id:{hex}+{offset:#x}");
        };
        let mut elf = Elf::new(path);
        elf.debug_syms = false;
        let offsets = [offset];
        match self
            .blaze
            .symbolize(&Source::Elf(elf), Input::FileOffset(&offsets))
            .ok()
            .as_ref()
            .and_then(|r| r.first())
            .and_then(Symbolized::as_sym)
        {
            Some(sym) => strip_rust_hash(&sym.name).to_owned(),
            None => format!("[unknown] {}+{offset:#x}", path.display()),
        }
    }
}

/// A build id as the kernel stores it: 20 bytes, zero-padded when shorter.
fn pad_build_id(id: &[u8]) -> [u8; 20] {
    let mut padded = [0; 20];
    let n = id.len().min(20);
    padded[..n].copy_from_slice(&id[..n]);
    padded
}

#[cfg(test)]
mod tests {
    use super::command_files;

    #[test]
    fn a_dynamic_executable_brings_its_libraries() {
        let files = command_files(std::path::Path::new("/bin/ls"));
        assert!(files.len() > 1, "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("libc.so")),
            "{files:?}"
        );
    }
}
