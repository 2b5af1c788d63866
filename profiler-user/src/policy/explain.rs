//! Policies in words: [`layers`] for `policy check` (what each layer will be given) and
//! [`explain`] for `policy explain` (what a submission may and may not do).

use std::fmt::Write as _;

use super::{
    compiled::{
        CompiledPolicy, FsAccess, PathRule, PathTemplate, SyscallAction, SyscallRule, errno_name,
    },
    names::flag_names,
    schema::Mode,
    units::{ByteSize, TimeSpan},
};

/// The compiled layers, one block per enforcement layer.
pub fn layers(policy: &CompiledPolicy) -> String {
    let mut out = String::new();
    let mode = match policy.mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit (nothing denied, violations reported)",
    };
    let _ = writeln!(out, "policy {}: valid, mode {mode}", policy.name);
    let landlock = &policy.landlock;
    let _ = writeln!(out, "\nlandlock (applied before exec):");
    for rule in &landlock.paths {
        let optional = if rule.optional {
            "  (skipped when missing)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<20} {}{optional}",
            rule.access.to_string(),
            rule.path
        );
    }
    for denied in &landlock.denied {
        let _ = writeln!(
            out,
            "  {:<20} {}  (checked unreachable)",
            "denied",
            denied.path.display()
        );
    }
    for quiet in &landlock.quiet {
        let _ = writeln!(
            out,
            "  {:<20} {}  (refused, not reported)",
            "quiet", quiet.path
        );
    }
    if landlock.restrict_tcp {
        let ports: Vec<String> = landlock
            .tcp_connect_ports
            .iter()
            .map(u16::to_string)
            .collect();
        let ports = if ports.is_empty() {
            "none".to_owned()
        } else {
            ports.join(", ")
        };
        let _ = writeln!(out, "  tcp connect ports: {ports}; tcp bind: none");
    } else {
        let _ = writeln!(out, "  tcp: not restricted");
    }
    let scopes: Vec<&str> = [
        (landlock.scope_signals, "signal"),
        (landlock.scope_abstract_unix, "abstract-unix-socket"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let _ = writeln!(
        out,
        "  scopes: {}",
        if scopes.is_empty() {
            "none".to_owned()
        } else {
            scopes.join(", ")
        }
    );

    let seccomp = &policy.seccomp;
    let _ = writeln!(out, "\nseccomp (applied before exec):");
    let _ = writeln!(out, "  default: {}", seccomp.default_action);
    if seccomp.default_action != SyscallAction::Allow {
        let _ = writeln!(out, "  allowed: {} syscalls", seccomp.allowed.len());
    }
    for rule in &seccomp.rules {
        let _ = writeln!(
            out,
            "  {:<14} {} ({}){}  [{}]",
            rule.action.to_string(),
            rule.name,
            rule.syscall,
            condition(rule),
            rule.rule
        );
    }

    let network = &policy.network;
    let _ = writeln!(out, "\nnetwork (cgroup BPF, keyed by cgroup id):");
    if network.deny_all {
        let _ = writeln!(out, "  deny all");
    } else if network.allow.is_empty() {
        let _ = writeln!(out, "  not restricted");
    }
    for allow in &network.allow {
        let _ = writeln!(out, "  allow {allow}");
    }

    let _ = writeln!(out, "\nlimits:");
    for line in limit_lines(policy) {
        let _ = writeln!(out, "  {line}");
    }
    let kills: Vec<String> = policy.kill_syscalls.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "\nkill at syscall entry (tracepoint): {}",
        if kills.is_empty() {
            "none".to_owned()
        } else {
            kills.join(", ")
        }
    );
    out
}

fn condition(rule: &SyscallRule) -> String {
    if rule.when.is_empty() {
        return String::new();
    }
    let checks: Vec<String> = rule.when.iter().map(ToString::to_string).collect();
    format!(" if {}", checks.join(" && "))
}

