//! Errors of loading and attaching, each one line a user can act on.

use std::path::PathBuf;

/// Why the kernel side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The binary was built without bpf-linker and carries no eBPF object.
    #[error(
        "this flamewarden binary was built without its eBPF object; run `cargo xtask setup` and rebuild"
    )]
    NoObject,
    /// Not root and missing the capabilities BPF needs.
    #[error(
        "flamewarden needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {missing})"
    )]
    NotPrivileged {
        /// The capabilities that are missing.
        missing: String,
    },
    /// The kernel exposes no BTF.
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); flamewarden needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    /// tracefs is not mounted and could not be mounted.
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}; mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs(std::io::Error),
    /// A tracepoint format file could not be read or lacks a field.
    #[error("tracepoint {category}/{event}: {reason}")]
    Tracepoint {
        /// Tracepoint category, e.g. `sched`.
        category: String,
        /// Tracepoint name, e.g. `sched_process_fork`.
        event: String,
        /// What went wrong.
        reason: String,
    },
    /// A structure field or tracepoint argument the network tracer reads is not in the
    /// kernel's BTF.
    #[error("cannot trace the network on this kernel: {0}")]
    KernelLayout(String),
    /// The kernel refused the object.
    #[error("failed to load the eBPF object")]
    Load(#[source] aya::EbpfError),
    /// A program is missing from the object (a build mismatch).
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    /// A map is missing from the object (a build mismatch).
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    /// Loading or attaching a program failed.
    #[error("failed to attach {what}")]
    Attach {
        /// What was being attached.
        what: String,
        /// The kernel's answer.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Software perf events are unavailable.
    #[error(
        "perf events are unavailable ({0}); check kernel.perf_event_paranoid and CONFIG_PERF_EVENTS"
    )]
    PerfEvents(String),
    /// A map operation failed.
    #[error("BPF map {map}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// No process with this id.
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    /// A path given as a cgroup is not one.
    #[error("{path}: {reason}")]
    BadCgroup {
        /// The path the user gave.
        path: PathBuf,
        /// Why it is not a cgroup v2 directory.
        reason: String,
    },
}
