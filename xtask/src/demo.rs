//! `cargo xtask demo`: profile the bundled demo workload and show where the outputs are.

use std::{fs, process::Command};

use anyhow::{Context as _, ensure};

use crate::{
    build::{self, Profile},
    env::{target_dir, workspace_root},
    run, setup,
};

/// The outputs `flamewarden record` writes, relative to the workspace root.
const OUTPUTS: [(&str, &str); 3] = [
    ("flamegraph", "demo/flamegraph.svg"),
    ("folded stacks", "demo/profile.folded"),
    ("profile JSON", "demo/profile.json"),
];

/// Runs `cargo xtask demo`.
pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let source = root.join("tests/workloads/demo.c");
    ensure!(
        source.is_file(),
        "the demo workload {} is missing: it belongs to the end-to-end test crate (tests/); \
         nothing to profile until it exists",
        source.display()
    );
    setup::run(setup::Scope::All)?;
    let flamewarden = build::build(Profile::Release)?;

    let demo_dir = target_dir().join("demo");
    fs::create_dir_all(&demo_dir)
        .with_context(|| format!("failed to create {}", demo_dir.display()))?;
    let demo = demo_dir.join("demo");
    run::status(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&demo)
            .arg(&source),
    )?;

    let out_dir = root.join("demo");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let mut record = Command::new(&flamewarden);
    record.current_dir(root).args(["record", "-F", "499"]);
    for (_, path) in OUTPUTS {
        record.args(["-o", path]);
    }
    record.arg("--").arg(&demo);
    println!("$ {}", run::shown(&record));
    // Stale outputs of an earlier run must not pass for this run's.
    for (_, path) in OUTPUTS {
        let _ = fs::remove_file(root.join(path));
    }
    // flamewarden prints the hot-path table itself.
    run::status(&mut record)?;
    for (what, path) in OUTPUTS {
        let written = fs::metadata(root.join(path)).is_ok_and(|m| m.len() > 0);
        ensure!(
            written,
            "flamewarden exited successfully but did not write the {what} {path}"
        );
    }

    println!("\ndemo outputs:");
    for (what, path) in OUTPUTS {
        println!("  {what:<14} {}", root.join(path).display());
    }
    println!(
        "open the flamegraph in a browser; it is interactive (click to zoom, Ctrl-F to search)"
    );
    Ok(())
}
