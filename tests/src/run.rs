//! Running the `flamewarden` binary, bounded in time, with its output captured.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::{BackgroundProcess, FoldedProfile, JsonProfile, flamewarden_bin};

/// How long one flamewarden run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// The exit code; `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stderr's non-blank lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs `flamewarden ARGS...` to completion (at most [`RUN_TIMEOUT`]).
pub fn flamewarden<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let scratch = tempfile::tempdir().expect("failed to create a temporary directory");
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut process = spawn_captured(&args, scratch.path());
    let status = process.wait_or_kill(RUN_TIMEOUT);
    collect(status, scratch.path())
}

/// `flamewarden record` writing all three formats into a temporary directory that lives as long
/// as this value.
#[derive(Debug)]
pub struct Recording {
    /// The finished run.
    pub run: Run,
    dir: TempDir,
}

/// A `flamewarden record` still running in the background.
#[derive(Debug)]
pub struct PendingRecording {
    /// The flamewarden process.
    pub process: BackgroundProcess,
    dir: TempDir,
}

impl Recording {
    /// Runs `flamewarden record -o profile.svg -o profile.folded -o profile.json ARGS...` to
    /// completion.
    pub fn run<I, S>(args: I) -> Recording
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut pending = Recording::spawn(args);
        let status = pending.process.wait_or_kill(RUN_TIMEOUT);
        let run = collect(status, pending.dir.path());
        Recording {
            run,
            dir: pending.dir,
        }
    }

    /// Starts the same command as [`Recording::run`] without waiting for it.
    pub fn spawn<I, S>(args: I) -> PendingRecording
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");
        let mut full: Vec<OsString> = vec!["record".into()];
        for ext in ["svg", "folded", "json"] {
            full.push("-o".into());
            full.push(dir.path().join(format!("profile.{ext}")).into());
        }
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        let process = spawn_captured(&full, dir.path());
        PendingRecording { process, dir }
    }

    /// Panics with flamewarden's stderr unless it exited with `code`.
    pub fn assert_exit_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.run.code(),
            Some(code),
            "flamewarden record exited with {}; stderr:\n{}",
            self.run.status,
            self.run.stderr
        );
        self
    }

    /// Path of an output file (`"svg"`, `"folded"` or `"json"`).
    pub fn output_path(&self, ext: &str) -> PathBuf {
        self.dir.path().join(format!("profile.{ext}"))
    }

    /// The text of an output file.
    ///
    /// # Panics
    /// When flamewarden did not write it.
    pub fn output_text(&self, ext: &str) -> String {
        let path = self.output_path(ext);
        fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "flamewarden did not write {}: {e}; stderr:\n{}",
                path.display(),
                self.run.stderr
            )
        })
    }

    /// The folded output, parsed.
    pub fn folded(&self) -> FoldedProfile {
        FoldedProfile::parse(&self.output_text("folded"))
            .unwrap_or_else(|e| panic!("{}: {e}", self.output_path("folded").display()))
    }

    /// The JSON output, parsed.
    pub fn json(&self) -> JsonProfile {
        JsonProfile::parse(&self.output_text("json"))
            .unwrap_or_else(|e| panic!("{}: {e}", self.output_path("json").display()))
    }
}

impl PendingRecording {
    /// Waits for flamewarden to finish (at most [`RUN_TIMEOUT`]).
    pub fn finish(mut self) -> Recording {
        let status = self.process.wait_or_kill(RUN_TIMEOUT);
        let run = collect(status, self.dir.path());
        Recording { run, dir: self.dir }
    }
}

/// Starts flamewarden in `dir`, with stdout and stderr going to files there: files never fill up
/// and block the process the way unread pipes do.
fn spawn_captured(args: &[OsString], dir: &Path) -> BackgroundProcess {
    let create = |name: &str| {
        File::create(dir.join(name)).unwrap_or_else(|e| panic!("failed to create {name}: {e}"))
    };
    BackgroundProcess::spawn(
        Command::new(flamewarden_bin())
            .args(args)
            // A relative output path the test did not mean to create lands in the scratch
            // directory, not in the workspace.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(create("stdout"))
            .stderr(create("stderr")),
        &format!(
            "flamewarden {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
}

fn collect(status: ExitStatus, dir: &Path) -> Run {
    let read = |name: &str| {
        String::from_utf8_lossy(&fs::read(dir.join(name)).unwrap_or_default()).into_owned()
    };
    Run {
        status,
        stdout: read("stdout"),
        stderr: read("stderr"),
    }
}
