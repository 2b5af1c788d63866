//! The escape corpus (`tests/workloads/escape/`) against `flamewarden sandbox run` under
//! `policies/judge.toml`. Every attempt is run three ways:
//!
//! - `enforce::NAME`: the attempt fails, the verdict is `security_violation` with a `denied`
//!   violation of the right rule (syscall, argument, errno, pid, a symbolized stack), and —
//!   checked on the other side, never from the program's own claim — nothing got through: the
//!   secret's bytes appear nowhere in the output, no marker file, the loopback listener and
//!   receiver saw nothing, the victim process is alive, was never traced and kept its nice
//!   value and open-file limit, no mount or namespace appeared, no shell or memfd payload ran;
//! - `audit::NAME` (`--mode audit`): the same violation is reported as `audited`, and — audit
//!   denies nothing — the attempt's effect is observed;
//! - `bare::NAME`: without any sandbox (as root) the program does get through, so the corpus
//!   does not pass by failing on its own.
//!
//! After every run, nothing of it is left (see `flamewarden_tests::sandbox`).
//!
//! Run with `cargo test --release -p flamewarden-tests --test sandbox_escape -- --test-threads=1`.

mod escape_support;

use std::{
    ffi::OsString,
    fs,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use escape_support::{Effects, Stage, Watcher, port};
use flamewarden_tests::{
    require_bpf,
    sandbox::{
        Sandbox, SandboxRun, contains, escape_program, judge_policy, run_bare, with_controlling_tty,
    },
};
use serde_json::Value;

/// One attempt of the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    ReadDirect,
    ReadDotDot,
    ReadSymlink,
    ReadProcFd,
    ReadDirfd,
    ReadIoUring,
    RaceOpen,
    WriteOutside,
    ExecShell,
    ExecMemfd,
    ExecLoader,
    NetTcp,
    NetUdp,
    NetRaw,
    Ptrace,
    UserNamespace,
    Mount,
    Clone3Namespaces,
    SignalOutside,
    SignalEveryone,
    ReniceOutside,
    LimitOutside,
}

