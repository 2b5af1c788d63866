//! The daemon's configuration: a TOML file (unknown keys refused, errors at `file:line:column`)
//! with command-line flags merged over it, validated before it is used, also on reload.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{self, CompiledPolicy, PolicyError, error::Source};

/// The commented example printed by `--print-default-config`; `deploy/config.example.toml` is
/// kept identical to it by a test.
pub const EXAMPLE_CONFIG: &str = include_str!("example.toml");

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// HTTP listen address.
    pub listen: Spanned<SocketAddr>,
    /// Bearer token required on every request but the health checks.
    pub bearer_token: Option<String>,
    /// Cgroups with their own label in the syscall metrics.
    pub top_cgroups: usize,
    /// Violations kept for `/api/v1/events`.
    pub events_kept: usize,
    /// Sampling frequency of on-demand profiles, Hz per CPU.
    pub profile_frequency_hz: u64,
    /// Longest on-demand profile, s.
    pub profile_max_seconds: u64,
    /// Always-on CPU sampling frequency, Hz per CPU (0: off).
    pub cpu_sampling_hz: u64,
    /// How much of the always-on profile is kept, s.
    pub cpu_window_seconds: u64,
    /// The always-on profile's time slots, s.
    pub cpu_slot_seconds: u64,
    /// How often the sandbox globs are looked at, ms.
    pub discovery_interval_ms: u64,
    /// Seconds without a registered `sandbox run` after which the guard's syscall layer of
    /// flamewarden's own runs is detached (0: never).
    pub guard_idle_detach_seconds: u64,
    /// Syscalls at least this slow, ms, are events (0: none).
    pub slow_call_ms: u64,
    /// Syscalls that wait by design, never slow-call events.
    pub slow_call_ignore: Vec<Spanned<String>>,
    /// Globs of sandbox cgroups and their policies.
    pub sandboxes: Vec<SandboxGlobFile>,
}

/// The syscalls that wait by design (for events, timers, children, signals): a thread parked in
/// one is idle, not slow.
pub const WAITING_SYSCALLS: [&str; 21] = [
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "futex",
    "futex_waitv",
    "nanosleep",
    "clock_nanosleep",
    "wait4",
    "waitid",
    "pause",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "io_getevents",
    "io_pgetevents",
    "accept",
    "accept4",
    "msgrcv",
];

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 9464))),
            bearer_token: None,
            top_cgroups: 20,
            events_kept: 256,
            profile_frequency_hz: 99,
            profile_max_seconds: 60,
            cpu_sampling_hz: 19,
            cpu_window_seconds: 300,
            cpu_slot_seconds: 10,
            discovery_interval_ms: 50,
            guard_idle_detach_seconds: 10,
            slow_call_ms: 1000,
            slow_call_ignore: WAITING_SYSCALLS
                .iter()
                .map(|n| Spanned::new(0..0, (*n).to_owned()))
                .collect(),
            sandboxes: Vec::new(),
        }
    }
}

/// One `[[sandboxes]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxGlobFile {
    /// Absolute cgroup path; wildcards in the last component only.
    pub glob: Spanned<String>,
    /// Policy file, relative to the configuration file.
    pub policy: Spanned<PathBuf>,
}

/// Command-line values that win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--bearer-token` / `FLAMEWARDEN_BEARER_TOKEN`.
    pub bearer_token: Option<String>,
    /// `--top-cgroups`.
    pub top_cgroups: Option<usize>,
}

/// A validated configuration, policies compiled.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where it was read from (`None`: defaults).
    pub file: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token, if any.
    pub bearer_token: Option<String>,
    /// Cgroups with their own label.
    pub top_cgroups: usize,
    /// Violations kept.
    pub events_kept: usize,
    /// On-demand profile frequency, Hz.
    pub profile_frequency_hz: u64,
    /// Longest on-demand profile, s.
    pub profile_max_seconds: u64,
    /// Always-on sampling frequency, Hz (0: off).
    pub cpu_sampling_hz: u64,
    /// Window kept, s.
    pub cpu_window_seconds: u64,
    /// Slot length, s.
    pub cpu_slot_seconds: u64,
    /// Discovery period, ms.
    pub discovery_interval_ms: u64,
    /// When the syscall layer of idle runs is detached (`None`: never).
    pub guard_idle_detach: Option<std::time::Duration>,
    /// Slow-call threshold, ns (0: none).
    pub slow_call_ns: u64,
    /// Syscall numbers never reported as slow.
    pub slow_call_ignore: std::collections::BTreeSet<u32>,
    /// Sandbox globs with their compiled policies.
    pub sandboxes: Vec<SandboxGlob>,
}

