//! The seccomp layer: the policy's syscall rules compiled into classic-BPF programs (with
//! seccompiler) before fork; the child only installs them.
//!
//! seccompiler gives each filter a single match action, so the rules are grouped: one filter per
//! distinct action, plus an allow-list filter when the default is not `allow`. The kernel runs
//! every installed filter and keeps the most severe verdict, so the stack behaves as one filter.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use super::GuardError;
use crate::policy::{ArgCheck, ArgTest, Mode, SeccompLayer, SyscallAction};

/// A filter's action: the policy's, or `Log` for everything in audit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Allow,
    Log,
    Errno(u16),
    Kill,
}

impl Verdict {
    fn of(action: SyscallAction, mode: Mode) -> Self {
        match (action, mode) {
            (SyscallAction::Allow, _) => Self::Allow,
            (_, Mode::Audit) => Self::Log,
            (SyscallAction::Errno(errno), Mode::Enforce) => Self::Errno(errno),
            (SyscallAction::Kill, Mode::Enforce) => Self::Kill,
        }
    }

    fn action(self) -> SeccompAction {
        match self {
            Self::Allow => SeccompAction::Allow,
            Self::Log => SeccompAction::Log,
            Self::Errno(errno) => SeccompAction::Errno(u32::from(errno)),
            Self::Kill => SeccompAction::KillProcess,
        }
    }
}

/// The rules of one syscall within one filter: `None` matches every call.
type Chain = Option<Vec<SeccompRule>>;

/// Compiles the layer into the programs to install, in order.
pub fn build(layer: &SeccompLayer, mode: Mode) -> Result<Vec<BpfProgram>, GuardError> {
    let arch_name = std::env::consts::ARCH;
    let arch = TargetArch::try_from(arch_name)
        .map_err(|_| GuardError::UnsupportedArch(arch_name.to_owned()))?;
    let mut programs = Vec::new();
    if cfg!(target_arch = "x86_64") {
        programs.push(x32_guard());
    }

    let default = Verdict::of(layer.default_action, mode);
    if default != Verdict::Allow {
        let allowed = layer
            .allowed
            .iter()
            .map(|&nr| (i64::from(nr), Vec::new()))
            .collect();
        let filter = SeccompFilter::new(allowed, default.action(), SeccompAction::Allow, arch)?;
        programs.push(BpfProgram::try_from(filter)?);
    }

    let mut groups: BTreeMap<Verdict, BTreeMap<i64, Chain>> = BTreeMap::new();
    for rule in &layer.rules {
        let verdict = Verdict::of(rule.action, mode);
        if verdict == Verdict::Allow {
            continue;
        }
        let chain = groups
            .entry(verdict)
            .or_default()
            .entry(i64::from(rule.syscall))
            .or_insert_with(|| Some(Vec::new()));
        if rule.when.is_empty() {
            *chain = None;
        } else if let Some(rules) = chain {
            rules.extend(alternatives(&rule.when)?);
        }
    }
    for (verdict, syscalls) in groups {
        let rules = syscalls
            .into_iter()
            .map(|(nr, chain)| (nr, chain.unwrap_or_default()))
            .collect();
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, verdict.action(), arch)?;
        programs.push(BpfProgram::try_from(filter)?);
    }
    Ok(programs)
}

/// The seccompiler rules equivalent to "all of `checks` hold": an `AnyBits` test is not one
/// BPF comparison, so it becomes one alternative per bit.
fn alternatives(checks: &[ArgCheck]) -> Result<Vec<SeccompRule>, GuardError> {
    let mut rules: Vec<Vec<SeccompCondition>> = vec![Vec::new()];
    for check in checks {
        let width = if check.dword {
            SeccompCmpArgLen::Dword
        } else {
            SeccompCmpArgLen::Qword
        };
        let condition = |op, value| SeccompCondition::new(check.index, width.clone(), op, value);
        let options = match check.test {
            ArgTest::AnyBits(mask) => (0..64)
                .map(|bit| 1u64 << bit)
                .filter(|bit| mask & bit != 0)
                .map(|bit| condition(SeccompCmpOp::MaskedEq(bit), bit))
                .collect::<Result<Vec<_>, _>>()?,
            ArgTest::Equals(value) => vec![condition(SeccompCmpOp::Eq, value)?],
            ArgTest::MaskedEquals { mask, value } => {
                vec![condition(SeccompCmpOp::MaskedEq(mask), value)?]
            }
            ArgTest::NotEquals(value) => vec![condition(SeccompCmpOp::Ne, value)?],
        };
        rules = rules
            .into_iter()
            .flat_map(|conditions| {
                options.iter().map(move |option| {
                    let mut conditions = conditions.clone();
                    conditions.push(option.clone());
                    conditions
                })
            })
            .collect();
    }
    Ok(rules
        .into_iter()
        .map(SeccompRule::new)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Refuses x32 system calls (numbers with bit 30 set), which share the x86-64 audit
/// architecture and would otherwise slip past rules keyed by the 64-bit numbers.
fn x32_guard() -> BpfProgram {
    const LOAD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, offset 0: seccomp_data.nr
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const ENOSYS: u32 = 38;
    let errno = u32::from(SeccompAction::Errno(ENOSYS));
    let allow = u32::from(SeccompAction::Allow);
    vec![
        sock_filter {
            code: LOAD_NR,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: JGE,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: RET,
            jt: 0,
            jf: 0,
            k: errno,
        },
        sock_filter {
            code: RET,
            jt: 0,
            jf: 0,
            k: allow,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::{Verdict, build};
    use crate::policy::{Mode, parse};

    #[test]
    fn one_filter_per_action_plus_the_x32_guard() {
        let text = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"errno\"\n\
                    [[syscalls.deny]]\nnames = [\"clone3\"]\naction = \"errno\"\nerrno = \"ENOSYS\"\n\
                    [[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"\n\
                    [network]\ndeny_all = false\n[ipc]\nunix_sockets = true\n";
        let policy = parse("p.toml", text).unwrap();
        let programs = build(&policy.seccomp, Mode::Enforce).unwrap();
        assert_eq!(programs.len(), 1 + 3, "x32 guard + EPERM + ENOSYS + kill");
        let audit = build(&policy.seccomp, Mode::Audit).unwrap();
        assert_eq!(audit.len(), 1 + 1, "in audit mode every rule only logs");
    }

    #[test]
    fn judge_policy_compiles_to_bpf() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/judge.toml");
        let policy = crate::policy::load(&path).unwrap();
        let programs = build(&policy.seccomp, Mode::Enforce).unwrap();
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        assert!(
            Verdict::Kill > Verdict::Errno(1),
            "kill sorts last, like its precedence"
        );
    }
}
