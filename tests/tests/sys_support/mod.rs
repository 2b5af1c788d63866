//! What the syscall and off-CPU tests share: their workloads (`tests/workloads/sys_*.c`), built
//! on first use and cached by content, and `flamewarden syscalls` runs read back as JSON.

use std::{
    collections::hash_map::DefaultHasher,
    ffi::OsString,
    fs,
    hash::{Hash as _, Hasher as _},
    path::PathBuf,
    process::Command,
};

use flamewarden_tests::{Run, flamewarden, target_dir, workloads::sources_dir};
use serde_json::Value;

/// A `tests/workloads/sys_*.c` workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysWorkload {
    /// `sys_calls.c PATTERN N [MS]`: exactly N getppid / openat (ENOENT) / nanosleep calls, or
    /// getppid for N seconds (`spin`); linked statically, so no loader adds calls of its own.
    Calls,
    /// `sys_slow.c`: 1000 getppid and one 50 ms nanosleep in `sleep_once_in_workload`.
    Slow,
    /// `sys_pipe.c`: `reader_blocked_on_pipe` blocked 300 ms on a pipe read.
    Pipe,
    /// `sys_wall.c`: `compute_200ms` then `sleep_200ms`.
    Wall,
    /// `sys_flood.c THREADS CALLS`: THREADS threads × CALLS getppid; prints `calls=`.
    Flood,
}

impl SysWorkload {
    fn stem(self) -> &'static str {
        match self {
            SysWorkload::Calls => "sys_calls",
            SysWorkload::Slow => "sys_slow",
            SysWorkload::Pipe => "sys_pipe",
            SysWorkload::Wall => "sys_wall",
            SysWorkload::Flood => "sys_flood",
        }
    }

    /// The binary, built with gcc on first use (`-O2 -g -fno-omit-frame-pointer`).
    ///
    /// # Panics
    /// When gcc is missing or fails, with its output.
    pub fn path(self) -> PathBuf {
        let dir = sources_dir();
        let source = dir.join(format!("{}.c", self.stem()));
        let mut flags = vec![
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
        ];
        if self == SysWorkload::Calls {
            flags.push("-static");
        }
        let mut hasher = DefaultHasher::new();
        for file in [source.clone(), dir.join("sys_raw.h")] {
            fs::read(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
                .hash(&mut hasher);
        }
        flags.hash(&mut hasher);
        let out_dir = target_dir()
            .join("flamewarden-tests")
            .join("sys-workloads")
            .join(format!("{}-{:016x}", self.stem(), hasher.finish()));
        // The binary keeps its plain name: it is the process's comm.
        let binary = out_dir.join(self.stem());
        if binary.is_file() {
            return binary;
        }
        fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", out_dir.display()));
        let partial = out_dir.join(format!("{}.partial-{}", self.stem(), std::process::id()));
        let output = Command::new("gcc")
            .args(&flags)
            .arg(format!("-I{}", dir.display()))
            .arg(&source)
            .arg("-o")
            .arg(&partial)
            .output()
            .unwrap_or_else(|e| panic!("failed to run gcc for {}: {e}", source.display()));
        assert!(
            output.status.success(),
            "gcc failed to build {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        fs::rename(&partial, &binary)
            .unwrap_or_else(|e| panic!("rename {}: {e}", partial.display()));
        binary
    }
}

/// A finished `flamewarden syscalls --json -o FILE ARGS...`, with the document it wrote.
pub struct SyscallsRun {
    /// The process's exit and output.
    pub run: Run,
    /// The JSON report.
    pub json: Value,
}

impl SyscallsRun {
    /// The row labelled `label` (a syscall name with `--by syscall`).
    ///
    /// # Panics
    /// When there is none, with the labels there are.
    pub fn row(&self, label: &str) -> &Value {
        let rows = self.json["rows"].as_array().expect("rows is an array");
        rows.iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| {
                let labels: Vec<&Value> = rows.iter().map(|r| &r["label"]).collect();
                panic!(
                    "no row {label:?} in {labels:?}; stderr:\n{}",
                    self.run.stderr
                )
            })
    }

    /// The process ids of the rows of a `--by process` table.
    pub fn process_ids(&self) -> Vec<u64> {
        self.json["rows"]
            .as_array()
            .expect("rows is an array")
            .iter()
            .map(|r| {
                assert_eq!(r["key"]["kind"], "process", "not a --by process table");
                r["key"]["id"].as_u64().expect("process id")
            })
            .collect()
    }

    /// A loss counter.
    pub fn counter(&self, name: &str) -> u64 {
        self.json["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }
}

/// Runs `flamewarden syscalls --json -o <tmp>/calls.json ARGS...` and reads the report.
///
/// # Panics
/// When flamewarden fails or writes no valid JSON.
pub fn syscalls_json(args: Vec<OsString>) -> SyscallsRun {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("calls.json");
    let mut full: Vec<OsString> = vec![
        "syscalls".into(),
        "--json".into(),
        "-o".into(),
        out.clone().into(),
    ];
    full.extend(args);
    let run = flamewarden(&full);
    assert_eq!(
        run.code(),
        Some(0),
        "flamewarden {full:?} failed; stderr:\n{}",
        run.stderr
    );
    let text = fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no {}: {e}; stderr:\n{}", out.display(), run.stderr));
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"));
    assert_eq!(json["schema"], "flamewarden.syscalls/v1");
    SyscallsRun { run, json }
}
