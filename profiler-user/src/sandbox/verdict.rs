//! The verdict of a sandbox run (see docs/sandbox.md): status, resources and violations. Pure:
//! the violations the kernel recorded are decoded here into rules and arguments.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use profiler_common::{
    FS_EXECUTE, FS_INTERPRETER, FS_READ, FS_RELATIVE, FS_WRITE, GUARD_RULE_DENY_ALL,
    GUARD_RULE_NOT_ALLOWED, GUARD_RULE_PACKET_SOCKET, GUARD_RULE_RAW_SOCKET, GuardHook, GuardRun,
    GuardSyscallClass as Class, GuardViolation, VIOLATION_AUDITED, VIOLATION_FORK_RATE,
    VIOLATION_KILLED, VIOLATION_TASKS, bitmap_has,
};
use serde::Serialize;

use crate::{
    policy::{ArgCheck, ArgTest, CompiledPolicy, ResolvedPath, SyscallAction},
    syscalls::names::{errno_name, syscall_name},
};

/// How a run ended, in the order of precedence the verdict applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// flamewarden failed after the command started.
    InternalError,
    /// The task limit was hit or the fork rate tripped.
    ForkBomb,
    /// The command tried something the policy forbids (enforce mode).
    SecurityViolation,
    /// The memory limit was hit.
    MemoryLimit,
    /// The CPU-time limit was hit.
    TimeLimit,
    /// The wall-time limit was hit.
    WallTimeLimit,
    /// The output limit was hit.
    OutputLimit,
    /// Non-zero exit, or killed by a signal.
    RuntimeError,
    /// Exit code 0 and nothing else.
    Ok,
}

/// One violation as the verdict reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// The policy rule (docs/sandbox.md, "Rules").
    pub rule: String,
    /// `denied`, `killed` or `audited`.
    pub action: &'static str,
    /// The syscall, by name; `null` for a limit.
    pub syscall: Option<String>,
    /// The offending path, address, pid or flags, as the kernel read them.
    pub argument: Option<String>,
    /// The errno the call got.
    pub errno: Option<String>,
    /// Thread id.
    pub pid: u32,
    /// Milliseconds since the run started.
    pub time_ms: f64,
    /// The user stack, innermost first.
    pub stack: Vec<String>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// See [`Status`].
    pub status: Status,
    /// The exit code, when the command exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// CPU time of every process of the run.
    pub cpu_time_ms: f64,
    /// Wall time from exec to the last process's end.
    pub wall_time_ms: f64,
    /// Peak memory of the run's cgroup.
    pub peak_memory_bytes: u64,
    /// Bytes written to standard output.
    pub output_bytes: u64,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// The policy file.
    pub policy: String,
    /// The first violations, in order.
    pub violations: Vec<Violation>,
    /// Violations seen, recorded in full or not.
    pub violations_total: u64,
    /// Violations that could not be recorded.
    pub violations_lost: u64,
    /// Why the status is `internal_error`, or a note on how the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which limits ended the run, as observed from outside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitsHit {
    /// Task limit hit or fork rate tripped.
    pub fork_bomb: bool,
    /// Memory limit hit (an OOM kill in the cgroup).
    pub memory: bool,
    /// CPU time reached.
    pub cpu_time: bool,
    /// Wall time reached.
    pub wall_time: bool,
    /// Output limit reached.
    pub output: bool,
    /// The fresh work directory (a tmpfs of `limits.disk`) filled up: writes failed with ENOSPC.
    pub disk: bool,
}

impl LimitsHit {
    /// A violation per limit that ended the run (fork bombs have their own, from the kernel),
    /// or that refused writes (`limits.disk`).
    pub fn violations(&self, time_ms: f64) -> Vec<Violation> {
        [
            (self.memory, "limits.memory", "killed"),
            (self.cpu_time, "limits.cpu_time", "killed"),
            (self.wall_time, "limits.wall_time", "killed"),
            (self.output, "limits.output", "killed"),
            (self.disk, "limits.disk", "denied"),
        ]
        .into_iter()
        .filter(|(hit, _, _)| *hit)
        .map(|(_, rule, action)| Violation {
            rule: rule.to_owned(),
            action,
            syscall: None,
            argument: None,
            errno: None,
            pid: 0,
            time_ms,
            stack: Vec::new(),
        })
        .collect()
    }
}

/// The status of a run: the first that applies.
pub fn status(
    internal_error: bool,
    limits: LimitsHit,
    enforced_violations: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
) -> Status {
    if internal_error {
        Status::InternalError
    } else if limits.fork_bomb {
        Status::ForkBomb
    } else if enforced_violations {
        Status::SecurityViolation
    } else if limits.memory {
        Status::MemoryLimit
    } else if limits.cpu_time {
        Status::TimeLimit
    } else if limits.wall_time {
        Status::WallTimeLimit
    } else if limits.output || limits.disk {
        Status::OutputLimit
    } else if signal.is_some() || exit_code != Some(0) {
        Status::RuntimeError
    } else {
        Status::Ok
    }
}

