//! Flamegraph SVGs, rendered by inferno.
//!
//! Colours are chosen here, not by inferno's palettes, because a frame's colour depends on
//! where it sits: inferno colours by name alone, and its only name-based rule is `_[k]` for
//! kernel frames. Each drawn frame gets a name with an inferno annotation suffix that says its
//! category (inferno hides the suffix in labels and tooltips), and a [`PaletteMap`] gives each
//! of those names its colour:
//!
//! | category | suffix | colour |
//! |---|---|---|
//! | user frame (and the comm root) | none | red–orange ("hot") |
//! | kernel frame | `_[k]` | amber |
//! | other synthetic frame | none | grey |
//! | `[off-cpu]` and every frame above it, user | `_[w]` | blue ("io") |
//! | `[off-cpu]` and every frame above it, kernel | `_[j]` | teal |
//!
//! Shades come from a hash of the function name, so a function has the same colour in every
//! graph.

use std::io::{self, Write};

use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self, Direction, Options};
use thiserror::Error;

use super::diff::normalize_function_name;
use super::flame_tree::{FlameTree, NameTable};
use super::folded::{folded_frame_name, folded_frame_names, sanitize};
use super::model::{Frame, FrameKind, Profile, Stack, WeightUnit};
use super::report::completeness_line;

/// Annotation of user and synthetic frames drawn in the off-CPU palette.
const OFF_CPU_USER_SUFFIX: &str = "_[w]";
/// Annotation of kernel frames drawn in the off-CPU palette.
const OFF_CPU_KERNEL_SUFFIX: &str = "_[j]";

/// How to draw a flamegraph.
#[derive(Clone, Debug, PartialEq)]
pub struct SvgOptions {
    /// The title; empty gives `flamewarden: <target>` from [`super::ProfileMeta::target`]
    /// (for a diff, `flamewarden diff: <base target> → <new target>`).
    pub title: String,
    /// Width in pixels; `None` makes the SVG fill the browser window.
    pub width: Option<usize>,
    /// Frames narrower than this percentage of the graph are left out: it keeps the SVG of a
    /// 100 000-stack profile small without hiding anything one could read.
    pub min_width_pct: f64,
    /// Draw an icicle graph (roots at the top) instead of a flame graph.
    pub inverted: bool,
    /// Differential graphs only: scale the base profile to the new profile's total weight, so
    /// that a longer or busier run does not turn every frame red.
    pub normalize_diff: bool,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            title: String::new(),
            width: None,
            min_width_pct: 0.01,
            inverted: false,
            normalize_diff: true,
        }
    }
}

/// Why a flamegraph could not be drawn.
#[derive(Debug, Error)]
pub enum FlamegraphError {
    /// The profile (for a diff: the new profile) has no weight: there is nothing to draw.
    #[error("nothing to draw: the profile has no samples")]
    EmptyProfile,
    /// The two profiles of a diff count different things.
    #[error("cannot diff a {base:?}-weighted profile against a {new:?}-weighted one")]
    WeightUnitMismatch {
        /// Unit of the base profile.
        base: WeightUnit,
        /// Unit of the new profile.
        new: WeightUnit,
    },
    /// inferno failed, or writing the SVG failed.
    #[error("failed to write flamegraph SVG: {0}")]
    Io(#[from] io::Error),
}

/// Draws `profile` as an interactive flamegraph SVG, with the completeness line as subtitle.
///
/// Kernel frames and off-CPU stacks (those with an `[off-cpu]` frame) have their own colours,
/// see the module documentation.
pub fn write_svg(
    profile: &Profile,
    opts: &SvgOptions,
    writer: impl Write,
) -> Result<(), FlamegraphError> {
    if profile.total_weight() == 0 {
        return Err(FlamegraphError::EmptyProfile);
    }
    let mut palette = PaletteMap::default();
    let lines = coloured_lines(profile, &mut palette, opts.min_width_pct);

    let mut options = base_options(opts, profile.meta.weight_unit);
    options.title = if opts.title.is_empty() {
        default_title(&profile.meta.target)
    } else {
        opts.title.clone()
    };
    options.subtitle = Some(completeness_line(
        &profile.completeness,
        profile.meta.weight_unit,
    ));
    options.palette_map = Some(&mut palette);
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), writer)?;
    Ok(())
}

/// Draws how `new` differs from `base`: frames are as wide as in `new`, red where `new` spends
/// more weight than `base`, blue where it spends less (Brendan Gregg's differential
/// flamegraph, inferno's differential folding and colouring).
pub fn write_diff_svg(
    base: &Profile,
    new: &Profile,
    opts: &SvgOptions,
    writer: impl Write,
) -> Result<(), FlamegraphError> {
    diff_svg(base, new, opts, writer, folded_frame_name)
}

