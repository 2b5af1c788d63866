//! Checks of flamewarden's output files shared by the test binaries: the JSON against its
//! published schema, the SVG as XML.

use flamewarden_tests::{JsonProfile, Recording, workspace_root};

/// Validates the JSON output against docs/profile.schema.json (when that file exists) and checks
/// what the schema cannot: indices in range, weights adding up, folded and JSON agreeing.
pub fn assert_json_is_valid(recording: &Recording) -> JsonProfile {
    let text = recording.output_text("json");
    let document: serde_json::Value = serde_json::from_str(&text).expect("the JSON output parses");
    let schema_path = workspace_root().join("docs/profile.schema.json");
    if let Ok(schema) = std::fs::read_to_string(&schema_path) {
        let schema: serde_json::Value = serde_json::from_str(&schema).expect("the schema parses");
        let validator =
            jsonschema::draft202012::new(&schema).expect("the schema is valid draft 2020-12");
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .take(10)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "the JSON output does not match {}:\n{errors:#?}",
            schema_path.display()
        );
    } else {
        eprintln!(
            "note: {} not found; JSON checked without the schema",
            schema_path.display()
        );
    }
    let profile = recording.json();
    assert_eq!(profile.schema, "flamewarden.profile/v1");
    let sum: u64 = profile.stacks.iter().map(|s| s.weight).sum();
    assert_eq!(
        profile.total_weight, sum,
        "total_weight is not the sum of the stacks' weights"
    );
    for stack in &profile.stacks {
        for &index in &stack.frames {
            assert!(
                (index as usize) < profile.frames.len(),
                "frame index {index} out of range"
            );
        }
    }
    assert_eq!(
        profile.total_weight,
        recording.folded().total(),
        "the JSON and folded outputs disagree on the total"
    );
    profile
}

/// Checks that the SVG is well-formed XML with an `<svg>` root, and returns the text of its
/// `<title>` elements (one per flamegraph box: `function (N samples, P%)`).
pub fn svg_titles(svg: &str) -> Vec<String> {
    use quick_xml::{Reader, events::Event};

    let mut reader = Reader::from_str(svg);
    let mut depth = 0usize;
    let mut roots = Vec::new();
    let mut titles = Vec::new();
    let mut title: Option<String> = None;
    loop {
        let event = reader.read_event().unwrap_or_else(|e| {
            panic!(
                "the SVG is not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        });
        match event {
            Event::Eof => break,
            Event::Start(e) => {
                if depth == 0 {
                    roots.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                depth += 1;
                if e.name().as_ref() == b"title" {
                    title = Some(String::new());
                }
            }
            Event::End(e) => {
                depth = depth.checked_sub(1).expect("more end tags than start tags");
                if e.name().as_ref() == b"title" {
                    titles.extend(title.take());
                }
            }
            Event::Empty(e) if depth == 0 => {
                roots.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
            }
            Event::Text(t) => {
                if let Some(title) = &mut title {
                    title.push_str(&t.decode().expect("SVG text is UTF-8"));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(title) = &mut title {
                    let entity = r.decode().expect("SVG entity is UTF-8");
                    title.push_str(match entity.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "?",
                    });
                }
            }
            _ => {}
        }
    }
    assert_eq!(depth, 0, "the SVG ends with unclosed elements");
    assert_eq!(
        roots,
        ["svg"],
        "the SVG must have exactly one <svg> root element"
    );
    titles
}
