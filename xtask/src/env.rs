//! Where things are, and the environment every child process inherits.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a direct child of the workspace root")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The user's home directory.
pub fn home() -> anyhow::Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `$HOME/.cargo/bin`, where rustup's proxies and bpf-linker live.
pub fn cargo_bin() -> anyhow::Result<PathBuf> {
    Ok(home()?.join(".cargo/bin"))
}

/// Whether we run as root (mounts and apt-get need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Puts `$HOME/.cargo/bin` on PATH (bpf-linker must be there for the eBPF build) and drops the
/// library directories `cargo run` added to LD_LIBRARY_PATH for xtask itself, so that tools we
/// start (bpf-linker, nightly rustc) load their own libraries.
///
/// PATH is left untouched when it already holds the directory: the eBPF build script reruns
/// whenever PATH changes, so an identical PATH keeps cargo's cache valid across xtask and
/// plain cargo invocations.
pub fn prepare() {
    let mut changes: Vec<(&str, Option<OsString>)> = Vec::new();
    if let Ok(bin) = cargo_bin() {
        let path = env::var_os("PATH").unwrap_or_default();
        if !env::split_paths(&path).any(|dir| dir == bin) {
            let dirs = std::iter::once(bin).chain(env::split_paths(&path));
            if let Ok(joined) = env::join_paths(dirs) {
                changes.push(("PATH", Some(joined)));
            }
        }
    }
    if let Some(libs) = env::var_os("LD_LIBRARY_PATH") {
        let rustup_toolchains = env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| home().ok().map(|h| h.join(".rustup")))
            .map(|h| h.join("toolchains"));
        let target = target_dir();
        let kept: Vec<PathBuf> = env::split_paths(&libs)
            .filter(|dir| {
                !dir.starts_with(&target)
                    && !rustup_toolchains
                        .as_ref()
                        .is_some_and(|t| dir.starts_with(t))
            })
            .collect();
        let kept = env::join_paths(kept).unwrap_or_default();
        changes.push(("LD_LIBRARY_PATH", (!kept.is_empty()).then_some(kept)));
    }
    for (name, value) in changes {
        // SAFETY: `prepare` is the first thing `main` does, before xtask starts any thread, so
        // nothing can read the environment concurrently.
        unsafe {
            match value {
                Some(value) => env::set_var(name, value),
                None => env::remove_var(name),
            }
        }
    }
}