/// [`write_diff_svg`] with every function name normalized
/// ([`super::diff::normalize_function_name`]) so that rebuilt binaries line up: the same as
/// drawing [`super::diff::normalized_profile`]s, without building them.
pub fn write_normalized_diff_svg(
    base: &Profile,
    new: &Profile,
    opts: &SvgOptions,
    writer: impl Write,
) -> Result<(), FlamegraphError> {
    diff_svg(base, new, opts, writer, |frame| {
        folded_frame_name(&Frame {
            name: normalize_function_name(&frame.name),
            kind: frame.kind,
            module: None,
            file: None,
            line: None,
            symbolized: frame.symbolized,
        })
    })
}

fn diff_svg(
    base: &Profile,
    new: &Profile,
    opts: &SvgOptions,
    writer: impl Write,
    name_of: impl Fn(&Frame) -> String,
) -> Result<(), FlamegraphError> {
    let unit = new.meta.weight_unit;
    if base.meta.weight_unit != unit {
        return Err(FlamegraphError::WeightUnitMismatch {
            base: base.meta.weight_unit,
            new: unit,
        });
    }
    if new.total_weight() == 0 {
        return Err(FlamegraphError::EmptyProfile);
    }
    // Stacks of both profiles by their folded text, as inferno's differential folding does.
    let mut names = NameTable::default();
    let ids: [Vec<u32>; 2] = [base, new].map(|profile| {
        profile
            .frames
            .iter()
            .map(|frame| names.intern(&name_of(frame)))
            .collect()
    });
    let comms: [Vec<u32>; 2] = [base, new].map(|profile| {
        profile
            .stacks
            .iter()
            .map(|stack| names.intern(&sanitize(&stack.comm)))
            .collect()
    });
    let mut tree = FlameTree::new(names);
    for (column, profile) in [base, new].into_iter().enumerate() {
        for (stack, &comm) in profile.stacks.iter().zip(&comms[column]) {
            let frames = stack.frames.iter().map(|&id| ids[column][id as usize]);
            tree.add(std::iter::once(comm).chain(frames), column, stack.weight);
        }
    }
    if opts.normalize_diff {
        tree.normalize_base();
    }
    let lines = tree.lines(opts.min_width_pct, true);

    let mut options = base_options(opts, unit);
    options.title = if opts.title.is_empty() {
        format!(
            "flamewarden diff: {} → {}",
            target_or_default(&base.meta.target),
            target_or_default(&new.meta.target)
        )
    } else {
        opts.title.clone()
    };
    options.subtitle = Some(format!(
        "red: more in new, blue: less in new; new {}",
        completeness_line(&new.completeness, unit)
    ));
    // The base profile's completeness matters as much; the notes end up in an SVG comment.
    options.notes = format!("base {}", completeness_line(&base.completeness, unit));
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), writer)?;
    Ok(())
}

fn base_options<'a>(opts: &SvgOptions, unit: WeightUnit) -> Options<'a> {
    let mut options = Options::default();
    options.image_width = opts.width;
    options.min_width = opts.min_width_pct;
    options.direction = if opts.inverted {
        Direction::Inverted
    } else {
        Direction::Straight
    };
    // Only the `all` root misses the palette map; deterministic keeps the SVG reproducible.
    options.deterministic = true;
    match unit {
        WeightUnit::Samples => options.count_name = "samples".into(),
        WeightUnit::Nanoseconds => {
            // inferno rounds counts to integers: microseconds keep sub-millisecond frames
            // readable while staying short.
            options.count_name = "µs".into();
            options.factor = 0.001;
        }
    }
    options
}

fn target_or_default(target: &str) -> &str {
    if target.is_empty() { "profile" } else { target }
}

fn default_title(target: &str) -> String {
    format!("flamewarden: {}", target_or_default(target))
}

