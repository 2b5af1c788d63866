//! Policy parsing and validation, read as a specification: each malformed policy gives one
//! clear error naming `file:line:column` and the field.

use std::path::{Path, PathBuf};

use super::{
    CompiledPolicy, FsAccess, PathTemplate, PolicyError, SyscallAction, explain, layers, load,
    parse,
};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// The error for `text`, checked to point at `line:column` and name `field`.
fn error_at(text: &str, line: usize, column: usize, field: &str) -> PolicyError {
    let error = parse("p.toml", text).expect_err("the policy should be rejected");
    let location = error.location().expect("a location");
    assert_eq!((location.line, location.column), (line, column), "{error}");
    assert_eq!(error.field(), Some(field), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("p.toml:{line}:{column}: `{field}`")),
        "{error}"
    );
    error
}

#[test]
fn shipped_policies_compile() {
    for name in ["judge.toml", "interpreted.toml"] {
        let policy = load(&shipped(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(policy.network.deny_all, "{name}");
        assert!(
            policy.landlock.restrict_tcp && policy.landlock.scope_signals,
            "{name}"
        );
        let executable: Vec<_> = policy
            .landlock
            .paths
            .iter()
            .filter(|r| r.access.execute)
            .map(|r| &r.path)
            .collect();
        assert!(
            executable.contains(&&PathTemplate::Command),
            "{name}: {executable:?}"
        );
    }
}

#[test]
fn judge_policy_denies_what_the_issue_lists() {
    let policy = load(&shipped("judge.toml")).unwrap();
    let action_of = |name: &str| {
        policy
            .seccomp
            .rules
            .iter()
            .find(|r| r.name == name && r.when.is_empty())
            .map(|r| r.action)
    };
    for name in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "ptrace",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "kexec_file_load",
        "personality",
        "process_vm_readv",
        "process_vm_writev",
        "userfaultfd",
    ] {
        assert_eq!(action_of(name), Some(SyscallAction::Errno(1)), "{name}");
    }
    assert_eq!(action_of("clone3"), Some(SyscallAction::Errno(38)));
    let clone = policy
        .seccomp
        .rules
        .iter()
        .find(|r| r.name == "clone")
        .expect("a clone rule");
    assert_eq!(
        clone.when.len(),
        1,
        "clone is denied only with namespace flags"
    );
    assert_eq!(policy.seccomp.default_action, SyscallAction::Allow);
    assert!(policy.limits.cpu_time.is_some() && policy.limits.fork_rate.is_some());
    let workdir = policy
        .landlock
        .paths
        .iter()
        .find(|r| r.path == PathTemplate::Workdir(PathBuf::new()))
        .unwrap();
    assert_eq!(
        workdir.access,
        FsAccess {
            read: true,
            write: true,
            execute: false
        }
    );
}

#[test]
fn unknown_field_names_the_field_and_its_place() {
    let error = error_at(
        "mode = \"enforce\"\n[limits]\nmemroy = \"1MiB\"\n",
        3,
        1,
        "limits.memroy",
    );
    assert!(error.to_string().contains("unknown field"), "{error}");
}

#[test]
fn wrong_type_names_the_field() {
    let error = error_at("[limits]\ntasks = \"many\"\n", 2, 9, "limits.tasks");
    assert!(matches!(error, PolicyError::Syntax { .. }), "{error}");
    error_at("[network]\ndeny_all = \"yes\"\n", 2, 12, "network.deny_all");
    error_at("mode = \"strict\"\n", 1, 8, "mode");
}

#[test]
fn invalid_toml_is_located() {
    let error = parse("p.toml", "[limits\n").unwrap_err();
    assert_eq!(error.location().map(|l| l.line), Some(1), "{error}");
}

#[test]
fn bad_paths_are_refused() {
    let error = error_at(
        "[filesystem]\nreadable = [\"/usr/lib\", \"lib\"]\n",
        2,
        25,
        "filesystem.readable[1]",
    );
    assert!(error.to_string().contains("relative"), "{error}");
    let error = error_at(
        "[filesystem]\nwritable = [\"/no/such/dir\"]\n",
        2,
        13,
        "filesystem.writable[0]",
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    let error = error_at(
        "[filesystem]\nreadable = [\"{home}/x\"]\n",
        2,
        13,
        "filesystem.readable[0]",
    );
    assert!(
        error.to_string().contains("unknown placeholder `{home}`"),
        "{error}"
    );
    error_at(
        "[filesystem]\nreadable = [\"/usr/../etc\"]\n",
        2,
        13,
        "filesystem.readable[0]",
    );
    error_at(
        "[filesystem]\nexecutable = [\"{command}/x\"]\n",
        2,
        15,
        "filesystem.executable[0]",
    );
    assert!(
        parse("p.toml", "[filesystem]\nreadable = [\"/no/such/dir?\"]\n").is_ok(),
        "`?` makes a path optional"
    );
}

#[test]
fn quiet_paths_are_plain_absolute_paths_and_cover_proc_self() {
    let error = error_at(
        "[filesystem]\nquiet = [\"/proc/self/maps\", \"proc/stat\"]\n",
        2,
        29,
        "filesystem.quiet[1]",
    );
    assert!(error.to_string().contains("absolute"), "{error}");
    error_at(
        "[filesystem]\nquiet = [\"{workdir}/x\"]\n",
        2,
        10,
        "filesystem.quiet[0]",
    );
    error_at(
        "[filesystem]\nquiet = [\"/sys/../etc\"]\n",
        2,
        10,
        "filesystem.quiet[0]",
    );
    let policy = parse(
        "p.toml",
        "[filesystem]\nquiet = [\"/proc/self/maps\", \"/sys/devices/system/cpu/\"]\n",
    )
    .unwrap();
    let covers = |path: &str| policy.landlock.quiet.iter().any(|q| q.covers(path));
    assert!(covers("/proc/self/maps"));
    assert!(
        covers("/proc/4242/maps"),
        "a pid names the caller's /proc entry"
    );
    assert!(covers("/proc/thread-self/maps"));
    assert!(!covers("/proc/self/mapsx") && !covers("/proc/self/environ"));
    assert!(!covers("/proc/1x/maps"), "not a pid");
    assert!(covers("/sys/devices/system/cpu/online"), "beneath a tree");
    assert!(
        !covers("/sys/devices/system/cpu"),
        "the tree's root is not beneath it"
    );
    assert!(!covers("/sys/devices/system/cpuX/online"));
    // `..` cannot make another refusal pass for a probe.
    assert!(!covers("/sys/devices/system/cpu/../../../../etc/shadow"));
    assert!(!covers("/proc/self/maps/../environ"));
    assert!(covers("/sys/devices//system/./cpu/online"));
    assert!(!covers("proc/self/maps"), "relative");
}

#[test]
fn bad_sizes_and_durations_are_refused() {
    let error = error_at("[limits]\nmemory = \"256 megs\"\n", 2, 10, "limits.memory");
    assert!(error.to_string().contains("not a unit"), "{error}");
    let error = error_at("[limits]\ncpu_time = 2\n", 2, 12, "limits.cpu_time");
    assert!(error.to_string().contains("ambiguous"), "{error}");
    let error = error_at("[limits]\nwall_time = \"0s\"\n", 2, 13, "limits.wall_time");
    assert!(error.to_string().contains("zero"), "{error}");
    let error = error_at("[limits]\ndisk = \"0MiB\"\n", 2, 8, "limits.disk");
    assert!(error.to_string().contains("zero"), "{error}");
    let policy = parse("p.toml", "[limits]\ndisk = \"8MiB\"\n").expect("a disk limit");
    assert_eq!(policy.limits.disk_bytes, Some(8 << 20));
}

#[test]
fn unknown_syscall_and_errno_names_are_refused() {
    let text = "[[syscalls.deny]]\nnames = [\"ptrace\", \"ptrase\"]\naction = \"errno\"\n";
    let error = error_at(text, 2, 20, "syscalls.deny[0].names[1]");
    assert!(error.to_string().contains("not a syscall"), "{error}");
    let text = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"errno\"\nerrno = \"EPRM\"\n";
    error_at(text, 4, 9, "syscalls.deny[0].errno");
    let text = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"kill\"\nerrno = \"EPERM\"\n";
    error_at(text, 4, 9, "syscalls.deny[0].errno");
}

#[test]
fn path_both_denied_and_writable_is_a_contradiction() {
    let text = "[filesystem]\nwritable = [\"/tmp\"]\ndenied = [\"/tmp/secret\"]\n";
    let error = error_at(text, 3, 11, "filesystem.denied[0]");
    let PolicyError::Contradiction(contradiction) = &error else {
        panic!("{error}")
    };
    let (other, other_field) = (&contradiction.other, &contradiction.other_field);
    assert_eq!(
        (other.line, other.column, other_field.as_str()),
        (2, 13, "filesystem.writable[0]")
    );
}

#[test]
fn syscall_both_allowed_and_denied_is_a_contradiction() {
    let text = "[syscalls]\nallow = [\"ptrace\"]\n[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"kill\"\n";
    let error = error_at(text, 4, 10, "syscalls.deny[0].names[0]");
    assert!(
        error
            .to_string()
            .contains("syscalls.allow[0]` at p.toml:2:10"),
        "{error}"
    );
    let twice = "[[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"\n[[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"errno\"\n";
    error_at(twice, 5, 10, "syscalls.deny[1].names[0]");
}

#[test]
fn network_allow_with_deny_all_is_a_contradiction() {
    let text = "[network]\ndeny_all = true\nallow = [\"127.0.0.1:80/tcp\"]\n";
    let error = error_at(text, 3, 10, "network.allow[0]");
    assert!(
        error
            .to_string()
            .contains("`network.deny_all` at p.toml:2:12"),
        "{error}"
    );
}

#[test]
fn malformed_network_entry_is_located() {
    let error = error_at(
        "[network]\nallow = [\"127.0.0.1:80\"]\n",
        2,
        10,
        "network.allow[0]",
    );
    assert!(error.to_string().contains("no protocol"), "{error}");
}

#[test]
fn default_deny_needs_execve_allowed() {
    let error = error_at(
        "[syscalls]\ndefault = \"errno\"\nallow = [\"read\"]\n",
        2,
        11,
        "syscalls.default",
    );
    assert!(error.to_string().contains("execve"), "{error}");
    let policy = parse(
        "p.toml",
        "[syscalls]\ndefault = \"kill\"\nallow = [\"execve\", \"read\"]\n",
    )
    .unwrap();
    assert_eq!(
        (policy.seccomp.default_action, policy.seccomp.allowed.len()),
        (SyscallAction::Kill, 2)
    );
}

#[test]
fn network_allow_list_becomes_map_entries_and_landlock_ports() {
    let text = "[network]\nallow = [\"127.0.0.1:8080/tcp\", \"[::1]:53/udp\"]\n";
    let policy = parse("p.toml", text).unwrap();
    assert!(!policy.network.deny_all);
    assert_eq!(policy.network.allow.len(), 2);
    assert_eq!(policy.landlock.tcp_connect_ports, vec![8080]);
    let dgram_denied = policy.seccomp.rules.iter().any(|r| {
        r.name == "socket"
            && r.when.iter().any(|c| c.to_string() == "arg1 & 0xf == 2")
            && r.when.len() == 2
    });
    assert!(
        !dgram_denied,
        "UDP sockets stay possible when a UDP destination is allowed"
    );
}

#[test]
fn empty_policy_is_the_strictest_network_and_allows_syscalls() {
    let policy: CompiledPolicy = parse("p.toml", "").unwrap();
    assert!(policy.network.deny_all && policy.landlock.paths.is_empty());
    assert_eq!(policy.seccomp.default_action, SyscallAction::Allow);
    assert!(policy.kill_syscalls.is_empty());
}

#[test]
fn kill_rules_feed_the_tracepoint_list_only_when_unconditional() {
    let text = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"kill\"\n\
                [[syscalls.deny]]\nnames = [\"clone\"]\naction = \"kill\"\nif_arg = { index = 0, any_of = [\"CLONE_NEWUSER\"] }\n";
    let policy = parse("p.toml", text).unwrap();
    assert_eq!(
        policy.kill_syscalls,
        vec![u32::try_from(syscalls::Sysno::ptrace.id()).unwrap()]
    );
}

#[test]
fn placeholders_resolve_per_run_and_denied_paths_are_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[filesystem]\nwritable = [\"{workdir}\"]\nexecutable = [\"{command}\"]\ndenied = [\"/etc/shadow\"]\n";
    let policy = parse("p.toml", text).unwrap();
    let resolved = policy
        .resolve_paths(dir.path(), Path::new("/bin/sh"))
        .unwrap();
    assert_eq!(resolved[0].path, dir.path());
    assert_eq!(resolved[1].path, Path::new("/bin/sh"));
    let error = policy
        .resolve_paths(Path::new("/etc"), Path::new("/bin/sh"))
        .unwrap_err();
    assert!(matches!(error, PolicyError::Contradiction(_)), "{error}");
    let error = policy
        .resolve_paths(&dir.path().join("missing"), Path::new("/bin/sh"))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("p.toml:2:13: `filesystem.writable[0]`"),
        "{error}"
    );
}

#[test]
fn explain_says_what_a_submission_may_and_may_not_do() {
    let policy = load(&shipped("judge.toml")).unwrap();
    let text = explain(&policy);
    for expected in [
        "Enforced: anything not allowed below is refused.",
        "May read and write: the work directory, /dev/null.",
        "May execute: the command itself",
        "No network: TCP connect and bind fail with EACCES",
        "May not signal processes outside the sandbox.",
        "Refused with ENOSYS: clone3.",
        "Refused with EPERM when argument 0 has any of CLONE_NEWNS, CLONE_NEWCGROUP,",
        "CLONE_NEWPID, CLONE_NEWNET: clone.",
        "Every other system call is allowed.",
        "CPU time 2 s.",
        "Memory 256 MiB.",
        "At most 50 forks per second (faster is a fork bomb).",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn check_output_lists_every_layer() {
    let policy = load(&shipped("judge.toml")).unwrap();
    let text = layers(&policy);
    for expected in [
        "landlock (applied before exec):",
        "read,write           {workdir}",
        "seccomp",
        "errno ENOSYS   clone3",
        "network (cgroup BPF",
        "deny all",
        "limits:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// The fields a table accepts, read from the parser's own "unknown field" message so that the
/// list cannot drift from the schema.
fn accepted_fields(table_header: &str) -> Vec<String> {
    let error = parse("p.toml", &format!("{table_header}\nno_such_field = 1\n")).unwrap_err();
    let message = error.to_string();
    let expected = message
        .split(", expected")
        .nth(1)
        .unwrap_or_else(|| panic!("{message}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn docs_describe_every_policy_field() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"))
            .unwrap();
    let tables = [
        "",
        "[filesystem]",
        "[network]",
        "[ipc]",
        "[syscalls]",
        "[[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"",
        "[[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"\n[syscalls.deny.if_arg]\nindex = 0\nany_of = [\"1\"]",
        "[limits]",
    ];
    for table in tables {
        let fields = accepted_fields(table);
        assert!(fields.len() >= 2, "{table}: {fields:?}");
        for field in fields {
            assert!(
                docs.contains(&format!("| `{field}` |"))
                    || docs.contains(&format!("### `[{field}]`")),
                "docs/policy.md does not describe `{field}` ({table})"
            );
        }
    }
}
