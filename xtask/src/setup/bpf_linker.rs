//! bpf-linker, built against the libLLVM that ships with the nightly toolchain, so that it reads
//! the bitcode nightly rustc emits.
//!
//! bpf-linker's `llvm-sys` wants an LLVM installation prefix. We fake one in
//! `$HOME/.local/share/flamewarden/llvm`: `bin/llvm-config` is a stub that succeeds, and `lib/`
//! holds symlinks to nightly's `libLLVM.so.<ver>-rust-<ver>-nightly`. The built binary finds
//! libLLVM through that `lib/` (its RUNPATH), so the symlinks must follow the nightly sysroot.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::Outcome;
use crate::{env, run};

const LLVM_CONFIG_STUB: &str = "#!/bin/sh\nexit 0\n";

/// The shared libLLVM of the nightly toolchain.
#[derive(Debug, PartialEq, Eq)]
struct NightlyLlvm {
    /// The real file in the sysroot's `lib/`.
    path: PathBuf,
    /// Its file name, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly` (bpf-linker's DT_NEEDED).
    file_name: String,
    /// The LLVM major version, e.g. 22 (bpf-linker's `llvm-<major>` feature).
    major: u32,
}

/// Checks bpf-linker and (re)builds it if it is missing, does not run, or loads another libLLVM.
pub fn ensure(sysroot: &Path) -> anyhow::Result<Outcome> {
    let llvm = find_nightly_llvm(&sysroot.join("lib"))?;
    let prefix = env::home()?.join(".local/share/flamewarden/llvm");
    let relinked = prepare_prefix(&prefix, &llvm)?;
    let linker = env::cargo_bin()?.join("bpf-linker");
    match check(&linker, &llvm) {
        Ok(version) if relinked => Ok(Outcome::Done(format!(
            "{version}; pointed {} at nightly's {}",
            prefix.join("lib").display(),
            llvm.file_name
        ))),
        Ok(version) => Ok(Outcome::Present(format!(
            "{version}, uses nightly's {}",
            llvm.file_name
        ))),
        Err(why) => {
            println!(
                "setup  bpf-linker  building   {} {why}; this takes a few minutes",
                linker.display()
            );
            install(&prefix, &llvm)?;
            let version = check(&linker, &llvm).map_err(|why| {
                anyhow::anyhow!("bpf-linker is still unusable after `cargo install`: {why}")
            })?;
            Ok(Outcome::Done(format!(
                "built {version} against nightly's {}",
                llvm.file_name
            )))
        }
    }
}

