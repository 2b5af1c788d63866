//! What the `flamewarden sandbox run` tests share (tests/tests/sandbox_*.rs): the escape corpus
//! of `tests/workloads/escape/` built and cached like the other workloads, runs of the sandbox
//! with their verdict, policy variants, and the check that a run left nothing behind.
//!
//! Every run is bounded ([`SANDBOX_TIMEOUT`]) and tagged: the tag goes into the command's
//! environment (`FLAMEWARDEN_ESCAPE_TAG`, set for flamewarden and passed on with `--env`) and, as
//! `tag=TAG`, after its arguments (the corpus ignores extra ones), so the run's processes can be
//! found — by the tests' watchers, by the leftover check after the run, and by the reaper that
//! kills them when a test fails. After every run: no `flamewarden-sandboxes/*` run cgroup is left beneath our own cgroup in any hierarchy,
//! no per-run pin under `/sys/fs/bpf/flamewarden`, no process of the run. cargo's
//! `LD_LIBRARY_PATH` is not passed on: a judge runs submissions in a clean environment.

use std::{
    collections::{BTreeMap, hash_map::DefaultHasher},
    ffi::{OsStr, OsString},
    fmt, fs,
    hash::{Hash as _, Hasher as _},
    io::{Read as _, Seek as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::NamedTempFile;

mod leftovers;

use leftovers::{Leftovers, walk};
pub use leftovers::{PIN_ROOT, own_cgroup_dirs, sys_enter_link_pin};

use crate::{
    BackgroundProcess, flamewarden_bin, target_dir, workloads::sources_dir, workspace_root,
};

/// How long one sandbox run (or bare run of a corpus program) may take before the test kills it
/// and fails. The slowest legitimate run, the fork bomb, gives up after 5 s.
pub const SANDBOX_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable carrying a run's tag.
pub const TAG_ENV: &str = "FLAMEWARDEN_ESCAPE_TAG";

/// The compiler flags of the corpus.
const CFLAGS: &str = "-O2 -g -fno-omit-frame-pointer -Wall -Wextra -Werror -pthread";

/// The corpus program `tests/workloads/escape/NAME.c`, built with gcc on first use and cached by
/// content (the source, every header beside it, the flags and gcc's version) under
/// `<target>/flamewarden-tests/escape/NAME-HASH/NAME`.
///
/// # Panics
/// When gcc is missing or fails, with its output.
pub fn escape_program(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let path = build_escape(name);
    built.insert(name.to_owned(), path.clone());
    path
}

fn build_escape(name: &str) -> PathBuf {
    let dir = sources_dir().join("escape");
    let source = dir.join(format!("{name}.c"));
    let read = |p: &Path| fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let mut key = DefaultHasher::new();
    read(&source).hash(&mut key);
    let mut headers = walk(&dir);
    headers.retain(|p| p.extension().is_some_and(|e| e == "h"));
    headers.sort();
    for header in &headers {
        read(header).hash(&mut key);
    }
    CFLAGS.hash(&mut key);
    let version = Command::new("gcc")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("the escape corpus is built with gcc, which cannot run: {e}"));
    version.stdout.hash(&mut key);

    let cache = target_dir().join("flamewarden-tests").join("escape");
    let binary = cache
        .join(format!("{name}-{:016x}", key.finish()))
        .join(name);
    if binary.is_file() {
        return binary;
    }
    // Built in a directory of our own and renamed into place: nobody sees half a binary.
    let partial = cache.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).unwrap_or_else(|e| panic!("mkdir {}: {e}", partial.display()));
    let output = Command::new("gcc")
        .args(CFLAGS.split(' '))
        .arg(format!("-I{}", dir.display()))
        .arg(&source)
        .arg("-o")
        .arg(partial.join(name))
        .output()
        .unwrap_or_else(|e| panic!("failed to run gcc for {}: {e}", source.display()));
    if !output.status.success() {
        let _ = fs::remove_dir_all(&partial);
        panic!(
            "gcc failed to build {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if fs::rename(&partial, binary.parent().unwrap()).is_err() {
        // Another test got there first; its binary is as good as ours.
        let _ = fs::remove_dir_all(&partial);
    }
    assert!(
        binary.is_file(),
        "building {name} left no {}",
        binary.display()
    );
    binary
}

/// `policies/judge.toml`.
pub fn judge_policy() -> PathBuf {
    workspace_root().join("policies").join("judge.toml")
}

/// A copy of `policies/judge.toml` (removed on drop) whose `[limits]` fields get new values,
/// e.g. `[("cpu_time", "\"1s\""), ("memory", "\"64MiB\"")]`.
///
/// # Panics
/// When judge.toml has no such field (the test would silently test the shipped limit).
pub fn judge_with_limits(limits: &[(&str, &str)]) -> NamedTempFile {
    let judge = fs::read_to_string(judge_policy()).expect("read policies/judge.toml");
    let (head, tail) = judge
        .split_once("\n[limits]\n")
        .expect("policies/judge.toml has a [limits] section");
    let mut tail: Vec<String> = tail.lines().map(str::to_owned).collect();
    for (field, value) in limits {
        let line = tail
            .iter_mut()
            .take_while(|l| !l.starts_with('['))
            .find(|l| l.split('=').next().is_some_and(|k| k.trim() == *field))
            .unwrap_or_else(|| panic!("policies/judge.toml has no limits.{field}"));
        *line = format!("{field} = {value}");
    }
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a policy file");
    fs::write(
        file.path(),
        format!("{head}\n[limits]\n{}\n", tail.join("\n")),
    )
    .expect("write the policy file");
    file
}

/// A verdict as `sandbox run --json` writes it.
#[derive(Debug, Clone)]
pub struct Verdict(pub Value);

impl Verdict {
    /// `status`.
    pub fn status(&self) -> &str {
        self.0["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status in {self}"))
    }

    /// A number field (`cpu_time_ms`, `wall_time_ms`, `peak_memory_bytes`, ...).
    pub fn number(&self, field: &str) -> f64 {
        self.0[field]
            .as_f64()
            .unwrap_or_else(|| panic!("no number `{field}` in {self}"))
    }

    /// `violations`.
    pub fn violations(&self) -> &[Value] {
        self.0["violations"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no `violations` list in {self}"))
    }

    /// The first violation of `rule`, which must exist and have `action`.
    pub fn expect_violation(&self, rule: &str, action: &str) -> &Value {
        let violation = self
            .violations()
            .iter()
            .find(|v| v["rule"] == rule)
            .unwrap_or_else(|| {
                let rules: Vec<&Value> = self.violations().iter().map(|v| &v["rule"]).collect();
                panic!("no `{rule}` violation (rules: {rules:?}) in {self}")
            });
        assert_eq!(
            violation["action"], action,
            "the `{rule}` violation is not `{action}` in {self}"
        );
        violation
    }

    /// Checks `status`, with the whole verdict in the message.
    pub fn assert_status(&self, status: &str) {
        assert_eq!(self.status(), status, "wrong status in {self}");
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string_pretty(&self.0).map_err(|_| fmt::Error)?;
        write!(f, "the verdict\n{text}")
    }
}

/// A fresh tag for a run.
pub fn new_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "fw-escape-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_hex(4)
    )
}

