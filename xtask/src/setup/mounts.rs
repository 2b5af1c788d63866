//! tracefs (tracepoint ids for the probes) and bpffs (pinned guard programs).

use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use super::Outcome;
use crate::run;

/// A filesystem flamewarden needs mounted.
#[derive(Debug)]
pub struct Mount {
    /// The step name shown by setup.
    pub name: &'static str,
    /// The filesystem type, as in `/proc/self/mounts` and `mount -t`.
    fstype: &'static str,
    /// Where it must be mounted.
    target: &'static str,
}

/// Every mount setup checks.
pub const MOUNTS: [Mount; 2] = [
    Mount {
        name: "tracefs",
        fstype: "tracefs",
        target: "/sys/kernel/tracing",
    },
    Mount {
        name: "bpffs",
        fstype: "bpf",
        target: "/sys/fs/bpf",
    },
];

impl Mount {
    fn command(&self) -> String {
        format!("mount -t {0} {0} {1}", self.fstype, self.target)
    }
}

/// Mounts `mount` unless `/proc/self/mounts` already lists it.
pub fn ensure(mount: &Mount, root: bool) -> anyhow::Result<Outcome> {
    let table =
        fs::read_to_string("/proc/self/mounts").context("failed to read /proc/self/mounts")?;
    if is_mounted(&table, mount) {
        return Ok(Outcome::Present(format!("mounted at {}", mount.target)));
    }
    if !root {
        return Ok(Outcome::NeedsRoot(format!(
            "not mounted; run `{}` as root",
            mount.command()
        )));
    }
    // The mount point may be missing in a minimal container; mount says so if this fails.
    let _ = fs::create_dir_all(mount.target);
    let result =
        run::status(Command::new("mount").args(["-t", mount.fstype, mount.fstype, mount.target]));
    if let Err(e) = result {
        bail!(
            "{e:#}: {} is not mounted and mounting it failed. In a container, start it with \
             --privileged (or mount {} from the host); otherwise run `{}` as root and check the \
             kernel has {} support",
            mount.target,
            mount.target,
            mount.command(),
            mount.fstype
        );
    }
    Ok(Outcome::Done(format!(
        "mounted {} at {}",
        mount.fstype, mount.target
    )))
}

/// Turns on `favordynmods` on the cgroup2 mount: moving a process into a cgroup then costs
/// about 0.4 ms instead of a grace period of RCU (about 8 ms here), which is most of the
/// per-run cost of `flamewarden sandbox run`. Forks and exits get slightly dearer. Not fatal
/// when it cannot be done (an older kernel, a container): runs are only slower.
pub fn favordynmods(root: bool) -> anyhow::Result<Outcome> {
    let table =
        fs::read_to_string("/proc/self/mounts").context("failed to read /proc/self/mounts")?;
    let Some((target, options)) = table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| (fields[1].to_owned(), fields[3].to_owned()))
    }) else {
        return Ok(Outcome::Present(
            "no cgroup2 mount; sandbox runs need one".into(),
        ));
    };
    if options.split(',').any(|o| o == "favordynmods") {
        return Ok(Outcome::Present(format!("favordynmods on {target}")));
    }
    if !root {
        return Ok(Outcome::NeedsRoot(format!(
            "run `mount -o remount,favordynmods {target}` as root for fast sandbox runs"
        )));
    }
    match run::status(Command::new("mount").args(["-o", "remount,favordynmods", &target])) {
        Ok(()) => Ok(Outcome::Done(format!("favordynmods on {target}"))),
        Err(e) => Ok(Outcome::Present(format!(
            "favordynmods could not be set on {target} ({e:#}); sandbox runs will be slower"
        ))),
    }
}

/// Whether the mount table (`/proc/self/mounts` format) has `mount.fstype` at `mount.target`.
fn is_mounted(table: &str, mount: &Mount) -> bool {
    table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(mount.target) && fields.next() == Some(mount.fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "sysfs /sys sysfs rw,nosuid 0 0\n\
        tracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n\
        none /sys/fs/bpf tmpfs rw 0 0\n";

    #[test]
    fn a_mount_counts_only_with_the_right_type_at_the_right_place() {
        assert!(is_mounted(TABLE, &MOUNTS[0]));
        // Something else mounted on /sys/fs/bpf is not bpffs.
        assert!(!is_mounted(TABLE, &MOUNTS[1]));
        assert!(!is_mounted("", &MOUNTS[0]));
    }
}
