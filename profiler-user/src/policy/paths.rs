//! Filesystem rules: path templates, merging of rights, denied paths, and resolving the run's
//! placeholders.

use std::{
    fs,
    path::{Component, Path, PathBuf},
};

use toml::Spanned;

use super::{
    compiled::{DeniedPath, FsAccess, PathRule, PathTemplate, QuietPath},
    error::{Contradiction, PolicyError, Source},
    schema::FilesystemSection,
};

/// A path rule with its placeholders filled in for one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPath {
    /// The absolute path on this host.
    pub path: PathBuf,
    /// The rights granted beneath it.
    pub access: FsAccess,
    /// Whether it is a directory (when it was resolved).
    pub is_dir: bool,
}

/// Compiles `[filesystem]`: one rule per distinct path (rights merged), denied paths checked
/// against every allowed literal tree.
pub fn compile(
    src: &Source<'_>,
    fs_section: &FilesystemSection,
) -> Result<(Vec<PathRule>, Vec<DeniedPath>), PolicyError> {
    let read = FsAccess {
        read: true,
        ..FsAccess::default()
    };
    let write = FsAccess {
        read: true,
        write: true,
        execute: false,
    };
    let execute = FsAccess {
        read: true,
        execute: true,
        write: false,
    };
    let mut rules: Vec<PathRule> = Vec::new();
    for (list, name, access) in [
        (&fs_section.readable, "readable", read),
        (&fs_section.writable, "writable", write),
        (&fs_section.executable, "executable", execute),
    ] {
        for (index, entry) in list.iter().enumerate() {
            let field = format!("filesystem.{name}[{index}]");
            let (path, optional) = template(src, entry, &field, true)?;
            match rules.iter_mut().find(|rule| rule.path == path) {
                Some(rule) => {
                    rule.access = merge(rule.access, access);
                    rule.optional &= optional;
                }
                None => rules.push(PathRule {
                    path,
                    access,
                    optional,
                    origin: src.locate(entry.span().start),
                    field,
                }),
            }
        }
    }
    let mut denied = Vec::new();
    for (index, entry) in fs_section.denied.iter().enumerate() {
        let field = format!("filesystem.denied[{index}]");
        let path = match template(src, entry, &field, false)? {
            (PathTemplate::Literal(path), false) => path,
            _ => {
                return Err(src.value_error(
                    entry.span(),
                    field,
                    "a denied path must be a plain absolute path (no placeholder, no `?`)",
                ));
            }
        };
        denied.push(DeniedPath {
            path,
            origin: src.locate(entry.span().start),
            field,
        });
    }
    let literal: Vec<(PathBuf, &PathRule)> = rules
        .iter()
        .filter_map(|rule| match &rule.path {
            PathTemplate::Literal(path) => Some((path.clone(), rule)),
            _ => None,
        })
        .collect();
    check_denied(&denied, &literal)?;
    Ok((rules, denied))
}

/// Compiles `filesystem.quiet`: absolute paths, `/` at the end for a tree.
pub fn compile_quiet(
    src: &Source<'_>,
    fs_section: &FilesystemSection,
) -> Result<Vec<QuietPath>, PolicyError> {
    fs_section
        .quiet
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = format!("filesystem.quiet[{index}]");
            let text = entry.get_ref().as_str();
            if !text.starts_with('/') || text.contains('{') || text.ends_with('?') {
                return Err(src.value_error(
                    entry.span(),
                    field,
                    "a quiet path must be a plain absolute path (no placeholder, no `?`)",
                ));
            }
            if text.split('/').any(|part| part == "..") {
                return Err(src.value_error(entry.span(), field, "`..` in a quiet path"));
            }
            let tree = text.ends_with('/') && text.len() > 1;
            Ok(QuietPath {
                path: text.to_owned(),
                tree,
            })
        })
        .collect()
}

fn merge(a: FsAccess, b: FsAccess) -> FsAccess {
    FsAccess {
        read: a.read || b.read,
        write: a.write || b.write,
        execute: a.execute || b.execute,
    }
}