/// `bytes` random bytes from /dev/urandom, in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `flamewarden sandbox run`: set the fields, e.g.
/// `Sandbox { mode: Some("audit"), ..Sandbox::new(&policy) }`, then [`Sandbox::run`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// `--policy`.
    pub policy: PathBuf,
    /// `--workdir`.
    pub workdir: Option<PathBuf>,
    /// `--mode`.
    pub mode: Option<&'static str>,
    /// `--stdin`.
    pub stdin: Option<PathBuf>,
    /// `--stdout`.
    pub stdout: Option<PathBuf>,
    /// More of flamewarden's arguments, before `--`.
    pub args: Vec<OsString>,
    /// Variables set in flamewarden's own environment.
    pub env: Vec<(String, String)>,
    /// Start flamewarden in a session of its own whose controlling terminal is this one, as
    /// from a judge's shell (see [`with_controlling_tty`]).
    pub controlling_tty: Option<PathBuf>,
    /// flamewarden's stderr is a pipe (read to its end by the test) instead of a file: what a
    /// judge that reads its children's stderr sees, where no file-size limit applies.
    pub stderr_pipe: bool,
    /// The run's tag (see the module documentation).
    pub tag: String,
}

/// A finished sandbox run.
#[derive(Debug)]
pub struct SandboxRun {
    /// What flamewarden wrote to its stdout: the command's stdout unless `--stdout` was given.
    pub stdout: Vec<u8>,
    /// What flamewarden wrote to its stderr: the command's stderr, then the verdict.
    pub stderr: String,
    /// The verdict written with `--json`.
    pub verdict: Verdict,
    /// How long flamewarden ran.
    pub elapsed: Duration,
}

