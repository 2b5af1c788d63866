//! Brendan Gregg's folded-stack format: `comm;outer;...;leaf WEIGHT`, one line per stack.
//!
//! This is what FlameGraph's `flamegraph.pl`, inferno, speedscope and most profilers read and
//! write. Kernel frames carry the `_[k]` suffix that those tools colour differently.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};

use thiserror::Error;

use super::model::{Frame, FrameKind, Profile, Stack};

/// Suffix that marks a kernel frame in folded output (the FlameGraph/inferno convention).
pub const KERNEL_SUFFIX: &str = "_[k]";

/// One parsed folded line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedLine {
    /// Frame names root first, exactly as written: `frames[0]` is the comm, kernel frames keep
    /// their [`KERNEL_SUFFIX`].
    pub frames: Vec<String>,
    /// The line's weight (samples or nanoseconds; the format does not say which).
    pub weight: u64,
}

impl FoldedLine {
    /// The root frame: the thread's comm.
    pub fn comm(&self) -> &str {
        &self.frames[0]
    }
}

/// Why a folded file could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FoldedError {
    /// The line has no space before its weight.
    #[error("folded line {line}: no weight; expected `frame;frame;... WEIGHT`")]
    MissingWeight {
        /// 1-based line number.
        line: usize,
    },
    /// The text after the last space is not an unsigned integer.
    #[error("folded line {line}: weight `{weight}` is not an unsigned integer")]
    InvalidWeight {
        /// 1-based line number.
        line: usize,
        /// The text found where the weight should be.
        weight: String,
    },
    /// A frame name between two `;` (or at either end of the stack) is empty.
    #[error("folded line {line}: frame {position} is empty")]
    EmptyFrame {
        /// 1-based line number.
        line: usize,
        /// 1-based position of the frame in the stack (1 is the comm).
        position: usize,
    },
}

/// Writes `profile` as folded stacks, one line per [`Stack`], in the profile's stack order.
///
/// Frame names are made safe for the format once per interned frame (see
/// [`folded_frame_name`]), so writing is linear in the total number of frames.
pub fn write_folded(profile: &Profile, writer: impl Write) -> io::Result<()> {
    let names = folded_frame_names(profile);
    let mut out = BufWriter::new(writer);
    for stack in &profile.stacks {
        write_stack_line(&mut out, stack, &names)?;
    }
    out.flush()
}

/// The folded name of every interned frame, indexed by [`super::FrameId`].
pub(crate) fn folded_frame_names(profile: &Profile) -> Vec<String> {
    profile.frames.iter().map(folded_frame_name).collect()
}

/// One stack as a folded line, terminated by `\n`.
fn write_stack_line(out: &mut impl Write, stack: &Stack, names: &[String]) -> io::Result<()> {
    out.write_all(sanitize(&stack.comm).as_bytes())?;
    for &id in &stack.frames {
        out.write_all(b";")?;
        out.write_all(names[id as usize].as_bytes())?;
    }
    writeln!(out, " {}", stack.weight)
}

/// How `frame` appears in folded output: sanitized, with [`KERNEL_SUFFIX`] on kernel frames.
pub fn folded_frame_name(frame: &Frame) -> String {
    let name = sanitize(&frame.name);
    match frame.kind {
        FrameKind::Kernel => format!("{name}{KERNEL_SUFFIX}"),
        FrameKind::User | FrameKind::Synthetic => name.into_owned(),
    }
}

/// Makes a name safe for one folded field: `;` separates frames and `\n` separates lines, so
/// `;` becomes `:` (Rust's `[u8; 8]` reads fine as `[u8: 8]`) and line breaks are dropped. An
/// empty name would read back as a missing frame, so it becomes `[unknown]`.
pub fn sanitize(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("[unknown]");
    }
    if !name.contains([';', '\n', '\r']) {
        return Cow::Borrowed(name);
    }
    let cleaned: String = name
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r'))
        .map(|c| if c == ';' { ':' } else { c })
        .collect();
    if cleaned.is_empty() {
        Cow::Borrowed("[unknown]")
    } else {
        Cow::Owned(cleaned)
    }
}

