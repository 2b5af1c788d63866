//! A policy as the guard's syscall tracepoints see it: one `GuardRun` entry per sandbox run (kill
//! and deny bitmaps, conditional checks, the fork-rate limit) and, in audit mode, the allowed
//! path prefixes the entry hook checks. Pure: unit-tested without root.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _, path::Path};

use profiler_common::{
    ARG_ANY_BITS, ARG_EQUALS, ARG_NOT_EQUALS, FS_EXECUTE, FS_INODE_KEY_LEN, FS_READ, FS_WRITE,
    GUARD_ARG_RULES, GUARD_SYSCALLS, GuardArgRule, GuardFsKey, GuardRun, RUN_AUDIT, RUN_FS_CHECK,
    RUN_SCOPE_SIGNALS, bitmap_set, fs_inode_key,
};

use crate::{
    policy::{ArgTest, CompiledPolicy, FsAccess, Mode, ResolvedPath, SyscallAction},
    probes::{fs_layout::kernel_dev, guard_runs::fs_entries},
};

/// `EPERM`: what seccomp answers for a `kill` rule in a sandbox run, whose tracepoint then kills.
const EPERM: u16 = 1;

/// The fork-rate window.
const FORK_WINDOW_NS: u64 = 1_000_000_000;

/// The run entry of `policy` in `mode`, started at `start_ns` (`CLOCK_MONOTONIC`).
pub fn run_entry(policy: &CompiledPolicy, mode: Mode, start_ns: u64) -> GuardRun {
    let mut run = GuardRun {
        start_ns,
        fork_window_ns: FORK_WINDOW_NS,
        fork_rate_max: policy.limits.fork_rate.unwrap_or(0),
        ..GuardRun::default()
    };
    if mode == Mode::Audit {
        run.flags |= RUN_AUDIT | RUN_FS_CHECK;
    }
    if policy.landlock.scope_signals {
        run.flags |= RUN_SCOPE_SIGNALS;
    }
    for &nr in &policy.kill_syscalls {
        bitmap_set(&mut run.kill, nr);
    }
    let seccomp = &policy.seccomp;
    let mut explicit = std::collections::HashSet::new();
    let mut next_check = 0;
    let mut group = 0u8;
    for rule in &seccomp.rules {
        explicit.insert(rule.syscall);
        match rule.action {
            SyscallAction::Allow => continue,
            SyscallAction::Kill if rule.when.is_empty() => continue,
            _ => {}
        }
        if rule.when.is_empty() {
            bitmap_set(&mut run.deny, rule.syscall);
            continue;
        }
        if next_check + rule.when.len() > GUARD_ARG_RULES || group >= 64 {
            // Seccomp still enforces the rule; the tracepoint just cannot tell its refusals.
            tracing::debug!(rule = %rule.rule, "too many conditional syscall checks to report");
            continue;
        }
        bitmap_set(&mut run.deny_if, rule.syscall);
        for check in &rule.when {
            let (op, mask, value) = match check.test {
                ArgTest::AnyBits(mask) => (ARG_ANY_BITS, mask, 0),
                ArgTest::Equals(value) => (ARG_EQUALS, u64::MAX, value),
                ArgTest::MaskedEquals { mask, value } => (ARG_EQUALS, mask, value),
                ArgTest::NotEquals(value) => (ARG_NOT_EQUALS, u64::MAX, value),
            };
            run.arg_rules[next_check] = GuardArgRule {
                nr: rule.syscall,
                group,
                arg: check.index,
                op,
                dword: u8::from(check.dword),
                mask,
                value,
            };
            next_check += 1;
        }
        group += 1;
    }
    if seccomp.default_action != SyscallAction::Allow {
        let target = if seccomp.default_action == SyscallAction::Kill {
            &mut run.kill
        } else {
            &mut run.deny
        };
        for nr in 0..GUARD_SYSCALLS {
            if !seccomp.allowed.contains(&nr) && !explicit.contains(&nr) {
                bitmap_set(target, nr);
            }
        }
    }
    run
}

