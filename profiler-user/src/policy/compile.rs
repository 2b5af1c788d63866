//! From the file as written to [`CompiledPolicy`]: every check that needs no run.

use toml::Spanned;

use super::{
    compiled::{CompiledPolicy, IPPROTO_TCP, LandlockLayer, Limits, NetworkLayer, SyscallAction},
    error::{Contradiction, Location, PolicyError, Source},
    network::parse_allow,
    paths,
    schema::{LimitsSection, NetworkSection, PolicyFile},
    syscalls,
};

/// Parses and validates `text` (named `name` in messages).
pub fn compile(src: &Source<'_>) -> Result<CompiledPolicy, PolicyError> {
    let file: PolicyFile = toml::from_str(src.text).map_err(|error| src.syntax_error(&error))?;
    let (paths, denied) = paths::compile(src, &file.filesystem)?;
    let quiet = paths::compile_quiet(src, &file.filesystem)?;
    let (network, net_origin, net_rule) = network(src, file.network.as_ref())?;

    let flag = |value: &Option<Spanned<bool>>| value.as_ref().is_some_and(|v| *v.get_ref());
    let ipc = &file.ipc;
    let ipc_origin = ipc
        .unix_sockets
        .as_ref()
        .map_or_else(|| src.locate(0), |v| src.locate(v.span().start));
    let mut derived = syscalls::socket_rules(
        &network,
        flag(&ipc.unix_sockets),
        &net_origin,
        net_rule,
        &ipc_origin,
    );
    if !flag(&ipc.processes_outside) {
        let origin = ipc
            .processes_outside
            .as_ref()
            .map_or_else(|| src.locate(0), |v| src.locate(v.span().start));
        derived.extend(syscalls::process_rules(&origin));
    }
    let seccomp = syscalls::compile(src, &file.syscalls, derived)?;

    let mut tcp_connect_ports: Vec<u16> = network
        .allow
        .iter()
        .filter(|allow| allow.protocol == IPPROTO_TCP)
        .map(|allow| allow.port)
        .collect();
    tcp_connect_ports.sort_unstable();
    tcp_connect_ports.dedup();
    let landlock = LandlockLayer {
        paths,
        denied,
        quiet,
        restrict_tcp: network.is_restricted(),
        tcp_connect_ports,
        scope_signals: !flag(&ipc.signal_outside),
        scope_abstract_unix: !flag(&ipc.abstract_unix_outside),
    };
    let mut kill_syscalls: Vec<u32> = seccomp
        .rules
        .iter()
        .filter(|rule| rule.action == SyscallAction::Kill && rule.when.is_empty())
        .map(|rule| rule.syscall)
        .collect();
    kill_syscalls.sort_unstable();
    kill_syscalls.dedup();
    Ok(CompiledPolicy {
        name: src.name.to_owned(),
        description: file.description.clone(),
        mode: file.mode.as_ref().map(|m| *m.get_ref()).unwrap_or_default(),
        landlock,
        seccomp,
        network,
        limits: limits(src, &file.limits)?,
        kill_syscalls,
    })
}

/// `[network]`, with where its rules come from (for the socket rules derived from it).
fn network(
    src: &Source<'_>,
    section: Option<&Spanned<NetworkSection>>,
) -> Result<(NetworkLayer, Location, &'static str), PolicyError> {
    let Some(section) = section else {
        return Ok((
            NetworkLayer {
                deny_all: true,
                allow: Vec::new(),
            },
            src.locate(0),
            "network (absent: no network)",
        ));
    };
    let body = section.get_ref();
    let mut allow = Vec::new();
    for (index, entry) in body.allow.iter().enumerate() {
        let field = format!("network.allow[{index}]");
        let parsed = parse_allow(entry.get_ref())
            .map_err(|message| src.value_error(entry.span(), &field, message))?;
        if !allow.contains(&parsed) {
            allow.push(parsed);
        }
    }
    match &body.deny_all {
        Some(deny_all) if *deny_all.get_ref() && !body.allow.is_empty() => {
            Err(PolicyError::Contradiction(Box::new(Contradiction {
                at: src.locate(body.allow[0].span().start),
                field: "network.allow[0]".to_owned(),
                message: "allowed destinations are listed while all network access is denied"
                    .to_owned(),
                other: src.locate(deny_all.span().start),
                other_field: "network.deny_all".to_owned(),
            })))
        }
        Some(deny_all) => {
            let rule = if *deny_all.get_ref() {
                "network.deny_all"
            } else {
                "network.allow"
            };
            Ok((
                NetworkLayer {
                    deny_all: *deny_all.get_ref(),
                    allow,
                },
                src.locate(deny_all.span().start),
                rule,
            ))
        }
        None => {
            let deny_all = allow.is_empty();
            let rule = if deny_all {
                "network (no allow entries: no network)"
            } else {
                "network.allow"
            };
            Ok((
                NetworkLayer { deny_all, allow },
                src.locate(section.span().start),
                rule,
            ))
        }
    }
}

fn limits(src: &Source<'_>, section: &LimitsSection) -> Result<Limits, PolicyError> {
    Ok(Limits {
        tasks: nonzero(src, "tasks", section.tasks.as_ref(), |n| n == 0)?,
        memory_bytes: nonzero(src, "memory", section.memory.as_ref(), |s| s.0 == 0)?.map(|s| s.0),
        cpu_time: nonzero(src, "cpu_time", section.cpu_time.as_ref(), |t| {
            t.0.is_zero()
        })?
        .map(|t| t.0),
        wall_time: nonzero(src, "wall_time", section.wall_time.as_ref(), |t| {
            t.0.is_zero()
        })?
        .map(|t| t.0),
        output_bytes: nonzero(src, "output", section.output.as_ref(), |s| s.0 == 0)?.map(|s| s.0),
        disk_bytes: nonzero(src, "disk", section.disk.as_ref(), |s| s.0 == 0)?.map(|s| s.0),
        fork_rate: nonzero(src, "fork_rate", section.fork_rate.as_ref(), |n| n == 0)?,
        stack_bytes: nonzero(src, "stack", section.stack.as_ref(), |s| s.0 == 0)?.map(|s| s.0),
    })
}

/// A limit's value; zero is refused, since it would stop every run.
fn nonzero<T: Copy>(
    src: &Source<'_>,
    field: &str,
    value: Option<&Spanned<T>>,
    is_zero: impl Fn(T) -> bool,
) -> Result<Option<T>, PolicyError> {
    match value {
        Some(value) if is_zero(*value.get_ref()) => Err(src.value_error(
            value.span(),
            format!("limits.{field}"),
            "a limit of zero would stop every run; remove the field for no limit",
        )),
        value => Ok(value.map(|v| *v.get_ref())),
    }
}