fn limit_lines(policy: &CompiledPolicy) -> Vec<String> {
    let limits = &policy.limits;
    let mut lines = Vec::new();
    if let Some(cpu) = limits.cpu_time {
        lines.push(format!("CPU time {}", TimeSpan(cpu)));
    }
    if let Some(wall) = limits.wall_time {
        lines.push(format!("wall-clock time {}", TimeSpan(wall)));
    }
    if let Some(memory) = limits.memory_bytes {
        lines.push(format!("memory {}", ByteSize(memory)));
    }
    if let Some(output) = limits.output_bytes {
        lines.push(format!("output {}", ByteSize(output)));
    }
    if let Some(disk) = limits.disk_bytes {
        lines.push(format!(
            "files in a fresh work directory {} (a tmpfs; a --workdir is used as it is)",
            ByteSize(disk)
        ));
    }
    if let Some(stack) = limits.stack_bytes {
        lines.push(format!("a stack of {} (recursion depth)", ByteSize(stack)));
    }
    if let Some(tasks) = limits.tasks {
        lines.push(format!("at most {tasks} processes and threads at once"));
    }
    if let Some(rate) = limits.fork_rate {
        lines.push(format!(
            "at most {rate} forks per second (faster is a fork bomb)"
        ));
    }
    if lines.is_empty() {
        lines.push("none".to_owned());
    }
    lines
}

fn path_words(rule: &PathRule) -> String {
    let base = match &rule.path {
        PathTemplate::Command => "the command itself".to_owned(),
        PathTemplate::Workdir(rest) if rest.as_os_str().is_empty() => {
            "the work directory".to_owned()
        }
        PathTemplate::Workdir(rest) => format!("{} in the work directory", rest.display()),
        PathTemplate::Literal(path) => path.display().to_string(),
    };
    if rule.optional {
        format!("{base} (where present)")
    } else {
        base
    }
}

