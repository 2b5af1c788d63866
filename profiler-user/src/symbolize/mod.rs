//! Addresses to frames: user frames through the ELF files a process had mapped (blazesym,
//! symbols and DWARF), kernel frames through kallsyms. Works for processes that already exited.
