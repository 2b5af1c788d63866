//! Modes of `flamewarden sandbox run`: the policy file's `mode`, and `--mode` overriding it.
//! (Each escape of the corpus in audit mode is in sandbox_escape.rs, `audit::*`.)
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_audit -- --test-threads=1`.

use std::{ffi::OsString, fs, path::Path};

use flamewarden_tests::{
    require_bpf,
    sandbox::{Sandbox, SandboxRun, escape_program, judge_policy, random_hex},
};

/// judge.toml with `mode = "audit"`, written for one test.
fn audit_policy() -> tempfile::NamedTempFile {
    let judge = fs::read_to_string(judge_policy()).expect("read policies/judge.toml");
    let audit = judge.replace("mode = \"enforce\"", "mode = \"audit\"");
    assert_ne!(
        audit, judge,
        "policies/judge.toml has no `mode = \"enforce\"` line"
    );
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a policy file");
    fs::write(file.path(), audit).expect("write the policy file");
    file
}

/// A secret outside the work directory, and `read_direct` trying it under `policy`.
fn read_secret(policy: &Path, mode: Option<&'static str>) -> (SandboxRun, String) {
    let outside = tempfile::tempdir().expect("temporary directory");
    let secret = outside.path().join("secret.txt");
    let text = format!("SECRET-{}", random_hex(24));
    fs::write(&secret, &text).expect("write the secret");
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        mode,
        ..Sandbox::new(policy)
    }
    .run(&escape_program("read_direct"), &[OsString::from(&secret)]);
    (run, text)
}

#[test]
fn policy_file_in_audit_mode_reports_and_lets_through() {
    if !require_bpf() {
        return;
    }
    let policy = audit_policy();
    let (run, secret) = read_secret(policy.path(), None);
    let verdict = &run.verdict;
    assert_eq!(verdict.0["mode"], "audit", "{verdict}");
    verdict.expect_violation("filesystem.read", "audited");
    assert!(
        run.output_contains(&secret),
        "audit mode denied the read; {verdict}"
    );
    verdict.assert_status("ok");
}

#[test]
fn mode_enforce_overrides_an_audit_policy_file() {
    if !require_bpf() {
        return;
    }
    let policy = audit_policy();
    let (run, secret) = read_secret(policy.path(), Some("enforce"));
    let verdict = &run.verdict;
    assert!(
        !run.output_contains(&secret),
        "the secret leaked; {verdict}"
    );
    assert_eq!(verdict.0["mode"], "enforce", "{verdict}");
    verdict.expect_violation("filesystem.read", "denied");
    verdict.assert_status("security_violation");
}

#[test]
fn benign_solution_in_audit_mode_has_no_violation() {
    if !require_bpf() {
        return;
    }
    // Among others: glibc's pthread_create tries clone3 (answered ENOSYS, falling back to
    // clone) — a plain clone3 without namespace flags is no violation.
    let workdir = tempfile::tempdir().expect("temporary directory");
    let run = Sandbox {
        workdir: Some(workdir.path().to_owned()),
        mode: Some("audit"),
        ..Sandbox::new(&judge_policy())
    }
    .run(&escape_program("benign"), &[]);
    let verdict = &run.verdict;
    assert_eq!(verdict.0["mode"], "audit", "{verdict}");
    assert!(verdict.violations().is_empty(), "violations in {verdict}");
    assert_eq!(verdict.0["violations_total"], 0, "{verdict}");
    verdict.assert_status("ok");
    assert!(
        run.stdout.starts_with(b"count 0\nsum 0\n"),
        "unexpected output:\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
