//! One sandbox run from policy to verdict (see docs/sandbox.md).

use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Instant,
};

use profiler_common::{TRIP_FORK_RATE, TRIP_KILLED, TRIP_TASKS};

use super::{
    ahead::{Ahead, Made},
    cgroup::{CgroupLimits, RunCgroup},
    child::{Child, ChildSetup},
    environment::CommandEnv,
    profile::Profiling,
    registered::Registered,
    stack::{StackSymbolizer, command_files},
    supervise::{Stream, supervise},
    verdict::{self, LimitsHit, Status, Verdict, Violation},
    workdir::FreshWorkdir,
};
use crate::{
    guard::{PreparedCommand, PreparedLayers, resolve_command, run_entry::seccomp_for_run},
    launch::ExitStatus,
    policy::{self, CompiledPolicy, Mode},
};

/// What to run and how.
#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// The policy file.
    pub policy: PathBuf,
    /// Overrides the policy's mode.
    pub mode: Option<Mode>,
    /// The run's work directory; a fresh temporary one when `None`.
    pub workdir: Option<PathBuf>,
    /// Standard input, output and error files.
    pub stdin: Option<PathBuf>,
    /// See `stdin`.
    pub stdout: Option<PathBuf>,
    /// See `stdin`.
    pub stderr: Option<PathBuf>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// Record a CPU profile of the run to this file (.svg, .folded, .json or .pb.gz).
    pub profile: Option<PathBuf>,
    /// The command's environment (by default only `PATH`).
    pub env: CommandEnv,
}

const SIGXCPU: i32 = 24;
const SIGXFSZ: i32 = 25;

