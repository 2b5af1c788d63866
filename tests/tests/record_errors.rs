//! How `flamewarden record` fails: exit code 2 and one line on stderr that names what is wrong.

use std::path::Path;

use flamewarden_tests::{Run, flamewarden, require_bpf};

/// Asserts the documented error contract: exit code 2 and a single `flamewarden: ...` line on
/// stderr containing `needle`.
fn assert_one_line_error(args: &[&str], needle: &str) -> Run {
    let run = flamewarden(args);
    let lines = run.stderr_lines();
    eprintln!(
        "flamewarden {}: exit {:?}, stderr {:?}",
        args.join(" "),
        run.code(),
        run.stderr
    );
    assert_eq!(
        run.code(),
        Some(2),
        "flamewarden {}: expected exit 2; stderr:\n{}",
        args.join(" "),
        run.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{}",
        run.stderr
    );
    assert!(
        lines[0].starts_with("flamewarden: "),
        "the error line must start with `flamewarden: `: {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(needle),
        "the error line must name {needle:?}: {:?}",
        lines[0]
    );
    // One line a user can act on: a cause is said once (`...: No such file: No such file` is not).
    let parts: Vec<&str> = lines[0].split(": ").collect();
    assert!(
        parts.windows(2).all(|w| w[0] != w[1]),
        "the error line repeats itself: {:?}",
        lines[0]
    );
    run
}

#[test]
fn profiling_a_pid_that_does_not_exist_fails_naming_the_pid() {
    if !require_bpf() {
        return;
    }
    let pid = (999_999..)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
        .to_string();
    assert_one_line_error(&["record", "-p", &pid, "-d", "1"], &pid);
}

#[test]
fn profiling_a_cgroup_that_does_not_exist_fails_naming_the_path() {
    if !require_bpf() {
        return;
    }
    let path = "/nonexistent/flamewarden-test-cgroup";
    assert_one_line_error(&["record", "--cgroup", path, "-d", "1"], path);
}

#[test]
fn an_unsupported_output_extension_fails_naming_the_file() {
    assert_one_line_error(&["record", "-a", "-d", "1", "-o", "x.png"], "x.png");
}

#[test]
fn recording_without_a_target_fails_saying_which_targets_exist() {
    let run = assert_one_line_error(&["record", "-d", "1"], "target");
    for option in ["-p", "--cgroup", "-a", "COMMAND"] {
        assert!(
            run.stderr.contains(option),
            "the message does not mention {option}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_command_that_cannot_be_started_fails_naming_it() {
    if !require_bpf() {
        return;
    }
    let command = "/nonexistent/flamewarden-test-command";
    assert_one_line_error(&["record", "--", command], command);
}
