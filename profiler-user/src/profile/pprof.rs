//! pprof output: a [`Profile`] as gzipped `profile.proto` (what `go tool pprof` reads).
//!
//! The message types are generated from pprof's own `profile.proto` (see [`proto`]); this
//! module only fills them in. Each interned frame becomes one location with one line, each
//! distinct (name, file) one function; the comm and the pid become sample labels, so that the
//! functions pprof lists are the same as flamewarden's hot-path table.

pub mod proto;

use std::{
    collections::HashMap,
    io::{self, Read, Write},
};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use prost::Message as _;
use thiserror::Error;

use super::model::{FrameKind, Profile, WeightUnit};

/// Why a pprof file could not be read back.
#[derive(Debug, Error)]
pub enum PprofError {
    /// The file is not gzip, or reading it failed.
    #[error("failed to read gzipped pprof data: {0}")]
    Io(#[from] io::Error),
    /// The data is not a `perftools.profiles.Profile` message.
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The pprof message for `profile`.
///
/// Sample profiles carry two values per sample, `samples/count` and `cpu/nanoseconds` (samples
/// times the sampling period), with `cpu/nanoseconds` as the default; nanosecond profiles (off-CPU,
/// wall-clock) carry one, `wall/nanoseconds`.
pub fn to_pprof(profile: &Profile) -> proto::Profile {
    let mut strings = StringTable::default();
    let period_ns = match profile.meta.weight_unit {
        WeightUnit::Samples if profile.meta.frequency_hz > 0 => {
            1_000_000_000 / profile.meta.frequency_hz as i64
        }
        WeightUnit::Samples | WeightUnit::Nanoseconds => 1,
    };
    let value_type = |strings: &mut StringTable, kind: &str, unit: &str| proto::ValueType {
        r#type: strings.index(kind),
        unit: strings.index(unit),
    };
    let (sample_type, period_type) = match profile.meta.weight_unit {
        WeightUnit::Samples => (
            vec![
                value_type(&mut strings, "samples", "count"),
                value_type(&mut strings, "cpu", "nanoseconds"),
            ],
            value_type(&mut strings, "cpu", "nanoseconds"),
        ),
        WeightUnit::Nanoseconds => (
            vec![value_type(&mut strings, "wall", "nanoseconds")],
            value_type(&mut strings, "wall", "nanoseconds"),
        ),
    };

    let mut mappings: Vec<proto::Mapping> = Vec::new();
    let mut mapping_of_module: HashMap<&str, u64> = HashMap::new();
    // pprof takes mapping[0] for the main binary (its `File:` line): the profiled command's.
    let program = profile
        .meta
        .command
        .as_ref()
        .and_then(|argv| argv.first())
        .map(|p| p.rsplit('/').next().unwrap_or(p));
    let main_module = profile
        .frames
        .iter()
        .filter_map(|f| f.module.as_deref())
        .find(|m| Some(m.rsplit('/').next().unwrap_or(m)) == program);
    if let Some(module) = main_module {
        mapping_of_module.insert(module, 1);
        mappings.push(proto::Mapping {
            id: 1,
            filename: strings.index(module),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            ..Default::default()
        });
    }
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_of: HashMap<(&str, Option<&str>), u64> = HashMap::new();
    let mut locations = Vec::with_capacity(profile.frames.len());
    for (index, frame) in profile.frames.iter().enumerate() {
        let module = frame.module.as_deref().or(match frame.kind {
            FrameKind::Kernel => Some("[kernel]"),
            FrameKind::User | FrameKind::Synthetic => None,
        });
        let mapping_id = module.map_or(0, |module| {
            *mapping_of_module.entry(module).or_insert_with(|| {
                let id = mappings.len() as u64 + 1;
                mappings.push(proto::Mapping {
                    id,
                    filename: strings.index(module),
                    has_functions: true,
                    has_filenames: true,
                    has_line_numbers: true,
                    ..Default::default()
                });
                id
            })
        });
        let function_id = *function_of
            .entry((frame.name.as_str(), frame.file.as_deref()))
            .or_insert_with(|| {
                let id = functions.len() as u64 + 1;
                functions.push(proto::Function {
                    id,
                    name: strings.index(&frame.name),
                    system_name: strings.index(&frame.name),
                    filename: frame.file.as_deref().map_or(0, |f| strings.index(f)),
                    start_line: 0,
                });
                id
            });
        locations.push(proto::Location {
            id: index as u64 + 1,
            mapping_id,
            address: 0,
            line: vec![proto::Line {
                function_id,
                line: frame.line.map_or(0, i64::from),
                column: 0,
            }],
            is_folded: false,
        });
    }

    let comm_key = strings.index("comm");
    let pid_key = strings.index("pid");
    let samples = profile
        .stacks
        .iter()
        .filter(|stack| stack.weight > 0)
        .map(|stack| {
            let weight = stack.weight as i64;
            let value = match profile.meta.weight_unit {
                WeightUnit::Samples => vec![weight, weight.saturating_mul(period_ns)],
                WeightUnit::Nanoseconds => vec![weight],
            };
            proto::Sample {
                // pprof lists the leaf first; flamewarden stores the root first.
                location_id: stack
                    .frames
                    .iter()
                    .rev()
                    .map(|&id| u64::from(id) + 1)
                    .collect(),
                value,
                label: vec![
                    proto::Label {
                        key: comm_key,
                        str: strings.index(&stack.comm),
                        ..Default::default()
                    },
                    proto::Label {
                        key: pid_key,
                        num: i64::from(stack.tgid),
                        ..Default::default()
                    },
                ],
            }
        })
        .collect();

    let comment = strings.index(&format!(
        "flamewarden: {}; {}",
        profile.meta.target,
        super::report::completeness_line(&profile.completeness, profile.meta.weight_unit)
    ));
    proto::Profile {
        default_sample_type: period_type.r#type,
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        time_nanos: (profile.meta.started_at_unix_ms as i64).saturating_mul(1_000_000),
        duration_nanos: (profile.meta.duration_ms as i64).saturating_mul(1_000_000),
        period_type: Some(period_type),
        period: period_ns,
        comment: vec![comment],
        string_table: strings.strings,
        ..Default::default()
    }
}

/// Writes `profile` as gzipped pprof (`.pb.gz`).
pub fn write_pprof_gz(profile: &Profile, writer: impl Write) -> io::Result<()> {
    // Level 1: several times faster than the default on a 100 000-stack profile, for a few
    // percent more bytes.
    let mut encoder = GzEncoder::new(writer, Compression::fast());
    encoder.write_all(&to_pprof(profile).encode_to_vec())?;
    encoder.finish()?.flush()
}

/// Reads gzipped pprof back (tests, and tools that check what was written).
pub fn read_pprof_gz(reader: impl Read) -> Result<proto::Profile, PprofError> {
    let mut bytes = Vec::new();
    GzDecoder::new(reader).read_to_end(&mut bytes)?;
    Ok(proto::Profile::decode(bytes.as_slice())?)
}

/// pprof's string table: index 0 is always the empty string.
struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for StringTable {
    fn default() -> Self {
        Self {
            strings: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl StringTable {
    fn index(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{Frame, ProfileMeta, Stack};

    fn profile() -> Profile {
        let mut p = Profile::new(ProfileMeta {
            target: "command".into(),
            frequency_hz: 1000,
            weight_unit: WeightUnit::Samples,
            ..ProfileMeta::default()
        });
        let main = p.intern(Frame {
            file: Some("bench.c".into()),
            line: Some(12),
            module: Some("/tmp/bench".into()),
            ..Frame::function("main", FrameKind::User)
        });
        let hot = p.intern(Frame::function("hot", FrameKind::User));
        let read = p.intern(Frame::function("vfs_read", FrameKind::Kernel));
        for (frames, weight) in [(vec![main, hot], 70), (vec![main, read], 30)] {
            p.add_stack(Stack {
                comm: "bench".into(),
                tgid: 7,
                cgroup_id: 1,
                frames,
                weight,
            });
        }
        p
    }

    /// Self weight per function name, as pprof's `-top` computes it from the message.
    fn flat(pb: &proto::Profile, value: usize) -> HashMap<String, i64> {
        let name_of_location = |id: u64| {
            let location = pb.location.iter().find(|l| l.id == id).unwrap();
            let function = pb
                .function
                .iter()
                .find(|f| f.id == location.line[0].function_id)
                .unwrap();
            pb.string_table[function.name as usize].clone()
        };
        let mut flat = HashMap::new();
        for sample in &pb.sample {
            *flat
                .entry(name_of_location(sample.location_id[0]))
                .or_default() += sample.value[value];
        }
        flat
    }

    #[test]
    fn round_trips_through_gzip_with_leaf_first_stacks_and_cpu_nanoseconds() {
        let mut bytes = Vec::new();
        write_pprof_gz(&profile(), &mut bytes).unwrap();
        let pb = read_pprof_gz(bytes.as_slice()).unwrap();
        assert_eq!(pb.string_table[0], "");
        let types: Vec<(&str, &str)> = pb
            .sample_type
            .iter()
            .map(|t| {
                (
                    pb.string_table[t.r#type as usize].as_str(),
                    pb.string_table[t.unit as usize].as_str(),
                )
            })
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(pb.period, 1_000_000);
        let flat = flat(&pb, 1);
        assert_eq!(flat["hot"], 70_000_000);
        assert_eq!(flat["vfs_read"], 30_000_000);
        assert!(!flat.contains_key("main"));
        let main = pb
            .function
            .iter()
            .find(|f| pb.string_table[f.name as usize] == "main")
            .unwrap();
        assert_eq!(pb.string_table[main.filename as usize], "bench.c");
    }

    #[test]
    fn garbage_is_an_error_not_a_profile() {
        assert!(read_pprof_gz(&b"not gzip"[..]).is_err());
    }
}
