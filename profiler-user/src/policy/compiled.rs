//! The compiled policy: plain data per enforcement layer, ready to become a Landlock ruleset,
//! seccomp filters, cgroup-BPF map entries, cgroup limits and rlimits.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use super::{error::Location, schema::Mode};

/// A validated policy, split by the layer that enforces each part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// The policy file's name, for messages and verdicts.
    pub name: String,
    /// The `description` field, if any.
    pub description: Option<String>,
    /// Enforce or only report.
    pub mode: Mode,
    /// Files, TCP ports and scopes: the Landlock ruleset.
    pub landlock: LandlockLayer,
    /// Syscall rules: the seccomp filter.
    pub seccomp: SeccompLayer,
    /// Address rules: the cgroup-BPF network maps.
    pub network: NetworkLayer,
    /// Resource limits: cgroup controllers, rlimits and the fork-rate tracepoint.
    pub limits: Limits,
    /// Syscalls (this architecture's numbers) that end the process unconditionally; the
    /// syscall tracepoint kills at entry with `bpf_send_signal(SIGKILL)`. Conditional `kill`
    /// rules are left to seccomp, which sees the arguments.
    pub kill_syscalls: Vec<u32>,
}

/// What may be done beneath a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FsAccess {
    /// Open files for reading, list directories.
    pub read: bool,
    /// Create, write, truncate, rename and remove files and directories.
    pub write: bool,
    /// Execute files.
    pub execute: bool,
}

impl fmt::Display for FsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.read, "read"),
            (self.write, "write"),
            (self.execute, "execute"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        f.write_str(&words.join(","))
    }
}

/// A path as written in the policy, before the run's placeholders are known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathTemplate {
    /// An absolute path.
    Literal(PathBuf),
    /// `{workdir}`, or a path beneath it (`{workdir}/out`): the relative part.
    Workdir(PathBuf),
    /// `{command}`: the executable the run starts.
    Command,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(path) => write!(f, "{}", path.display()),
            Self::Workdir(rest) if rest.as_os_str().is_empty() => f.write_str("{workdir}"),
            Self::Workdir(rest) => write!(f, "{{workdir}}/{}", rest.display()),
            Self::Command => f.write_str("{command}"),
        }
    }
}

/// One Landlock path rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The path or placeholder.
    pub path: PathTemplate,
    /// The rights granted beneath it.
    pub access: FsAccess,
    /// Skipped, rather than an error, when the path does not exist (written with a trailing `?`).
    pub optional: bool,
    /// Where the policy grants it.
    pub origin: Location,
    /// The field that grants it (`filesystem.readable[2]`).
    pub field: String,
}

/// A path that must stay out of reach, checked against every allowed tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedPath {
    /// The path.
    pub path: PathBuf,
    /// Where the policy names it.
    pub origin: Location,
    /// Its field.
    pub field: String,
}

/// A path whose refusal is not reported (`filesystem.quiet`): it stays refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuietPath {
    /// The path; `/proc/self/…` also names `/proc/<pid>/…` and `/proc/thread-self/…`.
    pub path: String,
    /// Everything beneath `path` (written with a trailing `/`), not the path alone.
    pub tree: bool,
}

impl QuietPath {
    /// Whether a refused access to `path` (as the call named it, or as resolved) is quiet.
    /// `.` and `..` are resolved first (`/sys/fs/cgroup/../../etc/shadow` is no probe of the
    /// cgroup tree), and so are symlinks where the path exists, as the kernel resolved them. A
    /// relative path never is one.
    pub fn covers(&self, path: &str) -> bool {
        let Some(path) = lexically_normal(path) else {
            return false;
        };
        let path = match std::fs::canonicalize(&path) {
            Ok(real) => real.to_string_lossy().into_owned(),
            Err(_) => path,
        };
        let path = proc_self(&path);
        if self.tree {
            path.starts_with(&self.path)
        } else {
            path == self.path
        }
    }
}

/// An absolute path without `.`, `..` or repeated slashes (a trailing slash kept); `None` for a
/// relative one.
fn lexically_normal(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut parts: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut normal = format!("/{}", parts.join("/"));
    if path.ends_with('/') && normal.len() > 1 {
        normal.push('/');
    }
    Some(normal)
}

/// `/proc/<pid>/…`, `/proc/<pid>/task/<tid>/…` and `/proc/thread-self/…` as `/proc/self/…`.
fn proc_self(path: &str) -> std::borrow::Cow<'_, str> {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = path.strip_prefix("/proc/") else {
        return path.into();
    };
    let (first, mut tail) = rest.split_once('/').unwrap_or((rest, ""));
    if first != "thread-self" && !number(first) {
        return path.into();
    }
    if let Some(task) = tail.strip_prefix("task/") {
        let (tid, after) = task.split_once('/').unwrap_or((task, ""));
        if number(tid) {
            tail = after;
        }
    }
    format!("/proc/self/{tail}").into()
}

/// The Landlock layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandlockLayer {
    /// Allowed trees, one rule per path, rights merged.
    pub paths: Vec<PathRule>,
    /// Paths that must not be inside any allowed tree.
    pub denied: Vec<DeniedPath>,
    /// Paths whose refusal is not reported.
    pub quiet: Vec<QuietPath>,
    /// Handle TCP bind/connect (any network restriction); unhandled means unrestricted.
    pub restrict_tcp: bool,
    /// TCP ports that may be connected to (the address check is the cgroup-BPF layer's).
    pub tcp_connect_ports: Vec<u16>,
    /// Confine signals to the sandbox.
    pub scope_signals: bool,
    /// Confine abstract unix socket connections to the sandbox.
    pub scope_abstract_unix: bool,
}

