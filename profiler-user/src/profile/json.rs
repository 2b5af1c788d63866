//! The stable JSON form of a [`Profile`], schema `flamewarden.profile/v1`.
//!
//! Documented in `docs/profile-json.md`, pinned by `docs/profile.schema.json` (a test validates
//! our output against it). The wire types here are separate from the model so that a change to
//! the model cannot silently change the format.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{Completeness, Frame, Profile, ProfileMeta, Stack};

/// The `schema` value of every document this module writes and the only one it reads.
pub const SCHEMA_ID: &str = "flamewarden.profile/v1";

/// Why a JSON document is not a valid `flamewarden.profile/v1` profile.
#[derive(Debug, Error)]
pub enum JsonError {
    /// The text is not JSON, or a field is missing or has the wrong type.
    #[error("invalid profile JSON at line {line}, column {column}: {source}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        #[source]
        source: serde_json::Error,
    },
    /// The `schema` field is missing or names another format (or version).
    #[error("profile JSON has schema {found:?}, expected \"{SCHEMA_ID}\"")]
    WrongSchema {
        /// The value found, or `None` when the field is missing.
        found: Option<String>,
    },
    /// A stack refers to a frame that is not in `frames`.
    #[error(
        "profile JSON stacks[{stack}].frames[{position}] is {index}, but there are only {frames} frames"
    )]
    FrameIndexOutOfRange {
        /// Index of the stack in `stacks`.
        stack: usize,
        /// Position of the bad index in that stack's `frames`.
        position: usize,
        /// The index found.
        index: u32,
        /// How many frames the document has.
        frames: usize,
    },
    /// `total_weight` is not the sum of the stacks' weights (or that sum overflows).
    #[error("profile JSON total_weight is {declared}, but the stacks' weights sum to {actual:?}")]
    TotalWeightMismatch {
        /// The `total_weight` field.
        declared: u64,
        /// The sum of `stacks[].weight`, `None` when it does not fit in 64 bits.
        actual: Option<u64>,
    },
}

impl From<serde_json::Error> for JsonError {
    fn from(source: serde_json::Error) -> Self {
        Self::Syntax {
            line: source.line(),
            column: source.column(),
            source,
        }
    }
}

#[derive(Serialize)]
struct DocumentOut<'a> {
    schema: &'static str,
    meta: &'a ProfileMeta,
    completeness: CompletenessOut<'a>,
    frames: &'a [Frame],
    stacks: &'a [Stack],
    total_weight: u64,
}

/// Completeness plus the two derived values, so readers need not know how they are computed.
#[derive(Serialize)]
struct CompletenessOut<'a> {
    #[serde(flatten)]
    counts: &'a Completeness,
    samples_lost: u64,
    unsymbolized_pct: f64,
}

/// Unknown members are ignored, so that a reader of v1 keeps working on documents that later
/// tools annotate; the derived `samples_lost` and `unsymbolized_pct` are recomputed, not read.
#[derive(Deserialize)]
struct DocumentIn {
    schema: Option<IgnoredOr<String>>,
    meta: ProfileMeta,
    completeness: Completeness,
    frames: Vec<Frame>,
    stacks: Vec<Stack>,
    total_weight: u64,
}

/// Only the `schema` member; the rest of the document is skipped without being built.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<IgnoredOr<String>>,
}

/// A `schema` value that is not a string still deserializes, so the error can say "wrong
/// schema" instead of pointing at a type mismatch.
#[derive(Deserialize)]
#[serde(untagged)]
enum IgnoredOr<T> {
    Value(T),
    Other(IgnoredAny),
}

/// `profile` as pretty-printed `flamewarden.profile/v1` JSON.
pub fn to_json_string(profile: &Profile) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail; see `write_json` for why serialization cannot either.
    write_json(profile, &mut out).expect("a profile always serializes to JSON");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes `profile` as pretty-printed `flamewarden.profile/v1` JSON to `writer`, without
/// building the whole text first (a 100 000-stack profile is tens of MB of it).
pub fn write_json(profile: &Profile, writer: impl std::io::Write) -> std::io::Result<()> {
    let document = DocumentOut {
        schema: SCHEMA_ID,
        meta: &profile.meta,
        completeness: CompletenessOut {
            counts: &profile.completeness,
            samples_lost: profile.completeness.samples_lost(),
            unsymbolized_pct: profile.completeness.unsymbolized_pct(),
        },
        frames: &profile.frames,
        stacks: &profile.stacks,
        total_weight: profile.total_weight(),
    };
    // Every field is a string, integer, bool or finite float (unsymbolized_pct divides by a
    // non-zero count), and maps have string keys: only the writer can fail.
    serde_json::to_writer_pretty(writer, &document).map_err(std::io::Error::from)
}

/// Reads a `flamewarden.profile/v1` document, checking its schema id, that every frame index
/// is in range and that `total_weight` adds up.
pub fn from_json_str(text: &str) -> Result<Profile, JsonError> {
    let document: DocumentIn = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(error) => {
            // A document of another version gets "wrong schema", not an error about whatever
            // field changed shape: only then is the text read a second time.
            let probe: SchemaProbe = serde_json::from_str(text)?;
            check_schema(probe.schema)?;
            return Err(error.into());
        }
    };
    check_schema(document.schema)?;
    let frame_count = document.frames.len();
    for (stack_index, stack) in document.stacks.iter().enumerate() {
        if let Some((position, &index)) = stack
            .frames
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= frame_count)
        {
            return Err(JsonError::FrameIndexOutOfRange {
                stack: stack_index,
                position,
                index,
                frames: frame_count,
            });
        }
    }
    let actual = document
        .stacks
        .iter()
        .try_fold(0u64, |sum, stack| sum.checked_add(stack.weight));
    if actual != Some(document.total_weight) {
        return Err(JsonError::TotalWeightMismatch {
            declared: document.total_weight,
            actual,
        });
    }

    Ok(Profile::from_parts(
        document.meta,
        document.frames,
        document.stacks,
        document.completeness,
    ))
}

