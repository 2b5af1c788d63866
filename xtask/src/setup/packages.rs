//! System packages the end-to-end tests and the benchmarks run, installed with apt-get.

use std::process::Command;

use anyhow::bail;

use super::Outcome;
use crate::run;

/// (Debian package, the program that shows it is installed).
const PACKAGES: [(&str, &str); 11] = [
    ("gcc", "gcc"),
    ("linux-perf", "perf"),
    ("bpftool", "bpftool"),
    ("bpftrace", "bpftrace"),
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("jq", "jq"),
    ("prometheus", "promtool"),
    ("golang-go", "go"),
    ("chromium", "chromium"),
    // Split debug info of libc, libm and ld.so: their frames are named like any other.
    ("libc6-dbg", "/usr/lib/debug/.build-id"),
];

/// A program on PATH, or (for an absolute path) a file or directory the package installs.
fn is_installed(program: &str) -> bool {
    if program.starts_with('/') {
        std::path::Path::new(program).exists()
    } else {
        run::find_program(program).is_some()
    }
}

/// Installs the packages whose program is not found.
pub fn ensure(root: bool) -> anyhow::Result<Outcome> {
    let missing: Vec<(&str, &str)> = PACKAGES
        .into_iter()
        .filter(|(_, program)| !is_installed(program))
        .collect();
    if missing.is_empty() {
        let programs: Vec<&str> = PACKAGES.iter().map(|(_, program)| *program).collect();
        return Ok(Outcome::Present(format!("found {}", programs.join(" "))));
    }
    let names: Vec<&str> = missing.iter().map(|(package, _)| *package).collect();
    let apt = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        names.join(" ")
    );
    if !root {
        return Ok(Outcome::NeedsRoot(format!("missing; run `{apt}` as root")));
    }
    if run::find_program("apt-get").is_none() {
        bail!(
            "missing {} and there is no apt-get: install the equivalent packages with your \
             distribution's package manager",
            names.join(" ")
        );
    }
    // Only reached when something is missing, so the index is refreshed once, before the
    // first install, and never on a machine that is already set up.
    run::status(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run::status(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still_missing: Vec<&str> = missing
        .iter()
        .filter(|(_, program)| !is_installed(program))
        .map(|(_, program)| *program)
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "apt-get installed {} but {} still cannot be found",
            names.join(" "),
            still_missing.join(" ")
        );
    }
    Ok(Outcome::Done(format!("installed {}", names.join(" "))))
}