/// A sandbox glob: its parent directory and the pattern of the last component.
#[derive(Clone, Debug)]
pub struct SandboxGlob {
    /// The glob as written.
    pub glob: String,
    /// The directory watched.
    pub parent: PathBuf,
    /// The pattern a child's name must match.
    pub pattern: String,
    /// The policy file.
    pub policy_file: PathBuf,
    /// The compiled policy.
    pub policy: CompiledPolicy,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a wrong type, or an unacceptable value (`file:line:column`).
    #[error(transparent)]
    Invalid(PolicyError),
    /// A command-line value is unacceptable.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A sandbox policy is invalid.
    #[error("sandbox policy of `{glob}`: {source}")]
    Policy {
        /// The glob it belongs to.
        glob: String,
        /// Why.
        source: PolicyError,
    },
}

/// Reads and validates the configuration file at `path` with `overrides` over it.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<DaemonConfig, ConfigError> {
    let Some(path) = path else {
        return validate(ConfigFile::default(), None, "", overrides);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, overrides)
}

/// Validates the configuration text `text` read from `path`.
pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<DaemonConfig, ConfigError> {
    let name = path.display().to_string();
    let source = Source { name: &name, text };
    let file: ConfigFile =
        toml::from_str(text).map_err(|e| ConfigError::Invalid(source.syntax_error(&e)))?;
    validate(file, Some(path), text, overrides)
}

fn validate(
    file: ConfigFile,
    path: Option<&Path>,
    text: &str,
    overrides: &Overrides,
) -> Result<DaemonConfig, ConfigError> {
    let name = path.map(|p| p.display().to_string()).unwrap_or_default();
    let source = Source { name: &name, text };
    let listen = overrides.listen.unwrap_or(*file.listen.get_ref());
    let bearer_token = overrides
        .bearer_token
        .clone()
        .or(file.bearer_token)
        .filter(|t| !t.is_empty());
    if !listen.ip().is_loopback() && bearer_token.is_none() {
        let message = format!("{listen} is not a loopback address: set `bearer_token` to serve it");
        if overrides.listen.is_some() || path.is_none() {
            return Err(ConfigError::Flag {
                flag: "--listen",
                message,
            });
        }
        return Err(ConfigError::Invalid(source.value_error(
            file.listen.span(),
            "listen",
            message,
        )));
    }
    let base = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut slow_call_ignore = std::collections::BTreeSet::new();
    for (i, name) in file.slow_call_ignore.iter().enumerate() {
        // The waiting syscalls of another architecture (aarch64 has no `poll`) are not errors.
        if WAITING_SYSCALLS.contains(&name.get_ref().as_str())
            && crate::syscalls::parse_syscall(name.get_ref()).is_none()
        {
            continue;
        }
        let nr = crate::syscalls::parse_syscall(name.get_ref()).ok_or_else(|| {
            ConfigError::Invalid(source.value_error(
                name.span(),
                format!("slow_call_ignore[{i}]"),
                format!("`{}` is not a syscall of this architecture", name.get_ref()),
            ))
        })?;
        slow_call_ignore.insert(nr);
    }
    let mut sandboxes = Vec::new();
    for (i, entry) in file.sandboxes.iter().enumerate() {
        let glob = entry.glob.get_ref();
        let field = format!("sandboxes[{i}].glob");
        let bad = |message: &str| {
            ConfigError::Invalid(source.value_error(entry.glob.span(), &field, message))
        };
        let glob_path = Path::new(glob);
        if !glob_path.is_absolute() {
            return Err(bad("must be an absolute cgroup path"));
        }
        let (Some(parent), Some(pattern)) = (glob_path.parent(), glob_path.file_name()) else {
            return Err(bad("must name a directory below a cgroup"));
        };
        if parent.to_string_lossy().contains(['*', '?', '[']) {
            return Err(bad("wildcards are allowed in the last component only"));
        }
        let policy_file = base.join(entry.policy.get_ref());
        let policy = policy::load(&policy_file).map_err(|source| ConfigError::Policy {
            glob: glob.clone(),
            source,
        })?;
        sandboxes.push(SandboxGlob {
            glob: glob.clone(),
            parent: parent.to_path_buf(),
            pattern: pattern.to_string_lossy().into_owned(),
            policy_file,
            policy,
        });
    }
    Ok(DaemonConfig {
        file: path.map(Path::to_path_buf),
        listen,
        bearer_token,
        top_cgroups: overrides.top_cgroups.unwrap_or(file.top_cgroups).max(1),
        events_kept: file.events_kept,
        profile_frequency_hz: file.profile_frequency_hz.max(1),
        profile_max_seconds: file.profile_max_seconds.max(1),
        cpu_sampling_hz: file.cpu_sampling_hz,
        cpu_window_seconds: file.cpu_window_seconds.clamp(1, 24 * 3600),
        cpu_slot_seconds: file
            .cpu_slot_seconds
            .clamp(1, file.cpu_window_seconds.max(1)),
        discovery_interval_ms: file.discovery_interval_ms.clamp(10, 10_000),
        guard_idle_detach: (file.guard_idle_detach_seconds > 0)
            .then(|| std::time::Duration::from_secs(file.guard_idle_detach_seconds)),
        slow_call_ns: file.slow_call_ms.saturating_mul(1_000_000),
        slow_call_ignore,
        sandboxes,
    })
}

