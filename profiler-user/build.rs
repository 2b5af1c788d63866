//! Builds the eBPF object (`profiler-ebpf`) with aya-build and leaves it in `OUT_DIR`, where
//! `probes` embeds it.
//!
//! Without bpf-linker on PATH (a `cargo check` or clippy on a machine that never ran
//! `cargo xtask setup`) an empty stub is written instead and the binary says so when it loads;
//! `FLAMEWARDEN_REQUIRE_EBPF=1` (set by every xtask command) turns that into a build error so the
//! real build and the tests always carry the real object.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=FLAMEWARDEN_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("profiler-ebpf");
    let required = env::var("FLAMEWARDEN_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let skipped = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    let have_linker = env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()));

    if skipped || !have_linker {
        if required {
            bail!(
                "the eBPF object cannot be built: {}; run `cargo xtask setup`",
                if skipped {
                    "AYA_BUILD_SKIP is set"
                } else {
                    "bpf-linker is not on PATH"
                }
            );
        }
        println!(
            "cargo:warning=building flamewarden WITHOUT its eBPF object (bpf-linker missing); \
             run `cargo xtask setup` for a working binary"
        );
        fs::write(&object, b"").with_context(|| format!("failed to write {}", object.display()))?;
        println!("cargo:rustc-env=FLAMEWARDEN_EBPF_HASH=none");
        return Ok(());
    }
    let root_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiler-ebpf");
    let root_dir = root_dir
        .to_str()
        .context("non-UTF-8 path to profiler-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "profiler-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // Pinned programs carry this: a flamewarden with another object replaces them.
    let bytes =
        fs::read(&object).with_context(|| format!("failed to read {}", object.display()))?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo:rustc-env=FLAMEWARDEN_EBPF_HASH={hash:016x}");
    Ok(())
}
