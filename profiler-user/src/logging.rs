//! Logging through `tracing`: human-readable lines, or one JSON object per line for log
//! collectors (journald, Loki, Elasticsearch) with `--log-format json`.
//!
//! A JSON line has `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, the event's other
//! fields by name, and `spans` (outermost first) when the event happened inside spans.

use std::{fmt, io};

use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    registry::LookupSpan,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter is not in tracing's env-filter syntax.
    #[error("--log {filter:?}: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it was refused.
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber: events passing `filter` go to stderr in `format`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), LoggingError> {
    let env_filter = parse_filter(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
    Ok(())
}

fn parse_filter(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })
}

/// A subscriber writing JSON lines to `writer`, for tests and embedders.
pub fn json_subscriber<W>(
    filter: &str,
    writer: W,
) -> Result<impl Subscriber + Send + Sync, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    Ok(tracing_subscriber::fmt()
        .with_env_filter(parse_filter(filter)?)
        .with_writer(writer)
        .event_format(JsonLines)
        .finish())
}

/// The JSON event format: one object per line.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("target".into(), Value::String(meta.target().into()));
        let message = fields
            .0
            .remove("message")
            .unwrap_or_else(|| Value::String(String::new()));
        line.insert("message".into(), message);
        for (name, value) in fields.0 {
            // A field may not hide the line's own keys.
            let key = if line.contains_key(&name) {
                format!("field.{name}")
            } else {
                name
            };
            line.insert(key, value);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| Value::String(span.name().into()))
                .collect();
            line.insert("spans".into(), Value::Array(spans));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values, numbers and booleans kept as such.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl tracing::field::Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().into(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` is `format_args!`, whose Debug is the formatted text.
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_are_one_object_each_with_level_message_and_fields() {
        let buffer = Buffer::default();
        let subscriber = json_subscriber("info", buffer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reload");
            let _entered = span.enter();
            tracing::info!(
                sandboxes = 3_u64,
                enforce = true,
                "listening on \"x\"\nnext"
            );
            tracing::warn!(level = "shadowed", "second");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "listening on \"x\"\nnext");
        assert_eq!(lines[0]["sandboxes"], 3);
        assert_eq!(lines[0]["enforce"], true);
        assert_eq!(lines[0]["spans"], serde_json::json!(["reload"]));
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["field.level"], "shadowed");
    }

    #[test]
    fn a_bad_filter_names_the_flag() {
        let err = init("flamewarden=notalevel", LogFormat::Json).unwrap_err();
        assert!(err.to_string().starts_with("--log"), "{err}");
    }
}