/// Whether one argument check of a seccomp rule holds for `args`.
fn check_holds(check: &ArgCheck, args: &[u64; 6]) -> bool {
    let mut arg = args.get(usize::from(check.index)).copied().unwrap_or(0);
    if check.dword {
        arg &= 0xffff_ffff;
    }
    match check.test {
        ArgTest::AnyBits(mask) => arg & mask != 0,
        ArgTest::Equals(value) => arg == value,
        ArgTest::MaskedEquals { mask, value } => arg & mask == value,
        ArgTest::NotEquals(value) => arg != value,
    }
}

/// The policy's name for a syscall refusal: the first refusing rule whose conditions hold,
/// without its index (`syscalls.deny[2]` is `syscalls.deny`); raw and packet sockets by kind.
fn seccomp_rule(policy: &CompiledPolicy, nr: u32, args: &[u64; 6]) -> Option<String> {
    const SOCKET: u32 = 41;
    const AF_PACKET: u64 = 17;
    const SOCK_RAW: u64 = 3;
    let rule = policy.seccomp.rules.iter().find(|r| {
        r.syscall == nr
            && r.action != SyscallAction::Allow
            && r.when.iter().all(|c| check_holds(c, args))
    });
    let default_denies = policy.seccomp.default_action != SyscallAction::Allow
        && !policy.seccomp.allowed.contains(&nr);
    if rule.is_none() && !default_denies {
        return None;
    }
    if nr == SOCKET && args[0] == AF_PACKET {
        return Some("network.packet_socket".to_owned());
    }
    if nr == SOCKET && args[1] & 0xf == SOCK_RAW {
        return Some("network.raw_socket".to_owned());
    }
    let name = rule.map_or("syscalls.default", |r| r.rule.as_str());
    Some(name.split('[').next().unwrap_or(name).to_owned())
}

/// What decoding a run's violations needs besides the kernel's records.
pub struct DecodeContext<'a> {
    /// The run's policy.
    pub policy: &'a CompiledPolicy,
    /// The run's work directory (relative paths resolve there).
    pub workdir: &'a Path,
    /// The allowed trees, resolved through symlinks, with their rights.
    pub allowed: Vec<(PathBuf, u32)>,
}

impl<'a> DecodeContext<'a> {
    /// The context of a run; `paths` are the policy's resolved paths for it.
    pub fn new(policy: &'a CompiledPolicy, workdir: &'a Path, paths: &[ResolvedPath]) -> Self {
        let allowed = paths
            .iter()
            .map(|p| {
                let real = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
                let mut bits = 0;
                if p.access.read {
                    bits |= FS_READ;
                }
                if p.access.write {
                    bits |= FS_WRITE;
                }
                if p.access.execute {
                    bits |= FS_EXECUTE;
                }
                (real, bits)
            })
            .collect();
        Self {
            policy,
            workdir,
            allowed,
        }
    }

    /// Whether `real` (a resolved path) lies in allowed trees granting every right of `access`.
    fn allows(&self, real: &Path, access: u32) -> bool {
        let granted = self
            .allowed
            .iter()
            .filter(|(tree, _)| real.starts_with(tree))
            .fold(0, |acc, (_, bits)| acc | bits);
        access & (FS_READ | FS_WRITE | FS_EXECUTE) & !granted == 0
    }
}

/// A connect or bind Landlock refused (`EACCES`; TCP rules): the policy's network rule.
fn landlock_network(policy: &CompiledPolicy, v: &GuardViolation) -> Option<String> {
    let rule = if policy.network.deny_all {
        "network.deny_all"
    } else {
        "network.not_allowed"
    };
    let _ = v;
    Some(rule.to_owned())
}