/// A run that could not start: flamewarden's error, not the command's.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The policy could not be loaded or applied.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The guard layers could not be prepared.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    /// The guard's kernel programs could not be attached or their maps updated.
    #[error(transparent)]
    Attach(#[from] crate::probes::guard::GuardAttachError),
    /// The run's cgroups could not be created.
    #[error(transparent)]
    Cgroup(#[from] super::cgroup::CgroupError),
    /// A file or the child could not be set up.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command could not be started in the sandbox.
    #[error("cannot start the command: {0}")]
    Child(#[from] super::child::ChildError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// Where a run's time goes, logged at debug level (`--log flamewarden::sandbox=debug`): the
/// microseconds since the run began at the end of each step.
struct Steps {
    since: Option<Instant>,
}

impl Steps {
    fn start() -> Self {
        Self {
            since: tracing::enabled!(tracing::Level::DEBUG).then(Instant::now),
        }
    }

    fn done(&self, step: &'static str) {
        if let Some(since) = self.since {
            tracing::debug!(us = since.elapsed().as_micros() as u64, "{step}");
        }
    }
}

/// Everything of a prepared run that must outlive the child.
struct Prepared {
    policy: CompiledPolicy,
    mode: Mode,
    program: PathBuf,
    layers: PreparedLayers,
    command: PreparedCommand,
    workdir: PathBuf,
    tempdir: Option<FreshWorkdir>,
}

/// The policy of the last run, while its file is unchanged: a batch of runs parses it once.
fn load_policy(path: &Path) -> Result<CompiledPolicy, SandboxError> {
    static LAST: Mutex<Option<(PathBuf, std::time::SystemTime, CompiledPolicy)>> = Mutex::new(None);
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let (Some((cached, at, policy)), Some(modified)) = (last.as_ref(), modified)
        && cached == path
        && *at == modified
    {
        return Ok(policy.clone());
    }
    let policy = policy::load(path)?;
    if let Some(modified) = modified {
        *last = Some((path.to_path_buf(), modified, policy.clone()));
    }
    Ok(policy)
}

/// Prepares a run under `policy`; `made` is a fresh work directory made ahead (batch).
fn prepare(
    opts: &SandboxOptions,
    mut policy: CompiledPolicy,
    made: Option<FreshWorkdir>,
) -> Result<Prepared, SandboxError> {
    let mode = opts.mode.unwrap_or(policy.mode);
    policy.mode = mode;
    let (workdir, tempdir) = match (&opts.workdir, made) {
        (Some(dir), _) => (
            std::fs::canonicalize(dir)
                .map_err(io_error(format!("work directory {}", dir.display())))?,
            None,
        ),
        (None, made) => {
            let dir = match made {
                Some(dir) => dir,
                None => FreshWorkdir::create(policy.limits.disk_bytes)
                    .map_err(io_error("cannot create a work directory"))?,
            };
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let program = resolve_command(&opts.command[0])?;
    // Memory is the cgroup's to limit (an OOM kill is a clear `memory_limit`; a failed malloc
    // under RLIMIT_DATA is not); `kill` rules are the tracepoint's.
    let mut layered = seccomp_for_run(&policy);
    layered.limits.memory_bytes = None;
    let layers = PreparedLayers::prepare(&layered, &workdir, &program)?;
    let command = PreparedCommand::new(&program, &opts.command)?
        .with_environment(&opts.env.resolve(std::env::vars_os(), &workdir))?;
    Ok(Prepared {
        policy,
        mode,
        program,
        layers,
        command,
        workdir: workdir.clone(),
        tempdir,
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_error("pipe2")(io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_file(path: &Path, write: bool) -> Result<File, SandboxError> {
    let result = if write {
        File::create(path)
    } else {
        File::open(path)
    };
    result.map_err(io_error(path.display().to_string()))
}

/// A fresh name for a run's cgroups: `run-<flamewarden's pid>-<n>`.
fn run_name() -> String {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    format!(
        "run-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one command under a policy; `stop` (Ctrl-C, SIGTERM) ends it early. With `ahead` (a
/// batch), the run's cgroups and work directory were made ahead, the next run's are, and this
/// one's are removed after the verdict.
pub fn run(
    opts: &SandboxOptions,
    stop: &Arc<AtomicBool>,
    ahead: Option<&Ahead>,
) -> Result<Verdict, SandboxError> {
    let steps = Steps::start();
    let policy = load_policy(&opts.policy)?;
    let limits = policy.limits;
    let cgroup_limits = CgroupLimits {
        tasks: limits.tasks.map(u64::from),
        memory_bytes: limits.memory_bytes,
    };
    // A fresh work directory, a tmpfs of `limits.disk` if any.
    let fresh_workdir = opts.workdir.is_none().then_some(limits.disk_bytes);
    let made = ahead.and_then(|ahead| ahead.take(cgroup_limits, fresh_workdir));
    if let Some(ahead) = ahead {
        ahead.make_next(cgroup_limits, fresh_workdir, run_name());
    }
    let (cgroup, made_workdir) = match made {
        Some(made) => (made.cgroup, made.workdir),
        None => (RunCgroup::create(&run_name(), &cgroup_limits)?, None),
    };
    steps.done("cgroups created");
    let mut prepared = prepare(opts, policy, made_workdir)?;
    steps.done("policy and layers prepared");
    let registered = Registered::new(
        &prepared.policy,
        prepared.mode,
        &prepared.layers,
        &prepared.program,
        cgroup.id(),
    )?;
    steps.done("registered with the kernel side");

    let stdin = opts
        .stdin
        .as_deref()
        .map(|p| open_file(p, false))
        .transpose()?;
    // Both output streams go through flamewarden, counted against the output limit: a
    // command's stderr must not flood the judge's log any more than its stdout may.
    let mut sink: Box<dyn io::Write> = match &opts.stdout {
        Some(path) => Box::new(open_file(path, true)?),
        None => Box::new(io::stdout().lock()),
    };
    let mut err_sink: Box<dyn io::Write> = match &opts.stderr {
        Some(path) => Box::new(open_file(path, true)?),
        None => Box::new(io::stderr()),
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let workdir = CString::new(prepared.workdir.as_os_str().as_bytes())
        .map_err(|_| io_error("work directory")(io::ErrorKind::InvalidInput.into()))?;
    let procs_files = cgroup.open_procs()?;
    let procs: Vec<_> = procs_files.iter().map(AsRawFd::as_raw_fd).collect();
    // The recording attaches before the command runs: its first instruction is sampled.
    let mut notes = Vec::new();
    let profiling = match &opts.profile {
        Some(out) => match Profiling::start(cgroup.v2_path(), out) {
            Ok(profiling) => Some(profiling),
            Err(e) => {
                notes.push(e);
                None
            }
        },
        None => None,
    };
    // Times in the verdict count from here (the kernel's, from the registration).
    let started = Instant::now();
    let setup = ChildSetup {
        command: &prepared.command,
        layers: &prepared.layers,
        workdir,
        stdio: [
            stdin.as_ref().map(AsRawFd::as_raw_fd),
            Some(out_write.as_raw_fd()),
            Some(err_write.as_raw_fd()),
        ],
        procs: &procs,
        register: Some((registered.pids_fd(), registered.id)),
    };
    let child = Child::spawn(&setup)?;
    steps.done("command executed");
    drop(out_write);
    drop(err_write);
    drop(procs_files);
    drop(stdin);

    let supervised = supervise(
        &child,
        &cgroup,
        &registered,
        [
            Stream::output(out_read, &mut *sink),
            Stream::error(err_read, &mut *err_sink),
        ],
        &limits,
        stop,
        started,
    );
    let wall = started.elapsed();
    steps.done("command ended");
    let _ = sink.flush();
    let _ = err_sink.flush();
    if let Some(profiling) = profiling {
        let title = format!(
            "flamewarden sandbox run -- {}",
            opts.command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Err(e) = profiling.finish(&title) {
            notes.push(e);
        }
    }
    // Whatever is left (background processes, a fork bomb's children) ends with the run.
    cgroup.kill_all();
    let usage = cgroup.usage();
    let disk_full = prepared.tempdir.as_ref().is_some_and(FreshWorkdir::full);
    steps.done("usage read");
    let state = registered.state().unwrap_or(registered.run);
    let recorded = registered.violations();
    let violations: Vec<Violation> = if recorded.is_empty() {
        Vec::new()
    } else {
        let symbolizer = StackSymbolizer::new(&command_files(&prepared.program));
        let ctx = verdict::DecodeContext::new(
            &prepared.policy,
            &prepared.workdir,
            prepared.layers.paths(),
        );
        recorded
            .iter()
            .filter_map(|v| {
                let frames = (v.stack_bytes as usize / 32).min(v.stack.len());
                let stack = symbolizer.symbolize(&v.stack[..frames]);
                verdict::decode(v, &registered.run, &ctx, stack)
            })
            .collect()
    };
    // Records no rule explains (a relative path that stays allowed, a call that failed for
    // its own reasons) are not violations.
    let unexplained = (recorded.len() - violations.len()) as u64;
    drop(registered);
    let made = Made {
        cgroup,
        workdir: prepared.tempdir.take(),
    };
    let cleanup = match ahead {
        Some(ahead) => {
            ahead.retire(made);
            Ok(())
        }
        None => {
            // As a batch does: the work directory (its tmpfs pages) before the cgroups.
            drop(made.workdir);
            made.cgroup.remove()
        }
    };
    steps.done("cleaned up");

    let (exit, ended) = match supervised {
        Ok(outcome) => (outcome.exit, outcome),
        Err(e) => {
            return Ok(internal_error(&prepared, &opts.policy, e.to_string()));
        }
    };
    let cpu_ns = usage.cpu_time_ns.unwrap_or(0);
    let (exit_code, signal) = match exit {
        ExitStatus::Code(code) => (Some(code), None),
        ExitStatus::Signal(signal) => (None, Some(signal)),
    };
    let cpu_limit_ns = limits.cpu_time.map(|d| d.as_nanos() as u64);
    let hit = LimitsHit {
        fork_bomb: state.tripped & (TRIP_FORK_RATE | TRIP_TASKS) != 0 || usage.task_limit_hits > 0,
        memory: usage.oom_kills > 0,
        cpu_time: ended.cpu_time
            || signal == Some(SIGXCPU)
            || cpu_limit_ns.is_some_and(|l| cpu_ns >= l),
        wall_time: ended.wall_time,
        output: ended.output || signal == Some(SIGXFSZ),
        disk: disk_full,
    };
    let enforced = prepared.mode == Mode::Enforce
        && (state.tripped & TRIP_KILLED != 0
            || violations
                .iter()
                .any(|v: &Violation| !v.rule.starts_with("limits.")));
    let mut violations = violations;
    let limit_violations = hit.violations(wall.as_secs_f64() * 1e3);
    let limit_count = limit_violations.len() as u64;
    violations.extend(limit_violations);
    let interrupted = ended.interrupted;
    if interrupted {
        notes.push("interrupted: the run was stopped by a signal to flamewarden".to_owned());
    }
    if let Err(e) = cleanup {
        notes.push(format!("cleanup: {e}"));
    }
    let message = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(Verdict {
        status: verdict::status(interrupted, hit, enforced, exit_code, signal),
        exit_code,
        signal,
        cpu_time_ms: cpu_ns as f64 / 1e6,
        wall_time_ms: wall.as_secs_f64() * 1e3,
        peak_memory_bytes: usage.peak_memory_bytes.unwrap_or(0),
        output_bytes: ended.output_bytes,
        mode: mode_name(prepared.mode),
        policy: opts.policy.display().to_string(),
        violations_total: u64::from(state.violations).saturating_sub(unexplained) + limit_count,
        violations_lost: u64::from(state.lost)
            + u64::from(state.violations)
                .saturating_sub(u64::from(profiler_common::GUARD_VIOLATION_SLOTS)),
        violations,
        message,
    })
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

fn internal_error(prepared: &Prepared, policy: &Path, message: String) -> Verdict {
    Verdict {
        status: Status::InternalError,
        exit_code: None,
        signal: None,
        cpu_time_ms: 0.0,
        wall_time_ms: 0.0,
        peak_memory_bytes: 0,
        output_bytes: 0,
        mode: mode_name(prepared.mode),
        policy: policy.display().to_string(),
        violations: Vec::new(),
        violations_total: 0,
        violations_lost: 0,
        message: Some(message),
    }
}