/// Parses folded stacks. Blank lines are skipped; anything else must be `stack WEIGHT`.
///
/// The weight is what follows the last space, so frame names may contain spaces
/// (`[unknown] libc.so.6+0x1f00`).
pub fn parse_folded(text: &str) -> Result<Vec<FoldedLine>, FoldedError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let (stack, weight) = raw
            .trim_end()
            .rsplit_once(' ')
            .ok_or(FoldedError::MissingWeight { line })?;
        let weight = weight
            .parse::<u64>()
            .map_err(|_| FoldedError::InvalidWeight {
                line,
                weight: weight.to_owned(),
            })?;
        let frames = stack
            .split(';')
            .enumerate()
            .map(|(i, name)| {
                if name.is_empty() {
                    Err(FoldedError::EmptyFrame {
                        line,
                        position: i + 1,
                    })
                } else {
                    Ok(name.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        lines.push(FoldedLine { frames, weight });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{Frame, ProfileMeta, Stack};

    fn stack(comm: &str, frames: Vec<u32>, weight: u64) -> Stack {
        Stack {
            comm: comm.to_owned(),
            tgid: 7,
            cgroup_id: 1,
            frames,
            weight,
        }
    }

    fn folded(profile: &Profile) -> String {
        let mut out = Vec::new();
        write_folded(profile, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_comm_root_and_kernel_suffix() {
        let mut p = Profile::new(ProfileMeta::default());
        let main = p.intern(Frame::function("main", FrameKind::User));
        let read = p.intern(Frame::function("read", FrameKind::User));
        let sys = p.intern(Frame::function("ksys_read", FrameKind::Kernel));
        p.add_stack(stack("judge", vec![main, read, sys], 12));
        p.add_stack(stack("judge", vec![main], 3));
        assert_eq!(
            folded(&p),
            "judge;main;read;ksys_read_[k] 12\njudge;main 3\n"
        );
    }

    #[test]
    fn separators_inside_names_do_not_break_lines() {
        let mut p = Profile::new(ProfileMeta::default());
        let arr = p.intern(Frame::function("<[u8; 8] as Debug>::fmt", FrameKind::User));
        let nl = p.intern(Frame::function("multi\nline\r\nname", FrameKind::User));
        p.add_stack(stack("a;b\n", vec![arr, nl], 1));
        let text = folded(&p);
        assert_eq!(text, "a:b;<[u8: 8] as Debug>::fmt;multilinename 1\n");
        let parsed = parse_folded(&text).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].frames.len(), 3);
    }

    #[test]
    fn round_trips_through_parse() {
        let mut p = Profile::new(ProfileMeta::default());
        let off = p.intern(Frame::off_cpu());
        let unknown = p.intern(Frame::unknown(
            FrameKind::User,
            Some("/lib/libc.so.6"),
            0x1f00,
        ));
        let sched = p.intern(Frame::function("schedule", FrameKind::Kernel));
        p.add_stack(stack("worker 1", vec![off, unknown, sched], 1_500_000));
        p.add_stack(stack("worker 1", vec![], 2));
        let parsed = parse_folded(&folded(&p)).unwrap();
        assert_eq!(
            parsed,
            vec![
                FoldedLine {
                    frames: vec![
                        "worker 1".into(),
                        "[off-cpu]".into(),
                        "[unknown] libc.so.6+0x1f00".into(),
                        "schedule_[k]".into(),
                    ],
                    weight: 1_500_000,
                },
                FoldedLine {
                    frames: vec!["worker 1".into()],
                    weight: 2,
                },
            ]
        );
        assert_eq!(parsed[0].comm(), "worker 1");
    }

    #[test]
    fn skips_blank_lines_and_names_the_bad_line() {
        let parsed = parse_folded("\na;b 1\n\n").unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parse_folded("a;b 1\na;b\n"),
            Err(FoldedError::MissingWeight { line: 2 })
        );
        assert_eq!(
            parse_folded("a;b 1\n\na;b x1\n"),
            Err(FoldedError::InvalidWeight {
                line: 3,
                weight: "x1".into()
            })
        );
        assert_eq!(
            parse_folded("a;;b 4"),
            Err(FoldedError::EmptyFrame {
                line: 1,
                position: 2
            })
        );
        assert_eq!(
            FoldedError::InvalidWeight {
                line: 3,
                weight: "-1".into()
            }
            .to_string(),
            "folded line 3: weight `-1` is not an unsigned integer"
        );
    }

    #[test]
    fn empty_names_stay_visible() {
        assert_eq!(sanitize(""), "[unknown]");
        assert_eq!(sanitize("\n"), "[unknown]");
        assert!(matches!(sanitize("plain"), Cow::Borrowed("plain")));
    }
}
