//! The seccomp layer: the policy's syscall rules compiled into classic-BPF programs (with
//! seccompiler) before fork; the child only installs them.
//!
//! seccompiler gives each filter a single match action, so the rules are grouped: one filter per
//! distinct action, plus an allow-list filter when the default is not `allow`. The groups are then
//! chained into one program (see [`chain`]) that answers what the kernel would for the stack of
//! separate filters: installing one filter instead of four saves the kernel a filter copy, JIT
//! and action-cache emulation per filter, and the submission a filter run per system call. On
//! x86-64 the program installed is [`seccomp_tree`]'s, a binary search with the same answers
//! (the tests compare it with the stack of seccompiler's filters).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use super::{
    GuardError,
    seccomp_tree::{self, Entry, Rules, X32_SYSCALL_BIT},
};
use crate::policy::{ArgCheck, ArgTest, Mode, SeccompLayer, SyscallAction};

const ENOSYS: u32 = 38;

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

/// Compiles the layer into the programs to install: one. On x86-64 a binary search over the
/// syscall numbers (see [`seccomp_tree`]); elsewhere the groups of [`separate`] chained.
pub fn build(layer: &SeccompLayer, mode: Mode) -> Result<Vec<BpfProgram>, GuardError> {
    if cfg!(target_arch = "x86_64") {
        return Ok(vec![match tree_rules(layer, mode) {
            Some(rules) => seccomp_tree::build(&rules),
            None => x32_guard(),
        }]);
    }
    Ok(vec![chain(separate(layer, mode)?)])
}

/// The rules of the filters [`separate`] would install, per syscall number and in the order the
/// kernel's answer takes them (see [`chain`]); `None` when only the x32 guard would be.
fn tree_rules(layer: &SeccompLayer, mode: Mode) -> Option<Rules> {
    type Group = BTreeMap<u32, Option<Vec<Vec<ArgCheck>>>>;
    let default = Verdict::of(layer.default_action, mode);
    let mut groups: BTreeMap<Verdict, Group> = BTreeMap::new();
    for rule in &layer.rules {
        let verdict = Verdict::of(rule.action, mode);
        if verdict == Verdict::Allow {
            continue;
        }
        let chain = groups
            .entry(verdict)
            .or_default()
            .entry(rule.syscall)
            .or_insert_with(|| Some(Vec::new()));
        if rule.when.is_empty() {
            *chain = None;
        } else if let Some(alternatives) = chain {
            alternatives.push(rule.when.clone());
        }
    }
    // Installed: the allow-list filter (`None`), then one per verdict; the kernel takes them
    // newest first and keeps the most severe answer, the first seen among equals.
    let mut filters: Vec<(u32, Option<&Group>)> = Vec::new();
    if default != Verdict::Allow {
        filters.push((u32::from(default.action()), None));
    }
    filters.extend(groups.iter().map(|(v, g)| (u32::from(v.action()), Some(g))));
    if filters.is_empty() {
        return None;
    }
    filters.reverse();
    filters.sort_by_key(|&(ret, _)| severity(ret));
    let allowed: std::collections::BTreeSet<u32> = layer.allowed.iter().copied().collect();
    let listed = (default != Verdict::Allow).then_some(&allowed);
    let numbers: std::collections::BTreeSet<u32> = groups
        .values()
        .flat_map(|g| g.keys().copied())
        .chain(listed.into_iter().flatten().copied())
        .collect();
    let syscalls = numbers
        .into_iter()
        .map(|nr| {
            let entries = filters
                .iter()
                .filter_map(|&(ret, group)| match group {
                    None => (!allowed.contains(&nr)).then_some(Entry::Always(ret)),
                    Some(group) => group.get(&nr).map(|chain| match chain {
                        None => Entry::Always(ret),
                        Some(alternatives) => Entry::When(ret, alternatives.clone()),
                    }),
                })
                .collect();
            (nr, entries)
        })
        .collect();
    let other = if default == Verdict::Allow {
        SECCOMP_RET_ALLOW
    } else {
        u32::from(default.action())
    };
    // The x32 guard's ENOSYS, unless the default is at least as severe (it comes first).
    let enosys = u32::from(SeccompAction::Errno(ENOSYS));
    let x32 = if default != Verdict::Allow && severity(other) <= severity(enosys) {
        other
    } else {
        enosys
    };
    Some(Rules {
        syscalls,
        other,
        x32,
    })
}

