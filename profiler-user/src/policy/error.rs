//! Policy errors: each names the file, line, column and field a user has to fix.

use std::{fmt, ops::Range, path::PathBuf};

use toml::de::{DeTable, DeValue};

/// Where in a policy file something was written: `file:line:column`, 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The policy file as the user named it.
    pub file: String,
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can be wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a field that is unknown, missing or of the wrong type.
    #[error("{at}: `{field}`: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// The dotted path of the field (`limits.memory`, `syscalls.deny[1].errno`).
        field: String,
        /// What is wrong, in the parser's words.
        message: String,
    },
    /// A value of the right type that is not acceptable: a relative or missing path, a bad size
    /// or duration, an unknown syscall or errno name, a malformed network address.
    #[error("{at}: `{field}`: {message}")]
    Value {
        /// Where.
        at: Location,
        /// The dotted path of the field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Two rules that cannot both hold: a path both denied and allowed, a syscall both allowed
    /// and denied, network allowed entries together with `deny_all`.
    #[error("{0}")]
    Contradiction(Box<Contradiction>),
}

/// Two rules of a policy that cannot both hold.
#[derive(Debug, thiserror::Error)]
#[error("{at}: `{field}`: {message}; this contradicts `{other_field}` at {other}")]
pub struct Contradiction {
    /// Where the second rule is.
    pub at: Location,
    /// Its field.
    pub field: String,
    /// What conflicts.
    pub message: String,
    /// Where the first rule is.
    pub other: Location,
    /// Its field.
    pub other_field: String,
}

impl PolicyError {
    /// The location the error points at, if it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { at, .. } | Self::Value { at, .. } => Some(at),
            Self::Contradiction(contradiction) => Some(&contradiction.at),
        }
    }

    /// The field the error names, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { field, .. } | Self::Value { field, .. } => Some(field),
            Self::Contradiction(contradiction) => Some(&contradiction.field),
        }
    }
}

/// The text of a policy and its name, to turn byte spans into locations.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name used in messages.
    pub name: &'a str,
    /// The whole file.
    pub text: &'a str,
}

impl Source<'_> {
    /// The 1-based line and column of byte offset `at` (clamped into the text).
    pub fn locate(&self, at: usize) -> Location {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            file: self.name.to_owned(),
            line,
            column,
        }
    }

    /// A [`PolicyError::Value`] at `span`.
    pub fn value_error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Value {
            at: self.locate(span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Turns the deserializer's error into a [`PolicyError::Syntax`], naming the field by
    /// looking up which key or value of the document the error's span falls in.
    pub fn syntax_error(&self, error: &toml::de::Error) -> PolicyError {
        let span = error.span().unwrap_or(0..0);
        let field = DeTable::parse(self.text)
            .ok()
            .and_then(|table| field_at(table.get_ref(), &span, String::new()))
            .unwrap_or_else(|| "(top level)".to_owned());
        let message = error.message().trim().replace('\n', " ");
        PolicyError::Syntax {
            at: self.locate(span.start),
            field,
            message,
        }
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && (inner.is_empty() || !outer.is_empty())
}

/// The dotted path of the innermost key or value of `table` whose span contains `span`.
fn field_at(table: &DeTable<'_>, span: &Range<usize>, prefix: String) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if contains(&key.span(), span) {
            return Some(path);
        }
        if contains(&value.span(), span) || value.get_ref().is_table() || value.get_ref().is_array()
        {
            if let Some(inner) = value_field_at(value.get_ref(), span, &path) {
                return Some(inner);
            }
            if contains(&value.span(), span) {
                return Some(path);
            }
        }
    }
    None
}

fn value_field_at(value: &DeValue<'_>, span: &Range<usize>, path: &str) -> Option<String> {
    match value {
        DeValue::Table(table) => field_at(table, span, path.to_owned()),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(index, item)| {
            let item_path = format!("{path}[{index}]");
            value_field_at(item.get_ref(), span, &item_path)
                .or_else(|| contains(&item.span(), span).then_some(item_path))
        }),
        _ => None,
    }
}
