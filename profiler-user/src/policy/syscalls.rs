//! Seccomp rules: `[syscalls]` plus the socket and process rules that `[network]` and `[ipc]`
//! imply.

use std::collections::BTreeMap;

use syscalls::Sysno;
use toml::Spanned;

use super::{
    compiled::{ArgCheck, ArgTest, NetworkLayer, SeccompLayer, SyscallAction, SyscallRule},
    error::{Contradiction, Location, PolicyError, Source},
    names::{errno_named, flag_value, syscalls_named},
    schema::{DefaultAction, DenyAction, SyscallsSection},
};

const EPERM: u16 = 1;
const EACCES: u16 = 13;

/// Where a syscall was last named, to report contradictions.
struct Seen {
    at: Location,
    field: String,
    conditional: bool,
}

/// Compiles `[syscalls]`; `derived` rules (from `[network]`, `[ipc]`) are added unless the
/// policy already denies their syscall outright.
pub fn compile(
    src: &Source<'_>,
    section: &SyscallsSection,
    derived: Vec<SyscallRule>,
) -> Result<SeccompLayer, PolicyError> {
    let default_action = default_action(src, section)?;
    let mut allowed: BTreeMap<u32, Seen> = BTreeMap::new();
    for (index, name) in section.allow.iter().enumerate() {
        let field = format!("syscalls.allow[{index}]");
        for (number, _) in resolve_names(src, name, &field)? {
            allowed.entry(number).or_insert(Seen {
                at: src.locate(name.span().start),
                field: field.clone(),
                conditional: false,
            });
        }
    }
    if default_action != SyscallAction::Allow {
        let execve = u32::try_from(Sysno::execve.id()).unwrap_or_default();
        if !allowed.contains_key(&execve) {
            let span = section.default.as_ref().map_or(0..0, Spanned::span);
            return Err(src.value_error(span, "syscalls.default", "with a default other than `allow`, `syscalls.allow` must list `execve`, or the command cannot start"));
        }
    }

    let mut rules = Vec::new();
    let mut denied: BTreeMap<u32, Seen> = BTreeMap::new();
    for (index, rule) in section.deny.iter().enumerate() {
        let field = format!("syscalls.deny[{index}]");
        let body = rule.get_ref();
        if body.names.is_empty() {
            return Err(src.value_error(
                rule.span(),
                format!("{field}.names"),
                "list at least one syscall",
            ));
        }
        let action = match (*body.action.get_ref(), &body.errno) {
            (DenyAction::Errno, None) => SyscallAction::Errno(EPERM),
            (DenyAction::Errno, Some(errno)) => SyscallAction::Errno(
                errno_named(errno.get_ref())
                    .map_err(|m| src.value_error(errno.span(), format!("{field}.errno"), m))?,
            ),
            (DenyAction::Kill, None) => SyscallAction::Kill,
            (DenyAction::Kill, Some(errno)) => {
                return Err(src.value_error(
                    errno.span(),
                    format!("{field}.errno"),
                    "`errno` only applies to `action = \"errno\"`",
                ));
            }
        };
        let when = match &body.if_arg {
            None => Vec::new(),
            Some(arg) => vec![arg_check(src, arg, &format!("{field}.if_arg"))?],
        };
        let conditional = !when.is_empty();
        for (name_index, name) in body.names.iter().enumerate() {
            let name_field = format!("{field}.names[{name_index}]");
            let at = src.locate(name.span().start);
            for (number, syscall) in resolve_names(src, name, &name_field)? {
                if !conditional && syscall == "execve" {
                    return Err(src.value_error(name.span(), name_field, "denying `execve` stops the command itself from starting; restrict what may run with `filesystem.executable`"));
                }
                if let Some(allow) = allowed.get(&number).filter(|_| !conditional) {
                    return Err(contradiction(
                        &at,
                        &name_field,
                        format!("`{syscall}` is denied but also allowed"),
                        allow,
                    ));
                }
                if let Some(first) = denied
                    .get(&number)
                    .filter(|first| !(first.conditional && conditional))
                {
                    return Err(contradiction(
                        &at,
                        &name_field,
                        format!("`{syscall}` is already denied"),
                        first,
                    ));
                }
                denied.insert(
                    number,
                    Seen {
                        at: at.clone(),
                        field: name_field.clone(),
                        conditional,
                    },
                );
                rules.push(SyscallRule {
                    syscall: number,
                    name: syscall,
                    action,
                    when: when.clone(),
                    rule: field.clone(),
                    origin: at.clone(),
                });
            }
        }
    }
    rules.extend(derived.into_iter().filter(|rule| {
        denied
            .get(&rule.syscall)
            .is_none_or(|seen| seen.conditional)
    }));
    Ok(SeccompLayer {
        default_action,
        allowed: allowed.into_keys().collect(),
        rules,
    })
}