/// Compiles the layer into one program per action, in the order they would be installed.
fn separate(layer: &SeccompLayer, mode: Mode) -> Result<Vec<BpfProgram>, GuardError> {
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

const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// The action part of a seccomp return value, as the kernel ranks it: lower is more severe
/// (`KILL_PROCESS` is `0x80000000`, negative as the kernel's `s32`).
fn severity(ret: u32) -> i32 {
    (ret & 0xffff_0000) as i32
}

/// The most severe action a program can return other than `ALLOW` and the arch check's
/// `KILL_PROCESS` (which every program shares): what it adds to the stack.
fn program_action(program: &[sock_filter]) -> i32 {
    program
        .iter()
        .enumerate()
        .filter(|&(i, insn)| {
            insn.code == BPF_RET_K && insn.k != SECCOMP_RET_ALLOW && !is_arch_kill(program, i)
        })
        .map(|(_, insn)| severity(insn.k))
        .min()
        .unwrap_or_else(|| severity(SECCOMP_RET_ALLOW))
}

/// Whether instruction `i` is the `KILL_PROCESS` of seccompiler's arch check (instructions 0-2:
/// load arch, jump over the kill when it matches, kill).
fn is_arch_kill(program: &[sock_filter], i: usize) -> bool {
    i == 2 && program[0].code == 0x20 && program[0].k == 4 && program[1].code == 0x15
}

/// Chains `programs` (in install order) into one program with the same answer for every call.
///
/// The kernel runs every filter of a stack, newest first, and keeps the most severe action; of
/// equally severe ones, the first it saw. The chain runs the programs most severe first (newest
/// first among equals) and stops at the first that does not allow: each program's `RET ALLOW`
/// becomes a jump to the start of the next. Each program returns `ALLOW`, the arch check's kill
/// (the same in all) or its own action, so the first refusal in this order is the most severe
/// refusal of all.
fn chain(programs: Vec<BpfProgram>) -> BpfProgram {
    let mut ordered: Vec<BpfProgram> = programs.into_iter().rev().collect();
    ordered.sort_by_key(|p| program_action(p));
    let last = ordered.len().saturating_sub(1);
    let mut out = Vec::with_capacity(3 + ordered.iter().map(Vec::len).sum::<usize>());
    // The arch check first, once: past it no program returns its kill, so the first refusal is
    // the most severe one also for calls of another arch.
    if let Some(program) = ordered.iter().find(|p| p.len() > 3 && is_arch_kill(p, 2)) {
        out.extend_from_slice(&program[..3]);
    }
    for (n, mut program) in ordered.into_iter().enumerate() {
        if n != last {
            let len = program.len();
            for (i, insn) in program.iter_mut().enumerate() {
                if insn.code == BPF_RET_K && insn.k == SECCOMP_RET_ALLOW {
                    *insn = sock_filter {
                        code: BPF_JMP_JA,
                        jt: 0,
                        jf: 0,
                        k: (len - i - 1) as u32,
                    };
                }
            }
        }
        out.extend(program);
    }
    out
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
    use seccompiler::{BpfProgram, sock_filter};

    use super::{SECCOMP_RET_ALLOW, Verdict, build, chain, separate, severity};
    use crate::policy::{CompiledPolicy, Mode, parse};

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

    /// `struct seccomp_data` as the filter reads it: nr, arch, ip, args.
    fn data(nr: u32, arch: u32, args: [u64; 6]) -> [u32; 16] {
        let mut words = [0u32; 16];
        words[0] = nr;
        words[1] = arch;
        for (i, arg) in args.iter().enumerate() {
            words[4 + 2 * i] = *arg as u32;
            words[5 + 2 * i] = (*arg >> 32) as u32;
        }
        words
    }

    /// A classic-BPF interpreter for the instructions seccompiler, the x32 guard and the search
    /// tree emit. `load` gives the word at an offset of `struct seccomp_data`, or `None` to stop
    /// there. Returns the program's return value (`None` when stopped) and the instructions run.
    fn interpret(
        program: &[sock_filter],
        load: impl Fn(u32) -> Option<u32>,
    ) -> (Option<u32>, usize) {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0);
        loop {
            let insn = &program[pc];
            steps += 1;
            let jump = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
            pc = match insn.code {
                0x20 => match load(insn.k) {
                    Some(word) => {
                        a = word;
                        pc + 1
                    }
                    None => return (None, steps),
                },
                0x54 => {
                    a &= insn.k;
                    pc + 1
                }
                0x05 => pc + 1 + insn.k as usize,
                0x15 => jump(a == insn.k),
                0x25 => jump(a > insn.k),
                0x35 => jump(a >= insn.k),
                0x45 => jump(a & insn.k != 0),
                0x06 => return (Some(insn.k), steps),
                code => panic!("unexpected instruction {code:#x}"),
            };
        }
    }

    fn run(program: &[sock_filter], data: &[u32; 16]) -> u32 {
        interpret(program, |k| Some(data[k as usize / 4]))
            .0
            .expect("runs to a return")
    }

    /// What the kernel answers for a stack of filters: newest first, the most severe action, the
    /// first seen among equals.
    fn run_stack(programs: &[BpfProgram], data: &[u32; 16]) -> u32 {
        let mut result = SECCOMP_RET_ALLOW;
        for program in programs.iter().rev() {
            let ret = run(program, data);
            if severity(ret) < severity(result) {
                result = ret;
            }
        }
        result
    }

    fn assert_one_program_answers_like_the_stack(policy: &CompiledPolicy, mode: Mode) {
        let stack = separate(&policy.seccomp, mode).unwrap();
        let merged = build(&policy.seccomp, mode).unwrap();
        assert_eq!(merged.len(), 1, "one program");
        let merged = &merged[0];
        assert!(merged.len() < 4096, "within BPF_MAXINSNS");
        assert_eq!(merged.last().unwrap().code, 0x06, "ends with a return");
        let args = [
            0,
            1,
            2,
            10,
            16,
            17,
            0x1000_0000,
            0x0002_0000,
            0x4000_0000,
            0x0001_0000 | 0x0000_0100,
            0x8000_0000,
            u64::MAX,
        ];
        let mut refused = 0;
        for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
            for nr in (0..520).chain(0x4000_0000..0x4000_0010) {
                for &arg0 in &args {
                    for &arg1 in &[0, 1, 2, 3, 5, 0x80000] {
                        let data = data(nr, arch, [arg0, arg1, arg1, 0, 0, 0]);
                        let want = run_stack(&stack, &data);
                        assert_eq!(
                            run(merged, &data),
                            want,
                            "nr {nr} arch {arch:#x} args {arg0:#x} {arg1:#x}"
                        );
                        refused += usize::from(want != SECCOMP_RET_ALLOW);
                    }
                }
            }
        }
        assert!(refused > 0, "the policy refuses something");
    }

    #[test]
    fn the_chained_program_answers_like_the_stack_of_filters() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for name in ["judge.toml", "interpreted.toml"] {
            let policy = crate::policy::load(&dir.join(name)).unwrap();
            let run_policy = crate::guard::run_entry::seccomp_for_run(&policy);
            for mode in [Mode::Enforce, Mode::Audit] {
                assert_one_program_answers_like_the_stack(&policy, mode);
                assert_one_program_answers_like_the_stack(&run_policy, mode);
            }
        }
        let strict = "[syscalls]\ndefault = \"kill\"\nallow = [\"read\", \"write\", \"exit_group\", \"execve\", \"clone\"]\n\
                      [[syscalls.deny]]\nnames = [\"clone\"]\naction = \"errno\"\n\
                      [syscalls.deny.if_arg]\nindex = 0\nany_of = [\"CLONE_NEWUSER\"]\n\
                      [[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"kill\"\n\
                      [[syscalls.deny]]\nnames = [\"clone3\"]\naction = \"errno\"\nerrno = \"ENOSYS\"\n\
                      [network]\ndeny_all = false\n[ipc]\nunix_sockets = true\n";
        match parse("strict.toml", strict) {
            Ok(policy) => {
                for mode in [Mode::Enforce, Mode::Audit] {
                    assert_one_program_answers_like_the_stack(&policy, mode);
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn one_filter_per_action_plus_the_x32_guard_before_chaining() {
        let text = "[[syscalls.deny]]\nnames = [\"ptrace\"]\naction = \"errno\"\n\
                    [[syscalls.deny]]\nnames = [\"clone3\"]\naction = \"errno\"\nerrno = \"ENOSYS\"\n\
                    [[syscalls.deny]]\nnames = [\"bpf\"]\naction = \"kill\"\n\
                    [network]\ndeny_all = false\n[ipc]\nunix_sockets = true\n";
        let policy = parse("p.toml", text).unwrap();
        let programs = separate(&policy.seccomp, Mode::Enforce).unwrap();
        assert_eq!(programs.len(), 1 + 3, "x32 guard + EPERM + ENOSYS + kill");
        let audit = separate(&policy.seccomp, Mode::Audit).unwrap();
        assert_eq!(audit.len(), 1 + 1, "in audit mode every rule only logs");
        assert_eq!(build(&policy.seccomp, Mode::Enforce).unwrap().len(), 1);
    }

    /// The instructions the kernel's allow-cache emulation walks for `nr` before it reaches a
    /// return or gives up at an argument load.
    fn emulated_steps(program: &[sock_filter], nr: u32) -> usize {
        interpret(program, |k| match k {
            0 => Some(nr),
            4 => Some(AUDIT_ARCH_X86_64),
            _ => None,
        })
        .1
    }

    #[test]
    fn the_kernel_prepares_the_judge_program_in_a_few_steps_per_syscall() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/judge.toml");
        let policy = crate::policy::load(&path).unwrap();
        for mode in [Mode::Enforce, Mode::Audit] {
            let program = &build(&policy.seccomp, mode).unwrap()[0];
            let worst = (0..512)
                .map(|nr| emulated_steps(program, nr))
                .max()
                .unwrap();
            assert!(
                worst <= 24,
                "{mode:?}: up to {worst} steps a syscall number"
            );
            let chained = chain(separate(&policy.seccomp, mode).unwrap());
            let linear = (0..512)
                .map(|nr| emulated_steps(&chained, nr))
                .max()
                .unwrap();
            assert!(
                linear > 2 * worst,
                "{mode:?}: {linear} steps in the chain, {worst} in the tree"
            );
        }
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
