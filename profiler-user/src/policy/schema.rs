//! The policy file as written: serde structs with spans, before validation.
//!
//! Every value keeps its byte span ([`Spanned`]) so that validation errors can point at it.
//! `docs/policy.md` documents each field.

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, TimeSpan};

/// Whether a policy denies or only reports.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Violations are denied (and reported).
    #[default]
    Enforce,
    /// Nothing is denied; what would have been is reported.
    Audit,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    /// Free text shown by `policy explain`.
    #[serde(default)]
    pub description: Option<String>,
    /// `[filesystem]`.
    #[serde(default)]
    pub filesystem: FilesystemSection,
    /// `[network]`; absent means no network at all.
    #[serde(default)]
    pub network: Option<Spanned<NetworkSection>>,
    /// `[ipc]`.
    #[serde(default)]
    pub ipc: IpcSection,
    /// `[syscalls]`.
    #[serde(default)]
    pub syscalls: SyscallsSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[filesystem]`: path trees by what a submission may do beneath them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    /// Trees that may be read (files opened for reading, directories listed).
    #[serde(default)]
    pub readable: Vec<Spanned<String>>,
    /// Trees that may be read and written (files created, written, truncated, removed).
    #[serde(default)]
    pub writable: Vec<Spanned<String>>,
    /// Files (or trees) that may be executed.
    #[serde(default)]
    pub executable: Vec<Spanned<String>>,
    /// Paths that must stay out of reach; an allowed tree containing one is an error.
    #[serde(default)]
    pub denied: Vec<Spanned<String>>,
    /// Paths whose refusal is no violation: runtimes probe them and carry on without them
    /// (still refused). A trailing `/` names everything beneath.
    #[serde(default)]
    pub quiet: Vec<Spanned<String>>,
}

/// `[network]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// No network at all (default when `allow` is empty).
    #[serde(default)]
    pub deny_all: Option<Spanned<bool>>,
    /// `address[/prefix]:port/protocol` entries, e.g. `127.0.0.1:8080/tcp`, `[::1]:53/udp`.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}

/// `[ipc]`: reaching outside the sandbox other than through files and the network.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpcSection {
    /// May signal processes outside the sandbox (default false).
    #[serde(default)]
    pub signal_outside: Option<Spanned<bool>>,
    /// May connect to abstract unix sockets made outside the sandbox (default false).
    #[serde(default)]
    pub abstract_unix_outside: Option<Spanned<bool>>,
    /// May create unix sockets with `socket(2)` (default false; `socketpair` always works).
    #[serde(default)]
    pub unix_sockets: Option<Spanned<bool>>,
    /// May change the priority, CPU affinity, scheduling or resource limits of processes
    /// outside the sandbox (default false).
    #[serde(default)]
    pub processes_outside: Option<Spanned<bool>>,
}

/// What a syscall not matched by a rule gets.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allowed.
    Allow,
    /// Refused with `default_errno`.
    Errno,
    /// The process is killed.
    Kill,
}

/// What a deny rule does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DenyAction {
    /// The call fails with `errno` (default `EPERM`).
    Errno,
    /// The process is killed at syscall entry.
    Kill,
}

/// `[syscalls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallsSection {
    /// What unlisted syscalls get: `allow` (default), `errno` or `kill`.
    #[serde(default)]
    pub default: Option<Spanned<DefaultAction>>,
    /// The errno of `default = "errno"`.
    #[serde(default)]
    pub default_errno: Option<Spanned<String>>,
    /// Syscalls that stay allowed (the allow-list when `default` is not `allow`).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// `[[syscalls.deny]]` rules.
    #[serde(default)]
    pub deny: Vec<Spanned<DenyRule>>,
}

/// One `[[syscalls.deny]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// Syscall names; a trailing `*` matches every syscall with that prefix (`io_uring_*`).
    pub names: Vec<Spanned<String>>,
    /// `errno` or `kill`.
    pub action: Spanned<DenyAction>,
    /// The errno name for `action = "errno"` (default `EPERM`).
    #[serde(default)]
    pub errno: Option<Spanned<String>>,
    /// Only when an argument has any of these bits set.
    #[serde(default)]
    pub if_arg: Option<Spanned<ArgBits>>,
}

/// `if_arg = { index = 0, any_of = ["CLONE_NEWUSER", "0x10000000"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgBits {
    /// Which argument, 0 to 5.
    pub index: Spanned<u8>,
    /// Flag names (`CLONE_NEW*`) or numbers (`"0x10000000"`).
    pub any_of: Vec<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Processes and threads alive at once.
    #[serde(default)]
    pub tasks: Option<Spanned<u32>>,
    /// Memory, e.g. `"256MiB"`.
    #[serde(default)]
    pub memory: Option<Spanned<ByteSize>>,
    /// CPU time of all tasks, e.g. `"2s"`.
    #[serde(default)]
    pub cpu_time: Option<Spanned<TimeSpan>>,
    /// Wall-clock time, e.g. `"5s"`.
    #[serde(default)]
    pub wall_time: Option<Spanned<TimeSpan>>,
    /// Bytes written (stdout and files), e.g. `"64MiB"`.
    #[serde(default)]
    pub output: Option<Spanned<ByteSize>>,
    /// Size of the fresh work directory (a tmpfs), e.g. `"64MiB"`.
    #[serde(default)]
    pub disk: Option<Spanned<ByteSize>>,
    /// Forks per second beyond which the run is a fork bomb.
    #[serde(default)]
    pub fork_rate: Option<Spanned<u32>>,
    /// Stack size (`RLIMIT_STACK`), e.g. `"256MiB"`: deep recursion needs more than 8 MiB.
    #[serde(default)]
    pub stack: Option<Spanned<ByteSize>>,
}