/// The policy as seccomp enforces it in a sandbox run: unconditional `kill` rules answer `EPERM`
/// instead of killing in seccomp, so that the call reaches `sys_exit`, where the tracepoint kills
/// the process and records the violation with its stack (a seccomp kill would leave no trace of
/// which call it was). Seccomp still refuses the call before it runs.
pub fn seccomp_for_run(policy: &CompiledPolicy) -> CompiledPolicy {
    let mut policy = policy.clone();
    for rule in &mut policy.seccomp.rules {
        if rule.action == SyscallAction::Kill && rule.when.is_empty() {
            rule.action = SyscallAction::Errno(EPERM);
        }
    }
    if policy.seccomp.default_action == SyscallAction::Kill {
        policy.seccomp.default_action = SyscallAction::Errno(EPERM);
    }
    policy
}

fn access_bits(access: FsAccess) -> u32 {
    let mut bits = 0;
    if access.read {
        bits |= FS_READ;
    }
    if access.write {
        bits |= FS_WRITE;
    }
    if access.execute {
        bits |= FS_EXECUTE;
    }
    bits
}

/// The audit-mode path entries of run `id`: every allowed path (as written and as resolved
/// through symlinks), valued by its rights together with those of every allowed ancestor, as
/// Landlock grants them.
pub fn fs_allow_entries(id: u64, paths: &[ResolvedPath]) -> Vec<(u32, GuardFsKey, u32)> {
    let mut rights: BTreeMap<std::path::PathBuf, u32> = BTreeMap::new();
    for rule in paths {
        let bits = access_bits(rule.access);
        *rights.entry(rule.path.clone()).or_default() |= bits;
        if let Ok(real) = std::fs::canonicalize(&rule.path) {
            *rights.entry(real).or_default() |= bits;
        }
    }
    let inherited: Vec<(std::path::PathBuf, u32)> = rights
        .iter()
        .map(|(path, &bits)| {
            let from_ancestors = rights
                .iter()
                .filter(|(other, _)| *other != path && path.starts_with(other))
                .fold(0, |acc, (_, &b)| acc | b);
            (path.clone(), bits | from_ancestors)
        })
        .collect();
    let mut entries: Vec<(u32, GuardFsKey, u32)> = inherited
        .iter()
        .flat_map(|(path, bits)| {
            let is_dir = Path::new(path).is_dir();
            fs_entries(id, path, is_dir)
                .into_iter()
                .map(move |(len, key)| (len, key, *bits))
        })
        .collect();
    // The same rights by device and inode, for the kernel side's walk from an opened file up
    // its dentries (the file a path leads to, as Landlock's rules hold them).
    let mut inodes: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for (path, bits) in &inherited {
        if let Ok(meta) = std::fs::metadata(path) {
            *inodes
                .entry((kernel_dev(meta.dev()), meta.ino()))
                .or_default() |= bits;
        }
    }
    let bits = FS_FIXED_BITS + 8 * FS_INODE_KEY_LEN as u32;
    entries.extend(
        inodes
            .into_iter()
            .map(|((dev, ino), rights)| (bits, fs_inode_key(id, dev, ino), rights)),
    );
    entries
}

/// Bits of the cgroup-id part of a [`GuardFsKey`].
pub(crate) const FS_FIXED_BITS: u32 = 64;

#[cfg(test)]
mod tests {
    use profiler_common::{RUN_AUDIT, RUN_SCOPE_SIGNALS, bitmap_has};

    use super::{run_entry, seccomp_for_run};
    use crate::policy::{Mode, SyscallAction, parse};

