//! Privilege and kernel-feature checks, and the filesystems flamewarden needs.

use std::{fs, io, path::Path};

use super::ProbeError;

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_ADMIN: u32 = 21;

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("CapEff:")
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            })
        })
        .unwrap_or(0)
}

/// Fails unless this process may load BPF programs and open system-wide perf events.
pub fn check_privileges() -> Result<(), ProbeError> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(ProbeError::NotPrivileged {
        missing: missing.join(", "),
    })
}

/// Fails when the kernel exposes no BTF.
pub fn check_btf() -> Result<(), ProbeError> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Ok(())
    } else {
        Err(ProbeError::NoBtf)
    }
}

/// Where tracefs is mounted, mounting it at /sys/kernel/tracing when it is nowhere.
pub fn ensure_tracefs() -> Result<&'static Path, ProbeError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Path::new(dir));
        }
    }
    mount("tracefs", "/sys/kernel/tracing", "tracefs").map_err(ProbeError::NoTracefs)?;
    Ok(Path::new("/sys/kernel/tracing"))
}

/// Mounts bpffs at /sys/fs/bpf unless it is mounted there already.
pub fn ensure_bpffs() -> io::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        return Ok(());
    }
    mount("bpf", "/sys/fs/bpf", "bpf")
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (source, target, fstype) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The thread-group id of `pid` (which may name a thread), or `NoSuchProcess`.
pub fn tgid_of(pid: u32) -> Result<u32, ProbeError> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| ProbeError::NoSuchProcess(pid))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        .ok_or(ProbeError::NoSuchProcess(pid))
}
