//! Helpers shared by the end-to-end tests of `flamewarden record`.
//!
//! The tests run the real `flamewarden` binary against the real kernel, on workloads built from
//! `tests/workloads/` (see [`workloads`]), and read what it writes: folded stacks
//! ([`folded`]), JSON ([`json`]) and SVG. Everything a test creates (temporary files, processes,
//! cgroups) is owned by a guard that removes it on drop, also when the test fails.

pub mod cgroup;
pub mod folded;
pub mod json;
pub mod perf;
pub mod process;
pub mod run;
pub mod sandbox;
pub mod workloads;

use std::{
    env,
    path::{Path, PathBuf},
};

pub use cgroup::TestCgroup;
pub use folded::FoldedProfile;
pub use json::JsonProfile;
pub use process::BackgroundProcess;
pub use run::{Recording, Run, flamewarden};
pub use workloads::Workload;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The `flamewarden` binary under test: `$FLAMEWARDEN_BIN`, or `target/release/flamewarden`.
///
/// # Panics
/// When the file does not exist: the tests cannot do anything without it.
pub fn flamewarden_bin() -> PathBuf {
    let path = match env::var_os("FLAMEWARDEN_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => target_dir().join("release").join("flamewarden"),
    };
    assert!(
        path.is_file(),
        "flamewarden binary not found at {}: build it with \
         `FLAMEWARDEN_REQUIRE_EBPF=1 cargo build --release -p profiler-user`, \
         or point FLAMEWARDEN_BIN at it",
        path.display()
    );
    path
}

/// Whether a missing kernel feature or tool must fail the test instead of skipping it: on CI
/// (`CI=true`) and when `FLAMEWARDEN_REQUIRE_BPF=1`.
fn skipping_forbidden() -> bool {
    env::var("CI").is_ok_and(|v| v == "true")
        || env::var("FLAMEWARDEN_REQUIRE_BPF").is_ok_and(|v| v == "1")
}

/// Skips (returns `false`, saying so) or panics, per [`skipping_forbidden`].
fn skip(reason: &str) -> bool {
    assert!(
        !skipping_forbidden(),
        "cannot run this test: {reason} (CI=true or FLAMEWARDEN_REQUIRE_BPF=1 forbid skipping)"
    );
    eprintln!("skipping test - {reason}");
    false
}

/// Whether this process can record with eBPF: running as root, and the kernel loads a trivial
/// BPF program. Otherwise prints `skipping test - <reason>` and returns `false`, or panics with
/// the reason when `CI=true` or `FLAMEWARDEN_REQUIRE_BPF=1`.
pub fn require_bpf() -> bool {
    match bpf_unavailable_reason() {
        None => true,
        Some(reason) => skip(&reason),
    }
}

/// A fresh [`TestCgroup`] beneath this process's own cgroup v2, or `None` (skipping, or
/// panicking per the same rule as [`require_bpf`]) when none can be created.
pub fn require_cgroup(label: &str) -> Option<TestCgroup> {
    match TestCgroup::new(label) {
        Ok(cgroup) => Some(cgroup),
        Err(e) => {
            skip(&format!("cannot create a cgroup v2 for the test: {e}"));
            None
        }
    }
}

/// Like [`require_bpf`], for an external program the test compares against (e.g. `perf`).
pub fn require_tool(tool: &str) -> bool {
    let found = env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    found || skip(&format!("`{tool}` is not installed"))
}

fn bpf_unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root; eBPF profiling needs root".to_owned());
    }
    load_trivial_bpf_program()
        .err()
        .map(|e| format!("the kernel refuses to load a BPF program: {e}"))
}

/// The prefix of `union bpf_attr` that `BPF_PROG_LOAD` reads (linux/bpf.h).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// Loads `r0 = 0; exit` as a socket filter and closes it again.
fn load_trivial_bpf_program() -> std::io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // `mov64 r0, 0` (BPF_ALU64 | BPF_MOV | BPF_K) and `exit` (BPF_JMP | BPF_EXIT).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` is a valid, fully initialised BPF_PROG_LOAD attribute whose pointers
    // (`insns`, `license`) outlive the call; the size passed is its exact size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a file descriptor the kernel just returned to us and nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}
