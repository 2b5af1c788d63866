//! The tracker against the real kernel (root only), and its pure helpers.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use super::*;
use crate::{profile::FrameKind, symbolize::Symbolizer};

/// A judged submission in miniature: prints where `hot_function` is, forks a child that prints
/// its pid, and exits after tens of milliseconds.
const HELPER_C: &str = r#"
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long hot_function(long n) {
    volatile long sum = 0;
    for (long i = 0; i < n; i++) sum += i;
    return sum;
}

int main(void) {
    printf("%p\n", (void *)hot_function);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("%d\n", (int)getpid());
        fflush(stdout);
        hot_function(100000);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    hot_function(100000);
    usleep(50 * 1000);
    return 0;
}
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn compile_helper(dir: &Path) -> Option<std::path::PathBuf> {
    let source = dir.join("hot.c");
    let binary = dir.join("hot");
    std::fs::write(&source, HELPER_C).unwrap();
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .ok()?;
    status.success().then_some(binary)
}

#[test]
fn parses_online_cpu_lists() {
    assert_eq!(parse_cpu_list("0"), Some(vec![0]));
    assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(vec![0, 1, 2, 3, 5, 7, 8]));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("0-x"), None);
}

#[test]
fn refuses_a_ring_size_that_is_not_a_power_of_two() {
    let opts = TrackerOptions {
        ring_pages: 3,
        ..TrackerOptions::default()
    };
    assert!(matches!(
        MappingTracker::start(opts),
        Err(MappingError::RingPages(3))
    ));
}

#[test]
fn symbolizes_an_exited_process_whose_binary_was_deleted() {
    if !is_root() {
        println!("skipping test - needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(binary) = compile_helper(dir.path()) else {
        println!("skipping test - needs gcc");
        return;
    };
    let tracker = MappingTracker::start(TrackerOptions::default()).unwrap();
    let seed = AddressSpaces::snapshot_proc(Some(&[]));
    let child = Command::new(&binary)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    // A judge removes the submission as soon as it exits.
    std::fs::remove_file(&binary).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let address = u64::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    let forked: u32 = lines.next().unwrap().parse().unwrap();

    let (spaces, stats) = tracker.stop(seed);
    assert!(stats.records > 0, "{stats:?}");
    assert_eq!(stats.lost, 0, "{stats:?}");
    for tgid in [pid, forked] {
        let resolved = spaces
            .resolve(tgid, address)
            .unwrap_or_else(|| panic!("pid {tgid}"));
        assert_eq!(resolved.path, binary);
        // Read through the descriptor the tracker opened while the file still existed.
        assert!(spaces.open_path(resolved.file).starts_with("/proc/self/fd"));
        let frames = Symbolizer::new().symbolize_user(&spaces, tgid, &[address]);
        assert_eq!(frames[0].name, "hot_function", "{frames:?}");
        assert_eq!(frames[0].kind, FrameKind::User);
        assert_eq!(frames[0].module.as_deref(), binary.to_str());
        assert!(
            frames[0]
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("hot.c")),
            "{frames:?}"
        );
    }
}