/// Whether `name` matches the shell-style `pattern` (`*` any run, `?` one character).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_the_committed_one_and_the_defaults() {
        let committed = include_str!("../../../deploy/config.example.toml");
        assert_eq!(
            EXAMPLE_CONFIG, committed,
            "update deploy/config.example.toml"
        );
        let config = parse(
            Path::new("example.toml"),
            EXAMPLE_CONFIG,
            &Overrides::default(),
        )
        .unwrap();
        let defaults = load(None, &Overrides::default()).unwrap();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.top_cgroups, defaults.top_cgroups);
        assert_eq!(config.events_kept, defaults.events_kept);
        assert_eq!(config.profile_frequency_hz, defaults.profile_frequency_hz);
        assert_eq!(config.discovery_interval_ms, defaults.discovery_interval_ms);
        assert_eq!(config.guard_idle_detach, defaults.guard_idle_detach);
        assert_eq!(config.cpu_sampling_hz, defaults.cpu_sampling_hz);
        assert_eq!(config.cpu_window_seconds, defaults.cpu_window_seconds);
        assert_eq!(config.cpu_slot_seconds, defaults.cpu_slot_seconds);
        assert_eq!(config.slow_call_ns, defaults.slow_call_ns);
        assert_eq!(config.slow_call_ignore, defaults.slow_call_ignore);
        let nanosleep = crate::syscalls::parse_syscall("nanosleep").unwrap();
        assert!(config.slow_call_ignore.contains(&nanosleep));
    }

    #[test]
    fn an_unknown_syscall_to_ignore_is_refused_with_its_location() {
        let text = "slow_call_ms = 10\nslow_call_ignore = [\"futex\", \"sleeep\"]\n";
        let err = parse(Path::new("c.toml"), text, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2:30"), "{err}");
        assert!(
            err.contains("slow_call_ignore[1]") && err.contains("sleeep"),
            "{err}"
        );
        let config = parse(
            Path::new("c.toml"),
            "slow_call_ms = 10\nslow_call_ignore = []\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.slow_call_ns, 10_000_000);
        assert!(config.slow_call_ignore.is_empty());
    }

    #[test]
    fn unknown_key_is_refused_with_its_location() {
        let text = "top_cgroups = 5\nlisen = \"127.0.0.1:1\"\n";
        let err = parse(Path::new("c.toml"), text, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2:1"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn non_loopback_listen_needs_a_token() {
        let text = "listen = \"0.0.0.0:9464\"\n";
        let err = parse(Path::new("c.toml"), text, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:1:10"), "{err}");
        assert!(err.contains("bearer_token"), "{err}");
        let with_token = Overrides {
            bearer_token: Some("s3cret".into()),
            ..Overrides::default()
        };
        let config = parse(Path::new("c.toml"), text, &with_token).unwrap();
        assert_eq!(config.bearer_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let text = "listen = \"127.0.0.1:1000\"\ntop_cgroups = 3\n";
        let overrides = Overrides {
            listen: Some("127.0.0.1:2000".parse().unwrap()),
            top_cgroups: Some(7),
            bearer_token: None,
        };
        let config = parse(Path::new("c.toml"), text, &overrides).unwrap();
        assert_eq!(config.listen.port(), 2000);
        assert_eq!(config.top_cgroups, 7);
    }

    #[test]
    fn glob_wildcards_only_in_the_last_component() {
        let text = "[[sandboxes]]\nglob = \"/sys/fs/cgroup/*/x\"\npolicy = \"p.toml\"\n";
        let err = parse(Path::new("c.toml"), text, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2:8"), "{err}");
        assert!(err.contains("sandboxes[0].glob"), "{err}");
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("*", "run-1"));
        assert!(wildcard_match("run-*", "run-1"));
        assert!(wildcard_match("r?n-*1", "run-41"));
        assert!(!wildcard_match("run-*", "walk-1"));
        assert!(!wildcard_match("r?n", "rn"));
    }
}