fn check_schema(schema: Option<IgnoredOr<String>>) -> Result<(), JsonError> {
    match schema {
        Some(IgnoredOr::Value(id)) if id == SCHEMA_ID => Ok(()),
        Some(IgnoredOr::Value(id)) => Err(JsonError::WrongSchema { found: Some(id) }),
        Some(IgnoredOr::Other(_)) => Err(JsonError::WrongSchema {
            found: Some("(not a string)".into()),
        }),
        None => Err(JsonError::WrongSchema { found: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{FrameKind, WeightUnit};

    const SCHEMA: &str = include_str!("../../../docs/profile.schema.json");

    fn sample() -> Profile {
        let mut p = Profile::new(ProfileMeta {
            target: "command".into(),
            command: Some(vec!["./solution".into(), "--fast".into()]),
            frequency_hz: 99,
            duration_ms: 1234,
            started_at_unix_ms: 1_700_000_000_000,
            weight_unit: WeightUnit::Samples,
        });
        let mut main = Frame::function("main", FrameKind::User);
        main.module = Some("/tmp/solution".into());
        main.file = Some("main.rs".into());
        main.line = Some(12);
        let main = p.intern(main);
        let unknown = p.intern(Frame::unknown(
            FrameKind::User,
            Some("/lib/libc.so.6"),
            0x42,
        ));
        let read = p.intern(Frame::function("vfs_read", FrameKind::Kernel));
        for (frames, weight) in [(vec![main, unknown, read], 7), (vec![main], 3)] {
            p.add_stack(Stack {
                comm: "solution".into(),
                tgid: 4242,
                cgroup_id: 9,
                frames,
                weight,
            });
        }
        p.completeness = Completeness {
            samples_taken: 11,
            lost_user_stack: 1,
            frames_total: 24,
            frames_unsymbolized: 7,
            ..Completeness::default()
        };
        p
    }

    fn validator() -> jsonschema::Validator {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        jsonschema::meta::validate(&schema).expect("the schema is valid draft 2020-12");
        jsonschema::draft202012::new(&schema).unwrap()
    }

    #[test]
    fn output_validates_against_the_published_schema() {
        let text = to_json_string(&sample());
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let validator = validator();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{text}");
    }

    #[test]
    fn schema_rejects_a_document_missing_a_field() {
        let mut document: serde_json::Value =
            serde_json::from_str(&to_json_string(&sample())).unwrap();
        document["stacks"][0]
            .as_object_mut()
            .unwrap()
            .remove("weight");
        assert!(!validator().is_valid(&document));
    }

    #[test]
    fn round_trips_and_writes_derived_completeness() {
        let profile = sample();
        let text = to_json_string(&profile);
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(document["schema"], SCHEMA_ID);
        assert_eq!(document["total_weight"], 10);
        assert_eq!(document["completeness"]["samples_lost"], 1);
        assert_eq!(
            document["completeness"]["unsymbolized_pct"],
            7.0 * 100.0 / 24.0
        );
        assert_eq!(
            document["stacks"][0]["frames"],
            serde_json::json!([0, 1, 2])
        );
        assert_eq!(document["frames"][2]["kind"], "kernel");

        let mut back = from_json_str(&text).unwrap();
        assert_eq!(back, profile);
        // The frame index is rebuilt: interning a known frame returns its id.
        assert_eq!(
            back.intern(Frame::function("vfs_read", FrameKind::Kernel)),
            2
        );
    }

    #[test]
    fn documented_example_is_valid_and_readable() {
        let doc = include_str!("../../../docs/profile-json.md");
        let start = doc.find("```json\n").expect("the doc has a JSON example") + 8;
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let value: serde_json::Value = serde_json::from_str(example).unwrap();
        assert!(validator().is_valid(&value));
        assert_eq!(from_json_str(example).unwrap(), sample());
    }

    #[test]
    fn rejects_another_schema() {
        let text = to_json_string(&sample()).replace(SCHEMA_ID, "flamewarden.profile/v2");
        let err = from_json_str(&text).unwrap_err();
        assert!(
            matches!(&err, JsonError::WrongSchema { found: Some(s) } if s == "flamewarden.profile/v2"),
            "{err}"
        );
        assert!(matches!(
            from_json_str(r#"{"meta": {}}"#),
            Err(JsonError::WrongSchema { found: None })
        ));
    }

    #[test]
    fn rejects_out_of_range_frame_index() {
        let mut document: serde_json::Value =
            serde_json::from_str(&to_json_string(&sample())).unwrap();
        document["stacks"][1]["frames"] = serde_json::json!([0, 3]);
        let err = from_json_str(&document.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile JSON stacks[1].frames[1] is 3, but there are only 3 frames"
        );
    }

    #[test]
    fn rejects_wrong_total_weight() {
        let text =
            to_json_string(&sample()).replace("\"total_weight\": 10", "\"total_weight\": 11");
        assert!(matches!(
            from_json_str(&text),
            Err(JsonError::TotalWeightMismatch {
                declared: 11,
                actual: Some(10)
            })
        ));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = to_json_string(&sample()).replace("\"tgid\": 4242", "\"tgid\": -1");
        match from_json_str(&text).unwrap_err() {
            JsonError::Syntax { line, column, .. } => {
                let bad_line = text.lines().position(|l| l.contains("-1")).unwrap() + 1;
                assert_eq!(line, bad_line);
                assert!(column > 0);
            }
            other => panic!("expected a syntax error, got {other}"),
        }
    }
}