/// Folded lines with category suffixes (merged by [`FlameTree`] down to what is wide enough
/// to draw), and the colour of every name they use.
fn coloured_lines(profile: &Profile, palette: &mut PaletteMap, min_width_pct: f64) -> Vec<String> {
    // Names and colours are worked out once per interned frame; the per-stack loop only
    // follows ids.
    let on_cpu = folded_frame_names(profile);
    let off_cpu: Vec<String> = profile
        .frames
        .iter()
        .map(|frame| {
            let suffix = match frame.kind {
                FrameKind::Kernel => OFF_CPU_KERNEL_SUFFIX,
                FrameKind::User | FrameKind::Synthetic => OFF_CPU_USER_SUFFIX,
            };
            format!("{}{suffix}", sanitize(&frame.name))
        })
        .collect();
    let marker: Vec<bool> = profile
        .frames
        .iter()
        .map(Frame::is_off_cpu_marker)
        .collect();
    let mut names = NameTable::default();
    let mut on_ids = Vec::with_capacity(on_cpu.len());
    let mut off_ids = Vec::with_capacity(off_cpu.len());
    for (frame, (on, off)) in profile.frames.iter().zip(on_cpu.iter().zip(&off_cpu)) {
        let (on_colour, off_colour) = colours(frame);
        palette.insert(on, on_colour);
        palette.insert(off, off_colour);
        on_ids.push(names.intern(on));
        off_ids.push(names.intern(off));
    }
    let mut comm_ids: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let drawn: Vec<(&Stack, u32)> = profile
        .stacks
        .iter()
        .filter(|s| s.weight > 0)
        .map(|stack| {
            let comm = *comm_ids.entry(stack.comm.as_str()).or_insert_with(|| {
                let comm = sanitize(&stack.comm);
                if palette.get(&comm).is_none() {
                    palette.insert(&comm, hot(&comm));
                }
                names.intern(&comm)
            });
            (stack, comm)
        })
        .collect();
    let mut tree = FlameTree::new(names);
    for (stack, comm) in drawn {
        let mut above_marker = false;
        let frames = stack.frames.iter().map(|&id| {
            above_marker |= marker[id as usize];
            if above_marker {
                off_ids[id as usize]
            } else {
                on_ids[id as usize]
            }
        });
        tree.add(std::iter::once(comm).chain(frames), 1, stack.weight);
    }
    tree.lines(min_width_pct, false)
}

/// The frame's colour on CPU and in an off-CPU stack.
fn colours(frame: &Frame) -> (Color, Color) {
    let (v1, v2) = name_hash(&frame.name);
    let off_cpu_user = Color {
        r: 80 + (60.0 * v1) as u8,
        g: 80 + (60.0 * v1) as u8,
        b: 190 + (55.0 * v2) as u8,
    };
    match frame.kind {
        FrameKind::User => (hot(&frame.name), off_cpu_user),
        FrameKind::Kernel => (
            Color {
                r: 235 + (20.0 * v2) as u8,
                g: 160 + (45.0 * v1) as u8,
                b: (30.0 * v2) as u8,
            },
            Color {
                r: 50 + (60.0 * v1) as u8,
                g: 165 + (55.0 * v1) as u8,
                b: 165 + (55.0 * v2) as u8,
            },
        ),
        FrameKind::Synthetic => {
            let grey = 170 + (40.0 * v1) as u8;
            (
                Color {
                    r: grey,
                    g: grey,
                    b: grey,
                },
                off_cpu_user,
            )
        }
    }
}

/// inferno's "hot" palette with the green channel capped, so user frames stay red–orange and
/// never reach the amber of kernel frames.
fn hot(name: &str) -> Color {
    let (v1, v2) = name_hash(name);
    Color {
        r: 205 + (50.0 * v2) as u8,
        g: (140.0 * v1) as u8,
        b: (55.0 * v2) as u8,
    }
}

/// Two values in `[0, 1]` from an FNV-1a hash of `name`: stable across runs and machines.
fn name_hash(name: &str) -> (f32, f32) {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let v1 = (hash & 0xffff) as f32 / 65535.0;
    let v2 = ((hash >> 16) & 0xffff) as f32 / 65535.0;
    (v1, v2)
}

#[cfg(test)]
mod tests {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    use super::*;
    use crate::profile::model::{ProfileMeta, Stack};

    fn profile(unit: WeightUnit, weights: [u64; 3]) -> Profile {
        let mut p = Profile::new(ProfileMeta {
            target: "pid 42".into(),
            weight_unit: unit,
            ..ProfileMeta::default()
        });
        let main = p.intern(Frame::function("main", FrameKind::User));
        let hot = p.intern(Frame::function("<Vec<u8> as Drop>::drop", FrameKind::User));
        let read = p.intern(Frame::function("vfs_read", FrameKind::Kernel));
        let off = p.intern(Frame::off_cpu());
        let wait = p.intern(Frame::function("futex_wait", FrameKind::User));
        let sched = p.intern(Frame::function("schedule", FrameKind::Kernel));
        for (frames, weight) in [
            (vec![main, hot], weights[0]),
            (vec![main, read], weights[1]),
            (vec![off, wait, sched], weights[2]),
        ] {
            p.add_stack(Stack {
                comm: "judge".into(),
                tgid: 42,
                cgroup_id: 1,
                frames,
                weight,
            });
        }
        p
    }