impl Escape {
    fn program(self) -> &'static str {
        match self {
            Escape::ReadDirect => "read_direct",
            Escape::ReadDotDot => "read_dotdot",
            Escape::ReadSymlink => "read_symlink",
            Escape::ReadProcFd => "read_procfd",
            Escape::ReadDirfd => "read_dirfd",
            Escape::ReadIoUring => "read_io_uring",
            Escape::RaceOpen => "race_open",
            Escape::WriteOutside => "write_outside",
            Escape::ExecShell => "exec_shell",
            Escape::ExecMemfd => "exec_memfd",
            Escape::ExecLoader => "exec_loader",
            Escape::NetTcp => "net_tcp",
            Escape::NetUdp => "net_udp",
            Escape::NetRaw => "net_raw",
            Escape::Ptrace => "ptrace_attach",
            Escape::UserNamespace => "userns",
            Escape::Mount => "mount_tmpfs",
            Escape::Clone3Namespaces => "clone3_ns",
            Escape::SignalOutside => "signal_outside",
            Escape::SignalEveryone => "signal_everyone",
            Escape::ReniceOutside => "renice_outside",
            Escape::LimitOutside => "limit_outside",
        }
    }

    fn args(self, stage: &Stage) -> Vec<OsString> {
        let arg: Option<OsString> = match self {
            Escape::ReadDirect
            | Escape::ReadDotDot
            | Escape::ReadSymlink
            | Escape::ReadProcFd
            | Escape::ReadDirfd
            | Escape::ReadIoUring
            | Escape::RaceOpen => Some(stage.secret.clone().into()),
            Escape::WriteOutside => Some(stage.marker.clone().into()),
            Escape::ExecShell | Escape::ExecMemfd | Escape::ExecLoader => {
                Some(stage.token.clone().into())
            }
            Escape::NetTcp => Some(port(&stage.tcp.local_addr()).into()),
            Escape::NetUdp | Escape::NetRaw => Some(port(&stage.udp.local_addr()).into()),
            Escape::Ptrace
            | Escape::SignalOutside
            | Escape::ReniceOutside
            | Escape::LimitOutside => Some(stage.victim.pid().to_string().into()),
            Escape::UserNamespace
            | Escape::Mount
            | Escape::Clone3Namespaces
            | Escape::SignalEveryone => None,
        };
        arg.into_iter().collect()
    }

    /// The rule its violation names (docs/sandbox.md, "Rules").
    fn rule(self) -> &'static str {
        match self {
            Escape::ReadDirect
            | Escape::ReadDotDot
            | Escape::ReadSymlink
            | Escape::ReadProcFd
            | Escape::ReadDirfd
            | Escape::RaceOpen => "filesystem.read",
            Escape::WriteOutside => "filesystem.write",
            Escape::ExecShell | Escape::ExecLoader => "filesystem.execute",
            Escape::NetTcp | Escape::NetUdp => "network.deny_all",
            Escape::NetRaw => "network.raw_socket",
            Escape::SignalOutside | Escape::SignalEveryone => "ipc.signal_outside",
            Escape::ReniceOutside | Escape::LimitOutside => "ipc.processes_outside",
            Escape::ReadIoUring
            | Escape::ExecMemfd
            | Escape::Ptrace
            | Escape::UserNamespace
            | Escape::Mount
            | Escape::Clone3Namespaces => "syscalls.deny",
        }
    }

    /// What enforce mode does to the attempt: refuse the call (`denied`), or kill the process
    /// where no call can be refused (`killed`: the loader's exec is past its point of no return
    /// when the kernel side sees what it runs).
    fn enforced_action(self) -> &'static str {
        match self {
            Escape::ExecLoader => "killed",
            _ => "denied",
        }
    }

    /// The syscalls its violation may name (any of them).
    fn syscalls(self) -> &'static [&'static str] {
        match self {
            Escape::ReadDirect
            | Escape::ReadDotDot
            | Escape::ReadSymlink
            | Escape::ReadProcFd
            | Escape::ReadDirfd
            | Escape::RaceOpen
            | Escape::WriteOutside => &["openat"],
            Escape::ReadIoUring => &["io_uring_setup"],
            Escape::ExecShell => &["execve"],
            Escape::ExecMemfd => &["memfd_create"],
            Escape::ExecLoader => &["execve"],
            Escape::NetTcp => &["connect"],
            // Refused at socket creation (seccomp) or at the send (cgroup BPF).
            Escape::NetUdp => &["socket", "sendto"],
            Escape::NetRaw => &["socket"],
            Escape::Ptrace => &["ptrace"],
            Escape::UserNamespace => &["unshare"],
            Escape::Mount => &["mount"],
            Escape::Clone3Namespaces => &["clone3"],
            Escape::SignalOutside | Escape::SignalEveryone => &["kill"],
            Escape::ReniceOutside => &["setpriority"],
            Escape::LimitOutside => &["prlimit64"],
        }
    }

    /// Text the violation's `argument` must contain (any of them; none: not checked).
    fn argument(self, stage: &Stage) -> Vec<String> {
        let secret = stage.secret.display().to_string();
        match self {
            Escape::ReadDirect | Escape::ReadDotDot => vec![secret],
            // Enforce mode names the relative argument, audit mode the file opened.
            Escape::ReadDirfd => vec![
                stage
                    .secret
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(secret),
            ],
            Escape::ReadSymlink => vec!["link-to-secret".into(), secret],
            Escape::ReadProcFd => vec!["/proc/self/fd/".into(), secret],
            Escape::WriteOutside => vec![stage.marker.display().to_string()],
            Escape::ExecShell => vec!["/bin/sh".into(), "dash".into()],
            Escape::ExecLoader => vec!["ld-".into()],
            Escape::NetTcp => vec![format!("127.0.0.1:{}", port(&stage.tcp.local_addr()))],
            Escape::SignalOutside => vec![stage.victim.pid().to_string()],
            Escape::SignalEveryone => vec!["pid -1".into()],
            _ => vec![],
        }
    }

    /// Whether the attempt's effect is a process in new namespaces.
    fn changes_namespaces(self) -> bool {
        matches!(self, Escape::UserNamespace | Escape::Clone3Namespaces)
    }

    /// Whether `effects` show that this attempt got through.
    fn got_through(self, effects: &Effects) -> bool {
        match self {
            Escape::ReadDirect
            | Escape::ReadDotDot
            | Escape::ReadSymlink
            | Escape::ReadProcFd
            | Escape::ReadDirfd
            | Escape::ReadIoUring
            | Escape::RaceOpen => effects.secret_leaked,
            Escape::WriteOutside => effects.marker_created,
            Escape::ExecShell => effects.shell_ran,
            Escape::ExecMemfd => effects.payload_ran,
            Escape::ExecLoader => effects.loader_payload_ran,
            Escape::NetTcp => effects.tcp_connected,
            Escape::NetUdp => effects.datagrams.iter().any(|d| d == b"udp"),
            Escape::NetRaw => effects.datagrams.iter().any(|d| d == b"raw"),
            Escape::Ptrace => effects.traced,
            Escape::UserNamespace | Escape::Clone3Namespaces => effects.new_namespace,
            Escape::Mount => effects.mounted,
            Escape::SignalOutside => effects.victim_killed,
            Escape::SignalEveryone => effects.victim_signalled,
            Escape::ReniceOutside => effects.victim_reniced,
            Escape::LimitOutside => effects.victim_limited,
        }
    }
}