fn listed(policy: &CompiledPolicy, wanted: impl Fn(FsAccess) -> bool) -> String {
    let items: Vec<String> = policy
        .landlock
        .paths
        .iter()
        .filter(|r| wanted(r.access))
        .map(path_words)
        .collect();
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

/// What a submission may and may not do, in plain words.
pub fn explain(policy: &CompiledPolicy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Policy {}", policy.name);
    if let Some(description) = &policy.description {
        let _ = writeln!(out, "{}", description.trim());
    }
    let _ = writeln!(
        out,
        "{}",
        match policy.mode {
            Mode::Enforce => "Enforced: anything not allowed below is refused.",
            Mode::Audit =>
                "Audit only: nothing is refused; everything below that would be refused is reported.",
        }
    );

    let _ = writeln!(out, "\nFiles");
    let _ = writeln!(
        out,
        "  May read: {}.",
        listed(policy, |a| a.read && !a.write && !a.execute)
    );
    let _ = writeln!(
        out,
        "  May read and write: {}.",
        listed(policy, |a| a.write)
    );
    let _ = writeln!(out, "  May execute: {}.", listed(policy, |a| a.execute));
    let _ = writeln!(
        out,
        "  Opening, creating or executing anything else fails with EACCES; files already open at the start (stdin, stdout, stderr) stay usable."
    );
    if !policy.landlock.denied.is_empty() {
        let denied: Vec<String> = policy
            .landlock
            .denied
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        let _ = writeln!(out, "  Checked to be out of reach: {}.", denied.join(", "));
    }
    if !policy.landlock.quiet.is_empty() {
        let quiet: Vec<&str> = policy
            .landlock
            .quiet
            .iter()
            .map(|q| q.path.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  Refused without a violation (language runtimes probe them and carry on): {}.",
            quiet.join(", ")
        );
    }

    let _ = writeln!(out, "\nNetwork");
    let network = &policy.network;
    if network.deny_all {
        let _ = writeln!(
            out,
            "  No network: TCP connect and bind fail with EACCES; UDP, raw and packet sockets cannot be created."
        );
    } else if network.allow.is_empty() {
        let _ = writeln!(out, "  The network is not restricted.");
    } else {
        let allowed: Vec<String> = network.allow.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  May only reach {}; nothing may bind a TCP port; raw and packet sockets cannot be created.",
            allowed.join(", ")
        );
    }

    let _ = writeln!(out, "\nOther processes");
    let landlock = &policy.landlock;
    let _ = writeln!(
        out,
        "  {}",
        if landlock.scope_signals {
            "May not signal processes outside the sandbox."
        } else {
            "May signal processes outside the sandbox."
        }
    );
    let _ = writeln!(
        out,
        "  {}",
        if landlock.scope_abstract_unix {
            "May not connect to abstract unix sockets outside the sandbox."
        } else {
            "May connect to abstract unix sockets outside the sandbox."
        }
    );
    let unix_denied = policy
        .seccomp
        .rules
        .iter()
        .any(|r| r.rule == "ipc.unix_sockets");
    if unix_denied {
        let _ = writeln!(
            out,
            "  May not create unix sockets (socketpair still works)."
        );
    }
    let processes_denied = policy
        .seccomp
        .rules
        .iter()
        .any(|r| r.rule == "ipc.processes_outside");
    let _ = writeln!(
        out,
        "  {}",
        if processes_denied {
            "May not change the priority, CPU affinity, scheduling or resource limits of other processes."
        } else {
            "May change the priority, CPU affinity, scheduling or resource limits of other processes it owns."
        }
    );
    if policy.mode == Mode::Enforce {
        let _ = writeln!(
            out,
            "  Runs without capabilities, even as root (none can be regained by exec)."
        );
    }

    let _ = writeln!(out, "\nSystem calls");
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for rule in policy
        .seccomp
        .rules
        .iter()
        .filter(|r| r.rule.starts_with("syscalls."))
    {
        let mut outcome = match rule.action {
            SyscallAction::Kill => "End the process".to_owned(),
            SyscallAction::Errno(errno) => format!("Refused with {}", errno_name(errno)),
            SyscallAction::Allow => "Allowed".to_owned(),
        };
        for check in &rule.when {
            let flags = match check.test {
                super::compiled::ArgTest::AnyBits(mask) => flag_names(mask).replace('|', ", "),
                _ => check.to_string(),
            };
            let _ = write!(outcome, " when argument {} has any of {flags}", check.index);
        }
        match groups.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, items)) => items.push(rule.name.to_owned()),
            None => groups.push((outcome, vec![rule.name.to_owned()])),
        }
    }
    for (outcome, items) in &groups {
        let _ = writeln!(out, "  {outcome}: {}.", items.join(", "));
    }
    let _ = writeln!(
        out,
        "  {}",
        match policy.seccomp.default_action {
            SyscallAction::Allow => "Every other system call is allowed.".to_owned(),
            SyscallAction::Errno(errno) => format!(
                "Every other system call, beyond the {} allowed ones, is refused with {}.",
                policy.seccomp.allowed.len(),
                errno_name(errno)
            ),
            SyscallAction::Kill => format!(
                "Any system call beyond the {} allowed ones ends the process.",
                policy.seccomp.allowed.len()
            ),
        }
    );

    let _ = writeln!(out, "\nLimits");
    for line in limit_lines(policy) {
        let _ = writeln!(out, "  {}{}.", line[..1].to_uppercase(), &line[1..]);
    }
    wrap(&out, 100)
}

/// Wraps lines longer than `width` at spaces, indenting continuations past the line's own
/// indentation.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let mut current = " ".repeat(indent);
        let mut empty = true;
        for word in line.split_whitespace() {
            if !empty && current.chars().count() + 1 + word.chars().count() > width {
                out.push_str(&current);
                out.push('\n');
                current = " ".repeat(indent + 4);
                empty = true;
            }
            if !empty {
                current.push(' ');
            }
            current.push_str(word);
            empty = false;
        }
        out.push_str(current.trim_end());
        out.push('\n');
    }
    out
}

/// One line: the policy's name, mode and the size of each layer.
pub fn summary(policy: &CompiledPolicy) -> String {
    format!(
        "{}: {} path rules, {} seccomp rules, network {}, mode {:?}",
        policy.name,
        policy.landlock.paths.len(),
        policy.seccomp.rules.len(),
        if policy.network.deny_all {
            "denied"
        } else if policy.network.allow.is_empty() {
            "open"
        } else {
            "allow-listed"
        },
        policy.mode,
    )
}