fn contradiction(at: &Location, field: &str, message: String, other: &Seen) -> PolicyError {
    PolicyError::Contradiction(Box::new(Contradiction {
        at: at.clone(),
        field: field.to_owned(),
        message,
        other: other.at.clone(),
        other_field: other.field.clone(),
    }))
}

fn resolve_names(
    src: &Source<'_>,
    name: &Spanned<String>,
    field: &str,
) -> Result<Vec<(u32, &'static str)>, PolicyError> {
    syscalls_named(name.get_ref()).map_err(|message| src.value_error(name.span(), field, message))
}

fn default_action(
    src: &Source<'_>,
    section: &SyscallsSection,
) -> Result<SyscallAction, PolicyError> {
    let default = section
        .default
        .as_ref()
        .map_or(DefaultAction::Allow, |d| *d.get_ref());
    match (default, &section.default_errno) {
        (DefaultAction::Errno, errno) => Ok(SyscallAction::Errno(match errno {
            None => EPERM,
            Some(errno) => errno_named(errno.get_ref())
                .map_err(|m| src.value_error(errno.span(), "syscalls.default_errno", m))?,
        })),
        (_, Some(errno)) => Err(src.value_error(
            errno.span(),
            "syscalls.default_errno",
            "`default_errno` only applies to `default = \"errno\"`",
        )),
        (DefaultAction::Allow, None) => Ok(SyscallAction::Allow),
        (DefaultAction::Kill, None) => Ok(SyscallAction::Kill),
    }
}

fn arg_check(
    src: &Source<'_>,
    arg: &Spanned<super::schema::ArgBits>,
    field: &str,
) -> Result<ArgCheck, PolicyError> {
    let body = arg.get_ref();
    let index = *body.index.get_ref();
    if index > 5 {
        return Err(src.value_error(
            body.index.span(),
            format!("{field}.index"),
            "syscalls have arguments 0 to 5",
        ));
    }
    if body.any_of.is_empty() {
        return Err(src.value_error(
            arg.span(),
            format!("{field}.any_of"),
            "list at least one flag",
        ));
    }
    let mut mask = 0;
    for (i, flag) in body.any_of.iter().enumerate() {
        mask |= flag_value(flag.get_ref())
            .map_err(|m| src.value_error(flag.span(), format!("{field}.any_of[{i}]"), m))?;
    }
    Ok(ArgCheck {
        index,
        dword: false,
        test: ArgTest::AnyBits(mask),
    })
}

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
/// `SOCK_RAW`, `SOCK_RDM`, `SOCK_SEQPACKET`, `SOCK_DCCP`, `SOCK_PACKET`: never for a sandbox
/// with network rules.
const OTHER_SOCK_TYPES: [u64; 5] = [3, 4, 5, 6, 10];
const SOCK_TYPE_MASK: u64 = 0xf;