/// Runs the attempt in the sandbox (`mode`: `None` for the policy's own, enforce).
fn sandboxed(escape: Escape, mode: Option<&'static str>) -> (Stage, SandboxRun, Effects) {
    let mut stage = Stage::new();
    let program = escape_program(escape.program());
    let watcher = Watcher::start(&stage, escape.changes_namespaces());
    let run = Sandbox {
        workdir: Some(stage.workdir.path().to_owned()),
        mode,
        tag: stage.tag.clone(),
        ..Sandbox::new(&judge_policy())
    }
    .run(&program, &escape.args(&stage));
    let mut output = run.stdout.clone();
    output.extend_from_slice(run.stderr.as_bytes());
    let effects = stage.effects(watcher.stop(), &output);
    eprintln!("{escape:?}: {effects:?}\n{}", run.verdict);
    (stage, run, effects)
}

/// Checks what every violation carries: the syscall, the argument, the pid, the stack.
fn check_violation(escape: Escape, stage: &Stage, run: &SandboxRun, violation: &Value) {
    let verdict = &run.verdict;
    let syscall = violation["syscall"].as_str().unwrap_or("<none>");
    assert!(
        escape.syscalls().contains(&syscall),
        "the `{}` violation names syscall {syscall}, expected one of {:?}, in {verdict}",
        escape.rule(),
        escape.syscalls()
    );
    let wanted = escape.argument(stage);
    let argument = violation["argument"].as_str().unwrap_or("");
    assert!(
        wanted.is_empty() || wanted.iter().any(|w| argument.contains(w.as_str())),
        "the `{}` violation's argument {argument:?} names none of {wanted:?}, in {verdict}",
        escape.rule()
    );
    assert!(
        violation["pid"].as_u64().is_some_and(|p| p > 0),
        "no pid in {verdict}"
    );
    assert!(
        violation["time_ms"].as_f64().is_some_and(|t| t >= 0.0),
        "no time_ms in {verdict}"
    );
    // The corpus calls through glibc, whose wrappers need not keep a frame pointer: a
    // frame-pointer unwinder may lose everything past the wrapper. The innermost frame is
    // symbolized, though (the whole stack through `main`: sandbox_verdict.rs).
    let stack = violation["stack"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(
        stack
            .first()
            .and_then(Value::as_str)
            .is_some_and(|f| !f.starts_with("[unknown]")),
        "the `{}` violation's innermost frame is not symbolized, in {verdict}",
        escape.rule()
    );
}

fn enforced(escape: Escape) {
    if !require_bpf() {
        return;
    }
    let (stage, run, effects) = sandboxed(escape, None);
    let verdict = &run.verdict;
    assert!(
        effects.nothing(),
        "{escape:?} GOT THROUGH the sandbox: {effects:?}\nstdout:\n{}\n{verdict}",
        String::from_utf8_lossy(&run.stdout)
    );
    // `kill(-1, …)` returns 0 however many processes refused it: its program cannot tell.
    if escape != Escape::SignalEveryone {
        assert_ne!(
            verdict.0["exit_code"], 0,
            "the attempt succeeded, per {verdict}"
        );
    }
    verdict.assert_status("security_violation");
    assert_eq!(verdict.0["mode"], "enforce", "{verdict}");
    let action = escape.enforced_action();
    let violation = verdict.expect_violation(escape.rule(), action);
    assert!(
        action != "denied"
            || violation["errno"]
                .as_str()
                .is_some_and(|e| e.starts_with('E')),
        "a denied call without its errno, in {verdict}"
    );
    check_violation(escape, &stage, &run, violation);
}

fn audited(escape: Escape) {
    if !require_bpf() {
        return;
    }
    let (stage, run, effects) = sandboxed(escape, Some("audit"));
    let verdict = &run.verdict;
    assert_eq!(verdict.0["mode"], "audit", "{verdict}");
    let violation = verdict.expect_violation(escape.rule(), "audited");
    check_violation(escape, &stage, &run, violation);
    assert!(
        escape.got_through(&effects),
        "audit mode must deny nothing, but {escape:?} did not get through: {effects:?}\n\
         stdout:\n{}\n{verdict}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert_eq!(verdict.0["exit_code"], 0, "{verdict}");
    verdict.assert_status("ok");
}

fn bare(escape: Escape) {
    // Root, not eBPF, is what the corpus needs unconfined; require_bpf checks both.
    if !require_bpf() {
        return;
    }
    let mut stage = Stage::new();
    let program = escape_program(escape.program());
    let watcher = Watcher::start(&stage, escape.changes_namespaces());
    let (status, stdout) = run_bare(
        &program,
        &escape.args(&stage),
        stage.workdir.path(),
        None,
        &stage.tag,
    );
    let effects = stage.effects(watcher.stop(), &stdout);
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(
        status.success(),
        "{escape:?} bare: {status}; stdout:\n{stdout}"
    );
    assert!(
        escape.got_through(&effects),
        "{escape:?} claims to get through bare but nothing shows it: {effects:?}\nstdout:\n{stdout}"
    );
}

macro_rules! escapes {
    ($($name:ident: $escape:ident,)*) => {
        mod enforce {
            $(#[test] fn $name() { super::enforced(super::Escape::$escape) })*
        }
        mod audit {
            $(#[test] fn $name() { super::audited(super::Escape::$escape) })*
        }
        mod bare {
            $(#[test] fn $name() { super::bare(super::Escape::$escape) })*
        }
    };
}

escapes! {
    read_secret_directly: ReadDirect,
    read_secret_through_a_quiet_tree: ReadDotDot,
    read_secret_through_symlink: ReadSymlink,
    read_secret_through_proc_self_fd: ReadProcFd,
    read_secret_through_a_directory_fd: ReadDirfd,
    read_secret_through_io_uring: ReadIoUring,
    race_path_rewrite_during_open: RaceOpen,
    write_outside_workdir: WriteOutside,
    exec_shell: ExecShell,
    fileless_exec_memfd_execveat: ExecMemfd,
    exec_through_the_loader: ExecLoader,
    tcp_connect_loopback: NetTcp,
    udp_send_loopback: NetUdp,
    raw_socket: NetRaw,
    ptrace_attach_outside: Ptrace,
    create_user_namespace: UserNamespace,
    mount_tmpfs: Mount,
    clone3_with_namespace_flags: Clone3Namespaces,
    signal_outside_process: SignalOutside,
    signal_every_process: SignalEveryone,
    renice_outside_process: ReniceOutside,
    limit_outside_process_open_files: LimitOutside,
}

/// A descriptor the judge opened without `O_CLOEXEC` (here: on the secret) is inherited by
/// flamewarden; the command must not get it, in any mode. Bare, the same program reads it.
#[test]
fn descriptors_leaked_by_the_judge_do_not_reach_the_command() {
    if !require_bpf() {
        return;
    }
    let stage = Stage::new();
    let program = escape_program("read_inherited");
    let path = std::ffi::CString::new(stage.secret.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path; the descriptor is closed below. No O_CLOEXEC: the leak.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(
        fd >= 3,
        "open the secret: {}",
        std::io::Error::last_os_error()
    );
    let leaked = |output: &[u8]| contains(output, stage.secret_text.as_bytes());
    for mode in [None, Some("audit")] {
        let run = Sandbox {
            workdir: Some(stage.workdir.path().to_owned()),
            mode,
            tag: stage.tag.clone(),
            ..Sandbox::new(&judge_policy())
        }
        .run(&program, &[]);
        assert!(
            !leaked(&run.stdout),
            "mode {mode:?}: the command read the judge's descriptor:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            run.verdict
        );
        assert_eq!(run.verdict.0["exit_code"], 1, "{}", run.verdict);
    }
    let (status, stdout) = run_bare(&program, &[], stage.workdir.path(), None, &stage.tag);
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    assert!(
        status.success() && leaked(&stdout),
        "bare, the program should read the leaked descriptor: {status}\n{}",
        String::from_utf8_lossy(&stdout)
    );
}

/// A pseudo-terminal: what is typed into it (its input queue) can be read from `slave`.
struct Pty {
    _master: fs::File,
    slave: fs::File,
    slave_path: PathBuf,
}

impl Pty {
    fn open() -> Self {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain calls on the descriptor just opened; ptsname's buffer is copied at once.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let name = libc::ptsname(master);
            assert!(!name.is_null());
            let slave_path = PathBuf::from(
                std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned(),
            );
            let master = fs::File::from_raw_fd(master);
            let slave = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(&slave_path)
                .expect("open the terminal");
            Pty {
                _master: master,
                slave,
                slave_path,
            }
        }
    }

    /// What was typed into the terminal so far.
    fn typed(&self) -> String {
        let mut buf = [0u8; 4096];
        match (&self.slave).read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        }
    }
}

#[test]
fn a_command_cannot_type_into_the_judges_terminal() {
    if !require_bpf() {
        return;
    }
    // flamewarden started from a judge's shell: its terminal is the controlling one and the
    // command's standard input.
    let program = escape_program("tty_inject");
    let pty = Pty::open();
    let run = Sandbox {
        stdin: Some(pty.slave_path.clone()),
        controlling_tty: Some(pty.slave_path.clone()),
        ..Sandbox::new(&judge_policy())
    }
    .run(&program, &[]);
    let typed = pty.typed();
    assert!(
        !typed.contains("tty-injected"),
        "the command typed {typed:?} into the judge's terminal; {}",
        run.verdict
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("blocked: ioctl(TIOCSTI)"),
        "{}",
        run.verdict
    );
    // Bare, from the same kind of terminal, the line arrives: the check above can see one.
    let pty = Pty::open();
    let mut bare = Command::new(&program);
    bare.stdin(fs::File::open(&pty.slave_path).expect("open the terminal"))
        .stdout(Stdio::null());
    with_controlling_tty(&mut bare, &pty.slave_path);
    let status = bare.status().expect("run tty_inject bare");
    assert!(status.success(), "bare tty_inject: {status}");
    let typed = pty.typed();
    assert!(typed.contains("tty-injected"), "bare: typed {typed:?}");
}