impl SandboxRun {
    /// Whether `needle` occurs in flamewarden's stdout or stderr.
    pub fn output_contains(&self, needle: &str) -> bool {
        contains(&self.stdout, needle.as_bytes()) || self.stderr.contains(needle)
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl Sandbox {
    /// A run under `policy` (its own mode), with a fresh tag.
    pub fn new(policy: &Path) -> Self {
        Sandbox {
            policy: policy.to_owned(),
            workdir: None,
            mode: None,
            stdin: None,
            stdout: None,
            args: Vec::new(),
            env: Vec::new(),
            controlling_tty: None,
            stderr_pipe: false,
            tag: new_tag(),
        }
    }

    /// Runs `program ARGS... tag=TAG` to completion (at most [`SANDBOX_TIMEOUT`]), then checks
    /// that the run left nothing behind and that flamewarden's exit code matches the verdict
    /// (0 for `ok`, 1 otherwise).
    ///
    /// # Panics
    /// When flamewarden times out, writes no verdict, exits otherwise, or leaves something.
    pub fn run(&self, program: &Path, args: &[OsString]) -> SandboxRun {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let json = scratch.path().join("verdict.json");
        let mut full: Vec<OsString> = vec!["sandbox".into(), "run".into(), "--policy".into()];
        full.push(self.policy.clone().into());
        let options = [
            ("--workdir", self.workdir.as_ref().map(|p| p.as_os_str())),
            ("--mode", self.mode.map(OsStr::new)),
            ("--stdin", self.stdin.as_ref().map(|p| p.as_os_str())),
            ("--stdout", self.stdout.as_ref().map(|p| p.as_os_str())),
            ("--json", Some(json.as_os_str())),
        ];
        for (flag, value) in options {
            if let Some(value) = value {
                full.extend([flag.into(), value.to_owned()]);
            }
        }
        full.extend(self.args.iter().cloned());
        full.extend(["--env".into(), TAG_ENV.into()]);
        full.push("--".into());
        full.push(program.into());
        full.extend(args.iter().cloned());
        full.push(format!("tag={}", self.tag).into());
        let what: Vec<_> = full.iter().map(|a| a.to_string_lossy()).collect();
        let what = format!("flamewarden {}", what.join(" "));

        let file = |name: &str| fs::File::create(scratch.path().join(name)).expect("create file");
        let before = Leftovers::snapshot();
        let reaper = Reaper(self.tag.clone());
        let start = Instant::now();
        let mut command = Command::new(flamewarden_bin());
        command
            .args(&full)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(TAG_ENV, &self.tag)
            .env_remove("LD_LIBRARY_PATH")
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(file("stdout"));
        let piped = if self.stderr_pipe {
            let (mut reader, writer) = std::io::pipe().expect("pipe");
            command.stderr(writer);
            Some(thread::spawn(move || {
                let mut got = Vec::new();
                let _ = reader.read_to_end(&mut got);
                got
            }))
        } else {
            command.stderr(file("stderr"));
            None
        };
        if let Some(tty) = &self.controlling_tty {
            with_controlling_tty(&mut command, tty);
        }
        let mut process = BackgroundProcess::spawn(&mut command, &what);
        // The pipe's write end must be flamewarden's alone, for the reader to see its end.
        drop(command);
        let status = process.wait_or_kill(SANDBOX_TIMEOUT);
        let elapsed = start.elapsed();
        let stdout = fs::read(scratch.path().join("stdout")).unwrap_or_default();
        let stderr = match piped {
            Some(reader) => reader.join().expect("the stderr reader"),
            None => fs::read(scratch.path().join("stderr")).unwrap_or_default(),
        };
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        eprintln!("{what}: {status} after {elapsed:.2?}");

        before.assert_nothing_left(&self.tag, &what);
        drop(reaper);
        let text = fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!(
                "{what} ({status}) wrote no verdict to {}: {e}; stderr:\n{stderr}",
                json.display()
            )
        });
        let verdict = Verdict(serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{what}: the verdict is not JSON ({e}):\n{text}\nstderr:\n{stderr}")
        }));
        let expected = if verdict.status() == "ok" { 0 } else { 1 };
        assert_eq!(
            status.code(),
            Some(expected),
            "{what} exited with {status}, expected {expected} for {verdict}\nstderr:\n{stderr}"
        );
        SandboxRun {
            stdout,
            stderr,
            verdict,
            elapsed,
        }
    }
}