/// The `socket(2)` rules a restricted network and `ipc.unix_sockets = false` imply: Landlock
/// covers TCP only, so UDP (unless allowed), raw, packet and every non-IP family is refused at
/// creation, with `EACCES` like Landlock's own denials.
pub fn socket_rules(
    network: &NetworkLayer,
    unix_sockets: bool,
    net_origin: &Location,
    net_rule: &str,
    ipc_origin: &Location,
) -> Vec<SyscallRule> {
    let socket = u32::try_from(Sysno::socket.id()).unwrap_or_default();
    let arg = |index, test| ArgCheck {
        index,
        dword: true,
        test,
    };
    let rule = |when: Vec<ArgCheck>, name: &str, origin: &Location| SyscallRule {
        syscall: socket,
        name: "socket",
        action: SyscallAction::Errno(EACCES),
        when,
        rule: name.to_owned(),
        origin: origin.clone(),
    };
    let mut rules = Vec::new();
    if network.is_restricted() {
        let udp_allowed = network
            .allow
            .iter()
            .any(|a| a.protocol == super::compiled::IPPROTO_UDP);
        let not_family = |family| arg(0, ArgTest::NotEquals(family));
        rules.push(rule(
            vec![
                not_family(AF_UNIX),
                not_family(AF_INET),
                not_family(AF_INET6),
            ],
            net_rule,
            net_origin,
        ));
        for family in [AF_INET, AF_INET6] {
            let is_family = arg(0, ArgTest::Equals(family));
            let of_type = |ty| {
                arg(
                    1,
                    ArgTest::MaskedEquals {
                        mask: SOCK_TYPE_MASK,
                        value: ty,
                    },
                )
            };
            let types = OTHER_SOCK_TYPES
                .iter()
                .copied()
                .chain((!udp_allowed).then_some(SOCK_DGRAM));
            for ty in types {
                rules.push(rule(vec![is_family, of_type(ty)], net_rule, net_origin));
            }
            let protocols = [(SOCK_STREAM, 6)]
                .into_iter()
                .chain(udp_allowed.then_some((SOCK_DGRAM, 17)));
            for (ty, protocol) in protocols {
                let other_protocol = vec![
                    is_family,
                    of_type(ty),
                    arg(2, ArgTest::NotEquals(0)),
                    arg(2, ArgTest::NotEquals(protocol)),
                ];
                rules.push(rule(other_protocol, net_rule, net_origin));
            }
        }
    }
    if !unix_sockets {
        rules.push(rule(
            vec![arg(0, ArgTest::Equals(AF_UNIX))],
            "ipc.unix_sockets",
            ipc_origin,
        ));
    }
    rules
}

/// `which` of `setpriority(2)`: a single process.
const PRIO_PROCESS: u64 = 0;
/// `which` of `ioprio_set(2)`: a single process.
const IOPRIO_WHO_PROCESS: u64 = 1;

/// The rules `ipc.processes_outside = false` implies: the calls that change another process's
/// scheduling, CPU affinity, I/O priority or resource limits act on the caller only (pid or
/// `who` 0), refused with `EPERM` otherwise. Landlock scopes signals and ptrace-like access, not
/// these; and a sandbox that runs as root passes their same-user checks for every root process
/// of the host.
pub fn process_rules(origin: &Location) -> Vec<SyscallRule> {
    let not_self = |index| ArgCheck {
        index,
        dword: true,
        test: ArgTest::NotEquals(0),
    };
    let rule = |sysno: Sysno, when: Vec<ArgCheck>| SyscallRule {
        syscall: u32::try_from(sysno.id()).unwrap_or_default(),
        name: sysno.name(),
        action: SyscallAction::Errno(EPERM),
        when,
        rule: "ipc.processes_outside".to_owned(),
        origin: origin.clone(),
    };
    let mut rules: Vec<SyscallRule> = [
        Sysno::prlimit64,
        Sysno::sched_setaffinity,
        Sysno::sched_setscheduler,
        Sysno::sched_setparam,
        Sysno::sched_setattr,
    ]
    .into_iter()
    .map(|sysno| rule(sysno, vec![not_self(0)]))
    .collect();
    // Another process, a process group or a user (`who` 0 is the caller's own group or user).
    for (sysno, single) in [
        (Sysno::setpriority, PRIO_PROCESS),
        (Sysno::ioprio_set, IOPRIO_WHO_PROCESS),
    ] {
        let which_is_not = ArgCheck {
            index: 0,
            dword: true,
            test: ArgTest::NotEquals(single),
        };
        rules.push(rule(sysno, vec![which_is_not]));
        rules.push(rule(sysno, vec![not_self(1)]));
    }
    rules
}