    fn render(profile: &Profile) -> String {
        let mut out = Vec::new();
        write_svg(profile, &SvgOptions::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Parses the whole SVG (failing on malformed XML) and returns each frame's tooltip with its
    /// fill colour as (r, g, b).
    fn frames(svg: &str) -> Vec<(String, (u8, u8, u8))> {
        let mut reader = Reader::from_str(svg);
        let mut frames = Vec::new();
        let (mut in_title, mut title) = (false, String::new());
        loop {
            match reader.read_event().expect("SVG is well-formed XML") {
                Event::Eof => break,
                Event::Start(e) if e.name().as_ref() == b"title" => {
                    in_title = true;
                    title.clear();
                }
                Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
                Event::Text(t) if in_title => title.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) if in_title => {
                    let entity = r.decode().unwrap();
                    title.push_str(match entity.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    });
                }
                Event::Empty(e) if e.name().as_ref() == b"rect" => {
                    if let Some(fill) = e.try_get_attribute("fill").unwrap() {
                        let fill = String::from_utf8(fill.value.to_vec()).unwrap();
                        if let Some(rgb) =
                            fill.strip_prefix("rgb(").and_then(|f| f.strip_suffix(')'))
                        {
                            let c: Vec<u8> = rgb.split(',').map(|v| v.parse().unwrap()).collect();
                            frames.push((title.clone(), (c[0], c[1], c[2])));
                        }
                    }
                }
                _ => {}
            }
        }
        frames
    }

    fn fill_of(frames: &[(String, (u8, u8, u8))], name: &str) -> (u8, u8, u8) {
        frames
            .iter()
            .find(|(title, _)| title.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("no frame {name} in {frames:#?}"))
            .1
    }

    #[test]
    fn svg_is_xml_and_names_the_hot_function() {
        let mut p = profile(WeightUnit::Samples, [70, 20, 10]);
        p.completeness.samples_taken = 100;
        let svg = render(&p);
        let frames = frames(&svg);
        assert!(svg.contains("flamewarden: pid 42"));
        assert!(svg.contains("completeness: 100 samples taken"));
        let hot = fill_of(&frames, "<Vec<u8> as Drop>::drop");
        assert!(
            hot.0 >= 205 && hot.2 <= 55,
            "user frames are red-orange: {hot:?}"
        );
        let title = &frames
            .iter()
            .find(|(t, _)| t.starts_with("<Vec"))
            .unwrap()
            .0;
        assert!(title.contains("70 samples, 70.00%"), "{title}");
    }

    #[test]
    fn kernel_and_off_cpu_frames_have_their_own_colours() {
        let frames = frames(&render(&profile(WeightUnit::Samples, [70, 20, 10])));
        let user = fill_of(&frames, "main");
        let kernel = fill_of(&frames, "vfs_read");
        assert_ne!(user, kernel);
        assert!(kernel.1 >= 160, "kernel frames are amber: {kernel:?}");
        for name in ["[off-cpu]", "futex_wait", "schedule"] {
            let (r, g, b) = fill_of(&frames, name);
            assert!(b > r && b > g, "{name} is drawn blue: {:?}", (r, g, b));
        }
        // The kernel suffix is an annotation inferno hides, not part of the label.
        assert!(frames.iter().all(|(t, _)| !t.contains("_[")));
    }

    #[test]
    fn nanosecond_profiles_count_microseconds() {
        let svg = render(&profile(
            WeightUnit::Nanoseconds,
            [7_000_000, 2_000_000, 1_000_000],
        ));
        let frames = frames(&svg);
        let title = &frames
            .iter()
            .find(|(t, _)| t.starts_with("main"))
            .unwrap()
            .0;
        assert!(title.contains("9,000 µs"), "{title}");
    }

    #[test]
    fn empty_profile_is_an_error_not_an_svg() {
        let p = profile(WeightUnit::Samples, [0, 0, 0]);
        let err = write_svg(&p, &SvgOptions::default(), Vec::new()).unwrap_err();
        assert!(matches!(err, FlamegraphError::EmptyProfile));
    }

    #[test]
    fn diff_is_red_where_new_grew_and_blue_where_it_shrank() {
        let base = profile(WeightUnit::Samples, [50, 40, 10]);
        let new = profile(WeightUnit::Samples, [80, 10, 10]);
        let mut out = Vec::new();
        write_diff_svg(&base, &new, &SvgOptions::default(), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        let frames = frames(&svg);
        let grew = fill_of(&frames, "<Vec<u8> as Drop>::drop");
        let shrank = fill_of(&frames, "vfs_read");
        assert!(
            grew.0 == 255 && grew.2 < 255,
            "grown frame is red: {grew:?}"
        );
        assert!(
            shrank.2 == 255 && shrank.0 < 255,
            "shrunk frame is blue: {shrank:?}"
        );
        assert!(svg.contains("red: more in new"));
    }

    #[test]
    fn diff_refuses_mixed_units() {
        let base = profile(WeightUnit::Samples, [1, 1, 1]);
        let new = profile(WeightUnit::Nanoseconds, [1, 1, 1]);
        let err = write_diff_svg(&base, &new, &SvgOptions::default(), Vec::new()).unwrap_err();
        assert!(matches!(err, FlamegraphError::WeightUnitMismatch { .. }));
    }
}
