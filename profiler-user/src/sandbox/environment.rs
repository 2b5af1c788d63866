//! The command's environment: cleared by default, as isolate and nsjail do, so that what the
//! judge keeps in its own (API tokens, database addresses, cloud credentials) never reaches a
//! submission. The command gets `PATH` (see [`DEFAULT_PATH`]), `HOME` (its work directory: without
//! one, Python's start-up looks the user up in /etc/passwd and through nscd's socket, which a
//! strict policy refuses), `TMPDIR` (its work directory too: Python's `tempfile`, `mktemp` and
//! Go's `os.TempDir` would otherwise try /tmp, which a strict policy refuses) and the variables
//! asked for with `--env NAME` (taken from
//! flamewarden's environment) or `--env NAME=VALUE`; `--full-env` passes flamewarden's whole
//! environment on instead, `--env` still applying on top.

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::{OsStrExt as _, OsStringExt as _},
    path::Path,
};

/// `PATH` of a command that was not given one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// One `--env` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvVar {
    /// `NAME`: flamewarden's value, if it has one.
    Pass(OsString),
    /// `NAME=VALUE`.
    Set(OsString, OsString),
}

/// What environment the command gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandEnv {
    /// Start from flamewarden's whole environment instead of an empty one.
    pub full: bool,
    /// Variables passed on or set, in order (a later one wins).
    pub vars: Vec<EnvVar>,
}

/// A malformed `--env` argument.
#[derive(Debug, thiserror::Error)]
#[error("{argument:?}: {reason} (expected NAME or NAME=VALUE)")]
pub struct EnvVarError {
    argument: String,
    reason: &'static str,
}

impl EnvVar {
    /// Parses `NAME` or `NAME=VALUE`.
    pub fn parse(argument: &OsStr) -> Result<Self, EnvVarError> {
        let bytes = argument.as_bytes();
        let error = |reason| EnvVarError {
            argument: argument.to_string_lossy().into_owned(),
            reason,
        };
        let (name, value) = match bytes.iter().position(|&b| b == b'=') {
            Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
            None => (bytes, None),
        };
        if name.is_empty() {
            return Err(error("empty variable name"));
        }
        if name.contains(&0) || value.is_some_and(|v| v.contains(&0)) {
            return Err(error("contains a NUL byte"));
        }
        let name = OsString::from_vec(name.to_vec());
        Ok(match value {
            Some(value) => EnvVar::Set(name, OsString::from_vec(value.to_vec())),
            None => EnvVar::Pass(name),
        })
    }
}

impl CommandEnv {
    /// The command's variables as `NAME=VALUE`, given flamewarden's own (`current`) and the
    /// run's work directory.
    pub fn resolve(
        &self,
        current: impl IntoIterator<Item = (OsString, OsString)>,
        workdir: &Path,
    ) -> Vec<OsString> {
        let current: Vec<(OsString, OsString)> = current.into_iter().collect();
        let mut vars: Vec<(OsString, OsString)> = if self.full {
            current.clone()
        } else {
            vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), workdir.as_os_str().to_owned()),
                ("TMPDIR".into(), workdir.as_os_str().to_owned()),
            ]
        };
        let mut set = |name: &OsStr, value: OsString| match vars.iter_mut().find(|(n, _)| n == name)
        {
            Some(slot) => slot.1 = value,
            None => vars.push((name.to_owned(), value)),
        };
        for var in &self.vars {
            match var {
                EnvVar::Pass(name) => {
                    if let Some((_, value)) = current.iter().find(|(n, _)| n == name) {
                        set(name, value.clone());
                    }
                }
                EnvVar::Set(name, value) => set(name, value.clone()),
            }
        }
        vars.into_iter()
            .map(|(name, value)| {
                let mut entry = name;
                entry.push("=");
                entry.push(value);
                entry
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/opt/bin"),
            ("SECRET", "s3cr3t"),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(n, v)| (n.into(), v.into()))
        .collect()
    }

    fn env(full: bool, args: &[&str]) -> Vec<String> {
        let vars = args
            .iter()
            .map(|a| EnvVar::parse(OsStr::new(a)).unwrap())
            .collect();
        CommandEnv { full, vars }
            .resolve(host(), Path::new("/tmp/run"))
            .into_iter()
            .map(|v| v.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_judges_environment_stays_out_unless_asked_for() {
        assert_eq!(
            env(false, &[]),
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/tmp/run".into(),
                "TMPDIR=/tmp/run".into()
            ]
        );
        assert_eq!(
            env(
                false,
                &["LANG", "MISSING", "N=1", "N=2", "EMPTY=", "HOME=/h"]
            ),
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/h".into(),
                "TMPDIR=/tmp/run".into(),
                "LANG=C.UTF-8".into(),
                "N=2".into(),
                "EMPTY=".into()
            ]
        );
        assert_eq!(
            env(false, &["PATH"]),
            ["PATH=/opt/bin", "HOME=/tmp/run", "TMPDIR=/tmp/run"]
        );
        assert_eq!(
            env(true, &["SECRET=hidden", "X=a=b"]),
            ["PATH=/opt/bin", "SECRET=hidden", "LANG=C.UTF-8", "X=a=b"]
        );
    }

    #[test]
    fn a_malformed_variable_is_named() {
        let e = EnvVar::parse(OsStr::new("=value")).unwrap_err().to_string();
        assert!(
            e.contains("\"=value\"") && e.contains("empty variable name"),
            "{e}"
        );
        assert!(EnvVar::parse(OsStr::new("")).is_err());
    }
}
