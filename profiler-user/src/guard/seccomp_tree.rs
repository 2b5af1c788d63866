//! The seccomp program the child installs: one classic-BPF program that dispatches on the syscall
//! number with a binary search and only then tests arguments.
//!
//! It answers every call like the stack of seccompiler filters of [`super::seccomp`] would (the
//! unit tests there check it against them), but the kernel prepares it far faster: when a filter
//! is installed, the kernel emulates it once per syscall number to cache the calls it always
//! allows (`seccomp_cache_prepare`), and seccompiler's linear chains made that walk every rule for
//! every number: 0.4 ms per run for `policies/judge.toml`. A search costs a dozen instructions a
//! number.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, sock_filter};

use crate::policy::{ArgCheck, ArgTest};

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// Numbers with this bit are x32 calls.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What one of the stacked filters says about one syscall number.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Returns this whatever the arguments.
    Always(u32),
    /// Returns this when one of the alternatives (each all of its checks) holds.
    When(u32, Vec<Vec<ArgCheck>>),
}

/// The filters to merge: for each syscall number with rules, the entries of the filters that
/// have one for it, in the order the kernel's answer takes them (most severe first; see
/// [`super::seccomp`]); `other` for every number without an entry; `x32` for x32 numbers.
pub struct Rules {
    /// Entries per syscall number.
    pub syscalls: BTreeMap<u32, Vec<Entry>>,
    /// The answer for the numbers not in `syscalls`.
    pub other: u32,
    /// The answer for x32 numbers.
    pub x32: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

#[derive(Clone, Copy, Debug)]
enum Target {
    Next,
    To(Label),
}

enum Insn {
    Stmt(u16, u32),
    Jump(u16, u32, Target, Target),
    Always(Label),
}

/// A tiny assembler with forward labels.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

/// A conditional jump farther than 255 instructions.
#[derive(Debug)]
struct TooFar;

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn::Stmt(code, k));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Insn::Jump(code, k, jt, jf));
    }

    fn goto(&mut self, label: Label) {
        self.insns.push(Insn::Always(label));
    }

    fn ret(&mut self, k: u32) {
        self.stmt(RET, k);
    }

    fn load(&mut self, offset: u32) {
        self.stmt(LD_ABS, offset);
    }

    fn finish(self) -> Result<BpfProgram, TooFar> {
        let at = |label: Label| self.labels[label.0].expect("every label is bound");
        let offset = |i: usize, target: Target| -> Result<u8, TooFar> {
            match target {
                Target::Next => Ok(0),
                Target::To(label) => u8::try_from(at(label) - i - 1).map_err(|_| TooFar),
            }
        };
        self.insns
            .iter()
            .enumerate()
            .map(|(i, insn)| {
                Ok(match *insn {
                    Insn::Stmt(code, k) => sock_filter {
                        code,
                        jt: 0,
                        jf: 0,
                        k,
                    },
                    Insn::Jump(code, k, jt, jf) => sock_filter {
                        code,
                        jt: offset(i, jt)?,
                        jf: offset(i, jf)?,
                        k,
                    },
                    Insn::Always(label) => sock_filter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: (at(label) - i - 1) as u32,
                    },
                })
            })
            .collect()
    }
}

/// Compiles `rules` into one program for x86-64 (other architectures are refused with
/// `KILL_PROCESS`, as seccompiler's arch check does).
pub fn build(rules: &Rules) -> BpfProgram {
    // Short jumps in the search where they reach (nearly always), long ones otherwise.
    emit(rules, false)
        .or_else(|TooFar| emit(rules, true))
        .expect("long jumps reach everywhere")
}