/// The address of a recorded `sockaddr_in`/`sockaddr_in6` argument.
fn sockaddr(v: &GuardViolation) -> Option<String> {
    let raw = &v.path[..(v.path_len as usize).min(v.path.len())];
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match family {
        2 => {
            let a = raw.get(4..8)?;
            Some(format!("{}:{port}", Ipv4Addr::new(a[0], a[1], a[2], a[3])))
        }
        10 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some(format!("[{}]:{port}", Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Decodes one recorded violation of a run configured as `run`; `None` for a recorded call
/// that no rule explains (a call that failed for its own reasons, a relative path that stays
/// in the allowed trees).
pub fn decode(
    v: &GuardViolation,
    run: &GuardRun,
    ctx: &DecodeContext<'_>,
    stack: Vec<String>,
) -> Option<Violation> {
    let policy = ctx.policy;
    let kind = Class::kind(v.class);
    let errno = (-4095..0)
        .contains(&v.ret)
        .then(|| errno_name((-v.ret) as u32).into_owned());
    let action = match v.kind {
        VIOLATION_KILLED => "killed",
        VIOLATION_AUDITED => "audited",
        _ if run.flags & profiler_common::RUN_AUDIT != 0 => "audited",
        VIOLATION_FORK_RATE => "killed",
        _ => "denied",
    };
    let (rule, argument) = if v.kind == VIOLATION_FORK_RATE {
        ("limits.fork_rate".to_owned(), None)
    } else if v.kind == VIOLATION_TASKS {
        ("limits.tasks".to_owned(), None)
    } else if v.net.hook != 0 {
        network(v)
    } else if kind == Class::EXEC && v.access & FS_INTERPRETER != 0 {
        // The loader executed as the program: killed at the exec (see guard::interpreters).
        let argument = path(v).map(|p| format!("{p} (the ELF interpreter, run directly)"));
        ("filesystem.execute".to_owned(), argument)
    } else if v.kind == VIOLATION_KILLED || bitmap_has(&run.kill, v.nr) {
        ("syscalls.kill".to_owned(), args_text(v))
    } else if bitmap_has(&run.deny, v.nr) || bitmap_has(&run.deny_if, v.nr) {
        (seccomp_rule(policy, v.nr, &v.args)?, args_text(v))
    } else if kind == Class::NET && v.ret == -13 {
        // EACCES: seccomp's socket rules, or Landlock's TCP rules on connect and bind (a cgroup
        // hook refuses with EPERM).
        match seccomp_rule(policy, v.nr, &v.args) {
            Some(rule) => (rule, args_text(v)),
            None => (landlock_network(policy, v)?, sockaddr(v)),
        }
    } else {
        match kind {
            Class::OPEN | Class::EXEC | Class::WRITE | Class::READ => {
                let what = if v.access & FS_EXECUTE != 0 {
                    "execute"
                } else if v.access & FS_WRITE != 0 {
                    "write"
                } else {
                    "read"
                };
                let written = path(v)?;
                let argument = if v.access & FS_RELATIVE != 0 {
                    // Relative (audit mode): where it leads now, and whether that is allowed.
                    let full = ctx.workdir.join(&written);
                    // Creating, removing or renaming acts on the name itself (a symlink is not
                    // followed); opening follows it.
                    let real = if kind == Class::WRITE {
                        let parent = std::fs::canonicalize(full.parent()?).ok()?;
                        parent.join(full.file_name()?)
                    } else {
                        std::fs::canonicalize(&full).ok()?
                    };
                    if ctx.allows(&real, v.access) || quiet(policy, &real.to_string_lossy()) {
                        return None;
                    }
                    format!("{written} -> {}", real.display())
                } else {
                    written
                };
                // A file the policy expects runtimes to probe: refused, not reported.
                if quiet(policy, &argument) {
                    return None;
                }
                (format!("filesystem.{what}"), Some(argument))
            }
            Class::SIGNAL => (
                "ipc.signal_outside".to_owned(),
                Some(format!("pid {}", v.args[0] as i32)),
            ),
            Class::NET => unix_socket(v),
            _ => ("syscalls.deny".to_owned(), args_text(v)),
        }
    };
    Some(Violation {
        rule,
        action,
        syscall: Some(syscall_name(v.nr).into_owned()),
        argument,
        errno,
        pid: v.pid,
        time_ms: v.ktime_ns.saturating_sub(run.start_ns) as f64 / 1e6,
        stack,
    })
}

/// Whether `path` is one of the policy's `filesystem.quiet` paths.
fn quiet(policy: &CompiledPolicy, path: &str) -> bool {
    policy.landlock.quiet.iter().any(|q| q.covers(path))
}

fn path(v: &GuardViolation) -> Option<String> {
    let len = (v.path_len as usize).min(v.path.len());
    let bytes = &v.path[..len];
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or(bytes);
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn args_text(v: &GuardViolation) -> Option<String> {
    if let Some(p) = path(v) {
        return Some(p);
    }
    let args: Vec<String> = v.args[..3].iter().map(|a| format!("{a:#x}")).collect();
    Some(args.join(", "))
}

fn network(v: &GuardViolation) -> (String, Option<String>) {
    let net = &v.net;
    let rule = match net.rule {
        GUARD_RULE_DENY_ALL => "network.deny_all",
        GUARD_RULE_NOT_ALLOWED => "network.not_allowed",
        GUARD_RULE_RAW_SOCKET => "network.raw_socket",
        GUARD_RULE_PACKET_SOCKET => "network.packet_socket",
        _ => "network",
    };
    let argument = if GuardHook::from_raw(net.hook) == Some(GuardHook::SockCreate) {
        format!(
            "family {} type {} protocol {}",
            net.family, net.sock_type, net.protocol
        )
    } else if net.family == 10 {
        format!("[{}]:{}", Ipv6Addr::from(net.addr), net.port)
    } else {
        let a = &net.addr;
        format!("{}:{}", Ipv4Addr::new(a[0], a[1], a[2], a[3]), net.port)
    };
    (rule.to_owned(), Some(argument))
}

/// A refused unix-socket call: the Landlock scope for abstract sockets.
fn unix_socket(v: &GuardViolation) -> (String, Option<String>) {
    let raw = &v.path[..(v.path_len as usize).min(v.path.len())];
    let family = raw.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    if family == Some(1) && raw.len() > 3 && raw[2] == 0 {
        let name = raw[3..].split(|&b| b == 0).next().unwrap_or(&[]);
        return (
            "ipc.abstract_unix_outside".to_owned(),
            Some(format!("@{}", String::from_utf8_lossy(name))),
        );
    }
    ("network".to_owned(), None)
}

#[cfg(test)]
mod tests {
    use profiler_common::{GuardRun, GuardViolation, VIOLATION_DENIED, bitmap_set};

    use super::{LimitsHit, Status, decode, status};

    fn violation(nr: u32, ret: i64) -> GuardViolation {
        GuardViolation {
            ktime_ns: 3_000_000,
            pid: 7,
            tgid: 7,
            kind: VIOLATION_DENIED,
            nr,
            ret,
            args: [0; 6],
            class: 0,
            access: 0,
            net: Default::default(),
            path_len: 0,
            stack_bytes: 0,
            path: [0; 256],
            comm: [0; 16],
            stack: [Default::default(); 32],
        }
    }

    #[test]
    fn status_precedence() {
        let none = LimitsHit::default();
        assert_eq!(status(false, none, false, Some(0), None), Status::Ok);
        assert_eq!(
            status(false, none, false, Some(3), None),
            Status::RuntimeError
        );
        assert_eq!(
            status(false, none, true, Some(0), None),
            Status::SecurityViolation
        );
        let fork = LimitsHit {
            fork_bomb: true,
            memory: true,
            ..none
        };
        assert_eq!(status(false, fork, true, None, Some(9)), Status::ForkBomb);
        let mem = LimitsHit {
            memory: true,
            cpu_time: true,
            ..none
        };
        assert_eq!(
            status(false, mem, false, None, Some(9)),
            Status::MemoryLimit
        );
        assert_eq!(status(true, mem, false, None, None), Status::InternalError);
    }

    #[test]
    fn a_landlock_denial_names_the_path_and_the_right() {
        let mut v = violation(257, -13);
        v.class = profiler_common::GuardSyscallClass::pack(1, 1, 2);
        v.access = profiler_common::FS_READ;
        v.path[..12].copy_from_slice(b"/etc/shadow\0");
        v.path_len = 12;
        let run = GuardRun {
            start_ns: 1_000_000,
            ..GuardRun::default()
        };
        let policy = crate::policy::parse("p.toml", "").unwrap();
        let ctx = super::DecodeContext::new(&policy, std::path::Path::new("/tmp"), &[]);
        let decoded = decode(&v, &run, &ctx, vec!["main".into()]).unwrap();
        assert_eq!(decoded.rule, "filesystem.read");
        assert_eq!(decoded.argument.as_deref(), Some("/etc/shadow"));
        assert_eq!(decoded.errno.as_deref(), Some("EACCES"));
        assert_eq!(decoded.syscall.as_deref(), Some("openat"));
        assert_eq!(decoded.action, "denied");
        assert!((decoded.time_ms - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_seccomp_denial_names_the_syscall_rule() {
        let mut run = GuardRun::default();
        bitmap_set(&mut run.deny, 101);
        let policy = crate::policy::parse(
            "p.toml",
            "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"errno\"\n",
        )
        .unwrap();
        let ctx = super::DecodeContext::new(&policy, std::path::Path::new("/tmp"), &[]);
        let decoded = decode(&violation(101, -1), &run, &ctx, Vec::new()).unwrap();
        assert_eq!(decoded.rule, "syscalls.deny");
        assert_eq!(decoded.syscall.as_deref(), Some("ptrace"));
        let mut socket = violation(41, -13);
        socket.args[0] = 2;
        socket.args[1] = 3;
        let judge = crate::policy::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/judge.toml"),
        )
        .unwrap();
        let run = crate::guard::run_entry::run_entry(&judge, judge.mode, 0);
        let ctx = super::DecodeContext::new(&judge, std::path::Path::new("/tmp"), &[]);
        let decoded = decode(&socket, &run, &ctx, Vec::new()).unwrap();
        assert_eq!(decoded.rule, "network.raw_socket");
    }
}
