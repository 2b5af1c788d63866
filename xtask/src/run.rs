//! Running external programs: every failure says which command failed and how.

use std::{
    env,
    ffi::OsStr,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::env::workspace_root;

/// `cargo` (rustup's proxy, so `+nightly` works) started in the workspace root with
/// `FLAMEWARDEN_REQUIRE_EBPF=1`: a build never silently embeds the stub eBPF object.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("FLAMEWARDEN_REQUIRE_EBPF", "1");
    cmd
}

/// Runs `cmd` with inherited stdio; fails unless it exits with status 0.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("`{}` failed ({status})", shown(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output; standard error passes through.
pub fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !output.status.success() {
        bail!("`{}` failed ({})", shown(cmd), output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8 text"))
}

/// Runs `cmd` quietly, for checks: its standard output if it succeeds, else why not (the first
/// line of its standard error, or the spawn error).
pub fn probe(cmd: &mut Command) -> Result<String, String> {
    match cmd.stdin(Stdio::null()).output() {
        Err(e) => Err(format!("cannot run: {e}")),
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            Err(format!("{}: {}", out.status, first.trim()))
        }
    }
}

/// The command line as a user would type it, for headers and messages.
pub fn shown(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quoted(v?))))
        .collect();
    words.push(quoted(cmd.get_program()));
    words.extend(cmd.get_args().map(quoted));
    words.join(" ")
}

fn quoted(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+,:@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Where `program` would be found: PATH, then the sbin directories (bpftool, ip and nft live
/// there, and a non-root PATH often lacks them).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_command_quotes_only_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--", "-D", "warnings", "a b", "it's"])
            .env("X", "1");
        assert_eq!(
            shown(&cmd),
            r"X=1 cargo clippy -- -D warnings 'a b' 'it'\''s'"
        );
    }
}