    const POLICY: &str = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"errno\"\n\
        [[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"\n\
        [[syscalls.deny]]\nnames = [\"clone\"]\naction = \"errno\"\n\
        [syscalls.deny.if_arg]\nindex = 0\nany_of = [\"CLONE_NEWUSER\"]\n\
        [network]\ndeny_all = false\n[ipc]\nunix_sockets = true\nprocesses_outside = true\n\
        [limits]\nfork_rate = 20\n";

    #[test]
    fn bitmaps_follow_the_rules() {
        let policy = parse("p.toml", POLICY).unwrap();
        let run = run_entry(&policy, Mode::Enforce, 5);
        assert!(bitmap_has(&run.deny, 101), "ptrace denied");
        assert!(bitmap_has(&run.kill, 321), "bpf killed");
        assert!(!bitmap_has(&run.deny, 321), "a kill is not a deny");
        assert!(bitmap_has(&run.deny_if, 56), "clone denied on a condition");
        assert_eq!(run.arg_rules[0].nr, 56);
        assert_eq!(run.arg_rules[0].mask, 0x1000_0000, "CLONE_NEWUSER");
        assert_eq!(run.arg_rules[1].nr, u32::MAX, "one check only");
        assert_eq!(run.fork_rate_max, 20);
        assert_eq!(run.start_ns, 5);
        assert_eq!(run.flags & RUN_AUDIT, 0);
        assert_ne!(run_entry(&policy, Mode::Audit, 0).flags & RUN_AUDIT, 0);
        assert_ne!(
            run.flags & RUN_SCOPE_SIGNALS,
            0,
            "signals outside refused by default"
        );
        let open = parse("p.toml", "[ipc]\nsignal_outside = true\n").unwrap();
        assert_eq!(
            run_entry(&open, Mode::Audit, 0).flags & RUN_SCOPE_SIGNALS,
            0,
            "signals outside allowed: none to report"
        );
    }

    #[test]
    fn other_processes_are_off_limits_unless_the_policy_says_so() {
        let run = run_entry(&parse("p.toml", "").unwrap(), Mode::Enforce, 0);
        for nr in [141, 203, 251, 302] {
            assert!(
                bitmap_has(&run.deny_if, nr),
                "syscall {nr} denied on its target"
            );
        }
        let setpriority: Vec<_> = run.arg_rules.iter().filter(|r| r.nr == 141).collect();
        assert_eq!(setpriority.len(), 2, "another `which`, or another `who`");
        assert_ne!(
            setpriority[0].group, setpriority[1].group,
            "either one denies"
        );
        let open = parse("p.toml", "[ipc]\nprocesses_outside = true\n").unwrap();
        let run = run_entry(&open, Mode::Enforce, 0);
        assert!(!bitmap_has(&run.deny_if, 302), "prlimit64 on any process");
    }

    #[test]
    fn allowed_trees_are_keyed_by_path_and_by_inode() {
        use std::os::unix::fs::MetadataExt as _;

        use profiler_common::{FS_READ, FS_WRITE, fs_inode_key};

        use super::fs_allow_entries;
        use crate::{
            policy::{FsAccess, ResolvedPath},
            probes::fs_layout::kernel_dev,
        };

        let dir = std::env::temp_dir().join(format!("fw-inode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rule = |path: &std::path::Path, write| ResolvedPath {
            path: path.to_path_buf(),
            access: FsAccess {
                read: true,
                write,
                execute: false,
            },
            is_dir: true,
        };
        // Two rules for one directory (as written and through a symlink): one inode entry with
        // both rules' rights.
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let entries = fs_allow_entries(9, &[rule(&dir, false), rule(&link, true)]);
        let meta = std::fs::metadata(&dir).unwrap();
        let key = fs_inode_key(9, kernel_dev(meta.dev()), meta.ino());
        let inode: Vec<_> = entries.iter().filter(|(_, k, _)| *k == key).collect();
        assert_eq!(inode.len(), 1, "one entry for the inode");
        assert_eq!(inode[0].0, 64 + 8 * 17, "matched whole");
        assert_eq!(inode[0].2, FS_READ | FS_WRITE);
        assert!(
            entries.iter().any(|(_, k, _)| k.path.starts_with(b"/")),
            "path entries too"
        );
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn kill_rules_answer_eperm_in_seccomp() {
        let policy = parse("p.toml", POLICY).unwrap();
        let run_policy = seccomp_for_run(&policy);
        let bpf = run_policy
            .seccomp
            .rules
            .iter()
            .find(|r| r.syscall == 321)
            .unwrap();
        assert_eq!(bpf.action, SyscallAction::Errno(1));
    }
}
