//! The workloads in `tests/workloads/`, built from source by the tests and cached by content.
//!
//! C workloads are built with `gcc -O2 -g -fno-omit-frame-pointer`, the Rust one with
//! `rustc -O -g -C force-frame-pointers=yes`: frame pointers so that every profiler walks the
//! same stacks (see also `busy_loop.h` on leaf functions), debug info so that they name the same
//! functions. Binaries land in
//! `<target>/flamewarden-tests/workloads/NAME-HASH/NAME`, where HASH covers the sources, the
//! compiler command and the compiler's version: a changed source or compiler builds anew, an
//! unchanged one is reused.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use crate::{target_dir, workspace_root};

/// A program the tests profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `cpu_mix.c`: `hot_function` 60 %, `warm_function` 30 %, `cold_function` 10 %; prints
    /// `cpu_seconds=`.
    CpuMix,
    /// `demo.c`: the program `cargo xtask demo` profiles; `score_candidates` is hottest.
    Demo,
    /// `syscall_heavy.c`: reads /dev/zero in `read_zero_loop`, mostly kernel time.
    SyscallHeavy,
    /// `forker.c`: 20 children one after another, each ~50 ms in `child_busy_work`.
    Forker,
    /// `threads.c`: four named threads, each in its own `thread_*_spin` function.
    Threads,
    /// `spinner.c ROLE SECONDS`: spins in `spin_in_target_a`, `spin_in_target_b` or
    /// `spin_outside_target` (roles `target-a`, `target-b`, `outside`) for at most 60 s.
    Spinner,
    /// `rust_hot.rs`: `rust_hot::checksum::crunch_numbers` 75 %, `tally_results` 25 %.
    RustHot,
}

impl Workload {
    /// The source file's name in `tests/workloads/`.
    pub fn source_name(self) -> &'static str {
        match self {
            Workload::CpuMix => "cpu_mix.c",
            Workload::Demo => "demo.c",
            Workload::SyscallHeavy => "syscall_heavy.c",
            Workload::Forker => "forker.c",
            Workload::Threads => "threads.c",
            Workload::Spinner => "spinner.c",
            Workload::RustHot => "rust_hot.rs",
        }
    }

    /// The built binary, building it first if needed.
    ///
    /// # Panics
    /// When the compiler is missing or the build fails, with the compiler's output.
    pub fn path(self) -> PathBuf {
        static BUILT: Mutex<Option<HashMap<Workload, PathBuf>>> = Mutex::new(None);
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let built = built.get_or_insert_with(HashMap::new);
        if let Some(path) = built.get(&self) {
            return path.clone();
        }
        let path = build(self);
        built.insert(self, path.clone());
        path
    }
}

/// The directory holding the workload sources.
pub fn sources_dir() -> PathBuf {
    workspace_root().join("tests").join("workloads")
}

fn build(workload: Workload) -> PathBuf {
    let sources = sources_dir();
    let source = sources.join(workload.source_name());
    let is_rust = source.extension().is_some_and(|e| e == "rs");
    let (compiler, flags): (String, Vec<String>) = if is_rust {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let flags = [
            "--edition",
            "2024",
            "-O",
            "-g",
            "-C",
            "force-frame-pointers=yes",
        ];
        (rustc, flags.map(str::to_owned).to_vec())
    } else {
        let include = format!("-I{}", sources.display());
        let flags = [
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
        ];
        let mut flags = flags.map(str::to_owned).to_vec();
        flags.push(include);
        ("gcc".to_owned(), flags)
    };

    let mut key = Fnv64::new();
    key.write(&read(&source));
    if !is_rust {
        // Every C workload includes the shared loop.
        key.write(&read(&sources.join("busy_loop.h")));
    }
    key.write(compiler.as_bytes());
    for flag in &flags {
        key.write(flag.as_bytes());
    }
    key.write(&compiler_version(&compiler));

    let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
    // The binary keeps its plain name (it becomes the process's comm); the hash names its
    // directory.
    let cache = target_dir().join("flamewarden-tests").join("workloads");
    let dir = cache.join(format!("{stem}-{:016x}", key.finish()));
    let binary = dir.join(&stem);
    if binary.is_file() {
        return binary;
    }
    // Build in a directory of our own and rename it into place: a concurrent test run never
    // sees half a binary.
    let partial = cache.join(format!("{stem}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)
        .unwrap_or_else(|e| panic!("failed to create {}: {e}", partial.display()));
    let output = Command::new(&compiler)
        .args(&flags)
        .arg(&source)
        .arg("-o")
        .arg(partial.join(&stem))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "failed to run {compiler} to build {}: {e}",
                source.display()
            )
        });
    if !output.status.success() {
        let _ = fs::remove_dir_all(&partial);
        panic!(
            "{compiler} failed to build {} ({}):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if fs::rename(&partial, &dir).is_err() {
        // Another run got there first; its binary is as good as ours.
        let _ = fs::remove_dir_all(&partial);
    }
    assert!(
        binary.is_file(),
        "building {} left no {}",
        source.display(),
        binary.display()
    );
    binary
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

fn compiler_version(compiler: &str) -> Vec<u8> {
    match Command::new(compiler).arg("--version").output() {
        Ok(output) if output.status.success() => output.stdout,
        Ok(output) => panic!("`{compiler} --version` failed: {}", output.status),
        Err(e) => {
            panic!("the tests build their workloads with `{compiler}`, which cannot be run: {e}")
        }
    }
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike `DefaultHasher`, so the cache survives
/// a toolchain update of the test harness itself.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` followed by its length, so that ("ab", "c") and ("a", "bc") differ.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&(bytes.len() as u64).to_le_bytes()) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