/// Runs `program ARGS... tag=TAG` without any sandbox in `cwd` (at most [`SANDBOX_TIMEOUT`]),
/// with stdin from `stdin` (or nothing); returns how it exited and its stdout.
pub fn run_bare(
    program: &Path,
    args: &[OsString],
    cwd: &Path,
    stdin: Option<&Path>,
    tag: &str,
) -> (ExitStatus, Vec<u8>) {
    let out = tempfile::tempfile().expect("temporary file");
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(format!("tag={tag}"))
        .env(TAG_ENV, tag)
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(cwd)
        .stdout(out.try_clone().expect("dup"));
    match stdin {
        Some(path) => command.stdin(fs::File::open(path).expect("open stdin file")),
        None => command.stdin(Stdio::null()),
    };
    let _reaper = Reaper(tag.to_owned());
    let what = format!("{} (bare)", program.display());
    let status = BackgroundProcess::spawn(&mut command, &what).wait_or_kill(SANDBOX_TIMEOUT);
    let mut stdout = Vec::new();
    (&out).rewind().expect("rewind");
    (&out).read_to_end(&mut stdout).expect("read stdout");
    (status, stdout)
}

/// Has `command` start in a session of its own whose controlling terminal is `tty` (a
/// terminal device, e.g. the slave of a pseudo-terminal), as a judge's shell would.
pub fn with_controlling_tty(command: &mut Command, tty: &Path) {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let path = std::ffi::CString::new(tty.as_os_str().as_bytes()).expect("terminal path");
    // SAFETY: between fork and exec only async-signal-safe calls on memory prepared before.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        })
    };
}

/// Processes whose command line or environment holds `tag`: (pid, comm). Not this process.
pub fn tagged_processes(tag: &str) -> Vec<(i32, String)> {
    let own = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let has_tag = ["cmdline", "environ"].iter().any(|file| {
            fs::read(entry.path().join(file)).is_ok_and(|b| contains(&b, tag.as_bytes()))
        });
        if has_tag {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_owned()));
        }
    }
    found
}

/// Kills (SIGKILL) every process of a run on drop: a failing test leaves no hostile workload.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for _ in 0..3 {
            let left = tagged_processes(&self.0);
            if left.is_empty() {
                return;
            }
            for (pid, _) in left {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A run of `wall_sleep SECONDS` under judge.toml on a thread, once it holds the guard's
/// syscall layer ([`sys_enter_link_pin`] exists). Finish it with [`LongRun::finish`].
pub struct LongRun {
    seconds: u32,
    thread: thread::JoinHandle<SandboxRun>,
}

impl LongRun {
    /// Starts the run and waits (at most 5 s) until the syscall layer is attached.
    ///
    /// # Panics
    /// When the layer does not appear while the run goes on.
    pub fn start(seconds: u32) -> Self {
        let sleeper = escape_program("wall_sleep");
        let thread = thread::spawn(move || {
            Sandbox::new(&judge_policy()).run(&sleeper, &[seconds.to_string().into()])
        });
        let link = sys_enter_link_pin();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !link.exists() {
            assert!(
                Instant::now() < deadline && !thread.is_finished(),
                "{} never appeared during a run",
                link.display()
            );
            thread::sleep(Duration::from_millis(10));
        }
        Self { seconds, thread }
    }

    /// Whether the run is still going.
    pub fn running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Waits for the run and checks it slept all its time.
    pub fn finish(self) {
        let run = self.thread.join().expect("the long run");
        let slept = format!("escaped: slept {}", self.seconds);
        assert!(run.stdout.starts_with(slept.as_bytes()), "{}", run.verdict);
    }
}