/// Parses one path entry: `{command}`, `{workdir}[/relative]` or an absolute path, with a
/// trailing `?` for "skip when missing". With `must_exist`, literal paths that are not optional
/// must exist.
fn template(
    src: &Source<'_>,
    entry: &Spanned<String>,
    field: &str,
    must_exist: bool,
) -> Result<(PathTemplate, bool), PolicyError> {
    let error = |message: String| src.value_error(entry.span(), field, message);
    let text = entry.get_ref().as_str();
    let (text, optional) = match text.strip_suffix('?') {
        Some(text) => (text, true),
        None => (text, false),
    };
    if text.is_empty() {
        return Err(error("empty path".to_owned()));
    }
    if text == "{command}" {
        return Ok((PathTemplate::Command, optional));
    }
    if text.starts_with("{command}") {
        return Err(error(
            "`{command}` is the executable itself; nothing lies beneath it".to_owned(),
        ));
    }
    if let Some(rest) = text.strip_prefix("{workdir}") {
        let relative = match rest.strip_prefix('/') {
            Some(relative) => relative,
            None if rest.is_empty() => "",
            None => {
                return Err(error(format!(
                    "write `{{workdir}}/{rest}`: a `/` must follow `{{workdir}}`"
                )));
            }
        };
        let relative = Path::new(relative.trim_end_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || relative.to_string_lossy().contains('{')
        {
            return Err(error(format!(
                "`{text}`: the part after `{{workdir}}/` must be a plain relative path"
            )));
        }
        return Ok((PathTemplate::Workdir(relative.to_path_buf()), optional));
    }
    if let Some(start) = text.find('{') {
        let name = text[start..].split('}').next().unwrap_or_default();
        return Err(error(format!(
            "unknown placeholder `{name}}}`; known: {{workdir}}, {{command}}"
        )));
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(error(format!(
            "`{text}` is relative; write an absolute path, or `{{workdir}}/{text}` for the run's work directory"
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(error(format!(
            "`{text}`: `.` and `..` are not allowed in policy paths"
        )));
    }
    if must_exist && !optional && fs::metadata(path).is_err() {
        return Err(error(format!(
            "`{text}` does not exist; append `?` to skip it where it is missing"
        )));
    }
    Ok((PathTemplate::Literal(path.to_path_buf()), optional))
}

/// The path with symlinks resolved where it exists, so `/lib` and `/usr/lib` compare equal.
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// [`canonical`] of a path the policy names literally (system trees, denied paths), resolved
/// once per process: resolving costs a `readlink` per component, and every run of a batch (and
/// the compile before the first) checks the same paths. Only the contradiction check uses it;
/// Landlock opens every path afresh.
fn canonical_literal(path: &Path) -> PathBuf {
    type Memo = Option<std::collections::HashMap<PathBuf, PathBuf>>;
    static MEMO: std::sync::Mutex<Memo> = std::sync::Mutex::new(None);
    let mut memo = MEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    memo.get_or_insert_with(Default::default)
        .entry(path.to_path_buf())
        .or_insert_with(|| canonical(path))
        .clone()
}

/// A denied path may neither lie inside an allowed tree nor contain one.
fn check_denied(
    denied: &[DeniedPath],
    allowed: &[(PathBuf, &PathRule)],
) -> Result<(), PolicyError> {
    // Each path resolved once: resolving walks every component (a readlink each), and a run
    // checks every denied path against every allowed one.
    let allowed: Vec<(PathBuf, &PathBuf, &PathRule)> = allowed
        .iter()
        .map(|(path, rule)| {
            let resolved = match rule.path {
                PathTemplate::Literal(_) => canonical_literal(path),
                PathTemplate::Workdir(_) | PathTemplate::Command => canonical(path),
            };
            (resolved, path, *rule)
        })
        .collect();
    for deny in denied {
        let deny_path = canonical_literal(&deny.path);
        for (allowed_path, path, rule) in &allowed {
            let message = if deny_path.starts_with(allowed_path) {
                format!(
                    "{} is denied but lies inside the allowed tree {}",
                    deny.path.display(),
                    path.display()
                )
            } else if allowed_path.starts_with(&deny_path) {
                format!(
                    "{} is denied but contains the allowed path {}",
                    deny.path.display(),
                    path.display()
                )
            } else {
                continue;
            };
            return Err(PolicyError::Contradiction(Box::new(Contradiction {
                at: deny.origin.clone(),
                field: deny.field.clone(),
                message,
                other: rule.origin.clone(),
                other_field: rule.field.clone(),
            })));
        }
    }
    Ok(())
}

/// Fills in `{workdir}` and `{command}` for one run (both absolute) and checks the result:
/// required paths must exist and no denied path may become reachable.
pub fn resolve(
    rules: &[PathRule],
    denied: &[DeniedPath],
    workdir: &Path,
    command: &Path,
) -> Result<Vec<ResolvedPath>, PolicyError> {
    let mut resolved = Vec::new();
    let mut origins = Vec::new();
    for rule in rules {
        let path = match &rule.path {
            PathTemplate::Literal(path) => path.clone(),
            PathTemplate::Workdir(relative) => workdir.join(relative),
            PathTemplate::Command => command.to_path_buf(),
        };
        let meta = if path.is_absolute() {
            fs::metadata(&path).ok()
        } else {
            None
        };
        let missing = meta.is_none();
        if missing && rule.optional {
            continue;
        }
        if missing {
            return Err(PolicyError::Value {
                at: rule.origin.clone(),
                field: rule.field.clone(),
                message: format!(
                    "`{}` resolves to {}, which does not exist or is not absolute",
                    rule.path,
                    path.display()
                ),
            });
        }
        origins.push((path.clone(), rule));
        resolved.push(ResolvedPath {
            path,
            access: rule.access,
            is_dir: meta.is_some_and(|m| m.is_dir()),
        });
    }
    check_denied(denied, &origins)?;
    Ok(resolved)
}