fn emit(rules: &Rules, long: bool) -> Result<BpfProgram, TooFar> {
    let mut asm = Asm::default();
    let native = asm.label();
    asm.load(OFFSET_ARCH);
    asm.jump(JEQ, AUDIT_ARCH_X86_64, Target::To(native), Target::Next);
    asm.ret(SECCOMP_RET_KILL_PROCESS);
    asm.bind(native);
    asm.load(OFFSET_NR);
    let native_nr = asm.label();
    asm.jump(JGE, X32_SYSCALL_BIT, Target::Next, Target::To(native_nr));
    asm.ret(rules.x32);
    asm.bind(native_nr);
    let numbers: Vec<(u32, Label)> = rules.syscalls.keys().map(|&nr| (nr, asm.label())).collect();
    search(&mut asm, &numbers, rules.other, long);
    for (nr, label) in numbers {
        asm.bind(label);
        block(&mut asm, &rules.syscalls[&nr]);
    }
    asm.finish()
}

/// The binary search over `numbers` (sorted), with the syscall number in A; numbers not found
/// return `other`.
fn search(asm: &mut Asm, numbers: &[(u32, Label)], other: u32, long: bool) {
    if numbers.len() <= 3 {
        for &(nr, label) in numbers {
            let next = asm.label();
            asm.jump(JEQ, nr, Target::Next, Target::To(next));
            asm.goto(label);
            asm.bind(next);
        }
        asm.ret(other);
        return;
    }
    let (low, high) = numbers.split_at(numbers.len() / 2);
    let upper = asm.label();
    if long {
        let lower = asm.label();
        asm.jump(JGE, high[0].0, Target::Next, Target::To(lower));
        asm.goto(upper);
        asm.bind(lower);
    } else {
        asm.jump(JGE, high[0].0, Target::To(upper), Target::Next);
    }
    search(asm, low, other, long);
    asm.bind(upper);
    search(asm, high, other, long);
}

/// One syscall's entries in order: the first that holds answers; `ALLOW` when none does.
fn block(asm: &mut Asm, entries: &[Entry]) {
    for entry in entries {
        match entry {
            Entry::Always(ret) => {
                asm.ret(*ret);
                return;
            }
            Entry::When(ret, alternatives) => {
                for checks in alternatives {
                    let fail = asm.label();
                    for check in checks {
                        test(asm, check, fail);
                    }
                    asm.ret(*ret);
                    asm.bind(fail);
                }
            }
        }
    }
    asm.ret(SECCOMP_RET_ALLOW);
}

/// The halves of argument `check.index` to compare, low first, with the low and high 32 bits
/// of `value`; a `dword` check compares the low half only.
fn halves(check: &ArgCheck, value: u64) -> Vec<(u32, u32)> {
    let low = OFFSET_ARGS + 8 * u32::from(check.index);
    let mut halves = vec![(low, value as u32)];
    if !check.dword {
        halves.push((low + 4, (value >> 32) as u32));
    }
    halves
}

/// Falls through when `check` holds, jumps to `fail` when it does not.
fn test(asm: &mut Asm, check: &ArgCheck, fail: Label) {
    match check.test {
        ArgTest::Equals(value) => {
            for (offset, half) in halves(check, value) {
                asm.load(offset);
                asm.jump(JEQ, half, Target::Next, Target::To(fail));
            }
        }
        ArgTest::MaskedEquals { mask, value } => {
            let masks = halves(check, mask);
            for ((offset, half), (_, mask)) in halves(check, value & mask).into_iter().zip(masks) {
                asm.load(offset);
                asm.stmt(AND_K, mask);
                asm.jump(JEQ, half, Target::Next, Target::To(fail));
            }
        }
        ArgTest::NotEquals(value) => {
            // Holds when any half differs.
            let holds = asm.label();
            let halves = halves(check, value);
            let last = halves.len() - 1;
            for (i, (offset, half)) in halves.into_iter().enumerate() {
                asm.load(offset);
                let equal = if i == last {
                    Target::To(fail)
                } else {
                    Target::Next
                };
                asm.jump(JEQ, half, equal, Target::To(holds));
            }
            asm.bind(holds);
        }
        ArgTest::AnyBits(mask) => {
            // Holds when any half has one of its bits.
            let holds = asm.label();
            for (offset, bits) in halves(check, mask) {
                if bits != 0 {
                    asm.load(offset);
                    asm.jump(JSET, bits, Target::To(holds), Target::Next);
                }
            }
            asm.goto(fail);
            asm.bind(holds);
        }
    }
}
