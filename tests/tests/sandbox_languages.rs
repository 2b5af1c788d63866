//! A benign solution in each compiled language `policies/judge.toml` is for — C++, Rust, Go —
//! ends `ok` with no violation and the output of its bare run. Each reads numbers from stdin,
//! sums their squares on threads sized by the language's CPU count, touches 64 MiB and prints.
//! Their runtimes probe files the policy refuses (Rust's stack guard reads /proc/self/maps at
//! every start, Go's reads /sys/kernel/mm/transparent_hugepage/hpage_pmd_size, the CPU counts
//! read /sys/devices/system/cpu/online, /proc/stat and the cgroup's quota): refused and carried
//! on from, they must not make a benign run a `security_violation` (`filesystem.quiet`).
//!
//! The sources are in `tests/workloads/langs/`; the binaries are built by the test (g++, rustc,
//! go) into `<target>/flamewarden-tests/langs/`, cached by content.
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_languages --
//! --test-threads=1`.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    process::Command,
};

use flamewarden_tests::{
    flamewarden_bin, require_bpf,
    sandbox::{Sandbox, judge_policy, new_tag, run_bare},
    target_dir,
    workloads::sources_dir,
};

#[derive(Clone, Copy, Debug)]
enum Language {
    Cpp,
    Rust,
    Go,
}

impl Language {
    fn source(self) -> PathBuf {
        let name = match self {
            Language::Cpp => "solution.cpp",
            Language::Rust => "solution.rs",
            Language::Go => "solution.go",
        };
        sources_dir().join("langs").join(name)
    }

    /// The compiler and its arguments before the output path and the source.
    fn compiler(self, cache: &Path) -> Command {
        match self {
            Language::Cpp => {
                let mut c = Command::new("g++");
                c.args(["-O2", "-std=c++17", "-pthread", "-o"]);
                c
            }
            Language::Rust => {
                let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
                let mut c = Command::new(rustc);
                c.args(["--edition", "2024", "-O", "-o"]);
                c
            }
            Language::Go => {
                let mut c = Command::new("go");
                c.env("GOCACHE", cache.join("gocache"))
                    .env("GOPATH", cache.join("gopath"))
                    .env("CGO_ENABLED", "0")
                    .args(["build", "-o"]);
                c
            }
        }
    }

    /// The built solution, built first when its source (or compiler) changed.
    fn build(self) -> PathBuf {
        let source = self.source();
        let cache = target_dir().join("flamewarden-tests").join("langs");
        let program = self.compiler(&cache).get_program().to_owned();
        let version = Command::new(&program)
            .arg(if matches!(self, Language::Go) {
                "version"
            } else {
                "--version"
            })
            .output()
            .unwrap_or_else(|e| {
                panic!("{self:?} solutions need {program:?}, which cannot run: {e}")
            });
        let mut key = DefaultHasher::new();
        fs::read(&source).expect("read the solution").hash(&mut key);
        version.stdout.hash(&mut key);
        let dir = cache.join(format!("{self:?}-{:016x}", key.finish()));
        let binary = dir.join("solution");
        if binary.is_file() {
            return binary;
        }
        fs::create_dir_all(&dir).expect("create the build directory");
        let partial = dir.join(format!("solution.partial-{}", std::process::id()));
        let output = self
            .compiler(&cache)
            .arg(&partial)
            .arg(&source)
            .output()
            .unwrap_or_else(|e| panic!("failed to run the {self:?} compiler: {e}"));
        assert!(
            output.status.success(),
            "building {}: {}\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        fs::rename(&partial, &binary).expect("move the solution into place");
        binary
    }
}

fn benign_run_is_ok(language: Language) {
    if !require_bpf() {
        return;
    }
    let solution = language.build();
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("input.txt");
    let numbers: Vec<String> = (0..20_000i64)
        .map(|i| ((i * 7919) % 10007 - 5000).to_string())
        .collect();
    fs::write(&input, numbers.join("\n") + "\n").expect("write the input");
    let (status, expected) = run_bare(&solution, &[], dir.path(), Some(&input), &new_tag());
    assert!(status.success(), "{language:?} bare: {status}");
    let text = String::from_utf8_lossy(&expected);
    assert!(
        text.starts_with("count 20000 squares ") && text.trim_end().ends_with("touched 16384"),
        "{language:?} bare output: {text}"
    );
    for mode in [None, Some("audit")] {
        let workdir = tempfile::tempdir().expect("temporary directory");
        let run = Sandbox {
            workdir: Some(workdir.path().to_owned()),
            stdin: Some(input.clone()),
            mode,
            ..Sandbox::new(&judge_policy())
        }
        .run(&solution, &[]);
        let verdict = &run.verdict;
        assert!(
            verdict.violations().is_empty(),
            "{language:?} ({mode:?}): violations in {verdict}"
        );
        verdict.assert_status("ok");
        assert_eq!(
            verdict.0["violations_total"], 0,
            "{language:?} ({mode:?}): {verdict}"
        );
        assert!(
            run.stdout == expected,
            "{language:?} ({mode:?}): output differs from the bare run:\n--- sandbox\n{}\n\
             --- bare\n{text}",
            String::from_utf8_lossy(&run.stdout)
        );
    }
}

/// `flamewarden exec` (the layers applied to itself, for judges with their own sandbox): the C++
/// solution starts its threads there too, where `RLIMIT_DATA` bounds memory and counts every
/// thread's stack reservation.
#[test]
fn a_cpp_solution_runs_under_exec() {
    if !require_bpf() {
        return;
    }
    let solution = Language::Cpp.build();
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("input.txt");
    fs::write(&input, "3\n4\n").expect("write the input");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(flamewarden_bin())
        .args(["exec", "--policy"])
        .arg(judge_policy())
        .arg("--workdir")
        .arg(workdir.path())
        .arg("--")
        .arg(&solution)
        .stdin(fs::File::open(&input).expect("open the input"))
        .output()
        .expect("run flamewarden exec");
    assert!(
        output.status.success(),
        "flamewarden exec: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "count 2 squares 25 touched 16384\n"
    );
}

#[test]
fn a_cpp_solution_is_ok() {
    benign_run_is_ok(Language::Cpp);
}

#[test]
fn a_rust_solution_is_ok() {
    benign_run_is_ok(Language::Rust);
}

#[test]
fn a_go_solution_is_ok() {
    benign_run_is_ok(Language::Go);
}