/// Finds the regular file `libLLVM.so.*` in nightly's `lib/` (the `libLLVM-*.so` next to it is
/// a linker script naming it).
fn find_nightly_llvm(lib: &Path) -> anyhow::Result<NightlyLlvm> {
    let entries = fs::read_dir(lib).with_context(|| format!("failed to list {}", lib.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", lib.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") && entry.file_type().is_ok_and(|t| t.is_file()) {
            found.push(name);
        }
    }
    let [file_name] = found.as_slice() else {
        bail!(
            "expected one libLLVM.so.* file in {}, found {found:?}; \
             reinstall nightly (`rustup toolchain uninstall nightly`, then `cargo xtask setup`)",
            lib.display()
        );
    };
    let major = llvm_major(file_name)
        .with_context(|| format!("no LLVM major version in the file name {file_name:?}"))?;
    Ok(NightlyLlvm {
        path: lib.join(file_name),
        file_name: file_name.clone(),
        major,
    })
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` → 22.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    let end = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    version[..end].parse().ok()
}

/// Makes `prefix` a fake LLVM installation pointing at `llvm`; returns whether anything changed.
/// Links to an older nightly's libLLVM are removed, so a bpf-linker built for it fails to load
/// and is rebuilt instead of silently using a deleted library.
fn prepare_prefix(prefix: &Path, llvm: &NightlyLlvm) -> anyhow::Result<bool> {
    let mut changed = false;
    let bin = prefix.join("bin");
    let lib = prefix.join("lib");
    for dir in [&bin, &lib] {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }

    let stub = bin.join("llvm-config");
    let stub_ok = fs::read_to_string(&stub).is_ok_and(|s| s == LLVM_CONFIG_STUB)
        && stub
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111);
    if !stub_ok {
        fs::write(&stub, LLVM_CONFIG_STUB)
            .with_context(|| format!("failed to write {}", stub.display()))?;
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to make {} executable", stub.display()))?;
        changed = true;
    }

    let wanted = ["libLLVM.so", llvm.file_name.as_str()];
    for name in wanted {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|target| target == llvm.path) {
            continue;
        }
        remove_if_present(&link)?;
        symlink(&llvm.path, &link).with_context(|| {
            format!(
                "failed to link {} → {}",
                link.display(),
                llvm.path.display()
            )
        })?;
        changed = true;
    }
    for entry in fs::read_dir(&lib).with_context(|| format!("failed to list {}", lib.display()))? {
        let entry = entry.with_context(|| format!("failed to list {}", lib.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") && !wanted.contains(&name.as_str()) {
            remove_if_present(&entry.path())?;
            changed = true;
        }
    }
    Ok(changed)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// `Ok(version)` if `linker` runs and loads `llvm` (or links LLVM statically), else why not.
fn check(linker: &Path, llvm: &NightlyLlvm) -> Result<String, String> {
    if !linker.is_file() {
        return Err("is not installed".to_owned());
    }
    let version = run::probe(Command::new(linker).arg("--version"))
        .map_err(|why| format!("does not run ({why})"))?;
    // `ldd` says which libLLVM the loader picks; without ldd, running is the best check we have.
    if let Ok(ldd) = run::probe(Command::new("ldd").arg(linker))
        && let Some(loaded) = loaded_llvm(&ldd)
    {
        let same = fs::canonicalize(&loaded)
            .ok()
            .zip(fs::canonicalize(&llvm.path).ok())
            .is_some_and(|(a, b)| a == b);
        if !same {
            return Err(format!(
                "loads {} instead of nightly's {}",
                loaded.display(),
                llvm.file_name
            ));
        }
    }
    Ok(version.trim().to_owned())
}

/// The libLLVM path in `ldd` output, if the binary links LLVM dynamically.
fn loaded_llvm(ldd: &str) -> Option<PathBuf> {
    ldd.lines()
        .filter(|line| line.trim_start().starts_with("libLLVM"))
        .find_map(|line| {
            let resolved = line.split_once("=>")?.1.trim();
            let path = resolved.rsplit_once(" (0x").map_or(resolved, |(p, _)| p);
            Some(PathBuf::from(path.trim()))
        })
}

/// `LLVM_PREFIX=<prefix> cargo install bpf-linker --no-default-features --features llvm-<major>`
/// from a temporary directory, so the workspace's cargo configuration does not apply.
fn install(prefix: &Path, llvm: &NightlyLlvm) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a temporary directory")?;
    let root = env::home()?.join(".cargo");
    run::status(
        Command::new("cargo")
            .current_dir(scratch.path())
            .env("LLVM_PREFIX", prefix)
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{}", llvm.major))
            .arg("--root")
            .arg(&root)
            // An installed but broken bpf-linker of the same version must be replaced.
            .arg("--force"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_version_comes_from_the_library_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19-rust-1.84.0-nightly"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
    }

    #[test]
    fn finds_the_real_library_and_skips_the_linker_script_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = "libLLVM.so.22.1-rust-1.97.0-nightly";
        fs::write(dir.path().join(real), b"\x7fELF").unwrap();
        fs::write(
            dir.path().join("libLLVM-22-rust-1.97.0-nightly.so"),
            format!("INPUT({real})"),
        )
        .unwrap();
        symlink(real, dir.path().join("libLLVM.so.22")).unwrap();
        let llvm = find_nightly_llvm(dir.path()).unwrap();
        assert_eq!(llvm.file_name, real);
        assert_eq!(llvm.major, 22);
        assert_eq!(llvm.path, dir.path().join(real));
    }

    #[test]
    fn prefix_is_repointed_from_a_stale_nightly_and_then_left_alone() {
        let sysroot = tempfile::tempdir().unwrap();
        let prefix = tempfile::tempdir().unwrap();
        let old = "libLLVM.so.21.1-rust-1.90.0-nightly";
        fs::create_dir_all(prefix.path().join("lib")).unwrap();
        symlink(
            sysroot.path().join(old),
            prefix.path().join("lib/libLLVM.so"),
        )
        .unwrap();
        symlink(
            sysroot.path().join(old),
            prefix.path().join("lib").join(old),
        )
        .unwrap();
        let new = "libLLVM.so.22.1-rust-1.97.0-nightly";
        fs::write(sysroot.path().join(new), b"").unwrap();
        let llvm = find_nightly_llvm(sysroot.path()).unwrap();

        assert!(prepare_prefix(prefix.path(), &llvm).unwrap());
        let lib = prefix.path().join("lib");
        assert_eq!(fs::read_link(lib.join("libLLVM.so")).unwrap(), llvm.path);
        assert_eq!(fs::read_link(lib.join(new)).unwrap(), llvm.path);
        assert!(fs::symlink_metadata(lib.join(old)).is_err());
        let stub = prefix.path().join("bin/llvm-config");
        assert_eq!(fs::read_to_string(&stub).unwrap(), LLVM_CONFIG_STUB);
        assert_eq!(stub.metadata().unwrap().permissions().mode() & 0o777, 0o755);

        assert!(!prepare_prefix(prefix.path(), &llvm).unwrap());
    }

    #[test]
    fn reads_the_loaded_libllvm_from_ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007f39fddf3000)\n\
            \tlibLLVM.so.22.1-rust-1.97.0-nightly => /p/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x00007f39f3200000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f39f301e000)\n";
        assert_eq!(
            loaded_llvm(ldd),
            Some(PathBuf::from("/p/lib/libLLVM.so.22.1-rust-1.97.0-nightly"))
        );
        assert_eq!(loaded_llvm("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"), None);
    }
}