/// What a syscall rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallAction {
    /// Allowed.
    Allow,
    /// Fails with this errno.
    Errno(u16),
    /// Kills the process.
    Kill,
}

impl fmt::Display for SyscallAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Allow => f.write_str("allow"),
            Self::Errno(errno) => write!(f, "errno {}", errno_name(errno)),
            Self::Kill => f.write_str("kill"),
        }
    }
}

/// The symbolic name of an errno value (`EPERM`), or its number.
pub fn errno_name(errno: u16) -> String {
    syscalls::Errno::new(i32::from(errno))
        .name()
        .map_or_else(|| errno.to_string(), str::to_owned)
}

/// How an argument is tested; argument values are compared as 64-bit unless [`ArgCheck::dword`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgTest {
    /// `arg & mask != 0`.
    AnyBits(u64),
    /// `arg == value`.
    Equals(u64),
    /// `arg & mask == value`.
    MaskedEquals {
        /// The bits compared.
        mask: u64,
        /// Their expected value.
        value: u64,
    },
    /// `arg != value`.
    NotEquals(u64),
}

/// A test of one syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgCheck {
    /// Argument index, 0 to 5.
    pub index: u8,
    /// Compare only the low 32 bits (for `int` arguments, whose upper half is undefined).
    pub dword: bool,
    /// The test.
    pub test: ArgTest,
}

impl fmt::Display for ArgCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arg = format!("arg{}", self.index);
        match self.test {
            ArgTest::AnyBits(mask) => write!(f, "{arg} & {mask:#x} != 0"),
            ArgTest::Equals(value) => write!(f, "{arg} == {value}"),
            ArgTest::MaskedEquals { mask, value } => write!(f, "{arg} & {mask:#x} == {value}"),
            ArgTest::NotEquals(value) => write!(f, "{arg} != {value}"),
        }
    }
}

/// One seccomp rule: a syscall, optional argument checks (all must hold), an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRule {
    /// The syscall number on this architecture.
    pub syscall: u32,
    /// Its name.
    pub name: &'static str,
    /// What a matching call gets.
    pub action: SyscallAction,
    /// Argument checks; empty means every call.
    pub when: Vec<ArgCheck>,
    /// The rule's name in verdicts (`syscalls.deny[0]`, `network.deny_all`).
    pub rule: String,
    /// Where the policy asks for it.
    pub origin: Location,
}

/// The seccomp layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompLayer {
    /// What a syscall that no rule matches gets.
    pub default_action: SyscallAction,
    /// With a non-`Allow` default: the allow-list (syscall numbers, sorted).
    pub allowed: Vec<u32>,
    /// Deny rules, including those derived from `[network]` and `[ipc]`.
    pub rules: Vec<SyscallRule>,
}

/// Address family of a network rule, as the kernel numbers it.
pub const AF_INET: u16 = 2;
/// IPv6.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;

/// One allowed destination, laid out for a BPF map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetAllow {
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// The address in network byte order; IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
    /// Prefix length in bits (32 or 128 for a single host).
    pub prefix_len: u8,
    /// Destination port (host byte order).
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
}

impl NetAllow {
    /// The address as an [`IpAddr`].
    pub fn ip(&self) -> IpAddr {
        if self.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }
}

impl fmt::Display for NetAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.protocol == IPPROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        let host_bits = if self.family == AF_INET { 32 } else { 128 };
        let prefix = if self.prefix_len == host_bits {
            String::new()
        } else {
            format!("/{}", self.prefix_len)
        };
        match self.ip() {
            IpAddr::V4(ip) => write!(f, "{ip}{prefix}:{}/{proto}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}{prefix}]:{}/{proto}", self.port),
        }
    }
}

/// The network layer, enforced per cgroup by the cgroup-BPF programs (keyed by cgroup id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkLayer {
    /// No connect, bind or send at all.
    pub deny_all: bool,
    /// With `deny_all` false and this non-empty: only these destinations. Both false and empty
    /// means the network is not restricted.
    pub allow: Vec<NetAllow>,
}

impl NetworkLayer {
    /// Whether any network rule applies.
    pub fn is_restricted(&self) -> bool {
        self.deny_all || !self.allow.is_empty()
    }
}

/// Resource limits; `None` means not limited by the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Tasks (processes and threads) alive at once: pids cgroup, `RLIMIT_NPROC` as a backup.
    pub tasks: Option<u32>,
    /// Memory in bytes: memory cgroup, `RLIMIT_DATA` as a backup.
    pub memory_bytes: Option<u64>,
    /// CPU time: cpu accounting, `RLIMIT_CPU` as a backup.
    pub cpu_time: Option<Duration>,
    /// Wall-clock time, enforced by the supervising process.
    pub wall_time: Option<Duration>,
    /// Bytes of output: counted on stdout, `RLIMIT_FSIZE` for files.
    pub output_bytes: Option<u64>,
    /// Bytes of files in the work directory `sandbox run` makes: it is a tmpfs of this size
    /// (its pages count against the memory limit too). A `--workdir` is used as it is.
    pub disk_bytes: Option<u64>,
    /// Forks per second beyond which the run is ended as a fork bomb.
    pub fork_rate: Option<u32>,
    /// The stack size (`RLIMIT_STACK`, soft and hard): how deep a recursion may go, and the
    /// C library's default thread stack. Touched stack pages count against `memory`.
    pub stack_bytes: Option<u64>,
}
